"""The resident engine: same outcomes as the standalone program, and no new way to lose or hang mail.

Every test runs the real setuid wrapper as `nobody` against an engine started as root (it becomes
the scanner account), with the strict qmail-queue stand-in as next hop.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from daemons import EICAR, clamd_disposable_fixture  # noqa: F401 - fixture
from engine_fixtures import Engine, wait_for_socket_gone
from harness import smtp_reply
from scanner_fixtures import with_attachment
from security_fixtures import CALLER_USER, caller_ids, install_wrapped

CORPUS = Path(__file__).parent / "corpus"
CONTRIB = Path(__file__).parent.parent / "contrib"
CLEAN = b"Received: from client by mx\nFrom: a@example.org\nTo: b@example.com\nSubject: hello\n\nplain text\n"
TEMPORARY = 71  # the wrapper's exit when a worker vanished with the message


def normalized(data: bytes) -> bytes:
    """Our headers with what differs between any two runs (time taken, date, ids) taken out."""
    data = re.sub(rb"Processed in \d+\.\d+ secs", b"Processed in N secs", data)
    data = re.sub(rb"\d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [-+]\d{4}", b"DATE", data)
    return re.sub(rb"\d{10}\.[\w.]+", b"ID", data)


def stored(installation) -> set[Path]:
    """Every quarantined or archived message file."""
    return set(installation.spool.glob("*/*/new/*")) | set(installation.spool.glob("*/new/*"))


def observed(installation, message: bytes) -> tuple:
    """Everything a mail administrator sees of one run, as comparable bytes."""
    before = stored(installation)
    result = installation.run(message)
    new = sorted(
        (str(path.parent.relative_to(installation.spool)), normalized(path.read_bytes()))
        for path in stored(installation) - before
    )
    queued = [(normalized(q.message), q.envelope, q.inherited_fds) for q in result.queued]
    return result.exit_code, smtp_reply(result.exit_code, result.custom_error), queued, new


def test_engine_up_and_down_give_the_same_outcomes_for_the_whole_corpus(engine_installation):
    """Byte for byte: exit code, SMTP reply, what was queued (with our headers), what was quarantined."""
    messages = sorted(CORPUS.glob("*.eml"))
    assert len(messages) > 30
    standalone = [observed(engine_installation, path.read_bytes()) for path in messages]
    running = Engine(engine_installation).start()
    try:
        through_engine = [observed(engine_installation, path.read_bytes()) for path in messages]
        served = running.status()
    finally:
        running.stop()
    for path, alone, resident in zip(messages, standalone, through_engine):
        assert resident == alone, path.name
    assert {outcome[1] for outcome in standalone} >= {"250 ok"}
    assert any(outcome[3] for outcome in standalone)  # some went to quarantine: both ways
    running.wait_until(lambda: True)
    assert "engine: serving" in running.log()
    assert served.get("state") == "running"


def test_messages_go_through_the_engine_not_the_standalone_program(engine):
    """The trace header's pid is a worker's when the engine runs: the wrapper did not exec Python."""
    result = engine.installation.run(CLEAN)
    assert result.exit_code == 0, result.stderr
    pid = int(re.search(r"qmail-scanner\[(\d+)\]", result.stderr).group(1))
    assert pid in engine.workers()
    engine.wait_until(lambda: engine.status().get("served", 0) >= 1)


def test_a_stopped_engine_leaves_no_socket_and_messages_run_standalone(engine):
    assert engine.installation.run(CLEAN).exit_code == 0
    assert engine.stop() == 0
    assert not engine.socket.exists()
    result = engine.installation.run(CLEAN)
    assert result.exit_code == 0, result.stderr
    assert len(result.queued) == 1
    assert "running standalone" not in result.stderr  # a missing socket is the normal case: no complaint


def slow_message(size: int = 3_000_000) -> bytes:
    return b"Subject: big\n\n" + b"".join(b"line %07d of a slowly streamed message\n" % i for i in range(size // 40))


def run_in_thread(installation, message: bytes, **options) -> tuple[threading.Thread, list]:
    box: list = []
    thread = threading.Thread(target=lambda: box.append(installation.run(message, **options)), daemon=True)
    thread.start()
    return thread, box


def test_worker_killed_while_the_message_streams_in_means_a_temporary_failure_and_nothing_queued(engine):
    """SIGKILL at random points of the stream: the client temp-fails, nothing partial is queued, the next one works."""
    rng = random.Random(11)
    for _ in range(3):
        thread, box = run_in_thread(engine.installation, slow_message(), pause=0.02)
        engine.wait_until(engine.busy_workers, 30)
        time.sleep(rng.uniform(0.0, 0.3))
        for pid in engine.busy_workers():
            os.kill(pid, signal.SIGKILL)
        thread.join(60)
        assert_temporary_failure_and_nothing_queued(box[0])
        after = engine.installation.run(CLEAN)
        assert after.exit_code == 0 and len(after.queued) == 1
    engine.wait_until(lambda: engine.status().get("restarts", 0) >= 3, 10)


def assert_temporary_failure_and_nothing_queued(result) -> None:
    assert result.exit_code == TEMPORARY, result.stderr
    assert result.queued == []
    assert "stopped before answering" in result.stderr
    assert smtp_reply(result.exit_code, result.custom_error).startswith("451 ")


def hand_on_children(engine: Engine) -> list[int]:
    """Next-hop processes (children of a worker): the worker is handing a message on."""
    found = []
    for pid in engine.workers():
        try:
            found += [int(w) for w in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            pass
    return found


def test_worker_killed_while_handing_the_message_on_queues_nothing_partial(engine):
    """The next hop sees the message pipe end early and the envelope never comes: it must not queue."""
    rng = random.Random(12)
    message = slow_message(2_000_000)
    for _ in range(3):
        thread, box = run_in_thread(engine.installation, message, env={"QS_TEST_HOP_PAUSE_MS": "300"})
        engine.wait_until(lambda: hand_on_children(engine), 30)
        time.sleep(rng.uniform(0.0, 0.35))  # before, while and after the next hop starts reading
        for pid in engine.busy_workers():
            os.kill(pid, signal.SIGKILL)
        thread.join(60)
        result = box[0]
        if result.exit_code == 0:  # the kill came after the answer: then it must be queued whole
            assert len(result.queued) == 1 and result.queued[0].body_after_trace == message
        else:
            assert_temporary_failure_and_nothing_queued(result)
        assert engine.installation.run(CLEAN).exit_code == 0


def test_master_killed_mid_message_lets_the_worker_finish_then_messages_run_standalone(engine):
    thread, box = run_in_thread(engine.installation, slow_message(1_000_000), pause=0.01)
    engine.wait_until(engine.busy_workers, 30)
    engine.signal(signal.SIGKILL)
    thread.join(60)
    assert box[0].exit_code == 0, box[0].stderr
    assert len(box[0].queued) == 1
    # The orphaned workers saw the master go and exit; the socket refuses: standalone at once.
    deadline = time.monotonic() + 10
    while engine.workers() and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    result = engine.installation.run(CLEAN)
    assert result.exit_code == 0 and len(result.queued) == 1
    assert time.monotonic() - started < 5


@pytest.fixture()
def short_deadline_engine():
    installation = install_wrapped("--deadline", "2")
    running = Engine(installation).start()
    yield running
    running.stop()
    installation.remove()


def test_worker_hanging_past_the_deadline_is_killed_and_the_client_temp_fails(short_deadline_engine):
    """A stopped worker cannot even run its own alarm: the master kills it (deadline + 10 s)."""
    engine = short_deadline_engine
    thread, box = run_in_thread(engine.installation, slow_message(1_000_000), pause=0.01)
    engine.wait_until(engine.busy_workers, 30)
    hung = engine.busy_workers()
    for pid in hung:
        os.kill(pid, signal.SIGSTOP)
    thread.join(60)
    assert_temporary_failure_and_nothing_queued(box[0])
    assert 10 <= box[0].seconds < 40
    engine.wait_until(lambda: not set(hung) & set(engine.workers()), 10)  # killed and reaped
    engine.wait_until(lambda: engine.status().get("killed", 0) >= 1, 10)
    assert "still busy" in engine.log()
    assert engine.installation.run(CLEAN).exit_code == 0


def plant(path: Path, make) -> None:
    """Put something else where the engine socket is (as root: the spool is the scanner account's)."""
    if path.is_socket() or path.is_symlink() or path.exists():
        path.unlink()
    make(path)


def test_a_regular_file_in_place_of_the_socket_is_ignored_and_the_message_runs_standalone(engine):
    engine.stop()
    plant(engine.socket, lambda p: (p.write_bytes(b""), os.chown(p, *engine.installation.scanner_ids)))
    result = engine.installation.run(CLEAN)
    assert result.exit_code == 0 and len(result.queued) == 1
    assert "not a socket of the scanner account" in result.stderr
    engine.socket.unlink()


def listening_socket_as(path: Path, uid: int, gid: int, owner: tuple[int, int]) -> tuple[subprocess.Popen, Path]:
    """A process of another account listening at path, recording whether any client sent it a byte."""
    record = path.parent.parent / f"planted-{os.getpid()}.log"
    code = (
        "import socket,sys,os\n"
        f"s=socket.socket(socket.AF_UNIX);s.bind({str(path)!r});s.listen(5)\n"
        f"os.chown({str(path)!r},{owner[0]},{owner[1]})\n"
        "print('ready',flush=True)\n"
        "while True:\n"
        " c,_=s.accept();c.settimeout(5)\n"
        " try: d=c.recv(100)\n"
        " except OSError: d=b''\n"
        f" open({str(record)!r},'ab').write(b'connection %d\\n' % len(d))\n"
        " c.close()\n"
    )
    process = subprocess.Popen(["python3", "-c", code], stdout=subprocess.PIPE)
    assert process.stdout.readline().strip() == b"ready"
    return process, record


def test_a_socket_served_by_another_account_gets_nothing_and_the_message_runs_standalone(engine):
    """The file looks right (a socket owned by the scanner account), but root listens: SO_PEERCRED says no."""
    engine.stop()
    owner = engine.installation.scanner_ids
    planted, record = listening_socket_as(engine.socket, 0, 0, owner)
    try:
        result = engine.installation.run(CLEAN)
    finally:
        planted.kill()
        planted.wait()
    assert result.exit_code == 0 and len(result.queued) == 1, result.stderr
    assert "served by another account" in result.stderr
    assert not record.exists() or b"connection 0" in record.read_bytes()
    assert b"connection 1" not in (record.read_bytes() if record.exists() else b"")
    engine.socket.unlink()


def test_a_symlink_planted_by_another_user_is_not_followed(engine):
    """A symlink (owned by nobody) to a socket that user serves: never connected to; standalone instead."""
    engine.stop()
    nobody = caller_ids()
    target = Path(f"/tmp/qs-planted-{os.getpid()}.sock")
    planted, record = listening_socket_as(target, *nobody, owner=nobody)
    try:
        plant(engine.socket, lambda p: (p.symlink_to(target), os.lchown(p, *nobody)))
        result = engine.installation.run(CLEAN)
    finally:
        planted.kill()
        planted.wait()
        target.unlink()
    assert result.exit_code == 0 and len(result.queued) == 1, result.stderr
    assert not record.exists()
    engine.socket.unlink()
    record.unlink(missing_ok=True)


def hello(environment: bytes = b"TCPREMOTEIP=192.0.2.1\0") -> bytes:
    return struct.pack("=4sIII", b"QSE1", 0, 7, len(environment)) + environment


def read_until_closed(client: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := client.recv(100):
            received += chunk
    except ConnectionResetError:
        pass  # closed with our hello unread
    return received


def test_a_client_that_is_not_the_scanner_account_is_refused(engine):
    """Root may connect to the socket, but a worker answers only the wrapper's account."""
    client = socket.socket(socket.AF_UNIX)
    client.settimeout(10)
    client.connect(str(engine.socket))
    try:
        client.sendall(hello())
    except BrokenPipeError:
        pass  # the worker looked at our uid and hung up before reading a byte
    assert read_until_closed(client) == b""  # closed without READY: no fd was ever asked for
    client.close()
    engine.wait_until(lambda: "refused a client running as uid 0" in engine.log(), 10)
    assert engine.installation.run(CLEAN).exit_code == 0


def test_other_accounts_cannot_connect_at_all(engine):
    code = (
        "import socket\ns=socket.socket(socket.AF_UNIX)\n"
        f"try:\n s.connect({str(engine.socket)!r}); print('connected')\n"
        "except OSError as e: print(type(e).__name__)\n"
    )
    uid, gid = caller_ids()
    done = subprocess.run(
        ["python3", "-c", code], capture_output=True, text=True, preexec_fn=lambda: (os.setgid(gid), os.setuid(uid)),
        check=False,
    )
    assert done.stdout.strip() == "PermissionError", (CALLER_USER, done.stdout, done.stderr)
    assert oct(engine.socket.lstat().st_mode & 0o777) == "0o600"


def open_fds(pid: int) -> list[str]:
    """The targets of pid's fds; one it closes between the listing and the readlink is left out."""
    directory = Path(f"/proc/{pid}/fd")
    targets = []
    for name in os.listdir(directory):
        try:
            targets.append(os.readlink(directory / name))
        except FileNotFoundError:
            continue
    return sorted(targets)


def idle_fds(engine: Engine) -> dict[int, list[str]]:
    """Each worker's fds once it has closed its last connection (it answers first, then closes and records).

    Two snapshots alike in a row: a worker still finishing its message's record is not idle yet.
    """
    limit = time.monotonic() + 10
    previous = None
    while True:
        snapshot = {pid: open_fds(pid) for pid in engine.workers()}
        idle = all(sum(fd.startswith("socket:") for fd in fds) == 1 for fds in snapshot.values())
        if idle and snapshot == previous:
            return snapshot
        previous = snapshot
        if time.monotonic() > limit:
            return snapshot
        time.sleep(0.05)


def test_workers_leak_no_descriptors_over_many_messages(engine):
    """After every kind of outcome, a worker holds exactly the fds it held before (make bench runs 10,000)."""
    messages = [path.read_bytes() for path in sorted(CORPUS.glob("*.eml"))]
    for message in messages[:5]:
        engine.installation.run(message)
    before = idle_fds(engine)
    for index in range(120):
        result = engine.installation.run(messages[index % len(messages)])
        assert result.exit_code in (0, 31, 82), result.stderr
    after = idle_fds(engine)
    assert set(after) == set(before)  # no worker died or was replaced
    grown = {pid: sorted(set(after[pid]) ^ set(before[pid])) for pid in after if after[pid] != before[pid]}
    assert grown == {}
    assert all(len(fds) < 20 for fds in after.values())


def test_sigterm_finishes_the_message_in_flight_then_stops(engine):
    message = slow_message(1_000_000)
    thread, box = run_in_thread(engine.installation, message, pause=0.01)
    engine.wait_until(engine.busy_workers, 30)
    engine.signal(signal.SIGTERM)
    wait_for_socket_gone(engine)
    assert not engine.socket.exists()  # new messages run standalone from now on
    during = engine.installation.run(CLEAN)
    assert during.exit_code == 0 and len(during.queued) == 1
    thread.join(60)
    assert box[0].exit_code == 0, box[0].stderr
    # (the sink saw both messages while the slow one ran)
    assert [q.body_after_trace for q in box[0].queued if q.body_after_trace == message] == [message]
    assert engine.process.wait(60) == 0  # it exits by itself once the message is answered
    assert "engine: stopped" in engine.log()


def test_sigterm_while_the_engine_re_executes_itself_still_stops_it_cleanly(engine):
    """The new program has no handlers until it has started: the stop must wait for them, not kill it."""
    engine.signal(signal.SIGHUP)
    engine.wait_until(lambda: "engine: reloading" in engine.log())
    engine.signal(signal.SIGTERM)
    assert engine.process.wait(60) == 0, engine.log()
    assert "engine: stopped" in engine.log()
    assert not engine.socket.exists()


def test_sighup_and_configure_install_reload_without_dropping_a_message(engine):
    """The message in flight finishes with the old settings; the next ones see the new program."""
    installation = engine.installation
    thread, box = run_in_thread(installation, slow_message(1_000_000), pause=0.01)
    engine.wait_until(engine.busy_workers, 30)
    old_workers = set(engine.workers())
    # Re-configure with descriptive headers on: configure --install signals the running engine.
    argv = [*installation.configure_argv, "--add-dscr-hdrs", "yes"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "the running engine" in done.stdout and "reloads" in done.stdout
    thread.join(60)
    assert box[0].exit_code == 0, box[0].stderr
    assert len(box[0].queued) == 1
    engine.wait_until(lambda: engine.status().get("reloads", 0) >= 1 and not old_workers & set(engine.workers()))
    result = installation.run(CLEAN)
    assert result.exit_code == 0
    assert b"\nX-Qmail-Scanner-" in b"\n" + result.queued[0].message.split(b"\nFrom:")[0]
    assert int(re.search(r"qmail-scanner\[(\d+)\]", result.stderr).group(1)) in engine.workers()
    # A plain SIGHUP reloads too, and a program that no longer starts is refused, not obeyed.
    engine.signal(signal.SIGHUP)
    engine.wait_until(lambda: engine.status().get("reloads", 0) >= 2)
    assert engine.installation.run(CLEAN).exit_code == 0
    program = installation.program.read_bytes()
    try:
        installation.program.write_bytes(program.replace(b"import sys\n", b"import sys\nsys.exit(81)\n", 1))
        engine.signal(signal.SIGHUP)
        engine.wait_until(lambda: "reload refused" in engine.log())
        served = installation.run(CLEAN)
        assert int(re.search(r"qmail-scanner\[(\d+)\]", served.stderr).group(1)) in engine.workers()
        assert engine.status().get("reloads") == 2
    finally:
        installation.program.write_bytes(program)


def test_engine_status_prints_the_counters(engine):
    for _ in range(3):
        assert engine.installation.run(CLEAN).exit_code == 0
    engine.wait_until(lambda: engine.status().get("served", 0) >= 3, 10)
    shown = subprocess.run([str(engine.installation.program), "--engine-status"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stdout
    assert "engine: running" in shown.stdout
    assert re.search(r"workers: \d+ \(busy 0", shown.stdout)
    assert re.search(r"messages served: [3-9]", shown.stdout)
    assert "restarts: 0" in shown.stdout
    textfile = engine.installation.prefix / "qs.prom"
    report = [sys.executable, str(CONTRIB / "qs-report"), "--spooldir", str(engine.installation.spool)]
    subprocess.run([*report, "--prometheus", str(textfile)], check=True)
    exported = textfile.read_text()
    assert "qmail_scanner_engine_up 1\n" in exported
    assert re.search(r"^qmail_scanner_engine_messages_total [3-9]$", exported, re.M)
    assert re.search(r"^qmail_scanner_engine_workers [1-9]\d*$", exported, re.M)
    assert "qmail_scanner_engine_restarts_total 0\n" in exported
    engine.stop()
    stopped = subprocess.run([str(engine.installation.program), "--engine-status"], capture_output=True, text=True)
    assert stopped.returncode == 1
    assert "not running" in stopped.stdout
    subprocess.run([*report, "--prometheus", str(textfile)], check=True)
    assert "qmail_scanner_engine_up 0\n" in textfile.read_text()


def test_a_worker_keeps_its_clamd_session_and_replaces_it_after_a_clamd_restart(clamd_disposable):
    """IDSESSION: one connection across messages; a restarted clamd costs no message a failure."""
    installation = install_wrapped(
        "--scanners", "clamd", "--clamd-servers", clamd_disposable.socket_path, "--skip-text-msgs", "no",
        "--engine-workers", "1",
    )
    engine = Engine(installation).start()
    virus = with_attachment("eicar.com", EICAR)
    try:
        for round_number in range(2):
            for _ in range(3):
                clean = installation.run(CLEAN)
                assert clean.exit_code == 0 and len(clean.queued) == 1, clean.stderr
                assert b"clamd:" in clean.queued[0].message.split(b"\nReceived:")[0]
            caught = installation.run(virus)
            assert caught.exit_code == 0 and caught.queued == [], caught.stderr
            (worker,) = engine.workers()
            fds = idle_fds(engine)[worker]
            # the listening socket and the one kept clamd session (not one per message)
            assert sum(fd.startswith("socket:") for fd in fds) == 2
            assert len(clamd_connections(worker, clamd_disposable.socket_path)) == 1
            if round_number == 0:
                clamd_disposable.stop()
                clamd_disposable.start()
        assert len(list(installation.spool.joinpath("quarantine/viruses/new").iterdir())) == 2
    finally:
        engine.stop()
        installation.remove()


def clamd_connections(pid: int, socket_path: str) -> list[str]:
    """The worker's connections to clamd: clamd's ends (local address its socket) whose peer is a worker fd."""
    ours = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{name}")
        if target.startswith("socket:["):
            ours.add(target[len("socket:[") : -1])
    listing = subprocess.run(["ss", "-xn"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in listing.splitlines():
        words = line.split()  # netid state recv-q send-q local-address local-inode peer-address peer-inode
        if len(words) >= 8 and words[4] == socket_path and words[7] in ours:
            found.append(line)
    return found
