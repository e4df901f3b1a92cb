"""--install as a transaction: every installed file built in a staging directory beside its target, then renamed in.

Each target directory gets a staging directory (STAGING_NAME): on the same filesystem, so the
last step is rename(2); root's and 0755, so the checks can run what is staged as the scanner
account, which cannot change it. Until swap() nothing installed is touched: a failure removes
the staging directories and the previous program, wrapper and engine stay as they were (same
inodes). swap() keeps each changed target as a backup (a hard link for a file, so the name is
never missing; an atomic exchange for a directory) and puts the staged one in; a failing step,
or a failed check after the swap, puts every previous one back (roll_back()).
"""

from __future__ import annotations

import ctypes
import filecmp
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass

from .nofollow import write_all
from .probes import ConfigureError

STAGING_NAME = ".qmail-scanner-staging"
# Backups kept per installed file: enough to step back over the last few configure runs by hand
# (cp -p NAME.STAMP NAME); bounded, because a trial of many runs must not pile up old programs and
# old setuid wrappers (a backup wrapper loses its setuid bit, but an old program is still runnable).
MAX_BACKUPS = 3
BACKUP_STAMP = "%Y%m%d-%H%M%S"
AT_FDCWD = -100
RENAME_EXCHANGE = 2  # renameat2(2): both names swapped at once


@dataclass
class StagedEntry:
    """One installed file or directory: where it goes, where it is built, what the swap did."""

    target: str
    staged: str
    is_dir: bool
    existed: bool = False
    unchanged: bool = False
    swapped: bool = False
    backup: str = ""
    backup_mode: int = 0  # the previous file's mode when the backup lost its set-id bits
    keep_backup: bool = True  # False: the previous one is kept only until commit() (man pages)


class Transaction:
    """Stage with stage_file / stage_path, then swap(); commit() prunes old backups, roll_back() undoes."""

    def __init__(self) -> None:
        self.entries: list[StagedEntry] = []
        self.staging_dirs: dict[str, str] = {}

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.discard()

    def staging_dir(self, target_dir: str) -> str:
        """The staging directory in target_dir, made fresh (a leftover of an interrupted run is removed)."""
        if target_dir not in self.staging_dirs:
            path = os.path.join(target_dir, STAGING_NAME)
            _remove(path)
            os.mkdir(path, 0o700)
            if os.geteuid() == 0:
                os.chown(path, 0, 0)
            os.chmod(path, 0o755)  # the scanner account runs the staged program in the checks, cannot write
            self.staging_dirs[target_dir] = path
        return self.staging_dirs[target_dir]

    def stage_path(self, target: str, is_dir: bool = False) -> str:
        """Register target and return the name to build it under (the caller fills it)."""
        if any(entry.target == target for entry in self.entries):
            raise ConfigureError(f"{target} is staged twice", "a bug in configure: please report it")
        staged = os.path.join(self.staging_dir(os.path.dirname(target)), os.path.basename(target))
        self.entries.append(StagedEntry(target, staged, is_dir))
        return staged

    def stage_file(self, target: str, content: bytes, mode: int, keep_backup: bool = True) -> str:
        """Stage a root-owned file with this content and mode; the way every installed file goes in."""
        staged = self.stage_path(target)
        self.entries[-1].keep_backup = keep_backup
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, content)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        return staged

    def staged_name(self, target: str) -> str:
        return next(entry.staged for entry in self.entries if entry.target == target)

    def swap(self) -> None:
        """Put every staged entry in place, previous ones kept as backups; on any failure put them all back."""
        stamp = time.strftime(BACKUP_STAMP)
        entry = None
        try:
            for entry in self.entries:
                _swap_one(entry, stamp)
        except OSError as error:
            self.roll_back()
            where = entry.target if entry else "?"
            raise ConfigureError(
                f"putting {where} in place failed ({error.strerror}); the previous installation was put back",
                "fix the cause (disk full? read-only filesystem?) and re-run",
            ) from None

    def roll_back(self) -> None:
        """Undo swap(): the previous files back under their names, the new ones dropped."""
        for entry in reversed(self.entries):
            if not entry.swapped:
                continue
            if entry.backup:
                if entry.backup_mode:
                    os.chmod(entry.backup, entry.backup_mode)
                if entry.is_dir:
                    _put_tree_back(entry.backup, entry.target)
                else:
                    os.rename(entry.backup, entry.target)
            else:
                _remove(entry.target)
            entry.swapped = False

    def commit(self) -> list[str]:
        """Keep the newest MAX_BACKUPS backups of each replaced target; return the backups made now."""
        made = []
        for entry in self.entries:
            if entry.backup and not entry.keep_backup:
                # A man page: the old one served until the swap held; a dated copy beside it would be listed.
                os.unlink(entry.backup)
            elif entry.backup:
                made.append(entry.backup)
            if entry.swapped:
                prune_backups(entry.target)
        self.discard()
        return made

    def discard(self) -> None:
        """Remove the staging directories (whatever is left in them)."""
        for path in self.staging_dirs.values():
            _remove(path)
        self.staging_dirs.clear()


def _swap_one(entry: StagedEntry, stamp: str) -> None:
    entry.existed = os.path.lexists(entry.target)
    if entry.existed and _same(entry.staged, entry.target, entry.is_dir):
        entry.unchanged = True  # byte-identical: the installed one stays, inode and all
        return
    if not entry.existed:
        os.rename(entry.staged, entry.target)
    elif entry.is_dir:
        backup = free_backup_name(entry.target, stamp)
        if _exchange(entry.staged, entry.target):
            entry.swapped = True
            entry.backup = entry.staged  # the previous tree is there now, until renamed
            os.rename(entry.staged, backup)
        else:  # no renameat2: a moment without the directory (a program starting then exits 81, retried)
            os.rename(entry.target, backup)
            entry.swapped = True
            os.rename(entry.staged, entry.target)
        entry.backup = backup
    else:
        backup = free_backup_name(entry.target, stamp)
        os.link(entry.target, backup, follow_symlinks=False)
        entry.backup = backup
        os.rename(entry.staged, entry.target)
        mode = os.lstat(backup).st_mode
        if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
            entry.backup_mode = stat.S_IMODE(mode)  # an old setuid wrapper must not stay runnable setuid
            os.chmod(backup, stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID))
    entry.swapped = True


def _put_tree_back(backup: str, target: str) -> None:
    """The previous tree at backup goes back to target; the new one there is removed."""
    if os.path.lexists(target) and _exchange(backup, target):
        _remove(backup)
        return
    aside = target + ".rolled-back"
    _remove(aside)
    if os.path.lexists(target):
        os.rename(target, aside)
    os.rename(backup, target)
    _remove(aside)


def _same(staged: str, target: str, is_dir: bool) -> bool:
    """The target already is what was staged: contents, modes and owners (for a tree: its sources and file names)."""
    if is_dir:
        return (
            os.path.isdir(target) and not os.path.islink(target) and _tree_signature(staged) == _tree_signature(target)
        )
    new, old = os.lstat(staged), os.lstat(target)
    if (new.st_mode, new.st_uid, new.st_gid) != (old.st_mode, old.st_uid, old.st_gid) or not stat.S_ISREG(old.st_mode):
        return False
    return filecmp.cmp(staged, target, shallow=False)


def _tree_signature(top: str) -> list[tuple[str, int, bytes]]:
    """Every file's relative name and mode, and its bytes except for byte-code (marshal output varies run to run)."""
    signature = []
    for root, dirs, files in os.walk(top):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            mode = os.lstat(path).st_mode
            content = b""
            if not name.endswith(".pyc"):
                with open(path, "rb") as handle:
                    content = handle.read()
            signature.append((os.path.relpath(path, top), mode, content))
    return signature


def free_backup_name(target: str, stamp: str) -> str:
    """target.STAMP, or target.STAMP.N when a run in the same second made that one."""
    name = f"{target}.{stamp}"
    number = 2
    while os.path.lexists(name):
        name = f"{target}.{stamp}.{number}"
        number += 1
    return name


def backups_of(target: str) -> list[str]:
    """The backups of target (target.YYYYMMDD-HHMMSS[.N], as earlier versions named them too), oldest first."""
    directory, base = os.path.split(target)
    pattern = re.compile(re.escape(base) + r"\.(\d{8}-\d{6})(?:\.(\d+))?")
    found = []
    for name in os.listdir(directory):
        match = pattern.fullmatch(name)
        if match:
            found.append(((match.group(1), int(match.group(2) or 1)), os.path.join(directory, name)))
    return [path for _key, path in sorted(found)]


def prune_backups(target: str, keep: int = MAX_BACKUPS) -> None:
    """Remove all but the newest `keep` backups of target."""
    backups = backups_of(target)
    for path in backups[: max(0, len(backups) - keep)]:
        _remove(path)


def _remove(path: str) -> None:
    """Remove a file, link or tree at path (a link is removed, never followed)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _exchange(first: str, second: str) -> bool:
    """Swap two names atomically (Linux renameat2 RENAME_EXCHANGE); False when the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    if renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this filesystem or kernel cannot exchange
        return False
    raise OSError(error, os.strerror(error), second)
