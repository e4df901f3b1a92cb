"""The program's administrator flags: -h, -v, -z, -g, -r."""

from __future__ import annotations

import os
import sys

from .settings import Settings

USAGE = """usage: qmail-scanner-queue.py [-h | -v | -z | -g | -r | --serve | --engine-status]

With no arguments it is a qmail-queue replacement: the message on fd 0, the envelope
on fd 1, exit codes as qmail-queue(8). Set QMAILQUEUE to the setuid wrapper in tcprules.

  -h  this help
  -v  version, interpreter, settings summary and scanners
  -z  remove work files older than 30 hours; refresh the scanner version cache (daily cron)
  -g  compile quarantine-events.txt (and a 1.2x quarantine-attachments.txt beside it),
      reporting every bad line by file and number
  -r  print the policy rules as loaded, each once, with the file (and line) it comes from
  --serve          run the resident engine in the foreground (for daemontools, runit,
                   systemd); SIGHUP reloads, SIGTERM finishes the messages in flight and stops
  --engine-status  workers, busy, messages served, restarts; exit 1 when it does not run
"""


def show_version(settings: Settings) -> int:
    print(f"qmail-scanner {settings.version}")
    print(f"interpreter: {sys.executable} (Python {sys.version.split()[0]})")
    print(f"engine: {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}")
    print(f"configured by: {settings.configure_command}")
    print(f"spool: {settings.spooldir}")
    print(f"next hop: {settings.qmail_queue_binary}")
    print(f"custom error fd: {settings.custom_error_fd or 'off'}; deadline: {settings.deadline_seconds:g} s")
    print(f"unpacker: {settings.mime_unpacker}; fix-mime: {int(settings.fix_mime)}")
    print(f"notify: {','.join(settings.notify)}; log: {settings.log_details}; debug: {settings.debug}")
    if not settings.scanners:
        print("scanners: none (internal checks only)")
    for scanner in settings.scanners:
        where = ", ".join(scanner.addresses) or scanner.binary
        print(f"scanner: {scanner.name} ({scanner.kind}) {scanner.version} at {where}; on failure: {scanner.fail}")
    return 0


def clean_spool(settings: Settings) -> int:
    from .spool import remove_stale_work

    removed = remove_stale_work(settings.spooldir)
    print(f"removed {len(removed)} stale work file(s) from {settings.spooldir}")
    from .message_record import bound_unread_records

    bounded = bound_unread_records(settings.spooldir)
    if bounded:
        print(bounded)
    try:
        from .scanners import refresh_versions
    except ImportError:
        return 0
    refresh_versions(settings)
    return 0


def run_command(settings: Settings, argv: list[str]) -> int:
    """Dispatch one administrator flag; unknown flags print the usage and exit 100."""
    flag = argv[0]
    if flag in ("-h", "--help"):
        print(USAGE, end="")
        return 0
    if flag == "-v":
        return show_version(settings)
    if flag == "-z":
        return clean_spool(settings)
    if flag == "--engine-status":
        from .engine.status import show_status

        return show_status(settings)
    if flag in ("-g", "-r"):
        from . import policy

        return policy.compile_rules(settings) if flag == "-g" else policy.print_rules(settings)
    sys.stderr.write(USAGE)
    return 100
