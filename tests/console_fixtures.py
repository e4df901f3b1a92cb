"""The console under test: records in format 1, qs-console run by Debian's /usr/bin/python3, a private PostgreSQL.

The console runs with Debian's Django, psycopg2 and waitress (never the test venv's modules); the tests read its
databases with tools of their own: Python's sqlite3 and PostgreSQL's psql.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QS_CONSOLE = ROOT / "contrib" / "qs-console"
SYSTEM_PYTHON = "/usr/bin/python3"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_ACCOUNT = "postgres"
ADMIN_PASSWORD = "correct horse battery staple"
USER_PASSWORD = "a recipient's own passphrase"
NULL = "<NULL>"  # how psql prints SQL NULL for these tests


def console_ready() -> None:
    """Skip (a failure under CI=true, see conftest) when Debian's Django stack is not installed."""
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import django, psycopg2, waitress"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("python3-django, python3-psycopg2 or python3-waitress missing (tests/install-deps.sh)")


def make_record(number: int, host: str = "mx1.example.net", **overrides) -> dict:
    """A version 1 record with every key filled in, distinct per number."""
    record = {
        "v": 1, "id": f"{host}:17330{number:08d}.{number}", "time": 1_733_000_000.0 + number, "host": host,
        "queue_id": f"17330{number:08d}.{number}", "client_ip": f"192.0.2.{number % 250 + 1}",
        "helo": "client.example.com", "auth_user": "", "sender": f"Sender{number % 10}@Senders.example",
        "recipients": [f"user{number % 3}@example.org", f"list{number % 5}@lists.example.org"],
        "subject": f"report {number}", "message_id": f"<{number}@client.example.com>", "size": 1000 + number,
        "outcome": "delivered", "reason": "", "rule": "", "kind": "",
        "scanners": [{"name": "clamd", "answer": "clean", "seconds": 0.012}], "spam_score": 1.5,
        "spam_tagged": False, "attachments": [{"name": "a.pdf", "type": "application/pdf", "size": 100}],
        "quarantine_id": "", "quarantine_dir": "", "readings": [], "skipped": [], "trace": f"trace {number}",
    }
    record.update(overrides)
    return record


def record_line(record: dict) -> bytes:
    """One record as the writer writes it: a JSON line."""
    return json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"


def append_record(records_dir: Path, record: dict) -> None:
    """Append as the mail path does: open current.jsonl by name, one O_APPEND write, close."""
    fd = os.open(records_dir / "current.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o640)
    try:
        os.write(fd, record_line(record))
    finally:
        os.close(fd)


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Console:
    """One console data directory and the spool its loader reads."""

    data_dir: Path
    spooldir: Path
    db_url: str = ""
    database: object = None  # PostgresDatabase for PostgreSQL; None for SQLite

    @property
    def records(self) -> Path:
        return self.spooldir / "records"

    def command(self, *arguments: str) -> list[str]:
        return [SYSTEM_PYTHON, str(QS_CONSOLE), "--data-dir", str(self.data_dir), *arguments]

    def run(self, *arguments: str, stdin: str = "", check: bool = True, timeout: float = 120
            ) -> subprocess.CompletedProcess:
        done = subprocess.run(self.command(*arguments), input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"qs-console {' '.join(arguments)} exited {done.returncode}:\n{done.stderr[-3000:]}")
        return done

    def start(self, *arguments: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        return subprocess.Popen(self.command(*arguments), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=None if env is None else {**os.environ, **env})

    def query(self, sql: str) -> list[tuple]:
        """Rows from the console's database, read by the test's own client."""
        if self.database is not None:
            return self.database.query(sql)
        with sqlite3.connect(f"file:{self.data_dir / 'console.sqlite3'}?mode=ro", uri=True, timeout=30) as db:
            return [tuple(str(value) if value is not None else None for value in row)
                    for row in db.execute(sql).fetchall()]

    def count(self, table: str = "console_message") -> int:
        return int(self.query(f"SELECT count(*) FROM {table}")[0][0])


@dataclass
class PostgresCluster:
    """A private PostgreSQL 15 cluster: its own data dir, a unix socket in a private dir, no TCP."""

    base: Path
    port: int
    superuser_password: str
    account: str | None = None
    options: str = ""
    databases: list[str] = field(default_factory=list)

    def pg_ctl(self, *arguments: str) -> None:
        """pg_ctl on this cluster as its account; a failure fails with the server's log."""
        done = _as_account(self.account, [str(PG_BIN / "pg_ctl"), "-D", str(self.base / "data"), "-l",
                                          str(self.base / "log"), "-w", "-t", "60", *arguments])
        if done.returncode != 0:
            log = (self.base / "log").read_text(errors="replace") if (self.base / "log").exists() else ""
            raise RuntimeError(f"pg_ctl {' '.join(arguments)} failed: {done.stderr}\n{log[-3000:]}")

    def stop(self) -> None:
        """Stop the cluster and remove its files."""
        _as_account(self.account, [str(PG_BIN / "pg_ctl"), "-D", str(self.base / "data"), "-m", "fast", "-w", "stop"])
        shutil.rmtree(self.base, ignore_errors=True)

    @property
    def socket_dir(self) -> Path:
        return self.base / "socket"

    def psql(self, sql: str, database: str = "postgres", user: str = "postgres", password: str = "") -> str:
        environment = dict(os.environ, PGPASSWORD=password or self.superuser_password)
        done = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-P", f"null={NULL}",
                               "-h", str(self.socket_dir), "-p", str(self.port), "-U", user, "-d", database, "-c", sql],
                              capture_output=True, text=True, env=environment, timeout=60)
        if done.returncode != 0:
            raise AssertionError(f"psql: {done.stderr}")
        return done.stdout

    def new_database(self, name: str) -> PostgresDatabase:
        """An empty database owned by a login role of the same name with a password."""
        password = f"pw-{name}-{os.getpid()}"
        self.psql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        self.psql(f"CREATE DATABASE {name} OWNER {name}")
        self.databases.append(name)
        host = urllib.parse.quote(str(self.socket_dir), safe="")
        url = f"postgresql://{name}:{urllib.parse.quote(password, safe='')}@{host}:{self.port}/{name}"
        return PostgresDatabase(cluster=self, name=name, password=password, url=url)


@dataclass
class PostgresDatabase:
    """One database in the private cluster, and the URL qs-console is given for it."""

    cluster: PostgresCluster
    name: str
    password: str
    url: str

    def query(self, sql: str) -> list[tuple]:
        output = self.cluster.psql(sql, database=self.name, user=self.name, password=self.password)
        return [tuple(None if value == NULL else value for value in line.split("|")) for line in output.splitlines()]


def _as_account(account: str | None, command: list[str], **keywords) -> subprocess.CompletedProcess:
    """Run a PostgreSQL tool as the unprivileged account (PostgreSQL refuses to run as root)."""
    if account is not None:
        command = ["runuser", "-u", account, "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, **keywords)


def start_private_postgres(fsync: bool = False) -> PostgresCluster:
    """Debian's PostgreSQL 15 as a private cluster, made with initdb and started with pg_ctl as `postgres`.

    Unix socket only (listen_addresses empty) in a directory of its own; passwords checked (scram-sha-256).
    fsync off for the tests (nothing there must outlive a crash of the machine); on for benchmarks.
    """
    account = PG_ACCOUNT if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="qs-console-pg-", dir="/tmp"))
    password = f"super-{os.getpid()}-{time.time_ns()}"
    (base / "socket").mkdir()
    (base / "password").write_text(password + "\n")
    if account is not None:
        entry = pwd.getpwnam(account)
        for path in (base, base / "socket", base / "password"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    base.chmod(0o755)  # the console (root in the tests) reaches the socket; the data dir itself is 0700
    port = free_port()
    options = f"-k {base / 'socket'} -p {port} -c listen_addresses='' -c fsync={'on' if fsync else 'off'}"
    cluster = PostgresCluster(base=base, port=port, superuser_password=password, account=account, options=options)
    initdb = _as_account(account, [str(PG_BIN / "initdb"), "-D", str(base / "data"), "-U", "postgres", "-E", "UTF8",
                                   "--auth-local=scram-sha-256", "--auth-host=reject",
                                   f"--pwfile={base / 'password'}", "--no-sync"])
    if initdb.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {initdb.stderr}")
    try:
        cluster.pg_ctl("-o", options, "start")
    except RuntimeError:
        shutil.rmtree(base, ignore_errors=True)
        raise
    return cluster


@pytest.fixture(scope="session")
def postgres_cluster():
    """The private PostgreSQL cluster for the session's tests, stopped and removed at the end."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"{PG_BIN}/initdb missing: tests/install-deps.sh installs postgresql-15")
    cluster = start_private_postgres()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_kind(request) -> str:
    """Each test that takes it runs once on SQLite and once on PostgreSQL."""
    return request.param


@pytest.fixture
def console(request, tmp_path, database_kind) -> Console:
    """A migrated console on the chosen database, its spool's records/ directory made as the mail path makes it."""
    return migrated_console(request, tmp_path, database_kind)


def migrated_console(request, base: Path, database_kind: str) -> Console:
    """A migrated console under `base` on SQLite or on a new database of the session's PostgreSQL cluster."""
    console_ready()
    spooldir = base / "spool"
    (spooldir / "records").mkdir(parents=True, mode=0o750)
    made = Console(data_dir=base / "console", spooldir=spooldir)
    if database_kind == "postgresql":
        cluster = request.getfixturevalue("postgres_cluster")
        made.database = cluster.new_database(f"qsc_{len(cluster.databases)}_{os.getpid()}")
        made.db_url = made.database.url
    made.run("migrate", "--db", made.db_url, "--spooldir", str(spooldir))
    return made


def create_users(console: Console, recipients: dict[str, list[str]]) -> None:
    """`admin` (ADMIN_PASSWORD) and a recipient account per name with its addresses (USER_PASSWORD)."""
    console.run("createuser", "admin", "--admin", stdin=ADMIN_PASSWORD + "\n")
    for name, addresses in recipients.items():
        options = [word for address in addresses for word in ("--recipient", address)]
        console.run("createuser", name, *options, stdin=USER_PASSWORD + "\n")


@contextmanager
def serving(console: Console) -> Iterator[int]:
    """`qs-console serve` on a free loopback port, until the block ends; its port."""
    port = free_port()
    server = console.start("serve", "--listen", f"127.0.0.1:{port}")
    try:
        wait_for(lambda: server.poll() is not None or api_answers(port), 30, "qs-console serve")
        assert server.poll() is None, server.communicate()[1]
        yield port
    finally:
        stop(server)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll until predicate() is true; fail saying what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stop(process: subprocess.Popen, signum: int = signal.SIGTERM, timeout: float = 30) -> tuple[int, str]:
    """Signal a process and collect its exit code and stderr."""
    if process.poll() is None:
        process.send_signal(signum)
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    return process.returncode, stderr


class Client:
    """An HTTP client with its own cookies, talking to the console on loopback."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}
        self.csrf = ""

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        data = response.read()
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            value = rest.partition(";")[0]
            if value and "Max-Age=0" not in header:
                self.cookies[name.strip()] = value
            else:
                self.cookies.pop(name.strip(), None)
        connection.close()
        parsed = json.loads(data) if response.headers.get("Content-Type", "").startswith("application/json") else data
        return response.status, parsed, response.headers

    def get(self, path: str, **query):
        return self.request("GET", path + ("?" + urllib.parse.urlencode(query) if query else ""))

    def login(self, username: str, password: str):
        status, body, headers = self.request("POST", "/api/login", json.dumps(
            {"username": username, "password": password}).encode(), {"Content-Type": "application/json"})
        if status == 200:
            self.csrf = body["csrf_token"]
        return status, body, headers


def api_answers(port: int) -> bool:
    """True once the console's API answers an anonymous request (with 401)."""
    try:
        return Client(port).get("/api/me")[0] == 401
    except OSError:
        return False
