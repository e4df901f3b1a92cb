"""The qmail-queue contract: the envelope grammar, the custom-error fd and the hand-off."""

from __future__ import annotations

import os
import stat

from .outcomes import (
    CUSTOM_ERROR_EXIT,
    PERM_ADDRESS_TOO_LONG,
    TEMP_ENVELOPE_FORMAT,
    TEMP_READ_ERROR,
    TEMP_REJECTED,
    TEMP_WRITE_ERROR,
    EnvelopeError,
    Outcome,
    TemporaryFailure,
    custom_error_line,
)
from .records import Envelope
from .spool import write_pieces

MESSAGE_FD = 0
ENVELOPE_FD = 1
# qmail-queue refuses an address of ADDRESS_LIMIT bytes or more (exit 11).
ADDRESS_LIMIT = 1003
# Recipients beyond this are refused as an envelope format error: a bound on memory.
MAX_ENVELOPE_BYTES = 64 * 1024 * 1024
READ_CHUNK = 65536
# What the sender is told when the next hop fails (the log gets its path and the reason).
QUEUE_UNAVAILABLE = "4.3.0 mail queue unavailable, try again later"
QUEUE_FAILED = "4.3.0 mail queue failed to take the message, try again later"


class _EnvelopeReader:
    """Byte source over fd 1 with qmail-queue's read-error semantics."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.position = 0
        self.total = 0

    def byte(self) -> int:
        if self.position >= len(self.buffer):
            try:
                self.buffer = os.read(self.fd, READ_CHUNK)
            except OSError as error:
                raise EnvelopeError(f"envelope read error: {error.strerror}", TEMP_READ_ERROR) from None
            self.position = 0
            self.total += len(self.buffer)
            if not self.buffer:
                raise EnvelopeError("envelope ended before its final NUL", TEMP_READ_ERROR)
            if self.total > MAX_ENVELOPE_BYTES:
                raise EnvelopeError("envelope too large", TEMP_ENVELOPE_FORMAT)
        value = self.buffer[self.position]
        self.position += 1
        return value

    def address(self) -> bytes:
        """Read one address up to its NUL, refusing it as qmail-queue does when too long."""
        collected = bytearray()
        while True:
            value = self.byte()
            if value == 0:
                return bytes(collected)
            collected.append(value)
            if len(collected) >= ADDRESS_LIMIT:
                raise EnvelopeError("envelope address too long", PERM_ADDRESS_TOO_LONG)


def read_envelope(fd: int = ENVELOPE_FD) -> Envelope:
    """Read and check the envelope exactly as qmail-queue does (91 / 11 / 54)."""
    reader = _EnvelopeReader(fd)
    raw = bytearray(b"F")
    if reader.byte() != ord("F"):
        raise EnvelopeError("envelope does not start with F", TEMP_ENVELOPE_FORMAT)
    sender = reader.address()
    raw += sender + b"\0"
    recipients: list[bytes] = []
    while True:
        marker = reader.byte()
        if marker == 0:
            break
        if marker != ord("T"):
            raise EnvelopeError("envelope recipient does not start with T", TEMP_ENVELOPE_FORMAT)
        recipient = reader.address()
        recipients.append(recipient)
        raw += b"T" + recipient + b"\0"
    raw += b"\0"
    return Envelope(
        sender=sender.decode("utf-8", "surrogateescape"),
        recipients=tuple(r.decode("utf-8", "surrogateescape") for r in recipients),
        raw=bytes(raw),
    )


def is_open_pipe(fd: int) -> bool:
    """True when fd is an open pipe (under qmail-qfilter, fds 3-5 are its own files)."""
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def report_outcome(outcome: Outcome, custom_error_fd: int) -> int:
    """Tell qmail-smtpd why we refuse; return the exit code to use."""
    if isinstance(outcome, EnvelopeError):
        return outcome.exit_code
    if custom_error_fd and is_open_pipe(custom_error_fd):
        try:
            os.write(custom_error_fd, custom_error_line(outcome))
            return CUSTOM_ERROR_EXIT
        except OSError:
            pass
    return outcome.exit_code


def seal_inherited_fds(highest: int = 255) -> None:
    """Make every fd above 2 close on exec, so no child holds fd 6 or a caller's file."""
    for fd in range(3, highest + 1):
        try:
            os.set_inheritable(fd, False)
        except OSError:
            pass


def hand_on(binary: str, pieces: list, envelope_raw: bytes) -> int:
    """Run the real qmail-queue with the message pieces on fd 0 and the envelope on fd 1.

    pieces are bytes or (fd, offset) file ranges, as spool.write_pieces takes them.

    Returns its exit code; a next hop killed by a signal or one we could not feed counts
    as a temporary failure, because the message was not queued whole.
    """
    message_read, message_write = os.pipe()
    envelope_read, envelope_write = os.pipe()
    try:
        pid = os.posix_spawn(
            binary,
            [binary],
            {k: v for k, v in os.environ.items() if k != "QMAILQUEUE"},
            file_actions=[
                (os.POSIX_SPAWN_DUP2, message_read, 0),
                (os.POSIX_SPAWN_DUP2, envelope_read, 1),
            ],
        )
    except OSError as error:
        for fd in (message_read, message_write, envelope_read, envelope_write):
            os.close(fd)
        raise TemporaryFailure(QUEUE_UNAVAILABLE, TEMP_REJECTED, f"cannot run {binary}: {error.strerror}") from None
    os.close(message_read)
    os.close(envelope_read)
    fed_whole = True
    try:
        write_pieces(message_write, pieces)
        os.close(message_write)
        message_write = -1
        write_pieces(envelope_write, [envelope_raw])
    except OSError:
        fed_whole = False  # the next hop stopped reading; its exit code tells why
    finally:
        for fd in (message_write, envelope_write):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        # ECHILD: the kernel reaped it for us (SIGCHLD ignored) and its exit code is gone. It may have
        # committed the message, so a temporary failure may bring it twice; but 0 could lose it. Only
        # a clean start prevents this: main.clean_signal_state() sets SIGCHLD to SIG_DFL. No kill here:
        # the pid may already belong to another process.
        raise TemporaryFailure(QUEUE_FAILED, TEMP_REJECTED, f"{binary} ended unseen (SIGCHLD ignored?)") from None
    except BaseException:
        # Deadline or termination while qmail-queue runs: it has not committed, stop it.
        try:
            os.kill(pid, 9)  # SIGKILL; the signal module costs an enum import
            os.waitpid(pid, 0)
        except OSError:
            pass
        raise
    if os.WIFSIGNALED(status):
        raise TemporaryFailure(QUEUE_FAILED, TEMP_REJECTED, f"{binary} killed by signal {os.WTERMSIG(status)}")
    code = os.waitstatus_to_exitcode(status)
    if code == 0 and not fed_whole:
        detail = f"{binary} exited 0 without reading the whole message"
        raise TemporaryFailure(QUEUE_FAILED, TEMP_WRITE_ERROR, detail)
    return code
