"""Every log form qs-report must read, written by the real program and the real loggers.

A known mix of messages (clean, EICAR through a real clamd, a blocked .pif, GTUBE tagged by a
real spamd, one relayed) goes through the installed program with no syslog daemon at its socket:
the per-message lines go to stderr, which a real multilog, a real svlogd -tt and a file (as
tcpserver's 2>> would) take in; then through a real rsyslogd on a private socket, writing
rsyslog's default RFC 3339 file and the traditional one. The real qs-report, run on each log, must
count exactly the mix in every table of its page and in its Prometheus file; a message found in
two logs is counted once.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from daemons import EICAR, GTUBE, clamd_server_fixture, spamd_server_fixture  # noqa: F401 - fixtures
from harness import Installation, envelope
from report_fixtures import CONTRIB, load_report_module
from security_fixtures import wrapped  # noqa: F401 - fixture
from test_actions_end_to_end import PIF

REPORT = CONTRIB / "qs-report"
TABLES = ("per-hour", "per-day", "outcomes", "viruses", "attachment-types", "scan-time", "direction")
STAMPED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d qmail-scanner\[\d+\]: ")


def mix(form: str) -> list[tuple[bytes, bytes, dict[str, str]]]:
    """The messages of one run: 3 clean (one relayed, one to three recipients), 2 viruses, 2 blocked, 2 spam.

    Subjects name the form and the message: no two messages of the test are alike in every logged field.
    """

    def plain(subject: str, body: bytes) -> bytes:
        return f"From: Alice <alice@example.net>\nTo: bob@example.org\nSubject: {form} {subject}\n\n".encode() + body

    def eicar(subject: str) -> bytes:
        return plain(subject, b"see below\n" + EICAR + b"\n")

    to_bob = envelope("alice@example.net", "bob@example.org")
    to_three = envelope("alice@example.net", "a@example.org", "b@example.org", "c@example.org")
    incoming = {"TCPREMOTEIP": "192.0.2.7"}
    outgoing = {"TCPREMOTEIP": "192.0.2.8", "RELAYCLIENT": ""}
    return [
        (plain("lunch", b"shall we have lunch on Friday?\n"), to_bob, incoming),
        (plain("minutes", b"the minutes\n"), to_three, incoming),
        (plain("outgoing", b"a reply\n"), envelope("bob@example.org", "alice@example.net"), outgoing),
        (eicar("virus one"), to_bob, incoming),
        (eicar("virus two"), to_bob, incoming),
        (PIF.replace(b"Subject: your invoice", f"Subject: {form} invoice one".encode()), to_bob, incoming),
        (PIF.replace(b"Subject: your invoice", f"Subject: {form} invoice two".encode()), to_bob, incoming),
        (plain("watches", b"Buy now!\n" + GTUBE + b"\n"), to_bob, incoming),
        (plain("pills", b"Buy more!\n" + GTUBE + b"\n"), to_bob, incoming),
    ]


EXPECTED = {"clean": 3, "virus": 2, "policy": 2, "spam": 2, "other": 0}
MESSAGES = sum(EXPECTED.values())
LINES = MESSAGES + 2  # one line per recipient


def send_mix(installation: Installation, form: str, stderr_to: Path, halfway=None) -> None:
    """Run the mix through the installed program, its stderr appended to stderr_to (a file or a FIFO)."""
    redirect = ["/bin/sh", "-c", 'exec "$0" 2>>"$1"', str(installation.program), str(stderr_to)]
    messages = mix(form)
    for number, (message, envelope_bytes, env) in enumerate(messages):
        if halfway is not None and number == len(messages) // 2:
            halfway()
        result = installation.run(message, envelope_bytes, env=env, command=redirect)
        assert result.exit_code == 0, (form, number, result.stderr)


class StreamLogger:
    """multilog or svlogd reading a FIFO, as a supervise log service reads qmail-smtpd's stderr."""

    def __init__(self, argv: list[str], directory: Path) -> None:
        self.directory = directory
        directory.mkdir()  # svlogd writes into an existing directory only
        self.fifo = directory.parent / f"{directory.name}.fifo"
        os.mkfifo(self.fifo)
        self.keeper = os.open(self.fifo, os.O_RDWR)  # open for writing all along: EOF only at close()
        reader = os.open(self.fifo, os.O_RDONLY)
        self.process = subprocess.Popen([*argv, str(directory)], stdin=reader, stderr=subprocess.PIPE)
        os.close(reader)

    def rotate(self) -> None:
        """ALRM: both rotate current now (an @<tai64n>.s file appears)."""
        time.sleep(0.5)  # what was written reaches current first
        self.process.send_signal(signal.SIGALRM)
        for _ in range(100):
            if any(self.directory.glob("@*.s")):
                return
            time.sleep(0.05)
        raise AssertionError(f"no rotated file in {sorted(self.directory.iterdir())}")

    def close(self) -> None:
        os.close(self.keeper)
        _, error = self.process.communicate(timeout=30)
        assert self.process.returncode == 0, error


RSYSLOG_CONF = """global(workDirectory="{work}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{socket}")
mail.* action(type="omfile" file="{work}/mail.log")
mail.* action(type="omfile" file="{work}/mail.log.traditional" template="RSYSLOG_TraditionalFileFormat")
"""


def start_rsyslogd(work: Path, socket_path: str) -> subprocess.Popen:
    rsyslogd = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
    if not Path(rsyslogd).exists():
        pytest.fail("rsyslogd is not installed (apt-get install rsyslog; tests/install-deps.sh does)")
    (work / "rsyslog.conf").write_text(RSYSLOG_CONF.format(work=work, socket=socket_path))
    argv = [rsyslogd, "-n", "-f", str(work / "rsyslog.conf"), "-i", str(work / "rsyslogd.pid")]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(200):
        if os.path.exists(socket_path):
            return process
        if process.poll() is not None:
            raise AssertionError(f"rsyslogd exited: {process.stderr.read().decode()}")
        time.sleep(0.05)
    raise AssertionError("rsyslogd never made its socket")


@pytest.fixture(scope="module")
def logs(clamd_server, spamd_server, make_installation, tmp_path_factory) -> dict:
    """The mix, once per log form; each form's quarantine.log kept beside its log."""
    for program in ("multilog", "svlogd"):
        if shutil.which(program) is None:
            pytest.fail(f"{program} is not installed (daemontools, runit; tests/install-deps.sh installs them)")
    work = tmp_path_factory.mktemp("log-forms")
    socket_path = str(work / "syslog.sock")
    installation = make_installation(
        "--scanners", "clamd,spamd", "--clamd-servers", clamd_server.socket_path,
        "--spamd-servers", spamd_server.socket_path, "--syslog-socket", socket_path, fresh=True,
    )  # fmt: skip
    forms: dict[str, dict] = {}

    def keep_quarantine_log(form: str) -> Path:
        kept = work / f"{form}.quarantine.log"
        (installation.spool / "quarantine.log").rename(kept)
        return kept

    for form, argv in (("multilog", ["multilog", "t"]), ("svlogd", ["svlogd", "-tt"])):
        logger = StreamLogger(argv, work / form)
        try:
            send_mix(installation, form, logger.fifo, halfway=logger.rotate)
        finally:
            logger.close()
        forms[form] = {"log": work / form, "quarantine": keep_quarantine_log(form)}
    send_mix(installation, "tcpserver", work / "smtpd.stderr")
    forms["tcpserver"] = {"log": work / "smtpd.stderr", "quarantine": keep_quarantine_log("tcpserver")}
    daemon = start_rsyslogd(work, socket_path)
    try:
        send_mix(installation, "rsyslog", work / "rsyslog.stderr")
        time.sleep(0.5)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    quarantine = keep_quarantine_log("rsyslog")
    forms["rsyslog"] = {"log": work / "mail.log", "quarantine": quarantine}
    forms["rsyslog-traditional"] = {"log": work / "mail.log.traditional", "quarantine": quarantine}
    return {"work": work, "forms": forms, "installation": installation}


def run_report(work: Path, name: str, logs_given: list[Path], quarantine_logs: list[Path]) -> tuple[dict, dict]:
    """The real qs-report without matplotlib (-I -S: the page shows tables): its tables and its metrics."""
    page, metrics = work / f"{name}.html", work / f"{name}.prom"
    argv = [sys.executable, "-I", "-S", str(REPORT), "-o", str(page), "--prometheus", str(metrics)]
    for path in logs_given:
        argv += ["--syslog", str(path)]
    for path in quarantine_logs:
        argv += ["--quarantine-log", str(path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    tables = {}
    for chart in TABLES:
        figure = re.search(rf'id="chart-{chart}">(.*?)</figure>', text, re.S).group(1)
        rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td></tr>", figure)
        tables[chart] = {key: value for key, value in rows}
    tables["total"] = int(re.search(r'<p id="totals">(\d+) messages', text).group(1))
    return tables, parse_metrics(metrics.read_text())


def parse_metrics(text: str) -> dict:
    values: dict = {}
    for name, labels, value in re.findall(r"^(\w+)(?:\{(.*?)\})? (\S+)$", text, re.M):
        values[(name, labels)] = float(value)
    return values


def virus_name(quarantine_log: Path) -> str:
    rows = [line.split("\t") for line in quarantine_log.read_text().splitlines()]
    [name] = {fields[4] for fields in rows if fields[6] == "viruses"}
    return name


def assert_counts_the_mix(tables: dict, metrics: dict, virus: str, times: int = 1) -> None:
    """Every table and the export say the mix (`times` runs of it), and agree with each other."""
    expected = {category: count * times for category, count in EXPECTED.items()}
    assert tables["total"] == MESSAGES * times
    assert {k: int(v) for k, v in tables["outcomes"].items()} == expected
    assert sum(int(v) for v in tables["per-day"].values()) == MESSAGES * times
    assert sum(int(v) for v in tables["per-hour"].values()) == MESSAGES * times
    assert {k: int(v) for k, v in tables["viruses"].items()} == {virus: 2 * times}
    assert {k: int(v) for k, v in tables["attachment-types"].items()} == {".pif": 2 * times}
    assert {k: int(v) for k, v in tables["direction"].items()} == {"incoming": 8 * times, "outgoing": 1 * times}
    for category, count in expected.items():
        assert metrics[("qmail_scanner_messages_total", f'outcome="{category}"')] == count
    assert metrics[("qmail_scanner_viruses_total", f'virus="{virus}"')] == 2 * times
    assert metrics[("qmail_scanner_scan_seconds_count", "")] == MESSAGES * times
    assert metrics[("qmail_scanner_messages_direction_total", 'direction="outgoing"')] == times
    assert metrics[("qmail_scanner_blocked_attachments_total", 'type=".pif"')] == 2 * times


FORMS = ["multilog", "svlogd", "tcpserver", "rsyslog", "rsyslog-traditional"]


@pytest.mark.parametrize("form", FORMS)
def test_qs_report_counts_the_mix_in_every_log_form(logs, form):
    given = logs["forms"][form]
    tables, metrics = run_report(logs["work"], form, [given["log"]], [given["quarantine"]])
    assert_counts_the_mix(tables, metrics, virus_name(given["quarantine"]))


@pytest.mark.parametrize("form", ["multilog", "svlogd", "tcpserver"])
def test_without_syslog_every_line_is_stamped_and_the_outage_said_once(logs, form):
    given = logs["forms"][form]
    log = given["log"]
    paths = [*sorted(log.glob("@*.s")), log / "current"] if log.is_dir() else [log]
    lines = [line for path in paths for line in path.read_text().splitlines()]
    if form == "multilog":
        assert all(re.match(r"@4000[0-9a-f]{20} ", line) for line in lines)
    if form == "svlogd":
        assert all(re.match(r"\d{4}-\d\d-\d\d_\d\d:\d\d:\d\d\.\d+ ", line) for line in lines)
    assert all(STAMPED.search(line) for line in lines), lines
    per_message = [line for line in lines if re.search(r"\]: (Clear|Quarantined):", line)]
    assert len(per_message) == LINES
    notes = [line for line in lines if "unavailable" in line]
    # The marker from the run before keeps the outage said once across every run without syslog.
    assert len(notes) == (1 if form == "multilog" else 0), notes
    if given["log"].is_dir():
        assert len(paths) >= 2, "the log was rotated halfway: an @*.s file and current"


def test_a_message_in_two_logs_is_counted_once(logs):
    """rsyslog's two files hold the same messages; with every other form the sum of the parts."""
    forms = logs["forms"]
    rsyslog = forms["rsyslog"]
    both = [rsyslog["log"], forms["rsyslog-traditional"]["log"]]
    tables, metrics = run_report(logs["work"], "both-syslog-files", both, [rsyslog["quarantine"]])
    assert_counts_the_mix(tables, metrics, virus_name(rsyslog["quarantine"]))
    everything = [forms[form]["log"] for form in FORMS]
    quarantines = [forms[form]["quarantine"] for form in ("multilog", "svlogd", "tcpserver", "rsyslog")]
    tables, metrics = run_report(logs["work"], "everything", everything, quarantines)
    assert_counts_the_mix(tables, metrics, virus_name(rsyslog["quarantine"]), times=4)


def test_syslog_back_is_said_once_and_the_lines_went_to_syslog(logs):
    said = (logs["work"] / "rsyslog.stderr").read_text().splitlines()
    assert len(said) == 1 and STAMPED.match(said[0]) and "is back" in said[0], said
    assert not (logs["installation"].spool / "syslog-unavailable").exists()
    maillog = (logs["work"] / "mail.log").read_text().splitlines()
    assert len(maillog) == LINES and all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]", x) for x in maillog)
    traditional = (logs["work"] / "mail.log.traditional").read_text().splitlines()
    assert len(traditional) == LINES and all(re.match(r"[A-Z][a-z]{2} [ \d]\d \d\d:", x) for x in traditional)


def test_quarantine_log_alone_and_with_the_lines_agree(logs):
    """Only quarantine.log (no per-message log): its messages are counted, by kind, once each."""
    given = logs["forms"]["multilog"]
    tables, _ = run_report(logs["work"], "quarantine-only", [], [given["quarantine"]])
    assert {k: int(v) for k, v in tables["outcomes"].items() if int(v)} == {"virus": 2, "policy": 2}
    assert {k: int(v) for k, v in tables["viruses"].items()} == {virus_name(given["quarantine"]): 2}


def test_journal_and_supervisor_stamps_are_read():
    """Forms not made here by a running logger: the journal's text, svlogd -ttt, a syslog packet as sent."""
    report = load_report_module()
    fields = "Clear:RC:0(192.0.2.7): 0.012 100 a@example.net b@example.org hello <m@x> 1-unpacked:100"
    journal = f"2026-12-06T08:00:00+0100 mx qmail-smtpd[99]: 2026-12-06T08:00:00.250+01:00 qmail-scanner[7]: {fields}"
    record = report.parse_log_line(journal)
    assert record.when == report._local(report._iso("2026-12-06T08:00:00.250+01:00"))
    journal_syslog = f"2026-12-06T08:00:01+0100 mx qmail-scanner[7]: {fields}"
    assert report.parse_log_line(journal_syslog).when == report._local(report._iso("2026-12-06T08:00:01+01:00"))
    ttt = f"2026-12-06T07:00:02.123456789 2026-12-06T08:00:02.100+01:00 qmail-scanner[7]: {fields}"
    assert report.parse_log_line(ttt).when == report._local(report._iso("2026-12-06T08:00:02.100+01:00"))
    packet = f"<22>Dec  6 08:00:03 qmail-scanner[7]: {fields}"
    assert report.parse_log_line(packet, 2026).when.second == 3
    assert report.parse_log_line("2026-12-06T08:00:00.250+01:00 qmail-scanner[7]: engine: stopped") is None
    # The rows of one message and copies from two logs: one message; the same text to the same recipient later: two.
    rows = [report.parse_log_line(journal), report.parse_log_line(journal_syslog), report.parse_log_line(ttt)]
    for number, row in enumerate(rows):
        row.source = f"log{number}"
    assert len(report.merge_recipient_rows(rows)) == 1
    later = report.parse_log_line(journal.replace("08:00:00.250", "08:05:00.250"))
    assert len(report.merge_recipient_rows([*rows, later])) == 2
    assert Counter(r.category for r in report.message_stream([later], [])) == Counter({"clean": 1})


def test_the_programs_own_start_up_complaint_is_stamped(installation):
    """The one line written before the engine loads (a broken or mismatched engine) carries a time too."""
    engine = installation.prefix / "lib" / "2.0.0" / "qmail_scanner"
    (engine / "__init__.py").write_text('__version__ = "9.9.9"\n')
    for cached in (engine / "__pycache__").glob("__init__.*.pyc"):
        cached.unlink()
    result = installation.run(b"Subject: hi\n\nhello\n")
    assert result.exit_code == 81
    [line] = result.stderr.splitlines()
    stamped = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d qmail-scanner\[\d+\]: "
    assert re.match(stamped + "engine 9.9.9 is not the pinned 2.0.0", line), line
    record_time = load_report_module().line_time(line[: line.index("qmail-scanner[")])
    assert abs(record_time.timestamp() - time.time()) < 60


def test_the_setuid_wrappers_lines_are_stamped_and_whole(wrapped):  # noqa: F811 - the fixture
    """The wrapper's own complaints (here: too many arguments) carry the time too, one line in one write."""
    done = subprocess.run([str(wrapped.wrapper), *["-v"] * 20], capture_output=True, text=True, timeout=60)
    assert done.returncode == 100
    stamped = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d qmail-scanner-queue: too many arguments\n"
    assert re.fullmatch(stamped, done.stderr), done.stderr
