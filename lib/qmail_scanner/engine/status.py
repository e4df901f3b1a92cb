"""The engine's counters in the spool (engine.status): written by the master, read by --engine-status and qs-report."""

from __future__ import annotations

import json
import os
import time

from ..settings import Settings

STATUS_NAME = "engine.status"
SOCKET_NAME = "engine.sock"
LOCK_NAME = "engine.lock"
# The master rewrites the file at least this often while it runs; older means it is gone or hung.
FRESH_SECONDS = 30.0
COUNTERS = ("workers", "busy", "served", "restarts", "killed", "recycled", "reloads")


def status_path(spooldir: str) -> str:
    return os.path.join(spooldir, STATUS_NAME)


def socket_path(spooldir: str) -> str:
    return os.path.join(spooldir, SOCKET_NAME)


def write_status(spooldir: str, values: dict) -> None:
    """Replace the status file atomically (readers never see half of it)."""
    path = status_path(spooldir)
    temporary = f"{path}.{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    try:
        os.write(fd, json.dumps(values, sort_keys=True).encode() + b"\n")
    finally:
        os.close(fd)
    os.rename(temporary, path)


def read_status(spooldir: str) -> dict | None:
    """The last status the master wrote, with `running` decided from its pid and age; None when never written."""
    try:
        with open(status_path(spooldir), encoding="utf-8") as handle:
            values = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(values, dict):
        return None
    values["running"] = bool(values.get("state") == "running" and _alive(values.get("pid")) and _fresh(values))
    return values


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


def _fresh(values: dict) -> bool:
    updated = values.get("updated")
    return isinstance(updated, (int, float)) and time.time() - updated < FRESH_SECONDS


def show_status(settings: Settings) -> int:
    """--engine-status: print the counters; exit 0 when the engine runs, 1 when it does not."""
    values = read_status(settings.spooldir)
    if values is None:
        print(f"engine: not running (no {status_path(settings.spooldir)}); messages run standalone")
        return 1
    if values["running"]:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(values.get("started", 0)))
        print(f"engine: running (pid {values.get('pid')}, since {started})")
    else:
        last = f"last seen pid {values.get('pid')}, state {values.get('state')}"
        print(f"engine: not running ({last}); messages run standalone")
    retiring = f"; {values['retiring']} more finishing before a reload" if values.get("retiring") else ""
    print(
        f"workers: {values.get('workers', 0)} (busy {values.get('busy', 0)}, configured {values.get('configured', 0)}"
        f"{retiring})"
    )
    print(f"messages served: {values.get('served', 0)}")
    # Counts first, each with its cause; the setting is named as a setting (a bare "--engine-max-messages 0"
    # read as the option's value).
    limit = settings.engine_max_messages
    quota = f"after {limit} messages each (--engine-max-messages)" if limit else "never (--engine-max-messages 0)"
    print(
        f"restarts: {values.get('restarts', 0)} (killed past the deadline: {values.get('killed', 0)}; "
        f"recycled: {values.get('recycled', 0)}, {quota}; reloads: {values.get('reloads', 0)})"
    )
    return 0 if values["running"] else 1
