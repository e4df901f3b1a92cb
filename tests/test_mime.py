"""The streaming unpacker: corpus verdicts, encodings, archives, TNEF, limits, memory, reformime parity."""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from archive_samples import zip_of
from mime_fixtures import (
    CORPUS,
    ROOT,
    all_findings,
    blocking_rules,
    expected_corpus,
    make_settings,
    unpack_bytes,
    unpack_file,
)
from qmail_scanner import unpack as mime
from qmail_scanner.outcomes import TEMP_TIMEOUT, TemporaryFailure

FAKE_EXE = b"MZ\x90\x00" + b"\x00" * 60 + b"PE\x00\x00" + b"x" * 100


def mixed(*parts: bytes, boundary: bytes = b"BOUNDARY") -> bytes:
    out = b"From: a@example.org\nSubject: t\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=" + boundary
    out += b"\n\n"
    for part in parts:
        out += b"--" + boundary + b"\n" + part + (b"" if part.endswith(b"\n") else b"\n")
    return out + b"--" + boundary + b"--\n"


def b64_part(name: str, data: bytes, content_type: str = "application/octet-stream") -> bytes:
    return (f'Content-Type: {content_type}; name="{name}"\nContent-Transfer-Encoding: base64\n\n').encode() + (
        base64.encodebytes(data)
    )


# ---------------------------------------------------------------- the corpus


@pytest.mark.parametrize(
    ("level", "name", "rules", "crypto"),
    [(level, *row) for level in (1, 2) for row in expected_corpus(level)],
    ids=lambda v: v if isinstance(v, str) else f"fix-mime-{v}" if isinstance(v, int) else "",
)
def test_corpus_verdicts(level: int, name: str, rules: set[str], crypto: set[str], spool: Path, work: Path) -> None:
    settings = make_settings(spool, fix_mime=level)
    unpacked = unpack_file(CORPUS / name, work, settings)
    assert blocking_rules(all_findings(unpacked, settings)) == rules
    assert set(unpacked.crypto) == crypto


def test_corpus_covers_every_format_rule() -> None:
    from qmail_scanner.formatcheck import RULES

    covered = set().union(*(rules for level in (1, 2) for _, rules, _ in expected_corpus(level)))
    assert set(RULES) <= covered


def test_corpus_files_match_their_generator(tmp_path: Path) -> None:
    sys.path.insert(0, str(CORPUS))
    import make_corpus

    for name, data in make_corpus.messages().items():
        assert (CORPUS / name).read_bytes() == data, name


# ---------------------------------------------------------------- encodings and names


def test_each_encoding_decodes_to_the_original_bytes(spool: Path, work: Path) -> None:
    payload = bytes(range(256)) * 40
    qp_text = "Grüße = 100 %\n" * 30
    message = mixed(
        b64_part("blob.bin", payload),
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
        + binascii.b2a_qp(qp_text.encode()),
        b"Content-Type: text/plain\n\nbegin 600 old.bin\n"
        + b"".join(binascii.b2a_uu(payload[i : i + 45]) for i in range(0, len(payload), 45))
        + b"`\nend\n",
        b"Content-Type: application/octet-stream; name=raw.bin\nContent-Transfer-Encoding: binary\n\n"
        + b"\x00\x01\x02 raw",
    )
    unpacked = unpack_bytes(message, work, make_settings(spool))
    by_name = {p.filenames[0]: p for p in unpacked.parts if p.filenames}
    assert Path(by_name["blob.bin"].decoded_path).read_bytes() == payload
    assert Path(by_name["old.bin"].decoded_path).read_bytes() == payload
    assert by_name["old.bin"].transfer_encoding == "x-uuencode"
    assert Path(by_name["raw.bin"].decoded_path).read_bytes() == b"\x00\x01\x02 raw"
    qp_part = next(p for p in unpacked.parts if p.transfer_encoding == "quoted-printable")
    assert Path(qp_part.decoded_path).read_bytes() == qp_text.encode().rstrip(b"\n")


def test_base64_with_odd_line_lengths_and_junk(spool: Path, work: Path) -> None:
    payload = os.urandom(5000)
    encoded = base64.b64encode(payload)
    ragged = b"\n".join(encoded[i : i + 37] for i in range(0, len(encoded), 37)).replace(b"A", b"A \t", 5)
    message = mixed(
        b'Content-Type: application/octet-stream; name="r.bin"\nContent-Transfer-Encoding: base64\n\n' + ragged + b"\n"
    )
    unpacked = unpack_bytes(message, work, make_settings(spool))
    assert Path(unpacked.parts[1].decoded_path).read_bytes() == payload


def test_crlf_message_decodes_like_lf(spool: Path, work: Path) -> None:
    payload = os.urandom(3000)
    message = mixed(b64_part("a.bin", payload)).replace(b"\n", b"\r\n")
    unpacked = unpack_bytes(message, work, make_settings(spool))
    assert Path(unpacked.parts[1].decoded_path).read_bytes() == payload
    assert unpacked.top_headers.endswith(b"boundary=BOUNDARY\r\n")


def test_rfc2231_and_rfc2047_names(spool: Path, work: Path) -> None:
    message = mixed(
        b"Content-Type: application/pdf\nContent-Disposition: attachment;\n filename*0*=iso-8859-1''r%E9sum;\n"
        b' filename*1="\xc3\xa9.pdf"\n\nx',
        b'Content-Type: application/pdf; name="=?utf-8?Q?na=C3=AFve?= =?utf-8?B?LnBkZg==?="\n\nx',
    )
    unpacked = unpack_bytes(message, work, make_settings(spool))
    assert unpacked.parts[1].filenames == ("résumé.pdf",)
    assert unpacked.parts[2].filenames == ("naïve.pdf",)


def test_top_headers_body_offset_and_helpers(spool: Path, work: Path) -> None:
    message = b"Subject: =?utf-8?q?caf=C3=A9?=\nMessage-ID: <x@y>\nX-Long: a\n b\n\nbody\n"
    path = work / "m.eml"
    path.write_bytes(message)
    unpacked = unpack_file(path, work, make_settings(spool))
    assert unpacked.top_headers == message[: message.index(b"\n\n") + 1]
    assert message[unpacked.body_offset :] == b"body\n"
    assert unpacked.subject == "café"
    assert unpacked.message_id == "<x@y>"
    assert unpacked.header_values("x-long") == ["a b"]
    assert unpack_file(path, work, make_settings(spool, normalize=False)).subject == "=?utf-8?q?caf=C3=A9?="
    assert not unpacked.has_attachments


def test_missing_close_delimiter_and_truncated_message(spool: Path, work: Path) -> None:
    message = mixed(b64_part("a.pdf", b"%PDF-1.4 x"), b64_part("b.exe", FAKE_EXE))
    truncated = message[: message.rindex(b"--BOUNDARY--")] + b"TVqQAA"
    unpacked = unpack_bytes(truncated, work, make_settings(spool))
    assert [p.filenames for p in unpacked.parts[1:]] == [("a.pdf",), ("b.exe",)]
    assert ".exe" in blocking_rules(all_findings(unpacked, make_settings(spool)))


# ---------------------------------------------------------------- archives


def test_zip_members_listed_with_sizes_and_types_without_unzip(spool: Path, work: Path) -> None:
    message = mixed(b64_part("a.zip", zip_of([("doc/readme.txt", b"hello" * 10), ("tool.exe", FAKE_EXE)])))
    settings = make_settings(spool, unzip=False)
    unpacked = unpack_bytes(message, work, settings)
    members = [p for p in unpacked.parts if p.container]
    assert [(m.filenames, m.size, m.container) for m in members] == [
        (("doc/readme.txt",), 50, "a.zip"),
        (("tool.exe",), len(FAKE_EXE), "a.zip"),
    ]
    assert members[1].magic_type == "application/x-dosexec"
    # Decoded and typed without --unzip too; clamd reads deflate zips itself: not handed to it alone, no work file.
    assert members[1].decoded_path is None and not members[1].scan_alone


def test_nested_zips_are_followed_with_unzip(spool: Path, work: Path) -> None:
    inner = zip_of([("x/evil.scr", b"not really")])
    middle = zip_of([("inner.zip", inner)])
    outer = zip_of([("middle.zip", middle)])
    settings = make_settings(spool, unzip=True)
    unpacked = unpack_bytes(mixed(b64_part("outer.zip", outer)), work, settings)
    deepest = [p for p in unpacked.parts if p.filenames == ("x/evil.scr",)]
    assert deepest and deepest[0].container == "outer.zip/middle.zip/inner.zip"
    assert ".scr" in blocking_rules(all_findings(unpacked, settings))
    without = unpack_bytes(mixed(b64_part("outer.zip", outer)), work, make_settings(spool, unzip=False))
    assert [p.container for p in without.parts if p.filenames == ("x/evil.scr",)] == [deepest[0].container]


def test_zip_bomb_by_ratio(spool: Path, work: Path) -> None:
    bomb = zip_of([("zeros.bin", b"\x00" * (20 << 20))])
    settings = make_settings(spool, max_expansion_ratio=100)
    unpacked = unpack_bytes(mixed(b64_part("bomb.zip", bomb)), work, settings)
    rules = blocking_rules(all_findings(unpacked, settings))
    assert "zip-bomb" in rules
    assert "expands" in next(f.reason for f in unpacked.findings if f.rule == "zip-bomb")
    assert sum(p.stat().st_size for p in work.rglob("p*") if p.is_file()) < 2 << 20  # nothing was inflated


def test_zip_bomb_by_member_count(spool: Path, work: Path) -> None:
    many = zip_of([(f"f{i}.txt", b"x") for i in range(300)])
    settings = make_settings(spool, max_parts=100)
    unpacked = unpack_bytes(mixed(b64_part("many.zip", many)), work, settings)
    assert {"zip-bomb", "mime-parts"} & blocking_rules(all_findings(unpacked, settings))
    assert len(unpacked.parts) <= 100


def test_zip_total_size_limit(spool: Path, work: Path) -> None:
    archive = zip_of([("a.txt", os.urandom(300_000))], zipfile.ZIP_STORED)
    settings = make_settings(spool, max_zip_size=100_000)
    unpacked = unpack_bytes(mixed(b64_part("big.zip", archive)), work, settings)
    assert "zip-bomb" in blocking_rules(unpacked.findings)


def test_corrupt_zip_is_not_a_crash(spool: Path, work: Path) -> None:
    settings = make_settings(spool)
    unpacked = unpack_bytes(mixed(b64_part("bad.zip", b"PK\x03\x04" + os.urandom(300))), work, settings)
    assert unpacked.parts[1].magic_type == "application/zip"
    all_findings(unpacked, settings)


def _tnef_message() -> bytes:
    sys.path.insert(0, str(CORPUS))
    import make_corpus

    return make_corpus


@pytest.mark.parametrize("way", ["tnefparse", "tnef-program"])
@pytest.mark.parametrize("bad_checksum", [False, True])
def test_tnef_with_an_executable_inside(way: str, bad_checksum: bool, spool: Path, work: Path) -> None:
    make_corpus = _tnef_message()
    if way == "tnef-program" and not shutil.which("tnef"):
        pytest.skip("the tnef program is not installed")
    tnef = make_corpus.make_tnef("setup.exe", FAKE_EXE, bad_checksum=bad_checksum)
    settings = make_settings(spool, have_tnefparse=(way == "tnefparse"), tnef_binary=shutil.which("tnef") or "")
    unpacked = unpack_bytes(mixed(b64_part("winmail.dat", tnef, "application/ms-tnef")), work, settings)
    member = next(p for p in unpacked.parts if p.container == "winmail.dat")
    assert member.filenames == ("setup.exe",)
    assert member.magic_type == "application/x-dosexec"
    assert Path(member.decoded_path).read_bytes() == FAKE_EXE
    assert {".exe", "application/x-dosexec"} <= blocking_rules(all_findings(unpacked, settings))


@pytest.mark.skipif(not Path("/usr/share/clamav-testfiles/clam.tnef").exists(), reason="clamav-testfiles missing")
def test_real_world_tnef_file(spool: Path, work: Path) -> None:
    data = Path("/usr/share/clamav-testfiles/clam.tnef").read_bytes()
    for tnefparse in (True, False):
        settings = make_settings(spool, have_tnefparse=tnefparse)
        unpacked = unpack_bytes(mixed(b64_part("winmail.dat", data, "application/ms-tnef")), work, settings)
        assert [p.filenames for p in unpacked.parts if p.container] == [("clam.exe",)]


def test_seven_zip_listing(spool: Path, work: Path, tmp_path: Path) -> None:
    py7zr = pytest.importorskip("py7zr")
    archive_path = tmp_path / "a.7z"
    with py7zr.SevenZipFile(archive_path, "w") as archive:
        archive.writestr(b"payload", "run.vbs")
    unpacked = unpack_bytes(mixed(b64_part("a.7z", archive_path.read_bytes())), work, make_settings(spool))
    assert [p.filenames for p in unpacked.parts if p.container] == [("run.vbs",)]


# ---------------------------------------------------------------- limits


def test_thousands_of_nested_multiparts(spool: Path, work: Path) -> None:
    levels = 5000
    head = b"Subject: deep\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b0\n\n"
    body = b"".join(b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i, i + 1) for i in range(levels))
    body += b"--b%d\nContent-Type: text/plain\n\nbottom\n" % levels
    body += b"".join(b"--b%d--\n" % i for i in range(levels, -1, -1))
    settings = make_settings(spool)
    started = time.monotonic()
    unpacked = unpack_bytes(head + body, work, settings)
    assert time.monotonic() - started < 10
    assert "mime-depth" in blocking_rules(all_findings(unpacked, settings))
    assert max(p.depth for p in unpacked.parts) <= settings.max_depth


def test_part_count_limit(spool: Path, work: Path) -> None:
    message = mixed(*[b"Content-Type: text/plain\n\nx" for _ in range(60)])
    unpacked = unpack_bytes(message, work, make_settings(spool, max_parts=20))
    assert "mime-parts" in blocking_rules(unpacked.findings)
    assert len(unpacked.parts) == 20


def test_decoded_bytes_limit(spool: Path, work: Path) -> None:
    message = mixed(b64_part("a.bin", os.urandom(200_000)), b64_part("b.bin", os.urandom(200_000)))
    unpacked = unpack_bytes(message, work, make_settings(spool, max_decoded_bytes=250_000))
    assert "decoded-size" in blocking_rules(unpacked.findings)
    assert sum(p.size for p in unpacked.parts[1:]) == 250_000


def test_out_of_time_is_a_temporary_failure(spool: Path, work: Path) -> None:
    with pytest.raises(TemporaryFailure) as failure:
        unpack_bytes(mixed(b64_part("a.bin", b"x")), work, make_settings(spool), remaining=lambda: 0.0)
    assert failure.value.exit_code == TEMP_TIMEOUT


CHILD = r"""
import resource, sys
sys.path.insert(0, sys.argv[1])
from qmail_scanner import unpack as mime
from qmail_scanner.settings import Settings
unpacked = mime.unpack(sys.argv[2], sys.argv[3], Settings(max_decoded_bytes=10**9), lambda: 1000.0)
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    # Linux carries the parent's high-water mark into ru_maxrss across fork+exec; VmHWM is this
    # program's own peak.
    with open("/proc/self/status") as status:
        peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    pass
print(peak_kb, unpacked.parts[1].size, unpacked.parts[1].filenames[0])
"""


def test_50_mb_attachment_peak_memory(tmp_path: Path) -> None:
    size = 50 << 20
    path = tmp_path / "big.eml"
    block = os.urandom(57 * 1024)
    with path.open("wb") as out:
        out.write(
            b"Subject: big\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=B\n\n--B\n"
            b'Content-Type: application/octet-stream; name="big.iso"\nContent-Transfer-Encoding: base64\n\n'
        )
        for _ in range(size // len(block)):
            out.write(base64.encodebytes(block))
        out.write(b"--B--\n")
    unpack_dir = tmp_path / "unpack"
    unpack_dir.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(ROOT / "lib"), str(path), str(unpack_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    rss_kb, decoded, name = done.stdout.split()
    assert name == "big.iso"
    assert int(decoded) == size // len(block) * len(block)
    assert int(rss_kb) < 64 * 1024, f"peak RSS {int(rss_kb) // 1024} MB"


def test_clean_small_message_takes_one_pass_and_one_work_file(spool: Path, work: Path) -> None:
    """Its cost is measured by make bench; here, that the plain path does no extra work: one pass, nothing for clamd."""
    text = b"From: a@example.org\nTo: b@example.net\nSubject: hi\nMessage-ID: <1@x>\n\n" + b"Just text.\n" * 370
    path = work / "small.eml"
    path.write_bytes(text)
    unpack_dir = work / "u"
    unpack_dir.mkdir()
    unpacked = mime.unpack(str(path), str(unpack_dir), make_settings(spool), lambda: 100.0)
    assert (unpacked.readings, len(unpacked.parts), unpacked.ambiguities) == (1, 1, [])
    assert not unpacked.parts[0].scan_alone
    assert [entry.name for entry in unpack_dir.iterdir()] == ["p00000"]


def test_unpack_imports_only_cheap_modules() -> None:
    code = "import qmail_scanner.unpack, qmail_scanner.formatcheck, qmail_scanner.policy"
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-I",
            "-S",
            "-c",
            f"import sys; sys.path.insert(0, {str(ROOT / 'lib')!r}); {code}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    for heavy in ("email", "email.parser", "zipfile", "subprocess", "magic", "tnefparse", "urllib.parse"):
        assert heavy not in imported


# ---------------------------------------------------------------- reformime parity

AMBIGUOUS = "many-readings.eml"  # two boundaries per multipart: reformime takes one


@pytest.mark.skipif(not shutil.which("reformime"), reason="reformime not installed")
@pytest.mark.parametrize(
    "name",
    # Ambiguous by design: parsers disagree on these, which is why the unpacker reads them every way.
    [
        n
        for n, _, _ in expected_corpus()
        if n not in ("duplicate-boundary.eml", "prefix-boundary.eml", "ambiguous-boundary.eml", AMBIGUOUS)
    ],
)
def test_reformime_gives_the_same_part_list(name: str, spool: Path, work: Path) -> None:
    # reformime takes one reading; the internal unpacker's first reading is the one to compare.
    internal = unpack_file(CORPUS / name, work, make_settings(spool, fix_mime=2))
    external = unpack_file(
        CORPUS / name, work, make_settings(spool, mime_unpacker="reformime", reformime_binary=shutil.which("reformime"))
    )

    def shape(unpacked: mime.Unpacked) -> list[tuple]:
        return [
            (p.depth, p.declared_type, p.filenames, p.size, p.magic_type, p.container, p.raw_headers)
            for p in unpacked.parts
            if p.index not in unpacked.lenient_parts  # what ripmime alone makes of text: the internal one's extra
        ]

    assert shape(external) == shape(internal)
    assert (external.top_headers, external.body_offset, external.crypto) == (
        internal.top_headers,
        internal.body_offset,
        internal.crypto,
    )
