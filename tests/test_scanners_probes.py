"""Configure-time scanner probes against the real daemons and binaries."""

from __future__ import annotations

from argparse import Namespace

from daemons import (
    clamd_server_fixture,  # noqa: F401 - fixtures
    dead_socket_path,
    rspamd_server_fixture,  # noqa: F401
    spamd_server_fixture,  # noqa: F401
)
from qmail_scanner.settings import Settings
from qsconfigure.scanner_probes import AUTO_SCANNERS, SCANNER_PROBES, failure_policy


def options(**values) -> Namespace:
    defaults = {"clamd_servers": None, "spamd_servers": None, "rspamd_servers": None, "scanner_fail": [],
                "scanner_timeout": 30.0, "sa_faulttolerant": False, "scanner_args": []}
    return Namespace(**{**defaults, **values})


def test_clamd_probe_finds_eicar_and_freezes_a_loadable_config(clamd_server):
    dead = dead_socket_path()
    result = SCANNER_PROBES["clamd"](options(clamd_servers=[dead, clamd_server.socket_path]))
    assert result.found and result.version.startswith("1.")
    mapping = result.extra["scanner"]
    assert mapping["addresses"] == [clamd_server.socket_path, dead]  # working first, the farm member kept
    settings = Settings.from_mapping({"scanners": [mapping]})
    assert settings.scanners[0].name == "clamd" and settings.scanners[0].kind == "virus"


def test_clamd_probe_says_why_not(tmp_path):
    result = SCANNER_PROBES["clamd"](options(clamd_servers=[dead_socket_path()]))
    assert not result.found and "connect failed" in result.detail and "--clamd-servers" in result.hint


def test_clamscan_probe_runs_the_binary_on_eicar(clamd_server):
    result = SCANNER_PROBES["clamscan"](options(scanner_args=[f"clamscan=--database={clamd_server.database}"]))
    assert result.found, result.detail
    assert result.extra["scanner"]["extra_args"] == [f"--database={clamd_server.database}"]
    assert result.version.startswith("1.")


def test_clamscan_probe_without_signatures_fails_with_the_reason(tmp_path):
    (tmp_path / "empty").mkdir()
    result = SCANNER_PROBES["clamscan"](options(scanner_args=[f"clamscan=--database={tmp_path / 'empty'}"]))
    assert not result.found and "exited with 2" in result.detail


def test_clamdscan_probe(clamd_server):
    result = SCANNER_PROBES["clamdscan"](options(scanner_args=[f"clamdscan=--config-file={clamd_server.config_path}"]))
    assert result.found, result.detail


def test_spamd_probe_and_fail_policy(spamd_server):
    result = SCANNER_PROBES["spamd"](options(spamd_servers=[spamd_server.socket_path], sa_faulttolerant=True))
    assert result.found and result.version.startswith("4.")
    assert result.extra["scanner"]["fail"] == "pass"
    assert not SCANNER_PROBES["fast_spamassassin"](options(spamd_servers=[dead_socket_path()])).found


def test_rspamd_probe(rspamd_server):
    result = SCANNER_PROBES["rspamd"](options(rspamd_servers=[rspamd_server.address]))
    assert result.found and result.version == "3.4"
    assert not SCANNER_PROBES["rspamd"](options(rspamd_servers=["127.0.0.1:1"])).found


def test_missing_command_line_av_is_reported_not_found():
    result = SCANNER_PROBES["sweep"](options())
    assert not result.found and "not found" in result.detail


def test_failure_policy_per_scanner():
    chosen = options(scanner_fail=["clamd=pass", "rspamd=tempfail"])
    assert [failure_policy(chosen, n) for n in ("clamd", "rspamd", "spamd")] == ["pass", "tempfail", "tempfail"]


def test_auto_never_picks_a_per_message_signature_loader():
    assert "clamscan" not in AUTO_SCANNERS and AUTO_SCANNERS[:3] == ("clamd", "spamd", "rspamd")
