"""--install puts qs-quarantine and qs-report beside the program: root's, the program's interpreter and paths.

Each tool is run by its installed path, from /, with a PATH that holds neither the venv nor the
source tree, on what the installed wrapper did to real messages.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from security_fixtures import SCANNER_USER, install_wrapped, run_as

ROOT = Path(__file__).resolve().parent.parent
CONFIGURE = ROOT / "configure.py"
BARE_PATH = {"PATH": "/usr/bin:/bin"}
CLEAN = b"From: alice@example.org\nTo: bob@example.com\nSubject: lunch\n\nat noon?\n"
POLICY = (
    b"From: mallory@example.net\nTo: bob@example.com\nSubject: your invoice\nMIME-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\nsee attached\n'
    b'--b\nContent-Type: application/octet-stream; name="invoice.pdf.exe"\nContent-Transfer-Encoding: base64\n\n'
    + base64.encodebytes(b"MZ\x90\x00" + b"\x00" * 60)
    + b"--b--\n"
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the installed tools' owners are tested as root")


@pytest.fixture(scope="module")
def installed():
    """A wrapped installation (scanner account qstest) that has seen one clean and one quarantined message."""
    installation = install_wrapped("--log-details", "mailstats")
    clean = installation.run(CLEAN)
    blocked = installation.run(POLICY)
    assert clean.exit_code == 0 and len(clean.queued) == 1, clean.stderr
    assert blocked.exit_code == 0 and not blocked.queued, blocked.stderr
    yield installation
    installation.remove()


def run_installed(tool: Path, *args: str) -> subprocess.CompletedProcess:
    """The tool by its installed path, as an administrator's cron job would run it: no venv, no source tree."""
    return subprocess.run([str(tool), *args], capture_output=True, text=True, cwd="/", env=BARE_PATH, timeout=120)


def shebang(path: Path) -> list[str]:
    return path.read_text().splitlines()[0][2:].split()


@pytest.mark.parametrize(("name", "flags"), [("qs-quarantine", "-IS"), ("qs-report", "-I")])
def test_tools_are_roots_0755_with_the_programs_interpreter(installed, name, flags):
    tool = installed.prefix / "bin" / name
    info = tool.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o755)
    assert shebang(tool) == [shebang(installed.program)[0], flags]
    assert str(ROOT) not in tool.read_text()  # nothing points back into the checkout
    scanner = run_as(*installed.scanner_ids, f"import os; print(os.access({str(tool)!r}, os.W_OK))")
    assert scanner.stdout.strip() == "False", (SCANNER_USER, scanner.stderr)


def test_qs_quarantine_lists_and_releases_without_arguments(installed):
    tool = installed.prefix / "bin" / "qs-quarantine"
    listing = run_installed(tool, "list", "--tab")
    assert listing.returncode == 0, listing.stderr
    [row] = [line.split("\t") for line in listing.stdout.splitlines()]
    assert (row[2], row[4], row[6]) == ("policy", "sender@example.org", "your invoice") and "double-barrelled" in row[3]
    before = set(installed.sink.iterdir())
    released = run_installed(tool, "release", row[0])
    assert released.returncode == 0, released.stderr
    # The frozen next hop (the installation's, not /var/qmail's) got the original message and envelope.
    new = [path for path in set(installed.sink.iterdir()) - before if path.suffix == ".msg" or "msg" in path.name]
    assert new, sorted(p.name for p in installed.sink.iterdir())
    assert any(b"X-Qmail-Scanner-Released:" in path.read_bytes() for path in new)
    assert "(released)" in run_installed(tool, "list").stdout


def test_qs_report_reads_the_installations_logs_without_spooldir(installed, tmp_path):
    tool = installed.prefix / "bin" / "qs-report"
    page, export = tmp_path / "report.html", tmp_path / "qs.prom"
    completed = run_installed(tool, "-o", str(page), "--prometheus", str(export))
    assert completed.returncode == 0, completed.stderr
    counts = dict(re.findall(r'^qmail_scanner_messages_total\{outcome="(\w+)"\} (\d+)$', export.read_text(), re.M))
    assert (counts["clean"], counts["policy"]) == ("1", "1"), export.read_text()
    assert "<title>qmail-scanner report</title>" in page.read_text()


def test_qs_report_keeps_the_interpreters_site_packages(installed):
    """Debian's python3-matplotlib is in dist-packages, which -S would hide: the tool's flags must keep it."""
    tool = installed.prefix / "bin" / "qs-report"
    interpreter, flags = shebang(tool)
    code = "print(json.dumps([p for p in site.getsitepackages() if os.path.isdir(p) and p not in sys.path]))"
    completed = subprocess.run(
        [interpreter, flags, "-c", "import json, os, site, sys; " + code],
        capture_output=True, text=True, env=BARE_PATH, cwd="/",
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == []
    said = "draws charts with matplotlib" if "matplotlib" in _importable(interpreter) else "has no matplotlib"
    assert said in installed.configure_output


def _importable(interpreter: str) -> str:
    completed = subprocess.run([interpreter, "-I", "-c", "import matplotlib"], capture_output=True, env=BARE_PATH)
    return "matplotlib" if completed.returncode == 0 else ""


def test_destdir_stages_the_tools_and_pages_with_final_paths(tmp_path):
    stage = tmp_path / "stage"
    completed = subprocess.run(
        [
            sys.executable, str(CONFIGURE), "--destdir", str(stage), "--qmaildir", "/var/qmail-tools-test",
            "--spooldir", "/var/spool/qscan-tools-test", "--no-QQ-check", "--notify", "none", "--scanners", "none",
            "--skip-setuid-test", "--install", "--output", str(tmp_path / "p.py"),
        ],
        capture_output=True, text=True, check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    tool = stage / "var/qmail-tools-test/bin/qs-quarantine"
    frozen = json.loads(re.search(r"^INSTALLED: dict\[str, str\] = (\{.*\})", tool.read_text(), re.M).group(1))
    assert frozen["spooldir"] == "/var/spool/qscan-tools-test"
    assert frozen["program"] == "/var/qmail-tools-test/bin/qmail-scanner-queue.py"
    assert frozen["qmail_queue_binary"] == "/var/qmail-tools-test/bin/qmail-queue"
    pages = sorted(p.name for p in (stage / "usr/local/share/man/man8").iterdir())
    assert pages == ["qmail-scanner-configure.8", "qmail-scanner-queue.8", "qs-quarantine.8", "qs-report.8"]
    assert not Path("/var/qmail-tools-test").exists() and not Path("/usr/local/share/man/man8/qs-report.8").exists()
