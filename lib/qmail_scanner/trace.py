"""The trace header on delivered mail, in the 2.x or the 1.x form of the original."""

from __future__ import annotations

import os
import time

from .message_headers import header_safe
from .records import Envelope, ScanResult, Verdict
from .settings import Settings


def status_text(verdict: Verdict, environ: dict[str, str]) -> str:
    """The compact status of the original, e.g. `Clear:RC:1(127.0.0.1):SA:0(1.2/5.0):`."""
    relay = "1" if "RELAYCLIENT" in environ else "0"
    remote_ip = header_safe(environ.get("TCPREMOTEIP", "127.0.0.1"), 64)
    status = f"Clear:RC:{relay}({remote_ip}):"
    for result in verdict.scan_results:
        if result.unchecked:
            status += f"Unchecked({result.scanner}):"
        elif result.spam_score is not None:
            flag = "1" if any(f.kind == "spam" for f in result.findings) else "0"
            status += f"SA:{flag}({result.spam_score:.1f}/{result.spam_required or 0:.1f}):"
    for finding in verdict.findings:
        if finding.monitor_only:
            status += f"DLP({finding.rule}):"
    return status


def scanner_versions(settings: Settings, results: list[ScanResult]) -> str:
    """`clamd: 1.4.3/27000. perlscan: 2.0.` as in the original's trace."""
    # Every configured scanner is named, as in the original, even when this message skipped it.
    versions = {config.name: config.version for config in settings.scanners}
    versions.update({r.scanner: r.version for r in results if r.version})
    versions = {name: version for name, version in versions.items() if version}
    texts = [f"{name}: {version}." for name, version in versions.items()]
    texts.append(f"pyscan: {settings.version}.")
    return " ".join(texts)


def trace_header(
    settings: Settings, envelope: Envelope, verdict: Verdict, environ: dict[str, str], seconds: float
) -> bytes:
    """Render the trace header line(s), folded, ending with a newline."""
    remote_ip = header_safe(environ.get("TCPREMOTEIP", "127.0.0.1"), 64)
    remote_host = header_safe(environ.get("TCPREMOTEHOST", "unknown"), 255)
    date = time.strftime("%d %b %Y %H:%M:%S -0000", time.gmtime())
    ambiguous = ""
    if verdict.ambiguities:
        ambiguous = f"Ambiguous MIME, every reading checked: {header_safe('; '.join(verdict.ambiguities), 300)}.\n "
    if verdict.skipped:
        # A scanner that did not run is said where the recipient looks, not only in qmail-queue.log.
        ambiguous += f"Skipped: {header_safe(', '.join(verdict.skipped), 300)}.\n "
    body = (
        f"from {remote_host} ({remote_ip}) by {settings.hostname} "
        f"(envelope-sender <{header_safe(envelope.sender, 1003)}>, uid {os.getuid()}) "
        f"with qmail-scanner-{settings.version}\n "
        f"({scanner_versions(settings, verdict.scan_results)}\n "
        f"{status_text(verdict, environ)}.\n "
        f"{ambiguous}"
        f"Processed in {seconds:.3f} secs); {date}"
    )
    name = "Received" if settings.trace_header_style == "received" else "X-Qmail-Scanner-Diagnostics"
    return f"{name}: {body}\n".encode("utf-8", "surrogateescape")
