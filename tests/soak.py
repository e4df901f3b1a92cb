"""`make soak`: a long fuzzing run through the installed program, then a summary.

Runs generated and mutated messages (tests/fuzz_fixtures.py) until --cases are done or --seconds
have passed (default 100000 cases or one hour), on --workers parallel runs, and writes a summary:
cases, outcomes, slowest cases, largest RSS, and every case that ended badly with its seed
(replay one with `tests/soak.py --replay SEED`).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "lib")]

from fuzz_fixtures import RSS_LIMIT_KB, UndefinedOutcome, generate_case, is_internal_error, run_case  # noqa: E402
from harness import build_standin, install  # noqa: E402

DEADLINE = 30
OPTIONS = ("--unzip", "yes", "--block-password-protected", "yes", "--deadline", str(DEADLINE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=3600.0)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)))
    parser.add_argument("--first-seed", type=int, default=int(time.time()))
    parser.add_argument("--summary", default="soak-summary.json", help="where the JSON summary goes")
    parser.add_argument("--replay", type=int, help="run only this seed and print what happened")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="qs-soak-"))
    try:
        standin = build_standin(workdir)
        # One installation per worker: outcomes are judged by what appeared in its own sink and spool.
        installations = [install(workdir / f"qs{n}", standin, *OPTIONS) for n in range(max(1, args.workers))]
        installation = installations[0]
        if args.replay is not None:
            kind, message = generate_case(args.replay)
            result = run_case(installation, message, timeout=DEADLINE + 30)
            print(f"seed {args.replay} ({kind}, {len(message)} bytes): {result.outcome} exit {result.exit_code} "
                  f"in {result.seconds:.2f} s, {result.max_rss_kb} KB\n{result.stderr}")
            return 0
        summary = soak(installations, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    Path(args.summary).write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(summary, args.summary)
    return 0 if not summary["bad"] else 1


def soak(installations, args) -> dict:
    """Run cases on worker threads (each case is its own process) until the budget is spent."""
    lock = threading.Lock()
    outcomes: collections.Counter = collections.Counter()
    slowest: list[tuple[float, int, str, int]] = []
    largest: list[tuple[int, int, str]] = []
    bad: list[dict] = []
    next_seed = [args.first_seed]
    done = [0]
    started = time.monotonic()

    def worker(installation) -> None:
        while True:
            with lock:
                if done[0] >= args.cases or time.monotonic() - started > args.seconds:
                    return
                seed = next_seed[0]
                next_seed[0] += 1
                done[0] += 1
            kind, message = generate_case(seed)
            problem = ""
            try:
                result = run_case(installation, message, timeout=DEADLINE + 30)
                outcome = result.outcome
                if is_internal_error(result):
                    problem = "internal error: " + result.stderr.strip().splitlines()[-1][:300]
                elif result.seconds > DEADLINE + 5:
                    problem = f"took {result.seconds:.1f} s"
                elif result.max_rss_kb > RSS_LIMIT_KB:
                    problem = f"used {result.max_rss_kb} KB"
            except UndefinedOutcome as error:
                outcome, problem, result = "undefined", str(error), None
            except Exception as error:  # a harness failure is reported, not fatal
                outcome, problem, result = "harness-error", f"{type(error).__name__}: {error}", None
            with lock:
                outcomes[outcome] += 1
                if result is not None:
                    slowest.append((result.seconds, seed, kind, len(message)))
                    slowest.sort(reverse=True)
                    del slowest[10:]
                    largest.append((result.max_rss_kb, seed, kind))
                    largest.sort(reverse=True)
                    del largest[10:]
                if problem:
                    bad.append({"seed": seed, "kind": kind, "outcome": outcome, "problem": problem})

    threads = [threading.Thread(target=worker, args=(one,), daemon=True) for one in installations]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    leftovers = [str(p) for one in installations for p in one.work_files()]
    elapsed = time.monotonic() - started
    return {
        "cases": sum(outcomes.values()),
        "seconds": round(elapsed, 1),
        "cases_per_second": round(sum(outcomes.values()) / elapsed, 1) if elapsed else 0,
        "first_seed": args.first_seed,
        "outcomes": dict(outcomes.most_common()),
        "slowest": [{"seconds": round(s, 3), "seed": seed, "kind": k, "bytes": n} for s, seed, k, n in slowest],
        "largest_rss_kb": [{"kb": kb, "seed": seed, "kind": k} for kb, seed, k in largest],
        "bad": bad[:200],
        "bad_count": len(bad),
        "work_files_left": leftovers,
    }


def print_summary(summary: dict, path: str) -> None:
    print(f"soak: {summary['cases']} cases in {summary['seconds']} s ({summary['cases_per_second']}/s), "
          f"seeds from {summary['first_seed']}")
    print("outcomes: " + ", ".join(f"{name} {count}" for name, count in summary["outcomes"].items()))
    if summary["slowest"]:
        top = summary["slowest"][0]
        print(f"slowest: {top['seconds']} s (seed {top['seed']}, {top['kind']}, {top['bytes']} bytes)")
    if summary["largest_rss_kb"]:
        top = summary["largest_rss_kb"][0]
        print(f"largest RSS: {top['kb']} KB (seed {top['seed']}, {top['kind']})")
    print(f"bad cases: {summary['bad_count']}; work files left: {len(summary['work_files_left'])}")
    for case in summary["bad"][:10]:
        print(f"  seed {case['seed']} ({case['kind']}): {case['outcome']}: {case['problem']}")
    print(f"summary written to {path}")


if __name__ == "__main__":
    sys.exit(main())
