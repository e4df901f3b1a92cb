"""Unpack, check and scan one message, in the order the original used: AV, policy, spam."""

from __future__ import annotations

from .records import Finding, ScanResult, Verdict
from .verdict import decide

TYPE_CHECKING = False  # typing costs milliseconds per message; only type checkers look here
if TYPE_CHECKING:
    from .message import Message


def inspect(message: Message) -> Verdict:
    """Run every configured check on the spooled message and decide."""
    from . import formatcheck, mime, policy

    settings = message.settings
    unpacked = mime.unpack(message.area.message_path, message.area.unpack_dir, settings, message.remaining)
    message.unpacked = unpacked
    findings: list[Finding] = list(unpacked.findings)
    results: list[ScanResult] = []
    if any(s.kind == "virus" for s in settings.scanners):
        from .scanners import run_virus_scanners

        results += run_virus_scanners(message)
    if settings.fix_mime:
        findings += formatcheck.check(unpacked, settings)
    findings += policy.check(message)
    blocked = any(f.kind in ("virus", "policy") and not f.monitor_only for f in findings) or any(
        r.findings for r in results
    )
    if not blocked and any(s.kind == "spam" for s in settings.scanners):
        from .scanners import run_spam_scanners

        results += run_spam_scanners(message)
    return decide(settings, findings, results)
