"""Fault helpers that tests/daemons.py does not have: a server that answers correctly but too late,
a slow next hop, a tmpfs of a chosen size, and a runner that kills the program at a chosen moment."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemons import _private_dir
from harness import Installation, envelope, start_feeding

SLOW_HOP_SOURCE = r"""
#include <stdlib.h>
#include <unistd.h>
/* A next hop that thinks before it reads: sleeps QQ_SLOW_MS, then becomes the stand-in. */
int main(void) {
  const char *ms = getenv("QQ_SLOW_MS");
  if (ms) usleep((useconds_t)atoi(ms) * 1000);
  execl(STANDIN, STANDIN, (char *)0);
  return 81;
}
"""


class LateServer:
    """Reads the request, waits `delay` seconds, then sends a valid `reply` (too late for the timeout)."""

    def __init__(self, reply: bytes, delay: float) -> None:
        self.reply = reply
        self.delay = delay
        self.directory = _private_dir("qs-late-")
        self.socket_path = str(self.directory / "late.sock")
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(self.socket_path)
        self.listener.listen(16)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(connection,), daemon=True).start()

    def _handle(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(0.5)
            try:
                while connection.recv(65536):
                    pass
            except OSError:
                pass
            time.sleep(self.delay)
            try:
                connection.sendall(self.reply)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(name="late_server_factory")
def late_server_factory_fixture():
    servers: list[LateServer] = []

    def make(reply: bytes, delay: float) -> LateServer:
        server = LateServer(reply, delay)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


class SmallDisk:
    """A tmpfs of `size` bytes mounted on `where` (root only); unmounted on close."""

    def __init__(self, where: Path, size: int) -> None:
        self.where = where
        where.mkdir(parents=True, exist_ok=True)
        completed = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
            capture_output=True, text=True, check=False,
        )
        if completed.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {completed.stderr.strip()}")

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.where)], check=False)


@pytest.fixture(name="small_disk")
def small_disk_fixture():
    disks: list[SmallDisk] = []

    def make(where: Path, size: int, maildir: bool = False) -> SmallDisk:
        disk = SmallDisk(where, size)
        disks.append(disk)
        if maildir:
            for sub in ("tmp", "new", "cur"):
                (where / sub).mkdir(mode=0o700)
        return disk

    yield make
    for disk in reversed(disks):
        disk.close()


@dataclass
class KilledRun:
    exit_code: int  # negative: killed by that signal
    seconds: float
    signalled: bool  # False when the program ended before the signal was due


def run_and_signal(
    installation: Installation,
    message: bytes,
    delay: float,
    signum: int,
    chunk: int = 1 << 16,
    pause: float = 0.0,
    env: dict[str, str] | None = None,
) -> KilledRun:
    """Feed message (chunk by chunk, pausing between chunks) and the envelope; send signum after delay."""
    message_read, message_write = os.pipe()
    envelope_read, envelope_write = os.pipe()
    started = time.monotonic()
    process = subprocess.Popen(
        [str(installation.program)],
        stdin=message_read,
        stdout=envelope_read,
        stderr=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "QQ_STANDIN_DIR": str(installation.sink), **(env or {})},
        close_fds=True,
    )
    os.close(message_read)
    os.close(envelope_read)

    feeder = start_feeding(
        message_write, envelope_write, message, envelope("sender@example.org", "rcpt@example.com"),
        chunk=chunk, pause=pause,
    )
    signalled = False
    try:
        process.wait(delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signum)
        signalled = True
    code = process.wait(60)
    feeder.join(10)
    return KilledRun(code, time.monotonic() - started, signalled)


def wait_for_orphans(sink: Path, timeout: float = 10.0) -> None:
    """A next hop orphaned by a kill finishes on its own: wait until no stand-in temp file remains."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and list(sink.glob("tmp.*")):
        time.sleep(0.05)


def run_cleanup(installation: Installation) -> subprocess.CompletedProcess:
    return subprocess.run([str(installation.program), "-z"], capture_output=True, text=True, check=False, timeout=60)


_ = signal
