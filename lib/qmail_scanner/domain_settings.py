"""--settings-per-domain: scanners and spam settings chosen by recipient, then domain, then default.

The file (`<spooldir>/settings_per_domain.txt` unless configured otherwise) is read for every
message, so an edit takes effect with the next message, without reinstalling:

    # key                settings: name=value, separated by blanks; quote values with blanks
    default              scanners=clamd,spamd sa_quarantine=5 sa_subject="[SPAM]"
    example.org          sa_quarantine=3 sa_delete=10
    ceo@example.org      sa_quarantine=1 sa_reject=yes spam_maildir=/home/ceo/Maildir/.Spam

Names: scanners (comma list of configured scanners, or `none`), sa_quarantine, sa_delete,
sa_delta, sa_maxsize (numbers, `no` = off), sa_reject (yes/no), sa_subject, spam_maildir.
A message to several recipients with different settings gets the strictest of them: the union
of scanners, the lowest thresholds and delta, the largest size limit, rejection if any asks for
it; the subject tag and spam maildir of the first recipient that sets one. A broken line is
reported with its number on stderr (qmail-smtpd's log) and skipped; mail keeps flowing.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs milliseconds per message; only type checkers look here
if TYPE_CHECKING:
    from .settings import Settings

FILE_NAME = "settings_per_domain.txt"
NUMBERS = ("sa_quarantine", "sa_delete", "sa_delta", "sa_maxsize")
KNOWN = frozenset((*NUMBERS, "scanners", "sa_reject", "sa_subject", "spam_maildir"))


def settings_file(settings: Settings) -> str:
    """Where the per-domain file lives."""
    return settings.settings_per_domain_file or os.path.join(settings.effective_etcdir, FILE_NAME)


def parse(text: str, scanner_names: tuple[str, ...]) -> tuple[dict[str, dict], list[str]]:
    """Entries by lower-cased key, and the problems found as `line N: ...`."""
    import shlex

    entries: dict[str, dict] = {}
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            words = shlex.split(line, comments=True)
            key, values = words[0].lower(), {}
            for word in words[1:]:
                name, equals, value = word.partition("=")
                if not equals:
                    raise ValueError(f"{word!r} is not name=value")
                values[name] = parse_value(name, value, scanner_names)
        except ValueError as error:
            problems.append(f"line {number}: {error}")
            continue
        if key in entries:
            problems.append(f"line {number}: {key} is listed again (the first one counts)")
            continue
        entries[key] = values
    return entries, problems


def parse_value(name: str, value: str, scanner_names: tuple[str, ...]) -> object:
    """One setting's value, checked."""
    if name not in KNOWN:
        raise ValueError(f"unknown setting {name!r}")
    if name == "scanners":
        chosen = () if value.lower() == "none" else tuple(v for v in value.split(",") if v)
        unknown = [v for v in chosen if v not in scanner_names]
        if unknown:
            raise ValueError(f"scanner(s) not configured: {', '.join(unknown)}")
        return chosen
    if name in NUMBERS:
        if value.lower() in ("no", "off", ""):
            return None
        try:
            return int(value) if name == "sa_maxsize" else float(value)
        except ValueError:
            raise ValueError(f"{name}: {value!r} is not a number") from None
    if name == "sa_reject":
        if value.lower() not in ("yes", "no", "1", "0"):
            raise ValueError(f"sa_reject: {value!r} is not yes or no")
        return value.lower() in ("yes", "1")
    if name == "spam_maildir" and value and not os.path.isabs(value):
        raise ValueError(f"spam_maildir: {value!r} is not an absolute path")
    return value


def lookup(entries: dict[str, dict], recipient: str) -> dict:
    """The entry for a recipient: its address, else its domain, else `default`, else nothing."""
    address = recipient.lower()
    domain = address.rpartition("@")[2]
    for key in (address, domain, "default"):
        if key in entries:
            return entries[key]
    return {}


def strictest(choices: list[dict]) -> dict:
    """Merge several recipients' settings into the strictest (see the module text)."""
    merged: dict = {}
    for choice in choices:
        for name, value in choice.items():
            if name not in merged:
                merged[name] = value
            elif name == "scanners":
                merged[name] = merged[name] + tuple(v for v in value if v not in merged[name])
            elif name in ("sa_quarantine", "sa_delete", "sa_delta"):
                present = [v for v in (merged[name], value) if v is not None]
                merged[name] = min(present) if present else None
            elif name == "sa_maxsize":
                merged[name] = max(v for v in (merged[name], value) if v is not None) if value or merged[name] else None
            elif name == "sa_reject":
                merged[name] = merged[name] or value
            elif not merged[name]:  # sa_subject, spam_maildir: the first one set
                merged[name] = value
    return merged


def apply(settings: Settings, recipients: tuple[str, ...], report=None) -> Settings:
    """The settings for this message's recipients (unchanged when the feature is off or the file absent)."""
    if not settings.settings_per_domain:
        return settings
    path = settings_file(settings)
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read(1 << 20)
    except FileNotFoundError:
        return settings
    entries, problems = parse(text, tuple(s.name for s in settings.scanners))
    if problems and report is not None:
        for problem in problems:
            report(f"{path} {problem}")
    merged = strictest([lookup(entries, r) for r in recipients])
    if not merged:
        return settings
    changes = {name: value for name, value in merged.items() if name not in ("scanners", "sa_maxsize")}
    if "sa_maxsize" in merged and merged["sa_maxsize"] is not None:
        changes["sa_maxsize"] = merged["sa_maxsize"]
    if "sa_delta" in changes and changes["sa_delta"] is None:
        changes["sa_delta"] = 0.0
    if "scanners" in merged:
        changes["scanners"] = tuple(s for s in settings.scanners if s.name in merged["scanners"])
    from .recordtype import replace

    return replace(settings, **changes)


def check(settings: Settings) -> list[str]:
    """Problems in the per-domain file, `line N: ...` (for an admin command)."""
    try:
        with open(settings_file(settings), encoding="utf-8", errors="replace") as handle:
            return parse(handle.read(), tuple(s.name for s in settings.scanners))[1]
    except FileNotFoundError:
        return []
