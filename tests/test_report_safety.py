"""contrib/qs-report against hostile logs and a hostile output directory: names from mail are drawn
literally (never as mathtext), escaped in the page and the export, and no output is written through a link."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from actions_fixtures import make_message, make_settings
from qmail_scanner.actions import carry_out
from qmail_scanner.records import Finding, Verdict
from report_fixtures import CONTRIB, load_report_module
from test_report import CHARTS, Unpacked, browser_dom

pytest_plugins = ("actions_fixtures",)

REPORT = CONTRIB / "qs-report"
# An element the page must never create: it would mark the body if a name reached the DOM as markup.
INJECTED_MARKUP = "<img src=x onerror=\"document.body.setAttribute('data-injected','1')\">"
HOSTILE_NAMES = [
    "x.$\\frac{$",  # mathtext raises on this one
    "report.$x^2_{i}$",
    "a\\b_c^d%s{}.exe",
    "<script>alert(1)</script>.pif",
    "bill." + INJECTED_MARKUP,
    "payload.\u202etxt.exe",  # RTL override: reads as 'exe.txt'
    'quote".\\"and backslash',
    "long." + "L" * 10_000,
]
# What the real logs can never hold (the program writes controls as `_`) but an older or foreign writer may.
RAW_LOG_NAMES = ["esc.\x1b[31mred\x1b[0m", "nul.a\x00b", "cr.over\rwrite", "c1.\x9b2J", "sep.a\u2028b"]


def write_hostile_logs(tmp_path, standin_binary) -> Path:
    """Real log lines of messages with hostile attachment and virus names, plus raw rows a foreign writer left."""
    spool = tmp_path / "spool"
    settings = make_settings(spool, qmail_queue_binary=standin_binary, log_details="mailstats", notify=("none",))
    raw = b"Subject: $\\frac{$ <script>\n\nhello\n"
    for name in HOSTILE_NAMES:
        policy = Verdict("quarantine", "policy", f"Disallowed attachment {name}", [Finding("policy", ".pif", "")])
        message = make_message(settings, raw, environ={"TCPREMOTEIP": "192.0.2.1"})
        message.unpacked = Unpacked(name, 1234)
        assert carry_out(message, policy) == 0
        virus_name = name.replace(" ", "")  # one word: the quarantine.log reason counts as a virus name
        virus = Verdict("quarantine", "viruses", virus_name, [Finding("virus", virus_name, "")])
        assert carry_out(make_message(settings, raw, environ={"TCPREMOTEIP": "192.0.2.1"}), virus) == 0
    stats = spool / "mailstats.csv"
    template = next(line for line in stats.read_text().splitlines() if "Quarantined:Policy" in line)
    fields = template.split("\t")
    with open(stats, "a", encoding="utf-8") as handle:
        for name in RAW_LOG_NAMES:
            handle.write("\t".join([*fields[:8], f"{name}:10"]) + "\n")
    with open(spool / "quarantine.log", "a", encoding="utf-8") as handle:
        for name in RAW_LOG_NAMES:
            handle.write(f"Thu, 01 Jan 2026 10:00:00 +0000\ta@b\tc@d\tsubject\t{name}\tclamd\tviruses\t-\t{name}\n")
    return spool


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape_with_node_exporter(directory: Path) -> str:
    """The textfile collector of the real node_exporter reading directory: what Prometheus would get."""
    binary = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if binary is None:
        pytest.fail("node_exporter is not installed (apt-get install prometheus-node-exporter)")
    port = free_port()
    argv = [binary, "--collector.disable-defaults", "--collector.textfile",
            f"--collector.textfile.directory={directory}", f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
    daemon = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                    return answer.read().decode()
            except OSError:
                if daemon.poll() is not None:
                    raise AssertionError(f"node_exporter exited: {daemon.stderr.read().decode()}") from None
                time.sleep(0.05)
        raise AssertionError("node_exporter never answered")
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


def test_hostile_names_give_a_page_and_an_export(tmp_path, standin_binary, queue_dir):
    pytest.importorskip("matplotlib")
    spool = write_hostile_logs(tmp_path, standin_binary)
    page = tmp_path / "report.html"
    export_dir = tmp_path / "textfiles"
    export_dir.mkdir()
    prometheus = export_dir / "qmail_scanner.prom"
    argv = [sys.executable, str(REPORT), "--spooldir", str(spool), "-o", str(page), "--prometheus", str(prometheus)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "not drawn" not in result.stderr  # every chart drawn, none fell back to its table

    text = page.read_text(encoding="utf-8")
    assert "<script>alert" not in text and "<img" not in text
    for control in ("\x1b", "\x00", "\r", "\x9b", "\u202e", "\u2028"):
        assert control not in text, repr(control)
    dom = browser_dom(page)
    assert re.search(r'data-charts-drawn="([^"]*)"', dom).group(1).split(",") == CHARTS
    assert 'data-injected="1"' not in dom  # the markup in a name never became an element
    for chart in CHARTS:
        figure = re.search(rf'<figure class="chart" id="chart-{chart}">(.*?)</figure>', dom, re.S)
        assert figure and "<svg" in figure.group(1), chart
    viruses = re.search(r'id="chart-viruses">(.*?)</figure>', dom, re.S).group(1)
    assert "\\x1b[31mred" in viruses  # matplotlib writes each label into the SVG as a comment: made visible

    exported = prometheus.read_text(encoding="utf-8")
    assert not [line for line in exported.splitlines() if not re.fullmatch(r"[ -~\u00a0-\U0010ffff]*", line)]
    assert 'qmail_scanner_viruses_total{virus="x.$\\\\frac{$"} 1' in exported
    assert 'qmail_scanner_viruses_total{virus="quote\\".\\\\\\"andbackslash"} 1' in exported
    assert 'qmail_scanner_viruses_total{virus="nul.a\\\\x00b"} 1' in exported
    scraped = scrape_with_node_exporter(export_dir)
    assert "node_textfile_scrape_error 0" in scraped
    assert 'qmail_scanner_viruses_total{virus="<script>alert(1)</script>.pif"} 1' in scraped
    assert 'qmail_scanner_blocked_attachments_total{type=".$\\\\frac{$"} 1' in scraped
    assert 'qmail_scanner_messages_total{outcome="virus"} ' in scraped


def test_a_chart_that_fails_costs_only_that_chart(capsys):
    pytest.importorskip("matplotlib")
    report = load_report_module()
    summary = report.Summary()
    summary.totals["clean"] = 3
    summary.viruses = Counter({"Eicar-Test-Signature": 10**400})  # a count matplotlib cannot draw
    page = report.render_html(summary)
    viruses = re.search(r'id="chart-viruses">(.*?)</figure>', page, re.S).group(1)
    assert "<table>" in viruses and "Eicar-Test-Signature" in viruses
    outcomes = re.search(r'id="chart-outcomes">(.*?)</figure>', page, re.S).group(1)
    assert "<svg" in outcomes
    assert "chart viruses not drawn" in capsys.readouterr().err


def test_a_page_that_cannot_be_written_does_not_cost_the_export(tmp_path, standin_binary, queue_dir):
    spool = write_hostile_logs(tmp_path, standin_binary)
    prometheus = tmp_path / "qmail_scanner.prom"
    page = tmp_path / "missing-directory" / "report.html"
    argv = [sys.executable, "-I", "-S", str(REPORT), "--spooldir", str(spool), "-o", str(page),
            "--prometheus", str(prometheus)]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "page" in result.stderr and "not written" in result.stderr
    assert "qmail_scanner_messages_total" in prometheus.read_text()


def plant_links(directory: Path, names: list[str], victim: Path) -> None:
    """Symlinks to the victim, owned by another account, as a user who can write in the directory would plant."""
    nobody = pwd.getpwnam("nobody")
    for name in names:
        link = directory / name
        link.symlink_to(victim)
        os.lchown(link, nobody.pw_uid, nobody.pw_gid)


def test_outputs_are_never_written_through_planted_links(tmp_path, standin_binary, queue_dir):
    spool = write_hostile_logs(tmp_path, standin_binary)
    web = tmp_path / "web"
    web.mkdir(mode=0o777)
    web.chmod(0o777)  # writable by another account, as a shared web root may be
    victim = tmp_path / "victim"
    victim.write_text("root:x:0:0:do not touch\n")
    nobody = pwd.getpwnam("nobody")
    os.chown(victim, nobody.pw_uid, nobody.pw_gid)
    page, prometheus = web / "index.html", web / "qmail_scanner.prom"
    plant_links(web, [page.name, prometheus.name], victim)
    argv = [sys.executable, "-I", "-S", str(REPORT), "--spooldir", str(spool), "-o", str(page),
            "--prometheus", str(prometheus)]  # fmt: skip
    # The shell's pid is the report's (exec): the links at every name derived from it are planted before it runs.
    report = subprocess.Popen(["sh", "-c", 'read go; exec "$@"', "sh", *argv], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    predictable = [
        f"{target.name}.tmp.{pid}" for target in (page, prometheus) for pid in range(report.pid - 50, report.pid + 50)
    ]
    plant_links(web, predictable, victim)
    _, err = report.communicate("go\n", timeout=300)
    assert report.returncode == 0, err
    assert victim.read_text() == "root:x:0:0:do not touch\n"
    for output in (page, prometheus):
        assert not output.is_symlink() and output.stat().st_uid == os.getuid()
        assert output.stat().st_mode & 0o777 == 0o666 & ~current_umask()
    assert "<table>" in page.read_text() and "qmail_scanner_messages_total" in prometheus.read_text()
    leftovers = [p.name for p in web.iterdir() if not p.is_symlink() and p not in (page, prometheus)]
    assert leftovers == []


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
