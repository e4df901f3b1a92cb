"""The loader (`qs-console load`) moves every record into the database exactly once: kills, concurrent writers, bad
lines, on SQLite and on a private PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from console_fixtures import append_record, make_record, record_line, stop, wait_for

BIG = 12_000
BATCH = 500
QUICK = ("--settle", "0.2")  # a renamed file is waited on this long (2 s by default)


def ready_name(age_seconds: float = 60) -> str:
    """A ready file's name as the loader gives it, renamed `age_seconds` ago (settled: loaded without waiting)."""
    return f"{time.time_ns() - int(age_seconds * 1e9):020d}-{os.getpid()}.jsonl"


def loaded_ids(console) -> list[str]:
    return sorted(row[0] for row in console.query("SELECT record_id FROM console_message"))


def test_every_field_of_a_record_reaches_its_column(console):
    record = make_record(7, subject="Rechnung \u00fc\u00e4 \u2014 \x00 nul", outcome="quarantined", reason="EICAR",
                         rule="Eicar-Test-Signature", kind="virus", spam_score=None, spam_tagged=True,
                         quarantine_id="1733000007.123.mx1", quarantine_dir="viruses", readings=["two-boundaries"],
                         skipped=["spamd"], auth_user="alice", sender="Alice@Example.COM",
                         recipients=["Bob@Example.org", "bob@example.org", "carol@example.net"])
    append_record(console.records, record)
    console.run("load", "--once", *QUICK)
    (row,) = console.query("SELECT record_id, host, queue_id, client_ip, helo, auth_user, sender, sender_key, "
                           "sender_domain, subject, message_id, size, outcome, reason, rule, kind, spam_score, "
                           "quarantine_id, quarantine_dir, trace FROM console_message")
    assert row == (record["id"], "mx1.example.net", record["queue_id"], "192.0.2.8", "client.example.com", "alice",
                   "Alice@Example.COM", "alice@example.com", "example.com", "Rechnung \u00fc\u00e4 \u2014 \ufffd nul",
                   "<7@client.example.com>", "1007", "quarantined", "EICAR", "Eicar-Test-Signature", "virus",
                   None, "1733000007.123.mx1", "viruses", "trace 7")
    (lists,) = console.query("SELECT recipients, scanners, attachments, readings, skipped FROM console_message")
    assert [json.loads(value) for value in lists] == [record["recipients"], record["scanners"], record["attachments"],
                                                       ["two-boundaries"], ["spamd"]]
    (when,) = console.query("SELECT time FROM console_message")[0]
    assert "2024-11-30" in when and "20:53:27" in when  # 1733000007 in UTC
    # Bob in two cases is one recipient row: the search key is lower-cased.
    assert sorted(console.query("SELECT address_key, domain FROM console_recipient")) == [
        ("bob@example.org", "example.org"), ("carol@example.net", "example.net")]
    assert list((console.records / "ready").iterdir()) == []


def test_bad_lines_go_to_rejected_and_the_rest_loads(console):
    lines = [record_line(make_record(1)), b"{not json\n", record_line({"v": 2, "id": "x", "time": 1.0}),
             record_line(make_record(2, outcome="vanished")), record_line(make_record(3, recipients="one@x")),
             b"\xff\xfe binary\n", record_line(make_record(4, time="yesterday")), b"\n", record_line(make_record(5)),
             record_line(make_record(6, time=1e20)), record_line(make_record(7, size=2**64)),
             b'{"v": 1, "id": "deep", "skipped": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"]
    (console.records / "ready").mkdir(exist_ok=True)
    name = ready_name()
    (console.records / "ready" / name).write_bytes(b"".join(lines))
    done = console.run("load", "--once", *QUICK)
    assert loaded_ids(console) == sorted([make_record(1)["id"], make_record(5)["id"]])
    rejected = (console.records / "rejected" / name).read_bytes().splitlines(keepends=True)
    assert rejected == [lines[1], lines[2], lines[3], lines[4], lines[5], lines[6], lines[9], lines[10], lines[11]]
    for number, reason in ((2, "not JSON"), (3, "version 2 is not 1"), (4, "outcome is not one of"),
                           (5, "recipients is not a list"), (6, "not JSON"), (7, "time is not a unix time"),
                           (10, "time is not a unix time"), (11, "size is not a byte count"), (12, "not JSON")):
        assert f"{name} line {number} rejected ({reason}" in done.stderr.replace("'", ""), done.stderr
    assert f"{name}: 2 loaded, 0 already there, 9 rejected" in done.stderr
    assert not (console.records / "ready" / name).exists()


def process_state(pid: int) -> str:
    """The one-letter state of a process in /proc (T: stopped)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rpartition(")")[2].split()[0]


def test_a_kill_between_keeping_the_rejected_lines_and_deleting_the_ready_file_keeps_them_once(console):
    """SIGKILL after rejected/<name> is written and before the ready file is deleted: the re-run adds nothing to it.

    The loader stops itself at that point (QS_CONSOLE_TEST_STOP, a test-only stop), so the kill lands exactly there.
    """
    lines = [record_line(make_record(1)), b"{not json\n", record_line(make_record(2)),
             record_line(make_record(3, outcome="vanished")), record_line(make_record(4))]
    (console.records / "ready").mkdir(exist_ok=True)
    name = ready_name()
    ready = console.records / "ready" / name
    ready.write_bytes(b"".join(lines))
    loader = console.start("load", "--once", *QUICK, env={"QS_CONSOLE_TEST_STOP": "rejected-kept"})
    try:
        wait_for(lambda: loader.poll() is not None or process_state(loader.pid) == "T", 60, "the loader's stop")
    finally:
        code, _ = stop(loader, signal.SIGKILL)
    assert code == -signal.SIGKILL
    kept = console.records / "rejected" / name
    assert kept.read_bytes() == lines[1] + lines[3]
    assert ready.exists()
    done = console.run("load", "--once", *QUICK)
    assert not ready.exists()
    assert kept.read_bytes() == lines[1] + lines[3]
    assert f"{name} line 2 rejected (not JSON" in done.stderr and "already kept in rejected/" in done.stderr
    assert f"{name}: 0 loaded, 3 already there, 2 rejected" in done.stderr
    assert loaded_ids(console) == sorted(make_record(number)["id"] for number in (1, 2, 4))
    assert sorted(path.name for path in (console.records / "rejected").iterdir()) == [name]


def test_a_loader_stopped_inside_a_file_gathers_its_rejected_lines_again_whole(console):
    """A kill before the rejected lines are kept leaves only a partial file, which the re-run replaces: once each."""
    lines = [b"{not json\n", *(record_line(make_record(number)) for number in range(1, 1001)), b"{again\n",
             *(record_line(make_record(number)) for number in range(1001, 3001))]
    (console.records / "ready").mkdir(exist_ok=True)
    name = ready_name()
    (console.records / "ready" / name).write_bytes(b"".join(lines))
    loader = console.start("load", "--once", "--batch", "100", *QUICK)
    wait_for(lambda: console.count() >= 1200 or loader.poll() is not None, 60, "a dozen batches committed")
    stop(loader, signal.SIGKILL)
    assert console.count() < 3000, "the kill came too late to test anything"
    assert not (console.records / "rejected" / name).exists()
    console.run("load", "--once", "--batch", "100", *QUICK)
    assert (console.records / "rejected" / name).read_bytes() == b"{not json\n{again\n"
    assert sorted(path.name for path in (console.records / "rejected").iterdir()) == [name]
    assert console.count() == 3000


def test_a_record_loaded_twice_is_stored_once(console):
    for number in range(5):
        append_record(console.records, make_record(number))
    console.run("load", "--once", *QUICK)
    for number in range(3, 8):
        append_record(console.records, make_record(number))
    done = console.run("load", "--once", *QUICK)
    assert ": 3 loaded, 2 already there, 0 rejected" in done.stderr
    assert loaded_ids(console) == sorted(make_record(number)["id"] for number in range(8))
    assert console.count("console_recipient") == 8 * 2


def test_a_loader_killed_mid_batch_then_run_again_loads_every_record_once(console):
    """SIGKILL while a big ready file loads: only whole batches were committed; the re-run completes it exactly."""
    (console.records / "ready").mkdir(exist_ok=True)
    ready = console.records / "ready" / ready_name()
    ready.write_bytes(b"".join(record_line(make_record(number)) for number in range(BIG)))
    expected = sorted(make_record(number)["id"] for number in range(BIG))
    loader = console.start("load", "--once", "--batch", str(BATCH), *QUICK)
    wait_for(lambda: console.count() >= 3 * BATCH or loader.poll() is not None, 60, "three batches committed")
    stop(loader, signal.SIGKILL)
    after_kill = console.count()
    assert BATCH <= after_kill < BIG, f"the kill came too late to test anything ({after_kill} of {BIG} loaded)"
    # One transaction per batch: a kill leaves whole batches, never a part of one.
    assert after_kill % BATCH == 0
    assert console.count("console_recipient") == 2 * after_kill
    assert ready.exists()
    console.run("load", "--once", "--batch", str(BATCH), *QUICK)
    assert loaded_ids(console) == expected
    assert console.count() == BIG
    assert console.count("console_recipient") == 2 * BIG
    assert not ready.exists()


def test_a_writer_appending_while_the_loader_runs_loses_nothing(console):
    """Records appended while a continuous loader renames and loads: all arrive, once; SIGTERM ends it cleanly."""
    total = 3000
    loader = console.start("load", "--poll", "0.05", "--batch", "200", *QUICK)
    try:
        for number in range(total // 2):
            append_record(console.records, make_record(number))
        # The second half is written while the loader works on the renamed first half.
        wait_for(lambda: any((console.records / "ready").glob("*.jsonl")), 30, "the loader's first rename")
        for number in range(total // 2, total):
            append_record(console.records, make_record(number))
        wait_for(lambda: console.count() >= total, 60, f"{total} records loaded")
    finally:
        code, stderr = stop(loader)
    assert code == 0, stderr
    assert loaded_ids(console) == sorted(make_record(number)["id"] for number in range(total))
    # SIGTERM may have come while a loaded file settled: the next run finishes it and adds nothing.
    again = console.run("load", "--once", *QUICK)
    assert all(": 0 loaded, " in line for line in again.stderr.splitlines() if " loaded, " in line), again.stderr
    assert console.count() == total
    assert list((console.records / "ready").iterdir()) == []


def test_a_writer_that_opened_before_the_rename_writes_into_the_loaded_file(console):
    """The writer's open and write straddle the loader's rename: the line lands in the ready file and is loaded."""
    append_record(console.records, make_record(1))
    fd = os.open(console.records / "current.jsonl", os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
    try:
        loader = console.start("load", "--once", "--settle", "2")
        wait_for(lambda: not (console.records / "current.jsonl").exists(), 30, "the loader's rename")
        time.sleep(0.3)
        os.write(fd, record_line(make_record(2)))
    finally:
        os.close(fd)
    _, stderr = loader.communicate(timeout=60)
    assert loader.returncode == 0, stderr
    assert loaded_ids(console) == sorted([make_record(1)["id"], make_record(2)["id"]])


def test_a_writer_stalled_past_the_settle_time_between_open_and_write_loses_nothing(console):
    """The scanner's writer holds a shared lock from open to close: the loader never deletes a file it still writes."""
    from qmail_scanner.message_record import _open_locked

    append_record(console.records, make_record(1))
    fd = _open_locked(str(console.records / "current.jsonl"))  # opened (and locked) as the program opens it
    try:
        loader = console.start("load", "--once", *QUICK)
        wait_for(lambda: not (console.records / "current.jsonl").exists(), 30, "the loader's rename")
        time.sleep(1.5)  # a writer paused far past the settle time (0.2 s) before its write
        os.write(fd, record_line(make_record(2)))
    finally:
        os.close(fd)
    _, stderr = loader.communicate(timeout=60)
    assert loader.returncode == 0, stderr
    assert loaded_ids(console) == sorted([make_record(1)["id"], make_record(2)["id"]])
    assert list((console.records / "ready").iterdir()) == []


def test_a_second_loader_on_the_same_spool_is_refused(console):
    holder = console.start("load", "--poll", "5")
    try:
        wait_for(lambda: (console.records / "loader.lock").exists(), 30, "the first loader's lock")
        time.sleep(0.3)
        second = console.run("load", "--once", check=False)
    finally:
        stop(holder)
    assert second.returncode == 1
    assert "another loader holds" in second.stderr


@pytest.mark.parametrize("database_kind", ["sqlite"])
def test_records_left_in_ready_by_a_crash_before_loading_are_loaded(console):
    (console.records / "ready").mkdir(exist_ok=True)
    older, newer = ready_name(120), ready_name(60)
    (console.records / "ready" / older).write_bytes(record_line(make_record(1)))
    (console.records / "ready" / newer).write_bytes(record_line(make_record(2)))
    append_record(console.records, make_record(3))
    done = console.run("load", "--once", *QUICK)
    assert loaded_ids(console) == sorted(make_record(number)["id"] for number in (1, 2, 3))
    assert done.stderr.index(older) < done.stderr.index(newer)


@pytest.mark.parametrize("database_kind", ["postgresql"])
def test_a_database_restart_is_waited_out_and_nothing_is_lost(console, postgres_cluster):
    """The server goes away under a running loader: it says so, keeps the records, and goes on when it is back."""
    loader = console.start("load", "--poll", "0.1", *QUICK)
    try:
        for number in range(100):
            append_record(console.records, make_record(number))
        wait_for(lambda: console.count() == 100, 30, "the first 100 records")
        postgres_cluster.pg_ctl("-m", "fast", "stop")
        try:
            for number in range(100, 200):
                append_record(console.records, make_record(number))
            wait_for(lambda: any((console.records / "ready").glob("*.jsonl")), 30, "the rename while it is down")
            time.sleep(1.0)  # a few failed rounds
        finally:
            postgres_cluster.pg_ctl("-o", postgres_cluster.options, "start")
        wait_for(lambda: console.count() == 200, 60, "the records written while the database was down")
    finally:
        code, stderr = stop(loader)
    assert code == 0, stderr
    assert "database error, retrying" in stderr
    assert loaded_ids(console) == sorted(make_record(number)["id"] for number in range(200))


@pytest.mark.parametrize("database_kind", ["postgresql"])
def test_a_record_the_database_refuses_is_rejected_alone(console):
    """A row the database will not take (here a site's CHECK constraint) costs that record, not its batch."""
    console.database.cluster.psql("ALTER TABLE console_message ADD CONSTRAINT site_rule "
                                  "CHECK (subject <> 'refused here')", database=console.database.name)
    for number in range(10):
        append_record(console.records, make_record(number, subject="refused here" if number == 4 else "fine"))
    done = console.run("load", "--once", *QUICK)
    assert loaded_ids(console) == sorted(make_record(number)["id"] for number in range(10) if number != 4)
    [rejected] = (console.records / "rejected").iterdir()
    assert rejected.read_bytes() == record_line(make_record(4, subject="refused here"))
    assert "line 5 rejected (refused by the database: " in done.stderr
    assert ": 9 loaded, 0 already there, 1 rejected" in done.stderr


@pytest.mark.parametrize(("arguments", "policy"), [((), os.SCHED_IDLE), (("--cpu", "normal"), os.SCHED_OTHER)])
def test_the_running_loader_yields_the_cpu_to_mail_unless_told_otherwise(console, arguments, policy):
    """`load` runs in the idle scheduling class by default (make bench-console says why), and still loads."""
    loader = console.start("load", "--settle", "0", "--poll", "0.2", *arguments)
    try:
        append_record(console.records, make_record(1))
        wait_for(lambda: loader.poll() is not None or console.count() == 1, 60, "the record loaded")
        assert loader.poll() is None
        assert os.sched_getscheduler(loader.pid) == policy
    finally:
        stop(loader)
