"""Messages for the scanner tests: spooled the way the pipeline spools them, with real MIME."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

from archive_samples import zip_of
from daemons import EICAR, GTUBE
from qmail_scanner.message import Message
from qmail_scanner.records import Envelope, ScanResult
from qmail_scanner.recordtype import replace
from qmail_scanner.settings import ScannerConfig, Settings
from qmail_scanner.spool import create_layout, create_work_area, spool_message

HAM = (
    b"Date: Wed, 25 Nov 2026 08:00:00 +0000\r\n"
    b"From: Alice Example <alice@example.org>\r\n"
    b"To: Bob Example <bob@example.net>\r\n"
    b"Subject: lunch on friday\r\n"
    b"Message-ID: <lunch-1234@mail.example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"Hi Bob,\r\n\r\nshall we meet for lunch on Friday at noon? The usual place is fine with me.\r\n\r\nAlice\r\n"
)


def headers(subject: str = "test", extra: str = "") -> bytes:
    return (
        "Date: Wed, 25 Nov 2026 08:00:00 +0000\r\n"
        "From: Alice Example <alice@example.org>\r\n"
        "To: Bob Example <bob@example.net>\r\n"
        f"Subject: {subject}\r\n"
        "Message-ID: <test-5678@mail.example.org>\r\n"
        "MIME-Version: 1.0\r\n" + extra
    ).encode()


def plain_message(body: bytes, subject: str = "test") -> bytes:
    return headers(subject, "Content-Type: text/plain; charset=us-ascii\r\n") + b"\r\n" + body + b"\r\n"


def with_attachment(filename: str, data: bytes, content_type: str = "application/octet-stream") -> bytes:
    """A multipart/mixed message: a short text and one base64 attachment."""
    boundary = "=_qs_test_boundary_1"
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (
        headers("attachment", f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n')
        + b"\r\n"
        + f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nSee the attachment.\r\n".encode()
        + f"--{boundary}\r\nContent-Type: {content_type}; name=\"{filename}\"\r\n".encode()
        + b"Content-Transfer-Encoding: base64\r\n"
        + f'Content-Disposition: attachment; filename="{filename}"\r\n\r\n'.encode()
        + encoded
        + f"--{boundary}--\r\n".encode()
    )


def zipped(name: str, data: bytes) -> bytes:
    return zip_of([(name, data)])


def scan_settings(*scanners: ScannerConfig, spooldir: str, **changes) -> Settings:
    """Settings for scanner tests: AV also for messages without attachments unless told otherwise."""
    values = {"spooldir": spooldir, "scanners": tuple(scanners), "skip_text_msgs": False, **changes}
    return replace(Settings(), **values)


def spooled_message(
    tmp_path: Path,
    raw: bytes,
    settings: Settings,
    recipients: tuple[str, ...] = ("bob@example.net",),
    sender: str = "alice@example.org",
    environ: dict[str, str] | None = None,
    unpacked: object = None,
) -> Message:
    """A Message as pipeline.process_message builds it: spooled through a real pipe into the work area."""
    spooldir = settings.spooldir
    create_layout(spooldir)
    area = create_work_area(spooldir)
    source = tmp_path / f"source-{time.monotonic_ns()}"
    source.write_bytes(raw)
    source_fd = os.open(source, os.O_RDONLY)
    try:
        message_fd = spool_message(area, source_fd, settings.spool_chunk_bytes)
    finally:
        os.close(source_fd)
    envelope_raw = b"F" + sender.encode() + b"\0" + b"".join(b"T" + r.encode() + b"\0" for r in recipients) + b"\0"
    envelope = Envelope(sender, recipients, envelope_raw)
    environment = {"TCPREMOTEIP": "192.0.2.10"} if environ is None else environ
    return Message(settings, area, message_fd, envelope, environment, time.monotonic(), unpacked)


__all__ = ["EICAR", "GTUBE", "HAM"]


def clamd_scan_of_unpacked(tmp_path: Path, raw: bytes, settings: Settings) -> tuple[ScanResult, object]:
    """The message unpacked as the pipeline unpacks it, then through the virus scanners: (the one result, unpacked)."""
    from qmail_scanner.scanners import run_virus_scanners
    from qmail_scanner.unpack import unpack

    message = spooled_message(tmp_path, raw, settings)
    try:
        message.unpacked = unpack(message.area.message_path, message.area.unpack_dir, settings, lambda: 100.0)
        (result,) = run_virus_scanners(message)
    finally:
        os.close(message.message_fd)
    assert not result.failed, result.failure_reason
    return result, message.unpacked
