"""The console's pages served by `qs-console serve`: login, roles, escaping and CSRF over HTTP, then Debian's headless
chromium (Selenium) logging in, searching, opening a message with a hostile subject and file name, and releasing it
through the installation's qs-quarantine and qmail-queue stand-in.

The messages are real: the installed program (internal checks) scans them and writes the records the loader moves
into the console's SQLite database; the hostile one is quarantined by policy (.pif attachment).
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from console_fixtures import (
    ADMIN_PASSWORD,
    SYSTEM_PYTHON,
    USER_PASSWORD,
    Client,
    Console,
    api_answers,
    console_ready,
    free_port,
    stop,
    wait_for,
)
from harness import envelope
from scanner_fixtures import headers

HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'
HOSTILE_FILE = HOSTILE + ".pif"
MALLORY = "mallory@example.net"
BROWSER_SCRIPT = Path(__file__).resolve().parent / "console_browser.py"
CLEAN = 3


def hostile_message() -> bytes:
    """A message whose subject and attachment file name are markup (the name RFC 2231-encoded, quotes and all)."""
    boundary = "=_qs_pages_1"
    name = urllib.parse.quote(HOSTILE_FILE, safe="")
    return (headers(HOSTILE, f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n') + b"\r\n"
            + f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n".encode()
            + f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
              f"Content-Disposition: attachment; filename*=utf-8''{name}\r\n"
              f"Content-Transfer-Encoding: base64\r\n\r\nTVqQAAAAAAAAAAAAAAAAAAAA\r\n--{boundary}--\r\n".encode())


def clean_message(subject: str) -> bytes:
    return headers(subject, "Content-Type: text/plain\r\n") + b"\r\nhello\r\n"


@pytest.fixture(scope="module")
def site(make_installation, tmp_path_factory):
    """An installation (internal checks) whose records are loaded into a console served on loopback.

    Users: admin; bob, a recipient of bob@example.com. Messages: CLEAN clean ones to bob, the hostile one from
    MALLORY to carol@example.com (quarantined).
    """
    console_ready()
    installation = make_installation(fresh=True)
    (installation.spool / "records" / "current.jsonl").unlink(missing_ok=True)  # the install check's own message
    console = Console(data_dir=tmp_path_factory.mktemp("pages") / "console", spooldir=installation.spool)
    console.run("migrate", "--spooldir", str(installation.spool),
                "--release-tool", str(installation.prefix / "bin" / "qs-quarantine"))
    console.run("createuser", "admin", "--admin", stdin=ADMIN_PASSWORD + "\n")
    console.run("createuser", "bob", "--recipient", "bob@example.com", stdin=USER_PASSWORD + "\n")
    for number in range(CLEAN):
        assert installation.run(clean_message(f"clean {number}"),
                                envelope("alice@example.org", "bob@example.com")).exit_code == 0
    assert installation.run(hostile_message(), envelope(MALLORY, "carol@example.com")).exit_code == 0
    console.run("load", "--once", "--settle", "0")
    [(host,)] = console.query("SELECT DISTINCT host FROM console_message")
    console.run("migrate", "--host", host)  # the records name the test install's host, not this machine
    [(hostile_id, outcome, quarantine_id)] = console.query(
        f"SELECT id, outcome, quarantine_id FROM console_message WHERE sender = '{MALLORY}'")
    assert outcome == "quarantined" and quarantine_id
    [(clean_id,)] = console.query("SELECT id FROM console_message WHERE subject = 'clean 0'")
    port = free_port()
    server = console.start("serve", "--listen", f"127.0.0.1:{port}", env={"QQ_STANDIN_DIR": str(installation.sink)})
    try:
        wait_for(lambda: api_answers(port), 30, "qs-console serve")
        yield {"console": console, "installation": installation, "port": port, "hostile": int(hostile_id),
               "clean": int(clean_id), "quarantine_id": quarantine_id}
    finally:
        stop(server)


def form_login(port: int, username: str, password: str) -> Client:
    """Log in through the login page as a browser does: its CSRF token from the form, then the POST."""
    client = Client(port)
    status, page, _ = client.get("/login")
    assert status == 200
    token = csrf_field(page)
    form = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token})
    status, _, answer = client.request("POST", "/login", form.encode(),
                                       {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 302, f"login as {username}: {status}"
    assert answer["Location"] == "/"
    return client


def csrf_field(page: bytes) -> str:
    """The CSRF token of a page's form."""
    found = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1).decode()


def post_form(client: Client, path: str, fields: dict[str, str]):
    return client.request("POST", path, urllib.parse.urlencode(fields).encode(),
                          {"Content-Type": "application/x-www-form-urlencoded"})


def test_every_page_but_login_sends_to_the_login_page(site):
    anonymous = Client(site["port"])
    for path in ("/", "/?sender=x%40y", f"/messages/{site['hostile']}", "/messages/999999"):
        status, _, answer = anonymous.get(path)
        assert status == 302, path
        assert answer["Location"] == "/login?next=" + urllib.parse.quote(path, safe="/"), path
    assert anonymous.get("/login")[0] == 200
    # An unsafe request without a session or token goes nowhere.
    assert post_form(anonymous, f"/messages/{site['hostile']}/release", {})[0] == 403


def test_login_page_needs_its_csrf_token_and_the_right_password(site):
    port = site["port"]
    client = Client(port)
    page = client.get("/login")[1]
    fields = {"username": "admin", "password": ADMIN_PASSWORD}
    assert post_form(client, "/login", fields)[0] == 403  # no token
    assert "qsconsole_session" not in client.cookies
    wrong = {**fields, "password": "wrong", "csrfmiddlewaretoken": csrf_field(page)}
    status, answer, _ = post_form(client, "/login", wrong)
    assert status == 200 and b'id="login-error"' in answer
    assert "qsconsole_session" not in client.cookies
    admin = form_login(port, "admin", ADMIN_PASSWORD)
    status, page, answer = admin.get("/")
    assert status == 200 and b"admin (administrator)" in page
    assert "script-src 'self'" in answer["Content-Security-Policy"] and "frame-ancestors 'none'" in answer[
        "Content-Security-Policy"]
    audit = site["console"].query("SELECT user, result FROM console_auditlog WHERE action = 'login'")
    assert ("admin", "refused") in audit and ("admin", "ok") in audit


def test_mail_text_is_escaped_on_every_page(site):
    admin = form_login(site["port"], "admin", ADMIN_PASSWORD)
    escaped = b"&lt;script&gt;window.pwned=1&lt;/script&gt;&lt;img src=x onerror=&quot;window.pwned=2&quot;&gt;"
    listing = admin.get("/")[1]
    assert escaped in listing
    page = admin.get(f"/messages/{site['hostile']}")[1]
    assert page.count(escaped) >= 3  # the title, the heading, the attachment's name
    assert escaped + b".pif" in page
    for raw in (listing, page):
        assert b"<script>window" not in raw and b"<img" not in raw
        assert raw.count(b"<script") == (1 if raw is listing else 0)  # only console.js, on the list


def test_the_search_form_filters_as_the_api_does(site):
    admin = form_login(site["port"], "admin", ADMIN_PASSWORD)

    def rows(**query) -> list[bytes]:
        status, page, _ = admin.get("/", **query)
        assert status == 200, query
        return re.findall(rb'<tr data-id="(\d+)">', page)

    assert len(rows()) == CLEAN + 1
    assert rows(sender=MALLORY) == [str(site["hostile"]).encode()]
    assert rows(sender="@EXAMPLE.org") == rows(recipient="bob@example.com") != []
    assert len(rows(recipient="bob@example.com")) == CLEAN
    assert len(rows(q="clean")) == CLEAN and rows(q="window.pwned") == [str(site["hostile"]).encode()]
    assert rows(outcome="quarantined") == [str(site["hostile"]).encode()]
    assert rows(outcome="rejected") == []
    assert len(rows(since="2000-01-01", until="2100-01-01")) == CLEAN + 1
    assert rows(until="2000-01-01") == []
    assert rows(host="no.such.host") == [] and rows(client_ip="203.0.113.99") == []
    assert admin.get("/", since="last tuesday")[0] == 400


def test_a_recipient_sees_only_their_mail_and_cannot_release(site):
    bob = form_login(site["port"], "bob", USER_PASSWORD)
    page = bob.get("/")[1]
    assert b"bob (recipient)" in page
    assert len(re.findall(rb'<tr data-id="', page)) == CLEAN and b"window.pwned" not in page
    assert bob.get(f"/messages/{site['hostile']}")[0] == 404
    assert bob.get("/", sender=MALLORY)[1].count(b"<tr data-id=") == 0
    status, own, _ = bob.get(f"/messages/{site['clean']}")
    assert status == 200 and b"clean 0" in own
    assert b'id="release"' not in own and b'id="audit"' not in own
    token = csrf_field(own)
    assert post_form(bob, f"/messages/{site['hostile']}/release", {"csrfmiddlewaretoken": token})[0] == 404
    assert (site["installation"].spool / "quarantine" / "policy" / "new" / site["quarantine_id"]).is_file() or any(
        (site["installation"].spool / "quarantine").glob(f"*/new/{site['quarantine_id']}"))


def test_a_release_without_the_csrf_token_is_refused(site):
    admin = form_login(site["port"], "admin", ADMIN_PASSWORD)
    page = admin.get(f"/messages/{site['hostile']}")[1]
    assert b'id="release"' in page
    assert post_form(admin, f"/messages/{site['hostile']}/release", {})[0] == 403
    assert post_form(admin, f"/messages/{site['hostile']}/release", {"csrfmiddlewaretoken": "x" * 64})[0] == 403
    assert list((site["installation"].spool / "quarantine").glob(f"*/new/{site['quarantine_id']}"))
    assert site["console"].query("SELECT count(*) FROM console_auditlog WHERE action = 'release'") == [("0",)]
    assert post_form(admin, "/logout", {})[0] == 403
    assert admin.get("/")[0] == 200


def test_in_chromium_login_search_a_hostile_message_inert_and_release(site):
    """Debian's chromium through chromedriver (Selenium from python3-selenium, run by /usr/bin/python3)."""
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import selenium"], capture_output=True)
    if probe.returncode != 0 or not Path("/usr/bin/chromedriver").exists():
        pytest.fail("python3-selenium or chromium-driver missing (tests/install-deps.sh)")
    installation, console = site["installation"], site["console"]
    queued_before = set(installation.sink.glob("*.msg"))
    browser = subprocess.Popen([SYSTEM_PYTHON, str(BROWSER_SCRIPT), str(site["port"]), "admin", ADMIN_PASSWORD,
                                MALLORY, HOSTILE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        first = browser.stdout.readline()
        if first.strip() == "WAITING":
            assert installation.run(clean_message("arrived later"),
                                    envelope("alice@example.org", "bob@example.com")).exit_code == 0
            console.run("load", "--once", "--settle", "0")
            browser.stdin.write("arrived later\n")
            browser.stdin.flush()
            first = ""
        output, errors = browser.communicate(timeout=300)
    finally:
        if browser.poll() is None:
            browser.kill()
    seen = json.loads(first + output)
    assert "error" not in seen, (seen, errors[-2000:])
    port = site["port"]
    assert seen["anonymous_url"] == f"http://127.0.0.1:{port}/login?next=/"
    assert seen["after_login_url"] == f"http://127.0.0.1:{port}/"
    assert HOSTILE in seen["list_subjects"] and seen["list_pwned"] == "undefined"
    assert seen["search_senders"] == [MALLORY] and seen["search_subjects"] == [HOSTILE]
    # Shown as text, run as nothing.
    assert seen["subject"] == HOSTILE and HOSTILE in seen["title"]
    assert seen["attachments"][0][0] == HOSTILE_FILE
    assert seen["message_pwned"] == "undefined" and seen["images"] == 0
    assert seen["outcome_before"] == "quarantined"
    # Released through qs-quarantine to the stand-in qmail-queue, with the original envelope.
    assert seen["notice"].startswith("Released:") and "carol@example.com" in seen["notice"]
    assert seen["outcome_after"].startswith("quarantined — released ") and seen["outcome_after"].endswith("by admin")
    assert seen["release_buttons_after"] == 0
    assert seen["audit"] == [["admin", "release", "ok"]]
    [queued] = [path for path in set(installation.sink.glob("*.msg")) - queued_before
                if path.read_bytes().startswith(b"X-Qmail-Scanner-Released: ")]
    assert queued.with_suffix(".env").read_bytes() == envelope(MALLORY, "carol@example.com")
    assert not list((installation.spool / "quarantine").glob(f"*/new/{site['quarantine_id']}"))
    # The list updated itself, without a reload.
    assert seen["update_rows"][1] == seen["update_rows"][0] + 1 and seen["not_reloaded"] is True
    assert seen["update_pwned"] == "undefined"
    assert seen["after_logout_url"] == f"http://127.0.0.1:{port}/login?next=/"
    assert not [line for line in seen["console_errors"] if "Content Security Policy" in line], seen["console_errors"]
