"""The qmail-queue contract, through the installed program, real pipes and the stand-in."""

from __future__ import annotations

import os
import subprocess

import pytest

from harness import envelope

CLEAN = b"Received: from client by mx\nFrom: a@example.org\nTo: b@example.com\nSubject: hello\n\nplain text\n"


def assert_clean_run(result, message: bytes, expected_envelope: bytes) -> None:
    """Exit 0, exactly one queued copy, byte for byte below our own headers."""
    assert result.exit_code == 0, result.stderr
    assert len(result.queued) == 1
    queued = result.queued[0]
    assert queued.body_after_trace == message
    assert queued.envelope == expected_envelope
    assert queued.message.startswith(b"X-Qmail-Scanner-Diagnostics: ")


def test_clean_message_is_queued_with_trace_header(installation):
    result = installation.run(CLEAN, env={"TCPREMOTEIP": "192.0.2.7", "RELAYCLIENT": ""})
    assert_clean_run(result, CLEAN, envelope("sender@example.org", "rcpt@example.com"))
    trace = result.queued[0].message.split(b"\nFrom:")[0]
    assert b"Clear:RC:1(192.0.2.7):" in trace
    assert b"envelope-sender <sender@example.org>" in trace
    assert installation.work_files() == []


def test_message_larger_than_a_pipe_buffer_arrives_whole(installation):
    body = b"".join(b"line %07d of a large message with some text\n" % i for i in range(120_000))
    message = b"Subject: big\n\n" + body
    assert len(message) > 5_000_000
    result = installation.run(message)
    assert_clean_run(result, message, envelope("sender@example.org", "rcpt@example.com"))


def test_null_sender_and_many_recipients_keep_the_envelope(installation):
    recipients = [f"user{i}@example.com" for i in range(500)]
    raw = envelope("", *recipients)
    result = installation.run(CLEAN, raw)
    assert_clean_run(result, CLEAN, raw)


def test_longest_legal_address_passes(installation):
    address = "a" * 990 + "@example.com"
    assert len(address) == 1002
    raw = envelope("sender@example.org", address)
    assert_clean_run(installation.run(CLEAN, raw), CLEAN, raw)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"Xsender@example.org\0Trcpt@example.com\0\0", 91),  # first byte not F
        (b"Fsender@example.org\0Xrcpt@example.com\0\0", 91),  # recipient not T
        (b"F" + b"a" * 1003 + b"\0Trcpt@example.com\0\0", 11),  # sender too long
        (b"Fsender@example.org\0T" + b"b" * 1100 + b"\0\0", 11),  # recipient too long
        (b"Fsender@example.org\0Trcpt@example.com\0", 54),  # no final NUL
        (b"Fsender@example.org\0Trcpt@exa", 54),  # cut in an address
        (b"", 54),  # no envelope at all
    ],
)
def test_bad_envelope_exits_like_qmail_queue_and_queues_nothing(installation, raw, code):
    result = installation.run(CLEAN, raw)
    assert result.exit_code == code
    assert result.queued == []
    assert result.custom_error == b""  # envelope errors are qmail-queue's own codes, no text
    assert installation.work_files() == []


def test_caller_closing_envelope_early_is_a_read_error(installation):
    result = installation.run(CLEAN, close_envelope_early=True)
    assert result.exit_code == 54
    assert result.queued == []


@pytest.mark.parametrize("code", [31, 71, 53, 11])
def test_next_hop_exit_code_is_passed_through(installation, code):
    result = installation.run(CLEAN, env={"QQ_STANDIN_EXIT": str(code)})
    assert result.exit_code == code
    assert result.queued == []
    assert installation.work_files() == []


def test_next_hop_killed_is_a_temporary_failure(installation):
    result = installation.run(CLEAN, env={"QQ_STANDIN_DIE": "1"})
    assert result.exit_code == 82
    # The sender hears what kind of problem it was; the path and the signal go to the log only.
    assert result.custom_error == b"Z4.3.0 mail queue failed to take the message, try again later"
    assert "qmail-queue-standin killed by signal 9" in result.stderr
    assert result.queued == []


def test_next_hop_missing_is_a_temporary_failure_with_text(make_installation, tmp_path):
    installation = make_installation("--qmail-queue-binary", str(tmp_path / "absent"), "--no-QQ-check")
    result = installation.run(CLEAN)
    assert result.exit_code == 82
    assert result.custom_error == b"Z4.3.0 mail queue unavailable, try again later"
    assert b"absent" not in result.custom_error and b"/" not in result.custom_error  # no internals to the sender
    assert "cannot run" in result.stderr and "absent" in result.stderr  # the log has them
    assert result.queued == []


def test_without_custom_error_fd_a_temporary_failure_exits_71(make_installation, tmp_path):
    installation = make_installation("--qmail-queue-binary", str(tmp_path / "absent"), "--no-QQ-check")
    result = installation.run(CLEAN, offer_custom_error_fd=False)
    assert result.exit_code == 71
    assert result.custom_error is None


def test_custom_error_fd_that_is_not_a_pipe_is_not_written(make_installation, tmp_path):
    """Under qmail-qfilter fd 6 may be a file of its own: never write into it."""
    installation = make_installation("--qmail-queue-binary", str(tmp_path / "absent2"), "--no-QQ-check")
    other_file = tmp_path / "qfilter-file"
    other_file.write_bytes(b"")
    (tmp_path / "message").write_bytes(CLEAN)
    (tmp_path / "envelope").write_bytes(envelope("a@example.org", "b@example.com"))
    descriptor = os.open(other_file, os.O_WRONLY)
    try:
        with open(tmp_path / "message", "rb") as message, open(tmp_path / "envelope", "rb") as raw:
            result = subprocess.run(
                [str(installation.program)],
                stdin=message,
                stdout=raw,
                stderr=subprocess.PIPE,
                env={"QQ_STANDIN_DIR": str(installation.sink)},
                close_fds=False,
                preexec_fn=lambda: os.dup2(descriptor, 6),
                check=False,
            )
    finally:
        os.close(descriptor)
    assert result.returncode == 71
    assert other_file.read_bytes() == b""


def test_custom_error_fd_can_be_switched_off(make_installation, tmp_path):
    installation = make_installation(
        "--qmail-queue-binary", str(tmp_path / "absent3"), "--no-QQ-check", "--custom-error-fd", "0"
    )
    result = installation.run(CLEAN)
    assert result.exit_code == 71
    assert result.custom_error == b""


def test_deadline_while_the_caller_stalls_is_a_temporary_timeout(make_installation):
    installation = make_installation("--deadline", "1")
    result = installation.run(CLEAN, hold_message_open=True, timeout=30)
    assert result.exit_code == 82
    assert result.custom_error.startswith(b"Z")
    assert b"deadline" in result.custom_error
    assert result.seconds < 10
    assert result.queued == []
    assert installation.work_files() == []


def test_file_size_limit_while_spooling_is_a_temporary_write_error(installation):
    message = b"Subject: big\n\n" + b"x" * 3_000_000 + b"\n"
    result = installation.run(message, rlimit_fsize=1_000_000)
    assert result.exit_code == 82
    assert result.custom_error.startswith(b"Z")
    assert b"write error" in result.custom_error
    assert result.queued == []
    assert installation.work_files() == []


def test_spool_not_writable_is_a_temporary_failure(installation):
    work = installation.spool / "working" / "tmp"
    work.rmdir()
    work.write_bytes(b"")  # a file where the work dir should be: nothing can be created
    result = installation.run(CLEAN)
    assert result.exit_code == 82
    assert result.custom_error.startswith(b"Z")
    assert result.queued == []


def test_children_do_not_inherit_the_custom_error_fd(installation):
    result = installation.run(CLEAN)
    assert result.exit_code == 0
    assert result.queued[0].inherited_fds == []


def test_qmailqueue_in_the_environment_is_not_the_next_hop(installation, tmp_path):
    """$QMAILQUEUE points at us; following it would loop."""
    trap = tmp_path / "trap"
    result = installation.run(CLEAN, env={"QMAILQUEUE": str(trap)})
    assert result.exit_code == 0
    assert len(result.queued) == 1


def test_received_trace_header_form(make_installation):
    installation = make_installation("--trace-header", "received")
    result = installation.run(CLEAN)
    assert result.exit_code == 0
    queued = result.queued[0].message
    assert queued.startswith(b"Received: from unknown (127.0.0.1) by ")
    trace_end = queued.index(b" -0000\n") + len(b" -0000\n")
    assert queued[trace_end:] == CLEAN


def test_admin_flags(installation):
    version = subprocess.run([str(installation.program), "-v"], capture_output=True, text=True, check=False)
    assert version.returncode == 0
    assert "qmail-scanner 2." in version.stdout
    assert str(installation.spool) in version.stdout
    usage = subprocess.run([str(installation.program), "-h"], capture_output=True, text=True, check=False)
    assert usage.returncode == 0 and "-z" in usage.stdout
    bad = subprocess.run([str(installation.program), "-q"], capture_output=True, text=True, check=False)
    assert bad.returncode == 100


def test_cleanup_removes_only_stale_work_files(installation):
    stale = installation.spool / "tmp" / "1.2.3"
    stale.mkdir()
    (stale / "part").write_bytes(b"x")
    fresh = installation.spool / "working" / "tmp" / "fresh"
    fresh.write_bytes(b"x")
    old = 1_000_000
    os.utime(stale, (old, old))
    cleanup = subprocess.run([str(installation.program), "-z"], capture_output=True, text=True, check=False)
    assert cleanup.returncode == 0, cleanup.stderr
    assert not stale.exists()
    assert fresh.exists()


def test_daily_cleanup_bounds_records_no_console_loader_takes(installation):
    """Without qs-console nothing takes current.jsonl away: -z keeps it to two files, never more."""
    records = installation.spool / "records"
    records.mkdir(exist_ok=True)
    current = records / "current.jsonl"
    with open(current, "wb") as handle:
        handle.truncate(65 << 20)  # past the 64 MB bound (sparse: no real disk used)
    (records / "current.jsonl.old").write_bytes(b"the older generation\n")
    cleanup = subprocess.run([str(installation.program), "-z"], capture_output=True, text=True, check=False)
    assert cleanup.returncode == 0, cleanup.stderr
    assert "no console loader takes the message records" in cleanup.stdout
    assert not current.exists() and (records / "current.jsonl.old").stat().st_size == 65 << 20
    # Where a loader runs (it keeps records/loader.lock), the records are its to move: -z leaves them.
    with open(current, "wb") as handle:
        handle.truncate(65 << 20)
    (records / "loader.lock").write_bytes(b"")
    cleanup = subprocess.run([str(installation.program), "-z"], capture_output=True, text=True, check=False)
    assert cleanup.returncode == 0, cleanup.stderr
    assert current.stat().st_size == 65 << 20 and "console loader" not in cleanup.stdout
