"""Faults: under kills, full disks, broken next hops, broken scanners and broken callers, every
message ends queued whole, quarantined whole, or temporarily failed with nothing queued."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from daemons import (
    clamd_server_fixture,  # noqa: F401 - fixtures
    dead_socket_path,
    fake_server_factory_fixture,  # noqa: F401
    rspamd_server_fixture,  # noqa: F401
    silent_server_fixture,  # noqa: F401
    spamd_server_fixture,  # noqa: F401
)
from fault_servers import (
    SLOW_HOP_SOURCE,
    late_server_factory_fixture,  # noqa: F401
    run_and_signal,
    run_cleanup,
    small_disk_fixture,  # noqa: F401
    wait_for_orphans,
)
from harness import install, smtp_reply, strip_added_headers

CLEAN = b"Received: from client by mx\nFrom: a@example.org\nTo: b@example.com\nSubject: hello\n\nplain text\n"
SEED = int(os.environ.get("QS_FAULT_SEED", "0")) or random.randrange(1 << 30)


def large_message(megabytes: int) -> bytes:
    line = b"a line of a large message, repeated to make it big enough to take a while 0123456789\n"
    return b"From: a@example.org\nSubject: large\n\n" + line * (megabytes * 1024 * 1024 // len(line))


def exe_message(size: int = 0) -> bytes:
    import base64

    payload = base64.encodebytes(b"MZ\x90\x00" + os.urandom(max(0, size)))
    return (
        b"From: a@example.org\nSubject: invoice\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\nsee attached\n'
        b'--b\nContent-Type: application/octet-stream; name="invoice.exe"\nContent-Transfer-Encoding: base64\n\n'
        + payload + b"--b--\n"
    )


def attachment_message() -> bytes:
    """An attachment, so AV runs even with --skip-text-msgs yes."""
    return (
        b"From: a@example.org\nSubject: report\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\nsee attached\n'
        b'--b\nContent-Type: application/pdf; name="report.pdf"\nContent-Transfer-Encoding: base64\n\n'
        b"JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K\n--b--\n"
    )


def queued_bodies(installation) -> list[bytes]:
    return [strip_added_headers(p.read_bytes()) for p in sorted(installation.sink.glob("*.msg"))]


def stored(installation, kind: str) -> list[Path]:
    return sorted((installation.spool / "quarantine" / kind / "new").iterdir())


def assert_nothing_partial(installation, message: bytes) -> None:
    """Whatever was queued or quarantined is the whole message; maildir tmp/ holds no stored mail."""
    for body in queued_bodies(installation):
        assert body == message, f"partial message queued ({len(body)} of {len(message)} bytes), seed {SEED}"
    for kind in ("viruses", "policy", "spam"):
        for path in stored(installation, kind):
            assert path.read_bytes().endswith(message), f"partial quarantine {path}, seed {SEED}"


def assert_no_work_files_after_cleanup(installation) -> None:
    wait_for_orphans(installation.sink)
    cleanup = run_cleanup(installation)
    assert cleanup.returncode == 0, cleanup.stderr
    assert installation.work_files() == [], f"seed {SEED}"
    for maildir in ("quarantine/viruses", "quarantine/policy", "quarantine/spam", "archives", "failed"):
        assert list((installation.spool / maildir / "tmp").iterdir()) == [], maildir


@pytest.fixture()
def slow_hop_installation(tmp_path, standin):
    from security_fixtures import compile_c

    hop = compile_c(SLOW_HOP_SOURCE, tmp_path / "slow-hop", f'-DSTANDIN="{standin}"')
    return install(tmp_path / "qs", hop)


# ---------------------------------------------------------------- kills


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_kill_at_random_points_while_a_large_message_streams_in(installation, signum):
    """Never a partial message queued; no work file left after the next -z."""
    rng = random.Random(SEED + signum)
    message = large_message(8)
    full = run_and_signal(installation, message, delay=60, signum=signum)  # reference run, no signal
    assert full.exit_code == 0
    assert queued_bodies(installation) == [message]
    stream_seconds = max(full.seconds, 0.2)
    for _ in range(6):
        delay = rng.uniform(0.0, stream_seconds * 1.2)
        result = run_and_signal(installation, message, delay=delay, signum=signum, pause=0.002)
        assert_nothing_partial(installation, message)
        if signum == signal.SIGTERM and result.signalled and result.exit_code > 0:
            assert smtp_reply(result.exit_code, None).startswith("451"), result
    assert_no_work_files_after_cleanup(installation)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_kill_at_random_points_while_the_message_is_handed_on(slow_hop_installation, signum):
    installation = slow_hop_installation
    rng = random.Random(SEED * 3 + signum)
    message = large_message(4)
    before = len(queued_bodies(installation))
    outcomes = []
    for _ in range(6):
        delay = rng.uniform(0.05, 0.6)
        result = run_and_signal(installation, message, delay=delay, signum=signum, env={"QQ_SLOW_MS": "300"})
        outcomes.append(result.exit_code)
        wait_for_orphans(installation.sink)
        assert_nothing_partial(installation, message)
        if result.exit_code == 0:
            before += 1
        elif signum == signal.SIGTERM and result.signalled:
            # Told to stop while qmail-queue ran: the hop was stopped before it committed.
            assert smtp_reply(result.exit_code, None).startswith("451"), result
        assert len(queued_bodies(installation)) >= before
    assert_no_work_files_after_cleanup(installation)


def test_kill_while_quarantining_leaves_no_partial_quarantine(installation):
    rng = random.Random(SEED + 7)
    message = exe_message(6_000_000)
    for _ in range(5):
        run_and_signal(installation, message, delay=rng.uniform(0.05, 1.5), signum=signal.SIGKILL)
        assert_nothing_partial(installation, message)
    assert_no_work_files_after_cleanup(installation)


def test_cleanup_spares_work_files_of_live_processes(installation):
    from qmail_scanner.spool import creator_is_gone

    alive = installation.spool / "working" / "tmp" / f"{int(time.time())}.{os.getpid()}_1.000000abcdef"
    alive.write_bytes(b"in flight")
    child = subprocess.Popen(["true"])
    child.wait()
    dead = installation.spool / "working" / "tmp" / f"{int(time.time())}.{child.pid}_1.000000abcdef"
    dead.write_bytes(b"orphan")
    assert creator_is_gone(dead.name) and not creator_is_gone(alive.name)
    assert run_cleanup(installation).returncode == 0
    assert alive.exists()
    assert not dead.exists()


# ---------------------------------------------------------------- disk full and file-size limits


def test_disk_full_while_spooling(make_installation, tmp_path, small_disk):
    spool = tmp_path / "small-spool"
    small_disk(spool, 1024 * 1024)
    installation = make_installation("--spooldir", str(spool), fresh=True)
    installation = replace(installation, spool=spool)
    result = installation.run(large_message(3))
    assert result.exit_code == 82
    assert result.custom_error.startswith(b"Z")
    assert smtp_reply(result.exit_code, result.custom_error).startswith("451")
    assert result.queued == []
    assert installation.work_files() == []
    assert installation.run(CLEAN).exit_code == 0  # space is back: the next message goes through


def test_disk_full_while_quarantining(installation, small_disk):
    small_disk(installation.spool / "quarantine" / "policy", 64 * 1024, maildir=True)
    message = exe_message(200_000)
    result = installation.run(message)
    assert result.exit_code == 82 and result.custom_error.startswith(b"Z"), result.stderr
    assert result.queued == []
    assert stored(installation, "policy") == []
    assert list((installation.spool / "quarantine" / "policy" / "tmp").iterdir()) == []
    assert installation.work_files() == []


def test_disk_full_while_archiving(make_installation, small_disk):
    installation = make_installation("--archive", "yes", fresh=True)
    small_disk(installation.spool / "archives", 64 * 1024, maildir=True)
    message = large_message(1)
    result = installation.run(message)
    assert result.exit_code == 82 and result.custom_error.startswith(b"Z"), result.stderr
    assert result.queued == []  # archived copy is a promise: no delivery without it
    assert list((installation.spool / "archives" / "new").iterdir()) == []
    assert list((installation.spool / "archives" / "tmp").iterdir()) == []
    small = installation.run(CLEAN)
    assert small.exit_code == 0 and small.queued[0].body_after_trace == CLEAN


def test_file_size_limit_while_quarantining(installation):
    message = exe_message(300_000)
    result = installation.run(message, rlimit_fsize=len(message) + 64)  # spool fits, the stored copy does not
    assert result.exit_code == 82 and result.custom_error[:1] == b"Z", result.stderr
    assert stored(installation, "policy") == []
    assert list((installation.spool / "quarantine" / "policy" / "tmp").iterdir()) == []
    assert installation.work_files() == []


def test_file_size_limit_while_archiving(make_installation):
    installation = make_installation("--archive", "yes", fresh=True)
    message = large_message(1)
    result = installation.run(message, rlimit_fsize=len(message) + 64)
    assert result.exit_code == 82 and result.custom_error.startswith(b"Z"), result.stderr
    assert result.queued == []
    assert list((installation.spool / "archives" / "new").iterdir()) == []
    assert installation.work_files() == []


# ---------------------------------------------------------------- the next hop


def test_next_hop_exit_codes_pass_through_with_their_smtp_class(installation):
    """Every code 1-255 (other than 82, which needs text) comes back unchanged; nothing is queued."""
    for code in [c for c in range(1, 256) if c != 82]:
        result = installation.run(CLEAN, env={"QQ_STANDIN_EXIT": str(code)})
        assert result.exit_code == code
        assert result.queued == []
        expected = "554" if 11 <= code <= 40 else "451"
        assert smtp_reply(result.exit_code, result.custom_error).startswith(expected)
    assert installation.work_files() == []


@pytest.mark.parametrize("kind", ["not-executable", "directory", "dangling-symlink"])
def test_unusable_next_hop_is_a_temporary_failure(make_installation, tmp_path, kind):
    hop = tmp_path / f"hop-{kind}"
    if kind == "not-executable":
        hop.write_bytes(b"#!/bin/sh\nexit 0\n")
        hop.chmod(0o644)
    elif kind == "directory":
        hop.mkdir()
    else:
        hop.symlink_to(tmp_path / "nowhere")
    installation = make_installation("--qmail-queue-binary", str(hop), "--no-QQ-check")
    result = installation.run(CLEAN)
    assert smtp_reply(result.exit_code, result.custom_error).startswith("451")
    assert result.queued == []
    assert installation.work_files() == []


# ---------------------------------------------------------------- the caller


def test_caller_vanishing_mid_message_queues_nothing(installation):
    """qmail-smtpd killed mid-DATA: fd 0 closes early and no envelope arrives."""
    result = installation.run(large_message(2)[:1_000_000], close_envelope_early=True)
    assert result.exit_code == 54
    assert result.queued == []
    assert installation.work_files() == []


def test_envelope_without_final_nul_while_caller_stays_is_bounded_by_the_deadline(make_installation):
    """The caller sends all but the final NUL and never closes fd 1: temp failure at the deadline."""
    installation = make_installation("--deadline", "2")
    message_read, message_write = os.pipe()
    envelope_read, envelope_write = os.pipe()
    process = subprocess.Popen([str(installation.program)], stdin=message_read, stdout=envelope_read,
                               stderr=subprocess.PIPE, env={"QQ_STANDIN_DIR": str(installation.sink)})
    os.close(message_read)
    os.close(envelope_read)
    os.write(message_write, CLEAN)
    os.close(message_write)
    os.write(envelope_write, b"Fsender@example.org\0Trcpt@example.com\0")  # no final NUL
    started = time.monotonic()
    try:
        code = process.wait(30)
    finally:
        os.close(envelope_write)
    assert time.monotonic() - started < 10
    assert smtp_reply(code, None).startswith("451")
    assert list(installation.sink.glob("*.msg")) == []
    assert installation.work_files() == []


# ---------------------------------------------------------------- scanners

GARBAGE = {
    "clamd": b"stream: what is this\0",
    "spamd": b"SPAMD/1.1 0 EX_OK\r\nSpam: perhaps ; x / y\r\n\r\n",
    "rspamd": b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{not json at all",
}
VALID = {
    "clamd": b"stream: OK\0",
    "spamd": b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; 1.0 / 5.0\r\n\r\n",
    "rspamd": (b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: 80\r\n\r\n"
               b'{"action": "no action", "score": 0.5, "required_score": 15.0, "symbols": {}, "x": 1}'),
}
SCANNER_OPTION = {"clamd": "--clamd-servers", "spamd": "--spamd-servers", "rspamd": "--rspamd-servers"}
SCANNER_NAME = {"clamd": "clamd", "spamd": "spamd", "rspamd": "rspamd"}


def real_address(scanner: str, request) -> str:
    server = request.getfixturevalue(f"{scanner}_server")
    return server.address if scanner == "rspamd" else server.socket_path


@pytest.mark.parametrize("scanner", ["clamd", "spamd", "rspamd"])
@pytest.mark.parametrize("mode", ["absent", "refused", "silent", "garbage", "close-mid-reply", "late"])
def test_broken_scanner_is_a_bounded_temporary_failure(
    scanner, mode, request, make_installation, fake_server_factory, late_server_factory
):
    address = real_address(scanner, request)
    installation = make_installation(
        "--scanners", SCANNER_NAME[scanner], SCANNER_OPTION[scanner], address,
        "--scanner-timeout", "2", "--sa-timeout", "2",
        "--scanner-fail", f"{SCANNER_NAME[scanner]}=tempfail", fresh=True,
    )
    if mode == "absent":
        broken = f"/tmp/qs-absent-{os.urandom(4).hex()}/none.sock"
    elif mode == "refused":
        broken = dead_socket_path()
    elif mode == "late":
        broken = late_server_factory(VALID[scanner], delay=6).socket_path
    else:
        reply = VALID[scanner] if mode == "close-mid-reply" else GARBAGE[scanner]
        broken = fake_server_factory(mode, reply).socket_path
    program = installation.program.read_text()
    assert address in program
    installation.program.write_text(program.replace(address, broken))
    result = installation.run(attachment_message(), timeout=60)
    assert result.exit_code == 82, result.stderr
    assert result.custom_error.startswith(b"Z"), result.custom_error
    assert result.queued == []
    assert result.seconds < 12, result.seconds
    assert installation.work_files() == []


def test_total_deadline_fires_while_a_scanner_hangs(make_installation, clamd_server, silent_server):
    installation = make_installation(
        "--scanners", "clamd", "--clamd-servers", clamd_server.socket_path, "--scanner-timeout", "300",
        "--deadline", "3", fresh=True,
    )
    program = installation.program.read_text()
    installation.program.write_text(program.replace(clamd_server.socket_path, silent_server.socket_path))
    result = installation.run(attachment_message(), timeout=60)
    assert result.exit_code == 82 and result.custom_error.startswith(b"Z")
    assert b"deadline" in result.custom_error
    assert result.seconds < 10
    assert result.queued == []
    assert installation.work_files() == []


# ---------------------------------------------------------------- alerts


@pytest.mark.parametrize("behaviour", ["exit 111", "kill -9 $$"])
def test_failing_qmail_inject_does_not_change_the_verdict(make_installation, tmp_path, behaviour):
    inject = tmp_path / "qmail-inject"
    inject.write_text(f"#!/bin/sh\ncat > /dev/null\n{behaviour}\n")
    inject.chmod(0o755)
    installation = make_installation("--notify", "admin", "--qmail-inject-binary", str(inject), fresh=True)
    message = exe_message(1000)
    result = installation.run(message, timeout=120)
    assert result.exit_code == 0, result.stderr
    assert result.queued == []
    (path,) = stored(installation, "policy")
    assert path.read_bytes().endswith(message)
    assert result.seconds < 90
    assert installation.work_files() == []


def hanging_inject(tmp_path: Path) -> tuple[Path, Path]:
    """A qmail-inject that never finishes; it records its pid and does not hold our stderr."""
    inject = tmp_path / "qmail-inject"
    pid_file = tmp_path / "inject.pid"
    inject.write_text(f"#!/bin/sh\necho $$ > {pid_file}\ncat > /dev/null\nexec sleep 3600 2>/dev/null\n")
    inject.chmod(0o755)
    return inject, pid_file


def test_alert_hanging_past_the_deadline_does_not_turn_a_stored_message_into_a_retry(make_installation, tmp_path):
    """Once the message is safely in quarantine, the deadline may not make the sender retry (a duplicate)."""
    inject, pid_file = hanging_inject(tmp_path)
    installation = make_installation(
        "--notify", "admin", "--qmail-inject-binary", str(inject), "--deadline", "4", fresh=True
    )
    try:
        result = installation.run(exe_message(1000), timeout=60)
        assert result.exit_code == 0, result.stderr
        assert len(stored(installation, "policy")) == 1
        assert result.seconds < 30
        assert installation.work_files() == []
    finally:
        _kill_quietly(pid_file)


def test_alert_hanging_past_the_deadline_leaves_no_qmail_inject_running(make_installation, tmp_path):
    inject, pid_file = hanging_inject(tmp_path)
    installation = make_installation(
        "--notify", "admin", "--qmail-inject-binary", str(inject), "--deadline", "4", fresh=True
    )
    try:
        installation.run(exe_message(1000), timeout=60)
        time.sleep(0.5)
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid_file.read_text()), 0)
    finally:
        _kill_quietly(pid_file)


def _kill_quietly(pid_file: Path) -> None:
    try:
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
    except (OSError, ValueError):
        pass
