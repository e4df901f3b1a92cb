"""Antivirus and spam scanners: which run for a message, concurrently, and what a failure means.

Each scanner module has `scan(config, message) -> ScanResult` (raising ScannerFailure when it
got no usable answer) and `version(config) -> str`. This module applies the failure policy
(ScannerConfig.fail: "tempfail" or "pass") so nothing that failed is ever reported as clean.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from ..records import ScanResult
from .common import ScannerFailure

TYPE_CHECKING = False  # importing typing costs every message milliseconds
if TYPE_CHECKING:
    from ..message import Message
    from ..settings import ScannerConfig, Settings

VERSION_CACHE_NAME = "scanner-versions"
SPAM_SCANNER_NAMES = ("spamd", "fast_spamassassin", "verbose_spamassassin", "spamassassin", "rspamd")


def scanner_module(name: str):
    """The module that implements the scanner called `name`."""
    if name == "clamd":
        from . import clamd

        return clamd
    if name in ("spamd", "fast_spamassassin", "verbose_spamassassin", "spamassassin"):
        from . import spamd

        return spamd
    if name == "rspamd":
        from . import rspamd

        return rspamd
    from . import cmdline

    if name in cmdline.DEFINITIONS:
        return cmdline
    raise ScannerFailure(f"unknown scanner {name!r}")


def run_virus_scanners(message: Message) -> list[ScanResult]:
    """Run every configured virus scanner (concurrently when there are several)."""
    settings = message.settings
    configs = [c for c in settings.scanners if c.kind == "virus"]
    if not configs:
        return []
    if message.area.message_size > settings.max_scan_size:
        message.notes.append(f"AV skipped: {message.area.message_size} bytes > max_scan_size {settings.max_scan_size}")
        return skipped(message, configs, f"size {message.area.message_size} > --max-scan-size {settings.max_scan_size}")
    unpacked = message.unpacked
    if settings.skip_text_msgs and unpacked is not None and not getattr(unpacked, "has_attachments", True):
        message.notes.append("AV skipped: no attachments (skip_text_msgs)")
        return skipped(message, configs, "no attachments, --skip-text-msgs")
    return run_scanners(message, configs)


def skipped(message: Message, configs: list[ScannerConfig], reason: str) -> list[ScanResult]:
    """No scan: each scanner is named with the reason, for the trace header."""
    message.skipped.extend(f"{config.name} ({reason})" for config in configs)
    return []


def spam_check_wanted(environ: dict[str, str]) -> bool:
    """Like the original: only mail from non-RELAYCLIENT senders, unless QS_SPAMASSASSIN is set."""
    return "RELAYCLIENT" not in environ or "QS_SPAMASSASSIN" in environ


def run_spam_scanners(message: Message) -> list[ScanResult]:
    """Run the configured spam scanners, when the RELAYCLIENT rule and the size limit allow."""
    settings = message.settings
    configs = [c for c in settings.scanners if c.kind == "spam"]
    if not configs:
        return []
    if not spam_check_wanted(message.environ):
        message.notes.append("spam check skipped: RELAYCLIENT set and QS_SPAMASSASSIN not set")
        return skipped(message, configs, "RELAYCLIENT set")
    if message.area.message_size > settings.max_scan_size:
        message.notes.append(f"spam check skipped: {message.area.message_size} bytes > max_scan_size")
        return skipped(message, configs, f"size {message.area.message_size} > --max-scan-size {settings.max_scan_size}")
    return run_scanners(message, configs)


def run_scanners(message: Message, configs: list[ScannerConfig]) -> list[ScanResult]:
    """Run the scanners; independent ones in threads, results in configured order."""
    versions = read_version_cache(message.settings.spooldir)
    if len(configs) == 1:
        return [run_one(configs[0], message, versions)]
    import threading

    results: list[ScanResult | None] = [None] * len(configs)

    def work(index: int) -> None:
        results[index] = run_one(configs[index], message, versions)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(1, len(configs))]
    for thread in threads:
        thread.start()
    work(0)
    for thread in threads:
        # Join in slices: the main thread stays responsive to the deadline signal.
        while thread.is_alive():
            thread.join(min(0.5, max(0.01, message.remaining())))
            if message.remaining() <= 0:
                break
    finished: list[ScanResult] = []
    for config, result in zip(configs, results):
        if result is None:  # the thread outlived the message's deadline
            result = failed_result(config, "timed out (message deadline)", versions)
        finished.append(result)
    return finished


def run_one(config: ScannerConfig, message: Message, versions: dict[str, str]) -> ScanResult:
    """One scanner, with the failure policy applied; bugs in a scanner count as failures too."""
    from ..outcomes import Outcome

    started = time.monotonic()
    try:
        result = scanner_module(config.name).scan(config, message)
    except ScannerFailure as failure:
        return failed_result(config, str(failure), versions)
    except Outcome:
        raise
    except Exception as error:
        return failed_result(config, f"internal error {type(error).__name__}: {error}", versions)
    finally:
        message.scanner_seconds[config.name] = time.monotonic() - started  # for the message record
    version = versions.get(config.name) or config.version
    if version and not result.version:
        from ..recordtype import replace

        result = replace(result, version=version)
    return result


def failed_result(config: ScannerConfig, reason: str, versions: dict[str, str]) -> ScanResult:
    """A failed scan: tempfail, or marked unchecked when the site chose fail=pass."""
    return ScanResult(
        config.name,
        version=versions.get(config.name) or config.version,
        failed=True,
        failure_reason=reason,
        unchecked=config.fail == "pass",
    )


def read_version_cache(spooldir: str) -> dict[str, str]:
    """Scanner versions as `-z` last saw them: `name<TAB>version` lines; missing file = none."""
    try:
        with open(os.path.join(spooldir, VERSION_CACHE_NAME), encoding="utf-8", errors="replace") as handle:
            text = handle.read(65536)
    except OSError:
        return {}
    versions = {}
    for line in text.splitlines():
        name, sep, version = line.partition("\t")
        if sep and name and version:
            versions[name] = version.strip()
    return versions


def probe_versions(settings: Settings, timeout: float = 10.0) -> dict[str, str | ScannerFailure]:
    """Ask every configured scanner for its version now; failures are returned, not raised."""
    found: dict[str, str | ScannerFailure] = {}
    for config in settings.scanners:
        try:
            found[config.name] = scanner_module(config.name).version(config, timeout)
        except ScannerFailure as failure:
            found[config.name] = failure
    return found


def refresh_version_cache(settings: Settings, probe: Callable[[Settings], dict] = probe_versions) -> dict[str, str]:
    """The `-z` step: ask each scanner for its version, keep old entries for those that did not answer."""
    versions = read_version_cache(settings.spooldir)
    for name, answer in probe(settings).items():
        if isinstance(answer, str) and answer:
            versions[name] = answer
    path = os.path.join(settings.spooldir, VERSION_CACHE_NAME)
    temporary = f"{path}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temporary, flags, 0o640)
    try:
        text = "".join(f"{name}\t{version}\n" for name, version in sorted(versions.items()))
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)
    os.replace(temporary, path)
    return versions


refresh_versions = refresh_version_cache  # the name admin_commands' -z step calls
