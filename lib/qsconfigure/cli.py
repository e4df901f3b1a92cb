"""configure.py: probe the host, freeze the settings, render the program, optionally install.

Scanner probes live in scanner_probes.py: SCANNER_PROBES maps a scanner name to a function
taking the parsed options and returning a ProbeResult whose extra["scanner"] is the
ScannerConfig mapping to freeze; AUTO_SCANNERS lists the names `--scanners auto` tries.
"""

from __future__ import annotations

import getpass
import grp
import os
import pwd
import shlex
import socket
import sys
import time

from .alert_texts import DEFAULT_LANG, normalise_lang
from .as_account import scanner_account
from .interpreter import choose_interpreter
from .legacy import apply_original_forms, apply_spool_forms, default_spooldir, map_scanner_names, resolve_notify
from .options import build_parser
from .probes import (
    ConfigureError,
    ProbeLog,
    ProbeResult,
    find_program,
    probe_libarchive,
    probe_python_module,
    probe_sevenzip,
    probe_syslog,
    run_quietly,
    syslog_fallback_note,
)

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.path.dirname(os.path.dirname(HERE))
ENGINE_SOURCE = os.path.join(SOURCE_ROOT, "lib", "qmail_scanner")
TEMPLATES = os.path.join(SOURCE_ROOT, "templates")
SPAM_SCANNERS = {"spamd", "fast_spamassassin", "verbose_spamassassin", "rspamd"}

REFORMIME_SAMPLE = (
    b"From: a@example.org\nMIME-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="b"\n\n'
    b"--b\nContent-Type: text/plain\n\nhello\n"
    b'--b\nContent-Type: application/octet-stream; name="x.bin"\n'
    b"Content-Transfer-Encoding: base64\n\naGVsbG8=\n--b--\n"
)


def engine_version() -> str:
    """The version of the engine in this source tree, read without importing it."""
    with open(os.path.join(ENGINE_SOURCE, "__init__.py"), encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("__version__"):
                return line.split("=", 1)[1].strip().strip("\"'")
    raise ConfigureError("cannot read the engine version", "is lib/qmail_scanner/__init__.py intact?")


def probe_fqdn(qmaildir: str) -> ProbeResult:
    """qmail's control/me first, as qmail itself names the host; else the resolver's FQDN."""
    try:
        with open(os.path.join(qmaildir, "control", "me"), encoding="ascii") as handle:
            name = handle.readline().strip()
        if name:
            return ProbeResult(True, name, detail="control/me")
    except OSError:
        pass
    return ProbeResult(True, socket.getfqdn())


def probe_executable(path: str, what: str, hint: str) -> ProbeResult:
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return ProbeResult(True, path)
    return ProbeResult(False, detail=f"{path} is not an executable file", hint=hint)


def probe_reformime() -> ProbeResult:
    """A found reformime is not a working one (Debian 12's crashes on -x): run it on a sample."""
    binary = find_program("reformime")
    if not binary:
        return ProbeResult(False, detail="not found", hint="apt-get install maildrop")
    code, output = run_quietly([binary, "-i"], input_bytes=REFORMIME_SAMPLE)
    if code != 0 or "section: 1.2" not in output:
        return ProbeResult(False, detail=f"{binary} -i failed on a sample message (exit {code})")
    code, output = run_quietly([binary, "-e", "-s", "1.2"], input_bytes=REFORMIME_SAMPLE)
    if code != 0 or output.strip() != "hello":
        return ProbeResult(False, detail=f"{binary} -e does not decode a sample part (exit {code})")
    return ProbeResult(True, binary)


def probe_tnef() -> ProbeResult:
    binary = find_program("tnef")
    if not binary:
        return ProbeResult(False, detail="not found", hint="apt-get install tnef")
    code, output = run_quietly([binary, "--version"])
    if code != 0:
        return ProbeResult(False, detail=f"{binary} --version failed")
    words = output.split()
    return ProbeResult(True, binary, words[1] if len(words) > 1 else "")


def probe_account(user: str, group: str) -> ProbeResult:
    try:
        pwd.getpwnam(user)
        grp.getgrnam(group)
    except KeyError:
        return ProbeResult(False, detail=f"{user}:{group} does not exist yet")
    return ProbeResult(True, f"{user}:{group}")


def resolve_layout(args, notes: list[str] | None = None) -> None:
    """Fill in the defaults that depend on other options (--prefix, --qmaildir) and the original's forms."""
    notes = [] if notes is None else notes
    apply_original_forms(args, notes)
    if args.prefix:
        prefix = os.path.abspath(args.prefix)
        args.bindir = args.bindir or os.path.join(prefix, "bin")
        args.spooldir = args.spooldir or os.path.join(prefix, "spool")
        args.libdir = args.libdir or os.path.join(prefix, "lib")
        args.qs_user = args.qs_user or getpass.getuser()
        args.qs_group = args.qs_group or grp.getgrgid(os.getgid()).gr_name
    args.bindir = args.bindir or os.path.join(args.qmaildir, "bin")
    args.spooldir = args.spooldir or default_spooldir(args, notes)
    args.notify = resolve_notify(args, notes)
    apply_spool_forms(args, notes)
    args.libdir = args.libdir or "/usr/local/lib/qmail-scanner"
    args.qs_user = args.qs_user or "qscand"
    args.qs_group = args.qs_group or "qscand"
    args.qmail_queue_binary = args.qmail_queue_binary or os.path.join(args.qmaildir, "bin", "qmail-queue")
    args.qmail_inject_binary = args.qmail_inject_binary or os.path.join(args.qmaildir, "bin", "qmail-inject")
    args.lang = resolve_lang(args.lang, os.environ.get("LANG", ""), notes)


def resolve_lang(given: str, environment: str, notes: list[str]) -> str:
    """--lang as shipped here (old names mapped); a $LANG without texts falls back to en_GB, said once."""
    try:
        chosen = normalise_lang(given or environment)
    except ValueError as error:
        if given:
            raise ConfigureError(f"--lang {given}: {error}", "see templates/lang/ for the languages shipped") from None
        notes.append(f"configure.py: note: no alert texts for $LANG={environment}: using en_GB (give --lang to choose)")
        return DEFAULT_LANG
    if given and chosen != given:
        notes.append(f"configure.py: note: --lang {given}: the alert texts are {chosen} (sent in UTF-8)")
    return chosen


def probe_scanners(args, log: ProbeLog) -> list[dict]:
    """Probe each requested scanner; a requested one that does not work stops configure."""
    requested = args.scanners.strip().lower()
    if requested == "none":
        return []
    try:
        from .scanner_probes import AUTO_SCANNERS, SCANNER_PROBES
    except ImportError:
        AUTO_SCANNERS, SCANNER_PROBES = (), {}
    automatic = requested == "auto"
    names = list(AUTO_SCANNERS) if automatic else [n.strip() for n in requested.split(",") if n.strip()]
    configs = []
    for name in names:
        probe = SCANNER_PROBES.get(name)
        if probe is None:
            raise ConfigureError(
                f"unknown scanner {name!r}", f"known: {', '.join(sorted(SCANNER_PROBES)) or 'none yet'}"
            )
        result = log.check(name, lambda probe=probe: probe(args))
        if result.found:
            configs.append(result.extra["scanner"])
        elif not automatic:
            raise ConfigureError(f"scanner {name} does not work: {result.detail}", result.hint)
    return configs


def run_probes(args, log: ProbeLog) -> dict:
    """Every host probe; returns the facts the settings are built from."""
    scanner = scanner_account(args.qs_user, args.qs_group)  # module probes run as it: what it imports counts
    notes: list[str] = []
    python = log.check("the Python interpreter", lambda: choose_interpreter(args.python, scanner, notes))
    for text in notes:
        print(text)
    if not python.found:
        raise ConfigureError(python.detail, python.hint)
    facts: dict = {"python": python.value, "python_version": python.version}
    facts["hostname"] = log.check("this host's name", lambda: probe_fqdn(args.qmaildir)).value
    queue = log.check("qmail-queue (next hop)", lambda: probe_executable(args.qmail_queue_binary, "qmail-queue", ""))
    if not queue.found and args.qq_check:
        raise ConfigureError(queue.detail, "give --qmail-queue-binary, or --qq-check no when packaging")
    inject = log.check("qmail-inject", lambda: probe_executable(args.qmail_inject_binary, "qmail-inject", ""))
    if not inject.found and args.notify != ["none"] and args.qq_check:
        raise ConfigureError(
            f"alerts need qmail-inject: {inject.detail}", "give --qmail-inject-binary or --notify none"
        )
    account = log.check("the scanner account", lambda: probe_account(args.qs_user, args.qs_group))
    facts["account_exists"] = account.found
    magic_check = "m.from_buffer(b'MZ\\x90\\x00', mime=True)"
    magic = log.check("python-magic", lambda: probe_python_module(python.value, "magic", magic_check, scanner))
    tnefparse = log.check("tnefparse", lambda: probe_python_module(python.value, "tnefparse", "", scanner))
    rarfile = log.check("rarfile (rar listing)", lambda: probe_python_module(python.value, "rarfile", "", scanner))
    py7zr = log.check("py7zr (7z listing)", lambda: probe_python_module(python.value, "py7zr", "", scanner))
    inflate64 = log.check(
        "inflate64 (Deflate64 zips)", lambda: probe_python_module(python.value, "inflate64", "m.Inflater()", scanner)
    )
    for label, module in (("python-magic", magic), ("tnefparse", tnefparse), ("rarfile", rarfile), ("py7zr", py7zr)):
        if not module.found and not args.quiet:
            print(f"configure.py: note: {label}: {module.hint}")
    extra_path = []
    for module in (magic, tnefparse, rarfile, py7zr, inflate64):
        if module.found and module.value not in extra_path:
            extra_path.append(module.value)
    facts.update(have_python_magic=magic.found, have_tnefparse=tnefparse.found, extra_sys_path=extra_path)
    libarchive = log.check("libarchive (7z, rar, tar, iso, cab)", lambda: probe_libarchive(python.value))
    facts["libarchive_path"] = libarchive.value if libarchive.found else ""
    sevenzip = log.check("7-Zip (Deflate64 and implode zips)", probe_sevenzip)
    facts["sevenzip_binary"] = sevenzip.value if sevenzip.found else ""
    facts["have_inflate64"] = inflate64.found
    tnef = log.check("tnef", probe_tnef)
    facts["tnef_binary"] = tnef.value if tnef.found else ""
    reformime = log.check("a working reformime", probe_reformime)
    if args.mime_unpacker == "reformime" and not reformime.found:
        raise ConfigureError(
            f"--mime-unpacker reformime, but {reformime.detail}", reformime.hint or "use --mime-unpacker internal"
        )
    facts["reformime_binary"] = reformime.value if reformime.found else ""
    if args.log_details == "syslog":
        syslog = log.check(f"a syslog daemon at {args.syslog_socket}", lambda: probe_syslog(args.syslog_socket))
        if not syslog.found:  # said even with --quiet: where the per-message lines go changes
            print(syslog_fallback_note(args.syslog_socket, syslog, args.logdir or args.spooldir))
    facts["scanners"] = probe_scanners(args, log)
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    words = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(words)
    if args.migrate_from:
        from .migrate import main_migrate

        return main_migrate(args, words)
    log = ProbeLog(quiet=args.quiet)
    from .generate import build_settings, check_option_values, render_program

    try:
        notes: list[str] = []
        resolve_layout(args, notes)
        args.scanners = map_scanner_names(args.scanners, args, notes)
        for text in notes:
            print(text)
        check_output_dir(args.output)
        check_option_values(args)
        facts = run_probes(args, log)
        settings = build_settings(args, facts, engine_version(), shlex.join(["./configure.py", *words]))
        program = render_program(settings, facts, log.lines, time.strftime("%Y-%m-%d %H:%M:%S %z"))
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(program)
        os.chmod(args.output, 0o755)
        print_summary(settings, facts, args)
        if args.install:
            from .install import install

            install(args, settings, args.output)
    except ConfigureError as error:
        print(f"configure.py: error: {error.reason}", file=sys.stderr)
        if error.hint:
            print(f"configure.py: hint: {error.hint}", file=sys.stderr)
        return 1
    return 0


def check_output_dir(output: str) -> None:
    """--output into a directory that is not there: one line, before any probe runs."""
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise ConfigureError(
            f"--output {output}: the directory {directory} does not exist", "create it or give another --output"
        )
    if not os.access(directory, os.W_OK):
        raise ConfigureError(f"--output {output}: the directory {directory} is not writable", "give another --output")


def print_summary(settings: dict, facts: dict, args) -> None:
    scanners = (
        ", ".join(f"{s['name']} {s.get('version', '')}".strip() for s in settings["scanners"])
        or "none (internal checks only)"
    )
    print()
    print("qmail-scanner configuration summary")
    print(f"  program:        {args.output} -> {args.bindir}/qmail-scanner-queue.py")
    print(f"  interpreter:    {facts['python']} (Python {facts['python_version']})")
    print(f"  spool:          {settings['spooldir']}")
    print(f"  next hop:       {settings['qmail_queue_binary']}")
    print(f"  scanners:       {scanners}")
    print(
        f"  unpacker:       {settings['mime_unpacker']}, python-magic {'yes' if facts['have_python_magic'] else 'no'}"
    )
    admin = f"{settings['admin']}@{settings['domain']}"
    print(f"  alerts:         {','.join(settings['notify'])} from {admin} ({settings['lang']})")
    print(f"  custom error fd: {settings['custom_error_fd'] or 'off'}; deadline {settings['deadline_seconds']:g} s")
