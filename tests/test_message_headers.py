"""The message's own header block: where it ends, values read for logs and alerts, headers we write."""

from __future__ import annotations

import email
import email.policy
import os
import time

import pytest

from actions_fixtures import make_message, make_settings
from qmail_scanner.message_headers import (
    encode_words,
    header_message_id,
    header_safe,
    header_subject,
    raw_header_value,
    read_header_block,
    render_header,
    rewrite_headers,
    rfc2822_date,
    split_header_block,
)
from qmail_scanner.unpack import unpack
from qmail_scanner.unpack.headers import decode_words

FORGED_NAMES = frozenset({b"x-qmail-scanner-diagnostics"})
SPAM_PREFIXES = (b"x-spam-",)


def reader_headers(block: bytes) -> list[tuple[str, str]]:
    """The headers Python's email (a reference mail reader) takes from a header block."""
    parsed = email.message_from_bytes(block + b"\nbody\n", policy=email.policy.compat32)
    return [(name.lower(), str(value)) for name, value in parsed.items()]


def file_fd(tmp_path, content: bytes) -> int:
    path = tmp_path / "message"
    path.write_bytes(content)
    return os.open(path, os.O_RDONLY)


# ---------------------------------------------------------------- where the block ends


def test_message_without_blank_line_is_all_headers_up_to_its_last_newline():
    assert split_header_block(b"From: a@example.net\nSubject: no body\n") == 37
    # An unterminated last line is not a complete header line: it stays after the block.
    assert split_header_block(b"From: a@example.net\nSubject: cut") == 20


def test_blank_line_beyond_the_first_read_is_found_in_the_file(tmp_path):
    headers = b"From: a@example.net\n" + b"X-Long: " + b"v" * 200_000 + b"\n"
    content = headers + b"\nbody\n"
    fd = file_fd(tmp_path, content)
    try:
        head = content[:65536]
        assert split_header_block(head) == head.rfind(b"\n") + 1  # without the file: the last newline seen
        assert split_header_block(head, fd) == len(headers)
        block, end = read_header_block(head, fd)
        assert (block, end) == (headers, len(headers))
    finally:
        os.close(fd)


def test_message_without_blank_line_stops_at_the_limit(tmp_path):
    content = b"From: a@example.net\n" + b"X-Line: value\n" * 1000
    fd = file_fd(tmp_path, content)
    try:
        assert split_header_block(content[:100], fd) == len(content)  # all headers: to the end of the file
        assert split_header_block(content[:100], fd, limit=300) == content[:300].rfind(b"\n") + 1
    finally:
        os.close(fd)


def test_an_empty_crlf_line_ends_the_block_as_readers_end_it():
    # A locally injected CRLF message: the body must not be read (and rewritten) as headers.
    head = b"From: a@example.net\r\nSubject: hi\r\n\r\nX-Spam-Flag: NO\r\nbody\r\n"
    end = split_header_block(head)
    assert head[:end] == b"From: a@example.net\r\nSubject: hi\r\n"
    assert [name for name, _ in reader_headers(head[:end])] == [name for name, _ in reader_headers(head)]
    assert split_header_block(b"\r\nbody\n") == 0


# ---------------------------------------------------------------- reading values


def test_folded_subject_is_unfolded_and_shown_on_one_line(tmp_path):
    raw = b"From: a@example.net\nSubject: quarterly\n\treport\n  figures\nTo: b@example.org\n\nbody\n"
    assert raw_header_value(raw, b"subject") == "quarterly report figures"
    assert raw_header_value(raw, b"to") == "b@example.org"
    assert raw_header_value(raw, b"cc") == ""
    message = make_message(make_settings(tmp_path / "spool"), raw)
    assert header_subject(message) == "quarterly report figures"  # read from the raw block: no unpacker ran


def test_encoded_word_subject_with_a_newline_inside_is_one_safe_line(tmp_path):
    raw = (
        b"From: a@example.net\nMessage-ID: <m1@example.net>\n"
        b"Subject: =?utf-8?q?line_one=0Aline_two=0D=1B=5B31m_end?=\n\nbody\n"
    )
    settings = make_settings(tmp_path / "spool")
    message = make_message(settings, raw)
    message.unpacked = unpack(message.area.message_path, message.area.unpack_dir, settings, message.remaining)
    assert message.unpacked.subject == "line one\nline two\r\x1b[31m end"  # decoded with the control characters
    assert header_subject(message) == "line one line two _[31m end"
    assert header_message_id(message) == "<m1@example.net>"


def test_subject_is_bounded_and_control_characters_replaced(tmp_path):
    raw = b"Subject: " + b"x\x07" * 150 + b"\n\nbody\n"
    message = make_message(make_settings(tmp_path / "spool"), raw)
    subject = header_subject(message)
    assert len(subject) == 200
    assert subject.startswith("x_x_")


def test_header_safe_keeps_one_line():
    assert header_safe("a\nb\rc\td\x00e\u2028f", 100) == "a_b_c_d_e_f"
    assert header_safe("abcdef", 3) == "abc"
    assert header_safe("Réunion à midi") == "Réunion à midi"


# ---------------------------------------------------------------- writing


def test_subject_tag_goes_on_the_first_line_of_a_folded_subject():
    block = b"From: a@example.net\nSubject: quarterly\n\treport\nSubject: second\n"
    rewritten = rewrite_headers(block, FORGED_NAMES, (), "[SPAM]")
    assert rewritten == b"From: a@example.net\nSubject: [SPAM] quarterly\n\treport\nSubject: second\n"
    assert rewrite_headers(rewritten, FORGED_NAMES, (), "[SPAM]") == rewritten  # tagged once


def test_subject_tag_is_added_before_encoded_words_and_when_there_is_no_subject():
    block = b"Subject: =?utf-8?q?d=C3=A9jeuner?=\n"
    rewritten = rewrite_headers(block, FORGED_NAMES, (), "[SPAM]")
    assert rewritten == b"Subject: [SPAM] =?utf-8?q?d=C3=A9jeuner?=\n"
    assert decode_words(rewritten[9:-1].decode()) == "[SPAM] déjeuner"
    assert rewrite_headers(b"From: a@example.net\n", FORGED_NAMES, (), "[SPAM]") == (
        b"From: a@example.net\nSubject: [SPAM]\n"
    )


def test_forged_header_hidden_behind_a_bare_cr_is_removed():
    # Python's email takes a bare CR as a line end, so the X-Spam-Flag below is a header to it.
    block = b"From: a@example.net\nSubject: hi\rX-Spam-Flag: NO\rX-Qmail-Scanner-Diagnostics: clean\n\tall\nTo: b\n"
    assert ("x-spam-flag", "NO") in reader_headers(block)
    rewritten = rewrite_headers(block, FORGED_NAMES, SPAM_PREFIXES, "[SPAM]")
    assert rewritten == b"From: a@example.net\nSubject: [SPAM] hi\rTo: b\n"
    assert reader_headers(rewritten) == [("from", "a@example.net"), ("subject", "[SPAM] hi"), ("to", "b")]


def test_rendered_header_is_one_header_whatever_the_value():
    rendered = render_header("X-Spam-Report", "line one\r\n\n  line two\x1b\nX-Spam-Flag: NO\n")
    assert rendered == b"X-Spam-Report: line one\n\tline two_\n\tX-Spam-Flag: NO\n"
    assert [name for name, _ in reader_headers(rendered)] == ["x-spam-report"]
    assert render_header("X-Bad\nName", "") == b"X-Bad_Name: \n"


def test_encoded_words_round_trip_and_stay_short():
    text = "病毒 found in a message from someone@example.net " * 3
    encoded = encode_words(text)
    assert all(len(word) <= 75 for word in encoded.split(" "))
    assert decode_words(encoded) == text
    assert encode_words("plain ascii") == "plain ascii"


@pytest.mark.parametrize("when", [0.0, 1_700_000_000.0])
def test_rfc2822_date_is_what_email_reads_back(when: float):
    from email.utils import parsedate_to_datetime

    assert parsedate_to_datetime(rfc2822_date(when)).timestamp() == when
    assert rfc2822_date()[:3] == time.strftime("%a")
