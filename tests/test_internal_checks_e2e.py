"""The internal checks through the installed program: real pipes, the real spool, the qmail-queue stand-in."""

from __future__ import annotations

from harness import envelope
from mime_fixtures import CORPUS


def test_policy_hit_is_quarantined_not_queued(installation) -> None:
    result = installation.run((CORPUS / "exe-attachment.eml").read_bytes())
    assert result.exit_code == 0, result.stderr
    assert result.queued == []
    stored = installation.quarantined("policy")
    assert len(stored) == 1
    assert b"setup.exe" in stored[0].read_bytes()
    assert installation.work_files() == []


def test_format_check_hit_is_quarantined(installation) -> None:
    result = installation.run((CORPUS / "header-comment.eml").read_bytes())
    assert result.exit_code == 0, result.stderr
    assert result.queued == []
    assert len(installation.quarantined("policy")) == 1


def test_clean_real_world_shapes_are_queued(installation) -> None:
    for name in (
        "clean-alternative-inline-images.eml",
        "clean-smime-signed.eml",
        "clean-calendar-invite.eml",
        "clean-forwarded.eml",
        "clean-nonascii-names.eml",
    ):
        data = (CORPUS / name).read_bytes()
        result = installation.run(data, envelope("alice@example.org", "bob@example.net"))
        assert result.exit_code == 0, (name, result.stderr)
        assert len(result.queued) == 1, name
        assert result.queued[0].body_after_trace == data, name
    assert not (installation.spool / "quarantine" / "policy" / "new").exists() or not installation.quarantined("policy")


def test_edited_policy_file_takes_effect_without_recompiling(installation) -> None:
    rules = installation.spool / "quarantine-events.txt"
    rules.write_text(rules.read_text() + "You are 0wNed\tSubject:\tknown worm subject\n")
    message = b"From: a@example.org\nSubject: you are 0wned\n\nhi\n"
    result = installation.run(message)
    assert result.exit_code == 0, result.stderr
    assert result.queued == []
    assert len(installation.quarantined("policy")) == 1
