"""The installed program with real scanners: what qmail-smtpd and the admin would see."""

from __future__ import annotations

import pytest

from daemons import (
    EICAR,
    GTUBE,
    clamd_server_fixture,  # noqa: F401 - fixtures
    dead_socket_path,
    rspamd_server_fixture,  # noqa: F401
    spamd_server_fixture,  # noqa: F401
)
from harness import envelope
from scanner_fixtures import HAM, plain_message, with_attachment, zipped

SPAM = plain_message(b"Buy now!\r\n" + GTUBE, subject="special offer")


def test_eicar_is_quarantined_by_clamd_and_ham_delivered_with_versions(make_installation, clamd_server):
    installation = make_installation("--scanners", "clamd", "--clamd-servers", clamd_server.socket_path)
    assert "clamd" in installation.configure_output
    infected = installation.run(with_attachment("e.zip", zipped("eicar.com", EICAR)))
    assert infected.exit_code == 0 and infected.queued == []
    stored = installation.quarantined("viruses")[-1].read_bytes()
    assert b"Eicar-Test-Signature" in stored
    clean = installation.run(with_attachment("notes.txt", b"nothing to see here\n", "text/plain"))
    assert clean.exit_code == 0 and len(clean.queued) == 1
    assert b"clamd: 1." in clean.queued[0].message  # the trace header names the scanner version


def test_virus_reject_names_the_virus_at_smtp_time(make_installation, clamd_server):
    installation = make_installation(
        "--scanners", "clamd", "--clamd-servers", clamd_server.socket_path, "--virus-reject", "yes"
    )
    result = installation.run(with_attachment("eicar.com", EICAR))
    assert result.exit_code != 0 and result.queued == []
    assert result.custom_error.startswith(b"D") and b"Eicar-Test-Signature" in result.custom_error


@pytest.mark.parametrize(("policy", "delivered"), [("tempfail", False), ("pass", True)])
def test_dead_clamd_follows_the_failure_policy(make_installation, clamd_server, policy, delivered):
    installation = make_installation(
        "--scanners", "clamd", "--clamd-servers", clamd_server.socket_path, "--scanner-fail", f"clamd={policy}"
    )
    # The configured farm now points at a socket nothing listens on.
    program = installation.program.read_text()
    installation.program.write_text(program.replace(clamd_server.socket_path, dead_socket_path()))
    result = installation.run(with_attachment("notes.txt", b"nothing to see here\n", "text/plain"))
    if delivered:
        assert result.exit_code == 0 and len(result.queued) == 1
        assert b"Unchecked(clamd)" in result.queued[0].message
    else:
        assert result.exit_code != 0 and result.queued == []
        assert result.custom_error.startswith(b"Z")


def test_spam_tagged_and_quarantined_over_the_threshold(make_installation, spamd_server):
    installation = make_installation(
        "--scanners", "spamd", "--spamd-servers", spamd_server.socket_path,
        "--sa-subject", "[SPAM]", "--sa-quarantine", "100",
    )
    ham = installation.run(HAM)
    assert ham.exit_code == 0 and b"X-Spam-Status: No, hits=" in ham.queued[0].message
    spam = installation.run(SPAM)
    assert spam.exit_code == 0 and spam.queued == []
    assert b"X-QS-Envelope-Reason: spam quarantined: score 1000" in installation.quarantined("spam")[-1].read_bytes()


def test_spam_below_quarantine_is_delivered_tagged(make_installation, spamd_server):
    installation = make_installation(
        "--scanners", "spamd", "--spamd-servers", spamd_server.socket_path, "--sa-subject", "[SPAM]"
    )
    result = installation.run(SPAM, envelope("sender@example.org", "rcpt@example.com"))
    assert result.exit_code == 0 and len(result.queued) == 1
    delivered = result.queued[0].message
    assert b"Subject: [SPAM] special offer" in delivered and b"X-Spam-Flag: YES" in delivered
    relayed = installation.run(SPAM, env={"RELAYCLIENT": ""})
    assert b"X-Spam-Flag" not in relayed.queued[0].message  # RELAYCLIENT mail is not spam-checked


def test_verbose_mode_delivers_spamassassins_headers(make_installation, spamd_server):
    installation = make_installation("--scanners", "verbose_spamassassin", "--spamd-servers", spamd_server.socket_path)
    result = installation.run(SPAM)
    assert result.exit_code == 0 and len(result.queued) == 1
    assert b"X-Spam-Checker-Version: SpamAssassin" in result.queued[0].message


def test_rspamd_through_the_installed_program(make_installation, rspamd_server):
    """GTUBE is refused at SMTP time with rspamd's reason; ham is delivered with its symbols."""
    installation = make_installation("--scanners", "rspamd", "--rspamd-servers", rspamd_server.address)
    client = {"TCPREMOTEIP": "192.0.2.10", "TCPREMOTEHOST": "client.example.org"}
    spam = installation.run(SPAM, env=client)
    assert spam.queued == []
    assert spam.exit_code == 82 and spam.custom_error.startswith(b"D")
    ham = installation.run(HAM, env=client)
    assert ham.exit_code == 0 and len(ham.queued) == 1
    assert b"X-Rspamd-Symbols:" in ham.queued[0].message
    assert ham.queued[0].body_after_trace.endswith(HAM)
