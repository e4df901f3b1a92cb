"""Quoted-printable with soft line breaks inside =XX escapes: read both ways, as mail readers disagree on it."""

from __future__ import annotations

import hashlib
import os

import pytest

from differential import refparsers
from mime_fixtures import all_findings, blocking_rules, make_settings, spool, unpack_bytes, work  # noqa: F401
from qmail_scanner.unpack.decoding import splits_an_escape

PROGRAM = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00" + b"PE\x00\x00" + bytes(range(256)) * 4


def split_escapes(data: bytes) -> bytes:
    """Every byte as =XX, with a soft line break inside each escape (=9=\\n0), as a crafted message writes it."""
    return b"".join(b"=%X=\n%X" % (byte >> 4, byte & 15) for byte in data) + b"\n"


def message(body: bytes, name: bytes = b"notes.txt") -> bytes:
    return (
        b"From: a@example.org\nTo: b@example.net\nSubject: notes\nMIME-Version: 1.0\n"
        b"Content-Type: multipart/mixed; boundary=B\n\n--B\nContent-Type: text/plain\n\nhello\n"
        b'--B\nContent-Type: application/octet-stream; name="' + name + b'"\n'
        b"Content-Transfer-Encoding: quoted-printable\n\n" + body + b"--B--\n"
    )


def decoded_hashes(unpacked) -> set[str]:
    hashes = set()
    for part in unpacked.parts:
        if part.decoded_path and os.path.exists(part.decoded_path):
            with open(part.decoded_path, "rb") as decoded:
                hashes.add(hashlib.sha256(decoded.read()).hexdigest())
    return hashes


def test_mailparser_extracts_what_the_other_readers_keep_as_text(tmp_path):
    if "mailparser" not in refparsers.available():
        pytest.fail(f"node mailparser is not installed: {refparsers.missing()}")
    path = tmp_path / "split.eml"
    path.write_bytes(message(split_escapes(PROGRAM)))
    assert hashlib.sha256(PROGRAM).hexdigest() in refparsers.mailparser([str(path)])[str(path)]


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_the_joined_reading_reaches_the_checks_and_blocks_the_program(spool, work, line_end):  # noqa: F811
    settings = make_settings(spool)
    body = split_escapes(PROGRAM).replace(b"\n", line_end)
    unpacked = unpack_bytes(message(body), work, settings)
    assert hashlib.sha256(PROGRAM).hexdigest() in decoded_hashes(unpacked)
    (joined,) = [p for p in unpacked.parts if p.reading.startswith("quoted-printable")]
    assert (joined.magic_type, joined.scan_alone, joined.filenames) == ("application/x-dosexec", True, ("notes.txt",))
    assert "application/x-dosexec" in blocking_rules(all_findings(unpacked, settings))


def test_the_split_may_come_late_in_a_long_body(spool, work):  # noqa: F811
    """Both readings agree up to the first split escape: the joined file starts with what was decoded before it."""
    settings = make_settings(spool)
    text = b"plain line of text, nothing to see=\n here\n" * 5000
    body = text + split_escapes(b"tail bytes \xe9")
    unpacked = unpack_bytes(message(body, b"long.txt"), work, settings)
    expected = text.replace(b"=\n", b"") + b"tail bytes \xe9"  # the last line break belongs to the delimiter
    assert hashlib.sha256(expected).hexdigest() in decoded_hashes(unpacked)


def test_ordinary_quoted_printable_is_read_once(spool, work):  # noqa: F811
    settings = make_settings(spool)
    body = b"caf=C3=A9 au lait, a long line that goes on and on and on and on and on an=\nd on=3D\n" * 50
    unpacked = unpack_bytes(message(body), work, settings)
    assert [p.reading for p in unpacked.parts if p.reading] == []
    assert len(unpacked.parts) == 3  # the multipart, the text and the attachment


@pytest.mark.parametrize(
    ("lines", "split"),
    [
        (b"a=9=\n0", True),
        (b"a==\n41", True),
        (b"a=9=\r\n0", True),
        (b"a=3D=\nb", False),
        (b"a soft break=\nhere", False),
        (b"no soft break =41\n", False),
    ],
)
def test_which_soft_breaks_split_an_escape(lines, split):
    assert splits_an_escape(lines) is split
