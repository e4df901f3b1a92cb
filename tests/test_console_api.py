"""The console's JSON API served by `qs-console serve` (waitress): sessions, CSRF, search, and roles, on SQLite and
on a private PostgreSQL."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from console_fixtures import (
    ADMIN_PASSWORD,
    USER_PASSWORD,
    Client,
    append_record,
    create_users,
    make_record,
    migrated_console,
    serving,
)

T0 = 1_733_000_000.0
HOSTILE_SUBJECT = "Invoice <script>alert(1)</script> \u202e"
QUARANTINED = {1: "1733000001.4242.mx1"}
LIST_KEYS = {"id", "time", "host", "sender", "recipients", "subject", "outcome", "reason", "quarantine_id"}
MESSAGES = {
    # number: (sender, recipients, outcome, host, client_ip, subject)
    1: ("spam@bad.example", ["Alice@Example.org"], "quarantined", "mx1", "198.51.100.7", HOSTILE_SUBJECT),
    2: ("friend@good.example", ["bob@example.org"], "delivered", "mx2", "192.0.2.20", "lunch"),
    3: ("news@good.example", ["alice@other.example", "bob@example.org"], "rejected", "mx1", "192.0.2.30", "news"),
    4: ("x@y.example", ["carol@example.org"], "delivered", "mx2", "192.0.2.40", "for carol"),
}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request, tmp_path_factory):
    """A console with users admin, alice, bob and the MESSAGES loaded, served on a loopback port."""
    console = migrated_console(request, tmp_path_factory.mktemp(f"console-{request.param}"), request.param)
    settings = json.loads((console.data_dir / "console.json").read_text())
    (console.data_dir / "console.json").write_text(json.dumps({**settings, "remote_answer_seconds": 1}))
    create_users(console, {"alice": ["alice@example.org", "ALICE@other.example"], "bob": ["bob@example.org"]})
    for number, (sender, recipients, outcome, host, client_ip, subject) in MESSAGES.items():
        append_record(console.records, make_record(number, host=host, time=T0 + number, sender=sender,
                                                   recipients=recipients, outcome=outcome, client_ip=client_ip,
                                                   subject=subject, quarantine_id=QUARANTINED.get(number, "")))
    console.run("load", "--once", "--settle", "0")
    ids = {number: int(console.query(f"SELECT id FROM console_message WHERE record_id = "
                                     f"'{make_record(number, host=MESSAGES[number][3])['id']}'")[0][0])
           for number in MESSAGES}
    with serving(console) as port:
        yield console, port, ids


def numbers(answer, ids: dict[int, int]) -> list[int]:
    """The MESSAGES numbers of a list answer, in its order."""
    by_id = {pk: number for number, pk in ids.items()}
    return [by_id[item["id"]] for item in answer["messages"]]


def test_every_endpoint_but_login_needs_a_session(served):
    _, port, ids = served
    anonymous = Client(port)
    for path in ("/api/messages", f"/api/messages/{ids[1]}", "/api/messages/999999", "/api/me",
                 "/api/messages?outcome=quarantined"):
        status, body, _ = anonymous.get(path)
        assert (status, body) == (401, {"error": "authentication required"}), path
    # An unsafe request without a session is refused before anything else (CSRF or authentication).
    assert anonymous.request("POST", "/api/logout")[0] in (401, 403)


def test_login_sets_a_session_cookie_that_scripts_and_other_sites_do_not_get(served):
    console, port, _ = served
    client = Client(port)
    assert client.login("admin", "wrong password")[0] == 401
    assert client.login("nobody", ADMIN_PASSWORD)[0] == 401
    status, body, headers = client.login("admin", ADMIN_PASSWORD)
    assert status == 200
    assert body["role"] == "admin"
    session = [header for header in headers.get_all("Set-Cookie") if header.startswith("qsconsole_session=")]
    assert len(session) == 1
    flags = {flag.strip().lower() for flag in session[0].split(";")[1:]}
    assert "httponly" in flags and "samesite=lax" in flags
    assert client.get("/api/me")[1] == {"username": "admin", "role": "admin", "addresses": []}
    refused = console.query("SELECT user, result FROM console_auditlog WHERE action = 'login' ORDER BY id"
                            if console.database is None else
                            "SELECT \"user\", result FROM console_auditlog WHERE action = 'login' ORDER BY id")
    assert ("admin", "refused") in refused and ("nobody", "refused") in refused and ("admin", "ok") in refused


def test_login_takes_only_json(served):
    """A cross-site HTML form can only send form encodings: login refuses them, so no CSRF token is needed there."""
    _, port, _ = served
    client = Client(port)
    form = urllib.parse.urlencode({"username": "admin", "password": ADMIN_PASSWORD}).encode()
    status, _, _ = client.request("POST", "/api/login", form, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415
    assert "qsconsole_session" not in client.cookies
    assert client.request("GET", "/api/login")[0] == 405


def test_an_administrator_lists_every_message_newest_first(served):
    _, port, ids = served
    client = Client(port)
    client.login("admin", ADMIN_PASSWORD)
    status, answer, headers = client.get("/api/messages")
    assert status == 200
    assert numbers(answer, ids) == [4, 3, 2, 1]
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Content-Type-Options"] == "nosniff"
    first = answer["messages"][-1]
    assert set(first) >= LIST_KEYS
    assert (first["subject"], first["sender"], first["recipients"], first["outcome"], first["time"], first["host"]) == (
        HOSTILE_SUBJECT, "spam@bad.example", ["Alice@Example.org"], "quarantined", T0 + 1, "mx1")


@pytest.mark.parametrize(("query", "expected"), [
    ({"outcome": "quarantined"}, [1]),
    ({"outcome": "delivered,rejected"}, [4, 3, 2]),
    ({"sender": "SPAM@Bad.Example"}, [1]),
    ({"sender": "@good.example"}, [3, 2]),
    ({"recipient": "bob@example.org"}, [3, 2]),
    ({"recipient": "alice@example.org"}, [1]),
    ({"recipient": "@example.org"}, [4, 3, 2, 1]),
    ({"q": "INVOICE"}, [1]),
    ({"host": "mx2"}, [4, 2]),
    ({"client_ip": "192.0.2.30"}, [3]),
    ({"since": str(T0 + 2), "until": str(T0 + 4)}, [3, 2]),
    ({"since": "2024-11-30T20:53:23"}, [4, 3]),
    ({"host": "mx1", "outcome": "rejected", "recipient": "@other.example"}, [3]),
    ({"limit": "2"}, [4, 3]),
    ({"sender": "nobody@nowhere.example"}, []),
    ({"q": "<SCRIPT>"}, [1]),
    ({"q": "lun"}, [2]),
    ({"q": "nc"}, [2]),  # under 3 characters no trigram index helps: LIKE alone
    ({"q": "\u202e"}, [1]),
    ({"q": '"'}, []),
    ({"q": "%"}, []),
    ({"q": "r carol"}, [4]),
])
def test_search(served, query, expected):
    _, port, ids = served
    client = Client(port)
    client.login("admin", ADMIN_PASSWORD)
    status, answer, _ = client.get("/api/messages", **query)
    assert status == 200, answer
    assert numbers(answer, ids) == expected


def test_a_query_it_cannot_read_is_a_400(served):
    _, port, _ = served
    client = Client(port)
    client.login("admin", ADMIN_PASSWORD)
    assert client.get("/api/messages", since="last tuesday")[0] == 400
    assert client.get("/api/messages", limit="many")[0] == 400


def test_a_recipient_sees_only_mail_addressed_to_them(served):
    _, port, ids = served
    alice = Client(port)
    assert alice.login("alice", USER_PASSWORD)[1]["role"] == "recipient"
    assert numbers(alice.get("/api/messages")[1], ids) == [3, 1]
    # A filter narrows what she may see, never widens it.
    assert numbers(alice.get("/api/messages", recipient="bob@example.org")[1], ids) == [3]
    assert numbers(alice.get("/api/messages", outcome="delivered")[1], ids) == []
    status, detail, _ = alice.get(f"/api/messages/{ids[1]}")
    assert status == 200
    assert detail["subject"] == HOSTILE_SUBJECT and detail["quarantine_id"] == QUARANTINED[1]
    for other in (2, 4):
        assert alice.get(f"/api/messages/{ids[other]}")[:2] == (404, {"error": "no such message"})
    bob = Client(port)
    bob.login("bob", USER_PASSWORD)
    assert numbers(bob.get("/api/messages")[1], ids) == [3, 2]
    assert bob.get(f"/api/messages/{ids[1]}")[0] == 404


def test_a_message_detail_has_every_field_of_its_record(served):
    _, port, ids = served
    client = Client(port)
    client.login("admin", ADMIN_PASSWORD)
    status, detail, _ = client.get(f"/api/messages/{ids[3]}")
    assert status == 200
    record = make_record(3, host="mx1")
    for key in ("queue_id", "helo", "message_id", "size", "scanners", "spam_score", "attachments", "trace",
                "readings", "skipped", "rule", "kind", "quarantine_dir", "auth_user", "spam_tagged"):
        assert detail[key] == record[key], key
    assert (detail["record_id"], detail["client_ip"], detail["recipients"]) == (
        record["id"], "192.0.2.30", ["alice@other.example", "bob@example.org"])
    assert client.get("/api/messages/999999")[0] == 404


def test_logout_needs_the_csrf_token(served):
    _, port, _ = served
    client = Client(port)
    client.login("admin", ADMIN_PASSWORD)
    assert client.request("POST", "/api/logout")[0] == 403
    assert client.get("/api/messages")[0] == 200
    assert client.request("POST", "/api/logout", headers={"X-CSRFToken": "forged" * 8})[0] == 403
    assert client.request("POST", "/api/logout", headers={"X-CSRFToken": client.csrf})[0] == 200
    assert client.get("/api/messages")[0] == 401


def test_a_release_is_refused_when_this_console_cannot_reach_the_quarantine(served):
    """Message 1 is held on mx1, not this machine, and no loader of mx1 answers: an audit line; a recipient may not
    release at all. On SQLite (one host) a 409 at once; on PostgreSQL the request waits remote_answer_seconds for mx1's
    loader, then a 504."""
    console, port, ids = served
    alice = Client(port)
    alice.login("alice", USER_PASSWORD)
    assert alice.request("POST", f"/api/messages/{ids[1]}/release", headers={"X-CSRFToken": alice.csrf})[0] == 403
    admin = Client(port)
    admin.login("admin", ADMIN_PASSWORD)
    status, answer, _ = admin.request("POST", f"/api/messages/{ids[1]}/release", headers={"X-CSRFToken": admin.csrf})
    if console.database is None:
        assert status == 409 and answer["error"].startswith("held on mx1:")
    else:
        assert status == 504 and answer["error"] == "mx1 has not answered (is its qs-console load running?)"
        assert console.query("SELECT host, verb, state, detail FROM console_actionrequest") == [
            ("mx1", "release", "failed", answer["error"])]
    assert admin.request("POST", "/api/messages/999999/release", headers={"X-CSRFToken": admin.csrf})[0] == 404
    user_column = "user" if console.database is None else '"user"'
    assert ("admin", "release", "refused") in console.query(
        f"SELECT {user_column}, action, result FROM console_auditlog WHERE action = 'release'")


def test_a_request_for_another_host_name_is_refused(served):
    """Only the names in console.json's allowed_hosts (and the --listen host) are served: no Host-header games."""
    _, port, _ = served
    client = Client(port)
    assert client.request("GET", "/api/me", headers={"Host": "evil.example"})[0] == 400
    assert client.request("GET", "/api/me", headers={"Host": f"localhost:{port}"})[0] == 401
