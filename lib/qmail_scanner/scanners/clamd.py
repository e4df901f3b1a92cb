"""ClamAV's clamd over its own socket protocol: INSTREAM of the spooled message, with failover."""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time

from ..records import Finding, ScanResult
from ..recordtype import record
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
LOCATE_PARTS = 50  # decoded parts streamed again at most to find the one holding a virus the message showed
# clamd closes the socket when a stream passes StreamMaxLength; the writer then sees one of these.
HANGUP_ERRNOS = (errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED)


def scan(config: ScannerConfig, message: Message) -> ScanResult:
    """Stream the message (and, when asked, each decoded part) to clamd; name the viruses found."""
    deadline = scan_deadline(config, message)
    findings: list[Finding] = []
    for label, fd, index in _streams(message):
        try:
            name = scan_fd_with_failover(config, fd, deadline)
        except StreamTooLong as failure:
            if fd == message.message_fd:
                raise  # the message itself: the failure policy decides (temporary failure by default)
            # A decoded part clamd cannot find in the message and will not read: past a limit, never clean.
            findings.append(
                Finding("policy", "av-size-limit", _too_long_reason(label, failure), part_name=label, part=index)
            )
            continue
        finally:
            if fd != message.message_fd:
                os.close(fd)
        if name:
            if index < 0:  # found in the message: the finding still says so, only the record learns the part
                index = _infected_part(config, message, name, deadline)
            findings.append(Finding("virus", name, f"Virus found: {name}", part_name=label, part=index))
            break  # the first virus decides; scanning the rest would only cost time
    return ScanResult(config.name, findings=tuple(findings))


def _streams(message: Message):
    """(label, fd, part index) of the spooled message (index -1); then the decoded parts clamd cannot find in it,
    or every one with --av-scan-parts."""
    yield "", message.message_fd, -1
    if message.unpacked is None:
        return
    every_part = message.settings.av_scan_parts
    for part in message.unpacked.parts:
        if not part.decoded_path or not (every_part or part.scan_alone):
            continue
        fd = _open_decoded(part)
        if fd >= 0:
            yield part.display_name, fd, part.index


def _open_decoded(part: object) -> int:
    """A part's work file for reading, or -1 when the unpacker removed or never finished it."""
    try:
        return os.open(part.decoded_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)  # type: ignore[attr-defined]
    except OSError:
        return -1


def _infected_part(config: ScannerConfig, message: Message, virus: str, deadline: Deadline) -> int:
    """Index of the decoded part that holds the virus clamd found in the whole message; -1 if none does alone.

    Only an infected message pays for this: its decoded parts are streamed again, the deepest
    first (a part comes after the parts holding it), until one gives the same answer, so the
    record can name the part. At most LOCATE_PARTS streams, within the scan's own deadline.
    """
    unpacked = message.unpacked
    decoded = [part for part in (unpacked.parts if unpacked is not None else ()) if part.decoded_path]
    for part in reversed(decoded[-LOCATE_PARTS:]):
        fd = _open_decoded(part)
        if fd < 0:
            continue
        try:
            found = scan_fd_with_failover(config, fd, deadline)
        except ScannerFailure:  # its deadline too: the message's answer stands, only where it lies is not known
            break
        finally:
            os.close(fd)
        if found == virus:
            return part.index
    return -1


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

# clamd ends an IDSESSION that stays idle for its ReadTimeout (120 s upstream, 180 s in Debian's
# clamd.conf; it also bounds the wait for each chunk of a stream, so no site sets it much lower),
# writing "COMMAND READ TIMED OUT" as it closes. A session idle longer than this is not reused: a
# fresh connection costs a fraction of a millisecond, a stale one a retry. Shorter timeouts are
# caught by the check before reuse and the one retry after it.
SESSION_MAX_IDLE_SECONDS = 10.0


@record
class _Session:
    """A kept IDSESSION connection: clamd numbers its replies, so we know which one answers us."""

    sock: socket.socket
    next_id: int = 1  # clamd's number for the next command on this connection
    idle_since: float = 0.0  # monotonic time of the last reply


class _SessionLost(Exception):
    """A reused session ended before clamd answered our command (its idle timeout, a restart)."""


# address -> the kept session; None: no sessions (the standalone program, one message).
_sessions: dict[str, _Session] | None = None


def keep_sessions() -> None:
    """From now on this process keeps one IDSESSION connection per clamd address across messages."""
    global _sessions
    if _sessions is None:
        _sessions = {}


def _instream_in_session(address: str, fd: int, connect_timeout: float, deadline: Deadline) -> str:
    """INSTREAM on the kept session when it is still open; a session lost before the answer is replaced once."""
    assert _sessions is not None
    session = _sessions.pop(address, None)  # pop: a connection serves one scan at a time
    if session is not None and not _reusable(session):
        session.sock.close()
        session = None
    if session is not None:
        try:
            return _scan_in_session(address, session, fd, deadline, reused=True)
        except _SessionLost:
            pass  # clamd closed it as we sent: scanning is idempotent, a fresh session decides
    sock = connect(address, connect_timeout, deadline)
    try:
        sock.settimeout(deadline.left())
        sock.sendall(b"zIDSESSION\0")
    except OSError as error:
        sock.close()
        raise ScannerFailure(f"{address}: IDSESSION failed: {error.strerror or error}") from None
    except BaseException:
        sock.close()
        raise
    return _scan_in_session(address, _Session(sock), fd, deadline, reused=False)


def _reusable(session: _Session) -> bool:
    """Not idle too long, and clamd has neither spoken (its timeout text) nor hung up since its last answer."""
    if time.monotonic() - session.idle_since > SESSION_MAX_IDLE_SECONDS:
        return False
    poller = select.poll()
    poller.register(session.sock, select.POLLIN | select.POLLPRI)  # POLLHUP and POLLERR are always reported
    return not poller.poll(0)


def _scan_in_session(address: str, session: _Session, fd: int, deadline: Deadline, reused: bool) -> str:
    """One INSTREAM in the session; keep it after an answer to our command, close it otherwise."""
    ours = b"%d: " % session.next_id
    try:
        try:
            reply, hung_up = _stream(session.sock, fd, deadline)
        except ScannerFailure:
            if reused and deadline.at > time.monotonic():
                raise _SessionLost from None
            raise
        if reply.startswith(ours):
            reply = reply[len(ours) :]
        elif reused and deadline.at > time.monotonic():
            raise _SessionLost  # nothing, or text that answers no command of ours ("COMMAND READ TIMED OUT")
        found = parse_reply(reply, hung_up)  # raises after a hang-up: the session is over
    except BaseException:
        session.sock.close()
        raise
    session.next_id += 1
    session.idle_since = time.monotonic()
    assert _sessions is not None
    previous = _sessions.pop(address, None)
    if previous is not None:
        previous.sock.close()
    _sessions[address] = session
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
