"""Site choices that change the pipeline itself: per-domain settings, failed/, the debug trace."""

from __future__ import annotations

import pytest

from daemons import GTUBE, dead_socket_path, spamd_server_fixture  # noqa: F401 - fixture
from harness import envelope
from scanner_fixtures import HAM, plain_message

SPAM = plain_message(b"Buy now!\r\n" + GTUBE, subject="special offer")
CLEAN = b"From: a@example.org\nSubject: hi\n\nhello\n"


@pytest.fixture
def per_domain(make_installation, spamd_server):
    installation = make_installation(
        "--scanners", "spamd", "--spamd-servers", spamd_server.socket_path, "--settings-per-domain", "yes", fresh=True
    )
    (installation.spool / "settings_per_domain.txt").write_text(
        "default\tsa_subject=[SPAM]\n"
        "strict.example\tsa_quarantine=1\n"
        "this line is broken\n"
    )
    return installation


def test_per_domain_settings_choose_by_recipient_domain_without_reinstalling(per_domain):
    tagged = per_domain.run(SPAM, envelope("a@example.org", "user@relaxed.example"))
    assert tagged.exit_code == 0 and len(tagged.queued) == 1
    assert b"Subject: [SPAM] special offer" in tagged.queued[0].message
    assert "line 3" in tagged.stderr  # the broken line is reported by number; mail flows on
    quarantined = per_domain.run(SPAM, envelope("a@example.org", "boss@strict.example"))
    assert quarantined.exit_code == 0 and quarantined.queued == []
    assert per_domain.quarantined("spam")
    # With several recipients the strictest settings win.
    mixed = per_domain.run(SPAM, envelope("a@example.org", "user@relaxed.example", "boss@strict.example"))
    assert mixed.queued == []
    ham = per_domain.run(HAM, envelope("a@example.org", "boss@strict.example"))
    assert ham.exit_code == 0 and len(ham.queued) == 1


def test_failed_store_keeps_an_unscannable_message_and_accepts_it(make_installation, spamd_server):
    installation = make_installation(
        "--scanners", "spamd", "--spamd-servers", spamd_server.socket_path, "--failed-action", "store",
        "--scanner-fail", "spamd=tempfail", fresh=True,
    )
    program = installation.program.read_text()
    installation.program.write_text(program.replace(spamd_server.socket_path, dead_socket_path()))
    result = installation.run(HAM)
    assert result.exit_code == 0
    assert result.queued == []
    stored = sorted((installation.spool / "failed" / "new").iterdir())
    assert len(stored) == 1
    assert stored[0].read_bytes().endswith(HAM)
    assert "kept in failed/" in result.stderr


def test_without_failed_store_the_same_failure_is_temporary(make_installation, spamd_server):
    installation = make_installation(
        "--scanners", "spamd", "--spamd-servers", spamd_server.socket_path,
        "--scanner-fail", "spamd=tempfail", fresh=True,
    )
    program = installation.program.read_text()
    installation.program.write_text(program.replace(spamd_server.socket_path, dead_socket_path()))
    result = installation.run(HAM)
    assert result.exit_code == 82 and result.custom_error.startswith(b"Z")
    assert result.queued == []
    assert list((installation.spool / "failed" / "new").iterdir()) == []


def test_debug_trace_is_written_for_temporary_failures_too(make_installation, tmp_path):
    installation = make_installation(
        "--qmail-queue-binary", str(tmp_path / "absent"), "--no-QQ-check", "--debug", "2", fresh=True
    )
    result = installation.run(CLEAN)
    assert result.exit_code == 82
    trace = (installation.spool / "qmail-queue.log").read_text()
    assert "ended: cannot run" in trace
