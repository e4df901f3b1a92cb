"""Real-world mail from other projects' test data (../shared/corpus/realworld) through the unpacker and checks.

Legitimate mail, however oddly formatted, is blocked by nothing but the checks every reading
agrees on (a boundary over 250 characters, a double-barrelled name, ...); parser attacks and
spam come out of the unpacker with a defined result. `make corpus` runs the same files through
the installed program. The corpus is read from the shared directory ($QS_SHARED_DIR, else beside
the repository); without it the per-file tests do not exist and one test says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compat_fixtures import shared_dir
from mime_fixtures import all_findings, blocking_rules, make_settings, unpack_file
from qmail_scanner.outcomes import TemporaryFailure

REALWORLD = shared_dir() / "corpus" / "realworld"
# The checks that block at --fix-mime 1: none of them is about how a client might read the message.
NOT_AMBIGUITIES = {
    "long-boundary",
    "long-filename",
    "double-extension",
    "clsid-extension",
    "executable-not-application",
    "undeclared-executable",
    "nul-in-header",
    "cr-in-header",
    "header-comment",
}


def kinds() -> dict[str, str]:
    entries = json.loads((REALWORLD / "manifest.json").read_text())
    return {name: entry["kind"] for name, entry in sorted(entries.items()) if (REALWORLD / name).is_file()}


def test_the_corpus_is_there() -> None:
    """Without the corpus the tests below do not exist: say so (a failure under CI=true)."""
    if not (REALWORLD / "manifest.json").is_file():
        pytest.skip(f"{REALWORLD} is missing (set QS_SHARED_DIR to the shared directory)")
    assert kinds()


if (REALWORLD / "manifest.json").is_file():
    LEGIT = [name for name, kind in kinds().items() if kind == "legit"]
    OTHERS = [name for name, kind in kinds().items() if kind != "legit"]

    @pytest.mark.parametrize("name", LEGIT)
    def test_legitimate_mail_is_blocked_by_no_ambiguity(name: str, spool: Path, work: Path) -> None:
        settings = make_settings(spool)
        unpacked = unpack_file(REALWORLD / name, work, settings)
        assert blocking_rules(all_findings(unpacked, settings)) <= NOT_AMBIGUITIES

    @pytest.mark.parametrize("name", OTHERS)
    def test_attacks_and_spam_unpack_to_a_defined_result(name: str, spool: Path, work: Path) -> None:
        settings = make_settings(spool)
        try:
            unpacked = unpack_file(REALWORLD / name, work, settings)
        except TemporaryFailure:
            return  # a bound on time: the sender retries
        assert unpacked.parts and unpacked.message_size == (REALWORLD / name).stat().st_size
        all_findings(unpacked, settings)
