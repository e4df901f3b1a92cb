"""contrib/qs-report: a static page of charts from the logs, checked in a real headless browser."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from actions_fixtures import make_message, make_settings
from qmail_scanner.actions import carry_out
from qmail_scanner.records import Finding, ScanResult, Verdict
from report_fixtures import CONTRIB, load_report_module

pytest_plugins = ("actions_fixtures",)

CHARTS = ["per-hour", "per-day", "outcomes", "viruses", "attachment-types", "scan-time", "direction"]


class Unpacked:
    """What the unpacker would report for a message with one attachment."""

    def __init__(self, name: str, size: int) -> None:
        self.parts = [type("Part", (), {"filenames": (name,), "size": size, "container": ""})()]
        self.subject, self.message_id, self.crypto = "report test", "<r@x>", []


def generate_logs(tmp_path, standin_binary) -> Path:
    """Real log lines: messages of every outcome through carry_out, plus older rows for the time charts."""
    spool = tmp_path / "spool"
    settings = make_settings(spool, qmail_queue_binary=standin_binary, log_details="mailstats")
    raw = b"Subject: report test\n\nhello\n"
    virus = Verdict("quarantine", "viruses", "Eicar-Test-Signature", [Finding("virus", "Eicar-Test-Signature", "")])
    policy = Verdict("quarantine", "policy", "Disallowed attachment type .pif", [Finding("policy", ".pif", "")])
    spam = Verdict(
        "quarantine", "spam", "spam quarantined", [Finding("spam", "sa", "")],
        [ScanResult("spamd", spam_score=12.0, spam_required=5.0)],
    )  # fmt: skip
    outcomes = [(Verdict(), {}), (Verdict(), {"RELAYCLIENT": ""}), (virus, {}), (virus, {}), (policy, {}), (spam, {})]
    for verdict, extra in outcomes:
        message = make_message(settings, raw, environ={"TCPREMOTEIP": "192.0.2.1", **extra})
        if verdict.quarantine_kind == "policy":
            message.unpacked = Unpacked("invoice.pif", 1234)
        assert carry_out(message, verdict) == 0
    rows = (spool / "mailstats.csv").read_text().splitlines()
    stamp = r"^\w{3}, \d\d \w{3} \d{4} \d\d"  # the date and hour of a row
    older = [re.sub(stamp, f"Thu, 0{1 + n % 3} Jan 2026 1{n % 10}", row) for n, row in enumerate(rows)]
    with open(spool / "mailstats.csv", "a") as handle:
        handle.write("\n".join(older) + "\n")
    return spool


def run_report(interpreter: list[str], spool: Path, output: Path, *more: str) -> None:
    argv = [*interpreter, str(CONTRIB / "qs-report"), "--spooldir", str(spool), "-o", str(output), *more]
    subprocess.run(argv, check=True, timeout=300, capture_output=True)


def browser_dom(page: Path) -> str:
    """The page's DOM after load, as headless Chromium sees it."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed (apt-get install chromium)")
    argv = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()]
    return subprocess.run(argv, check=True, timeout=120, capture_output=True, text=True).stdout


def test_report_page_shows_every_chart_in_a_real_browser(tmp_path, standin_binary, queue_dir):
    pytest.importorskip("matplotlib")
    spool = generate_logs(tmp_path, standin_binary)
    page = tmp_path / "report.html"
    prometheus = tmp_path / "qmail_scanner.prom"
    run_report([sys.executable], spool, page, "--prometheus", str(prometheus))
    dom = browser_dom(page)
    drawn = re.search(r'data-charts-drawn="([^"]*)"', dom)
    assert drawn, "the page script did not run"
    assert drawn.group(1).split(",") == CHARTS
    for chart in CHARTS:
        figure = re.search(rf'<figure class="chart" id="chart-{chart}">(.*?)</figure>', dom, re.S)
        assert figure and "<svg" in figure.group(1), chart
    assert "12 messages" in dom
    viruses = re.search(r'id="chart-viruses">(.*?)</figure>', dom, re.S).group(1)
    assert "Eicar-Test-Signature" in viruses
    types = re.search(r'id="chart-attachment-types">(.*?)</figure>', dom, re.S).group(1)
    assert ".pif" in types
    metrics = prometheus.read_text()
    assert 'qmail_scanner_messages_total{outcome="virus"} 4' in metrics
    assert 'qmail_scanner_messages_total{outcome="clean"} 4' in metrics
    assert 'qmail_scanner_messages_direction_total{direction="outgoing"} 2' in metrics
    # Every virus message is named in Top viruses: the two of today by quarantine.log, the older two by their status.
    assert 'qmail_scanner_viruses_total{virus="Eicar-Test-Signature"} 4' in metrics
    assert "qmail_scanner_scan_seconds_count 12" in metrics


def test_report_without_matplotlib_shows_tables(tmp_path, standin_binary, queue_dir):
    spool = generate_logs(tmp_path, standin_binary)
    page = tmp_path / "report.html"
    # -S: no site-packages, so no matplotlib: the optional dependency is really optional.
    run_report([sys.executable, "-I", "-S"], spool, page)
    dom = browser_dom(page)
    assert re.search(r'data-charts-drawn="([^"]*)"', dom).group(1).split(",") == CHARTS
    assert "<svg" not in dom and "<table>" in dom


def test_percentiles_and_categories():
    report = load_report_module()
    assert report.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert report.percentile([1.0, 2.0, 3.0, 4.0], 0.99) == 4.0
    assert report.percentile([], 0.9) == 0.0
    line = "<22>Nov 25 08:14:00 qmail-scanner[7]: Clear:RC:0(1.2.3.4):SA:1(7.0/5.0): 0.1 10 a@b c@d - - a.txt:5"
    record = report.parse_syslog_line(line, 2026)
    assert record.category == "spam" and record.attachments == [("a.txt", 5)] and record.subject == ""
    daemon_line = "Nov 25 08:14:00 mx qmail-scanner[7]: Quarantined:Policy(.pif):RC:1(1.2.3.4): 0.1 10 a@b c@d s <m>"
    assert report.parse_syslog_line(daemon_line, 2026).category == "policy"
    assert report.parse_syslog_line("Nov 25 08:14:00 mx postfix[1]: other", 2026) is None


def test_report_counts_the_viruses_of_an_original_quarantine_log():
    from compat_fixtures import compat_dir

    report = load_report_module()
    rows = report.read_quarantine([str(compat_dir("logs") / "original-quarantine.log")])
    summary = report.summarise([], rows)
    # A line whose TABs were lost has no fifth field: it is not counted as a virus.
    readable = [line.split("\t") for line in (compat_dir("logs") / "original-quarantine.log").read_text().splitlines()]
    expected = Counter(fields[4] for fields in readable if len(fields) >= 6)
    assert summary.viruses == expected and expected
