"""clamd over its socket (real clamd with a test signature database) and the failure policy."""

from __future__ import annotations

import base64
import os
import time

import pytest

from archive_samples import tnef_with_attachment
from daemons import (
    CLAM_EXE_SIGNATURE,
    CLAMAV_TESTFILES,
    EICAR,
    FakeServer,
    clamd_disposable_fixture,  # noqa: F401 - fixtures
    clamd_server_fixture,  # noqa: F401
    clamd_small_stream_fixture,  # noqa: F401
    dead_socket_path,
    fake_server_factory_fixture,  # noqa: F401
    silent_server_fixture,  # noqa: F401
)
from qmail_scanner.scanners import read_version_cache, refresh_version_cache, run_virus_scanners
from qmail_scanner.settings import ScannerConfig
from scanner_fixtures import (
    HAM,
    plain_message,
    scan_settings,
    spooled_message,
    with_attachment,
    zipped,
)


def clamd_config(*addresses: str, fail: str = "tempfail", scan_timeout: float = 30.0) -> ScannerConfig:
    return ScannerConfig("clamd", "virus", addresses, fail=fail, connect_timeout=2.0, scan_timeout=scan_timeout)


def scan(tmp_path, raw: bytes, *configs: ScannerConfig, **settings_changes):
    settings = scan_settings(*configs, spooldir=str(tmp_path / "spool"), **settings_changes)
    message = spooled_message(tmp_path, raw, settings)
    try:
        return run_virus_scanners(message)
    finally:
        os.close(message.message_fd)


def only_virus_name(results) -> str:
    assert len(results) == 1
    result = results[0]
    assert not result.failed, result.failure_reason
    assert [f.kind for f in result.findings] == ["virus"]
    return result.findings[0].rule


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(plain_message(b"look at this:\r\n" + EICAR + b"\r\n"), id="inline"),
        pytest.param(with_attachment("eicar.com", EICAR), id="base64-attachment"),
        pytest.param(with_attachment("eicar.zip", zipped("eicar.com", EICAR), "application/zip"), id="zip"),
        pytest.param(
            with_attachment("outer.zip", zipped("inner.zip", zipped("eicar.com", EICAR)), "application/zip"),
            id="nested-zip",
        ),
        pytest.param(
            with_attachment("winmail.dat", tnef_with_attachment("eicar.com", EICAR), "application/ms-tnef"), id="tnef"
        ),
    ],
)
def test_eicar_is_found_and_named(tmp_path, clamd_server, raw):
    name = only_virus_name(scan(tmp_path, raw, clamd_config(clamd_server.socket_path)))
    assert name.startswith("Eicar-Test-Signature")


# clam_cache_emax.tgz exercises clamd's scan cache limits, it is not meant to be detected on its own.
SAMPLES = sorted(p.name for p in CLAMAV_TESTFILES.iterdir() if p.is_file() and p.name != "clam_cache_emax.tgz")


@pytest.mark.parametrize("sample", SAMPLES)
def test_clamav_testfiles_wrapped_as_attachments_are_found(tmp_path, clamd_server, sample):
    raw = with_attachment(sample, (CLAMAV_TESTFILES / sample).read_bytes())
    name = only_virus_name(scan(tmp_path, raw, clamd_config(clamd_server.socket_path)))
    assert name.startswith(CLAM_EXE_SIGNATURE)


def test_clean_mail_has_no_findings_and_did_not_fail(tmp_path, clamd_server):
    (result,) = scan(tmp_path, HAM, clamd_config(clamd_server.socket_path))
    assert (result.findings, result.failed, result.unchecked) == ((), False, False)


def test_tcp_address_works(tmp_path, clamd_server):
    name = only_virus_name(scan(tmp_path, with_attachment("e.com", EICAR), clamd_config(clamd_server.tcp_address)))
    assert name.startswith("Eicar-Test-Signature")


def test_failover_to_the_second_server(tmp_path, clamd_server):
    config = clamd_config(dead_socket_path(), "127.0.0.1:1", clamd_server.socket_path)
    assert only_virus_name(scan(tmp_path, with_attachment("e.com", EICAR), config)).startswith("Eicar")


def test_all_servers_down_is_a_failure_naming_each(tmp_path):
    first, second = dead_socket_path(), dead_socket_path()
    (result,) = scan(tmp_path, with_attachment("e.com", EICAR), clamd_config(first, second))
    assert result.failed and not result.unchecked and not result.findings
    assert first in result.failure_reason and second in result.failure_reason


def test_over_stream_max_length_is_a_failure_never_clean(tmp_path, clamd_small_stream):
    big = with_attachment("big.bin", os.urandom(400_000))
    (result,) = scan(tmp_path, big, clamd_config(clamd_small_stream.socket_path))
    assert result.failed and not result.findings
    assert "StreamMaxLength" in result.failure_reason


def test_over_stream_max_length_with_fail_pass_is_marked_unchecked(tmp_path, clamd_small_stream):
    big = with_attachment("big.bin", os.urandom(400_000))
    (result,) = scan(tmp_path, big, clamd_config(clamd_small_stream.socket_path, fail="pass"))
    assert result.failed and result.unchecked


def test_daemon_stopped_mid_test(tmp_path, clamd_disposable):
    config = clamd_config(clamd_disposable.socket_path)
    assert only_virus_name(scan(tmp_path, with_attachment("e.com", EICAR), config)).startswith("Eicar")
    clamd_disposable.stop()
    (result,) = scan(tmp_path, HAM, config)
    assert result.failed and "connect failed" in result.failure_reason
    (passed,) = scan(tmp_path, HAM, clamd_config(clamd_disposable.socket_path, fail="pass"))
    assert passed.failed and passed.unchecked


def test_server_that_never_answers_times_out_within_the_scan_timeout(tmp_path, silent_server):
    started = time.monotonic()
    (result,) = scan(tmp_path, HAM, clamd_config(silent_server.socket_path, scan_timeout=1.5))
    elapsed = time.monotonic() - started
    assert result.failed and "timed out" in result.failure_reason
    assert 1.4 < elapsed < 4.0


def test_message_deadline_bounds_the_scan(tmp_path, silent_server):
    config = clamd_config(silent_server.socket_path, scan_timeout=60)
    settings = scan_settings(config, spooldir=str(tmp_path / "s"), deadline_seconds=1.0)
    message = spooled_message(tmp_path, HAM, settings)
    started = time.monotonic()
    (result,) = run_virus_scanners(message)
    assert result.failed and time.monotonic() - started < 3.0


@pytest.mark.parametrize(
    ("mode", "reply"),
    [
        ("garbage", b"HTTP/1.1 400 Bad Request\r\n\r\n"),
        ("garbage", b"stream: OK"),  # no terminating NUL: the reply may be cut short
        ("garbage", b"stream: Something ERROR\0"),
        ("garbage", b"stream: \0"),
        ("close-mid-reply", b"stream: Eicar-Test-Signature FOUND\0"),
        ("close-mid-reply", b""),
    ],
)
def test_replies_not_understood_are_failures_never_clean(tmp_path, fake_server_factory, mode, reply):
    server: FakeServer = fake_server_factory(mode, reply)
    (result,) = scan(tmp_path, HAM, clamd_config(server.socket_path))
    assert result.failed and not result.findings, result


def test_failover_after_a_garbage_answer(tmp_path, clamd_server, fake_server_factory):
    server = fake_server_factory("garbage", b"nonsense\0")
    config = clamd_config(server.socket_path, clamd_server.socket_path)
    assert only_virus_name(scan(tmp_path, with_attachment("e.com", EICAR), config)).startswith("Eicar")
    assert server.accepted == 1


def test_independent_scanners_run_concurrently(tmp_path, fake_server_factory):
    first = fake_server_factory("silent")
    second = fake_server_factory("silent")
    configs = [
        ScannerConfig("clamd", "virus", addresses=(first.socket_path,), scan_timeout=1.5, fail="pass"),
        ScannerConfig("clamdscan", "virus", binary="/nonexistent/clamdscan", scan_timeout=1.5),
        ScannerConfig("clamd", "virus", addresses=(second.socket_path,), scan_timeout=1.5, fail="pass"),
    ]
    started = time.monotonic()
    results = scan(tmp_path, HAM, *configs)
    assert time.monotonic() - started < 2.8  # three scanners, but about one timeout
    assert [r.failed for r in results] == [True, True, True]
    assert [r.unchecked for r in results] == [True, False, True]


def test_skip_text_msgs_skips_av_when_the_unpacker_saw_no_attachment(tmp_path, clamd_server):
    class NoAttachments:
        has_attachments = False
        parts = ()

    settings = scan_settings(clamd_config(clamd_server.socket_path), spooldir=str(tmp_path / "s"), skip_text_msgs=True)
    message = spooled_message(tmp_path, plain_message(EICAR), settings, unpacked=NoAttachments())
    assert run_virus_scanners(message) == []
    assert any("skip_text_msgs" in note for note in message.notes)


def test_max_scan_size_skips_av(tmp_path, clamd_server):
    config = clamd_config(clamd_server.socket_path)
    assert scan(tmp_path, with_attachment("e.com", EICAR), config, max_scan_size=100) == []


def test_version_cache_is_refreshed_and_used_in_results(tmp_path, clamd_server):
    spooldir = tmp_path / "spool"
    settings = scan_settings(clamd_config(clamd_server.socket_path), spooldir=str(spooldir))
    spooldir.mkdir()
    versions = refresh_version_cache(settings)
    assert versions["clamd"].startswith("1.")
    assert read_version_cache(str(spooldir)) == versions
    (result,) = scan(tmp_path, HAM, clamd_config(clamd_server.socket_path))
    assert result.version == versions["clamd"]


def test_version_cache_keeps_the_old_entry_when_a_scanner_is_down(tmp_path):
    spooldir = tmp_path / "spool"
    spooldir.mkdir()
    (spooldir / "scanner-versions").write_text("clamd\t1.4.3/27000\n")
    settings = scan_settings(clamd_config(dead_socket_path()), spooldir=str(spooldir))
    assert refresh_version_cache(settings) == {"clamd": "1.4.3/27000"}


@pytest.mark.parametrize("scan_alone", [True, False])
def test_parts_clamd_cannot_find_in_the_message_are_streamed_decoded(tmp_path, clamd_server, scan_alone):
    """The unpacker's scan_alone parts reach clamd as decoded bytes; the others only inside the raw message."""
    from qmail_scanner.records import Part
    from qmail_scanner.unpack import Unpacked

    settings = scan_settings(clamd_config(clamd_server.socket_path), spooldir=str(tmp_path / "spool"))
    # The raw message does not show EICAR to clamd: it is only in the decoded work file.
    message = spooled_message(tmp_path, HAM, settings)
    decoded = tmp_path / "p00001"
    decoded.write_bytes(EICAR)
    message.unpacked = Unpacked(
        parts=[
            Part(0, 0, "text/plain"),
            Part(1, 1, "", ("eicar.com",), decoded_path=str(decoded), scan_alone=scan_alone),
        ]
    )
    try:
        (result,) = run_virus_scanners(message)
    finally:
        os.close(message.message_fd)
    assert not result.failed, result.failure_reason
    if scan_alone:
        assert [(f.rule.startswith("Eicar-Test-Signature"), f.part_name) for f in result.findings] == [
            (True, "eicar.com")
        ]
    else:
        assert result.findings == ()


AMBIGUOUS_EICAR = {
    # Part headers run straight into the base64 body: one reading has no body at all.
    "no-empty-line-after-part-headers": b"--b\nContent-Type: application/octet-stream; name=\"a.bin\"\n"
    b"Content-Transfer-Encoding: base64\n" + base64.encodebytes(EICAR) + b"--b--\n",
    # The boundary is matched exactly by some readers, as a line prefix by others.
    "prefix-boundary": b"--b\nContent-Type: text/plain\n\nhello\n--bx\nContent-Type: application/octet-stream\n"
    b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(EICAR) + b"--b--\n",
}


@pytest.mark.parametrize("body", AMBIGUOUS_EICAR.values(), ids=AMBIGUOUS_EICAR.keys())
def test_every_reading_of_an_ambiguous_message_reaches_clamd(tmp_path, clamd_server, body):
    """clamd reads a message one way; the parts only another reading shows are handed to it decoded."""
    from qmail_scanner import inspection

    raw = b"From: a@example.org\nTo: b@example.net\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n"
    settings = scan_settings(clamd_config(clamd_server.socket_path), spooldir=str(tmp_path / "spool"), fix_mime=1)
    message = spooled_message(tmp_path, raw + body, settings)
    try:
        verdict = inspection.inspect(message)
    finally:
        os.close(message.message_fd)
    assert verdict.action == "quarantine"
    assert verdict.quarantine_kind == "viruses", verdict.reason


def test_a_decoded_part_longer_than_clamd_reads_is_quarantined_not_a_retry(tmp_path, clamd_small_stream):
    """The message fits clamd's StreamMaxLength, the part only the unpacker can hand over does not: past a limit."""
    from qmail_scanner.records import Part
    from qmail_scanner.unpack import Unpacked
    from qmail_scanner.verdict import decide

    settings = scan_settings(clamd_config(clamd_small_stream.socket_path), spooldir=str(tmp_path / "spool"))
    message = spooled_message(tmp_path, HAM, settings)
    decoded = tmp_path / "p00001"
    decoded.write_bytes(os.urandom(400_000))  # e.g. an LZMA zip member: small in the message, big decoded
    part = Part(1, 1, "", ("big\nname.bin",), decoded_path=str(decoded), scan_alone=True)
    message.unpacked = Unpacked(parts=[Part(0, 0, "text/plain"), part])
    try:
        (result,) = run_virus_scanners(message)
    finally:
        os.close(message.message_fd)
    assert not result.failed, result.failure_reason
    (finding,) = result.findings
    assert (finding.kind, finding.rule) == ("policy", "av-size-limit")
    assert "StreamMaxLength" in finding.reason and "\n" not in finding.reason
    verdict = decide(settings, [], [result])
    assert (verdict.action, verdict.quarantine_kind) == ("quarantine", "policy")
