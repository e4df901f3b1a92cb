"""The spool: unique ids, the per-message work area, maildir writes and cleanup."""

from __future__ import annotations

import errno
import os
import time

from .outcomes import TEMP_CREATE_FILES, TEMP_READ_ERROR, TEMP_WRITE_ERROR, TemporaryFailure
from .recordtype import record

# What the sender is told (the log gets the path and the reason).
WORK_FILES_FAILED = "4.3.0 the scanner cannot create its work files, try again later"
STORE_FAILED = "4.3.0 the scanner cannot store the message, try again later"

# Layout under the spool directory (the 2.x names, so existing habits carry over).
WORK_DIRS = ("tmp", "working/tmp", "working/new", "working/cur")
MAILDIRS = ("quarantine/viruses", "quarantine/policy", "quarantine/spam", "archives", "failed")
RECORDS_DIR = "records"  # message records for qs-console (message_record.py), 0750: its loader reads them
STALE_WORK_SECONDS = 30 * 3600
NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)
_sequence = 0


def unique_id() -> str:
    """A maildir-style id unique on this host: time, pid, a counter and entropy."""
    global _sequence
    _sequence += 1
    now = time.time()
    return f"{int(now)}.{os.getpid()}_{_sequence}.{int(now * 1e6) % 1000000:06d}{os.urandom(3).hex()}"


@record
class WorkArea:
    """The files of one message in flight; all removed when processing ends."""

    message_id: str
    message_path: str  # working/tmp/<id>: the message as received
    unpack_dir: str  # tmp/<id>/: decoded parts
    message_size: int = 0
    header_bytes: bytes = b""  # the first block of the message, for cheap header reads

    def remove(self) -> None:
        """Remove every file of this message; never follows symlinks."""
        try:
            os.unlink(self.message_path)
        except OSError:
            pass  # never there, or already gone: cleanup must not fail the message
        remove_tree(self.unpack_dir)


def remove_tree(path: str) -> None:
    """Remove a work dir and everything in it, never following a symlink out of it.

    shutil.rmtree would do, but importing shutil costs every message a few milliseconds.
    """
    if os.path.islink(path):  # scandir would follow it: remove the link itself only
        try:
            os.unlink(path)
        except OSError:
            pass
        return
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    except NotADirectoryError:
        try:
            os.unlink(path)
        except OSError:
            pass
        return
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                remove_tree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            continue
    try:
        os.rmdir(path)
    except OSError:
        pass


def create_work_area(spooldir: str) -> WorkArea:
    """Make the unpack dir (0700, exclusive); the message file is made by spool_message."""
    message_id = unique_id()
    unpack_dir = os.path.join(spooldir, "tmp", message_id)
    try:
        os.mkdir(unpack_dir, 0o700)
    except OSError as error:
        detail = f"cannot create work dir {unpack_dir}: {error.strerror}"
        raise TemporaryFailure(WORK_FILES_FAILED, TEMP_CREATE_FILES, detail) from None
    return WorkArea(message_id, os.path.join(spooldir, "working", "tmp", message_id), unpack_dir)


def spool_message(area: WorkArea, source_fd: int, chunk_bytes: int, header_keep: int = 65536) -> int:
    """Stream source_fd to the work file in bounded chunks; return an fd open on the file."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | NO_FOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(area.message_path, flags, 0o600)
    except OSError as error:
        raise TemporaryFailure(f"cannot create spool file: {error.strerror}", TEMP_CREATE_FILES) from None
    head = bytearray()
    size = 0
    while True:
        try:
            chunk = os.read(source_fd, chunk_bytes)
        except OSError as error:
            os.close(fd)
            raise TemporaryFailure(f"message read error: {error.strerror}", TEMP_READ_ERROR) from None
        if not chunk:
            break
        if len(head) < header_keep:
            head += chunk[: header_keep - len(head)]
        try:
            _write_all(fd, chunk)
        except OSError as error:
            os.close(fd)
            raise TemporaryFailure(f"spool write error: {error.strerror}", TEMP_WRITE_ERROR) from None
        size += len(chunk)
    area.message_size = size
    area.header_bytes = bytes(head)
    return fd


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:  # a write of 0 bytes means the device is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def write_pieces(destination_fd: int, pieces: list) -> None:
    """Write pieces (bytes, or (fd, offset) ranges copied to the file's end) to a fd."""
    for piece in pieces:
        if isinstance(piece, tuple):
            source_fd, offset = piece
            while chunk := os.pread(source_fd, 1 << 16, offset):
                _write_all(destination_fd, chunk)
                offset += len(chunk)
        else:
            _write_all(destination_fd, piece)


def deliver_to_maildir(maildir: str, pieces: list, message_id: str) -> str:
    """Write pieces (see write_pieces) into maildir the durable way.

    tmp/ file created exclusively, written, fsynced, renamed into new/, directory fsynced:
    only then may the caller report the message as stored.
    """
    tmp_path = os.path.join(maildir, "tmp", message_id)
    new_path = os.path.join(maildir, "new", message_id)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NO_FOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp_path, flags, 0o600)
    except OSError as error:
        raise TemporaryFailure(STORE_FAILED, TEMP_CREATE_FILES, f"cannot create {tmp_path}: {error.strerror}") from None
    try:
        write_pieces(fd, pieces)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.rename(tmp_path, new_path)
        directory = os.open(os.path.join(maildir, "new"), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as error:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp_path)
        except OSError:
            pass
        detail = f"cannot store message in {maildir}: {error.strerror}"
        raise TemporaryFailure(STORE_FAILED, TEMP_WRITE_ERROR, detail) from None
    return new_path


def creator_is_gone(name: str) -> bool:
    """True when a work file's name (see unique_id) names a process that no longer exists.

    A scanner killed by SIGKILL cannot clean up; its files are orphans from that moment on,
    so -z removes them at once instead of after 30 hours.
    """
    try:
        pid = int(name.split(".")[1].split("_")[0])
    except (IndexError, ValueError):
        return False
    if pid <= 1 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, another user's
    return False


def remove_stale_work(spooldir: str, max_age: float = STALE_WORK_SECONDS, now: float | None = None) -> list[str]:
    """Remove work files and dirs older than max_age or left by a dead process (-z); return what went."""
    cutoff = (now if now is not None else time.time()) - max_age
    removed = []
    # Maildir tmp/ files are half-written copies (a store interrupted by a kill): never mail.
    for relative in ("tmp", "working/tmp", "working/new", "working/cur", *(f"{m}/tmp" for m in MAILDIRS)):
        directory = os.path.join(spooldir, relative)
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_mtime >= cutoff and not creator_is_gone(entry.name):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    remove_tree(entry.path)
                else:
                    os.unlink(entry.path)
                removed.append(entry.path)
            except OSError:
                continue
    return removed


def create_layout(spooldir: str) -> None:
    """Create every spool directory that is missing (0700); used by install and tests."""
    for relative in WORK_DIRS:
        os.makedirs(os.path.join(spooldir, relative), 0o700, exist_ok=True)
    for relative in MAILDIRS:
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(spooldir, relative, sub), 0o700, exist_ok=True)
    os.makedirs(os.path.join(spooldir, RECORDS_DIR), 0o750, exist_ok=True)
