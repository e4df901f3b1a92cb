"""The bounded zip reader: same listing and contents as zipfile on real archives, bounded on hostile ones."""

from __future__ import annotations

import io
import struct
import time
import zipfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmail_scanner.unpack.ziplisting import ZipFormatError, open_member, read_listing

CP437_PLACEHOLDER = "CP437NAME"  # written by zipfile as ASCII, then patched to cp437 bytes without the UTF-8 flag


def listing_of(path: Path, max_entries: int = 10_000):
    with open(path, "rb") as source:
        return read_listing(source, max_entries)


def read_all(path: Path, entry, chunk: int = 1000) -> bytes:
    with open(path, "rb") as source, open_member(source, entry) as stream:
        pieces = []
        while True:
            piece = stream.read(chunk)
            assert len(piece) <= chunk
            if not piece:
                return b"".join(pieces)
            pieces.append(piece)


member_names = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters="/\\"), min_size=1, max_size=20),
    st.text(
        st.characters(min_codepoint=0xA0, max_codepoint=0x2FFF, blacklist_categories=("Cs",)), min_size=1, max_size=8
    ),
    st.text(st.sampled_from("éüöàçñÆ£¥ƒ░▒▓│"), min_size=1, max_size=6).map(lambda name: "\x00cp437" + name),
)
members = st.lists(
    st.tuples(
        member_names,
        st.one_of(st.binary(max_size=3000), st.sampled_from([b"", b"a" * 70_000, bytes(range(256)) * 40])),
        st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
        st.booleans(),  # force_zip64
        st.booleans(),  # a directory entry instead
        st.binary(max_size=40),  # member comment
    ),
    min_size=0,
    max_size=6,
)


def build_zip(entries, archive_comment: bytes, prefix: bytes) -> bytes:
    buffer = io.BytesIO()
    cp437_names = []
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, (name, data, method, force_zip64, is_dir, comment) in enumerate(entries):
            name = f"{index}-{name}"
            if "\x00cp437" in name:
                # zipfile writes non-ASCII names as UTF-8 only; a cp437 name is patched in afterwards.
                wanted = name.replace("\x00cp437", "").encode("cp437")
                placeholder = f"{CP437_PLACEHOLDER}{index:03d}".ljust(len(wanted), "_")
                wanted = wanted.ljust(len(placeholder), b"_")
                cp437_names.append((placeholder.encode(), wanted))
                name = placeholder
            if is_dir:
                archive.writestr(zipfile.ZipInfo(name + "/"), b"")
                continue
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            info.comment = comment
            with archive.open(info, "w", force_zip64=force_zip64) as writer:
                writer.write(data)
        archive.comment = archive_comment
    raw = buffer.getvalue()
    for placeholder, wanted in cp437_names:
        raw = raw.replace(placeholder, wanted)
    return prefix + raw


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    entries=members,
    archive_comment=st.binary(max_size=300).filter(lambda comment: b"PK\x05\x06" not in comment),  # as zipfile assumes
    prefix=st.one_of(st.just(b""), st.binary(min_size=1, max_size=2000), st.just(b"MZ" + b"\x90" * 70_000)),
)
def test_listing_and_contents_equal_zipfiles(tmp_path, entries, archive_comment, prefix):
    path = tmp_path / "archive.zip"
    path.write_bytes(build_zip(entries, archive_comment, prefix))
    with zipfile.ZipFile(path) as reference:
        expected = [
            (info.filename, info.flag_bits, info.compress_type, info.compress_size, info.file_size, info.header_offset)
            for info in reference.infolist()
        ]
        expected_dirs = [info.is_dir() for info in reference.infolist()]
        expected_data = [b"" if info.is_dir() else reference.read(info) for info in reference.infolist()]
    listing = listing_of(path)
    assert listing.complete
    assert listing.declared_entries == len(expected)
    got = [(e.name, e.flags, e.method, e.compressed_size, e.size, e.header_offset) for e in listing.entries]
    assert got == expected
    assert [entry.is_dir for entry in listing.entries] == expected_dirs
    assert [b"" if e.is_dir else read_all(path, e, chunk=4096) for e in listing.entries] == expected_data


def test_cp437_and_utf8_names_decode_as_zipfile_decodes_them(tmp_path):
    path = tmp_path / "names.zip"
    path.write_bytes(
        build_zip([("\x00cp437éü", b"x", 0, False, False, b""), ("日本.txt", b"y", 8, False, False, b"")], b"", b"")
    )
    names = [entry.name for entry in listing_of(path).entries]
    assert [names[0].rstrip("_"), names[1]] == ["0-éü", "1-日本.txt"]  # the cp437 name is padded to its placeholder
    assert names == zipfile.ZipFile(path).namelist()


def test_deflated_output_is_bounded_per_read(tmp_path):
    """A 50 MB run of zeros compresses to ~50 KB; each read returns only what was asked for."""
    path = tmp_path / "zeros.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros", bytes(50 << 20))
    (entry,) = listing_of(path).entries
    with open(path, "rb") as source, open_member(source, entry) as stream:
        assert stream.read(4096) == bytes(4096)
        assert stream.read(1) == b"\x00"


# ---------------------------------------------------------------- hostile input


def simple_zip(*members: tuple[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def eocd_at(raw: bytes) -> int:
    return raw.rindex(b"PK\x05\x06")


def with_eocd(raw: bytes, **changes: int) -> bytes:
    """The archive with fields of its end record replaced."""
    at = eocd_at(raw)
    names = ("signature", "disk", "cd_disk", "disk_entries", "entries", "cd_size", "cd_offset", "comment_length")
    fields = dict(zip(names, struct.unpack("<4s4H2LH", raw[at : at + 22])))
    fields.update(changes)
    return raw[:at] + struct.pack("<4s4H2LH", *fields.values()) + raw[at + 22 :]


def test_every_truncation_is_refused_or_read_within_the_file(tmp_path):
    raw = simple_zip(("a.txt", b"alpha" * 200), ("b.txt", b"beta" * 300), method=zipfile.ZIP_DEFLATED)
    path = tmp_path / "cut.zip"
    for length in range(len(raw)):
        path.write_bytes(raw[:length])
        with pytest.raises(ZipFormatError):
            listing_of(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), max_size=6))
def test_corrupted_archives_fail_only_with_zipformaterror(tmp_path, flips):
    raw = bytearray(simple_zip(("a.txt", b"alpha" * 200), ("d/", b""), ("b.bin", bytes(range(256)) * 8)))
    for position, value in flips:
        raw[position % len(raw)] = value
    path = tmp_path / "flipped.zip"
    path.write_bytes(bytes(raw))
    try:
        listing = listing_of(path, 100)
    except ZipFormatError:
        return
    for entry in listing.entries:
        try:
            data = read_all(path, entry)
        except ZipFormatError:
            continue
        assert len(data) <= entry.size


def test_end_record_pointing_outside_the_file_is_refused(tmp_path):
    raw = simple_zip(("a.txt", b"alpha"))
    path = tmp_path / "outside.zip"
    path.write_bytes(with_eocd(raw, cd_size=0xFFFF0000))
    with pytest.raises(ZipFormatError):
        listing_of(path)
    # A directory offset beyond the file shifts every member outside it: listed, never read.
    path.write_bytes(with_eocd(raw, cd_offset=0x7FFFFFFF))
    (entry,) = listing_of(path).entries
    with pytest.raises(ZipFormatError):
        read_all(path, entry)


def test_an_entry_count_larger_than_the_directory_lists_what_is_there(tmp_path):
    path = tmp_path / "count.zip"
    path.write_bytes(with_eocd(simple_zip(("a.txt", b"alpha")), entries=65535, disk_entries=65535))
    listing = listing_of(path)
    assert [entry.name for entry in listing.entries] == ["a.txt"]
    assert listing.declared_entries == 65535


def test_an_entry_running_past_the_directory_is_refused(tmp_path):
    raw = bytearray(simple_zip(("a.txt", b"alpha")))
    central = raw.index(b"PK\x01\x02")
    struct.pack_into("<H", raw, central + 28, 5000)  # name length far beyond the directory
    path = tmp_path / "long-name.zip"
    path.write_bytes(bytes(raw))
    with pytest.raises(ZipFormatError):
        listing_of(path)


def test_entries_sharing_or_overlapping_data_are_not_read_twice(tmp_path):
    raw = simple_zip(("a.txt", b"alpha" * 100), ("b.txt", b"beta" * 100))
    central = raw.index(b"PK\x01\x02")
    second = raw.index(b"PK\x01\x02", central + 4)
    shared = bytearray(raw)
    struct.pack_into("<L", shared, second + 42, 0)  # b.txt's entry points at a.txt's local header
    path = tmp_path / "shared.zip"
    path.write_bytes(bytes(shared))
    entries = listing_of(path).entries
    assert [entry.header_offset for entry in entries] == [0, 0]
    outcomes = []
    for entry in entries:
        try:
            outcomes.append(read_all(path, entry))
        except ZipFormatError:
            outcomes.append(None)
    assert sorted(outcomes, key=lambda value: value is None) == [b"alpha" * 100, None]
    # a.txt claiming more compressed bytes than lie before b.txt's header: the quoted-overlap bomb.
    overlapping = bytearray(raw)
    struct.pack_into("<L", overlapping, central + 20, 600)
    path.write_bytes(bytes(overlapping))
    first, following = listing_of(path).entries
    with pytest.raises(ZipFormatError, match="overlaps"):
        read_all(path, first)
    assert read_all(path, following) == b"beta" * 100


def test_huge_sizes_are_listed_and_never_read_past_the_file(tmp_path):
    raw = bytearray(simple_zip(("a.txt", b"alpha" * 100)))
    central = raw.index(b"PK\x01\x02")
    struct.pack_into("<LL", raw, central + 20, 0xFFFFFFFE, 0xFFFFFFFE)
    path = tmp_path / "huge.zip"
    path.write_bytes(bytes(raw))
    (entry,) = listing_of(path).entries
    assert entry.size == entry.compressed_size == 0xFFFFFFFE  # the caller's declared-size limit sees it
    with pytest.raises(ZipFormatError):
        read_all(path, entry)


def test_a_zip64_extra_field_without_its_values_is_refused(tmp_path):
    raw = bytearray(simple_zip(("a.txt", b"alpha")))
    central = raw.index(b"PK\x01\x02")
    struct.pack_into("<L", raw, central + 24, 0xFFFFFFFF)  # size is "in the Zip64 extra", which is absent
    path = tmp_path / "zip64.zip"
    path.write_bytes(bytes(raw))
    assert listing_of(path).entries[0].size == 0xFFFFFFFF  # no extra field at all: the 32-bit value stands
    name_length = struct.unpack_from("<H", raw, central + 28)[0]
    patched = (
        raw[: central + 46 + name_length] + struct.pack("<HH", 1, 4) + b"\x00" * 4 + raw[central + 46 + name_length :]
    )
    struct.pack_into("<H", patched, central + 30, 8)
    at = eocd_at(bytes(patched))
    struct.pack_into("<L", patched, at + 12, struct.unpack_from("<L", patched, at + 12)[0] + 8)
    path.write_bytes(bytes(patched))
    with pytest.raises(ZipFormatError, match="Zip64"):
        listing_of(path)


def test_ten_million_claimed_entries_stop_at_the_limit_quickly(tmp_path):
    """A directory of 200 000 real entries behind a Zip64 end record claiming 10 million."""
    one = simple_zip(("x", b""))
    central_at = one.index(b"PK\x01\x02")
    local, entry = one[:central_at], one[central_at : eocd_at(one)]
    count = 200_000
    directory = entry * count
    zip64_record = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 10_000_000, 10_000_000, len(directory), len(local)
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(local) + len(directory), 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    path = tmp_path / "many.zip"
    path.write_bytes(local + directory + zip64_record + locator + end)
    started = time.monotonic()
    listing = listing_of(path, 1000)
    assert time.monotonic() - started < 0.5
    assert len(listing.entries) == 1000
    assert not listing.complete
    assert listing.declared_entries == 10_000_000
    # The same claim with a directory size beyond the file is refused before any entry is read.
    bigger = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 10_000_000, 10_000_000, 10_000_000 * 46, 0)
    path.write_bytes(local + directory + bigger + locator + end)
    started = time.monotonic()
    with pytest.raises(ZipFormatError):
        listing_of(path, 1000)
    assert time.monotonic() - started < 0.5


def test_an_encrypted_member_is_listed_and_flagged_but_not_read(tmp_path):
    raw = bytearray(simple_zip(("secret.doc", b"ciphertext" * 10), ("plain.txt", b"hello")))
    struct.pack_into("<H", raw, 6, 1)  # local header flags
    struct.pack_into("<H", raw, raw.index(b"PK\x01\x02") + 8, 1)  # central directory flags
    path = tmp_path / "encrypted.zip"
    path.write_bytes(bytes(raw))
    secret, plain = listing_of(path).entries
    assert zipfile.ZipFile(path).infolist()[0].flag_bits & 1  # zipfile sees it encrypted as well
    assert secret.encrypted and secret.name == "secret.doc" and secret.size == 100
    assert not plain.encrypted
    with pytest.raises(ZipFormatError, match="encrypted"):
        read_all(path, secret)
    assert read_all(path, plain) == b"hello"


def test_a_bad_crc_is_refused_at_the_end_of_the_member(tmp_path):
    raw = bytearray(simple_zip(("a.txt", b"alpha" * 100)))
    struct.pack_into("<L", raw, raw.index(b"PK\x01\x02") + 16, zlib.crc32(b"other"))
    path = tmp_path / "crc.zip"
    path.write_bytes(bytes(raw))
    (entry,) = listing_of(path).entries
    with pytest.raises(ZipFormatError, match="CRC"):
        read_all(path, entry)


def test_an_unknown_compression_method_is_refused(tmp_path):
    raw = bytearray(simple_zip(("a.txt", b"alpha")))
    struct.pack_into("<H", raw, raw.index(b"PK\x01\x02") + 10, 99)
    path = tmp_path / "method.zip"
    path.write_bytes(bytes(raw))
    (entry,) = listing_of(path).entries
    with pytest.raises(ZipFormatError, match="method 99"):
        read_all(path, entry)
