"""Fixtures for the after-verdict tests: a spooled message, the qmail-queue stand-in, alert recorder."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lib"))

from qmail_scanner.message import Message  # noqa: E402
from qmail_scanner.queue_protocol import read_envelope  # noqa: E402
from qmail_scanner.settings import Settings  # noqa: E402
from qmail_scanner.spool import create_layout, create_work_area, spool_message  # noqa: E402


@pytest.fixture(scope="session")
def standin_binary(standin) -> str:
    """The qmail-queue stand-in (conftest's), as a path string for Settings."""
    return str(standin)


@pytest.fixture
def queue_dir(tmp_path, monkeypatch) -> Path:
    """Where the stand-in stores what it queued (QQ_STANDIN_DIR)."""
    directory = tmp_path / "queue"
    directory.mkdir()
    monkeypatch.setenv("QQ_STANDIN_DIR", str(directory))
    return directory


def queued(queue_dir: Path) -> list[tuple[bytes, bytes]]:
    """(message, envelope) pairs the stand-in queued, oldest first."""
    result = []
    for message in sorted(queue_dir.glob("*.msg")):
        result.append((message.read_bytes(), message.with_suffix(".env").read_bytes()))
    return result


def envelope_bytes(sender: str, recipients: list[str]) -> bytes:
    """The fd 1 envelope as qmail-smtpd writes it."""
    return b"F" + sender.encode() + b"\0" + b"".join(b"T" + r.encode() + b"\0" for r in recipients) + b"\0"


def make_settings(spooldir: Path, **overrides) -> Settings:
    """Settings for a test spool; the spool layout is created."""
    create_layout(str(spooldir))
    values = dict(spooldir=str(spooldir), hostname="mx.example.org", domain="example.org", version="2.0.0")
    values.update(overrides)
    return Settings(**values)


def make_message(
    settings: Settings,
    raw: bytes,
    sender: str = "alice@example.net",
    recipients: tuple[str, ...] = ("bob@example.org",),
    environ: dict | None = None,
) -> Message:
    """Spool raw into a work area exactly as pipeline.process_message does, and read the envelope."""
    area = create_work_area(settings.spooldir)
    source = Path(area.unpack_dir) / "incoming"
    source.write_bytes(raw)
    message_read = os.open(source, os.O_RDONLY)
    fd = spool_message(area, message_read, settings.spool_chunk_bytes)
    os.close(message_read)
    source.unlink()
    envelope_read, envelope_write = os.pipe()
    os.write(envelope_write, envelope_bytes(sender, list(recipients)))
    os.close(envelope_write)
    envelope = read_envelope(envelope_read)
    os.close(envelope_read)
    env = {"TCPREMOTEIP": "192.0.2.7", "TCPREMOTEHOST": "client.example.net"} if environ is None else environ
    return Message(settings, area, fd, envelope, env, time.monotonic())


def maildir_files(maildir: Path) -> list[Path]:
    """Messages in a maildir's new/."""
    return sorted((maildir / "new").iterdir())


@pytest.fixture
def recorder(tmp_path) -> tuple[str, Path]:
    """A qmail-inject stand-in that records argv, environment, open fds and the message."""
    record_dir = tmp_path / "injected"
    record_dir.mkdir()
    script = tmp_path / "qmail-inject-recorder"
    source = (HERE / "qmail_inject_recorder.py").read_text()
    script.write_text(f"#!{sys.executable}\nRECORD_DIR = {str(record_dir)!r}\n" + source)
    script.chmod(0o755)
    return str(script), record_dir
