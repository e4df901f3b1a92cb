"""Reading MIME header blocks: unfolding, Content-* values and their parameters, RFC 2047/2231 decoding.

Parsed by hand: importing re (and enum with it) would cost every message about 5 ms of
start-up, and email's header registry is slower still.
"""

from __future__ import annotations

import binascii

_FOLDING_BLANKS = " \t\r\n"
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
_HEADER_NAME_BYTES = bytes(c for c in range(33, 127) if c != ord(":"))  # printable, no blank, no colon
_TOKEN_BYTES = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.*"
# A header value is decoded and split into parameters up to this many bytes (characters): a
# Subject past it is neither shown nor read by anyone, and a Content-* value past it is a
# finding of its own (the walker's header-size). Every step over a value is a Python step per
# encoded word or parameter; 64 KB of them cost milliseconds, 2 MB cost seconds.
MAX_VALUE_TEXT = 1 << 16
NAME_PARAMETERS = (("content-type", "name"), ("content-disposition", "filename"))
# The spellings every reader (and clamd) decodes alike: the plain path.
PLAIN_ENCODINGS = frozenset(
    ["", "7bit", "8bit", "binary", "base64", "quoted-printable", "x-uuencode", "uuencode", "x-uue"]
)
HEADER_SPELLING = {
    "content-type": "Content-Type",
    "content-transfer-encoding": "Content-Transfer-Encoding",
    "content-disposition": "Content-Disposition",
}


def header_text(value: bytes) -> str:
    """Header bytes as text: UTF-8 when valid, else Latin-1 (never fails)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def line_groups(raw: bytes, shadow: bytes) -> list[tuple[int, int, int]]:
    """(start, end of the first line, end) of each line and the continuation lines folded under it.

    `shadow` is `raw` translated so that line ends are b"\\n", blanks that fold a line b" " and
    nothing else is either (the same length). A group ends before the next line that does not
    start with a blank; a continuation on the first line forms a group of its own. Found with
    find (C speed): a header folded into a million short lines is one step, not a million.
    """
    groups = []
    size = len(raw)
    next_other = shadow.find(b"\nx")
    next_empty = shadow.find(b"\n\n")
    start = 0
    while start < size:
        if 0 <= next_other < start:
            next_other = shadow.find(b"\nx", start)
        if 0 <= next_empty < start:
            next_empty = shadow.find(b"\n\n", start)
        ends = [at for at in (next_other, next_empty) if at >= 0]
        end = min(ends) + 1 if ends else size
        first_end = shadow.find(b"\n", start, end)
        groups.append((start, first_end + 1 if first_end >= 0 else end, end))
        start = end
    return groups


# parse_headers' shadow of a block: LF kept, space and tab ' ', everything else 'x'.
HEADER_SHADOW = bytes(10 if c == 10 else 32 if c in (32, 9) else 120 for c in range(256))


def parse_headers(raw: bytes) -> list[tuple[str, bytes]]:
    """Unfold a raw header block into (lower-case name, value) pairs; broken lines are skipped.

    A line that is no header (no colon, empty) is skipped, and continuation lines below it
    still belong to the header before it. Values join their stripped lines with one blank.
    """
    headers: list[tuple[str, bytes]] = []
    pieces: list[bytes] = []  # the value and continuation lines of the last header, joined when it ends
    for start, first_end, end in line_groups(raw, raw.translate(HEADER_SHADOW)):
        line = raw[start:first_end].rstrip(b"\n")
        if line.endswith(b"\r"):
            line = line[:-1]
        if line[:1] in (b" ", b"\t"):
            first_end = start  # a continuation with no header line above it in the group
        elif line:
            name, colon, value = line.partition(b":")
            if colon:
                if len(pieces) > 1:
                    headers[-1] = (headers[-1][0], b" ".join(pieces).lstrip(b" "))
                value = value.strip()
                headers.append((name.strip().lower().decode("latin-1"), value))
                pieces = [value]
        if first_end < end and headers:
            pieces += map(bytes.strip, raw[first_end:end].rstrip(b"\n").split(b"\n"))
    if len(pieces) > 1:
        # Stripped pieces start with no blank: a leading blank comes from empty pieces before the text.
        headers[-1] = (headers[-1][0], b" ".join(pieces).lstrip(b" "))
    return headers


def _join_adjacent_words(text: str) -> str:
    """Drop the folding blanks between `?=` and `=?`: adjacent encoded words join without a gap."""
    pieces = []
    done = 0
    end = text.find("?=")
    while end >= 0:
        after = end + 2
        while after < len(text) and text[after] in _FOLDING_BLANKS:
            after += 1
        if after > end + 2 and text.startswith("=?", after):
            pieces.append(text[done : end + 2])
            done = after
            end = text.find("?=", after + 2)
        else:
            end = text.find("?=", end + 1)
    pieces.append(text[done:])
    return "".join(pieces)


def _token_end(text: str, start: int, stop: str) -> int:
    """Where a run of characters that are neither blank (str.isspace) nor in `stop` ends."""
    end = start
    while end < len(text) and text[end] not in stop and not text[end].isspace():
        end += 1
    return end


def decode_words(text: str) -> str:
    """Decode RFC 2047 encoded words (`=?charset?B|Q?text?=`); undecodable words stay as written."""
    if "=?" not in text:
        return text
    if len(text) > MAX_VALUE_TEXT:
        return decode_words(text[:MAX_VALUE_TEXT]) + text[MAX_VALUE_TEXT:]  # the rest as written
    text = _join_adjacent_words(text)
    pieces = []
    done = 0
    start = text.find("=?")
    while start >= 0:
        charset_end = _token_end(text, start + 2, "?")
        encoding = text[charset_end + 1 : charset_end + 2]
        if (
            charset_end > start + 2
            and text.startswith("?", charset_end)
            and encoding in ("b", "B", "q", "Q")
            and text.startswith("?", charset_end + 2)
        ):
            data_end = _token_end(text, charset_end + 3, "?")
            if text.startswith("?=", data_end):
                pieces.append(text[done:start])
                pieces.append(
                    _decode_word(
                        text[start : data_end + 2],
                        text[start + 2 : charset_end],
                        encoding,
                        text[charset_end + 3 : data_end],
                    )
                )
                done = data_end + 2
                start = text.find("=?", done)
                continue
        start = text.find("=?", start + 1)
    pieces.append(text[done:])
    return "".join(pieces)


def _decode_word(word: str, charset: str, encoding: str, text: str) -> str:
    charset = charset.split("*")[0]
    data = text.encode("ascii", "replace")
    try:
        if encoding in "bB":
            raw = binascii.a2b_base64(data + b"=" * (-len(data) % 4))
        else:
            raw = binascii.a2b_qp(data, header=True)
    except (binascii.Error, ValueError):
        return word
    try:
        return raw.decode(charset, "replace")
    except LookupError:
        return raw.decode("latin-1")


def strip_comments(text: str) -> str:
    """Remove the innermost `(...)` comments (one pass, like the original's s/\\([^()]*\\)//g)."""
    if "(" not in text:
        return text
    pieces = []
    done = 0
    opening = text.find("(")
    while opening >= 0:
        closing = opening + 1
        while closing < len(text) and text[closing] not in "()":
            closing += 1
        if closing < len(text) and text[closing] == ")":
            pieces.append(text[done:opening])
            done = closing + 1
            opening = text.find("(", done)
        else:
            opening = text.find("(", closing)
    pieces.append(text[done:])
    return "".join(pieces)


def strip_unquoted_comments(text: str) -> str:
    """Remove `(...)` comments (nested, with quoted pairs) outside quoted strings, as RFC 5322 parsers do."""
    if "(" not in text:
        return text
    pieces = []
    depth = 0
    quoted = False
    position = 0
    while position < len(text):
        char = text[position]
        if char == "\\" and (quoted or depth):
            if not depth:
                pieces.append(text[position : position + 2])
            position += 2
            continue
        if depth:
            depth += char == "("
            depth -= char == ")"
        elif quoted:
            quoted = char != '"'
            pieces.append(char)
        elif char == "(":
            depth = 1
            pieces.append(" ")
        else:
            quoted = char == '"'
            pieces.append(char)
        position += 1
    return "".join(pieces)


def transfer_token(text: str) -> tuple[str, bool]:
    """(The Content-Transfer-Encoding token readers decode by, spelled as every reader and clamd read it?)

    `text` is the header value, stripped and lower-cased. An unusual spelling (`base64
    (comment)`, `"base64"`, `BASE64;`, `base64; x=y`, an encoded word) is read as the most
    forgiving reader reads it: some decode it, some do not, and clamd may not.
    """
    if text in PLAIN_ENCODINGS:
        return text, True
    text = text[:MAX_VALUE_TEXT]
    token = decode_words(text) if "=?" in text else text
    token = strip_unquoted_comments(token).replace('"', " ").replace(";", " ").strip()
    return (token.split(None, 1)[0].lower() if token else ""), False


def _skip_blanks(text: str, position: int) -> int:
    while position < len(text) and text[position] in _FOLDING_BLANKS:
        position += 1
    return position


def _quoted_end(text: str, start: int) -> int:
    """End of a quoted string opening at `start`: after the closing quote, else before a lone trailing backslash."""
    position = start + 1
    quote = text.find('"', position)
    while True:
        if 0 <= quote < position:  # an escaped quote was passed; else reused: a million backslashes, one search
            quote = text.find('"', position)
        backslash = text.find("\\", position, quote if quote >= 0 else len(text))
        if backslash >= 0:
            if backslash + 1 == len(text):
                return backslash
            position = backslash + 2
        elif quote >= 0:
            return quote + 1
        else:
            return len(text)


def _raw_params(text: str) -> list[tuple[str, str]]:
    """`; name = value` pairs as written (quotes kept); a piece without `name=` is skipped.

    A value is a quoted string (backslash escapes, up to the closing quote or the end) or
    everything up to the next `;`. A `;` inside a quoted string does not start a parameter.
    """
    params = []
    semicolon = text.find(";")
    while semicolon >= 0:
        name_start = _skip_blanks(text, semicolon + 1)
        name_end = _token_end(text, name_start, "=;")
        equals = _skip_blanks(text, name_end)
        if name_end == name_start or not text.startswith("=", equals):
            semicolon = text.find(";", semicolon + 1)
            continue
        value_start = _skip_blanks(text, equals + 1)
        if text.startswith('"', value_start):
            value_end = _quoted_end(text, value_start)
        else:
            value_end = text.find(";", value_start)
            if value_end < 0:
                value_end = len(text)
        params.append((text[name_start:name_end], text[value_start:value_end]))
        semicolon = text.find(";", value_end)
    return params


def _unescape(text: str) -> str:
    """Backslash escapes of a quoted string resolved; a backslash before a line end or at the end stays."""
    pieces = []
    done = 0
    backslash = text.find("\\")
    while backslash >= 0:
        pieces.append(text[done:backslash])
        if backslash + 1 < len(text) and text[backslash + 1] != "\n":
            pieces.append(text[backslash + 1])
            done = backslash + 2
        else:
            pieces.append("\\")
            done = backslash + 1
        backslash = text.find("\\", done)
    pieces.append(text[done:])
    return "".join(pieces)


def split_content_header(value: bytes) -> tuple[str, list[tuple[str, str]]]:
    """`type/sub; a=b; c="d"` -> ("type/sub", [("a", "b"), ("c", "d")]); repeated params kept; MAX_VALUE_TEXT read."""
    text = header_text(value[:MAX_VALUE_TEXT])
    main, _, rest = text.partition(";")
    main = strip_comments(main).strip().lower()
    params: list[tuple[str, str]] = []
    if rest:
        for name, param_value in _raw_params(";" + rest):
            param_value = param_value.strip()
            if param_value.startswith('"'):
                param_value = (
                    param_value[1:-1] if param_value.endswith('"') and len(param_value) > 1 else param_value[1:]
                )
                param_value = _unescape(param_value) if "\\" in param_value else param_value
            params.append((name.lower(), param_value))
    return main, params


def _percent_decode(raw: bytes) -> bytes:
    """`%XX` hex escapes decoded; a `%` not followed by two hex digits stays."""
    if b"%" not in raw:
        return raw
    first, *rest = raw.split(b"%")
    pieces = [first]
    for piece in rest:
        if len(piece) >= 2 and piece[0] in _HEX_DIGITS and piece[1] in _HEX_DIGITS:
            pieces.append(bytes((int(piece[:2], 16),)) + piece[2:])
        else:
            pieces.append(b"%" + piece)
    return b"".join(pieces)


def _decode_2231(text: str, charset: str) -> str:
    return _decode_charset(_percent_decode(text.encode("utf-8", "surrogateescape")), charset)


def _decode_charset(raw: bytes, charset: str) -> str:
    try:
        return raw.decode(charset or "us-ascii", "replace")
    except LookupError:
        return raw.decode("latin-1")


def param_values(params: list[tuple[str, str]], wanted: str) -> list[str]:
    """Every value given for one parameter: plain ones, and the RFC 2231 form joined and decoded."""
    values = [decode_words(v) for n, v in params if n == wanted]
    segments: dict[int, tuple[str, bool]] = {}
    single: list[str] = []
    for name, value in params:
        if not name.startswith(wanted + "*"):
            continue
        rest = name[len(wanted) + 1 :]
        if rest == "":
            single.append(value)
        else:
            extended = rest.endswith("*")
            number = rest.rstrip("*")
            if number.isdigit() and int(number) not in segments and int(number) < 1000:
                segments[int(number)] = (value, extended)
    for value in single:
        charset, _, encoded = value.partition("'")
        _, _, encoded = encoded.partition("'")
        values.append(_decode_2231(encoded, charset) if encoded or "'" in value else value)
    if segments:
        # RFC 2231 4.1: the octets of consecutive encoded segments are joined before they are
        # decoded, so a character split across segments comes out whole; plain segments are text.
        charset = ""
        pieces: list[str] = []
        octets = bytearray()
        for number in sorted(segments):
            value, extended = segments[number]
            if extended and number == 0 and value.count("'") >= 2:
                charset, _, value = value.partition("'")
                _, _, value = value.partition("'")
            if extended:
                octets += _percent_decode(value.encode("utf-8", "surrogateescape"))
                continue
            if octets:
                pieces.append(_decode_charset(bytes(octets), charset))
                octets.clear()
            pieces.append(value)
        if octets:
            pieces.append(_decode_charset(bytes(octets), charset))
        values.append("".join(pieces))
    return values


def claimed_filenames(headers: list[tuple[str, bytes]]) -> tuple[str, ...]:
    """Every distinct filename a part claims, in every reading: each name=, filename=, in each repeated header."""
    names: list[str] = []
    for header, param in NAME_PARAMETERS:
        for key, value in headers:
            if key == header:
                for name in param_values(split_content_header(value)[1], param):
                    name = name.strip().strip("\x00")
                    if name and name not in names:
                        names.append(name)
    return tuple(names)


def filename_ambiguity(headers: list[tuple[str, bytes]]) -> str:
    """How the names a part claims disagree, as mail clients would read them differently ("" when they agree)."""
    found: list[str] = []
    per_parameter: dict[str, set[str]] = {}
    for header, param in NAME_PARAMETERS:
        values = [value for key, value in headers if key == header]
        if len({v.strip() for v in values}) > 1:
            found.append(f"repeated {HEADER_SPELLING[header]} header")
        names: set[str] = set()
        for value in values:
            params = split_content_header(value)[1]
            plain = {decode_words(v).strip() for n, v in params if n == param and v.strip()}
            every = {v.strip() for v in param_values(params, param) if v.strip()}
            if len(plain) > 1:
                found.append(f"{param} parameter given twice")
            elif len(every) > len(plain) and plain:
                found.append(f"{param} parameter in two encodings")
            names |= every
        per_parameter[param] = names
    names, filenames = per_parameter["name"], per_parameter["filename"]
    if not found and names and filenames and {n.casefold() for n in names} != {n.casefold() for n in filenames}:
        found.append("name and filename differ")
    return ", ".join(dict.fromkeys(found))


def boundary_candidates(params: list[tuple[str, str]]) -> list[str]:
    """Every boundary a Content-Type gives, in order: plain ones as written, then RFC 2231 forms."""
    candidates: list[str] = []
    for name, value in params:
        if name == "boundary" and value and value not in candidates:
            candidates.append(value)
    if any(name.startswith("boundary*") for name, _ in params):
        plain_decoded = {decode_words(v) for v in candidates}
        for value in param_values(params, "boundary"):
            if value and value not in candidates and value not in plain_decoded:
                candidates.append(value)
    return candidates


def boundary_spellings(value: bytes) -> list[str]:
    """Boundaries other readers take from a Content-Type where its parameters are oddly written.

    Comments before the parameter or its value, a stray or unclosed quote, blanks after the
    value, an encoded word: each reader settles these its own way, so every such spelling is
    a candidate (only the ones that differ from boundary_candidates matter to the caller).
    """
    text = header_text(value[:MAX_VALUE_TEXT])
    if not any(mark in text for mark in ('"', "(", " ", "\t", "=?")):
        return []
    found: list[str] = []
    for spelled in dict.fromkeys((text, strip_unquoted_comments(text))):
        main, semicolon, rest = spelled.partition(";")
        if not semicolon and main.strip().count(" ") and "=" in main:
            rest = main.strip().split(None, 1)[1]  # `multipart/mixed boundary="x"`: ripmime reads it
        for name, raw in _raw_params(";" + rest):
            if name.lower() != "boundary":
                continue
            raw = raw.strip()
            forms = [raw.strip('"').strip(), raw.strip('"')]
            if raw.startswith('"') != (raw.endswith('"') and len(raw) > 1):
                forms.append(raw)  # a stray quote kept as part of the boundary
            if not raw.startswith('"') and raw:
                forms.append(raw.split(None, 1)[0])  # an unquoted token ends at a blank
            forms += [decode_words(form) for form in forms if "=?" in form]
            for form in forms:
                form = form.rstrip(" \t")
                if form and len(form) < 1000 and "\n" not in form and "\r" not in form and form not in found:
                    found.append(form)
        if "boundary*" in spelled.lower() or "=?" in spelled:
            params = split_content_header(spelled.encode("utf-8", "surrogateescape"))[1]
            found += [c for c in boundary_candidates(params) if c not in found]
    return found


def is_header_line(line: bytes) -> bool:
    """`Name:` or `Name  :` with a name of printable characters, as RFC 5322 allows."""
    name, colon, _ = line.partition(b":")
    name = name.rstrip(b" \t")
    return bool(colon and name) and not name.translate(None, _HEADER_NAME_BYTES)


def looks_like_parameter(line: bytes) -> bool:
    """A folded line that carries a parameter (`  name="x.exe"`, `;filename=a`): what a split continuation hides."""
    name, equals, _ = line.strip().lstrip(b";").partition(b"=")
    name = name.strip()
    return bool(equals and name) and not name.translate(None, _TOKEN_BYTES)


def first_header(headers: list[tuple[str, bytes]], name: str) -> bytes | None:
    """The first value of a header in a parsed block, or None."""
    for key, value in headers:
        if key == name:
            return value
    return None


# ripmime unpacks every decoded file again as a message when its first 100 lines (fgets of 1023
# bytes) start two of these (case-blind; a "Content-" line counts twice, it matches two of its
# spellings): a text body, a preamble or a delivery status holding header lines hands out what follows them.
MESSAGE_LINE_STARTS = (b"received: ", b"from: ", b"subject: ", b"date: ", b"content-", b"boundary=", b"mime-version")
MESSAGE_TEST_LINES = 100
MESSAGE_TEST_BYTES = MESSAGE_TEST_LINES * 1023


def reads_as_message(text: bytes) -> bool:
    """Whether ripmime reads a decoded file starting with `text` as a message of its own (MIME_is_file_RFC822)."""
    if b":" not in text:
        return False  # no header line to read there, whatever ripmime thinks: most text stops here (one memchr)
    lower = text[:MESSAGE_TEST_BYTES].lower()
    if b"content-" not in lower and lower.count(b": ") < 2 and b"boundary=" not in lower and b"mime-v" not in lower:
        return False  # no line can score twice
    hits = 0
    lines = 0
    for line in lower.split(b"\n"):
        for start in range(0, max(len(line), 1), 1023):  # fgets hands a long line over in pieces
            lines += 1
            if lines > MESSAGE_TEST_LINES:
                return False
            if line.startswith(MESSAGE_LINE_STARTS, start):
                hits += 2 if line.startswith(b"content-", start) else 1
                if hits >= 2:
                    return True
    return False
