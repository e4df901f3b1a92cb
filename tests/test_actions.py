"""What happens to a message after the verdict: delivered, quarantined, dropped, archived."""

from __future__ import annotations

import base64
import os

import pytest

from actions_fixtures import envelope_bytes, maildir_files, make_message, make_settings, queued
from qmail_scanner.actions import carry_out, split_header_block
from qmail_scanner.records import Finding, ScanResult, Verdict
from qmail_scanner.settings import ScannerConfig

PLAIN = (
    b"Received: from client by mx (qmail)\n"
    b"From: Alice <alice@example.net>\n"
    b"To: bob@example.org\n"
    b"Subject: lunch\n"
    b"Message-ID: <m1@example.net>\n"
    b"\n"
    b"See you at noon.\n"
)

FORGED = (
    b"From: Mallory <m@example.net>\n"
    b"X-Qmail-Scanner: 2.08 (Clear:RC:1(127.0.0.1):. Processed in 0.01 secs)\n"
    b"X-Qmail-Scanner-Diagnostics: from trusted\n"
    b"\tby the real scanner, all clean\n"
    b"x-qmail-scanner-mail-from : nobody\n"
    b"X-Spam-Status: No, hits=-100\n"
    b"X-Spam-Flag: NO\n"
    b"Subject: cheap\n"
    b"\n"
    b"body X-Qmail-Scanner: stays in the body\n"
)


def header_block(message: bytes) -> bytes:
    return message[: message.index(b"\n\n") + 1]


def test_clean_message_is_queued_with_trace_header_and_body_unchanged(tmp_path, standin_binary, queue_dir):
    settings = make_settings(tmp_path / "spool", qmail_queue_binary=standin_binary)
    message = make_message(settings, PLAIN, recipients=("bob@example.org", "carol@example.org"))
    assert carry_out(message, Verdict()) == 0
    [(delivered, envelope)] = queued(queue_dir)
    assert envelope == envelope_bytes("alice@example.net", ["bob@example.org", "carol@example.org"])
    assert delivered.startswith(b"X-Qmail-Scanner-Diagnostics: from client.example.net (192.0.2.7) by mx.example.org")
    assert delivered.endswith(PLAIN)
    assert b"Clear:RC:0(192.0.2.7):" in delivered


def test_queue_failure_exit_code_is_passed_through(tmp_path, standin_binary, queue_dir, monkeypatch):
    monkeypatch.setenv("QQ_STANDIN_EXIT", "53")
    settings = make_settings(tmp_path / "spool", qmail_queue_binary=standin_binary)
    assert carry_out(make_message(settings, PLAIN), Verdict()) == 53
    assert queued(queue_dir) == []


def test_descriptive_headers_replace_forged_ones(tmp_path, standin_binary, queue_dir):
    spam = ScannerConfig(name="spamd", kind="spam")
    settings = make_settings(
        tmp_path / "spool", qmail_queue_binary=standin_binary, add_dscr_hdrs="all", scanners=(spam,)
    )
    message = make_message(settings, FORGED, sender="m@example.net", environ={"TCPREMOTEIP": "198.51.100.1"})
    verdict = Verdict(add_headers=[("X-Spam-Status", "Yes, hits=7.3 required=5.0")])
    assert carry_out(message, verdict) == 0
    [(delivered, _)] = queued(queue_dir)
    headers = header_block(delivered).decode()
    assert "all clean" not in headers and "hits=-100" not in headers and "nobody" not in headers
    assert "X-Spam-Flag" not in headers
    assert headers.count("X-Qmail-Scanner:") == 1
    assert "X-Qmail-Scanner: 2.0.0 (Clear:RC:0(198.51.100.1):. Processed in " in headers
    assert "X-Qmail-Scanner-Mail-From: m@example.net via mx.example.org\n" in headers
    assert "X-Qmail-Scanner-Rcpt-To: bob@example.org\n" in headers
    assert f"X-Qmail-Scanner-Message-ID: <{message.area.message_id}@mx.example.org>\n" in headers
    assert "X-Spam-Status: Yes, hits=7.3 required=5.0\n" in headers
    assert "From: Mallory <m@example.net>\nSubject: cheap\n" in headers
    assert delivered.endswith(b"\nbody X-Qmail-Scanner: stays in the body\n")


def test_rcpt_to_header_only_with_all_and_custom_header_name(tmp_path, standin_binary, queue_dir):
    settings = make_settings(
        tmp_path / "spool", qmail_queue_binary=standin_binary, add_dscr_hdrs="yes", dscr_hdrs_text="X-Scanned"
    )
    forged = b"X-Scanned: clean\nSubject: x\n\nbody\n"
    assert carry_out(make_message(settings, forged), Verdict()) == 0
    [(delivered, _)] = queued(queue_dir)
    headers = header_block(delivered).decode()
    assert "X-Scanned: clean" not in headers
    assert "X-Scanned-Mail-From:" in headers and "X-Scanned-Rcpt-To" not in headers
    assert "X-Scanned: 2.0.0 (Clear:" in headers


def test_spam_headers_kept_when_no_spam_scanner_is_configured(tmp_path, standin_binary, queue_dir):
    settings = make_settings(tmp_path / "spool", qmail_queue_binary=standin_binary)
    assert carry_out(make_message(settings, FORGED), Verdict()) == 0
    [(delivered, _)] = queued(queue_dir)
    assert b"X-Spam-Flag: NO\n" in delivered
    assert b"all clean" not in delivered  # the diagnostics header is always ours


def test_subject_tag_is_added_once(tmp_path, standin_binary, queue_dir):
    settings = make_settings(tmp_path / "spool", qmail_queue_binary=standin_binary)
    tagged = Verdict(scan_results=[ScanResult(scanner="spamd", subject_tag="[SPAM]")])
    assert carry_out(make_message(settings, PLAIN), tagged) == 0
    assert carry_out(make_message(settings, PLAIN.replace(b"lunch", b"[SPAM] lunch")), tagged) == 0
    assert carry_out(make_message(settings, b"From: a@b\n\nno subject\n"), tagged) == 0
    first, second, third = (m for m, _ in queued(queue_dir))
    assert b"\nSubject: [SPAM] lunch\n" in first
    assert b"\nSubject: [SPAM] lunch\n" in second and b"[SPAM] [SPAM]" not in second
    assert b"\nSubject: [SPAM]\n\nno subject\n" in third


def test_verbose_spam_mode_delivers_the_rewritten_message(tmp_path, standin_binary, queue_dir):
    spam = ScannerConfig(name="spamd", kind="spam")
    settings = make_settings(tmp_path / "spool", qmail_queue_binary=standin_binary, scanners=(spam,))
    message = make_message(settings, PLAIN)
    rewritten = os.path.join(message.area.unpack_dir, "spamd-rewritten")
    with open(rewritten, "wb") as handle:
        handle.write(b"X-Spam-Flag: YES\nX-Spam-Level: *******\nSubject: lunch\n\nSpam detection report...\n")
    result = ScanResult(scanner="spamd", replacement_path=rewritten, spam_score=7.0, spam_required=5.0)
    assert carry_out(message, Verdict(scan_results=[result])) == 0
    [(delivered, _)] = queued(queue_dir)
    assert b"X-Spam-Flag: YES\nX-Spam-Level: *******\n" in delivered
    assert delivered.endswith(b"\n\nSpam detection report...\n")


def test_replacement_outside_the_work_dir_is_refused(tmp_path, standin_binary, queue_dir):
    settings = make_settings(tmp_path / "spool", qmail_queue_binary=standin_binary)
    result = ScanResult(scanner="spamd", replacement_path="/etc/passwd")
    with pytest.raises(Exception, match="outside the work dir"):
        carry_out(make_message(settings, PLAIN), Verdict(scan_results=[result]))
    assert queued(queue_dir) == []


def quarantine_verdict(kind: str = "viruses", reason: str = "Eicar-Test-Signature") -> Verdict:
    finding = Finding(kind="virus" if kind == "viruses" else kind, rule=reason, reason=reason)
    return Verdict(action="quarantine", quarantine_kind=kind, reason=reason, findings=[finding])


def test_quarantine_keeps_message_and_envelope(tmp_path, standin_binary, queue_dir):
    settings = make_settings(tmp_path / "spool", qmail_queue_binary=standin_binary, log_details="no")
    recipients = ("bob@example.org", "carol@example.org")
    message = make_message(settings, PLAIN, recipients=recipients, environ={"TCPREMOTEIP": "203.0.113.9"})
    assert carry_out(message, quarantine_verdict()) == 0
    assert queued(queue_dir) == []
    [stored] = maildir_files(tmp_path / "spool" / "quarantine" / "viruses")
    assert stored.name == message.area.message_id
    assert oct(stored.stat().st_mode & 0o777) == "0o600"
    content = stored.read_bytes()
    assert content.endswith(PLAIN)
    headers = content[: -len(PLAIN)].decode()
    assert "X-QS-Envelope-From: <alice@example.net>\n" in headers
    assert "X-QS-Envelope-To: <bob@example.org>\nX-QS-Envelope-To: <carol@example.org>\n" in headers
    assert "X-QS-Envelope-Client-IP: 203.0.113.9\n" in headers
    assert "X-QS-Envelope-Reason: Eicar-Test-Signature\n" in headers
    assert headers.startswith("X-QS-Envelope-Client: [203.0.113.9] from unknown (HELO unknown)\n")
    encoded = headers.split("\nX-QS-Envelope: ", 1)[1].split("\n", 1)[0]
    assert base64.b64decode(encoded) == envelope_bytes("alice@example.net", list(recipients))
    assert not list((tmp_path / "spool" / "quarantine" / "viruses" / "tmp").iterdir())


def test_quarantine_by_kind(tmp_path, standin_binary, queue_dir):
    settings = make_settings(tmp_path / "spool", qmail_queue_binary=standin_binary, log_details="no")
    assert carry_out(make_message(settings, PLAIN), quarantine_verdict("policy", "Disallowed .pif")) == 0
    assert carry_out(make_message(settings, PLAIN), quarantine_verdict("spam", "SA:1(9.0/5.0)")) == 0
    assert len(maildir_files(tmp_path / "spool" / "quarantine" / "policy")) == 1
    assert len(maildir_files(tmp_path / "spool" / "quarantine" / "spam")) == 1
    assert maildir_files(tmp_path / "spool" / "quarantine" / "viruses") == []


def test_quarantine_write_failure_is_temporary(tmp_path, standin_binary, queue_dir):
    settings = make_settings(tmp_path / "spool", qmail_queue_binary=standin_binary, log_details="no")
    (tmp_path / "spool" / "quarantine" / "viruses" / "new").rmdir()
    from qmail_scanner.outcomes import TemporaryFailure

    with pytest.raises(TemporaryFailure):
        carry_out(make_message(settings, PLAIN), quarantine_verdict())
    assert not list((tmp_path / "spool" / "quarantine" / "viruses" / "tmp").iterdir())


def test_drop_stores_and_queues_nothing(tmp_path, standin_binary, queue_dir):
    settings = make_settings(tmp_path / "spool", qmail_queue_binary=standin_binary, log_details="no")
    verdict = quarantine_verdict()
    verdict.action = "drop"
    assert carry_out(make_message(settings, PLAIN), verdict) == 0
    assert queued(queue_dir) == []
    assert maildir_files(tmp_path / "spool" / "quarantine" / "viruses") == []


@pytest.mark.parametrize(
    ("archive", "sender", "recipients", "archived"),
    [
        ("", "a@example.net", ("b@example.org",), False),
        ("yes", "a@example.net", ("b@example.org",), True),
        (r"@sales\.example\.org$", "a@example.net", ("b@example.org",), False),
        (r"@sales\.example\.org$", "a@example.net", ("b@example.org", "Joe@SALES.example.org"), True),
        (r"^ceo@", "ceo@example.org", ("x@example.net",), True),
    ],
)
def test_archive_copies_matching_messages(tmp_path, standin_binary, queue_dir, archive, sender, recipients, archived):
    settings = make_settings(tmp_path / "spool", qmail_queue_binary=standin_binary, archive=archive)
    assert carry_out(make_message(settings, PLAIN, sender=sender, recipients=recipients), Verdict()) == 0
    assert len(queued(queue_dir)) == 1
    copies = maildir_files(tmp_path / "spool" / "archives")
    assert len(copies) == int(archived)
    if archived:
        content = copies[0].read_bytes()
        assert content.endswith(PLAIN)
        assert f"X-QS-Envelope-From: <{sender}>\n".encode() in content


def test_header_block_split():
    assert split_header_block(b"A: 1\nB: 2\n\nbody") == 10
    assert split_header_block(b"\nbody") == 0
    assert split_header_block(b"A: 1\nB: 2\n") == 10
    assert split_header_block(b"") == 0


def test_store_failed_keeps_the_message_with_its_envelope(tmp_path):
    from qmail_scanner.actions import store_failed

    settings = make_settings(tmp_path / "spool", log_details="mailstats")
    message = make_message(settings, PLAIN)
    assert store_failed(message, "unpacker crashed") == 0
    [stored] = maildir_files(tmp_path / "spool" / "failed")
    assert stored.read_bytes().endswith(PLAIN)
    assert b"X-QS-Envelope-Reason: unpacker crashed\n" in stored.read_bytes()
    assert "Failed:(unpacker crashed):" in (tmp_path / "spool" / "mailstats.csv").read_text()
    assert "\tfailed\t" in (tmp_path / "spool" / "quarantine.log").read_text()


def test_large_header_block_beyond_the_first_chunk_is_still_cleaned(tmp_path, standin_binary, queue_dir):
    settings = make_settings(tmp_path / "spool", qmail_queue_binary=standin_binary)
    filler = b"".join(b"X-Filler-%d: %s\n" % (n, b"z" * 200) for n in range(400))  # about 85 KB of headers
    raw = filler + b"X-Qmail-Scanner-Diagnostics: forged\nSubject: big\n\nbody\n"
    assert carry_out(make_message(settings, raw), Verdict()) == 0
    [(delivered, _)] = queued(queue_dir)
    assert b"forged" not in delivered
    assert delivered.endswith(filler + b"Subject: big\n\nbody\n")
