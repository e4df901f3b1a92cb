"""The caller's signal state does not reach the program: it starts from a clean mask and its own dispositions.

Signal dispositions set to SIG_IGN and the blocked-signal mask survive exec. A caller that ignores
SIGCHLD makes the kernel reap the program's children: waitpid fails with ECHILD after qmail-queue
committed the message, the program temp-fails and the sender's retry delivers the message twice. A
caller that blocks SIGALRM takes away the deadline. The callers here are a small C launcher that
sets that state and execs the installed program (or the engine, as its supervisor).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from engine_fixtures import Engine
from harness import CUSTOM_ERROR_FD, envelope, smtp_reply
from security_fixtures import caller_ids, compile_c, install_wrapped

CUSTOM_ERROR_EXIT = 82  # the temporary failure's text is on fd 6 (Z...: 451)
DEADLINE = 3
MARGIN = 5.0  # start-up and reaping on a loaded CI machine; without the fix it takes forever (or 13 s)

LAUNCHER = r"""
#include <signal.h>
#include <unistd.h>
int main(int argc, char **argv) {
  sigset_t set;
  (void)argc;
#ifdef IGNORE_CHLD
  signal(SIGCHLD, SIG_IGN);
#endif
#ifdef BLOCK_ALRM
  sigemptyset(&set);
  sigaddset(&set, SIGALRM);
  sigprocmask(SIG_BLOCK, &set, 0);
#endif
  (void)set;
  execv(argv[1], argv + 1);
  return 81;
}
"""

CLEAN = b"From: alice@example.org\nTo: bob@example.com\nSubject: lunch\n\nplain text line\n"


def launcher(directory: Path, *defines: str) -> str:
    """The C launcher with these -D switches (IGNORE_CHLD, BLOCK_ALRM), world-runnable."""
    name = "launch-" + "-".join(define.lower() for define in defines)
    return str(compile_c(LAUNCHER, directory / name, *(f"-D{define}" for define in defines)))


@pytest.fixture(scope="module")
def launchers(tmp_path_factory):
    directory = tmp_path_factory.mktemp("launchers")
    directory.chmod(0o755)
    return {
        "ignore-chld": launcher(directory, "IGNORE_CHLD"),
        "block-alrm": launcher(directory, "BLOCK_ALRM"),
        "both": launcher(directory, "IGNORE_CHLD", "BLOCK_ALRM"),
    }


def test_launcher_really_leaves_that_state_to_what_it_runs(launchers):
    """The tests below mean something only if the state survives exec into the program."""
    probe = [launchers["both"], "/bin/grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"]  # grep's own state
    done = subprocess.run(probe, capture_output=True, text=True, check=True)
    masks = dict(line.split(":\t") for line in done.stdout.splitlines())
    assert int(masks["SigBlk"], 16) & (1 << (14 - 1))  # SIGALRM blocked
    assert int(masks["SigIgn"], 16) & (1 << (17 - 1))  # SIGCHLD ignored


def test_caller_ignoring_sigchld_gets_one_delivery_and_exit_0(make_installation, launchers):
    """Before: qmail-queue queued the message, waitpid got ECHILD, exit 71, and the retry queued it again."""
    installation = make_installation()
    result = installation.run(CLEAN, command=[launchers["ignore-chld"], str(installation.program)])
    assert result.exit_code == 0, result.stderr
    assert len(result.queued) == 1


def hold_open(command: list[str], preexec=None, seconds: float = DEADLINE + MARGIN) -> tuple[int | None, float, bytes]:
    """Run command as qmail-smtpd would, but never send the message nor close fd 0.

    Returns (exit code or None when still running after `seconds`, seconds taken, custom error text).
    """
    message_read, message_write = os.pipe()
    envelope_read, envelope_write = os.pipe()
    error_read, error_write = os.pipe()

    def place_fds() -> None:
        os.dup2(error_write, CUSTOM_ERROR_FD)
        if preexec:
            preexec()

    started = time.monotonic()
    process = subprocess.Popen(
        command, stdin=message_read, stdout=envelope_read, stderr=subprocess.DEVNULL, close_fds=False,
        preexec_fn=place_fds, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    for fd in (message_read, envelope_read, error_write):
        os.close(fd)
    try:
        code = process.wait(seconds)
    except subprocess.TimeoutExpired:
        code = None
        process.kill()
        process.wait()
    taken = time.monotonic() - started
    for fd in (message_write, envelope_write):
        os.close(fd)
    with os.fdopen(error_read, "rb") as errors:
        os.set_blocking(error_read, False)
        try:
            text = errors.read() or b""
        except BlockingIOError:
            text = b""
    return code, taken, text


def test_caller_blocking_sigalrm_still_gets_the_deadline(make_installation, launchers):
    """Before: the alarm stayed pending behind the caller's mask and the program waited on fd 0 for ever."""
    installation = make_installation("--deadline", str(DEADLINE))
    code, taken, text = hold_open([launchers["block-alrm"], str(installation.program)])
    assert code == CUSTOM_ERROR_EXIT, f"exit {code} after {taken:.1f} s"
    assert DEADLINE - 0.5 < taken < DEADLINE + MARGIN
    assert smtp_reply(code, text).startswith("451 ") and b"took too long" in text


# ------------------------------------------------------------------ the engine, started by such a supervisor


@pytest.fixture(scope="module")
def hostile_supervised_engine(launchers):
    """An engine whose supervisor ignores SIGCHLD and blocks SIGALRM (inherited through fork and exec)."""
    installation = install_wrapped("--deadline", str(DEADLINE), "--engine-workers", "2")
    engine = Engine(installation, launcher=[launchers["both"]]).start()
    yield engine
    engine.stop()
    installation.remove()


def served_by_engine(engine: Engine) -> int:
    return engine.status().get("served", 0)


def test_engine_of_a_supervisor_ignoring_sigchld_delivers_once(hostile_supervised_engine):
    engine = hostile_supervised_engine
    before = served_by_engine(engine)
    result = engine.installation.run(CLEAN, envelope("sender@example.org", "rcpt@example.com"))
    assert result.exit_code == 0, result.stderr
    assert len(result.queued) == 1
    engine.wait_until(lambda: served_by_engine(engine) > before, 10)


def test_engine_of_a_supervisor_blocking_sigalrm_still_keeps_the_deadline(hostile_supervised_engine):
    """Before: the workers inherited the blocked SIGALRM; only the master's watchdog (deadline + 10 s) ended it."""
    engine = hostile_supervised_engine
    caller = caller_ids()

    def become_caller() -> None:
        os.setgroups([])
        os.setgid(caller[1])
        os.setuid(caller[0])

    assert engine.serving()
    before = served_by_engine(engine)
    code, taken, text = hold_open([str(engine.installation.wrapper)], become_caller)
    assert code == CUSTOM_ERROR_EXIT, f"exit {code} after {taken:.1f} s\n{engine.log()[-2000:]}"
    engine.wait_until(lambda: served_by_engine(engine) > before, 10)  # a worker answered, not the standalone program
    assert DEADLINE - 0.5 < taken < DEADLINE + MARGIN
    assert smtp_reply(code, text).startswith("451 ") and b"took too long" in text
    assert "still busy" not in engine.log()  # the worker's own alarm, not the master's kill
