"""Alerts: who gets one under each --notify rule, who never does, and what an alert looks like."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from actions_fixtures import envelope_bytes, make_message, make_settings, queued
from qmail_scanner.actions import carry_out
from qmail_scanner.notify import alert_targets, encode_words
from qmail_scanner.records import Finding, Verdict
from qmail_scanner.recordtype import replace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
from qsconfigure.alert_texts import available_languages, render_alert_texts

pytest_plugins = ("inject_fixtures",)
ENGLISH = render_alert_texts("en_GB")
HEADERS = b"From: a@example.net\nSubject: hello\n"
VIRUS = Verdict(
    action="quarantine",
    quarantine_kind="viruses",
    reason="Eicar-Test-Signature",
    findings=[Finding("virus", "Eicar-Test-Signature", "Eicar-Test-Signature")],
)
POLICY = Verdict(
    action="quarantine",
    quarantine_kind="policy",
    reason="Disallowed attachment type .pif",
    findings=[Finding("policy", ".pif", "Disallowed attachment type .pif")],
)
SPAM = Verdict(
    action="quarantine", quarantine_kind="spam", reason="SA:1(12.0/5.0)", findings=[Finding("spam", "sa", "")]
)


def targets(notify, verdict, sender="a@example.net", recipients=("b@example.org", "c@elsewhere.com"), headers=HEADERS,
            **values):  # fmt: skip
    """Who the rules alert, for settings made of `values`."""
    from qmail_scanner.settings import Settings

    values.setdefault("domain", "example.org")
    values.setdefault("local_domains", ("example.org",))
    return alert_targets(Settings(notify=tuple(notify), **values), sender, recipients, verdict, headers)


@pytest.mark.parametrize(
    ("notify", "verdict", "expected"),
    [
        (["none"], POLICY, []),
        (["sender"], VIRUS, [("sender", "a@example.net")]),
        (["sender"], POLICY, [("sender", "a@example.net")]),
        (["psender"], VIRUS, []),
        (["psender"], POLICY, [("sender", "a@example.net")]),
        (["recips"], VIRUS, [("recipient", "b@example.org")]),
        (["precips"], VIRUS, []),
        (["precips"], POLICY, [("recipient", "b@example.org")]),
        (["admin"], VIRUS, [("admin", "root@example.org")]),
        (["psender", "admin"], VIRUS, [("admin", "root@example.org")]),
        (["psender", "admin"], POLICY, [("sender", "a@example.net"), ("admin", "root@example.org")]),
        (
            ["all"],
            POLICY,
            [("sender", "a@example.net"), ("admin", "root@example.org"), ("recipient", "b@example.org")],
        ),
        (["all"], SPAM, []),
        (["nmladm"], VIRUS, [("admin", "root@example.org")]),
        (["nmlvadm"], POLICY, [("admin", "root@example.org")]),
    ],
)
def test_notify_rules(notify, verdict, expected):
    assert targets(notify, verdict) == expected


LIST_HEADERS = [
    b"List-Id: <dev.lists.example.net>\n",
    b"List-Unsubscribe: <mailto:x>\n",
    b"Precedence: bulk\n",
    b"precedence: LIST\n",
    b"Precedence: junk\n",
]


@pytest.mark.parametrize("list_header", LIST_HEADERS)
def test_mailing_list_traffic_gets_no_sender_or_recipient_alerts(list_header):
    headers = HEADERS + list_header
    assert targets(["sender", "recips"], POLICY, headers=headers) == []
    assert targets(["nmladm"], POLICY, headers=headers) == []
    assert targets(["nmlvadm"], VIRUS, headers=headers) == []
    assert targets(["nmlvadm"], POLICY, headers=headers) == [("admin", "root@example.org")]
    assert targets(["admin"], VIRUS, headers=headers) == [("admin", "root@example.org")]


@pytest.mark.parametrize(
    "sender",
    ["", "postmaster@example.net", "MAILER-DAEMON@example.net", "dev-request@lists.example.net",
     "owner-dev@lists.example.net", "dev-owner@example.net"],
)  # fmt: skip
def test_never_alert_system_senders(sender):
    assert targets(["sender", "admin"], POLICY, sender=sender) == [("admin", "root@example.org")]


def test_auto_submitted_mail_gets_no_sender_alert():
    headers = HEADERS + b"Auto-Submitted: auto-replied\n"
    assert targets(["sender"], POLICY, headers=headers) == []
    assert targets(["sender"], POLICY, headers=HEADERS + b"Auto-Submitted: no\n") == [("sender", "a@example.net")]


def test_silent_viruses_never_alert_the_sender():
    mydoom = Verdict(
        action="quarantine",
        quarantine_kind="viruses",
        reason="Worm.Mydoom.M",
        findings=[Finding("virus", "Worm.Mydoom.M", "")],
    )
    assert targets(["sender", "admin"], mydoom, silent_viruses=("auto",)) == [("admin", "root@example.org")]
    assert targets(["sender"], mydoom, silent_viruses=()) == [("sender", "a@example.net")]
    assert targets(["sender"], VIRUS, silent_viruses=("eicar",)) == []
    assert targets(["sender"], VIRUS, silent_viruses=("auto",)) == [("sender", "a@example.net")]


def test_no_alerts_about_mail_from_the_alert_address_itself():
    assert targets(["all"], POLICY, sender="root@example.org") == []


def test_recipient_notices_only_in_local_domains():
    recipients = ("b@example.org", "c@elsewhere.com", "d@EXAMPLE.ORG", "e@sub.example.org")
    found = targets(["recips"], POLICY, recipients=recipients, local_domains=("example.org",))
    assert found == [("recipient", "b@example.org"), ("recipient", "d@EXAMPLE.ORG")]


def recorded(record_dir: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(record_dir.glob("*.json"))]


def test_alert_goes_out_through_qmail_inject(tmp_path, recorder, monkeypatch):
    inject, record_dir = recorder
    monkeypatch.setenv("QMAILQUEUE", "/var/qmail/bin/qmail-scanner-queue.py")
    settings = make_settings(
        tmp_path / "spool",
        qmail_inject_binary=inject,
        notify=("psender", "admin"),
        alert_texts=ENGLISH,
        log_details="no",
        admin_description="Mail Guard",
    )
    raw = (
        b"From: a@example.net\n"
        b"Subject: invoice =?UTF-8?Q?=0D=0ABcc:_victim@x?=\n"
        b"X-Long: " + b"y" * 3000 + b"\n"
        b"\n"
        b"SECRET BODY LINE\n"
    )
    message = make_message(settings, raw, sender="a@example.net", recipients=("b@example.org",))
    error_read, error_write = os.pipe()  # stands for qmail-smtpd's custom-error fd
    os.set_inheritable(error_write, True)
    settings = replace(settings, custom_error_fd=error_write)
    message.settings = settings
    try:
        assert carry_out(message, POLICY) == 0
    finally:
        os.close(error_read)
        os.close(error_write)
    alerts = recorded(record_dir)
    assert sorted(a["argv"][-1] for a in alerts) == ["a@example.net", "root@example.org"]
    for alert in alerts:
        assert alert["argv"][:2] == ["-f", "root@example.org"]
        assert alert["qmailqueue"] is None
        assert alert["fds"] == [0, 1, 2]
        text = alert["message"]
        head, body = text.split("\n\n", 1)
        assert 'From: "Mail Guard" <root@example.org>' in head
        assert "Subject: Message from a@example.net blocked: Disallowed attachment type .pif" in head
        assert "Auto-Submitted: auto-generated" in head
        assert "\nBcc:" not in head
        assert "SECRET BODY LINE" not in text
        assert "Reason: Disallowed attachment type .pif" in body
        assert "Subject: invoice" in body
    to_sender = next(a for a in alerts if a["argv"][-1] == "a@example.net")["message"]
    assert "A message you sent was not delivered" in to_sender
    assert "Quarantine id: " + message.area.message_id in to_sender


def test_header_injection_through_sender_and_reason_is_neutralised(tmp_path, recorder):
    inject, record_dir = recorder
    settings = make_settings(
        tmp_path / "spool", qmail_inject_binary=inject, notify=("admin",), alert_texts=ENGLISH, log_details="no"
    )
    message = make_message(settings, HEADERS + b"\nbody\n", sender="evil@example.net")
    message.envelope = message.envelope.__class__(
        "evil@x\nBcc: victim@y", message.envelope.recipients, message.envelope.raw
    )
    verdict = Verdict(
        action="quarantine",
        quarantine_kind="policy",
        reason="bad name evil.exe\r\nBcc: victim@example.com",
        findings=[Finding("policy", ".exe", "x")],
    )
    assert carry_out(message, verdict) == 0
    [alert] = recorded(record_dir)
    head = alert["message"].split("\n\n", 1)[0]
    assert "\nBcc:" not in head
    names = [line.split(":", 1)[0] for line in head.split("\n")]
    assert names == ["From", "To", "Subject", "Auto-Submitted", "Precedence", "X-Qmail-Scanner-Alert", "MIME-Version",
                     "Content-Type", "Content-Transfer-Encoding"]  # fmt: skip
    subject = next(line for line in head.split("\n") if line.startswith("Subject:"))
    assert "victim" in subject and "\r" not in subject


def test_alert_failure_never_changes_the_exit_code(tmp_path, recorder, monkeypatch, capfd):
    inject, _ = recorder
    monkeypatch.setenv("INJECT_EXIT", "111")
    settings = make_settings(
        tmp_path / "spool", qmail_inject_binary=inject, notify=("admin",), alert_texts=ENGLISH, log_details="no"
    )
    assert carry_out(make_message(settings, HEADERS + b"\nbody\n"), POLICY) == 0
    assert "alert failed" in capfd.readouterr().err
    assert len(list((tmp_path / "spool" / "quarantine" / "policy" / "new").iterdir())) == 1


def test_missing_inject_binary_is_only_logged(tmp_path, capfd):
    settings = make_settings(
        tmp_path / "spool", qmail_inject_binary="/nonexistent/qmail-inject", notify=("admin",), alert_texts=ENGLISH,
        log_details="no",
    )  # fmt: skip
    assert carry_out(make_message(settings, HEADERS + b"\nbody\n"), VIRUS) == 0
    assert "alert failed" in capfd.readouterr().err


def test_encoded_subject_for_non_ascii_languages():
    encoded = encode_words("病毒 found in a message from someone@example.net")
    assert encoded.isascii() and encoded.startswith("=?UTF-8?B?")
    assert all(len(word) <= 75 for word in encoded.split(" "))


SHIPPED = ["en_GB", "it_IT", "af_ZA", "pl_PL", "sv_SE", "cs_CZ", "de_DE", "es_ES", "tr_TR", "lt_LT", "fr_FR",
           "pt_BR", "nl_NL", "zh_TW"]  # fmt: skip


def test_every_original_language_is_shipped():
    assert set(SHIPPED) <= set(available_languages())


@pytest.mark.parametrize("lang", available_languages())
def test_every_language_renders_complete_with_the_same_fields(lang):
    texts = render_alert_texts(lang)
    assert set(texts) == set(ENGLISH)
    assert texts["lang"] == lang
    import re

    for field, english in ENGLISH.items():
        if field == "lang":
            continue
        assert set(re.findall(r"\{(\w+)\}", texts[field])) == set(re.findall(r"\{(\w+)\}", english)), field
        if lang != "en_GB" and not field.startswith("label_"):
            assert texts[field] != english, f"{lang}.{field} is not translated"


def test_language_names_from_the_environment():
    assert render_alert_texts("de_DE.UTF-8")["lang"] == "de_DE"
    assert render_alert_texts("C")["lang"] == "en_GB"
    assert render_alert_texts("pt")["lang"].startswith("pt_")
    with pytest.raises(ValueError, match="no alert texts"):
        render_alert_texts("xx_XX")


def test_broken_language_file_is_refused(tmp_path):
    (tmp_path / "en_GB.j2").write_text(
        "{% block subject_virus %}x{sender}{% endblock %}{% block footer %}y{% endblock %}"
    )
    (tmp_path / "de_DE.j2").write_text(
        "{% block subject_virus %}x{absender}{% endblock %}{% block footer %}y{% endblock %}"
    )
    (tmp_path / "fr_FR.j2").write_text("{% block subject_virus %}x{% endblock %}")
    with pytest.raises(ValueError, match="unknown placeholders"):
        render_alert_texts("de_DE", tmp_path)
    with pytest.raises(ValueError, match="missing"):
        render_alert_texts("fr_FR", tmp_path)


def test_hanging_qmail_inject_and_its_children_are_stopped(tmp_path, monkeypatch, capfd):
    import time

    import qmail_scanner.notify as notify

    monkeypatch.setattr(notify, "INJECT_TIMEOUT", 1.0)
    pid_file = tmp_path / "child.pid"
    inject = tmp_path / "qmail-inject"
    inject.write_text(f"#!/bin/sh\ncat > /dev/null\nsleep 3600 &\necho $! > {pid_file}\nwait\n")
    inject.chmod(0o755)
    settings = make_settings(
        tmp_path / "spool", qmail_inject_binary=str(inject), notify=("admin",), alert_texts=ENGLISH, log_details="no"
    )
    started = time.monotonic()
    assert carry_out(make_message(settings, HEADERS + b"\nbody\n"), POLICY) == 0
    assert time.monotonic() - started < 10
    assert "took longer than" in capfd.readouterr().err
    child = int(pid_file.read_text())
    for _ in range(100):  # the kill is asynchronous; the zombie is reaped by init
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{child}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the grandchild of qmail-inject is still running")


# Envelope senders that qmail-inject's getopt ("aAhHnNf:") would read as options if they came first
# among its arguments: -f would change the alert's sender, -n print it instead of queueing it, -h/-H
# take the recipients from the headers, -a drop them, an unknown letter make it fail.
OPTION_LIKE_SENDERS = ["-fevil@example.net", "-n@example.net", "-h@example.net", "-a@example.net",
                       "-Nfevil@example.net", "-t@example.net", "--@example.net", "a b@example.net",
                       "x@example.net,victim@example.org"]  # fmt: skip


@pytest.mark.parametrize("sender", OPTION_LIKE_SENDERS)
def test_sender_that_looks_like_an_option_is_alerted_literally_by_the_real_qmail_inject(
    tmp_path, real_qmail_inject, queue_dir, sender
):
    settings = make_settings(
        tmp_path / "spool", qmail_inject_binary=real_qmail_inject, notify=("psender",), alert_texts=ENGLISH,
        log_details="no",
    )  # fmt: skip
    message = make_message(settings, HEADERS + b"\nbody\n", sender=sender)
    assert carry_out(message, POLICY) == 0
    [(alert, envelope)] = queued(queue_dir)
    assert envelope == envelope_bytes("root@example.org", [sender])
    assert b"\nX-Qmail-Scanner-Alert: policy\n" in alert


@pytest.mark.parametrize(
    "sender",
    ["a\nb@example.net", "evil@example.net\nBcc: victim@example.org", "a\x1b[2J@example.net",
     "x@example.net (victim@example.org)", "x@example.org,victim.example.net", "x@example.net victim.example.org",
     "x@<example.net>", "-n"],
)  # fmt: skip
def test_sender_that_is_no_single_plain_address_gets_no_alert(tmp_path, real_qmail_inject, queue_dir, capfd, sender):
    settings = make_settings(
        tmp_path / "spool", qmail_inject_binary=real_qmail_inject, notify=("psender", "admin"), alert_texts=ENGLISH,
        log_details="no",
    )  # fmt: skip
    message = make_message(settings, HEADERS + b"\nbody\n", sender=sender)
    assert carry_out(message, POLICY) == 0
    assert "alert failed" not in capfd.readouterr().err
    envelopes = [envelope for _, envelope in queued(queue_dir)]
    assert envelopes == [envelope_bytes("root@example.org", ["root@example.org"])]  # the admin's only


def test_recipient_that_looks_like_an_option_is_alerted_literally(tmp_path, real_qmail_inject, queue_dir):
    settings = make_settings(
        tmp_path / "spool", qmail_inject_binary=real_qmail_inject, notify=("precips",), alert_texts=ENGLISH,
        log_details="no", local_domains=("example.org",),
    )  # fmt: skip
    recipients = ("-fevil@example.org", "-n@example.org", "bob\n-n@example.org")
    message = make_message(settings, HEADERS + b"\nbody\n", recipients=recipients)
    assert carry_out(message, POLICY) == 0
    envelopes = sorted(envelope for _, envelope in queued(queue_dir))
    expected = [envelope_bytes("root@example.org", [r]) for r in ("-fevil@example.org", "-n@example.org")]
    assert envelopes == sorted(expected)
