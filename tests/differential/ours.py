"""Our side of the comparison: what the unpacker of a tree (--lib) hands the scanners, per message.

Run as a program so any tree can be measured, including one from before the unpacker became a
package (qmail_scanner.mime.unpack). Reads a JSON list of message paths on stdin and prints JSON
{path: {"hashes": [...], "scan_alone": [...], "blocked": reason or "", "error": "", "seconds": s}}: the
sha256 of every decoded part (and "n:" + that of its line-end-normalised text), those of parts
marked scan_alone, a blocking finding of the unpacker, and how long it took.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time

# Settings as the generated program has them by default, plus what configure finds on this machine
# (tnef, tnefparse, libarchive, 7-Zip, inflate64); --fix-mime 1. And --unzip: without it the same
# decoders keep small members that clamd reads in the raw message itself in memory (typed, not
# written), and a payload is compared by the hash of a work file.
BASE_SETTINGS: dict[str, object] = {"fix_mime": 1, "unzip": True, "block_password_protected": False}


def _settings(overrides: dict[str, object]) -> object:
    from qmail_scanner.recordtype import fields
    from qmail_scanner.settings import Settings

    values = dict(BASE_SETTINGS)
    values["tnef_binary"] = shutil.which("tnef") or ""
    try:
        import tnefparse  # noqa: F401

        values["have_tnefparse"] = True
    except ImportError:
        values["have_tnefparse"] = False
    values.update(archive_readers())
    values.update(overrides)
    known = {f.name for f in fields(Settings)}
    return Settings(**{k: v for k, v in values.items() if k in known})


def archive_readers() -> dict[str, object]:
    """libarchive, 7-Zip and inflate64 as configure's own probes find them (a tree before them has none)."""
    try:
        from qsconfigure.probes import probe_libarchive, probe_python_module, probe_sevenzip
    except ImportError:
        return {}
    libarchive = probe_libarchive(sys.executable)
    sevenzip = probe_sevenzip()
    inflate64 = probe_python_module(sys.executable, "inflate64", "m.Inflater()")
    return {
        "libarchive_path": libarchive.value if libarchive.found else "",
        "sevenzip_binary": sevenzip.value if sevenzip.found else "",
        "have_inflate64": inflate64.found,
    }


def _unpack_function():
    try:
        from qmail_scanner.unpack import unpack
    except ImportError:
        from qmail_scanner.mime import unpack  # the tree before the unpacker package
    return unpack


def _hashes(path: str) -> list[str]:
    """sha256 of the file, and "n:" + that of its text with line ends made LF and the last ones cut."""
    with open(path, "rb") as data:
        payload = data.read()
    normal = payload.replace(b"\r\n", b"\n").rstrip(b"\r\n")
    return [hashlib.sha256(payload).hexdigest(), "n:" + hashlib.sha256(normal).hexdigest()]


_STATE: dict[str, object] = {}


def _init(overrides: dict[str, object]) -> None:
    _STATE["settings"] = _settings(overrides)
    _STATE["unpack"] = _unpack_function()


def look(path: str) -> tuple[str, dict]:
    """One message through the unpacker."""
    unpack = _STATE["unpack"]
    workdir = tempfile.mkdtemp(prefix="qs-diff-ours-")
    entry: dict[str, object] = {"hashes": [], "scan_alone": [], "blocked": "", "error": "", "seconds": 0.0}
    started = time.monotonic()
    try:
        result = unpack(path, workdir, _STATE["settings"], lambda: 1000.0)  # type: ignore[operator]
        hashes, alone = [], []
        for part in result.parts:
            if part.decoded_path and os.path.isfile(part.decoded_path):
                digests = _hashes(part.decoded_path)
                hashes += digests
                if getattr(part, "scan_alone", False):
                    alone += digests
        entry["hashes"] = hashes
        entry["scan_alone"] = alone
        blocking = [f for f in result.findings if f.kind == "policy" and not getattr(f, "monitor_only", False)]
        if blocking:
            entry["blocked"] = f"{blocking[0].rule}: {blocking[0].reason}"
    except Exception as error:  # a crash or temporary failure is reported per message, not fatal to the run
        entry["error"] = f"{type(error).__name__}: {error}"[:300]
    finally:
        entry["seconds"] = time.monotonic() - started
        shutil.rmtree(workdir, ignore_errors=True)
    return path, entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lib", required=True, help="the lib directory of the tree to measure")
    parser.add_argument("--set", action="append", default=[], help="a setting override, NAME=JSON value")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    sys.path.insert(0, os.path.abspath(args.lib))
    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        overrides[name] = json.loads(value)
    paths = json.load(sys.stdin)
    sys.setrecursionlimit(10000)
    if args.jobs <= 1 or len(paths) < 20:
        _init(overrides)
        result = dict(look(path) for path in paths)
    else:
        with multiprocessing.get_context("fork").Pool(args.jobs, _init, (overrides,)) as pool:
            result = dict(pool.imap_unordered(look, paths, chunksize=16))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
