"""The comparison: which payloads the reference parsers extract that our unpacker does not hand the scanners.

A case is kept when at least one reference parser extracts its carrier byte for byte. It escapes
when our unpacker has no decoded part with the payload's hash and no blocking finding (a message
quarantined with a reason is fine). A crash or temporary failure of ours is counted apart.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from . import refparsers
from .generator import Case

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ESCAPES_DIR = Path("/tmp/diff-escapes")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Outcome:
    """One message compared."""

    path: str
    cls: str
    variant: str
    eicar: bool
    extracted_by: list[str]  # reference parsers that extract the carrier
    seen: bool = False  # our unpacker has a decoded part with the payload's hash
    scan_alone: bool = False  # ... and that part is handed to clamd on its own
    blocked: str = ""  # our blocking finding
    error: str = ""  # our crash or temporary failure
    seconds: float = 0.0

    @property
    def kept(self) -> bool:
        return bool(self.extracted_by)

    @property
    def escaped(self) -> bool:
        return self.kept and not self.seen and not self.blocked and not self.error


@dataclass
class Run:
    """A comparison over many messages, with its timings."""

    outcomes: list[Outcome] = field(default_factory=list)
    parsers: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def run_ours(paths: list[str], lib: str, overrides: dict[str, object] | None = None) -> dict[str, dict]:
    """The unpacker of the tree at `lib` over the messages, in a subprocess with that tree on sys.path."""
    argv = [sys.executable, str(HERE / "ours.py"), "--lib", lib]
    for name, value in (overrides or {}).items():
        argv += ["--set", f"{name}={json.dumps(value)}"]
    done = subprocess.run(argv, input=json.dumps(paths).encode(), capture_output=True, check=False, timeout=7200)
    if done.returncode != 0:
        raise RuntimeError(f"ours.py failed: {done.stderr.decode(errors='replace')[-3000:]}")
    return json.loads(done.stdout)


def write_cases(cases: list[Case], directory: Path) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, item in enumerate(cases):
        path = directory / f"{number:06d}-{item.cls}.eml"
        path.write_bytes(item.message)
        paths.append(str(path))
    return paths


def evaluate(
    cases: list[Case],
    directory: Path,
    lib: str = str(REPO / "lib"),
    parsers: list[str] | None = None,
    overrides: dict[str, object] | None = None,
) -> Run:
    """Write the cases, run every reference parser and ours over them, compare."""
    run = Run(parsers=parsers or refparsers.available())
    paths = write_cases(cases, directory)
    extracted = {}
    for name in run.parsers:
        started = time.monotonic()
        extracted[name] = {path: set(hashes) for path, hashes in refparsers.extract_all(paths, [name])[name].items()}
        run.timings[name] = time.monotonic() - started
    started = time.monotonic()
    ours = run_ours(paths, lib, overrides)
    run.timings["ours"] = time.monotonic() - started
    for path, item in zip(paths, cases, strict=True):
        carrier, payload = sha(item.carrier), sha(item.payload)
        by = [name for name in run.parsers if carrier in extracted[name].get(path, ())]
        mine = ours.get(path, {"hashes": [], "scan_alone": [], "blocked": "", "error": "no result"})
        run.outcomes.append(
            Outcome(
                path,
                item.cls,
                item.variant,
                item.eicar,
                by,
                seen=payload in mine["hashes"],
                scan_alone=payload in mine["scan_alone"],
                blocked=mine["blocked"],
                error=mine["error"],
                seconds=mine.get("seconds", 0.0),
            )
        )
    return run


def table(run: Run, title: str = "") -> str:
    """Rows: classes; columns: generated, kept, per-parser extractions, our escapes, blocked, errors."""
    by_class: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in run.outcomes:
        by_class[outcome.cls].append(outcome)
    columns = ["class", "gen", "kept", *run.parsers, "seen", "blocked", "error", "ESCAPES", "eicar-alone"]
    rows = []
    for cls in sorted(by_class):
        items = by_class[cls]
        kept = [o for o in items if o.kept]
        eicar_seen = [o for o in kept if o.eicar and o.seen]
        rows.append(
            [
                cls,
                len(items),
                len(kept),
                *[sum(name in o.extracted_by for o in items) for name in run.parsers],
                sum(o.seen for o in kept),
                sum(bool(o.blocked) and not o.seen for o in kept),
                sum(bool(o.error) for o in kept),
                sum(o.escaped for o in items),
                f"{sum(o.scan_alone for o in eicar_seen)}/{len(eicar_seen)}",
            ]
        )
    totals = ["TOTAL", *[sum(row[i] for row in rows) for i in range(1, len(columns) - 1)], ""]
    rows.append(totals)
    widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) for i, c in enumerate(columns)]
    lines = [title] if title else []
    lines.append(
        "  ".join(
            str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(columns, widths, strict=True))
        )
    )
    for row in rows:
        lines.append(
            "  ".join(
                str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    per_parser = Counter(name for o in run.outcomes if o.escaped for name in o.extracted_by)
    lines.append("escapes a parser extracts: " + ", ".join(f"{name} {per_parser[name]}" for name in run.parsers))
    lines.append("seconds: " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in run.timings.items()))
    lines.append("eicar-alone: kept EICAR cases we see decoded whose part is handed to clamd on its own (scan_alone)")
    return "\n".join(lines)


def escape_variants(run: Run) -> dict[str, Counter]:
    """class -> how often each variant escaped."""
    result: dict[str, Counter] = defaultdict(Counter)
    for outcome in run.outcomes:
        if outcome.escaped:
            result[outcome.cls][outcome.variant] += 1
    return result


def save_escapes(run: Run, root: Path = ESCAPES_DIR, per_variant: int = 3) -> int:
    """Copy a few escaping messages of each class and variant to root/<class>/ (replacing what was there)."""
    if root.exists():
        shutil.rmtree(root)
    saved: Counter = Counter()
    for outcome in run.outcomes:
        if not outcome.escaped or saved[(outcome.cls, outcome.variant)] >= per_variant:
            continue
        saved[(outcome.cls, outcome.variant)] += 1
        target = root / outcome.cls
        target.mkdir(parents=True, exist_ok=True)
        slug = "".join(c if c.isalnum() else "-" for c in outcome.variant)[:60]
        shutil.copy(outcome.path, target / f"{slug}-{os.path.basename(outcome.path)}")
        with open(target / "README.txt", "a") as readme:
            readme.write(
                f"{slug}-{os.path.basename(outcome.path)}: {outcome.variant}; extracted by "
                f"{', '.join(outcome.extracted_by)}\n"
            )
    return sum(saved.values())


def corpus_gaps(paths: list[str], lib: str, parsers: list[str] | None = None) -> tuple[dict[str, Counter], list[str]]:
    """For real mail: per parser, messages where it extracts a payload we have no decoded part for.

    Compared with line ends made LF and trailing ones cut: where a text part ends is not what differs.
    """
    parsers = parsers or refparsers.available()
    extracted = refparsers.extract_all(paths, parsers)
    ours = run_ours(paths, lib)
    counts: dict[str, Counter] = {name: Counter() for name in parsers}
    lines = []
    for path in paths:
        mine = {h for h in ours.get(path, {}).get("hashes", ()) if h.startswith("n:")}
        for name in parsers:
            theirs = {h for h in extracted[name].get(path, ()) if h.startswith("n:")}
            unseen = theirs - mine - {"n:" + sha(b"")}
            if unseen:
                counts[name]["messages"] += 1
                counts[name]["payloads"] += len(unseen)
                lines.append(f"{name}: {os.path.basename(path)}: {len(unseen)} payload(s) not seen")
    return counts, lines
