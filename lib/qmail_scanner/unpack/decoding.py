"""Decoding bodies to work files (base64, quoted-printable, uuencode, BinHex, yEnc) within the decoded-bytes budget."""

from __future__ import annotations

import binascii
import os

from . import magictype

TYPE_CHECKING = False  # importing typing costs every message milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable

    from .textcodings import TextBlock

MAX_LINE = 65536  # a longer "line" is cut; the rest is read as a new line
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_BASE64 = bytes(set(range(256)) - set(_BASE64_ALPHABET))
# Transfer encodings by the names mail software writes them; anything else is read as it is.
SINK_ENCODINGS = {
    "base64": "base64",
    "quoted-printable": "quoted-printable",
    "x-uuencode": "uuencode",
    "uuencode": "uuencode",
    "x-uue": "uuencode",
    "uue": "uuencode",
    "x-binhex": "binhex",
    "binhex": "binhex",
    "binhex40": "binhex",
    "mac-binhex40": "binhex",
    "mac-binhex": "binhex",
    "x-mac-binhex40": "binhex",
    "x-yencode": "yenc",
    "yencode": "yenc",
    "x-yenc": "yenc",
    "yenc": "yenc",
}
ENCODED = ("base64", "quoted-printable")
BINARY_HEAD = 4096  # a NUL in the first this many decoded bytes of an encoded body: binary, not watched
_HEX = frozenset(bytes([c]) for c in b"0123456789ABCDEFabcdef")
MARK_TAIL = 48  # bytes of the previous chunk kept so that a block start split between chunks is seen


def sink_encoding(transfer_encoding: str) -> str:
    """The decoder for a Content-Transfer-Encoding value: base64, quoted-printable, uuencode, binhex, yenc, identity."""
    return SINK_ENCODINGS.get(transfer_encoding.strip().lower(), "identity")


def has_block_mark(window: bytes, at_start: bool) -> bool:
    """Whether a uuencode, BinHex, yEnc or PGP block may start in `window` (content.look_into_text decides).

    A few bytes.find over a lower-cased copy: "begin" at a line start followed by a blank and
    a digit (uuencode, in any case as ripmime reads it), "=ybegin ", "-----begin pgp", and the
    BinHex line. Prose such as "Begin forwarded message:" does not count.
    """
    low = window.lower()
    at = low.find(b"begin")
    while at >= 0:
        if _block_begins(low, at, at_start):
            return True
        at = low.find(b"begin", at + 5)
    return b"(this file must be converted with" in low


def _block_begins(low: bytes, at: int, at_start: bool) -> bool:
    """Whether the "begin" at `at` opens a block (a split one is seen again with the next chunk's tail)."""
    if low[at - 5 : at] == b"-----":
        return low.startswith(b" pgp", at + 5)
    if low[at - 2 : at] == b"=y":
        at -= 2
        return low.startswith(b" ", at + 7) and ((at == 0 and at_start) or low[at - 1 : at] == b"\n")
    if not ((at == 0 and at_start) or low[at - 1 : at] == b"\n") or low[at + 5 : at + 6] not in (b" ", b"\t"):
        return False
    return low[at + 6 : at + 16].lstrip(b" \t+-")[:1].isdigit()


class DecodingSink:
    """Decode one body to a new file in the work dir, within the message's decoded-bytes budget."""

    def __init__(self, take_budget: Callable[[int], int], path: str, encoding: str, watch_text: bool = True) -> None:
        self.take_budget = take_budget
        self.path = path
        self.fd = os.open(path, NEW_FILE_FLAGS, 0o600)
        self.encoding = encoding if encoding in ("base64", "quoted-printable", "identity") else sink_encoding(encoding)
        self.pending = b""
        self.size = 0
        self.head = b""
        self.watch_text = watch_text
        self.text_marks = False  # a uuencode/BinHex/yEnc/PGP block may be inside: look closer after the part ends
        self.tail = b""
        self.fast = True
        self.block: TextBlock | None = None  # uuencode/binhex/yenc transfer encoding: the block being decoded
        self.block_state = "before"  # before the block's first line, "in" it, "after" it
        self.block_name: str | None = None  # the file name the block's header gave
        # Quoted-printable with a soft line break inside an =XX escape ("=9=\n0"): Python's email,
        # MIME-tools, ripmime and GMime keep the escape as text, mailparser joins the lines first
        # and decodes it. From the first such break on, the joined reading goes to a second file.
        self.alternative_path = ""
        self._alternative_fd = -1
        self._alternative_pending = b""

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
            lines = data[:cut]
            if self._alternative_fd >= 0 or splits_an_escape(lines):
                self._decode_joined(lines)
            self._emit(binascii.a2b_qp(lines))
        elif self.encoding == "identity":
            self._emit(data)
        else:
            self._lines(data)

    def _lines(self, data: bytes) -> None:
        """uuencode, BinHex, yEnc bodies: line by line through a text block decoder."""
        data = self.pending + data
        start = 0
        while True:
            end = data.find(b"\n", start, start + MAX_LINE)
            if end < 0:
                if len(data) - start < MAX_LINE:
                    break
                end = start + MAX_LINE - 1
            self._line(data[start : end + 1])
            start = end + 1
        self.pending = data[start:]

    def _line(self, line: bytes) -> None:
        if self.block_state == "in":
            if not self.block.feed(line):  # type: ignore[union-attr]
                self._end_block()
            return
        if self.block_state == "after":
            return  # readers decode the first block of such a body and stop
        from .textcodings import cte_block_start

        block = cte_block_start(self.encoding, line)
        if block is None:
            self._emit(line)  # no block yet: Python's email keeps the text as it is when none comes
            return
        if self.size:  # the text before the block is not the body after all
            os.ftruncate(self.fd, 0)
            os.lseek(self.fd, 0, os.SEEK_SET)
            self.size = 0
            self.head = b""
            self.text_marks = False
            self.tail = b""
        self.block = block
        self.block_state = "in"
        self.watch_text = False  # the decoded payload is a file, not text to look into
        if not block.start(self._emit):
            self._end_block()

    def _end_block(self) -> None:
        block = self.block
        if block is not None:
            block.finish()
            if block.name:
                from .headers import header_text

                self.block_name = header_text(block.name)
        self.block_state = "after"

    def _decode_joined(self, lines: bytes) -> None:
        """Quoted-printable read as mailparser reads it: soft line breaks removed before the escapes are decoded."""
        if self._alternative_fd < 0:
            self.alternative_path = self.path + ".joined"
            self._alternative_fd = os.open(self.alternative_path, NEW_FILE_FLAGS, 0o600)
            with open(self.path, "rb") as so_far:  # both readings agree up to here
                while chunk := so_far.read(1 << 16):
                    _write_all(self._alternative_fd, chunk[: self.take_budget(len(chunk))])
        joined = (self._alternative_pending + lines).replace(b"=\r\n", b"").replace(b"=\n", b"")
        # A logical line that a soft break continues into the next piece waits for it.
        cut = joined.rfind(b"\n") + 1 if lines.endswith((b"=\n", b"=\r\n")) else len(joined)
        self._alternative_pending = joined[cut:]
        decoded = binascii.a2b_qp(joined[:cut])
        _write_all(self._alternative_fd, decoded[: self.take_budget(len(decoded))])

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        if len(self.head) < magictype.HEAD_BYTES:
            self.head += data[: magictype.HEAD_BYTES - len(self.head)]
        if self.watch_text and not self.text_marks:
            if self.size < BINARY_HEAD and self.encoding in ENCODED and b"\0" in data[: BINARY_HEAD - self.size]:
                # A base64/quoted-printable body that decodes to binary (an image, an archive): no
                # reader looks for uuencode, BinHex or yEnc in it (ripmime does in raw bodies only),
                # and watching megabytes of it would cost a fifth of the decoding time.
                self.watch_text = False
            else:
                self.text_marks = has_block_mark(self.tail + data, not self.size)
                self.tail = data[-MARK_TAIL:]
        allowed = self.take_budget(len(data))
        if allowed < len(data):
            data = data[:allowed]
        self.size += len(data)
        _write_all(self.fd, data)

    def close(self, last_newline: bool = False) -> None:
        """Flush what is pending and close the file."""
        if self.pending:
            if self.encoding == "base64":
                self._emit(decode_base64(self.pending + b"=" * (-len(self.pending) % 4)))
            elif self.encoding == "quoted-printable":
                if self._alternative_fd >= 0 or splits_an_escape(self.pending):
                    self._decode_joined(self.pending + b"\n" if self.pending.endswith(b"=") else self.pending)
                self._emit(binascii.a2b_qp(self.pending))
            else:
                self._line(self.pending)
            self.pending = b""
        if self.block_state == "in":
            self._end_block()  # cut off: what was decoded stays
        if self._alternative_fd >= 0:
            if self._alternative_pending:
                decoded = binascii.a2b_qp(self._alternative_pending)
                _write_all(self._alternative_fd, decoded[: self.take_budget(len(decoded))])
            os.close(self._alternative_fd)
            self._alternative_fd = -1
        os.close(self.fd)


def splits_an_escape(lines: bytes) -> bool:
    """Whether a soft line break in quoted-printable text falls inside an =XX escape ("==\n", "=A=\n")."""
    for soft_break in (b"=\n", b"=\r\n"):
        at = lines.find(soft_break)
        while at >= 0:
            if lines[at - 1 : at] == b"=" or (lines[at - 2 : at - 1] == b"=" and lines[at - 1 : at] in _HEX):
                return True
            at = lines.find(soft_break, at + 2)
    return False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


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


def bounded_lines(text: object, limit: int = MAX_LINE):  # type: ignore[no-untyped-def]
    """Lines of a binary file, each at most `limit` bytes."""
    while True:
        line = text.readline(limit)  # type: ignore[attr-defined]
        if not line:
            return
        yield line
