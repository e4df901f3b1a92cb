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
    directory.chmod(0o755)  # tcpserver reads the rules as the bed's qmaild
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


@pytest.fixture(scope="session")
def bed_engine(qmail_bed):
    """Factory: bed_engine(*configure_args) -> the resident engine of an install of its own, running."""
    from engine_fixtures import Engine

    running: dict[tuple[str, ...], Engine] = {}

    def factory(*configure_args: str) -> Engine:
        if configure_args not in running:
            running[configure_args] = Engine(install_scanner(*configure_args)).start()
        return running[configure_args]

    yield factory
    for engine in running.values():
        engine.stop()
        engine.installation.remove()


@pytest.fixture(params=("standalone", "engine"))
def bed_route(request, bed_scanner):
    """Like bed_scanner, once per way this project runs: a process per message, and the resident engine.

    With the engine the test fails unless the engine served its messages: no silent fallback.
    """
    if request.param == "standalone":
        yield bed_scanner
        return
    engines = request.getfixturevalue("bed_engine")
    used = []

    def factory(*configure_args: str) -> ScannerInstall:
        engine = engines(*configure_args, "--engine-workers", "2")
        used.append((engine, engine.status().get("served", 0)))
        return engine.installation

    yield factory
    for engine, before in used:
        engine.wait_until(lambda engine=engine, before=before: engine.status().get("served", 0) > before, 10)
