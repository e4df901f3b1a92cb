"""The per-message start-up stays lean: a clean message must not import the heavy modules.

Each of these costs the whole mail flow milliseconds per message (measured with
`python -X importtime`); `make bench` measures the total. This test fails when a change
pulls one of them onto the clean path, long before a benchmark would be run.
"""

from __future__ import annotations

from harness import envelope

HEAVY_MODULES = {
    "dataclasses": "13 ms with inspect; use recordtype.record",
    "inspect": "part of dataclasses' cost",
    "typing": "8 ms; annotations are strings, use TYPE_CHECKING = False",
    "enum": "3.6 ms; pulled in by re, signal, socket",
    "re": "4.8 ms with enum; import it inside the function that needs a regex",
    "signal": "imports enum; use _signal",
    "socket": "only scanners need it",
    "selectors": "only subprocess needs it",
    "subprocess": "use os.posix_spawn",
    "shutil": "use spool.remove_tree",
    "email": "its parser and header registry are slow; the unpacker is our own",
    "json": "only rspamd needs it",
    "threading": "only concurrent scanners need it",
    "tempfile": "work files come from spool",
    "zipfile": "only messages with archives need it",
    "base64": "binascii does the decoding",
    "logging": "logs write their own lines",
}

CLEAN = (
    b"Received: from client by mx\nFrom: Alice <alice@example.org>\nTo: bob@example.com\n"
    b"Subject: lunch\nMessage-ID: <x@example.org>\nDate: Wed, 25 Nov 2026 08:00:00 +0000\n\n"
    + b"plain text line\n" * 200
)


def imported_modules(installation, message: bytes) -> set[str]:
    python = installation.program.read_text().splitlines()[0][2:].split()[0]
    result = installation.run(
        message,
        envelope("alice@example.org", "bob@example.com"),
        command=[python, "-I", "-S", "-X", "importtime", str(installation.program)],
    )
    assert result.exit_code == 0, result.stderr
    assert len(result.queued) == 1
    modules = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            modules.add(line.rsplit("|", 1)[1].strip())
    assert "qmail_scanner.main" in modules  # the measurement itself works
    return modules


def test_clean_text_message_imports_no_heavy_module(installation):
    modules = imported_modules(installation, CLEAN)
    heavy = {name: why for name, why in HEAVY_MODULES.items() if name in modules}
    assert heavy == {}
