"""Real scanner daemons for tests: clamd, spamd and rspamd on private sockets, plus broken servers.

Each daemon runs from the Debian packages with a private configuration in its own directory,
never the system instance. Startup is awaited by talking the daemon's protocol (PING / /ping),
not by waiting for a socket file: spamd creates its socket before it can answer.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
CLAMAV_TESTFILES = Path("/usr/share/clamav-testfiles")
CLAM_EXE_SIGNATURE = "ClamAV-Test-File"
STARTUP_SECONDS: dict[str, float] = {}  # daemon name -> seconds until it answered


def _private_dir(prefix: str) -> Path:
    """A fresh dir outside pytest's 0700 tree, so daemons running as other users can use it."""
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    directory.chmod(0o755)
    return directory


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_signature_db(directory: Path) -> Path:
    """EICAR as a body signature and clam.exe by MD5: ClamAV unpacks the rest of the samples itself."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "qstest.ndb").write_text(f"Eicar-Test-Signature:0:*:{EICAR.hex()}\n")
    clam_exe = (CLAMAV_TESTFILES / "clam.exe").read_bytes()
    (directory / "qstest.hdb").write_text(f"{hashlib.md5(clam_exe).hexdigest()}:{len(clam_exe)}:{CLAM_EXE_SIGNATURE}\n")
    return directory


def _wait(what: str, ready, process: subprocess.Popen, timeout: float, log: Path | None) -> float:
    """Poll ready() until true; fail with the daemon's log when it exits or takes too long."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            text = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {process.returncode} during startup:\n{text}")
        try:
            if ready():
                seconds = time.monotonic() - started
                STARTUP_SECONDS[what] = round(seconds, 2)
                return seconds
        except OSError:
            pass
        time.sleep(0.05)
    process.kill()
    text = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not answer within {timeout} s:\n{text}")


def _stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def unix_exchange(path: str, request: bytes, timeout: float = 2.0) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
        return reply


class PrivateDaemon:
    """A daemon process of our own in a private directory: stopped, then removed with it."""

    process: subprocess.Popen | None = None
    directory: Path
    program = ""

    @classmethod
    def require(cls) -> None:
        """Skip with a clear reason where the daemon is not installed (CI=true turns that into a failure)."""
        if not shutil.which(cls.program, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
            pytest.skip(f"{cls.program} is not installed: `make test` as root installs it (tests/install-deps.sh)")

    def stop(self) -> None:
        if self.process:
            _stop(self.process)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class ClamdServer(PrivateDaemon):
    """A private clamd: unix socket (and optionally TCP), test signatures, chosen StreamMaxLength."""

    program = "clamd"

    def __init__(
        self, name: str = "clamd", stream_max_length: str = "25M", tcp: bool = False, read_timeout: int = 0
    ) -> None:
        """read_timeout: clamd's ReadTimeout, which also ends an idle IDSESSION (0: clamd's default, 120 s)."""
        self.name = name
        self.directory = _private_dir(f"qs-{name}-")
        self.socket_path = str(self.directory / "clamd.sock")
        self.tcp_port = free_tcp_port() if tcp else 0
        self.database = write_signature_db(self.directory / "db")
        self.config_path = self.directory / "clamd.conf"
        lines = [
            f"LocalSocket {self.socket_path}",
            "LocalSocketMode 666",
            f"DatabaseDirectory {self.database}",
            "Foreground yes",
            "User root",
            f"LogFile {self.directory / 'clamd.log'}",
            f"StreamMaxLength {stream_max_length}",
            f"TemporaryDirectory {self.directory}",
            "MaxThreads 4",
        ]
        if self.tcp_port:
            lines += [f"TCPSocket {self.tcp_port}", "TCPAddr 127.0.0.1"]
        if read_timeout:
            lines.append(f"ReadTimeout {read_timeout}")
        self.config_path.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen | None = None
        self.startup_seconds = 0.0

    @property
    def tcp_address(self) -> str:
        return f"127.0.0.1:{self.tcp_port}"

    def start(self) -> ClamdServer:
        log = self.directory / "clamd.log"
        self.process = subprocess.Popen(
            ["clamd", "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        self.startup_seconds = _wait(self.name, self.answers, self.process, 60, log)
        return self

    def answers(self) -> bool:
        return unix_exchange(self.socket_path, b"zPING\0") == b"PONG\0"


class SpamdServer(PrivateDaemon):
    """A private `spamd -L -x` on a unix socket, children running as nobody."""

    program = "spamd"

    def __init__(self, name: str = "spamd", timeout: int = 0, allow_tell: bool = False) -> None:
        """timeout: spamd's --timeout-tcp, how long it waits for a client's request, in seconds (0: its default).

        allow_tell: spamd --allow-tell, learning (`spamc -L`) into a Bayes database of its own in the private dir.
        """
        self.name = name
        self.timeout = timeout
        self.allow_tell = allow_tell
        self.directory = _private_dir(f"qs-{name}-")
        self.socket_path = str(self.directory / "spamd.sock")
        self.log_path = self.directory / "spamd.log"
        self.process: subprocess.Popen | None = None
        self.startup_seconds = 0.0

    def start(self) -> SpamdServer:
        argv = [
            "spamd", "-L", "-x", "-u", "nobody", "--max-children=3", "--min-children=1",
            f"--socketpath={self.socket_path}", "--socketmode=0666",
            f"--pidfile={self.directory / 'spamd.pid'}", "-s", "stderr",
        ]
        if self.timeout:
            argv.append(f"--timeout-tcp={self.timeout}")
        if self.allow_tell:
            # The children run as nobody, whose home (for the default ~/.spamassassin/bayes) does not exist.
            (self.directory / "bayes").mkdir()
            shutil.chown(self.directory / "bayes", "nobody")
            argv += ["--allow-tell", f"--cf=bayes_path {self.directory / 'bayes' / 'bayes'}"]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.startup_seconds = _wait(self.name, self.answers, self.process, 60, self.log_path)
        return self

    def answers(self) -> bool:
        return b"PONG" in unix_exchange(self.socket_path, b"PING SPAMC/1.5\r\n\r\n", 5.0)


# Rules that make Rspamd's actions reachable without network: a subject keyword adds a fixed score.
RSPAMD_TEST_RULES = """
local reconf = config['regexp']
reconf['QS_TEST_ADD_HEADER'] = {
  re = 'Subject=/QS-TEST-ADD-HEADER/i', score = 8.0, description = 'test keyword: add header', group = 'qs_test',
}
reconf['QS_TEST_GREYLIST'] = {
  re = 'Subject=/QS-TEST-GREYLIST/i', score = 4.5, description = 'test keyword: greylist', group = 'qs_test',
}
"""
# Modules that ask DNS or Redis: without network they add failure symbols and make results vary.
RSPAMD_DISABLED_MODULES = (
    "rbl", "spf", "dkim", "dmarc", "asn", "mx_check", "fuzzy_check", "hfilter", "phishing", "surbl",
    "dcc", "emails", "whitelist", "greylist", "neural", "reputation", "ratelimit", "replies", "rspamd_update",
    "arc", "url_redirector", "history_redis", "multimap",
)


class RspamdServer(PrivateDaemon):
    """A private rspamd normal worker on 127.0.0.1:<free port> (and a unix socket), running as _rspamd."""

    program = "rspamd"

    def __init__(self, name: str = "rspamd") -> None:
        self.name = name
        self.directory = _private_dir(f"qs-{name}-")
        self.port = free_tcp_port()
        self.socket_path = str(self.directory / "run" / "normal.sock")
        for sub in ("local.d", "override.d", "db", "run", "log"):
            (self.directory / sub).mkdir()
        (self.directory / "override.d" / "worker-normal.inc").write_text(
            f'bind_socket = "127.0.0.1:{self.port}";\nbind_socket = "{self.socket_path} mode=0666";\ncount = 1;\n'
        )
        for worker in ("controller", "proxy"):
            (self.directory / "override.d" / f"worker-{worker}.inc").write_text(
                f'enabled = false;\nbind_socket = "{self.directory / "run" / worker}.sock";\n'
            )
        for module in RSPAMD_DISABLED_MODULES:
            (self.directory / "local.d" / f"{module}.conf").write_text("enabled = false;\n")
        dns_nowhere = 'dns { nameserver = ["127.0.0.1:1"]; timeout = 0.1s; }\n'
        (self.directory / "local.d" / "options.inc").write_text(dns_nowhere)
        (self.directory / "rspamd.local.lua").write_text(RSPAMD_TEST_RULES)
        shutil.chown(self.directory, "_rspamd", "_rspamd")
        for path in self.directory.rglob("*"):
            shutil.chown(path, "_rspamd", "_rspamd")
        self.process: subprocess.Popen | None = None
        self.startup_seconds = 0.0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "log" / "rspamd.log"

    def start(self) -> RspamdServer:
        directory = self.directory
        argv = [
            "rspamd", "-f", "-u", "_rspamd", "-g", "_rspamd",
            "--var", f"LOCAL_CONFDIR={directory}", "--var", f"DBDIR={directory / 'db'}",
            "--var", f"RUNDIR={directory / 'run'}", "--var", f"LOGDIR={directory / 'log'}",
            "-c", "/etc/rspamd/rspamd.conf",
        ]
        log = directory / "log" / "stdout.log"
        with open(log, "wb") as output:
            self.process = subprocess.Popen(argv, stdout=output, stderr=output, stdin=subprocess.DEVNULL)
        self.startup_seconds = _wait(self.name, self.answers, self.process, 120, log)
        return self

    def answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
        return b"pong" in reply


class FakeServer:
    """A unix-socket server that misbehaves on purpose.

    mode "silent": accepts and reads but never answers; "garbage": answers `reply` and closes;
    "close-mid-reply": reads the request, sends the first half of `reply`, closes.
    """

    def __init__(self, mode: str, reply: bytes = b"", read_request: bool = True) -> None:
        self.mode = mode
        self.reply = reply
        self.read_request = read_request
        self.directory = _private_dir(f"qs-fake-{mode}-")
        self.socket_path = str(self.directory / "fake.sock")
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(self.socket_path)
        self.listener.listen(16)
        self.connections: list[socket.socket] = []
        self.accepted = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self.connections.append(connection)
            threading.Thread(target=self._handle, args=(connection,), daemon=True).start()

    def _handle(self, connection: socket.socket) -> None:
        try:
            connection.settimeout(30)
            if self.mode == "silent":
                while connection.recv(65536):
                    pass
                time.sleep(30)
                return
            if self.read_request:
                self._read_some(connection)
            if self.mode == "garbage":
                connection.sendall(self.reply)
            elif self.mode == "close-mid-reply":
                connection.sendall(self.reply[: len(self.reply) // 2])
            connection.close()
        except OSError:
            pass

    @staticmethod
    def _read_some(connection: socket.socket) -> None:
        """Read until the client shuts down writing or goes quiet for a moment."""
        connection.settimeout(0.3)
        try:
            while connection.recv(65536):
                pass
        except socket.timeout:
            pass
        connection.settimeout(30)

    def close(self) -> None:
        self.stopping = True
        self.listener.close()
        for connection in self.connections:
            try:
                connection.close()
            except OSError:
                pass
        shutil.rmtree(self.directory, ignore_errors=True)


_dead_dirs: list[Path] = []


@atexit.register
def _remove_dead_dirs() -> None:
    for directory in _dead_dirs:
        shutil.rmtree(directory, ignore_errors=True)


def dead_socket_path() -> str:
    """A path where a unix socket was, but nothing listens any more (connection refused)."""
    directory = _private_dir("qs-dead-")
    _dead_dirs.append(directory)
    path = str(directory / "dead.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.close()
    return path


@pytest.fixture(scope="session", name="clamd_server")
def clamd_server_fixture():
    ClamdServer.require()
    server = ClamdServer("clamd", tcp=True).start()
    yield server
    server.remove()


@pytest.fixture(scope="session", name="clamd_small_stream")
def clamd_small_stream_fixture():
    """A clamd whose StreamMaxLength is 100 KiB, to see the over-limit handling."""
    ClamdServer.require()
    server = ClamdServer("clamd-small", stream_max_length="100K").start()
    yield server
    server.remove()


# clamd's ReadTimeout in the quick-idle fixture: an idle session ends after this (and up to a second more).
QUICK_IDLE_SECONDS = 2


@pytest.fixture(scope="session", name="clamd_quick_idle")
def clamd_quick_idle_fixture():
    """A clamd that ends an idle IDSESSION after QUICK_IDLE_SECONDS, as a real one does after ReadTimeout."""
    ClamdServer.require()
    server = ClamdServer("clamd-quick-idle", read_timeout=QUICK_IDLE_SECONDS).start()
    yield server
    server.remove()


@pytest.fixture(name="clamd_disposable")
def clamd_disposable_fixture():
    """A clamd a test may stop."""
    ClamdServer.require()
    server = ClamdServer("clamd-disposable").start()
    yield server
    server.remove()


@pytest.fixture(scope="session", name="spamd_server")
def spamd_server_fixture():
    SpamdServer.require()
    server = SpamdServer().start()
    yield server
    server.remove()


@pytest.fixture(scope="session", name="rspamd_server")
def rspamd_server_fixture():
    RspamdServer.require()
    server = RspamdServer().start()
    yield server
    server.remove()


@pytest.fixture(name="silent_server")
def silent_server_fixture():
    server = FakeServer("silent")
    yield server
    server.close()


@pytest.fixture(name="fake_server_factory")
def fake_server_factory_fixture():
    servers: list[FakeServer] = []

    def make(mode: str, reply: bytes = b"", read_request: bool = True) -> FakeServer:
        server = FakeServer(mode, reply, read_request)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def startup_report() -> str:
    """`clamd 0.21 s, spamd 1.4 s, ...` for the session summary."""
    return ", ".join(f"{name} {seconds} s" for name, seconds in STARTUP_SECONDS.items())

