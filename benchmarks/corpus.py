#!/usr/bin/env python3
"""make corpus: real-world mail from other projects' test data through the installed program.

Each message goes in as qmail-smtpd hands it over (its own Received: line on top, LF line
ends), once with the default options and once with --fix-mime 2. Printed per kind of
message (manifest.json): the outcomes; every legitimate message not delivered, with its
reason; every undefined outcome (a crash, a hang, an exit code outside the contract, exit 0
with nothing queued or stored, a delivered message whose bytes changed). The corpus lives in
the shared directory beside the repository (<repo>/../shared), or in $QS_SHARED_DIR.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from harness import Installation, build_standin, envelope, install, strip_added_headers  # noqa: E402

RECEIVED = (
    b"Received: from unknown (HELO client.example.org) (192.0.2.10)\n"
    b"  by mx.example.com with SMTP; 28 Nov 2026 08:00:00 -0000\n"
)
DEFINED_FAILURES = {31: "rejected", 71: "temporary failure", 82: "custom reply"}
CONFIGURATIONS = {"defaults": (), "--fix-mime 2": ("--fix-mime", "2")}


@dataclass
class Outcome:
    """What happened to one message, as an administrator would tell it."""

    name: str
    kind: str
    outcome: str  # delivered | quarantined | rejected | temporary failure | undefined
    reason: str = ""


def corpus_dir() -> Path:
    """The real-world corpus: $QS_SHARED_DIR/corpus/realworld, else <repo>/../shared/corpus/realworld."""
    shared = Path(os.environ.get("QS_SHARED_DIR") or ROOT.parent / "shared")
    return shared / "corpus" / "realworld"


def manifest(directory: Path) -> dict[str, str]:
    """File name -> kind (legit, malicious-test, unknown)."""
    entries = json.loads((directory / "manifest.json").read_text())
    return {name: entry["kind"] for name, entry in entries.items() if (directory / name).is_file()}


def quarantine_reason(installation: Installation, before: set[Path]) -> tuple[str, str] | None:
    """(kind, reason) of a message that landed in the quarantine during this run, else None."""
    root = installation.spool / "quarantine"
    for path in sorted(set(root.glob("*/new/*")) - before):
        for line in path.read_bytes().split(b"\n\n", 1)[0].split(b"\n"):
            if line.lower().startswith(b"x-qs-envelope-reason:"):
                return path.parent.parent.name, line.split(b":", 1)[1].strip().decode("utf-8", "replace")
        return path.parent.parent.name, "(no reason recorded)"
    return None


def run_one(installation: Installation, name: str, kind: str, data: bytes) -> Outcome:
    """Feed one message and classify what came out."""
    message = RECEIVED + data
    before = set((installation.spool / "quarantine").glob("*/new/*"))
    try:
        result = installation.run(message, envelope("sender@example.org", "rcpt@example.com"), timeout=120)
    except Exception as error:  # a hang (timeout) or a harness failure is an undefined outcome
        return Outcome(name, kind, "undefined", f"{type(error).__name__}: {error}")
    stored = quarantine_reason(installation, before)
    if "internal error" in result.stderr or "Traceback" in result.stderr:
        return Outcome(name, kind, "undefined", result.stderr.strip().splitlines()[-1][:200])
    if result.exit_code == 0 and result.queued:
        if strip_added_headers(result.queued[0].message) != message:
            return Outcome(name, kind, "undefined", "delivered with changed bytes")
        return Outcome(name, kind, "delivered")
    if result.exit_code == 0 and stored:
        return Outcome(name, kind, f"quarantined ({stored[0]})", stored[1])
    if result.exit_code in DEFINED_FAILURES:
        text = (result.custom_error or b"").decode("utf-8", "replace")[1:] or result.stderr.strip()[-200:]
        permanent = result.exit_code == 31 or (result.custom_error or b"")[:1] == b"D"
        return Outcome(name, kind, "rejected" if permanent else "temporary failure", text)
    return Outcome(name, kind, "undefined", f"exit {result.exit_code}: {result.stderr.strip()[-200:]}")


def run_configuration(workdir: Path, standin: Path, options: tuple[str, ...], files: dict[str, str]) -> list[Outcome]:
    """Every corpus file through one installation configured with `options`."""
    installation = install(workdir, standin, *options)
    directory = corpus_dir()
    # One at a time: the outcome of a run is told apart by what appeared in the sink and the quarantine.
    return [run_one(installation, name, kind, (directory / name).read_bytes()) for name, kind in sorted(files.items())]


def report(title: str, outcomes: list[Outcome], every: bool = False) -> int:
    """Print the table for one configuration; return the number of target misses."""
    print(f"== {title}")
    kinds = sorted({o.kind for o in outcomes})
    for kind in kinds:
        counts = Counter(o.outcome for o in outcomes if o.kind == kind)
        total = sum(counts.values())
        shown = ", ".join(f"{outcome} {count}" for outcome, count in sorted(counts.items()))
        print(f"  {kind:15} {total:4} messages: {shown}")
    misses = 0
    for outcome in outcomes:
        if every and outcome.kind != "legit" and outcome.outcome != "delivered":
            print(f"  {outcome.kind} not delivered: {outcome.name}: {outcome.outcome}: {outcome.reason}")
        if outcome.kind == "legit" and outcome.outcome != "delivered":
            print(f"  legit not delivered: {outcome.name}: {outcome.outcome}: {outcome.reason}")
            misses += 1
    for outcome in outcomes:
        if outcome.outcome == "undefined":
            print(f"  UNDEFINED: {outcome.name} ({outcome.kind}): {outcome.reason}")
            misses += 1
    return misses


def main() -> int:
    directory = corpus_dir()
    if not (directory / "manifest.json").is_file():
        print(f"no corpus at {directory} (set QS_SHARED_DIR to the shared directory)", file=sys.stderr)
        return 2
    files = manifest(directory)
    with tempfile.TemporaryDirectory(prefix="qs-corpus-") as work:
        standin = build_standin(Path(work))
        for number, (title, options) in enumerate(CONFIGURATIONS.items()):
            outcomes = run_configuration(Path(work) / f"config{number}", standin, options, files)
            report(f"{title}: {len(files)} messages from {directory}", outcomes, every="--every" in sys.argv)
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
