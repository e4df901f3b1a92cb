"""Session fixtures of the real qmail bed: build it (quick when built), run qmail-send and qmail-smtpd."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed.build import TESTBED, BuildError, build
from testbed.qmail import QmailSend, ScannerInstall, SmtpReply, SmtpServer, install_scanner, send


@dataclass
class QmailBed:
    """The running bed: qmail-smtpd on a loopback port of its own, qmail-send delivering to ~qmailtest."""

    smtp: SmtpServer

    def send(
        self, message: bytes, queue: ScannerInstall | Path | None = None, env: dict[str, str] | None = None
    ) -> SmtpReply:
        """One SMTP session with `queue` as QMAILQUEUE (a scanner install, a program, or None for qmail-queue).

        env: more variables for the connection, set by tcprules as a site would (RELAYCLIENT, ...).
        """
        program = queue.wrapper if isinstance(queue, ScannerInstall) else queue
        self.smtp.route(program, **(env or {}))
        return send(self.smtp.port, message)


@pytest.fixture(scope="session")
def qmail_bed():
    try:
        build(quiet=True)
    except BuildError as error:
        pytest.skip(f"no qmail test bed: {error}")
    sender = QmailSend().start()
    directory = Path(tempfile.mkdtemp(prefix="smtpd-", dir=TESTBED))
    directory.chmod(0o755)  # tcpserver reads the rules as qmaild
    smtp = SmtpServer(directory).start()
    try:
        yield QmailBed(smtp)
    finally:
        smtp.stop()
        sender.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def bed_scanner(qmail_bed):
    """Factory: bed_scanner(*configure_args) -> this project installed for the bed, cached per arguments."""
    cache: dict[tuple[str, ...], ScannerInstall] = {}

    def factory(*configure_args: str) -> ScannerInstall:
        if configure_args not in cache:
            cache[configure_args] = install_scanner(*configure_args)
        return cache[configure_args]

    yield factory
    for installed in cache.values():
        installed.remove()
