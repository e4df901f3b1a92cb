"""A quarantined message's page: its MIME tree (a hostile part name shown as text), the deciding part highlighted, and
every action button driven in Debian's headless chromium against the real quarantine and a private spamd
--allow-tell; a recipient gets none of the buttons and none of the actions."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from console_actions_fixtures import MALLORY, start_held_site
from console_fixtures import ADMIN_PASSWORD, SYSTEM_PYTHON, USER_PASSWORD
from harness import envelope
from test_console_pages import csrf_field, form_login, post_form

BROWSER_SCRIPT = Path(__file__).resolve().parent / "console_actions_browser.py"
HELD = "tree and buttons"
BOBS = "held for bob"
OLD = "an older record"
HOSTILE_PART = '<img src=x onerror="window.pwned=3">evil.pif'
PARTS = [
    {"path": "", "depth": 0, "type": "multipart/mixed", "real_type": "", "name": "", "size": 900, "encoding": "",
     "container": "", "readings": [], "finding": ""},
    {"path": "1", "depth": 1, "type": "text/plain", "real_type": "text/plain", "name": "", "size": 40,
     "encoding": "7bit", "container": "", "readings": [], "finding": ""},
    {"path": "2", "depth": 1, "type": "application/zip", "real_type": "application/zip", "name": "files.zip",
     "size": 300, "encoding": "base64", "container": "", "readings": [], "finding": ""},
    {"path": "2.1", "depth": 2, "type": "application/octet-stream", "real_type": "application/x-dosexec",
     "name": HOSTILE_PART, "size": 18, "encoding": "", "container": "zip",
     "readings": ["<b>two-names</b>", "zip-member"], "finding": "bad-extension"},
]
DECISION = {"part": "2.1", "rule": "bad-extension", "scanner": "policy", "reading": "<b>two-names</b>",
            "text": "a .pif file <script>window.pwned=4</script>"}


@pytest.fixture(scope="module")
def site(make_installation, tmp_path_factory):
    made = start_held_site(make_installation(fresh=True), tmp_path_factory.mktemp("action-pages") / "console",
                           {HELD: ("carol@example.com", "dave@example.com"), BOBS: ("bob@example.com",)},
                           record_extra={HELD: {"parts": PARTS, "decision": DECISION},
                                         OLD: {"parts": None, "decision": None}},
                           clean=(OLD,))
    yield made
    made.stop()


def test_a_recipient_sees_no_buttons_and_may_act_on_nothing(site):
    bob = form_login(site.port, "bob", USER_PASSWORD)
    mine, theirs = site.held[BOBS][0], site.held[HELD][0]
    status, page, _ = bob.get(f"/messages/{mine}")
    assert status == 200 and b'id="actions"' not in page and b'id="download"' not in page
    token = csrf_field(page)
    for path, fields in (("release", {}), ("release", {"to": "bob@example.com"}), ("delete", {"confirm": "yes"}),
                         ("learn", {"as": "ham"})):
        status, _, headers = post_form(bob, f"/messages/{mine}/{path}", {"csrfmiddlewaretoken": token, **fields})
        assert status == 302 and headers["Location"] == f"/messages/{mine}"
        assert b"only an administrator" in bob.get(f"/messages/{mine}")[1]
        assert post_form(bob, f"/messages/{theirs}/{path}", {"csrfmiddlewaretoken": token, **fields})[0] == 404
    assert bob.get(f"/api/messages/{mine}/download")[0] == 403
    assert site.stored(site.held[BOBS][1]) is not None and site.held[BOBS][1] in site.listed()


def test_the_tree_is_escaped_in_the_html(site):
    admin = form_login(site.port, "admin", ADMIN_PASSWORD)
    page = admin.get(f"/messages/{site.held[HELD][0]}")[1].decode()
    assert "&lt;img src=x onerror=&quot;window.pwned=3&quot;&gt;evil.pif" in page
    assert "<img" not in page and "<b>" not in page and "<script>" not in page
    assert 'class="depth-2 decided"' in page and page.count(" decided\"") == 1


def test_in_chromium_the_tree_and_every_action(site):
    """Debian's chromium through chromedriver (Selenium from python3-selenium, run by /usr/bin/python3)."""
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import selenium"], capture_output=True)
    if probe.returncode != 0 or not Path("/usr/bin/chromedriver").exists():
        pytest.fail("python3-selenium or chromium-driver missing (tests/install-deps.sh)")
    pk, quarantine_id = site.held[HELD]
    [(old_id,)] = site.console.query(f"SELECT id FROM console_message WHERE subject = '{OLD}'")
    stored = site.stored(quarantine_id).read_bytes()
    before = set(site.installation.sink.glob("*.msg"))
    done = subprocess.run([SYSTEM_PYTHON, str(BROWSER_SCRIPT), str(site.port), "admin", ADMIN_PASSWORD, str(pk),
                           old_id, "dave@example.com"], capture_output=True, text=True, timeout=180)
    seen = json.loads(done.stdout)
    assert "error" not in seen, (seen.get("error"), seen.get("page"), done.stderr[-2000:])

    # The tree: indented by depth, the deciding part marked, every string from the record shown as text.
    assert seen["tree"] == [
        ["(top)", "multipart/mixed", "", "", "900", "", "", "", ""],
        ["1", "text/plain", "text/plain", "", "40", "7bit", "", "", ""],
        ["2", "application/zip", "application/zip", "files.zip", "300", "base64", "", "", ""],
        ["2.1", "application/octet-stream", "application/x-dosexec", HOSTILE_PART, "18", "", "zip",
         "<b>two-names</b>, zip-member", "bad-extension"]]
    assert seen["tree_classes"] == ["depth-0", "depth-1", "depth-1", "depth-2 decided"]
    indent = [float(value.removesuffix("px")) for value in seen["tree_indent"]]
    assert indent[0] < indent[1] == indent[2] < indent[3]
    assert seen["decided_by"] == ("part 2.1, rule bad-extension, scanner policy, reading <b>two-names</b> "
                                  "(a .pif file <script>window.pwned=4</script>)")
    assert seen["tree_images"] == 0 and seen["tree_pwned"] == "undefined" and seen["pwned_at_end"] == "undefined"
    assert seen["old_no_tree"] and seen["old_no_tree"][0].startswith("This record has no MIME tree")
    assert seen["old_tree_tables"] == 0

    # Download: the stored bytes exactly, as an attachment named after the id.
    download = seen["download"]
    assert download["status"] == 200 and download["type"] == "message/rfc822"
    assert download["disposition"] == f'attachment; filename="{quarantine_id}.eml"'
    assert download["latin1"].encode("latin-1") == stored

    # Delete needs its box ticked; release to one address arrives only there; learning answers as spamd does.
    assert seen["delete_unconfirmed"].startswith("Not deleted: tick")
    assert seen["release_to"] == f"Released: released {quarantine_id} to dave@example.com"
    [queued] = set(site.installation.sink.glob("*.msg")) - before
    assert queued.with_suffix(".env").read_bytes() == envelope(MALLORY, "dave@example.com")
    assert seen["learn_spam"] == "Learned as spam: learned as spam (spamc: Message successfully un/learned)"
    assert seen["learn_spam_again"] == ("Learned as spam: already learned as spam "
                                        "(spamc: Message was already un/learned)")
    assert seen["learn_ham"].startswith("Learned as ham: learned as ham")
    assert seen["delete"] == f"Deleted: deleted {quarantine_id}"
    assert seen["deleted_mark"] == ["stored copy deleted"] and seen["actions_after_delete"] == 0
    assert site.stored(quarantine_id) is None and quarantine_id not in site.listed()
    assert seen["audit"] == [["admin", "download", "ok"], ["admin", "release-to", "ok"], ["admin", "learn-spam", "ok"],
                             ["admin", "learn-spam", "ok"], ["admin", "learn-ham", "ok"], ["admin", "delete", "ok"]]
    assert not [line for line in seen["console_errors"] if "Content Security Policy" in line], seen["console_errors"]
