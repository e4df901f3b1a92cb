"""Kept clamd sessions (the resident engine's IDSESSION) against a real clamd that ends idle sessions.

clamd closes an IDSESSION left idle for its ReadTimeout and writes "COMMAND READ TIMED OUT" as it
goes; the fixture's clamd does so after 2 s. The next scan must get clamd's answer, never that text.
"""

from __future__ import annotations

import os
import select
import time

import pytest

from daemons import (
    EICAR,
    QUICK_IDLE_SECONDS,
    clamd_disposable_fixture,  # noqa: F401 - fixtures
    clamd_quick_idle_fixture,  # noqa: F401
)
from engine_fixtures import Engine
from qmail_scanner.scanners import clamd, run_virus_scanners
from qmail_scanner.settings import ScannerConfig
from scanner_fixtures import HAM, scan_settings, spooled_message, with_attachment
from security_fixtures import install_wrapped

CLEAN = b"Received: from client by mx\nFrom: a@example.org\nTo: b@example.com\nSubject: hello\n\nplain text\n"


@pytest.fixture()
def sessions(monkeypatch) -> dict:
    """This process keeps clamd sessions as an engine worker does; the kept ones, by address."""
    monkeypatch.setattr(clamd, "_sessions", None)
    clamd.keep_sessions()
    yield clamd._sessions
    for session in clamd._sessions.values():
        session.sock.close()


def scan(tmp_path, raw: bytes, address: str):
    """The one virus scanner's result for raw."""
    config = ScannerConfig("clamd", "virus", (address,), connect_timeout=2.0, scan_timeout=30.0)
    message = spooled_message(tmp_path, raw, scan_settings(config, spooldir=str(tmp_path / "spool")))
    try:
        (result,) = run_virus_scanners(message)
    finally:
        os.close(message.message_fd)
    return result


def assert_clean(result) -> None:
    assert not result.failed, result.failure_reason
    assert result.findings == ()


def wait_until_clamd_ends_it(session, seconds: float = 15.0) -> None:
    """Idle until clamd has closed the session on its side (its ReadTimeout), without reading from it."""
    poller = select.poll()
    poller.register(session.sock, select.POLLIN)
    assert poller.poll(seconds * 1000), f"clamd kept the idle session open for {seconds} s"


def test_a_session_clamd_ended_while_idle_is_replaced_before_the_scan(tmp_path, sessions, clamd_quick_idle):
    address = clamd_quick_idle.socket_path
    assert_clean(scan(tmp_path, HAM, address))
    time.sleep(QUICK_IDLE_SECONDS + 2)  # clamd checks its timeouts about once a second
    assert_clean(scan(tmp_path, HAM, address))
    virus = scan(tmp_path, with_attachment("eicar.com", EICAR), address)
    names = [finding.rule for finding in virus.findings]
    assert len(names) == 1 and names[0].startswith("Eicar-Test-Signature"), virus.failure_reason


def test_a_session_clamd_ends_as_we_send_is_retried_once_on_a_fresh_one(
    tmp_path, sessions, clamd_quick_idle, monkeypatch
):
    """clamd may close right after the check before reuse: its timeout text is no answer to our scan."""
    address = clamd_quick_idle.socket_path
    assert_clean(scan(tmp_path, HAM, address))
    kept = sessions[address]
    wait_until_clamd_ends_it(kept)
    monkeypatch.setattr(clamd, "_reusable", lambda session: True)  # the check ran just before clamd closed
    assert_clean(scan(tmp_path, HAM, address))
    assert sessions[address] is not kept and kept.sock.fileno() == -1
    assert sessions[address].next_id == 2  # the fresh session answered the one scan


def test_a_session_idle_past_the_bound_is_not_reused(tmp_path, sessions, clamd_quick_idle, monkeypatch):
    address = clamd_quick_idle.socket_path
    assert_clean(scan(tmp_path, HAM, address))
    assert_clean(scan(tmp_path, HAM, address))
    kept = sessions[address]
    assert kept.next_id == 3  # two scans on one connection: the session is reused while fresh
    monkeypatch.setattr(clamd, "SESSION_MAX_IDLE_SECONDS", 0.0)
    time.sleep(0.01)
    assert_clean(scan(tmp_path, HAM, address))
    assert sessions[address] is not kept and kept.sock.fileno() == -1


def test_a_fresh_session_that_fails_is_a_scanner_failure(tmp_path, sessions, clamd_disposable):
    address = clamd_disposable.socket_path
    assert_clean(scan(tmp_path, HAM, address))
    clamd_disposable.stop()
    result = scan(tmp_path, HAM, address)
    assert result.failed and "connect failed" in result.failure_reason
    assert address not in sessions


def test_engine_workers_after_a_quiet_spell_longer_than_clamds_timeout_accept_every_message(clamd_quick_idle):
    """Burst, quiet past clamd's ReadTimeout, burst: no worker fails its first message."""
    installation = install_wrapped(
        "--scanners", "clamd", "--clamd-servers", clamd_quick_idle.socket_path, "--skip-text-msgs", "no",
        "--engine-workers", "2",
    )
    engine = Engine(installation).start()
    virus = with_attachment("eicar.com", EICAR)
    try:
        for burst in range(3):
            for number in range(4):
                clean = installation.run(CLEAN)
                assert clean.exit_code == 0 and len(clean.queued) == 1, (burst, number, clean.stderr)
            caught = installation.run(virus)
            assert caught.exit_code == 0 and caught.queued == [], (burst, caught.stderr)
            time.sleep(QUICK_IDLE_SECONDS + 2)  # clamd checks its timeouts about once a second
        assert len(list(installation.spool.joinpath("quarantine/viruses/new").iterdir())) == 3
        assert engine.status().get("served", 0) >= 15  # through the workers, not the standalone program
    finally:
        engine.stop()
        installation.remove()

