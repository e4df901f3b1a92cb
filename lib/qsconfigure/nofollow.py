"""Root's writes under directories another account controls (the spool), never through a symlink.

The scanner account owns the spool, so code running as it can put a symlink (or a hard link)
wherever --install will create, chmod or chown something. Paths are walked one component at
a time with openat(): a name inside a directory that is not root's alone is opened with
O_NOFOLLOW, so a planted link stops the install with a clear message instead of aiming
root's chmod at /etc/shadow. Links that root made in root's own directories (a spool moved
to /srv with a symlink) are followed as before. Run as a normal user (a --prefix install)
there is no privilege to protect and links are followed.
"""

from __future__ import annotations

import errno
import os
import stat

from .probes import ConfigureError

DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# O_NONBLOCK: a planted FIFO must not hang the install; O_NOCTTY: nor become its terminal.
ENTRY_FLAGS = os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _root_alone(fd: int) -> bool:
    """Only root can add or rename names in this directory (not group/other-writable, sticky or not)."""
    info = os.fstat(fd)
    return info.st_uid == 0 and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _no_follow(fd: int) -> int:
    return os.O_NOFOLLOW if os.geteuid() == 0 and not _root_alone(fd) else 0


def _refuse_link(path: str) -> ConfigureError:
    return ConfigureError(
        f"{path} is a link inside a directory not root's alone (the scanner account's spool?): "
        "--install follows no link there",
        "remove it (after finding out who planted it: the scanner account may be compromised) and re-run",
    )


def _open_at(parent: int, name: str, flags: int, mode: int, path: str) -> int:
    nofollow = _no_follow(parent)
    try:
        return os.open(name, flags | nofollow, mode, dir_fd=parent)
    except OSError as error:
        is_link = nofollow and error.errno in (errno.ELOOP, errno.ENOTDIR)
        if is_link and stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
            raise _refuse_link(path) from None
        raise


def open_directory(path: str, create_mode: int | None = None) -> int:
    """An fd of the directory at path; missing components are created with create_mode (None: must exist)."""
    absolute = os.path.abspath(path)
    fd = os.open("/", DIRECTORY_FLAGS)
    walked = ""
    try:
        for name in (part for part in absolute.split("/") if part):
            walked += "/" + name
            try:
                child = _open_at(fd, name, DIRECTORY_FLAGS, 0, walked)
            except FileNotFoundError:
                if create_mode is None:
                    raise
                try:
                    os.mkdir(name, create_mode, dir_fd=fd)
                except FileExistsError:
                    pass  # made by someone else meanwhile: opened (and checked) below
                child = _open_at(fd, name, DIRECTORY_FLAGS, 0, walked)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_entry(path: str, flags: int, mode: int = 0o600) -> int:
    """os.open(path, flags, mode) with every component walked as open_directory does; plain files only."""
    parent = open_directory(os.path.dirname(os.path.abspath(path)))
    try:
        fd = _open_at(parent, os.path.basename(path), flags | ENTRY_FLAGS, mode, path)
    finally:
        os.close(parent)
    info = os.fstat(fd)
    # A hard link to a root file planted in the spool would get root's chmod and chown too.
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise ConfigureError(
            f"{path} is not a plain file with one name (a link or a special file was planted there?)",
            "remove it (after finding out who planted it) and re-run",
        )
    return fd


def write_all(fd: int, content: bytes) -> None:
    """os.write until every byte is written (a write may take less)."""
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view) :]
