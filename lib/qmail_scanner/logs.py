"""The logs of the original: syslog lines or mailstats.csv rows, quarantine.log, the debug trace.

Parsers written for Qmail-Scanner read these files, so the original's fields keep their place
and ours only ever follow them. syslog and mailstats.csv: one row per recipient, as the original
wrote them (syslog: space-separated with spaces inside fields turned into `_`; mailstats.csv:
TAB-separated, the date first, `Wed, 26 Mar 2008 10:00:00 +0100`, as in quarantine.log):

    status seconds size sender recipient subject message-id attachment:size...

`status` is `Clear:RC:1(ip):SA:0(1.2/5.0):` for delivered mail (trace.status_text) and
`<Quarantined|Dropped|Failed>:<Kind>(<reason>):RC:1(ip):` otherwise; `--log-crypto` appends
`CR:PGP(signed):`-style tags. The null sender is `<>`; an empty field is `-`; a message without
attachments shows `<id>-unpacked:<size>`, as the original did.

quarantine.log (TABs): date, sender, recipients, subject, reason, scanners; then ours: kind, id,
our full reason. The reason (field 5, what reports count) is the bare virus name, the original's
text for its internal checks, or the policy rule's description; the scanners field is the
`clamd: 1.4.3/27000. pyscan: 2.0.0.` of the trace header.
"""

from __future__ import annotations

import os
import time

from .message_headers import header_message_id, header_safe, header_subject, rfc2822_date
from .message_headers import raw_header_value as raw_header_value  # where callers and tests have found it
from .stderr_log import LOG_LINE_LIMIT, one_line
from .trace import scanner_versions, status_text

TYPE_CHECKING = False  # typing costs milliseconds per message; only type checkers look here
if TYPE_CHECKING:
    from .message import Message
    from .records import Finding, Verdict
    from .settings import Settings

SYSLOG_FACILITY_MAIL = 2
SYSLOG_INFO = 6
SYSLOG_TAG = "qmail-scanner"
SYSLOG_TIMEOUT = 2.0  # seconds per send
# Attachments named in a syslog line or mailstats.csv row; the rest are counted ("and 4,995 more"):
# five names of up to 255 characters keep a row within one log line (stderr_log.LOG_LINE_LIMIT).
LOGGED_ATTACHMENTS = 5
KIND_WORDS = {"viruses": "Virus", "policy": "Policy", "spam": "Spam"}
FINDING_KINDS = {"viruses": "virus", "policy": "policy", "spam": "spam"}
ACTION_WORDS = {"quarantine": "Quarantined", "drop": "Dropped", "failed": "Failed"}
# What the original wrote as the reason for its internal checks, by the name of our check.
# Reports and graphs of its logs match these texts (munin's qmailscan plugin filters on them,
# the double blank included); our other checks log their own reason.
ORIGINAL_CHECK_TEXTS = {
    "broken-continuation": "Disallowed breakage found in header name - potential virus",
    "broken-header-line": "Disallowed breakage found in header name - potential virus",
    "header-comment": "Disallowed MIME comment found in header name - potential virus",
    "nul-in-header": "Disallowed  characters found in MIME headers",
    "cr-in-header": "Disallowed  characters found in MIME headers",
}


def note(message: Message, text: str, level: int = 1) -> None:
    """Add a step to the debug trace when --debug is at least `level`."""
    if message.settings.debug >= level:
        message.notes.append(f"+{message.seconds():.3f}s {text}")


def log_message(message: Message, verdict: Verdict, code: int, stored_path: str = "") -> None:
    """Write everything the site asked to be logged about this message."""
    settings = message.settings
    if settings.log_details == "syslog":
        send_syslog_rows(settings, log_rows(message, verdict, code))
    elif settings.log_details == "mailstats":
        date = rfc2822_date()
        rows = ["\t".join([date, *row]) for row in log_rows(message, verdict, code)]
        append_lines(os.path.join(settings.effective_logdir, "mailstats.csv"), rows, keep="\t")
    if verdict.action in ("quarantine", "drop", "failed"):
        row = quarantine_row(message, verdict, stored_path)
        append_lines(os.path.join(settings.effective_logdir, "quarantine.log"), [row], keep="\t")
    note(message, f"finished: {verdict.action} ({verdict.reason or 'clean'}), exit {code}")
    write_debug_trace(message)


def send_syslog_rows(settings: Settings, rows: list[list[str]]) -> None:
    """One syslog line per row; without a syslog daemon the same lines go to qmail-smtpd's log (stderr).

    The fallback lines keep syslog's form (`<time> qmail-scanner[pid]: Clear:RC:...`), one per
    recipient, so qs-report and parsers that grep for ` qmail-scanner` read them in the smtpd log.
    """
    lines = [" ".join(field.replace(" ", "_") for field in row) for row in rows]
    try:
        send_syslog(lines, settings.syslog_socket)
    except OSError as error:
        from .stderr_log import say_lines

        reason = error.strerror or str(error)
        if _syslog_outage_begins(settings, reason):
            note_line = (
                f"syslog at {settings.syslog_socket} unavailable ({reason}): the per-message lines go to this log"
                f" until it is back (said once; {os.path.join(settings.effective_logdir, SYSLOG_OUTAGE_FILE)})"
            )
            lines.insert(0, note_line)
        say_lines(lines)
        return
    global _syslog_seen_working
    if not _syslog_seen_working:
        _syslog_seen_working = True
        _syslog_outage_ends(settings)


# A file in the log dir marks an outage of syslog, so that the note about it is written once, not
# once per message (each message is a process of its own without the engine).
SYSLOG_OUTAGE_FILE = "syslog-unavailable"
_syslog_seen_working = False  # this process has sent to syslog since it last failed


def _syslog_outage_begins(settings: Settings, reason: str) -> bool:
    """True when this is the first message of an outage (the marker did not exist: say so in the log)."""
    global _syslog_seen_working
    _syslog_seen_working = False
    path = os.path.join(settings.effective_logdir, SYSLOG_OUTAGE_FILE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0), 0o640)
    except FileExistsError:
        return False
    except OSError:
        return True  # no marker can be left: better a note per process than none
    try:
        os.write(fd, f"{time.strftime('%Y-%m-%d %H:%M:%S %z')} {settings.syslog_socket}: {reason}\n".encode())
    finally:
        os.close(fd)
    return True


def _syslog_outage_ends(settings: Settings) -> None:
    """Syslog works: remove the outage marker, and say so in the log when there was one."""
    try:
        os.unlink(os.path.join(settings.effective_logdir, SYSLOG_OUTAGE_FILE))
    except OSError:
        return
    from .stderr_log import say

    say(f"syslog at {settings.syslog_socket} is back: the per-message lines go to syslog again")


def quarantine_row(message: Message, verdict: Verdict, stored_path: str) -> str:
    """The quarantine.log line: the original's six fields, then kind, id and our full reason."""
    envelope = message.envelope
    row = [
        rfc2822_date(),
        envelope.sender or "<>",
        ",".join(envelope.recipients),
        header_subject(message),
        logged_reason(verdict),
        scanner_versions(message.settings, verdict.scan_results),
        verdict.quarantine_kind or verdict.action,
        os.path.basename(stored_path) or "-",
        verdict.reason,
    ]
    return "\t".join(_tab_safe(value) for value in row)


def deciding_finding(verdict: Verdict) -> Finding | None:
    """The finding the verdict's reason comes from (None for failures and clean mail)."""
    wanted = FINDING_KINDS.get(verdict.quarantine_kind)
    for finding in verdict.findings:
        if finding.kind == wanted and not finding.monitor_only and finding.reason == verdict.reason:
            return finding
    return None


def logged_reason(verdict: Verdict) -> str:
    """The reason as the original logged it: the bare virus name, its text for an internal check."""
    finding = deciding_finding(verdict)
    if finding is None:
        return verdict.reason
    if finding.kind == "virus":
        return finding.rule
    original = ORIGINAL_CHECK_TEXTS.get(finding.rule)
    if original is not None:
        return original
    if finding.kind == "policy":
        from .formatcheck import RULES

        return RULES.get(finding.rule, finding.reason)  # without the per-message detail
    return finding.reason


def log_rows(message: Message, verdict: Verdict, code: int) -> list[list[str]]:
    """The syslog / mailstats.csv fields, one row per recipient as the original wrote them."""
    envelope = message.envelope
    fields = [
        status_field(message, verdict, code),
        f"{message.seconds():.3f}",
        str(message.area.message_size),
        envelope.sender or "<>",
        "-",  # the recipient, set per row
        header_subject(message) or "-",
        header_message_id(message) or "-",
    ]
    fields = [_tab_safe(field) for field in fields]
    attachments = []
    named = [part for part in getattr(message.unpacked, "parts", ()) or () if part.filenames]
    for part in named[:LOGGED_ATTACHMENTS]:
        name = part.filenames[0] if not part.container else f"{part.container}/{part.filenames[0]}"
        attachments.append(_tab_safe(f"{name}:{part.size}", 255))
    if len(named) > LOGGED_ATTACHMENTS:
        attachments.append(f"and {len(named) - LOGGED_ATTACHMENTS:,} more")
    if not attachments:
        attachments.append(f"{message.area.message_id}-unpacked:{message.area.message_size}")
    recipients = envelope.recipients or ("-",)
    return [[*fields[:4], _tab_safe(recipient), *fields[5:], *attachments] for recipient in recipients]


def status_field(message: Message, verdict: Verdict, code: int) -> str:
    """`Clear:RC:...` for delivered mail; `Quarantined:Virus(<reason>):RC:...` for the rest."""
    relay_and_ip = status_text(verdict, message.environ).split(":", 1)[1]  # "RC:1(ip):..."
    if verdict.action == "deliver":
        status = "Clear:" + relay_and_ip if code == 0 else f"Failed({code}):" + relay_and_ip
    else:
        word = ACTION_WORDS.get(verdict.action, verdict.action.capitalize())
        kind = KIND_WORDS.get(verdict.quarantine_kind, "")
        status = f"{word}:{kind}({header_safe(logged_reason(verdict), 200)}):" + relay_and_ip
    if message.settings.log_crypto:
        status += "".join(f"CR:{tag}:" for tag in crypto_tags(message))
    return status


def crypto_tags(message: Message) -> list[str]:
    """`PGP(signed)`, `SMIME(encrypted)`, `ZIP(encrypted)`, as the unpacker found them."""
    return list(getattr(message.unpacked, "crypto", ()) or ())


def _tab_safe(value: str, limit: int = 1003) -> str:
    return header_safe(value.replace("\t", " "), limit)


def append_lines(path: str, lines: list[str], keep: str = "") -> None:
    """Append log lines, each one line of at most LOG_LINE_LIMIT bytes (`keep`: characters left as they are)."""
    append_text(path, "".join(one_line(line, keep=keep) + "\n" for line in lines))


def append_text(path: str, text: str) -> None:
    """Append with a single O_APPEND write, so concurrent processes never interleave (only append_lines calls it)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o640)
    try:
        os.write(fd, text.encode("utf-8", "replace"))
    finally:
        os.close(fd)


def send_syslog(lines: list[str], socket_path: str = "/dev/log") -> None:
    """Lines to syslog over one connection, facility mail, tag `qmail-scanner[pid]` (as glibc's syslog(3))."""
    import _socket  # the C module: `socket` would pull in enum on every message

    priority = SYSLOG_FACILITY_MAIL * 8 + SYSLOG_INFO
    stamp = time.strftime("%b %d %H:%M:%S", time.localtime())
    head = f"<{priority}>{stamp} {SYSLOG_TAG}[{os.getpid()}]: "
    packets = [(head + one_line(line, LOG_LINE_LIMIT - len(head))).encode("utf-8") for line in lines]
    sender = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    try:
        sender.settimeout(SYSLOG_TIMEOUT)  # a stalled syslog daemon must not hold the mail flow
        try:
            sender.connect(socket_path)
        except OSError:
            sender.close()
            # Some syslog daemons listen on a stream socket instead.
            sender = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            sender.settimeout(SYSLOG_TIMEOUT)
            sender.connect(socket_path)
            sender.sendall(b"".join(packet + b"\0" for packet in packets))
            return
        for packet in packets:
            sender.send(packet)
    finally:
        sender.close()


def write_debug_trace(message: Message) -> None:
    """--debug: append the collected steps to qmail-queue.log as `<date>:<pid>: <step>`."""
    if not message.settings.debug or not message.notes:
        return
    stamp = time.strftime("%d/%m/%Y %H:%M:%S", time.localtime())
    prefix = f"{stamp}:{os.getpid()}: {message.area.message_id} "
    lines = [prefix + line for line in message.notes]
    message.notes.clear()
    append_lines(os.path.join(message.settings.effective_logdir, "qmail-queue.log"), lines)
