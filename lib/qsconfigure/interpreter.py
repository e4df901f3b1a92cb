"""The interpreter frozen into the program: one the scanner account can run, outside home directories and the checkout.

The setuid wrapper runs it as the scanner account for every message, so it is checked by running it
as that account. A home directory is refused even when readable: its owner could replace the
interpreter (code running as the scanner account on all mail), and a version manager's build
(pyenv, conda) goes away with an upgrade or a cleanup. The checkout (and its venv) may be deleted.
"""

from __future__ import annotations

import os
import pwd
import stat
import sys

from .as_account import Account, run_as
from .probes import ProbeResult, probe_python

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, updated by apt; the fallback default
# Home directories of people (root and login accounts, Debian's UID_MIN on): system accounts
# have "homes" such as /bin (bin) or /usr/sbin (daemon) that hold the system interpreter itself.
LOGIN_UID_MIN = 1000
NOBODY_UID = 65534
HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.path.dirname(os.path.dirname(HERE))


def choose_interpreter(requested: str, account: Account | None, notes: list[str]) -> ProbeResult:
    """--python resolved and checked; without it configure's own interpreter if fit, else /usr/bin/python3 (noted)."""
    if requested:
        found = probe_python(requested)
        if not found.found:
            return found
        problem = unfit_reason(found.value, account)
        if problem:
            return ProbeResult(
                False,
                detail=f"--python {requested}: {problem}",
                hint=f"give --python with an interpreter outside home directories that {_who(account)} can run,"
                f" e.g. --python {SYSTEM_PYTHON}",
            )
        return found
    own = probe_python(sys.executable)
    # By default even the account's own home is passed over: the README's line must not freeze a pyenv build.
    problem = unfit_reason(own.value, account, own_home_ok=False) if own.found else own.detail
    if not problem:
        return own
    fallback = probe_python(SYSTEM_PYTHON)
    fallback_problem = unfit_reason(fallback.value, account) if fallback.found else fallback.detail
    if fallback_problem:
        return ProbeResult(
            False,
            detail=f"no interpreter {_who(account)} can run: {problem}; {SYSTEM_PYTHON}: {fallback_problem}",
            hint="give --python /path/to/python3 (3.9 or newer, outside home directories)",
        )
    notes.append(
        f"configure.py: note: the program will run {fallback.value}, not configure's own interpreter"
        f" ({problem}); give --python to choose"
    )
    return fallback


def unfit_reason(path: str, account: Account | None, own_home_ok: bool = True) -> str:
    """Why the scanner account must not run this interpreter (real path), or ""."""
    if _inside(path, SOURCE_ROOT):
        return f"{path} is inside the source tree {SOURCE_ROOT}, which may be deleted"
    home = home_directory_holding(path, account if own_home_ok else None)
    if home:
        return f"{path} is in {home[0]}'s home directory {home[1]}"
    if account is not None and account.switch:
        code, output = run_as(account, [path, "-I", "-S", "-c", "print('runs')"])
        if code != 0 or output.strip() != "runs":
            reason = (output.strip().splitlines() or [f"exit {code}"])[-1][:200]
            return f"the scanner account {account.name} cannot run {path}: {reason}"
    elif account is None and not _runnable_by_others(path):
        return f"{path} is not readable and runnable by every account (the scanner account is not created yet)"
    return ""


def home_directory_holding(path: str, account: Account | None) -> tuple[str, str] | None:
    """(user, home) of the home directory path lies in, the scanner account's own excepted."""
    best: tuple[str, str] | None = None
    for entry in pwd.getpwall():
        if 0 < entry.pw_uid < LOGIN_UID_MIN or entry.pw_uid == NOBODY_UID:
            continue
        home = os.path.realpath(entry.pw_dir) if entry.pw_dir else ""
        if home in ("", "/") or not os.path.isdir(home) or not _inside(path, home):
            continue
        if account is not None and entry.pw_uid == account.uid:
            continue  # a --prefix install for oneself may use one's own interpreter
        if best is None or len(home) > len(best[1]):
            best = (entry.pw_name, home)
    return best


def _inside(path: str, directory: str) -> bool:
    return os.path.realpath(path).startswith(os.path.realpath(directory).rstrip("/") + "/")


def _runnable_by_others(path: str) -> bool:
    """Every directory on the way traversable and the file readable and runnable by others."""
    real = os.path.realpath(path)
    try:
        directories = [os.path.dirname(real)]
        while directories[-1] != "/":
            directories.append(os.path.dirname(directories[-1]))
        if not all(os.stat(d).st_mode & stat.S_IXOTH for d in directories):
            return False
        mode = os.stat(real).st_mode
    except OSError:
        return False
    return bool(mode & stat.S_IXOTH and mode & stat.S_IROTH)


def _who(account: Account | None) -> str:
    return f"the scanner account {account.name}" if account is not None else "every account"
