"""Containers, boundaries, line ends and transfer encodings that mail readers open and the unpacker must open too.

Each evasion hides a small Windows program (blocked by its real type, under a harmless name)
where Python's email, MIME-tools, ripmime or GMime find it: the unpacker must hand the same
decoded bytes (same hash) to the checks, marked for clamd when clamd cannot find them in the
raw message, and the message must be blocked. Legitimate shapes of the same kinds stay clean.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import quopri
from pathlib import Path

import pytest

from daemons import EICAR, clamd_server_fixture  # noqa: F401 - fixture
from harness import Installation
from mime_fixtures import all_findings, blocking_rules, make_settings, unpack_bytes
from qmail_scanner.scanners import run_virus_scanners
from qmail_scanner.settings import ScannerConfig
from scanner_fixtures import scan_settings, spooled_message

FAKE_EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 44 + b"PE\x00\x00" + b"y" * 200
HEAD = b"From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: containers\nMIME-Version: 1.0\n"
TEXT = b"Content-Type: text/plain; charset=us-ascii\n\nHello, see attached.\n"


def b64(data: bytes) -> bytes:
    return base64.encodebytes(data)


def uu(data: bytes, name: bytes = b"forwarded.eml") -> bytes:
    lines = b"".join(binascii.b2a_uu(data[i : i + 45]) for i in range(0, len(data), 45))
    return b"begin 644 " + name + b"\n" + lines + b"`\nend\n"


def program_part(payload: bytes = FAKE_EXE, name: bytes = b"report.dat") -> bytes:
    """An attachment under a harmless name: only its content says it is a Windows program."""
    return (
        b'Content-Type: application/octet-stream; name="' + name + b'"\nContent-Transfer-Encoding: base64\n\n'
    ) + b64(payload)


def inner_message(payload: bytes = FAKE_EXE) -> bytes:
    return (
        b"From: carol@example.org\nSubject: inner\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=in\n\n"
        b"--in\n" + TEXT + b"--in\n" + program_part(payload) + b"--in--\n"
    )


def mixed(part: bytes, boundary: bytes = b"out", params: bytes = b"") -> bytes:
    """A multipart/mixed message: a text part, then `part`; `params` replaces `boundary=...` when given."""
    return (
        HEAD + b"Content-Type: multipart/mixed; " + (params or b"boundary=" + boundary) + b"\n\n"
        b"--" + boundary + b"\n" + TEXT + b"--" + boundary + b"\n" + part + b"--" + boundary + b"--\n"
    )


def attached(content_type: bytes, body: bytes, encoding: bytes = b"") -> bytes:
    head = b"Content-Type: " + content_type + b"\n"
    if encoding:
        head += b"Content-Transfer-Encoding: " + encoding + b"\n"
    return mixed(head + b"\n" + body)


def nested_base64(levels: int, payload: bytes = FAKE_EXE) -> bytes:
    message = inner_message(payload)
    for _ in range(levels):
        message = (
            b"Subject: level\nMIME-Version: 1.0\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n"
            + b64(message)
        )
    return HEAD + message.split(b"\n", 2)[2]


MP_BODY = b"--in\n" + TEXT + b"--in\n" + program_part() + b"--in--\n"
CONTAINERS = {
    "rfc822 part, base64": attached(b"message/rfc822", b64(inner_message()), b"base64"),
    "rfc822 part, quoted-printable": attached(
        b"message/rfc822", quopri.encodestring(inner_message()), b"quoted-printable"
    ),
    "rfc822 part, x-uuencode": attached(b"message/rfc822", uu(inner_message()), b"x-uuencode"),
    "rfc822 part, base64 with a comment": attached(b"message/rfc822", b64(inner_message()), b"base64 (forwarded)"),
    "rfc822 part, unknown encoding": attached(b"message/rfc822", inner_message(), b"x-forwarded"),
    "rfc822 whole message, base64": (
        HEAD + b"Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n" + b64(inner_message())
    ),
    "rfc822 in rfc822, both base64": nested_base64(2),
    "message/global": attached(b"message/global", inner_message()),
    "message/global, base64": attached(b"message/global", b64(inner_message()), b"base64"),
    "message/partial 1 of 1": attached(b'message/partial; id="a@x"; number=1; total=1', inner_message()),
    "message/partial first fragment": attached(
        b'message/partial; id="a@x"; number=1; total=2', inner_message().split(b"--in--")[0]
    ),
    "message/external-body with content": attached(
        b'message/external-body; access-type="x-mail-server"', program_part()
    ),
    "unknown message/* subtype": attached(b"message/x-private", inner_message()),
    "unknown message/* subtype, base64": attached(b"message/x-private", b64(inner_message()), b"base64"),
    "digest part without Content-Type": (
        HEAD + b"Content-Type: multipart/digest; boundary=d\n\n--d\n\n" + inner_message() + b"--d--\n"
    ),
    "digest part without Content-Type, base64": (
        HEAD
        + b"Content-Type: multipart/digest; boundary=d\n\n--d\nContent-Transfer-Encoding: base64\n\n"
        + b64(inner_message())
        + b"--d--\n"
    ),
    "multipart under base64": (
        HEAD + b"Content-Type: multipart/mixed; boundary=in\nContent-Transfer-Encoding: base64\n\n" + b64(MP_BODY)
    ),
    "multipart part under base64": attached(b"multipart/mixed; boundary=in", b64(MP_BODY), b"base64"),
}

BOUNDARIES = {
    "comment before the parameter": (b"(note) boundary=zz", b"zz"),
    "comment before the value": (b"boundary=(note)zz", b"zz"),
    "comment after the value": (b"boundary=zz (note)", b"zz"),
    "stray closing quote": (b'boundary=zz"', b"zz"),
    "unclosed quote kept": (b'boundary="zz', b'"zz'),
    "encoded word": (b"boundary==?us-ascii?q?zz?=", b"zz"),
    "blank at the end inside quotes": (b'boundary="zz "', b"zz "),
}

PLAIN = mixed(program_part())
LINE_ENDS = {
    "CR-only message": PLAIN.replace(b"\n", b"\r"),
    "CR-only body": PLAIN.split(b"\n\n", 1)[0].replace(b"\n", b"\r\n")
    + b"\r\n\r\n"
    + PLAIN.split(b"\n\n", 1)[1].replace(b"\n", b"\r"),
    "delimiter after a bare CR": PLAIN.replace(
        b"\n--out\nContent-Type: application", b"\r--out\nContent-Type: application"
    ),
}

SPELLINGS = [
    b"base64 (comment)",
    b'"base64"',
    b"BASE64;",
    b"base64; x=y",
    b"=?us-ascii?q?base64?=",
    b"(comment) base64",
]
UU_ALIASES = [b"uue", b"x-uu", b"uuencode", b"x-uue"]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def program_parts(message: bytes, work: Path, spool: Path) -> tuple[list, set[str]]:
    """The parts whose decoded bytes are the program, and the rules that block the message."""
    settings = make_settings(spool)
    unpacked = unpack_bytes(message, work, settings)
    found = [
        p for p in unpacked.parts if p.decoded_path and digest(Path(p.decoded_path).read_bytes()) == digest(FAKE_EXE)
    ]
    return found, blocking_rules(all_findings(unpacked, settings))


@pytest.mark.parametrize("case", list(CONTAINERS))
def test_container_readers_open_is_opened(case: str, work: Path, spool: Path) -> None:
    found, rules = program_parts(CONTAINERS[case], work, spool)
    assert found, case
    assert all(p.magic_type == "application/x-dosexec" for p in found)
    assert any(p.scan_alone for p in found), "clamd cannot find it in the raw message: it must be handed over"
    assert "application/x-dosexec" in rules


@pytest.mark.parametrize("case", list(BOUNDARIES))
def test_boundary_readers_take_is_read(case: str, work: Path, spool: Path) -> None:
    params, boundary = BOUNDARIES[case]
    found, rules = program_parts(mixed(program_part(), boundary, params), work, spool)
    assert found and all(p.scan_alone for p in found), case
    assert "application/x-dosexec" in rules


def test_boundary_spellings_need_a_reading_each(work: Path, spool: Path) -> None:
    """Three ways to read one boundary parameter (`(note)"zz`, `zz`, `"zz`): the program is under the third only."""
    found, rules = program_parts(mixed(program_part(), b'"zz', b'boundary=(note)"zz'), work, spool)
    assert found and "application/x-dosexec" in rules


@pytest.mark.parametrize("case", list(LINE_ENDS))
def test_bare_cr_is_a_line_end_where_readers_end_lines(case: str, work: Path, spool: Path) -> None:
    found, rules = program_parts(LINE_ENDS[case], work, spool)
    assert found and all(p.scan_alone for p in found), case
    assert "application/x-dosexec" in rules


@pytest.mark.parametrize("spelling", SPELLINGS, ids=lambda s: s.decode())
def test_transfer_encoding_spelling_readers_decode_is_decoded(spelling: bytes, work: Path, spool: Path) -> None:
    part = b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: " + spelling + b"\n\n" + b64(FAKE_EXE)
    found, rules = program_parts(mixed(part), work, spool)
    assert found and all(p.scan_alone for p in found), spelling
    assert "application/x-dosexec" in rules


@pytest.mark.parametrize("alias", UU_ALIASES, ids=lambda s: s.decode())
def test_uuencode_aliases_are_decoded(alias: bytes, work: Path, spool: Path) -> None:
    part = b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: " + alias + b"\n\n" + uu(FAKE_EXE)
    found, rules = program_parts(mixed(part), work, spool)
    assert found, alias
    assert "application/x-dosexec" in rules


def test_plain_mail_is_not_handed_to_clamd_part_by_part(work: Path, spool: Path) -> None:
    quoted = b"Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\nGr=C3=BC=C3=9Fe\n"
    forwarded = b"Content-Type: message/rfc822\n\n" + inner_message(b"%PDF-1.4 harmless\n")
    message = mixed(quoted + b"--out\n" + program_part(b"%PDF-1.4\n") + b"--out\n" + forwarded)
    unpacked = unpack_bytes(message.replace(b"\n", b"\r\n"), work, make_settings(spool))
    assert len(unpacked.parts) == 8
    assert not any(p.scan_alone for p in unpacked.parts)


# Each with whether clamd is handed parts of it decoded (only what is inside a decoded container).
LEGITIMATE = {
    "forwarded message, 7bit": (attached(b"message/rfc822", inner_message(b"%PDF-1.4\n"), b"7bit"), False),
    "forwarded message, base64": (attached(b"message/rfc822", b64(inner_message(b"%PDF-1.4\n")), b"base64"), True),
    "digest": (
        HEAD + b"Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\nfirst\n"
        b"--d\n\nSubject: two\n\nsecond\n--d--\n",
        False,
    ),
    "bounce": (
        HEAD
        + b'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\n\n--r\n'
        + TEXT
        + b"--r\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
        b"Final-Recipient: rfc822; bob@example.net\nAction: failed\nStatus: 5.1.1\n"
        b"--r\nContent-Type: message/rfc822-headers\n\nSubject: hello\nFrom: alice@example.org\n--r--\n",
        False,
    ),
    "message/partial fragment": (
        attached(b'message/partial; id="p@x"; number=1; total=2', b"Subject: big\n\nthe first half of a long text\n"),
        False,
    ),
}


@pytest.mark.parametrize("case", list(LEGITIMATE))
def test_legitimate_containers_are_clean(case: str, work: Path, spool: Path) -> None:
    message, handed_over = LEGITIMATE[case]
    settings = make_settings(spool)
    unpacked = unpack_bytes(message, work, settings)
    assert blocking_rules(all_findings(unpacked, settings)) == set(), case
    assert any(p.scan_alone for p in unpacked.parts) == handed_over


# ---------------------------------------------------------------- depth


@pytest.mark.parametrize("kind", ["7bit", "base64"])
def test_nesting_past_the_limit_is_quarantined_naming_it(kind: str, work: Path, spool: Path) -> None:
    settings = make_settings(spool)
    if kind == "base64":
        message = nested_base64(settings.max_depth + 2)
    else:
        message = inner_message()
        for _ in range(settings.max_depth + 2):
            message = b"Subject: level\nContent-Type: message/rfc822\n\n" + message
        message = HEAD + message
    unpacked = unpack_bytes(message, work, settings)
    findings = [f for f in all_findings(unpacked, settings) if f.rule == "mime-depth"]
    assert findings and f"deeper than {settings.max_depth} levels" in findings[0].reason


def test_nesting_past_the_limit_is_quarantined_end_to_end(make_installation) -> None:
    installation: Installation = make_installation()
    quarantine = installation.spool / "quarantine" / "policy" / "new"
    before = set(quarantine.iterdir()) if quarantine.exists() else set()
    result = installation.run(nested_base64(25, b"just text, nothing to see\n"))
    assert result.exit_code == 0, result.stderr
    assert result.queued == []
    stored = sorted(set(quarantine.iterdir()) - before)
    assert len(stored) == 1 and b"nested deeper than 20 levels" in stored[0].read_bytes().split(b"\n\n", 1)[0]


def test_decoded_container_is_quarantined_end_to_end(make_installation) -> None:
    installation: Installation = make_installation()
    result = installation.run(CONTAINERS["rfc822 whole message, base64"])
    assert result.exit_code == 0, result.stderr
    assert result.queued == []


# ---------------------------------------------------------------- clamd


# Shapes clamd does not see through in the raw message (it reads the others itself).
EICAR_CASES = {
    "rfc822 whole message, base64": lambda: (
        HEAD + b"Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n" + b64(_eicar_message())
    ),
    "multipart under base64": lambda: (
        HEAD
        + b"Content-Type: multipart/mixed; boundary=in\nContent-Transfer-Encoding: base64\n\n"
        + b64(b"--in\n" + TEXT + b"--in\n" + program_part(EICAR, b"eicar.com") + b"--in--\n")
    ),
    "CR-only message": lambda: mixed(program_part(EICAR, b"eicar.com")).replace(b"\n", b"\r"),
}


@pytest.mark.parametrize("case", list(EICAR_CASES))
def test_eicar_in_what_readers_open_reaches_clamd(case: str, tmp_path: Path, clamd_server) -> None:
    raw = EICAR_CASES[case]()
    work = tmp_path / "work"
    work.mkdir()
    config = ScannerConfig("clamd", "virus", (clamd_server.socket_path,), connect_timeout=2.0, scan_timeout=30.0)
    settings = scan_settings(config, spooldir=str(tmp_path / "spool"))
    message = spooled_message(tmp_path, raw, settings)
    message.unpacked = unpack_bytes(raw, work, settings)
    try:
        (result,) = run_virus_scanners(message)
    finally:
        os.close(message.message_fd)
    assert not result.failed, result.failure_reason
    # Named after the part: found in the decoded bytes the unpacker handed over.
    assert any(f.rule.startswith("Eicar-Test-Signature") and f.part_name == "eicar.com" for f in result.findings)


def _eicar_message() -> bytes:
    return (
        b"Subject: inner\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=in\n\n--in\n"
        + TEXT
        + b"--in\n"
        + program_part(EICAR, b"eicar.com")
        + b"--in--\n"
    )


@pytest.mark.parametrize(
    "part",
    [
        b'Content-Type: message/partial; id="p@x"; number=2; total=2\n\nnlzNO8mVGVkbzXm8W55Zaellt0KqRv0ysF6H9+ol\n',
        b"Content-Type: message/delivery-status\n\nThis message was undeliverable:\n\nAction: failed\n",
    ],
    ids=["later fragment", "free text in a delivery status"],
)
def test_bodies_that_are_no_message_are_not_read_as_one(part: bytes, work: Path, spool: Path) -> None:
    settings = make_settings(spool, fix_mime=2)
    unpacked = unpack_bytes(mixed(part), work, settings)
    assert blocking_rules(all_findings(unpacked, settings)) == set()


def test_boundary_without_a_semicolon_before_it_is_read(work: Path, spool: Path) -> None:
    message = mixed(program_part(), b"zz", b"").replace(
        b"multipart/mixed; boundary=zz", b'multipart/mixed boundary="zz"'
    )
    found, rules = program_parts(message, work, spool)
    assert found and all(p.scan_alone for p in found)
    assert "application/x-dosexec" in rules
