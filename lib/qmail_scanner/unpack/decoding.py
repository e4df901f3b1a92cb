"""Decoding bodies to work files: base64, quoted-printable and uuencode, within the decoded-bytes budget."""

from __future__ import annotations

import binascii
import os

from . import magictype

TYPE_CHECKING = False  # importing typing costs every message milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable

MAX_LINE = 65536  # a longer "line" is cut; the rest is read as a new line
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_BASE64 = bytes(set(range(256)) - set(_BASE64_ALPHABET))
TEXT_MARKS = (b"begin ", b"begin-base64 ", b"-----BEGIN PGP ")


class DecodingSink:
    """Decode one body to a new file in the work dir, within the message's decoded-bytes budget."""

    def __init__(self, take_budget: Callable[[int], int], path: str, encoding: str, watch_text: bool) -> None:
        self.take_budget = take_budget
        self.path = path
        self.fd = os.open(path, NEW_FILE_FLAGS, 0o600)
        self.encoding = encoding
        self.pending = b""
        self.size = 0
        self.head = b""
        self.watch_text = watch_text
        self.text_marks = False  # uuencode or inline PGP seen: look closer after the part ends
        self.tail = b""
        self.fast = True

    def __call__(self, data: bytes) -> None:
        if self.encoding == "base64":
            if self.fast and not self.pending:
                # Fast path: whole lines of a multiple of 4 characters decode as they are; an
                # incomplete quantum raises, and then this part takes the careful path for good.
                cut = data.rfind(b"\n") + 1
                try:
                    decoded = binascii.a2b_base64(data[:cut])
                except binascii.Error:
                    self.fast = False
                else:
                    self._emit(decoded)
                    data = data[cut:]
            data = self.pending + data.translate(None, _NOT_BASE64)
            usable = len(data) - len(data) % 4
            self.pending = data[usable:]
            self._emit(decode_base64(data[:usable]))
        elif self.encoding == "quoted-printable":
            data = self.pending + data
            cut = data.rfind(b"\n") + 1
            if cut == 0 and len(data) > MAX_LINE:
                cut = len(data) - 2  # a soft break or =XX may straddle the cut
            self.pending = data[cut:]
            self._emit(binascii.a2b_qp(data[:cut]))
        else:
            self._emit(data)

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        if len(self.head) < magictype.HEAD_BYTES:
            self.head += data[: magictype.HEAD_BYTES - len(self.head)]
        if self.watch_text and not self.text_marks:
            window = self.tail + data
            self.text_marks = any(mark in window for mark in TEXT_MARKS)
            self.tail = data[-20:]
        allowed = self.take_budget(len(data))
        if allowed < len(data):
            data = data[:allowed]
        self.size += len(data)
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def close(self, last_newline: bool = False) -> None:
        """Flush what is pending and close the file."""
        if self.pending:
            if self.encoding == "base64":
                self._emit(decode_base64(self.pending + b"=" * (-len(self.pending) % 4)))
            else:
                self._emit(binascii.a2b_qp(self.pending))
            self.pending = b""
        os.close(self.fd)


def decode_base64(data: bytes) -> bytes:
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        # Padding in the middle or a truncated quantum: decode what can be decoded.
        out = []
        import re

        for piece in re.split(rb"(?<==)(?=[^=])", data):
            try:
                out.append(binascii.a2b_base64(piece + b"=" * (-len(piece) % 4)))
            except binascii.Error:
                pass
        return b"".join(out)


def uu_begin_name(line: bytes) -> bytes | None:
    """The name of a `begin 644 name` line that opens a uuencoded block (not begin-base64), else None."""
    if not line.startswith((b"begin ", b"begin\t")):
        return None
    rest = line[6:].lstrip(b" \t")
    digits = len(rest) - len(rest.lstrip(b"01234567"))
    if digits not in (3, 4):
        return None
    rest = rest[digits:]
    name = rest.lstrip(b" \t")
    if len(name) == len(rest) or not name or name[0] in b"\r\n\x0b\x0c":
        return None
    return name.split(b"\n", 1)[0].split(b"\r", 1)[0]


def bounded_lines(text: object, limit: int = MAX_LINE):  # type: ignore[no-untyped-def]
    """Lines of a binary file, each at most `limit` bytes."""
    while True:
        line = text.readline(limit)  # type: ignore[attr-defined]
        if not line:
            return
        yield line


def decode_uu_line(line: bytes) -> bytes | None:
    """One uuencoded line decoded (its end stripped), or None when it is not one."""
    try:
        return binascii.a2b_uu(line)
    except binascii.Error:
        # Some encoders add garbage after the counted bytes; honour the count.
        count = ((line[0] - 32) & 63) if line else 0
        try:
            return binascii.a2b_uu(line[: 1 + (count + 2) // 3 * 4])
        except binascii.Error:
            return None
