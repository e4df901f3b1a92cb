"""Mail::Toaster's `get_qmailscanner_virus_sender_ips` finds the client of each quarantined file.

The real sub (shared/compat/parsers) runs in a small perl driver, with the `$conf`/`$util` it
expects, over quarantines made by the installed program: it greps the file's first ten lines for
`HELO` and takes the first dotted quad of each `Received`-separated piece. It must give each
message's SMTP client and no other IP, for one recipient and for fifty with a long sender, for
hostile HELO names and senders, and the same as on the original's layout (the message as
received, qmail-smtpd's line on top).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from compat_fixtures import compat_dir
from harness import ROOT, envelope

TOOL = ROOT / "contrib" / "qs-quarantine"
SAMPLE = (ROOT / "tests" / "corpus" / "header-comment.eml").read_bytes()  # an internal-check block
DRIVER_HEAD = r"""
use strict; use warnings; no warnings 'uninitialized'; use Carp;
our ($conf, $util);
package FakeUtil;
sub new { return bless {}, shift }
sub get_dir_files { my ($self, %arg) = @_; opendir(my $dh, $arg{dir}) or die "$arg{dir}: $!";
    return map { "$arg{dir}/$_" } grep { !/^\./ } readdir $dh }
package main;
$conf = { debug => 0, qs_block_virus_senders => 1, qs_quarantine_clean => 0, qs_quarantine_dir => $ARGV[0] };
$util = FakeUtil->new;
"""
DRIVER_TAIL = '\nprint "$_\\n" for sort(get_qmailscanner_virus_sender_ips(undef));\n'


def sender_ips(quarantine: Path, work: Path) -> list[str]:
    """What the real sub reports for <quarantine>/new."""
    driver = work / "sender_ips.pl"
    parser = (compat_dir("parsers") / "mail-toaster-Qmail.pm-get_qmailscanner_virus_sender_ips.pl").read_text()
    driver.write_text(DRIVER_HEAD + parser + DRIVER_TAIL)
    done = subprocess.run(["perl", str(driver), str(quarantine)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def smtpd_line(host: str, helo: str | None, ip: str) -> bytes:
    """qmail-smtpd's Received line (no HELO part when the name equals the host)."""
    named = f" (HELO {helo})" if helo else ""
    return f"Received: from {host}{named} ({ip})\n  by mx.example.org with SMTP; 28 Nov 2026 01:00:00 -0000\n".encode()


# (client IP, TCPREMOTEHOST, HELO name, sender, recipients, qmail-smtpd line on top)
CASES = [
    ("202.54.63.141", "", "netbible.org", "a@example.net", 1, True),
    ("198.51.100.7", "mail.example.com", "mail.example.com", "x" * 300 + "@example.net", 50, True),
    ("192.0.2.33", "", "[6.6.6.6] Received 7.7.7.7", "HELO.Received.8.8.8.8@example.net", 3, True),
    ("203.0.113.50", "dyn.example.org", None, "b@example.net", 1, False),
]


def test_the_real_parser_finds_each_client_in_our_quarantine_and_the_originals(installation, tmp_path):
    original = tmp_path / "original" / "new"
    original.mkdir(parents=True)
    for number, (ip, host, helo, sender, count, on_top) in enumerate(CASES):
        recipients = [f"user{n}-with-a-long-name@recipients.example.org" for n in range(count)]
        message = (smtpd_line(host or "unknown", helo, ip) if on_top else b"") + SAMPLE
        env = {"TCPREMOTEIP": ip, "TCPREMOTEHOST": host}
        result = installation.run(message, envelope(sender, *recipients), env=env)
        assert result.exit_code == 0, result.stderr
        if on_top and "Received" not in (helo or ""):  # the original reports a hostile HELO's IPs too
            (original / f"{number}.msg").write_bytes(message)
    [quarantine] = [path.parent.parent for path in installation.spool.glob("quarantine/*/new/*")][:1]
    stored = sorted((quarantine / "new").iterdir())
    assert len(stored) == len(CASES)
    expected = sorted(case[0] for case in CASES)
    assert sender_ips(quarantine, tmp_path) == expected
    # The original's layout, for the messages it read right: the same clients.
    on_original = sorted(case[0] for case in CASES if case[5] and "Received" not in (case[2] or ""))
    assert sender_ips(original.parent, tmp_path) == on_original
    assert set(on_original) < set(expected)
    for path in stored:
        head = path.read_bytes().split(b"\n")[:10]
        assert [line for line in head if b"HELO" in line] == [head[0]], head  # hostile words are broken


def test_the_listing_still_reads_fifty_recipients(installation):
    recipients = [f"user{n}@example.org" for n in range(50)]
    env = {"TCPREMOTEIP": "198.51.100.9"}
    assert (
        installation.run(
            smtpd_line("unknown", "big.example", "198.51.100.9") + SAMPLE,
            envelope("s" * 200 + "@example.net", *recipients),
            env=env,
        ).exit_code
        == 0
    )
    argv = [sys.executable, str(TOOL), "--spooldir", str(installation.spool), "list", "--tab"]
    listing = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    [row] = [line.split("\t") for line in listing.splitlines()]
    assert row[4] == "s" * 200 + "@example.net"
    assert row[5].split(",") == recipients
