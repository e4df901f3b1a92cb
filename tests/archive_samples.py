"""Small archives the tests and the differential generator put into messages (standard library only)."""

from __future__ import annotations

import io
import struct
import zipfile


def zip_of(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of (name, data) members, every one compressed with `method`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def tnef_with_attachment(name: str, data: bytes) -> bytes:
    """A minimal winmail.dat: TNEF version, code page, then one attachment's title and data."""

    def attribute(level: int, attribute_id: int, value: bytes) -> bytes:
        checksum = sum(value) & 0xFFFF
        return struct.pack("<BII", level, attribute_id, len(value)) + value + struct.pack("<H", checksum)

    out = struct.pack("<IH", 0x223E9F78, 0x0001)
    out += attribute(1, 0x00089006, struct.pack("<I", 0x00010000))  # attTnefVersion
    out += attribute(1, 0x00069007, b"1252\x00\x00\x00\x00")  # attOemCodepage
    out += attribute(2, 0x00069002, b"\x01\x00" + b"\x00" * 12)  # attAttachRendData: starts the attachment
    out += attribute(2, 0x00018010, name.encode() + b"\x00")  # attAttachTitle
    out += attribute(2, 0x0006800F, data)  # attAttachData
    return out
