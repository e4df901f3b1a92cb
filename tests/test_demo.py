"""make demo's console: it serves the demo's messages, each with the outcome the demo printed; a second demo and
demo-stop stop the one before."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from console_fixtures import Client, console_ready

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted(path.name for path in (ROOT / "contrib" / "demo" / "samples").glob("*.eml"))
CONSOLE_LINE = re.compile(r"^== console: http://127\.0\.0\.1:(\d+)/ +\(qs-console serve, pid (\d+);", re.M)
LOGIN_LINE = re.compile(r"^   user: (\S+)  password: (\S+)  ", re.M)
SUMMARY_LINE = re.compile(r"^   (\S+\.eml) +exit +\d+  .{24}  (.+)$", re.M)
SHOWN_LINE = re.compile(r"^   (\S+\.eml) +message (\d+) +(queued, tagged as spam|queued|quarantined: \w+)", re.M)


def run_demo(directory: Path, *arguments: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "contrib" / "demo.py"), "--dir", str(directory), *arguments],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout


def running(pid: int) -> bool:
    try:
        return b"serve" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def check_console(output: str) -> int:
    """The printed console has every demo message with the printed outcome, read through its API; its pid."""
    port, pid = map(int, CONSOLE_LINE.search(output).groups())
    user, password = LOGIN_LINE.search(output).groups()
    assert "stop it with: make demo-stop" in output
    summary = dict(SUMMARY_LINE.findall(output.partition("== summary")[2].partition("== console")[0]))
    shown = {sample: (int(number), outcome) for sample, number, outcome in SHOWN_LINE.findall(output)}
    assert sorted(summary) == SAMPLES and sorted(shown) == SAMPLES, output
    client = Client(port)
    assert client.login(user, password)[0] == 200
    status, listing, _ = client.get("/api/messages", limit="500")
    assert status == 200 and listing["count"] == len(SAMPLES)
    for sample, (number, outcome) in shown.items():
        assert outcome == summary[sample], (sample, outcome, summary[sample])
        status, record, _ = client.get(f"/api/messages/{number}")
        assert status == 200, record
        if outcome.startswith("queued"):
            assert (record["outcome"], record["spam_tagged"]) == ("delivered", outcome.endswith("spam")), record
        else:
            assert (record["outcome"], record["quarantine_dir"]) == ("quarantined", outcome.split(": ")[1]), record
    return pid


def test_the_demo_console_serves_every_demo_message_with_the_outcome_the_demo_printed(tmp_path):
    console_ready()
    first = check_console(run_demo(tmp_path / "demo"))
    assert running(first)
    # make demo again: the first console (serving from the directory the demo removes) is stopped first.
    second = check_console(run_demo(tmp_path / "demo"))
    assert second != first and not running(first) and running(second)
    assert "stopped" in run_demo(tmp_path / "demo", "--stop")
    assert not running(second) and not (tmp_path / "demo" / "console" / "serve.pid").exists()
    assert run_demo(tmp_path / "demo", "--stop").strip() == "no demo console runs"
    assert os.path.isfile(tmp_path / "demo" / "console" / "serve.log")
