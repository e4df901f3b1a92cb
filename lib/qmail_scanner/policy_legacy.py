"""The 1.2x policy file, quarantine-attachments.txt, read as quarantine-events.txt rules.

1.2x rules are `value<TAB>size<TAB>description` or `regex<TAB>Virus-<Header>:<TAB>description`:
- `.ext` (a leading dot; `*.ext` too) blocks that extension at any size: the size is ignored;
- any other name blocks that attachment name at exactly `size` bytes, `0` meaning any size;
- `Virus-Subject:` (any header after `Virus-`) is a case-sensitive regular expression on the
  header value, anchored `^...$` (header rules are always anchored, see policy.py).
Each line converts to one line of the 2.x format, so line numbers stay the same.
"""

from __future__ import annotations

LEGACY_RULES_FILE = "quarantine-attachments.txt"
CONVERTED_HEADER = (
    f"# Converted from the Qmail-Scanner 1.2x {LEGACY_RULES_FILE}: `.ext<TAB>0` became SIZE=-1,\n"
    "# `name<TAB>bytes` SIZE=bytes, `Virus-Header:` rules keep their case-sensitive match as (?-i:...).\n"
)


def convert_attachments_file(text: str) -> str:
    """A 1.2x quarantine-attachments.txt as the equivalent quarantine-events.txt text."""
    lines = convert_lines(text)
    return CONVERTED_HEADER + "".join(line + "\n" for line in lines)


def convert_lines(text: str) -> list[str]:
    """Every line of a 1.2x file in the 2.x format; comments, blanks and unknown forms unchanged."""
    return [convert_line(line) for line in text.splitlines()]


def convert_line(line: str) -> str:
    """One 1.2x rule line as a 2.x rule line (lines it does not recognise are kept for -g to report)."""
    text = line.rstrip("\r\n")
    if not text.strip() or text.lstrip().startswith("#"):
        return text
    fields = [field for field in text.strip(" ").split("\t") if field != ""]
    if len(fields) < 3:
        return text
    value, kind, description = fields[0], fields[1].strip(), "\t".join(fields[2:]).strip()
    if kind[:6].lower() == "virus-" and len(kind) > 6:
        header = kind[6:].rstrip(":")
        return f"(?-i:{value})\t{header}:\t{description}"
    if kind.isdecimal():
        return _name_rule(value, int(kind), description)
    # A header rule without the Virus- prefix is still a 1.2x rule: case-sensitive.
    if kind.endswith(":") and "=" not in kind:
        return f"(?-i:{value})\t{kind}\t{description}"
    return text  # already a 2.x form (SIZE=, TYPE, a virtual header) or an error -g reports


def _name_rule(value: str, size: int, description: str) -> str:
    """`.ext` (any size) or an exact name (`0` = any size) as a SIZE= rule matched literally."""
    if value.startswith("*."):
        value = value[1:]
    wildcard = value.startswith(".")
    size_text = "-1" if wildcard or size == 0 else str(size)
    return f"{_literal_name(value)}\tSIZE={size_text}\t{description}"


def _literal_name(name: str) -> str:
    """The name as a 2.x value that matches it literally (2.x reads other characters as a regex)."""
    from .policy import _REGEX_SYNTAX, _is_plain  # policy imports this module: imported at use

    if _is_plain(name):
        return name
    return "".join("\\" + char if char in _REGEX_SYNTAX else char for char in name)
