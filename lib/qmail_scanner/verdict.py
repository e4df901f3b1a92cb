"""Turn findings and scanner results into one decision."""

from __future__ import annotations

from .outcomes import PermanentReject, TemporaryFailure
from .records import Finding, ScanResult, Verdict
from .settings import Settings


def decide(settings: Settings, findings: list[Finding], results: list[ScanResult]) -> Verdict:
    """Viruses first, then policy, then spam; a failed scanner temp-fails unless fail=pass."""
    verdict = Verdict(findings=list(findings), scan_results=list(results))
    for result in results:
        verdict.findings.extend(result.findings)
        verdict.add_headers.extend(result.extra_headers)
    failed = [r for r in results if r.failed and not r.unchecked]
    viruses = [f for f in verdict.findings if f.kind == "virus"]
    blocking_policy = [f for f in verdict.findings if f.kind == "policy" and not f.monitor_only]
    spam = [f for f in verdict.findings if f.kind == "spam"]
    if viruses:
        first = viruses[0]
        verdict.reason = first.reason
        if settings.virus_reject:
            raise PermanentReject(f"5.7.1 Virus found: {first.rule} (#5.7.1)")
        verdict.action = "drop" if settings.virus_to_delete else "quarantine"
        verdict.quarantine_kind = "viruses"
        return verdict
    if failed:
        names = ", ".join(r.scanner for r in failed)
        reasons = ", ".join(f"{r.scanner}: {r.failure_reason}" for r in failed)
        detail = f"scanner failed: {reasons}"
        raise TemporaryFailure(f"4.3.0 scanner unavailable ({names}), try again later", None, detail)
    if blocking_policy:
        verdict.action = "quarantine"
        verdict.quarantine_kind = "policy"
        verdict.reason = blocking_policy[0].reason
        return verdict
    if spam:
        from .spam_policy import decide_spam

        return decide_spam(settings, verdict, spam)
    return verdict
