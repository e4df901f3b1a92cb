#!/usr/bin/env python3
"""make differential: crafted messages through real mail parsers and our unpacker; escapes per class and parser.

A payload escapes when a reference parser (Python email, Perl MIME-tools, node mailparser,
ripmime, GMime via mu) extracts it byte for byte and our unpacker neither hands it to the
scanners decoded nor blocks the message with a reason. --lib measures another tree (e.g. a git
worktree of an older commit). The test corpus and the real-world corpus go through the same
comparison: what a reference parser extracts from legitimate mail that we have no decoded part for.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from compat_fixtures import shared_dir  # noqa: E402
from differential import compare, generator, refparsers  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=3000, help="generated messages (default 3000)")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random, printed)")
    parser.add_argument("--lib", default=str(ROOT / "lib"), help="lib directory of the tree to measure")
    parser.add_argument("--keep", default="", help="keep the generated messages in this directory")
    parser.add_argument("--escapes", default=str(compare.ESCAPES_DIR), help="examples of escapes per class go here")
    parser.add_argument("--classes", default="", help="comma-separated classes (default all)")
    parser.add_argument("--set", action="append", default=[], help="a setting override for our side, NAME=JSON")
    parser.add_argument("--no-corpus", action="store_true", help="skip the corpora")
    parser.add_argument("--json", default="", help="write the per-class numbers to this file")
    args = parser.parse_args()

    for line in refparsers.missing():
        print(f"reference parser skipped: {line}", file=sys.stderr)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    classes = [c for c in args.classes.split(",") if c] or None
    overrides = {name: json.loads(value) for name, _, value in (item.partition("=") for item in args.set)}
    started = time.monotonic()
    cases = generator.generate(args.count, seed, classes)
    generated = time.monotonic() - started
    with tempfile.TemporaryDirectory(prefix="qs-differential-") as scratch:
        directory = Path(args.keep) if args.keep else Path(scratch)
        run = compare.evaluate(cases, directory, args.lib, overrides=overrides)
        run.timings = {"generate": generated, **run.timings}
        print(compare.table(run, f"differential: {len(cases)} messages, seed {seed}, lib {args.lib}"))
        print(f"total {time.monotonic() - started:.1f} s")
        saved = compare.save_escapes(run, Path(args.escapes))
        print(f"{saved} escaping messages saved under {args.escapes}/<class>/")
        for cls, variants in sorted(compare.escape_variants(run).items()):
            print(f"  {cls}: " + "; ".join(f"{variant} {n}" for variant, n in variants.most_common()))
        errors = [o for o in run.outcomes if o.error]
        for outcome in errors[:10]:
            print(f"  our error: {os.path.basename(outcome.path)} {outcome.variant}: {outcome.error}")
        if args.json:
            Path(args.json).write_text(json.dumps(summary(run, seed), indent=1))
    if not args.no_corpus:
        corpora(args.lib)
    return 0


def summary(run: compare.Run, seed: int) -> dict:
    classes: dict[str, dict] = {}
    for outcome in run.outcomes:
        entry = classes.setdefault(outcome.cls, {"generated": 0, "kept": 0, "escapes": 0, "variants": {}})
        entry["generated"] += 1
        entry["kept"] += outcome.kept
        entry["escapes"] += outcome.escaped
        if outcome.escaped:
            entry["variants"][outcome.variant] = entry["variants"].get(outcome.variant, 0) + 1
    return {"seed": seed, "timings": run.timings, "classes": classes}


def corpora(lib: str) -> None:
    """Legitimate and attack mail of the test corpus and the real-world corpus: payloads a parser extracts we miss."""
    sets = {"tests/corpus": sorted(str(p) for p in (ROOT / "tests" / "corpus").glob("*.eml"))}
    realworld = shared_dir() / "corpus" / "realworld"
    if realworld.is_dir():
        sets["realworld"] = sorted(str(p) for p in realworld.iterdir() if p.suffix in (".eml", ".txt", ".msg"))
    else:
        print(f"real-world corpus missing: {realworld}")
    for name, paths in sets.items():
        counts, lines = compare.corpus_gaps(paths, lib)
        print(f"{name}: {len(paths)} messages; payloads a reference parser extracts that we have no decoded part for:")
        for parser, count in counts.items():
            print(f"  {parser}: {count['payloads']} payloads in {count['messages']} messages")
        for line in lines[:40]:
            print(f"    {line}")
        if len(lines) > 40:
            print(f"    ... {len(lines) - 40} more")


if __name__ == "__main__":
    sys.exit(main())
