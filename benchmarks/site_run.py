#!/usr/bin/env python3
"""make site-run: a small site's day, compressed: bursts of mail with quiet spells, a reload, daemon restarts.

Mail goes through the test bed's real qmail-smtpd, the setuid wrapper and the resident engine, with
a real clamd and a real spamd (spamd -L). Both run with short timeouts (clamd's ReadTimeout ends an
idle IDSESSION, spamd's --timeout-tcp), and the quiet spells between bursts are longer than both, so
every burst starts on sessions the daemons have given up. Along the way, in turn: a reload of the
engine (SIGHUP) in the middle of a burst, a clamd restart and a spamd restart, each with mail sent
while the daemon is down. The mix: plain text, small attachments, EICAR (quarantined, not
delivered, still 250) and GTUBE (delivered, tagged).

Every session must end 250, except those sent while clamd was down: those must be 451 (one that
overlaps the moment clamd stopped or came back may be either). Afterwards every accepted message
must be in the test Maildir once (EICAR in the quarantine instead), and no temp-failed one anywhere.
Mail sent while spamd was down is delivered marked Unchecked(spamd) (spam scanners fail open by
default); mail sent while it was up must carry spamd's verdict.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "lib")]

from daemons import ClamdServer, SpamdServer  # noqa: E402
from engine_fixtures import Engine  # noqa: E402
from testbed import messages  # noqa: E402
from testbed.qmail import MAILDIR_NEW, ScannerInstall, SmtpReply, send  # noqa: E402

ACCEPTED = 250
TEMPORARY = 451
KINDS = ("plain", "attachment", "plain", "eicar", "plain", "attachment", "plain", "gtube", "plain", "plain")
DELIVERY_SECONDS = 120.0  # qmail-send delivers in well under a second each; a loaded machine gets slack


@dataclass
class Plan:
    """How long and how hard: rounds of bursts with quiet spells, and the daemons' idle timeouts."""

    rounds: int = 8
    duration: float = 0.0  # seconds; when set, rounds go on until it has passed (at least `rounds`)
    burst: int = 12  # SMTP sessions per burst
    clients: int = 4  # concurrent senders in a burst
    down_sessions: int = 3  # sessions sent while a daemon is down
    idle_timeout: int = 3  # clamd's ReadTimeout and spamd's --timeout-tcp, seconds
    quiet: tuple[float, float] = (5.0, 14.0)  # seconds between bursts (past the idle timeout), drawn per round
    workers: int = 4
    seed: int = 15


@dataclass
class Session:
    """One SMTP session: what was sent, when, and qmail-smtpd's final answer."""

    number: int
    kind: str
    marker: str
    started: float = 0.0
    ended: float = 0.0
    code: int = 0
    text: str = ""


@dataclass
class Window:
    """A stretch of the run when something was off: `clamd down`, `spamd down`, `reload`."""

    what: str
    started: float
    ended: float = float("inf")


@dataclass
class Summary:
    """What the run did and what went wrong; `problems` empty means the site ran as it should."""

    sessions: int = 0
    accepted: int = 0
    temporary: int = 0
    temporary_while_clamd_down: int = 0
    other_codes: dict[int, int] = field(default_factory=dict)
    delivered: int = 0
    quarantined: int = 0
    spam_tagged: int = 0
    unchecked_spamd: int = 0
    rounds: int = 0
    reloads: int = 0
    clamd_restarts: int = 0
    spamd_restarts: int = 0
    elapsed: float = 0.0
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        others = ", ".join(f"{count} x {code}" for code, count in sorted(self.other_codes.items())) or "none"
        return [
            f"elapsed {self.elapsed:.0f} s, {self.rounds} rounds: {self.reloads} reload(s),"
            f" {self.clamd_restarts} clamd restart(s), {self.spamd_restarts} spamd restart(s)",
            f"SMTP sessions {self.sessions}: 250 {self.accepted}, 451 {self.temporary}"
            f" ({self.temporary_while_clamd_down} while clamd was down,"
            f" {self.temporary - self.temporary_while_clamd_down} not), other answers: {others}",
            f"delivered {self.delivered} (spam-tagged {self.spam_tagged}, unchecked by spamd while it was down"
            f" {self.unchecked_spamd}), quarantined as viruses {self.quarantined}",
            "problems: none" if not self.problems else f"problems ({len(self.problems)}):",
            *(f"  - {problem}" for problem in self.problems[:40]),
        ]


def message_for(session: Session) -> bytes:
    if session.kind == "eicar":
        return messages.eicar(session.marker)
    if session.kind == "gtube":
        return messages.gtube(session.marker)
    if session.kind == "attachment":
        return messages.random_attachment(session.marker, 20_000)
    return messages.plain(session.marker)


class SiteRun:
    """Drives the site: sends, stops and starts the daemons, reloads the engine, then accounts for every message."""

    def __init__(
        self, port: int, installation: ScannerInstall, engine: Engine, clamd: ClamdServer, spamd: SpamdServer,
        plan: Plan, say: Callable[[str], None] = print,
    ) -> None:  # fmt: skip
        self.port = port
        self.installation = installation
        self.engine = engine
        self.clamd = clamd
        self.spamd = spamd
        self.plan = plan
        self.say = say
        self.run_id = f"site-{uuid.uuid4().hex[:12]}"
        self.sessions: list[Session] = []
        self.windows: list[Window] = []
        self.random = random.Random(plan.seed)
        self.summary = Summary()
        self.lock = threading.Lock()

    # ------------------------------------------------------------ sending

    def _new_session(self) -> Session:
        with self.lock:
            number = len(self.sessions)
            session = Session(number, KINDS[number % len(KINDS)], f"{self.run_id}-{number:06d}")
            self.sessions.append(session)
        return session

    def _send_one(self) -> Session:
        session = self._new_session()
        data = message_for(session)
        session.started = time.monotonic()
        try:
            reply = send(self.port, data, timeout=60.0)
        except (OSError, EOFError) as error:  # smtplib's errors are OSErrors; a refused connection too
            reply = SmtpReply(0, f"{type(error).__name__}: {error}")
        session.ended = time.monotonic()
        session.code, session.text = reply.code, reply.text
        return session

    def _burst(self, count: int, during: Callable[[], None] | None = None) -> None:
        """`count` sessions from `clients` senders; `during` runs once a quarter of them has been sent."""
        left = [count]
        started = threading.Event()

        def sender() -> None:
            while True:
                with self.lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                    if count - left[0] >= max(1, count // 4):
                        started.set()
                self._send_one()

        threads = [threading.Thread(target=sender) for _ in range(self.plan.clients)]
        for thread in threads:
            thread.start()
        if during is not None:
            started.wait()
            during()
        for thread in threads:
            thread.join()

    # ------------------------------------------------------------ events

    def _reload(self) -> None:
        """SIGHUP to the engine's master while the burst is in flight; the window ends when it serves again."""
        before = self.engine.status().get("reloads", 0)
        window = Window("reload", time.monotonic())
        self.windows.append(window)
        self.engine.signal(signal.SIGHUP)
        limit = time.monotonic() + 60
        while self.engine.status().get("reloads", 0) <= before or self.engine.status().get("state") != "running":
            if time.monotonic() > limit:
                self.summary.problems.append("the engine did not report the reload within 60 s")
                break
            time.sleep(0.05)
        window.ended = time.monotonic()
        self.summary.reloads += 1

    def _restart(self, what: str, server: ClamdServer | SpamdServer) -> None:
        """Stop the daemon, send `down_sessions` sessions one after another, start it again."""
        window = Window(f"{what} down", time.monotonic())
        self.windows.append(window)
        server.stop()
        for _ in range(self.plan.down_sessions):
            self._send_one()
        server.start()
        window.ended = time.monotonic()
        if what == "clamd":
            self.summary.clamd_restarts += 1
        else:
            self.summary.spamd_restarts += 1

    def _round(self, number: int) -> None:
        event = ("none", "reload", "clamd", "spamd")[number % 4]
        burst = self.plan.burst
        if event == "reload":
            self._burst(burst, during=self._reload)
        elif event in ("clamd", "spamd"):
            server = self.clamd if event == "clamd" else self.spamd
            self._burst(burst // 2)
            self._restart(event, server)
            self._burst(burst - burst // 2)
        else:
            self._burst(burst)
        self.summary.rounds += 1
        self.say(f"round {number + 1}: {event:6} sessions so far {len(self.sessions)}")

    def run(self) -> Summary:
        started = time.monotonic()
        plan = self.plan
        number = 0
        while number < plan.rounds or (plan.duration and time.monotonic() - started < plan.duration):
            if number:
                quiet = self.random.uniform(*plan.quiet)
                time.sleep(quiet)  # quiet: clamd and spamd give up on idle clients meanwhile
            self._round(number)
            number += 1
        self.summary.elapsed = time.monotonic() - started
        self._account()
        return self.summary

    # ------------------------------------------------------------ accounting

    def _overlaps(self, session: Session, what: str) -> list[Window]:
        return [w for w in self.windows if w.what == what and session.started < w.ended and session.ended > w.started]

    def _inside(self, session: Session, what: str) -> bool:
        return any(w.started <= session.started and session.ended <= w.ended for w in self.windows if w.what == what)

    def _account(self) -> None:
        summary = self.summary
        problems = summary.problems
        summary.sessions = len(self.sessions)
        for session in self.sessions:
            if session.code == ACCEPTED:
                summary.accepted += 1
                if self._inside(session, "clamd down"):
                    problems.append(f"session {session.number} accepted while clamd was down")
            elif session.code == TEMPORARY:
                summary.temporary += 1
                if self._overlaps(session, "clamd down"):
                    summary.temporary_while_clamd_down += 1
                elif self._overlaps(session, "reload"):
                    problems.append(
                        f"session {session.number} ({session.kind}) got 451 during the engine's reload"
                        f" (issue 15 item 2: busy workers killed on reload?): {session.text}"
                    )
                else:
                    problems.append(f"session {session.number} ({session.kind}) got 451: {session.text}")
            else:
                summary.other_codes[session.code] = summary.other_codes.get(session.code, 0) + 1
                problems.append(f"session {session.number} ({session.kind}) ended {session.code}: {session.text}")
        self._account_mail()

    def _account_mail(self) -> None:
        """Wait for qmail-send, then match the Maildir and the quarantine against the sessions, marker by marker."""
        summary, problems = self.summary, self.summary.problems
        expected = {s.marker: s for s in self.sessions if s.code == ACCEPTED and s.kind != "eicar"}
        delivered = self._collect_deliveries(set(expected))
        quarantined = self._quarantined_markers()
        for session in self.sessions:
            copies = delivered.get(session.marker, [])
            if session.marker in expected:
                if len(copies) != 1:
                    problems.append(f"session {session.number} ({session.kind}): accepted, delivered {len(copies)}x")
                    continue
                self._check_delivered(session, copies[0])
            elif copies:
                problems.append(f"session {session.number} ({session.kind}) ended {session.code} but was delivered")
            in_quarantine = quarantined.get(session.marker, 0)
            if session.kind == "eicar" and session.code == ACCEPTED and in_quarantine != 1:
                problems.append(f"session {session.number}: EICAR accepted, quarantined {in_quarantine} times")
            elif session.kind != "eicar" and in_quarantine:
                problems.append(f"session {session.number} ({session.kind}) was quarantined")
            elif session.code != ACCEPTED and in_quarantine:
                problems.append(f"session {session.number} ended {session.code} but was quarantined")
        summary.delivered = sum(len(copies) for copies in delivered.values())
        summary.quarantined = sum(quarantined.values())
        work = self.installation.work_files()
        if work:
            problems.append(f"{len(work)} file(s) left in the engine's work directories")

    def _check_delivered(self, session: Session, data: bytes) -> None:
        head = data.split(b"\n\n", 1)[0]
        unchecked = b"Unchecked(spamd)" in head
        if unchecked:
            self.summary.unchecked_spamd += 1
            if not self._overlaps(session, "spamd down"):
                self.summary.problems.append(f"session {session.number}: delivered unchecked by spamd while it was up")
        elif b"X-Spam-Status:" not in head:
            self.summary.problems.append(f"session {session.number}: delivered without spamd's verdict")
        if session.kind == "gtube" and not unchecked:
            if b"X-Spam-Flag: YES" in head:
                self.summary.spam_tagged += 1
            else:
                self.summary.problems.append(f"session {session.number}: GTUBE delivered without the spam flag")

    def _collect_deliveries(self, expected: set[str]) -> dict[str, list[bytes]]:
        """marker -> the delivered copies of this run's messages; each file read once, then removed."""
        found: dict[str, list[bytes]] = {}
        seen: set[str] = set()
        limit = time.monotonic() + DELIVERY_SECONDS
        needle = self.run_id.encode()
        while True:
            for path in sorted(MAILDIR_NEW.iterdir()):
                if path.name in seen:
                    continue
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    continue
                position = data.find(needle)
                if position < 0:
                    continue  # another test's mail
                seen.add(path.name)
                marker = data[position : position + len(needle) + 7].decode()
                found.setdefault(marker, []).append(data)
                path.unlink(missing_ok=True)
            if expected <= found.keys() or time.monotonic() > limit:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # a late duplicate would arrive about now
        for path in MAILDIR_NEW.iterdir():
            with contextlib.suppress(FileNotFoundError):
                data = path.read_bytes()
                position = data.find(needle)
                if position >= 0 and path.name not in seen:
                    found.setdefault(data[position : position + len(needle) + 7].decode(), []).append(data)
                    path.unlink(missing_ok=True)
        return found

    def _quarantined_markers(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        needle = self.run_id.encode()
        for kind in ("viruses", "policy", "spam"):
            for path in self.installation.quarantined(kind):
                data = path.read_bytes()
                position = data.find(needle)
                if position >= 0:
                    marker = data[position : position + len(needle) + 7].decode()
                    counts[marker] = counts.get(marker, 0) + 1
        return counts


def configure_args(clamd: ClamdServer, spamd: SpamdServer, workers: int) -> tuple[str, ...]:
    """The site's installation: clamd and spamd, text mail scanned too, EICAR quarantined, spam tagged."""
    return (
        "--scanners", "clamd,spamd", "--clamd-servers", clamd.socket_path, "--spamd-servers", spamd.socket_path,
        "--skip-text-msgs", "no", "--engine-workers", str(workers),
    )  # fmt: skip


def daemons(plan: Plan, stack: contextlib.ExitStack) -> tuple[ClamdServer, SpamdServer]:
    """clamd and spamd of the run's own, with the plan's idle timeouts."""
    clamd = ClamdServer("site-clamd", read_timeout=plan.idle_timeout).start()
    stack.callback(clamd.remove)
    spamd = SpamdServer("site-spamd", timeout=plan.idle_timeout).start()
    stack.callback(spamd.remove)
    return clamd, spamd


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    defaults = Plan()
    parser.add_argument("--duration", type=float, default=600.0, help="seconds to run (0: just --rounds)")
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="at least this many rounds")
    parser.add_argument("--burst", type=int, default=defaults.burst, help="sessions per burst")
    parser.add_argument("--clients", type=int, default=defaults.clients, help="concurrent senders in a burst")
    parser.add_argument("--idle-timeout", type=int, default=defaults.idle_timeout,
                        help="clamd's ReadTimeout and spamd's --timeout-tcp (seconds)")  # fmt: skip
    parser.add_argument("--quiet-min", type=float, default=defaults.quiet[0], help="shortest quiet spell (s)")
    parser.add_argument("--quiet-max", type=float, default=defaults.quiet[1], help="longest quiet spell (s)")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="engine workers")
    args = parser.parse_args()
    if args.quiet_min <= args.idle_timeout + 1:
        parser.error("--quiet-min must be longer than --idle-timeout + 1 (clamd checks its timeouts once a second)")
    plan = Plan(
        rounds=args.rounds, duration=args.duration, burst=args.burst, clients=args.clients,
        idle_timeout=args.idle_timeout, quiet=(args.quiet_min, args.quiet_max), workers=args.workers,
    )  # fmt: skip

    from testbed.build import TESTBED, BuildError, build
    from testbed.qmail import QmailSend, SmtpServer, install_scanner

    try:
        build(quiet=True)
    except BuildError as error:
        print(f"site-run: {error}", file=sys.stderr)
        return 1
    with contextlib.ExitStack() as stack:
        clamd, spamd = daemons(plan, stack)
        stack.callback(QmailSend().start().stop)
        directory = Path(tempfile.mkdtemp(prefix="site-smtpd-", dir=TESTBED))
        directory.chmod(0o755)  # tcpserver reads the rules as qmaild
        smtp = SmtpServer(directory, max_connections=max(20, plan.clients * 2)).start()
        stack.callback(smtp.stop)
        installation = install_scanner(*configure_args(clamd, spamd, plan.workers))
        stack.callback(installation.remove)
        engine = Engine(installation).start()
        stack.callback(engine.stop)
        smtp.route(installation.wrapper)
        print(f"site-run: {plan.duration:.0f} s (at least {plan.rounds} rounds), bursts of {plan.burst} from"
              f" {plan.clients} clients, quiet {plan.quiet[0]:.0f}-{plan.quiet[1]:.0f} s, clamd ReadTimeout and"
              f" spamd --timeout-tcp {plan.idle_timeout} s, {plan.workers} engine workers", flush=True)  # fmt: skip
        summary = SiteRun(smtp.port, installation, engine, clamd, spamd, plan).run()
        status = engine.status()
        print()
        print("\n".join(summary.lines()))
        print(f"engine: served {status.get('served')}, reloads {status.get('reloads')},"
              f" restarts {status.get('restarts')}, killed {status.get('killed')}")  # fmt: skip
    return 1 if summary.problems else 0


if __name__ == "__main__":
    sys.exit(main())
