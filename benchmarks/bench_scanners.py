#!/usr/bin/env python3
"""Per-message cost with real scanners: internal checks only, + clamd, + clamd and spamd.

All three installations run in the same process, interleaved round by round, so machine noise
hits them alike; the figures are medians and ratios against the internal-checks-only baseline.
The message has a small attachment, so --skip-text-msgs does not skip the AV scan.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT / "tests", ROOT / "lib"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from daemons import ClamdServer, SpamdServer  # noqa: E402
from harness import build_standin, envelope, install  # noqa: E402
from scanner_fixtures import with_attachment  # noqa: E402

ROUNDS = 40
NOTES = b"".join(b"line %03d of the attached notes\n" % i for i in range(100))
MESSAGE = with_attachment("notes.txt", NOTES, "text/plain")


def main(rounds: int = ROUNDS) -> dict:
    """Start clamd and spamd, install three variants, time them interleaved, print ratios."""
    clamd = ClamdServer("bench-clamd").start()
    spamd = SpamdServer("bench-spamd").start()
    try:
        with tempfile.TemporaryDirectory(prefix="qs-bench-scanners-") as directory:
            work = Path(directory)
            standin = build_standin(work)
            variants = {
                "internal checks only": install(work / "none", standin, "--scanners", "none"),
                "clamd": install(work / "clamd", standin, "--scanners", "clamd", "--clamd-servers", clamd.socket_path),
                "clamd + spamd": install(
                    work / "both", standin, "--scanners", "clamd,spamd",
                    "--clamd-servers", clamd.socket_path, "--spamd-servers", spamd.socket_path,
                ),
            }
            raw_envelope = envelope("alice@example.org", "bob@example.net")
            samples: dict[str, list[float]] = {name: [] for name in variants}
            for round_number in range(rounds + 2):
                for name, installation in variants.items():
                    started = time.perf_counter()
                    result = installation.run(MESSAGE, raw_envelope)
                    elapsed = time.perf_counter() - started
                    if result.exit_code != 0 or len(result.queued) != 1:
                        raise SystemExit(f"{name}: exit {result.exit_code}: {result.stderr.strip()}")
                    if round_number >= 2:  # two warm-up rounds
                        samples[name].append(elapsed)
    finally:
        clamd.remove()
        spamd.remove()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    baseline = medians["internal checks only"]
    print(f"per-message cost with scanners (median of {rounds}, interleaved; daemon startup: "
          f"clamd {clamd.startup_seconds:.2f} s, spamd {spamd.startup_seconds:.2f} s)")
    for name, seconds in medians.items():
        print(f"  {name:22s} {seconds * 1000:8.2f} ms  = {seconds / baseline:5.2f}x internal-checks-only")
    return medians


if __name__ == "__main__":
    main()
