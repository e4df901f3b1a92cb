"""The reference mail parsers, each run in batch over many messages: path -> sha256 of every payload it extracts.

Python email, Perl MIME-tools and node mailparser read a whole batch in one process; ripmime and
GMime (`mu extract`) are one program run per message, run in parallel. A parser that is not
installed is reported by `missing()` and left out (tests fail on that under CI=true).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
NODE_MODULES = HERE / "node_modules"
BATCH = 400  # messages per batch process: bounded memory, parallel batches
TIMEOUT = 600

Extracted = dict[str, list[str]]  # message path -> sha256 hex of each extracted payload


def _workers() -> int:
    return max(1, os.cpu_count() or 1)


def _batched(paths: list[str], size: int = BATCH) -> list[list[str]]:
    return [paths[i : i + size] for i in range(0, len(paths), size)]


def _run_batch(argv: list[str], paths: list[str], env: dict | None = None) -> Extracted:
    """One process over a batch; when it dies (a parser's stack overflow), each half again, down to one message."""
    try:
        done = subprocess.run(
            argv, input=json.dumps(paths).encode(), capture_output=True, timeout=TIMEOUT, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        done = None
    if done is not None and done.returncode == 0:
        return json.loads(done.stdout)
    if len(paths) == 1:
        return {paths[0]: []}  # the parser cannot read this message: it extracts nothing from it
    middle = len(paths) // 2
    return {**_run_batch(argv, paths[:middle], env), **_run_batch(argv, paths[middle:], env)}


def _parallel_batches(argv: list[str], paths: list[str], env: dict | None = None) -> Extracted:
    result: Extracted = {}
    with ThreadPoolExecutor(_workers()) as pool:
        for part in pool.map(lambda batch: _run_batch(argv, batch, env), _batched(paths)):
            result.update(part)
    return result


def payload_hashes(payload: bytes) -> list[str]:
    """sha256 of the payload, and "n:" + that of its text with line ends made LF and the last ones cut."""
    normal = payload.replace(b"\r\n", b"\n").rstrip(b"\r\n")
    return [hashlib.sha256(payload).hexdigest(), "n:" + hashlib.sha256(normal).hexdigest()]


def _hash_tree(directory: str, skip: tuple[str, ...] = ()) -> list[str]:
    hashes = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = [name for name in dirs if name not in skip]
        for name in sorted(files):
            with open(os.path.join(root, name), "rb") as extracted:
                hashes += payload_hashes(extracted.read())
    return hashes


def _per_message(command: object, paths: list[str]) -> Extracted:
    """Run command(path, outdir) -> argv for each message in a fresh directory; hash every file written."""

    def one(path: str) -> tuple[str, list[str]]:
        with tempfile.TemporaryDirectory(prefix="qs-diff-") as outdir:
            try:
                subprocess.run(
                    command(path, outdir),  # type: ignore[operator]
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=60,
                    check=False,
                    env={**os.environ, "HOME": outdir},
                )
            except subprocess.TimeoutExpired:
                return path, []
            return path, _hash_tree(outdir, skip=("mu",))

    with ThreadPoolExecutor(_workers() * 2) as pool:
        return dict(pool.map(one, paths))


def python_email(paths: list[str]) -> Extracted:
    return _parallel_batches([sys.executable, str(HERE / "ref_python.py")], paths)


def mime_tools(paths: list[str]) -> Extracted:
    return _parallel_batches(["perl", str(HERE / "ref_mimetools.pl")], paths)


def mailparser(paths: list[str]) -> Extracted:
    env = {**os.environ, "NODE_PATH": str(NODE_MODULES)}
    return _parallel_batches(["node", str(HERE / "ref_mailparser.js")], paths, env)


def ripmime(paths: list[str]) -> Extracted:
    return _per_message(lambda path, outdir: ["ripmime", "-i", path, "-d", outdir, "-q"], paths)


def gmime(paths: list[str]) -> Extracted:
    def argv(path: str, outdir: str) -> list[str]:
        target = os.path.join(outdir, "parts")
        os.mkdir(target)
        return ["mu", "extract", f"--muhome={outdir}/mu", "--save-all", "--overwrite", f"--target-dir={target}", path]

    result = _per_message(argv, paths)
    return result


def _have_perl_mime_tools() -> bool:
    return shutil.which("perl") is not None and (
        subprocess.run(["perl", "-MMIME::Parser", "-e1"], capture_output=True, check=False).returncode == 0
    )


PARSERS = {
    "python": (python_email, lambda: True, "built in"),
    "mimetools": (mime_tools, _have_perl_mime_tools, "apt-get install libmime-tools-perl"),
    "mailparser": (
        mailparser,
        lambda: shutil.which("node") is not None and (NODE_MODULES / "mailparser").is_dir(),
        "apt-get install nodejs npm; cd tests/differential && npm ci",
    ),
    "ripmime": (ripmime, lambda: shutil.which("ripmime") is not None, "apt-get install ripmime"),
    "gmime": (gmime, lambda: shutil.which("mu") is not None, "apt-get install maildir-utils"),
}


def available() -> list[str]:
    return [name for name, (_run, present, _hint) in PARSERS.items() if present()]


def missing() -> list[str]:
    """One line per reference parser that is not installed, saying how to install it."""
    return [f"{name}: not installed ({hint})" for name, (_run, present, hint) in PARSERS.items() if not present()]


def extract_all(paths: list[str], names: list[str] | None = None) -> dict[str, Extracted]:
    """parser name -> its extraction of every message."""
    return {name: PARSERS[name][0](paths) for name in (names or available())}
