"""make demo's console: qs-console over the demo's records, served on loopback until `make demo-stop`.

After the samples ran, the demo's spool holds one record per sample (records/current.jsonl). This sets
up a console in the demo's prefix (SQLite in demo/console/data), loads the records once, adds an
administrator with a generated password, starts `qs-console serve` detached (its pid in
demo/console/serve.pid, its log in demo/console/serve.log) and reads every sample back through the
API, so what the demo prints is what the console holds. Standard library only (runs under the venv).
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QS_CONSOLE = ROOT / "contrib" / "qs-console"
# The console runs on Debian's Django (tests/install-deps.sh debian installs it), never the venv's.
SYSTEM_PYTHON = "/usr/bin/python3"
DEFAULT_PORT = 8025
ADMIN = "admin"
START_SECONDS = 60


class ConsoleProblem(Exception):
    """The demo's console could not be set up: the text says what happened."""


@dataclass(frozen=True)
class Shown:
    """One demo message as the console shows it."""

    sample: str
    console_id: int
    outcome: str  # in the demo's words: "queued", "queued, tagged as spam", "quarantined: <kind>"
    reason: str


@dataclass(frozen=True)
class DemoConsole:
    """The running demo console: its address, administrator, and the demo's messages read back."""

    url: str
    user: str
    password: str
    pid: int
    messages: list[Shown]


def directory(demo: Path) -> Path:
    """Where the demo's console keeps its data, pid file and log."""
    return demo / "console"


def stop(demo: Path) -> str:
    """Stop the demo's console if one runs (the pid file's process, only if it is that demo's serve)."""
    pid_file = directory(demo) / "serve.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return "no demo console runs"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        command = []
    # A pid file outlives a reboot: only a process that is this demo's serve is signalled.
    if str(directory(demo) / "data").encode() not in command or b"serve" not in command:
        pid_file.unlink(missing_ok=True)
        return "no demo console runs (a stale pid file removed)"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return f"the demo console (pid {pid}) stopped"


def _reap(pid: int) -> None:
    """Collect the exit of a serve this process started (a zombie still has /proc/PID)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def available() -> str:
    """"" when Debian's Django stack is there, else what is missing."""
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import django, waitress"], capture_output=True, check=False)
    return "" if probe.returncode == 0 else "python3-django or python3-waitress missing (tests/install-deps.sh debian)"


def records_host(spool: Path) -> str:
    """The host name the demo's records carry (the console releases only its own host's copies)."""
    with open(spool / "records" / "current.jsonl", encoding="utf-8") as records:
        return json.loads(records.readline())["host"]


def free_port(preferred: int) -> int:
    """The preferred loopback port when it is free, else any free one."""
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise ConsoleProblem("no free loopback port")


def qs_console(data: Path, *arguments: str, stdin: str = "") -> str:
    """Run one qs-console command on the demo's data dir; its output, or ConsoleProblem."""
    done = subprocess.run([SYSTEM_PYTHON, str(QS_CONSOLE), "--data-dir", str(data), *arguments], input=stdin,
                          capture_output=True, text=True, check=False, timeout=300)
    if done.returncode != 0:
        raise ConsoleProblem(f"qs-console {arguments[0]} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout + done.stderr


def start(demo: Path, spool: Path, release_tool: Path, samples: dict[str, str], port: int = DEFAULT_PORT
          ) -> DemoConsole:
    """Set the console up over the demo's spool, serve it detached, and read the samples back.

    `samples` maps each sample's Message-ID to the sample's file name.
    """
    home = directory(demo)
    home.mkdir(parents=True, exist_ok=True)
    data = home / "data"
    qs_console(data, "migrate", "--spooldir", str(spool), "--host", records_host(spool),
               "--release-tool", str(release_tool))
    qs_console(data, "load", "--once", "--settle", "0")  # the demo wrote its last record before this
    password = secrets.token_urlsafe(12)
    qs_console(data, "createuser", ADMIN, "--admin", stdin=password + "\n")
    port = free_port(port)
    with open(home / "serve.log", "ab") as log:
        server = subprocess.Popen([SYSTEM_PYTHON, str(QS_CONSOLE), "--data-dir", str(data), "serve", "--listen",
                                   f"127.0.0.1:{port}"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                  start_new_session=True, cwd="/")  # outlives make: its own session
    (home / "serve.pid").write_text(f"{server.pid}\n")
    client = Client(port)
    deadline = time.monotonic() + START_SECONDS
    while not client.answers():
        if server.poll() is not None or time.monotonic() > deadline:
            stop(demo)
            raise ConsoleProblem(f"qs-console serve did not answer on port {port} (see {home / 'serve.log'})")
        time.sleep(0.1)
    client.login(ADMIN, password)
    return DemoConsole(url=f"http://127.0.0.1:{port}/", user=ADMIN, password=password, pid=server.pid,
                       messages=read_back(client, samples))


def read_back(client: Client, samples: dict[str, str]) -> list[Shown]:
    """Every demo message as the console's API shows it (list, then each message's whole record)."""
    shown = []
    for item in client.get("/api/messages", limit="500")["messages"]:
        record = client.get(f"/api/messages/{item['id']}")
        sample = samples.get(record["message_id"], f"(not a demo sample: {record['message_id']!r})")
        shown.append(Shown(sample=sample, console_id=record["id"], outcome=in_demo_words(record),
                           reason=printable(record["reason"])))
    return sorted(shown, key=lambda message: message.sample)


def printable(text: str) -> str:
    """Text from a record on one line, control and format characters escaped (a reason may quote the mail)."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def in_demo_words(record: dict) -> str:
    """The console's outcome of a record in the words the demo's summary uses."""
    if record["outcome"] == "delivered":
        return "queued, tagged as spam" if record["spam_tagged"] else "queued"
    if record["outcome"] == "quarantined":
        return f"quarantined: {record['quarantine_dir'] or record['kind']}"  # the folder, as the demo names it
    return record["outcome"]


class Client:
    """The console's JSON API on loopback, with the session cookie of one login."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie = ""

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict, http.client.HTTPMessage]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if self.cookie:
            headers["Cookie"] = self.cookie
        try:
            connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
            response = connection.getresponse()
            answer = json.loads(response.read() or b"{}")
        finally:
            connection.close()
        return response.status, answer, response.headers

    def answers(self) -> bool:
        """True once the API answers (an anonymous request gets 401)."""
        try:
            return self.request("GET", "/api/me")[0] == 401
        except (OSError, ValueError):
            return False

    def login(self, user: str, password: str) -> None:
        status, answer, headers = self.request("POST", "/api/login", {"username": user, "password": password})
        if status != 200:
            raise ConsoleProblem(f"login as {user} refused: {status} {answer}")
        cookies = [header.partition(";")[0] for header in headers.get_all("Set-Cookie") or []]
        self.cookie = "; ".join(cookies)

    def get(self, path: str, **query: str) -> dict:
        status, answer, _ = self.request("GET", path + ("?" + urllib.parse.urlencode(query) if query else ""))
        if status != 200:
            raise ConsoleProblem(f"GET {path}: {status} {answer}")
        return answer
