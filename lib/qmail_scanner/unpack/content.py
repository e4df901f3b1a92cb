"""What is inside a decoded part: files written as text (uuencode, BinHex, yEnc), inline PGP, and archives.

The MIME walk and reformime hand each decoded body here; what is found becomes new parts in
the same sink, one level deeper.
"""

from __future__ import annotations

import os

from . import magictype
from .decoding import NEW_FILE_FLAGS, bounded_lines
from .headers import header_text

TYPE_CHECKING = False  # importing typing costs every message milliseconds
if TYPE_CHECKING:
    from ..records import Part
    from .decoding import DecodingSink
    from .sink import PartSink
    from .textcodings import TextBlock

TEXT_ENCODINGS = {"uuencode": "x-uuencode", "binhex": "x-binhex", "yenc": "x-yencode"}


ARCHIVE_SUFFIXES = (".zip", ".rar", ".7z", ".tnef")
TNEF_NAMES = ("winmail.dat", "win.dat")
TNEF_TYPES = ("application/ms-tnef", "application/vnd.ms-tnef")


def may_be_archive(part: Part) -> bool:
    """Cheap test before importing the archive code: content, declared type or name says archive."""
    if part.magic_type in magictype.ARCHIVE_TYPES or part.declared_type in TNEF_TYPES:
        return True
    return any(name.lower().endswith(ARCHIVE_SUFFIXES + TNEF_NAMES) for name in part.filenames)


def look_into_file(sink: PartSink, part: Part, head: bytes) -> None:
    """Archives and TNEF, found by signature, by name, or as 7-Zip finds them (a zip behind bytes, an ISO image)."""
    if may_be_archive(part) or magictype.archive_kind(head, part.decoded_path, part.size):
        from .archives import inspect_archive

        sink.tick()
        inspect_archive(sink, part, part.filenames[0] if part.filenames else f"part{part.index}", part.depth + 1)


def look_inside(sink: PartSink, part: Part, decoder: DecodingSink) -> None:
    """After a leaf is decoded: the name its transfer encoding's block gave, files written as text in it, archives."""
    if decoder.block_name and decoder.block_name not in part.filenames:
        part.filenames = (*part.filenames, decoder.block_name)
    if decoder.text_marks or part.declared_type in BINHEX_TYPES:
        look_into_text(sink, part)
    look_into_file(sink, part, decoder.head)
    if decoder.alternative_path:
        _other_reading(sink, part, decoder.alternative_path)


def _other_reading(sink: PartSink, part: Part, path: str) -> None:
    """The body as the readers that decode it another way get it: a part of its own, handed to clamd too."""
    other = sink.new_part(
        part.depth,
        part.declared_type,
        part.raw_headers,
        filenames=part.filenames,
        transfer_encoding=part.transfer_encoding,
        reading="quoted-printable soft line break inside an escape",
        scan_alone=True,
    )
    if other is None:
        os.unlink(path)
        return
    other.decoded_path = sink.work_file(other)
    os.rename(path, other.decoded_path)
    other.size = os.path.getsize(other.decoded_path)
    with open(other.decoded_path, "rb") as decoded:
        head = decoded.read(magictype.HEAD_BYTES)
    other.magic_type = magictype.detect(head, sink.settings)
    look_into_file(sink, other, head)


def look_into_text(sink: PartSink, part: Part) -> None:
    """Every uuencode, BinHex and yEnc block becomes a part of its own; inline PGP is noted."""
    from .decoding import sink_encoding
    from .textcodings import block_start

    binhex_part = sink_encoding(part.transfer_encoding) == "binhex"
    pieces: dict[str, BlockWriter] = {}  # multi-part yEnc files by name: later pieces join the first
    with open(part.decoded_path or "", "rb") as text:
        block: TextBlock | None = None
        writer: BlockWriter | None = None
        for line in bounded_lines(text):
            if block is not None and writer is not None:
                if block.feed(line):
                    continue
                writer.finish(block)
                consumed, block, writer = block.consumed, None, None
                if consumed:
                    continue
            if line.startswith(b"-----BEGIN PGP SIGNED MESSAGE"):
                sink.result.add_crypto("PGP(signed)")
            elif line.startswith(b"-----BEGIN PGP MESSAGE"):
                sink.result.add_crypto("PGP(encrypted)")
            block = block_start(line, part.declared_type, binhex_part)
            if block is None:
                continue
            sink.tick()
            writer = _writer_for(sink, part, block, pieces)
            if writer is None:
                break
            if not block.start(writer.write):
                block.finish()
                writer.finish(block)
                block = writer = None
        if block is not None and writer is not None:
            block.finish()
            writer.finish(block)
    for writer in pieces.values():
        writer.inspect()


def _writer_for(sink: PartSink, part: Part, block: TextBlock, pieces: dict[str, BlockWriter]) -> BlockWriter | None:
    name = header_text(block.name.strip()) if block.name else ""
    multipart = block.kind == "yenc" and bool(name) and getattr(block, "part", 0) > 0
    if multipart and name in pieces:
        writer = pieces[name]
        writer.take(block)
        return writer
    writer = BlockWriter(sink, part, block.kind, name, multipart)
    if writer.part is None:
        return None
    writer.take(block)
    if multipart:
        pieces[name] = writer
    return writer


class BlockWriter:
    """Where one block's decoded bytes go: a new part (and one more for a BinHex resource fork)."""

    def __init__(self, sink: PartSink, parent: Part, kind: str, name: str, multipart: bool = False) -> None:
        self.sink = sink
        self.parent = parent
        self.kind = kind
        self.multipart = multipart  # a piece of a multi-part yEnc file: looked into once all pieces are in
        self.rsrc: BlockWriter | None = None
        self.block: TextBlock | None = None
        self.position = 0
        self.size = 0
        self.head = b""
        self.fd = -1
        self.part = sink.new_part(
            parent.depth + 1,
            "application/octet-stream",
            b"",
            filenames=(name,) if name else (),
            transfer_encoding=TEXT_ENCODINGS[kind],
            # clamd finds only `begin NNN name` uuencode in the raw message, and not in every
            # place: every block is handed to it decoded.
            scan_alone=True,
        )
        if self.part is not None:
            self.part.decoded_path = sink.work_file(self.part)
            self.fd = os.open(self.part.decoded_path, NEW_FILE_FLAGS, 0o600)

    def take(self, block: TextBlock) -> None:
        """Take the bytes of `block` from now on (a later piece of a multi-part yEnc file goes where it says)."""
        if self.fd < 0 and self.part is not None and self.part.decoded_path:
            self.fd = os.open(self.part.decoded_path, os.O_WRONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
        self.block = block
        if block.kind == "binhex":
            block.out_rsrc = self.write_rsrc  # type: ignore[attr-defined]

    def write(self, data: bytes) -> None:
        if self.fd < 0:
            return
        if self.multipart and self.block is not None:
            # Never past the end written so far: a piece cannot make a sparse file of any size.
            self.position = min(getattr(self.block, "offset", 0), self.size) if self.position == -1 else self.position
        data = data[: self.sink.take_budget(len(data))]
        if not data:
            return
        if self.position < magictype.HEAD_BYTES:
            head = bytearray(self.head.ljust(self.position, b"\0"))
            head[self.position : self.position + len(data)] = data
            self.head = bytes(head[: magictype.HEAD_BYTES])
        written = 0
        while written < len(data):
            written += os.pwrite(self.fd, data[written:], self.position + written)
        self.position += len(data)
        self.size = max(self.size, self.position)

    def write_rsrc(self, data: bytes) -> None:
        """A BinHex resource fork: a part of its own, named after the file."""
        if self.rsrc is None:
            name = header_text(self.block.name) if self.block and self.block.name else ""
            self.rsrc = BlockWriter(self.sink, self.parent, self.kind, f"{name}/rsrc" if name else "rsrc")
        self.rsrc.write(data)

    def finish(self, block: TextBlock) -> None:
        """The block ended: the part gets its size, name and real type, and is looked into for archives."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.multipart:
            self.position = -1  # the next piece says where it goes
        if self.part is None:
            return
        if block.name and not self.part.filenames:
            self.part.filenames = (header_text(block.name.strip()),)  # BinHex: known once its header is read
        if self.rsrc is not None:
            self.rsrc.finish(block)
        if not self.multipart:
            self.inspect()

    def inspect(self) -> None:
        """Size, real type, archives."""
        if self.part is None:
            return
        self.part.size = self.size
        self.part.magic_type = magictype.detect(self.head, self.sink.settings)
        look_into_file(self.sink, self.part, self.head)


BINHEX_TYPES = ("application/mac-binhex40", "application/mac-binhex", "application/binhex", "application/x-binhex")
