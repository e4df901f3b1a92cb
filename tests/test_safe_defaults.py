"""Safe defaults for a new install: no notices to forged senders, skipped checks named, the demo says what happens.

Every check runs the real configure.py and the installed program (and spamd where spam is involved).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemons import GTUBE, spamd_server_fixture  # noqa: F401
from harness import CONFIGURE, ROOT, Installation, envelope, install
from test_actions_end_to_end import PIF
from test_configure_compat import frozen_settings

COMPAT = ROOT / "tests" / "compat"
HAM = b"From: Alice <alice@example.net>\nTo: bob@example.org\nSubject: lunch\n\nshall we have lunch on Friday?\n"
SPAM = b"From: Offers <offers@example.net>\nTo: bob@example.org\nSubject: Cheap watches\n\n" + GTUBE + b"\n"


def configure(tmp_path: Path, standin: Path, *words: str) -> subprocess.CompletedProcess:
    """configure.py --prefix ... --install as a new administrator runs it: no --notify unless given."""
    argv = [
        sys.executable, str(CONFIGURE), "--prefix", str(tmp_path / "qs"), "--qmail-queue-binary", str(standin),
        "--output", str(tmp_path / "qs" / "qmail-scanner-queue.py"), "--batch", "--skip-setuid-test",
        "--scanners", "none", *words,
    ]  # fmt: skip
    (tmp_path / "qs").mkdir(exist_ok=True)
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def notify_notes(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("configure.py: note: --notify")]


def test_a_new_install_alerts_the_admin_only_never_the_sender(tmp_path, standin, recorder):
    inject, record_dir = recorder
    result = configure(
        tmp_path, standin, "--install", "--qmail-inject-binary", inject,
        "--admin", "postmaster", "--domain", "example.org", "--local-domains", "example.org",
    )  # fmt: skip
    program = tmp_path / "qs" / "bin" / "qmail-scanner-queue.py"
    assert frozen_settings(program)["notify"] == ["admin"]
    assert notify_notes(result.stdout) == []  # nothing to say about a default that mails no sender
    installed = Installation(tmp_path / "qs", program, tmp_path / "qs" / "spool", tmp_path / "queue", result.stdout)
    installed.sink.mkdir()
    run = installed.run(PIF, envelope("alice@example.net", "bob@example.org"))
    assert run.exit_code == 0 and installed.quarantined("policy"), run.stderr
    alerted = [json.loads(path.read_text())["argv"][-1] for path in record_dir.glob("*.json")]
    assert alerted == ["postmaster@example.org"]  # the blocked sender alice@example.net is not mailed


def test_a_configure_line_naming_senders_keeps_them_and_says_so_once(tmp_path, standin):
    result = configure(tmp_path, standin, "--notify", "psender,admin")
    assert frozen_settings(tmp_path / "qs" / "qmail-scanner-queue.py")["notify"] == ["psender", "admin"]
    [said] = notify_notes(result.stdout)
    assert "backscatter" in said and "a new install's default is admin" in said


@pytest.mark.parametrize("recorded", [True, False], ids=["NOTIFY_ADDRS", "version default"])
def test_a_site_migrating_from_qmail_scanner_2_keeps_its_sender_notices(tmp_path, standin, recorded):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    text = (COMPAT / "qmail-scanner-queue-2.08.pl").read_text()
    if not recorded:
        text = "".join(line for line in text.splitlines(True) if "NOTIFY_ADDRS=" not in line)
    (bindir / "qmail-scanner-queue.pl").write_text(text)
    result = configure(tmp_path, standin, "--bindir", str(bindir), "--spooldir", str(tmp_path / "spool"))
    assert frozen_settings(tmp_path / "qs" / "qmail-scanner-queue.py")["notify"] == ["psender", "admin"]
    [said] = notify_notes(result.stdout)
    assert "kept as" in said and "Qmail-Scanner 2.08" in said and "backscatter" in said


def test_migrate_from_an_original_names_its_sender_notices(tmp_path):
    result = subprocess.run(
        [sys.executable, str(CONFIGURE), "--migrate-from", str(COMPAT / "qmail-scanner-queue-2.08.pl")],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--notify psender,admin" in result.stdout  # in the equivalent line
    [said] = [line for line in result.stdout.splitlines() if line.startswith("  - --notify")]
    assert said.startswith("  - --notify psender,admin: ") and "backscatter" in said


@pytest.fixture
def spam_install(tmp_path, standin, spamd_server) -> Installation:
    """A local install with spamd and the spam defaults of a new install."""
    return install(tmp_path / "qs", standin, "--scanners", "spamd", "--spamd-servers", spamd_server.socket_path)


def trace_of(queued: bytes) -> str:
    """The X-Qmail-Scanner-Diagnostics header, unfolded."""
    head = queued.split(b"\n\n", 1)[0].decode()
    start = head.index("X-Qmail-Scanner-Diagnostics:")
    lines = head[start:].splitlines()
    block = [lines[0], *(line for line in _continuations(lines[1:]))]
    return " ".join(line.strip() for line in block)


def _continuations(lines: list[str]):
    for line in lines:
        if not line[:1].isspace():
            return
        yield line


def test_relayclient_mail_is_not_spam_checked_and_the_trace_header_says_so(spam_install):
    result = spam_install.run(HAM, env={"RELAYCLIENT": "", "TCPREMOTEIP": "127.0.0.1"})
    assert result.exit_code == 0, result.stderr
    [queued] = result.queued
    assert "Clear:RC:1(127.0.0.1):. Skipped: spamd (RELAYCLIENT set)." in trace_of(queued.message)
    assert b"X-Spam-Status" not in queued.message.split(b"\n\n", 1)[0]


def test_without_relayclient_or_with_qs_spamassassin_nothing_is_skipped(spam_install):
    for env in ({"TCPREMOTEIP": "192.0.2.10"}, {"RELAYCLIENT": "", "QS_SPAMASSASSIN": "1"}):
        result = spam_install.run(HAM, env=env)
        assert result.exit_code == 0, result.stderr
        [queued] = result.queued
        assert "Skipped:" not in trace_of(queued.message), env
        assert b"\nX-Spam-Status: No, " in queued.message.split(b"\n\n", 1)[0], env


def test_a_message_over_sa_maxsize_names_the_skipped_spam_check(tmp_path, standin, spamd_server):
    installed = install(
        tmp_path / "qs", standin, "--scanners", "spamd", "--spamd-servers", spamd_server.socket_path,
        "--sa-maxsize", "100",
    )  # fmt: skip
    result = installed.run(HAM + b"x" * 200 + b"\n")
    [queued] = result.queued
    assert f"Skipped: spamd (size {len(HAM) + 201} > --sa-maxsize 100)." in trace_of(queued.message)


def test_spam_is_tagged_not_quarantined_by_default(spam_install):
    result = spam_install.run(SPAM, env={"TCPREMOTEIP": "192.0.2.10"})
    assert result.exit_code == 0, result.stderr
    [queued] = result.queued  # delivered, not quarantined, not refused
    head = queued.message.split(b"\n\n", 1)[0]
    assert b"\nX-Spam-Flag: YES" in head and b"\nX-Spam-Status: Yes, " in head
    assert b"\nSubject: Cheap watches\n" in head + b"\n"  # no subject tag without --sa-subject
    assert spam_install.quarantined("spam") == []


@pytest.mark.parametrize("daemons", [True, False], ids=["clamd+spamd", "internal checks only"])
def test_the_demo_says_what_happens_to_each_sample(tmp_path, daemons):
    argv = [sys.executable, str(ROOT / "contrib" / "demo.py"), "--dir", str(tmp_path / "demo")]
    try:
        result = subprocess.run(
            argv + ([] if daemons else ["--no-daemons"]), capture_output=True, text=True, timeout=300, check=False
        )
    finally:  # the demo leaves its console serving; this test is about the mail part
        subprocess.run([*argv, "--stop"], capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "NOT AS SAID" not in result.stdout
    after_summary = result.stdout.split("== summary\n", 1)[1].splitlines()
    summary = after_summary[:next((at for at, line in enumerate(after_summary) if not line.strip()),
                                  len(after_summary))]  # up to the blank line before the console's part
    assert len(summary) == len(list((ROOT / "contrib" / "demo" / "samples").glob("*.eml")))
    if daemons and "started a private spamd" in result.stdout:
        assert any("05-gtube-spam.eml" in line and "queued, tagged as spam" in line for line in summary)
    alerts = list((tmp_path / "demo" / "alerts").glob("*.eml"))
    assert alerts, "the demo's blocked samples alert the admin"
    for alert in alerts:
        text = alert.read_text(errors="replace")
        to = next(line for line in text.splitlines() if line.startswith("To:"))
        assert "postmaster@example.com" in to and "alice" not in to  # never the sender
    assert os.path.isdir(tmp_path / "demo" / "spool")
