"""configure.py's command line: the original Qmail-Scanner option names and defaults."""

from __future__ import annotations

import argparse

YES = {"yes", "y", "1", "true", "on"}
NO = {"no", "n", "0", "false", "off"}


def yes_no(text: str) -> bool:
    """Parse the original's yes/no option values."""
    lowered = text.strip().lower()
    if lowered in YES:
        return True
    if lowered in NO:
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")


def fix_mime_level(text: str) -> int:
    """Parse --fix-mime: the original's 0, 1, 2, with yes/no as aliases of 1/0."""
    lowered = text.strip().lower()
    if lowered in ("0", "1", "2"):
        return int(lowered)
    if lowered in YES:
        return 1
    if lowered in NO:
        return 0
    raise argparse.ArgumentTypeError(f"expected 0, 1, 2, yes or no, got {text!r}")


def log_details(text: str) -> str:
    """--log-details: syslog, mailstats, no; the original's yes/1 wrote mailstats.csv, no/0 nothing."""
    lowered = text.strip().lower()
    if lowered in ("syslog", "mailstats"):
        return lowered
    if lowered in YES:
        return "mailstats"
    if lowered in NO:
        return "no"
    raise argparse.ArgumentTypeError(f"expected syslog, mailstats, yes or no, got {text!r}")


def descriptive_headers(text: str) -> str:
    """--add-dscr-hdrs: yes, no or all; the original's 1 and 0 too."""
    lowered = text.strip().lower()
    if lowered == "all":
        return "all"
    return "yes" if yes_no(lowered) else "no"


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The option parser; groups follow the order an administrator decides things in."""
    parser = argparse.ArgumentParser(
        prog="configure.py",
        description=(
            "Probe this host and generate qmail-scanner-queue.py, the program qmail runs in place of "
            "qmail-queue (set QMAILQUEUE in tcprules). With --install, also lay out the spool, users and "
            "permissions and install the program."
        ),
        epilog=(
            "Examples:\n"
            "  ./configure.py --scanners auto --install            # a qmail host, as root\n"
            "  ./configure.py --prefix ~/qs --qmail-queue-binary /path/to/sink --notify none --install\n"
            "Options of the original Qmail-Scanner keep their names and defaults; yes/no options take yes/no or\n"
            "1/0 and alone mean yes. An old configure line runs as written; see also --migrate-from."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # an abbreviation of one option must never be taken as another
    )
    add = parser.add_argument_group

    layout = add("installation layout")
    layout.add_argument("--qmaildir", default="/var/qmail", help="qmail home (default %(default)s)")
    layout.add_argument("--bindir", help="where the queue program goes (default QMAILDIR/bin)")
    layout.add_argument("--spooldir", help="working, quarantine and log dir (default /var/spool/qscan; /var/spool/qmailscan when a 1.x site has it)")
    layout.add_argument("--libdir", help="where the byte-compiled engine goes (default /usr/local/lib/qmail-scanner)")
    layout.add_argument("--qmail-queue-binary", help="the real qmail-queue, the next hop (default QMAILDIR/bin/qmail-queue)")
    layout.add_argument("--qmail-inject-binary", help="qmail-inject for alerts (default QMAILDIR/bin/qmail-inject)")
    layout.add_argument("--prefix", help="local install for non-root use: bin/, spool/, lib/ under this dir")
    layout.add_argument("--destdir", default="", help="stage the install under this dir (packagers); nothing outside it is touched")
    layout.add_argument("--python", default="", help="interpreter to freeze into the program (default: the one running configure)")
    layout.add_argument("--qs-user", default="", help="account the scanner runs as (default qscand; with --prefix: you)")
    layout.add_argument("--qs-group", default="", help="group of that account (default qscand; with --prefix: yours)")

    contract = add("qmail-queue contract")
    contract.add_argument("--custom-error-fd", type=non_negative_int, default=6, help="fd for custom SMTP error texts: 6 (notqmail, 2007 patch), 4 (older patch), 0 = off (default %(default)s)")
    contract.add_argument("--deadline", type=float, default=1200.0, help="total seconds per message before a temporary failure (default %(default)s)")
    contract.add_argument("--trace-header", choices=("x-diagnostics", "received"), default="x-diagnostics", help="2.x X-Qmail-Scanner-Diagnostics: or the 1.x Received: form")
    contract.add_argument("--failed-action", choices=("tempfail", "store"), default="tempfail", help="a message that cannot be scanned: tempfail (the sender retries) or store it in failed/ and accept it (default %(default)s)")
    contract.add_argument("--no-QQ-check", dest="no_qq_check", type=yes_no, default=False, help="do not require the next hop to exist now (packagers)")

    engine = add("resident engine (qmail-scanner-queue.py --serve)")
    engine.add_argument("--engine-workers", type=non_negative_int, default=0, help="pre-forked workers: messages scanned at once; match tcpserver -c (default 0 = four per core)")
    engine.add_argument("--engine-max-messages", type=non_negative_int, default=500, help="replace a worker after this many messages, 0 = never (default %(default)s)")

    alerts = add("administrator and alerts")
    alerts.add_argument("--admin", default=None, help="user part of the admin address, or user@domain (default root)")
    alerts.add_argument("--domain", default="", help="domain of the admin address (default: this host's FQDN)")
    alerts.add_argument("--admin-description", default="System Anti-Virus Administrator", help="display name of alerts")
    alerts.add_argument("--local-domains", type=comma_list, default=None, help="comma list; only recipients here get notices (default: the domain)")
    alerts.add_argument("--notify", type=comma_list, default=None, help="none, sender, recips, admin, all, psender, precips, nmladm, nmlvadm (default psender,admin; sender,admin for a site migrating from before 1.22)")
    alerts.add_argument("--silent-viruses", type=comma_list, default=["auto"], help="viruses that forge senders: never alert the sender (default auto = a maintained list)")
    alerts.add_argument("--lang", default="", help="alert language, e.g. en_GB de_DE (default: from $LANG, else en_GB)")

    scanning = add("scanning")
    scanning.add_argument("--scanners", default="auto", help="auto, none, or a comma list: clamd clamdscan clamscan spamd fast_spamassassin verbose_spamassassin rspamd and command-line AVs")
    scanning.add_argument("--clamd-servers", type=comma_list, default=None, help="clamd unix sockets or host:port, tried in order (default: from clamd.conf)")
    scanning.add_argument("--spamd-servers", type=comma_list, default=None, help="spamd unix sockets or host:port (default: probed)")
    scanning.add_argument("--rspamd-servers", type=comma_list, default=None, help="rspamd host:port (default localhost:11333)")
    scanning.add_argument("--scanner-fail", type=comma_list, default=[], help="per scanner: NAME=tempfail|pass (default: pass for spam scanners, marked unchecked; tempfail for virus scanners)")
    scanning.add_argument("--scanner-args", action="append", default=[], help="extra argv word for a command-line scanner: NAME=WORD, repeatable (e.g. clamscan=--database=/dir)")
    scanning.add_argument("--av-scan-parts", type=yes_no, default=False, help="stream every decoded part to clamd; without it clamd gets the whole message and the decoded parts it cannot find in it (default no)")
    scanning.add_argument("--scanner-timeout", type=float, default=120.0, help="seconds one scanner may take (default %(default)s)")
    scanning.add_argument("--skip-text-msgs", type=yes_no, default=None, help="no AV run on messages without attachments (default no when every virus scanner is a daemon, clamd; else yes)")
    scanning.add_argument("--redundant", type=yes_no, default=False, help="also scan the undecoded original message (default no)")
    scanning.add_argument("--virus-to-delete", type=yes_no, default=False, help="drop viruses instead of quarantining (default no)")
    scanning.add_argument("--virus-reject", type=yes_no, default=False, help="reject viruses at SMTP time, naming the virus (default no)")
    scanning.add_argument("--max-scan-size", type=non_negative_int, default=100_000_000, help="larger messages skip AV/spam scanning (default %(default)s)")

    internal = add("internal checks and policy")
    internal.add_argument("--fix-mime", type=fix_mime_level, default=1, help="malformed-MIME checks: 0 off, 1 block what any reading of an ambiguous message hides, 2 strict: quarantine every ambiguity (yes = 1, no = 0; default 1)")
    internal.add_argument("--ignore-eol-check", type=yes_no, default=False, help="do not treat NUL/CR in MIME headers as suspicious (default no)")
    internal.add_argument("--normalize", type=yes_no, default=True, help="decode RFC 2047 headers before matching rules (default yes)")
    internal.add_argument("--unzip", type=yes_no, default=False, help="hand every archive member to the virus scanners decoded; members are unpacked and typed either way (default no)")
    internal.add_argument("--block-password-protected", type=yes_no, default=False, help="quarantine password-protected archives (default no)")
    internal.add_argument("--max-zip-size", type=non_negative_int, default=1_000_000_000, help="archives expanding beyond this are blocked (default %(default)s)")
    internal.add_argument("--max-unpack-time", type=float, default=300.0, help="seconds the unpacker may take before a temporary failure (default %(default)s)")
    internal.add_argument("--mime-unpacker", choices=("internal", "reformime", "ripmime"), default="internal", help="MIME unpacker (default internal; the original's ripmime means internal)")
    internal.add_argument("--dlp-monitor", default="", help="regex: matching policy events are logged and headed, not blocked")

    spam = add("spam handling")
    spam.add_argument("--sa-quarantine", type=float, default=None, help="score >= required+N goes to quarantine/spam")
    spam.add_argument("--sa-delete", type=float, default=None, help="score >= required+N is dropped")
    spam.add_argument("--sa-reject", type=yes_no, default=False, help="reject at SMTP instead of dropping (default no)")
    spam.add_argument("--sa-subject", default="", help="tag the subject of spam with this text")
    spam.add_argument("--sa-delta", type=float, default=0.0, help="add N to SpamAssassin's required score")
    spam.add_argument("--sa-maxsize", type=non_negative_int, default=512_000, help="larger messages skip spam checks (default %(default)s)")
    spam.add_argument("--sa-timeout", type=float, default=60.0, help="seconds for spamd (default %(default)s)")
    spam.add_argument("--sa-alt", type=yes_no, default=False, help="(original) alternate SpamAssassin handling; accepted for compatibility")
    spam.add_argument("--sa-report", type=yes_no, default=False, help="(original) add the SpamAssassin report; use verbose_spamassassin")
    spam.add_argument("--sa-debug", type=yes_no, default=False, help="(original) SpamAssassin debug; use --debug")
    spam.add_argument("--sa-faulttolerant", type=yes_no, default=None, help="yes: spamd failures let mail pass unchecked (the default); no: they temp-fail")
    spam.add_argument("--sa-maildir", default="", help="maildir for quarantined spam (default SPOOLDIR/quarantine/spam)")
    spam.add_argument("--settings-per-domain-file", default="", help="the per-domain settings file (default SPOOLDIR/settings_per_domain.txt)")
    spam.add_argument("--settings-per-domain", type=yes_no, default=False, help="per-recipient/domain settings from settings_per_domain.txt (default no)")

    logging = add("logging and headers")
    logging.add_argument("--debug", nargs="?", const="yes", default="yes", help="yes (=1), no, or a level; >= 100 keeps work files (default yes)")
    logging.add_argument("--log-details", type=log_details, default="syslog", help="one line per message: syslog, mailstats (yes, 1: mailstats.csv, as the original), no (0) (default syslog)")
    logging.add_argument("--log-crypto", type=yes_no, default=False, help="note PGP / S/MIME / encrypted zip in the log (default no)")
    logging.add_argument("--archive", default="no", help="no, yes, or a regex on sender/recipients: copy matching mail to archives/")
    logging.add_argument("--syslog-socket", default="/dev/log", help="where syslog lines go (default %(default)s; BSD: /var/run/log)")
    logging.add_argument("--add-dscr-hdrs", type=descriptive_headers, nargs="?", const="yes", default="no", help="descriptive X-Qmail-Scanner headers; all adds recipients (default no)")
    logging.add_argument("--dscr-hdrs-text", default="X-Qmail-Scanner", help="name of those headers (default %(default)s)")

    action = add("actions")
    action.add_argument("--install", type=yes_no, default=False, help="install the program, engine, spool and permissions (root, or with --prefix)")
    action.add_argument("--batch", type=yes_no, default=False, help="never prompt")
    action.add_argument("--skip-setuid-test", type=yes_no, default=False, help="do not run the setuid test at configure time (the wrapper is still built and installed)")
    action.add_argument("--output", default="qmail-scanner-queue.py", help="where to write the generated program (default ./%(default)s)")
    action.add_argument("--quiet", type=yes_no, default=False, help="print only errors and the summary")
    action.add_argument("--migrate-from", metavar="OLD-SCRIPT", default="", help="read an installed Qmail-Scanner qmail-scanner-queue.pl: print the equivalent configure line and what differs; with --install, migrate")

    original = add("options of the original, its FreeBSD port and st patch, kept for old command lines")
    original.add_argument("--user", default=None, help="(original) the same as --admin")
    original.add_argument("--admin-realname", default=None, help="(FreeBSD port) the same as --admin-description; _ means a space")
    original.add_argument("--etcdir", default=None, help="(st patch) where the policy and per-domain settings files are (default: the spooldir)")
    original.add_argument("--logdir", default=None, help="(st patch) where quarantine.log, mailstats.csv and qmail-queue.log are (default: the spooldir)")
    original.add_argument("--virusdir", default=None, help="(original) quarantine maildir name for viruses; here always quarantine/viruses")
    original.add_argument("--sa-socket", default=None, help="(st patch) spamd's unix socket: the same as --spamd-servers PATH")
    original.add_argument("--sa-remote", default=None, help="(st patch) spamd's host[:port]: the same as --spamd-servers HOST:PORT")
    original.add_argument("--spamdir", default=None, help="(st patch) spam quarantine maildir name under quarantine/, or a path: the same as --sa-maildir")
    original.add_argument("--sa-forward", default=None, help="(st patch) forward quarantined spam to this address; no equivalent, said so")
    original.add_argument("--sa-fwd-verbose", default=None, help="(st patch) with --sa-forward: the report too; no equivalent, said so")
    original.add_argument("--setuidgid-path", default=None, help="(st patch) setuidgid program; not needed: the setuid wrapper changes user")
    original.add_argument("--spams-redirect", default=None, help="(FreeBSD port) delivered spam goes to this address instead of its recipients")
    original.add_argument("--spams-tosuffix", default=None, help="(FreeBSD port) delivered spam goes to user-SUFFIX@domain")
    accept_original_value_forms(parser)
    return parser


def accept_original_value_forms(parser: argparse.ArgumentParser) -> None:
    """Every yes/no option also stands alone, meaning yes, as the original's parser took it."""
    for action in parser._actions:
        if action.type in (yes_no, fix_mime_level, log_details):
            action.nargs = "?"
            action.const = action.type("yes")
            action.metavar = action.metavar or ("yes|no" if action.type is yes_no else None)


def parse_debug(text: str) -> int:
    """The original's --debug yes/no or a number."""
    lowered = text.strip().lower()
    if lowered in YES:
        return 1
    if lowered in NO:
        return 0
    try:
        return max(0, int(lowered))
    except ValueError:
        raise SystemExit(f"configure.py: --debug takes yes, no or a number, not {text!r}") from None
