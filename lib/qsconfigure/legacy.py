"""The original's command lines: old option names, values and scanners mapped to what this program has.

Every mapping, and every option kept only so an old line still runs, is said in one line
(a note); nothing is silently ignored. A scanner that no longer exists is refused with the reason.
"""

from __future__ import annotations

import argparse
import os

from .options import NEW_INSTALL_NOTIFY
from .probes import ConfigureError

SPOOL_2X = "/var/spool/qscan"
SPOOL_1X = "/var/spool/qmailscan"
OLD_SCRIPT = "qmail-scanner-queue.pl"
FHS_SCRIPT_DIR = "/usr/lib/qmail-scanner"  # where PLD's package put the generated script
SPAMD_PORT = "783"
# Scanners of the original whose engines are gone: the reason, and what to use instead.
RETIRED_SCANNERS = {
    "sophie": "the Sophie daemon for Sophos SAVI is discontinued; use savscan (Sophos command line) or clamd",
    "trophie": "the Trophie daemon for Trend Micro VSAPI is discontinued; use clamd",
    "kavdaemon": "the Kaspersky 4.x AVP daemon is discontinued; use kavscanner or clamd",
    "avpdaemonclient": "the Kaspersky 4.x AVP daemon is discontinued; use kavscanner or clamd",
    "avplinux": "AvpLinux (Kaspersky 3.x/4.0) is discontinued; use kavscanner or clamd",
    "ravlin": "RAV AntiVirus is discontinued (its maker was bought in 2003); use clamd",
}
RENAMED_SCANNERS = {"clamuko": "clamd"}  # the original's clamuko scanned through clamd


def note(notes: list[str], text: str) -> None:
    notes.append(f"configure.py: note: {text}")


def apply_original_forms(args: argparse.Namespace, notes: list[str]) -> None:
    """Map the original's option names and values onto this program's, before defaults are filled in."""
    _admin(args, notes)
    if args.mime_unpacker == "ripmime":
        args.mime_unpacker = "internal"
        note(notes, "--mime-unpacker ripmime: the internal unpacker does the same job (reformime also works)")
    _spamd_addresses(args, notes)
    for option, instead in NO_EQUIVALENT.items():
        value = getattr(args, option.lstrip("-").replace("-", "_"))
        if value is not None:
            note(notes, f"{option} {value} has no equivalent here and no effect: {instead}")
    for option, instead in NO_EFFECT_SWITCHES.items():
        value = getattr(args, option.lstrip("-").replace("-", "_"))
        if value is not None:
            note(notes, f"{option} {'yes' if value else 'no'} has no effect here: {instead}")
    if args.setuidgid_path is not None:
        note(notes, "--setuidgid-path has no effect: the setuid wrapper changes to the scanner account itself")


NO_EQUIVALENT = {
    "--sa-forward": "quarantined spam stays in the spam maildir (see --sa-maildir)",
    "--sa-fwd-verbose": "quarantined spam stays in the spam maildir",
}


# The original's SpamAssassin switches: spamd's own settings and other options do their jobs here.
NO_EFFECT_SWITCHES = {
    "--sa-alt": "spamd's own settings decide how SpamAssassin scores",
    "--sa-report": "the scanner verbose_spamassassin queues SpamAssassin's report",
    "--sa-debug": "--debug 2 traces the spamd exchange",
}


def _admin(args, notes: list[str]) -> None:
    if args.user is not None and args.admin is None:
        args.admin = args.user
    elif args.user is not None:
        note(notes, f"--user {args.user} is the original's other name for --admin; --admin {args.admin} wins")
    if args.admin and "@" in args.admin:
        # The FreeBSD port took a whole address in --admin.
        user, _, domain = args.admin.partition("@")
        args.admin = user
        if not args.domain:
            args.domain = domain
        elif args.domain != domain:
            note(notes, f"--admin {user}@{domain} and --domain {args.domain}: alerts use {user}@{args.domain}")
    args.admin = args.admin or "root"
    if args.admin_realname is not None:
        args.admin_description = args.admin_realname.replace("_", " ")


def _spamd_addresses(args, notes: list[str]) -> None:
    extra = []
    if args.sa_socket:
        extra.append(args.sa_socket)
    if args.sa_remote:
        host = args.sa_remote
        extra.append(host if ":" in host else f"{host}:{SPAMD_PORT}")
    if extra:
        args.spamd_servers = [*(args.spamd_servers or []), *(a for a in extra if a not in (args.spamd_servers or []))]


def apply_spool_forms(args, notes: list[str]) -> None:
    """--etcdir, --logdir, --virusdir and --spamdir, once the spool is known."""
    spool = os.path.abspath(args.spooldir)
    for option in ("etcdir", "logdir"):
        value = getattr(args, option)
        if value is None:
            continue
        if os.path.abspath(value) == spool:
            note(notes, f"--{option} {value} is the spooldir, the default here: no effect")
    if args.virusdir is not None:
        if args.virusdir.strip("/") == "viruses":
            note(notes, "--virusdir viruses is where viruses go here too (quarantine/viruses): no effect")
        else:
            note(notes, f"--virusdir {args.virusdir}: viruses go to {spool}/quarantine/viruses here")
    if args.spamdir is not None:
        if args.sa_maildir:
            note(notes, f"--spamdir {args.spamdir}: --sa-maildir {args.sa_maildir} wins")
        elif os.path.isabs(args.spamdir):
            args.sa_maildir = args.spamdir
        else:
            args.sa_maildir = os.path.join(spool, "quarantine", args.spamdir)


def map_scanner_names(requested: str, args, notes: list[str]) -> str:
    """--scanners with old names mapped; fast_spamassassin=TAG tags the subject; retired ones refused."""
    if requested.strip().lower() in ("auto", "none"):
        return requested.strip().lower()
    mapped: list[str] = []
    for raw in (word.strip() for word in requested.split(",") if word.strip()):
        name, _, tag = raw.partition("=")
        name = lowered = name.lower()
        if lowered in RETIRED_SCANNERS:
            raise ConfigureError(f"scanner {name}: {RETIRED_SCANNERS[lowered]}", "leave it out of --scanners")
        if lowered in RENAMED_SCANNERS:
            note(notes, f"scanner {name} is {RENAMED_SCANNERS[lowered]} here (clamd's own socket)")
            name = RENAMED_SCANNERS[lowered]
        if tag:
            if args.sa_subject:
                note(notes, f"scanner {raw}: --sa-subject {args.sa_subject!r} wins over the tag {tag!r}")
            else:
                args.sa_subject = tag
                note(notes, f"scanner {raw}: spam subjects are tagged {tag!r} (as --sa-subject)")
        if name not in mapped:
            mapped.append(name)
    if "verbose_spamassassin" in mapped and "fast_spamassassin" in mapped:
        # Two modes of one spamd check: verbose is fast plus SpamAssassin's report headers.
        mapped.remove("fast_spamassassin")
        note(notes, "scanners fast_spamassassin and verbose_spamassassin: one spamd check, verbose (with the report)")
    return ",".join(mapped)


def old_script_paths(args) -> list[str]:
    """Where an installed original's generated script would be."""
    places = [args.bindir] if args.bindir else []
    places += [os.path.join(args.qmaildir, "bin"), FHS_SCRIPT_DIR]
    return [os.path.join(place, OLD_SCRIPT) for place in dict.fromkeys(places)]


def installed_old_scripts(args) -> list:
    """The installed original's generated scripts that can be read (an unreadable one is passed over)."""
    from .migrate import read_old_script

    found = []
    for path in old_script_paths(args):
        if os.path.isfile(path):
            try:
                found.append(read_old_script(path))
            except ConfigureError:
                continue
    return found


def default_spooldir(args, notes: list[str], legacy_spool: str = SPOOL_1X) -> str:
    """No --spooldir: the old site's spool (named by its script, or the 1.x default when present), else 2.x's."""
    for old in installed_old_scripts(args):
        if old.spooldir:
            note(notes, f"spool {old.spooldir}: the one {old.path} (Qmail-Scanner {old.version}) uses")
            return old.spooldir
    if os.path.isdir(legacy_spool):
        note(
            notes,
            f"spool {legacy_spool}: the Qmail-Scanner 1.x spool is there; its quarantine, logs and policy stay in use",
        )
        return legacy_spool
    return SPOOL_2X


SENDER_NOTIFY_WORDS = ("sender", "psender", "all")


def resolve_notify(args, notes: list[str]) -> list[str]:
    """--notify as given, else what an installed original did, else admin only; sender notices said once."""
    if args.notify is not None:
        chosen = list(args.notify)
        told = [word for word in chosen if word in SENDER_NOTIFY_WORDS]
        if told:
            kept = f"kept as given; a new install's default is {NEW_INSTALL_NOTIFY}"
            note(notes, f"--notify {','.join(chosen)}: {BACKSCATTER} ({kept})")
        return chosen
    return default_notify(args, notes)


BACKSCATTER = "senders of blocked mail get notices, and most such senders are forged (backscatter)"


def default_notify(args, notes: list[str]) -> list[str]:
    """No --notify: what the installed original did (its script's setting, else its version's default), else admin."""
    for old in installed_old_scripts(args):
        if old.site_notify:
            told = any(word in SENDER_NOTIFY_WORDS for word in old.site_notify)
            why = f"; {BACKSCATTER}" if told else ""
            note(
                notes,
                f"--notify {','.join(old.site_notify)}: kept as {old.path} (Qmail-Scanner {old.version}) had it{why}"
                f" (a new install's default is {NEW_INSTALL_NOTIFY})",
            )
            return old.site_notify
    return [NEW_INSTALL_NOTIFY]
