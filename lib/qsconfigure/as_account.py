"""Run a configure-time check as the scanner account: what it can run and read is what counts at run time."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

CHECK_PATH = "/usr/local/bin:/usr/bin:/bin"  # the wrapper's fixed PATH


@dataclass(frozen=True)
class Account:
    """The scanner account as configure will run checks under it; switch False: run as ourselves."""

    name: str
    uid: int
    gid: int
    switch: bool


def scanner_account(user: str, group: str) -> Account | None:
    """The account to check as: None when it does not exist yet (a first install creates it later).

    Only root can switch; a --prefix install by a normal user runs as that user, who is the account.
    """
    try:
        uid = pwd.getpwnam(user).pw_uid
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return None
    return Account(user, uid, gid, os.geteuid() == 0 and uid != os.geteuid())


def become(account: Account | None, umask: int = 0o027) -> Callable[[], None]:
    """A preexec_fn: no supplementary groups, every uid and gid the account's, as the wrapper does."""

    def switch() -> None:
        os.umask(umask)
        if account is not None and account.switch:
            os.setgroups([])
            os.setresgid(account.gid, account.gid, account.gid)
            os.setresuid(account.uid, account.uid, account.uid)

    return switch


def run_as(
    account: Account | None, argv: list[str], input_bytes: bytes | None = None, timeout: float = 60.0
) -> tuple[int, str]:
    """Run argv as the account (cwd /, the wrapper's PATH, nothing else); (exit code, output); -1 if it cannot start."""
    try:
        completed = subprocess.run(
            argv,
            input=input_bytes,
            capture_output=True,
            timeout=timeout,
            check=False,
            cwd="/",
            env={"PATH": CHECK_PATH},
            preexec_fn=become(account),
        )
    except (OSError, subprocess.TimeoutExpired, subprocess.SubprocessError) as error:
        return -1, str(error)
    return completed.returncode, (completed.stdout + completed.stderr).decode("utf-8", "replace")
