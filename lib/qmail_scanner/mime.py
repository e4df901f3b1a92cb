"""Streaming MIME unpacking: one pass over the spooled message, decoded parts written to the work dir.

The walker reads the spooled file in bounded chunks, keeps every part's header block exactly
as written (the format checks look at what a forgiving parser would hide), and decodes
bodies (base64, quoted-printable, uuencode) straight to files: memory stays bounded whatever
the size of an attachment. Archives found on the way are handed to archives.py.
"""

from __future__ import annotations

import binascii
import os
import time

from . import magictype
from .outcomes import TEMP_TIMEOUT, TemporaryFailure
from .records import Finding, Part
from .recordtype import field, record
from .settings import Settings

TYPE_CHECKING = False  # importing typing costs every message milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable

CHUNK_BYTES = 1 << 20
MAX_HEADER_LINE = 65536  # a longer "line" is cut; the rest is read as a new line
MAX_HEADER_BLOCK = 1 << 20  # a header block beyond this ends; the rest counts as body
MAX_BOUNDARY_LINE = 4096  # a line this long cannot be a delimiter we honour
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC

_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_BASE64 = bytes(set(range(256)) - set(_BASE64_ALPHABET))
# Header values and uuencode lines are parsed by hand below: importing re (and enum with it)
# would cost every message about 5 ms of start-up. Only broken base64 needs a regex.
_FOLDING_BLANKS = " \t\r\n"
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
_TEXT_MARKS = (b"begin ", b"begin-base64 ", b"-----BEGIN PGP ")


@record
class Unpacked:
    """What the unpacker found in one message."""

    parts: list[Part] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    top_headers: bytes = b""  # header block of the message as written, without the blank line
    body_offset: int = 0  # offset of the body in the spooled file (after the blank line)
    has_attachments: bool = False
    crypto: list[str] = field(default_factory=list)  # "PGP(signed)", "SMIME(encrypted)", "ZIP(encrypted)"
    message_size: int = 0
    unpacker: str = "internal"
    normalize: bool = True
    _top_parsed: list[tuple[str, bytes]] | None = None

    def headers(self) -> list[tuple[str, bytes]]:
        """The top-level headers as (lower-case name, unfolded raw value)."""
        if self._top_parsed is None:
            self._top_parsed = parse_headers(self.top_headers)
        return self._top_parsed

    def header_values(self, name: str) -> list[str]:
        """Every value of a top-level header, RFC 2047-decoded when normalize is on."""
        wanted = name.lower().rstrip(":")
        values = [header_text(value) for key, value in self.headers() if key == wanted]
        if self.normalize:
            values = [decode_words(value) for value in values]
        return values

    @property
    def subject(self) -> str:
        """The first Subject: (decoded per normalize), or ""."""
        values = self.header_values("subject")
        return values[0] if values else ""

    @property
    def message_id(self) -> str:
        """The first Message-ID:, or ""."""
        values = self.header_values("message-id")
        return values[0].strip() if values else ""

    def add_finding(self, rule: str, reason: str, part_name: str = "") -> None:
        """Record a limit/bomb finding once per rule."""
        if not any(f.rule == rule for f in self.findings):
            self.findings.append(Finding("policy", rule, reason, part_name))

    def add_crypto(self, tag: str) -> None:
        """Record a crypto tag once."""
        if tag not in self.crypto:
            self.crypto.append(tag)


# ---------------------------------------------------------------- header helpers


def header_text(value: bytes) -> str:
    """Header bytes as text: UTF-8 when valid, else Latin-1 (never fails)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def parse_headers(raw: bytes) -> list[tuple[str, bytes]]:
    """Unfold a raw header block into (lower-case name, value) pairs; broken lines are skipped."""
    headers: list[tuple[str, bytes]] = []
    for line in raw.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            continue
        if line[0] in (32, 9):
            if headers:
                name, value = headers[-1]
                headers[-1] = (name, value + b" " + line.strip() if value else line.strip())
            continue
        name, colon, value = line.partition(b":")
        if not colon:
            continue
        headers.append((name.strip().lower().decode("latin-1"), value.strip()))
    return headers


def _join_adjacent_words(text: str) -> str:
    """Drop the folding blanks between `?=` and `=?`: adjacent encoded words join without a gap."""
    pieces = []
    done = 0
    end = text.find("?=")
    while end >= 0:
        after = end + 2
        while after < len(text) and text[after] in _FOLDING_BLANKS:
            after += 1
        if after > end + 2 and text.startswith("=?", after):
            pieces.append(text[done : end + 2])
            done = after
            end = text.find("?=", after + 2)
        else:
            end = text.find("?=", end + 1)
    pieces.append(text[done:])
    return "".join(pieces)


def _token_end(text: str, start: int, stop: str) -> int:
    """Where a run of characters that are neither blank (str.isspace) nor in `stop` ends."""
    end = start
    while end < len(text) and text[end] not in stop and not text[end].isspace():
        end += 1
    return end


def decode_words(text: str) -> str:
    """Decode RFC 2047 encoded words (`=?charset?B|Q?text?=`); undecodable words stay as written."""
    if "=?" not in text:
        return text
    text = _join_adjacent_words(text)
    pieces = []
    done = 0
    start = text.find("=?")
    while start >= 0:
        charset_end = _token_end(text, start + 2, "?")
        encoding = text[charset_end + 1 : charset_end + 2]
        if (
            charset_end > start + 2
            and text.startswith("?", charset_end)
            and encoding in ("b", "B", "q", "Q")
            and text.startswith("?", charset_end + 2)
        ):
            data_end = _token_end(text, charset_end + 3, "?")
            if text.startswith("?=", data_end):
                pieces.append(text[done:start])
                pieces.append(
                    _decode_word(
                        text[start : data_end + 2],
                        text[start + 2 : charset_end],
                        encoding,
                        text[charset_end + 3 : data_end],
                    )
                )
                done = data_end + 2
                start = text.find("=?", done)
                continue
        start = text.find("=?", start + 1)
    pieces.append(text[done:])
    return "".join(pieces)


def _decode_word(word: str, charset: str, encoding: str, text: str) -> str:
    charset = charset.split("*")[0]
    data = text.encode("ascii", "replace")
    try:
        if encoding in "bB":
            raw = binascii.a2b_base64(data + b"=" * (-len(data) % 4))
        else:
            raw = binascii.a2b_qp(data, header=True)
    except (binascii.Error, ValueError):
        return word
    try:
        return raw.decode(charset, "replace")
    except LookupError:
        return raw.decode("latin-1")


def strip_comments(text: str) -> str:
    """Remove the innermost `(...)` comments (one pass, like the original's s/\\([^()]*\\)//g)."""
    if "(" not in text:
        return text
    pieces = []
    done = 0
    opening = text.find("(")
    while opening >= 0:
        closing = opening + 1
        while closing < len(text) and text[closing] not in "()":
            closing += 1
        if closing < len(text) and text[closing] == ")":
            pieces.append(text[done:opening])
            done = closing + 1
            opening = text.find("(", done)
        else:
            opening = text.find("(", closing)
    pieces.append(text[done:])
    return "".join(pieces)


def _skip_blanks(text: str, position: int) -> int:
    while position < len(text) and text[position] in _FOLDING_BLANKS:
        position += 1
    return position


def _quoted_end(text: str, start: int) -> int:
    """End of a quoted string opening at `start`: after the closing quote, else before a lone trailing backslash."""
    position = start + 1
    while True:
        quote = text.find('"', position)
        backslash = text.find("\\", position, quote if quote >= 0 else len(text))
        if backslash >= 0:
            if backslash + 1 == len(text):
                return backslash
            position = backslash + 2
        elif quote >= 0:
            return quote + 1
        else:
            return len(text)


def _raw_params(text: str) -> list[tuple[str, str]]:
    """`; name = value` pairs as written (quotes kept); a piece without `name=` is skipped.

    A value is a quoted string (backslash escapes, up to the closing quote or the end) or
    everything up to the next `;`. A `;` inside a quoted string does not start a parameter.
    """
    params = []
    semicolon = text.find(";")
    while semicolon >= 0:
        name_start = _skip_blanks(text, semicolon + 1)
        name_end = _token_end(text, name_start, "=;")
        equals = _skip_blanks(text, name_end)
        if name_end == name_start or not text.startswith("=", equals):
            semicolon = text.find(";", semicolon + 1)
            continue
        value_start = _skip_blanks(text, equals + 1)
        if text.startswith('"', value_start):
            value_end = _quoted_end(text, value_start)
        else:
            value_end = text.find(";", value_start)
            if value_end < 0:
                value_end = len(text)
        params.append((text[name_start:name_end], text[value_start:value_end]))
        semicolon = text.find(";", value_end)
    return params


def _unescape(text: str) -> str:
    """Backslash escapes of a quoted string resolved; a backslash before a line end or at the end stays."""
    pieces = []
    done = 0
    backslash = text.find("\\")
    while backslash >= 0:
        pieces.append(text[done:backslash])
        if backslash + 1 < len(text) and text[backslash + 1] != "\n":
            pieces.append(text[backslash + 1])
            done = backslash + 2
        else:
            pieces.append("\\")
            done = backslash + 1
        backslash = text.find("\\", done)
    pieces.append(text[done:])
    return "".join(pieces)


def split_content_header(value: bytes) -> tuple[str, list[tuple[str, str]]]:
    """`type/sub; a=b; c="d"` -> ("type/sub", [("a", "b"), ("c", "d")]); repeated params kept."""
    text = header_text(value)
    main, _, rest = text.partition(";")
    main = strip_comments(main).strip().lower()
    params: list[tuple[str, str]] = []
    if rest:
        for name, param_value in _raw_params(";" + rest):
            param_value = param_value.strip()
            if param_value.startswith('"'):
                param_value = (
                    param_value[1:-1] if param_value.endswith('"') and len(param_value) > 1 else param_value[1:]
                )
                param_value = _unescape(param_value) if "\\" in param_value else param_value
            params.append((name.lower(), param_value))
    return main, params


def _percent_decode(raw: bytes) -> bytes:
    """`%XX` hex escapes decoded; a `%` not followed by two hex digits stays."""
    if b"%" not in raw:
        return raw
    first, *rest = raw.split(b"%")
    pieces = [first]
    for piece in rest:
        if len(piece) >= 2 and piece[0] in _HEX_DIGITS and piece[1] in _HEX_DIGITS:
            pieces.append(bytes((int(piece[:2], 16),)) + piece[2:])
        else:
            pieces.append(b"%" + piece)
    return b"".join(pieces)


def _decode_2231(text: str, charset: str) -> str:
    return _decode_charset(_percent_decode(text.encode("utf-8", "surrogateescape")), charset)


def _decode_charset(raw: bytes, charset: str) -> str:
    try:
        return raw.decode(charset or "us-ascii", "replace")
    except LookupError:
        return raw.decode("latin-1")


def param_values(params: list[tuple[str, str]], wanted: str) -> list[str]:
    """Every value given for one parameter: plain ones, and the RFC 2231 form joined and decoded."""
    values = [decode_words(v) for n, v in params if n == wanted]
    segments: dict[int, tuple[str, bool]] = {}
    single: list[str] = []
    for name, value in params:
        if not name.startswith(wanted + "*"):
            continue
        rest = name[len(wanted) + 1 :]
        if rest == "":
            single.append(value)
        else:
            extended = rest.endswith("*")
            number = rest.rstrip("*")
            if number.isdigit() and int(number) not in segments and int(number) < 1000:
                segments[int(number)] = (value, extended)
    for value in single:
        charset, _, encoded = value.partition("'")
        _, _, encoded = encoded.partition("'")
        values.append(_decode_2231(encoded, charset) if encoded or "'" in value else value)
    if segments:
        # RFC 2231 4.1: the octets of consecutive encoded segments are joined before they are
        # decoded, so a character split across segments comes out whole; plain segments are text.
        charset = ""
        pieces: list[str] = []
        octets = bytearray()
        for number in sorted(segments):
            value, extended = segments[number]
            if extended and number == 0 and value.count("'") >= 2:
                charset, _, value = value.partition("'")
                _, _, value = value.partition("'")
            if extended:
                octets += _percent_decode(value.encode("utf-8", "surrogateescape"))
                continue
            if octets:
                pieces.append(_decode_charset(bytes(octets), charset))
                octets.clear()
            pieces.append(value)
        if octets:
            pieces.append(_decode_charset(bytes(octets), charset))
        values.append("".join(pieces))
    return values


def claimed_filenames(headers: list[tuple[str, bytes]]) -> tuple[str, ...]:
    """Every distinct filename a part claims (Content-Type name=, Content-Disposition filename=)."""
    names: list[str] = []
    for header, param in (("content-type", "name"), ("content-disposition", "filename")):
        for key, value in headers:
            if key == header:
                for name in param_values(split_content_header(value)[1], param):
                    name = name.strip().strip("\x00")
                    if name and name not in names:
                        names.append(name)
                break  # the first occurrence counts; repeats are a format finding
    return tuple(names)


def first_header(headers: list[tuple[str, bytes]], name: str) -> bytes | None:
    """The first value of a header in a parsed block, or None."""
    for key, value in headers:
        if key == name:
            return value
    return None


# ---------------------------------------------------------------- the reader


class _Reader:
    """Bounded, buffered reads over the spooled file: lines for headers, boundary scans for bodies."""

    def __init__(self, path: str, tick: Callable[[], None]) -> None:
        self.file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by the walker
        self.buf = b""
        self.pos = 0
        self.base = 0  # file offset of buf[0]
        self.eof = False
        self.tick = tick

    def offset(self) -> int:
        return self.base + self.pos

    def _fill(self, want: int) -> bool:
        """Make at least `want` bytes available after pos; False when EOF came first."""
        if len(self.buf) - self.pos >= want:
            return True
        if self.eof:
            return False
        if self.pos:
            self.buf = self.buf[self.pos :]
            self.base += self.pos
            self.pos = 0
        pieces = [self.buf]
        have = len(self.buf)
        while have < want:
            self.tick()
            chunk = self.file.read(max(CHUNK_BYTES, want - have))
            if not chunk:
                self.eof = True
                break
            pieces.append(chunk)
            have += len(chunk)
        self.buf = b"".join(pieces)
        return have >= want

    def readline(self, limit: int = MAX_HEADER_LINE) -> bytes:
        """One line with its ending; at most `limit` bytes; b"" at EOF."""
        while True:
            end = self.buf.find(b"\n", self.pos, self.pos + limit)
            if end >= 0:
                line = self.buf[self.pos : end + 1]
                self.pos = end + 1
                return line
            available = len(self.buf) - self.pos
            if available >= limit or not self._fill(available + 1):
                line = self.buf[self.pos : self.pos + limit]
                self.pos += len(line)
                return line

    def scan_body(self, boundaries: list[bytes], sink: Callable[[bytes], None] | None) -> tuple[int, bool]:
        """Pass body bytes to sink up to a delimiter line of one of `boundaries`.

        Returns (index of the boundary hit, closing delimiter?) or (-1, False) at EOF. The line
        break before a delimiter belongs to the delimiter, as RFC 2046 says.
        """
        at_line_start = True
        while True:
            if not self._fill(1):
                return -1, False
            buf, start = self.buf, self.pos
            if not boundaries:
                if sink:
                    sink(buf[start:])
                self.pos = len(buf)
                continue
            search = start
            need_more = False
            while True:
                if at_line_start and search == start and buf.startswith(b"--", start):
                    candidate = start
                elif at_line_start and search == start and len(buf) - start < 2 and not self.eof:
                    candidate = start
                    need_more = True
                    break
                else:
                    newline = buf.find(b"\n--", search)
                    if newline < 0:
                        break
                    candidate = newline + 1
                line_end = buf.find(b"\n", candidate, candidate + MAX_BOUNDARY_LINE)
                if line_end < 0 and len(buf) - candidate < MAX_BOUNDARY_LINE and not self.eof:
                    need_more = True  # the candidate line is not complete yet
                    break
                stop = line_end if line_end >= 0 else min(len(buf), candidate + MAX_BOUNDARY_LINE)
                hit = _match_delimiter(buf[candidate + 2 : stop], boundaries)
                if hit is not None:
                    content_end = candidate
                    if content_end > start:
                        content_end -= 1  # the \n before the delimiter
                        if content_end > start and buf[content_end - 1] == 13:
                            content_end -= 1
                    if sink and content_end > start:
                        sink(buf[start:content_end])
                    self.pos = line_end + 1 if line_end >= 0 else stop
                    return hit
                search = candidate + 1
            # No delimiter in the buffer: hand on what cannot start one, keep the rest.
            if need_more:
                cut = candidate - 1 if candidate > start else start
            else:
                last_newline = buf.rfind(b"\n", start)
                cut = last_newline if last_newline >= 0 else len(buf)
                if self.eof:
                    cut = len(buf)
            if cut > start and cut < len(buf) and buf[cut - 1] == 13:
                cut -= 1
            if cut > start:
                if sink:
                    sink(buf[start:cut])
                self.pos = cut
                at_line_start = False
            elif self.eof:
                if sink and len(buf) > start:
                    sink(buf[start:])
                self.pos = len(buf)
                return -1, False
            if not self._fill(len(self.buf) - self.pos + CHUNK_BYTES) and self.pos >= len(self.buf):
                return -1, False

    def close(self) -> None:
        self.file.close()


def _match_delimiter(rest: bytes, boundaries: list[bytes]) -> tuple[int, bool] | None:
    """Which boundary a line `--<rest>` delimits (innermost first), and whether it closes."""
    rest = rest.rstrip(b" \t\r")
    for index in range(len(boundaries) - 1, -1, -1):
        boundary = boundaries[index]
        if rest == boundary:
            return index, False
        if rest == boundary + b"--":
            return index, True
    return None


# ---------------------------------------------------------------- decoding sinks


class _Sink:
    """Decode one body to a new file in the work dir, within the message's decoded-bytes budget."""

    def __init__(self, walker: _Walker, path: str, encoding: str, watch_text: bool) -> None:
        self.walker = walker
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
            self._emit(_b64(data[:usable]))
        elif self.encoding == "quoted-printable":
            data = self.pending + data
            cut = data.rfind(b"\n") + 1
            if cut == 0 and len(data) > MAX_HEADER_LINE:
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
            self.text_marks = any(mark in window for mark in _TEXT_MARKS)
            self.tail = data[-20:]
        allowed = self.walker.take_budget(len(data))
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
                self._emit(_b64(self.pending + b"=" * (-len(self.pending) % 4)))
            else:
                self._emit(binascii.a2b_qp(self.pending))
            self.pending = b""
        os.close(self.fd)


def _b64(data: bytes) -> bytes:
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


# ---------------------------------------------------------------- the walker


class _Walker:
    """One pass over a message: builds the part list and the findings."""

    def __init__(self, path: str, unpack_dir: str, settings: Settings, remaining: Callable[[], float]) -> None:
        self.settings = settings
        self.unpack_dir = unpack_dir
        self.remaining = remaining
        self.started = time.monotonic()
        self.result = Unpacked(normalize=settings.normalize)
        self.budget = settings.max_decoded_bytes
        self.max_depth = max(1, min(settings.max_depth, 200))
        self.stopped = False
        self.message_path = path

    def tick(self) -> None:
        """Give up (temporary failure) when unpacking runs out of time."""
        if self.remaining() <= 0 or time.monotonic() - self.started > self.settings.max_unpack_seconds:
            raise TemporaryFailure("unpacking the message took too long, try again later", TEMP_TIMEOUT)

    def take_budget(self, wanted: int) -> int:
        """How many of `wanted` decoded bytes may still be written."""
        if wanted <= self.budget:
            self.budget -= wanted
            return wanted
        allowed = max(0, self.budget)
        self.budget = 0
        self.result.add_finding(
            "decoded-size",
            f"Disallowed MIME: decoded content exceeds {self.settings.max_decoded_bytes} bytes (decompression bomb)",
        )
        return allowed

    def new_part(self, depth: int, declared_type: str, raw_headers: bytes, **values: object) -> Part | None:
        """A new part record, or None once the part limit is reached."""
        if len(self.result.parts) >= self.settings.max_parts:
            self.result.add_finding(
                "mime-parts", f"Disallowed MIME: more than {self.settings.max_parts} parts (MIME bomb)"
            )
            self.stopped = True
            return None
        part = Part(len(self.result.parts), depth, declared_type, raw_headers=raw_headers, **values)
        self.result.parts.append(part)
        return part

    def work_file(self, part: Part, suffix: str = "") -> str:
        """Path of a new work file for a part (names never come from the mail)."""
        return os.path.join(self.unpack_dir, f"p{part.index:05d}{suffix}")

    def run(self) -> Unpacked:
        reader = _Reader(self.message_path, self.tick)
        try:
            self.tick()
            self.read_entity(reader, 0, [], top=True)
            self.result.message_size = os.fstat(reader.file.fileno()).st_size
        finally:
            reader.close()
        return self.result

    def read_header_block(self, reader: _Reader, boundaries: list[bytes]) -> tuple[bytes, tuple[int, bool] | None]:
        """Read header lines up to the blank line; a delimiter line ends the part early."""
        lines: list[bytes] = []
        size = 0
        while True:
            line = reader.readline()
            if not line:
                return b"".join(lines), (-1, False) if boundaries else None
            if line in (b"\n", b"\r\n"):
                return b"".join(lines), None
            if boundaries and line.startswith(b"--"):
                hit = _match_delimiter(line[2:].rstrip(b"\r\n"), boundaries)
                if hit is not None:
                    return b"".join(lines), hit
            lines.append(line)
            size += len(line)
            if size > MAX_HEADER_BLOCK:
                self.result.add_finding("header-size", f"Disallowed MIME: header block over {MAX_HEADER_BLOCK} bytes")
                return b"".join(lines), None

    def read_entity(self, reader: _Reader, depth: int, boundaries: list[bytes], top: bool = False) -> tuple[int, bool]:
        """Read one entity (headers and body) up to a delimiter of an enclosing multipart, or EOF."""
        raw_headers, early_end = self.read_header_block(reader, boundaries)
        headers = parse_headers(raw_headers)
        content_type = first_header(headers, "content-type")
        declared, params = split_content_header(content_type) if content_type is not None else ("", [])
        if top:
            self.result.top_headers = raw_headers
            self.result.body_offset = reader.offset()
        encoding_value = first_header(headers, "content-transfer-encoding")
        encoding = header_text(encoding_value).strip().lower() if encoding_value is not None else ""
        filenames = claimed_filenames(headers) if b"name" in raw_headers.lower() else ()
        part = self.new_part(depth, declared, raw_headers, filenames=filenames, transfer_encoding=encoding)
        if part is None:
            return reader.scan_body(boundaries, None) if early_end is None else early_end
        self._note_crypto(declared, params)
        if early_end is not None:
            return early_end
        if declared.startswith("multipart/"):
            boundary = next((v for n, v in params if n == "boundary"), "")
            if boundary and depth < self.max_depth:
                return self.read_multipart(reader, depth, boundaries, boundary.encode("utf-8", "surrogateescape"))
            if boundary:
                self.too_deep()
        elif declared == "message/rfc822" and encoding in ("", "7bit", "8bit", "binary"):
            if depth < self.max_depth:
                hit = self.read_entity(reader, depth + 1, boundaries)
                part.size = sum(p.size for p in self.result.parts[part.index + 1 :] if p.depth == depth + 1)
                return hit
            self.too_deep()
        return self.read_leaf(reader, part, boundaries, encoding)

    def too_deep(self) -> None:
        self.result.add_finding(
            "mime-depth", f"Disallowed MIME: nested deeper than {self.max_depth} levels (MIME bomb)"
        )

    def read_multipart(self, reader: _Reader, depth: int, boundaries: list[bytes], boundary: bytes) -> tuple[int, bool]:
        """Preamble, the body parts, epilogue; returns the delimiter hit of an enclosing multipart."""
        inner = [*boundaries, boundary]
        own = len(boundaries)
        hit = reader.scan_body(inner, None)  # the preamble
        while hit == (own, False) and not self.stopped:
            hit = self.read_entity(reader, depth + 1, inner)
        if self.stopped and hit == (own, False):
            hit = reader.scan_body(inner, None)
            while hit == (own, False):
                hit = reader.scan_body(inner, None)
        if hit == (own, True):
            return reader.scan_body(boundaries, None)  # the epilogue
        return hit  # an enclosing delimiter (this multipart was not closed) or EOF

    def read_leaf(self, reader: _Reader, part: Part, boundaries: list[bytes], encoding: str) -> tuple[int, bool]:
        """Decode a body to a work file, then look inside it (type, uuencode, archives)."""
        uuencoded = encoding in ("x-uuencode", "uuencode", "x-uue")
        if encoding not in ("base64", "quoted-printable"):
            encoding = "identity"
        is_text = (
            uuencoded
            or part.declared_type in ("", "text/plain", "text/html", "text/enriched")
            or (part.declared_type.startswith("text/") and not part.filenames)
        )
        path = self.work_file(part)
        sink = _Sink(self, path, encoding, watch_text=is_text)
        try:
            hit = reader.scan_body(boundaries, sink)
        finally:
            sink.close()
        part.size = sink.size
        part.decoded_path = path
        part.magic_type = magictype.detect(sink.head, self.settings, want_detail=not is_text or bool(part.filenames))
        if sink.text_marks:
            self.look_into_text(part)
        self.look_into_file(part, sink.head)
        return hit

    def look_into_file(self, part: Part, head: bytes) -> None:
        """Archives, TNEF: list members (and extract them when configured)."""
        if _may_be_archive(part):
            from .archives import inspect_archive

            self.tick()
            inspect_archive(self, part, part.filenames[0] if part.filenames else f"part{part.index}", part.depth + 1)

    def look_into_text(self, part: Part) -> None:
        """Uuencoded blocks become parts of their own; inline PGP is noted."""
        with open(part.decoded_path or "", "rb") as text:
            pending: Part | None = None
            out_fd = -1
            written = 0
            for line in _bounded_lines(text):
                if pending is None:
                    if line.startswith(b"-----BEGIN PGP SIGNED MESSAGE"):
                        self.result.add_crypto("PGP(signed)")
                    elif line.startswith(b"-----BEGIN PGP MESSAGE"):
                        self.result.add_crypto("PGP(encrypted)")
                    uu_name = uu_begin_name(line)
                    if uu_name is not None:
                        name = header_text(uu_name.strip())
                        pending = self.new_part(
                            part.depth + 1,
                            "application/octet-stream",
                            b"",
                            filenames=(name,),
                            transfer_encoding="x-uuencode",
                        )
                        if pending is None:
                            return
                        pending.decoded_path = self.work_file(pending)
                        out_fd = os.open(pending.decoded_path, NEW_FILE_FLAGS, 0o600)
                        written = 0
                        head = b""
                    continue
                stripped = line.rstrip(b"\r\n")
                if stripped in (b"end", b"`", b" ") or not stripped:
                    if stripped or written:  # a zero-length line or "end" closes the block
                        os.close(out_fd)
                        pending.size = written
                        pending.magic_type = magictype.detect(head, self.settings)
                        self.look_into_file(pending, head)
                        pending = None
                    continue
                try:
                    data = binascii.a2b_uu(stripped)
                except binascii.Error:
                    # Some encoders add garbage after the counted bytes; honour the count.
                    count = ((stripped[0] - 32) & 63) if stripped else 0
                    try:
                        data = binascii.a2b_uu(stripped[: 1 + (count + 2) // 3 * 4])
                    except binascii.Error:
                        continue
                data = data[: self.take_budget(len(data))]
                if len(head) < magictype.HEAD_BYTES:
                    head += data[: magictype.HEAD_BYTES - len(head)]
                os.write(out_fd, data)
                written += len(data)
            if pending is not None:
                os.close(out_fd)
                pending.size = written
                pending.magic_type = magictype.detect(head, self.settings)
                self.look_into_file(pending, head)

    def _note_crypto(self, declared: str, params: list[tuple[str, str]]) -> None:
        if declared == "multipart/signed":
            protocol = next((v.lower() for n, v in params if n == "protocol"), "")
            self.result.add_crypto("PGP(signed)" if "pgp" in protocol else "SMIME(signed)")
        elif declared == "multipart/encrypted":
            protocol = next((v.lower() for n, v in params if n == "protocol"), "")
            self.result.add_crypto("PGP(encrypted)" if "pgp" in protocol else "SMIME(encrypted)")
        elif declared in ("application/pkcs7-mime", "application/x-pkcs7-mime"):
            smime_type = next((v.lower() for n, v in params if n == "smime-type"), "")
            self.result.add_crypto("SMIME(signed)" if smime_type == "signed-data" else "SMIME(encrypted)")


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


def _bounded_lines(text: object, limit: int = MAX_HEADER_LINE):  # type: ignore[no-untyped-def]
    """Lines of a binary file, each at most `limit` bytes."""
    while True:
        line = text.readline(limit)  # type: ignore[attr-defined]
        if not line:
            return
        yield line


def _may_be_archive(part: Part) -> bool:
    """Cheap test before importing the archive code: content, declared type or name says archive."""
    if part.magic_type in magictype.ARCHIVE_TYPES or part.declared_type in (
        "application/ms-tnef",
        "application/vnd.ms-tnef",
    ):
        return True
    return any(
        name.lower().endswith((".zip", ".rar", ".7z", ".tnef", "winmail.dat", "win.dat")) for name in part.filenames
    )


# ---------------------------------------------------------------- entry points


NON_ATTACHMENT_TYPES = ("", "text/plain", "text/html", "text/enriched", "message/rfc822", "message/delivery-status")


def _finish(result: Unpacked) -> Unpacked:
    result.has_attachments = any(
        part.filenames
        or part.container
        or not (part.declared_type in NON_ATTACHMENT_TYPES or part.declared_type.startswith("multipart/"))
        for part in result.parts
    )
    return result


def unpack(message_path: str, unpack_dir: str, settings: Settings, remaining: Callable[[], float]) -> Unpacked:
    """Walk the spooled message once; decoded parts land in unpack_dir."""
    if settings.mime_unpacker == "reformime" and settings.reformime_binary:
        from .reformime import unpack_with_reformime

        return _finish(unpack_with_reformime(message_path, unpack_dir, settings, remaining))
    return _finish(_Walker(message_path, unpack_dir, settings, remaining).run())
