"""The installed program with real scanners, driven as qmail-smtpd drives it (tests/harness.py).

clamd and spamd end to end run through the real qmail: tests/test_qmail_end_to_end.py.
"""

from __future__ import annotations

from daemons import (
    GTUBE,
    rspamd_server_fixture,  # noqa: F401 - fixture
)
from scanner_fixtures import HAM, plain_message

SPAM = plain_message(b"Buy now!\r\n" + GTUBE, subject="special offer")


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
