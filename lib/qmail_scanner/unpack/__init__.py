"""The unpacker: everything a mail reader would extract from a message, decoded to work files.

Modules, each with one job, above one sink:
  walker     the MIME grammar, read every way readers differ (readings)
  headers    header blocks, parameters, encoded words
  decoding   transfer encodings of bodies
  content    what is inside a decoded body: encodings in text, archives
  archives   archive formats (ziplisting: the zip reader; libarchive: the system library; tnef: winmail.dat)
  textcodings  uuencode, BinHex and yEnc blocks
  lineends   copies of a message with its line ends read as other readers read them
  magictype  the real type of content
  reformime  maildrop's reformime as the MIME walk instead of the walker
  sink       the message's limits, work files and findings, which all of the above write to
"""

from __future__ import annotations

from .sink import PartSink, Unpacked

TYPE_CHECKING = False  # importing typing costs every message milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..settings import Settings

__all__ = ["Unpacked", "unpack"]

NON_ATTACHMENT_TYPES = ("", "text/plain", "text/html", "text/enriched", "message/rfc822", "message/delivery-status")


def _finish(result: Unpacked) -> Unpacked:
    result.has_attachments = any(
        part.filenames
        or part.container
        or not (part.declared_type in NON_ATTACHMENT_TYPES or part.declared_type.startswith("multipart/"))
        for part in result.parts
    )
    if result.ambiguities:
        # clamd reads an ambiguous message one way, maybe not the way that shows the payload:
        # every decoded part of every reading is handed to it on its own.
        for part in result.parts:
            part.scan_alone = part.scan_alone or part.decoded_path is not None
    return result


def unpack(message_path: str, unpack_dir: str, settings: Settings, remaining: Callable[[], float]) -> Unpacked:
    """Walk the spooled message once; decoded parts land in unpack_dir."""
    if settings.mime_unpacker == "reformime" and settings.reformime_binary:
        from .reformime import unpack_with_reformime

        return _finish(unpack_with_reformime(message_path, PartSink(unpack_dir, settings, remaining, "reformime")))
    from .walker import Walker

    return _finish(Walker(message_path, PartSink(unpack_dir, settings, remaining, "internal")).run())
