"""Files written as text inside decoded parts (uuencode, BinHex 4.0, yEnc) reach the policy and clamd decoded.

Each variant is one some real reader extracts (MIME-tools, ripmime, Python's email, uudeview,
Thunderbird); the reference readers installed here are run on some of them to show it.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import hashlib
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from daemons import EICAR, clamd_server_fixture  # noqa: F401 - fixture
from mime_fixtures import all_findings, blocking_rules, make_settings, unpack_bytes
from qmail_scanner import unpack as mime
from qmail_scanner.scanners import run_virus_scanners
from qmail_scanner.settings import ScannerConfig
from qmail_scanner.unpack import decoding, textcodings
from scanner_fixtures import scan_settings, spooled_message

# A small Windows program: the policy blocks it by its real type whatever it is called.
PROGRAM = b"MZ\x90\x00\x03" + bytes(range(256)) * 3 + b"\x90" * 9 + b"A" * 200 + b"\x00\x90\x00=\n\r.end"
PROGRAM_SHA = hashlib.sha256(PROGRAM).hexdigest()
NAME = "notes.dat"  # a harmless name: only the real type can block it

# ---------------------------------------------------------------- encoders


def uuencode(data: bytes, begin: bytes = b"begin 644 " + NAME.encode(), middle: bytes = b"") -> bytes:
    lines = [binascii.b2a_uu(data[i : i + 45]) for i in range(0, len(data), 45)]
    if middle:
        lines.insert(len(lines) // 2, middle)
    return begin + b"\n" + b"".join(lines) + b"`\nend\n"


_HQX = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr"
_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _run_length(data: bytes) -> bytes:
    out = bytearray()
    at = 0
    while at < len(data):
        byte, count = data[at], 1
        while at + count < len(data) and data[at + count] == byte and count < 255:
            count += 1
        literal = b"\x90\x00" if byte == 0x90 else bytes((byte,))
        if count >= 4:
            out += literal + b"\x90" + bytes((count,))
            at += count
        else:
            out += literal
            at += 1
    return bytes(out)


def binhex(data: bytes, name: bytes = NAME.encode(), rsrc: bytes = b"", magic: bool = True, gap: bool = False) -> bytes:
    """BinHex 4.0 as Mac tools wrote it: header, data fork, resource fork, CRCs, run-length coded, 64 columns.

    `gap`: an empty line after the "(This file must be ...)" line, as .hqx files have it (MIME-tools wants none).
    """
    header = (
        bytes((len(name),)) + name + b"\0APPL????\0\0" + len(data).to_bytes(4, "big") + len(rsrc).to_bytes(4, "big")
    )
    raw = b"".join(chunk + binascii.crc_hqx(chunk, 0).to_bytes(2, "big") for chunk in (header, data, rsrc))
    text = b":" + base64.b64encode(_run_length(raw)).rstrip(b"=").translate(bytes.maketrans(_B64, _HQX)) + b":"
    lines = b"\n".join(text[i : i + 64] for i in range(0, len(text), 64)) + b"\n"
    magic_line = b"(This file must be converted with BinHex 4.0)\n" + (b"\n" if gap else b"")
    return (magic_line if magic else b"") + lines


def yenc(data: bytes, name: str = NAME, part: int = 0, total: int = 0, offset: int = 0, size: int = 0) -> bytes:
    out = bytearray()
    for byte in data:
        value = (byte + 42) & 255
        out += b"=" + bytes(((value + 64) & 255,)) if value in (0, 10, 13, 61) else bytes((value,))
    lines = b"\n".join(bytes(out[i : i + 128]) for i in range(0, len(out), 128))
    size = size or len(data)
    if part:
        head = f"=ybegin part={part} total={total} line=128 size={size} name={name}\n"
        head += f"=ypart begin={offset + 1} end={offset + len(data)}\n"
        tail = f"\n=yend size={len(data)} part={part} pcrc32={binascii.crc32(data):08x}\n"
    else:
        head = f"=ybegin line=128 size={size} name={name}\n"
        tail = f"\n=yend size={size} crc32={binascii.crc32(data):08x}\n"
    return head.encode() + lines + tail.encode()


# ---------------------------------------------------------------- messages

TOP = b"From: a@example.org\nTo: b@example.net\nSubject: files\nMIME-Version: 1.0\n"


def with_part(body: bytes, content_type: str = "text/plain", extra: str = "") -> bytes:
    """A multipart/mixed message: a short text, then `body` as a part of its own."""
    headers = f"Content-Type: {content_type}\n{extra}".encode()
    return (
        TOP
        + b"Content-Type: multipart/mixed; boundary=XX\n\n--XX\nContent-Type: text/plain\n\nSee below.\n"
        + b"--XX\n"
        + headers
        + b"\n"
        + body
        + b"--XX--\n"
    )


def single(body: bytes, subject: bytes = b"files") -> bytes:
    """A message that is all text, no MIME structure."""
    return b"From: a@example.org\nTo: b@example.net\nSubject: " + subject + b"\n\n" + body


TEXT = b"Here is the file you asked for.\n\n"

VARIANTS = {
    "uu-begin-644-text-plain": with_part(TEXT + uuencode(PROGRAM)),
    "uu-begin-0644": with_part(TEXT + uuencode(PROGRAM, b"begin 0644 notes.dat")),
    "uu-begin-100644": with_part(TEXT + uuencode(PROGRAM, b"begin 100644 notes.dat")),
    "uu-begin-7": with_part(TEXT + uuencode(PROGRAM, b"begin 7 notes.dat")),
    "uu-BEGIN-upper": with_part(TEXT + uuencode(PROGRAM, b"BEGIN 644 notes.dat")),
    "uu-tabs": with_part(TEXT + uuencode(PROGRAM, b"begin\t644\tnotes.dat")),
    "uu-no-name": with_part(TEXT + uuencode(PROGRAM, b"begin 644")),
    "uu-octet-stream": with_part(TEXT + uuencode(PROGRAM), "application/octet-stream"),
    "uu-named-attachment": with_part(
        uuencode(PROGRAM), "application/octet-stream", 'Content-Disposition: attachment; filename="data.bin"\n'
    ),
    "uu-text-x-anything": with_part(TEXT + uuencode(PROGRAM), "text/x-anything; name=list.txt"),
    "uu-base64-text": with_part(
        base64.encodebytes(TEXT + uuencode(PROGRAM, b"begin 0644 notes.dat")),
        "text/plain",
        "Content-Transfer-Encoding: base64\n",
    ),
    "uu-base64-octet-stream": with_part(
        base64.encodebytes(uuencode(PROGRAM, b"begin 644 notes.dat")),
        "application/octet-stream; name=notes.uue",
        "Content-Transfer-Encoding: base64\n",
    ),
    "uu-message-body": single(TEXT + uuencode(PROGRAM, b"begin 0755 notes.dat")),
    "uu-attached-message": with_part(
        b"Subject: inner\nContent-Type: application/octet-stream\n\n" + uuencode(PROGRAM, b"Begin 644 notes.dat"),
        "message/rfc822",
    ),
    "uu-cte-x-uuencode": with_part(
        uuencode(PROGRAM, b"begin 100644 notes.dat"), "application/octet-stream", "Content-Transfer-Encoding: uue\n"
    ),
    "uu-zero-line-inside": with_part(TEXT + uuencode(PROGRAM, b"begin 0644 notes.dat", middle=b"`\n")),
    "uu-cut-off": with_part(TEXT + uuencode(PROGRAM, b"begin 0644 notes.dat").rsplit(b"`\nend\n", 1)[0]),
    "binhex-text-plain": with_part(TEXT + binhex(PROGRAM)),
    "binhex-hqx-file-text": with_part(TEXT + binhex(PROGRAM, gap=True)),
    "binhex-mac-binhex40": with_part(binhex(PROGRAM), "application/mac-binhex40"),
    "binhex-mac-binhex40-no-magic": with_part(binhex(PROGRAM, magic=False), "application/mac-binhex40"),
    "binhex-octet-stream": with_part(binhex(PROGRAM), "application/octet-stream; name=mac.hqx"),
    "binhex-resource-fork": with_part(TEXT + binhex(b"plain data fork\n", rsrc=PROGRAM)),
    "binhex-message-body": single(TEXT + binhex(PROGRAM)),
    "yenc-text-plain": with_part(TEXT + yenc(PROGRAM)),
    "yenc-octet-stream": with_part(yenc(PROGRAM), "application/octet-stream"),
    "yenc-message-body": single(TEXT + yenc(PROGRAM)),
    "yenc-cte": with_part(yenc(PROGRAM), "application/octet-stream", "Content-Transfer-Encoding: x-yencode\n"),
    "yenc-multipart-pieces": with_part(
        TEXT
        + yenc(PROGRAM[:500], part=1, total=2, size=len(PROGRAM))
        + b"\n"
        + yenc(PROGRAM[500:], part=2, total=2, offset=500, size=len(PROGRAM))
    ),
}


def decoded_hashes(unpacked: mime.Unpacked) -> dict[str, object]:
    return {
        hashlib.sha256(Path(part.decoded_path).read_bytes()).hexdigest(): part
        for part in unpacked.parts
        if part.decoded_path and os.path.exists(part.decoded_path)
    }


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_program_written_as_text_is_a_decoded_part_and_blocked(spool, work, variant):
    settings = make_settings(spool)
    unpacked = unpack_bytes(VARIANTS[variant], work, settings)
    parts = decoded_hashes(unpacked)
    assert PROGRAM_SHA in parts, [(p.declared_type, p.filenames, p.size) for p in unpacked.parts]
    program = parts[PROGRAM_SHA]
    assert program.magic_type == "application/x-dosexec"
    assert program.scan_alone
    assert "application/x-dosexec" in blocking_rules(all_findings(unpacked, settings))


@pytest.mark.parametrize("variant", ["uu-begin-0644", "binhex-text-plain", "yenc-text-plain"])
def test_the_block_names_the_part(spool, work, variant):
    unpacked = unpack_bytes(VARIANTS[variant], work, make_settings(spool))
    assert decoded_hashes(unpacked)[PROGRAM_SHA].filenames == (NAME,)


def test_multi_part_yenc_pieces_make_one_file(spool, work):
    unpacked = unpack_bytes(VARIANTS["yenc-multipart-pieces"], work, make_settings(spool))
    pieces = [p for p in unpacked.parts if p.transfer_encoding == "x-yencode"]
    assert [(p.filenames, p.size) for p in pieces] == [((NAME,), len(PROGRAM))]


def test_binhex_resource_fork_is_a_part_of_its_own(spool, work):
    unpacked = unpack_bytes(VARIANTS["binhex-resource-fork"], work, make_settings(spool))
    forks = {
        p.filenames: Path(p.decoded_path).read_bytes() for p in unpacked.parts if p.transfer_encoding == "x-binhex"
    }
    assert forks == {(NAME,): b"plain data fork\n", (NAME + "/rsrc",): PROGRAM}


def test_every_block_of_a_text_is_a_part(spool, work):
    other = b"MZ" + os.urandom(300)
    body = TEXT + uuencode(PROGRAM) + b"\nand another one:\n" + uuencode(other, b"begin 600 two.dat") + yenc(other)
    unpacked = unpack_bytes(with_part(body), work, make_settings(spool))
    found = decoded_hashes(unpacked)
    assert PROGRAM_SHA in found and hashlib.sha256(other).hexdigest() in found
    assert sorted(p.filenames for p in unpacked.parts if p.depth == 2) == [(NAME,), (NAME,), ("two.dat",)]


def test_blocks_are_bounded_by_the_part_limit(spool, work):
    body = TEXT + b"".join(uuencode(b"MZ%d" % i, b"begin 644 f%d.dat" % i) for i in range(40))
    settings = make_settings(spool, max_parts=10)
    unpacked = unpack_bytes(with_part(body), work, settings)
    assert len(unpacked.parts) == 10
    assert "mime-parts" in blocking_rules(all_findings(unpacked, settings))


def test_blocks_are_bounded_by_the_decoded_bytes_budget(spool, work):
    big = os.urandom(200_000)
    settings = make_settings(spool, max_decoded_bytes=150_000)
    unpacked = unpack_bytes(with_part(TEXT + yenc(big)), work, settings)
    assert sum(p.size for p in unpacked.parts) <= 150_000
    assert "decoded-size" in blocking_rules(all_findings(unpacked, settings))


# ---------------------------------------------------------------- legitimate text


LEGIT = {
    "uuencode-in-prose": b"To send it the old way, the first line must read begin 644 notes.dat and the\n"
    b"rest of the lines follow.  Begin 644 lines are rare these days.\n",
    "begin-at-line-start-in-prose": b"The steps are:\nbegin 2 weeks before the deadline with the outline,\n"
    b"then write the draft.\n\nbegin 644 is the mode line of a uuencoded file.\n",
    "forwarded": b"Begin forwarded message:\n\nFrom: someone\nSubject: hi\n\nhello\n",
    "ybegin-discussion": b"In yEnc the header is\n=ybegin line=128 size=1000 name=example.bin\n"
    b"and the data follows on the next lines.\n",
    "binhex-mention": b"(This file must be converted with BinHex 4.0) is what the first line says.\n",
    "vcard": b"BEGIN:VCARD\nVERSION:3.0\nFN:Alice\nEND:VCARD\n",
}


@pytest.mark.parametrize("text", sorted(LEGIT))
def test_legitimate_text_mentioning_the_encodings_is_not_blocked(spool, work, text):
    settings = make_settings(spool)
    unpacked = unpack_bytes(with_part(LEGIT[text]), work, settings)
    assert blocking_rules(all_findings(unpacked, settings)) == set()
    assert all(p.magic_type != "application/x-dosexec" for p in unpacked.parts)


def test_prose_with_begin_mid_line_makes_no_part(spool, work):
    unpacked = unpack_bytes(with_part(LEGIT["uuencode-in-prose"]), work, make_settings(spool))
    assert [p.depth for p in unpacked.parts] == [0, 1, 1]


# ---------------------------------------------------------------- the decoders themselves


def feed_in_pieces(sink: decoding.DecodingSink, data: bytes, seed: int) -> None:
    chooser = random.Random(seed)
    at = 0
    while at < len(data):
        step = chooser.randint(1, 300)
        sink(data[at : at + step])
        at += step
    sink.close()


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("x-uuencode", b"preamble\n" + uuencode(PROGRAM, b"begin 100644 notes.dat") + b"trailer\n"),
        ("uue", uuencode(PROGRAM).replace(b"\n", b"\r\n")),
        ("mac-binhex40", binhex(PROGRAM)),
        ("x-binhex", binhex(PROGRAM, magic=False)),
        ("x-yencode", yenc(PROGRAM)),
    ],
)
@pytest.mark.parametrize("seed", range(4))
def test_decoding_sink_streams_the_text_encodings(tmp_path, encoding, body, seed):
    budget = [10**9]

    def take(wanted: int) -> int:
        budget[0] -= wanted
        return wanted

    sink = decoding.DecodingSink(take, str(tmp_path / "out"), encoding)
    feed_in_pieces(sink, body, seed)
    assert (tmp_path / "out").read_bytes() == PROGRAM
    assert sink.size == len(PROGRAM) and sink.head.startswith(b"MZ")
    assert sink.block_name == NAME


def test_decoding_sink_keeps_the_text_when_no_block_comes(tmp_path):
    sink = decoding.DecodingSink(lambda n: n, str(tmp_path / "out"), "x-uuencode")
    feed_in_pieces(sink, b"no uuencode here\nat all\n", 1)
    assert (tmp_path / "out").read_bytes() == b"no uuencode here\nat all\n"
    assert sink.block_name is None


@pytest.mark.parametrize(
    ("window", "marked"),
    [
        (b"text\nbegin 644 x\n", True),
        (b"begin 644 x\n", True),
        (b"text\nBeGiN\t0755 x\n", True),
        (b"text\n=ybegin line=128 size=3 name=x\n", True),
        (b"(This file must be converted with BinHex 4.0)\n", True),
        (b"-----BEGIN PGP MESSAGE-----\n", True),
        (b"Begin forwarded message:\n", False),
        (b"they begin 644 lines\n", False),
        (b"beginning\n", False),
        (b"BEGIN:VCARD\n", False),
    ],
)
def test_block_marks(window, marked):
    assert decoding.has_block_mark(window, True) == marked


def test_a_mark_split_between_chunks_is_seen(tmp_path):
    sink = decoding.DecodingSink(lambda n: n, str(tmp_path / "out"), "identity")
    sink(b"x" * 1000 + b"\nbeg")
    sink(b"in 644 a\n")
    sink.close()
    assert sink.text_marks


def test_binhex_run_length_coding_split_between_lines():
    block = textcodings.BinHexBlock()
    out: list[bytes] = []
    assert block.start(out.append)
    for line in binhex(PROGRAM).splitlines(keepends=True)[1:]:
        for piece in (line[:5], line[5:]):  # a 0x90 and its count may come in different pieces
            if not block.feed(piece + b"\n"):
                break
    assert b"".join(out) == PROGRAM


# ---------------------------------------------------------------- the reference readers


def _need(program: str) -> str:
    path = shutil.which(program)
    assert path, f"{program} is installed by tests/install-deps.sh"
    return path


MIME_TOOLS = r"""
use MIME::Parser; use Digest::SHA qw(sha256_hex);
my $parser = MIME::Parser->new; $parser->output_to_core(1); $parser->extract_uuencode(1);
sub walk { my $e = shift; if ($e->parts) { walk($_) for $e->parts } elsif ($e->bodyhandle) {
  my $data = $e->bodyhandle->as_string; print sha256_hex($data), " ", sha256_hex(substr($data, 0, $ARGV[1])), "\n" } }
walk($parser->parse_open($ARGV[0]));
"""


@pytest.mark.parametrize("variant", ["uu-begin-0644", "uu-begin-100644", "uu-no-name", "binhex-text-plain"])
def test_mime_tools_extracts_it(tmp_path, variant):
    message = tmp_path / "m.eml"
    message.write_bytes(VARIANTS[variant])
    done = subprocess.run(
        [_need("perl"), "-e", MIME_TOOLS, str(message), str(len(PROGRAM))], capture_output=True, check=True
    )
    # MIME::Decoder::BinHex writes the forks and their CRCs one after the other: the file starts with the program.
    assert any(PROGRAM_SHA in line.split() for line in done.stdout.decode().splitlines()), done.stdout


@pytest.mark.parametrize("variant", ["uu-BEGIN-upper", "uu-begin-7", "uu-tabs", "uu-octet-stream"])
def test_ripmime_extracts_it(tmp_path, variant):
    message = tmp_path / "m.eml"
    message.write_bytes(VARIANTS[variant])
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run([_need("ripmime"), "-i", str(message), "-d", str(out)], capture_output=True, check=True)
    assert PROGRAM_SHA in {hashlib.sha256(f.read_bytes()).hexdigest() for f in out.iterdir()}


def uudeview(tmp_path, *messages: bytes) -> set[str]:
    """The hashes of the files uudeview (the library amavisd-new reads these with) writes."""
    paths = []
    for number, raw in enumerate(messages):
        paths.append(tmp_path / f"m{number}.eml")
        paths[-1].write_bytes(raw)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run([_need("uudeview"), "-i", "-q", "-p", f"{out}/", *map(str, paths)], capture_output=True, check=False)
    return {hashlib.sha256(f.read_bytes()).hexdigest() for f in out.iterdir()}


@pytest.mark.parametrize("variant", ["yenc-text-plain", "yenc-message-body", "binhex-octet-stream", "uu-begin-7"])
def test_uudeview_extracts_it(tmp_path, variant):
    assert PROGRAM_SHA in uudeview(tmp_path, VARIANTS[variant])


def yenc_piece_messages() -> list[bytes]:
    first = yenc(PROGRAM[:500], part=1, total=2, size=len(PROGRAM))
    second = yenc(PROGRAM[500:], part=2, total=2, offset=500, size=len(PROGRAM))
    return [
        single(first).replace(b"Subject: files", b"Subject: notes (1/2)"),
        single(second).replace(b"files", b"(2/2)"),
    ]


def test_uudeview_joins_yenc_pieces_sent_in_two_messages(tmp_path):
    assert uudeview(tmp_path, *yenc_piece_messages()) == {PROGRAM_SHA}


def test_the_first_yenc_piece_alone_is_blocked(spool, work):
    settings = make_settings(spool)
    unpacked = unpack_bytes(yenc_piece_messages()[0], work, settings)
    assert hashlib.sha256(PROGRAM[:500]).hexdigest() in decoded_hashes(unpacked)
    assert "application/x-dosexec" in blocking_rules(all_findings(unpacked, settings))


def test_python_email_decodes_the_x_uuencode_body():
    message = email.message_from_bytes(VARIANTS["uu-cte-x-uuencode"], policy=email.policy.default)
    assert message.get_payload(1).get_payload(decode=True) == PROGRAM


# ---------------------------------------------------------------- clamd


def clamd_findings(tmp_path, raw: bytes, socket_path: str) -> list[str]:
    config = ScannerConfig("clamd", "virus", (socket_path,), connect_timeout=2.0, scan_timeout=30.0)
    settings = scan_settings(config, spooldir=str(tmp_path / "spool"))
    message = spooled_message(tmp_path, raw, settings)
    try:
        message.unpacked = mime.unpack(message.area.message_path, message.area.unpack_dir, settings, message.remaining)
        (result,) = run_virus_scanners(message)
    finally:
        os.close(message.message_fd)
    assert not result.failed, result.failure_reason
    return [finding.rule for finding in result.findings]


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(with_part(uuencode(EICAR, b"begin 0644 eicar.com"), "application/octet-stream"), id="uu-0644"),
        pytest.param(with_part(uuencode(EICAR, b"BEGIN 644 eicar.com"), "application/octet-stream"), id="uu-BEGIN"),
        pytest.param(with_part(TEXT + yenc(EICAR, "eicar.com")), id="yenc"),
        pytest.param(with_part(TEXT + binhex(EICAR, b"eicar.com")), id="binhex"),
    ],
)
def test_clamd_finds_eicar_written_as_text(tmp_path, clamd_server, raw):
    rules = clamd_findings(tmp_path, raw, clamd_server.socket_path)
    assert any(rule.startswith("Eicar-Test-Signature") for rule in rules), rules


@pytest.mark.parametrize("variant", ["uu-octet-stream", "uu-BEGIN-upper", "binhex-mac-binhex40-no-magic", "yenc-cte"])
def test_the_reformime_unpacker_finds_them_too(spool, work, variant):
    settings = make_settings(spool, mime_unpacker="reformime", reformime_binary=_need("reformime"))
    unpacked = unpack_bytes(VARIANTS[variant], work, settings)
    assert unpacked.unpacker == "reformime"
    assert PROGRAM_SHA in decoded_hashes(unpacked)
