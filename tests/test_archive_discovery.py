"""Attachments that are archives only to a reader looking past the first bytes: found as 7-Zip and unzip find them."""

from __future__ import annotations

import pytest

from archive_samples import zip_of
from mime_fixtures import all_findings, blocking_rules, make_settings, spool, unpack_bytes, work  # noqa: F401
from test_archives import INNOCENT, PROGRAM, libarchive_path, made_by_tool, message_with

PREFIXES = {
    "shell-script": b"#!/bin/sh\necho self-extracting archive\nexit 0\n" * 200,
    "program-stub": b"MZ" + b"\x00" * 20000,
    "short-text": b"Hello, see the attached data.\n",
}


@pytest.mark.parametrize("prefix", PREFIXES.values(), ids=PREFIXES.keys())
@pytest.mark.parametrize("name", ["readme.txt", "data.bin", "photo.jpg"])
def test_a_zip_behind_other_bytes_is_opened_whatever_the_attachment_is_called(spool, work, prefix, name):  # noqa: F811
    settings = make_settings(spool, libarchive_path=libarchive_path())
    unpacked = unpack_bytes(message_with(name, prefix + zip_of([(INNOCENT, PROGRAM)])), work, settings)
    members = [p for p in unpacked.parts if p.container and INNOCENT in p.filenames]
    assert [p.magic_type for p in members] == ["application/x-dosexec"]
    assert "application/x-dosexec" in blocking_rules(all_findings(unpacked, settings))


def test_an_iso_image_attached_under_any_name_is_opened(tmp_path, spool, work):  # noqa: F811
    settings = make_settings(spool, libarchive_path=libarchive_path())
    image = made_by_tool(tmp_path, "iso", [(INNOCENT, PROGRAM)])
    unpacked = unpack_bytes(message_with("holiday.jpg", image), work, settings)
    assert [p.magic_type for p in unpacked.parts if p.container] == ["application/x-dosexec"]
    assert "application/x-dosexec" in blocking_rules(all_findings(unpacked, settings))


def test_text_that_only_mentions_a_zip_end_record_is_not_an_archive(spool, work):  # noqa: F811
    settings = make_settings(spool, libarchive_path=libarchive_path())
    text = b"The end record starts with PK\x05\x06 followed by counts.\n" * 10
    unpacked = unpack_bytes(message_with("notes.txt", text), work, settings)
    assert [p for p in unpacked.parts if p.container] == []
    assert blocking_rules(all_findings(unpacked, settings)) == set()
