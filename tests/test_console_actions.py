"""Actions on a quarantined message through the console's API: release to one address, delete, download, learn as
spam or ham. The quarantine is real (the installed program, the test bed's qmail-queue stand-in, the installation's
qs-quarantine) and so is the learning (a private `spamd --allow-tell`, reached with spamc)."""

from __future__ import annotations

import json

import pytest

from console_actions_fixtures import MALLORY, start_held_site
from console_fixtures import Client, api_answers, stop, wait_for
from daemons import spamd_server_fixture  # noqa: F401 - fixture
from harness import envelope

TWO = "for carol and dave"
GONE = "to be deleted"
LEARNT = "to be learnt"
MESSAGES = {TWO: ("carol@example.com", "dave@example.com"), GONE: ("bob@example.com",), LEARNT: ("carol@example.com",)}


@pytest.fixture(scope="module")
def site(make_installation, tmp_path_factory):
    made = start_held_site(make_installation(fresh=True), tmp_path_factory.mktemp("actions") / "console", MESSAGES)
    yield made
    made.stop()


def post(client, path: str, body: dict | None = None):
    """A POST with the client's CSRF token and, when given, a JSON body."""
    headers = {"X-CSRFToken": client.csrf}
    if body is not None:
        headers["Content-Type"] = "application/json"
    return client.request("POST", path, None if body is None else json.dumps(body).encode(), headers)


def audit(site, pk: int) -> list[tuple]:
    return site.console.query(
        f"SELECT action, result, detail FROM console_auditlog WHERE message_id = {pk} ORDER BY id")


def state(site, pk: int) -> str:
    return site.console.query(f"SELECT state FROM console_message WHERE id = {pk}")[0][0]


def test_release_to_one_original_recipient_arrives_only_there(site):
    pk, quarantine_id = site.held[TWO]
    admin = site.admin()
    before = set(site.installation.sink.glob("*.msg"))
    status, answer, _ = post(admin, f"/api/messages/{pk}/release", {"to": "eve@example.org"})
    assert status == 400 and "original recipients" in answer["error"]
    assert set(site.installation.sink.glob("*.msg")) == before
    status, answer, _ = post(admin, f"/api/messages/{pk}/release", {"to": "Dave@Example.com"})
    assert status == 200, answer
    assert answer["released"] is True and answer["detail"] == f"released {quarantine_id} to Dave@Example.com"
    [queued] = set(site.installation.sink.glob("*.msg")) - before
    assert queued.with_suffix(".env").read_bytes() == envelope(MALLORY, "Dave@Example.com")
    assert queued.read_bytes().startswith(b"X-Qmail-Scanner-Released: ")
    # Carol's copy is still held: the stored file stays unreleased, the record's state unchanged.
    assert site.stored(quarantine_id).parent.name == "new" and state(site, pk) in ("", None)
    assert audit(site, pk) == [
        ("release-to", "refused", "release to one of the message's original recipients only"),
        ("release-to", "ok", f"to Dave@Example.com: released {quarantine_id} to Dave@Example.com")]
    assert post(admin, f"/api/messages/{pk}/release", {"to": 7})[0] == 400
    assert admin.request("POST", f"/api/messages/{pk}/release", b"to=x", {
        "X-CSRFToken": admin.csrf, "Content-Type": "application/x-www-form-urlencoded"})[0] == 400


def test_download_returns_the_exact_stored_bytes(site):
    pk, quarantine_id = site.held[TWO]
    status, data, headers = site.admin().get(f"/api/messages/{pk}/download")
    assert status == 200
    assert data == site.stored(quarantine_id).read_bytes() and data.startswith(b"X-QS-Envelope")
    assert headers["Content-Type"] == "message/rfc822"
    assert headers["Content-Disposition"] == f'attachment; filename="{quarantine_id}.eml"'
    assert headers["Cache-Control"] == "no-store" and headers["X-Content-Type-Options"] == "nosniff"
    assert audit(site, pk)[-1] == ("download", "ok", f"{len(data)} bytes")


def test_delete_removes_the_stored_copy_and_later_actions_answer_410(site):
    pk, quarantine_id = site.held[GONE]
    admin = site.admin()
    assert quarantine_id in site.listed()
    status, answer, _ = post(admin, f"/api/messages/{pk}/delete")
    assert status == 200 and answer["detail"] == f"deleted {quarantine_id}" and answer["state"] == "deleted"
    assert quarantine_id not in site.listed() and site.stored(quarantine_id) is None
    assert state(site, pk) == "deleted"
    before = set(site.installation.sink.glob("*.msg"))
    assert post(admin, f"/api/messages/{pk}/release")[0] == 410
    assert admin.get(f"/api/messages/{pk}/download")[0] == 410
    assert post(admin, f"/api/messages/{pk}/learn", {"as": "spam"})[0] == 410
    assert post(admin, f"/api/messages/{pk}/delete")[0] == 410
    assert set(site.installation.sink.glob("*.msg")) == before
    assert [line[:2] for line in audit(site, pk)] == [
        ("delete", "ok"), ("release", "refused"), ("download", "refused"), ("learn-spam", "refused"),
        ("delete", "refused")]
    assert audit(site, pk)[1][2] == "the quarantined copy was deleted"


def test_learning_through_spamd_says_learned_then_already_learned(site):
    pk, _ = site.held[LEARNT]
    admin = site.admin()
    path = f"/api/messages/{pk}/learn"
    status, answer, _ = post(admin, path, {"as": "spam"})
    assert status == 200, answer
    assert answer["detail"] == "learned as spam (spamc: Message successfully un/learned)"
    status, answer, _ = post(admin, path, {"as": "spam"})
    assert status == 200 and answer["detail"] == "already learned as spam (spamc: Message was already un/learned)"
    # Told the opposite, spamd's Bayes moves the message over (a new lesson, not a repeat).
    status, answer, _ = post(admin, path, {"as": "ham"})
    assert status == 200 and answer["detail"].startswith("learned as ham")
    assert post(admin, path, {"as": "eggs"})[0] == 400
    assert post(admin, path)[0] == 400
    assert [line[:2] for line in audit(site, pk)] == [("learn-spam", "ok"), ("learn-spam", "ok"), ("learn-ham", "ok")]
    assert "Tell: Setting local" in site.spamd.log_path.read_text(errors="replace")
    assert state(site, pk) in ("", None)  # learning leaves the copy held


def test_a_recipient_may_do_none_of_it(site):
    bob = site.bob()
    mine, theirs = site.held[GONE][0], site.held[LEARNT][0]
    for pk in (mine, theirs):  # 403 either way: the API does not say whether another's message exists
        assert post(bob, f"/api/messages/{pk}/release")[0] == 403
        assert post(bob, f"/api/messages/{pk}/release", {"to": "bob@example.com"})[0] == 403
        assert post(bob, f"/api/messages/{pk}/delete")[0] == 403
        assert post(bob, f"/api/messages/{pk}/learn", {"as": "ham"})[0] == 403
        assert bob.get(f"/api/messages/{pk}/download")[0] == 403
    refused = site.console.query(
        "SELECT action, result, user, detail FROM console_auditlog WHERE user = 'bob' AND action != 'login'")
    assert sorted(refused) == sorted(
        (action, "refused", "bob", "only an administrator acts on quarantined mail")
        for action in ("release", "release-to", "delete", "learn-ham", "download"))  # only on bob's own message
    # Without a session or the CSRF token: nothing.
    pk = site.held[LEARNT][0]
    anonymous = Client(site.port)
    assert anonymous.request("POST", f"/api/messages/{pk}/delete")[0] in (401, 403)
    assert anonymous.get(f"/api/messages/{pk}/download")[0] == 401
    assert site.admin().request("POST", f"/api/messages/{pk}/delete")[0] == 403
    assert site.stored(site.held[LEARNT][1]) is not None


def test_learning_fails_plainly_when_spamd_does_not_allow_tell(site, spamd_server):
    """spamd without --allow-tell refuses TELL; spamc -L then prints nothing: the answer names its exit code."""
    pk, _ = site.held[LEARNT]
    config = site.console.data_dir / "console.json"
    saved = config.read_text()
    config.write_text(json.dumps({**json.loads(saved), "spamc": ["spamc", "-U", spamd_server.socket_path]}))
    stop(site.server)
    site.server = site.console.start("serve", "--listen", f"127.0.0.1:{site.port}",
                                     env={"QQ_STANDIN_DIR": str(site.installation.sink)})
    try:
        wait_for(lambda: api_answers(site.port), 30, "qs-console serve")
        status, answer, _ = post(site.admin(), f"/api/messages/{pk}/learn", {"as": "spam"})
        assert status == 502 and answer["error"] == "the learn-spam failed"
        assert answer["detail"] == (f"failed: spamc -U {spamd_server.socket_path} -L spam exited 74 (is spamd "
                                    "reachable and run with --allow-tell?)")
        assert audit(site, pk)[-1] == ("learn-spam", "failed", answer["detail"])
    finally:
        config.write_text(saved)
