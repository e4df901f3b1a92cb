"""Ambiguous MIME through the installed program: every reading is checked, evasions blocked, real mail delivered.

Each evasion hides a Windows program (by name or by content) in one reading of the message
only; it must be quarantined at --fix-mime 1 (naming the reading) and at 2. Each legitimate
shape (sent by real mail clients) must be delivered unchanged at --fix-mime 1, with the
ambiguity named in the trace header, and quarantined at --fix-mime 2.
"""

from __future__ import annotations

import base64

import pytest

from harness import Installation, RunResult

FAKE_EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 44 + b"PE\x00\x00" + b"x" * 200
EXE_B64 = base64.encodebytes(FAKE_EXE)
HEAD = b"From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: ambiguous\nMIME-Version: 1.0\n"
TEXT = b"Content-Type: text/plain; charset=us-ascii\n\nHello, see attached.\n"
NOTE = "in one reading of an ambiguous message: "


def exe_part(name: bytes = b"x.exe") -> bytes:
    head = b'Content-Type: application/octet-stream; name="' + name + b'"\nContent-Transfer-Encoding: base64\n\n'
    return head + EXE_B64


def doubled_boundary(first: bytes, second: bytes, spelling: bytes) -> bytes:
    """A multipart whose Content-Type names two boundaries; the program hides under the second one."""
    return (
        HEAD + b"Content-Type: multipart/mixed; " + spelling + b"\n\n"
        b"--" + first + b"\n" + TEXT + b"--" + first + b"--\n"
        b"--" + second + b"\n" + exe_part() + b"--" + second + b"--\n"
    )


def nested(inner_type_line: bytes, inner_body: bytes) -> bytes:
    """The same trick one level down, inside a multipart/alternative of a multipart/mixed."""
    return (
        HEAD + b'Content-Type: multipart/mixed; boundary="outer"\n\n--outer\n' + TEXT
        + b"--outer\n" + inner_type_line + b"\n\n" + inner_body + b"--outer--\n"
    )


def one_part(part: bytes, boundary: bytes = b"b") -> bytes:
    return (
        HEAD + b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\n\n'
        b"--" + boundary + b"\n" + TEXT + b"--" + boundary + b"\n" + part + b"--" + boundary + b"--\n"
    )


def named(params: bytes, disposition: bytes = b"") -> bytes:
    """A harmless text attachment whose names are given by `params` (and a Content-Disposition)."""
    head = b"Content-Type: application/octet-stream" + params + b"\n"
    if disposition:
        head += b"Content-Disposition: attachment" + disposition + b"\n"
    return one_part(head + b"\njust some text\n")


EVASIONS = {
    "boundary doubled, quoted": (
        doubled_boundary(b"a", b"b", b'boundary="a"; boundary="b"'), "duplicate boundary parameter"
    ),
    "boundary doubled, unquoted, upper case": (
        doubled_boundary(b"a1", b"b1", b"BOUNDARY=a1; Boundary=b1"), "duplicate boundary parameter"
    ),
    "boundary plain and RFC 2231": (
        doubled_boundary(b"p", b"q", b"boundary=\"p\"; boundary*=us-ascii''q"), "boundary parameter in two encodings"
    ),
    "boundary doubled on a nested multipart": (
        nested(
            b'Content-Type: multipart/alternative; boundary="in1"; boundary="in2"',
            b"--in1\n" + TEXT + b"--in1--\n--in2\n" + exe_part() + b"--in2--\n",
        ),
        "duplicate boundary parameter",
    ),
    "name given twice": (named(b'; name="a.txt"; name="x.exe"'), "name parameter given twice"),
    "filename given twice, unquoted": (
        named(b"", b"; filename=a.txt; filename=x.exe"), "filename parameter given twice"
    ),
    "name and filename differ": (named(b'; name="a.txt"', b'; filename="x.exe"'), "name and filename differ"),
    "filename plain and RFC 2231": (
        named(b"", b"; filename=\"a.txt\"; filename*=utf-8''x.exe"), "filename parameter in two encodings"
    ),
    "filename plain and RFC 2231 continuations": (
        named(b"", b'; filename="a.txt"; filename*0="x."; filename*1="exe"'), "filename parameter in two encodings"
    ),
    "name plain and as an encoded word": (
        named(b'; name="a.txt"; name="=?utf-8?q?x=2Eexe?="'), "name parameter given twice"
    ),
    "continuation split by an empty line": (
        one_part(b'Content-Type: application/octet-stream;\n\n name="x.exe"\nContent-Transfer-Encoding: base64\n\n'
                 + EXE_B64),
        "header continuation after an empty line",
    ),
    "continuation split by an empty line, tab, unquoted": (
        one_part(b"Content-Type: application/octet-stream;\n\n\tname=x.exe\nContent-Transfer-Encoding: base64\n\n"
                 + EXE_B64),
        "header continuation after an empty line",
    ),
    "disposition continuation split by an empty line": (
        one_part(b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n"
                 b'Content-Disposition: attachment\n\n ;filename="x.exe"\n\n' + EXE_B64),
        "header continuation after an empty line",
    ),
    "continuation split by an empty line in a nested part": (
        nested(
            b'Content-Type: multipart/alternative; boundary="in"',
            b"--in\nContent-Type: application/octet-stream;\n\n name=\"x.exe\"\nContent-Transfer-Encoding: base64\n\n"
            + EXE_B64 + b"--in--\n",
        ),
        "header continuation after an empty line",
    ),
    "two transfer encodings": (
        one_part(b'Content-Type: application/octet-stream; name="data.dat"\nContent-Transfer-Encoding: 7bit\n'
                 b"Content-Transfer-Encoding: base64\n\n" + EXE_B64),
        "repeated Content-Transfer-Encoding header",
    ),
    "boundary matched as a line prefix": (
        HEAD + b'Content-Type: multipart/mixed; boundary="a"\n\n--a\n' + TEXT + b"--aX\n" + exe_part() + b"--a--\n",
        "boundary matched as a line prefix",
    ),
    "no empty line before the body": (
        one_part(b'Content-Type: application/octet-stream; name="data.dat"\nContent-Transfer-Encoding: base64\n'
                 + EXE_B64 + b"\n"),
        "header block without an empty line before the body",
    ),
}

MAC_OE_REUSE = (
    HEAD + b'Content-Type: multipart/mixed; boundary="MS_Mac_OE_3071477847_720252_MIME_Part"\n\n'
    b"> This message is in MIME format.\n\n--MS_Mac_OE_3071477847_720252_MIME_Part\n"
    b'Content-Type: multipart/alternative; boundary="MS_Mac_OE_3071477847_720252_MIME_Part"\n\n\n'
    b"--MS_Mac_OE_3071477847_720252_MIME_Part\nContent-type: text/plain; charset=\"US-ASCII\"\n"
    b"Content-transfer-encoding: 7bit\n\nSome removed test.\n\n"
    b"--MS_Mac_OE_3071477847_720252_MIME_Part\nContent-type: text/html; charset=\"US-ASCII\"\n"
    b"Content-transfer-encoding: quoted-printable\n\n<HTML><BODY>Some removed HTML</BODY></HTML>\n\n"
    b"--MS_Mac_OE_3071477847_720252_MIME_Part--\n\n\n--MS_Mac_OE_3071477847_720252_MIME_Part\n"
    b"Content-type: image/gif; name=\"xx.gif\"\nContent-disposition: attachment\nContent-transfer-encoding: base64\n\n"
    + base64.encodebytes(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")
    + b"\n--MS_Mac_OE_3071477847_720252_MIME_Part--\n"
)
EUDORA = (
    HEAD + b'Content-Type: multipart/mixed; boundary="=====================_1234==_"\n\n'
    b"--=====================_1234==_\n"
    b'Content-Type: multipart/alternative; boundary="=====================_1234==_.ALT"\n\n'
    b"--=====================_1234==_.ALT\n" + TEXT + b"--=====================_1234==_.ALT\n"
    b"Content-Type: text/html; charset=us-ascii\n\n<html>Hello</html>\n--=====================_1234==_.ALT--\n\n"
    b"--=====================_1234==_\n" + TEXT + b"--=====================_1234==_--\n"
)
ATTACHED_MESSAGE = (
    b"Content-Type: message/rfc822\nContent-Disposition: attachment\n\n"
    b"%s\nFrom: Carol <carol@example.org>\nSubject: original\nDate: Tue, 10 May 2011 11:28:07 +0000\n\n"
    b"The forwarded text.\n"
)
LEGITIMATE = {
    "mbox From line on an attached message": (
        one_part(ATTACHED_MESSAGE % b"From carol@example.org Tue May 10 11:28:07 2011"), "mbox From line"
    ),
    "escaped >From line on an attached message": (
        one_part(ATTACHED_MESSAGE % b">From - Fri Dec 13 15:01:21 1996"), "mbox From line"
    ),
    "RISC OS name with a file type": (
        named(b'; name="clock.bmp,69c"', b'; filename="clock.bmp"'), "name and filename differ"
    ),
    "Gmail name and filename": (named(b"; name=attach01", b"; filename=attach/01"), "name and filename differ"),
    "repeated Content-Type": (
        one_part(b"Content-Type: text/plain\nContent-Type: text/html\n\n<p>hello</p>\n"), "repeated Content-Type header"
    ),
    "repeated transfer encoding": (
        one_part(b"Content-Type: text/plain\nContent-Transfer-Encoding: 7bit\nContent-Transfer-Encoding: 8bit\n\nhi\n"),
        "repeated Content-Transfer-Encoding header",
    ),
    "repeated disposition": (
        one_part(b"Content-Type: text/plain\nContent-Disposition: inline\nContent-Disposition: attachment\n\nhi\n"),
        "repeated Content-Disposition header",
    ),
    "Mac Outlook Express boundary reuse": (MAC_OE_REUSE, "nested multipart reusing an enclosing boundary"),
    "Eudora prefix boundaries": (EUDORA, ""),
}


def run(installation: Installation, message: bytes) -> tuple[RunResult, bytes]:
    """Run the program; return the result and the quarantined copy (b"" when none was stored)."""
    quarantine = installation.spool / "quarantine" / "policy" / "new"
    before = set(quarantine.iterdir()) if quarantine.exists() else set()
    result = installation.run(message)
    assert result.exit_code == 0, result.stderr
    stored = sorted(set(quarantine.iterdir()) - before) if quarantine.exists() else []
    return result, stored[0].read_bytes() if stored else b""


def reason_of(stored: bytes) -> str:
    for line in stored.split(b"\n\n", 1)[0].split(b"\n"):
        if line.startswith(b"X-QS-Envelope-Reason:"):
            return line.split(b":", 1)[1].strip().decode()
    return ""


@pytest.mark.parametrize("case", list(EVASIONS))
def test_evasion_is_quarantined_naming_the_reading(make_installation, case: str) -> None:
    message, ambiguity = EVASIONS[case]
    result, stored = run(make_installation("--fix-mime", "1"), message)
    assert result.queued == [], case
    assert stored, case
    assert f"{NOTE}{ambiguity}" in reason_of(stored), reason_of(stored)


@pytest.mark.parametrize("case", list(EVASIONS))
def test_evasion_is_quarantined_when_strict(make_installation, case: str) -> None:
    result, stored = run(make_installation("--fix-mime", "2"), EVASIONS[case][0])
    assert result.queued == [], case
    assert stored.endswith(EVASIONS[case][0]), case


@pytest.mark.parametrize("case", list(LEGITIMATE))
def test_legitimate_shape_is_delivered_unchanged_and_named(make_installation, case: str) -> None:
    message, ambiguity = LEGITIMATE[case]
    result, stored = run(make_installation("--fix-mime", "1"), message)
    assert stored == b"", reason_of(stored)
    assert len(result.queued) == 1
    assert result.queued[0].body_after_trace == message
    trace = result.queued[0].message[: len(result.queued[0].message) - len(message)].decode()
    if ambiguity:
        assert "Ambiguous MIME, every reading checked: " in trace and ambiguity in " ".join(trace.split()), trace
    else:
        assert "Ambiguous MIME" not in trace


@pytest.mark.parametrize("case", list(LEGITIMATE))
def test_legitimate_shape_is_quarantined_when_strict(make_installation, case: str) -> None:
    result, stored = run(make_installation("--fix-mime", "2"), LEGITIMATE[case][0])
    assert result.queued == [], case
    assert reason_of(stored).startswith("Disallowed MIME: "), reason_of(stored)


def test_ambiguity_is_named_in_the_debug_log(make_installation) -> None:
    installation = make_installation("--fix-mime", "1", "--debug", "yes")
    run(installation, MAC_OE_REUSE)
    log = (installation.spool / "qmail-queue.log").read_text()
    assert "ambiguous MIME, read 2 way(s): nested multipart reusing an enclosing boundary" in log


def test_fix_mime_0_reads_one_way_and_checks_no_format(make_installation) -> None:
    result, stored = run(make_installation("--fix-mime", "0"), LEGITIMATE["Mac Outlook Express boundary reuse"][0])
    assert stored == b"" and len(result.queued) == 1
    assert b"Ambiguous MIME" not in result.queued[0].message


def test_ambiguities_in_separate_parts_take_two_readings_not_every_combination(make_installation) -> None:
    # A mailer that leaves out the empty line after every part's headers: twenty choices, none inside another.
    parts = [b"Content-Type: text/plain\nline %d of a note without an empty line\n" % n for n in range(20)]
    body = b"".join(b"--m\n" + part for part in parts) + b"--m--\n"
    message = HEAD + b'Content-Type: multipart/mixed; boundary="m"\n\n' + body
    installation = make_installation("--fix-mime", "1", "--debug", "yes")
    result, stored = run(installation, message)
    assert stored == b"" and result.queued[0].body_after_trace == message
    log = (installation.spool / "qmail-queue.log").read_text()
    assert "ambiguous MIME, read 2 way(s): header block without an empty line before the body" in log


@pytest.mark.parametrize(
    "case", ["boundary doubled, quoted", "boundary plain and RFC 2231", "name given twice", "two transfer encodings"]
)
def test_with_reformime_what_one_reading_cannot_settle_is_quarantined(make_installation, case: str) -> None:
    installation = make_installation("--mime-unpacker", "reformime", "--fix-mime", "1")
    result, stored = run(installation, EVASIONS[case][0])
    assert result.queued == [] and reason_of(stored), case
