"""The message record: one JSON line per message in <spooldir>/records/current.jsonl, for the console.

Written once per message when its fate is final (delivered, quarantined, rejected, dropped,
temporary failure), by the standalone program and the engine's workers alike. The mail path
only ever appends to a local file: qs-console's loader renames current.jsonl into records/ready/
and moves the records into its database, so a database that is down or slow changes nothing
for mail. Format version 1 (README, "Message records"):

    {"v":1, "id":"<host>:<queue id>", "time", "host", "queue_id", "client_ip", "helo", "auth_user",
     "sender", "recipients", "subject", "message_id", "size", "outcome", "reason", "rule", "kind",
     "scanners":[{"name","answer","seconds"}], "spam_score", "spam_tagged",
     "attachments":[{"name","type","size"}], "quarantine_id", "quarantine_dir", "readings",
     "skipped", "trace",
     "parts":[{"path","depth","type","real_type","name","size","encoding","container","readings","finding"}],
     "decision":{"part","rule","scanner","reading","text"}}

"parts" is the MIME tree as the unpacker read it (archive members too), "decision" what decided
the outcome ({} for a clean delivery).

Each record is one os.write on a file opened by name with O_APPEND: concurrent processes never
interleave, and after the loader's rename the next record starts a new current.jsonl. A record
that cannot be written costs one stderr line, never the message's fate or exit code.

The serialiser is written by hand for this flat record: `json` imports `re` (and enum), which
would cost every clean message a few milliseconds of start-up (tests/test_startup_imports.py).
"""

from __future__ import annotations

import errno
import os
import stat
import time

from .spool import RECORDS_DIR

TYPE_CHECKING = False  # typing costs milliseconds per message; only type checkers look here
if TYPE_CHECKING:
    from .message import Message
    from .records import Finding, ScanResult, Verdict
    from .settings import Settings
    from .spool import WorkArea

VERSION = 1
CURRENT_FILE = "current.jsonl"
RECORD_LIMIT = 65536  # bytes of one line, newline included: a bigger record is cut, never split
ATTACHMENTS_KEPT = 200
ATTACHMENTS_CUT = 20  # what a record over RECORD_LIMIT keeps
PARTS_KEPT = 500
PARTS_CUT = 50  # an oversized record keeps the start of its tree, then none of it, before anything else goes
TYPE_LIMIT = 100  # a content type, a transfer encoding, an archive format
READINGS_KEPT = 10  # ambiguities named at one part
PATH_LIMIT = 255  # a dotted path 200 levels deep is longer; its start says enough
RECIPIENTS_CUT = 40  # the last resort of an oversized record, with strings cut to TEXT_CUT
TEXT_CUT = 1000
SUBJECT_LIMIT = 998  # RFC 5322's line length; the record is for finding the message, not reading it
NAME_LIMIT = 255
KIND_OF_QUARANTINE = {"viruses": "virus", "policy": "policy", "spam": "spam"}
QUARANTINE_DIRS = ("viruses", "policy", "spam")
KIND_WEIGHT = {"virus": 0, "policy": 1, "spam": 2}  # which finding a part shows first, as verdict.decide weighs them
# O_NONBLOCK: the console's account may add names to records/ (its loader renames current.jsonl away), so a
# FIFO planted as current.jsonl must not hang the open; the fd is made blocking again once it is a plain file.
FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK  # O_CREAT added when it is missing

# JSON string escapes: the quote, the backslash and the C0 controls (DEL and the rest are valid as they are).
_ESCAPES = {ord('"'): '\\"', ord("\\"): "\\\\", 8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"}
_ESCAPES.update({code: f"\\u{code:04x}" for code in range(32) if code not in _ESCAPES})


def records_path(settings: Settings) -> str:
    """<spooldir>/records/current.jsonl."""
    return os.path.join(settings.spooldir, RECORDS_DIR, CURRENT_FILE)


# ---------------------------------------------------------------- writing


def write_outcome(message: Message, verdict: Verdict, code: int, stored_path: str = "") -> None:
    """The record of a message carry_out or store_failed acted on (delivered, quarantined, dropped...)."""
    if not message.settings.console_records:
        return
    try:
        line = encode_line(build(message.settings, message.environ, message.area, message, verdict, code, stored_path))
    except Exception as error:  # a bug here must not touch the mail: it is already queued or stored
        _complain(message.settings, f"not built: {type(error).__name__}: {error}")
        return
    append(message.settings, line)


def write_failure(
    settings: Settings,
    environ: dict,
    area: WorkArea | None,
    message: Message | None,
    code: int,
    permanent: bool,
    reason: str,
) -> None:
    """The record of a message refused or failed before it was acted on (rejected, temporary failure)."""
    if not settings.console_records or area is None:
        return  # no area: nothing was read, there is no message to speak of
    try:
        line = encode_line(build(settings, environ, area, message, None, code, "", permanent=permanent, failure=reason))
    except Exception as error:  # the exit code stands whatever happens here
        _complain(settings, f"not built: {type(error).__name__}: {error}")
        return
    append(settings, line)


def append(settings: Settings, line: bytes) -> None:
    """One os.write of the whole line, on current.jsonl opened by name now (the loader renames it away)."""
    path = records_path(settings)
    try:
        fd = _open_locked(path)
    except OSError as error:
        _complain(settings, error.strerror or str(error))
        return
    try:
        written = os.write(fd, line)
        if written != len(line):
            # A full disk or a file-size limit cut the line: end it, so the next record starts a line of
            # its own (the loader skips the cut one). Most likely this write fails as well.
            os.write(fd, b"\n")
            _complain(settings, f"cut after {written} of {len(line)} bytes (disk full?)")
    except OSError as error:
        _complain(settings, error.strerror or str(error))
    finally:
        os.close(fd)


def _open_locked(path: str) -> int:
    """current.jsonl opened and share-locked for one write, never a file the loader has already deleted.

    The loader renames current.jsonl away, and deletes the renamed file only under an exclusive
    lock once it read everything: a writer that opened the name before the rename either holds
    its shared lock first (the loader waits, then reads this line too) or gets it after the
    deletion and finds no name left (st_nlink 0): it opens current.jsonl again.
    """
    import fcntl

    for _attempt in range(3):
        fd = _open_current(path)
        fcntl.flock(fd, fcntl.LOCK_SH)
        if os.fstat(fd).st_nlink:
            return fd  # the lock goes with the close after the write
        os.close(fd)
    raise OSError(errno.EAGAIN, "the record file was taken away three times in a row")


def _open_current(path: str) -> int:
    """current.jsonl for appending; made 0640 whatever the umask (the engine's is 077) when this process creates it."""
    try:
        return _plain_file(os.open(path, FLAGS))
    except FileNotFoundError:
        pass
    try:
        fd = os.open(path, FLAGS | os.O_CREAT | os.O_EXCL, 0o640)
    except FileExistsError:  # another process made it just now
        return _plain_file(os.open(path, FLAGS))
    os.fchmod(fd, 0o640)
    return _plain_file(fd)


def _plain_file(fd: int) -> int:
    """fd made blocking, if it is a plain file with one name; else closed and refused (a FIFO, a device, a link)."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise OSError(errno.EINVAL, "not a plain file with one name (planted there?): not written")
    os.set_blocking(fd, True)
    return fd


def _complain(settings: Settings, why: str) -> None:
    from .stderr_log import say

    say(f"message record not written to {records_path(settings)}: {why}")


# ---------------------------------------------------------------- serialising


def encode_line(record: dict) -> bytes:
    """The record as one line of JSON (UTF-8, newline-terminated), cut to fit RECORD_LIMIT."""
    line = (_object(record) + "\n").encode("utf-8")
    if len(line) <= RECORD_LIMIT:
        return line
    record = dict(record)
    for kept in (PARTS_CUT, 0):  # the tree goes first: it is the biggest key and the console has the rest
        if len(record["parts"]) > kept:
            record["parts"] = record["parts"][:kept]
            line = (_object(record) + "\n").encode("utf-8")
            if len(line) <= RECORD_LIMIT:
                return line
    record["attachments"] = record["attachments"][:ATTACHMENTS_CUT]
    record["trace"] = ""
    record["readings"] = []
    line = (_object(record) + "\n").encode("utf-8")
    if len(line) <= RECORD_LIMIT:
        return line
    # Only thousands of long recipients or scanner answers get here: keep the start of everything.
    record["recipients"] = [text[:TEXT_CUT] for text in record["recipients"][:RECIPIENTS_CUT]]
    record["skipped"] = [text[:TEXT_CUT] for text in record["skipped"][:ATTACHMENTS_CUT]]
    record["scanners"] = [{**s, "answer": s["answer"][:TEXT_CUT]} for s in record["scanners"][:ATTACHMENTS_CUT]]
    for key, value in record.items():
        if isinstance(value, str):
            record[key] = value[:TEXT_CUT]
    record["decision"] = {key: value[:TEXT_CUT] for key, value in record["decision"].items()}
    return (_object(record) + "\n").encode("utf-8")


def _string(text: str) -> str:
    """A JSON string; a byte that was not UTF-8 (surrogateescape) becomes the text `\\xff`, as in the logs."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    if not text.isascii():
        text = "".join(_unsurrogate(c) if "\ud800" <= c <= "\udfff" else c for c in text)
    return '"' + text.translate(_ESCAPES) + '"'


def _unsurrogate(char: str) -> str:
    if "\udc80" <= char <= "\udcff":
        return f"\\x{ord(char) - 0xDC00:02x}"
    return "\ufffd"  # a lone surrogate of any other kind cannot be written as UTF-8


def _value(value: object) -> str:
    if isinstance(value, str):
        return _string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value - value == 0 else "null"  # NaN and infinities are not JSON
    if isinstance(value, dict):
        return _object(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value(item) for item in value) + "]"
    raise TypeError(f"no JSON for {type(value).__name__}")


def _object(values: dict) -> str:
    return "{" + ",".join(f'"{key}":{_value(value)}' for key, value in values.items()) + "}"


# ---------------------------------------------------------------- the record


def build(
    settings: Settings,
    environ: dict,
    area: WorkArea,
    message: Message | None,
    verdict: Verdict | None,
    code: int,
    stored_path: str = "",
    permanent: bool = False,
    failure: str = "",
) -> dict:
    """The record from what the program knows; a message refused early knows less (no envelope, no parts)."""
    outcome, reason, kind, rule, quarantine_dir, finding = _fate(verdict, code, permanent, failure, message)
    envelope = message.envelope if message is not None else None
    unpacked = message.unpacked if message is not None else None
    results = verdict.scan_results if verdict is not None else (message.scan_results if message else [])
    spam_score = next((r.spam_score for r in results if r.spam_score is not None), None)
    findings = verdict.findings if verdict is not None else (message.findings if message else [])
    client_ip, helo = client(environ, area.header_bytes)
    paths = part_paths(unpacked)
    decided = decided_part(unpacked, finding)
    return {
        "v": VERSION,
        "id": f"{settings.hostname}:{area.message_id}",
        "time": round(time.time(), 3),
        "host": settings.hostname,
        "queue_id": area.message_id,
        "client_ip": client_ip,
        "helo": helo,
        "auth_user": environ.get("SMTPAUTHUSER", ""),
        "sender": envelope.sender if envelope is not None else "",
        "recipients": list(envelope.recipients) if envelope is not None else [],
        "subject": subject(area, unpacked),
        "message_id": message_id(area, unpacked),
        "size": area.message_size,
        "outcome": outcome,
        "reason": reason,
        "rule": rule,
        "kind": kind,
        "scanners": scanner_answers(results, message.scanner_seconds if message else {}),
        "spam_score": spam_score,
        "spam_tagged": outcome == "delivered" and any(f.kind == "spam" and not f.monitor_only for f in findings),
        "attachments": attachments(unpacked),
        "quarantine_id": os.path.basename(stored_path),
        "quarantine_dir": quarantine_dir if stored_path else "",
        "readings": [a.text for a in getattr(unpacked, "ambiguities", ())],
        "skipped": list(verdict.skipped if verdict is not None else (message.skipped if message else [])),
        "trace": trace_value(settings, message, verdict),
        "parts": parts_tree(unpacked, paths, findings, decided, finding),
        "decision": decision(unpacked, paths, results, finding, decided, outcome, code, reason),
    }


def _fate(
    verdict: Verdict | None, code: int, permanent: bool, failure: str, message: Message | None
) -> tuple[str, str, str, str, str, Finding | None]:
    """(outcome, reason, kind, rule, quarantine_dir, the deciding finding) of the message."""
    if verdict is None:
        # Refused or failed: a virus or spam refusal still names its finding (--virus-reject, --sa-reject).
        finding = _refusing_finding(message.findings + _result_findings(message.scan_results)) if message else None
        outcome = "rejected" if permanent else "tempfail"
        if finding is None:
            return outcome, failure, "", "", "", None
        return outcome, failure, finding.kind, finding.rule, "", finding
    from .logs import deciding_finding

    finding = deciding_finding(verdict)
    if finding is None and verdict.action == "deliver":  # delivered tagged as spam: the spam finding says why
        finding = next((f for f in verdict.findings if f.kind == "spam" and not f.monitor_only), None)
    kind = finding.kind if finding is not None else KIND_OF_QUARANTINE.get(verdict.quarantine_kind, "")
    rule = finding.rule if finding is not None else ""
    if verdict.action == "deliver":
        if code == 0:
            return "delivered", verdict.reason, kind, rule, "", finding
        # qmail-queue itself refused it: codes 11 to 40 are permanent (qmail-queue(8)).
        outcome = "rejected" if 11 <= code <= 40 else "tempfail"
        return outcome, f"qmail-queue exited {code}", kind, rule, "", finding
    if verdict.action == "quarantine":
        directory = verdict.quarantine_kind if verdict.quarantine_kind in QUARANTINE_DIRS else "policy"
        return "quarantined", verdict.reason, kind, rule, directory, finding
    if verdict.action == "failed":  # --failed-action store: accepted and kept in failed/ unscanned
        return "quarantined", verdict.reason, "", "", "failed", None
    return "dropped", verdict.reason, kind, rule, "", finding


def _result_findings(results: list[ScanResult]) -> list[Finding]:
    return [finding for result in results for finding in result.findings]


def _refusing_finding(findings: list[Finding]) -> Finding | None:
    """The finding a refusal comes from, in verdict.decide's order: virus, policy, spam."""
    for kind in ("virus", "policy", "spam"):
        for finding in findings:
            if finding.kind == kind and not finding.monitor_only:
                return finding
    return None


def client(environ: dict, head: bytes) -> tuple[str, str]:
    """(client IP, HELO name): TCPREMOTEIP, and the HELO of qmail-smtpd's own Received line when it names that IP.

    qmail-smtpd writes `Received: from HOST (HELO name) (info@IP)` on top; the HELO part is
    absent when the name equals HOST. A first Received line with another IP is not ours to trust.
    """
    ip = environ.get("TCPREMOTEIP", "")
    if not ip or not head.startswith(b"Received: from "):
        return ip, ""
    end = head.find(b"\n")
    line = head[15 : end if end >= 0 else len(head)].rstrip(b"\r").decode("utf-8", "surrogateescape")
    opening = line.rfind(" (")
    if opening < 0 or not line.endswith(")") or line[opening + 2 : -1].rpartition("@")[2] != ip:
        return ip, ""
    named = line[:opening]
    host, _, helo = named.partition(" ")
    if helo.startswith("(HELO ") and helo.endswith(")"):
        return ip, helo[6:-1][:NAME_LIMIT]
    return ip, host[:NAME_LIMIT]


def subject(area: WorkArea, unpacked: object) -> str:
    """The Subject decoded from RFC 2047, on one line, control characters as `_`, bounded."""
    from .message_headers import header_safe, raw_header_value

    value = getattr(unpacked, "subject", None) if getattr(unpacked, "normalize", False) else None
    if value is None:
        from .unpack.headers import decode_words

        value = decode_words(raw_header_value(area.header_bytes, b"subject"))
    return header_safe(" ".join(value.split()), SUBJECT_LIMIT)


def message_id(area: WorkArea, unpacked: object) -> str:
    """The Message-ID header, control characters as `_`, bounded."""
    from .message_headers import header_safe, raw_header_value

    value = getattr(unpacked, "message_id", None)
    if value is None:
        value = raw_header_value(area.header_bytes, b"message-id")
    return header_safe(value.strip(), NAME_LIMIT)


def attachments(unpacked: object) -> list[dict]:
    """Named parts (archive members as `archive/name`), their type by content and decoded size; the first 200."""
    from .message_headers import header_safe

    found = []
    for part in getattr(unpacked, "parts", ()) or ():
        if not part.filenames:
            continue
        name = part.filenames[0] if not part.container else f"{part.container}/{part.filenames[0]}"
        kind = part.magic_type or part.declared_type
        found.append({"name": header_safe(name, NAME_LIMIT), "type": header_safe(kind, 100), "size": part.size})
        if len(found) >= ATTACHMENTS_KEPT:
            break
    return found


def part_paths(unpacked: object) -> list[str]:
    """Each part's dotted position in the tree, by walk order: "" the message, "2.1" the first part inside the second.

    The walk records parts in document order with their depth (archive members one level below
    their archive), so a part's parent is the nearest earlier part less deep. A later reading of
    an ambiguous message walks it again from the top: its parts are numbered afresh.
    """
    paths = []
    held: list[list] = []  # the open ancestors: [depth, path, children numbered so far]
    for part in getattr(unpacked, "parts", ()) or ():
        depth = part.depth
        while held and held[-1][0] >= depth:
            held.pop()
        if not held:
            path = ""
        else:
            parent = held[-1]
            parent[2] += 1
            path = f"{parent[1]}.{parent[2]}" if parent[1] else str(parent[2])
        held.append([depth, path, 0])
        paths.append(path)
    return paths


def parts_tree(
    unpacked: object, paths: list[str], findings: list[Finding], decided: int = -1, deciding: Finding | None = None
) -> list[dict]:
    """The first 500 parts as read: where, declared and real type, name, size, encoding, archive, readings, finding."""
    parts = getattr(unpacked, "parts", None)
    if not parts:
        return []
    from .message_headers import header_safe

    found = _findings_at(parts, findings)
    if deciding is not None and decided >= 0:
        found[decided] = deciding
    named = [a for a in getattr(unpacked, "ambiguities", ()) if a.part_name]
    tree = []
    for part, path in zip(parts[:PARTS_KEPT], paths):
        readings = [part.reading] if part.reading else []
        if named and part.filenames:
            readings += [a.text for a in named if a.part_name in part.filenames and a.text not in readings]
        tree.append(
            {
                "path": path[:PATH_LIMIT],
                "depth": part.depth,
                "type": header_safe(part.declared_type, TYPE_LIMIT),
                "real_type": header_safe(part.magic_type, TYPE_LIMIT),
                "name": header_safe(part.filenames[0], NAME_LIMIT) if part.filenames else "",
                "size": part.size,
                "encoding": header_safe(part.transfer_encoding, TYPE_LIMIT),
                "container": part.archive or ("archive" if part.container else ""),
                "readings": [header_safe(text, TEXT_CUT) for text in readings[:READINGS_KEPT]],
                "finding": header_safe(found[part.index].rule, NAME_LIMIT) if part.index in found else "",
            }
        )
    return tree


def _findings_at(parts: list, findings: list[Finding]) -> dict[int, Finding]:
    """Part index -> the finding made at it that weighs most, in verdict.decide's order (blocking before
    monitored, virus, policy, spam): by the index the finding carries, or by the name it gives."""
    at: dict[int, Finding] = {}
    names: dict[str, int] | None = None
    for finding in sorted(findings, key=lambda f: (f.monitor_only, KIND_WEIGHT.get(f.kind, 3))):
        index = finding.part
        if index < 0 and finding.part_name:
            if names is None:
                names = {}
                for part in parts:
                    for name in part.filenames:
                        names.setdefault(f"{part.container}/{name}" if part.container else name, part.index)
            index = names.get(finding.part_name, -1)
        if index >= 0:
            at.setdefault(index, finding)
    return at


def decided_part(unpacked: object, finding: Finding | None) -> int:
    """Index of the part the deciding finding was made at, or -1.

    A finding only another reading shows (its reason names that reading) is placed at the part
    of that reading which carries its name, not at a part of the first reading with the same name.
    """
    if finding is None:
        return -1
    from .unpack.readings import READING_NOTE

    parts = getattr(unpacked, "parts", None) or []
    index = next(iter(_findings_at(parts, [finding])), -1)
    reading = finding.reason.partition(READING_NOTE)[2]
    if reading and 0 <= index < len(parts) and not parts[index].reading:
        name = parts[index].filenames[0] if parts[index].filenames else None
        for part in parts:
            if part.reading and part.reading in reading and (name is None or name in part.filenames):
                return part.index
    return index


def decision(
    unpacked: object,
    paths: list[str],
    results: list[ScanResult],
    finding: Finding | None,
    index: int,
    outcome: str,
    code: int,
    reason: str,
) -> dict:
    """What decided the outcome: the finding's part, rule, scanner and reading, and why; {} for a clean delivery."""
    from .message_headers import header_safe

    if finding is None:
        if outcome == "delivered" and code == 0:
            return {}
        failed = ", ".join(r.scanner for r in results if r.failed and not r.unchecked)
        return {"part": "", "rule": "", "scanner": failed, "reading": "", "text": header_safe(reason, TEXT_CUT)}
    from .unpack.readings import READING_NOTE

    parts = getattr(unpacked, "parts", None) or []
    reading = finding.reason.partition(READING_NOTE)[2]
    if not reading and 0 <= index < len(parts):
        reading = parts[index].reading
    scanner = next((r.scanner for r in results if finding in r.findings), "")
    return {
        "part": paths[index][:PATH_LIMIT] if 0 <= index < len(paths) else "",
        "rule": header_safe(finding.rule, NAME_LIMIT),
        "scanner": scanner,
        "reading": header_safe(reading, TEXT_CUT),
        "text": header_safe(reason or finding.reason, TEXT_CUT),
    }


def scanner_answers(results: list[ScanResult], seconds: dict) -> list[dict]:
    """Each scanner's answer in a word or a few: clean, the virus or spam rule found, its score, or its failure."""
    answers = []
    for result in results:
        if result.failed:
            answer = f"{'unchecked' if result.unchecked else 'failed'}: {result.failure_reason}"
        elif result.findings:
            answer = ", ".join(finding.rule for finding in result.findings)
        else:
            answer = "clean"
        if result.spam_score is not None:
            answer += f" ({result.spam_score:.1f}/{result.spam_required or 0:.1f})"
        elapsed = seconds.get(result.scanner)
        answers.append(
            {"name": result.scanner, "answer": answer, "seconds": round(elapsed, 3) if elapsed is not None else None}
        )
    return answers


def trace_value(settings: Settings, message: Message | None, verdict: Verdict | None) -> str:
    """What the trace header says (or would say, for a message not delivered); "" without a verdict."""
    if message is None or verdict is None:
        return ""
    from .trace import trace_header

    header = trace_header(settings, message.envelope, verdict, message.environ, message.seconds())
    text = header.decode("utf-8", "surrogateescape")
    return text.partition(": ")[2].replace("\n", "").strip()


# Without a console loader nothing takes current.jsonl away; -z (daily) bounds what waits for one.
UNREAD_RECORDS_LIMIT = 64 << 20


def bound_unread_records(spooldir: str, limit: int = UNREAD_RECORDS_LIMIT) -> str:
    """-z: on a spool no loader has ever served, keep at most two files of records (current and one .old).

    A loader leaves records/loader.lock; where there is none, a current.jsonl over the limit is renamed
    to current.jsonl.old (the older .old goes): about 1 KB per message would otherwise grow without end.
    Returns what was done, for -z's output ("" for nothing).
    """
    records = os.path.join(spooldir, RECORDS_DIR)
    current = os.path.join(records, "current.jsonl")
    try:
        if os.path.lexists(os.path.join(records, "loader.lock")) or os.lstat(current).st_size <= limit:
            return ""
        os.rename(current, current + ".old")
    except FileNotFoundError:
        return ""
    return f"no console loader takes the message records: {current} moved to .old (the older .old removed)"
