"""Configure-time scanner probes: one small function per scanner, each proving the scanner works.

A socket must answer PING and find the EICAR test string; a binary must run and find EICAR in a
file the probe creates. The result carries the ScannerConfig mapping to freeze (extra["scanner"])
with the version, or a one-line reason and a hint.
"""

from __future__ import annotations

import os
import sys
import tempfile

from .probes import ProbeResult, find_program, run_quietly

LIB = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if LIB not in sys.path:
    sys.path.insert(0, LIB)

from qmail_scanner.scanners import clamd, cmdline, rspamd, spamd  # noqa: E402
from qmail_scanner.scanners.common import Deadline, ScannerFailure  # noqa: E402
from qmail_scanner.settings import ScannerConfig  # noqa: E402

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
PROBE_SECONDS = 20.0
CLAMD_CONF_PATHS = ("/etc/clamav/clamd.conf", "/etc/clamd.conf", "/usr/local/etc/clamd.conf", "/etc/clamd.d/scan.conf")
SPAMD_DEFAULT_ADDRESSES = ("/var/run/spamd.sock", "/run/spamd.sock", "127.0.0.1:783")
RSPAMD_DEFAULT_ADDRESSES = ("127.0.0.1:11333",)
SPAM_NAMES = ("spamd", "fast_spamassassin", "verbose_spamassassin", "rspamd")


def _option(options, name: str, default):
    value = getattr(options, name, None)
    return default if value is None else value


def failure_policy(options, name: str) -> str:
    """`--scanner-fail NAME=...` first; else spam scanners pass (marked unchecked), virus scanners tempfail.

    A dead spamd let mail through with the original too (spamc handed it back unchanged);
    `--sa-faulttolerant no` makes the SpamAssassin scanners temp-fail instead.
    """
    for entry in _option(options, "scanner_fail", []):
        scanner, _, policy = entry.partition("=")
        if scanner.strip() in (name, "all") and policy.strip() in ("pass", "tempfail"):
            return policy.strip()
    if name not in SPAM_NAMES:
        return "tempfail"
    if name != "rspamd" and getattr(options, "sa_faulttolerant", None) is False:
        return "tempfail"
    return "pass"


def extra_args(options, name: str) -> tuple[str, ...]:
    """`--scanner-args NAME=WORD` entries for command-line scanners, e.g. clamscan=--database=/dir."""
    words = []
    for entry in _option(options, "scanner_args", []):
        scanner, sep, word = entry.partition("=")
        if sep and scanner.strip() == name:
            words.append(word)
    return tuple(words)


def scanner_mapping(options, name: str, kind: str, version: str, addresses=(), binary: str = "", args=()) -> dict:
    """The ScannerConfig fields to freeze into the program."""
    config = ScannerConfig(
        name,
        kind,
        tuple(addresses),
        binary,
        connect_timeout=5.0,
        scan_timeout=float(_option(options, "scanner_timeout", 120.0)),
        fail=failure_policy(options, name),
        version=version,
        extra_args=tuple(args),
    )
    return {
        "name": config.name,
        "kind": config.kind,
        "addresses": list(config.addresses),
        "binary": config.binary,
        "connect_timeout": config.connect_timeout,
        "scan_timeout": config.scan_timeout,
        "fail": config.fail,
        "version": config.version,
        "extra_args": list(config.extra_args),
    }


def clamd_addresses_from_conf(paths=CLAMD_CONF_PATHS) -> list[str]:
    """LocalSocket and TCPSocket/TCPAddr from the first clamd.conf found."""
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                lines = handle.read().splitlines()
        except OSError:
            continue
        settings = {}
        for line in lines:
            words = line.split(None, 1)
            if len(words) == 2 and not words[0].startswith("#"):
                settings[words[0]] = words[1].strip()
        found = []
        if "LocalSocket" in settings:
            found.append(settings["LocalSocket"])
        if "TCPSocket" in settings:
            host = settings.get("TCPAddr", "127.0.0.1").split()[0]
            found.append(f"{host}:{settings['TCPSocket']}")
        return found
    return []


def _with_test_file(content: bytes, action):
    """Run action(fd, path, size) on a temp file holding content, then remove it."""
    with tempfile.TemporaryDirectory(prefix="qs-probe-") as directory:
        os.chmod(directory, 0o755)  # a scanner running as another user must be able to read it
        path = os.path.join(directory, "probe.eml")
        with open(path, "wb") as handle:
            handle.write(content)
        os.chmod(path, 0o644)
        fd = os.open(path, os.O_RDONLY)
        try:
            return action(fd, path, len(content))
        finally:
            os.close(fd)


def probe_clamd(options) -> ProbeResult:
    """clamd: the first address answering PING that also finds EICAR in a stream."""
    addresses = list(_option(options, "clamd_servers", None) or clamd_addresses_from_conf())
    if not addresses:
        hint = "give --clamd-servers /path/clamd.sock or host:3310"
        return ProbeResult(False, detail="no clamd socket configured", hint=hint)
    problems = []
    working = []
    version = ""
    for address in addresses:
        deadline = Deadline(PROBE_SECONDS)
        try:
            if clamd.simple_command(address, "PING", 5.0, deadline) != "PONG":
                raise ScannerFailure(f"{address}: PING not answered with PONG")
            found = _with_test_file(EICAR, lambda fd, path, size, a=address, d=deadline: clamd.instream(a, fd, 5.0, d))
            if not found:
                raise ScannerFailure(f"{address}: answers but did not find the EICAR test string (no signatures?)")
            version = version or clamd.trace_version(clamd.simple_command(address, "VERSION", 5.0, deadline))
            working.append(address)
        except ScannerFailure as failure:
            problems.append(str(failure))
    if not working:
        hint = "start clamd (LocalSocket or TCPSocket in clamd.conf) or give --clamd-servers"
        return ProbeResult(False, detail="; ".join(problems)[:300], hint=hint)
    # Addresses that do not answer now stay in the list (farm members may be down), after the working ones.
    ordered = working + [a for a in addresses if a not in working]
    mapping = scanner_mapping(options, "clamd", "virus", version, ordered)
    return ProbeResult(True, ", ".join(ordered), version, extra={"scanner": mapping})


def probe_command_line(name: str):
    """A probe for one command-line AV definition: the binary must find EICAR in a temp file."""
    definition = cmdline.DEFINITIONS[name]

    def probe(options) -> ProbeResult:
        binary = find_program(definition.binary)
        if not binary:
            return ProbeResult(False, detail=f"{definition.binary} not found", hint=f"install {name} or leave it out")
        args = extra_args(options, name)

        def run(fd, path, size):
            return run_quietly(definition.command(binary, [path], args), timeout=120)

        code, output = _with_test_file(EICAR, run)
        if code in definition.clean_codes:
            return ProbeResult(False, detail=f"{name} did not find the EICAR test string", hint="update its signatures")
        if code not in definition.found_codes:
            last = output.strip().splitlines()[-1] if output.strip() else ""
            hint = "for clamdscan: is clamd running and readable? for clamscan: are signatures installed?"
            return ProbeResult(False, detail=f"{name} exited with {code}: {last[:120]}", hint=hint)
        try:
            config = ScannerConfig(name, "virus", binary=binary, extra_args=args)
            version = cmdline.version(config)
        except ScannerFailure:
            version = "unknown"
        tested = "" if definition.tested else " (definition untested here)"
        mapping = scanner_mapping(options, name, "virus", version, binary=binary, args=args)
        return ProbeResult(True, binary + tested, version, extra={"scanner": mapping})

    probe.__name__ = f"probe_{name.replace('-', '_')}"
    probe.__doc__ = f"{name}: runs and finds EICAR in a file it did not create itself."
    return probe


def _probe_spamd_named(name: str):
    def probe(options) -> ProbeResult:
        addresses = list(_option(options, "spamd_servers", None) or SPAMD_DEFAULT_ADDRESSES)
        problems, working = [], []
        for address in addresses:
            deadline = Deadline(PROBE_SECONDS)
            try:
                spamd.ping(address, 5.0, deadline)
                message = b"Subject: probe\r\n\r\n" + GTUBE + b"\r\n"
                reply = _with_test_file(
                    message,
                    lambda fd, path, size, a=address, d=deadline: spamd.exchange(a, "CHECK", fd, size, "", 5.0, d),
                )
                if not reply.is_spam:
                    raise ScannerFailure(f"{address}: did not flag the GTUBE test string as spam")
                working.append(address)
            except ScannerFailure as failure:
                problems.append(str(failure))
        if not working:
            hint = "start spamd (e.g. spamd --socketpath=/var/run/spamd.sock) or give --spamd-servers"
            return ProbeResult(False, detail="; ".join(problems)[:300], hint=hint)
        # Only explicitly listed addresses stay when down; guessed defaults that failed are dropped.
        ordered = working + [a for a in (_option(options, "spamd_servers", None) or []) if a not in working]
        try:
            version = spamd.version(ScannerConfig(name, "spam", tuple(working)))
        except ScannerFailure:
            version = "unknown"
        mapping = scanner_mapping(options, name, "spam", version, ordered)
        return ProbeResult(True, ", ".join(ordered), version, extra={"scanner": mapping})

    probe.__name__ = f"probe_{name}"
    probe.__doc__ = f"{name}: spamd answers PING and flags GTUBE."
    return probe


probe_spamd = _probe_spamd_named("spamd")
probe_fast_spamassassin = _probe_spamd_named("fast_spamassassin")
probe_verbose_spamassassin = _probe_spamd_named("verbose_spamassassin")


def probe_rspamd(options) -> ProbeResult:
    """rspamd: /ping answers pong (its version comes from the Server header)."""
    addresses = list(_option(options, "rspamd_servers", None) or RSPAMD_DEFAULT_ADDRESSES)
    problems, working, version = [], [], ""
    for address in addresses:
        try:
            version = version or rspamd.ping(address, 5.0, Deadline(PROBE_SECONDS))
            working.append(address)
        except ScannerFailure as failure:
            problems.append(str(failure))
    if not working:
        hint = "start rspamd (normal worker, port 11333) or give --rspamd-servers"
        return ProbeResult(False, detail="; ".join(problems)[:300], hint=hint)
    ordered = working + [a for a in (_option(options, "rspamd_servers", None) or []) if a not in working]
    mapping = scanner_mapping(options, "rspamd", "spam", version, ordered)
    return ProbeResult(True, ", ".join(ordered), version, extra={"scanner": mapping})


SCANNER_PROBES = {
    "clamd": probe_clamd,
    "spamd": probe_spamd,
    "fast_spamassassin": probe_fast_spamassassin,
    "verbose_spamassassin": probe_verbose_spamassassin,
    "rspamd": probe_rspamd,
    **{name: probe_command_line(name) for name in cmdline.DEFINITIONS},
}
# `--scanners auto`: the daemons first; clamscan is never chosen automatically (it loads the
# whole signature database for every message), clamdscan neither (clamd does the same job natively).
AUTO_SCANNERS = (
    "clamd",
    "spamd",
    "rspamd",
    *(name for name in cmdline.DEFINITIONS if name not in ("clamscan", "clamdscan", "f-prot", "savscan")),
)
