"""The entry point the generated program calls: serve, an administrator command, or one message."""

from __future__ import annotations

# _signal, not signal (which imports enum); pipeline imports it anyway, so it costs nothing here.
import _signal
import os
import sys

from .settings import Settings

# What --serve keeps blocked until the master has its handlers (engine.master.CONTROL_SIGNALS).
_SERVE_BLOCKED = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP)


def clean_signal_state(blocked: tuple[int, ...] = ()) -> None:
    """Start from our own signal state, not the caller's: its mask and dispositions survive exec.

    A caller that ignores SIGCHLD makes the kernel reap our children: waitpid fails with ECHILD
    after qmail-queue committed the message (a temporary failure, then the same message again),
    and subprocess reports exit 0 (clean) for an AV command line that found a virus. A caller
    that blocks SIGALRM takes the deadline away. SIGTERM, SIGINT and SIGHUP get their handlers
    where they are used (pipeline, engine); SIGPIPE and SIGXFSZ are ignored by Python itself.
    """
    _signal.setitimer(_signal.ITIMER_REAL, 0)  # an alarm the caller armed is not our deadline
    _signal.signal(_signal.SIGALRM, _signal.SIG_IGN)  # discards one that is pending, blocked by the caller
    _signal.signal(_signal.SIGALRM, _signal.SIG_DFL)
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, blocked)


def main(frozen: dict, argv: list[str] | None = None) -> int:
    """Choose what this run does from its arguments; return the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--serve"]:
        # The master re-executes itself with these blocked: one that came meanwhile waits for its handler.
        clean_signal_state(_SERVE_BLOCKED)
        from .engine.master import serve

        return serve(Settings.from_mapping(frozen), os.path.abspath(sys.argv[0]))
    clean_signal_state()
    settings = Settings.from_mapping(frozen)
    if argv:
        from .admin_commands import run_command

        return run_command(settings, argv)
    from .pipeline import process_message

    return process_message(settings, dict(os.environ))
