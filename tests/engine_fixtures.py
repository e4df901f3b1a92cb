"""The resident engine of a wrapped installation, started and stopped by the tests like a supervisor would.

The engine runs `qmail-scanner-queue.py --serve` as root and becomes the scanner account
(qstest); the setuid wrapper, run as `nobody`, is its client. Nothing here talks the engine's
protocol itself except where a test plays a client that is not the wrapper.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from security_fixtures import WrappedInstallation, install_wrapped

START_SECONDS = 30.0


class Engine:
    """One `--serve` process of an installation."""

    def __init__(self, installation: WrappedInstallation, launcher: list[str] | None = None) -> None:
        self.installation = installation
        self.launcher = launcher or []  # a supervisor's own start-up (its signal state), exec'ing the program
        self.socket = installation.spool / "engine.sock"
        self.status_file = installation.spool / "engine.status"
        self.log_path = installation.prefix / "engine.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> Engine:
        self.log_handle = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [*self.launcher, str(self.installation.program), "--serve"],
            stdin=subprocess.DEVNULL,
            stdout=self.log_handle,
            stderr=self.log_handle,
            env={"PATH": "/usr/bin:/bin"},
            cwd="/",
        )
        self.wait_until(lambda: self.serving() and len(self.workers()) >= self.status().get("configured", 1))
        return self

    def serving(self) -> bool:
        return self.socket.is_socket() and self.status().get("state") == "running"

    def status(self) -> dict:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}

    def wait_until(self, condition, seconds: float = START_SECONDS) -> None:
        limit = time.monotonic() + seconds
        while not condition():
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"the engine exited {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > limit:
                raise AssertionError(f"the engine did not get there in {seconds} s:\n{self.log()}")
            time.sleep(0.05)

    def workers(self) -> list[int]:
        """The master's children (the workers), from /proc."""
        if self.process is None:
            return []
        try:
            text = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        except OSError:
            return []
        return [int(word) for word in text.split()]

    def busy_workers(self) -> list[int]:
        """Workers holding a caller's message pipe on fd 0 (idle ones have /dev/null there)."""
        busy = []
        for pid in self.workers():
            try:
                if os.readlink(f"/proc/{pid}/fd/0").startswith("pipe:"):
                    busy.append(pid)
            except OSError:
                pass
        return busy

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    def stop(self, timeout: float = 60.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        for pid in self.workers():
            os.kill(pid, signal.SIGKILL)
        self.process = None
        self.log_handle.close()
        return code

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def wait_for_socket_gone(engine: Engine, seconds: float = 30.0) -> None:
    limit = time.monotonic() + seconds
    while engine.socket.exists() and time.monotonic() < limit:
        time.sleep(0.05)


@pytest.fixture(scope="module")
def engine_installation():
    """A wrapped installation with the corpus's settings (unzip, password-protected archives blocked)."""
    installation = install_wrapped("--unzip", "yes", "--block-password-protected", "yes", "--deadline", "20")
    yield installation
    installation.remove()


@pytest.fixture()
def engine(engine_installation):
    running = Engine(engine_installation).start()
    yield running
    running.stop()
