"""Several hosts, one console: two installations of the real program (hosts mx-a and mx-b, each its own spool,
quarantine and qmail-queue) load into one private PostgreSQL database; the console served on mx-a acts on mx-b's
quarantine only through mx-b's own loader (ActionRequest rows), never by reaching mx-b's files."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from console_fixtures import (
    ADMIN_PASSWORD,
    Client,
    Console,
    api_answers,
    console_ready,
    free_port,
    stop,
    wait_for,
)
from harness import Installation, envelope, install
from scanner_fixtures import with_attachment

# A console waits this long for another host's loader to take a request (console.json remote_answer_seconds).
ANSWER_SECONDS = 4
LOADER = ("load", "--poll", "0.2", "--settle", "0.3")
HELD = b"MZ\x90\x00" + b"\x00" * 200  # a .pif attachment: held by the internal policy, no scanner needed


@dataclass
class Host:
    """One mail host: its installation (spool, quarantine, the stand-in qmail-queue's sink) and its console dir."""

    name: str
    installation: Installation
    console: Console
    loader: object = None

    def quarantine(self, subject: str, sender: str, recipient: str) -> None:
        """Mail the installed program holds in its quarantine (the real program, run as qmail-smtpd runs it)."""
        message = with_attachment("holiday.pif", HELD).replace(b"Subject: attachment", f"Subject: {subject}".encode())
        result = self.installation.run(message, envelope(sender, recipient))
        assert result.exit_code == 0, result.stderr

    def start_loader(self, **env: str) -> None:
        # qs-quarantine release runs this host's qmail-queue: the stand-in, writing into this host's sink.
        self.loader = self.console.start(*LOADER, env={"QQ_STANDIN_DIR": str(self.installation.sink), **env})

    def stop_loader(self, signum: int = signal.SIGTERM) -> str:
        code, stderr = stop(self.loader, signum)
        assert code == (-signum if signum == signal.SIGKILL else 0), stderr
        return stderr

    def queued(self) -> set[Path]:
        return set(self.installation.sink.glob("*.msg"))

    def stored(self, detail: dict, folder: str = "new") -> list[Path]:
        """The copies of a message in this host's quarantine maildir folder (cur/ has the release's flag suffix)."""
        directory = self.installation.spool / "quarantine" / detail["quarantine_dir"] / folder
        return sorted(directory.glob(detail["quarantine_id"] + "*"))


def make_host(name: str, base: Path, standin: Path, database) -> Host:
    """Install the program for host `name` (qmail's control/me names it) and point a console dir at the database."""
    qmaildir = base / "qmail"
    (qmaildir / "control").mkdir(parents=True)
    (qmaildir / "control" / "me").write_text(name + "\n")
    installation = install(base / "qs", standin, "--qmaildir", str(qmaildir))
    (installation.spool / "records" / "current.jsonl").unlink(missing_ok=True)  # the install check's own message
    console = Console(data_dir=base / "console", spooldir=installation.spool, db_url=database.url, database=database)
    console.run("migrate", "--db", database.url, "--spooldir", str(installation.spool), "--host", name,
                "--release-tool", str(installation.prefix / "bin" / "qs-quarantine"))
    settings = json.loads((console.data_dir / "console.json").read_text())
    (console.data_dir / "console.json").write_text(json.dumps({**settings, "remote_answer_seconds": ANSWER_SECONDS}))
    return Host(name=name, installation=installation, console=console)


@pytest.fixture
def two_hosts(tmp_path, standin, postgres_cluster):
    """mx-a and mx-b sharing one PostgreSQL database, each host's loader running; the console served on mx-a."""
    console_ready()
    database = postgres_cluster.new_database(f"qsc_hosts_{len(postgres_cluster.databases)}_{os.getpid()}")
    a = make_host("mx-a.example", tmp_path / "a", standin, database)
    b = make_host("mx-b.example", tmp_path / "b", standin, database)
    a.console.run("createuser", "admin", "--admin", stdin=ADMIN_PASSWORD + "\n")
    a.start_loader()
    b.start_loader()
    port = free_port()
    # The console's own environment reaches mx-a's qmail-queue only: whatever mx-b delivers, mx-b's loader delivered.
    server = a.console.start("serve", "--listen", f"127.0.0.1:{port}",
                             env={"QQ_STANDIN_DIR": str(a.installation.sink)})
    try:
        wait_for(lambda: api_answers(port), 30, "qs-console serve on mx-a")
        admin = Client(port)
        assert admin.login("admin", ADMIN_PASSWORD)[0] == 200
        yield a, b, admin
    finally:
        stop(server)
        for host in (a, b):
            if host.loader is not None and host.loader.poll() is None:
                stop(host.loader)


def quarantined(admin: Client, count: int) -> dict[str, dict]:
    """Wait until the API lists `count` quarantined messages; each one's full record by subject."""
    def listed():
        items = admin.get("/api/messages", outcome="quarantined")[1]["messages"]
        return items if len(items) >= count else None

    items = wait_for(listed, 60, f"{count} quarantined messages in the console")
    return {item["subject"]: admin.get(f"/api/messages/{item['id']}")[1] for item in items}


def message_state(console: Console, item: dict) -> str:
    """What the console records of a quarantined copy's fate (Message.state)."""
    return console.query(f"SELECT state FROM console_message WHERE id = {int(item['id'])}")[0][0]


def post(admin: Client, path: str):
    status, answer, _ = admin.request("POST", path, headers={"X-CSRFToken": admin.csrf})
    return status, answer


def test_an_action_through_host_a_is_done_by_host_bs_loader_on_host_bs_quarantine(two_hosts):
    a, b, admin = two_hosts
    a.quarantine("held on a", "alice@example.org", "ann@example.com")
    b.quarantine("release me", "mallory@example.net", "bob@example.com")
    b.quarantine("delete me", "mallory@example.net", "carol@example.com")
    messages = quarantined(admin, 3)
    assert {subject: item["host"] for subject, item in messages.items()} == {
        "held on a": "mx-a.example", "release me": "mx-b.example", "delete me": "mx-b.example"}
    release, delete = messages["release me"], messages["delete me"]
    assert len(b.stored(release)) == 1 and len(b.stored(delete)) == 1

    # Release: mx-b's loader hands mx-b's copy to mx-b's qmail-queue with the original envelope.
    a_before, b_before = a.queued(), b.queued()
    status, answer = post(admin, f"/api/messages/{release['id']}/release")
    assert status == 200, answer
    assert answer["released"] is True and "bob@example.com" in answer["detail"]
    [queued] = b.queued() - b_before
    assert queued.read_bytes().startswith(b"X-Qmail-Scanner-Released: ")
    assert b"Subject: release me" in queued.read_bytes()
    assert queued.with_suffix(".env").read_bytes() == envelope("mallory@example.net", "bob@example.com")
    assert a.queued() == a_before
    assert b.stored(release) == [] and len(b.stored(release, "cur")) == 1  # marked released (cur/, flag S)
    assert message_state(a.console, release) == "released"

    # Download: the bytes cross the database once, and are not left in it.
    status, data, headers = admin.request("GET", f"/api/messages/{delete['id']}/download")
    assert status == 200 and headers["Content-Type"] == "message/rfc822"
    [stored] = b.stored(delete)
    assert data == stored.read_bytes()

    # Delete: mx-b's copy is gone, nothing delivered anywhere.
    status, answer = post(admin, f"/api/messages/{delete['id']}/delete")
    assert status == 200, answer
    assert b.stored(delete) == [] and b.stored(delete, "cur") == []
    assert b.queued() == b_before | {queued} and a.queued() == a_before

    # The local path still works on the shared database: mx-a's own message, mx-a's own qmail-queue.
    status, answer = post(admin, f"/api/messages/{messages['held on a']['id']}/release")
    assert status == 200, answer
    assert len(a.queued() - a_before) == 1

    database = a.console
    assert database.query("SELECT host, verb, state, requested_by, finished IS NOT NULL, data IS NULL "
                          "FROM console_actionrequest ORDER BY id") == [
        ("mx-b.example", "release", "done", "admin", "t", "t"),
        ("mx-b.example", "fetch", "done", "admin", "t", "t"),
        ("mx-b.example", "delete", "done", "admin", "t", "t")]
    audit = database.query("SELECT action, result FROM console_auditlog WHERE action <> 'login' ORDER BY id")
    assert audit == [("release", "ok"), ("download", "ok"), ("delete", "ok"), ("release", "ok")]
    b_log = b.stop_loader()
    assert "release" in b_log and "done" in b_log


def test_a_host_whose_loader_is_stopped_answers_504_and_the_request_is_never_run_later(two_hosts):
    a, b, admin = two_hosts
    b.quarantine("late", "mallory@example.net", "dave@example.com")
    late = quarantined(admin, 1)["late"]
    b.stop_loader()
    before = b.queued()
    started = time.monotonic()
    status, answer = post(admin, f"/api/messages/{late['id']}/release")
    waited = time.monotonic() - started
    assert status == 504 and answer["error"] == "mx-b.example has not answered (is its qs-console load running?)"
    assert ANSWER_SECONDS <= waited < ANSWER_SECONDS + 10, waited
    assert a.console.query("SELECT state, detail FROM console_actionrequest") == [("failed", answer["error"])]

    # A console that died while waiting leaves its request pending: an hour old, it is not done either.
    a.console.query("INSERT INTO console_actionrequest (host, verb, quarantine_id, \"to\", requested, requested_by, "
                    "state, detail) VALUES ('mx-b.example', 'release', '" + late["quarantine_id"] + "', '', "
                    "now() - interval '1 hour', 'admin', 'pending', '') RETURNING id")

    # mx-b's loader starts again: it loads mx-b's new record (so it went round at least once) and runs nothing old.
    b.start_loader()
    b.quarantine("after the restart", "mallory@example.net", "erin@example.com")
    quarantined(admin, 2)
    wait_for(lambda: a.console.query("SELECT state, detail FROM console_actionrequest ORDER BY id") == [
        ("failed", answer["error"])] * 2, 30, "mx-b's loader failing the abandoned request")
    assert b.queued() == before
    assert len(b.stored(late)) == 1
    assert message_state(a.console, late) == ""
    assert a.console.query("SELECT result FROM console_auditlog WHERE action = 'release'") == [("refused",)]


def test_a_request_whose_loader_was_killed_while_doing_it_is_failed_as_unknown_and_not_run_again(two_hosts):
    """SIGKILL after mx-b's loader claimed a release (it stops itself there: QS_CONSOLE_TEST_STOP): mx-b's next
    loader fails the request as unknown instead of releasing it (a release done twice would deliver twice)."""
    a, b, admin = two_hosts
    b.quarantine("claimed", "mallory@example.net", "frank@example.com")
    claimed = quarantined(admin, 1)["claimed"]
    b.stop_loader()
    b.start_loader(QS_CONSOLE_TEST_STOP="request-claimed")
    before = b.queued()
    answers: list = []
    waiting = threading.Thread(target=lambda: answers.append(post(admin, f"/api/messages/{claimed['id']}/release")))
    waiting.start()
    try:
        wait_for(lambda: a.console.query("SELECT state FROM console_actionrequest") == [("running",)], 30,
                 "mx-b's loader claiming the request")
        wait_for(lambda: process_state(b.loader.pid) == "T", 30, "mx-b's loader stopping itself")
        b.stop_loader(signal.SIGKILL)
        b.start_loader()
    finally:
        waiting.join(60)
    [(status, answer)] = answers
    assert status == 502 and answer["detail"] == (
        "unknown: the host's loader stopped while doing it; check the host's quarantine")
    assert a.console.query("SELECT state FROM console_actionrequest") == [("failed",)]
    time.sleep(1)
    assert b.queued() == before and len(b.stored(claimed)) == 1


def process_state(pid: int) -> str:
    """The one-letter state of a process in /proc (T: stopped)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rpartition(")")[2].split()[0]
