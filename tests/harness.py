"""Drive the installed program the way qmail-smtpd does: real pipes on fds 0, 1 and 6.

An Installation is configure.py --prefix ... --install into a temp dir, with the
qmail-queue stand-in as next hop; Installation.run() feeds one message and envelope and
returns what a mail administrator could observe: exit code, custom-error text, stderr,
what the stand-in queued, what landed in the quarantine.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGURE = ROOT / "configure.py"
STANDIN_SOURCE = ROOT / "tests" / "standin" / "qmail-queue-standin.c"
CUSTOM_ERROR_FD = 6


def build_standin(directory: Path) -> Path:
    """Compile the qmail-queue stand-in (C, so it adds no interpreter start-up)."""
    binary = directory / "qmail-queue-standin"
    if not binary.exists():
        subprocess.run(["cc", "-O2", "-Wall", "-o", str(binary), str(STANDIN_SOURCE)], check=True)
    return binary


def envelope(sender: str, *recipients: str) -> bytes:
    """The envelope qmail-smtpd writes: F<sender>\\0 T<rcpt>\\0 ... \\0."""
    raw = b"F" + sender.encode() + b"\0"
    for recipient in recipients:
        raw += b"T" + recipient.encode() + b"\0"
    return raw + b"\0"


@dataclass
class QueuedMessage:
    """One message the stand-in accepted: its bytes, its envelope, the fds it inherited."""

    message: bytes
    envelope: bytes
    inherited_fds: list[int]

    @property
    def body_after_trace(self) -> bytes:
        """The message as received, i.e. without the headers we put on top."""
        return strip_added_headers(self.message)


@dataclass
class RunResult:
    exit_code: int
    stderr: str
    custom_error: bytes | None  # what we wrote on fd 6, None when fd 6 was not offered
    queued: list[QueuedMessage]
    seconds: float
    rusage_maxrss_kb: int = 0


@dataclass
class Installation:
    prefix: Path
    program: Path
    spool: Path
    sink: Path
    configure_output: str
    extra_env: dict[str, str] = field(default_factory=dict)

    def run(
        self,
        message: bytes | Path,
        envelope_bytes: bytes | None = None,
        env: dict[str, str] | None = None,
        offer_custom_error_fd: bool = True,
        close_envelope_early: bool = False,
        hold_message_open: bool = False,
        rlimit_fsize: int | None = None,
        timeout: float = 120.0,
        args: tuple[str, ...] = (),
        command: list[str] | None = None,
    ) -> RunResult:
        """Run the installed program once, as qmail-smtpd would, and collect the outcome."""
        before = set(self.sink.glob("*.msg"))
        if envelope_bytes is None:
            envelope_bytes = envelope("sender@example.org", "rcpt@example.com")
        message_read, message_write = os.pipe()
        envelope_read, envelope_write = os.pipe()
        error_read, error_write = os.pipe() if offer_custom_error_fd else (-1, -1)
        child_env = {"PATH": "/usr/bin:/bin", "QQ_STANDIN_DIR": str(self.sink), **self.extra_env, **(env or {})}

        def place_custom_error_fd() -> None:
            if rlimit_fsize is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (rlimit_fsize, rlimit_fsize))
            if error_write >= 0:
                os.dup2(error_write, CUSTOM_ERROR_FD)
            elif _is_open(CUSTOM_ERROR_FD):
                os.close(CUSTOM_ERROR_FD)

        started = time.monotonic()
        process = subprocess.Popen(
            command or [str(self.program), *args],
            stdin=message_read,
            stdout=envelope_read,
            stderr=subprocess.PIPE,
            env=child_env,
            # Python's own fds are close-on-exec; only the dup2'd fd 6 reaches the program.
            close_fds=False,
            preexec_fn=place_custom_error_fd,
        )
        for fd in (message_read, envelope_read, error_write):
            if fd >= 0:
                os.close(fd)

        feeder = start_feeding(
            message_write,
            envelope_write,
            message,
            None if close_envelope_early else envelope_bytes,
            hold_message_open=hold_message_open,
        )
        _, stderr, custom_error = finish_run(process, feeder, error_read, timeout)
        if hold_message_open:
            feeder.close_all()
        seconds = time.monotonic() - started
        queued = [load_queued(path) for path in sorted(set(self.sink.glob("*.msg")) - before)]
        return RunResult(process.returncode, stderr.decode("utf-8", "replace"), custom_error, queued, seconds)

    def quarantined(self, kind: str) -> list[Path]:
        """Messages in quarantine/<kind>/new."""
        return sorted((self.spool / "quarantine" / kind / "new").iterdir())

    def work_files(self) -> list[Path]:
        """Anything left in the work areas (must be empty after every run)."""
        return spool_work_files(self.spool)


def spool_work_files(spool: Path) -> list[Path]:
    """Anything left in a spool's work areas (must be empty after every run)."""
    found = []
    for relative in ("tmp", "working/tmp", "working/new", "working/cur"):
        directory = spool / relative
        if directory.exists():
            found += list(directory.iterdir())
    return found


class Feeder(threading.Thread):
    """Writes what qmail-smtpd writes: the whole message on one pipe, then the envelope on the other.

    Each fd is closed exactly once: a second close could hit a file another thread just opened.
    """

    def __init__(
        self,
        message_fd: int,
        envelope_fd: int,
        message: bytes | Path,
        envelope_bytes: bytes | None,
        chunk: int = 1 << 16,
        pause: float = 0.0,
        hold_message_open: bool = False,
    ) -> None:
        super().__init__(daemon=True)
        self.open_fds = [message_fd, envelope_fd]
        self.message_fd, self.envelope_fd = message_fd, envelope_fd
        self.message, self.envelope_bytes = message, envelope_bytes
        self.chunk, self.pause, self.hold_message_open = chunk, pause, hold_message_open

    def _chunks(self):
        if isinstance(self.message, Path):
            with open(self.message, "rb") as source:
                while chunk := source.read(self.chunk):
                    yield chunk
        else:
            view = memoryview(self.message)
            for offset in range(0, len(view), self.chunk):
                yield view[offset : offset + self.chunk]

    def _close(self, fd: int) -> None:
        if fd in self.open_fds:
            self.open_fds.remove(fd)
            _close_quietly(fd)

    def close_all(self) -> None:
        for fd in list(self.open_fds):
            self._close(fd)

    def run(self) -> None:
        try:
            for chunk in self._chunks():
                view = memoryview(chunk)
                while view:
                    view = view[os.write(self.message_fd, view) :]
                if self.pause:
                    time.sleep(self.pause)
            if self.hold_message_open:
                return  # a caller that never finishes the message; closed after the run
            self._close(self.message_fd)
            if self.envelope_bytes is not None:  # None: the caller vanished before the envelope
                os.write(self.envelope_fd, self.envelope_bytes)
        except OSError:
            pass
        finally:
            if not self.hold_message_open:
                self.close_all()


@contextlib.contextmanager
def caller_files(message: bytes, envelope_bytes: bytes):
    """The message and envelope as files to give the program on fds 0 and 1.

    A file is read to EOF without a feeding thread: the safe shape for many concurrent runs.
    """
    with tempfile.TemporaryFile() as message_file, tempfile.TemporaryFile() as envelope_file:
        for handle, data in ((message_file, message), (envelope_file, envelope_bytes)):
            handle.write(data)
            handle.seek(0)
        yield message_file, envelope_file


def finish_run(
    process: subprocess.Popen, feeder: Feeder, error_read: int, timeout: float
) -> tuple[bytes, bytes, bytes | None]:
    """Read the custom-error pipe to EOF (as qmail-smtpd does) while stderr is drained, then wait; kill on timeout.

    stderr is read at the same time, as a supervisor's logger does: a program that logs more than a
    pipe holds (a line per recipient of 500) before it closes fd 6 must not wait on the test.
    Returns (stdout, stderr, custom-error text or None when no pipe was offered).
    """
    custom_error: list[bytes] = []
    reader = None
    if error_read >= 0:
        reader = threading.Thread(target=lambda: custom_error.append(_read_all(error_read)), daemon=True)
        reader.start()
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    finally:
        if reader is not None:
            reader.join(timeout)
            os.close(error_read)
    feeder.join(5)
    return stdout or b"", stderr or b"", (custom_error[0] if custom_error else b"") if reader is not None else None


def start_feeding(message_fd: int, envelope_fd: int, message: bytes | Path, envelope_bytes: bytes | None, **options):
    """Start a Feeder thread and return it."""
    feeder = Feeder(message_fd, envelope_fd, message, envelope_bytes, **options)
    feeder.start()
    return feeder


def _close_quietly(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


def load_queued(path: Path) -> QueuedMessage:
    fds_file = path.with_suffix(".fds")
    fds = [int(x) for x in fds_file.read_text().split()] if fds_file.exists() else []
    return QueuedMessage(path.read_bytes(), path.with_suffix(".env").read_bytes(), fds)


def strip_added_headers(message: bytes) -> bytes:
    """Remove the header lines we prepend (trace, descriptive), with their continuations."""
    ours = (b"x-qmail-scanner", b"x-spam-")
    lines = message.split(b"\n")
    index = 0
    while index < len(lines):
        lowered = lines[index].lower()
        if not lowered.startswith(ours):
            break
        index += 1
        while index < len(lines) and lines[index][:1] in (b" ", b"\t"):
            index += 1
    return b"\n".join(lines[index:])


def install(
    prefix: Path, standin: Path, *configure_args: str, python: str | None = None, configure: Path = CONFIGURE
) -> Installation:
    """configure.py --prefix prefix --install with the stand-in as next hop (`configure`: another tree's)."""
    sink = prefix / "queue"
    sink.mkdir(parents=True, exist_ok=True)
    args = [
        python or sys.executable,
        str(configure),
        "--prefix",
        str(prefix),
        "--qmail-queue-binary",
        str(standin),
        "--output",
        str(prefix / "qmail-scanner-queue.py"),
        "--batch",
        "--quiet",
        "--install",
        "--skip-setuid-test",
    ]
    given = set(configure_args)
    if not any(a.startswith("--notify") for a in given):
        args += ["--notify", "none"]
    if not any(a.startswith("--scanners") for a in given):
        args += ["--scanners", "none"]
    args += list(configure_args)
    completed = subprocess.run(args, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"configure failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
    return Installation(
        prefix=prefix,
        program=prefix / "bin" / "qmail-scanner-queue.py",
        spool=prefix / "spool",
        sink=sink,
        configure_output=completed.stdout + completed.stderr,
    )


def smtp_reply(exit_code: int, custom_error: bytes | None) -> str:
    """What qmail-smtpd answers for an exit code (and custom-error text), as in qmail-smtpd.c."""
    if exit_code == 82 and custom_error and len(custom_error) > 2:
        text = custom_error[1:].decode("utf-8", "replace")
        return f"554 {text}" if custom_error[:1] == b"D" else f"451 {text}"
    replies = {
        0: "250 ok",
        11: "554 envelope address too long for qq (#5.1.3)",
        31: "554 mail server permanently rejected message (#5.3.0)",
        51: "451 qq out of memory (#4.3.0)",
        52: "451 qq timeout (#4.3.0)",
        53: "451 qq write error or disk full (#4.3.0)",
        54: "451 qq read error (#4.3.0)",
        55: "451 qq unable to read configuration (#4.3.0)",
        56: "451 qq trouble making network connection (#4.3.0)",
        61: "451 qq trouble in home directory (#4.3.0)",
        63: "451 qq trouble creating files in queue (#4.3.0)",
        71: "451 mail server temporarily rejected message (#4.3.0)",
        81: "451 qq internal bug (#4.3.0)",
        91: "451 qq internal bug (#4.3.0)",
    }
    if exit_code in replies:
        return replies[exit_code]
    if 11 <= exit_code <= 40:
        return "554 qq permanent problem (#5.3.0)"
    return "451 qq temporary problem (#4.3.0)"
