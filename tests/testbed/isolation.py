"""What the test bed must leave alone, captured so a later look can say what changed.

A live qmail (its home, conventionally /var/qmail, and its accounts qmaild, qmailq, ...) may run on the
machine where `make test` runs. These snapshots let tests and the session guard in tests/conftest.py
prove the bed did not touch it: file trees by digest or by mtime and size, accounts by their entries.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import stat
from pathlib import Path

from testbed.build import QMAIL_GROUP_ROLES, QMAIL_ROLES, STOCK_QMAIL

STOCK_USERS = tuple(role for role in QMAIL_ROLES if role != "root")
STOCK_GROUPS = QMAIL_GROUP_ROLES
GUARDED_DIRS = ("bin", "control")  # what a rebuild or a test configuration would rewrite


def _walk(root: Path):
    """root and everything below it, sorted, not following symlinks."""
    yield root
    if root.is_dir() and not root.is_symlink():
        for child in sorted(root.iterdir()):
            yield from _walk(child)


def tree_digest(root: Path, parts: tuple[str, ...] = ()) -> str:
    """sha256 over names, types, modes, owners, sizes, mtimes and file contents under root (or root/part...)."""
    digest = hashlib.sha256()
    for top in [root / part for part in parts] or [root]:
        for path in _walk(top):
            try:
                info = path.lstat()
            except FileNotFoundError:
                digest.update(f"{path.relative_to(root)} absent\n".encode())
                continue
            fields = (info.st_mode, info.st_uid, info.st_gid, info.st_size, info.st_mtime_ns)
            digest.update(f"{path.relative_to(root)} {fields}\n".encode())
            if stat.S_ISREG(info.st_mode):
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            elif stat.S_ISLNK(info.st_mode):
                digest.update(os.readlink(path).encode())
    return digest.hexdigest()


def files_snapshot(root: Path, parts: tuple[str, ...] = GUARDED_DIRS) -> dict[str, tuple[int, int]]:
    """Relative path -> (mtime_ns, size) of everything under root/part; empty when root does not exist."""
    snapshot: dict[str, tuple[int, int]] = {}
    for part in parts:
        top = root / part
        if not top.exists():
            continue
        for path in _walk(top):
            info = path.lstat()
            snapshot[str(path.relative_to(root))] = (info.st_mtime_ns, info.st_size)
    return snapshot


def accounts_snapshot(users: tuple[str, ...] = STOCK_USERS, groups: tuple[str, ...] = STOCK_GROUPS) -> dict[str, str]:
    """'user NAME' / 'group NAME' -> the account's entry, for those that exist."""
    entries: dict[str, str] = {}
    for name in users:
        try:
            entries[f"user {name}"] = repr(tuple(pwd.getpwnam(name)))
        except KeyError:
            continue
    for name in groups:
        try:
            entries[f"group {name}"] = repr(tuple(grp.getgrnam(name)))
        except KeyError:
            continue
    return entries


def describe_changes(before: dict, after: dict) -> list[str]:
    """One line per key added, removed or changed between two snapshots."""
    lines = [f"added: {key}" for key in sorted(after.keys() - before.keys())]
    lines += [f"removed: {key}" for key in sorted(before.keys() - after.keys())]
    lines += [
        f"changed: {key} {before[key]} -> {after[key]}"
        for key in sorted(before.keys() & after.keys())
        if before[key] != after[key]
    ]
    return lines


def stock_qmail_snapshot() -> dict[str, object]:
    """/var/qmail's bin/ and control/ (mtimes and sizes) and the stock qmail accounts, as they are now."""
    files = {f"{STOCK_QMAIL}/{path}": info for path, info in files_snapshot(STOCK_QMAIL).items()}
    return {**files, **accounts_snapshot()}
