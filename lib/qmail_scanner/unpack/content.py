"""What is inside a decoded part: encodings embedded in text (uuencode, inline PGP) and archives.

The MIME walk and reformime hand each decoded body here; what is found becomes new parts in
the same sink, one level deeper.
"""

from __future__ import annotations

import os

from . import magictype
from .decoding import NEW_FILE_FLAGS, bounded_lines, decode_uu_line, uu_begin_name
from .headers import header_text

TYPE_CHECKING = False  # importing typing costs every message milliseconds
if TYPE_CHECKING:
    from ..records import Part
    from .sink import PartSink


def may_be_archive(part: Part) -> bool:
    """Cheap test before importing the archive code: content, declared type or name says archive."""
    if part.magic_type in magictype.ARCHIVE_TYPES or part.declared_type in (
        "application/ms-tnef",
        "application/vnd.ms-tnef",
    ):
        return True
    return any(
        name.lower().endswith((".zip", ".rar", ".7z", ".tnef", "winmail.dat", "win.dat")) for name in part.filenames
    )


def look_into_file(sink: PartSink, part: Part, head: bytes) -> None:
    """Archives, TNEF: list members (and extract them when configured)."""
    if may_be_archive(part):
        from .archives import inspect_archive

        sink.tick()
        inspect_archive(sink, part, part.filenames[0] if part.filenames else f"part{part.index}", part.depth + 1)


def look_into_text(sink: PartSink, part: Part) -> None:
    """Uuencoded blocks become parts of their own; inline PGP is noted."""
    with open(part.decoded_path or "", "rb") as text:
        pending: Part | None = None
        out_fd = -1
        written = 0
        for line in bounded_lines(text):
            if pending is None:
                if line.startswith(b"-----BEGIN PGP SIGNED MESSAGE"):
                    sink.result.add_crypto("PGP(signed)")
                elif line.startswith(b"-----BEGIN PGP MESSAGE"):
                    sink.result.add_crypto("PGP(encrypted)")
                uu_name = uu_begin_name(line)
                if uu_name is not None:
                    name = header_text(uu_name.strip())
                    pending = sink.new_part(
                        part.depth + 1,
                        "application/octet-stream",
                        b"",
                        filenames=(name,),
                        transfer_encoding="x-uuencode",
                    )
                    if pending is None:
                        return
                    pending.decoded_path = sink.work_file(pending)
                    out_fd = os.open(pending.decoded_path, NEW_FILE_FLAGS, 0o600)
                    written = 0
                    head = b""
                continue
            stripped = line.rstrip(b"\r\n")
            if stripped in (b"end", b"`", b" ") or not stripped:
                if stripped or written:  # a zero-length line or "end" closes the block
                    os.close(out_fd)
                    pending.size = written
                    pending.magic_type = magictype.detect(head, sink.settings)
                    look_into_file(sink, pending, head)
                    pending = None
                continue
            data = decode_uu_line(stripped)
            if data is None:
                continue
            data = data[: sink.take_budget(len(data))]
            if len(head) < magictype.HEAD_BYTES:
                head += data[: magictype.HEAD_BYTES - len(head)]
            os.write(out_fd, data)
            written += len(data)
        if pending is not None:
            os.close(out_fd)
            pending.size = written
            pending.magic_type = magictype.detect(head, sink.settings)
            look_into_file(sink, pending, head)
