"""Unpack, check and scan one message, in the order the original used: AV, policy, spam."""

from __future__ import annotations

from .records import Finding, ScanResult, Verdict
from .verdict import decide

TYPE_CHECKING = False  # typing costs milliseconds per message; only type checkers look here
if TYPE_CHECKING:
    from .message import Message


def inspect(message: Message) -> Verdict:
    """Run every configured check on the spooled message and decide."""
    from . import formatcheck, policy, unpack

    settings = message.settings
    unpacked = unpack.unpack(message.area.message_path, message.area.unpack_dir, settings, message.remaining)
    message.unpacked = unpacked
    findings: list[Finding] = list(unpacked.findings)
    results: list[ScanResult] = []
    wants_spam = any(s.kind == "spam" for s in settings.scanners)
    listed, entry = _listed_sender(message) if wants_spam else ("", "")
    if listed:
        wants_spam = False  # the console's list decided: no spam scanner runs
        message.skipped.append(f"spam scanners (sender {'allowed' if listed == 'allow' else 'blocked'})")
    early_spam = None
    try:
        if any(s.kind == "virus" for s in settings.scanners):
            from .scanners import run_virus_scanners

            if wants_spam:  # spamd works while clamd does: the message costs the slower one, not both
                from .concurrent_scan import BackgroundScan

                early_spam = BackgroundScan(message)
            results += run_virus_scanners(message)
        if settings.fix_mime:
            findings += formatcheck.check(unpacked, settings)
        findings += policy.check(message)
        if unpacked.ambiguities:
            findings = _name_the_readings(message, findings)
        blocked = any(f.kind in ("virus", "policy") and not f.monitor_only for f in findings) or any(
            r.findings for r in results
        )
        if early_spam is not None:
            # Waited for even when blocked (no scan outlives its message), but then its answer does not count.
            spam_results = early_spam.results()
            if not blocked:
                results += early_spam.raise_failure() or spam_results
        elif not blocked and wants_spam:
            from .scanners import run_spam_scanners

            results += run_spam_scanners(message)
        if listed == "block" and not blocked:
            from .sender_lists import blocked_result

            results.append(blocked_result(settings, entry))
    finally:
        if early_spam is not None:
            early_spam.finish()  # after a failure too: no scan outlives its message
    message.findings, message.scan_results = findings, results  # the record of a refusal names them
    verdict = decide(settings, findings, results)
    verdict.skipped = list(message.skipped)
    if settings.fix_mime == 1:
        verdict.ambiguities = [a.text for a in unpacked.ambiguities]
    return verdict


def _listed_sender(message: Message) -> tuple[str, str]:
    """("allow" or "block", the entry) when the console's sender lists decide the spam verdict, else ("", "").

    Only mail the spam scanners would look at (the RELAYCLIENT rule) is looked up.
    """
    from .scanners import spam_check_wanted

    if not spam_check_wanted(message.environ):
        return "", ""
    from .sender_lists import current_lists, listed

    lists = current_lists(message.settings.spooldir)
    return listed(lists, message.envelope.sender, message.envelope.recipients) if lists else ("", "")


def _name_the_readings(message: Message, findings: list[Finding]) -> list[Finding]:
    """Findings only another reading shows say which; the debug log names every ambiguity."""
    from .logs import note

    unpacked = message.unpacked
    texts = "; ".join(a.text for a in unpacked.ambiguities)
    note(message, f"ambiguous MIME, read {unpacked.readings} way(s): {texts}")
    if message.settings.fix_mime != 1 or not any(f.kind == "policy" for f in findings):
        return findings
    import copy

    from . import formatcheck, policy
    from .unpack.readings import note_readings

    first = copy.copy(unpacked)
    first.parts = unpacked.parts[: unpacked.first_reading_parts]
    message.unpacked = first
    try:
        first_findings = formatcheck.check(first, message.settings) + policy.check(message)
    finally:
        message.unpacked = unpacked
    return note_readings(findings, unpacked, first_findings)
