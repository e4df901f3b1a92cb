"""What ripmime (and MIME-tools) hand out from text around and inside MIME parts: it must reach the checks.

ripmime is what many qmail sites' own scripts and amavis-era tools unpack with. It decodes
uuencode in a multipart's preamble; after a closing delimiter it keeps reading (header lines
start a part, so does a later delimiter of the closed boundary); and it unpacks every decoded
file again as a message when its first 100 lines hold header lines: a delivery status, an
external-body, a digest entry or a plain text part holding a message hands that message's
attachments out. MIME-tools and ripmime end a CR CR LF line once. Each case hides a unique
Windows program: ripmime (run here, for real) extracts it, and the unpacker must hand the same
bytes (by sha256) to the checks and block the message. Legitimate shapes of the same kinds stay
clean at --fix-mime 1 and 2.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mime_fixtures import all_findings, blocking_rules, make_settings, unpack_bytes

HEAD = b"From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: leftovers\nMIME-Version: 1.0\n"
TEXT = b"Content-Type: text/plain; charset=us-ascii\n\nPlease see the attached file.\n"


def program(tag: str) -> bytes:
    """A small Windows program, unique per case (its hash names it)."""
    return b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 52 + b"PE\x00\x00" + tag.encode() * 8 + os.urandom(64)


def attachment(payload: bytes) -> bytes:
    return (
        b'Content-Type: application/octet-stream; name="setup.exe"\nContent-Transfer-Encoding: base64\n'
        b'Content-Disposition: attachment; filename="setup.exe"\n\n' + base64.encodebytes(payload)
    )


def uuencoded(payload: bytes) -> bytes:
    lines = b"".join(binascii.b2a_uu(payload[i : i + 45]) for i in range(0, len(payload), 45))
    return b"begin 644 setup.exe\n" + lines + b"`\nend\n"


def message_with(payload: bytes) -> bytes:
    return (
        b"From: carol@example.org\nSubject: inner\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=in\n\n"
        b"--in\n" + TEXT + b"--in\n" + attachment(payload) + b"--in--\n"
    )


def multipart(body: bytes, boundary: bytes = b"b", preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    return (
        HEAD
        + b'Content-Type: multipart/mixed; boundary="'
        + boundary
        + b'"\n\n'
        + preamble
        + b"--"
        + boundary
        + b"\n"
        + TEXT
        + body
        + b"--"
        + boundary
        + b"--\n"
        + epilogue
    )


def part(content_type: bytes, body: bytes, encoding: bytes = b"") -> bytes:
    cte = b"Content-Transfer-Encoding: " + encoding + b"\n" if encoding else b""
    return b"--b\nContent-Type: " + content_type + b"\n" + cte + b"\n" + body


def external_body(payload: bytes) -> bytes:
    return b"Content-Type: application/octet-stream\nContent-ID: <x@y>\n\n" + message_with(payload)


CASES = {
    "uuencode in the preamble": lambda p: multipart(b"", preamble=uuencoded(p)),
    "uuencode after a preamble line": lambda p: multipart(
        b"", preamble=b"This is a multi-part message in MIME format.\n\n" + uuencoded(p)
    ),
    "headers right after the closing delimiter": lambda p: multipart(b"", epilogue=attachment(p)),
    "a blank line, then headers after the closing delimiter": lambda p: multipart(b"", epilogue=b"\n" + attachment(p)),
    "text, then a delimiter of the closed boundary": lambda p: multipart(
        b"", epilogue=b"footer\n--b\n" + attachment(p) + b"--b--\n"
    ),
    "headers after a nested closing delimiter": lambda p: (
        HEAD + b'Content-Type: multipart/mixed; boundary="o"\n\n--o\n'
        b'Content-Type: multipart/alternative; boundary="i"\n\n--i\n' + TEXT + b"--i--\n" + attachment(p) + b"--o--\n"
    ),
    "message/delivery-status, 7bit": lambda p: multipart(part(b"message/delivery-status", message_with(p))),
    "message/delivery-status, base64": lambda p: multipart(
        part(b"message/delivery-status", base64.encodebytes(message_with(p)), b"base64")
    ),
    "message/delivery-status as the whole message": lambda p: (
        HEAD.replace(b"MIME-Version: 1.0\n", b"")
        + b"MIME-Version: 1.0\nContent-Type: message/delivery-status\n\n"
        + message_with(p)
    ),
    "message/external-body, 7bit": lambda p: multipart(
        part(b"message/external-body; access-type=x-mail", external_body(p))
    ),
    "digest entry with an empty header block, then a blank line": lambda p: (
        HEAD + b'Content-Type: multipart/digest; boundary="d"\n\n--d\n\n\n' + message_with(p) + b"--d--\n"
    ),
    "header lines in a plain text body": lambda p: (
        HEAD.replace(b"MIME-Version: 1.0\n", b"") + b"\nHello,\n\n" + attachment(p)
    ),
    "header lines in a base64 text part": lambda p: multipart(
        part(b"text/plain", base64.encodebytes(b"Hello,\n\n" + attachment(p)), b"base64")
    ),
    "CR CR LF line ends": lambda p: message_with(p).replace(b"\n", b"\r\r\n"),
}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ripmime_extracts(message: bytes, tmp_path: Path) -> set[str]:
    """sha256 of every file ripmime writes for the message."""
    source = tmp_path / "ripmime.eml"
    source.write_bytes(message)
    out = tmp_path / "ripmime-out"
    out.mkdir()
    subprocess.run([shutil.which("ripmime") or "ripmime", "-i", str(source), "-d", str(out), "-q"], check=False)
    return {digest(f.read_bytes()) for f in out.iterdir() if f.is_file()}


@pytest.mark.parametrize("case", list(CASES))
def test_what_ripmime_extracts_reaches_the_checks(case: str, tmp_path: Path, work: Path, spool: Path) -> None:
    payload = program(case)
    message = CASES[case](payload)
    assert digest(payload) in ripmime_extracts(message, tmp_path), "the reference reader must extract it"
    settings = make_settings(spool, fix_mime=1)
    unpacked = unpack_bytes(message, work, settings)
    found = [
        p for p in unpacked.parts if p.decoded_path and digest(Path(p.decoded_path).read_bytes()) == digest(payload)
    ]
    assert found, case
    assert any(p.scan_alone for p in found), "clamd does not read it this way: it is handed over decoded"
    assert "application/x-dosexec" in blocking_rules(all_findings(unpacked, settings))


BOUNCE = (
    HEAD + b'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\n\n'
    b"This is a MIME-encapsulated message.\n\n--r\n" + TEXT + b"--r\nContent-Type: message/delivery-status\n\n"
    b"Reporting-MTA: dns; mx.example.net\nArrival-Date: Mon, 1 Jan 2024 10:00:00 +0000\n\n"
    b"Final-Recipient: rfc822; bob@example.net\nAction: failed\nStatus: 5.1.1\n"
    b"--r\nContent-Type: message/rfc822\n\nFrom: alice@example.org\nSubject: hello\n"
    b"Date: Mon, 1 Jan 2024 09:00:00 +0000\n\nhi\n--r--\n"
)
LEGITIMATE = {
    "bounce": BOUNCE,
    "bounce whose status quotes the message's header lines": BOUNCE.replace(
        b"Status: 5.1.1\n", b"Status: 5.1.1\n\nFrom: alice@example.org\nSubject: hello\nDate: today\n"
    ),
    "digest": HEAD + b"Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\nfirst\n"
    b"--d\n\nSubject: two\n\nsecond\n--d--\n",
    "the usual preamble": multipart(b"", preamble=b"This is a multi-part message in MIME format.\n"),
    "a mailing-list footer after the closing delimiter": multipart(
        b"",
        epilogue=b"\n_______________________________________________\nlist mailing list\n"
        b"list@lists.example.org\nhttps://lists.example.org/listinfo/list\n",
    ),
    "a reply quoting the original's header lines": HEAD + b"Content-Type: text/plain\n\nThanks!\n\n"
    b"-----Original Message-----\nFrom: Bob\nSent: Monday\nTo: Alice\nSubject: Re: plans\n\nSee you.\n",
}


@pytest.mark.parametrize("level", [1, 2])
@pytest.mark.parametrize("case", list(LEGITIMATE))
def test_legitimate_shapes_stay_clean(case: str, level: int, work: Path, spool: Path) -> None:
    settings = make_settings(spool, fix_mime=level)
    unpacked = unpack_bytes(LEGITIMATE[case], work, settings)
    assert blocking_rules(all_findings(unpacked, settings)) == set(), case


def test_the_usual_preamble_and_an_empty_epilogue_add_no_part(work: Path, spool: Path) -> None:
    settings = make_settings(spool)
    plain = unpack_bytes(multipart(b""), work, settings)
    usual = unpack_bytes(multipart(b"", preamble=b"This is a multi-part message in MIME format.\n"), work, settings)
    assert len(usual.parts) == len(plain.parts) == 2
    assert not any(p.scan_alone for p in usual.parts)
