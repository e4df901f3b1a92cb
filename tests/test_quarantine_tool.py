"""contrib/qs-quarantine: list, show, release through qmail-queue with the original envelope, delete, purge."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from actions_fixtures import envelope_bytes, make_message, make_settings, queued
from qmail_scanner.actions import carry_out
from qmail_scanner.records import Finding, Verdict

pytest_plugins = ("actions_fixtures",)

TOOL = Path(__file__).resolve().parent.parent / "contrib" / "qs-quarantine"
ORIGINAL = b"From: a@example.net\nSubject: the invoice\n\nplease find attached\n"


def tool(spool: Path, *args: str, qmail_queue: str = "/nonexistent") -> subprocess.CompletedProcess:
    argv = [sys.executable, str(TOOL), "--spooldir", str(spool), "--qmail-queue", qmail_queue, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def quarantine_one(tmp_path, kind="policy", reason="Disallowed attachment type .pif", recipients=None) -> str:
    settings = make_settings(tmp_path / "spool", log_details="no")
    recipients = recipients or ("bob@example.org", "carol@example.org")
    message = make_message(settings, ORIGINAL, sender="a@example.net", recipients=recipients)
    verdict = Verdict(action="quarantine", quarantine_kind=kind, reason=reason, findings=[Finding("policy", "x", "")])
    assert carry_out(message, verdict) == 0
    return message.area.message_id


def test_list_shows_id_date_reason_sender_recipients_subject(tmp_path):
    first = quarantine_one(tmp_path)
    second = quarantine_one(tmp_path, "viruses", "Eicar-Test-Signature", ("dave@example.org",))
    result = tool(tmp_path / "spool", "list", "--tab")
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    by_id = {row[0]: row for row in rows}
    assert set(by_id) == {first, second}
    policy_row = ["policy", "Disallowed attachment type .pif", "a@example.net", "bob@example.org,carol@example.org"]
    assert by_id[first][2:] == [*policy_row, "the invoice"]
    assert by_id[second][2:4] == ["viruses", "Eicar-Test-Signature"]
    assert by_id[first][1][:3] in ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    human = tool(tmp_path / "spool", "list", "--kind", "viruses").stdout
    assert "1 quarantined message(s)" in human and second in human and first not in human


def test_show_prints_the_stored_message(tmp_path):
    message_id = quarantine_one(tmp_path)
    result = tool(tmp_path / "spool", "show", message_id)
    assert result.stdout.startswith("X-QS-Envelope-Client: ")
    assert result.stdout.endswith(ORIGINAL.decode())
    assert "please find" not in tool(tmp_path / "spool", "show", message_id, "--headers").stdout


def test_release_round_trip_keeps_the_envelope(tmp_path, standin_binary, queue_dir):
    message_id = quarantine_one(tmp_path)
    result = tool(tmp_path / "spool", "release", message_id, qmail_queue=standin_binary)
    assert result.returncode == 0, result.stderr
    assert f"released {message_id}" in result.stdout
    [(message, envelope)] = queued(queue_dir)
    assert envelope == envelope_bytes("a@example.net", ["bob@example.org", "carol@example.org"])
    first_line, rest = message.split(b"\n", 1)
    assert first_line.startswith(b"X-Qmail-Scanner-Released: ")
    assert b"from quarantine/policy by " in first_line and b"(Disallowed attachment type .pif)" in first_line
    assert rest == ORIGINAL
    listing = tool(tmp_path / "spool", "list", "--tab").stdout
    assert "policy (released)" in listing
    assert not list((tmp_path / "spool" / "quarantine" / "policy" / "new").iterdir())


def test_failed_release_keeps_the_message(tmp_path, standin_binary, queue_dir, monkeypatch):
    message_id = quarantine_one(tmp_path)
    monkeypatch.setenv("QQ_STANDIN_EXIT", "71")
    result = tool(tmp_path / "spool", "release", message_id, qmail_queue=standin_binary)
    assert result.returncode == 1 and "exited 71, not released" in result.stderr
    assert len(list((tmp_path / "spool" / "quarantine" / "policy" / "new").iterdir())) == 1


def test_delete_and_unknown_ids(tmp_path):
    message_id = quarantine_one(tmp_path)
    assert tool(tmp_path / "spool", "delete", message_id).returncode == 0
    assert tool(tmp_path / "spool", "list", "--tab").stdout == ""
    missing = tool(tmp_path / "spool", "delete", message_id)
    assert missing.returncode == 1 and "no quarantined message" in missing.stderr
    sneaky = tool(tmp_path / "spool", "show", "../../../etc/passwd")
    assert sneaky.returncode == 1 and "not a quarantine id" in sneaky.stderr


def test_purge_removes_only_old_messages(tmp_path):
    old = quarantine_one(tmp_path)
    new = quarantine_one(tmp_path)
    old_path = tmp_path / "spool" / "quarantine" / "policy" / "new" / old
    ten_days_ago = time.time() - 10 * 86400
    os.utime(old_path, (ten_days_ago, ten_days_ago))
    result = tool(tmp_path / "spool", "purge", "--days", "7")
    assert "purged 1 message(s)" in result.stdout
    assert [line.split("\t")[0] for line in tool(tmp_path / "spool", "list", "--tab").stdout.splitlines()] == [new]


# What mail can carry to an administrator's terminal: CSI colour and erase, OSC 52 (set the clipboard) ended
# by BEL and by ST, a CR that overwrites the line, the RTL override, C1 CSI (U+009B and a lone 0x9b byte),
# line separator; and the same hidden in an RFC 2047 encoded word, which reaches the listing decoded.
TERMINAL_ATTACKS = (
    "\x1b[31mred\x1b[0m \x1b[2J\x1b]52;c;ZXZpbA==\x07 \x1b]0;title\x1b\\ fake\rline \u202eexe.txt \u009b2J a\u2028b"
)
HOSTILE_SUBJECT = TERMINAL_ATTACKS.encode() + b" raw\x9bC1 =?UTF-8?B?" + __import__("base64").b64encode(
    b"\x1b]52;c;ZXZpbA==\x07 encoded \xe2\x80\xae"
) + b"?="  # fmt: skip
HOSTILE_SENDER = "a\x1b[8m@example.net\u202e"
HOSTILE_RECIPIENT = "bob\x1b]52;c;eA==\x07@example.org"


def terminal_safe(output: bytes) -> None:
    """No byte below 0x20 but the line's own newline and TAB separators, no DEL, no C1, no bidi override."""
    text = output.decode("utf-8")  # the output itself is valid UTF-8
    assert not [c for c in text if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F], repr(text[:300])
    assert "\u202e" not in text and "\u2028" not in text and b"\x9b" not in output.replace("\u009b".encode(), b"")


def test_listing_and_showing_hostile_mail_sends_no_control_to_the_terminal(tmp_path, standin_binary, queue_dir):
    settings = make_settings(tmp_path / "spool", log_details="no", qmail_queue_binary=standin_binary)
    raw = b"From: a@example.net\nSubject: " + HOSTILE_SUBJECT + b"\n\tfolded \x1b[1mpart\n\nbody \x1b[2J\x07 \x9b\n"
    message = make_message(settings, raw, sender=HOSTILE_SENDER, recipients=(HOSTILE_RECIPIENT,))
    reason = "Disallowed attachment \x1b]52;c;ZXZpbA==\x07.pif"
    verdict = Verdict(
        action="quarantine", quarantine_kind="policy", reason=reason, findings=[Finding("policy", "x", "")]
    )
    assert carry_out(message, verdict) == 0
    message_id = message.area.message_id
    spool = tmp_path / "spool"
    argv = [sys.executable, str(TOOL), "--spooldir", str(spool), "--qmail-queue", standin_binary]
    outputs = {}
    for command in (["list"], ["list", "--tab"], ["show", message_id], ["show", message_id, "--headers"],
                    ["release", message_id]):  # fmt: skip
        result = subprocess.run([*argv, *command], capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr
        terminal_safe(result.stdout)
        terminal_safe(result.stderr)
        outputs[" ".join(word for word in command if word != message_id)] = result.stdout.decode()
    [row] = [line.split("\t") for line in outputs["list --tab"].rstrip("\n").split("\n")]
    assert len(row) == 7  # no field split the row
    assert row[4] == "a\\x1b[8m@example.net\\u202e"
    assert row[5] == "bob\\x1b]52;c;eA==\\x07@example.org"
    assert row[3].startswith("Disallowed attachment ") and row[3].endswith(".pif")  # the program wrote it one line
    subject = row[6]
    assert subject.startswith(
        "\\x1b[31mred\\x1b[0m \\x1b[2J\\x1b]52;c;ZXZpbA==\\x07 \\x1b]0;title\\x1b\\ fake\\x0dline"
    )
    assert "\\u202eexe.txt \\x9b2J a\\u2028b" in subject
    assert "\\x1b]52;c;ZXZpbA==\\x07 encoded \\u202e" in subject  # decoded, then made visible
    assert subject.endswith("folded \\x1b[1mpart")
    assert "subject: \\x1b[31mred" in outputs["list"]
    shown = outputs["show"]
    assert "body \\x1b[2J\\x07 \\x9b\n" in shown and "\nSubject: \\x1b[31mred" in shown
    assert "body" not in outputs["show --headers"]
    assert "released " + message_id + " to bob\\x1b]52;c;eA==\\x07@example.org" in outputs["release"]
    [(released, envelope)] = queued(queue_dir)
    assert envelope == envelope_bytes(HOSTILE_SENDER, [HOSTILE_RECIPIENT])  # the envelope is released as it was
    assert released.split(b"\n", 1)[1] == raw and b"\x1b" not in released.split(b"\n", 1)[0]


def test_show_raw_writes_the_stored_bytes(tmp_path):
    settings = make_settings(tmp_path / "spool", log_details="no")
    raw = b"Subject: \x1b[31mred\n\nbody \x9b\x07\n"
    message = make_message(settings, raw)
    verdict = Verdict(action="quarantine", quarantine_kind="policy", reason="r", findings=[Finding("policy", "x", "")])
    assert carry_out(message, verdict) == 0
    argv = [sys.executable, str(TOOL), "--spooldir", str(tmp_path / "spool"), "show", message.area.message_id, "--raw"]
    assert subprocess.run(argv, capture_output=True, timeout=60).stdout.endswith(raw)
