"""What happens to mail a spam scanner flagged: tag, quarantine, drop, reject or retry later.

SpamAssassin scores follow the original's options (thresholds are added to spamd's required
score): --sa-delete N drops (or with --sa-reject refuses at SMTP time), --sa-quarantine N puts
the message into quarantine/spam, below that it is delivered tagged (--sa-subject and the
X-Spam-* headers the scanner attached). Rspamd's own action decides for Rspamd findings.
"""

from __future__ import annotations

from .outcomes import PermanentReject, TemporaryFailure
from .records import Finding, ScanResult, Verdict
from .sender_lists import BLOCK_RULE
from .settings import Settings


def decide_spam(settings: Settings, verdict: Verdict, spam_findings: list[Finding]) -> Verdict:
    """Set the verdict's action for a message with spam findings (verdict.decide calls this)."""
    first = spam_findings[0]
    verdict.reason = first.reason
    rules = {finding.rule for finding in spam_findings}
    if BLOCK_RULE in rules:
        return _blocked_sender(settings, verdict, _finding(spam_findings, BLOCK_RULE))
    if "rspamd-reject" in rules:
        text = _finding(spam_findings, "rspamd-reject").reason
        raise PermanentReject(f"5.7.1 message refused as spam ({text}) (#5.7.1)")
    if rules & {"rspamd-soft-reject", "rspamd-greylist"}:
        raise TemporaryFailure("4.7.1 message deferred by the spam filter, try again later (#4.7.1)")
    score_result = _scored_result(verdict.scan_results, rules)
    if score_result is None:
        return verdict  # tag-only findings (rspamd add header / rewrite subject): deliver
    score = score_result.spam_score or 0.0
    required = score_result.spam_required or 0.0
    if settings.sa_delete is not None and score >= required + settings.sa_delete:
        if settings.sa_reject:
            raise PermanentReject(f"5.7.1 message refused as spam (score {score:.1f}) (#5.7.1)")
        verdict.action = "drop"
        verdict.reason = f"spam dropped: score {score:.1f} >= {required + settings.sa_delete:.1f}"
        return verdict
    if settings.sa_reject and settings.sa_delete is None:
        raise PermanentReject(f"5.7.1 message refused as spam (score {score:.1f}) (#5.7.1)")
    if settings.sa_quarantine is not None and score >= required + settings.sa_quarantine:
        verdict.action = "quarantine"
        verdict.quarantine_kind = "spam"
        verdict.reason = f"spam quarantined: score {score:.1f} >= {required + settings.sa_quarantine:.1f}"
        return verdict
    return verdict


def _blocked_sender(settings: Settings, verdict: Verdict, finding: Finding) -> Verdict:
    """A sender the console blocked is spam past every threshold: the strongest spam action the site chose."""
    verdict.reason = finding.reason  # the message record's rule (sender-block) is found by this reason
    if settings.sa_reject:
        raise PermanentReject(f"5.7.1 message refused as spam ({finding.reason}) (#5.7.1)")
    if settings.sa_delete is not None:
        verdict.action = "drop"
    elif settings.sa_quarantine is not None:
        verdict.action = "quarantine"
        verdict.quarantine_kind = "spam"
    return verdict  # no threshold configured: delivered tagged, like spam spamd found


def _finding(findings: list[Finding], rule: str) -> Finding:
    return next(finding for finding in findings if finding.rule == rule)


def _scored_result(results: list[ScanResult], rules: set[str]) -> ScanResult | None:
    """The SpamAssassin result behind the findings (the highest score if several)."""
    scored = [
        result
        for result in results
        if result.spam_score is not None and result.scanner in rules and not result.scanner.startswith("rspamd")
    ]
    return max(scored, key=lambda result: result.spam_score or 0.0) if scored else None


def spam_envelope(settings: Settings, verdict: Verdict, raw: bytes) -> bytes:
    """Where delivered spam goes: --spams-redirect ADDR instead of its recipients, or with
    --spams-tosuffix SUFFIX to user-SUFFIX@domain (the FreeBSD port's options); else as received."""
    if not any(finding.kind == "spam" for finding in verdict.findings):
        return raw
    sender, _, rest = raw.partition(b"\0")
    recipients = [item[1:] for item in rest.split(b"\0") if item]
    if settings.spam_redirect:
        recipients = [settings.spam_redirect.encode()]
    elif settings.spam_recipient_suffix:
        suffix = b"-" + settings.spam_recipient_suffix.encode()
        recipients = [_suffixed(recipient, suffix) for recipient in recipients]
    return sender + b"\0" + b"".join(b"T" + recipient + b"\0" for recipient in recipients) + b"\0"


def _suffixed(recipient: bytes, suffix: bytes) -> bytes:
    user, at, domain = recipient.rpartition(b"@")
    return user + suffix + at + domain if at else recipient  # the port changed only user@domain
