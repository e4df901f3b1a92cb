"""Carry out a verdict: headers, delivery, quarantine, drop, archive; then log and alert.

Quarantined and archived copies keep their envelope as a block of `X-QS-Envelope*` headers
written at the very top of the stored file (see `envelope_block`). `X-QS-Envelope:`, last in
the block, holds the exact envelope bytes (base64), so a release re-injects with the envelope
unchanged; the others are for people reading the maildir with mutt. The first line names the
SMTP client as qmail-smtpd did (`[IP] from HOST (HELO name)`), so scripts that read the head
of a quarantined file for the client (the original kept qmail-smtpd's `Received:` line there)
find it whatever the envelope's size. Release removes the leading run of `X-QS-Envelope*`
headers and gets the message back as it was received.
"""

from __future__ import annotations

import os

from .message_headers import (
    forged_header_names,
    header_safe,
    read_header_block,
    render_header,
    rewrite_headers,
    rfc2822_date,
)
from .message_headers import split_header_block as split_header_block  # where callers and tests have found it
from .outcomes import QUEUED, TemporaryFailure
from .queue_protocol import hand_on
from .records import Verdict
from .spool import deliver_to_maildir
from .stderr_log import say
from .trace import status_text, trace_header

TYPE_CHECKING = False  # typing costs milliseconds per message; only type checkers look here
if TYPE_CHECKING:
    from .message import Message
    from .settings import Settings

ENVELOPE_HEADER = b"X-QS-Envelope"
QUARANTINE_KINDS = ("viruses", "policy", "spam")


def carry_out(message: Message, verdict: Verdict) -> int:
    """Carry out the verdict; return the exit code (0 only when queued or safely stored)."""
    settings = message.settings
    stored_path = ""
    if verdict.action == "deliver":
        if archive_wanted(settings, message.envelope.sender, message.envelope.recipients):
            archive(message, verdict)
        pieces = delivery_pieces(message, verdict)
        envelope = message.envelope.raw
        if settings.spam_redirect or settings.spam_recipient_suffix:
            from .spam_policy import spam_envelope

            envelope = spam_envelope(settings, verdict, envelope)
        try:
            code = hand_on(settings.qmail_queue_binary, pieces, envelope)
        finally:
            for piece in pieces:
                if isinstance(piece, tuple) and piece[0] != message.message_fd:
                    os.close(piece[0])
    elif verdict.action == "quarantine":
        stored_path = quarantine(message, verdict)
        if archive_wanted(settings, message.envelope.sender, message.envelope.recipients):
            archive(message, verdict)
        code = QUEUED  # stored durably: accepted
    elif verdict.action == "drop":
        code = QUEUED  # the site chose to accept and discard
    else:
        raise TemporaryFailure(f"4.3.0 unknown verdict action {verdict.action!r}, try again later")
    record(message, verdict, code, stored_path)
    return code


def record(message: Message, verdict: Verdict, code: int, stored_path: str = "") -> None:
    """Log the message, write its console record, send alerts; a failure here never changes the mail's fate."""
    try:
        from .logs import log_message

        log_message(message, verdict, code, stored_path)
    except Exception as error:  # the message is already queued or stored
        say(f"logging failed: {type(error).__name__}: {error}")
    try:
        from .message_record import write_outcome

        write_outcome(message, verdict, code, stored_path)
    except Exception as error:  # the console's record never changes what happened to the mail
        say(f"message record failed: {type(error).__name__}: {error}")
    if verdict.action in ("quarantine", "drop"):
        try:
            from .notify import send_alerts

            send_alerts(message, verdict)
        except Exception as error:  # an alert failure never changes the verdict
            say(f"alert failed: {type(error).__name__}: {error}")


# ---------------------------------------------------------------- headers


def descriptive_headers(message: Message, verdict: Verdict) -> bytes:
    """The --add-dscr-hdrs headers: Mail-From, Rcpt-To (only `all`), the status, Message-ID."""
    settings = message.settings
    if settings.add_dscr_hdrs not in ("yes", "all"):
        return b""
    text = settings.dscr_hdrs_text
    status = status_text(verdict, message.environ)
    sender = header_safe(message.envelope.sender, 1003)
    lines = [f"{text}-Mail-From: {sender} via {settings.hostname}\n"]
    if settings.add_dscr_hdrs == "all":
        rcpts = ",\n\t".join(header_safe(r, 1003) for r in message.envelope.recipients)
        lines.append(f"{text}-Rcpt-To: {rcpts}\n")
    lines.append(f"{text}: {settings.version} ({status}. Processed in {message.seconds():.3f} secs)\n")
    lines.append(f"{text}-Message-ID: <{message.area.message_id}@{settings.hostname}>\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


def delivery_pieces(message: Message, verdict: Verdict) -> list:
    """What goes to qmail-queue: our headers, the cleaned header block, then the body unread."""
    settings = message.settings
    added = trace_header(settings, message.envelope, verdict, message.environ, message.seconds())
    added += descriptive_headers(message, verdict)
    added += b"".join(render_header(name, value) for name, value in verdict.add_headers)
    subject_tag = next((r.subject_tag for r in verdict.scan_results if r.subject_tag), "")
    names, prefixes = forged_header_names(settings)
    replacement = next((r.replacement_path for r in verdict.scan_results if r.replacement_path), None)
    if replacement:
        # Verbose spam mode: the scanner rewrote the message (its own X-Spam-* headers stay).
        source_fd = _open_replacement(message, replacement)
        head = os.pread(source_fd, 1 << 16, 0)
        prefixes = ()
    else:
        source_fd = message.message_fd
        head = message.area.header_bytes
    block, end = read_header_block(head, source_fd)
    return [added, rewrite_headers(block, names, prefixes, subject_tag), (source_fd, end)]


def _open_replacement(message: Message, path: str) -> int:
    """Open the scanner's rewritten message; it lives in this message's work dir."""
    real = os.path.realpath(path)
    if not real.startswith(os.path.realpath(message.area.unpack_dir) + os.sep):
        raise TemporaryFailure("4.3.0 rewritten message outside the work dir, try again later")
    return os.open(real, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))


# ---------------------------------------------------------------- stored copies


# qmail-smtpd's own line: `Received: from HOST (HELO name) (info@IP)` then `  by LOCAL ...`;
# the HELO part is absent when the name equals HOST.
QMAIL_SMTPD_RECEIVED = None
# Words that make the head-of-file readers see an IP in a value from outside (see `block_safe`).
READER_WORDS = ("HELO", "Received")


def block_safe(value: str, limit: int) -> str:
    """A value from outside for the envelope block: header-safe, and never `HELO` or `Received`.

    Readers of the original's quarantine grep the file's first lines for `HELO` and split them on
    `Received` to collect client IPs; a sender, a file name or a HELO name carrying those words
    (and a dotted quad) would make them report an IP of the attacker's choosing.
    """
    safe = header_safe(value, limit)
    for word in READER_WORDS:
        safe = safe.replace(word, f"{word[:3]}_{word[3:]}")
    return safe


def smtp_client(message: Message) -> tuple[str, str, str]:
    """(IP, host, HELO name) of the SMTP client: qmail-smtpd's top Received line, else tcpserver's variables."""
    global QMAIL_SMTPD_RECEIVED
    import re

    if QMAIL_SMTPD_RECEIVED is None:
        QMAIL_SMTPD_RECEIVED = re.compile(
            rb"Received: from (?P<host>\S*) (?:\(HELO (?P<helo>[^\n]*)\) )?"
            rb"\((?:[^()\n]*@)?(?P<ip>[0-9A-Fa-f.:]+)\)\r?\n[ \t]+by "
        )
    environ = message.environ
    ip = environ.get("TCPREMOTEIP", "")
    host = environ.get("TCPREMOTEHOST", "") or "unknown"
    helo = ""
    head = os.pread(message.message_fd, 4096, 0)
    found = QMAIL_SMTPD_RECEIVED.match(head)
    if found and (not ip or found["ip"].decode("ascii") == ip):
        ip = found["ip"].decode("ascii")
        host = found["host"].decode("utf-8", "surrogateescape") or host
        helo = (found["helo"] or found["host"]).decode("utf-8", "surrogateescape")
    return ip, host, helo or host


def client_line(message: Message) -> str:
    """`X-QS-Envelope-Client: [IP] from HOST (HELO name)`: the client's IP is the line's first dotted quad."""
    ip, host, helo = smtp_client(message)
    if not ip:
        return "X-QS-Envelope-Client: none (not received over SMTP)\n"
    # Only an IPv4 client gets the word HELO: for any other the first dotted quad could be the HELO's.
    helo_word = "HELO" if ip.count(".") == 3 and ip.replace(".", "").isdigit() else "helo"
    named = f"from {block_safe(host, 255)} ({helo_word} {block_safe(helo, 255)})"
    return f"X-QS-Envelope-Client: [{header_safe(ip, 64)}] {named}\n"


def envelope_block(message: Message, verdict: Verdict, kind: str) -> bytes:
    """The X-QS-Envelope* headers put on top of a quarantined or archived copy.

    The lines of fixed size come first and the ones growing with the envelope (recipients, the
    base64 envelope) last, so the client line and the reason stay in the first ten lines.
    """
    import binascii

    envelope = message.envelope
    encoded = binascii.b2a_base64(envelope.raw, newline=False).decode("ascii")
    folded = "\n\t".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) or '""'
    lines = [
        client_line(message),
        f"X-QS-Envelope-Id: {message.area.message_id}\n",
        f"X-QS-Envelope-Kind: {kind}\n",
        f"X-QS-Envelope-Date: {rfc2822_date()}\n",
        f"X-QS-Envelope-Client-IP: {header_safe(message.environ.get('TCPREMOTEIP', ''), 64)}\n",
        f"X-QS-Envelope-Relay-Client: {'1' if 'RELAYCLIENT' in message.environ else '0'}\n",
    ]
    if verdict.reason:
        lines.append(f"X-QS-Envelope-Reason: {block_safe(verdict.reason, 900)}\n")
    lines.append(f"X-QS-Envelope-From: <{block_safe(envelope.sender, 1003)}>\n")
    lines += [f"X-QS-Envelope-To: <{block_safe(r, 1003)}>\n" for r in envelope.recipients]
    lines.append(f"X-QS-Envelope: {folded}\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


def quarantine(message: Message, verdict: Verdict) -> str:
    """Store the message as received, with its envelope, in quarantine/<kind>; return the path."""
    kind = verdict.quarantine_kind if verdict.quarantine_kind in QUARANTINE_KINDS else "policy"
    maildir = os.path.join(message.settings.spooldir, "quarantine", kind)
    if kind == "spam" and message.settings.spam_maildir:
        maildir = message.settings.spam_maildir
    pieces = [envelope_block(message, verdict, kind), (message.message_fd, 0)]
    return deliver_to_maildir(maildir, pieces, message.area.message_id)


def archive_wanted(settings: Settings, sender: str, recipients: tuple[str, ...]) -> bool:
    """--archive: `yes` keeps every message, a regex only those whose sender or a recipient match."""
    value = settings.archive
    if not value or value == "no":
        return False
    if value == "yes":
        return True
    import re

    pattern = re.compile(value, re.IGNORECASE)
    return any(pattern.search(address) for address in (sender, *recipients))


def archive(message: Message, verdict: Verdict) -> str:
    """Copy the message as received, with its envelope, into archives/; return the path."""
    maildir = os.path.join(message.settings.spooldir, "archives")
    pieces = [envelope_block(message, verdict, "archive"), (message.message_fd, 0)]
    return deliver_to_maildir(maildir, pieces, message.area.message_id)


def store_failed(message: Message, reason: str) -> int:
    """Keep a message that could not be processed in failed/ (instead of temp-failing); exit 0."""
    verdict = Verdict(action="failed", reason=reason)
    maildir = os.path.join(message.settings.spooldir, "failed")
    path = deliver_to_maildir(
        maildir, [envelope_block(message, verdict, "failed"), (message.message_fd, 0)], message.area.message_id
    )
    record(message, verdict, QUEUED, path)
    return QUEUED
