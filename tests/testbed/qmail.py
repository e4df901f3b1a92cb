"""Run the real qmail of the test bed: qmail-send delivering to a Maildir, qmail-smtpd under tcpserver.

tests/testbed/build.py builds and configures the bed's qmail (its own prefix, never /var/qmail); this
module starts the daemons, chooses the QMAILQUEUE program per connection (tcprules: tcpserver reads
the rules at every connection, so a switch needs no restart), talks SMTP to the loopback port and
waits for deliveries.

The bed's qmail is one per machine, so qmail-send is shared by every test session and benchmark that
runs at the same time: each user holds a shared lock while it needs qmail-send, and the last one
out stops it. Each user gets its own tcpserver on a free port with its own rules.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from harness import CONFIGURE, spool_work_files
from security_fixtures import world_python
from testbed.build import (
    CLAMDSCAN_CONFIG,
    MAILBOX_HOME,
    MAILBOX_USER,
    QMAIL,
    QMAIL_DAEMON_USER,
    QMAIL_LOG_USER,
    SCANNER_USER,
    SPAMD_SOCKET_LINK,
    TESTBED,
)

QMAIL_BIN = QMAIL / "bin"
QMAIL_QUEUE = QMAIL_BIN / "qmail-queue"
MAILDIR_NEW = MAILBOX_HOME / "Maildir" / "new"
RECIPIENT = f"{MAILBOX_USER}@localhost"
CONTROL_LOCK = TESTBED / "control.lock"  # held while starting or stopping qmail-send
USERS_LOCK = TESTBED / "users.lock"  # shared by every session that needs qmail-send
SIMSCAN_LOCK = TESTBED / "simscan.lock"  # held while simscan is pointed at one session's scanners
SEND_PIDFILE = TESTBED / "qmail-send.pid"
SEND_LOG = TESTBED / "qmail-send.log"
# Header lines qmail and this project put above the message as the client sent it.
TRACE_PREFIXES = (b"return-path:", b"delivered-to:", b"received:", b"x-qmail-scanner", b"x-spam-")


def _lock(path: Path, mode: int) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, mode)
    return fd


def _unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def alive_qmail_send(pid: int) -> bool:
    """True while pid is a qmail-send that has not exited (a zombie not yet reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    name = stat[stat.find("(") + 1 : stat.rfind(")")]
    state = stat[stat.rfind(")") + 2 : stat.rfind(")") + 3]
    return name == "qmail-send" and state != "Z"


def _running_send_pid() -> int:
    try:
        pid = int(SEND_PIDFILE.read_text())
    except (OSError, ValueError):
        return 0
    return pid if alive_qmail_send(pid) else 0


class QmailSend:
    """qmail-start ./Maildir/ as the rc script runs it; shared between concurrent users of the bed."""

    def __init__(self) -> None:
        self.users_fd = -1

    def start(self) -> QmailSend:
        control = _lock(CONTROL_LOCK, fcntl.LOCK_EX)
        try:
            self.users_fd = _lock(USERS_LOCK, fcntl.LOCK_SH)
            if not _running_send_pid():
                try:
                    self._spawn()
                except BaseException:
                    _unlock(self.users_fd)
                    self.users_fd = -1
                    raise
        finally:
            _unlock(control)
        return self

    def _spawn(self) -> None:
        log_owner = pwd.getpwnam(QMAIL_LOG_USER)
        SEND_LOG.touch()
        os.chown(SEND_LOG, log_owner.pw_uid, log_owner.pw_gid)
        # qmail-start runs the logger as qmaill; a plain append keeps the bed free of daemontools.
        logger = ["/bin/sh", "-c", f"exec cat >> {SEND_LOG}"]
        process = subprocess.Popen(
            [str(QMAIL_BIN / "qmail-start"), "./Maildir/", *logger],
            cwd=QMAIL,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # not in the test run's process group: a ^C there is not a crash here
            env={"PATH": f"{QMAIL_BIN}:/usr/bin:/bin"},  # the rc script's `env - PATH=...`
        )
        # qmail-start forks its helpers and execs qmail-send in its own process.
        deadline = time.monotonic() + 10
        while not alive_qmail_send(process.pid):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"qmail-send did not start; its log:\n{_tail(SEND_LOG)}")
            time.sleep(0.02)
        SEND_PIDFILE.write_text(f"{process.pid}\n")

    def stop(self) -> None:
        """Leave; the last user out stops qmail-send (TERM: it finishes its deliveries first)."""
        if self.users_fd < 0:
            return
        control = _lock(CONTROL_LOCK, fcntl.LOCK_EX)
        try:
            _unlock(self.users_fd)
            self.users_fd = -1
            last = os.open(USERS_LOCK, os.O_RDWR)
            try:
                fcntl.flock(last, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # others still use it
            finally:
                os.close(last)
            pid = _running_send_pid()
            if pid:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 30
                while alive_qmail_send(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)  # reap it when this process started it
            SEND_PIDFILE.unlink(missing_ok=True)
        finally:
            _unlock(control)


def _tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SmtpServer:
    """tcpserver running qmail-smtpd on a loopback port, as the bed's qmaild:nofiles, rules chosen by route()."""

    def __init__(self, directory: Path, max_connections: int = 20) -> None:
        self.directory = directory
        self.port = free_port()
        self.rules = directory / "tcp.smtp"
        self.rules_cdb = directory / "tcp.smtp.cdb"
        self.log = directory / "smtpd.log"
        self.max_connections = max_connections
        self.process: subprocess.Popen | None = None
        self.route(None)

    def route(self, queue: str | Path | None, **env: str) -> None:
        """Give the next connections this QMAILQUEUE program (None: qmail-queue itself) and variables."""
        assignments = {**({"QMAILQUEUE": str(queue)} if queue else {}), **env}
        for name, value in assignments.items():
            if '"' in value or "\n" in value or "," in name:
                raise ValueError(f"cannot put {name}={value!r} into tcprules")
        line = "127.0.0.1:allow" + "".join(f',{name}="{value}"' for name, value in assignments.items())
        self.rules.write_text(line + "\n:deny\n")
        with open(self.rules, "rb") as source:
            subprocess.run(
                ["tcprules", str(self.rules_cdb), str(self.directory / "tcp.smtp.tmp")],
                stdin=source,
                check=True,
                capture_output=True,
            )

    def start(self) -> SmtpServer:
        qmaild = pwd.getpwnam(QMAIL_DAEMON_USER)
        argv = [
            "tcpserver", "-v", "-R", "-H", "-l", "localhost", "-c", str(self.max_connections),
            "-x", str(self.rules_cdb), "-u", str(qmaild.pw_uid), "-g", str(qmaild.pw_gid),
            "127.0.0.1", str(self.port), str(QMAIL_BIN / "qmail-smtpd"),
        ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=QMAIL, start_new_session=True
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as probe:
                    if probe.recv(512).startswith(b"220"):
                        return self
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tcpserver did not answer on port {self.port}:\n{_tail(self.log)}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@dataclass
class SmtpReply:
    """The server's answer to DATA (or to the step that failed before it)."""

    code: int
    text: str

    @property
    def accepted(self) -> bool:
        return self.code == 250


def send(port: int, message: bytes, sender: str = "sender@example.org", recipients: tuple[str, ...] = (RECIPIENT,),
         timeout: float = 120.0) -> SmtpReply:  # fmt: skip
    """One SMTP session: HELO, MAIL, RCPT..., DATA, QUIT; returns the final reply."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example.org", timeout=timeout) as client:
        client.helo("client.example.org")
        code, text = client.mail(sender)
        if code != 250:
            return SmtpReply(code, text.decode("utf-8", "replace"))
        for recipient in recipients:
            code, text = client.rcpt(recipient)
            if code != 250:
                return SmtpReply(code, text.decode("utf-8", "replace"))
        # smtplib sends bytes as given; SMTP wants CRLF (qmail-smtpd refuses bare LF and stores LF).
        code, text = client.data(message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
        return SmtpReply(code, text.decode("utf-8", "replace"))


def unique_marker() -> str:
    return f"qs-{uuid.uuid4().hex}"


def wait_for_delivery(marker: str | bytes, timeout: float = 60.0) -> bytes:
    """The delivered message (from ~qmailtest/Maildir/new) containing marker; removed once read."""
    needle = marker.encode() if isinstance(marker, str) else marker
    deadline = time.monotonic() + timeout
    while True:
        found = find_delivered(needle)
        if found is not None:
            data = found.read_bytes()
            found.unlink(missing_ok=True)
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing with {needle!r} reached {MAILDIR_NEW} in {timeout} s:\n{_tail(SEND_LOG)}")
        time.sleep(0.05)


def find_delivered(needle: bytes) -> Path | None:
    for path in MAILDIR_NEW.iterdir():
        try:
            if needle in path.read_bytes():
                return path
        except FileNotFoundError:
            continue
    return None


def assert_not_delivered(marker: str, wait: float = 3.0) -> None:
    """Nothing with marker arrives within `wait` seconds (qmail-send delivers in well under that)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        assert find_delivered(marker.encode()) is None, f"{marker} was delivered"
        time.sleep(0.1)


def split_trace(delivered: bytes, sent: bytes) -> list[bytes]:
    """The header lines above the message as sent; fails unless the rest is byte-identical to it."""
    sent = sent.replace(b"\r\n", b"\n")
    assert delivered.endswith(sent), "the delivered message does not end with the message as sent"
    above = delivered[: len(delivered) - len(sent)]
    lines: list[bytes] = []
    for line in above.split(b"\n")[:-1]:
        if line[:1] in (b" ", b"\t") and lines:
            lines[-1] += b"\n" + line
        else:
            lines.append(line)
    return lines


@dataclass
class ScannerInstall:
    """This project installed for the bed: the setuid wrapper qmaild runs as QMAILQUEUE, and its spool."""

    prefix: Path
    wrapper: Path
    program: Path
    spool: Path

    def quarantined(self, kind: str) -> list[Path]:
        directory = self.spool / "quarantine" / kind / "new"
        return sorted(directory.iterdir()) if directory.exists() else []

    def work_files(self) -> list[Path]:
        return spool_work_files(self.spool)

    def remove(self) -> None:
        shutil.rmtree(self.prefix, ignore_errors=True)


def install_scanner(*configure_args: str) -> ScannerInstall:
    """configure.py --install into a public temp prefix: next hop the bed's qmail-queue, wrapper setuid qscand."""
    prefix = Path(tempfile.mkdtemp(prefix="qs-bed-", dir="/tmp"))
    prefix.chmod(0o755)
    argv = [
        # --qmaildir too: qmail-inject for notices and control/me for the host name come from the bed's qmail.
        sys.executable, str(CONFIGURE), "--prefix", str(prefix), "--qmaildir", str(QMAIL),
        "--qmail-queue-binary", str(QMAIL_QUEUE),
        "--output", str(prefix / "qmail-scanner-queue.py"), "--batch", "--quiet", "--install",
        "--python", world_python(), "--qs-user", SCANNER_USER, "--qs-group", SCANNER_USER,
    ]  # fmt: skip
    given = " ".join(configure_args)
    for option, default in (("--notify", "none"), ("--scanners", "none")):
        if option not in given:
            argv += [option, default]
    completed = subprocess.run([*argv, *configure_args], capture_output=True, text=True, check=False)
    wrapper = prefix / "bin" / "qmail-scanner-queue"
    if completed.returncode != 0 or not wrapper.exists():
        shutil.rmtree(prefix, ignore_errors=True)
        raise RuntimeError(f"configure failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
    return ScannerInstall(prefix, wrapper, prefix / "bin" / "qmail-scanner-queue.py", prefix / "spool")


@contextlib.contextmanager
def simscan_pointed_at(clamd_socket: str, spamd_socket: str | None = None):
    """Point simscan's compiled-in scanner paths at these daemons, holding the bed's simscan lock."""
    held = _lock(SIMSCAN_LOCK, fcntl.LOCK_EX)
    try:
        CLAMDSCAN_CONFIG.write_text(f"LocalSocket {clamd_socket}\n")
        CLAMDSCAN_CONFIG.chmod(0o644)
        SPAMD_SOCKET_LINK.unlink(missing_ok=True)
        if spamd_socket:
            SPAMD_SOCKET_LINK.symlink_to(spamd_socket)
        yield
    finally:
        _unlock(held)
