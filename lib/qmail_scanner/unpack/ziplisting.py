"""A small, strictly bounded zip reader: the central directory listing and member streams.

`import zipfile` costs about 10 ms (it pulls in pathlib, re, shutil, threading, bz2, lzma...)
and every message with a zip, .docx, .xlsx or .odt attachment would pay it. This reader does
what the scanner needs, the way zipfile does it (same end-record search, same offset shift
for self-extracting archives, same name decoding), and checks every length and offset read
from the file against the file size before using it: the input is hostile.
"""

from __future__ import annotations

import os
import struct
import zlib

from ..recordtype import record

EOCD_SIGNATURE = b"PK\x05\x06"
EOCD64_SIGNATURE = b"PK\x06\x06"
EOCD64_LOCATOR_SIGNATURE = b"PK\x06\x07"
CENTRAL_SIGNATURE = b"PK\x01\x02"
LOCAL_SIGNATURE = b"PK\x03\x04"

EOCD = struct.Struct("<4s4H2LH")
EOCD64 = struct.Struct("<4sQ2H2L4Q")
EOCD64_LOCATOR = struct.Struct("<4sLQL")
CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
LOCAL = struct.Struct("<4s2B4HL2L2H")
EXTRA_HEADER = struct.Struct("<HH")
QUAD = struct.Struct("<Q")

EOCD_SEARCH = 0xFFFF + EOCD.size  # the record plus the longest comment it can announce
ZIP64_EXTRA = 0x0001
MAX_EXTRACT_VERSION = 63  # what zipfile reads; newer archives are refused as zipfile refuses them

FLAG_ENCRYPTED = 0x1
FLAG_COMPRESSED_PATCH = 0x20
FLAG_STRONG_ENCRYPTION = 0x40
FLAG_UTF8_NAME = 0x800

STORED = 0
DEFLATED = 8
IMPLODED = 6
DEFLATE64 = 9
BZIP2 = 12
LZMA = 14
FLAG_DATA_DESCRIPTOR = 0x8
METHOD_NAMES = {1: "shrink", 6: "implode", 9: "deflate64", 93: "zstd", 95: "xz", 97: "wavpack", 98: "ppmd"}

INPUT_CHUNK = 1 << 16  # compressed bytes read from the file at a time
# inflate64 has no output bound per call: small inputs keep one call's output (Deflate64 expands at
# most about 30000 times) within a few tens of MB.
DEFLATE64_INPUT_CHUNK = 1 << 10


class ZipFormatError(Exception):
    """The file is not a zip this reader can list or the member cannot be read."""


@record(frozen=True)
class ZipEntry:
    """One central directory entry; header_offset already includes the self-extractor shift."""

    name: str
    raw_name: str  # before the cut at the first NUL: what the local header must repeat
    flags: int
    method: int
    crc: int
    compressed_size: int
    size: int
    header_offset: int
    end_offset: int  # where the next entry (or the central directory) starts: member data must end there

    @property
    def is_dir(self) -> bool:
        """A directory entry, as zipfile's ZipInfo.is_dir decides it."""
        return self.name.endswith("/")

    @property
    def encrypted(self) -> bool:
        """The traditional (or strong) encryption flag is set."""
        return bool(self.flags & FLAG_ENCRYPTED)


@record(frozen=True)
class ZipListing:
    """The entries read, how many the end record announces, and whether the listing stopped early."""

    entries: tuple
    declared_entries: int
    complete: bool


def _read_at(source: object, file_size: int, offset: int, length: int) -> bytes:
    """Exactly `length` bytes at `offset`, or ZipFormatError when they are not all inside the file."""
    if offset < 0 or length < 0 or offset + length > file_size:
        raise ZipFormatError(f"{length} bytes at offset {offset} lie outside the file ({file_size} bytes)")
    source.seek(offset)  # type: ignore[attr-defined]
    data = source.read(length)  # type: ignore[attr-defined]
    if len(data) != length:
        raise ZipFormatError("the file shrank while it was read")
    return data


def _decode_name(raw: bytes, flags: int) -> str:
    try:
        return raw.decode("utf-8") if flags & FLAG_UTF8_NAME else raw.decode("cp437")
    except UnicodeDecodeError as error:
        raise ZipFormatError("a member name flagged UTF-8 is not UTF-8") from error


def _end_record(source: object, file_size: int) -> tuple[int, int, int, int]:
    """(entries, central directory size, its offset as recorded, where the end records begin)."""
    if file_size < EOCD.size:
        raise ZipFormatError("too short for a zip")
    tail_start = max(file_size - EOCD_SEARCH, 0)
    tail = _read_at(source, file_size, tail_start, file_size - tail_start)
    # Like zipfile: an end record with no comment as the last 22 bytes, else the last signature.
    if tail[-EOCD.size : -EOCD.size + 4] == EOCD_SIGNATURE and tail[-2:] == b"\x00\x00":
        start = len(tail) - EOCD.size
    else:
        start = tail.rfind(EOCD_SIGNATURE)
        if start < 0 or start + EOCD.size > len(tail):
            raise ZipFormatError("no end of central directory record")
    _, _, _, _, entries, cd_size, cd_offset, _ = EOCD.unpack_from(tail, start)
    location = tail_start + start
    locator_at = location - EOCD64_LOCATOR.size
    if locator_at < 0:
        return entries, cd_size, cd_offset, location
    signature, disk, _, disks = EOCD64_LOCATOR.unpack(_read_at(source, file_size, locator_at, EOCD64_LOCATOR.size))
    if signature != EOCD64_LOCATOR_SIGNATURE:
        return entries, cd_size, cd_offset, location
    if disk != 0 or disks > 1:
        raise ZipFormatError("zip files spanning several disks are not supported")
    # As zipfile: the Zip64 record is assumed right before its locator (no extensible data).
    record_at = locator_at - EOCD64.size
    if record_at < 0:
        raise ZipFormatError("a Zip64 locator with no room for its record")
    fields = EOCD64.unpack(_read_at(source, file_size, record_at, EOCD64.size))
    if fields[0] != EOCD64_SIGNATURE:
        return entries, cd_size, cd_offset, location
    return fields[7], fields[8], fields[9], record_at


def _zip64_sizes(extra: bytes, size: int, compressed_size: int, header_offset: int) -> tuple[int, int, int]:
    """Apply the Zip64 extra field (0x0001) where a 32-bit field says 0xFFFFFFFF; check every extra's length."""
    position = 0
    while len(extra) - position >= EXTRA_HEADER.size:
        kind, length = EXTRA_HEADER.unpack_from(extra, position)
        body_start = position + EXTRA_HEADER.size
        if body_start + length > len(extra):
            raise ZipFormatError(f"corrupt extra field {kind:04x}")
        if kind == ZIP64_EXTRA:
            body = extra[body_start : body_start + length]
            used = 0
            values = []
            for value in (size, compressed_size, header_offset):
                if value == 0xFFFFFFFF:
                    if used + QUAD.size > len(body):
                        raise ZipFormatError("corrupt Zip64 extra field")
                    value = QUAD.unpack_from(body, used)[0]
                    used += QUAD.size
                values.append(value)
            size, compressed_size, header_offset = values
        position = body_start + length
    return size, compressed_size, header_offset


def read_listing(source: object, max_entries: int) -> ZipListing:
    """The central directory of an open binary file, at most max_entries entries of it."""
    file_size = os.fstat(source.fileno()).st_size  # type: ignore[attr-defined]
    declared, cd_size, cd_offset, end_records_at = _end_record(source, file_size)
    # The central directory ends where the end records begin; what it says its offset is
    # gives the shift of everything (data prepended by a self-extractor), as zipfile's concat.
    start = end_records_at - cd_size
    if start < 0:
        raise ZipFormatError("the central directory would start before the file")
    shift = start - cd_offset
    source.seek(start)  # type: ignore[attr-defined]
    entries = []
    position = 0
    while position < cd_size:
        if len(entries) >= max_entries:
            break
        if position + CENTRAL.size > cd_size:
            raise ZipFormatError("truncated central directory")
        header = source.read(CENTRAL.size)  # type: ignore[attr-defined]
        if len(header) != CENTRAL.size:
            raise ZipFormatError("truncated central directory")
        fields = CENTRAL.unpack(header)
        if fields[0] != CENTRAL_SIGNATURE:
            raise ZipFormatError("bad central directory entry signature")
        extract_version, flags, method, crc = fields[3], fields[5], fields[6], fields[9]
        compressed_size, size = fields[10], fields[11]
        name_length, extra_length, comment_length = fields[12], fields[13], fields[14]
        header_offset = fields[18]
        variable = name_length + extra_length + comment_length
        position += CENTRAL.size + variable
        if position > cd_size:
            raise ZipFormatError("a central directory entry runs past the directory")
        rest = source.read(variable)  # type: ignore[attr-defined]
        if len(rest) != variable:
            raise ZipFormatError("truncated central directory")
        if extract_version > MAX_EXTRACT_VERSION:
            raise ZipFormatError(f"zip version {extract_version / 10:.1f} is not supported")
        raw_name = _decode_name(rest[:name_length], flags)
        size, compressed_size, header_offset = _zip64_sizes(
            rest[name_length : name_length + extra_length], size, compressed_size, header_offset
        )
        entries.append((raw_name, flags, method, crc, compressed_size, size, header_offset + shift))
    complete = position >= cd_size
    # A member's data must end before the next local header (or the central directory):
    # members sharing or overlapping data are how quoted-overlap zip bombs multiply output.
    # Two entries sharing one local header leave the second no room at all.
    ends = [0] * len(entries)
    next_start = start
    for index in sorted(range(len(entries)), key=lambda index: entries[index][6], reverse=True):
        ends[index] = next_start
        next_start = entries[index][6]
    listed = []
    for (raw_name, flags, method, crc, compressed_size, size, offset), end in zip(entries, ends):
        cut = raw_name.find("\x00")  # zipfile cuts names at a NUL (a trick to hide an extension)
        name = raw_name if cut < 0 else raw_name[:cut]
        listed.append(ZipEntry(name, raw_name, flags, method, crc, compressed_size, size, offset, end))
    return ZipListing(tuple(listed), max(declared, len(listed)), complete)


def _data_offset(source: object, entry: ZipEntry) -> int:
    """Where the member's compressed data starts, after checking its local header and its room in the file."""
    file_size = os.fstat(source.fileno()).st_size  # type: ignore[attr-defined]
    if entry.flags & FLAG_COMPRESSED_PATCH:
        raise ZipFormatError("compressed patched data is not supported")
    if entry.flags & (FLAG_STRONG_ENCRYPTION | FLAG_ENCRYPTED):
        raise ZipFormatError("the member is encrypted")
    fields = LOCAL.unpack(_read_at(source, file_size, entry.header_offset, LOCAL.size))
    if fields[0] != LOCAL_SIGNATURE:
        raise ZipFormatError("bad local header signature")
    name_length, extra_length = fields[10], fields[11]
    name_at = entry.header_offset + LOCAL.size
    local_name = _decode_name(_read_at(source, file_size, name_at, name_length), fields[3])
    if local_name != entry.raw_name:
        raise ZipFormatError(f"member name {entry.raw_name!r} differs from its local header's {local_name!r}")
    data_at = name_at + name_length + extra_length
    if data_at + entry.compressed_size > min(entry.end_offset, file_size):
        raise ZipFormatError(f"the data of {entry.name!r} overlaps what follows it or runs past the file")
    return data_at


def open_member(source: object, entry: ZipEntry, deflate64: object = None) -> MemberStream:
    """A stream of the member's decompressed bytes, after checking its local header.

    deflate64: the optional inflate64 module's Inflater class, for Deflate64 members.
    """
    return MemberStream(source, entry, _data_offset(source, entry), deflate64)


def copy_as_single_zip(source: object, entry: ZipEntry, fd: int) -> None:
    """Write the member alone as a zip of its own (named "m") to fd, for an outside decoder.

    The compressed bytes are copied as they are, with the flags the method reads (implode's
    dictionary and tree bits, LZMA's end marker); the sizes and CRC come from the central
    directory, so the decoder checks exactly what our listing names. No name from the mail
    reaches the decoder's command line or its choice of member.
    """
    data_at = _data_offset(source, entry)
    if max(entry.compressed_size, entry.size) >= 0xFFFFFFFF:
        raise ZipFormatError(f"{entry.name!r} is too large to hand to another decoder")
    flags = entry.flags & ~(FLAG_DATA_DESCRIPTOR | FLAG_UTF8_NAME)
    sizes = (entry.method, 0, 0, entry.crc, entry.compressed_size, entry.size, 1)
    os.write(fd, LOCAL.pack(LOCAL_SIGNATURE, MAX_EXTRACT_VERSION, 0, flags, *sizes, 0) + b"m")
    left = entry.compressed_size
    position = data_at
    while left > 0:
        source.seek(position)  # type: ignore[attr-defined]
        chunk = source.read(min(left, INPUT_CHUNK))  # type: ignore[attr-defined]
        if not chunk:
            raise ZipFormatError("the file shrank while it was read")
        os.write(fd, chunk)
        left -= len(chunk)
        position += len(chunk)
    central_at = LOCAL.size + 1 + entry.compressed_size
    versions = (MAX_EXTRACT_VERSION, 3, MAX_EXTRACT_VERSION, 0)  # made by Unix, as 7-Zip and Info-ZIP write
    central = CENTRAL.pack(CENTRAL_SIGNATURE, *versions, flags, *sizes, 0, 0, 0, 0, 0, 0) + b"m"
    os.write(fd, central + EOCD.pack(EOCD_SIGNATURE, 0, 0, 1, 1, len(central), central_at, 0))


class MemberStream:
    """Decompressed bytes of one member: never reads past its compressed size, never returns more than asked."""

    def __init__(self, source: object, entry: ZipEntry, data_at: int, deflate64: object = None) -> None:
        self._source = source
        self._position = data_at
        self._input_left = entry.compressed_size
        self._output_left = entry.size  # as zipfile: output stops at the declared size
        self._expected_crc = entry.crc
        self._crc = 0
        self._method = entry.method
        self._eof = False
        self._carry = b""
        self._errors: tuple = (zlib.error,)
        if entry.method == STORED:
            self._decompressor = None
        elif entry.method == DEFLATED:
            self._decompressor = zlib.decompressobj(-15)
        elif entry.method == BZIP2:
            import bz2  # rare in mail; only such members pay for it

            self._decompressor = bz2.BZ2Decompressor()
            self._errors = (OSError, EOFError, ValueError)
        elif entry.method == LZMA:
            self._decompressor = self._lzma_decompressor()
        elif entry.method == DEFLATE64 and deflate64 is not None:
            self._decompressor = deflate64()  # type: ignore[operator]
            self._errors = (ValueError,)
        else:
            raise ZipFormatError(f"compression method {entry.method} is not supported")

    def _lzma_decompressor(self) -> object:
        """Zip's LZMA: a 4-byte header (version, properties size), the properties, then raw LZMA1."""
        import lzma

        header = self._read_input(4)
        if len(header) != 4:
            raise ZipFormatError("truncated LZMA header")
        properties_size = struct.unpack("<H", header[2:])[0]
        properties = self._read_input(properties_size)
        if len(properties) != properties_size:
            raise ZipFormatError("truncated LZMA properties")
        self._errors = (lzma.LZMAError, EOFError, ValueError)
        try:
            lzma_filter = lzma._decode_filter_properties(lzma.FILTER_LZMA1, properties)  # type: ignore[attr-defined]
            return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma_filter])
        except self._errors as error:
            raise ZipFormatError(f"bad LZMA properties: {error}") from error

    def _read_input(self, wanted: int) -> bytes:
        wanted = min(wanted, self._input_left)
        if wanted <= 0:
            return b""
        self._source.seek(self._position)  # type: ignore[attr-defined]
        data = self._source.read(wanted)  # type: ignore[attr-defined]
        if len(data) != wanted:
            raise ZipFormatError("the file shrank while it was read")
        self._position += wanted
        self._input_left -= wanted
        return data

    def _step(self, wanted: int) -> bytes:
        """Up to `wanted` more output bytes; sets _eof at the end of the member."""
        decompressor = self._decompressor
        if decompressor is None:
            data = self._read_input(wanted)
            self._eof = self._input_left <= 0
            return data
        try:
            if self._method == DEFLATED:
                pending = decompressor.unconsumed_tail
                data = decompressor.decompress(pending or self._read_input(INPUT_CHUNK), wanted)
                self._eof = decompressor.eof or (self._input_left <= 0 and not decompressor.unconsumed_tail)
                if self._eof:
                    data += decompressor.flush()
                return data
            if decompressor.eof:  # type: ignore[attr-defined]
                self._eof = True
                return b""
            if self._method == DEFLATE64:
                data = decompressor.inflate(self._read_input(DEFLATE64_INPUT_CHUNK))  # type: ignore[attr-defined]
                self._eof = decompressor.eof or self._input_left <= 0  # type: ignore[attr-defined]
                return data
            if decompressor.needs_input:  # type: ignore[attr-defined]
                if self._input_left <= 0:
                    self._eof = True
                    return b""
                chunk = self._read_input(INPUT_CHUNK)
            else:
                chunk = b""
            data = decompressor.decompress(chunk, wanted)  # type: ignore[attr-defined]
            self._eof = decompressor.eof or (self._input_left <= 0 and decompressor.needs_input)  # type: ignore[attr-defined]
            return data
        except self._errors as error:
            raise ZipFormatError(f"corrupt compressed data: {error}") from error

    def read(self, size: int) -> bytes:
        """Up to `size` decompressed bytes; fewer only at the end of the member."""
        pieces = []
        got = 0
        while got < size:
            if not self._carry:
                if self._eof:
                    break
                data = self._step(size - got)[: self._output_left] if self._output_left > 0 else b""
                self._output_left -= len(data)
                self._crc = zlib.crc32(data, self._crc)
                if self._output_left <= 0:
                    self._eof = True
                if self._eof and self._crc != self._expected_crc:
                    raise ZipFormatError("bad CRC-32")
                self._carry = data
            # A final flush of the decompressor may give a few bytes more than asked: kept for the next call.
            piece = self._carry[: size - got]
            self._carry = self._carry[len(piece) :]
            pieces.append(piece)
            got += len(piece)
        return b"".join(pieces)

    def __enter__(self) -> MemberStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._source = None
