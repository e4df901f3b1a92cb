"""qs-console digest: one mail per recipient account's address through notqmail's real qmail-inject, its release links
(signed, expiring, single-use, to that address only) releasing through the installed qs-quarantine."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import os
import re
import subprocess
import time
import urllib.parse

from console_fixtures import (
    ADMIN_PASSWORD,
    QS_CONSOLE,
    SYSTEM_PYTHON,
    USER_PASSWORD,
    Client,
    Console,
    api_answers,
    append_record,
    console_ready,
    free_port,
    make_record,
    stop,
    wait_for,
)
from harness import envelope, load_queued
from scanner_fixtures import with_attachment

HOSTILE_SUBJECT = "Pay now \x1b[2J\u202egnp.exe <b>"
SCANNED_SUBJECT = "Pay now _[2J_gnp.exe <b>"  # as the scanner's record writes it
RAW_SUBJECT = "Invoice \x1b]0;owned\x07 \u202egnp.exe"
BASE_URL = "https://console.example.org"
pytest_plugins = ("inject_fixtures",)


def pif_message(subject: str) -> bytes:
    """A message the policy quarantines (a .pif attachment) with this Subject, RFC 2047 encoded."""
    encoded = "=?utf-8?b?" + base64.b64encode(subject.encode()).decode() + "?="
    return with_attachment("holiday.pif", b"MZ\x90\x00" + b"\x00" * 200).replace(
        b"Subject: attachment", b"Subject: " + encoded.encode(), 1)


def digest_text(mail: bytes) -> str:
    """The digest's text/plain body, decoded."""
    parsed = email.message_from_bytes(mail, policy=email.policy.default)
    assert parsed.get_content_type() == "text/plain" and parsed.get_content_charset() == "utf-8"
    return parsed.get_content()


def token_made_at(console: Console, pk: int, address: str, when: float) -> str:
    """A release token signed as if at `when` (the console's own code and key)."""
    program = ("import sys, django; sys.path.insert(0, sys.argv[1]); django.setup(); "
               "from qsconsole.console.release_links import make_token; "
               "print(make_token(int(sys.argv[2]), sys.argv[3], now=float(sys.argv[4])))")
    done = subprocess.run([SYSTEM_PYTHON, "-c", program, str(QS_CONSOLE.parent.parent / "lib"), str(pk), address,
                           str(when)], capture_output=True, text=True, check=True,
                          env={**os.environ, "QS_CONSOLE_DIR": str(console.data_dir),
                               "DJANGO_SETTINGS_MODULE": "qsconsole.settings"})
    return done.stdout.strip()


def link_page(client: Client, path: str):
    """GET a link page: status, body, and the form's CSRF token (or "")."""
    status, page, _ = client.get(path)
    found = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    return status, page, found.group(1).decode() if found else ""


def post_link(client: Client, path: str, token: str):
    return client.request("POST", path, urllib.parse.urlencode({"csrfmiddlewaretoken": token}).encode(),
                          {"Content-Type": "application/x-www-form-urlencoded"})


def test_a_digest_per_recipient_with_links_that_release_once_to_that_address(make_installation, real_qmail_inject,
                                                                              tmp_path):
    console_ready()
    installation = make_installation(fresh=True)
    (installation.spool / "records" / "current.jsonl").unlink(missing_ok=True)
    console = Console(data_dir=tmp_path / "console", spooldir=installation.spool)
    console.run("migrate", "--spooldir", str(installation.spool),
                "--release-tool", str(installation.prefix / "bin" / "qs-quarantine"))
    console.run("createuser", "admin", "--admin", stdin=ADMIN_PASSWORD + "\n")
    console.run("createuser", "bob", "--recipient", "bob@example.com", stdin=USER_PASSWORD + "\n")
    # Carol has no console account: she gets no digest (only recipient accounts' addresses do).
    runs = [(pif_message("for bob and carol"), envelope("mallory@example.net", "bob@example.com", "carol@example.com")),
            (pif_message(HOSTILE_SUBJECT), envelope("mallory@example.net", "bob@example.com"))]
    for message, envelope_bytes in runs:
        assert installation.run(message, envelope_bytes).exit_code == 0
    # The scanner already writes controls in a subject as "_"; a record with them raw (another writer, a future
    # change) must still reach the digest escaped.
    append_record(console.records, make_record(1, host="elsewhere", time=time.time(), outcome="quarantined",
                                               recipients=["bob@example.com"], subject=RAW_SUBJECT,
                                               quarantine_id="1.2.elsewhere", reason="spam"))
    console.run("load", "--once", "--settle", "0")
    assert console.query("SELECT outcome, count(*) FROM console_message GROUP BY outcome") == [("quarantined", "3")]
    [(host,)] = console.query("SELECT DISTINCT host FROM console_message WHERE host != 'elsewhere'")
    console.run("migrate", "--host", host)
    settings_file = console.data_dir / "console.json"
    saved = json.loads(settings_file.read_text())
    assert saved["release_link_days"] == 7 and saved["qmail_inject"] == "/var/qmail/bin/qmail-inject"  # defaults
    assert console.run("digest", check=False).returncode == 1  # no base_url: no links, no digest
    saved.update(base_url=BASE_URL, qmail_inject=real_qmail_inject, digest_sender="postmaster@mx.example.org")
    settings_file.write_text(json.dumps(saved))

    # A dry run prints and sends nothing.
    dry = console.run("digest", "--dry-run")
    assert "--- to bob@example.com: 3 message(s)" in dry.stdout
    inject_queue = tmp_path / "inject-queue"
    inject_queue.mkdir()
    assert not list(inject_queue.iterdir())
    sent = subprocess.run(console.command("digest", "--since", "24"), capture_output=True, text=True, timeout=120,
                          env={**os.environ, "QQ_STANDIN_DIR": str(inject_queue)})
    assert sent.returncode == 0, sent.stderr
    queued = [load_queued(path) for path in sorted(inject_queue.glob("*.msg"))]
    assert len(queued) == 1  # one digest for bob's two messages, none for carol
    [digest] = queued
    assert digest.envelope == b"Fpostmaster@mx.example.org\0Tbob@example.com\0\0"
    parsed = email.message_from_bytes(digest.message, policy=email.policy.default)
    assert parsed["Subject"] == "Quarantined mail held for you" and parsed["To"] == "bob@example.com"
    text = digest_text(digest.message)
    assert "for bob and carol" in text
    assert "Pay now _[2J_gnp.exe <b>" in text
    assert "Invoice \\x1b]0;owned\\x07 \\u202egnp.exe" in text  # no raw escape or bidi override reaches a reader
    assert "\x1b" not in text and "\u202e" not in text
    links = re.findall(re.escape(BASE_URL) + r"/r/(\S+)", text)
    assert len(links) == 3 and len(set(links)) == 3
    assert text.count("Reason:") == 3

    port = free_port()
    server = console.start("serve", "--listen", f"127.0.0.1:{port}", env={"QQ_STANDIN_DIR": str(installation.sink)})
    try:
        wait_for(lambda: api_answers(port), 30, "qs-console serve")
        ids = dict(console.query("SELECT subject, id FROM console_message"))
        shared = next(token for token in links if token_made_for(token) == int(ids["for bob and carol"]))
        anonymous = Client(port)
        status, page, csrf = link_page(anonymous, f"/r/{shared}")
        assert status == 200 and b"for bob and carol" in page and csrf
        assert post_link(Client(port), f"/r/{shared}", "")[0] == 403  # no CSRF token: nothing happens
        before = set(installation.sink.glob("*.msg"))
        status, page, _ = post_link(anonymous, f"/r/{shared}", csrf)
        assert status == 200 and b'id="released"' in page, page[-2000:]
        [released] = [load_queued(path) for path in set(installation.sink.glob("*.msg")) - before]
        # To bob only, though carol was a recipient too; from the original sender.
        assert released.envelope == b"Fmallory@example.net\0Tbob@example.com\0\0"
        assert b"holiday.pif" in released.message
        # A second use, on GET or POST, is refused and queues nothing.
        assert link_page(Client(port), f"/r/{shared}")[0] == 410
        assert post_link(anonymous, f"/r/{shared}", csrf)[0] == 410
        assert len(set(installation.sink.glob("*.msg")) - before) == 1
        # One changed byte anywhere in the token: refused.
        other = next(token for token in links if token_made_for(token) == int(ids[SCANNED_SUBJECT]))
        for position in (0, len(other) // 2, len(other) - 1):
            changed = other[:position] + ("A" if other[position] != "A" else "B") + other[position + 1:]
            status, page, csrf_changed = link_page(anonymous, f"/r/{changed}")
            assert status == 400 and b"not valid" in page and not csrf_changed
            assert post_link(anonymous, f"/r/{changed}", csrf)[0] == 400
        # A token signed 8 days ago (links last 7): expired.
        hostile_id = int(ids[SCANNED_SUBJECT])
        old = token_made_at(console, hostile_id, "bob@example.com", time.time() - 8 * 86400)
        status, page, _ = link_page(anonymous, f"/r/{old}")
        assert status == 410 and b"expired" in page
        assert post_link(anonymous, f"/r/{old}", csrf)[0] == 410
        # A token for an address that is not the message's recipient (signed with the key) releases nothing.
        stranger = token_made_at(console, hostile_id, "carol@example.com", time.time())
        assert link_page(anonymous, f"/r/{stranger}")[0] == 410
        assert len(set(installation.sink.glob("*.msg")) - before) == 1
        # The other link still works, and shows the hostile subject as text.
        status, page, csrf = link_page(anonymous, f"/r/{other}")
        assert status == 200 and b"&lt;b&gt;" in page and b"<b>" not in page.split(b'id="subject"')[1][:200]
        assert post_link(anonymous, f"/r/{other}", csrf)[0] == 200
        assert len(set(installation.sink.glob("*.msg")) - before) == 2
    finally:
        code, stderr = stop(server)
    assert code in (0, -15), stderr
    audit = console.query("SELECT action, user, result FROM console_auditlog WHERE action = 'release-link' ORDER BY id")
    assert audit == [("release-link", "bob@example.com", "ok"), ("release-link", "bob@example.com", "ok")]
    # The copy for bob and carol is still held for carol; the one addressed to bob alone is released.
    states = dict(console.query("SELECT subject, state FROM console_message"))
    assert states["for bob and carol"] in ("", None) and states[SCANNED_SUBJECT] == "released"


def token_made_for(token: str) -> int:
    """The message id a token carries (its unsigned payload; the signature is checked by the server)."""
    payload = token.split(":")[0]
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return int(decoded.decode().strip("[]").split(",")[0])

