"""SpamAssassin's spamd, spoken to directly (no spamc: it reports a dead daemon as ham).

Fast mode sends CHECK and writes our own X-Spam-* headers; verbose mode sends PROCESS and the
message spamd returns (with SpamAssassin's own headers) is what gets queued.
"""

from __future__ import annotations

import os
import socket

from ..records import Finding, ScanResult
from .common import (
    STREAM_CHUNK_BYTES,
    Deadline,
    ScannerFailure,
    connect,
    file_chunks,
    one_line,
    over_spam_size_limit,
    scan_deadline,
    send_all,
)

TYPE_CHECKING = False  # importing typing costs every message milliseconds
if TYPE_CHECKING:
    from ..message import Message
    from ..settings import ScannerConfig

PROTOCOL = "SPAMC/1.5"
MAX_HEADER_BYTES = 16384
# Verbose mode may add a report wrapper around the message; anything far beyond is not a reply.
PROCESS_GROWTH_BYTES = 1_000_000


class SpamdReply:
    """The parsed head of a spamd reply."""

    def __init__(self, is_spam: bool, score: float, required: float, content_length: int | None) -> None:
        self.is_spam = is_spam
        self.score = score
        self.required = required
        self.content_length = content_length


def scan(config: ScannerConfig, message: Message) -> ScanResult:
    """Ask spamd for a score; in verbose mode also take its rewritten message."""
    settings = message.settings
    skipped = over_spam_size_limit(config, message, "X-Spam-Status", "No, ")
    if skipped:
        return skipped
    deadline = scan_deadline(config, message, settings.sa_timeout)
    verbose = settings.sa_verbose or config.name == "verbose_spamassassin"
    user = message.envelope.recipients[0] if len(message.envelope.recipients) == 1 else ""
    replacement_path = os.path.join(message.area.unpack_dir, "spamd-processed.eml") if verbose else None
    problems = []
    for address in config.addresses or ("/var/run/spamd.sock",):
        try:
            reply = exchange(
                address,
                "PROCESS" if verbose else "CHECK",
                message.message_fd,
                message.area.message_size,
                user,
                config.connect_timeout,
                deadline,
                replacement_path,
            )
            break
        except ScannerFailure as failure:
            text = str(failure)
            problems.append(text if text.startswith(address) else f"{address}: {text}")
            if replacement_path:
                _remove(replacement_path)
    else:
        raise ScannerFailure("; ".join(problems))
    return result_from_reply(config.name, settings, reply, replacement_path)


def result_from_reply(name: str, settings, reply: SpamdReply, replacement_path: str | None) -> ScanResult:
    """Turn spamd's score into findings and headers; spam = score >= required + sa_delta."""
    is_spam = reply.score >= reply.required + settings.sa_delta
    findings: tuple[Finding, ...] = ()
    if is_spam:
        reason = f"Spam: score {reply.score:.1f} >= {reply.required + settings.sa_delta:.1f}"
        findings = (Finding("spam", name, reason),)
    headers: tuple[tuple[str, str], ...] = ()
    if replacement_path is None:
        status = "Yes" if is_spam else "No"
        headers = (
            ("X-Spam-Status", f"{status}, hits={reply.score:.1f} required={reply.required:.1f}"),
            ("X-Spam-Level", "*" * max(0, min(50, int(reply.score)))),
        )
        if is_spam:
            headers += (("X-Spam-Flag", "YES"),)
    return ScanResult(
        name,
        findings=findings,
        spam_score=reply.score,
        spam_required=reply.required,
        extra_headers=headers,
        replacement_path=replacement_path,
        subject_tag=settings.sa_subject if is_spam else "",
    )


def exchange(
    address: str,
    verb: str,
    fd: int,
    size: int,
    user: str,
    connect_timeout: float,
    deadline: Deadline,
    replacement_path: str | None = None,
) -> SpamdReply:
    """Send one request with the message from fd; read and check the reply."""
    sock = connect(address, connect_timeout, deadline)
    try:
        head = f"{verb} {PROTOCOL}\r\nContent-length: {size}\r\n"
        if user and _header_safe(user):
            head += f"User: {user}\r\n"
        send_all(sock, (head + "\r\n").encode("utf-8", "surrogateescape"), deadline, "the request")
        sent = 0
        for chunk in file_chunks(fd, STREAM_CHUNK_BYTES):
            send_all(sock, chunk, deadline, "the message")
            sent += len(chunk)
        if sent != size:
            raise ScannerFailure(f"spool file changed size ({sent} != {size})")
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError as error:
            raise ScannerFailure(f"connection lost: {error.strerror or error}") from None
        reader = _Reader(sock, deadline)
        reply = parse_head(reader.read_head())
        if replacement_path is not None:
            if reply.content_length is None:
                raise ScannerFailure("PROCESS reply without Content-length")
            if reply.content_length > size + PROCESS_GROWTH_BYTES:
                raise ScannerFailure(f"PROCESS reply of {reply.content_length} bytes is not plausible")
            reader.copy_body(replacement_path, reply.content_length)
        return reply
    finally:
        sock.close()


def _header_safe(value: str) -> bool:
    return all(c.isprintable() and c not in "\r\n" for c in value) and len(value) < 512


def parse_head(head: bytes) -> SpamdReply:
    """Check `SPAMD/1.x 0 EX_OK` and read `Spam: True ; 7.3 / 5.0` and `Content-length:`."""
    lines = head.decode("utf-8", "replace").split("\r\n")
    status = lines[0].split(None, 2)
    if len(status) < 2 or not status[0].startswith("SPAMD/"):
        raise ScannerFailure(f"reply not understood: {one_line(lines[0])}")
    if status[1] != "0":
        raise ScannerFailure(f"spamd error {status[1]}: {one_line(status[2] if len(status) > 2 else '')}")
    spam_line = None
    content_length = None
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip().lower()
        if name == "spam":
            spam_line = value.strip()
        elif name == "content-length":
            if not value.strip().isdigit():
                raise ScannerFailure(f"bad Content-length: {one_line(value)}")
            content_length = int(value.strip())
    if spam_line is None:
        raise ScannerFailure("reply without a Spam: line")
    verdict, sep, scores = spam_line.partition(";")
    score_text, sep2, required_text = scores.partition("/")
    if not sep or not sep2 or verdict.strip() not in ("True", "False", "Yes", "No"):
        raise ScannerFailure(f"Spam: line not understood: {one_line(spam_line)}")
    try:
        score, required = float(score_text), float(required_text)
    except ValueError:
        raise ScannerFailure(f"Spam: line not understood: {one_line(spam_line)}") from None
    return SpamdReply(verdict.strip() in ("True", "Yes"), score, required, content_length)


class _Reader:
    """Buffered, bounded reads of one reply under the deadline."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = bytearray()

    def _fill(self) -> bool:
        self.sock.settimeout(self.deadline.left())
        try:
            chunk = self.sock.recv(STREAM_CHUNK_BYTES)
        except socket.timeout:
            raise ScannerFailure("timed out waiting for the reply") from None
        except OSError as error:
            raise ScannerFailure(f"connection lost reading the reply: {error.strerror or error}") from None
        self.buffer += chunk
        return bool(chunk)

    def read_head(self) -> bytes:
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self.buffer[:end])
                del self.buffer[: end + 4]
                return head
            if len(self.buffer) > MAX_HEADER_BYTES:
                raise ScannerFailure("reply header too long")
            if not self._fill():
                if self.buffer.startswith(b"SPAMD/") and b"\r\n" in self.buffer:
                    return bytes(self.buffer).rstrip(b"\r\n")  # an error reply has no blank line
                raise ScannerFailure("connection closed before a complete reply" if self.buffer else "no reply")

    def copy_body(self, path: str, length: int) -> None:
        """Write exactly `length` body bytes to a new file; a short body is a failure."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            out = os.open(path, flags, 0o600)
        except OSError as error:
            raise ScannerFailure(f"cannot create {path}: {error.strerror}") from None
        try:
            written = 0
            while written < length:
                if not self.buffer and not self._fill():
                    raise ScannerFailure(f"reply truncated ({written} of {length} bytes)")
                piece = bytes(self.buffer[: length - written])
                del self.buffer[: len(piece)]
                os.write(out, piece)
                written += len(piece)
        finally:
            os.close(out)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def ping(address: str, connect_timeout: float, deadline: Deadline) -> str:
    """`PING` -> the status line (`SPAMD/1.5 0 PONG`), or ScannerFailure."""
    sock = connect(address, connect_timeout, deadline)
    try:
        send_all(sock, f"PING {PROTOCOL}\r\n\r\n".encode(), deadline, "PING")
        reader = _Reader(sock, deadline)
        while b"\r\n" not in reader.buffer:
            if not reader._fill():
                break
        line = bytes(reader.buffer).split(b"\r\n", 1)[0].decode("utf-8", "replace")
    finally:
        sock.close()
    if not line.startswith("SPAMD/") or "PONG" not in line:
        raise ScannerFailure(f"{address}: PING answered {one_line(line)!r}")
    return line


def version(config: ScannerConfig, timeout: float = 10.0) -> str:
    """SpamAssassin's version, from the X-Spam-Checker-Version header of a HEADERS reply."""
    import tempfile

    deadline = Deadline(timeout)
    probe = b"From: version-probe@localhost\r\nSubject: version\r\n\r\nversion probe\r\n"
    problems = []
    for address in config.addresses or ("/var/run/spamd.sock",):
        with tempfile.TemporaryDirectory() as scratch:
            source = os.path.join(scratch, "in")
            with open(source, "wb") as handle:
                handle.write(probe)
            fd = os.open(source, os.O_RDONLY)
            try:
                out = os.path.join(scratch, "out")
                exchange(address, "HEADERS", fd, len(probe), "", config.connect_timeout, deadline, out)
                with open(os.path.join(scratch, "out"), "rb") as handle:
                    headers = handle.read(MAX_HEADER_BYTES).decode("utf-8", "replace")
            except ScannerFailure as failure:
                problems.append(f"{address}: {failure}")
                continue
            finally:
                os.close(fd)
        for line in headers.splitlines():
            if line.lower().startswith("x-spam-checker-version:"):
                words = line.split(":", 1)[1].split()
                if len(words) >= 2:
                    return words[1]
        return "unknown"
    raise ScannerFailure("; ".join(problems))
