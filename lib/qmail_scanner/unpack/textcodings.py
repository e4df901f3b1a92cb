"""Binary files written as text inside a body: uuencode, BinHex 4.0 and yEnc blocks, read line by line.

Mail readers extract these from text (and some from any part): MIME-tools (extract_uuencode:
`begin` + 3 octal digits, the BinHex "(This file must be converted with" line), ripmime
(`begin` in any case, any whitespace, a decimal mode of 1 to 777), Python's email (x-uuencode:
any octal mode), Thunderbird (uuencode, BinHex and `=ybegin line= size= name=` in plain text).
A block start here is the union of what they accept, and a block is decoded as leniently as
the most lenient of them decodes it: a cut-off or damaged block still yields what is there.

Each block is a small state machine fed one line at a time; where the bytes go is the
caller's business (content.py makes parts of them, decoding.py the body of a part).
"""

from __future__ import annotations

import binascii

TYPE_CHECKING = False  # importing typing costs every message milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable

    Output = Callable[[bytes], None]

BINHEX_MAGIC = b"(this file must be converted with"  # lower-cased; MIME-tools accepts any tool name after it
BINHEX_TYPES = ("application/mac-binhex40", "application/mac-binhex", "application/binhex", "application/x-binhex")
# ripmime decodes any byte as (c - 32) & 63; folding first lets binascii do the work.
_UU_FOLD = bytes(32 + ((c - 32) & 63) for c in range(256))
_UU_CLEAN = bytes(range(32, 97))
_HQX = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr"
_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_HQX_TO_B64 = bytes.maketrans(_HQX, _B64)
_NOT_HQX = bytes(set(range(256)) - set(_HQX))
_YENC_UNSHIFT = bytes((c - 42) & 255 for c in range(256))
_SPACES = b" \t\r\n\x0b\x0c"


# ---------------------------------------------------------------- block starts


def uu_begin(line: bytes) -> bytes | None:
    """The name (b"" when none) a uuencode `begin <mode> <name>` line gives, or None when it opens no block."""
    if line[:5].lower() != b"begin" or line[5:6] not in (b" ", b"\t"):
        return None
    rest = line[6:].lstrip(b" \t")
    end = 0
    while end < len(rest) and rest[end] not in _SPACES:
        end += 1
    mode = rest[:end]
    if not _mode_accepted(mode):
        return None
    name = rest[end:].strip(_SPACES)
    return name.split(b"\n", 1)[0].split(b"\r", 1)[0]


def _mode_accepted(mode: bytes) -> bool:
    """A mode some reader takes: 3 octal digits first (MIME-tools), an octal int (Python), atoi 1..777 (ripmime)."""
    if mode[:3].isdigit() and not mode[:3].strip(b"01234567"):
        return True
    try:
        int(mode, 8)
    except ValueError:
        pass
    else:
        return True
    digits = mode[1:] if mode[:1] == b"+" else mode
    number = digits[: len(digits) - len(digits.lstrip(b"0123456789"))]
    value = number.lstrip(b"0")
    return 0 < len(value) <= 3 and int(value) <= 777


def is_binhex_magic(line: bytes) -> bool:
    return line[:33].lower() == BINHEX_MAGIC


def yenc_begin(line: bytes) -> bytes | None:
    """The name an `=ybegin ... name=<name>` line gives, or None."""
    if not line.startswith(b"=ybegin "):
        return None
    at = line.find(b" name=")
    if at < 0:
        return None
    return line[at + 6 :].rstrip(b"\r\n").strip(b" \t")


def block_start(line: bytes, declared_type: str = "", binhex_part: bool = False) -> TextBlock | None:
    """The block a line opens, or None (`binhex_part`: the part is declared BinHex by type or transfer encoding)."""
    first = line[:1]
    if first in (b"b", b"B"):
        name = uu_begin(line)
        if name is not None:
            return UUBlock(name)
    elif first == b"(":
        if is_binhex_magic(line):
            return BinHexBlock()
    elif first == b"=":
        name = yenc_begin(line)
        if name is not None:
            return YEncBlock(name, line)
    elif first == b":" and (binhex_part or declared_type in BINHEX_TYPES):
        # A part declared as BinHex needs no magic line (Convert::BinHex starts at the ':').
        block = BinHexBlock()
        block.first = line
        return block
    return None


def cte_block_start(kind: str, line: bytes) -> TextBlock | None:
    """The block a line opens in a body whose transfer encoding says `kind` (uuencode, binhex, yenc)."""
    if kind == "uuencode":
        name = uu_begin(line)
        return UUBlock(name) if name is not None else None
    if kind == "yenc":
        name = yenc_begin(line)
        return YEncBlock(name, line) if name is not None else None
    if is_binhex_magic(line):
        return BinHexBlock()
    if line[:1] == b":":
        block = BinHexBlock()
        block.first = line
        return block
    return None


def clean_uu_line(line: bytes) -> bool:
    """A line every uudecoder takes: only uuencode characters, as long as its count says."""
    if not line or line.translate(None, _UU_CLEAN):
        return False
    count = (line[0] - 32) & 63
    return len(line) >= 1 + (count + 2) // 3 * 4 - 1 and count > 0


def decode_uu_line(line: bytes) -> bytes:
    """One uuencoded line (end stripped) decoded the way ripmime does: any byte, short lines padded."""
    folded = line.translate(_UU_FOLD)
    count = folded[0] - 32 if folded else 0
    try:
        return binascii.a2b_uu(folded[: 1 + (count + 2) // 3 * 4])
    except binascii.Error:
        return b""


# ---------------------------------------------------------------- blocks


class TextBlock:
    """One block being decoded: feed() it lines; decoded bytes go to `out`."""

    kind = ""

    def __init__(self, name: bytes | None) -> None:
        self.name = name  # bytes from the mail, b"" or None when the block names nothing (yet)
        self.out: Output = _discard
        self.consumed = True  # whether the line that ended the block belonged to it
        self.first = b""  # the line that opened the block when it holds data already: feed it once `out` is set

    def start(self, out: Output) -> bool:
        """Send the decoded bytes to `out`; False when the opening line was the whole block."""
        self.out = out
        return not self.first or self.feed(self.first)

    def feed(self, line: bytes) -> bool:
        """Take one line; False when the block is over."""
        raise NotImplementedError

    def finish(self) -> None:
        """The text ended (the block may be cut off): flush what is decoded."""


def _discard(data: bytes) -> None:
    pass


class UUBlock(TextBlock):
    """uuencode from the line after `begin` to `end`.

    Python's email goes on over blank and zero-count lines to `end`, ripmime stops at them:
    after one the block goes on only while the lines are clean uuencode.
    """

    kind = "uuencode"

    def __init__(self, name: bytes | None) -> None:
        super().__init__(name)
        self.paused = False

    def feed(self, line: bytes) -> bool:
        text = line.rstrip(b"\r\n")
        stripped = text.strip(_SPACES)
        if stripped[:3].lower() == b"end" and (stripped == b"end" or not clean_uu_line(text)):
            self.consumed = True
            return False
        if not stripped or stripped == b"`" or (text[:1] in (b" ", b"`") and not text[1:].strip(b" `")):
            self.paused = True
            return True
        if self.paused:
            if not clean_uu_line(text):
                self.consumed = False
                return False
            self.paused = False
        data = decode_uu_line(text)
        if data:
            self.out(data)
        return True


class YEncBlock(TextBlock):
    """yEnc from `=ybegin` to `=yend`; `=ypart begin=` tells where a piece of a multi-part file goes."""

    kind = "yenc"

    def __init__(self, name: bytes | None, header: bytes) -> None:
        super().__init__(name)
        self.part = _field(header, b"part")
        self.offset = 0  # where in the whole file this piece starts (=ypart begin=, 1-based there)

    def feed(self, line: bytes) -> bool:
        text = line.rstrip(b"\r\n")
        if text.startswith(b"=y"):
            if text.startswith(b"=yend"):
                return False
            if text.startswith(b"=ypart "):
                self.offset = max(0, _field(text, b"begin") - 1)
            return True
        if b"=" in text:
            text = _yenc_unescape(text)
        if text:
            self.out(text.translate(_YENC_UNSHIFT))
        return True


def _yenc_unescape(text: bytes) -> bytes:
    """'=' and the next character, less 64 (a '=' ending the line is dropped)."""
    pieces = []
    start = 0
    at = text.find(b"=")
    while 0 <= at < len(text) - 1:
        pieces.append(text[start:at])
        pieces.append(bytes(((text[at + 1] - 64) & 255,)))
        start = at + 2
        at = text.find(b"=", start)
    pieces.append(text[start:] if at < 0 else text[start:at])
    return b"".join(pieces)


def _field(line: bytes, key: bytes) -> int:
    """A numeric key=value of a yEnc control line, 0 when absent."""
    at = line.find(b" " + key + b"=")
    if at < 0:
        return 0
    value = line[at + len(key) + 2 :].split(b" ", 1)[0].strip()
    return int(value) if value.isdigit() and len(value) < 19 else 0


class BinHexBlock(TextBlock):
    """BinHex 4.0: 6-bit text between two colons, run-length coded, a header, the data fork, the resource fork.

    The data fork goes to `out`, the resource fork to `out_rsrc`; the name is known once the
    header is read. A bad CRC is not checked: readers that do not check it open the file.
    """

    kind = "binhex"

    def __init__(self) -> None:
        super().__init__(None)
        self.out_rsrc: Output = _discard
        self.started = False  # the opening ':' was seen
        self.chars = b""  # 6-bit characters not yet decoded (fewer than 4)
        self.last = -1  # the last byte out of the run-length decoder (-1: none yet)
        self.marker = False  # a 0x90 waits for its count
        self.header = b""
        self.fork_left = [-1, -1]  # data and resource fork bytes still to come (-1: header not read)
        self.skip = 0  # CRC bytes to skip before the next fork
        self.fork = 0

    def feed(self, line: bytes) -> bool:
        text = line.strip(_SPACES)
        if not self.started:
            if not text.startswith(b":"):
                return True  # between the magic line and the data (MIME-tools wants it next; others skip)
            self.started = True
            text = text[1:]
        end = text.find(b":")
        if end >= 0:
            text = text[:end]
        self._six_bit(text.translate(None, _NOT_HQX))
        return end < 0

    def finish(self) -> None:
        if len(self.chars) > 1:
            self._six_bit(b"", flush=True)

    def _six_bit(self, text: bytes, flush: bool = False) -> None:
        chars = self.chars + text
        usable = len(chars) if flush else len(chars) - len(chars) % 4
        self.chars = chars[usable:]
        if not usable:
            return
        encoded = chars[:usable].translate(_HQX_TO_B64)
        encoded += b"=" * (-len(encoded) % 4)
        try:
            packed = binascii.a2b_base64(encoded)
        except binascii.Error:
            return
        self._run_length(packed)

    def _run_length(self, data: bytes) -> None:
        """Undo BinHex's run-length coding: X 0x90 n is X n times, 0x90 0 a literal 0x90."""
        out = bytearray()
        start = 0
        if self.marker and data:
            self.marker = False
            self._repeat(out, data[0])
            start = 1
        while start < len(data):
            at = data.find(b"\x90", start)
            if at < 0:
                out += data[start:]
                break
            out += data[start:at]
            if at + 1 == len(data):
                self.marker = True  # the count comes with the next line
                break
            self._repeat(out, data[at + 1])
            start = at + 2
        if out:
            self.last = out[-1]
            self._forks(bytes(out))

    def _repeat(self, out: bytearray, count: int) -> None:
        last = out[-1] if out else self.last
        if count == 0:
            out.append(0x90)
        elif last >= 0 and count > 1:
            out += bytes((last,)) * (count - 1)

    def _forks(self, data: bytes) -> None:
        if self.fork_left[0] < 0:
            self.header += data
            if not self.header:
                return
            need = self.header[0] + 22
            if len(self.header) < need:
                return
            head = self.header
            name_end = 1 + head[0]
            self.name = head[1:name_end]
            lengths = head[name_end + 11 : name_end + 19]
            self.fork_left = [int.from_bytes(lengths[:4], "big"), int.from_bytes(lengths[4:], "big")]
            data = head[need:]
            self.header = b""
        while data and self.fork < 2:
            if self.skip:
                taken = min(self.skip, len(data))
                self.skip -= taken
                data = data[taken:]
                continue
            left = self.fork_left[self.fork]
            piece = data[:left]
            if piece:
                (self.out if self.fork == 0 else self.out_rsrc)(piece)
            self.fork_left[self.fork] -= len(piece)
            data = data[len(piece) :]
            if self.fork_left[self.fork] == 0:
                self.fork += 1
                self.skip = 2
