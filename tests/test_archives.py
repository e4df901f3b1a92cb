"""Archives opened as a user's system opens them: every format and method, nested, typed, bounded, failing closed.

Archives are made at test time with the real tools (zipfile, 7zz, bsdtar, gzip/bzip2/xz/zstd,
xorriso, gcab); each holds a small Windows program under an innocent name, which the policy
must find by its real type wherever it sits.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from archive_samples import zip_of
from daemons import EICAR, clamd_server_fixture  # noqa: F401 - fixture
from mime_fixtures import ROOT, all_findings, blocking_rules, make_settings, spool, unpack_bytes, work  # noqa: F401
from qmail_scanner.unpack import magictype
from qmail_scanner.unpack.archives import inspect_archive
from qmail_scanner.unpack.sink import PartSink

sys.path.insert(0, str(ROOT / "lib"))
from qsconfigure.probes import probe_libarchive

PROGRAM = b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 56 + b"PE\x00\x00" + bytes(range(256)) * 40
INNOCENT = "invoice.pdf"
LIBARCHIVE = probe_libarchive(sys.executable)


def libarchive_path() -> str:
    assert LIBARCHIVE.found, f"configure's probe finds no libarchive: {LIBARCHIVE.detail}"
    return LIBARCHIVE.value


def message_with(name: str, data: bytes) -> bytes:
    return (
        b"From: a@example.org\nTo: b@example.net\nSubject: files\nMIME-Version: 1.0\n"
        b"Content-Type: multipart/mixed; boundary=BOUNDARY\n\n--BOUNDARY\nContent-Type: text/plain\n\nsee attached\n"
        b'--BOUNDARY\nContent-Type: application/octet-stream; name="' + name.encode() + b'"\n'
        b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(data) + b"--BOUNDARY--\n"
    )


def run(argv: list[str], cwd: Path) -> None:
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def made_by_tool(tmp_path: Path, kind: str, members: list[tuple[str, bytes]]) -> bytes:
    """An archive of `kind` holding `members`, made by the tool a user would use."""
    source = tmp_path / f"src-{kind}-{len(list(tmp_path.iterdir()))}"
    source.mkdir()
    for name, data in members:
        (source / name).write_bytes(data)
    names = [name for name, _ in members]
    out = source / "out"
    if kind.startswith("zip-"):  # 7-Zip's zip methods
        run(["7zz", "a", "-tzip", f"-mm={kind[4:]}", str(out), *names], source)
    elif kind == "7z":
        run(["7zz", "a", "-t7z", str(out), *names], source)
    elif kind in ("tar", "tar.gz", "tar.bz2", "tar.xz", "tar.zst", "cpio"):
        options = {"tar": [], "tar.gz": ["-z"], "tar.bz2": ["-j"], "tar.xz": ["-J"], "tar.zst": ["--zstd"]}
        fmt = ["--format", "newc"] if kind == "cpio" else options[kind]
        run(["bsdtar", "-c", *fmt, "-f", str(out), *names], source)
    elif kind in ("gz", "bz2", "xz", "zst"):
        program = {"gz": "gzip", "bz2": "bzip2", "xz": "xz", "zst": "zstd"}[kind]
        run([program, "-q", str(source / names[0])], source)
        return (source / f"{names[0]}.{kind}").read_bytes()
    elif kind == "iso":
        run(["xorriso", "-as", "mkisofs", "-quiet", "-o", str(out), *names], source)
    elif kind == "cab":
        run(["gcab", "-c", "-z", str(out), *names], source)
    else:
        raise AssertionError(kind)
    produced = out if out.exists() else next(source.glob("out.*"))
    return produced.read_bytes()


def unpack_archive(tmp_path: Path, spool: Path, work: Path, name: str, data: bytes, **changes: object):  # noqa: F811
    settings = make_settings(spool, unzip=False, libarchive_path=libarchive_path(), **changes)
    unpacked = unpack_bytes(message_with(name, data), work, settings)
    return unpacked, blocking_rules(all_findings(unpacked, settings))


def members_named(unpacked, name: str) -> list:
    return [p for p in unpacked.parts if p.container and name in p.filenames]


FORMATS = [
    ("zip-Deflate", "a.zip"),
    ("zip-BZip2", "a.zip"),
    ("zip-LZMA", "a.zip"),
    ("zip-PPMd", "a.zip"),
    ("7z", "a.7z"),
    ("tar", "a.tar"),
    ("tar.gz", "a.tar.gz"),
    ("tar.bz2", "a.tar.bz2"),
    ("tar.xz", "a.tar.xz"),
    ("tar.zst", "a.tar.zst"),
    ("cpio", "a.cpio"),
    ("gz", "invoice.pdf.gz"),
    ("bz2", "invoice.pdf.bz2"),
    ("xz", "invoice.pdf.xz"),
    ("zst", "invoice.pdf.zst"),
    ("cab", "a.cab"),
]


@pytest.mark.parametrize(("kind", "name"), FORMATS, ids=[kind for kind, _ in FORMATS])
def test_a_program_under_an_innocent_name_is_found_by_its_real_type(tmp_path, spool, work, kind, name):  # noqa: F811
    archive = made_by_tool(tmp_path, kind, [(INNOCENT, PROGRAM), ("notes.txt", b"quarterly figures\n" * 50)])
    unpacked, rules = unpack_archive(tmp_path, spool, work, name, archive)
    (member,) = members_named(unpacked, INNOCENT)
    assert member.magic_type == "application/x-dosexec"
    assert member.container == name
    assert "application/x-dosexec" in rules
    assert not rules & {"archive-unreadable", "zip-bomb"}


def test_python_zipfile_methods_stored_deflate_bzip2_lzma(tmp_path, spool, work):  # noqa: F811
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        unpacked, rules = unpack_archive(tmp_path, spool, work, "a.zip", zip_of([(INNOCENT, PROGRAM)], method))
        (member,) = members_named(unpacked, INNOCENT)
        assert member.magic_type == "application/x-dosexec", method
        assert "application/x-dosexec" in rules
        # clamd decodes stored, deflate and bzip2 members itself; an LZMA member it is handed decoded.
        assert member.scan_alone == (method == zipfile.ZIP_LZMA), method
        if member.scan_alone:
            assert Path(member.decoded_path).read_bytes() == PROGRAM


def test_nested_zip_in_7z_in_tar_gz_is_followed_without_unzip(tmp_path, spool, work):  # noqa: F811
    inner = zip_of([(INNOCENT, PROGRAM)])
    middle = made_by_tool(tmp_path, "7z", [("b.zip", inner)])
    outer = made_by_tool(tmp_path, "tar.gz", [("c.7z", middle)])
    unpacked, rules = unpack_archive(tmp_path, spool, work, "a.tar.gz", outer)
    (member,) = members_named(unpacked, INNOCENT)
    assert member.container == "a.tar.gz/c.7z/b.zip"
    assert member.magic_type == "application/x-dosexec"
    assert member.depth == 4  # MIME part 1, then three archive levels
    assert "application/x-dosexec" in rules


def test_iso_image_inside_an_archive_is_opened(tmp_path, spool, work):  # noqa: F811
    image = made_by_tool(tmp_path, "iso", [(INNOCENT, PROGRAM)])
    unpacked, rules = unpack_archive(tmp_path, spool, work, "disk.zip", zip_of([("disk.img", image)]))
    (member,) = members_named(unpacked, INNOCENT)
    assert member.container == "disk.zip/disk.img"
    assert "application/x-dosexec" in rules


def sink_for(tmp_path: Path, spool: Path, **changes: object) -> PartSink:  # noqa: F811
    settings = make_settings(spool, unzip=False, libarchive_path=libarchive_path(), **changes)
    unpack_dir = tmp_path / f"sink-{len(list(tmp_path.iterdir()))}"
    unpack_dir.mkdir()
    return PartSink(str(unpack_dir), settings, lambda: 1000.0, "internal")


def inspect_file(sink: PartSink, name: str, data: bytes):
    """An attachment as the walker leaves it (decoded to a work file, typed by its head), opened as archive."""
    part = sink.new_part(1, "application/octet-stream", b"", filenames=(name,), size=len(data))
    part.decoded_path = sink.work_file(part)
    Path(part.decoded_path).write_bytes(data)
    part.magic_type = magictype.detect(data[: magictype.HEAD_BYTES], sink.settings)
    inspect_archive(sink, part, name, 2)
    return sink.result


@pytest.mark.parametrize(
    "prefix", [b"#!/bin/sh\necho self-extracting\nexit 0\n" * 200, PROGRAM], ids=["text-junk", "sfx-stub"]
)
def test_zip_with_bytes_in_front_is_found_by_its_end_record(tmp_path, spool, prefix):  # noqa: F811
    data = prefix + zip_of([(INNOCENT, PROGRAM)])
    assert magictype.archive_kind(data[:4096], None, 0) == ""
    sink = sink_for(tmp_path, spool)
    path = tmp_path / "prefixed"
    path.write_bytes(data)
    assert magictype.archive_kind(data[:4096], str(path), len(data)) == "zip"
    result = inspect_file(sink, "readme.txt", data)
    (member,) = [p for p in result.parts if p.container]
    assert member.magic_type == "application/x-dosexec"


def test_iso_image_is_found_by_its_volume_descriptor(tmp_path, spool):  # noqa: F811
    image = made_by_tool(tmp_path, "iso", [(INNOCENT, PROGRAM)])
    result = inspect_file(sink_for(tmp_path, spool), "photos.img", image)
    assert [p.magic_type for p in result.parts if p.container] == ["application/x-dosexec"]


def test_nesting_past_the_archive_depth_limit_is_quarantined_naming_it(tmp_path, spool, work):  # noqa: F811
    data = zip_of([(INNOCENT, PROGRAM)])
    for level in range(18):
        data = zip_of([(f"level{level}.zip", data)])
    unpacked, rules = unpack_archive(tmp_path, spool, work, "deep.zip", data)
    assert "archive-depth" in rules
    reason = next(f.reason for f in unpacked.findings if f.rule == "archive-depth")
    assert "deeper than 10 levels" in reason
    # Within the limit, the members past clamd's recursion limit (17, MIME levels counted) are handed over decoded.
    unpacked, rules = unpack_archive(tmp_path, spool, work, "deep.zip", data, max_archive_depth=25, max_depth=40)
    assert "archive-depth" not in rules and "application/x-dosexec" in rules
    (member,) = members_named(unpacked, INNOCENT)
    assert member.depth == 20 and member.scan_alone and Path(member.decoded_path).read_bytes() == PROGRAM


def test_member_over_the_expansion_ratio_is_a_bomb(tmp_path, spool, work):  # noqa: F811
    zeros = made_by_tool(tmp_path, "tar.xz", [("zeros.bin", b"\x00" * (8 << 20))])
    unpacked, rules = unpack_archive(tmp_path, spool, work, "a.tar.xz", zeros, max_expansion_ratio=50)
    assert "zip-bomb" in rules
    assert "expands beyond 50 times" in next(f.reason for f in unpacked.findings if f.rule == "zip-bomb")
    assert sum(p.stat().st_size for p in work.rglob("p*") if p.is_file()) < 2 << 20


def test_hostile_corrupt_archive_is_quarantined_with_the_reason(tmp_path, spool, work):  # noqa: F811
    archive = bytearray(zip_of([(INNOCENT, PROGRAM + os.urandom(2000))]))
    middle = len(archive) // 2
    archive[middle : middle + 40] = os.urandom(40)  # the member's data no longer decodes (or fails its CRC)
    unpacked, rules = unpack_archive(tmp_path, spool, work, "a.zip", bytes(archive))
    assert "archive-unreadable" in rules
    reason = next(f.reason for f in unpacked.findings if f.rule == "archive-unreadable")
    assert "a.zip" in reason and INNOCENT in reason
    seven = bytearray(made_by_tool(tmp_path, "7z", [(INNOCENT, PROGRAM + os.urandom(3000))]))
    seven[40:80] = os.urandom(40)
    _, rules = unpack_archive(tmp_path, spool, work, "a.7z", bytes(seven))
    assert "archive-unreadable" in rules


def test_legit_shapes_are_delivered(tmp_path, spool, work):  # noqa: F811
    document = zip_of([("[Content_Types].xml", b"<Types/>"), ("word/document.xml", b"<w:document/>" * 100)])
    seven = made_by_tool(tmp_path, "7z", [("report.txt", os.urandom(3000))])
    # A document with junk after it (as some mail gateways append), a "zip" that is really text, an empty zip,
    # a 7z cut short (its header is at the end: 7-Zip and bsdtar cannot open it, no member can reach the user).
    for name, data in (
        ("Attachment.zip", seven[: len(seven) // 2]),
        ("report.docx", document + b"\r\n-- \r\nsent from my phone\r\n"),
        ("notes.zip", b"these are my notes, not a zip\n" * 10),
        ("empty.zip", zip_of([])),
        ("photos.tar.gz", made_by_tool(tmp_path, "tar.gz", [("a.txt", b"hello\n")])),
    ):
        _, rules = unpack_archive(tmp_path, spool, work, name, data)
        assert not rules, (name, rules)


def test_encrypted_archives_keep_their_crypto_tags(tmp_path, spool, work):  # noqa: F811
    source = tmp_path / "enc"
    source.mkdir()
    (source / INNOCENT).write_bytes(PROGRAM)
    run(["7zz", "a", "-t7z", "-psecret", "-mhe=on", str(source / "h.7z"), INNOCENT], source)
    run(["7zz", "a", "-t7z", "-psecret", str(source / "d.7z"), INNOCENT], source)
    run(["7zz", "a", "-tzip", "-psecret", str(source / "z.zip"), INNOCENT], source)
    for name, tag in (("h.7z", "7Z(encrypted)"), ("d.7z", "7Z(encrypted)"), ("z.zip", "ZIP(encrypted)")):
        unpacked, rules = unpack_archive(tmp_path, spool, work, name, (source / name).read_bytes())
        assert tag in unpacked.crypto, name
        assert "archive-unreadable" not in rules
        assert "password-protected" in rules  # make_settings blocks password-protected archives


def test_without_libarchive_the_standard_library_still_opens_tar_and_gzip(tmp_path, spool, work):  # noqa: F811
    for kind, name in (("tar.gz", "a.tar.gz"), ("xz", "invoice.pdf.xz")):
        archive = made_by_tool(tmp_path, kind, [(INNOCENT, PROGRAM)])
        settings = make_settings(spool, unzip=False, libarchive_path="")
        unpacked = unpack_bytes(message_with(name, archive), work, settings)
        assert [p.magic_type for p in members_named(unpacked, INNOCENT)] == ["application/x-dosexec"], kind
    # A format with no reader at all on the host is quarantined, never delivered unread.
    cab = made_by_tool(tmp_path, "cab", [(INNOCENT, PROGRAM)])
    settings = make_settings(spool, unzip=False, libarchive_path="")
    unpacked = unpack_bytes(message_with("a.cab", cab), work, settings)
    assert "archive-unreadable" in blocking_rules(all_findings(unpacked, settings))


def test_unusable_libarchive_path_falls_back_with_a_log_line(tmp_path, spool, work, capfd):  # noqa: F811
    archive = made_by_tool(tmp_path, "tar.gz", [(INNOCENT, PROGRAM)])
    settings = make_settings(spool, unzip=False, libarchive_path=str(tmp_path / "no-such-libarchive.so"))
    unpacked = unpack_bytes(message_with("a.tar.gz", archive), work, settings)
    assert [p.magic_type for p in members_named(unpacked, INNOCENT)] == ["application/x-dosexec"]
    assert "unusable" in capfd.readouterr().err


def test_eicar_in_an_lzma_zip_is_found_by_real_clamd(tmp_path, spool, work, clamd_server):  # noqa: F811
    from scanner_fixtures import clamd_scan_of_unpacked, scan_settings
    from test_scanners_clamd import clamd_config

    raw = message_with("statement.zip", zip_of([("statement.txt", EICAR)], zipfile.ZIP_LZMA))
    settings = scan_settings(
        clamd_config(clamd_server.socket_path),
        spooldir=str(tmp_path / "spool2"),
        libarchive_path=libarchive_path(),
    )
    result, _unpacked = clamd_scan_of_unpacked(tmp_path, raw, settings)
    assert [f.rule.startswith("Eicar-Test-Signature") for f in result.findings] == [True]
    assert result.findings[0].part_name == "statement.txt"  # found in the decoded member, not the raw message


@pytest.mark.parametrize("tool", ["7zz", "bsdtar", "xorriso", "gcab", "zstd", "xz", "bzip2"])
def test_the_archive_tools_are_installed(tool):
    assert shutil.which(tool), f"{tool} missing: tests/install-deps.sh installs it"


@pytest.mark.parametrize(("kind", "name"), [*FORMATS, ("iso", "a.iso")], ids=[k for k, _ in FORMATS] + ["iso"])
def test_clamd_finds_eicar_in_every_format_raw_or_handed_decoded(tmp_path, work, clamd_server, kind, name):  # noqa: F811
    """What the unpacker leaves to clamd's own reading of the message, clamd must really read."""
    from scanner_fixtures import clamd_scan_of_unpacked, scan_settings
    from test_scanners_clamd import clamd_config

    raw = message_with(name, made_by_tool(tmp_path, kind, [("statement.txt", EICAR)]))
    settings = scan_settings(
        clamd_config(clamd_server.socket_path), spooldir=str(tmp_path / "spool2"), libarchive_path=libarchive_path()
    )
    result, _unpacked = clamd_scan_of_unpacked(tmp_path, raw, settings)
    assert [f.rule.startswith("Eicar-Test-Signature") for f in result.findings] == [True]


# --- zip methods no library here reads: Deflate64 (Windows Explorer's "Send to > Compressed folder" for large
# files) and implode (PKZIP 1.x): 7-Zip decodes them, else the inflate64 module (Deflate64), else quarantine.

SEVENZIP = shutil.which("7zz") or ""
CLAM_EXE = (Path("/usr/share/clamav-testfiles") / "clam.exe").read_bytes()


def deflate64_zip(tmp_path: Path, members: list[tuple[str, bytes]]) -> bytes:
    data = made_by_tool(tmp_path, "zip-Deflate64", members)
    methods = {info.compress_type for info in zipfile.ZipFile(io.BytesIO(data)).infolist()}
    assert methods == {9}, methods  # 7-Zip really wrote Deflate64 (it falls back to stored for tiny files)
    return data


def implode_zip() -> bytes:
    """The only implode writer is PKZIP 1.x: clamav-testfiles' clam.impl.zip is such an archive."""
    data = (Path("/usr/share/clamav-testfiles") / "clam.impl.zip").read_bytes()
    assert [info.compress_type for info in zipfile.ZipFile(io.BytesIO(data)).infolist()] == [6]
    return data


def test_the_configure_probe_finds_7zip_decoding_deflate64():
    from qsconfigure.probes import probe_sevenzip

    found = probe_sevenzip()
    assert found.found and found.value == SEVENZIP, found


def test_deflate64_member_is_decoded_by_7zip_and_blocked_by_its_real_type(tmp_path, spool, work):  # noqa: F811
    notes = b"quarterly figures, region by region\n" * 2000
    archive = deflate64_zip(tmp_path, [(INNOCENT, PROGRAM), ("notes.txt", notes)])
    unpacked, rules = unpack_archive(tmp_path, spool, work, "Compressed.zip", archive, sevenzip_binary=SEVENZIP)
    (member,) = members_named(unpacked, INNOCENT)
    assert member.magic_type == "application/x-dosexec"
    assert "application/x-dosexec" in rules and "archive-unreadable" not in rules
    # clamd reads Deflate64 itself (clam.d64.zip below): the member needs no work file of its own.
    assert not member.scan_alone
    (text,) = members_named(unpacked, "notes.txt")
    assert text.size == len(notes)
    assert not list(work.rglob("member*.zip")), "the one-member copies handed to 7-Zip are removed"


def test_implode_member_is_decoded_by_7zip(tmp_path, spool, work):  # noqa: F811
    unpacked, rules = unpack_archive(tmp_path, spool, work, "old.zip", implode_zip(), sevenzip_binary=SEVENZIP)
    (member,) = members_named(unpacked, "CLAM.EXE")
    assert member.magic_type == "application/x-dosexec" and member.size == len(CLAM_EXE)
    assert "archive-unreadable" not in rules


def test_without_7zip_the_inflate64_module_decodes_deflate64(tmp_path, spool, work):  # noqa: F811
    import inflate64

    site = str(Path(inflate64.__file__).parent.parent)
    archive = deflate64_zip(tmp_path, [(INNOCENT, PROGRAM), ("notes.txt", b"x" * 300_000)])
    unpacked, rules = unpack_archive(
        tmp_path, spool, work, "a.zip", archive, sevenzip_binary="", have_inflate64=True, extra_sys_path=(site,)
    )
    (member,) = members_named(unpacked, INNOCENT)
    assert member.magic_type == "application/x-dosexec"
    assert "archive-unreadable" not in rules
    (zeros,) = members_named(unpacked, "notes.txt")
    assert zeros.size == 300_000  # the whole member, checked against its CRC at its end


def test_without_7zip_or_inflate64_such_members_are_quarantined_naming_the_method(tmp_path, spool, work):  # noqa: F811
    archive = deflate64_zip(tmp_path, [(INNOCENT, PROGRAM)])
    for name, data, method in (("a.zip", archive, "9 (deflate64)"), ("old.zip", implode_zip(), "6 (implode)")):
        unpacked, rules = unpack_archive(tmp_path, spool, work, name, data, sevenzip_binary="", have_inflate64=False)
        assert "archive-unreadable" in rules, name
        reason = next(f.reason for f in unpacked.findings if f.rule == "archive-unreadable")
        assert f"compression method {method}" in reason and name in reason


def test_a_corrupt_deflate64_member_is_quarantined_with_7zips_reason(tmp_path, spool, work):  # noqa: F811
    archive = bytearray(deflate64_zip(tmp_path, [(INNOCENT, PROGRAM + os.urandom(3000))]))
    archive[200:240] = os.urandom(40)
    unpacked, rules = unpack_archive(tmp_path, spool, work, "a.zip", bytes(archive), sevenzip_binary=SEVENZIP)
    assert "archive-unreadable" in rules
    reason = next(f.reason for f in unpacked.findings if f.rule == "archive-unreadable")
    assert INNOCENT in reason and "7-Zip could not decode it" in reason


def test_7zip_output_stops_at_the_decoded_bytes_budget(tmp_path, spool, work):  # noqa: F811
    text = b"".join(b"line %d of a long report\n" % n for n in range(400_000))  # 10 MB, compresses about 10 times
    archive = deflate64_zip(tmp_path, [("report.txt", text)])
    unpacked, rules = unpack_archive(
        tmp_path, spool, work, "a.zip", archive, sevenzip_binary=SEVENZIP, max_decoded_bytes=1_000_000
    )
    assert "decoded-size" in rules
    (member,) = members_named(unpacked, "report.txt")
    assert member.size <= 1_000_000
    assert not list(work.rglob("member*.zip"))


@pytest.mark.parametrize("sample", ["clam.d64.zip", "clam.impl.zip"])
def test_clamd_reads_deflate64_and_implode_itself(tmp_path, work, clamd_server, sample):  # noqa: F811
    """clamav-testfiles' Deflate64 and implode zips: clamd finds clam.exe in the raw message, not handed over."""
    from daemons import CLAM_EXE_SIGNATURE
    from scanner_fixtures import clamd_scan_of_unpacked, scan_settings
    from test_scanners_clamd import clamd_config

    raw = message_with(sample, (Path("/usr/share/clamav-testfiles") / sample).read_bytes())
    settings = scan_settings(
        clamd_config(clamd_server.socket_path),
        spooldir=str(tmp_path / "spool2"),
        libarchive_path=libarchive_path(),
        sevenzip_binary=SEVENZIP,
    )
    result, unpacked = clamd_scan_of_unpacked(tmp_path, raw, settings)
    (member,) = [p for p in unpacked.parts if p.container]
    assert member.magic_type == "application/x-dosexec" and not member.scan_alone
    assert [f.rule.startswith(CLAM_EXE_SIGNATURE) for f in result.findings] == [True]


def test_eicar_in_a_deflate64_zip_is_found_by_real_clamd(tmp_path, work, clamd_server):  # noqa: F811
    from scanner_fixtures import clamd_scan_of_unpacked, scan_settings
    from test_scanners_clamd import clamd_config

    # EICAR alone is too short for 7-Zip to compress: padding makes it a real Deflate64 stream.
    archive = deflate64_zip(tmp_path, [("statement.txt", EICAR + b"\n" + b"a" * 5000)])
    raw = message_with("statement.zip", archive)
    settings = scan_settings(
        clamd_config(clamd_server.socket_path),
        spooldir=str(tmp_path / "spool2"),
        libarchive_path=libarchive_path(),
        sevenzip_binary=SEVENZIP,
    )
    result, _unpacked = clamd_scan_of_unpacked(tmp_path, raw, settings)
    assert [f.rule.startswith("Eicar-Test-Signature") for f in result.findings] == [True]


# --- RAR: no free program writes RAR, so tests/rar5.py builds RAR5 archives of stored files by the format description.


def test_the_rar5_builder_writes_what_bsdtar_and_rarfile_read(tmp_path):
    import rarfile

    from rar5 import rar5_stored

    path = tmp_path / "a.rar"
    path.write_bytes(rar5_stored([(INNOCENT, PROGRAM), ("sub/notes.txt", b"hello\n")]))
    listing = subprocess.run(["bsdtar", "-tvf", str(path)], check=True, capture_output=True, text=True).stdout
    assert INNOCENT in listing and "sub/notes.txt" in listing
    extracted = subprocess.run(["bsdtar", "-xOf", str(path), INNOCENT], check=True, capture_output=True).stdout
    assert extracted == PROGRAM
    with rarfile.RarFile(str(path)) as archive:  # a second, independent reader (it checks the header CRCs)
        assert archive.read("sub/notes.txt") == b"hello\n"
        assert [info.filename for info in archive.infolist()] == [INNOCENT, "sub/notes.txt"]


def test_a_program_in_a_rar_is_found_by_its_real_type(tmp_path, spool, work):  # noqa: F811
    from rar5 import rar5_stored

    archive = rar5_stored([(INNOCENT, PROGRAM), ("notes.txt", b"figures\n" * 100)])
    unpacked, rules = unpack_archive(tmp_path, spool, work, "scan.rar", archive)
    (member,) = members_named(unpacked, INNOCENT)
    assert member.magic_type == "application/x-dosexec" and member.container == "scan.rar"
    assert "application/x-dosexec" in rules and "archive-unreadable" not in rules
    # Debian's clamd has no unrar: every RAR member is handed to it decoded.
    assert member.scan_alone and Path(member.decoded_path).read_bytes() == PROGRAM


def test_a_rar_nested_in_a_zip_is_opened(tmp_path, spool, work):  # noqa: F811
    from rar5 import rar5_stored

    outer = zip_of([("docs/scan.rar", rar5_stored([(INNOCENT, PROGRAM)]))])
    unpacked, rules = unpack_archive(tmp_path, spool, work, "a.zip", outer)
    (member,) = members_named(unpacked, INNOCENT)
    assert member.container == "a.zip/docs/scan.rar" and member.magic_type == "application/x-dosexec"
    assert "application/x-dosexec" in rules


@pytest.mark.parametrize(
    ("payload", "signature", "found_in"),
    [(EICAR, "Eicar-Test-Signature", ""), (CLAM_EXE, "ClamAV-Test-File", "statement.pdf")],
    ids=["eicar", "clam.exe"],
)
def test_viruses_in_a_rar_are_found_by_real_clamd(tmp_path, work, clamd_server, payload, signature, found_in):  # noqa: F811
    """clamd (no unrar) finds stored EICAR in the raw bytes, clam.exe (an MD5 signature) only in the decoded member."""
    from rar5 import rar5_stored
    from scanner_fixtures import clamd_scan_of_unpacked, scan_settings
    from test_scanners_clamd import clamd_config

    raw = message_with("statement.rar", rar5_stored([("statement.pdf", payload)]))
    settings = scan_settings(
        clamd_config(clamd_server.socket_path), spooldir=str(tmp_path / "spool2"), libarchive_path=libarchive_path()
    )
    result, unpacked = clamd_scan_of_unpacked(tmp_path, raw, settings)
    (member,) = [p for p in unpacked.parts if p.container]
    assert member.scan_alone
    assert [f.rule.startswith(signature) for f in result.findings] == [True]
    assert result.findings[0].part_name == found_in
