#!/usr/bin/env python3
"""make bench-smtp: whole SMTP sessions through the real qmail-smtpd on loopback, filters side by side.

Every figure comes from the same run on the same machine, so the ratios mean something where the
absolute times do not (shared, noisy machines). The filters, each as qmail-smtpd's QMAILQUEUE:
  no filter                 qmail-queue itself: the floor of any filter
  simscan                   the C peer, built from the vendor sources (tests/testbed/build.py), with
                            clamdscan; the spam variant adds spamc (simscan skips spamc at 250,000 bytes)
  this project, standalone  the setuid wrapper, one Python process per message
  this project, engine      the same wrapper as a client of `qmail-scanner-queue.py --serve`
                            (listed as "not available" where the installed program has no --serve)
Workloads: a 4 KB clean text message and a 300 KB attachment of fresh random bytes each time (no
scanner cache can answer); clamd only and clamd + spamd. This project is configured to scan text
messages too (--skip-text-msgs no), so it does the work simscan does. Before timing, EICAR is sent
through every filter and must be refused (GTUBE too where spamd is in the chain): a filter that does
not scan would win the race. Sequential sessions give the median and p90 latency (connect to the
reply to QUIT); ten concurrent clients give messages per second. Rounds interleave the filters and
start with a warm-up, so drift on the machine hits every filter alike. spamd's own time for the
same message (a CHECK straight on its socket) is the floor of any spam-checking filter. With the
engine, its targets are printed as ratios of the run. Afterwards every accepted message must have
reached the test Maildir.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "lib")]

from daemons import ClamdServer, SpamdServer, unix_exchange  # noqa: E402
from testbed import messages  # noqa: E402
from testbed.build import QMAIL, SIMSCAN_VARIANTS, TESTBED, BuildError, build  # noqa: E402
from testbed.qmail import (  # noqa: E402
    MAILDIR_NEW,
    QmailSend,
    ScannerInstall,
    SmtpServer,
    install_scanner,
    send,
    simscan_pointed_at,
    unique_marker,
)

SIMSCAN = {variant.name: variant for variant in SIMSCAN_VARIANTS}
SIZE_4K = 4096
SIZE_300K = 300_000
REFUSED = 554
QUEUE_MESS = QMAIL / "queue" / "mess"  # a message is here from qmail-queue until delivered


@dataclass
class Filter:
    """One QMAILQUEUE choice; queue None is qmail-queue itself."""

    label: str
    queue: Path | None
    key: str = ""  # none, simscan, standalone, engine, spamd: what the targets compare
    available: str = ""  # why not, when it cannot run here
    direct: Callable[[bytes], float] | None = None  # a measurement without SMTP (spamd's own time)
    engine_spool: Path | None = None  # where the engine this filter talks to keeps its counters
    sessions: int = 0  # SMTP sessions through this filter, checks and warm-ups included
    latencies: dict[str, list[float]] = field(default_factory=dict)  # workload -> seconds per session
    rates: dict[str, list[float]] = field(default_factory=dict)  # workload -> msgs/s per burst


@dataclass
class Workload:
    label: str
    make: Callable[[str], bytes]
    filters: list[Filter]


class Bench:
    def __init__(self, smtp: SmtpServer, run_id: str) -> None:
        self.smtp = smtp
        self.run_id = run_id
        self.accepted = 0
        self.lock = threading.Lock()

    def session(self, flt: Filter, message: bytes) -> float:
        """One SMTP session through flt; returns its seconds. A refusal of clean mail ends the benchmark."""
        started = time.perf_counter()
        reply = send(self.smtp.port, message, timeout=300)
        seconds = time.perf_counter() - started
        if not reply.accepted:
            raise SystemExit(f"bench-smtp: {flt.label} refused a clean message: {reply.code} {reply.text}")
        with self.lock:
            self.accepted += 1
            flt.sessions += 1
        return seconds

    def marker(self) -> str:
        return f"{self.run_id}-{unique_marker()}"

    def check_scans(self, flt: Filter, spam: bool) -> str:
        """EICAR (and GTUBE where spamd is in the chain) must be refused; no filter must accept them."""
        self.smtp.route(flt.queue)
        samples = [("EICAR", messages.eicar(self.marker()))]
        if spam:
            samples.append(("GTUBE", messages.gtube(self.marker())))
        seen = []
        for name, sample in samples:
            reply = send(self.smtp.port, sample)
            expected = 250 if flt.queue is None else REFUSED
            if reply.code != expected:
                raise SystemExit(f"bench-smtp: {flt.label} answered {reply.code} {reply.text!r} to {name}")
            if reply.accepted:
                self.accepted += 1
            flt.sessions += 1
            seen.append(f"{name} {reply.code}")
        return ", ".join(seen)

    def sequential(self, workload: Workload, rounds: int, warmup: int) -> None:
        runnable = [f for f in workload.filters if not f.available]
        for round_number in range(warmup + rounds):
            order = runnable[:]
            random.shuffle(order)
            for flt in order:
                message = workload.make(self.marker())
                if flt.direct:
                    seconds = flt.direct(message)
                else:
                    self.smtp.route(flt.queue)
                    seconds = self.session(flt, message)
                if round_number >= warmup:
                    flt.latencies.setdefault(workload.label, []).append(seconds)

    def concurrent(self, workload: Workload, clients: int, per_burst: int, bursts: int) -> None:
        runnable = [f for f in workload.filters if not f.available and not f.direct]
        for _ in range(bursts):
            order = runnable[:]
            random.shuffle(order)
            for flt in order:
                batch = [workload.make(self.marker()) for _ in range(per_burst)]
                self.smtp.route(flt.queue)
                flt.rates.setdefault(workload.label, []).append(self._burst(flt, batch, clients))

    def _burst(self, flt: Filter, batch: list[bytes], clients: int) -> float:
        pending = list(batch)
        failures: list[BaseException] = []

        def client() -> None:
            while True:
                with self.lock:
                    if not pending or failures:
                        return
                    message = pending.pop()
                try:
                    self.session(flt, message)
                except BaseException as error:  # reported after the burst, as the reason to stop
                    failures.append(error)
                    return

        started = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise SystemExit(f"bench-smtp: {flt.label}: {failures[0]}")
        return len(batch) / (time.perf_counter() - started)

    def collect_deliveries(self, expected: int, timeout: float) -> int:
        """Remove this run's messages from the test Maildir as qmail-send delivers them; return how many.

        Stops early once qmail's queue is empty and a pass over the Maildir found nothing more.
        """
        needle = self.run_id.encode()
        delivered = 0
        deadline = time.monotonic() + timeout
        while delivered < expected and time.monotonic() < deadline:
            found = 0
            for path in list(MAILDIR_NEW.iterdir()):
                try:
                    with open(path, "rb") as handle:
                        head = handle.read(8192)
                except FileNotFoundError:
                    continue
                if needle in head:
                    path.unlink(missing_ok=True)
                    found += 1
            delivered += found
            if not found and not any(path.is_file() for path in QUEUE_MESS.rglob("*")):
                break
            time.sleep(0.2)
        return delivered


def print_engine_counts(filters: list[Filter]) -> None:
    """Every session through an engine row was served by the engine, not by the standalone fallback."""
    print()
    for flt in filters:
        if flt.engine_spool is None:
            continue
        time.sleep(2)  # the master rewrites its counters about once a second
        try:
            served = json.loads((flt.engine_spool / "engine.status").read_text()).get("served", 0)
        except (OSError, ValueError):
            served = "no status"
        print(f"{flt.label}: the engine served {served} of {flt.sessions} sessions")


def quarantine_reason(path: Path) -> str:
    for line in path.read_bytes().split(b"\n\n", 1)[0].split(b"\n"):
        if line.lower().startswith((b"x-qs-envelope-reason:", b"x-qmail-scanner-diagnostics:")):
            return line.decode("utf-8", "replace")
    return "(no reason header)"


def engine_supported(program: Path) -> bool:
    completed = subprocess.run([str(program), "-h"], capture_output=True, text=True, check=False, timeout=60)
    return "--serve" in completed.stdout + completed.stderr


@contextlib.contextmanager
def running_engine(installed: ScannerInstall):
    """`qmail-scanner-queue.py --serve` for this install, up until `--engine-status` answers."""
    process = subprocess.Popen(
        [str(installed.program), "--serve"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([str(installed.program), "--engine-status"], capture_output=True).returncode != 0:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise SystemExit(f"bench-smtp: the engine did not start: {process.communicate()[1].decode()[-2000:]}")
            time.sleep(0.1)
        yield
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def project_filters(
    kind: str, configure: tuple[str, ...], stack: contextlib.ExitStack, installs: list[ScannerInstall]
) -> list[Filter]:
    """This project standalone and with the engine, each its own install (and spool) with these options."""
    standalone = install_scanner(*configure)
    stack.callback(standalone.remove)
    installs.append(standalone)
    filters = [Filter(f"this project, standalone ({kind})", standalone.wrapper, "standalone")]
    if not engine_supported(standalone.program):
        filters.append(Filter(f"this project, engine ({kind})", None, "engine", available="not available"))
        return filters
    served = install_scanner(*configure)
    stack.callback(served.remove)
    installs.append(served)
    stack.enter_context(running_engine(served))
    filters.append(Filter(f"this project, engine ({kind})", served.wrapper, "engine", engine_spool=served.spool))
    return filters


def ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}x" if value and base else "-"


def summarize(workload: Workload) -> dict[str, tuple[float | None, float | None, float | None]]:
    """filter key -> (median seconds, p90 seconds, msgs/s) for this workload."""
    summary = {}
    for flt in workload.filters:
        seconds = flt.latencies.get(workload.label) or []
        rates = flt.rates.get(workload.label) or []
        median = statistics.median(seconds) if seconds else None
        p90 = statistics.quantiles(seconds, n=10)[8] if len(seconds) >= 2 else median
        summary[flt.key] = (median, p90, statistics.median(rates) if rates else None)
    return summary


def print_table(workload: Workload, summary: dict) -> None:
    print(f"\n{workload.label}")
    print(f"  {'filter':42} {'median':>9} {'p90':>9} {'vs simscan':>10} {'vs none':>8}"
          f" {'10 clients':>11} {'vs simscan':>10} {'vs none':>8}")  # fmt: skip
    none, simscan = summary["none"], summary["simscan"]
    for flt in workload.filters:
        if flt.available:
            print(f"  {flt.label:42} {flt.available}")
            continue
        median, p90, rate = summary[flt.key]
        rate_text = f"{rate:7.1f}/s" if rate else f"{'-':>9}"
        print(
            f"  {flt.label:42} {median * 1000:7.1f}ms {p90 * 1000:7.1f}ms"
            f" {ratio(median, simscan[0]):>10} {ratio(median, none[0]):>8}"
            f" {rate_text} {ratio(rate, simscan[2]):>10} {ratio(rate, none[2]):>8}"
        )


def print_targets(clamd_4k: dict, clamd_300k: dict, spam_4k: dict) -> None:
    """The engine's targets, as ratios of this run."""
    if clamd_4k.get("engine", (None,))[0] is None:
        return
    lines = [
        ("clamd, 4 KB, median: engine / simscan", clamd_4k["engine"][0] / clamd_4k["simscan"][0], "<=", 0.8),
        ("clamd, 4 KB, 10 clients: engine / simscan msgs/s", clamd_4k["engine"][2] / clamd_4k["simscan"][2], ">=", 1.2),
        ("clamd + spamd, 4 KB, median: engine / simscan", spam_4k["engine"][0] / spam_4k["simscan"][0], "<=", 0.97),
        (
            "clamd + spamd, 4 KB: engine / (spamd alone + no filter)",
            spam_4k["engine"][0] / (spam_4k["spamd"][0] + spam_4k["none"][0]),
            "<=",
            1.05,
        ),
        ("clamd, 300 KB, median: engine / simscan", clamd_300k["engine"][0] / clamd_300k["simscan"][0], "<=", 0.9),
        ("clamd, 4 KB, median: standalone / simscan", clamd_4k["standalone"][0] / clamd_4k["simscan"][0], "", 0),
    ]
    print("\ntargets")
    for text, value, relation, bound in lines:
        met = "" if not relation else ("met" if (value <= bound if relation == "<=" else value >= bound) else "MISSED")
        goal = f"{relation} {bound}" if relation else ""
        print(f"  {text:58} {value:5.2f}x  {goal:8} {met}")


def spamd_alone(socket_path: str) -> Callable[[bytes], float]:
    """Seconds for spamd's own CHECK of a message on its socket: the floor of any spam-checking filter."""

    def measure(message: bytes) -> float:
        request = b"CHECK SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % len(message) + message
        started = time.perf_counter()
        reply = unix_exchange(socket_path, request, timeout=60)
        if b"EX_OK" not in reply:
            raise SystemExit(f"bench-smtp: spamd answered {reply[:200]!r}")
        return time.perf_counter() - started

    return measure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=40, help="sequential sessions per filter and workload")
    parser.add_argument("--warmup", type=int, default=5, help="untimed sessions per filter first")
    parser.add_argument("--clients", type=int, default=10, help="concurrent SMTP clients")
    parser.add_argument("--burst", type=int, default=60, help="messages per concurrent burst")
    parser.add_argument("--bursts", type=int, default=3, help="concurrent bursts per filter and workload")
    args = parser.parse_args()
    try:
        build(quiet=True)
    except BuildError as error:
        print(f"bench-smtp: {error}", file=sys.stderr)
        return 1

    with contextlib.ExitStack() as stack:
        clamd = ClamdServer("bench-clamd").start()
        stack.callback(clamd.remove)
        spamd = SpamdServer("bench-spamd").start()
        stack.callback(spamd.remove)
        stack.enter_context(simscan_pointed_at(clamd.socket_path, spamd.socket_path))
        stack.callback(QmailSend().start().stop)
        directory = Path(tempfile.mkdtemp(prefix="bench-smtpd-", dir=TESTBED))
        directory.chmod(0o755)
        smtp = SmtpServer(directory, max_connections=max(20, args.clients * 2)).start()
        stack.callback(smtp.stop)

        clamd_only = ("--scanners", "clamd", "--clamd-servers", clamd.socket_path)
        with_spamd = ("--scanners", "clamd,spamd", "--clamd-servers", clamd.socket_path,
                      "--spamd-servers", spamd.socket_path, "--sa-reject", "yes")  # fmt: skip
        common = ("--skip-text-msgs", "no", "--virus-reject", "yes")
        installs: list[ScannerInstall] = []
        clam_filters = [
            Filter("no filter (qmail-queue)", None, "none"),
            Filter("simscan + clamdscan", SIMSCAN["clam"].shim, "simscan"),
            *project_filters("clamd", (*clamd_only, *common), stack, installs),
        ]
        spam_filters = [
            Filter("no filter (qmail-queue)", None, "none"),
            Filter("simscan + clamdscan + spamc", SIMSCAN["spam"].shim, "simscan"),
            *project_filters("clamd + spamd", (*with_spamd, *common), stack, installs),
            Filter("spamd alone (CHECK on its socket, no SMTP)", None, "spamd", direct=spamd_alone(spamd.socket_path)),
        ]
        bench = Bench(smtp, f"bench-{unique_marker()}")
        print("Each filter scans (EICAR and GTUBE refused, no filter accepts them):")
        for flt, spam in [(f, False) for f in clam_filters] + [(f, True) for f in spam_filters[1:]]:
            if not flt.available and not flt.direct:
                print(f"  {flt.label:42} {bench.check_scans(flt, spam)}")
        workloads = [
            Workload("4 KB clean message, clamd only", lambda m: messages.plain(m, SIZE_4K), clam_filters),
            Workload(
                "300 KB attachment (fresh random bytes), clamd only",
                lambda m: messages.random_attachment(m, SIZE_300K),
                clam_filters,
            ),
            Workload("4 KB clean message, clamd + spamd", lambda m: messages.plain(m, SIZE_4K), spam_filters),
        ]
        started = time.monotonic()
        for workload in workloads:
            print(f"measuring: {workload.label} ...", flush=True)
            bench.sequential(workload, args.rounds, args.warmup)
            bench.concurrent(workload, args.clients, args.burst, args.bursts)
        summaries = [summarize(workload) for workload in workloads]
        for workload, summary in zip(workloads, summaries):
            print_table(workload, summary)
        print_targets(*summaries)
        print_engine_counts([*clam_filters, *spam_filters])
        print(f"\n{args.rounds} sequential sessions and {args.bursts} bursts of {args.burst} messages"
              f" ({args.clients} clients) per filter and workload, {time.monotonic() - started:.0f} s.")  # fmt: skip
        quarantined = [path for installed in installs for kind in ("viruses", "policy", "spam")
                       for path in installed.quarantined(kind)]  # fmt: skip
        delivered = bench.collect_deliveries(bench.accepted - len(quarantined), timeout=300)
        print(f"accepted {bench.accepted} clean messages: {delivered} delivered to the test Maildir,"
              f" {len(quarantined)} quarantined")  # fmt: skip
        if quarantined:  # a clean message kept from its recipient is a finding of its own: keep a copy
            kept = Path(tempfile.mkdtemp(prefix="bench-quarantined-", dir=TESTBED))
            for path in quarantined:
                shutil.copy(path, kept / path.name)
                print(f"  {kept / path.name}: {quarantine_reason(path)}")
        shutil.rmtree(directory, ignore_errors=True)
        return 0 if delivered == bench.accepted else 1


if __name__ == "__main__":
    sys.exit(main())
