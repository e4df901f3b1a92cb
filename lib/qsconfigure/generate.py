"""Freeze the settings and render the site-specific queue program from its template."""

from __future__ import annotations

import os
import pprint
import re
import sys

from .options import NO, YES, parse_debug
from .probes import ConfigureError
from .scanner_probes import failure_policy

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = os.path.dirname(HERE)
TEMPLATES = os.path.join(os.path.dirname(LIB), "templates")
NOTIFY_WORDS = {"none", "sender", "recips", "admin", "all", "psender", "precips", "nmladm", "nmlvadm"}


def _engine_settings_class():
    """The engine's Settings, imported from this source tree to validate the frozen literal."""
    if LIB not in sys.path:
        sys.path.insert(0, LIB)
    from qmail_scanner.settings import Settings

    return Settings


def engine_dir(args, version: str) -> str:
    """The versioned engine copy the program is pinned to."""
    return os.path.join(os.path.abspath(args.libdir), version)


def _fail_policies(args) -> dict[str, str]:
    policies = {}
    for item in args.scanner_fail:
        name, _, policy = item.partition("=")
        if policy not in ("tempfail", "pass"):
            raise ConfigureError(f"--scanner-fail {item!r}: expected NAME=tempfail or NAME=pass")
        policies[name.strip()] = policy
    return policies


def _check_regex(option: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as error:
        raise ConfigureError(f"{option}: not a valid regular expression: {error}") from None


def _site_dir(value: str | None, spooldir: str) -> str:
    """--etcdir / --logdir as frozen: "" when not given or the spooldir itself."""
    if not value or os.path.abspath(value) == os.path.abspath(spooldir):
        return ""
    return os.path.abspath(value)


def archive_setting(value: str) -> str:
    """--archive: the original's yes/no and 1/0, else a regex on sender/recipients."""
    lowered = value.strip().lower()
    if lowered in NO or lowered == "":
        return ""
    return "yes" if lowered in YES else value


def check_option_values(args) -> None:
    """Refuse option values that cannot work, before any probe runs."""
    unknown_notify = set(args.notify) - NOTIFY_WORDS
    if unknown_notify:
        raise ConfigureError(
            f"--notify: unknown value(s) {', '.join(sorted(unknown_notify))}", f"use {', '.join(sorted(NOTIFY_WORDS))}"
        )
    if args.dlp_monitor:
        _check_regex("--dlp-monitor", args.dlp_monitor)
    if archive_setting(args.archive) not in ("", "yes"):
        _check_regex("--archive", args.archive)
    _fail_policies(args)
    for option, value in (("--spams-redirect", args.spams_redirect), ("--spams-tosuffix", args.spams_tosuffix)):
        if value is not None and (not value or any(ch.isspace() or not ch.isprintable() or ch in "<>" for ch in value)):
            raise ConfigureError(f"{option} {value!r}: not an address part qmail can take")
    for option, instead in COMPATIBILITY_ONLY.items():
        if getattr(args, option.lstrip("-").replace("-", "_")):
            print(f"configure.py: note: {option} is accepted for compatibility and has no effect; {instead}")


# Options of the original kept so old command lines still work: said aloud, never silently ignored.
COMPATIBILITY_ONLY = {
    "--sa-alt": "spamd's own settings decide",
    "--sa-report": "use --scanners verbose_spamassassin for SpamAssassin's report headers",
    "--sa-debug": "use --debug 2 for a trace in qmail-queue.log",
}


# Scanners that answer over a socket: a plain-text message costs them about a millisecond, and
# ClamAV's phishing signatures and third-party sets look at bodies.
DAEMON_VIRUS_SCANNERS = frozenset(["clamd"])


def skip_text_messages(asked: bool | None, scanners: list[dict]) -> bool:
    """--skip-text-msgs: as given; by default no when every virus scanner is a daemon, else yes."""
    if asked is not None:
        return asked
    virus_scanners = [s["name"] for s in scanners if s.get("kind") == "virus"]
    return not virus_scanners or not all(name in DAEMON_VIRUS_SCANNERS for name in virus_scanners)


def build_settings(args, facts: dict, version: str, command: str) -> dict:
    """The settings literal to freeze: options + probe facts, validated by the engine."""
    archive = archive_setting(args.archive)
    policies = _fail_policies(args)
    scanners = []
    for scanner in facts["scanners"]:
        scanner = dict(scanner)
        scanner["fail"] = policies.get(scanner["name"], scanner.get("fail") or failure_policy(args, scanner["name"]))
        scanner.setdefault("scan_timeout", args.scanner_timeout)
        scanners.append(scanner)
    domain = args.domain or facts["hostname"]
    settings = {
        "version": version,
        "configure_command": command,
        "qmaildir": args.qmaildir,
        "spooldir": os.path.abspath(args.spooldir),
        "qmail_queue_binary": args.qmail_queue_binary,
        "qmail_inject_binary": args.qmail_inject_binary,
        "engine_dir": engine_dir(args, version),
        "qs_user": args.qs_user,
        "qs_group": args.qs_group,
        "hostname": facts["hostname"],
        "custom_error_fd": args.custom_error_fd,
        "deadline_seconds": args.deadline,
        "trace_header_style": args.trace_header,
        "admin": args.admin,
        "domain": domain,
        "admin_description": args.admin_description,
        "local_domains": args.local_domains if args.local_domains is not None else [domain],
        "notify": args.notify,
        "silent_viruses": args.silent_viruses,
        "lang": args.lang,
        "scanners": scanners,
        "skip_text_msgs": skip_text_messages(args.skip_text_msgs, scanners),
        "redundant": args.redundant,
        "unzip": args.unzip,
        "block_password_protected": args.block_password_protected,
        "max_zip_size": args.max_zip_size,
        "max_scan_size": args.max_scan_size,
        "fix_mime": args.fix_mime,
        "ignore_eol_check": args.ignore_eol_check,
        "normalize": args.normalize,
        "mime_unpacker": args.mime_unpacker,
        "reformime_binary": facts["reformime_binary"],
        "tnef_binary": facts["tnef_binary"],
        "libarchive_path": facts.get("libarchive_path", ""),
        "sevenzip_binary": facts.get("sevenzip_binary", ""),
        "have_inflate64": facts.get("have_inflate64", False),
        "have_python_magic": facts["have_python_magic"],
        "have_tnefparse": facts["have_tnefparse"],
        "extra_sys_path": facts["extra_sys_path"],
        "dlp_monitor": args.dlp_monitor,
        "virus_to_delete": args.virus_to_delete,
        "virus_reject": args.virus_reject,
        "sa_quarantine": args.sa_quarantine,
        "sa_delete": args.sa_delete,
        "sa_reject": args.sa_reject,
        "sa_subject": args.sa_subject,
        "sa_delta": args.sa_delta,
        "sa_maxsize": args.sa_maxsize,
        "sa_timeout": args.sa_timeout,
        "sa_verbose": any(s["name"] == "verbose_spamassassin" for s in scanners),
        "debug": parse_debug(args.debug),
        "log_details": args.log_details,
        "log_crypto": args.log_crypto,
        "console_records": args.console_records,
        "archive": archive,
        "add_dscr_hdrs": args.add_dscr_hdrs,
        "dscr_hdrs_text": args.dscr_hdrs_text,
        "settings_per_domain": args.settings_per_domain,
        "av_scan_parts": args.av_scan_parts,
        "max_unpack_seconds": args.max_unpack_time,
        "syslog_socket": args.syslog_socket,
        "failed_action": args.failed_action,
        "settings_per_domain_file": args.settings_per_domain_file,
        "spam_maildir": args.sa_maildir,
        "etcdir": _site_dir(args.etcdir, args.spooldir),
        "logdir": _site_dir(args.logdir, args.spooldir),
        "spam_redirect": args.spams_redirect or "",
        "spam_recipient_suffix": args.spams_tosuffix or "",
        "engine_workers": args.engine_workers,
        "engine_max_messages": args.engine_max_messages,
    }
    settings_class = _engine_settings_class()
    known = {spec.name for spec in settings_class.__record_fields__}
    if "alert_texts" in known:
        from .alert_texts import render_alert_texts

        try:
            settings["alert_texts"] = render_alert_texts(args.lang)
        except (ValueError, OSError) as error:
            hint = "see templates/lang/ for the languages shipped"
            raise ConfigureError(f"--lang {args.lang}: {error}", hint) from None
    try:
        settings_class.from_mapping(settings)
    except (TypeError, ValueError) as error:
        raise ConfigureError(f"the engine refuses these settings: {error}") from None
    return settings


def render_program(settings: dict, facts: dict, probe_lines: list[tuple[str, str]], date: str) -> str:
    """Render templates/qmail-scanner-queue.py.j2 with the settings frozen as a literal."""
    try:
        import jinja2
    except ImportError:
        raise ConfigureError(
            "Jinja2 is needed to render the program", "apt-get install python3-jinja2 or pip install jinja2"
        ) from None
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # renders Python source, not HTML
    )
    template = environment.get_template("qmail-scanner-queue.py.j2")
    return template.render(
        python=facts["python"],
        python_version=facts["python_version"],
        version=settings["version"],
        date=date,
        command=settings["configure_command"],
        probe_lines=probe_lines,
        engine_dir=settings["engine_dir"],
        settings_literal=pprint.pformat(settings, indent=1, width=110, sort_dicts=False),
    )
