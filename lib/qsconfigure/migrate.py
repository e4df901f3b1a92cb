"""--migrate-from: read an installed Qmail-Scanner qmail-scanner-queue.pl and carry its site over.

The original's configure wrote its whole command line (CMDLINE) into the header of the script
it generated, and substituted its settings into Perl variables ($scandir, @scanner_array,
$NOTIFY_ADDRS, ...). Both are read here; the recorded line wins, the variables fill what it lacks.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from dataclasses import dataclass, field

from .nofollow import open_entry
from .probes import ConfigureError

POLICY_1X = "quarantine-attachments.txt"
POLICY_2X = "quarantine-events.txt"
# @scanner_array entries of the original -> --scanners names here ("" = the internal checks).
SCANNER_SUBS = {
    "perlscan_scanner": "",
    "clamuko_scanner": "clamd",
    "clamdscan_scanner": "clamdscan",
    "clamscan_scanner": "clamscan",
    "spamassassin": "fast_spamassassin",
}
PERL_SCALAR = r"(?:my|our)\s+\${name}\s*=\s*(['\"])(.*?)\1\s*;"
PERL_ARRAY = r"(?:my|our)\s+@{name}\s*=\s*\((.*?)\)\s*;"
# Options of the original that only steered its own configure run: not carried into the new line.
RUN_ONLY_OPTIONS = {"--install", "--batch"}


@dataclass
class OldScript:
    """What an installed original's generated script says about its site."""

    path: str
    version: str = ""
    command: list[str] = field(default_factory=list)  # the recorded configure arguments
    spooldir: str = ""
    scanners: list[str] = field(default_factory=list)
    notify: list[str] = field(default_factory=list)
    admin: str = ""
    admin_description: str = ""
    local_domains: list[str] = field(default_factory=list)
    qmail_queue_binary: str = ""
    policy_file: str = ""

    @property
    def major(self) -> int:
        match = re.match(r"(\d+)", self.version)
        return int(match.group(1)) if match else 0

    @property
    def site_notify(self) -> list[str]:
        """Who this site alerted: as its script says, else its version's default (sender,admin before 1.22)."""
        if self.notify:
            return list(self.notify)
        match = re.match(r"1\.(\d+)", self.version)
        # The original's own defaults, kept: this program's default for a new install is admin only.
        return ["sender", "admin"] if match and int(match.group(1)) < 22 else ["psender", "admin"]


def _scalar(text: str, name: str) -> str:
    match = re.search(PERL_SCALAR.format(name=re.escape(name)), text)
    return match.group(2) if match else ""


def _array(text: str, name: str) -> list[str]:
    match = re.search(PERL_ARRAY.format(name=re.escape(name)), text, re.S)
    if not match:
        return []
    return [item for _quote, item in re.findall(r"(['\"])(.*?)\1", match.group(1))]


CONFIGURE_WORDS = re.compile(r"(?:\S*/)?configure\s+--")


def _recorded_command(text: str) -> list[str]:
    """The configure line the original recorded: in the header comment, else in a Perl string."""
    for line in text.splitlines()[:300]:
        body = line.lstrip("#").strip()
        if line.startswith("#") and CONFIGURE_WORDS.match(body):
            return _words(body)[1:]
    quoted = re.search(r"(['\"])((?:\S*/)?configure\s+--.*?)(?<!\\)\1", text)
    return _words(quoted.group(2).replace('\\"', '"'))[1:] if quoted else []


def _words(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError:
        return line.split()


def read_old_script(path: str) -> OldScript:
    """Parse an installed original's qmail-scanner-queue.pl (1.x or 2.x)."""
    try:
        with open(path, encoding="latin-1") as handle:
            text = handle.read()
    except OSError as error:
        raise ConfigureError(
            f"--migrate-from {path}: {error.strerror}", "give the installed qmail-scanner-queue.pl"
        ) from None
    if "qmail-scanner" not in text.lower() or "scandir" not in text:
        raise ConfigureError(
            f"--migrate-from {path}: not a Qmail-Scanner generated script", "give the installed qmail-scanner-queue.pl"
        )
    version = _scalar(text, "VERSION") or _header_version(text)
    old = OldScript(path=path, version=version, command=_recorded_command(text))
    old.spooldir = _scalar(text, "scandir")
    names = [SCANNER_SUBS.get(item, item.removesuffix("_scanner")) for item in _array(text, "scanner_array")]
    old.scanners = [name for name in dict.fromkeys(names) if name]
    old.notify = [w for w in _scalar(text, "NOTIFY_ADDRS").split(",") if w]
    sender = _scalar(text, "V_FROM").replace("\\@", "@")
    old.admin = sender
    old.admin_description = _scalar(text, "V_FROMNAME")
    old.local_domains = _array(text, "local_domains_array")
    old.qmail_queue_binary = _scalar(text, "qmailqueue")
    old.policy_file = _policy_file(old.spooldir, text)
    return old


def _header_version(text: str) -> str:
    match = re.search(r"^#\s*Version:\s*(\S+)", text, re.M)
    return match.group(1) if match else ""


def _policy_file(spooldir: str, text: str) -> str:
    """1.x kept quarantine-attachments.txt, 2.x quarantine-events.txt, both in the spool."""
    name = POLICY_2X if POLICY_2X in text else POLICY_1X if POLICY_1X in text else ""
    return os.path.join(spooldir, name) if spooldir and name else ""


def _option_value(words: list[str], option: str) -> str | None:
    value = None
    for index, word in enumerate(words):
        if word == option and index + 1 < len(words) and not words[index + 1].startswith("--"):
            value = words[index + 1]
        elif word.startswith(option + "="):
            value = word.split("=", 1)[1]
    return value


def _without(words: list[str], options: set[str]) -> list[str]:
    """The words with the given options (and the value each may carry) left out."""
    kept, skip = [], False
    for word in words:
        if skip:
            skip = False
            if not word.startswith("--"):
                continue
        name = word.split("=", 1)[0]
        if name in options:
            skip = "=" not in word
            continue
        kept.append(word)
    return kept


def equivalent_arguments(old: OldScript) -> list[str]:
    """The configure.py arguments that mean what the old site's configure line meant."""
    words = _without(list(old.command), RUN_ONLY_OPTIONS)
    scanners = _option_value(words, "--scanners")
    if old.scanners and (scanners is None or scanners.strip().lower() == "auto"):
        # "auto" found these at the old site's configure time: keep exactly them.
        words = [*_without(words, {"--scanners"}), "--scanners", ",".join(old.scanners)]
    if _option_value(words, "--spooldir") is None and old.spooldir:
        words += ["--spooldir", old.spooldir]
    if _option_value(words, "--notify") is None and old.site_notify:
        words += ["--notify", ",".join(old.site_notify)]
    if _option_value(words, "--admin") is None and old.admin:
        user, _, domain = old.admin.partition("@")
        words += ["--admin", user] + (
            ["--domain", domain] if domain and _option_value(words, "--domain") is None else []
        )
    if old.major == 1 and _option_value(words, "--trace-header") is None:
        words += ["--trace-header", "received"]  # 1.x put its trace in a Received: line
    if _option_value(words, "--local-domains") is None and old.local_domains:
        words += ["--local-domains", ",".join(old.local_domains)]
    return words


def _without_retired_scanners(words: list[str], notes: list[str]) -> list[str]:
    """A migrating site's scanners whose products are gone are left out, each said (auto if none is left)."""
    from .legacy import RETIRED_SCANNERS

    value = _option_value(words, "--scanners")
    if value is None:
        return words
    names = [name.strip() for name in value.split(",") if name.strip()]
    kept = [name for name in names if name.split("=")[0].lower() not in RETIRED_SCANNERS]
    for name in names:
        if name not in kept:
            reason = RETIRED_SCANNERS[name.split("=")[0].lower()]
            notes.append(f"configure.py: note: scanner {name} left out: {reason}")
    if kept == names:
        return words
    if not kept:
        notes.append("configure.py: note: no scanner of the old site is left: --scanners auto finds what runs here")
    return [*_without(words, {"--scanners"}), "--scanners", ",".join(kept) or "auto"]


def describe(old: OldScript, words: list[str], notes: list[str]) -> list[str]:
    """What the administrator reads: the old site, the new line, what differs."""
    lines = [f"Qmail-Scanner {old.version or '(version unknown)'} at {old.path}"]
    lines.append(f"  spool:    {old.spooldir or 'not named'} (kept in place: quarantine, logs, archives)")
    if old.policy_file:
        if old.policy_file.endswith(POLICY_1X):
            lines.append(f"  policy:   {old.policy_file} (1.x form) -> converted to {POLICY_2X} next to it")
        else:
            lines.append(f"  policy:   {old.policy_file} (read as it is)")
    lines.append(f"  scanners: {', '.join(old.scanners) or 'internal checks only'}")
    lines.append("equivalent configure line:")
    lines.append("  " + shlex.join(["./configure.py", *words]))
    lines.append("what differs:")
    differences = [text.removeprefix("configure.py: note: ") for text in notes]
    differences.append(
        "the program is qmail-scanner-queue.py behind the setuid wrapper qmail-scanner-queue (no suidperl)"
    )
    lines += [f"  - {text}" for text in differences]
    return lines


def convert_policy(old: OldScript, target_dir: str) -> tuple[str, str]:
    """Write the converted 1.x policy next to the original, never over a file: (what was done, the file)."""
    if not old.policy_file or not old.policy_file.endswith(POLICY_1X):
        return "", ""
    try:
        # Root reads a file in the old scanner account's spool: a link planted there would copy
        # a root-only file into the new spool, so the path is walked without following links.
        fd = open_entry(old.policy_file, os.O_RDONLY)
        with open(fd, encoding="utf-8", errors="surrogateescape") as handle:
            original = handle.read()
    except OSError as error:
        return f"the 1.x policy {old.policy_file} was not read ({error.strerror}); the shipped defaults apply", ""
    from qmail_scanner.policy_legacy import convert_attachments_file

    converted = convert_attachments_file(original)
    os.makedirs(target_dir, exist_ok=True)
    target = os.path.join(target_dir, POLICY_2X)
    if os.path.exists(target):
        target = f"{target}.from-{POLICY_1X.split('.')[0]}-{time.strftime('%Y%m%d-%H%M%S')}"
        outcome = f"{os.path.join(target_dir, POLICY_2X)} exists and is kept; the converted 1.x policy is {target}"
    else:
        outcome = f"converted {old.policy_file} to {target} (the original is kept)"
    with open(target, "x", encoding="utf-8", errors="surrogateescape") as handle:
        handle.write(converted)
        os.fchmod(handle.fileno(), 0o640)  # by fd: the spool's owner may have swapped the name for a link
    return outcome, target


def _own(path: str, user: str, group: str) -> None:
    """The converted policy belongs to the scanner account, as the spool does (root installs only)."""
    if os.geteuid() != 0:
        return
    import grp
    import pwd

    try:
        # The spool's owner could swap the name for a link to a root file: change only the name itself.
        os.chown(path, pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid, follow_symlinks=False)
    except KeyError:
        pass


def main_migrate(args, words: list[str]) -> int:
    """Print the old site's equivalent line and the differences; with --install, migrate it."""
    import sys

    from .cli import main as configure_main
    from .cli import resolve_layout
    from .legacy import map_scanner_names
    from .options import build_parser

    extra = _without(words, {"--migrate-from"})
    try:
        old = read_old_script(args.migrate_from)
        notes: list[str] = []
        equivalent = _without_retired_scanners(equivalent_arguments(old), notes)
        trial, unknown = build_parser().parse_known_args([*equivalent, *extra])
        if unknown:
            # A patched original may have recorded options no release had: left out, and said so.
            equivalent = _without(equivalent, {word.split("=", 1)[0] for word in unknown if word.startswith("--")})
            notes.append(f"configure.py: note: recorded options not known here, left out: {' '.join(unknown)}")
            trial = build_parser().parse_args([*equivalent, *extra])
        resolve_layout(trial, notes)
        map_scanner_names(trial.scanners, trial, notes)
    except ConfigureError as error:
        print(f"configure.py: error: {error.reason}", file=sys.stderr)
        if error.hint:
            print(f"configure.py: hint: {error.hint}", file=sys.stderr)
        return 1
    for line in describe(old, equivalent, notes):
        print(line)
    if not args.install:
        print("nothing changed; add --install to migrate")
        return 0
    spool = os.path.join(args.destdir, trial.spooldir.lstrip("/")) if args.destdir else trial.spooldir
    outcome, converted = convert_policy(old, spool)
    if outcome:
        print(outcome)
    if converted:
        _own(converted, trial.qs_user, trial.qs_group)
    return configure_main([*equivalent, *extra])
