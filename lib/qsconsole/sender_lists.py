"""Sender allow/block lists: what an entry may hold, and the records/sender-lists file each host's loader writes.

The file is the scanner's copy of the SenderList table (UTF-8, one tab-separated entry per line, lower case):

    # qs-console sender lists, version 1
    allow<TAB>sender@example.com<TAB>rcpt@example.org
    block<TAB>@spam.example<TAB>*

A recipient of "" in the table (every recipient) is "*" in the file. The file is replaced whole (a temporary file in
the same directory, fsync, rename), so a scanner reading it sees the old list or the new one, never half of either.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from qsconsole.record_format import ADDRESS_LENGTH

FILE_NAME = "sender-lists"
HEADER = "# qs-console sender lists, version 1\n"
EVERY_RECIPIENT = "*"
KINDS = ("allow", "block")
FILE_MODE = 0o644  # the scanner's account reads it; nothing in it is secret


class BadEntry(ValueError):
    """An entry that cannot go on a list: the text says why (never quoting it)."""


def entry_address(text: str, what: str, domain_allowed: bool = True) -> str:
    """An address or @domain, lower-cased; BadEntry for blanks, controls, a missing or second @, or an empty part."""
    if not isinstance(text, str):
        raise BadEntry(f"{what}: give a string")
    value = text.strip().lower()
    if not value:
        raise BadEntry(f"{what}: give an address or @domain")
    if len(value) > ADDRESS_LENGTH:
        raise BadEntry(f"{what}: longer than {ADDRESS_LENGTH} characters")
    # A tab or newline would break the file's lines; any blank or control character makes no envelope address.
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise BadEntry(f"{what}: blanks and control characters are not allowed")
    local, at, domain = value.rpartition("@")
    if not at or not domain or "@" in local:
        raise BadEntry(f"{what}: give user@domain or @domain")
    if not local and not domain_allowed:
        raise BadEntry(f"{what}: give one of your own addresses, not a domain")
    return value


def file_text(entries: list[tuple[str, str, str]]) -> str:
    """The file's text for (kind, sender, recipient) entries: the header, then one line each, sorted."""
    lines = sorted(f"{kind}\t{sender}\t{recipient or EVERY_RECIPIENT}\n" for kind, sender, recipient in entries)
    return HEADER + "".join(lines)


def export(spooldir: Path) -> bool:
    """Write SPOOLDIR/records/sender-lists from the SenderList table when its content changed; True when written."""
    from qsconsole.console.models import SenderList

    entries = list(SenderList.objects.values_list("kind", "sender", "recipient"))
    return write_if_changed(Path(spooldir) / "records" / FILE_NAME, file_text(entries).encode("utf-8"))


def write_if_changed(path: Path, data: bytes) -> bool:
    """Replace `path` atomically with `data` (mode 0644) unless it already holds exactly that; True when written."""
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fchmod(stream.fileno(), FILE_MODE)
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    # The rename itself survives a crash only once the directory is on disk too.
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return True
