"""Actions on a quarantined copy (release, delete, fetch, learn) through the holding host's own qs-quarantine.

The console does not read the quarantine or run qmail-queue itself: the installed qs-quarantine (its spool and
qmail-queue frozen in by configure --install) does, reached through the release tool (installed: the root-owned
qs-console-release helper). A release hands the stored bytes to that host's qmail-queue with the original envelope
and marks the stored copy released. `perform` is the one entry: this host's copies are acted on here.
"""

from __future__ import annotations

import re
import socket
import subprocess
from dataclasses import dataclass

from django.conf import settings

RELEASE_SECONDS = 120
# A maildir file name as the scanner makes it; anything else never reaches a command line.
QUARANTINE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:,=+-]{0,254}")


class NotReleasable(Exception):
    """A release this console cannot do: the text says why; `status` is the HTTP answer."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


@dataclass(frozen=True)
class Request:
    """One action on one quarantined copy: `verb` one of VERBS; `to` a single address for a release to one address."""

    verb: str
    quarantine_id: str
    to: str = ""


@dataclass(frozen=True)
class Released:
    """What the release tool did: ok or not, its output on one line, and the bytes a fetch returned."""

    ok: bool
    detail: str
    data: bytes = b""


VERBS = ("release",)


def this_host() -> str:
    """The host name whose quarantine this console reaches."""
    return settings.CONSOLE.host or socket.gethostname()


def release(host: str, quarantine_id: str, to: str = "") -> Released:
    """Release to the original recipients, or to `to` alone."""
    return perform(host, Request("release", quarantine_id, to))


def perform(host: str, request: Request) -> Released:
    """Do `request` on the copy `host` holds; NotReleasable: another host's, not set up, a strange id."""
    if host != this_host():
        raise NotReleasable(409, f"held on {host}: this console releases from {this_host()}'s quarantine only")
    return run_local(request)


def run_local(request: Request) -> Released:
    """Run `<release_tool> release [--to ADDR] -- ID` on this host's quarantine.

    `--to ADDR` and the id as separate words: the form the root-owned qs-console-release helper accepts.
    """
    quarantine_id, to = request.quarantine_id, request.to
    if not settings.CONSOLE.release_tool:
        raise NotReleasable(501, "release is not set up (qs-console migrate --release-tool PATH-OF-qs-quarantine)")
    if not QUARANTINE_ID.fullmatch(quarantine_id):
        raise NotReleasable(409, "the record's quarantine id is not a maildir file name")
    tool = settings.CONSOLE.release_tool
    argv = [tool, "release", *(["--to", to] if to else []), "--", quarantine_id]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=RELEASE_SECONDS,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        return Released(ok=False, detail=one_line(f"{tool}: {error}"))
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        output = f"exit {done.returncode}: {output}"
    return Released(ok=done.returncode == 0, detail=one_line(output))


def one_line(text: str) -> str:
    """Text on one line, control and format characters escaped (the tool's output quotes addresses from mail)."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)[:1000]
