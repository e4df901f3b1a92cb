"""--settings-per-domain: recipient, then domain, then default; strictest of several; broken lines reported."""

from __future__ import annotations

from actions_fixtures import maildir_files, make_message, make_settings
from qmail_scanner.actions import carry_out
from qmail_scanner.domain_settings import apply, check
from qmail_scanner.records import Verdict
from qmail_scanner.settings import ScannerConfig, Settings

SCANNERS = (ScannerConfig("clamd", "virus"), ScannerConfig("spamd", "spam"))
TABLE = """\
# per-domain settings
default          scanners=clamd sa_quarantine=5 sa_subject="[SPAM] default"
example.org      scanners=clamd,spamd sa_quarantine=3 sa_delete=10
ceo@example.org  sa_quarantine=1 sa_reject=yes sa_subject=***CEO***
lax.example.net  scanners=none sa_quarantine=no sa_maxsize=100
"""


def site(tmp_path, text=TABLE, **values) -> Settings:
    path = tmp_path / "settings_per_domain.txt"
    path.write_text(text)
    return Settings(
        spooldir=str(tmp_path),
        settings_per_domain=True,
        settings_per_domain_file=str(path),
        scanners=SCANNERS,
        **values,
    )


def names(settings: Settings) -> list[str]:
    return [s.name for s in settings.scanners]


def test_recipient_then_domain_then_default(tmp_path):
    settings = site(tmp_path)
    ceo = apply(settings, ("CEO@Example.org",))
    assert (ceo.sa_quarantine, ceo.sa_reject, ceo.sa_subject) == (1.0, True, "***CEO***")
    assert names(ceo) == ["clamd", "spamd"]  # everything not set for the address stays as configured
    staff = apply(settings, ("staff@example.org",))
    assert (staff.sa_quarantine, staff.sa_delete, names(staff)) == (3.0, 10.0, ["clamd", "spamd"])
    other = apply(settings, ("someone@else.com",))
    assert (other.sa_quarantine, other.sa_subject, names(other)) == (5.0, "[SPAM] default", ["clamd"])
    lax = apply(settings, ("x@lax.example.net",))
    assert (names(lax), lax.sa_quarantine, lax.sa_maxsize) == ([], None, 100)


def test_strictest_of_several_recipients(tmp_path):
    merged = apply(site(tmp_path), ("x@lax.example.net", "staff@example.org", "ceo@example.org"))
    assert names(merged) == ["clamd", "spamd"]
    assert merged.sa_quarantine == 1.0 and merged.sa_delete == 10.0 and merged.sa_reject is True
    assert merged.sa_maxsize == 100  # the only one set
    assert merged.sa_subject == "***CEO***"


def test_file_changes_apply_to_the_next_message(tmp_path):
    settings = site(tmp_path)
    assert apply(settings, ("a@example.org",)).sa_quarantine == 3.0
    (tmp_path / "settings_per_domain.txt").write_text("example.org sa_quarantine=7\n")
    assert apply(settings, ("a@example.org",)).sa_quarantine == 7.0


def test_broken_lines_are_reported_by_number_and_skipped(tmp_path):
    text = TABLE + "bad.example.com  sa_quarantine=lots\nworse.example.com scanners=sophos\nhalf.example.com foo\n"
    settings = site(tmp_path, text)
    reported = []
    merged = apply(settings, ("a@bad.example.com",), reported.append)
    assert merged.sa_quarantine == 5.0  # the broken line is skipped: the default applies
    assert len(reported) == 3
    assert "line 6: sa_quarantine: 'lots' is not a number" in reported[0]
    assert "line 7: scanner(s) not configured: sophos" in reported[1]
    assert "line 8:" in reported[2]
    assert check(settings) == [r.split(" ", 1)[1] for r in reported]


def test_off_or_missing_file_changes_nothing(tmp_path):
    settings = Settings(spooldir=str(tmp_path), scanners=SCANNERS, settings_per_domain=True)
    assert apply(settings, ("a@example.org",)) is settings
    off = Settings(scanners=SCANNERS)
    assert apply(off, ("a@example.org",)) is off


def test_spam_maildir_per_recipient_receives_the_quarantined_copy(tmp_path, standin_binary, queue_dir):
    spam_box = tmp_path / "ceo-spam"
    for sub in ("tmp", "new", "cur"):
        (spam_box / sub).mkdir(parents=True)
    table = f"ceo@example.org sa_quarantine=1 spam_maildir={spam_box}\n"
    (tmp_path / "table").write_text(table)
    settings = make_settings(
        tmp_path / "spool", settings_per_domain=True, settings_per_domain_file=str(tmp_path / "table"), log_details="no"
    )
    settings = apply(settings, ("ceo@example.org",))
    message = make_message(settings, b"Subject: win\n\nmoney\n", recipients=("ceo@example.org",))
    assert carry_out(message, Verdict(action="quarantine", quarantine_kind="spam", reason="spam")) == 0
    assert len(maildir_files(spam_box)) == 1
    assert maildir_files(tmp_path / "spool" / "quarantine" / "spam") == []
