"""Records the installed program writes (real clamd) reach qs-console's database through a running loader and are
found through the API: the mail path and the console joined, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from console_fixtures import (
    ADMIN_PASSWORD,
    USER_PASSWORD,
    Client,
    Console,
    api_answers,
    console_ready,
    free_port,
    stop,
    wait_for,
)
from daemons import EICAR, clamd_server_fixture  # noqa: F401 - fixture
from harness import envelope
from scanner_fixtures import headers, with_attachment

CLEAN = 16


def test_the_installed_programs_records_are_loaded_and_found(make_installation, clamd_server, database_kind, request,
                                                             tmp_path):
    console_ready()
    installation = make_installation("--scanners", "clamd", "--clamd-servers", clamd_server.socket_path, fresh=True)
    (installation.spool / "records" / "current.jsonl").unlink(missing_ok=True)  # the install check's own message
    console = Console(data_dir=tmp_path / "console", spooldir=installation.spool)
    if database_kind == "postgresql":
        cluster = request.getfixturevalue("postgres_cluster")
        console.database = cluster.new_database(f"qsc_e2e_{len(cluster.databases)}_{os.getpid()}")
        console.db_url = console.database.url
    release_tool = installation.prefix / "bin" / "qs-quarantine"  # its spool and qmail-queue frozen in by --install
    console.run("migrate", "--db", console.db_url, "--spooldir", str(installation.spool),
                "--release-tool", str(release_tool))
    console.run("createuser", "admin", "--admin", stdin=ADMIN_PASSWORD + "\n")
    console.run("createuser", "bob", "--recipient", "bob@example.com", stdin=USER_PASSWORD + "\n")

    runs = [(headers(f"clean {number}") + b"\r\nhello\r\n", envelope("alice@example.org", "bob@example.com"))
            for number in range(CLEAN)]
    runs.append((with_attachment("eicar.com", EICAR), envelope("alice@example.org", "carol@example.com")))
    runs.append((with_attachment("holiday.pif", b"MZ\x90\x00" + b"\x00" * 200),
                 envelope("mallory@example.net", "bob@example.com")))
    loader = console.start("load", "--poll", "0.1", "--settle", "0.5")
    try:
        with ThreadPoolExecutor(4) as pool:  # messages written while the loader renames and loads
            results = list(pool.map(lambda run: installation.run(*run), runs))
        assert all(result.exit_code == 0 for result in results), [result.stderr for result in results]
        wait_for(lambda: console.count() >= len(runs), 60, f"{len(runs)} records loaded")
    finally:
        code, stderr = stop(loader)
    assert code == 0, stderr
    assert "rejected" not in stderr.replace("0 rejected", "")
    assert console.count() == len(runs)
    assert sorted(console.query("SELECT outcome, count(*) FROM console_message GROUP BY outcome")) == [
        ("delivered", str(CLEAN)), ("quarantined", "2")]

    # The console releases only from the quarantine of the host it is told (its records name it; the test install's
    # name is not this machine's).
    [(host,)] = console.query("SELECT DISTINCT host FROM console_message")
    console.run("migrate", "--host", host)
    port = free_port()
    # The stand-in qmail-queue of the installation writes what it is handed into installation.sink.
    server = console.start("serve", "--listen", f"127.0.0.1:{port}", env={"QQ_STANDIN_DIR": str(installation.sink)})
    try:
        wait_for(lambda: api_answers(port), 30, "qs-console serve")
        admin = Client(port)
        admin.login("admin", ADMIN_PASSWORD)
        quarantined = admin.get("/api/messages", outcome="quarantined")[1]["messages"]
        assert sorted(item["sender"] for item in quarantined) == ["alice@example.org", "mallory@example.net"]
        virus = next(item for item in quarantined if item["recipients"] == ["carol@example.com"])
        detail = admin.get(f"/api/messages/{virus['id']}")[1]
        assert detail["kind"] == "virus" and "eicar" in detail["rule"].lower()
        assert (installation.spool / "quarantine" / "viruses" / "new" / detail["quarantine_id"]).is_file()
        assert detail["attachments"][0]["name"] == "eicar.com"
        assert detail["record_id"] == f"{detail['host']}:{detail['queue_id']}"
        bob = Client(port)
        bob.login("bob", USER_PASSWORD)
        mine = bob.get("/api/messages", limit="100")[1]["messages"]
        assert len(mine) == CLEAN + 1 and all(item["recipients"] == ["bob@example.com"] for item in mine)
        assert bob.get(f"/api/messages/{virus['id']}")[0] == 404
        assert [item["subject"] for item in bob.get("/api/messages", q="clean 7")[1]["messages"]] == ["clean 7"]

        # Release: administrators only, with the CSRF token, through the host's qs-quarantine and qmail-queue.
        release = f"/api/messages/{virus['id']}/release"
        token = {"X-CSRFToken": admin.csrf}
        assert Client(port).request("POST", release)[0] in (401, 403)
        assert bob.request("POST", release, headers={"X-CSRFToken": bob.csrf})[0] == 403
        assert admin.request("POST", release)[0] == 403  # no CSRF token
        delivered = admin.get("/api/messages", outcome="delivered", limit="1")[1]["messages"][0]
        assert admin.request("POST", f"/api/messages/{delivered['id']}/release", headers=token)[0] == 409
        queued_before = set(installation.sink.glob("*.msg"))
        status, answer, _ = admin.request("POST", release, headers=token)
        assert status == 200, answer
        assert answer["released"] is True and "carol@example.com" in answer["detail"]
        [queued] = set(installation.sink.glob("*.msg")) - queued_before
        assert queued.read_bytes().startswith(b"X-Qmail-Scanner-Released: ")
        assert queued.with_suffix(".env").read_bytes() == envelope("alice@example.org", "carol@example.com")
        assert b"eicar.com" in queued.read_bytes()
        assert not (installation.spool / "quarantine" / "viruses" / "new" / detail["quarantine_id"]).exists()
        audit = console.query("SELECT action, result FROM console_auditlog WHERE action = 'release' ORDER BY id")
        assert audit == [("release", "refused"), ("release", "ok")]
    finally:
        stop(server)

