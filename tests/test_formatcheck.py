"""Malformed-MIME checks: names that must not trip them, switches, and generated/mutated MIME."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies

from mime_fixtures import CORPUS, all_findings, expected_corpus, install_rules, make_settings, unpack_bytes
from qmail_scanner import formatcheck
from qmail_scanner.outcomes import Outcome


@pytest.mark.parametrize(
    "name", ["setup-1.2.exe", "report.2024.pdf", "archive.tar.gz", "Installer.x64.exe", "notes.txt", "a.b"]
)
def test_legal_names_are_not_double_barrelled(name: str) -> None:
    assert not formatcheck.is_double_barrelled(name)


@pytest.mark.parametrize("name", ["photo.gif.exe", "photo.jpg      .scr", "doc.pdf..exe", "a.txt.vbs . ", "x.DOC.PIF"])
def test_double_barrelled_names(name: str) -> None:
    assert formatcheck.is_double_barrelled(name)


def test_clsid_and_length() -> None:
    assert formatcheck.has_clsid_extension("a.{3050F4D8-98B5-11CF-BB82-00AA00BDCE0B}")
    assert not formatcheck.has_clsid_extension("meeting {3050F4D8-98B5-11CF-BB82-00AA00BDCE0B} notes.txt")
    assert formatcheck.is_too_long("a" * 257) and not formatcheck.is_too_long("a" * 256)


def test_eol_check_can_be_switched_off(spool: Path, work: Path) -> None:
    data = (CORPUS / "cr-in-header.eml").read_bytes()
    assert "cr-in-header" in {
        f.rule for f in formatcheck.check(unpack_bytes(data, work, make_settings(spool)), make_settings(spool))
    }
    quiet = make_settings(spool, ignore_eol_check=True)
    assert not formatcheck.check(unpack_bytes(data, work, quiet), quiet)


def test_password_protected_archive_only_blocked_when_configured(spool: Path, work: Path) -> None:
    data = (CORPUS / "password-zip.eml").read_bytes()
    relaxed = make_settings(spool, block_password_protected=False)
    unpacked = unpack_bytes(data, work, relaxed)
    assert not formatcheck.check(unpacked, relaxed)
    assert unpacked.crypto == ["ZIP(encrypted)"]  # still recorded for --log-crypto


def test_fix_mime_off_skips_the_format_checks(spool: Path, work: Path) -> None:
    data = (CORPUS / "header-comment.eml").read_bytes()
    off = make_settings(spool, fix_mime=False)
    assert not all_findings(unpack_bytes(data, work, off), off)


def test_every_rule_has_its_own_reason() -> None:
    assert len(set(formatcheck.RULES.values())) == len(formatcheck.RULES)


# ---------------------------------------------------------------- properties

SEEDS = [(CORPUS / name).read_bytes() for name, _, _ in expected_corpus()]
TOKENS = [
    b"\n",
    b"\r\n",
    b"--",
    b"--B",
    b"--B--",
    b"\x00",
    b"\r",
    b": ",
    b";",
    b'"',
    b"=?utf-8?b?",
    b"?=",
    b"Content-Type: multipart/mixed; boundary=B\n\n",
    b"Content-Transfer-Encoding: base64\n",
    b"Content-Type: message/rfc822\n\n",
    b"filename*0*=utf-8''%FF",
    b"begin 644 x.exe\n",
    b"M" * 61,
    b"PK\x03\x04",
    b"\x78\x9f\x3e\x22",
    b"=\n",
    b"=4",
    b"\t",
    b" ",
]


@strategies.composite
def mutated_mime(draw: strategies.DrawFn) -> bytes:
    data = bytearray(draw(strategies.sampled_from(SEEDS)))
    for _ in range(draw(strategies.integers(0, 8))):
        where = draw(strategies.integers(0, len(data)))
        action = draw(strategies.integers(0, 2))
        if action == 0:
            data[where:where] = draw(strategies.sampled_from(TOKENS))
        elif action == 1:
            del data[where : where + draw(strategies.integers(1, 40))]
        else:
            data[where:where] = draw(strategies.binary(max_size=30))
    return bytes(data)


@strategies.composite
def generated_mime(draw: strategies.DrawFn) -> bytes:
    def entity(depth: int) -> bytes:
        kind = draw(strategies.sampled_from(["text", "b64", "multi", "message"] if depth < 4 else ["text", "b64"]))
        if kind == "text":
            return b"Content-Type: text/plain\n\n" + draw(strategies.binary(max_size=60)) + b"\n"
        if kind == "b64":
            name = draw(strategies.text(max_size=12)).encode("utf-8", "replace")
            return (
                b'Content-Type: application/octet-stream; name="' + name + b'"\n'
                b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(draw(strategies.binary(max_size=90)))
            )
        if kind == "message":
            return b"Content-Type: message/rfc822\n\nSubject: inner\n" + entity(depth + 1)
        boundary = b"b%d" % depth
        children = [entity(depth + 1) for _ in range(draw(strategies.integers(0, 3)))]
        closed = draw(strategies.booleans())
        return (
            b"Content-Type: multipart/mixed; boundary="
            + boundary
            + b"\n\n"
            + b"".join(b"--" + boundary + b"\n" + child for child in children)
            + (b"--" + boundary + b"--\n" if closed else b"")
        )

    return b"From: a@example.org\nMIME-Version: 1.0\n" + entity(0)


def _run_all_checks(data: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.mktemp("prop")
    spool = base / "spool"
    spool.mkdir()
    install_rules(spool)
    work = base / "work"
    work.mkdir()
    configured = make_settings(spool, max_unpack_seconds=20.0)
    try:
        unpacked = unpack_bytes(data, work, configured)
        findings = all_findings(unpacked, configured)
    except Outcome:
        return  # a defined outcome (temporary failure) is allowed
    assert all(f.kind == "policy" and f.reason for f in findings)
    assert unpacked.parts and unpacked.parts[0].index == 0


@settings(max_examples=150, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutated_mime())
def test_mutated_mime_ends_in_a_defined_outcome(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    _run_all_checks(data, tmp_path_factory)


@settings(max_examples=150, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(generated_mime())
def test_generated_mime_ends_in_a_defined_outcome(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    _run_all_checks(data, tmp_path_factory)


@settings(max_examples=100, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(strategies.binary(max_size=2000))
def test_arbitrary_bytes_end_in_a_defined_outcome(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    _run_all_checks(data, tmp_path_factory)


def test_prefix_boundary_reason_names_both_boundaries_apart(spool: Path, work: Path) -> None:
    outer, middle, inner = "A" * 50, "A" * 50 + "-mid", "A" * 50 + "-mid-in"
    data = (
        f'From: a@example.org\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="{outer}"\n\n'
        f'--{outer}\nContent-Type: multipart/alternative; boundary="{middle}"\n\n'
        f'--{middle}\nContent-Type: multipart/related; boundary="{inner}"\n\n'
        f"--{inner}\nContent-Type: text/plain\n\nhi\n--{inner}--\n--{middle}--\n--{outer}--\n"
    ).encode()
    strict = make_settings(spool, fix_mime=2)
    (finding,) = [f for f in formatcheck.check(unpack_bytes(data, work, strict), strict) if f.rule == "prefix-boundary"]
    assert finding.reason.endswith(f'("{outer}" is a prefix of "{outer}" + "-mid")')
