"""configure.py's command line: the original Qmail-Scanner option names and defaults."""

from __future__ import annotations

import argparse

YES = {"yes", "y", "1", "true", "on"}
NO = {"no", "n", "0", "false", "off"}
# A new install tells only the administrator: a notice to an envelope sender mostly reaches a forged one.
NEW_INSTALL_NOTIFY = "admin"


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


def inverted_yes_no(text: str) -> bool:
    """An old negative option's yes/no, turned into the positive option's value (--no-QQ-check yes = --qq-check no)."""
    return not yes_no(text)


def option(group, name: str, *, shown: str = "", **kwargs) -> argparse.Action:
    """Add one option; `shown` is its default as written, the one text --help and the README table both give."""
    help_text = kwargs.pop("help")
    if shown:
        help_text = f"{help_text} (default {shown})"
    action = group.add_argument(name, help=help_text, **kwargs)
    action.shown_default = shown  # read by shown_defaults() and the README test
    return action


def shown_defaults(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Every long option and its default as written ("" when it has none)."""
    return {
        name: getattr(action, "shown_default", "")
        for action in parser._actions
        for name in action.option_strings
        if name.startswith("--") and name != "--help"
    }


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
            "Options of the original Qmail-Scanner keep their names; yes/no options take yes/no or 1/0 and\n"
            "alone mean yes. An old configure line runs as written; see also --migrate-from."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # an abbreviation of one option must never be taken as another
    )
    add = parser.add_argument_group

    layout = add("installation layout")
    option(layout, "--qmaildir", metavar="DIR", default="/var/qmail", shown="/var/qmail", help="qmail home")
    option(layout, "--bindir", metavar="DIR", shown="QMAILDIR/bin", help="where the program and the wrapper go")
    option(layout, "--spooldir", metavar="DIR", shown="/var/spool/qscan; a Qmail-Scanner site keeps its own", help="work, quarantine, archive and log files")
    option(layout, "--libdir", metavar="DIR", shown="/usr/local/lib/qmail-scanner", help="the pinned, byte-compiled engine")
    option(layout, "--qmail-queue-binary", metavar="PATH", shown="QMAILDIR/bin/qmail-queue", help="the real qmail-queue, the next hop")
    option(layout, "--qmail-inject-binary", metavar="PATH", shown="QMAILDIR/bin/qmail-inject", help="qmail-inject, which sends alerts")
    option(layout, "--prefix", metavar="DIR", help="local install for non-root use: DIR/bin, DIR/spool, DIR/lib, runs as you")
    option(layout, "--destdir", metavar="DIR", default="", help="stage the install under DIR (packagers); nothing outside it is touched")
    option(layout, "--python", metavar="PATH", default="", shown="configure's own if the scanner account can run it, else /usr/bin/python3", help="interpreter to freeze into the program; shims and symlinks are resolved")
    option(layout, "--qs-user", metavar="NAME", default="", shown="qscand; with --prefix, you", help="account the scanner runs as")
    option(layout, "--qs-group", metavar="NAME", default="", shown="qscand; with --prefix, your group", help="group of that account")

    contract = add("qmail-queue contract")
    option(contract, "--custom-error-fd", metavar="N", type=non_negative_int, default=6, shown="6", help="fd for custom SMTP error texts: 6 (notqmail, 2007 patch), 4 (older patch), 0 = off")
    option(contract, "--deadline", metavar="SECS", type=float, default=1200.0, shown="1200", help="total seconds per message before a temporary failure")
    option(contract, "--trace-header", choices=("x-diagnostics", "received"), default="x-diagnostics", shown="x-diagnostics", help="X-Qmail-Scanner-Diagnostics: (2.x) or the 1.x Received: form")
    option(contract, "--failed-action", choices=("tempfail", "store"), default="tempfail", shown="tempfail", help="a message that cannot be scanned: tempfail (the sender retries), or store it in failed/ and accept it")
    option(contract, "--qq-check", dest="qq_check", type=yes_no, default=True, shown="yes", help="require the next hop (and qmail-inject for alerts) to exist now; no: for packagers")
    option(contract, "--no-QQ-check", dest="qq_check", type=inverted_yes_no, default=True, shown="no", help="the original's spelling of --qq-check no: --no-QQ-check yes (or alone) = --qq-check no")

    engine = add("resident engine (qmail-scanner-queue.py --serve)")
    option(engine, "--engine-workers", metavar="N", type=non_negative_int, default=0, shown="0 = four per core", help="pre-forked workers: messages scanned at once; match tcpserver -c")
    option(engine, "--engine-max-messages", metavar="N", type=non_negative_int, default=500, shown="500", help="a worker is replaced after N messages; 0 never")

    alerts = add("administrator and alerts")
    option(alerts, "--admin", metavar="NAME", default=None, shown="root", help="user part of the admin address, or user@domain: alerts come from and go to it")
    option(alerts, "--domain", metavar="DOMAIN", default="", shown="qmail's control/me, else this host's FQDN", help="domain of the admin address")
    option(alerts, "--admin-description", metavar="TEXT", default="System Anti-Virus Administrator", shown="System Anti-Virus Administrator", help="display name of alerts")
    option(alerts, "--local-domains", metavar="LIST", type=comma_list, default=None, shown="the domain", help="comma list; only recipients here get notices")
    option(alerts, "--notify", metavar="LIST", type=comma_list, default=None, shown=f"{NEW_INSTALL_NOTIFY}; a Qmail-Scanner site keeps its own", help="who is told of a blocked message: none, sender, recips, admin, all, psender, precips, nmladm, nmlvadm; sender words mail addresses that spam and viruses forge (backscatter)")
    option(alerts, "--silent-viruses", metavar="LIST", type=comma_list, default=["auto"], shown="auto", help="viruses that forge senders: never alert the sender (auto = a maintained list)")
    option(alerts, "--lang", metavar="LANG", default="", shown="$LANG, else en_GB", help="alert language, e.g. en_GB, de_DE; a $LANG without texts falls back to en_GB, said in one line")

    scanning = add("scanning")
    option(scanning, "--scanners", metavar="LIST", default="auto", shown="auto", help="auto, none, or a comma list: clamd clamdscan clamscan spamd fast_spamassassin verbose_spamassassin rspamd and command-line AVs")
    option(scanning, "--clamd-servers", metavar="LIST", type=comma_list, default=None, shown="LocalSocket and TCPSocket of clamd.conf", help="clamd unix sockets or host:port, tried in order")
    option(scanning, "--spamd-servers", metavar="LIST", type=comma_list, default=None, shown="those of /var/run/spamd.sock, /run/spamd.sock, 127.0.0.1:783 that answer", help="spamd unix sockets or host:port, tried in order")
    option(scanning, "--rspamd-servers", metavar="LIST", type=comma_list, default=None, shown="127.0.0.1:11333", help="rspamd unix sockets or host:port, tried in order")
    option(scanning, "--scanner-fail", metavar="NAME=tempfail|pass", type=comma_list, default=[], shown="pass for spam scanners, tempfail for virus scanners", help="what a scanner failure means: tempfail, or pass (the message is marked unchecked)")
    option(scanning, "--scanner-args", metavar="NAME=WORD", action="append", default=[], help="extra argv word for a command-line scanner, repeatable (e.g. clamscan=--database=/dir)")
    option(scanning, "--av-scan-parts", type=yes_no, default=False, shown="no", help="stream every decoded part to clamd; without it clamd gets the whole message and the decoded parts it cannot find in it")
    option(scanning, "--scanner-timeout", metavar="SECS", type=float, default=120.0, shown="120", help="seconds one scanner may take")
    option(scanning, "--skip-text-msgs", type=yes_no, default=None, shown="no when every virus scanner is clamd, else yes", help="no AV run on messages without attachments")
    option(scanning, "--redundant", type=yes_no, default=False, shown="no", help="also scan the undecoded original message")
    option(scanning, "--virus-to-delete", type=yes_no, default=False, shown="no", help="drop viruses instead of quarantining")
    option(scanning, "--virus-reject", type=yes_no, default=False, shown="no", help="reject viruses at SMTP time, naming the virus")
    option(scanning, "--max-scan-size", metavar="BYTES", type=non_negative_int, default=100_000_000, shown="100000000", help="larger messages skip AV and spam scanning (named in the trace header)")

    internal = add("internal checks and policy")
    option(internal, "--fix-mime", metavar="0|1|2", type=fix_mime_level, default=1, shown="1", help="malformed-MIME checks: 0 off, 1 block what any reading of an ambiguous message hides, 2 strict: quarantine every ambiguity (yes = 1, no = 0)")
    option(internal, "--ignore-eol-check", type=yes_no, default=False, shown="no", help="do not treat NUL/CR in MIME headers as suspicious")
    option(internal, "--normalize", type=yes_no, default=True, shown="yes", help="decode RFC 2047 headers before matching rules")
    option(internal, "--unzip", type=yes_no, default=False, shown="no", help="hand every archive member to the virus scanners decoded; members are unpacked and typed either way")
    option(internal, "--block-password-protected", type=yes_no, default=False, shown="no", help="quarantine password-protected archives")
    option(internal, "--max-zip-size", metavar="BYTES", type=non_negative_int, default=1_000_000_000, shown="1000000000", help="archives expanding beyond this are blocked")
    option(internal, "--max-unpack-time", metavar="SECS", type=float, default=300.0, shown="300", help="seconds the unpacker may take before a temporary failure")
    option(internal, "--mime-unpacker", choices=("internal", "reformime", "ripmime"), default="internal", shown="internal", help="internal, or reformime when configure verified it works; the original's ripmime means internal")
    option(internal, "--dlp-monitor", metavar="REGEX", default="", help="matching policy events are logged and headed, not blocked")

    spam = add("spam handling", "Without --sa-quarantine, --sa-delete or --sa-reject, spam is delivered, tagged X-Spam-Flag: YES.")
    option(spam, "--sa-quarantine", metavar="N", type=float, default=None, shown="off", help="score >= required+N goes to quarantine/spam")
    option(spam, "--sa-delete", metavar="N", type=float, default=None, shown="off", help="score >= required+N is dropped")
    option(spam, "--sa-reject", type=yes_no, default=False, shown="no", help="reject at SMTP instead of dropping")
    option(spam, "--sa-subject", metavar="TEXT", default="", help="tag the subject of spam with TEXT")
    option(spam, "--sa-delta", metavar="N", type=float, default=0.0, shown="0", help="added to SpamAssassin's required score")
    option(spam, "--sa-maxsize", metavar="BYTES", type=non_negative_int, default=512_000, shown="512000", help="larger messages skip spam checks (named in the trace header)")
    option(spam, "--sa-timeout", metavar="SECS", type=float, default=60.0, shown="60", help="seconds for spamd")
    option(spam, "--sa-faulttolerant", type=yes_no, default=None, shown="yes", help="spamd failures let mail pass, marked unchecked; no makes them temporary failures")
    option(spam, "--sa-maildir", metavar="DIR", default="", shown="SPOOLDIR/quarantine/spam", help="maildir for quarantined spam")
    option(spam, "--settings-per-domain", type=yes_no, default=False, shown="no", help="per-recipient/domain settings from settings_per_domain.txt")
    option(spam, "--settings-per-domain-file", metavar="PATH", default="", shown="SPOOLDIR/settings_per_domain.txt", help="where that file is")

    logging = add("logging and headers")
    option(logging, "--debug", metavar="yes|no|N", nargs="?", const="yes", default="yes", shown="yes", help="trace to qmail-queue.log; a level >= 100 keeps work files")
    option(logging, "--log-details", metavar="syslog|mailstats|no", type=log_details, default="syslog", shown="syslog", help="one line per message: syslog, mailstats (mailstats.csv; the original's yes, 1) or no (0)")
    option(logging, "--log-crypto", type=yes_no, default=False, shown="no", help="note PGP / S/MIME / encrypted zip in the log")
    option(logging, "--console-records", type=yes_no, default=True, shown="yes", help="one JSON line per message in SPOOLDIR/records/ for qs-console (outcome, reason, scanners, attachments)")
    option(logging, "--syslog-socket", metavar="PATH", default="/dev/log", shown="/dev/log", help="where syslog lines go (BSD: /var/run/log)")
    option(logging, "--archive", metavar="no|yes|REGEX", default="no", shown="no", help="copy all mail, or mail whose sender or recipients match REGEX, to archives/")
    option(logging, "--add-dscr-hdrs", metavar="no|yes|all", type=descriptive_headers, nargs="?", const="yes", default="no", shown="no", help="descriptive X-Qmail-Scanner headers; all adds recipients")
    option(logging, "--dscr-hdrs-text", metavar="NAME", default="X-Qmail-Scanner", shown="X-Qmail-Scanner", help="name of those headers")

    action = add("actions")
    option(action, "--install", type=yes_no, default=False, shown="no", help="install the program, engine, spool and permissions (root, or with --prefix)")
    option(action, "--batch", type=yes_no, default=False, shown="no", help="never prompt")
    option(action, "--skip-setuid-test", type=yes_no, default=False, shown="no", help="do not run the setuid test at configure time (the wrapper is still built and installed)")
    option(action, "--output", metavar="PATH", default="qmail-scanner-queue.py", shown="./qmail-scanner-queue.py", help="where to write the generated program")
    option(action, "--quiet", type=yes_no, default=False, shown="no", help="print only notes, errors and the summary, not each probe")
    option(action, "--migrate-from", metavar="OLD-SCRIPT", default="", help="read an installed Qmail-Scanner qmail-scanner-queue.pl: print the equivalent configure line and what differs; with --install, migrate")

    original = add("options of the original, its FreeBSD port and st patch, kept for old command lines")
    option(original, "--user", metavar="NAME", default=None, help="(original) the same as --admin")
    option(original, "--admin-realname", metavar="TEXT", default=None, help="(FreeBSD port) the same as --admin-description; _ means a space")
    option(original, "--etcdir", metavar="DIR", default=None, help="(st patch) where the policy and per-domain settings files are (default: the spooldir)")
    option(original, "--logdir", metavar="DIR", default=None, help="(st patch) where quarantine.log, mailstats.csv and qmail-queue.log are (default: the spooldir)")
    option(original, "--virusdir", metavar="NAME", default=None, help="(original) quarantine maildir name for viruses; here always quarantine/viruses")
    option(original, "--sa-alt", type=yes_no, default=None, help="(original) alternate SpamAssassin handling; no effect, said so")
    option(original, "--sa-report", type=yes_no, default=None, help="(original) add the SpamAssassin report; no effect, said so: use verbose_spamassassin")
    option(original, "--sa-debug", type=yes_no, default=None, help="(original) SpamAssassin debug; no effect, said so: use --debug 2")
    option(original, "--sa-socket", metavar="PATH", default=None, help="(st patch) spamd's unix socket: the same as --spamd-servers PATH")
    option(original, "--sa-remote", metavar="HOST[:PORT]", default=None, help="(st patch) spamd's host[:port]: the same as --spamd-servers HOST:PORT")
    option(original, "--spamdir", metavar="NAME", default=None, help="(st patch) spam quarantine maildir name under quarantine/, or a path: the same as --sa-maildir")
    option(original, "--sa-forward", metavar="ADDR", default=None, help="(st patch) forward quarantined spam to this address; no equivalent, said so")
    option(original, "--sa-fwd-verbose", metavar="yes|no", default=None, help="(st patch) with --sa-forward: the report too; no equivalent, said so")
    option(original, "--setuidgid-path", metavar="PATH", default=None, help="(st patch) setuidgid program; not needed: the setuid wrapper changes user")
    option(original, "--spams-redirect", metavar="ADDR", default=None, help="(FreeBSD port) delivered spam goes to this address instead of its recipients")
    option(original, "--spams-tosuffix", metavar="SUFFIX", default=None, help="(FreeBSD port) delivered spam goes to user-SUFFIX@domain")
    accept_original_value_forms(parser)
    return parser


def accept_original_value_forms(parser: argparse.ArgumentParser) -> None:
    """Every yes/no option also stands alone, meaning yes, as the original's parser took it."""
    for action in parser._actions:
        if action.type in (yes_no, inverted_yes_no, fix_mime_level, log_details):
            action.nargs = "?"
            action.const = action.type("yes")
            action.metavar = action.metavar or "yes|no"


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
