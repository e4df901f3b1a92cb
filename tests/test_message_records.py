"""Message records for qs-console: one whole JSON line per message in SPOOLDIR/records/current.jsonl.

Through the installed program and through the resident engine, with real clamd and spamd: what
a message's record says (outcome, reason, rule, the quarantined file, recipients, the decoded
subject, attachments by their real type, each scanner's answer), that concurrent messages never
interleave their lines, that hostile text stays one line of valid JSON, and that a record which
cannot be written costs one log line and never the message.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path

import pytest

from daemons import (  # noqa: F401 - fixtures
    EICAR,
    GTUBE,
    clamd_disposable_fixture,
    clamd_server_fixture,
    spamd_server_fixture,
)
from engine_fixtures import Engine
from harness import envelope
from scanner_fixtures import headers, with_attachment
from security_fixtures import install_wrapped
from testbed import messages
from testbed.qmail import unique_marker, wait_for_delivery

RECORD_KEYS = [
    "v", "id", "time", "host", "queue_id", "client_ip", "helo", "auth_user", "sender", "recipients", "subject",
    "message_id", "size", "outcome", "reason", "rule", "kind", "scanners", "spam_score", "spam_tagged",
    "attachments", "quarantine_id", "quarantine_dir", "readings", "skipped", "trace", "parts", "decision",
]  # fmt: skip
NOT_WRITTEN = "message record not written to "
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
# qmail-smtpd's own line on top, as it writes it for a client that said HELO with another name.
SMTPD_RECEIVED = b"Received: from mx.example.net (HELO relay.example.net) (198.51.100.7)\r\n  by mail.example.com\r\n"
SMTP_ENV = {"TCPREMOTEIP": "198.51.100.7", "TCPREMOTEHOST": "mx.example.net", "SMTPAUTHUSER": "alice"}


def records_file(installation) -> Path:
    return installation.spool / "records" / "current.jsonl"


def read_records(installation) -> list[dict]:
    """Every line of current.jsonl parsed; a line that is not one whole JSON object fails the test."""
    path = records_file(installation)
    if not path.exists():
        return []
    raw = path.read_bytes()
    assert raw.endswith(b"\n") or not raw
    records = []
    for line in raw.split(b"\n")[:-1]:
        record = json.loads(line.decode("utf-8"))  # strict UTF-8: no raw bytes from mail
        assert list(record) == RECORD_KEYS
        records.append(record)
    return records


def fresh(installation) -> None:
    """Start from no current.jsonl, as after the loader renamed it away (the install check wrote one)."""
    records_file(installation).unlink(missing_ok=True)


def one_record(installation, message: bytes, envelope_bytes: bytes | None = None, **options) -> tuple[dict, object]:
    """Run one message and return its one record and the run's result."""
    fresh(installation)
    result = installation.run(message, envelope_bytes, **options)
    records = read_records(installation)
    assert len(records) == 1, (records, result.stderr)
    assert NOT_WRITTEN not in result.stderr
    return records[0], result


def attached(filename: str, data: bytes, subject: str = "attachment") -> bytes:
    """with_attachment with qmail-smtpd's Received line on top and our subject."""
    message = with_attachment(filename, data)
    return SMTPD_RECEIVED + message.replace(b"Subject: attachment", f"Subject: {subject}".encode(), 1)


@pytest.fixture(scope="module")
def scanned(clamd_server, spamd_server, make_installation):
    """An installation with real clamd and spamd (defaults otherwise: spam is delivered tagged)."""
    return make_installation(
        "--scanners", "clamd,spamd", "--clamd-servers", clamd_server.socket_path,
        "--spamd-servers", spamd_server.socket_path, fresh=True,
    )  # fmt: skip


# ---------------------------------------------------------------- the installed program


def test_install_makes_the_records_dir_for_the_scanner_account(scanned):
    directory = scanned.spool / "records"
    assert directory.is_dir()
    assert directory.stat().st_mode & 0o777 == 0o750


def test_a_clean_message_has_one_delivered_record_with_everything_the_program_knows(scanned):
    subject = "=?utf-8?q?r=C3=A9union_=C3=A0_?= =?utf-8?b?bWlkaQ==?="  # the blank between the words is not text
    message = attached("minutes.txt", PDF, subject)
    raw_envelope = envelope("alice@example.org", "bob@example.com", "carol@example.com")
    record, result = one_record(scanned, message, raw_envelope, env=SMTP_ENV)
    assert result.exit_code == 0 and len(result.queued) == 1, result.stderr
    assert record["v"] == 1
    assert record["outcome"] == "delivered"
    assert (record["reason"], record["rule"], record["kind"]) == ("", "", "")
    assert record["queue_id"] and record["id"] == f"{record['host']}:{record['queue_id']}"
    assert (record["client_ip"], record["helo"], record["auth_user"]) == ("198.51.100.7", "relay.example.net", "alice")
    assert record["sender"] == "alice@example.org"
    assert record["recipients"] == ["bob@example.com", "carol@example.com"]
    assert record["subject"] == "réunion à midi"
    assert record["message_id"] == "<test-5678@mail.example.org>"
    assert record["size"] == len(message)
    assert record["attachments"] == [{"name": "minutes.txt", "type": "application/pdf", "size": len(PDF)}]
    names = [scanner["name"] for scanner in record["scanners"]]
    assert names == ["clamd", "spamd"]
    assert record["scanners"][0]["answer"] == "clean"
    assert all(isinstance(scanner["seconds"], float) for scanner in record["scanners"])
    assert isinstance(record["spam_score"], float) and record["spam_tagged"] is False
    assert (record["quarantine_id"], record["quarantine_dir"]) == ("", "")
    assert "Clear:RC:0(198.51.100.7)" in record["trace"]
    assert abs(record["time"] - os.stat(records_file(scanned)).st_mtime) < 5


def test_eicar_record_names_the_virus_and_the_quarantined_file(scanned):
    record, result = one_record(scanned, attached("eicar.com", EICAR), envelope("a@example.org", "b@example.com"))
    assert result.exit_code == 0 and not result.queued
    assert (record["outcome"], record["kind"], record["quarantine_dir"]) == ("quarantined", "virus", "viruses")
    assert "eicar" in record["rule"].lower()
    assert record["rule"] in record["reason"]
    stored = scanned.spool / "quarantine" / "viruses" / "new" / record["quarantine_id"]
    assert stored.is_file()
    assert f"X-QS-Envelope-Id: {record['queue_id']}" in stored.read_text(errors="replace")
    assert record["scanners"][0]["name"] == "clamd" and "eicar" in record["scanners"][0]["answer"].lower()
    assert record["attachments"][0]["name"] == "eicar.com"


def test_policy_block_record_names_the_rule_and_the_quarantined_file(scanned):
    record, result = one_record(scanned, attached("holiday.pif", b"MZ\x90\x00" + b"\x00" * 200))
    assert result.exit_code == 0 and not result.queued
    assert (record["outcome"], record["kind"], record["quarantine_dir"]) == ("quarantined", "policy", "policy")
    assert record["rule"] and "pif" in record["rule"]
    assert ".pif" in record["reason"]
    assert (scanned.spool / "quarantine" / "policy" / "new" / record["quarantine_id"]).is_file()
    assert record["attachments"] == [{"name": "holiday.pif", "type": "application/x-dosexec", "size": 204}]


def test_gtube_is_delivered_tagged_with_its_score(scanned):
    message = SMTPD_RECEIVED + headers("special offer") + b"\r\nBuy now!\r\n" + GTUBE + b"\r\n"
    record, result = one_record(scanned, message, env=SMTP_ENV)
    assert result.exit_code == 0 and len(result.queued) == 1
    assert record["outcome"] == "delivered"
    assert record["spam_tagged"] is True and record["kind"] == "spam"
    assert record["spam_score"] >= 100
    spamd = next(scanner for scanner in record["scanners"] if scanner["name"] == "spamd")
    assert f"{record['spam_score']:.1f}/" in spamd["answer"]


def test_a_scanner_that_is_down_gives_one_tempfail_record_naming_it(make_installation, clamd_disposable):
    down = make_installation("--scanners", "clamd", "--clamd-servers", clamd_disposable.socket_path, fresh=True)
    clamd_disposable.stop()
    record, result = one_record(down, attached("minutes.txt", PDF))
    assert result.exit_code != 0 and not result.queued
    assert record["outcome"] == "tempfail"
    assert "clamd" in record["reason"]
    assert record["scanners"][0]["name"] == "clamd" and record["scanners"][0]["answer"].startswith("failed: ")
    assert record["sender"] == "sender@example.org" and record["attachments"][0]["name"] == "minutes.txt"
    assert record["quarantine_id"] == ""


def test_an_envelope_address_too_long_gives_one_rejected_record(installation):
    record, result = one_record(installation, headers("long") + b"\r\nbody\r\n", envelope("a" * 1100, "b@example.com"))
    assert result.exit_code == 11  # qmail-queue's "address too long": permanent
    assert record["outcome"] == "rejected"
    assert record["reason"] == "envelope address too long"
    assert record["sender"] == "" and record["recipients"] == []  # the envelope was never read whole
    assert record["subject"] == "long"


def test_a_hostile_subject_sender_and_file_name_stay_one_line_of_valid_json(installation):
    nasty = 'line\nbreak "quoted" back\\slash \x1b[31mred\x00nul \u2028'
    encoded = base64.b64encode(nasty.encode()).decode()
    name_bytes = b"r\xe9sum\xe9\x1b[2J\nfake.pdf"  # not UTF-8, with an escape sequence and a newline
    message = (
        headers("x").replace(b"Subject: x", f"Subject: =?utf-8?b?{encoded}?=".encode(), 1)
        + b'Content-Type: application/octet-stream; name="' + name_bytes.replace(b"\n", b"") + b'"\r\n'
        + b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(PDF)
    )  # fmt: skip
    sender = b"evil\xff\x1b]0;title\x07@example.org"
    raw_envelope = b"F" + sender + b"\0Tb@example.com\0\0"
    record, result = one_record(installation, message, raw_envelope)
    assert result.exit_code == 0
    assert records_file(installation).read_bytes().count(b"\n") == 1
    assert record["sender"] == "evil\\xff\x1b]0;title\x07@example.org"  # the raw byte named, the rest as JSON escapes
    assert "\n" not in record["subject"] and "\x00" not in record["subject"] and "\x1b" not in record["subject"]
    assert record["subject"].startswith('line break "quoted" back\\slash _[31mred_nul')
    name = record["attachments"][0]["name"]
    assert name.isprintable() and name.endswith("fake.pdf")


BULK_RECIPIENTS = [f"recipient-{n:04d}-with-a-long-local-part@example.com" for n in range(300)]


def send_twenty_at_once(installation, subject: str) -> list:
    """20 messages at once, each to 300 long addresses (records of ~17 KB): the results of the runs."""
    fresh(installation)
    raw_envelope = envelope("bulk@example.org", *BULK_RECIPIENTS)
    results: list = []

    def send(number: int) -> None:
        results.append(installation.run(headers(f"{subject} {number}") + b"\r\nbody\r\n", raw_envelope))

    threads = [threading.Thread(target=send, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_twenty_concurrent_messages_give_twenty_whole_lines(installation):
    results = send_twenty_at_once(installation, "message")
    assert [r.exit_code for r in results] == [0] * 20
    records = read_records(installation)
    assert len(records) == 20
    assert len({record["id"] for record in records}) == 20
    assert {record["subject"] for record in records} == {f"message {n}" for n in range(20)}
    assert all(record["recipients"] == BULK_RECIPIENTS for record in records)


def test_a_record_over_64_kb_is_cut_to_fit_not_split(installation):
    recipients = [f"r{n:05d}-{'x' * 60}@example.com" for n in range(1500)]  # ~110 KB of recipients
    record, result = one_record(installation, headers("many") + b"\r\nbody\r\n", envelope("a@example.org", *recipients))
    assert result.exit_code == 0 and len(result.queued) == 1
    assert len(records_file(installation).read_bytes()) <= 65536
    assert record["outcome"] == "delivered" and record["subject"] == "many"
    assert 0 < len(record["recipients"]) < 1500 and record["recipients"][0] == recipients[0]


def test_a_full_file_system_costs_one_log_line_never_the_message(installation):
    path = records_file(installation)
    path.write_bytes(b"\n" * 300_000)  # already past the file-size limit the program runs under
    result = installation.run(attached("minutes.txt", PDF), rlimit_fsize=200_000)
    assert result.exit_code == 0 and len(result.queued) == 1, result.stderr
    assert result.stderr.count(NOT_WRITTEN) == 1
    assert "File too large" in result.stderr
    assert path.stat().st_size == 300_000


def test_a_missing_records_dir_costs_one_log_line_never_the_message(installation):
    directory = installation.spool / "records"
    fresh(installation)
    directory.rmdir()
    try:
        result = installation.run(attached("minutes.txt", PDF))
        rejected = installation.run(headers("x") + b"\r\nbody\r\n", b"X")  # a failure's record fails alike
    finally:
        directory.mkdir(0o750)
    assert result.exit_code == 0 and len(result.queued) == 1, result.stderr
    assert result.stderr.count(NOT_WRITTEN) == 1 and "No such file or directory" in result.stderr
    assert rejected.exit_code == 91 and rejected.stderr.count(NOT_WRITTEN) == 1


def test_records_off_writes_none(make_installation):
    quiet = make_installation("--console-records", "no", fresh=True)
    fresh(quiet)
    assert quiet.run(headers("x") + b"\r\nbody\r\n").exit_code == 0
    assert not records_file(quiet).exists()


# ---------------------------------------------------------------- the resident engine


@pytest.fixture(scope="module")
def engine_with_clamd(clamd_server):
    installation = install_wrapped("--scanners", "clamd", "--clamd-servers", clamd_server.socket_path)
    running = Engine(installation).start()
    yield running
    running.stop()
    installation.remove()


def served(engine: Engine) -> int:
    return engine.status().get("served", 0)


def test_the_engine_writes_the_same_records(engine_with_clamd):
    engine = engine_with_clamd
    installation = engine.installation
    fresh(installation)
    before = served(engine)
    clean = installation.run(attached("minutes.txt", PDF, "clean one"), env=SMTP_ENV)
    virus = installation.run(attached("eicar.com", EICAR, "virus one"))
    refused = installation.run(headers("bad envelope") + b"\r\nbody\r\n", b"X")
    assert (clean.exit_code, virus.exit_code, refused.exit_code) == (0, 0, 91)
    engine.wait_until(lambda: served(engine) >= before + 3)
    records = {record["subject"]: record for record in read_records(installation)}
    assert list(records) == ["clean one", "virus one", "bad envelope"]
    assert records["clean one"]["outcome"] == "delivered"
    assert records["clean one"]["client_ip"] == "198.51.100.7" and records["clean one"]["helo"] == "relay.example.net"
    assert records["clean one"]["scanners"][0]["answer"] == "clean"
    virus_record = records["virus one"]
    assert (virus_record["outcome"], virus_record["quarantine_dir"]) == ("quarantined", "viruses")
    assert (installation.spool / "quarantine" / "viruses" / "new" / virus_record["quarantine_id"]).is_file()
    assert records["bad envelope"]["outcome"] == "tempfail"
    stat = records_file(installation).stat()
    assert (stat.st_uid, stat.st_mode & 0o777) == (installation.scanner_ids[0], 0o640)


def test_twenty_concurrent_messages_through_the_engine_give_twenty_whole_lines(engine_with_clamd):
    installation = engine_with_clamd.installation
    results = send_twenty_at_once(installation, "engine")
    assert [r.exit_code for r in results] == [0] * 20
    records = read_records(installation)
    assert sorted(record["subject"] for record in records) == sorted(f"engine {n}" for n in range(20))


def test_an_unwritable_records_dir_costs_the_engine_one_log_line_never_the_message(engine_with_clamd):
    installation = engine_with_clamd.installation
    directory = installation.spool / "records"
    fresh(installation)
    directory.chmod(0o550)  # the scanner account may read it, not create current.jsonl in it
    try:
        result = installation.run(attached("minutes.txt", PDF))
    finally:
        directory.chmod(0o750)
    assert result.exit_code == 0 and len(result.queued) == 1, result.stderr
    assert result.stderr.count(NOT_WRITTEN) == 1 and "Permission denied" in result.stderr
    assert not records_file(installation).exists()


# ---------------------------------------------------------------- through the real qmail-smtpd


def test_through_qmail_smtpd_the_record_names_the_client_and_its_helo(qmail_bed, bed_route):
    """notqmail's qmail-smtpd under tcpserver: TCPREMOTEIP, and the HELO from the Received line it adds."""
    scanner = bed_route()
    marker = unique_marker()
    assert qmail_bed.send(messages.plain(marker, subject=f"records {marker}"), scanner).accepted
    wait_for_delivery(marker)
    records = [record for record in read_records(scanner) if record["subject"] == f"records {marker}"]
    assert len(records) == 1
    assert records[0]["outcome"] == "delivered"
    assert (records[0]["client_ip"], records[0]["helo"]) == ("127.0.0.1", "client.example.org")
