"""Parsers written for Qmail-Scanner's logs read ours and count what they counted on the original's.

The real scripts of shared/compat/parsers/ run unchanged but for the paths they hard-code: the
munin `qmailscan` plugin and PLD's report (quarantine.log), Mail::Toaster's `qms_count` (syslog),
a mailstats.csv script. The events are made for real through the installed program with a real
clamd: the viruses of the original's sample log (clamd given a signature per virus name), the
original's internal checks, a policy block and clean mail to two recipients. Each parser's result
on our logs must equal its result on the log the original would have written for the same events:
the sample's own lines (moved to today, the names as clamd gives them) plus the original's lines
for the internal checks.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from compat_fixtures import compat_dir
from daemons import ClamdServer, unix_exchange
from harness import ROOT, envelope

CORPUS = ROOT / "tests" / "corpus"
# What the original logged for these internal checks: the texts munin's plugin filters out.
ORIGINAL_CHECK_EVENTS = {
    "header-comment.eml": "Disallowed MIME comment found in header name - potential virus",
    "broken-continuation.eml": "Disallowed breakage found in header name - potential virus",
    "nul-in-header.eml": "Disallowed  characters found in MIME headers",
}
POLICY_EVENT = ("exe-attachment.eml", "Windows programs (.exe) blocked by policy")
CLEAN_EVENT = "clean-plain.eml"
MARKER = "QS-COMPAT-SAMPLE-{}"
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
DATE_SLOT = "<date>"  # where the event's date goes in its reference line


@dataclass
class Event:
    message: bytes
    sender: str
    recipients: tuple[str, ...]
    reference_line: str | None  # what the original wrote to quarantine.log (None: delivered)
    at: float = 0.0


def original_lines() -> list[list[str]]:
    """The sample's quarantine.log lines a TAB-separated parser can read (six fields or more)."""
    text = (compat_dir("logs") / "original-quarantine.log").read_text(encoding="utf-8", errors="replace")
    return [fields for fields in (line.split("\t") for line in text.splitlines()) if len(fields) >= 6]


def original_date(when: float) -> str:
    """The original's quarantine.log date, in the C locale (written here independently of ours)."""
    local = time.localtime(when)
    day, month = DAY_NAMES[local.tm_wday], MONTH_NAMES[local.tm_mon - 1]
    return f"{day}, {local.tm_mday:02d} {month} {local.tm_year} " + time.strftime("%H:%M:%S %z", local)


def virus_message(sender: str, recipient: str, subject: str, virus: str) -> bytes:
    body = f"the patch you asked for: {MARKER.format(virus)}\n".encode()
    import base64

    return (
        f"From: {sender}\nTo: {recipient}\nSubject: {subject}\nMIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=SAMPLE\n\n--SAMPLE\nContent-Type: text/plain\n\nsee attached\n"
        '--SAMPLE\nContent-Type: application/octet-stream; name="patch.dat"\nContent-Transfer-Encoding: base64\n\n'
    ).encode() + base64.encodebytes(body) + b"--SAMPLE--\n"


def clamd_name(server: ClamdServer, virus: str) -> str:
    """The name this clamd gives the sample of `virus` (unofficial signatures get a suffix)."""
    data = MARKER.format(virus).encode()
    reply = unix_exchange(server.socket_path, b"zINSTREAM\0" + struct.pack(">I", len(data)) + data + b"\0\0\0\0")
    found = re.match(rb"stream: (.+) FOUND\0", reply)
    assert found, reply
    return found.group(1).decode()


@pytest.fixture(scope="module")
def sample_clamd():
    """A private clamd knowing a signature for every virus of the original's sample log."""
    ClamdServer.require()
    server = ClamdServer("clamd-compat")
    viruses = sorted({fields[4] for fields in original_lines()})
    signatures = "".join(f"{name}:0:*:{MARKER.format(name).encode().hex()}\n" for name in viruses)
    (server.database / "compat-sample.ndb").write_text(signatures)
    server.start()
    yield server
    server.remove()


def make_events(server: ClamdServer) -> list[Event]:
    events = []
    for fields in original_lines():
        _date, sender, recipient, subject, virus, scanners = fields[:6]
        line = [DATE_SLOT, sender, recipient, subject, clamd_name(server, virus), scanners]
        events.append(Event(virus_message(sender, recipient, subject, virus), sender, (recipient,), "\t".join(line)))
    for name, text in [*ORIGINAL_CHECK_EVENTS.items(), POLICY_EVENT]:
        data = (CORPUS / name).read_bytes()
        subject = re.search(rb"^Subject: (.*)$", data, re.M).group(1).decode()
        line = [DATE_SLOT, "alice@example.org", "bob@example.net", subject, text, "clamuko: 0.67."]
        events.append(Event(data, "alice@example.org", ("bob@example.net",), "\t".join(line)))
    clean = (CORPUS / CLEAN_EVENT).read_bytes()
    events.append(Event(clean, "carol@example.org", ("dave@example.net", "erin@example.net"), None))
    return events


@pytest.fixture(scope="module")
def logs(sample_clamd, make_installation, tmp_path_factory):
    """Run every event through a syslog and a mailstats installation; the logs and the reference."""
    work = tmp_path_factory.mktemp("compat-logs")
    syslog_path = str(work / "log")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(syslog_path)
    listener.settimeout(0.2)
    packets: list[str] = []
    stop = threading.Event()

    def read_like_a_syslog_daemon() -> None:  # continuously: a datagram queue holds only a few packets
        while not stop.is_set():
            try:
                packets.append(listener.recv(65536).decode())
            except TimeoutError:
                continue

    reader = threading.Thread(target=read_like_a_syslog_daemon, daemon=True)
    reader.start()
    # --fix-mime 2: a broken continuation is quarantined as the original did, not read both ways.
    scanner = ("--scanners", "clamd", "--clamd-servers", sample_clamd.socket_path, "--fix-mime", "2")
    by_syslog = make_installation(*scanner, "--log-details", "syslog", "--syslog-socket", syslog_path, fresh=True)
    by_mailstats = make_installation(*scanner, "--log-details", "mailstats", fresh=True)
    events = make_events(sample_clamd)
    for event in events:
        event.at = time.time()
        for installation in (by_syslog, by_mailstats):
            result = installation.run(event.message, envelope(event.sender, *event.recipients))
            assert result.exit_code == 0, result.stderr
            assert bool(result.queued) == (event.reference_line is None), (event.reference_line, result.stderr)
    time.sleep(0.5)  # the last datagrams are read
    stop.set()
    reader.join(5)
    maillog = []
    for packet in packets:
        # As a syslog daemon writes it: the priority dropped, the host after the time stamp.
        stamp_and_rest = re.sub(r"^<\d+>", "", packet)
        maillog.append(f"{stamp_and_rest[:15]} mx {stamp_and_rest[16:]}")
    listener.close()
    (work / "maillog").write_text("".join(line.rstrip("\n") + "\n" for line in maillog))
    reference = "".join(
        event.reference_line.replace(DATE_SLOT, original_date(event.at)) + "\n"
        for event in events
        if event.reference_line
    )
    (work / "reference-quarantine.log").write_text(reference)
    return {
        "events": events,
        "quarantine": by_syslog.spool / "quarantine.log",
        "reference": work / "reference-quarantine.log",
        "maillog": work / "maillog",
        "mailstats": by_mailstats.spool / "mailstats.csv",
        "work": work,
        "day": time.strftime("%d %b %Y", time.localtime(events[0].at)),
    }


def parser(name: str) -> str:
    return (compat_dir("parsers") / name).read_text()


def shim(directory: Path, name: str, script: str) -> Path:
    """A directory holding one stand-in command, to put first on PATH."""
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(script)
    (directory / name).chmod(0o755)
    return directory


def run_munin(log: Path, day: str, work: Path, *mode: str) -> list[str]:
    """The plugin with its log paths set; its `date` answers for `day` (it asks for today)."""
    plugin = parser("munin-qmailscan.in").replace("@@GOODSH@@", "/bin/sh")
    plugin = re.sub(r"(?m)^LOG0=.*$", f"LOG0={log}", plugin)
    plugin = re.sub(r"(?m)^LOG1=.*$", "LOG1=/dev/null", plugin)
    script = work / "qmailscan"
    script.write_text(plugin)
    dated = shim(work / "bin-date", "date", '#!/bin/sh\nexec /bin/date -d "$QS_DAY" "$@"\n')
    env = {"PATH": f"{dated}:/usr/bin:/bin", "QS_DAY": day, "LANG": "C"}
    done = subprocess.run(["/bin/sh", str(script), *mode], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return sorted(done.stdout.splitlines())


def run_pld_report(log: Path, day: str, work: Path) -> str:
    """PLD's report.sh in a copy of the spool; off a terminal it writes reports/<day>.txt and mails it."""
    spool = work / f"pld-{log.stem}"
    (spool / "reports").mkdir(parents=True, exist_ok=True)
    (spool / "quarantine.log").write_bytes(log.read_bytes())
    script = work / "report.sh"
    script.write_text(re.sub(r"(?m)^cd /var/spool/qmailscan$", f"cd {spool}", parser("pld-qmail-scanner-report.sh")))
    quiet = shim(work / "bin-mail", "mail", "#!/bin/sh\ncat >/dev/null\n")
    env = {"PATH": f"{quiet}:/usr/bin:/bin", "LOGNAME": "root", "TMPDIR": str(work)}
    done = subprocess.run(
        ["/bin/sh", str(script), day], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=60
    )
    assert done.returncode == 0, done.stderr
    [report] = (spool / "reports").iterdir()
    text = report.read_text()
    report.unlink()
    return text


def test_munin_plugin_graphs_the_same_virus_counts(logs):
    work, day = logs["work"], logs["day"]
    ours = run_munin(logs["quarantine"], day, work)
    assert ours == run_munin(logs["reference"], day, work)
    assert any(line.endswith(".value 1") and "_UNOFFICIAL" in line for line in ours)
    assert not any(line.startswith("Disallowed") for line in ours)  # the internal checks are filtered out
    assert run_munin(logs["quarantine"], day, work, "config") == run_munin(logs["reference"], day, work, "config")


def test_munin_plugin_on_the_original_sample_names_its_viruses(logs):
    sample = compat_dir("logs") / "original-quarantine.log"
    counted = []
    for fields in original_lines():
        day = re.match(r"\w+, (\d\d \w{3} \d{4})", fields[0]).group(1)
        counted += run_munin(sample, day, logs["work"])
    expected = {re.sub(r"[.-]", "_", fields[4]) + ".value 1" for fields in original_lines()}
    assert set(counted) == expected


def test_pld_report_counts_the_same(logs):
    work, day = logs["work"], logs["day"]
    ours = run_pld_report(logs["quarantine"], day, work)
    assert ours == run_pld_report(logs["reference"], day, work)
    quarantined = sum(1 for event in logs["events"] if event.reference_line)
    assert re.search(rf"^\s*{quarantined} Total$", ours, re.M), ours
    assert "1 Disallowed MIME comment found in header name - potential virus" in ours


def test_mail_toaster_qms_count_counts_clean_and_virus_lines_per_recipient(logs):
    driver = logs["work"] / "qms_count_driver.pl"
    driver.write_text(QMS_COUNT_DRIVER)
    env = {**os.environ, "QS_MAILLOG": str(logs["maillog"]), "QS_COUNTFILE": str(logs["work"] / "count")}
    parser_path = compat_dir("parsers") / "mail-toaster-Logs.pm-qms_count.pl"
    done = subprocess.run(["perl", str(driver), str(parser_path)], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    clean = sum(len(e.recipients) for e in logs["events"] if e.reference_line is None)
    blocked = sum(len(e.recipients) for e in logs["events"] if e.reference_line is not None)
    assert done.stdout.strip() == f"qs_clean:{clean}:qs_virii:{blocked}"


def test_mailstats_script_reads_the_seconds_in_the_third_field(logs):
    rows = logs["mailstats"].read_text().splitlines()
    assert len(rows) == sum(len(e.recipients) for e in logs["events"])  # one row per recipient
    seconds = sorted({float(row.split("\t")[2]) for row in rows})
    threshold = (seconds[0] + seconds[-1]) / 2 if len(seconds) > 1 else seconds[0] - 0.0005
    script = parser("perl-mailstats-slow.pl").replace("/var/qmail/scanner/mailstats.csv", str(logs["mailstats"]))
    script = re.sub(r"\$bounce=\d+;", f"$bounce={threshold};", script)
    done = subprocess.run(["perl", "-e", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    printed = [line for line in done.stdout.splitlines() if line]
    assert printed == [row for row in rows if float(row.split("\t")[2]) > threshold]
    assert 0 < len(printed) < len(rows) or len(seconds) == 1


QMS_COUNT_DRIVER = r"""
# Mail::Toaster's qms_count as it runs inside Mail::Toaster::Logs: the few methods it calls.
package Driver;
sub new { bless { conf => {}, debug => 0 }, shift }
sub set_countfile { return $ENV{QS_COUNTFILE} }
sub counter_read { return { qs_clean => 0, qs_clean_last => 0, qs_virus => 0, qs_virus_last => 0 } }
sub check_log_files { my ($self, $files) = @_; return $files }
sub syslog_locate { return $ENV{QS_MAILLOG} }
sub counter_write { return 1 }
package Util;
sub find_the_bin {
    my ($self, %arg) = @_;
    for my $dir ("/usr/bin", "/bin") { return "$dir/$arg{bin}" if -x "$dir/$arg{bin}" }
    die "no $arg{bin}";
}
package main;
use Carp;
our $util = bless {}, 'Util';
my $parser = shift;
do $parser;
die "cannot load $parser: $@" if $@;
defined &main::qms_count or die "no qms_count in $parser";
exit(main::qms_count(Driver->new) ? 0 : 1);
"""
