"""Command-line virus scanners: clamscan and clamdscan for real, the other definitions as data."""

from __future__ import annotations

import os
import re

import pytest

from daemons import EICAR, clamd_server_fixture  # noqa: F401 - fixture
from qmail_scanner.scanners import run_virus_scanners
from qmail_scanner.scanners.cmdline import DEFINITIONS
from qmail_scanner.settings import ScannerConfig
from scanner_fixtures import HAM, scan_settings, spooled_message, with_attachment, zipped


def run(tmp_path, raw: bytes, config: ScannerConfig):
    message = spooled_message(tmp_path, raw, scan_settings(config, spooldir=str(tmp_path / "spool")))
    try:
        (result,) = run_virus_scanners(message)
    finally:
        os.close(message.message_fd)
    return result


@pytest.fixture(name="command_line_configs")
def command_line_configs_fixture(clamd_server):
    return {
        "clamscan": ScannerConfig(
            "clamscan", "virus", binary="clamscan", extra_args=(f"--database={clamd_server.database}",)
        ),
        "clamdscan": ScannerConfig(
            "clamdscan", "virus", binary="clamdscan", extra_args=(f"--config-file={clamd_server.config_path}",)
        ),
    }


@pytest.mark.parametrize("name", ["clamscan", "clamdscan"])
def test_virus_found_and_named(tmp_path, command_line_configs, name):
    result = run(tmp_path, with_attachment("e.zip", zipped("eicar.com", EICAR)), command_line_configs[name])
    assert not result.failed
    assert [f.rule.split(".")[0] for f in result.findings] == ["Eicar-Test-Signature"]


@pytest.mark.parametrize("name", ["clamscan", "clamdscan"])
def test_clean_mail(tmp_path, command_line_configs, name):
    result = run(tmp_path, HAM, command_line_configs[name])
    assert not result.failed and not result.findings


def test_scanner_error_exit_is_a_failure(tmp_path):
    config = ScannerConfig("clamscan", "virus", binary="clamscan", extra_args=(f"--database={tmp_path}/none",))
    result = run(tmp_path, HAM, config)
    assert result.failed and "exited with 2" in result.failure_reason


def test_clamdscan_with_clamd_down_is_a_failure(tmp_path):
    conf = tmp_path / "clamd.conf"
    conf.write_text(f"LocalSocket {tmp_path}/nothing.sock\n")
    config = ScannerConfig("clamdscan", "virus", binary="clamdscan", extra_args=(f"--config-file={conf}",), fail="pass")
    result = run(tmp_path, with_attachment("e.com", EICAR), config)
    assert result.failed and result.unchecked and not result.findings


def test_missing_binary_is_a_failure(tmp_path):
    result = run(tmp_path, HAM, ScannerConfig("uvscan", "virus", binary=str(tmp_path / "uvscan")))
    assert result.failed and "cannot run" in result.failure_reason


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_every_definition_is_usable_data(name):
    definition = DEFINITIONS[name]
    assert "{targets}" in definition.argv
    assert "name" in re.compile(definition.virus_pattern).groupindex
    assert not (definition.clean_codes & definition.found_codes)
    argv = definition.command("/opt/av/bin/scan", ["/spool/msg", "/spool/dir"])
    assert argv[0] == "/opt/av/bin/scan" and argv.count("/spool/msg") == 1
    assert definition.tested == (name in ("clamscan", "clamdscan"))


@pytest.mark.parametrize(
    ("name", "line", "virus"),
    [
        ("sweep", ">>> Virus 'EICAR-AV-Test' found in file /x/y", "EICAR-AV-Test"),
        ("fsav", "/x/y: Infected: EICAR_Test_File [FSE]", "EICAR_Test_File"),
        ("antivir", "ALERT: [Eicar-Test-Signatur virus] /x/y <<< Contains code", "Eicar-Test-Signatur"),
        ("kavscanner", "/x/y infected: EICAR-Test-File", "EICAR-Test-File"),
        ("nod32", 'name="/x/y", virus="Eicar test file", action="" ', "Eicar test file"),
    ],
)
def test_untested_definitions_read_their_documented_output(name, line, virus):
    assert DEFINITIONS[name].virus_names(f"noise\n{line}\nmore noise\n") == [virus]
