"""The message's own header block is read both ways readers read it when a line in it is no header."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib

from mime_fixtures import all_findings, blocking_rules, make_settings, spool, unpack_bytes, work  # noqa: F401

PROGRAM = b"MZ\x90\x00\x03\x00\x00\x00" + b"PE\x00\x00" + bytes(range(200))

# No empty line after the message's headers: Python's email ends them at the delimiter line and
# finds the parts; a reader that runs on to the first empty line sees no multipart at all.
NO_EMPTY_LINE = (
    b"Received: from client (192.0.2.10) by mx\n"
    b"From: a@example.org\nTo: b@example.net\nSubject: documents\nMIME-Version: 1.0\n"
    b"Content-Type: multipart/mixed; boundary=b\n--b\nContent-Type: text/plain\n\nsee attached\n"
    b'--b\nContent-Type: application/octet-stream; name="a.bin"\nContent-Transfer-Encoding: base64\n\n'
    + base64.encodebytes(PROGRAM)
    + b"--b--\n"
)


def decoded_hashes(unpacked) -> set[str]:
    return {
        hashlib.sha256(open(part.decoded_path, "rb").read()).hexdigest()
        for part in unpacked.parts
        if part.decoded_path
    }


def test_python_email_extracts_the_program_from_the_message_without_an_empty_line():
    parsed = email.message_from_bytes(NO_EMPTY_LINE, policy=email.policy.default)
    payloads = [p.get_payload(decode=True) for p in parsed.walk() if not p.is_multipart()]
    assert PROGRAM in payloads


def test_the_reading_that_ends_the_headers_at_the_delimiter_finds_the_program(spool, work):  # noqa: F811
    settings = make_settings(spool, fix_mime=1)
    unpacked = unpack_bytes(NO_EMPTY_LINE, work, settings)
    assert hashlib.sha256(PROGRAM).hexdigest() in decoded_hashes(unpacked)
    assert "header block without an empty line before the body" in [a.text for a in unpacked.ambiguities]
    assert "application/x-dosexec" in blocking_rules(all_findings(unpacked, settings))


def test_an_mbox_from_line_under_the_received_line_is_no_ambiguity(spool, work):  # noqa: F811
    message = (
        b"Received: from client (192.0.2.10) by mx\nFrom someone@example.org Mon May  2 16:07:05 2011\n"
        b"From: a@example.org\nTo: b@example.net\nSubject: hello\n\nhello\n"
    )
    for level in (1, 2):
        settings = make_settings(spool, fix_mime=level)
        unpacked = unpack_bytes(message, work, settings)
        assert unpacked.ambiguities == []
        assert blocking_rules(all_findings(unpacked, settings)) == set()
