"""The console's sender allow/block lists (SPOOLDIR/records/sender-lists) deciding the spam verdict.

Through the installed program and the resident engine, with real spamd: an allowed sender's
GTUBE is delivered untagged with the spam scanners named as skipped; a blocked sender's plain
message gets the site's spam action (tagged, quarantined, refused) with the console's list as
the reason; the most specific entry wins; a link, a FIFO or garbage at the path is no list.
"""

from __future__ import annotations

import os
import time

import pytest

from daemons import GTUBE, clamd_server_fixture, spamd_server_fixture  # noqa: F401 - fixtures
from engine_fixtures import Engine
from harness import envelope
from qmail_scanner.sender_lists import listed, parse
from scanner_fixtures import headers
from security_fixtures import install_wrapped
from test_message_records import fresh, one_record, read_records

HEADER = "# qs-console sender lists, version 1\n"
ALLOWED_SKIP = b"Skipped: spam scanners (sender allowed)."
BLOCK_REASON = "sender blocked by the console's list ("


def plain(subject: str) -> bytes:
    return headers(subject, "Content-Type: text/plain; charset=us-ascii\r\n") + b"\r\nSee you at lunch.\r\n"


def gtube(subject: str) -> bytes:
    return headers(subject, "Content-Type: text/plain; charset=us-ascii\r\n") + b"\r\nBuy now!\r\n" + GTUBE + b"\r\n"


def write_lists(installation, *lines: str) -> None:
    """The file as the console's loader writes it: a temp file renamed into place, 0644."""
    path = installation.spool / "records" / "sender-lists"
    temporary = path.with_name(".sender-lists.tmp")
    temporary.write_text(HEADER + "".join(f"{line}\n" for line in lines), encoding="utf-8")
    temporary.chmod(0o644)
    os.replace(temporary, path)


def no_lists(installation) -> None:
    (installation.spool / "records" / "sender-lists").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def tagging(spamd_server, make_installation):
    """spamd, spam delivered tagged (the default) with a subject tag."""
    return make_installation(
        "--scanners", "spamd", "--spamd-servers", spamd_server.socket_path, "--sa-subject", "[SPAM]", fresh=True
    )  # fmt: skip


def test_an_allowed_sender_s_gtube_is_delivered_untagged_naming_the_skip(tagging):
    write_lists(tagging, "allow\tpromo@shop.example\t*")
    record, result = one_record(tagging, gtube("special offer"), envelope("Promo@Shop.Example", "bob@example.com"))
    no_lists(tagging)
    assert result.exit_code == 0 and len(result.queued) == 1, result.stderr
    delivered = result.queued[0].message
    assert ALLOWED_SKIP in delivered
    assert b"X-Spam-Flag" not in delivered and b"Subject: special offer" in delivered
    assert record["outcome"] == "delivered" and record["spam_tagged"] is False and record["decision"] == {}
    assert record["skipped"] == ["spam scanners (sender allowed)"]
    assert [scanner["name"] for scanner in record["scanners"]] == []  # spamd was not asked


def test_without_the_entry_the_same_gtube_is_tagged(tagging):
    write_lists(tagging, "allow\tpromo@shop.example\tsomeone-else@example.com")
    record, result = one_record(tagging, gtube("special offer"), envelope("promo@shop.example", "bob@example.com"))
    no_lists(tagging)
    delivered = result.queued[0].message
    assert b"Subject: [SPAM] special offer" in delivered and b"X-Spam-Flag: YES" in delivered
    assert ALLOWED_SKIP not in delivered and record["spam_tagged"] is True


def test_a_blocked_sender_s_plain_message_is_tagged_as_spam(tagging):
    write_lists(tagging, "block\t@spam.example\t*")
    record, result = one_record(tagging, plain("lunch"), envelope("anyone@spam.example", "bob@example.com"))
    no_lists(tagging)
    assert result.exit_code == 0 and len(result.queued) == 1, result.stderr
    delivered = result.queued[0].message
    assert b"Subject: [SPAM] lunch" in delivered and b"X-Spam-Flag: YES" in delivered
    assert b"Skipped: spam scanners (sender blocked)." in delivered
    assert record["outcome"] == "delivered" and record["spam_tagged"] is True and record["kind"] == "spam"
    assert record["rule"] == "sender-block"
    assert record["reason"] == BLOCK_REASON + "@spam.example for *)"
    decision = record["decision"]
    assert (decision["rule"], decision["part"], decision["text"]) == ("sender-block", "", record["reason"])


def test_a_blocked_sender_is_quarantined_where_the_site_quarantines_spam(spamd_server, make_installation):
    quarantining = make_installation("--scanners", "spamd", "--spamd-servers", spamd_server.socket_path,
                                     "--sa-quarantine", "5", fresh=True)  # fmt: skip
    write_lists(quarantining, "block\tpromo@shop.example\t@example.com")
    record, result = one_record(quarantining, plain("lunch"), envelope("promo@shop.example", "bob@example.com"))
    assert result.exit_code == 0 and not result.queued, result.stderr
    assert (record["outcome"], record["quarantine_dir"], record["decision"]["rule"]) == (
        "quarantined", "spam", "sender-block"
    )  # fmt: skip
    assert record["reason"] == BLOCK_REASON + "promo@shop.example for @example.com)"
    stored = quarantining.quarantined("spam")
    assert len(stored) == 1 and stored[0].name == record["quarantine_id"]


def test_a_blocked_sender_is_refused_where_the_site_refuses_spam(spamd_server, make_installation):
    refusing = make_installation("--scanners", "spamd", "--spamd-servers", spamd_server.socket_path,
                                 "--sa-reject", "yes", fresh=True)  # fmt: skip
    write_lists(refusing, "block\tpromo@shop.example\t*")
    record, result = one_record(refusing, plain("lunch"), envelope("promo@shop.example", "bob@example.com"))
    assert result.exit_code == 82 and not result.queued  # the refusal's text goes to qmail-smtpd on fd 6
    assert b"5.7.1 message refused as spam (sender blocked by the console's list" in (result.custom_error or b"")
    assert record["outcome"] == "rejected" and record["decision"]["rule"] == "sender-block"


PRECEDENCE = (
    "block\t@shop.example\t*",
    "allow\t@shop.example\t@example.org",
    "block\t@shop.example\tvip@example.org",
    "allow\tboss@shop.example\t*",
)


@pytest.mark.parametrize(
    ("sender", "recipients", "expected"),
    [
        ("clerk@shop.example", ["a@example.org"], "allowed"),  # recipient @domain beats *
        ("clerk@shop.example", ["vip@example.org"], "blocked"),  # recipient address beats @domain
        ("clerk@shop.example", ["x@other.example"], "blocked"),  # only * matches
        ("clerk@shop.example", ["a@example.org", "b@example.org"], "allowed"),  # allowed for every recipient
        ("clerk@shop.example", ["a@example.org", "x@other.example"], "blocked"),  # blocked for one is spam
        ("boss@shop.example", ["vip@example.org"], "allowed"),  # the sender's address beats its @domain
        ("clerk@elsewhere.example", ["vip@example.org"], "scanned"),  # no entry: spamd decides
    ],
)
def test_the_most_specific_entry_counts_for_each_recipient(tagging, sender, recipients, expected):
    write_lists(tagging, *PRECEDENCE)
    record, result = one_record(tagging, plain("lunch"), envelope(sender, *recipients))
    no_lists(tagging)
    assert result.exit_code == 0 and len(result.queued) == 1, result.stderr
    outcome = {
        "spam scanners (sender allowed)": "allowed",
        "spam scanners (sender blocked)": "blocked",
    }.get(record["skipped"][0] if record["skipped"] else "", "scanned")
    assert outcome == expected, record
    assert (record["decision"].get("rule") == "sender-block") == (expected == "blocked")
    assert ([s["name"] for s in record["scanners"]] == ["spamd"]) == (expected == "scanned")


def test_mixed_recipients_with_one_unlisted_run_the_spam_scanners():
    lists = parse(HEADER + "allow\t@shop.example\ta@example.org\n")
    assert listed(lists, "x@shop.example", ["a@example.org"]) == ("allow", "@shop.example for a@example.org")
    assert listed(lists, "x@shop.example", ["a@example.org", "b@example.org"]) == ("", "")
    assert listed(lists, "", ["a@example.org"]) == ("", "")  # the null sender (bounces) is never listed


def test_malformed_lines_are_ignored_and_the_rest_counts(tagging):
    write_lists(
        tagging,
        "block\tpromo@shop.example",  # two fields
        "block\tpromo@shop.example\t*\textra",  # four
        "deny\tpromo@shop.example\t*",  # no such list
        "block\tnot-an-address\t*",
        "block\tpromo@shop.example\tnobody",
        "block\tpro mo@shop.example\t*",
        "# block\tpromo@shop.example\t*",
        "",
        "\xff\x00garbage",
        "allow\tpromo@shop.example\t*",
    )
    record, result = one_record(tagging, gtube("offer"), envelope("promo@shop.example", "bob@example.com"))
    no_lists(tagging)
    assert result.exit_code == 0 and len(result.queued) == 1, result.stderr
    assert record["skipped"] == ["spam scanners (sender allowed)"] and record["spam_tagged"] is False


def test_a_symlink_at_the_path_is_not_followed(tagging, tmp_path):
    target = tmp_path / "lists"
    target.write_text(HEADER + "allow\tpromo@shop.example\t*\n")
    link = tagging.spool / "records" / "sender-lists"
    link.symlink_to(target)
    try:
        record, result = one_record(tagging, gtube("offer"), envelope("promo@shop.example", "bob@example.com"))
    finally:
        link.unlink()
    assert result.exit_code == 0 and len(result.queued) == 1
    assert record["skipped"] == [] and record["spam_tagged"] is True  # spamd ran and found the GTUBE


def test_a_fifo_at_the_path_neither_hangs_nor_counts(tagging):
    fifo = tagging.spool / "records" / "sender-lists"
    os.mkfifo(fifo, 0o644)
    try:
        record, result = one_record(tagging, gtube("offer"), envelope("promo@shop.example", "bob@example.com"),
                                    timeout=60)  # fmt: skip
    finally:
        fifo.unlink()
    assert result.exit_code == 0 and len(result.queued) == 1, result.stderr
    assert record["skipped"] == [] and record["spam_tagged"] is True


def test_mail_from_relay_clients_is_not_looked_up(tagging):
    """The site's own users (RELAYCLIENT) are not spam-checked, so no list decides for them either."""
    write_lists(tagging, "block\tpromo@shop.example\t*")
    record, result = one_record(
        tagging, plain("lunch"), envelope("promo@shop.example", "bob@example.com"), env={"RELAYCLIENT": ""}
    )
    no_lists(tagging)
    assert result.exit_code == 0 and len(result.queued) == 1
    assert record["skipped"] == ["spamd (RELAYCLIENT set)"] and record["spam_tagged"] is False
    assert record["decision"] == {}


# ---------------------------------------------------------------- the resident engine


@pytest.fixture(scope="module")
def engine_with_spamd(spamd_server):
    installation = install_wrapped("--scanners", "spamd", "--spamd-servers", spamd_server.socket_path)
    running = Engine(installation).start()
    yield running
    running.stop()
    installation.remove()


def test_the_engine_reads_the_lists_again_when_the_loader_replaces_them(engine_with_spamd):
    engine = engine_with_spamd
    installation = engine.installation
    fresh(installation)
    sender = envelope("promo@shop.example", "bob@example.com")
    write_lists(installation, "allow\tpromo@shop.example\t*")
    allowed = installation.run(gtube("first"), sender)
    write_lists(installation, "block\tpromo@shop.example\t*", "# a second version of the file")
    blocked = installation.run(plain("second"), sender)
    no_lists(installation)
    scanned = installation.run(gtube("third"), sender)
    assert [r.exit_code for r in (allowed, blocked, scanned)] == [0, 0, 0]
    deadline = time.monotonic() + 30
    while len(read_records(installation)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)  # the engine writes a record after the client has its answer
    records = {record["subject"]: record for record in read_records(installation)}
    assert records["first"]["skipped"] == ["spam scanners (sender allowed)"]
    assert records["first"]["spam_tagged"] is False and ALLOWED_SKIP in allowed.queued[0].message
    assert records["second"]["decision"]["rule"] == "sender-block" and records["second"]["spam_tagged"] is True
    assert records["third"]["skipped"] == [] and records["third"]["spam_tagged"] is True
