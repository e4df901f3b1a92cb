"""spamd and rspamd spoken to directly (real daemons), and what the spam policy makes of them."""

from __future__ import annotations

import os
import time

import pytest

from daemons import (
    GTUBE,
    dead_socket_path,
    fake_server_factory_fixture,  # noqa: F401 - fixtures
    rspamd_server_fixture,  # noqa: F401
    silent_server_fixture,  # noqa: F401
    spamd_server_fixture,  # noqa: F401
)
from qmail_scanner.outcomes import PermanentReject, TemporaryFailure
from qmail_scanner.scanners import run_spam_scanners
from qmail_scanner.settings import ScannerConfig
from qmail_scanner.verdict import decide
from scanner_fixtures import HAM, plain_message, scan_settings, spooled_message

SPAM = plain_message(b"Buy now!\r\n" + GTUBE, subject="special offer")


def spamd_config(*addresses: str, name: str = "spamd", fail: str = "tempfail", timeout: float = 30.0) -> ScannerConfig:
    return ScannerConfig(name, "spam", addresses, connect_timeout=2.0, scan_timeout=timeout, fail=fail)


def rspamd_config(*addresses: str, fail: str = "tempfail") -> ScannerConfig:
    return ScannerConfig("rspamd", "spam", addresses, connect_timeout=2.0, scan_timeout=30.0, fail=fail)


def spam_scan(tmp_path, raw: bytes, config: ScannerConfig, environ=None, recipients=("bob@example.net",), **changes):
    settings = scan_settings(config, spooldir=str(tmp_path / "spool"), **changes)
    message = spooled_message(tmp_path, raw, settings, recipients=recipients, environ=environ)
    return message, run_spam_scanners(message)


def headers_of(result) -> dict[str, str]:
    return dict(result.extra_headers)


# ------------------------------------------------------------------ spamd


def test_gtube_is_spam_with_fast_mode_headers_and_subject_tag(tmp_path, spamd_server):
    _, (result,) = spam_scan(tmp_path, SPAM, spamd_config(spamd_server.socket_path), sa_subject="[SPAM]")
    assert not result.failed
    assert result.spam_score >= 1000 and result.spam_required == 5.0
    assert [f.kind for f in result.findings] == ["spam"]
    headers = headers_of(result)
    assert headers["X-Spam-Status"].startswith("Yes, hits=10")
    assert headers["X-Spam-Flag"] == "YES"
    assert headers["X-Spam-Level"] == "*" * 50
    assert result.subject_tag == "[SPAM]"


def test_ham_is_delivered_with_a_no_status(tmp_path, spamd_server):
    _, (result,) = spam_scan(tmp_path, HAM, spamd_config(spamd_server.socket_path), sa_subject="[SPAM]")
    assert not result.failed and not result.findings
    assert result.spam_score < 5.0
    assert headers_of(result)["X-Spam-Status"].startswith("No, hits=")
    assert "X-Spam-Flag" not in headers_of(result)
    assert result.subject_tag == ""
    assert decide(scan_settings(spooldir="/nonexistent"), [], [result]).action == "deliver"


def test_verbose_mode_queues_spamassassins_rewritten_message(tmp_path, spamd_server):
    message, (result,) = spam_scan(tmp_path, SPAM, spamd_config(spamd_server.socket_path, name="verbose_spamassassin"))
    assert result.replacement_path and result.replacement_path.startswith(message.area.unpack_dir)
    with open(result.replacement_path, "rb") as handle:
        rewritten = handle.read()
    assert b"X-Spam-Flag: YES" in rewritten
    assert b"X-Spam-Status: Yes, score=10" in rewritten
    assert b"X-Spam-Checker-Version: SpamAssassin" in rewritten
    assert result.extra_headers == ()  # SpamAssassin's own headers are in the message already
    assert result.findings and result.spam_score >= 1000


def test_single_recipient_is_sent_as_user(tmp_path, spamd_server):
    recipient = f"carol-{os.getpid()}-{time.monotonic_ns()}@example.net"
    spam_scan(tmp_path, HAM, spamd_config(spamd_server.socket_path), recipients=(recipient,))
    spam_scan(tmp_path, HAM, spamd_config(spamd_server.socket_path), recipients=("x-" + recipient, "y-" + recipient))
    time.sleep(0.2)
    log = spamd_server.log_path.read_text(errors="replace")
    assert f"for {recipient}:" in log
    assert f"for x-{recipient}" not in log and f"for y-{recipient}" not in log


def test_relayclient_mail_is_not_spam_checked_unless_qs_spamassassin(tmp_path, spamd_server):
    config = spamd_config(spamd_server.socket_path)
    message, results = spam_scan(tmp_path, SPAM, config, environ={"RELAYCLIENT": ""})
    assert results == [] and any("RELAYCLIENT" in note for note in message.notes)
    _, (result,) = spam_scan(tmp_path, SPAM, config, environ={"RELAYCLIENT": "", "QS_SPAMASSASSIN": "1"})
    assert result.findings


def test_sa_maxsize_skips_and_says_so_in_the_headers(tmp_path, spamd_server):
    _, (result,) = spam_scan(tmp_path, SPAM, spamd_config(spamd_server.socket_path), sa_maxsize=100)
    assert not result.findings and not result.failed and result.spam_score is None
    assert "skipped" in headers_of(result)["X-Spam-Status"]


def test_sa_delta_raises_the_threshold(tmp_path, spamd_server):
    _, (result,) = spam_scan(tmp_path, SPAM, spamd_config(spamd_server.socket_path), sa_delta=2000.0)
    assert not result.findings and headers_of(result)["X-Spam-Status"].startswith("No, ")


@pytest.mark.parametrize(
    ("changes", "action", "kind"),
    [
        ({}, "deliver", ""),
        ({"sa_quarantine": 10.0}, "quarantine", "spam"),
        ({"sa_quarantine": 5000.0}, "deliver", ""),
        ({"sa_delete": 10.0}, "drop", ""),
        ({"sa_delete": 10.0, "sa_quarantine": 5.0}, "drop", ""),
        ({"sa_delete": 5000.0, "sa_quarantine": 5.0}, "quarantine", "spam"),
    ],
)
def test_thresholds_decide_what_happens_to_spam(tmp_path, spamd_server, changes, action, kind):
    _, results = spam_scan(tmp_path, SPAM, spamd_config(spamd_server.socket_path), **changes)
    verdict = decide(scan_settings(spooldir="/nonexistent", **changes), [], results)
    assert (verdict.action, verdict.quarantine_kind) == (action, kind)


def test_sa_reject_refuses_at_smtp_time(tmp_path, spamd_server):
    changes = {"sa_delete": 10.0, "sa_reject": True}
    _, results = spam_scan(tmp_path, SPAM, spamd_config(spamd_server.socket_path), **changes)
    with pytest.raises(PermanentReject, match="spam"):
        decide(scan_settings(spooldir="/nonexistent", **changes), [], results)


def test_spamd_down_fails_and_fail_pass_marks_unchecked(tmp_path):
    dead = dead_socket_path()
    _, (result,) = spam_scan(tmp_path, SPAM, spamd_config(dead))
    assert result.failed and not result.unchecked and not result.findings
    with pytest.raises(TemporaryFailure):
        decide(scan_settings(spooldir="/nonexistent"), [], [result])
    _, (passed,) = spam_scan(tmp_path, SPAM, spamd_config(dead, fail="pass"))
    assert passed.failed and passed.unchecked
    assert decide(scan_settings(spooldir="/nonexistent"), [], [passed]).action == "deliver"


def test_spamd_failover(tmp_path, spamd_server):
    _, (result,) = spam_scan(tmp_path, SPAM, spamd_config(dead_socket_path(), spamd_server.socket_path))
    assert result.findings and not result.failed


def test_spamd_that_never_answers_times_out(tmp_path, silent_server):
    started = time.monotonic()
    _, (result,) = spam_scan(tmp_path, SPAM, spamd_config(silent_server.socket_path, timeout=1.5))
    assert result.failed and "timed out" in result.failure_reason
    assert time.monotonic() - started < 4.0


def test_sa_timeout_bounds_spamd(tmp_path, silent_server):
    started = time.monotonic()
    _, (result,) = spam_scan(tmp_path, SPAM, spamd_config(silent_server.socket_path, timeout=60), sa_timeout=1.0)
    assert result.failed and time.monotonic() - started < 3.5


@pytest.mark.parametrize(
    ("mode", "reply"),
    [
        ("garbage", b"SPAMD/1.0 76 Bad header line: (EOF)\r\n"),
        ("garbage", b"SPAMD/1.1 0 EX_OK\r\n\r\n"),  # no Spam: line
        ("garbage", b"SPAMD/1.1 0 EX_OK\r\nSpam: Maybe ; x / y\r\n\r\n"),
        ("garbage", b"HTTP/1.0 200 OK\r\n\r\n"),
        ("close-mid-reply", b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; 0.1 / 5.0\r\n\r\n"),
    ],
)
def test_spamd_replies_not_understood_are_failures(tmp_path, fake_server_factory, mode, reply):
    server = fake_server_factory(mode, reply)
    _, (result,) = spam_scan(tmp_path, SPAM, spamd_config(server.socket_path))
    assert result.failed and not result.findings, result


def test_verbose_reply_cut_short_is_a_failure(tmp_path, fake_server_factory):
    reply = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 5000\r\nSpam: False ; 0.1 / 5.0\r\n\r\nFrom: a\r\n\r\nshort"
    server = fake_server_factory("garbage", reply)
    message, (result,) = spam_scan(tmp_path, SPAM, spamd_config(server.socket_path, name="verbose_spamassassin"))
    assert result.failed and "truncated" in result.failure_reason
    assert os.listdir(message.area.unpack_dir) == []  # the partial rewrite is not left for delivery


# ------------------------------------------------------------------ rspamd

RSPAMD_ENV = {"TCPREMOTEIP": "192.0.2.10", "TCPREMOTEHOST": "mail.example.org"}


def test_rspamd_gtube_is_rejected_at_smtp_time(tmp_path, rspamd_server):
    _, (result,) = spam_scan(tmp_path, SPAM, rspamd_config(rspamd_server.address), environ=RSPAMD_ENV)
    assert [f.rule for f in result.findings] == ["rspamd-reject"]
    assert "GTUBE" in headers_of(result)["X-Rspamd-Symbols"]
    with pytest.raises(PermanentReject, match="spam"):
        decide(scan_settings(spooldir="/nonexistent"), [], [result])


def test_rspamd_ham_is_delivered_with_its_symbols(tmp_path, rspamd_server):
    _, (result,) = spam_scan(tmp_path, HAM, rspamd_config(rspamd_server.address), environ=RSPAMD_ENV)
    assert not result.failed and not result.findings
    assert headers_of(result)["X-Rspamd-Status"].startswith("No, action=no action")
    assert "TO_MATCH_ENVRCPT_ALL" in headers_of(result)["X-Rspamd-Symbols"]  # the envelope reached rspamd
    assert decide(scan_settings(spooldir="/nonexistent"), [], [result]).action == "deliver"


def test_rspamd_gets_the_envelope(tmp_path, rspamd_server):
    recipients = ("bob-env@example.net", "carol-env@example.net", "dave-env@example.net")
    _, (result,) = spam_scan(tmp_path, HAM, rspamd_config(rspamd_server.address), RSPAMD_ENV, recipients)
    assert not result.failed
    time.sleep(0.3)
    log = rspamd_server.log_path.read_text(errors="replace")
    assert "from: <alice@example.org>" in log
    assert "rcpts: <bob-env@example.net,carol-env@example.net,dave-env@example.net>" in log


def test_rspamd_add_header_tags_and_delivers(tmp_path, rspamd_server):
    raw = HAM.replace(b"Subject: lunch on friday", b"Subject: QS-TEST-ADD-HEADER lunch")
    config = rspamd_config(rspamd_server.socket_path)  # the unix socket this time
    _, (result,) = spam_scan(tmp_path, raw, config, environ=RSPAMD_ENV, sa_subject="[SPAM]")
    assert [f.rule for f in result.findings] == ["rspamd-add-header"]
    assert result.subject_tag == "[SPAM]"
    verdict = decide(scan_settings(spooldir="/nonexistent", sa_subject="[SPAM]"), [], [result])
    assert verdict.action == "deliver"
    assert ("X-Rspamd-Status", headers_of(result)["X-Rspamd-Status"]) in verdict.add_headers


def test_rspamd_greylist_is_a_temporary_failure(tmp_path, rspamd_server):
    raw = HAM.replace(b"Subject: lunch on friday", b"Subject: QS-TEST-GREYLIST lunch")
    _, (result,) = spam_scan(tmp_path, raw, rspamd_config(rspamd_server.address), environ=RSPAMD_ENV)
    assert [f.rule for f in result.findings] == ["rspamd-greylist"]
    with pytest.raises(TemporaryFailure):
        decide(scan_settings(spooldir="/nonexistent"), [], [result])


def test_rspamd_down_and_garbage_are_failures(tmp_path, fake_server_factory):
    _, (down,) = spam_scan(tmp_path, HAM, rspamd_config("127.0.0.1:1"))
    assert down.failed
    ok = b"HTTP/1.0 200 OK\r\n\r\n"
    bad_replies = (ok + b"{not json", b"HTTP/1.0 500 Oops\r\n\r\n", ok + b'{"a": 1}')
    for reply in bad_replies:
        server = fake_server_factory("garbage", reply)
        _, (result,) = spam_scan(tmp_path, HAM, rspamd_config(server.socket_path, fail="pass"))
        assert result.failed and result.unchecked and not result.findings, reply
    truncated = b'HTTP/1.0 200 OK\r\nContent-Length: 500\r\n\r\n{"action": "no action", "score": 0}'
    server = fake_server_factory("garbage", truncated)
    _, (result,) = spam_scan(tmp_path, HAM, rspamd_config(server.socket_path))
    assert result.failed and "truncated" in result.failure_reason


def test_spamd_and_rspamd_together(tmp_path, spamd_server, rspamd_server):
    settings = scan_settings(
        spamd_config(spamd_server.socket_path), rspamd_config(rspamd_server.address), spooldir=str(tmp_path / "s")
    )
    message = spooled_message(tmp_path, HAM, settings, environ=RSPAMD_ENV)
    results = run_spam_scanners(message)
    assert [r.scanner for r in results] == ["spamd", "rspamd"]
    assert not any(r.failed or r.findings for r in results)
