"""Every log line the program writes is one line of bounded length, whatever the mail holds.

Issue 15 item 6: attachment names decoded from RFC 2231/2047 may hold a newline, a CR, an
escape sequence or a NUL; a zip of 10,001 one-byte members wrote one 104 KB line naming 5,000
members (syslog cuts such a line, mailstats.csv grew by 100 KB per message). stderr_log.one_line
is the one place lines are made safe: stderr (qmail-smtpd's log), syslog, mailstats.csv,
quarantine.log and qmail-queue.log all go through it.
"""

from __future__ import annotations

import base64
import io
import socket
import tarfile
import zipfile
from urllib.parse import quote

import pytest

from harness import Installation
from qmail_scanner.logs import append_lines, send_syslog
from qmail_scanner.stderr_log import LOG_LINE_LIMIT, one_line, say

# A name that would end our line and write a forged one after it, move the cursor of a terminal
# reading the log, and cut the line at a NUL for C tools.
FORGED = "qmail-scanner[1]: Clear:RC:1(10.0.0.1): 0.01 100 boss@example.com all@example.com paid - x"
HOSTILE_NAME = "invoice\n" + FORGED + "\r\x1b[2J\x00.exe"
LOG_FILES = ("mailstats.csv", "quarantine.log", "qmail-queue.log")


def message_with_attachment(filename_parameter: bytes, data: bytes, content_type: bytes) -> bytes:
    return (
        b"From: a@example.org\nTo: b@example.com\nSubject: files\nMIME-Version: 1.0\n"
        b"Content-Type: multipart/mixed; boundary=BB\n\n--BB\nContent-Type: text/plain\n\nsee attached\n"
        b"--BB\nContent-Type: " + content_type + b"\nContent-Disposition: attachment; " + filename_parameter + b"\n"
        b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(data) + b"--BB--\n"
    )


def written_lines(installation: Installation, stderr: str) -> list[bytes]:
    """Every line the run wrote: stderr and the log files in the spool."""
    lines = stderr.encode("utf-8", "surrogateescape").split(b"\n")
    for name in LOG_FILES:
        path = installation.spool / name
        if path.exists():
            lines += path.read_bytes().split(b"\n")
    return [line for line in lines if line]


def assert_one_line_each(lines: list[bytes]) -> None:
    for line in lines:
        assert len(line) <= LOG_LINE_LIMIT, f"a {len(line)}-byte log line: {line[:200]!r}..."
        assert not any(byte < 32 and byte != 9 for byte in line), f"a control character in {line[:300]!r}"
        assert not line.startswith(b"qmail-scanner[1]"), f"a forged line: {line!r}"


@pytest.fixture(scope="module")
def syslog_fallback(make_installation) -> Installation:
    """No syslog daemon at the socket: the log line goes to stderr (qmail-smtpd's log); --debug: qmail-queue.log."""
    return make_installation("--debug", "yes")


@pytest.fixture(scope="module")
def mailstats(make_installation) -> Installation:
    return make_installation("--log-details", "mailstats", "--debug", "yes")


@pytest.mark.parametrize(
    "parameter",
    [
        b"filename*=utf-8''" + quote(HOSTILE_NAME.encode(), safe="").encode(),  # RFC 2231
        b'filename="=?utf-8?b?' + base64.b64encode(HOSTILE_NAME.encode()) + b'?="',  # RFC 2047
    ],
    ids=["RFC 2231", "RFC 2047"],
)
@pytest.mark.parametrize("where", ["syslog_fallback", "mailstats"])
def test_a_hostile_attachment_name_stays_on_its_own_line(request, where, parameter):
    installation = request.getfixturevalue(where)
    # Something that looks like a zip and is not: the archive reader logs it by name. The name
    # ends in .exe: the policy quarantines it, so quarantine.log names it too.
    message = message_with_attachment(parameter, b"PK\x03\x04" + b"\xff" * 200, b"application/zip")
    result = installation.run(message)
    assert result.exit_code == 0, result.stderr
    lines = written_lines(installation, result.stderr)
    assert_one_line_each(lines)
    # The name is still there for the administrator, escaped.
    assert any(b"invoice\\nqmail-scanner[1]: Clear" in line for line in lines), lines


def members_archive(kind: str, count: int) -> bytes:
    buffer = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buffer, "w") as archive:
            for number in range(count):
                archive.writestr(f"member{number:05d}.txt", b"x")
    else:
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for number in range(count):
                entry = tarfile.TarInfo(f"member{number:05d}.txt")
                entry.size = 1
                archive.addfile(entry, io.BytesIO(b"x"))
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["zip", "tar"])
@pytest.mark.parametrize("where", ["syslog_fallback", "mailstats"])
def test_an_archive_of_10001_members_is_quarantined_with_bounded_log_lines(request, where, kind):
    installation = request.getfixturevalue(where)
    before = len(installation.quarantined("policy")) if (installation.spool / "quarantine/policy/new").exists() else 0
    content_type = b"application/zip" if kind == "zip" else b"application/x-tar"
    message = message_with_attachment(f"filename=many.{kind}".encode(), members_archive(kind, 10_001), content_type)
    result = installation.run(message, timeout=120)
    assert result.exit_code == 0 and not result.queued, result.stderr[:2000]
    assert len(installation.quarantined("policy")) == before + 1
    assert_one_line_each(written_lines(installation, result.stderr))


def test_say_writes_one_escaped_bounded_line(capfd):
    say("a\nb\rc\x1bd\x00e\udcff\u2028" + "x" * 10_000)
    err = capfd.readouterr().err.encode("utf-8", "surrogateescape")
    assert err.count(b"\n") == 1 and err.endswith(b"\n")
    line = err[:-1]
    assert len(line) <= LOG_LINE_LIMIT
    assert b"a\\nb\\rc\\x1bd\\x00e\\xff\\u2028xxx" in line  # the byte that was not UTF-8 shown as the byte
    assert line.endswith(b" more bytes)")


def test_log_files_and_syslog_get_one_line_per_line(tmp_path):
    path = tmp_path / "mailstats.csv"
    append_lines(str(path), ["date\tClear\tinvoice\n" + FORGED + "\r\x00", "second\t" + "y" * 10_000], keep="\t")
    written = path.read_bytes().split(b"\n")
    assert written[2:] == [b""] and len(written) == 3
    assert written[0].split(b"\t")[:2] == [b"date", b"Clear"]  # TABs between fields kept
    assert_one_line_each(written[:2])
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "log"))
    listener.settimeout(5)
    try:
        send_syslog(["one\ntwo\x1b" + "z" * 10_000], str(tmp_path / "log"))
        packet = listener.recv(65536)
    finally:
        listener.close()
    assert len(packet) <= LOG_LINE_LIMIT and b"\n" not in packet and b"\x1b" not in packet


def test_one_line_never_splits_a_character_and_says_what_it_cut():
    text = "é" * 3000  # two bytes each
    cut = one_line(text, 101)
    assert len(cut.encode()) <= 101 and cut.endswith("more bytes)")
    kept = cut.split("...")[0]
    assert set(kept) == {"é"} and f"({6000 - len(kept.encode())} more bytes)" in cut
    assert one_line("plain\ttext", keep="\t") == "plain\ttext"
    assert one_line("plain\ttext") == "plain\\ttext"
