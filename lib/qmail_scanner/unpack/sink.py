"""The part sink: where every reader of a message (MIME walk, reformime, archives, text encodings) puts what it finds.

It owns the message's limits (time, decoded bytes, part count, depth), names the work files
and collects the parts, findings and crypto tags into one `Unpacked` record. The readers
sit above it and never call into each other through it.
"""

from __future__ import annotations

import os
import time

from ..outcomes import TEMP_TIMEOUT, TemporaryFailure
from ..records import Finding, Part
from ..recordtype import field, record
from .headers import decode_words, header_text, parse_headers

TYPE_CHECKING = False  # importing typing costs every message milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..settings import Settings
    from .readings import Ambiguity


@record
class Unpacked:
    """What the unpacker found in one message."""

    parts: list[Part] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    top_headers: bytes = b""  # header block of the message as written, without the blank line
    body_offset: int = 0  # offset of the body in the spooled file (after the blank line)
    has_attachments: bool = False
    crypto: list[str] = field(default_factory=list)  # "PGP(signed)", "SMIME(encrypted)", "ZIP(encrypted)"
    ambiguities: list[Ambiguity] = field(default_factory=list)  # where mail clients may read it differently
    lenient_parts: set[int] = field(default_factory=set)  # parts only forgiving readers make: no format rules
    readings: int = 1  # passes the unpacker made
    first_reading_parts: int = 0  # parts[:this] are the first reading's; later readings add the rest
    message_size: int = 0
    unpacker: str = "internal"
    normalize: bool = True
    top_parsed: list[tuple[str, bytes]] | None = None  # set by the walker, which parsed them already

    def headers(self) -> list[tuple[str, bytes]]:
        """The top-level headers as (lower-case name, unfolded raw value)."""
        if self.top_parsed is None:
            self.top_parsed = parse_headers(self.top_headers)
        return self.top_parsed

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


class PartSink:
    """One message's budget, work files and findings, shared by every reader that unpacks it."""

    def __init__(self, unpack_dir: str, settings: Settings, remaining: Callable[[], float], unpacker: str) -> None:
        self.settings = settings
        self.unpack_dir = unpack_dir
        self.remaining = remaining
        self.started = time.monotonic()
        self.result = Unpacked(normalize=settings.normalize, unpacker=unpacker)
        self.budget = settings.max_decoded_bytes
        self.max_depth = max(1, min(settings.max_depth, 200))
        self.stopped = False  # the part limit was reached: readers stop adding

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

    def too_deep(self) -> None:
        self.result.add_finding(
            "mime-depth", f"Disallowed MIME: nested deeper than {self.max_depth} levels (MIME bomb)"
        )

    def note_crypto(self, declared: str, params: list[tuple[str, str]]) -> None:
        """Signed or encrypted MIME structures, named by their protocol."""
        if declared == "multipart/signed":
            protocol = next((v.lower() for n, v in params if n == "protocol"), "")
            self.result.add_crypto("PGP(signed)" if "pgp" in protocol else "SMIME(signed)")
        elif declared == "multipart/encrypted":
            protocol = next((v.lower() for n, v in params if n == "protocol"), "")
            self.result.add_crypto("PGP(encrypted)" if "pgp" in protocol else "SMIME(encrypted)")
        elif declared in ("application/pkcs7-mime", "application/x-pkcs7-mime"):
            smime_type = next((v.lower() for n, v in params if n == "smime-type"), "")
            self.result.add_crypto("SMIME(signed)" if smime_type == "signed-data" else "SMIME(encrypted)")
