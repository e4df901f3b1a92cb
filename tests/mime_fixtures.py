"""Helpers for the unpacker, format-check and policy tests: settings, a message stand-in, the corpus."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lib"))

from qmail_scanner import formatcheck, policy  # noqa: E402
from qmail_scanner import unpack as mime  # noqa: E402
from qmail_scanner.records import Envelope, Finding  # noqa: E402
from qmail_scanner.settings import Settings  # noqa: E402

CORPUS = ROOT / "tests" / "corpus"
DEFAULT_RULES = ROOT / "templates" / "quarantine-events.txt"
CORPUS_SETTINGS = {
    "unzip": True,
    "block_password_protected": True,
    "have_tnefparse": True,
    "have_python_magic": False,
    "tnef_binary": shutil.which("tnef") or "",
}


@dataclass
class FakeMessage:
    """The fields of main.Message that the checks read."""

    settings: Settings
    envelope: Envelope = field(default_factory=lambda: Envelope("alice@example.org", ("bob@example.net",), b""))
    environ: dict[str, str] = field(default_factory=lambda: {"TCPREMOTEIP": "192.0.2.7"})
    unpacked: object = None


def make_settings(spooldir: Path, **overrides: object) -> Settings:
    values = dict(CORPUS_SETTINGS)
    values.update(overrides)
    return Settings(spooldir=str(spooldir), **values)


def unpack_file(path: Path, work: Path, settings: Settings, remaining=lambda: 1000.0) -> mime.Unpacked:
    unpack_dir = work / f"unpack-{path.name}-{len(list(work.iterdir()))}"
    unpack_dir.mkdir(mode=0o700)
    return mime.unpack(str(path), str(unpack_dir), settings, remaining)


def unpack_bytes(data: bytes, work: Path, settings: Settings, remaining=lambda: 1000.0) -> mime.Unpacked:
    message = work / f"message-{len(list(work.iterdir()))}.eml"
    message.write_bytes(data)
    return unpack_file(message, work, settings, remaining)


def all_findings(unpacked: mime.Unpacked, settings: Settings, message: FakeMessage | None = None) -> list[Finding]:
    """What inspection.inspect collects from the internal checks."""
    message = message or FakeMessage(settings)
    message.unpacked = unpacked
    findings = list(unpacked.findings)
    if settings.fix_mime:
        findings += formatcheck.check(unpacked, settings)
    return findings + policy.check(message)


def blocking_rules(findings: list[Finding]) -> set[str]:
    return {f.rule for f in findings if not f.monitor_only}


def expected_corpus(fix_mime: int = 2) -> list[tuple[str, set[str], set[str]]]:
    """(file, expected blocking rules at this --fix-mime level, expected crypto tags) from tests/corpus/expected.tsv."""
    rows = []
    for line in (CORPUS / "expected.tsv").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, rules, crypto, default_rules = line.split("\t")
        if fix_mime == 1 and default_rules != "=":
            rules = default_rules
        rows.append(
            (
                name,
                set() if rules == "clean" else set(rules.split(",")),
                set() if crypto == "-" else set(crypto.split(",")),
            )
        )
    return rows


def install_rules(spooldir: Path, text: str | None = None) -> Path:
    path = spooldir / policy.RULES_FILE
    if text is None:
        shutil.copyfile(DEFAULT_RULES, path)
    else:
        path.write_text(text)
    return path


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    """A spool dir holding the shipped quarantine-events.txt."""
    directory = tmp_path / "spool"
    directory.mkdir()
    install_rules(directory)
    return directory


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """An empty work dir for decoded parts."""
    directory = tmp_path / "work"
    directory.mkdir()
    return directory
