"""configure.py: options, probes, the generated program, and --install's layout."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness import CONFIGURE, ROOT, envelope, install

CLEAN = b"From: a@example.org\nSubject: hi\n\nhello\n"


def configure(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CONFIGURE), "--batch", *args], capture_output=True, text=True, cwd=cwd, check=False
    )


def test_help_is_grouped_and_names_the_original_options():
    result = configure("--help")
    assert result.returncode == 0
    for group in ("installation layout:", "qmail-queue contract:", "scanning:", "spam handling:", "actions:"):
        assert group in result.stdout
    for option in ("--qs-user", "--spooldir", "--notify", "--scanners", "--archive", "--add-dscr-hdrs", "--destdir"):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--qmail-queue-binary", "/nonexistent/qmail-queue"], "/nonexistent/qmail-queue is not an executable file"),
        (["--scanners", "no-such-scanner"], "unknown scanner 'no-such-scanner'"),
        (["--notify", "sender,everyone"], "--notify: unknown value(s) everyone"),
        (["--archive", "(unclosed"], "--archive: not a valid regular expression"),
        (["--python", "/nonexistent/python3"], "/nonexistent/python3 does not run"),
    ],
)
def test_missing_or_broken_component_stops_with_reason_and_hint(tmp_path, standin, args, reason):
    base = ["--prefix", str(tmp_path), "--notify", "none", "--scanners", "none", "--output", str(tmp_path / "p.py")]
    if "--qmail-queue-binary" not in args:
        base += ["--qmail-queue-binary", str(standin)]
    result = configure(*base, *args)
    assert result.returncode == 1
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("configure.py: error:")]
    assert len(error_lines) == 1
    assert reason in error_lines[0]
    assert not (tmp_path / "p.py").exists()


def test_probes_print_autoconf_style_and_a_summary(tmp_path, standin):
    result = configure(
        "--prefix", str(tmp_path), "--qmail-queue-binary", str(standin), "--notify", "none",
        "--scanners", "none", "--output", str(tmp_path / "p.py"),
    )
    assert result.returncode == 0, result.stderr
    assert "checking for the Python interpreter... /" in result.stdout
    assert "checking for a working reformime... /usr/bin/reformime" in result.stdout
    assert "checking for tnef... /usr/bin/tnef" in result.stdout
    assert "qmail-scanner configuration summary" in result.stdout


def test_generated_program_records_its_origin_and_freezes_the_settings(installation):
    text = installation.program.read_text()
    first = text.splitlines()[0]
    interpreter = first[2:].split()[0]
    assert first.endswith(" -IS")
    assert os.path.realpath(interpreter) == interpreter  # no symlink, no shim
    assert "# Configure command: ./configure.py --prefix" in text
    assert "#   qmail-queue (next hop): " in text
    assert "SETTINGS = {" in text
    assert f"ENGINE_DIR = \"{installation.prefix / 'lib' / '2.0.0'}\"" in text
    assert str(ROOT / "lib") not in text  # run time never reads the source tree


def test_symlinked_or_shimmed_interpreter_is_resolved(tmp_path, standin):
    link = tmp_path / "python-link"
    link.symlink_to(sys.executable)
    shim = tmp_path / "python-shim"
    shim.write_text(f'#!/bin/sh\nexec "{link}" "$@"\n')
    shim.chmod(0o755)
    real = os.path.realpath(sys.executable)
    for candidate in (link, shim):
        output = tmp_path / f"{candidate.name}.py"
        result = configure(
            "--prefix", str(tmp_path / candidate.name), "--qmail-queue-binary", str(standin), "--notify", "none",
            "--scanners", "none", "--python", str(candidate), "--output", str(output),
        )
        assert result.returncode == 0, result.stderr
        assert output.read_text().splitlines()[0] == f"#!{real} -IS"


def test_engine_is_byte_compiled_and_pinned(installation):
    engine = installation.prefix / "lib" / "2.0.0" / "qmail_scanner"
    compiled = list((engine / "__pycache__").glob("main.*.pyc"))
    assert compiled
    (engine / "__init__.py").write_text('__version__ = "9.9.9"\n')
    for cached in (engine / "__pycache__").glob("__init__.*.pyc"):
        cached.unlink()
    result = installation.run(CLEAN)
    assert result.exit_code == 81  # temporary: the sender retries, nothing queued
    assert "is not the pinned 2.0.0" in result.stderr
    assert result.queued == []


def test_install_layout_modes_and_rerun_keeps_the_sites_policy(tmp_path, standin):
    first = install(tmp_path / "qs", standin)
    spool = first.spool
    assert stat.S_IMODE(spool.stat().st_mode) == 0o750
    work_dirs = ("tmp", "working/tmp", "quarantine/viruses/new", "quarantine/policy/cur", "archives/tmp", "failed/new")
    for relative in work_dirs:
        assert stat.S_IMODE((spool / relative).stat().st_mode) == 0o700, relative
    for name in ("quarantine.log", "mailstats.csv", "qmail-queue.log"):
        assert (spool / name).is_file()
    # The scanner account is the installing user (root here): nothing to drop to, so no setuid bit.
    wrapper = tmp_path / "qs" / "bin" / "qmail-scanner-queue"
    assert stat.S_IMODE(wrapper.stat().st_mode) == 0o755
    assert "(mode 0755, not setuid: only" in first.configure_output
    policy = spool / "quarantine-events.txt"
    assert ".exe" in policy.read_text()
    policy.write_text(".xyz\tSIZE=-1\tsite rule\n")
    second = install(tmp_path / "qs", standin, "--deadline", "300")
    assert policy.read_text() == ".xyz\tSIZE=-1\tsite rule\n"
    backups = list((tmp_path / "qs" / "bin").glob("qmail-scanner-queue.py.2*"))
    assert len(backups) == 1  # the changed program was kept as a dated backup
    assert "'deadline_seconds': 1200.0" in backups[0].read_text()
    assert second.run(CLEAN).exit_code == 0


def test_destdir_stages_everything_inside_it(tmp_path, standin):
    stage = tmp_path / "stage"
    outside_spool = Path("/var/spool/qscan-destdir-test")
    result = configure(
        "--destdir", str(stage), "--spooldir", str(outside_spool), "--qmaildir", "/var/qmail-destdir-test",
        "--libdir", "/usr/local/lib/qmail-scanner-destdir-test", "--no-QQ-check", "--notify", "none",
        "--scanners", "none", "--skip-setuid-test", "--install", "--output", str(tmp_path / "p.py"),
    )
    assert result.returncode == 0, result.stderr
    assert (stage / "var/qmail-destdir-test/bin/qmail-scanner-queue.py").is_file()
    assert (stage / str(outside_spool).lstrip("/") / "quarantine/viruses/new").is_dir()
    assert (stage / "usr/local/lib/qmail-scanner-destdir-test/2.0.0/qmail_scanner/main.py").is_file()
    # --skip-setuid-test skips only the test: the wrapper is staged, and QMAILQUEUE names it, never the .py.
    wrapper = stage / "var/qmail-destdir-test/bin/qmail-scanner-queue"
    assert wrapper.is_file() and os.access(wrapper, os.X_OK)
    assert 'QMAILQUEUE="/var/qmail-destdir-test/bin/qmail-scanner-queue"' in result.stdout  # final path
    assert "qmail-scanner-queue.py\"" not in result.stdout
    assert str(stage) not in result.stdout.rsplit("\ninstalled ", 1)[1].split("\n", 1)[1]
    assert not outside_spool.exists()
    assert not Path("/var/qmail-destdir-test").exists()
    assert not Path("/usr/local/lib/qmail-scanner-destdir-test").exists()


def test_program_runs_from_anywhere_without_the_source_tree(installation, tmp_path):
    """The installed program must not need the checkout: run it with cwd=/ and a copy of the message."""
    message = tmp_path / "message"
    message.write_bytes(CLEAN)
    envelope_file = tmp_path / "envelope"
    envelope_file.write_bytes(envelope("a@example.org", "b@example.com"))
    with open(message, "rb") as stdin, open(envelope_file, "rb") as stdout:
        result = subprocess.run(
            [str(installation.program)], stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, cwd="/",
            env={"QQ_STANDIN_DIR": str(installation.sink)}, check=False,
        )
    assert result.returncode == 0, result.stderr
    assert len(list(installation.sink.glob("*.msg"))) == 1


def test_compatibility_only_options_say_they_have_no_effect(tmp_path, standin):
    result = configure(
        "--prefix", str(tmp_path), "--qmail-queue-binary", str(standin), "--notify", "none", "--scanners", "none",
        "--sa-report", "yes", "--output", str(tmp_path / "p.py"),
    )
    assert result.returncode == 0, result.stderr
    assert "--sa-report is accepted for compatibility and has no effect" in result.stdout


@pytest.mark.parametrize(("value", "level"), [("2", 2), ("1", 1), ("0", 0), ("yes", 1), ("no", 0)])
def test_fix_mime_takes_the_originals_levels_with_yes_no_aliases(tmp_path, standin, value, level):
    program = tmp_path / "p.py"
    result = configure(
        "--prefix", str(tmp_path), "--qmail-queue-binary", str(standin), "--notify", "none", "--scanners", "none",
        "--fix-mime", value, "--output", str(program),
    )
    assert result.returncode == 0, result.stderr
    assert f"'fix_mime': {level}," in program.read_text() or f'"fix_mime": {level},' in program.read_text()


def test_fix_mime_refuses_an_unknown_level(tmp_path, standin):
    result = configure(
        "--prefix", str(tmp_path), "--qmail-queue-binary", str(standin), "--notify", "none", "--scanners", "none",
        "--fix-mime", "3", "--output", str(tmp_path / "p.py"),
    )
    assert result.returncode == 2
    assert "expected 0, 1, 2, yes or no, got '3'" in result.stderr


@pytest.mark.parametrize(
    ("asked", "scanner_names", "skip"),
    [
        (None, ["clamd", "spamd"], False),  # every virus scanner a daemon: bodies are scanned
        (None, ["clamd", "clamscan"], True),  # a command-line AV costs a process per message
        (None, ["spamd"], True),
        (True, ["clamd"], True),  # the site's explicit choice stands
        (False, ["clamscan"], False),
    ],
)
def test_skip_text_msgs_defaults_to_no_when_every_virus_scanner_is_a_daemon(asked, scanner_names, skip):
    from qsconfigure.generate import skip_text_messages

    kinds = {"clamd": "virus", "clamscan": "virus", "spamd": "spam"}
    scanners = [{"name": name, "kind": kinds[name]} for name in scanner_names]
    assert skip_text_messages(asked, scanners) is skip
