"""Site policy rules from quarantine-events.txt: attachment names, headers, virtual headers, real types.

File format (the original's): `value<TAB>type<TAB>description`, `#` comments, case-insensitive.
A header rule's value is a regular expression put between `^` and `$`, as the original did: it
must match the whole header value. `Policy-Subject:` (2.x) and `Virus-Subject:` (1.2x) name the
Subject header. The 1.2x file, quarantine-attachments.txt, is read too when present (its rules
are converted by policy_legacy); rules of both files are in force.
The hot path loads a compiled form (marshal of plain data) kept beside the sources; a newer
source is recompiled on the fly, and a broken source never stops the mail flow: the last good
compiled form stays in use and the problem is logged on stderr.
"""

from __future__ import annotations

import marshal
import os
import sys

from .policy_legacy import LEGACY_RULES_FILE, convert_lines
from .records import Finding

TYPE_CHECKING = False  # importing typing costs every message milliseconds
if TYPE_CHECKING:
    from .message import Message
    from .settings import Settings

RULES_FILE = "quarantine-events.txt"
COMPILED_FILE = "quarantine-events.compiled"
FORMAT_VERSION = 2
# Header rule types of the original name the header after a prefix: Policy-Subject: (2.x), Virus-Subject: (1.2x).
HEADER_PREFIXES = ("policy-", "virus-")
VIRTUAL_HEADERS = (
    "MAILFROM",
    "RCPTTO",
    "REMOTEIPADDR",
    "ZIPPASSWORDPROTECTED",
    "FILELENGTHTOOLONG",
    "FILEDOUBLEBARRELED",
    "FILECLSID",
    "CRYPTODETAILS",
)
# Rules are matched without re where a rule is not really a regex (`.exe`, `application/x-dosexec`,
# `lottery winner`): importing re costs every message about 5 ms of start-up.
_REGEX_SYNTAX = frozenset(".^$*+?{}[]\\|()")
# What re.IGNORECASE makes of a text for ASCII literals: ASCII upper case and the four non-ASCII
# letters re pairs with ASCII ones (dotted and dotless I, long S, the Kelvin sign).
_ASCII_FOLD = {**{code: code + 32 for code in range(65, 91)}, 0x130: "i", 0x131: "i", 0x17F: "s", 0x212A: "k"}

# A compiled rule is a plain tuple, so marshal can store it:
# (where, kind, value, parameter, description); where is the line number ("12") in
# quarantine-events.txt, "quarantine-attachments.txt:12" in the 1.2x file
#   kind "name": value = name pattern, parameter = exact size or -1
#   kind "header": value = regex, parameter = lower-case header name or virtual name
#   kind "type": value = real-type regex, parameter = name pattern ("" = any name)
Rule = tuple


class RuleError(ValueError):
    """One bad line of the rules file."""


def rules_path(settings: Settings) -> str:
    return os.path.join(settings.effective_etcdir, RULES_FILE)


def legacy_rules_path(settings: Settings) -> str:
    return os.path.join(settings.effective_etcdir, LEGACY_RULES_FILE)


def rule_sources(settings: Settings) -> list[tuple[str, bool]]:
    """(path, is the 1.2x format) of every rules file read, in order: the 2.x file first."""
    return [(rules_path(settings), False), (legacy_rules_path(settings), True)]


def compiled_path(settings: Settings) -> str:
    return os.path.join(settings.effective_etcdir, COMPILED_FILE)


def _is_plain(value: str) -> bool:
    """A name rule made of word characters, `.`, `~`, blank and `-` only: matched as a literal name end."""
    return value != "" and all(char.isalnum() or char in "_.~ -" for char in value)


def _is_literal(pattern: str) -> bool:
    """An ASCII pattern without regex syntax: a case-insensitive substring test finds what re would."""
    return pattern.isascii() and not any(char in _REGEX_SYNTAX for char in pattern)


def _is_header_name(name: str) -> bool:
    return name != "" and all("!" <= char <= "~" and char != ":" for char in name)


def _header_name(name: str) -> str:
    """The header a rule names: `Policy-Subject` and `Virus-Subject` are Subject."""
    lowered = name.lower()
    for prefix in HEADER_PREFIXES:
        if lowered.startswith(prefix) and len(lowered) > len(prefix):
            return lowered[len(prefix) :]
    return lowered


def parse_line(number: int | str, line: str) -> Rule | None:
    """One line of the rules file as a compiled rule; None for blanks and comments."""
    text = line.rstrip("\r\n")
    if not text.strip() or text.lstrip().startswith("#"):
        return None
    fields = [f for f in text.strip(" ").split("\t") if f != ""]
    if len(fields) < 3:
        raise RuleError("expected value<TAB>type<TAB>description (TAB-separated, three fields)")
    value, kind, description = fields[0], fields[1].strip(), "\t".join(fields[2:]).strip()
    upper = kind.upper()
    if upper.startswith("SIZE="):
        size_text = kind[5:].strip()
        if not (size_text == "-1" or size_text.isdecimal()):
            raise RuleError(f"SIZE must be -1 or a number of bytes, not {size_text!r}")
        _check_name_pattern(value)
        return (str(number), "name", value, int(size_text), description)
    if upper == "TYPE" or upper.startswith("TYPE="):
        type_pattern = kind[5:].strip() if upper.startswith("TYPE=") else value
        name_pattern = value if upper.startswith("TYPE=") and value not in ("*", ".*") else ""
        if not type_pattern:
            raise RuleError("TYPE= needs a real type, e.g. TYPE=application/x-dosexec")
        _compile(type_pattern)
        if name_pattern:
            _check_name_pattern(name_pattern)
        return (str(number), "type", type_pattern, name_pattern, description)
    header = kind[:-1].strip() if kind.endswith(":") else kind
    if header.upper() in VIRTUAL_HEADERS:
        _compile(f"^{value}$")
        return (str(number), "header", value, header.upper(), description)
    if kind.endswith(":") and _is_header_name(header):
        _compile(f"^{value}$")
        return (str(number), "header", value, _header_name(header), description)
    raise RuleError(f"unknown rule type {kind!r} (SIZE=n, TYPE=..., a header name with ':', or a virtual header)")


def _compile(pattern: str):  # type: ignore[no-untyped-def]
    import re

    try:
        return re.compile(pattern, re.I)
    except re.error as error:
        raise RuleError(f"bad regular expression {pattern!r}: {error}") from None


def _check_name_pattern(value: str) -> None:
    if not _is_plain(value):
        _compile(f"(?:{value})$")


def parse_rules(text: str, legacy: bool = False) -> tuple[list[Rule], list[tuple[int, str, str]]]:
    """All good rules, and every bad line as (line number, reason, line as written)."""
    rules: list[Rule] = []
    errors: list[tuple[int, str, str]] = []
    written = text.splitlines()
    lines = convert_lines(text) if legacy else written
    label = f"{LEGACY_RULES_FILE}:" if legacy else ""
    for number, line in enumerate(lines, 1):
        try:
            rule = parse_line(f"{label}{number}", line)
        except RuleError as error:
            errors.append((number, str(error), written[number - 1]))
            continue
        if rule is not None:
            rules.append(rule)
    return rules, errors


def _merge(rule_lists: list[list[Rule]]) -> list[Rule]:
    """The rules of every file in order; a rule both files hold (a converted copy) counts once."""
    seen: set[tuple[str, str, object]] = set()
    merged: list[Rule] = []
    for rules in rule_lists:
        for rule in rules:
            key = (rule[1], rule[2], rule[3])
            if key not in seen:
                seen.add(key)
                merged.append(rule)
    return merged


def _read_source(path: str) -> tuple[str, tuple[int, int]]:
    with open(path, "rb") as source:
        stat = os.fstat(source.fileno())
        data = source.read()
    return data.decode("utf-8", "replace"), (stat.st_mtime_ns, stat.st_size)


def _stamp(path: str) -> list[int] | None:
    """What tells a changed source from the compiled one: mtime and size; None when absent."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_mtime_ns, stat.st_size]


def _read_sources(
    sources: list[tuple[str, bool]],
) -> tuple[list[Rule], list[tuple[str, int, str, str]], list[list[int] | None]]:
    """Parse every present source: (merged rules, errors as (path, number, reason, line), stamps).

    OSError from a source that exists but cannot be read is raised to the caller.
    """
    rule_lists: list[list[Rule]] = []
    errors: list[tuple[str, int, str, str]] = []
    stamps: list[list[int] | None] = []
    for path, legacy in sources:
        try:
            text, stamp = _read_source(path)
        except FileNotFoundError:
            stamps.append(None)
            continue
        rules, bad = parse_rules(text, legacy)
        rule_lists.append(rules)
        errors += [(path, number, reason, line) for number, reason, line in bad]
        stamps.append(list(stamp))
    return _merge(rule_lists), errors, stamps


def _write_compiled(path: str, rules: list[Rule], stamps: list[list[int] | None]) -> None:
    """Atomically replace the compiled form (write a temp file, then rename)."""
    temporary = f"{path}.{os.getpid()}.tmp"
    data = marshal.dumps({"version": FORMAT_VERSION, "sources": stamps, "rules": [list(r) for r in rules]})
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def _read_compiled(path: str) -> dict | None:
    try:
        with open(path, "rb") as compiled:
            data = marshal.loads(compiled.read())
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        return None
    return data


def _complain(text: str) -> None:
    from .stderr_log import say

    say(text)


def _compiled_rules(data: dict | None) -> list[Rule]:
    return [tuple(r) for r in data["rules"]] if data else []


def load_rules(settings: Settings) -> list[Rule]:
    """The rules in force: the compiled form, refreshed when a source changed."""
    sources = rule_sources(settings)
    compiled = compiled_path(settings)
    data = _read_compiled(compiled)
    stamps = [_stamp(path) for path, _legacy in sources]
    if all(stamp is None for stamp in stamps):
        return _compiled_rules(data)  # the compiled form alone keeps working
    if data and data.get("sources") == stamps:
        return _compiled_rules(data)
    try:
        rules, errors, stamps = _read_sources(sources)
    except OSError as error:
        _complain(f"POLICY: cannot read {error.filename}: {error.strerror}; keeping the compiled rules")
        return _compiled_rules(data)
    if errors:
        for path, number, reason, _line in errors:
            _complain(f"POLICY ERROR {path} line {number}: {reason}")
        if data:
            _complain("POLICY: the rules file is broken; still using the last good compiled rules")
            return _compiled_rules(data)
        _complain(f"POLICY: the rules file is broken and no compiled rules exist; using its {len(rules)} good lines")
        return rules
    try:
        _write_compiled(compiled, rules, stamps)
    except OSError as error:
        _complain(f"POLICY: cannot write {compiled}: {error.strerror} (run -g as the scanner user)")
    return rules


# ---------------------------------------------------------------- matching


def _name_matches(pattern: str, name: str) -> bool:
    """An attachment value matches the end of a name (`.exe`, `happy99.exe`) or, as a regex, its end."""
    from .formatcheck import windows_name

    name = windows_name(name)
    if _is_plain(pattern):
        return name.lower().endswith(pattern.lower())
    import re

    return re.search(f"(?:{pattern})$", name, re.I) is not None


def _type_matches(pattern: str, real_type: str) -> bool:
    """A TYPE rule against a real type (whole, case-insensitive); plain types are compared by hand."""
    if real_type.isascii() and _is_literal(pattern.replace(".", "")):
        # `.` is the only regex syntax in such a pattern (`application/vnd.ms-tnef`): any character but a newline.
        return len(pattern) == len(real_type) and all(
            (want == "." and have != "\n") or want.lower() == have.lower() for want, have in zip(pattern, real_type)
        )
    import re

    return re.fullmatch(pattern, real_type, re.I) is not None


def _header_matches(pattern: str, values: list[str]) -> bool:
    """Whether one of the values matches a header rule: `^pattern$`, case-insensitive unless (?-i:...)."""
    if not values:
        return False
    if _is_literal(pattern):
        wanted = pattern.lower()
        # `$` also matches before a final newline, so the literal test allows one too.
        return any(value.translate(_ASCII_FOLD) in (wanted, wanted + "\n") for value in values)
    import re

    compiled = re.compile(f"^{pattern}$", re.I)
    return any(compiled.search(value) for value in values)


def _virtual_values(message: Message, header: str) -> list[str]:
    from . import formatcheck

    unpacked = message.unpacked
    parts = unpacked.parts if unpacked is not None else []
    if header == "MAILFROM":
        return [message.envelope.sender]
    if header == "RCPTTO":
        return list(message.envelope.recipients)
    if header == "REMOTEIPADDR":
        return [message.environ.get("TCPREMOTEIP", "")]
    if header == "CRYPTODETAILS":
        return list(unpacked.crypto) if unpacked is not None else []
    if header == "ZIPPASSWORDPROTECTED":
        return [f"{p.container}/{p.display_name}" for p in parts if p.encrypted]
    test = {
        "FILELENGTHTOOLONG": formatcheck.is_too_long,
        "FILEDOUBLEBARRELED": formatcheck.is_double_barrelled,
        "FILECLSID": formatcheck.has_clsid_extension,
    }[header]
    return [name for p in parts for name in p.filenames if test(name)]


def _header_values(message: Message, header: str, cache: dict[str, list[str]]) -> list[str]:
    if header in cache:
        return cache[header]
    unpacked = message.unpacked
    if header.isupper():
        values = _virtual_values(message, header)
    elif unpacked is None:
        values = []
    else:
        from .unpack.headers import decode_words, header_text, parse_headers

        values = unpacked.header_values(header)
        # Header lines quoted in a text body, which only ripmime-like readers take for a message
        # (lenient parts), are not the headers of an attached message: a reply quoting a
        # Subject the site blocks is not that message.
        lenient = unpacked.lenient_parts
        for part in unpacked.parts[1:]:
            if part.raw_headers and not part.container and part.index not in lenient:
                for name, value in parse_headers(part.raw_headers):
                    if name == header:
                        text = header_text(value)
                        values.append(decode_words(text) if message.settings.normalize else text)
    cache[header] = values
    return values


def _describe(rule: Rule) -> str:
    where = rule[0] if ":" in rule[0] else f"{RULES_FILE}:{rule[0]}"
    return rule[4] or f"policy rule {where}"


def evaluate(message: Message, rules: list[Rule]) -> list[Finding]:
    """Findings for every rule the message matches (one per rule)."""
    findings: list[Finding] = []
    unpacked = message.unpacked
    parts = [p for p in (unpacked.parts if unpacked is not None else []) if p.filenames or p.magic_type]
    cache: dict[str, list[str]] = {}
    for rule in rules:
        _number, kind, value, parameter, _description = rule
        if kind == "name":
            for part in parts:
                name = next((n for n in part.filenames if _name_matches(value, n)), None)
                if name is not None and (parameter == -1 or part.size == parameter):
                    findings.append(_found(message, rule, _shown(part, name), part.index))
                    break
        elif kind == "type":
            for part in parts:
                if not part.magic_type or not _type_matches(value, part.magic_type):
                    continue
                if parameter and not any(_name_matches(parameter, n) for n in part.filenames):
                    continue
                findings.append(_found(message, rule, _shown(part, part.display_name), part.index))
                break
        elif _header_matches(value, _header_values(message, parameter, cache)):
            findings.append(_found(message, rule, ""))
    return findings


def _shown(part: object, name: str) -> str:
    container = getattr(part, "container", "")
    return f"{container}/{name}" if container else name


def _found(message: Message, rule: Rule, part_name: str, part: int = -1) -> Finding:
    _number, kind, value, parameter, _ = rule
    reason = _describe(rule)
    monitor = False
    pattern = message.settings.dlp_monitor
    if pattern:
        import re

        event = f"{value}\t{parameter}\t{reason}\t{part_name}"
        try:
            monitor = re.search(pattern, event, re.I) is not None
        except re.error:
            monitor = False
    if kind == "header":
        value = parameter if parameter.isupper() else f"{parameter.title()}:"
    return Finding("policy", value, reason, part_name, monitor_only=monitor, part=part)


def check(message: Message) -> list[Finding]:
    """The policy findings for one message."""
    rules = load_rules(message.settings)
    if not rules:
        return []
    return evaluate(message, rules)


# ---------------------------------------------------------------- admin flags


def compile_rules(settings: Settings) -> int:
    """-g: compile the rules files; report every bad line; exit code 0 when all lines are good."""
    sources = rule_sources(settings)
    try:
        rules, errors, stamps = _read_sources(sources)
    except OSError as error:
        print(f"cannot read {error.filename}: {error.strerror}", file=sys.stderr)
        return 1
    if all(stamp is None for stamp in stamps):
        print(f"cannot read {rules_path(settings)}: no such file (nor {LEGACY_RULES_FILE})", file=sys.stderr)
        return 1
    for path, number, reason, line in errors:
        print(f"{path}:{number}: {reason}: {line.rstrip()!r}", file=sys.stderr)
    if errors:
        print(f"{len(errors)} bad line(s); the compiled rules were left unchanged", file=sys.stderr)
        return 1
    try:
        _write_compiled(compiled_path(settings), rules, stamps)
    except OSError as error:
        print(f"cannot write {compiled_path(settings)}: {error.strerror}", file=sys.stderr)
        return 1
    read = " and ".join(path for (path, _legacy), stamp in zip(sources, stamps) if stamp is not None)
    print(f"compiled {len(rules)} rules from {read} into {compiled_path(settings)}")
    return 0


def print_rules(settings: Settings) -> int:
    """-r: print the rules as the scanner loads them."""
    rules = load_rules(settings)
    for number, kind, value, parameter, description in rules:
        if kind == "name":
            shown_type = f"SIZE={parameter}"
        elif kind == "type":
            shown_type = "TYPE" if not parameter else f"TYPE={value}"
            value = parameter or value
        else:
            shown_type = parameter if parameter.isupper() else f"{parameter.title()}:"
        print(f"{number}\t{value}\t{shown_type}\t{description}")
    print(f"# {len(rules)} rules in force", file=sys.stderr)
    for line in _origin_notes(settings, rules):
        print(f"# {line}", file=sys.stderr)
    return 0


def _origin_notes(settings: Settings, rules: list[Rule]) -> list[str]:
    """Per rules file: how many of its rules are listed, and how many are another file's, listed once."""
    shown = {(rule[1], rule[2], rule[3]): rule[0] for rule in rules}
    notes = []
    for path, legacy in rule_sources(settings):
        try:
            own, _bad = parse_rules(_read_source(path)[0], legacy)
        except OSError:
            continue
        label = os.path.basename(path)
        elsewhere = [rule for rule in own if shown.get((rule[1], rule[2], rule[3]), rule[0]) != rule[0]]
        note = f"{label}: {len(own) - len(elsewhere)} rule(s) listed" + (f" as `{label}:N`" if legacy else " as N")
        if elsewhere:
            note += f", {len(elsewhere)} the same as a rule listed from the other file (listed and applied once)"
        notes.append(note)
    return notes
