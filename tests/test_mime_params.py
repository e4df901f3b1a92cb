"""The hand-written header parsers of unpack/headers.py give exactly what the regular expressions they replaced gave.

unpack/headers.py parses Content-Type/Content-Disposition parameters, comments, RFC 2047 encoded words
and RFC 2231 %-escapes without `re`, because importing re costs every message about 5 ms of
start-up. The reference implementations below are the regex versions the unpacker used
before; hypothesis feeds both the same generated header values.
"""

from __future__ import annotations

import binascii
import re

from hypothesis import given, settings, strategies

from qmail_scanner import formatcheck, policy
from qmail_scanner.unpack import headers as mime_headers
from qmail_scanner.unpack import textcodings

# ---------------------------------------------------------------- the regex versions

_PARAM = re.compile(r';[ \t\r\n]*([^\s=;]+)[ \t\r\n]*=[ \t\r\n]*("(?:[^"\\]|\\.)*"?|[^;]*)', re.S)
_COMMENT = re.compile(r"\([^()]*\)")
_ENCODED_WORD = r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?="
_BETWEEN_WORDS = r"(\?=)[ \t\r\n]+(=\?)"
_PERCENT = rb"%([0-9A-Fa-f]{2})"


def regex_split_content_header(value: bytes) -> tuple[str, list[tuple[str, str]]]:
    text = mime_headers.header_text(value)
    main, _, rest = text.partition(";")
    main = (_COMMENT.sub("", main) if "(" in main else main).strip().lower()
    params: list[tuple[str, str]] = []
    if rest:
        for match in _PARAM.finditer(";" + rest):
            param_value = match.group(2).strip()
            if param_value.startswith('"'):
                param_value = (
                    param_value[1:-1] if param_value.endswith('"') and len(param_value) > 1 else param_value[1:]
                )
                param_value = re.sub(r"\\(.)", r"\1", param_value) if "\\" in param_value else param_value
            params.append((match.group(1).lower(), param_value))
    return main, params


def _regex_decode_word(match: re.Match) -> str:
    charset = match.group(1).split("*")[0]
    data = match.group(3).encode("ascii", "replace")
    try:
        if match.group(2) in "bB":
            raw = binascii.a2b_base64(data + b"=" * (-len(data) % 4))
        else:
            raw = binascii.a2b_qp(data, header=True)
    except (binascii.Error, ValueError):
        return match.group(0)
    try:
        return raw.decode(charset, "replace")
    except LookupError:
        return raw.decode("latin-1")


def regex_decode_words(text: str) -> str:
    if "=?" not in text:
        return text
    text = re.sub(_BETWEEN_WORDS, r"\1\2", text)
    return re.sub(_ENCODED_WORD, _regex_decode_word, text)


def regex_percent_decode(raw: bytes) -> bytes:
    return re.sub(_PERCENT, lambda m: bytes([int(m.group(1), 16)]), raw)


# ---------------------------------------------------------------- generated header values

# Every character the grammar treats specially, blanks \s knows but the folding rules do not
# (\x0b, \x1c, NBSP, EM SPACE), and a few ordinary ones.
PARAM_ALPHABET = ";=\"\\ \t\r\n()*'%?aAbBqQnN0147fF._-/\x0b\x1c\xa0\u2003é"
PARAM_PIECES = [
    "; ",
    ";",
    "name",
    "filename",
    "name*",
    "name*0*",
    "name*1",
    "filename*=",
    "=",
    " = ",
    '"',
    '\\"',
    "\\",
    "\\\n",
    "utf-8''",
    "us-ascii'en'",
    "%41",
    "%e9",
    "%4",
    "%%",
    "=?utf-8?q?caf=C3=A9?=",
    "=?utf-8?b?Y2Fmw6k=?=",
    "=?iso-8859-1?Q?a_b?=",
    "?= =?",
    "(comment)",
    "((nested) x)",
    "text/plain",
    "multipart/mixed",
    "boundary",
    "charset",
    "\r\n\t",
]
header_text = strategies.one_of(
    strategies.text(PARAM_ALPHABET, max_size=60),
    strategies.lists(
        strategies.one_of(strategies.sampled_from(PARAM_PIECES), strategies.text(PARAM_ALPHABET, max_size=4)),
        max_size=14,
    ).map("".join),
    strategies.text(max_size=40),
)
blanks = strategies.text(" \t\r\n\x0b", max_size=2)
name = strategies.sampled_from(["name", "Name*", "filename*0*", "filename*1", "x", 'a"b', ""])
value = strategies.one_of(
    strategies.text(PARAM_ALPHABET, max_size=8),
    strategies.lists(strategies.sampled_from(["a", "\\", '\\"', ";", " ", "\n", "%e9", "=?"]), max_size=6).map(
        lambda pieces: '"' + "".join(pieces)
    ),
)
parameter = strategies.tuples(
    strategies.sampled_from([";", ";;", " ;"]), blanks, name, blanks, strategies.sampled_from(["=", "", "=="]), blanks
).map("".join)
# Well-formed and nearly well-formed parameter lists, some ending inside a quoted string or on
# a lone backslash (the hardest case for a hand-written scanner).
structured = strategies.tuples(
    strategies.sampled_from(["text/plain", "multipart/mixed (x)", ""]),
    strategies.lists(strategies.tuples(parameter, value).map("".join), max_size=5).map("".join),
    strategies.sampled_from(["", '"', "\\", '"x\\', "\\\\", ";"]),
).map("".join)
header_text = header_text | structured


@settings(max_examples=3000, deadline=None)
@given(header_text, strategies.sampled_from(["utf-8", "latin-1"]))
def test_parameter_parser_matches_the_regex(text: str, encoding: str) -> None:
    value = text.encode(encoding, "replace")
    assert mime_headers.split_content_header(value) == regex_split_content_header(value)


@settings(max_examples=1000, deadline=None)
@given(header_text, strategies.sampled_from(["name", "filename", "boundary"]))
def test_rfc2231_values_match_the_regex(text: str, wanted: str) -> None:
    params = mime_headers.split_content_header(("text/plain" + text).encode("utf-8"))[1]
    original = mime_headers._percent_decode
    try:
        ours = mime_headers.param_values(params, wanted)
        mime_headers._percent_decode = regex_percent_decode
        theirs = mime_headers.param_values(params, wanted)
    finally:
        mime_headers._percent_decode = original
    assert ours == theirs


@settings(max_examples=2000, deadline=None)
@given(header_text)
def test_encoded_words_decode_like_the_regex(text: str) -> None:
    assert mime_headers.decode_words(text) == regex_decode_words(text)


@settings(max_examples=1000, deadline=None)
@given(strategies.binary(max_size=30) | strategies.text("%0aF9g", max_size=20).map(str.encode))
def test_percent_escapes_decode_like_the_regex(raw: bytes) -> None:
    assert mime_headers._percent_decode(raw) == regex_percent_decode(raw)


@settings(max_examples=1000, deadline=None)
@given(strategies.text("()ab \\", max_size=30))
def test_comments_strip_like_the_regex(text: str) -> None:
    assert mime_headers.strip_comments(text) == _COMMENT.sub("", text)


def test_known_parameter_shapes() -> None:
    assert mime_headers.split_content_header(b'Text/Plain (a comment); charset="utf-8"; format=flowed') == (
        "text/plain",
        [("charset", "utf-8"), ("format", "flowed")],
    )
    assert mime_headers.split_content_header(b'application/x; name="a\\"b;c.exe"; x=1') == (
        "application/x",
        [("name", 'a"b;c.exe'), ("x", "1")],
    )
    params = mime_headers.split_content_header(b"application/x; name*0*=utf-8''%e2%82%ac; name*1*=%2eexe")[1]
    assert mime_headers.param_values(params, "name") == ["\u20ac.exe"]
    assert mime_headers.decode_words("=?utf-8?q?caf=C3=A9?= =?utf-8?b?IGx1bmNo?=") == "café lunch"
    assert mime_headers.decode_words("=?bogus?q?x?= a ?= =? b") == "x a ?==? b"


# ---------------------------------------------------------------- formatcheck's header lines and names

_HEADER_NAME = rb"[!-9;-~]+[ \t]*:"
_BARE_CR = rb"\r(?!\n)"


@settings(max_examples=2000, deadline=None)
@given(strategies.binary(max_size=12) | strategies.text("ab-:( )\t\r\n\x7f\xe9;9", max_size=12).map(str.encode))
def test_header_line_and_bare_cr_checks_match_the_regex(line: bytes) -> None:
    assert mime_headers.is_header_line(line) == bool(re.match(_HEADER_NAME, line))
    assert (line.count(b"\r") != line.count(b"\r\n")) == bool(re.search(_BARE_CR, line))


@settings(max_examples=2000, deadline=None)
@given(strategies.text("ab.{}- \texe0F", max_size=24) | strategies.text(max_size=16))
def test_name_checks_skip_re_only_when_the_regex_cannot_match(name: str) -> None:
    assert formatcheck.is_double_barrelled(name) == bool(
        re.search(formatcheck._DOUBLE_EXTENSION, name.rstrip(" .\t\r\n\x00"))
    )
    assert formatcheck.has_clsid_extension(name) == bool(re.search(formatcheck._CLSID, name))


# ---------------------------------------------------------------- policy rules that are not really regexes

_PLAIN_NAME = re.compile(r"[\w.~ -]+")
_HEADER_NAME_TEXT = re.compile(r"[!-9;-~]+")


@settings(max_examples=2000, deadline=None)
@given(strategies.text("aZ09_.~ -*$:\t\xe9\u00b2\u0660!", max_size=10) | strategies.text(max_size=8))
def test_policy_name_classes_match_the_regex(value: str) -> None:
    assert policy._is_plain(value) == bool(_PLAIN_NAME.fullmatch(value))
    assert policy._is_header_name(value) == bool(_HEADER_NAME_TEXT.fullmatch(value))


def test_the_fold_table_covers_every_character_re_pairs_with_ascii() -> None:
    every_char = "".join(map(chr, range(0x110000)))
    for ascii_char in map(chr, range(32, 127)):
        for match in re.finditer(re.escape(ascii_char), every_char, re.I):
            assert match.group().translate(policy._ASCII_FOLD) == ascii_char.lower(), hex(match.start())


FOLD_ALPHABET = "aAbBkKiIsSzZ09 -/.\n\u0130\u0131\u017f\u212a\xe9\xc9"


@settings(max_examples=3000, deadline=None)
@given(strategies.text(FOLD_ALPHABET + "*+?|", min_size=1, max_size=6), strategies.text(FOLD_ALPHABET, max_size=12))
def test_literal_rules_match_like_the_regex(pattern: str, value: str) -> None:
    try:
        compiled = re.compile(pattern, re.I)
    except re.error:
        return
    anchored = re.compile(f"^{pattern}$", re.I)  # header rules: the whole value, as the original
    assert policy._header_matches(pattern, [value]) == bool(anchored.search(value))
    assert policy._type_matches(pattern, value) == bool(compiled.fullmatch(value))


# ---------------------------------------------------------------- uuencode begin lines

_UU_BEGIN = rb"(?i:begin)[ \t][ \t]*(\S+)(.*)"


def _uu_mode_some_reader_takes(mode: bytes) -> bool:
    """MIME-tools: /^begin [0-7]{3}/; Python's email: int(mode, 8); ripmime: atoi(mode) in 1..777."""
    if re.match(rb"[0-7]{3}", mode):
        return True
    try:
        int(mode, 8)
        return True
    except ValueError:
        match = re.match(rb"\+?(\d+)", mode)
        return bool(match) and 1 <= int(match.group(1)) <= 777


@settings(max_examples=3000, deadline=None)
@given(
    strategies.tuples(
        strategies.sampled_from([b"begin", b"BEGIN", b"Begin", b"begin-base64", b"begi", b""]),
        strategies.text(" \t0147895a.x+-_o\r\n\x0b\x0c", max_size=14).map(str.encode),
    ).map(b"".join)
)
def test_uuencode_begin_lines_are_those_some_reader_takes(line: bytes) -> None:
    match = re.fullmatch(_UU_BEGIN, line, re.S)
    expected = None
    if match and _uu_mode_some_reader_takes(match.group(1)):
        expected = match.group(2).strip().split(b"\n", 1)[0].split(b"\r", 1)[0]
    assert textcodings.uu_begin(line) == expected


def test_rfc2231_character_split_across_segments_is_joined_before_decoding():
    params = [("filename*0*", "utf-8''%e2%82"), ("filename*1*", "%ac.txt")]
    assert mime_headers.param_values(params, "filename") == ["\u20ac.txt"]
