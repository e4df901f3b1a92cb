"""Through the real qmail: an SMTP client, notqmail's qmail-smtpd, the setuid wrapper as QMAILQUEUE,
the real qmail-queue and qmail-send delivering to a Maildir (tests/testbed/). The main paths run
once per way this project runs: a process per message, and the resident engine (--serve).

What a mail administrator sees: the SMTP reply, what lands in the mailbox, what is quarantined.
Envelope-error tests stay on the strict stand-in: a real qmail-queue exiting 91 leaves junk.
"""

from __future__ import annotations

import pytest

from daemons import (
    clamd_disposable_fixture,  # noqa: F401 - fixtures
    clamd_server_fixture,  # noqa: F401
    spamd_server_fixture,  # noqa: F401
)
from scanner_fixtures import zipped
from testbed import messages
from testbed.build import SIMSCAN_VARIANTS
from testbed.qmail import (
    TRACE_PREFIXES,
    assert_not_delivered,
    simscan_pointed_at,
    split_trace,
    unique_marker,
    wait_for_delivery,
)

CLAM_SIMSCAN = next(v for v in SIMSCAN_VARIANTS if v.name == "clam")


def _trace_is_only_ours_and_qmails(trace: list[bytes]) -> None:
    assert trace, "no trace headers at all"
    for line in trace:
        assert line.lower().startswith(TRACE_PREFIXES), line


def test_qmail_alone_delivers_byte_identical(qmail_bed):
    """The bed itself: qmail-smtpd, qmail-queue and qmail-send with no filter."""
    marker = unique_marker()
    sent = messages.plain(marker)
    assert qmail_bed.send(sent).accepted
    _trace_is_only_ours_and_qmails(split_trace(wait_for_delivery(marker), sent))


def test_clean_mail_is_delivered_byte_identical_past_our_headers(qmail_bed, bed_route, clamd_server):
    scanner = bed_route("--scanners", "clamd", "--clamd-servers", clamd_server.socket_path)
    for make in (messages.plain, lambda marker: messages.random_attachment(marker, 300_000)):
        marker = unique_marker()
        sent = make(marker)
        reply = qmail_bed.send(sent, scanner)
        assert reply.accepted, reply
        trace = split_trace(wait_for_delivery(marker), sent)
        _trace_is_only_ours_and_qmails(trace)
        assert any(line.startswith(b"X-Qmail-Scanner") for line in trace), trace
    assert scanner.work_files() == []


def test_eicar_is_quarantined_and_never_delivered(qmail_bed, bed_route, clamd_server):
    scanner = bed_route("--scanners", "clamd", "--clamd-servers", clamd_server.socket_path)
    marker = unique_marker()
    reply = qmail_bed.send(messages.with_attachment(marker, "e.zip", zipped("eicar.com", messages.EICAR)), scanner)
    assert reply.accepted, reply  # accepted, then kept from the recipient
    stored = [p for p in scanner.quarantined("viruses") if marker.encode() in p.read_bytes()]
    assert len(stored) == 1 and b"Eicar-Test-Signature" in stored[0].read_bytes()
    assert_not_delivered(marker)
    clean = unique_marker()
    notes = messages.with_attachment(clean, "notes.txt", b"nothing to see here\n", "text/plain")
    assert qmail_bed.send(notes, scanner).accepted
    assert b"clamd: 1." in wait_for_delivery(clean)  # the trace header names the scanner version


@pytest.mark.parametrize(("skip_option", "quarantined"), [((), True), (("--skip-text-msgs", "yes"), False)])
def test_eicar_line_in_a_plain_text_body_is_scanned_when_clamd_is_the_only_av(
    qmail_bed, bed_route, clamd_server, skip_option, quarantined
):
    scanner = bed_route("--scanners", "clamd", "--clamd-servers", clamd_server.socket_path, *skip_option)
    marker = unique_marker()
    sent = messages.plain(marker, body=b"The test string follows on its own line.\n" + messages.EICAR + b"\n")
    assert qmail_bed.send(sent, scanner).accepted
    if quarantined:
        stored = [p for p in scanner.quarantined("viruses") if marker.encode() in p.read_bytes()]
        assert len(stored) == 1 and b"Eicar-Test-Signature" in stored[0].read_bytes()
        assert_not_delivered(marker)
    else:  # the site kept the original's behaviour: no AV run on a message without attachments
        assert wait_for_delivery(marker).endswith(sent)


def test_virus_reject_text_reaches_the_client_from_fd_6(qmail_bed, bed_route, clamd_server):
    scanner = bed_route("--scanners", "clamd", "--clamd-servers", clamd_server.socket_path, "--virus-reject", "yes")
    marker = unique_marker()
    reply = qmail_bed.send(messages.eicar(marker), scanner)
    assert reply.code == 554 and "Virus found: Eicar-Test-Signature" in reply.text, reply
    assert_not_delivered(marker)
    assert scanner.work_files() == []


def test_spam_via_spamd_is_tagged_quarantined_or_refused(qmail_bed, bed_scanner, spamd_server):
    spamd = ("--scanners", "spamd", "--spamd-servers", spamd_server.socket_path)
    tagging = bed_scanner(*spamd, "--sa-subject", "[SPAM]")
    ham_marker, spam_marker, relayed_marker = unique_marker(), unique_marker(), unique_marker()
    assert qmail_bed.send(messages.plain(ham_marker), tagging).accepted
    assert b"X-Spam-Status: No, hits=" in wait_for_delivery(ham_marker)
    spam = messages.gtube(spam_marker)
    assert qmail_bed.send(spam, tagging).accepted
    tagged = wait_for_delivery(spam_marker)
    assert b"Subject: [SPAM] special offer" in tagged and b"X-Spam-Flag: YES" in tagged
    assert tagged.endswith(spam.split(b"\n\n", 1)[1])  # the body as sent
    # Mail from RELAYCLIENT connections (the site's own users) is not spam-checked.
    assert qmail_bed.send(messages.gtube(relayed_marker), tagging, env={"RELAYCLIENT": ""}).accepted
    assert b"X-Spam-Flag" not in wait_for_delivery(relayed_marker)

    verbose = bed_scanner("--scanners", "verbose_spamassassin", "--spamd-servers", spamd_server.socket_path)
    marker = unique_marker()
    assert qmail_bed.send(messages.gtube(marker), verbose).accepted
    assert b"X-Spam-Checker-Version: SpamAssassin" in wait_for_delivery(marker)

    quarantining = bed_scanner(*spamd, "--sa-quarantine", "100")
    marker = unique_marker()
    assert qmail_bed.send(messages.gtube(marker), quarantining).accepted
    assert any(marker.encode() in p.read_bytes() for p in quarantining.quarantined("spam"))
    assert_not_delivered(marker)


def test_policy_reject_is_a_5xx_with_the_reason(qmail_bed, bed_route, spamd_server):
    scanner = bed_route("--scanners", "spamd", "--spamd-servers", spamd_server.socket_path, "--sa-reject", "yes")
    marker = unique_marker()
    reply = qmail_bed.send(messages.gtube(marker), scanner)
    assert reply.code == 554 and "message refused as spam" in reply.text, reply
    assert_not_delivered(marker)


def test_dead_clamd_temp_fails_and_nothing_is_queued(qmail_bed, bed_route, clamd_disposable):
    scanner = bed_route("--scanners", "clamd", "--clamd-servers", clamd_disposable.socket_path)
    alive = unique_marker()
    assert qmail_bed.send(messages.random_attachment(alive, 4096), scanner).accepted
    wait_for_delivery(alive)
    clamd_disposable.stop()
    marker = unique_marker()
    reply = qmail_bed.send(messages.random_attachment(marker, 4096), scanner)
    assert reply.code == 451 and "scanner unavailable" in reply.text, reply
    assert "/" not in reply.text  # the sender learns the kind of problem, never a path
    assert_not_delivered(marker)
    assert scanner.work_files() == []


def test_dead_clamd_with_fail_pass_delivers_marked_unchecked(qmail_bed, bed_scanner, clamd_disposable):
    scanner = bed_scanner(
        "--scanners", "clamd", "--clamd-servers", clamd_disposable.socket_path, "--scanner-fail", "clamd=pass"
    )
    clamd_disposable.stop()
    marker = unique_marker()
    sent = messages.random_attachment(marker, 4096)
    assert qmail_bed.send(sent, scanner).accepted
    trace = split_trace(wait_for_delivery(marker), sent)
    assert any(b"Unchecked(clamd)" in line for line in trace), trace


def test_simscan_peer_rejects_eicar_with_its_text_and_delivers_clean(qmail_bed, clamd_server):
    """The C peer `make bench-smtp` measures against really scans, and its reject text reaches the client."""
    with simscan_pointed_at(clamd_server.socket_path):
        marker = unique_marker()
        reply = qmail_bed.send(messages.eicar(marker), CLAM_SIMSCAN.shim)
        assert reply.code == 554 and "virus" in reply.text.lower(), reply
        clean = unique_marker()
        sent = messages.plain(clean)
        assert qmail_bed.send(sent, CLAM_SIMSCAN.shim).accepted
        split_trace(wait_for_delivery(clean), sent)
    assert_not_delivered(marker, wait=0.5)
