"""The record of one message in flight: what every step after spooling may look at."""

from __future__ import annotations

import time

from .records import Envelope
from .recordtype import field, record
from .settings import Settings
from .spool import WorkArea


@record
class Message:
    """One message in flight: settings, work area, spooled fd, envelope, the caller's environment."""

    settings: Settings
    area: WorkArea
    message_fd: int
    envelope: Envelope
    environ: dict[str, str]
    started: float
    unpacked: object = None  # unpack.Unpacked once the unpacker ran
    notes: list[str] = field(default_factory=list)  # debug trace lines
    skipped: list[str] = field(default_factory=list)  # scanners not run and why; named in the trace header
    # What inspection had when it decided, kept for the message record of a refusal or a failure
    # (those are raised, so no Verdict carries them); scanner_seconds: each scanner's time.
    findings: list = field(default_factory=list)
    scan_results: list = field(default_factory=list)
    scanner_seconds: dict = field(default_factory=dict)

    def seconds(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        """Seconds left before the total deadline."""
        return max(0.0, self.settings.deadline_seconds - self.seconds())
