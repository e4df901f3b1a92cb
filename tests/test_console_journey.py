"""A new administrator's first day, as the README tells it: the scanner installed by configure.py --install, the
console by one `qs-console install` command, both services started from their installed run files; a message the
policy holds is found through the console, its page says which part and rule decided, a release delivers it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from console_fixtures import ADMIN_PASSWORD, Client, api_answers, console_ready, free_port, stop, wait_for
from harness import envelope, load_queued
from scanner_fixtures import with_attachment
from security_fixtures import SCANNER_USER, install_wrapped, public_dir

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="installs accounts and setuid files: root only")


def start_service(run_file: Path) -> subprocess.Popen:
    """A service as daemontools or runit starts it: its run file, from its own directory."""
    return subprocess.Popen(["sh", str(run_file)], cwd=run_file.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={"PATH": "/usr/bin:/bin"})


def test_install_log_in_find_see_why_release_and_find_it_delivered():
    console_ready()
    second_command = re.search(r"contrib/qs-console install (--admin \S+ --listen \S+ --base-url \S+ --start)", README)
    assert second_command, "the README's second command for a new user"
    installation = install_wrapped()  # the README's first command: configure.py ... --install
    console_prefix = public_dir("qs-console-journey-")
    port = free_port()
    services: list[subprocess.Popen] = []
    try:
        done = subprocess.run(
            [sys.executable, str(ROOT / "contrib" / "qs-console"), "install", "--admin", "admin", "--listen",
             f"127.0.0.1:{port}", "--base-url", f"http://127.0.0.1:{port}", "--start",
             "--prefix", str(console_prefix / "prefix"), "--data-dir", str(console_prefix / "data"),
             "--spooldir", str(installation.spool), "--scanner-user", SCANNER_USER,
             "--release-tool", str(installation.prefix / "bin" / "qs-quarantine")],
            input=ADMIN_PASSWORD + "\n", capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        for name in ("qs-console", "qs-console-load"):
            services.append(start_service(console_prefix / "prefix" / "service" / name / "run"))
        wait_for(lambda: api_answers(port) or services[0].poll() is not None, 60, "the installed console")
        assert services[0].poll() is None, services[0].communicate()

        # Mail arrives through the setuid wrapper as qmail-smtpd hands it over; the policy holds the .pif.
        held = with_attachment("holiday.pif", b"MZ\x90\x00" + b"\x00" * 200)
        result = installation.run(held, envelope("mallory@example.net", "bob@example.org"))
        assert result.exit_code == 0, result.stderr
        assert not list(installation.sink.iterdir())

        admin = Client(port)
        assert admin.login("admin", ADMIN_PASSWORD)[0] == 200

        def quarantined() -> list:
            status, answer, _ = admin.get("/api/messages", outcome="quarantined", sender="mallory@example.net")
            assert status == 200, answer
            return answer["messages"]

        found = wait_for(quarantined, 60, "the record loaded by the installed loader", interval=0.5)
        [message] = found
        status, detail, _ = admin.get(f"/api/messages/{message['id']}")
        assert status == 200 and detail["recipients"] == ["bob@example.org"]
        # Why: the part, the rule; the page says it too.
        decided = [part for part in detail["parts"] if part["path"] == detail["decision"]["part"]]
        assert detail["decision"]["rule"] and decided and decided[0]["name"] == "holiday.pif", detail["decision"]
        status, page, _ = admin.get(f"/messages/{message['id']}")
        assert status == 200 and b'id="decided-by"' in page and b"holiday.pif" in page

        status, answer, _ = admin.request("POST", f"/api/messages/{message['id']}/release", b"{}",
                                          {"Content-Type": "application/json", "X-CSRFToken": admin.csrf})
        assert status == 200 and answer["released"], answer
        delivered = [load_queued(path) for path in installation.sink.glob("*.msg")]
        assert len(delivered) == 1 and delivered[0].envelope == envelope("mallory@example.net", "bob@example.org")
        assert delivered[0].message.startswith(b"X-Qmail-Scanner-Released: ") and b"holiday.pif" in delivered[0].message
        status, detail, _ = admin.get(f"/api/messages/{message['id']}")
        assert detail["state"] == "released"
    finally:
        for service in services:
            stop(service)
        installation.remove()
        shutil.rmtree(console_prefix, ignore_errors=True)
