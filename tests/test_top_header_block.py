"""The message's own header block is read both ways readers read it when a line in it is no header."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib

from mime_fixtures import all_findings, blocking_rules, make_settings, spool, unpack_bytes, work  # noqa: F401

PROGRAM = b"MZ\x90\x00\x03\x00\x00\x00" + b"PE\x00\x00" + bytes(range(256))

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
        hashlib.sha256(open(part.decoded_path, "rb").read()).hexdigest() for part in unpacked.parts if part.decoded_path
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


def test_a_closing_delimiter_after_a_bare_cr_ends_the_body_in_the_copy_that_reads_crs_as_line_ends(spool, work):  # noqa: F811
    """The body runs to the end of the file one way and stops at the delimiter the other way: both are read."""
    program = PROGRAM[:204]  # no base64 padding at its end: the delimiter read as base64 decodes to more bytes
    encoded = base64.encodebytes(program).rstrip(b"\n").replace(b"\n", b"\r\n")
    message = (
        b"From: a@example.org\rTo: b@example.net\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="=_in45197"\r\n\r\n'
        b"--=_in45197\rContent-Type: text/plain\r\rsee attached\n"  # a delimiter only where a CR ends a line
        b"--=_in45197\r\nContent-Type: application/octet-stream\r\n"
        # The closing delimiter read as base64 where it is not one adds bytes: the two readings differ.
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"\r--=_in45197--\r\n"
    )
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert program in [p.get_payload(decode=True) for p in parsed.walk() if not p.is_multipart()]
    unpacked = unpack_bytes(message, work, make_settings(spool, fix_mime=1))
    assert hashlib.sha256(program).hexdigest() in decoded_hashes(unpacked)
