"""--install for the resident engine: a run file and a systemd unit next to the program, and a reload.

The engine is optional: without it the wrapper runs the program once per message. These files
only make starting it one step; the advice printed says how to enable them.
"""

from __future__ import annotations

import json
import os
import signal

from .nofollow import open_entry
from .probes import ConfigureError

RUN_FILE_NAME = "qmail-scanner-engine.run"
UNIT_NAME = "qmail-scanner-engine.service"
STOP_GRACE_SECONDS = 30  # on top of the deadline: messages in flight finish before systemd kills


def run_file(program: str) -> str:
    """A daemontools / runit run script: the engine in the foreground, its log on stdout."""
    return (
        "#!/bin/sh\n"
        "# qmail-scanner resident engine (daemontools / runit). Started as root, it becomes the scanner account.\n"
        "exec 2>&1\n"
        f"exec {program} --serve\n"
    )


def systemd_unit(program: str, deadline_seconds: float) -> str:
    """A systemd unit: SIGTERM to the master only (KillMode=mixed), so workers finish their message."""
    return (
        "[Unit]\n"
        "Description=qmail-scanner resident engine (qmail-scanner-queue.py --serve)\n"
        "After=network.target clamav-daemon.service spamassassin.service\n"
        "\n"
        "[Service]\n"
        f"ExecStart={program} --serve\n"
        "ExecReload=/bin/kill -HUP $MAINPID\n"
        "KillMode=mixed\n"
        f"TimeoutStopSec={int(deadline_seconds) + STOP_GRACE_SECONDS}\n"
        "Restart=always\n"
        "RestartSec=1\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def write_engine_files(directory: str, final_program: str, deadline_seconds: float) -> tuple[str, str]:
    """Write both files into directory (the program's); return their paths."""
    written = []
    for name, text, mode in (
        (RUN_FILE_NAME, run_file(final_program), 0o755),
        (UNIT_NAME, systemd_unit(final_program, deadline_seconds), 0o644),
    ):
        path = os.path.join(directory, name)
        staging = path + ".new"
        with open(staging, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(staging, mode)
        os.rename(staging, path)
        written.append(path)
    return written[0], written[1]


def print_engine_advice(run_path: str, unit_path: str, final_run: str, final_unit: str) -> None:
    print("The resident engine makes every message faster (optional; without it each message runs standalone):")
    print(f"  systemd:     cp {final_unit} /etc/systemd/system/ && systemctl enable --now {UNIT_NAME}")
    # The supervisors' recipes need a log service and a directory outside the scanned one: the
    # whole recipe (status, reload, stop, removal) is the README's "Starting it" and the man page's.
    print(f"  daemontools: {final_run} as /etc/qmail-scanner-engine/run, with a multilog log/run,")
    print("               then ln -s /etc/qmail-scanner-engine /etc/service/ (README: Engine, Starting it)")
    print(f"  runit:       {final_run} as /etc/sv/qmail-scanner-engine/run, with an svlogd log/run,")
    print("               then ln -s /etc/sv/qmail-scanner-engine /etc/service/ (README: Engine, Starting it)")


def reload_running_engine(spooldir: str, scanner_uid: int) -> int:
    """SIGHUP the engine serving this spool, if one runs: new workers take the new program. Returns its pid or 0.

    engine.status is the scanner account's file: root trusts a pid in it only when that process
    runs `--serve` as the scanner account, so a forged file cannot make root signal anything else.
    """
    try:
        fd = open_entry(os.path.join(spooldir, "engine.status"), os.O_RDONLY)
        with os.fdopen(fd, encoding="utf-8") as handle:
            values = json.loads(handle.read(65536))
        pid = int(values.get("pid", 0)) if values.get("state") == "running" else 0
    except (OSError, ValueError, TypeError, AttributeError, ConfigureError):
        return 0
    if pid <= 1 or not _is_engine(pid, scanner_uid):
        return 0
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError:
        return 0
    return pid


def _is_engine(pid: int, scanner_uid: int) -> bool:
    """The pid still belongs to a `--serve` process of the scanner account (not a recycled or forged pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            words = handle.read().split(b"\0")
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            uids = next((line.split()[1:] for line in handle if line.startswith("Uid:")), [])
    except OSError:
        return False
    return b"--serve" in words and uids == [str(scanner_uid)] * 4
