"""The shared compatibility material (real policy files, parsers and logs of the original) and helpers."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from harness import ROOT


def shared_dir() -> Path:
    """<repo>/../shared, or $QS_SHARED_DIR."""
    return Path(os.environ.get("QS_SHARED_DIR") or ROOT.parent / "shared")


def compat_dir(name: str) -> Path:
    """shared/compat/<name>; the test is skipped (a failure under CI=true) when it is missing."""
    directory = shared_dir() / "compat" / name
    if not directory.is_dir():
        pytest.skip(f"{directory} is missing (set QS_SHARED_DIR to the shared directory)")
    return directory


def compat_files(name: str) -> list[Path]:
    """The files of shared/compat/<name> for parametrising (empty when the directory is missing)."""
    directory = shared_dir() / "compat" / name
    return sorted(path for path in directory.iterdir() if path.is_file()) if directory.is_dir() else []


def is_legacy_policy(text: str) -> bool:
    """A 1.2x quarantine-attachments.txt: some rule gives a size in bytes as its type."""
    for line in text.splitlines():
        fields = [field for field in line.split("\t") if field]
        if not line.lstrip().startswith("#") and len(fields) >= 3 and fields[1].strip().isdecimal():
            return True
    return False


def example_of(pattern: str) -> str:
    """A short text the regular expression matches whole (for generating a message per rule)."""
    from re import _parser  # the stdlib's own regex parser: every construct a rule may use

    def build(items) -> str:
        out = ""
        for op, argument in items:
            name = str(op)
            if name == "LITERAL":
                out += chr(argument)
            elif name == "NOT_LITERAL":
                out += "x" if chr(argument) != "x" else "y"
            elif name == "ANY":
                out += "x"
            elif name == "IN":
                out += _in_class(argument)
            elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                low, _high, sub = argument
                out += build(sub) * max(low, 1)
            elif name == "SUBPATTERN":
                out += build(argument[-1])
            elif name == "BRANCH":
                out += build(argument[1][0])
            elif name == "AT":
                continue
            else:
                raise ValueError(f"no example generator for {name} in {pattern!r}")
        return out

    text = build(_parser.parse(pattern))
    assert re.fullmatch(pattern, text, re.I), (pattern, text)
    return text


def _in_class(items) -> str:
    for op, argument in items:
        name = str(op)
        if name == "LITERAL":
            return chr(argument)
        if name == "RANGE":
            return chr(argument[0])
        if name == "CATEGORY":
            return {"CATEGORY_DIGIT": "1", "CATEGORY_SPACE": " "}.get(str(argument), "x")
    return "x"
