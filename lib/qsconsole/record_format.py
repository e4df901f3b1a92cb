"""Message records, format version 1: one JSON line each, checked and turned into the columns of a Message row.

No Django here: the loader and the tests read records with this module alone.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

VERSION = 1
TEXT_KEYS = ("host", "queue_id", "client_ip", "helo", "auth_user", "sender", "subject", "message_id", "outcome",
             "reason", "rule", "kind", "quarantine_id", "quarantine_dir", "trace")
LIST_KEYS = ("recipients", "scanners", "attachments", "readings", "skipped", "parts")
# Optional keys of later writers (a record without them is still version 1): "parts", the MIME tree as read, a list
# of objects; "decision", what decided the outcome, an object {"part", "rule", "scanner", "reading"}.
OUTCOMES = frozenset({"delivered", "quarantined", "rejected", "dropped", "tempfail"})
# Cut to the column widths of models.py; a cut is visible as a trailing "…".
WIDTHS = {"host": 255, "queue_id": 255, "client_ip": 64, "helo": 255, "auth_user": 255, "sender": 512,
          "rule": 255, "kind": 16, "quarantine_id": 255, "quarantine_dir": 16}
RECORD_ID_LENGTH = 512
LAST_TIME = 253402300799.0  # 9999-12-31T23:59:59Z: a later time is no date a database (or Python) stores
SIZE_LIMIT = 2**63  # a BIGINT
ADDRESS_LENGTH = 512
DOMAIN_LENGTH = 255


class RecordError(ValueError):
    """A line that is not a version 1 record: the text says why (never quoting the line, which is mail's text)."""


@dataclass(frozen=True)
class Row:
    """A checked record: the Message columns and the recipients' (address, key, domain) triples."""

    record_id: str
    time: float
    columns: dict
    recipients: list[tuple[str, str, str]]


def parse_line(line: bytes) -> Row:
    """One line of a records file as a Row, or RecordError."""
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise RecordError(f"not JSON ({type(error).__name__})") from None
    try:
        return checked(record)
    except RecursionError:
        raise RecordError("nested too deeply") from None


def checked(record) -> Row:
    """A parsed record as a Row, or RecordError."""
    if not isinstance(record, dict):
        raise RecordError("not a JSON object")
    if record.get("v") != VERSION:
        raise RecordError(f"version {str(record.get('v'))[:20]!r} is not {VERSION}")
    record_id = record.get("id")
    if not isinstance(record_id, str) or not record_id.strip():
        raise RecordError("no id")
    if len(record_id) > RECORD_ID_LENGTH:
        raise RecordError(f"id longer than {RECORD_ID_LENGTH} characters")
    when = record.get("time")
    if isinstance(when, bool) or not isinstance(when, (int, float)) or not math.isfinite(when) \
            or not 0 <= when <= LAST_TIME:
        raise RecordError("time is not a unix time")
    columns: dict = {}
    for key in TEXT_KEYS:
        value = record.get(key)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise RecordError(f"{key} is not a string")
        value = clean(value)
        width = WIDTHS.get(key)
        columns[key] = value if width is None or len(value) <= width else value[:width - 1] + "…"
    if columns["outcome"] not in OUTCOMES:
        raise RecordError("outcome is not one of " + ", ".join(sorted(OUTCOMES)))
    for key in LIST_KEYS:
        value = record.get(key)
        if value is None:
            value = []
        if not isinstance(value, list):
            raise RecordError(f"{key} is not a list")
        columns[key] = clean(value)
    if not all(isinstance(address, str) for address in columns["recipients"]):
        raise RecordError("a recipient is not a string")
    decision = record.get("decision")
    if decision is None:
        decision = {}
    if not isinstance(decision, dict):
        raise RecordError("decision is not an object")
    columns["decision"] = clean(decision)
    size = record.get("size")
    if size is None:
        size = 0
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < SIZE_LIMIT:
        raise RecordError("size is not a byte count")
    columns["size"] = size
    score = record.get("spam_score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))
                              or not math.isfinite(score)):
        raise RecordError("spam_score is not a number")
    columns["spam_score"] = score
    columns["spam_tagged"] = bool(record.get("spam_tagged"))
    sender_key, sender_domain = address_key(columns["sender"])
    columns["sender_key"] = sender_key
    columns["sender_domain"] = sender_domain
    recipients: dict[str, tuple[str, str, str]] = {}
    for address in columns["recipients"]:
        key, domain = address_key(address)
        recipients.setdefault(key, (cut(address, ADDRESS_LENGTH), key, domain))
    return Row(record_id=clean(record_id), time=float(when), columns=columns, recipients=list(recipients.values()))


def address_key(address: str) -> tuple[str, str]:
    """An address as searched: lower-cased, and its domain (what follows the last @)."""
    key = cut(address.strip().lower(), ADDRESS_LENGTH)
    domain = key.rpartition("@")[2] if "@" in key else ""
    return key, cut(domain, DOMAIN_LENGTH)


def cut(text: str, width: int) -> str:
    """Text no longer than `width`."""
    return text if len(text) <= width else text[:width - 1] + "…"


def clean(value):
    """Values a database stores: NUL (PostgreSQL refuses it) as U+FFFD, lone surrogates as escapes, NaN as null."""
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "\ufffd")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, list):
        return [clean(item) for item in value]
    if isinstance(value, dict):
        return {clean(key): clean(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN and Infinity are not JSON for PostgreSQL's jsonb
    return value
