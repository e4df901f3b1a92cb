"""Copies of a message (or decoded body) with its line ends read as other readers read them.

Python's email and GMime end a line at a bare CR; MIME-tools and ripmime end CR CR LF once, at
the LF. The walker reads such a message again from a copy: one where every bare CR is an LF
(the same length, so entities keep their offsets), and one where runs of CR before an LF are
one CR.
"""

from __future__ import annotations

import os
import re

from .decoding import NEW_FILE_FLAGS

TYPE_CHECKING = False  # importing typing costs every message milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable

CHUNK_BYTES = 1 << 20
MAX_BARE_CRS = 10000  # beyond this many, every text part of the copy with CRs as line ends is read again


def bare_crs_as_line_ends(
    source: str, copy: str, origin: int, tick: Callable[[], None]
) -> tuple[list[int] | None, bool]:
    """Write the copy with every bare CR an LF; the CRs' offsets from `origin` (None past the limit), CR CR LF seen?"""
    bare_crs: list[int] | None = []
    cr_runs = False
    done = origin

    def rewrite(data: bytes) -> bytes:
        nonlocal bare_crs, cr_runs, done
        cr_runs = cr_runs or b"\r\r\n" in data
        if bare_crs is not None:
            bare_crs += [done + match.start() for match in re.finditer(rb"\r(?!\n)", data)]
            if len(bare_crs) > MAX_BARE_CRS:
                bare_crs = None
        done += len(data)
        return data.replace(b"\r\n", b"\0\n").replace(b"\r", b"\n").replace(b"\0\n", b"\r\n")

    _rewritten_copy(source, copy, rewrite, tick)
    return bare_crs, cr_runs


def cr_runs_as_one(source: str, copy: str, tick: Callable[[], None]) -> None:
    """Write the copy with every run of CRs before an LF made one CR (CR CR LF read as CR LF)."""
    _rewritten_copy(source, copy, lambda data: re.sub(rb"\r\r+\n", b"\r\n", data), tick)


def _rewritten_copy(source: str, copy: str, rewrite: Callable[[bytes], bytes], tick: Callable[[], None]) -> None:
    """Stream `source` through `rewrite` into a new file; CRs at a chunk's end wait for the next chunk."""
    out = os.open(copy, NEW_FILE_FLAGS, 0o600)
    try:
        with open(source, "rb") as original:
            pending = b""
            while True:
                tick()
                chunk = original.read(CHUNK_BYTES)
                data = pending + chunk
                kept = data.rstrip(b"\r") if chunk else data
                pending, data = data[len(kept) :], kept
                view = memoryview(rewrite(data))
                while view:
                    view = view[os.write(out, view) :]
                if not chunk:
                    break
    finally:
        os.close(out)
