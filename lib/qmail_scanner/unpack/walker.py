"""Streaming MIME unpacking: one pass over the spooled message per reading, decoded parts written to the work dir.

The walker reads the spooled file in bounded chunks, keeps every part's header block exactly
as written (the format checks look at what a forgiving parser would hide), and decodes
bodies straight to files (decoding.py): memory stays bounded whatever the size of an
attachment. Header blocks are read by headers.py; what is inside a decoded body is content.py's
business. Limits, work files and findings belong to the sink.
"""

from __future__ import annotations

import os

from . import magictype
from .content import look_inside
from .decoding import DecodingSink, sink_encoding
from .headers import (
    HEADER_SPELLING,
    MAX_VALUE_TEXT,
    MESSAGE_TEST_BYTES,
    MESSAGE_TEST_LINES,
    boundary_candidates,
    boundary_spellings,
    claimed_filenames,
    filename_ambiguity,
    header_text,
    is_header_line,
    looks_like_parameter,
    parse_headers,
    reads_as_message,
    split_content_header,
    transfer_token,
)

TYPE_CHECKING = False  # importing typing costs every message milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..records import Part
    from .readings import Reading
    from .sink import PartSink, Unpacked

    Hit = tuple[int, bool]  # (index of the boundary a delimiter line names, closing?); (-1, False) at EOF
    Matcher = Callable[[bytes, list[bytes]], Hit | None]

CHUNK_BYTES = 1 << 20
MAX_HEADER_LINE = 65536  # a longer "line" is cut; the rest is read as a new line
MAX_HEADER_BLOCK = 1 << 20  # a header block beyond this ends; the rest counts as body
# A header block of more lines read one by one (each header line, and continuation lines read
# singly) ends there too: every reader of the block (formatcheck, policy rules, the logs) takes
# a Python step per header, and 400,000 tiny headers in 2 MB cost seconds. Real blocks hold a
# few hundred (qmail bounces a message after 100 hops).
MAX_HEADER_LINES = 10_000
# read_folded's view of a header: line ends kept, blanks that fold a line ' ', the other
# whitespace str.strip removes '.', everything else 'x'.
_FOLD_SHADOW = bytes(10 if c == 10 else 32 if c in (32, 9) else 46 if c in (11, 12, 13) else 120 for c in range(256))
MAX_BOUNDARY_LINE = 4096  # a line this long cannot be a delimiter we honour
# A continuation split off these by an empty line hides a name or a boundary from one reading.
SPLITTABLE_HEADERS = (b"content-type", b"content-disposition")
# Parts this deep are handed to clamd decoded: its own recursion limit may stop short of them.
ALONE_DEPTH = 12
IDENTITY_ENCODINGS = ("", "7bit", "8bit", "binary")
PLAIN_OUTSIDE = 512  # a one-line preamble/epilogue this short is not read ("This is a multi-part...")
TEXT_DECODINGS = ("uuencode", "binhex", "yenc")  # files written as text, decoded from the body's blocks
__all__ = ["Reader", "Walker"]


# ---------------------------------------------------------------- the reader


class Reader:
    """Bounded, buffered reads over the spooled file: lines for headers, boundary scans for bodies."""

    def __init__(self, path: str, tick: Callable[[], None], origin: int = 0) -> None:
        self.file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by the walker
        self.buf = b""
        self.pos = 0
        self.base = 0  # file offset of buf[0]
        self.eof = False
        self.content_end = -1
        self.tick = tick
        self.origin = origin  # added to offsets: a decoded container's file has offsets of its own
        self.bare_cr = False  # a CR not followed by LF was read: some readers end a line there
        self.cr_last = False  # the last chunk read ended with a CR

    def offset(self) -> int:
        return self.origin + self.base + self.pos

    def unread(self, line: bytes) -> None:
        """Put back the line readline just returned (it is still in the buffer)."""
        self.pos -= len(line)

    def seek(self, offset: int) -> None:
        """Go back to a file offset read before (another reading of the same bytes)."""
        self.file.seek(offset - self.origin)
        self.buf = b""
        self.pos = 0
        self.base = offset - self.origin
        self.eof = False

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
            if not self.bare_cr and (self.cr_last or b"\r" in chunk):
                self.bare_cr = _has_bare_cr(chunk, self.cr_last)
                self.cr_last = chunk.endswith(b"\r")
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

    def read_folded(self, limit: int, blank_lines: bool) -> bytes:
        """Whole continuation lines (each starting with a blank) from here, as one piece of at most `limit` bytes.

        The walker reads a header line by line; a header folded into thousands of short lines
        would cost a Python step each, so a run of them is found with translate and find
        (C speed). `blank_lines`: False stops before a line of blanks only (a choice for the caller).
        No line longer than readline's limit is taken: it is cut there instead.
        """
        limit = min(limit, MAX_HEADER_LINE)
        want = 512
        while True:
            want = min(want, limit)
            self._fill(want)
            chunk = self.buf[self.pos : self.pos + want]
            if chunk[:1] not in (b" ", b"\t"):
                return b""
            chunk = chunk[: chunk.rfind(b"\n") + 1]  # whole lines only
            shadow = chunk.translate(_FOLD_SHADOW)
            ends = [at for at in (shadow.find(b"\nx"), shadow.find(b"\n\n"), shadow.find(b"\n.")) if at >= 0]
            if ends:
                chunk, shadow = chunk[: min(ends) + 1], shadow[: min(ends) + 1]
            if not blank_lines:
                # A line of blanks only becomes an empty line once its blanks are deleted.
                squeezed = (b"\n" + shadow).translate(None, b" .")
                blank = squeezed.find(b"\n\n")
                if blank >= 0:
                    lines_before = squeezed.count(b"\n", 0, blank)
                    if lines_before == 0:
                        return b""
                    chunk = chunk[: len(chunk) - len(chunk.split(b"\n", lines_before)[-1])]
                    ends = [0]
            if ends or want >= limit or len(self.buf) - self.pos < want:
                self.pos += len(chunk)
                return chunk
            want *= 4

    def scan_body(
        self, boundaries: list[bytes], sink: Callable[[bytes], None] | None, match: Matcher
    ) -> tuple[int, bool]:
        """Pass body bytes to sink up to a delimiter line of one of `boundaries` (`match` tells).

        Returns (index of the boundary hit, closing delimiter?) or (-1, False) at EOF. The line
        break before a delimiter belongs to the delimiter, as RFC 2046 says.
        """
        at_line_start = True
        self.content_end = -1  # where the body ended before a delimiter; at EOF, the end of the file
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
                hit = match(buf[candidate + 2 : stop], boundaries)
                if hit is not None:
                    content_end = candidate
                    if content_end > start:
                        content_end -= 1  # the \n before the delimiter
                        if content_end > start and buf[content_end - 1] == 13:
                            content_end -= 1
                    if sink and content_end > start:
                        sink(buf[start:content_end])
                    self.content_end = self.base + content_end
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

    def body_end(self) -> tuple[int, int]:
        """After scan_body: where the body's bytes ended and where reading stopped (after its delimiter line)."""
        end = self.offset()
        return (self.content_end if self.content_end >= 0 else end), end

    def close(self) -> None:
        self.file.close()


class Walker:
    """One pass over a message: builds the part list and the findings."""

    def __init__(self, path: str, sink: PartSink) -> None:
        self.sink = sink
        self.settings = sink.settings
        self.result = sink.result
        self.message_path = path
        self.reading: Reading | None = None  # None: the first pass, every choice point read the first way
        self.first_met: dict[tuple, str] = {}  # choice points the first pass met
        self.entity_ends: dict[int, int] = {}  # where each entity ended (the furthest of all readings), by its start
        self.passes = 0
        self.containers: dict[tuple, Part] = {}  # multiparts and attached messages met, by where and how read
        self.leaves: dict[tuple, set[tuple[int, int]]] = {}  # leaves decoded, by where and how read -> body_end()s
        self.first_counts: dict[tuple, int] = {}  # choice points of more than two ways the first pass met
        # Readers decode some containers before they parse them (a message/* or multipart under a
        # transfer encoding, any message/* they hand out whole): those bodies are decoded to work
        # files and walked as messages of their own, with offsets from an origin of their own.
        self.decoded: dict[tuple, list[str]] = {}  # (container key, where it ended) -> decoded bodies
        self.origins: dict[tuple, int] = {}
        # A file with bare CRs -> its copy with them read as line ends, and where they are (None: too many to list).
        self.line_copies: dict[str, tuple[str, list[int] | None]] = {}
        self.alone = False  # parts met now reach us by a way clamd does not read: hand them to it decoded
        self.unopened = False  # in a container clamd may not open: encoded parts are handed to it decoded
        self.lines: list[int] | bool | None = False  # walking a copy with bare CRs made line ends: where they were
        # Walking what only forgiving readers (ripmime) make of text: its choice points and format notes are not
        # recorded (a bounce is not held for the shape of its status fields), its parts are scanned like any other.
        self.lenient = False
        self.cr_run_copies: dict[str, str] = {}  # a file with CRs before LFs -> its copy with those CRs dropped

    def run(self) -> Unpacked:
        """Walk the message once; if it is ambiguous (--fix-mime 1), once more per planned reading."""
        self.walk(None)
        self.result.first_reading_parts = len(self.result.parts)
        if self.settings.fix_mime != 1 or not self.first_met:
            return self.result
        from .readings import Plan, Reading  # only ambiguous messages pay for it

        plan = Plan(self.settings.max_readings)
        plan.record(Reading(met=self.first_met, counts=self.first_counts), self.entity_ends)
        while not self.sink.stopped:
            reading = plan.next_reading()
            if reading is None:
                break
            if plan.passes >= plan.limit:
                self.result.add_finding(
                    "mime-readings",
                    f"Disallowed MIME: ambiguous in more ways than {plan.limit} readings cover (MIME bomb)",
                )
                break
            self.walk(reading)
            plan.record(reading, self.entity_ends)
        self.result.readings = plan.passes
        return self.result

    def walk(self, reading: Reading | None) -> None:
        """One pass over the message, taking each choice point the way `reading` says."""
        self.reading = reading
        self.passes += 1
        reader = Reader(self.message_path, self.sink.tick)
        try:
            self.sink.tick()
            self.read_entity(reader, 0, [], top=True)
            self.result.message_size = os.fstat(reader.file.fileno()).st_size
        finally:
            reader.close()
        if reader.bare_cr:
            self.walk_lines(self.message_path, None, 0, top=True)

    def walk_file(
        self,
        path: str,
        origin_key: tuple | None,
        depth: int,
        boundary: bytes = b"",
        alone: bool = True,
        top: bool = False,
        lines: list[int] | bool | None = False,
        lenient: bool = False,
    ) -> None:
        """Walk a decoded body as readers do: a message of its own, or (with `boundary`) a multipart's body.

        `origin_key` names the container whose body this is (None: the message itself); `lines`:
        the file is a copy with bare CRs made line ends, read at the offsets of the original;
        `lenient`: read as only forgiving readers read it (no choice points, no format notes).
        """
        origin = 0
        if origin_key is not None:
            from .readings import DECODED_ORIGIN  # decoded containers are rare: their reader pays

            origin = DECODED_ORIGIN * self.origins.setdefault(origin_key, len(self.origins) + 1)
        reader = Reader(path, self.sink.tick, origin)
        saved = self.alone, self.unopened, self.lines, self.lenient
        self.alone, self.unopened, self.lines = self.alone or alone, self.unopened or not alone, lines
        self.lenient = self.lenient or lenient
        first_part = len(self.result.parts)
        try:
            self.sink.tick()
            if boundary:
                self.read_multipart(reader, depth, [], boundary, origin)
            else:
                self.read_entity(reader, depth, [], top=top, embedded=not top)
            reader.close()
            if reader.bare_cr and lines is False:
                self.lines = saved[2]  # the copy is walked as the file is: lenient stays as it is
                self.walk_lines(path, origin_key, depth, boundary, top)
        finally:
            reader.close()
            if self.lenient:
                self.result.lenient_parts.update(range(first_part, len(self.result.parts)))
            self.alone, self.unopened, self.lines, self.lenient = saved

    def walk_lines(
        self, path: str, origin_key: tuple | None, depth: int, boundary: bytes = b"", top: bool = False
    ) -> None:
        """Walk a file with bare CRs once more, each one read as a line end (Python's email and GMime do).

        The copy has the same length (a bare CR becomes an LF, CRLF stays), so every entity
        starts at the offset it has in the original: what both readings share is read once.
        """
        if path not in self.line_copies:
            self.line_copies[path] = self.copy_lines(path, origin_key)
        copy, bare_crs, cr_runs = self.line_copies[path]
        self.walk_file(copy, origin_key, depth, boundary, top=top, lines=bare_crs)
        if cr_runs:  # MIME-tools and ripmime end such a line once, at the LF: a third reading, at offsets of its own
            if path not in self.cr_run_copies:
                self.cr_run_copies[path] = self.copy_without_cr_runs(path)
            self.walk_file(self.cr_run_copies[path], ("cr-runs", path), depth, boundary, top=top)

    def copy_lines(self, path: str, origin_key: tuple | None) -> tuple[str, list[int] | None, bool]:
        """A copy with every bare CR an LF; the offsets of those CRs (None: more than listed); CR CR LF seen?"""
        from .lineends import bare_crs_as_line_ends
        from .readings import DECODED_ORIGIN

        origin = DECODED_ORIGIN * self.origins[origin_key] if origin_key is not None else 0
        copy = os.path.join(self.sink.unpack_dir, f"lines{len(self.line_copies):04d}")
        bare_crs, cr_runs = bare_crs_as_line_ends(path, copy, origin, self.sink.tick)
        return copy, bare_crs, cr_runs

    def copy_without_cr_runs(self, path: str) -> str:
        """A copy with every run of CRs before an LF made one CR (CR CR LF read as CR LF)."""
        from .lineends import cr_runs_as_one

        copy = os.path.join(self.sink.unpack_dir, f"crruns{len(self.cr_run_copies):04d}")
        cr_runs_as_one(path, copy, self.sink.tick)
        return copy

    def choose_way(self, point: tuple, rule: str, text: str, count: int) -> int:
        """Name an ambiguity read in `count` ways; which way this pass reads it (0 the first)."""
        if self.lenient:
            return 0
        self.note(rule, text)
        if self.reading is None:
            self.first_met[point] = text
            self.first_counts[point] = count
            return 0
        return self.reading.option(point, text, count)

    def choose(self, point: tuple, rule: str, text: str, part_name: str = "") -> bool:
        """Name an ambiguity with a choice point; True when this pass reads it the other way."""
        if self.lenient:
            return False
        self.note(rule, text, part_name)
        if self.reading is None:
            self.first_met[point] = text
            return False
        return self.reading.choose(point, text)

    def note(self, rule: str, text: str, part_name: str = "") -> None:
        """Name an ambiguity once (the trace header and --fix-mime 2 list them)."""
        if self.lenient:
            return
        if not any(a.text == text for a in self.result.ambiguities):
            from .readings import Ambiguity

            self.result.ambiguities.append(Ambiguity(rule, text, part_name))

    def match(self, rest: bytes, boundaries: list[bytes]) -> Hit | None:
        """Which boundary a line `--<rest>` delimits (innermost first), and whether it closes.

        RFC 2046 only asks a delimiter to start the line, and conforming parsers match the
        boundary as a line prefix; others want the exact line. A line that only matches as a
        prefix is a choice point.
        """
        rest = rest.rstrip(b" \t\r")
        for index in range(len(boundaries) - 1, -1, -1):
            boundary = boundaries[index]
            if rest == boundary:
                return index, False
            if rest == boundary + b"--":
                return index, True
        for index in range(len(boundaries) - 1, -1, -1):
            boundary = boundaries[index]
            if rest.startswith(boundary) and self.choose(
                ("prefix-boundary", boundary), "prefix-boundary", "boundary matched as a line prefix"
            ):
                return index, rest.startswith(b"--", len(boundary))
        return None

    def read_header_block(
        self, reader: Reader, boundaries: list[bytes], start: int, top: bool, embedded: bool
    ) -> tuple[bytes, int, Hit | None]:
        """Header lines up to the blank line: (raw block, length of an mbox From line on top, early delimiter hit)."""
        lines: list[bytes] = []
        size = 0
        skipped = 0
        last_name = b""
        # Readers end a header block at its first line that is no header (Python's email, GMime),
        # or run on to the empty line: both readings, for the message's own block too. The rarer
        # shapes (a folded first line, a blank continuation) are choices in parts only.
        settled = False
        while True:
            if lines:
                run = reader.read_folded(MAX_HEADER_BLOCK - size, blank_lines=settled or top)
                if run:
                    lines.append(run)
                    size += len(run)
                    continue
            line = reader.readline()
            if not line:
                return b"".join(lines), skipped, (-1, False) if boundaries else None
            if line in (b"\n", b"\r\n"):
                if last_name in SPLITTABLE_HEADERS and self.continuation_follows(reader, start):
                    lines.append(line)
                    continue
                return b"".join(lines), skipped, None
            if boundaries and line.startswith(b"--"):
                hit = self.match(line[2:].rstrip(b"\r\n"), boundaries)
                if hit is not None:
                    return b"".join(lines), skipped, hit
            if top and line.startswith((b"From ", b">From ")):
                pass  # an mbox separator (also under the Received line qmail-smtpd adds): kept, no choice
            elif embedded and not lines and line.startswith((b"From ", b">From ")):
                # The mbox separator left on top of an attached message: every client skips it.
                self.note("broken-header-line", "mbox From line on top of an attached message")
                skipped = len(line)
            elif line[0] not in (32, 9):
                if not settled and not is_header_line(line):
                    settled = True  # the first line that is no header is the choice point
                    if self.choose(
                        ("header-end", start),
                        "broken-header-line",
                        "header block without an empty line before the body",
                    ):
                        reader.unread(line)
                        return b"".join(lines), skipped, None
                last_name = line.split(b":", 1)[0].strip().lower()
            elif not lines and not settled and not top and is_header_line(line.lstrip(b" \t")):
                settled = True  # a folded first line: some clients take it as the header it looks like
                if self.choose(
                    ("header-end", start), "broken-continuation", "header block starting with a folded line"
                ):
                    line = line.lstrip(b" \t")
                    last_name = line.split(b":", 1)[0].strip().lower()
            elif not settled and not top and not line.strip():
                settled = True
                if self.choose(
                    ("header-end", start),
                    "broken-continuation",
                    "blank continuation line read as the end of the headers",
                ):
                    return b"".join(lines), skipped, None
            lines.append(line)
            size += len(line)
            if size > MAX_HEADER_BLOCK:
                self.result.add_finding("header-size", f"Disallowed MIME: header block over {MAX_HEADER_BLOCK} bytes")
                return b"".join(lines), skipped, None
            if len(lines) > MAX_HEADER_LINES:
                self.result.add_finding("header-size", f"Disallowed MIME: header block over {MAX_HEADER_LINES} lines")
                return b"".join(lines), skipped, None

    def continuation_follows(self, reader: Reader, start: int) -> bool:
        """After the empty line: does this reading join a folded parameter line below it to the header?"""
        line = reader.readline()
        reader.unread(line)
        if line[:1] not in (b" ", b"\t") or not looks_like_parameter(line):
            return False
        return self.choose(
            ("split-continuation", start), "broken-continuation", "header continuation after an empty line"
        )

    def pick(
        self, values: list[bytes], start: int, header: str, differ: Callable[[bytes, bytes], bool]
    ) -> bytes | None:
        """The value of a MIME header this reading takes: the first, or the last of a repeated one."""
        if not values:
            return None
        if len(values) > 1 and values[0].strip() != values[-1].strip():
            text = f"repeated {HEADER_SPELLING[header]} header"
            if not differ(values[0], values[-1]):
                self.note("repeated-mime-header", text)
            elif self.choose((header, start), "repeated-mime-header", text):
                return values[-1]
        return values[0]

    def read_entity(
        self,
        reader: Reader,
        depth: int,
        boundaries: list[bytes],
        top: bool = False,
        embedded: bool = False,
        default_type: str = "",
    ) -> Hit:
        """Read one entity (headers and body) up to a delimiter of an enclosing multipart, or EOF."""
        start = reader.offset()
        hit = self.read_entity_at(reader, start, depth, boundaries, top, embedded, default_type)
        if self.first_met or self.reading is not None:
            self.entity_ends[start] = max(self.entity_ends.get(start, 0), reader.offset())
        return hit

    def read_entity_at(
        self,
        reader: Reader,
        start: int,
        depth: int,
        boundaries: list[bytes],
        top: bool,
        embedded: bool,
        default_type: str = "",
    ) -> Hit:
        """read_entity for an entity starting at `start` (`default_type`: what a part without Content-Type is)."""
        raw_headers, skipped, early_end = self.read_header_block(reader, boundaries, start, top, embedded)
        headers = parse_headers(raw_headers[skipped:] if skipped else raw_headers)
        for name, value in headers:
            if len(value) > MAX_VALUE_TEXT and name in HEADER_SPELLING:
                # Read only so far (a name or boundary past it would be hidden from us): fail closed.
                self.result.add_finding(
                    "header-size", f"Disallowed MIME: {HEADER_SPELLING[name]} header over {MAX_VALUE_TEXT} bytes"
                )
        content_type = self.pick([v for k, v in headers if k == "content-type"], start, "content-type", _types_differ)
        declared, params = split_content_header(content_type) if content_type is not None else (default_type, [])
        encoding_value = self.pick(
            [v for k, v in headers if k == "content-transfer-encoding"],
            start,
            "content-transfer-encoding",
            _words_differ,
        )
        encoding = header_text(encoding_value).strip().lower() if encoding_value is not None else ""
        token, plain = transfer_token(encoding)
        decoding = sink_encoding(token)  # base64, quoted-printable, uuencode, binhex, yenc or identity
        self.pick([v for k, v in headers if k == "content-disposition"], start, "content-disposition", _never)
        body_offset = reader.offset()
        if top and self.passes == 1 and not reader.origin and not self.lines:
            self.result.top_headers = raw_headers
            self.result.top_parsed = None if skipped else headers
            self.result.body_offset = body_offset
        filenames = claimed_filenames(headers) if b"name" in raw_headers.lower() else ()
        names_note = filename_ambiguity(headers) if len(filenames) > 1 else ""
        if names_note:
            self.note("conflicting-filenames", names_note, filenames[0])
        key = (start, body_offset, declared, encoding, filenames)
        container = early_end is None and (
            declared.startswith("multipart/") or (declared == "message/rfc822" and encoding in IDENTITY_ENCODINGS)
        )
        # Every other message/* is a leaf decoded as written, then read as the message readers see in it
        # (not a delivery status, whose body is fields; not a later fragment, which starts mid-message).
        message = (
            early_end is None
            and not container
            and declared.startswith("message/")
            and declared != "message/delivery-status"
            and (declared != "message/partial" or all(v.strip() == "1" for n, v in params if n == "number"))
        )
        part = self.containers.get(key) if container else None
        reused = part is not None
        # A leaf an earlier reading decoded is not decoded again; in the copy with bare CRs made
        # line ends only text reads differently.
        if part is None and not container and (self.passes > 1 or self.lines is not False) and key in self.leaves:
            if early_end is not None:
                return early_end
            hit = self.skip_known_leaf(reader, key, boundaries, decoding == "identity")
            if hit is not None:
                if message:
                    self.open_message(key, reader.offset(), depth)
                return hit
        if part is None:
            reading = names_note or (self.reading.description if self.reading else "")
            alone = self.alone or depth >= ALONE_DEPTH or (decoding != "identity" and (self.unopened or not plain))
            part = self.sink.new_part(
                depth,
                declared,
                raw_headers,
                filenames=filenames,
                transfer_encoding=encoding,
                reading=reading,
                scan_alone=alone,
            )
            if part is None:
                return reader.scan_body(boundaries, None, self.match) if early_end is None else early_end
            self.sink.note_crypto(declared, params)
            if container:
                self.containers[key] = part
            elif early_end is not None:
                self.leaves.setdefault(key, set()).add(reader.body_end())
        if early_end is not None:
            return early_end
        if declared.startswith("multipart/"):
            boundary, other_way = self.pick_boundary(params, start, content_type)
            if boundary and depth < self.sink.max_depth:
                saved = self.alone
                self.alone = saved or other_way  # a boundary only some readers take: clamd may not
                try:
                    return self.read_body_parts(
                        reader, part, key, depth, boundaries, boundary.encode("utf-8", "surrogateescape"), decoding
                    )
                finally:
                    self.alone = saved
            if boundary:
                self.sink.too_deep()
        elif container:
            if depth < self.sink.max_depth:
                first_child = len(self.result.parts)
                saved = self.unopened
                self.unopened = saved or content_type is None  # a digest's default: clamd may not know it
                try:
                    hit = self.read_entity(reader, depth + 1, boundaries, embedded=True)
                finally:
                    self.unopened = saved
                if part is not None and self.passes == 1:
                    part.size = sum(p.size for p in self.result.parts[first_child:] if p.depth == depth + 1)
                return hit
            self.sink.too_deep()
        if reused:  # too deep to open, and read as a leaf by an earlier reading
            return reader.scan_body(boundaries, None, self.match)
        first_child = len(self.result.parts)
        hit = self.read_leaf(reader, part, boundaries, decoding, message)
        self.leaves.setdefault(key, set()).add(reader.body_end())
        if message:
            bodies = [part.decoded_path] if part.decoded_path else []
            if decoding in TEXT_DECODINGS:  # the message may be what a block in the text holds
                bodies += [
                    p.decoded_path for p in self.result.parts[first_child:] if p.decoded_path and not p.container
                ]
            self.decoded[(key, reader.offset())] = bodies
            self.open_message(key, reader.offset(), depth)
        return hit

    def open_message(self, key: tuple, end: int, depth: int) -> None:
        """Read the decoded body of a message/* leaf as the message readers see in it."""
        bodies = self.decoded.get((key, end))
        if not bodies:
            return
        if depth >= self.sink.max_depth:
            self.sink.too_deep()
            return
        encoded = sink_encoding(transfer_token(key[3])[0]) != "identity"
        for number, body in enumerate(bodies):
            self.walk_file(body, (key, end, number), depth + 1, alone=encoded)

    def read_body_parts(
        self,
        reader: Reader,
        part: Part,
        key: tuple,
        depth: int,
        boundaries: list[bytes],
        boundary: bytes,
        decoding: str,
    ) -> Hit:
        """A multipart's body; under base64 or quoted-printable read as written, then decoded (readers differ)."""
        default_type = "message/rfc822" if key[2] == "multipart/digest" else ""
        body_offset = reader.offset()
        hit = self.read_multipart(reader, depth, boundaries, boundary, key[0], default_type)
        if decoding not in ("base64", "quoted-printable"):
            return hit
        end = reader.offset()
        body = self.decoded.get((key, end))
        if body is None:
            reader.seek(body_offset)
            body = self.sink.work_file(part, f"-{len(self.decoded)}")
            sink = DecodingSink(self.sink.take_budget, body, decoding, watch_text=False)
            try:
                reader.scan_body(boundaries, sink, self.match)
            finally:
                sink.close()
            reader.seek(end)
            self.decoded[(key, end)] = [body]
        else:
            body = body[0]
        self.walk_file(body, (key, end), depth, boundary)
        return hit

    def skip_known_leaf(self, reader: Reader, key: tuple, boundaries: list[bytes], text: bool) -> Hit | None:
        """A leaf an earlier reading decoded: its hit when it ends where it ended then, else None (read it anew).

        In the copy with bare CRs made line ends, a `text` (undecoded) body holding one of them reads differently.
        """
        body_offset = reader.offset()
        hit = reader.scan_body(boundaries, None, self.match)
        ends = reader.body_end()
        end = ends[1]
        if ends in self.leaves[key] and not (text and self.lines is not False and self.bare_cr_in(body_offset, end)):
            return hit
        reader.seek(body_offset)
        return None

    def bare_cr_in(self, start: int, end: int) -> bool:
        """Whether the file the copy with CRs as line ends was made from had a bare CR between these offsets."""
        if not isinstance(self.lines, list):
            return True
        from bisect import bisect_left

        index = bisect_left(self.lines, start)
        return index < len(self.lines) and self.lines[index] < end

    def pick_boundary(self, params: list[tuple[str, str]], start: int, content_type: bytes | None) -> tuple[str, bool]:
        """The boundary this reading takes, and whether it is one only some readers take.

        Of a doubled parameter, the first or the last; of a parameter written with comments,
        stray quotes, blanks or an encoded word, each spelling some reader takes, in turn.
        """
        candidates = boundary_candidates(params)
        spellings = [b for b in boundary_spellings(content_type or b"") if b not in candidates]
        if not spellings:
            if len(candidates) < 2:
                return (candidates[0] if candidates else ""), False
            encodings = any(name.startswith("boundary*") for name, _ in params)
            text = "boundary parameter in two encodings" if encodings else "duplicate boundary parameter"
            if self.choose(("boundary", start), "duplicate-boundary", text):
                return candidates[-1], True
            return candidates[0], False
        ways = candidates + spellings
        if len(candidates) > 1:
            rule, text = "duplicate-boundary", "duplicate boundary parameter"
        else:
            rule, text = "ambiguous-boundary", "boundary parameter written with comments, stray quotes or blanks"
        if len(ways) == 1:
            self.note(rule, text)
            return ways[0], True
        way = self.choose_way(("boundary", start), rule, text, len(ways))
        return ways[way], way > 0 or not candidates

    def read_multipart(
        self, reader: Reader, depth: int, boundaries: list[bytes], boundary: bytes, start: int, default_type: str = ""
    ) -> Hit:
        """Preamble, the body parts, epilogue; returns the delimiter hit of an enclosing multipart."""
        if boundary in boundaries and self.choose(
            ("nested-boundary", start), "duplicate-boundary", "nested multipart reusing an enclosing boundary"
        ):
            return reader.scan_body(boundaries, None, self.match)  # the enclosing multipart takes the delimiters
        inner = [*boundaries, boundary]
        own = len(boundaries)
        hit = self.read_outside(reader, depth + 1, inner, "preamble", b"")
        while hit == (own, False) and not self.sink.stopped:
            hit = self.read_entity(reader, depth + 1, inner, default_type=default_type)
        if self.sink.stopped and hit == (own, False):
            hit = reader.scan_body(inner, None, self.match)
            while hit == (own, False):
                hit = reader.scan_body(inner, None, self.match)
        if hit == (own, True):
            return self.read_outside(reader, depth + 1, boundaries, "epilogue", boundary)
        return hit  # an enclosing delimiter (this multipart was not closed) or EOF

    def read_outside(self, reader: Reader, depth: int, boundaries: list[bytes], kind: str, boundary: bytes) -> Hit:
        """A preamble or epilogue: skipped when blank or one short line, else read as a text leaf, as ripmime does.

        ripmime decodes uuencode in a preamble, and after a closing delimiter keeps reading: header
        lines there start a part, and so does a later delimiter of the closed boundary. Such an
        epilogue is walked once more as the rest of that multipart's body.
        """
        start = reader.offset()
        probe = _Probe(b"--" + boundary if boundary else b"")
        hit = reader.scan_body(boundaries, probe, self.match)
        if probe.plain() or self.sink.stopped or depth >= self.sink.max_depth:
            return hit
        key = (start, start, kind, "", ())
        end = reader.offset()
        if reader.body_end() in self.leaves.get(key, ()):
            return hit  # an earlier reading read it
        part = self.sink.new_part(depth, "text/plain", b"", scan_alone=True)
        if part is None:
            return hit
        first_part = part.index
        reader.seek(start)
        hit = self.read_leaf(reader, part, boundaries, "identity")
        self.leaves.setdefault(key, set()).add(reader.body_end())
        if probe.delimiter and part.decoded_path:
            self.walk_file(part.decoded_path, (key, end), depth, boundary, lenient=True)
        self.result.lenient_parts.update(range(first_part, len(self.result.parts)))
        return hit

    def read_leaf(
        self, reader: Reader, part: Part, boundaries: list[bytes], decoding: str, message: bool = False
    ) -> Hit:
        """Decode a body to a work file, then look inside it (type, uuencode, archives, header lines ripmime reads).

        `message`: the body is walked as a message anyway (message/*).
        """
        first_child = len(self.result.parts)
        is_text = (
            decoding in TEXT_DECODINGS
            or part.declared_type in ("", "text/plain", "text/html", "text/enriched")
            or (part.declared_type.startswith("text/") and not part.filenames)
        )
        path = self.sink.work_file(part)
        # Every leaf is watched for text encodings (decoding.has_block_mark).
        sink = DecodingSink(self.sink.take_budget, path, decoding, watch_text=True)
        try:
            hit = reader.scan_body(boundaries, sink, self.match)
        finally:
            sink.close()
        part.size = sink.size
        part.decoded_path = path
        part.magic_type = magictype.detect(sink.head, self.settings, want_detail=not is_text or bool(part.filenames))
        look_inside(self.sink, part, sink)
        if part.scan_alone:  # what the text held came the same unusual way
            for child in self.result.parts[first_child:]:
                child.scan_alone = child.scan_alone or not child.container
        if not message and self.reads_as_message(part, sink):
            self.walk_file(path, ("as-message", path), part.depth + 1, lenient=True)
        return hit

    def reads_as_message(self, part: Part, decoder: DecodingSink) -> bool:
        """Whether ripmime unpacks this decoded body again as a message (header lines in its first 100 lines)."""
        if self.sink.stopped or part.depth + 1 >= self.sink.max_depth or self.lines is not False:
            # ripmime stops at a recursion limit of its own (no finding for forwarded text), and it
            # never ends lines at bare CRs: that copy's text is not read its way.
            return False
        head = decoder.head
        if decoder.size > len(head) and head.count(b"\n") < MESSAGE_TEST_LINES:
            with open(part.decoded_path or "", "rb") as body:
                head = body.read(MESSAGE_TEST_BYTES)
        return reads_as_message(head)


class _Probe:
    """What a skipped preamble or epilogue holds: more than blanks or one short line? a line starting `delimiter`?"""

    def __init__(self, delimiter: bytes) -> None:
        self.head = b""
        self.size = 0
        self.delimiter_line = delimiter
        self.delimiter = False

    def __call__(self, data: bytes) -> None:
        if self.size < PLAIN_OUTSIDE:
            self.head += data[:PLAIN_OUTSIDE]
        self.size += len(data)
        if self.delimiter_line and not self.delimiter:  # the walker hands bodies over in pieces cut at line ends
            self.delimiter = data.startswith(self.delimiter_line) or b"\n" + self.delimiter_line in data

    def plain(self) -> bool:
        text = self.head.strip()
        return not text or (self.size <= PLAIN_OUTSIDE and b"\n" not in text)


def _has_bare_cr(chunk: bytes, after_cr: bool) -> bool:
    """Whether a chunk holds a CR not followed by LF (`after_cr`: the chunk before ended with a CR)."""
    if after_cr and not chunk.startswith(b"\n"):
        return True
    return chunk.count(b"\r") - chunk.count(b"\r\n") - chunk.endswith(b"\r") > 0


def _types_differ(first: bytes, last: bytes) -> bool:
    """Whether two Content-Types give a different structure (type or boundary), not only other parameters."""
    first_type, first_params = split_content_header(first)
    last_type, last_params = split_content_header(last)
    return first_type != last_type or boundary_candidates(first_params) != boundary_candidates(last_params)


def _words_differ(first: bytes, last: bytes) -> bool:
    return header_text(first).strip().lower() != header_text(last).strip().lower()


def _never(first: bytes, last: bytes) -> bool:
    """Content-Disposition: what differs is only names, and every name is checked in one pass."""
    return False
