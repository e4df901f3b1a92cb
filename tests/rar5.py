"""A RAR 5.0 archive of stored (uncompressed) files, written from the public format description.

No free program creates RAR archives, so the tests that read them build their own, following
rarlab.com's "RAR 5.0 archive format" technote: the signature, a main archive header, one file
header (with its data area) per file, the end of archive header. Every header is the CRC32 of
what follows it, a vint header size, then its type, flags and fields (vints: 7 bits a byte,
least significant first, the high bit set on all but the last byte).
"""

from __future__ import annotations

import zlib

SIGNATURE = b"Rar!\x1a\x07\x01\x00"

HEAD_MAIN = 1
HEAD_FILE = 2
HEAD_END = 5

HFL_EXTRA = 0x0001  # an extra area follows the type-specific fields
HFL_DATA = 0x0002  # a data area follows the header

FHFL_DIRECTORY = 0x0001
FHFL_UTIME = 0x0002  # a Unix mtime (uint32) follows the attributes
FHFL_CRC32 = 0x0004  # the data's CRC32 (uint32) follows

HOST_WINDOWS = 0
HOST_UNIX = 1
METHOD_STORE = 0  # compression info: bits 0-5 version (0), bit 6 solid, bits 7-9 method, bits 10-13 dictionary


def vint(value: int) -> bytes:
    """RAR's variable-length integer."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def header(kind: int, flags: int, fields: bytes, data_size: int = -1) -> bytes:
    """One header: CRC32, size, type, flags, [data size] and the type-specific fields."""
    if data_size >= 0:
        flags |= HFL_DATA
    body = vint(kind) + vint(flags) + (vint(data_size) if data_size >= 0 else b"") + fields
    sized = vint(len(body)) + body
    return zlib.crc32(sized).to_bytes(4, "little") + sized


def file_header(name: str, data: bytes, mtime: int = 1_700_000_000, attributes: int = 0o100644) -> bytes:
    """A file header for `data` stored as it is, followed by the data."""
    encoded = name.encode("utf-8")
    fields = (
        vint(FHFL_UTIME | FHFL_CRC32)
        + vint(len(data))
        + vint(attributes)
        + mtime.to_bytes(4, "little")
        + zlib.crc32(data).to_bytes(4, "little")
        + vint(METHOD_STORE << 7)
        + vint(HOST_UNIX)
        + vint(len(encoded))
        + encoded
    )
    return header(HEAD_FILE, 0, fields, len(data)) + data


def rar5_stored(members: list[tuple[str, bytes]]) -> bytes:
    """A whole RAR5 archive holding `members` (name, bytes), stored."""
    main = header(HEAD_MAIN, 0, vint(0))  # archive flags: not a volume, not solid
    files = b"".join(file_header(name, data) for name, data in members)
    end = header(HEAD_END, 0, vint(0))  # end of archive flags: the last volume
    return SIGNATURE + main + files + end
