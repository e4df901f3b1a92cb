#!/usr/bin/env python3
"""make bench-compare BASE=<rev>: this tree against another revision, installed side by side, timed interleaved.

The machines are shared and noisy; timing both installations round by round, alternating,
exposes them to the same noise, so their ratio means something where two separate
`make bench` runs would not. Prints the per-message cost of the clean 4 KB message and of the
5-attachment message for both trees and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import CLEAN_4K, five_attachments  # noqa: E402

from harness import build_standin, envelope, install  # noqa: E402


def checkout(revision: str, directory: Path) -> Path:
    """The tree of `revision` (git archive: no worktree left behind)."""
    directory.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    return directory


def timed(installation, message: bytes, raw_envelope: bytes) -> float:
    started = time.perf_counter()
    result = installation.run(message, raw_envelope)
    elapsed = time.perf_counter() - started
    if result.exit_code != 0:
        raise SystemExit(f"not queued: exit {result.exit_code} {result.stderr}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", default="HEAD~1", help="the revision to compare with (default HEAD~1)")
    parser.add_argument("--rounds", type=int, default=200, help="messages per tree and workload")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qs-compare-") as directory:
        work = Path(directory)
        base_tree = checkout(args.base, work / "base")
        standin = build_standin(work)
        trees = {
            args.base: install(work / "qs-base", standin, configure=base_tree / "configure.py"),
            "this tree": install(work / "qs-this", standin),
        }
        raw = envelope("alice@example.org", "bob@example.com")
        workloads = {"clean 4 KB message": CLEAN_4K, "5 attachments": five_attachments()}
        for label, message in workloads.items():
            samples: dict[str, list[float]] = {name: [] for name in trees}
            for installation in trees.values():  # warm-up
                timed(installation, message, raw)
            for _ in range(args.rounds):
                for name, installation in trees.items():
                    samples[name].append(timed(installation, message, raw))
            base, this = (statistics.median(samples[name]) for name in trees)
            print(f"{label} (median of {args.rounds}, interleaved):")
            print(f"  {args.base:<12} {base * 1000:7.2f} ms")
            print(f"  {'this tree':<12} {this * 1000:7.2f} ms  = {this / base:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
