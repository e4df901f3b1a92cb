"""The log lines of the original: syslog, mailstats.csv, quarantine.log, qmail-queue.log."""

from __future__ import annotations

import re
import socket
import threading
from datetime import datetime

import pytest

from actions_fixtures import make_message, make_settings
from qmail_scanner import logs
from qmail_scanner.actions import carry_out
from qmail_scanner.formatcheck import RULES
from qmail_scanner.logs import raw_header_value
from qmail_scanner.records import Finding, ScanResult, Verdict
from report_fixtures import load_report_module

MESSAGE = (
    b"From: Alice <alice@example.net>\nSubject: quarterly\n report\tfigures\nMessage-ID: <q1@example.net>\n\nnumbers\n"
)


@pytest.fixture
def syslog_socket(tmp_path):
    """A real datagram socket standing where /dev/log would be."""
    path = str(tmp_path / "log")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(5)
    yield path, listener
    listener.close()


def test_syslog_line_has_the_original_fields_one_line_per_recipient(
    tmp_path, standin_binary, queue_dir, syslog_socket
):
    path, listener = syslog_socket
    settings = make_settings(tmp_path / "spool", qmail_queue_binary=standin_binary, syslog_socket=path)
    message = make_message(
        settings,
        MESSAGE,
        sender="alice@example.net",
        recipients=("bob@example.org", "carol@example.org"),
        environ={"TCPREMOTEIP": "192.0.2.7", "RELAYCLIENT": ""},
    )
    result = ScanResult(scanner="spamd", spam_score=1.2, spam_required=5.0)
    assert carry_out(message, Verdict(scan_results=[result])) == 0
    packets = [listener.recv(8192).decode() for _ in range(2)]
    report = load_report_module()
    for packet, recipient in zip(packets, ("bob@example.org", "carol@example.org")):
        assert packet.startswith("<22>")  # facility mail, level info
        prefix = packet.split(": ", 1)[0]
        assert prefix.endswith("]") and " qmail-scanner[" in prefix
        record = report.parse_syslog_line(packet)
        assert record.status == "Clear:RC:1(192.0.2.7):SA:0(1.2/5.0):"
        assert record.size == len(MESSAGE)
        assert record.sender == "alice@example.net"
        assert record.recipients == [recipient]
        assert record.subject == "quarterly_report_figures"
        assert record.message_id == "<q1@example.net>"
        assert record.relay_client is True
        assert 0 <= record.seconds < 5
        # No attachments: the original's `<id>-unpacked:<size>` stands in the attachment field.
        assert packet.rstrip().endswith(f" {message.area.message_id}-unpacked:{len(MESSAGE)}")


def test_mailstats_row_and_quarantine_log(tmp_path, standin_binary, queue_dir):
    spool = tmp_path / "spool"
    settings = make_settings(spool, qmail_queue_binary=standin_binary, log_details="mailstats")
    verdict = Verdict(
        action="quarantine",
        quarantine_kind="viruses",
        reason="Virus found: Eicar-Test-Signature",
        findings=[Finding(kind="virus", rule="Eicar-Test-Signature", reason="Virus found: Eicar-Test-Signature")],
        scan_results=[ScanResult(scanner="clamd", version="1.4.3/27000")],
    )
    message = make_message(settings, MESSAGE, sender="", recipients=("bob@example.org", "carol@example.org"))
    assert carry_out(message, verdict) == 0
    report = load_report_module()
    rows = (spool / "mailstats.csv").read_text().splitlines()
    assert len(rows) == 2  # one per recipient
    record = report.parse_mailstats_line(rows[0])
    assert record.status.startswith("Quarantined:Virus(Eicar-Test-Signature):RC:0(192.0.2.7):")
    assert record.sender == "<>" and record.recipients == ["bob@example.org"]
    assert record.subject == "quarterly report figures"  # spaces kept in the TAB-separated file
    assert record.when.year >= 2024
    assert re.match(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\t", rows[0])
    assert [r.recipients for r in report.merge_recipient_rows([report.parse_mailstats_line(r) for r in rows])] == [
        ["bob@example.org", "carol@example.org"]
    ]
    [qline] = (spool / "quarantine.log").read_text().splitlines()
    fields = qline.split("\t")
    assert fields[1:4] == ["<>", "bob@example.org,carol@example.org", "quarterly report figures"]
    assert fields[4] == "Eicar-Test-Signature"  # the bare name, as the original wrote it
    assert fields[5] == f"clamd: 1.4.3/27000. pyscan: {settings.version}."
    assert fields[6:] == ["viruses", message.area.message_id, "Virus found: Eicar-Test-Signature"]
    parsed = report.parse_quarantine_line(qline)
    assert (parsed.reason, parsed.kind, parsed.scanners) == ("Eicar-Test-Signature", "viruses", fields[5])


@pytest.mark.parametrize(
    ("rule", "original"),
    [
        ("header-comment", "Disallowed MIME comment found in header name - potential virus"),
        ("broken-continuation", "Disallowed breakage found in header name - potential virus"),
        ("nul-in-header", "Disallowed  characters found in MIME headers"),
        ("double-extension", RULES["double-extension"]),
    ],
)
def test_internal_checks_log_the_original_text_by_check_name(tmp_path, standin_binary, queue_dir, rule, original):
    spool = tmp_path / "spool"
    settings = make_settings(spool, qmail_queue_binary=standin_binary, log_details="mailstats")
    ours = f"{RULES[rule]} (in part 2)"
    verdict = Verdict("quarantine", "policy", ours, [Finding("policy", rule, ours, "a.gif.exe")])
    message = make_message(settings, MESSAGE)
    assert carry_out(message, verdict) == 0
    fields = (spool / "quarantine.log").read_text().rstrip("\n").split("\t")
    assert fields[4] == original and fields[6] == "policy" and fields[8] == ours
    row = (spool / "mailstats.csv").read_text()
    assert f"\tQuarantined:Policy({original}):RC:0(192.0.2.7):\t" in row


def test_no_logging_when_log_details_no(tmp_path, standin_binary, queue_dir):
    spool = tmp_path / "spool"
    settings = make_settings(spool, qmail_queue_binary=standin_binary, log_details="no", syslog_socket="/nonexistent")
    assert carry_out(make_message(settings, MESSAGE), Verdict()) == 0
    assert not (spool / "mailstats.csv").exists()


STAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d qmail-scanner\[\d+\]: ")


def test_without_syslog_the_lines_go_to_stderr_stamped_the_outage_said_once(
    tmp_path, standin_binary, queue_dir, capfd, syslog_socket
):
    spool = tmp_path / "spool"
    settings = make_settings(spool, qmail_queue_binary=standin_binary, syslog_socket=str(tmp_path / "no-log"))
    report = load_report_module()
    said = []
    for _ in range(3):  # three messages, three processes' worth: the outage is said once
        assert carry_out(make_message(settings, MESSAGE), Verdict()) == 0
        said += capfd.readouterr().err.splitlines()
    assert all(STAMPED.match(line) for line in said), said
    notes = [line for line in said if "unavailable" in line]
    assert len(notes) == 1 and "the per-message lines go to this log until it is back" in notes[0]
    assert (spool / "syslog-unavailable").exists()
    records = [report.parse_log_line(line) for line in said if line not in notes]
    assert len(records) == 3 and all(r.status.startswith("Clear:RC:0(192.0.2.7):") for r in records)
    assert all(abs((r.when - datetime.now()).total_seconds()) < 60 for r in records)
    # A syslog daemon listens again: the line goes there, the end of the outage is said once.
    path, listener = syslog_socket
    logdir = settings.effective_logdir
    settings = make_settings(spool, qmail_queue_binary=standin_binary, syslog_socket=path)
    assert settings.effective_logdir == logdir
    logs._syslog_seen_working = False  # a new process
    assert carry_out(make_message(settings, MESSAGE), Verdict()) == 0
    assert "Clear:RC:" in listener.recv(8192).decode()
    [back] = capfd.readouterr().err.splitlines()
    assert STAMPED.match(back) and f"syslog at {path} is back" in back
    assert not (spool / "syslog-unavailable").exists()


def test_logging_failure_never_changes_exit_code(tmp_path, standin_binary, queue_dir, capfd):
    spool = tmp_path / "spool"
    settings = make_settings(spool, qmail_queue_binary=standin_binary, log_details="mailstats")
    (spool / "mailstats.csv").mkdir(parents=True)  # the log file cannot be written
    assert carry_out(make_message(settings, MESSAGE), Verdict()) == 0
    assert "logging failed" in capfd.readouterr().err


def test_crypto_tags_in_status(tmp_path, standin_binary, queue_dir):
    spool = tmp_path / "spool"
    settings = make_settings(spool, qmail_queue_binary=standin_binary, log_details="mailstats", log_crypto=True)
    message = make_message(settings, MESSAGE)

    class Unpacked:
        parts = ()
        subject = "signed"
        message_id = "<s@x>"
        crypto = ["PGP(signed)"]

    message.unpacked = Unpacked()
    assert carry_out(message, Verdict()) == 0
    row = (spool / "mailstats.csv").read_text()
    assert "\tClear:RC:0(192.0.2.7):CR:PGP(signed):\t" in row


def test_debug_trace_written_with_levels(tmp_path, standin_binary, queue_dir):
    from qmail_scanner.logs import note

    spool = tmp_path / "spool"
    settings = make_settings(spool, qmail_queue_binary=standin_binary, log_details="no", debug=1)
    message = make_message(settings, MESSAGE)
    note(message, "unpacked 1 part")
    note(message, "detail only at level 2", level=2)
    assert carry_out(message, Verdict()) == 0
    lines = (spool / "qmail-queue.log").read_text().splitlines()
    assert any(line.endswith("unpacked 1 part") for line in lines)
    assert not any("level 2" in line for line in lines)
    assert all(f": {message.area.message_id} +" in line for line in lines)


def test_raw_header_value_unfolds():
    assert raw_header_value(MESSAGE, b"subject") == "quarterly report\tfigures"
    assert raw_header_value(b"A: 1\n\nSubject: body\n", b"subject") == ""


def test_logrotate_file_is_accepted_by_logrotate(tmp_path):
    import shutil
    import subprocess
    from pathlib import Path

    logrotate = shutil.which("logrotate") or "/usr/sbin/logrotate"
    if not Path(logrotate).exists():
        pytest.skip("logrotate is not installed")
    shipped = (Path(__file__).resolve().parent.parent / "contrib" / "logrotate.qmail-scanner").read_text()
    config = tmp_path / "qmail-scanner"
    config.write_text(shipped.replace("qscand", "root").replace("/var/spool/qscan", str(tmp_path)))
    config.chmod(0o644)
    (tmp_path / "mailstats.csv").write_text("x\n")
    result = subprocess.run(
        [logrotate, "-d", "-s", str(tmp_path / "state"), str(config)], capture_output=True, text=True
    )
    assert result.returncode == 0 and "error" not in result.stderr.lower(), result.stderr
    assert "Handling 1 logs" in result.stderr


def test_many_recipients_without_syslog_make_one_stderr_line_each(tmp_path, standin_binary, queue_dir, capfd):
    settings = make_settings(tmp_path / "spool", qmail_queue_binary=standin_binary, syslog_socket="/nonexistent")
    recipients = tuple(f"user{n}@example.org" for n in range(500))
    assert carry_out(make_message(settings, MESSAGE, recipients=recipients), Verdict()) == 0
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) == 501 and "syslog at /nonexistent unavailable" in lines[0]  # the note, then every line
    report = load_report_module()
    records = [report.parse_log_line(line) for line in lines[1:]]
    assert [r.recipients for r in records] == [[recipient] for recipient in recipients]
    [message] = report.merge_recipient_rows(records)
    assert message.recipients == list(recipients)


def test_many_recipients_reach_syslog_one_line_each(tmp_path, standin_binary, queue_dir, syslog_socket):
    path, listener = syslog_socket
    settings = make_settings(tmp_path / "spool", qmail_queue_binary=standin_binary, syslog_socket=path)
    recipients = tuple(f"user{n}@example.org" for n in range(50))
    received: list[str] = []
    # A syslog daemon reads while we send (a unix datagram queue holds only a few packets).
    listener.settimeout(10)  # a missing line fails the test instead of leaving the reader blocked
    reader = threading.Thread(
        target=lambda: received.extend(listener.recv(8192).decode() for _ in recipients), daemon=True
    )
    reader.start()
    assert carry_out(make_message(settings, MESSAGE, recipients=recipients), Verdict()) == 0
    reader.join(10)
    assert [packet.split(" ")[8] for packet in received] == list(recipients)


def test_configure_says_where_the_lines_go_without_a_syslog_daemon(tmp_path, standin_binary, syslog_socket):
    import subprocess
    import sys

    from harness import CONFIGURE

    def configure(socket_path: str) -> str:
        argv = [
            sys.executable, str(CONFIGURE), "--prefix", str(tmp_path / "qs"), "--qmail-queue-binary", standin_binary,
            "--output", str(tmp_path / "q.py"), "--batch", "--skip-setuid-test", "--scanners", "none",
            "--notify", "none", "--syslog-socket", socket_path,
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    missing = configure(str(tmp_path / "no-log"))
    assert f"checking for a syslog daemon at {tmp_path / 'no-log'}... no (no such file or directory)" in missing
    [note] = [line for line in missing.splitlines() if line.startswith("configure.py: note: no syslog at")]
    assert "qmail-smtpd's log" in note and str(tmp_path / "qs" / "spool" / "syslog-unavailable") in note
    (tmp_path / "dead").write_text("")  # not a socket
    assert "... no (not a socket)" in configure(str(tmp_path / "dead"))
    path, _listener = syslog_socket
    listening = configure(path)
    assert f"checking for a syslog daemon at {path}... {path}" in listening
    assert "note: no syslog" not in listening
