"""Sender allow/block lists: the API's roles and checks, the audit log, the /lists page, and the records/sender-lists
file each host's loader writes for the scanner (on SQLite and on a private PostgreSQL)."""

from __future__ import annotations

import json
import os
import re
import stat
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
    append_record,
    create_users,
    make_record,
    migrated_console,
    serving,
)
from qsconsole.sender_lists import HEADER, BadEntry, entry_address, file_text, write_if_changed

ROOT = Path(__file__).resolve().parent.parent
EXPORT = f"""\
import sys
from pathlib import Path
sys.path.insert(0, {str(ROOT / 'lib')!r})
from qsconsole import cli
cli.setup(Path(sys.argv[1]))
from qsconsole.sender_lists import export
print(export(Path(sys.argv[2])))
"""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request, tmp_path_factory):
    """A console with users admin, alice (two addresses) and bob, served on a loopback port."""
    console = migrated_console(request, tmp_path_factory.mktemp(f"lists-{request.param}"), request.param)
    create_users(console, {"alice": ["alice@example.org", "Alice@Other.example"], "bob": ["bob@example.org"]})
    with serving(console) as port:
        yield console, port


def logged_in(port: int, username: str) -> Client:
    client = Client(port)
    assert client.login(username, ADMIN_PASSWORD if username == "admin" else USER_PASSWORD)[0] == 200
    return client


def post_json(client: Client, path: str, body: dict | None = None):
    return client.request("POST", path, json.dumps(body or {}).encode(),
                          {"Content-Type": "application/json", "X-CSRFToken": client.csrf})


def add(client: Client, kind: str, sender: str, recipient: str):
    return post_json(client, "/api/lists", {"kind": kind, "sender": sender, "recipient": recipient})


def entries(client: Client) -> set[tuple[str, str, str]]:
    status, answer, _ = client.get("/api/lists")
    assert status == 200, answer
    return {(entry["kind"], entry["sender"], entry["recipient"]) for entry in answer["entries"]}


def audit_lines(console: Console, action: str) -> list[tuple[str, str, str]]:
    user = "user" if console.database is None else '"user"'
    return console.query(f"SELECT {user}, detail, result FROM console_auditlog WHERE action = '{action}' ORDER BY id")


def clear(console: Console, client: Client) -> None:
    """Remove every entry through the API (each test starts from an empty list)."""
    status, answer, _ = client.get("/api/lists")
    assert status == 200, answer
    for entry in answer["entries"]:
        assert post_json(client, f"/api/lists/{entry['id']}/delete")[0] == 200


def export(console: Console) -> bool:
    """sender_lists.export run by Debian's Python against the console's database, as the loader runs it."""
    done = subprocess.run([SYSTEM_PYTHON, "-c", EXPORT, str(console.data_dir), str(console.spooldir)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip() == "True"


def test_the_lists_need_a_session_and_a_csrf_token(served):
    _, port = served
    anonymous = Client(port)
    assert anonymous.get("/api/lists")[:2] == (401, {"error": "authentication required"})
    assert add(anonymous, "block", "@spam.example", "")[0] in (401, 403)
    admin = logged_in(port, "admin")
    refused = admin.request("POST", "/api/lists", json.dumps({"kind": "block", "sender": "@x.example",
                                                              "recipient": ""}).encode(),
                            {"Content-Type": "application/json"})  # no X-CSRFToken
    assert refused[0] == 403
    assert ("block", "@x.example", "") not in entries(admin)


def test_an_administrator_adds_for_anyone_and_the_same_pair_changes_kind(served):
    console, port = served
    admin = logged_in(port, "admin")
    clear(console, admin)
    status, answer, _ = add(admin, "block", " @Spam.EXAMPLE ", "")
    assert status == 200, answer
    assert answer["entry"]["sender"] == "@spam.example" and answer["entry"]["recipient"] == ""
    assert add(admin, "allow", "Friend@Partner.example", "@Example.org")[0] == 200
    assert add(admin, "block", "x@y.example", "bob@example.org")[0] == 200
    assert add(admin, "allow", "@spam.example", "*")[0] == 200  # "*" is every recipient too: the same pair
    assert entries(admin) == {("allow", "@spam.example", ""), ("allow", "friend@partner.example", "@example.org"),
                              ("block", "x@y.example", "bob@example.org")}
    lines = audit_lines(console, "list-add")
    assert ("admin", "block @spam.example for every recipient", "ok") in lines
    assert ("admin", "allow @spam.example for every recipient (was block)", "ok") in lines


@pytest.mark.parametrize("sender", ["", "no-at-sign", "a b@example.org", "x@", "a@b@c.example", "tab\t@example.org",
                                    "ctl\x01@example.org", "@", "x" * 600 + "@example.org"])
def test_a_sender_that_is_no_address_or_domain_is_refused(served, sender):
    _, port = served
    admin = logged_in(port, "admin")
    before = entries(admin)
    status, answer, _ = add(admin, "block", sender, "")
    assert status == 400 and answer["error"].startswith("sender:"), answer
    assert entries(admin) == before


def test_bad_kinds_bodies_and_recipients_are_refused(served):
    _, port = served
    admin = logged_in(port, "admin")
    before = entries(admin)
    assert add(admin, "whitelist", "a@b.example", "")[0] == 400
    assert add(admin, "block", "a@b.example", "two words@example.org")[0] == 400
    assert post_json(admin, "/api/lists", None)[0] == 400  # {} has no kind
    assert admin.request("POST", "/api/lists", b"not json", {"Content-Type": "application/json",
                                                             "X-CSRFToken": admin.csrf})[0] == 400
    assert admin.request("POST", "/api/lists", b"kind=block", {"Content-Type": "application/x-www-form-urlencoded",
                                                               "X-CSRFToken": admin.csrf})[0] == 415
    assert entries(admin) == before


def test_a_recipient_sees_and_changes_only_entries_for_their_own_addresses(served):
    console, port = served
    admin, alice, bob = (logged_in(port, name) for name in ("admin", "alice", "bob"))
    clear(console, admin)
    assert add(admin, "block", "@global.example", "")[0] == 200
    assert add(admin, "block", "@domainwide.example", "@example.org")[0] == 200
    assert add(bob, "allow", "friend@bob.example", "Bob@Example.org")[0] == 200
    assert add(alice, "block", "@pest.example", "alice@other.example")[0] == 200
    assert entries(alice) == {("block", "@pest.example", "alice@other.example")}
    assert entries(bob) == {("allow", "friend@bob.example", "bob@example.org")}
    # Someone else's address, a domain, every recipient, no recipient: refused, nothing stored.
    for recipient, status in (("bob@example.org", 403), ("@example.org", 400), ("", 400), ("*", 400)):
        assert add(alice, "allow", "evil@spam.example", recipient)[0] == status, recipient
    assert ("alice", "allow evil@spam.example for bob@example.org", "refused") in audit_lines(console, "list-add")
    assert ("allow", "evil@spam.example", "bob@example.org") not in entries(admin)
    # Bob's entry is not Alice's to delete; the global one neither.
    answer = admin.get("/api/lists")[1]
    ids = {(entry["sender"], entry["recipient"]): entry["id"] for entry in answer["entries"]}
    assert post_json(alice, f"/api/lists/{ids[('friend@bob.example', 'bob@example.org')]}/delete")[0] == 404
    assert post_json(alice, f"/api/lists/{ids[('@global.example', '')]}/delete")[0] == 404
    assert post_json(alice, f"/api/lists/{ids[('@pest.example', 'alice@other.example')]}/delete")[0] == 200
    assert entries(admin) == {("block", "@global.example", ""), ("block", "@domainwide.example", "@example.org"),
                              ("allow", "friend@bob.example", "bob@example.org")}
    assert ("alice", "block @pest.example for alice@other.example", "ok") in audit_lines(console, "list-delete")
    assert post_json(admin, "/api/lists/999999/delete")[0] == 404


def test_the_lists_page_prefills_adds_and_removes_with_its_csrf_token(served):
    console, port = served
    admin = logged_in(port, "admin")
    clear(console, admin)
    alice = logged_in(port, "alice")
    query = urllib.parse.urlencode({"sender": 'mallory@"><script>x</script>.example', "recipient": "Alice@Example.org"})
    status, page, headers = alice.get(f"/lists?{query}")
    assert status == 200 and "script-src 'self'" in headers["Content-Security-Policy"]
    assert b"<script>x</script>" not in page and b"&lt;script&gt;x&lt;/script&gt;" in page
    assert b'<option value="alice@example.org" selected>' in page
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
    form = {"kind": "block", "sender": "@Pest.example", "recipient": "alice@example.org"}
    form_headers = {"Content-Type": "application/x-www-form-urlencoded"}
    assert alice.request("POST", "/lists/add", urllib.parse.urlencode(form).encode(), form_headers)[0] == 403
    status, _, answer = alice.request("POST", "/lists/add", urllib.parse.urlencode(
        {**form, "csrfmiddlewaretoken": token}).encode(), form_headers)
    assert (status, answer["Location"]) == (302, "/lists")
    page = alice.get("/lists")[1]
    assert b"Blocked @pest.example for alice@example.org." in page
    [(pk,)] = console.query("SELECT id FROM console_senderlist WHERE sender = '@pest.example'")
    status, _, _ = alice.request("POST", f"/lists/{pk}/delete", urllib.parse.urlencode(
        {"csrfmiddlewaretoken": token}).encode(), form_headers)
    assert status == 302
    assert console.count("console_senderlist") == 0
    assert b'href="/lists"' in alice.get("/")[1]  # the navigation links the page


def test_export_writes_the_scanners_file_once_per_change(served):
    console, port = served
    admin = logged_in(port, "admin")
    clear(console, admin)
    target = console.records / "sender-lists"
    target.unlink(missing_ok=True)
    assert add(admin, "block", "@spam.example", "")[0] == 200
    assert add(admin, "allow", "Friend@Partner.example", "bob@example.org")[0] == 200
    assert add(admin, "allow", "@partner.example", "@example.org")[0] == 200
    assert export(console) is True
    assert target.read_text(encoding="utf-8") == (
        "# qs-console sender lists, version 1\n"
        "allow\t@partner.example\t@example.org\n"
        "allow\tfriend@partner.example\tbob@example.org\n"
        "block\t@spam.example\t*\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    inode = target.stat().st_ino
    assert export(console) is False  # nothing changed: not rewritten
    assert target.stat().st_ino == inode
    assert add(admin, "block", "@partner.example", "@example.org")[0] == 200
    assert export(console) is True
    assert "block\t@partner.example\t@example.org\n" in target.read_text(encoding="utf-8")
    assert target.stat().st_ino != inode  # a new file renamed over the old one
    assert [path.name for path in console.records.iterdir() if path.name.startswith(".sender-lists")] == []


def test_load_once_brings_the_file_in_step_with_the_database(served):
    """End to end: an entry added through the API is in records/sender-lists after `qs-console load --once`."""
    console, port = served
    admin = logged_in(port, "admin")
    clear(console, admin)
    console.run("load", "--once", "--settle", "0")
    target = console.records / "sender-lists"
    assert target.read_text(encoding="utf-8") == HEADER
    assert add(admin, "block", "@junk.example", "bob@example.org")[0] == 200
    console.run("load", "--once", "--settle", "0")
    assert target.read_text(encoding="utf-8") == HEADER + "block\t@junk.example\tbob@example.org\n"


def test_entry_addresses():
    assert entry_address("  User@Example.ORG ", "sender") == "user@example.org"
    assert entry_address("@Example.org", "sender") == "@example.org"
    assert entry_address("\u00fcser@b\u00fccher.example", "sender") == "\u00fcser@b\u00fccher.example"
    for bad in ("", "x", "a@", "@", "a b@c.example", "a@b\nc", "a@b\u2028c", "a@b@c"):
        with pytest.raises(BadEntry):
            entry_address(bad, "sender")
    with pytest.raises(BadEntry):
        entry_address("@example.org", "recipient", domain_allowed=False)


def test_file_text_sorts_and_writes_every_recipient_as_a_star():
    assert file_text([("block", "b@x.example", ""), ("allow", "a@x.example", "r@y.example")]) == (
        HEADER + "allow\ta@x.example\tr@y.example\nblock\tb@x.example\t*\n")
    assert file_text([]) == HEADER


def test_write_if_changed_replaces_whole_files_whatever_the_umask(tmp_path):
    target = tmp_path / "sender-lists"
    old_mask = os.umask(0o077)
    try:
        assert write_if_changed(target, b"first\n") is True
    finally:
        os.umask(old_mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    with open(target, "rb") as reader:  # a scanner that opened the old file keeps reading the old, whole
        assert write_if_changed(target, b"second, longer\n") is True
        assert reader.read() == b"first\n"
    assert target.read_bytes() == b"second, longer\n"
    assert write_if_changed(target, b"second, longer\n") is False
    assert sorted(path.name for path in tmp_path.iterdir()) == ["sender-lists"]


def test_a_message_page_links_to_the_lists_form_for_its_sender(served):
    """The message page's allow/block links carry the sender, and for a recipient user their own address."""
    console, port = served
    record = make_record(7001, sender="Pest&Co@Spam.example", recipients=["Alice@Example.org", "carol@example.org"])
    append_record(console.records, record)
    console.run("load", "--once", "--settle", "0")
    [(pk,)] = console.query(f"SELECT id FROM console_message WHERE record_id = '{record['id']}'")
    sender = urllib.parse.quote("Pest&Co@Spam.example")
    admin_page = logged_in(port, "admin").get(f"/messages/{pk}")[1]
    assert f'href="/lists?kind=block&amp;sender={sender}&amp;recipient="'.encode() in admin_page
    alice_page = logged_in(port, "alice").get(f"/messages/{pk}")[1]
    assert f'href="/lists?kind=allow&amp;sender={sender}&amp;recipient=alice%40example.org"'.encode() in alice_page
    prefilled = logged_in(port, "alice").get(f"/lists?kind=allow&sender={sender}&recipient=alice%40example.org")[1]
    assert b'value="pest&amp;co@spam.example"' in prefilled.lower()
