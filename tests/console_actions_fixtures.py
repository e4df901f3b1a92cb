"""A console whose quarantine is real: the installed program (internal checks) quarantines .pif attachments through
the test bed, qs-console serves them with the installation's qs-quarantine as its release tool, and a private
`spamd --allow-tell` learns what the console teaches it."""

from __future__ import annotations

import base64
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from console_fixtures import (
    ADMIN_PASSWORD,
    USER_PASSWORD,
    Client,
    Console,
    api_answers,
    console_ready,
    free_port,
    stop,
    wait_for,
)
from daemons import SpamdServer
from harness import Installation, envelope

MALLORY = "mallory@example.net"


def held_message(subject: str, attachment: str = "holiday.pif") -> bytes:
    """A message the internal policy quarantines (a .pif attachment); its Message-ID is its own (Bayes keys on it)."""
    boundary = "=_qs_actions_1"
    tag = base64.b32encode(subject.encode()).decode().rstrip("=").lower()[:40]
    return (f"From: Mallory <{MALLORY}>\r\nTo: undisclosed-recipients:;\r\nSubject: {subject}\r\n"
            f"Date: Wed, 25 Nov 2026 08:00:00 +0000\r\nMessage-ID: <{tag}@mail.example.net>\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\nContent-Type: text/plain\r\n\r\ncheap watches, see the attached {subject}\r\n"
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
            f'Content-Disposition: attachment; filename="{attachment}"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\nTVqQAAAAAAAAAAAAAAAAAAAA\r\n--{boundary}--\r\n").encode()


@dataclass
class HeldSite:
    """The served console, its installation and spamd, and the quarantined messages by subject: (row id, quarantine
    id)."""

    console: Console
    installation: Installation
    spamd: SpamdServer
    port: int
    held: dict[str, tuple[int, str]]
    server: subprocess.Popen | None = None

    def stored(self, quarantine_id: str) -> Path | None:
        """The stored copy's file (new/ or cur/), None when it is gone."""
        found = list((self.installation.spool / "quarantine").glob(f"*/*/{quarantine_id}*"))
        return found[0] if found else None

    def listed(self) -> str:
        """What `qs-quarantine list --tab` shows."""
        done = subprocess.run([str(self.installation.prefix / "bin" / "qs-quarantine"), "list", "--tab"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def admin(self) -> Client:
        client = Client(self.port)
        assert client.login("admin", ADMIN_PASSWORD)[0] == 200
        return client

    def bob(self) -> Client:
        client = Client(self.port)
        assert client.login("bob", USER_PASSWORD)[0] == 200
        return client

    def stop(self) -> None:
        if self.server is not None:
            stop(self.server)
        self.spamd.remove()


def start_held_site(installation: Installation, data_dir: Path, messages: dict[str, tuple[str, ...]],
                    record_extra: dict[str, dict] | None = None, clean: tuple[str, ...] = ()) -> HeldSite:
    """Quarantine each subject's message to its recipients (and deliver the `clean` ones to bob), load the records
    (with `record_extra` set in the record of that subject, None taking a key out), and serve a console with users
    admin and bob (bob@example.com)."""
    console_ready()
    SpamdServer.require()
    (installation.spool / "records" / "current.jsonl").unlink(missing_ok=True)  # the install check's own message
    for subject, recipients in messages.items():
        result = installation.run(held_message(subject), envelope(MALLORY, *recipients))
        assert result.exit_code == 0, result.stderr
    for subject in clean:
        text = f"Subject: {subject}\r\nFrom: <alice@example.org>\r\nMessage-ID: <{subject}@x>\r\n\r\nhello\r\n"
        assert installation.run(text.encode(), envelope("alice@example.org", "bob@example.com")).exit_code == 0
    records = installation.spool / "records" / "current.jsonl"
    if record_extra:
        lines = []
        for line in records.read_bytes().splitlines():
            record = json.loads(line)
            for key, value in record_extra.get(record.get("subject"), {}).items():
                if value is None:
                    record.pop(key, None)  # as an older writer's record, without the key
                else:
                    record[key] = value
            lines.append(json.dumps(record).encode() + b"\n")
        records.write_bytes(b"".join(lines))
    spamd = SpamdServer("spamd-tell", allow_tell=True).start()
    console = Console(data_dir=data_dir, spooldir=installation.spool)
    console.run("migrate", "--spooldir", str(installation.spool),
                "--release-tool", str(installation.prefix / "bin" / "qs-quarantine"))
    console.run("createuser", "admin", "--admin", stdin=ADMIN_PASSWORD + "\n")
    console.run("createuser", "bob", "--recipient", "bob@example.com", stdin=USER_PASSWORD + "\n")
    console.run("load", "--once", "--settle", "0")
    [(host,)] = console.query("SELECT DISTINCT host FROM console_message")
    console.run("migrate", "--host", host)  # the records name the test install's host, not this machine
    saved = json.loads((data_dir / "console.json").read_text())
    saved["spamc"] = ["spamc", "-U", spamd.socket_path]
    (data_dir / "console.json").write_text(json.dumps(saved))
    held = {}
    for subject in messages:
        [(pk, outcome, quarantine_id)] = console.query(
            f"SELECT id, outcome, quarantine_id FROM console_message WHERE subject = '{subject}'")
        assert outcome == "quarantined" and quarantine_id, (subject, outcome)
        held[subject] = (int(pk), quarantine_id)
    port = free_port()
    site = HeldSite(console=console, installation=installation, spamd=spamd, port=port, held=held)
    site.server = console.start("serve", "--listen", f"127.0.0.1:{port}",
                                env={"QQ_STANDIN_DIR": str(installation.sink)})
    try:
        wait_for(lambda: api_answers(port), 30, "qs-console serve")
    except AssertionError:
        site.stop()
        raise
    return site
