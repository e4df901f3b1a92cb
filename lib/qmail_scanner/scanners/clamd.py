"""ClamAV's clamd over its own socket protocol: INSTREAM of the spooled message, with failover."""

from __future__ import annotations

import errno
import os
import socket
import struct
import time

from ..records import Finding, ScanResult
from .common import (
    STREAM_CHUNK_BYTES,
    Deadline,
    ScannerFailure,
    connect,
    file_chunks,
    one_line,
    scan_deadline,
)

TYPE_CHECKING = False  # importing typing costs every message milliseconds
if TYPE_CHECKING:
    from ..message import Message
    from ..settings import ScannerConfig

class StreamTooLong(ScannerFailure):
    """clamd refused the stream as longer than its StreamMaxLength."""


END_OF_STREAM = b"\0\0\0\0"
MAX_REPLY_BYTES = 4096
# clamd closes the socket when a stream passes StreamMaxLength; the writer then sees one of these.
HANGUP_ERRNOS = (errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED)


def scan(config: ScannerConfig, message: Message) -> ScanResult:
    """Stream the message (and, when asked, each decoded part) to clamd; name the viruses found."""
    deadline = scan_deadline(config, message)
    findings: list[Finding] = []
    for label, fd in _streams(message):
        try:
            name = scan_fd_with_failover(config, fd, deadline)
        except StreamTooLong as failure:
            if fd == message.message_fd:
                raise  # the message itself: the failure policy decides (temporary failure by default)
            # A decoded part clamd cannot find in the message and will not read: past a limit, never clean.
            findings.append(Finding("policy", "av-size-limit", _too_long_reason(label, failure), part_name=label))
            continue
        finally:
            if fd != message.message_fd:
                os.close(fd)
        if name:
            findings.append(Finding("virus", name, f"Virus found: {name}", part_name=label))
            break  # the first virus decides; scanning the rest would only cost time
    return ScanResult(config.name, findings=tuple(findings))


def _streams(message: Message):
    """The spooled message; then the decoded parts clamd cannot find in it, or every one with --av-scan-parts."""
    yield "", message.message_fd
    if message.unpacked is None:
        return
    every_part = message.settings.av_scan_parts
    for part in message.unpacked.parts:
        path = part.decoded_path
        if not path or not (every_part or part.scan_alone):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # the unpacker removed or never finished it: the whole message was scanned
        yield part.display_name, fd


def _too_long_reason(label: str, failure: ScannerFailure) -> str:
    from ..message_headers import header_safe

    return (
        f"Disallowed: decoded part {header_safe(label) or '(no name)'} is longer than clamd reads"
        f" (StreamMaxLength), it cannot be scanned ({failure})"
    )


def scan_fd_with_failover(config: ScannerConfig, fd: int, deadline: Deadline) -> str:
    """Try each address in order; return the virus name or "" for clean; ScannerFailure when none answered."""
    if not config.addresses:
        raise ScannerFailure("no clamd address configured")
    problems = []
    too_long = True  # every server that answered refused the stream's length
    for address in config.addresses:
        try:
            return instream(address, fd, config.connect_timeout, deadline)
        except ScannerFailure as failure:
            too_long = too_long and isinstance(failure, StreamTooLong)
            problems.append(f"{address}: {failure}" if not str(failure).startswith(address) else str(failure))
            if deadline.at <= time.monotonic():
                break
    raise (StreamTooLong if too_long else ScannerFailure)("; ".join(problems))


def instream(address: str, fd: int, connect_timeout: float, deadline: Deadline) -> str:
    """One INSTREAM exchange: the virus name, "" when clean, ScannerFailure otherwise."""
    if _sessions is not None:
        return _instream_in_session(address, fd, connect_timeout, deadline)
    sock = connect(address, connect_timeout, deadline)
    try:
        reply, hung_up = _stream(sock, fd, deadline)
    finally:
        sock.close()
    return parse_reply(reply, hung_up)


def _stream(sock: socket.socket, fd: int, deadline: Deadline) -> tuple[bytes, bool]:
    """Send INSTREAM with the file behind fd; return the raw reply and whether clamd hung up mid-stream."""
    hung_up = False
    try:
        sock.settimeout(deadline.left())
        sock.sendall(b"zINSTREAM\0")
        for chunk in file_chunks(fd, STREAM_CHUNK_BYTES):
            sock.settimeout(deadline.left())
            sock.sendall(struct.pack(">I", len(chunk)) + chunk)
        sock.settimeout(deadline.left())
        sock.sendall(END_OF_STREAM)
    except socket.timeout:
        raise ScannerFailure("timed out streaming the message") from None
    except OSError as error:
        if error.errno not in HANGUP_ERRNOS:
            raise ScannerFailure(f"stream failed: {error.strerror or error}") from None
        hung_up = True  # over StreamMaxLength, most likely: the reply may still be readable
    return _read_reply(sock, deadline, hung_up), hung_up


# ---------------------------------------------------------------- sessions (the resident engine)

# address -> an open IDSESSION connection; None: no sessions (the standalone program, one message).
_sessions: dict[str, socket.socket] | None = None


def keep_sessions() -> None:
    """From now on this process keeps one IDSESSION connection per clamd address across messages."""
    global _sessions
    if _sessions is None:
        _sessions = {}


def _instream_in_session(address: str, fd: int, connect_timeout: float, deadline: Deadline) -> str:
    """INSTREAM on the kept connection; one that clamd closed meanwhile (IdleTimeout) is replaced once."""
    assert _sessions is not None
    sock = _sessions.pop(address, None)  # pop: a connection serves one scan at a time
    if sock is not None:
        try:
            reply, hung_up = _stream(sock, fd, deadline)
        except ScannerFailure:
            reply, hung_up = b"", True
        if reply:
            return _finish_session_scan(address, sock, reply, hung_up)
        sock.close()  # nothing came back: clamd had closed it; a fresh one decides
    sock = connect(address, connect_timeout, deadline)
    try:
        sock.settimeout(deadline.left())
        sock.sendall(b"zIDSESSION\0")
        reply, hung_up = _stream(sock, fd, deadline)
    except BaseException:
        sock.close()
        raise
    return _finish_session_scan(address, sock, reply, hung_up)


def _finish_session_scan(address: str, sock: socket.socket, reply: bytes, hung_up: bool) -> str:
    """Strip the session's `<n>: ` from the reply; keep the connection only after a clean exchange."""
    number, colon, rest = reply.partition(b": ")
    if colon and number.isdigit():
        reply = rest
    try:
        found = parse_reply(reply, hung_up)
    except BaseException:
        sock.close()
        raise
    assert _sessions is not None
    previous = _sessions.pop(address, None)
    if previous is not None:
        previous.close()
    _sessions[address] = sock
    return found


def _read_reply(sock: socket.socket, deadline: Deadline, hung_up: bool) -> bytes:
    """The NUL-terminated reply; after a hang-up, whatever clamd managed to say (maybe nothing)."""
    reply = bytearray()
    while b"\0" not in reply:
        try:
            sock.settimeout(deadline.bounded(1.0) if hung_up else deadline.left())
            chunk = sock.recv(MAX_REPLY_BYTES)
        except socket.timeout:
            if hung_up:
                break
            raise ScannerFailure("timed out waiting for the reply") from None
        except OSError as error:
            if hung_up:
                break
            raise ScannerFailure(f"connection lost reading the reply: {error.strerror or error}") from None
        if not chunk:
            break
        reply += chunk
        if len(reply) > MAX_REPLY_BYTES:
            raise ScannerFailure("reply too long")
    return bytes(reply)


def parse_reply(reply: bytes, hung_up: bool = False) -> str:
    """`stream: OK` -> "", `stream: <name> FOUND` -> name; anything else is a failure."""
    complete = b"\0" in reply  # without its NUL the reply may have been cut short
    text = reply.split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    if text.startswith("stream: ") and complete and not hung_up:
        body = text[len("stream: ") :]
        if body == "OK":
            return ""
        if body.endswith(" FOUND") and len(body) > len(" FOUND"):
            name = body[: -len(" FOUND")].strip()
            if name and all(c.isprintable() and not c.isspace() for c in name):
                return name
    if text.endswith("ERROR"):
        if "size limit" in text:
            raise StreamTooLong(f"message over clamd's StreamMaxLength ({one_line(text)})")
        raise ScannerFailure(f"clamd error: {one_line(text)}")
    if hung_up:
        raise StreamTooLong("clamd closed the connection while the message was sent (StreamMaxLength?)")
    if not text:
        raise ScannerFailure("clamd closed the connection without a reply")
    raise ScannerFailure(f"reply not understood: {one_line(text)}")


def simple_command(address: str, command: str, connect_timeout: float, deadline: Deadline) -> str:
    """Send a z-command (PING, VERSION) and return the reply text."""
    sock = connect(address, connect_timeout, deadline)
    try:
        sock.settimeout(deadline.left())
        try:
            sock.sendall(b"z" + command.encode("ascii") + b"\0")
        except OSError as error:
            raise ScannerFailure(f"{address}: send failed: {error}") from None
        reply = _read_reply(sock, deadline, False)
    finally:
        sock.close()
    if not reply.endswith(b"\0"):
        raise ScannerFailure(f"{address}: incomplete reply to {command}")
    return reply[:-1].decode("utf-8", "replace").strip()


def version(config: ScannerConfig, timeout: float = 10.0) -> str:
    """The trace form of clamd's version, `1.4.3/27000`, from the first address that answers."""
    deadline = Deadline(timeout)
    problems = []
    for address in config.addresses:
        try:
            text = simple_command(address, "VERSION", config.connect_timeout, deadline)
        except ScannerFailure as failure:
            problems.append(str(failure))
            continue
        return trace_version(text)
    raise ScannerFailure("; ".join(problems) or "no clamd address configured")


def trace_version(text: str) -> str:
    """`ClamAV 1.4.3/27000/Tue ...` -> `1.4.3/27000`; `ClamAV 1.4.3` -> `1.4.3`."""
    if text.startswith("ClamAV "):
        text = text[len("ClamAV ") :]
    return "/".join(text.split("/")[:2]).strip()
