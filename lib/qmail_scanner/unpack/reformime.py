"""--mime-unpacker reformime: the part list from maildrop's reformime instead of the internal sink.

reformime -i lists the sections with their byte offsets; each leaf is extracted with
`reformime -e -s <section>` (Debian 12's reformime crashes on -x). Header blocks are read
from the spooled file at the listed offsets, so the checks see the same raw bytes as with the
internal unpacker, and everything after extraction (types, archives, uuencode) is shared.
"""

from __future__ import annotations

import os
import subprocess

from ..outcomes import TEMP_TIMEOUT, TemporaryFailure
from . import magictype
from .content import BINHEX_TYPES, look_into_file, look_into_text
from .decoding import MARK_TAIL, NEW_FILE_FLAGS, has_block_mark
from .headers import claimed_filenames, first_header, header_text, parse_headers, split_content_header
from .walker import MAX_HEADER_BLOCK

TYPE_CHECKING = False  # importing typing costs every message milliseconds
if TYPE_CHECKING:
    from ..settings import Settings
    from .sink import PartSink, Unpacked


def list_sections(settings: Settings, message_path: str, timeout: float) -> list[dict[str, str]]:
    """`reformime -i` as a list of {field: value} per section."""
    with open(message_path, "rb") as message:
        done = _run([settings.reformime_binary, "-i"], message, subprocess.PIPE, timeout)
    sections: list[dict[str, str]] = []
    for block in done.stdout.decode("latin-1").split("\n\n"):
        fields = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        if "section" in fields:
            sections.append(fields)
    return sections


def _run(argv: list[str], stdin: object, stdout: object, timeout: float) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise TemporaryFailure("reformime took too long, try again later", TEMP_TIMEOUT) from None
    except OSError as error:
        raise TemporaryFailure(f"cannot run reformime: {error.strerror}") from None
    if done.returncode != 0:
        raise TemporaryFailure(f"reformime failed (exit {done.returncode}), try again later")
    return done


def unpack_with_reformime(message_path: str, sink: PartSink) -> Unpacked:
    """The same Unpacked as mime.unpack gives, with reformime doing the MIME walk."""
    settings = sink.settings
    timeout = max(1.0, min(sink.remaining(), settings.max_unpack_seconds))
    sections = list_sections(settings, message_path, timeout)
    names = [s["section"] for s in sections]
    with open(message_path, "rb") as message:
        sink.result.message_size = os.fstat(message.fileno()).st_size
        for fields in sections:
            sink.tick()
            section = fields["section"]
            start = int(fields.get("starting-pos", 0))
            body_start = int(fields.get("starting-pos-body", start))
            message.seek(start)
            raw_headers = message.read(min(body_start - start, MAX_HEADER_BLOCK))
            for ending in (b"\r\n", b"\n"):
                if raw_headers.endswith(ending * 2) or raw_headers == ending:
                    raw_headers = raw_headers[: -len(ending)]
                    break
            if section == "1":
                sink.result.top_headers = raw_headers
                sink.result.top_parsed = None
                sink.result.body_offset = body_start
            headers = parse_headers(raw_headers)
            content_type = first_header(headers, "content-type")
            declared, params = split_content_header(content_type) if content_type is not None else ("", [])
            encoding_value = first_header(headers, "content-transfer-encoding")
            encoding = header_text(encoding_value).strip().lower() if encoding_value is not None else ""
            part = sink.new_part(
                section.count("."),
                declared,
                raw_headers,
                filenames=claimed_filenames(headers),
                transfer_encoding=encoding,
            )
            if part is None:
                break
            sink.note_crypto(declared, params)
            if any(other.startswith(section + ".") for other in names):
                continue  # a container: its children follow
            part.decoded_path = sink.work_file(part)
            fd = os.open(part.decoded_path, NEW_FILE_FLAGS, 0o600)
            try:
                message.seek(0)
                _run([settings.reformime_binary, "-e", "-s", section], message, fd, timeout)
            finally:
                os.close(fd)
            part.size = os.path.getsize(part.decoded_path)
            if sink.take_budget(part.size) < part.size:
                os.truncate(part.decoded_path, 0)
            with open(part.decoded_path, "rb") as decoded:
                head = decoded.read(magictype.HEAD_BYTES)
                is_text = (
                    encoding in ("x-uuencode", "uuencode", "x-uue")
                    or declared in ("", "text/plain", "text/html", "text/enriched")
                    or (declared.startswith("text/") and not part.filenames)
                )
                part.magic_type = magictype.detect(head, settings, want_detail=not is_text or bool(part.filenames))
                # Every part is looked at for files written as text, as the walker's DecodingSink does.
                marked = declared in BINHEX_TYPES
                decoded.seek(0)
                tail = b""
                at_start = True
                while not marked and (chunk := decoded.read(1 << 20)):
                    marked = has_block_mark(tail + chunk, at_start)
                    tail = chunk[-MARK_TAIL:]
                    at_start = False
            if marked:
                look_into_text(sink, part)
            look_into_file(sink, part, head)
    return sink.result
