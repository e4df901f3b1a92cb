"""What the wrapper and a worker say on the socket (contrib/qmail-scanner-queue.c is the other side).

    client: HELLO header (magic, caller uid, which fds follow, environment length), environment
    worker: READY (a worker is now dedicated to this message)
    client: one byte with fds 0, 1, 2 [and the custom-error fd] attached (SCM_RIGHTS)
    worker: ANSWER byte, then the exit code as one byte

The client sends no fd before READY: a client that gives up waiting (engine overloaded) runs the
standalone program with its fds untouched, and a worker that accepts it later finds nothing to do.
"""

from __future__ import annotations

import array
import socket
import struct

MAGIC = b"QSE1"
HELLO = struct.Struct("=4sIII")  # magic, caller uid, fd mask, environment bytes
READY = b"R"
FDS = b"F"
ANSWER = b"Q"
MAX_ENVIRONMENT_BYTES = 256 * 1024  # the wrapper keeps at most 64 variables of 1 KB
# Bits of the fd mask: which of the caller's fds the client passes, in this order.
FD_MESSAGE, FD_ENVELOPE, FD_STDERR, FD_CUSTOM_ERROR = 1, 2, 4, 8
MAX_FDS = 4


class ClientGone(Exception):
    """The client closed the connection before handing over a message: nothing to do."""


class BadClient(Exception):
    """The client broke the protocol; the connection is dropped without touching any mail."""


def read_exactly(conn: socket.socket, size: int) -> bytes:
    """size bytes, or ClientGone on EOF."""
    data = bytearray()
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ClientGone("connection closed")
        data += chunk
    return bytes(data)


def read_hello(conn: socket.socket) -> tuple[int, int, dict[str, str]]:
    """The caller's uid, the fd mask and the allow-listed environment."""
    magic, caller_uid, mask, length = HELLO.unpack(read_exactly(conn, HELLO.size))
    if magic != MAGIC:
        raise BadClient(f"bad magic {magic!r}")
    if length > MAX_ENVIRONMENT_BYTES:
        raise BadClient(f"environment of {length} bytes")
    if mask & (FD_MESSAGE | FD_ENVELOPE | FD_STDERR) != FD_MESSAGE | FD_ENVELOPE | FD_STDERR or mask > 15:
        raise BadClient(f"fd mask {mask}")
    environ = {}
    for entry in read_exactly(conn, length).split(b"\0"):
        name, equals, value = entry.partition(b"=")
        if equals and name:
            environ.setdefault(name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
    return caller_uid, mask, environ


def receive_fds(conn: socket.socket, mask: int) -> list[int]:
    """The caller's fds in mask order; BadClient (all received fds closed) when they do not match."""
    expected = bin(mask).count("1")
    fds = array.array("i")
    data, ancillary, flags, _ = conn.recvmsg(1, socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    received = list(fds)
    if not data:
        _close_all(received)
        raise ClientGone("connection closed before the fds")
    if data != FDS or len(received) != expected or flags & socket.MSG_CTRUNC:
        _close_all(received)
        raise BadClient(f"expected {expected} fds, got {len(received)}")
    return received


def peer_uid(conn: socket.socket) -> int:
    """The uid the kernel recorded for the connecting process (SO_PEERCRED)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def answer(conn: socket.socket, code: int) -> None:
    conn.sendall(ANSWER + bytes([code & 0xFF]))


def _close_all(fds: list[int]) -> None:
    import os

    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
