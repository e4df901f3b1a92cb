"""After the verdict, end to end through the installed program: headers, quarantine, alerts, logs, release."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness import envelope, install

TOOL = Path(__file__).resolve().parent.parent / "contrib" / "qs-quarantine"
PIF = (
    b"From: Alice <alice@example.net>\n"
    b"To: bob@example.org\n"
    b"Subject: your invoice\n"
    b"Message-ID: <pif1@example.net>\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="b1"\n'
    b"\n"
    b"--b1\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"see attached\n"
    b"--b1\n"
    b'Content-Type: application/octet-stream; name="invoice.pif"\n'
    b"Content-Transfer-Encoding: base64\n"
    b'Content-Disposition: attachment; filename="invoice.pif"\n'
    b"\n"
    b"TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAgAAAAA==\n"
    b"--b1--\n"
)
FORGED_CLEAN = (
    b"From: Mallory <m@example.net>\n"
    b"Subject: trust me\n"
    b"X-Qmail-Scanner: 2.08 (Clear:RC:1(127.0.0.1):. Processed in 0.01 secs)\n"
    b"X-Qmail-Scanner-Diagnostics: all clean, honest\n"
    b"\n"
    b"hello\n"
)


def test_block_quarantine_alert_log_and_release(tmp_path, recorder, standin):
    inject, record_dir = recorder
    installed = install(
        tmp_path / "qs",
        standin,
        "--notify", "psender,admin",
        "--qmail-inject-binary", inject,
        "--lang", "de_DE",
        "--log-details", "mailstats",
        "--add-dscr-hdrs", "all",
        "--local-domains", "example.org",
        "--admin", "postmaster", "--domain", "example.org",
    )  # fmt: skip
    result = installed.run(PIF, envelope("alice@example.net", "bob@example.org"), env={"TCPREMOTEIP": "198.51.100.4"})
    assert result.exit_code == 0, result.stderr
    assert result.queued == []
    [stored] = installed.quarantined("policy")
    assert stored.read_bytes().endswith(PIF)
    alerts = [json.loads(p.read_text()) for p in sorted(record_dir.glob("*.json"))]
    assert sorted(a["argv"][-1] for a in alerts) == ["alice@example.net", "postmaster@example.org"]
    for alert in alerts:
        assert alert["qmailqueue"] is None and alert["fds"] == [0, 1, 2]
        assert "Nachricht von alice@example.net blockiert" in alert["message"]
        assert "see attached" not in alert["message"]  # headers only, never the body
    [row] = (installed.spool / "mailstats.csv").read_text().splitlines()
    fields = row.split("\t")
    assert fields[1].startswith("Quarantined:Policy(") and "RC:0(198.51.100.4):" in fields[1]
    assert fields[4:9] == ["alice@example.net", "bob@example.org", "your invoice", "<pif1@example.net>", fields[8]]
    assert any(f.startswith("invoice.pif:") for f in fields[8:])
    [qline] = (installed.spool / "quarantine.log").read_text().splitlines()
    assert ".pif" in qline.split("\t")[4]

    listing = _tool(installed.spool, "list", "--tab").stdout.splitlines()
    assert [line.split("\t")[0] for line in listing] == [stored.name]
    released = _tool(installed.spool, "release", stored.name, qmail_queue=str(standin), sink=installed.sink)
    assert released.returncode == 0, released.stderr
    [queued] = sorted(installed.sink.glob("*.msg"))
    assert queued.with_suffix(".env").read_bytes() == envelope("alice@example.net", "bob@example.org")
    assert queued.read_bytes().split(b"\n", 1)[1] == PIF


def test_forged_verdict_headers_are_replaced(tmp_path, standin):
    installed = install(tmp_path / "qs", standin, "--add-dscr-hdrs", "yes", "--log-details", "no")
    result = installed.run(FORGED_CLEAN, envelope("m@example.net", "bob@example.org"))
    assert result.exit_code == 0, result.stderr
    [queued] = result.queued
    headers = queued.message.split(b"\n\n", 1)[0].decode()
    assert "all clean, honest" not in headers and "2.08 (Clear:RC:1(127.0.0.1)" not in headers
    assert headers.count("X-Qmail-Scanner:") == 1 and "X-Qmail-Scanner-Mail-From: m@example.net via" in headers
    assert queued.message.endswith(b"Subject: trust me\n\nhello\n")


def _tool(spool: Path, *args: str, qmail_queue: str = "/nonexistent", sink: Path | None = None):
    argv = [sys.executable, str(TOOL), "--spooldir", str(spool), "--qmail-queue", qmail_queue, *args]
    env = {"PATH": "/usr/bin:/bin", **({"QQ_STANDIN_DIR": str(sink)} if sink else {})}
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
