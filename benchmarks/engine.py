#!/usr/bin/env python3
"""The resident engine against the standalone program, and its workers over 10,000 messages (root).

    benchmarks/engine.py latency [--rounds 60]     # make bench: per message, wrapper to answer
    benchmarks/engine.py soak [--messages 10000]   # make bench-engine: RSS and fds per worker

Both go through the real setuid wrapper run as `nobody`, as qmail-smtpd runs it, with the engine
started as root (it becomes the scanner account). `latency` interleaves standalone and engine
runs of the same clean 4 KB message and prints the medians and their ratio. `soak` sends the test
corpus round and round through two workers that are never recycled and samples each worker's
resident memory and open fds between two messages: growth past 10 % of the RSS after the first
1,000 messages, or more fds after the last message than after the first 1,000, is a failure
(exit 1). Every message must end queued, quarantined or refused with a 554.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "lib")]

from load import run_once  # noqa: E402

from engine_fixtures import Engine  # noqa: E402
from security_fixtures import install_wrapped  # noqa: E402

CLEAN_4K = (
    b"Received: from unknown (HELO client.example.org) (192.0.2.10)\n  by mx.example.com with SMTP\n"
    b"From: Alice <alice@example.org>\nTo: Bob <bob@example.com>\nSubject: benchmark\n\n"
    + b"".join(b"This is line %03d of a plain text message used for the engine benchmark.\n" % i for i in range(52))
)
RSS_GROWTH_LIMIT = 0.10


def latency(rounds: int, blocks: int = 3) -> dict[str, float]:
    """Median seconds per message, standalone and through the engine, in alternating blocks."""
    installation = install_wrapped()
    engine = Engine(installation)
    times: dict[str, list[float]] = {"standalone": [], "engine": []}
    try:
        for _ in range(blocks):
            for mode in ("standalone", "engine"):
                if mode == "engine":
                    engine.start()
                for index in range(5 + rounds // blocks):
                    result = installation.run(CLEAN_4K)
                    assert result.exit_code == 0, result.stderr
                    if index >= 5:  # the first few warm the caches (and a fresh pool's workers)
                        times[mode].append(result.seconds)
                if mode == "engine":
                    engine.stop()
    finally:
        engine.stop()
        installation.remove()
    return {mode: statistics.median(values) for mode, values in times.items()}


def worker_sample(pids: list[int]) -> dict[int, tuple[int, int]]:
    """pid -> (RSS in KB, open fds), each taken between two messages (fd 0 back on /dev/null)."""
    sample = {}
    for pid in pids:
        limit = time.monotonic() + 2.0
        try:
            while os.readlink(f"/proc/{pid}/fd/0") != os.devnull and time.monotonic() < limit:
                time.sleep(0.001)  # busy with a message: its fds are the caller's, not a leak
            status = Path(f"/proc/{pid}/status").read_text()
            rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
            sample[pid] = (rss, len(os.listdir(f"/proc/{pid}/fd")))
        except (OSError, StopIteration):
            pass
    return sample


def soak(messages: int, clients: int) -> int:
    installation = install_wrapped("--engine-workers", "2", "--engine-max-messages", "0", "--unzip", "yes")
    engine = Engine(installation).start()
    corpus = [path.read_bytes() for path in sorted((ROOT / "tests" / "corpus").glob("*.eml"))]
    outcomes: dict[int, int] = {}
    samples: list[tuple[int, dict[int, tuple[int, int]]]] = []
    sent = 0
    lock = threading.Lock()
    failures: list[str] = []

    def client() -> None:
        nonlocal sent
        while True:
            with lock:
                if sent >= messages:
                    return
                index = sent
                sent += 1
            code, reply = run_once(installation, corpus[index % len(corpus)], {}, caller_vanishes=False)
            with lock:
                outcomes[code] = outcomes.get(code, 0) + 1
                if code != 0 and not reply.startswith("554 "):
                    failures.append(f"message {index}: exit {code}: {reply}")

    started = time.monotonic()
    try:
        threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
        for thread in threads:
            thread.start()
        step = max(1, messages // 10)
        next_sample = step
        while any(thread.is_alive() for thread in threads):
            time.sleep(0.2)
            if sent >= next_sample:
                samples.append((sent, worker_sample(engine.workers())))
                next_sample += step
                for path in installation.sink.iterdir():  # the next hop's copies: only the count matters here
                    path.unlink(missing_ok=True)
        samples.append((sent, worker_sample(engine.workers())))
        try:  # the master writes its counters at most once a second
            engine.wait_until(lambda: engine.status().get("served", 0) >= messages, 5)
        except AssertionError:
            pass  # reported below: some messages did not go through the engine
        status = engine.status()
    finally:
        engine.stop()
        installation.remove()
    seconds = time.monotonic() - started
    print(f"{messages} messages in {seconds:.0f} s ({messages / seconds:.0f}/s, {clients} clients); exits {outcomes}")
    print(f"engine: served {status.get('served')}, restarts {status.get('restarts')}")
    print("messages  " + "  ".join(f"worker {pid}: RSS KB / fds" for pid in samples[0][1]))
    for count, sample in samples:
        print(
            f"{count:8d}  "
            + "  ".join(
                f"{sample.get(pid, ('-', '-'))[0]:>10} / {sample.get(pid, ('-', '-'))[1]:<3}" for pid in samples[0][1]
            )
        )
    first, last = samples[0][1], samples[-1][1]
    problems = list(failures[:5])
    if status.get("served", 0) < messages:
        problems.append(f"the engine served {status.get('served')} of {messages} messages (the rest ran standalone)")
    if set(first) != set(last):
        problems.append(f"workers changed: {sorted(first)} -> {sorted(last)}")
    for pid in set(first) & set(last):
        growth = (last[pid][0] - first[pid][0]) / first[pid][0]
        rss = f"RSS {first[pid][0]} KB -> {last[pid][0]} KB ({growth:+.1%})"
        print(f"worker {pid}: {rss}, fds {first[pid][1]} -> {last[pid][1]}")
        if growth > RSS_GROWTH_LIMIT:
            problems.append(f"worker {pid} grew {growth:.1%}")
        if last[pid][1] > first[pid][1]:  # the last sample is after the last message: nothing in flight
            problems.append(f"worker {pid} fds {first[pid][1]} -> {last[pid][1]}")
    for problem in problems:
        print(f"FAIL: {problem}")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    timing = commands.add_parser("latency")
    timing.add_argument("--rounds", type=int, default=60)
    load = commands.add_parser("soak")
    load.add_argument("--messages", type=int, default=10_000)
    load.add_argument("--clients", type=int, default=4)
    options = parser.parse_args()
    if os.geteuid() != 0:
        print("benchmarks/engine.py: needs root (a scanner account, the setuid wrapper, a caller account)")
        return 2
    if options.command == "latency":
        medians = latency(options.rounds)
        print(
            f"clean 4 KB through the wrapper: standalone {medians['standalone'] * 1000:.1f} ms, "
            f"engine {medians['engine'] * 1000:.1f} ms ({medians['engine'] / medians['standalone']:.2f}x)"
        )
        return 0
    return soak(options.messages, options.clients)


if __name__ == "__main__":
    sys.exit(main())
