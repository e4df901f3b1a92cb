"""The per-message function: receive one message on fds 0/1, inspect, act, answer with an exit code."""

from __future__ import annotations

# _signal, not signal: the signal module imports enum, a few milliseconds per message.
import _signal as signal
import os
import sys
import time

from . import outcomes
from .message import Message
from .outcomes import Outcome, PermanentReject, TemporaryFailure
from .queue_protocol import read_envelope, report_outcome, seal_inherited_fds
from .records import Envelope, Verdict
from .settings import Settings
from .spool import WorkArea, create_work_area, spool_message
from .stderr_log import say


def _raise_deadline(signum: int, frame: object) -> None:
    raise TemporaryFailure("scanning took too long (deadline passed), try again later", outcomes.TEMP_TIMEOUT)


def _raise_terminated(signum: int, frame: object) -> None:
    raise TemporaryFailure(f"scanner stopped by signal {signum}, try again later", outcomes.TEMP_REJECTED)


def _install_signal_handlers(deadline_seconds: float) -> None:
    signal.signal(signal.SIGALRM, _raise_deadline)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _raise_terminated)
    # A file-size limit must surface as a write error (EFBIG), not kill us silently.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.setitimer(signal.ITIMER_REAL, deadline_seconds)


def _quiet_signals() -> None:
    """No more signal-raised exceptions: cleanup and the exit must finish."""
    signal.setitimer(signal.ITIMER_REAL, 0)
    for signum in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)


def inspect_message(message: Message) -> Verdict:
    """Unpack, check and scan; return what should happen to the message."""
    from .inspection import inspect

    return inspect(message)


def act(message: Message, verdict: Verdict) -> int:
    """Carry out the verdict; return the exit code (0 only when queued or stored)."""
    from .actions import carry_out

    return carry_out(message, verdict)


def process_message(settings: Settings, environ: dict[str, str], after_answer: list | None = None) -> int:
    """Receive one message on fds 0/1, decide, act; return the exit code.

    With `after_answer` (the engine), removing the work files is left to the caller, who does
    it after the client has its answer: the verdict is final by then.
    """
    started = time.monotonic()
    area: WorkArea | None = None
    message: Message | None = None
    message_fd = -1
    try:
        _install_signal_handlers(settings.deadline_seconds)
        if not _open_missing_standard_fds():
            raise outcomes.EnvelopeError("fd 0 or fd 1 is closed: no message to read", outcomes.TEMP_READ_ERROR)
        seal_inherited_fds()
        area = create_work_area(settings.spooldir)
        message_fd = spool_message(area, 0, settings.spool_chunk_bytes)
        envelope = read_envelope(1)
        message = Message(settings_for(settings, envelope), area, message_fd, envelope, environ, started)
        off = [s.name for s in settings.scanners if s not in message.settings.scanners]
        message.skipped += [f"{name} (settings_per_domain)" for name in off]
        code = inspect_and_act(message)
    except Outcome as outcome:
        _quiet_signals()
        say(f"{outcome.detail} (exit {outcome.exit_code})")
        _trace_failure(message, outcome.detail)
        code = report_outcome(outcome, settings.custom_error_fd)
        _record_failure(settings, environ, area, message, code, outcome.permanent, outcome.detail)
    except MemoryError:
        _quiet_signals()
        say("out of memory")
        code = outcomes.TEMP_OUT_OF_MEMORY
        _record_failure(settings, environ, area, message, code, False, "out of memory")
    except Exception as error:
        _quiet_signals()
        problem = f"internal error {type(error).__name__}: {error}"
        say(problem)
        _trace_failure(message, problem)
        failure = TemporaryFailure("4.3.0 temporary scanner problem, try again later")
        code = report_outcome(failure, settings.custom_error_fd)
        _record_failure(settings, environ, area, message, code, False, problem)
    finally:
        _quiet_signals()
        if message_fd >= 0:
            os.close(message_fd)
        if area is not None and settings.debug < 100:
            if after_answer is None:
                area.remove()
            else:
                after_answer.append(area.remove)
    return code


def settings_for(settings: Settings, envelope: Envelope) -> Settings:
    """The site's settings, narrowed by the per-domain file for these recipients when enabled."""
    if not settings.settings_per_domain:
        return settings
    from .domain_settings import apply

    return apply(settings, envelope.recipients, say)


def inspect_and_act(message: Message) -> int:
    """Decide and act; a message that cannot be inspected goes to failed/ when the site chose that."""
    try:
        verdict = inspect_message(message)
    except PermanentReject:
        raise
    except Exception as problem:  # a scanner failure, the deadline, or a bug
        if message.settings.failed_action != "store":
            raise
        from .actions import store_failed

        reason = problem.detail if isinstance(problem, Outcome) else f"{type(problem).__name__}: {problem}"
        say(f"could not scan the message, kept in failed/: {reason}")
        return store_failed(message, reason)
    return act(message, verdict)


def _trace_failure(message: Message | None, text: str) -> None:
    """The --debug trace of a message that ends in a failure or a rejection is kept too."""
    if message is None or not message.settings.debug:
        return
    try:
        from .logs import note, write_debug_trace

        note(message, f"ended: {text}")
        write_debug_trace(message)
    except Exception as error:  # the outcome stands; only its trace is lost
        say(f"debug trace failed: {error}")


def _record_failure(
    settings: Settings,
    environ: dict[str, str],
    area: WorkArea | None,
    message: Message | None,
    code: int,
    permanent: bool,
    reason: str,
) -> None:
    """The console's record of a refused or failed message; the exit code stands whatever happens here."""
    try:
        from .message_record import write_failure

        # Exit codes 11 to 40 are permanent whatever raised them (an address too long: 11).
        write_failure(settings, environ, area, message, code, permanent or 11 <= code <= 40, reason)
    except Exception as error:
        say(f"message record failed: {type(error).__name__}: {error}")


def _open_missing_standard_fds() -> bool:
    """Put /dev/null on closed fds 0-2, so no work file lands there; False if fd 0 or 1 was closed."""
    complete = True
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        # Without this, a closed fd 2 becomes the spool file and our stderr lines land in the message.
        opened = os.open(os.devnull, os.O_WRONLY if fd == 2 else os.O_RDONLY)
        os.set_inheritable(opened, True)
        if fd == 2 and sys.stderr is None:  # Python found fd 2 closed at start-up
            sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        complete = complete and fd == 2
    return complete
