"""What every scanner shares: the failure exception, socket addresses, time limits, file streaming."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

from ..records import ScanResult

TYPE_CHECKING = False  # importing typing costs every message milliseconds
if TYPE_CHECKING:
    from ..message import Message
    from ..settings import ScannerConfig

STREAM_CHUNK_BYTES = 65536
# A reply line or header block from a daemon larger than this is not a reply we understand.
MAX_REPLY_BYTES = 65536


class ScannerFailure(Exception):
    """The scanner gave no usable answer; the message must not be called clean."""


class Deadline:
    """A point in time no scanner step may block past: the scanner's own limit or the message's."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + max(0.0, seconds)

    def left(self) -> float:
        """Seconds left; raises ScannerFailure once the time is up."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise ScannerFailure("timed out")
        return left

    def bounded(self, seconds: float) -> float:
        """The smaller of `seconds` and what is left."""
        return min(seconds, self.left())


def scan_deadline(config: ScannerConfig, message: Message, extra_limit: float | None = None) -> Deadline:
    """The scanner's scan timeout, never past the message's total deadline."""
    seconds = min(config.scan_timeout, message.remaining())
    if extra_limit is not None:
        seconds = min(seconds, extra_limit)
    return Deadline(seconds)


def over_spam_size_limit(config: ScannerConfig, message: Message, header: str, prefix: str = "") -> ScanResult | None:
    """--sa-maxsize: a larger message is not sent to the spam scanner, and its headers say so."""
    limit = message.settings.sa_maxsize
    if message.area.message_size <= limit:
        return None
    note = f"{prefix}skipped: message size {message.area.message_size} over limit {limit}"
    message.skipped.append(f"{config.name} (size {message.area.message_size} > --sa-maxsize {limit})")
    return ScanResult(config.name, extra_headers=((header, note),))


def parse_address(address: str) -> tuple[int, object]:
    """`/path/to.sock` -> unix socket; `host:port` or `[v6]:port` -> TCP."""
    if address.startswith("/"):
        return socket.AF_UNIX, address
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ScannerFailure(f"bad scanner address {address!r} (want /socket/path or host:port)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return socket.AF_INET, (host, int(port))


def connect(address: str, connect_timeout: float, deadline: Deadline) -> socket.socket:
    """An open socket to address, or ScannerFailure naming why not."""
    family, target = parse_address(address)
    timeout = deadline.bounded(connect_timeout)
    try:
        if family == socket.AF_UNIX:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(target)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection(target, timeout=timeout)  # type: ignore[arg-type]
    except socket.timeout:
        raise ScannerFailure(f"{address}: connect timed out") from None
    except OSError as error:
        raise ScannerFailure(f"{address}: connect failed: {error.strerror or error}") from None
    return sock


def file_chunks(fd: int, chunk_bytes: int = STREAM_CHUNK_BYTES, offset: int = 0) -> Iterator[bytes]:
    """The file behind fd in bounded chunks, read with pread so the fd's offset stays put."""
    while True:
        chunk = os.pread(fd, chunk_bytes, offset)
        if not chunk:
            return
        offset += len(chunk)
        yield chunk


def send_all(sock: socket.socket, data: bytes, deadline: Deadline, what: str) -> None:
    """sendall under the deadline; a peer that hung up is a failure, never a clean result."""
    sock.settimeout(deadline.left())
    try:
        sock.sendall(data)
    except socket.timeout:
        raise ScannerFailure(f"timed out sending {what}") from None
    except OSError as error:
        raise ScannerFailure(f"connection lost sending {what}: {error.strerror or error}") from None


def receive_until_closed(sock: socket.socket, deadline: Deadline, limit: int) -> bytes:
    """Everything the peer sends until it closes, bounded in size and time."""
    received = bytearray()
    while True:
        sock.settimeout(deadline.left())
        try:
            chunk = sock.recv(STREAM_CHUNK_BYTES)
        except socket.timeout:
            raise ScannerFailure("timed out waiting for the reply") from None
        except OSError as error:
            raise ScannerFailure(f"connection lost reading the reply: {error.strerror or error}") from None
        if not chunk:
            return bytes(received)
        received += chunk
        if len(received) > limit:
            raise ScannerFailure(f"reply longer than {limit} bytes")


def one_line(text: str | bytes, limit: int = 200) -> str:
    """A daemon's text made safe for logs and SMTP replies: printable, one line, bounded."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "".join(c if c.isprintable() else " " for c in text).strip()[:limit]
