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
import tempfile
import threading
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


VERBS = ("release", "delete", "fetch", "learn-spam", "learn-ham")
# A fetch (download, or the bytes learning reads) is refused above this: the console holds them in memory.
MAX_FETCH_BYTES = 64 * 1024 * 1024
# spamc's own default --max-size (500 KB): it passes a larger message to spamd untouched, unlearned.
SPAMC_DEFAULT_MAX = 500 * 1024
# spamc -L exits 0 and prints one of these (spamd's TELL answer); anything else is a failure.
SPAMC_LEARNED = "Message successfully un/learned"
SPAMC_ALREADY = "Message was already un/learned"


QMAIL_ME = "/var/qmail/control/me"


def this_host() -> str:
    """The host name whose quarantine this console reaches: console.json's `host`, else the name the scanner writes
    into its records, found as configure.py finds it (qmail's control/me, else the resolver's FQDN)."""
    return settings.CONSOLE.host or mail_host_name()


def mail_host_name(control_me: str = QMAIL_ME) -> str:
    """qmail's own name for this host (control/me's first line), else the resolver's FQDN."""
    try:
        with open(control_me, encoding="ascii", errors="replace") as handle:
            name = handle.readline().strip()
    except OSError:
        name = ""
    return name or socket.getfqdn()


def release(host: str, quarantine_id: str, to: str = "") -> Released:
    """Release to the original recipients, or to `to` alone."""
    return perform(host, Request("release", quarantine_id, to))


def perform(host: str, request: Request, requested_by: str = "") -> Released:
    """Do `request` on the copy `host` holds: here, or through that host's loader (remote_actions.py).

    NotReleasable: not set up, a strange id, another host's copy on SQLite (one host only), 504 a host not answering.
    """
    if host != this_host():
        from qsconsole import remote_actions  # it imports this module

        if not remote_actions.queues():
            raise NotReleasable(409, f"held on {host}: a console on SQLite reaches {this_host()}'s quarantine only "
                                     "(several hosts share a PostgreSQL database)")
        return remote_actions.queue_and_wait(host, request, requested_by)
    return run_local(request)


def run_local(request: Request) -> Released:
    """Do `request` on this host's quarantine through the release tool (learning then runs spamc on the bytes).

    The tool's argument forms, the only ones the root-owned qs-console-release helper accepts: `release -- ID`,
    `release --to ADDR -- ID` (the address and the id as separate words), `delete -- ID`, `show --raw -- ID`.
    """
    quarantine_id, to = request.quarantine_id, request.to
    if request.verb not in VERBS:
        raise NotReleasable(400, f"no such action: {one_line(request.verb)}")
    if not settings.CONSOLE.release_tool:
        raise NotReleasable(501, "release is not set up (qs-console migrate --release-tool PATH-OF-qs-quarantine)")
    if not QUARANTINE_ID.fullmatch(quarantine_id):
        raise NotReleasable(409, "the record's quarantine id is not a maildir file name")
    tool = settings.CONSOLE.release_tool
    if request.verb == "release":
        return run_tool([tool, "release", *(["--to", to] if to else []), "--", quarantine_id])
    if request.verb == "delete":
        return run_tool([tool, "delete", "--", quarantine_id])
    fetched = fetch([tool, "show", "--raw", "--", quarantine_id])
    if request.verb == "fetch" or not fetched.ok:
        return fetched
    return learn(fetched.data, request.verb.removeprefix("learn-"))


def run_tool(argv: list[str]) -> Released:
    """Run the release tool; ok when it exits 0, its output on one line as the detail."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=RELEASE_SECONDS,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        return Released(ok=False, detail=one_line(f"{argv[0]}: {error}"))
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        output = f"exit {done.returncode}: {output}"
    return Released(ok=done.returncode == 0, detail=one_line(output))


def fetch(argv: list[str]) -> Released:
    """The stored bytes `show --raw` writes, read up to MAX_FETCH_BYTES (a larger copy is refused, the tool stopped)."""
    with tempfile.TemporaryFile() as errors:
        try:
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors)
        except OSError as error:
            return Released(ok=False, detail=one_line(f"{argv[0]}: {error}"))
        # A tool that hangs is killed after RELEASE_SECONDS; the read below then ends.
        watchdog = threading.Timer(RELEASE_SECONDS, child.kill)
        watchdog.start()
        try:
            data = read_at_most(child.stdout, MAX_FETCH_BYTES + 1)
            if len(data) > MAX_FETCH_BYTES:
                child.kill()
            code = child.wait()
        finally:
            watchdog.cancel()
            child.stdout.close()
        errors.seek(0)
        complaint = errors.read(4000).decode("utf-8", "replace").strip()
    if len(data) > MAX_FETCH_BYTES:
        return Released(ok=False, detail=f"the stored copy is larger than {MAX_FETCH_BYTES // (1024 * 1024)} MB: "
                                         "fetch it on the host with qs-quarantine show --raw")
    if code != 0:
        return Released(ok=False, detail=one_line(f"exit {code}: {complaint}"))
    return Released(ok=True, detail=f"{len(data)} bytes", data=data)


def read_at_most(stream, limit: int) -> bytes:
    """Up to `limit` bytes from a pipe, until its end."""
    chunks: list[bytes] = []
    count = 0
    while count < limit:
        chunk = stream.read(min(1 << 20, limit - count))
        if not chunk:
            break
        chunks.append(chunk)
        count += len(chunk)
    return b"".join(chunks)


def learn(stored: bytes, kind: str) -> Released:
    """Teach spamd's Bayes the message as `kind` ("spam" or "ham") through `spamc -L` (spamd needs --allow-tell).

    The scanner's X-QS-Envelope* block is taken off first: it is on every quarantined copy, and no sender wrote it.
    """
    if kind not in ("spam", "ham"):
        raise NotReleasable(400, "learn as spam or ham")
    spamc = settings.CONSOLE.spamc
    if not isinstance(spamc, list) or not spamc or not all(isinstance(word, str) and word for word in spamc):
        raise NotReleasable(501, 'console.json: "spamc" is not a command (a list of words, e.g. ["spamc"])')
    message = original_message(stored)
    argv = [*spamc, "-L", kind]
    if len(message) > SPAMC_DEFAULT_MAX:
        argv[1:1] = ["-s", str(len(message))]
    try:
        done = subprocess.run(argv, input=message, capture_output=True, timeout=RELEASE_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as error:
        return Released(ok=False, detail=one_line(f"{argv[0]}: {error}"))
    output = (done.stdout + done.stderr).decode("utf-8", "replace").strip()
    if done.returncode == 0 and SPAMC_ALREADY in output:
        return Released(ok=True, detail=f"already learned as {kind} (spamc: {one_line(output)})")
    if done.returncode == 0 and SPAMC_LEARNED in output:
        return Released(ok=True, detail=f"learned as {kind} (spamc: {one_line(output)})")
    # spamc -L says nothing when spamd refuses TELL (74) or cannot be reached (69, 70): only its exit code tells.
    return Released(ok=False, detail=one_line(f"failed: {' '.join(argv)} exited {done.returncode}"
                                              f"{': ' + output if output else ''} (is spamd reachable and run with "
                                              "--allow-tell?)"))


def original_message(stored: bytes) -> bytes:
    """A stored copy without the leading X-QS-Envelope* header lines (and their continuation lines)."""
    offset = 0
    inside = False
    while offset < len(stored):
        end = stored.find(b"\n", offset)
        end = len(stored) if end < 0 else end + 1
        line = stored[offset:end]
        if inside and line[:1] in (b" ", b"\t"):
            offset = end
            continue
        inside = line[:13].lower() == b"x-qs-envelope" and b":" in line
        if not inside:
            break
        offset = end
    return stored[offset:]


def one_line(text: str) -> str:
    """Text on one line, control and format characters escaped (the tool's output quotes addresses from mail)."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)[:1000]
