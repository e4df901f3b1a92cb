"""The plain records that travel through the per-message pipeline."""

from __future__ import annotations

from .recordtype import field, record


@record(frozen=True)
class Envelope:
    """What the caller wrote on fd 1: `F<sender>\\0`, `T<rcpt>\\0`..., `\\0`."""

    sender: str  # "" for the null sender
    recipients: tuple[str, ...]
    raw: bytes  # the exact bytes, handed on unchanged


@record
class Part:
    """One MIME part or archive member, as the unpacker saw it."""

    index: int  # position in walk order, 0 = the whole message
    depth: int  # MIME nesting depth (0 = top level)
    declared_type: str  # Content-Type as written, lower-cased, without parameters
    filenames: tuple[str, ...] = ()  # every name the part claims (name=, filename=, uuencode)
    raw_headers: bytes = b""  # the part's header block exactly as written
    size: int = 0  # decoded size in bytes
    magic_type: str = ""  # real type by content, e.g. "application/x-dosexec"
    decoded_path: str | None = None  # file in the work dir holding the decoded body
    container: str = ""  # "" for MIME parts; archive path for members, e.g. "a.zip/b.zip"
    archive: str = ""  # members: the format of the archive they came from ("zip", "tar", "tnef"...)
    encrypted: bool = False  # password-protected archive member
    transfer_encoding: str = ""
    reading: str = ""  # the ambiguity under which only one reading of the message shows this part or its names
    # The raw message does not show these bytes to a virus scanner that reads MIME and archives by
    # the book (a container under a transfer encoding, uuencode in an odd place, an LZMA zip
    # member, past clamd's recursion limit...): the unpacker hands them over decoded.
    scan_alone: bool = False

    @property
    def display_name(self) -> str:
        """The name used in logs: the first claimed filename, or the declared type."""
        return self.filenames[0] if self.filenames else ""


@record(frozen=True)
class Finding:
    """A reason to act on a message, found by a check or a scanner."""

    kind: str  # "virus", "policy", "spam"
    rule: str  # short machine name, e.g. "double-extension", "clamd", ".exe"
    reason: str  # human text for logs, alerts and SMTP replies
    part_name: str = ""  # the attachment it concerns, if any
    monitor_only: bool = False  # --dlp-monitor: log and head, do not block
    part: int = -1  # Part.index of the part it was found in, when known (the message record's tree names it)


@record(frozen=True)
class ScanResult:
    """What one scanner said about one message."""

    scanner: str  # "clamd", "spamd", ...
    version: str = ""  # for the trace header, e.g. "1.4.3/27000"
    findings: tuple[Finding, ...] = ()
    failed: bool = False  # the scanner could not give an answer
    failure_reason: str = ""
    unchecked: bool = False  # failed, but the site chose fail=pass
    spam_score: float | None = None
    spam_required: float | None = None
    extra_headers: tuple[tuple[str, str], ...] = ()  # headers to add on delivery
    replacement_path: str | None = None  # verbose spam mode: the rewritten message
    subject_tag: str = ""  # prefix to add to Subject:


@record
class Verdict:
    """The decision for one message."""

    action: str = "deliver"  # deliver | quarantine | drop | failed; refusals are raised as Outcome exceptions
    quarantine_kind: str = ""  # viruses | policy | spam
    reason: str = ""
    findings: list[Finding] = field(default_factory=list)
    scan_results: list[ScanResult] = field(default_factory=list)
    add_headers: list[tuple[str, str]] = field(default_factory=list)
    ambiguities: list[str] = field(default_factory=list)  # what mail clients may read differently in it
    skipped: list[str] = field(default_factory=list)  # scanners not run and why, e.g. "spamd (RELAYCLIENT set)"
