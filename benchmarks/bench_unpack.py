#!/usr/bin/env python3
"""Unpack benchmark: decode throughput and peak RSS on a large base64 attachment, beside `base64 -d`.

Usage: bench_unpack.py [--megabytes 50] [--attachments 5]
Prints one line per measurement and exits 1 when a target is missed (time ratio < 3x, RSS < 64 MB).
"""

from __future__ import annotations

import argparse
import base64
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = os.path.join(os.path.dirname(HERE), "lib")
TIME_RATIO_TARGET = 3.0
RSS_TARGET_MB = 64.0
AMBIGUOUS_RATIO_TARGET = 2.0

CHILD = r"""
import os, resource, sys, time
sys.path.insert(0, sys.argv[1])
from qmail_scanner import unpack as mime
from qmail_scanner.settings import Settings
settings = Settings(max_decoded_bytes=10**10)
started = time.perf_counter()
unpacked = mime.unpack(sys.argv[2], sys.argv[3], settings, lambda: 1000.0)
elapsed = time.perf_counter() - started
rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(elapsed, rss_kb, sum(p.size for p in unpacked.parts[1:] or unpacked.parts))
"""


def write_message(path: str, attachment_bytes: int, attachments: int = 1, ambiguity: bytes = b"") -> str:
    """A multipart message with `attachments` base64 parts of the given size; returns the encoded body file."""
    boundary = "=_bench_boundary"
    encoded_path = path + ".b64"
    block = os.urandom(57 * 1024)
    with open(path, "wb") as message, open(encoded_path, "wb") as encoded:
        message.write(
            b"From: bench@example.org\nTo: you@example.org\nSubject: bench\nMIME-Version: 1.0\n"
            b'Content-Type: multipart/mixed; boundary="' + boundary.encode() + b'"\n\n'
            b"--" + boundary.encode() + b"\nContent-Type: text/plain\n\nHello.\n"
        )
        for number in range(attachments):
            message.write(
                b"--"
                + boundary.encode()
                + b'\nContent-Type: application/octet-stream; name="data'
                + str(number).encode()
                + b'.bin"\nContent-Transfer-Encoding: base64\n'
                + (ambiguity if number == 0 else b"")
                + b"\n"
            )
            left = attachment_bytes
            while left > 0:
                piece = block[: min(left, len(block))]
                left -= len(piece)
                text = base64.encodebytes(piece)
                message.write(text)
                if number == 0:
                    encoded.write(text)
        message.write(b"--" + boundary.encode() + b"--\n")
    return encoded_path


def run_unpack(message_path: str) -> tuple[float, float, int]:
    """Unpack in a child; return (seconds, peak RSS in MB, decoded bytes)."""
    unpack_dir = tempfile.mkdtemp(prefix="bench-unpack-")
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, LIB, message_path, unpack_dir], capture_output=True, text=True, check=True
        )
    finally:
        shutil.rmtree(unpack_dir, ignore_errors=True)
    seconds, rss_kb, decoded = done.stdout.split()
    return float(seconds), int(rss_kb) / 1024, int(decoded)


def time_base64_d(encoded_path: str) -> float:
    """Seconds `base64 -d` takes on the same encoded data, output to a file like ours."""
    with open(encoded_path, "rb") as source, tempfile.TemporaryFile() as sink:
        started = time.perf_counter()
        subprocess.run(["base64", "-d"], stdin=source, stdout=sink, check=True)
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=50)
    parser.add_argument("--attachments", type=int, default=5, help="attachments in the per-message timing")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-")
    try:
        message = os.path.join(work, "big.eml")
        encoded = write_message(message, args.megabytes << 20)
        seconds, rss_mb, decoded = run_unpack(message)
        baseline = min(time_base64_d(encoded) for _ in range(3))
        ratio = seconds / baseline if baseline else float("inf")
        throughput = decoded / seconds / (1 << 20)
        print(f"unpack {args.megabytes} MB base64 attachment: {seconds:.3f} s, {throughput:.1f} MB/s decoded")
        print(f"base64 -d on the same data: {baseline:.3f} s; ratio {ratio:.2f}x (target < {TIME_RATIO_TARGET}x)")
        print(f"unpack peak RSS: {rss_mb:.1f} MB (target < {RSS_TARGET_MB:.0f} MB)")
        # The worst ambiguity for cost: the readings decode the big attachment two ways.
        ambiguous = os.path.join(work, "ambiguous.eml")
        write_message(ambiguous, args.megabytes << 20, ambiguity=b"Content-Transfer-Encoding: 7bit\n")
        clean_seconds = min(seconds, run_unpack(message)[0])
        ambiguous_seconds = min(run_unpack(ambiguous)[0] for _ in range(2))
        extra = ambiguous_seconds / clean_seconds
        print(
            f"the same with two transfer encodings on the attachment (read both ways): {ambiguous_seconds:.3f} s"
            f" = {extra:.2f}x the unambiguous message (target <= {AMBIGUOUS_RATIO_TARGET}x: one extra pass)"
        )
        small = os.path.join(work, "five.eml")
        write_message(small, 20 * 1024, args.attachments)
        per_message = min(run_unpack(small)[0] for _ in range(3))
        print(f"unpack message with {args.attachments} x 20 KB attachments: {per_message * 1000:.2f} ms")
        rusage = resource.getrusage(resource.RUSAGE_CHILDREN)
        del rusage
        return 0 if ratio < TIME_RATIO_TARGET and rss_mb < RSS_TARGET_MB and extra <= AMBIGUOUS_RATIO_TARGET else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
