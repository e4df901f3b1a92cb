"""The malformed-MIME checks (--fix-mime): shapes of a message that only an attack needs.

Each rule has a name (the Finding's `rule`) and its own reason text. The checks read the
raw header blocks the unpacker kept, so they see what a forgiving parser would hide.
"""

from __future__ import annotations

from .records import Finding, Part
from .unpack.headers import (
    HEADER_SHADOW,
    boundary_candidates,
    is_header_line,
    line_groups,
    parse_headers,
    split_content_header,
    strip_comments,
)

TYPE_CHECKING = False  # importing typing costs every message milliseconds
if TYPE_CHECKING:
    from .settings import Settings
    from .unpack import Unpacked

_LINE_BLANKS = b" \t\r\x0b\x0c"  # what bytes.strip removes from a line besides its LF
# Extensions Windows runs (or opens in something that runs code) on a double click.
EXECUTABLE_EXTENSIONS = frozenset(
    [
        "exe",
        "com",
        "pif",
        "scr",
        "bat",
        "cmd",
        "vbs",
        "vbe",
        "js",
        "jse",
        "wsf",
        "wsh",
        "wsc",
        "hta",
        "lnk",
        "cpl",
        "shs",
        "shb",
        "msi",
        "msp",
        "mst",
        "reg",
        "scf",
        "sct",
        "chm",
        "hlp",
        "inf",
        "ins",
        "isp",
        "jar",
        "ps1",
        "psm1",
        "msc",
        "application",
        "gadget",
        "vb",
        "dll",
        "ocx",
        "sys",
        "url",
    ]
)
MIME_HEADERS = ("content-type", "content-transfer-encoding", "content-disposition")
MAX_BOUNDARY = 250
MAX_FILENAME = 256

RULES = {
    "broken-continuation": "Disallowed MIME: broken continuation of a MIME header",
    "header-comment": "Disallowed MIME: comment inside a MIME header name",
    "repeated-mime-header": "Disallowed MIME: MIME header repeated within one part",
    "long-boundary": f"Disallowed MIME: boundary longer than {MAX_BOUNDARY} characters",
    "duplicate-boundary": "Disallowed MIME: the same boundary defined twice",
    "prefix-boundary": "Disallowed MIME: one boundary is a prefix of another (parsers would split it differently)",
    "ambiguous-boundary": "Disallowed MIME: boundary parameter that parsers read differently",
    "conflicting-filenames": "Disallowed MIME: attachment given two different filenames",
    "executable-not-application": "Disallowed MIME: executable attachment under a non-application MIME type",
    "undeclared-executable": "Disallowed MIME: Windows executable not declared as application/*",
    "broken-header-line": "Disallowed MIME: broken header line inside a MIME part",
    "long-filename": f"Disallowed attachment: filename longer than {MAX_FILENAME} characters",
    "double-extension": "Disallowed attachment: double-barrelled filename",
    "clsid-extension": "Disallowed attachment: CLSID extension in filename",
    "nul-in-header": "Disallowed MIME: NUL character in MIME headers",
    "cr-in-header": "Disallowed MIME: bare CR character in MIME headers",
    "password-protected": "Disallowed attachment: password-protected archive",
}
# Rules about what mail clients may read differently: at --fix-mime 1 the unpacker reads every
# way instead (readings.py) and these only name the ambiguity; --fix-mime 2 quarantines them.
AMBIGUITY_RULES = frozenset(
    [
        "broken-continuation",
        "repeated-mime-header",
        "duplicate-boundary",
        "prefix-boundary",
        "ambiguous-boundary",
        "conflicting-filenames",
        "broken-header-line",
    ]
)

# Patterns for attachment names only, compiled on first use: a message without attachments
# must not pay for importing re. Header lines are checked by hand (is_header_line).
_EXT_ALTERNATION = "|".join(sorted(EXECUTABLE_EXTENSIONS, key=len, reverse=True))
_DOUBLE_EXTENSION = r"(?i)\.[a-z]{2,5}[\s._-]*\.\s*(?:" + _EXT_ALTERNATION + r")$"
_CLSID = r"(?i)\.\s*\{[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\}"


def windows_name(name: str) -> str:
    """The name as Windows would use it: trailing dots and blanks dropped."""
    return name.rstrip(" .\t\r\n\x00")


def extension(name: str) -> str:
    """The last extension, lower-case, without the dot ("" when none)."""
    base = windows_name(name)
    dot = base.rfind(".")
    return base[dot + 1 :].strip().lower() if dot >= 0 else ""


def is_executable_name(name: str) -> bool:
    """Whether Windows would run a file of this name."""
    return extension(name) in EXECUTABLE_EXTENSIONS


def is_double_barrelled(name: str) -> bool:
    """`photo.gif.exe`, also padded with blanks or dots (`photo.gif      .exe`)."""
    if name.count(".") < 2:
        return False
    import re

    return bool(re.search(_DOUBLE_EXTENSION, windows_name(name)))


def has_clsid_extension(name: str) -> bool:
    """`file.{3050F4D8-98B5-11CF-BB82-00AA00BDCE0B}`: Windows hides the real type behind a class id."""
    if "{" not in name:
        return False
    import re

    return bool(re.search(_CLSID, name))


def is_too_long(name: str) -> bool:
    """A filename beyond what Windows and the original scanner accept."""
    return len(name) > MAX_FILENAME


def _finding(rule: str, part_name: str = "", detail: str = "") -> Finding:
    reason = RULES[rule] + (f" ({detail})" if detail else "")
    return Finding("policy", rule, reason, part_name)


def _check_header_block(part: Part, settings: Settings) -> list[tuple[str, str]]:
    """Rule hits in one raw header block, as (rule, detail)."""
    raw = part.raw_headers
    hits: list[tuple[str, str]] = []
    if not raw:
        return hits
    if not settings.ignore_eol_check:
        if b"\x00" in raw:
            hits.append(("nul-in-header", ""))
        if b"\r" in raw and raw.count(b"\r") != raw.count(b"\r\n"):
            hits.append(("cr-in-header", ""))
    seen: dict[str, int] = {}
    # Line by line would cost a Python step per continuation line: a header folded into a
    # million short lines is one group here, its lines of blanks found with translate.
    for start, first_end, end in line_groups(raw, raw.translate(HEADER_SHADOW)):
        line = raw[start:first_end].rstrip(b"\n")
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line and not raw.endswith(b"\n", 0, first_end):
            break  # a lone CR after the last line end
        if line[:1] in (b" ", b"\t"):
            hits.append(("broken-continuation", "continuation without a header"))
            continue  # only the block's first line can start a group with a blank
        if not is_header_line(line):
            if part.index > 0:
                shown = line[:40].decode("latin-1")
                hits.append(("broken-header-line", repr(shown)))
            continue
        name = line.split(b":", 1)[0].strip().lower().decode("latin-1")
        if "(" in name or ")" in name:
            plain = strip_comments(name)
            if plain.startswith(("content-", "mime-")):
                hits.append(("header-comment", name))
        if name in MIME_HEADERS:
            seen[name] = seen.get(name, 0) + 1
            if seen[name] == 2:
                hits.append(("repeated-mime-header", name))
        if first_end < end and name.startswith(("content-", "mime-")):
            folded = raw[first_end:end]
            folded = folded[: len(folded) - folded.endswith(b"\n")]
            if b"\n\n" in b"\n" + folded.translate(None, _LINE_BLANKS) + b"\n":  # a line of blanks only
                hits.append(("broken-continuation", f"empty continuation of {name}"))
    return hits


def _boundaries(part: Part) -> list[str]:
    """Every boundary a part's Content-Type headers define."""
    found = []
    for name, value in parse_headers(part.raw_headers):
        if name == "content-type":
            declared, params = split_content_header(value)
            if declared.startswith("multipart/"):
                found += boundary_candidates(params)
    return found


def check(unpacked: Unpacked, settings: Settings) -> list[Finding]:
    """Every malformed-MIME rule the message breaks (one finding per rule)."""
    findings: dict[str, Finding] = {}

    def hit(rule: str, part_name: str = "", detail: str = "") -> None:
        if rule not in findings:
            findings[rule] = _finding(rule, part_name, detail)

    defined_boundaries: set[str] = set()
    for part in unpacked.parts:
        name = part.display_name
        # What only ripmime makes of text (a preamble, an epilogue, header lines in a body or a
        # delivery status) has no header block a client shows: its shape is not the sender's MIME.
        if not part.container and part.index not in unpacked.lenient_parts:
            for rule, detail in _check_header_block(part, settings):
                hit(rule, name, detail)
            if part.declared_type.startswith("multipart/"):
                boundaries = _boundaries(part)
                if len(set(boundaries)) > 1:
                    hit("duplicate-boundary", name, "duplicate boundary parameter")
                for boundary in boundaries:
                    if len(boundary) > MAX_BOUNDARY:
                        hit("long-boundary", name, f"{len(boundary)} characters")
                    if boundary in defined_boundaries:
                        hit("duplicate-boundary", name, boundary[:60])
                    defined_boundaries.add(boundary)
            if len({windows_name(n).casefold() for n in part.filenames}) > 1:
                hit("conflicting-filenames", name, " / ".join(part.filenames)[:200])
            if part.magic_type == "application/x-dosexec" and not part.declared_type.startswith("application/"):
                hit("undeclared-executable", name, part.declared_type or "no Content-Type")
            if (
                any(is_executable_name(n) for n in part.filenames)
                and not part.declared_type.startswith(("application/", "multipart/", "message/"))
                and part.transfer_encoding != "x-uuencode"
            ):
                hit("executable-not-application", name, part.declared_type or "no Content-Type")
        for filename in part.filenames:
            shown = f"{part.container}/{filename}" if part.container else filename
            if is_too_long(filename):
                hit("long-filename", shown[:80], f"{len(filename)} characters")
            if is_double_barrelled(filename):
                hit("double-extension", shown)
            if has_clsid_extension(filename):
                hit("clsid-extension", shown)
        if part.encrypted and settings.block_password_protected:
            hit("password-protected", part.container or name, part.display_name)
    for boundary in sorted(defined_boundaries):
        longer = min((o for o in defined_boundaries if o != boundary and o.startswith(boundary)), default="")
        if longer:
            hit("prefix-boundary", "", _prefix_detail(boundary, longer))
            break
    # reformime takes one reading: what it cannot read every way is blocked, as at level 2.
    if settings.fix_mime >= 2 or unpacked.unpacker != "internal":
        for ambiguity in unpacked.ambiguities:
            hit(ambiguity.rule, ambiguity.part_name, ambiguity.text)
        return list(findings.values())
    return [finding for rule, finding in findings.items() if rule not in AMBIGUITY_RULES]


def _prefix_detail(boundary: str, longer: str) -> str:
    """`"ab" is a prefix of "ab" + "c"`: both shown apart, however long the common part."""
    shown = boundary if len(boundary) <= 60 else boundary[:57] + "..."
    return f'"{shown}" is a prefix of "{shown}" + "{longer[len(boundary) :][:40]}"'
