"""A Qmail-Scanner site re-runs its old configure line: every published line is accepted and means the same.

The lines come from distributions, ports, HOWTOs and installers (shared/compat/configure-lines.tsv).
Each runs as written; this machine's daemons and the place of the output are added, nothing that
changes what the line asks for. The frozen settings in the generated program are then checked.
"""

from __future__ import annotations

import ast
import os
import shlex
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from daemons import GTUBE, clamd_server_fixture, spamd_server_fixture  # noqa: F401 - fixtures
from harness import CONFIGURE, ROOT, Installation, envelope, install
from qsconfigure import legacy
from qsconfigure.cli import resolve_lang
from scanner_fixtures import plain_message, with_attachment

SHARED = Path(os.environ.get("QS_SHARED_DIR", ROOT.parent / "shared"))
LINES_FILE = SHARED / "compat" / "configure-lines.tsv"
FIXTURES = ROOT / "tests" / "compat"
SPAM = {"spamd", "fast_spamassassin", "verbose_spamassassin", "rspamd"}


def published_lines() -> list[tuple[str, str, list[str]]]:
    rows = []
    for line in LINES_FILE.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        ident, version, _source, argv = (line.split("\t") + [""] * 4)[:4]
        rows.append((ident, version, shlex.split(argv)))
    return rows


def run_configure(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("LANG", "LC_ALL")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, str(CONFIGURE), *args], capture_output=True, text=True, check=False, env=environment, cwd=cwd
    )


def frozen_settings(program: Path) -> dict:
    """The SETTINGS literal of a generated program, read without running it."""
    tree = ast.parse(program.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "SETTINGS":
            return ast.literal_eval(node.value)
    raise AssertionError(f"no SETTINGS in {program}")


def this_machine(tmp_path: Path, clamd, spamd) -> list[str]:
    """Where this machine's scanners and the output are; --no-QQ-check because qmail may not be installed."""
    return [
        "--output",
        str(tmp_path / "qmail-scanner-queue.py"),
        "--no-QQ-check",
        "--clamd-servers",
        clamd.socket_path,
        "--spamd-servers",
        spamd.socket_path,
        "--scanner-args",
        f"clamscan=--database={clamd.database}",
        "--scanner-args",
        f"clamdscan=--config-file={clamd.config_path}",
    ]


# What each published line meant, as frozen settings (besides the universal checks below).
MEANT = {
    "tldp-1.20": {"scanners": ["clamd", "spamd"]},
    "gentoo-1.16": {"domain": "localhost"},
    "pld-1.24": {
        "domain": "localhost",
        "debug": 0,
        "log_details": "no",
        "admin": "root",
        "notify": ["none"],
        "block_password_protected": True,
        "scanners": [],
    },
    "pld-1.25": {
        "qs_user": "nobody",
        "debug": 0,
        "log_details": "no",
        "notify": ["none"],
        "block_password_protected": True,
        "scanners": ["clamscan", "clamdscan"],
    },
    "pld-2.04": {
        "spooldir": "/var/spool/qmailscan",
        "qmaildir": "/var/qmail",
        "qmail_queue_binary": "/var/qmail/bin/qmail-queue",
        "qmail_inject_binary": "/var/qmail/bin/qmail-inject",
        "qs_user": "nobody",
        "lang": "en_GB",
        "log_details": "no",
        "scanners": ["clamscan", "clamdscan", "verbose_spamassassin"],
        "sa_verbose": True,
    },
    "gentoo-1.25st": {
        "log_details": "mailstats",
        "mime_unpacker": "internal",
        "virus_to_delete": True,
        "sa_quarantine": 2.1,
        "sa_delete": 4.2,
        "sa_reject": False,
        "sa_subject": "SPAM:",
        "sa_delta": 0.5,
    },
    "gentoo-2.01st": {"log_details": "mailstats", "mime_unpacker": "internal"},
    "fbsd-1.25": {
        "unzip": True,
        "block_password_protected": True,
        "scanners": ["clamd", "spamd"],
        "qmaildir": "/var/qmail",
        "spooldir": "/usr/local/qmailscan",
        "qmail_queue_binary": "/var/qmail/bin/qmail-queue",
        "admin": "root",
        "notify": ["psender", "precips"],
        "redundant": True,
        "add_dscr_hdrs": "yes",
        "log_details": "syslog",
        "debug": 0,
    },
    "fbsd-1.25-spams": {
        "admin_description": "Mail Filter",
        "spooldir": "/usr/local/qmailscan",
        "unzip": True,
        "notify": ["psender", "precips"],
        "add_dscr_hdrs": "yes",
        "spam_redirect": "spam@example.com",
    },
    "fbsd-2.10": {
        "spooldir": "/var/spool/qscand",
        "etcdir": "",
        "logdir": "",
        "mime_unpacker": "reformime",
        "fix_mime": 0,
        "normalize": False,
        "qs_user": "qscand",
        "admin": "postmaster",
        "notify": ["psender", "precips"],
    },
    "t2-1.25st": {
        "log_details": "mailstats",
        "debug": 1,
        "virus_to_delete": True,
        "sa_subject": "SPAM ***",
        "scanners": ["clamdscan", "fast_spamassassin"],
        "notify": ["admin"],
    },
    "mtoaster-1.20": {
        "log_details": "syslog",
        "debug": 0,
        "admin": "postmaster",
        "domain": "example.com",
        "notify": ["psender", "nmlvadm"],
        "fix_mime": 2,
        "scanners": ["clamscan", "clamd", "verbose_spamassassin"],
        "sa_verbose": True,
    },
    "mtoaster-4.00": {
        "block_password_protected": True,
        "ignore_eol_check": True,
        "fix_mime": 2,
        "scanners": ["clamdscan", "fast_spamassassin"],
        "notify": ["psender", "nmlvadm"],
    },
    "qmailrocks-hdrs": {"domain": "example.com", "add_dscr_hdrs": "yes", "dscr_hdrs_text": "X-Antivirus-MYDOMAIN"},
    "st-2.11-doc": {
        "scanners": ["clamdscan", "fast_spamassassin"],
        "sa_quarantine": 1.0,
        "sa_delete": 5.0,
        "sa_reject": True,
        "qs_group": "qscand",
        "debug": 2,
        "settings_per_domain": True,
    },
}
# Notes each line must print: an option kept only for compatibility is said aloud.
SAID = {
    "gentoo-1.25st": ["--sa-alt is accepted for compatibility and has no effect", "--mime-unpacker ripmime"],
    "gentoo-2.01st": ["--mime-unpacker ripmime"],
    "fbsd-2.10": ["--etcdir /var/spool/qscand is the spooldir", "--logdir /var/spool/qscand is the spooldir"],
    "mtoaster-1.20": ["scanner clamuko is clamd here"],
    "st-2.11-doc": [
        "--sa-forward spam@example.com has no equivalent here",
        "--setuidgid-path has no effect",
        "--sa-fwd-verbose yes has no equivalent here",
    ],
    "pld-2.04": ["one spamd check, verbose"],
}


def test_every_published_line_is_known_here():
    assert {ident for ident, _, _ in published_lines()} <= set(MEANT)


@pytest.mark.parametrize(("ident", "version", "words"), published_lines(), ids=[row[0] for row in published_lines()])
def test_published_configure_line_is_accepted_and_means_the_same(
    tmp_path, clamd_server, spamd_server, ident, version, words
):
    extra = this_machine(tmp_path, clamd_server, spamd_server)
    if "--install" in words:
        extra += ["--destdir", str(tmp_path / "stage")]
    result = run_configure(*words, *extra, cwd=tmp_path)
    assert result.returncode == 0, f"{ident}: {result.stdout[-2000:]}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    settings = frozen_settings(tmp_path / "qmail-scanner-queue.py")
    for name, meant in MEANT.get(ident, {}).items():
        if name == "scanners":
            assert [s["name"] for s in settings["scanners"]] == meant, ident
        else:
            assert settings[name] == meant, f"{ident}: {name}"
    for scanner in settings["scanners"]:
        # A dead spam scanner lets mail through, marked unchecked; a dead virus scanner temp-fails.
        assert scanner["fail"] == ("pass" if scanner["name"] in SPAM else "tempfail"), (ident, scanner["name"])
    if "--spooldir" not in words:
        legacy_spool = os.path.isdir(legacy.SPOOL_1X)
        assert settings["spooldir"] == (legacy.SPOOL_1X if legacy_spool else legacy.SPOOL_2X)
    if "--notify" not in words:
        # No original installed here to read: a new install's default, no notices to senders.
        assert settings["notify"] == ["admin"]
    for text in SAID.get(ident, []):
        assert text in result.stdout, f"{ident}: {text!r} not said"
    if ident == "st-2.11-doc":
        assert settings["spam_maildir"] == os.path.join(settings["spooldir"], "quarantine", "spam")
        spamd_addresses = next(s["addresses"] for s in settings["scanners"] if s["name"] == "fast_spamassassin")
        assert "/var/run/spamd.sock" in spamd_addresses


def configure_here(tmp_path: Path, standin: Path, *words: str) -> tuple[subprocess.CompletedProcess, dict]:
    """configure.py with the stand-in as next hop and no scanners; the output and its frozen settings."""
    output = tmp_path / "p.py"
    base = ["--qmail-queue-binary", str(standin), "--no-QQ-check", "--scanners", "none", "--output", str(output)]
    result = run_configure(*base, *words)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, frozen_settings(output)


def options(tmp_path: Path, **values) -> Namespace:
    base = {"bindir": str(tmp_path / "bin"), "qmaildir": str(tmp_path / "qmail")}
    return Namespace(**{**base, **values})


def test_a_1x_spool_that_exists_is_kept_and_said(tmp_path):
    old_spool = tmp_path / "qmailscan"
    notes: list[str] = []
    assert legacy.default_spooldir(options(tmp_path), notes, legacy_spool=str(tmp_path / "absent")) == legacy.SPOOL_2X
    assert notes == []
    old_spool.mkdir()
    assert legacy.default_spooldir(options(tmp_path), notes, legacy_spool=str(old_spool)) == str(old_spool)
    assert len(notes) == 1 and "1.x spool" in notes[0]


def test_the_old_script_in_bindir_names_the_spool_and_the_notify_default(tmp_path, standin):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    old_spool = tmp_path / "old-spool"
    text = (FIXTURES / "qmail-scanner-queue-1.25.pl").read_text().replace("/var/spool/qmailscan", str(old_spool))
    (bindir / "qmail-scanner-queue.pl").write_text(text)
    result, settings = configure_here(tmp_path, standin, "--bindir", str(bindir))
    assert settings["spooldir"] == str(old_spool)
    assert settings["notify"] == ["sender", "admin"]  # what that 1.25 site did
    assert f"spool {old_spool}: the one" in result.stdout


@pytest.mark.parametrize(
    ("words", "said"),
    [
        (["--spool", "/tmp/x"], "unrecognized arguments: --spool"),  # no abbreviation taken for another option
        (["--scanners", "sophie"], "scanner sophie: the Sophie daemon for Sophos SAVI is discontinued"),
        (["--scanners", "clamd,trophie"], "scanner trophie:"),
        (["--scanners", "AvpLinux"], "scanner avplinux:"),
        (["--scanners", "kavdaemon"], "scanner kavdaemon:"),
        (["--scanners", "ravlin"], "scanner ravlin: RAV AntiVirus is discontinued"),
        (
            ["--output", "/nonexistent-dir/p.py"],
            "--output /nonexistent-dir/p.py: the directory /nonexistent-dir does not",
        ),
    ],
)
def test_refusals_are_one_line_without_a_traceback(tmp_path, words, said):
    result = run_configure("--no-QQ-check", "--output", str(tmp_path / "p.py"), *words)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert said in result.stderr
    assert len([line for line in result.stderr.splitlines() if "error:" in line]) == 1


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (
            ["--install", "no", "--debug", "0", "--add-dscr-hdrs", "1", "--no-QQ-check", "1"],
            {"debug": 0, "add_dscr_hdrs": "yes"},
        ),
        (
            ["--block-password-protected", "--ignore-eol-check", "--unzip", "--redundant"],
            {"block_password_protected": True, "ignore_eol_check": True, "unzip": True, "redundant": True},
        ),
        (["--log-details", "1"], {"log_details": "mailstats"}),
        (["--log-details", "0", "--add-dscr-hdrs", "all"], {"log_details": "no", "add_dscr_hdrs": "all"}),
        (["--fix-mime", "--skip-text-msgs", "no"], {"fix_mime": 1, "skip_text_msgs": False}),
        (["--user", "postmaster", "--domain", "example.com"], {"admin": "postmaster", "domain": "example.com"}),
        (["--admin", "hostmaster@example.net"], {"admin": "hostmaster", "domain": "example.net"}),
        (["--admin-realname", "Mail_Filter"], {"admin_description": "Mail Filter"}),
        (["--lang", "tw_BIG5"], {"lang": "zh_TW"}),
        (["--lang", "ja_JP.EUC"], {"lang": "ja_JP"}),
        (["--lang", "enlt_LT"], {"lang": "enlt_LT"}),
        (["--lang", "tr_TR_ascii"], {"lang": "tr_TR"}),
        (["--lang", "pt_PT"], {"lang": "pt_PT"}),
        (["--archive", "1"], {"archive": "yes"}),
        (["--archive", "0"], {"archive": ""}),
    ],
)
def test_value_forms_of_the_original(tmp_path, standin, words, expected):
    _result, settings = configure_here(tmp_path, standin, "--notify", "none", *words)
    for name, value in expected.items():
        assert settings[name] == value, name


def test_spam_scanner_failure_defaults_and_overrides(tmp_path, standin, spamd_server):
    base = [
        "--qmail-queue-binary",
        str(standin),
        "--no-QQ-check",
        "--notify",
        "none",
        "--output",
        str(tmp_path / "p.py"),
        "--spamd-servers",
        spamd_server.socket_path,
        "--scanners",
        "spamd",
    ]
    for extra, fail in (
        ([], "pass"),
        (["--sa-faulttolerant", "no"], "tempfail"),
        (["--scanner-fail", "spamd=tempfail"], "tempfail"),
    ):
        result = run_configure(*base, *extra)
        assert result.returncode == 0, result.stderr
        assert frozen_settings(tmp_path / "p.py")["scanners"][0]["fail"] == fail, extra


def test_an_unsupported_lang_falls_back_to_english_with_a_note():
    notes: list[str] = []
    assert resolve_lang("", "xx_YY.UTF-8", notes) == "en_GB"
    assert len(notes) == 1 and "$LANG=xx_YY.UTF-8" in notes[0]
    assert resolve_lang("", "da_DK.UTF-8", []) == "da_DK"
    assert resolve_lang("", "nb_NO.UTF-8", []) == "no_NO"
    said: list[str] = []
    assert resolve_lang("tw_BIG5", "", said) == "zh_TW"
    assert said == ["configure.py: note: --lang tw_BIG5: the alert texts are zh_TW (sent in UTF-8)"]


def old_site(tmp_path: Path, fixture: str, standin: Path) -> tuple[Path, Path]:
    """An installed original at tmp_path: its generated script, qmail's binaries, its spool."""
    qmail, spool = tmp_path / "qmail", tmp_path / "spool"
    (qmail / "bin").mkdir(parents=True)
    spool.mkdir()
    text = (FIXTURES / fixture).read_text()
    text = text.replace("/var/spool/qmailscan", str(spool)).replace("/var/spool/qscan", str(spool))
    script = qmail / "bin" / "qmail-scanner-queue.pl"
    script.write_text(text.replace("/var/qmail", str(qmail)))
    (qmail / "bin" / "qmail-queue").symlink_to(standin)
    inject = qmail / "bin" / "qmail-inject"
    inject.write_text("#!/bin/sh\ncat >/dev/null\n")
    inject.chmod(0o755)
    return script, spool


def test_migrate_from_a_2x_script_prints_the_equivalent_line_and_changes_nothing(tmp_path, standin):
    script, spool = old_site(tmp_path, "qmail-scanner-queue-2.08.pl", standin)
    result = run_configure("--migrate-from", str(script))
    assert result.returncode == 0, result.stderr
    assert f"Qmail-Scanner 2.08 at {script}" in result.stdout
    line = next(text for text in result.stdout.splitlines() if text.startswith("  ./configure.py "))
    words = shlex.split(line)
    assert words[words.index("--scanners") + 1] == "clamdscan,verbose_spamassassin"
    assert words[words.index("--fix-mime") + 1] == "2" and words[words.index("--lang") + 1] == "de_DE"
    assert words[words.index("--spooldir") + 1] == str(spool)
    assert "--install" not in words  # only the old configure run's own steering is left out
    assert "nothing changed; add --install to migrate" in result.stdout
    assert list(spool.iterdir()) == []


def test_migrate_from_a_1x_script_installs_in_place_and_its_policy_blocks(tmp_path, standin, clamd_server):
    script, spool = old_site(tmp_path, "qmail-scanner-queue-1.25.pl", standin)
    policy_1x = spool / "quarantine-attachments.txt"
    policy_1x.write_text((SHARED / "compat" / "policy" / "pld-1.25-quarantine-attachments.txt").read_text())
    old_quarantined = spool / "quarantine" / "new" / "1100000000.12345.host"
    old_quarantined.parent.mkdir(parents=True)
    old_quarantined.write_text("From: a@example.org\n\nquarantined by 1.25\n")
    before = policy_1x.read_bytes()
    result = run_configure(
        "--migrate-from",
        str(script),
        "--install",
        "--prefix",
        str(tmp_path / "prefix"),
        "--scanner-args",
        f"clamdscan=--config-file={clamd_server.config_path}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1.x form) -> converted to quarantine-events.txt next to it" in result.stdout
    assert "--notify sender,admin" in result.stdout or "--notify sender,admin" in " ".join(result.stdout.split())
    assert policy_1x.read_bytes() == before and old_quarantined.is_file()  # the old site's files stay as they were
    converted = (spool / "quarantine-events.txt").read_text()
    assert ".exe\tSIZE=-1\tEXE files not allowed per Company security policy" in converted
    program = tmp_path / "qmail" / "bin" / "qmail-scanner-queue.py"
    settings = frozen_settings(program)
    assert settings["spooldir"] == str(spool) and settings["notify"] == ["sender", "admin"]
    assert [s["name"] for s in settings["scanners"]] == ["clamdscan"]
    assert settings["unzip"] and settings["block_password_protected"] and settings["log_details"] == "mailstats"
    site = Installation(tmp_path / "prefix", program, spool, tmp_path / "sink", result.stdout)
    site.sink.mkdir()
    blocked = site.run(with_attachment("setup.exe", b"MZ\x90\x00 not really a program"))
    assert blocked.exit_code == 0 and blocked.queued == []
    assert len(list((spool / "quarantine" / "policy" / "new").iterdir())) == 1
    assert len(site.run(plain_message(b"hello")).queued) == 1


def test_converting_never_overwrites_a_policy_file(tmp_path):
    from qsconfigure.migrate import OldScript, convert_policy

    (tmp_path / "quarantine-attachments.txt").write_text(".pif\t0\tPIF files\n")
    (tmp_path / "quarantine-events.txt").write_text(".xyz\tSIZE=-1\tthe site's own\n")
    old = OldScript(path="x", policy_file=str(tmp_path / "quarantine-attachments.txt"))
    outcome, written = convert_policy(old, str(tmp_path))
    assert (tmp_path / "quarantine-events.txt").read_text() == ".xyz\tSIZE=-1\tthe site's own\n"
    assert written != str(tmp_path / "quarantine-events.txt") and "is kept" in outcome
    assert ".pif\tSIZE=-1\tPIF files" in Path(written).read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="root reads the old spool")
def test_converting_refuses_a_policy_name_the_old_scanner_account_made_a_link(tmp_path):
    from qsconfigure.migrate import OldScript, convert_policy
    from qsconfigure.probes import ConfigureError

    secret = tmp_path / "root-only"
    secret.write_text(".pif\t0\troot's secret line\n")
    secret.chmod(0o600)
    old_spool, new_spool = tmp_path / "qmailscan", tmp_path / "qscan"
    old_spool.mkdir()
    new_spool.mkdir()
    os.chown(old_spool, 65534, 65534)  # the old spool belongs to the old scanner account, not to root
    (old_spool / "quarantine-attachments.txt").symlink_to(secret)
    old = OldScript(path="x", policy_file=str(old_spool / "quarantine-attachments.txt"))
    with pytest.raises(ConfigureError, match="link"):
        convert_policy(old, str(new_spool))
    assert list(new_spool.iterdir()) == []


@pytest.mark.parametrize(
    ("option", "spam_goes_to"),
    [
        (["--spams-redirect", "spam@example.com"], [b"spam@example.com"]),
        (["--spams-tosuffix", "spam"], [b"a-spam@example.com", b"b-spam@example.net"]),
    ],
)
def test_freebsd_port_spam_redirection(make_installation, spamd_server, option, spam_goes_to):
    site = make_installation("--scanners", "spamd", "--spamd-servers", spamd_server.socket_path, *option, fresh=True)
    to = envelope("sender@example.org", "a@example.com", "b@example.net")
    spam = site.run(plain_message(b"Buy now!\r\n" + GTUBE, subject="offer"), to)
    assert spam.exit_code == 0 and len(spam.queued) == 1
    assert (
        spam.queued[0].envelope == b"Fsender@example.org\0" + b"".join(b"T" + r + b"\0" for r in spam_goes_to) + b"\0"
    )
    ham = site.run(plain_message(b"See you at lunch."), to)
    assert ham.queued[0].envelope == to  # mail that is not spam goes where it was addressed


def test_migrate_says_which_recorded_options_it_leaves_out(tmp_path, standin):
    script, _spool = old_site(tmp_path, "qmail-scanner-queue-2.08.pl", standin)
    script.write_text(script.read_text().replace("--install 1", "--install 1 --local-patch-level 3", 1))
    result = run_configure("--migrate-from", str(script))
    assert result.returncode == 0, result.stderr
    assert "recorded options not known here, left out: --local-patch-level 3" in result.stdout
    assert "--local-patch-level" not in next(t for t in result.stdout.splitlines() if t.startswith("  ./configure.py"))


def test_migrate_leaves_out_a_retired_scanner_of_the_old_site_and_says_why(tmp_path, standin):
    script, _spool = old_site(tmp_path, "qmail-scanner-queue-2.08.pl", standin)
    script.write_text(script.read_text().replace('"clamdscan,verbose_spamassassin"', '"sophie,clamdscan"', 1))
    result = run_configure("--migrate-from", str(script))
    assert result.returncode == 0, result.stderr
    assert "scanner sophie left out: the Sophie daemon for Sophos SAVI is discontinued" in result.stdout
    line = shlex.split(next(t for t in result.stdout.splitlines() if t.startswith("  ./configure.py")))
    assert line[line.index("--scanners") + 1] == "clamdscan"


def test_the_recorded_line_is_also_found_in_a_perl_string(tmp_path):
    from qsconfigure.migrate import read_old_script

    script = tmp_path / "qmail-scanner-queue.pl"
    script.write_text(
        "#!/usr/bin/perl -T\n# qmail-scanner-queue\nmy $scandir='/var/spool/qscan';\n"
        'my $config_line="./configure --notify \\"admin\\" --debug no --scanners clamdscan";\n'
    )
    assert read_old_script(str(script)).command == ["--notify", "admin", "--debug", "no", "--scanners", "clamdscan"]


def test_a_1x_site_before_1_22_alerted_sender_and_admin():
    from qsconfigure.migrate import OldScript

    assert OldScript(path="x", version="1.20").site_notify == ["sender", "admin"]
    assert OldScript(path="x", version="1.25").site_notify == ["psender", "admin"]  # the original's default, kept
    assert OldScript(path="x", version="2.01").site_notify == ["psender", "admin"]
    assert OldScript(path="x", version="1.16", notify=["admin"]).site_notify == ["admin"]


def test_an_unreadable_file_where_the_old_script_would_be_does_not_stop_configure(tmp_path, standin):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "qmail-scanner-queue.pl").write_text("#!/bin/sh\necho something else\n")
    _result, settings = configure_here(tmp_path, standin, "--bindir", str(bindir))
    assert settings["spooldir"] in (legacy.SPOOL_1X, legacy.SPOOL_2X)


def test_etcdir_and_logdir_hold_the_policy_and_the_logs(tmp_path, standin):
    etc, logs = tmp_path / "etc", tmp_path / "log"
    site = install(
        tmp_path / "qs",
        standin,
        "--etcdir",
        str(etc),
        "--logdir",
        str(logs),
        "--log-details",
        "mailstats",
        "--debug",
        "1",
    )
    assert (etc / "quarantine-events.txt").is_file() and not (site.spool / "quarantine-events.txt").exists()
    (etc / "quarantine-events.txt").write_text(".xyz\tSIZE=-1\tno xyz files here\n")
    blocked = site.run(with_attachment("plans.xyz", b"data"))
    assert blocked.exit_code == 0 and blocked.queued == []
    assert "no xyz files here" in (logs / "quarantine.log").read_text()
    assert (logs / "mailstats.csv").read_text() and (logs / "qmail-queue.log").read_text()
    assert not (site.spool / "quarantine.log").exists() and not (site.spool / "mailstats.csv").exists()
