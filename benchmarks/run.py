#!/usr/bin/env python3
"""make bench: every benchmark of the project, each reported against a baseline of the same run.

The machines are shared and noisy, so absolute times mean little: each figure is printed
next to its baseline and as a ratio. Per-message start-up is the main cost of a QMAILQUEUE
program, so the first figure is the installed program on a clean 4 KB message against
`python3 -I -S -c pass` on the same interpreter.
"""

from __future__ import annotations

import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import build_standin, envelope, install  # noqa: E402

ROUNDS = 60
CLEAN_4K = (
    b"Received: from unknown (HELO client.example.org) (192.0.2.10)\n  by mx.example.com with SMTP\n"
    b"From: Alice <alice@example.org>\nTo: Bob <bob@example.com>\nSubject: benchmark\n"
    b"Message-ID: <bench@example.org>\nDate: Wed, 25 Nov 2026 08:00:00 +0000\n\n"
    + b"".join(b"This is line %03d of a plain text message used for the start-up benchmark.\n" % i for i in range(52))
)


def five_attachments() -> bytes:
    """A typical office message: text body and five attachments of common kinds."""
    import base64
    import io
    import zipfile

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("minutes.txt", "minutes of the meeting\n" * 400)
    files = [
        ("report.pdf", "application/pdf", b"%PDF-1.4\n" + b"0 0 obj stream\n" * 1500),
        ("logo.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 60),
        ("minutes.zip", "application/zip", archive.getvalue()),
        ("figures.csv", "text/csv", b"quarter,revenue\n" + b"2026Q1,1000\n" * 1500),
        ("notes.txt", "text/plain", b"remember the milk\n" * 1000),
    ]
    parts = [b"--bench\nContent-Type: text/plain; charset=utf-8\n\nFiles attached.\n"]
    for name, kind, data in files:
        parts.append(
            f'--bench\nContent-Type: {kind}; name="{name}"\nContent-Disposition: attachment; filename="{name}"\n'
            f"Content-Transfer-Encoding: base64\n\n".encode()
            + base64.encodebytes(data)
        )
    head = CLEAN_4K.split(b"\n\n", 1)[0] + b'\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="bench"\n\n'
    return head + b"".join(parts) + b"--bench--\n"


def median_seconds(action, rounds: int = ROUNDS) -> float:
    """Median wall time of action() over rounds, after two warm-up runs."""
    for _ in range(2):
        action()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def interpreter_of(program: Path) -> str:
    first = program.read_text().splitlines()[0]
    return first[2:].split()[0]


def bench_startup(workdir: Path) -> dict:
    standin = build_standin(workdir)
    installation = install(workdir / "qs", standin)
    python = interpreter_of(installation.program)
    raw = envelope("alice@example.org", "bob@example.com")

    def run_program() -> None:
        result = installation.run(CLEAN_4K, raw)
        if result.exit_code != 0:
            raise SystemExit(f"benchmark message not queued: exit {result.exit_code} {result.stderr}")

    def run_floor() -> None:
        # Launched exactly like the program (same pipes, same feeding), so only the work differs.
        installation.run(CLEAN_4K, raw, command=[python, "-I", "-S", "-c", "pass"])

    five = five_attachments()

    def run_five() -> None:
        result = installation.run(five, raw)
        if result.exit_code != 0 or not result.queued:
            raise SystemExit(f"5-attachment message not queued: exit {result.exit_code} {result.stderr}")

    floor = median_seconds(run_floor)
    program = median_seconds(run_program)
    with_attachments = median_seconds(run_five)
    process = median_seconds(lambda: subprocess.run(["/bin/true"], check=True))
    print(f"{len(CLEAN_4K)} byte clean message, internal checks only, stand-in as next hop ({ROUNDS} rounds):")
    print(f"  python -I -S -c pass     {floor * 1000:7.2f} ms  (baseline)")
    print(
        f"  /bin/true (one process)  {process * 1000:7.2f} ms  = {process / floor:.2f}x (the next hop costs about this)"
    )
    print(f"  qmail-scanner-queue.py   {program * 1000:7.2f} ms  = {program / floor:.2f}x baseline (target <= 2.5x)")
    print(f"  with 5 attachments       {with_attachments * 1000:7.2f} ms  = {with_attachments / floor:.2f}x baseline"
          f" ({len(five) // 1024} KB: pdf, png, zip, csv, txt)")
    return {"floor": floor, "program": program}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="qs-bench-") as directory:
        bench_startup(Path(directory))
        for name in ("bench_unpack", "bench_scanners"):
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            print()
            module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
