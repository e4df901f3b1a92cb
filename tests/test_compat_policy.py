"""Real policy files of Qmail-Scanner sites (1.2x and 2.x) load and block what they name, through the installed program.

Every rule of every file in shared/compat/policy/ gets a message made to match it; the
message must land in quarantine/policy with that rule's description as the reason. A 1.2x
file is installed under its own name (quarantine-attachments.txt), as a 1.2x site has it.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from compat_fixtures import compat_dir, compat_files, example_of, is_legacy_policy
from harness import envelope

DEFAULT_HEADERS = {
    "Date": "Wed, 25 Nov 2026 08:00:00 +0000",
    "From": "Alice Example <alice@example.org>",
    "To": "Bob Example <bob@example.net>",
    "Subject": "quarterly figures",
    "Message-ID": "<compat-1@mail.example.org>",
    "MIME-Version": "1.0",
}
VIRTUAL = ("MAILFROM", "RCPTTO", "REMOTEIPADDR")


def rules_of(text: str) -> list[tuple[str, str, str]]:
    """(value, type, description) of every rule line, read the simple way the original's docs describe."""
    rules = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [field.strip() for field in line.split("\t") if field.strip()]
        rules.append((fields[0], fields[1], " ".join(fields[2:])))
    return rules


def attachment_name(value: str) -> str:
    plain = all(char.isalnum() or char in "_.~ -" for char in value)
    name = value if plain else example_of(value)
    return f"attachment{name}" if name.startswith(".") else name


def message(headers: dict[str, str], attachment: tuple[str, int] | None = None) -> bytes:
    fields = dict(DEFAULT_HEADERS)
    for name, value in headers.items():
        fields = {key: text for key, text in fields.items() if key.lower() != name.lower()}
        fields[name] = value
    if attachment is None:
        head = "".join(f"{name}: {value}\n" for name, value in fields.items())
        return (head + "Content-Type: text/plain\n\nThe figures are attached in the next mail.\n").encode()
    name, size = attachment
    data = (b"quarterly figures, nothing executable here\n" * (size // 43 + 1))[:size]
    head = "".join(f"{key}: {value}\n" for key, value in fields.items())
    return (
        head
        + "Content-Type: multipart/mixed; boundary=BOUNDARY\n\n--BOUNDARY\nContent-Type: text/plain\n\nsee attached\n"
        + f'--BOUNDARY\nContent-Type: application/octet-stream; name="{name}"\n'
        + f'Content-Disposition: attachment; filename="{name}"\nContent-Transfer-Encoding: base64\n\n'
    ).encode() + base64.encodebytes(data) + b"--BOUNDARY--\n"


def case_for(value: str, kind: str) -> tuple[bytes, bytes, dict[str, str]]:
    """(message, envelope, environment) matching one rule."""
    sender, recipients, environ = "sender@example.org", ["rcpt@example.com"], {"TCPREMOTEIP": "198.51.100.7"}
    size_text = kind[5:] if kind.upper().startswith("SIZE=") else kind
    if size_text.lstrip("-").isdecimal():
        size = int(size_text)
        data = message({}, (attachment_name(value), size if size > 0 else 300))
    elif kind.upper() in VIRTUAL:
        example = example_of(value)
        sender = example if kind.upper() == "MAILFROM" else sender
        recipients = [example] if kind.upper() == "RCPTTO" else recipients
        environ = {"TCPREMOTEIP": example} if kind.upper() == "REMOTEIPADDR" else environ
        data = message({})
    elif kind.endswith(":"):
        header = kind[:-1]
        for prefix in ("virus-", "policy-"):
            if header.lower().startswith(prefix):
                header = header[len(prefix) :]
        data = message({header: example_of(value)})
    else:
        raise AssertionError(f"no message generator for rule type {kind!r}: extend this test")
    return data, envelope(sender, *recipients), environ


def stored_reason(path: Path) -> str:
    """The quarantine reason on top of a stored message."""
    for line in path.read_bytes().split(b"\n"):
        if line.startswith(b"X-QS-Envelope-Reason: "):
            return line.split(b": ", 1)[1].decode()
    return ""


@pytest.mark.parametrize("policy_file", compat_files("policy"), ids=lambda path: path.name)
def test_site_policy_file_loads_and_blocks_every_rule(installation, policy_file: Path) -> None:
    compat_dir("policy")
    text = policy_file.read_text(encoding="utf-8", errors="replace")
    legacy = is_legacy_policy(text)
    target = installation.spool / ("quarantine-attachments.txt" if legacy else "quarantine-events.txt")
    if legacy:
        (installation.spool / "quarantine-events.txt").unlink()  # a 1.2x site has only its own file
    target.write_text(text)

    compiled = subprocess.run([str(installation.program), "-g"], capture_output=True, text=True, timeout=60)
    assert compiled.returncode == 0, compiled.stderr
    rules = rules_of(text)
    assert f"compiled {len(rules)} rules" in compiled.stdout

    clean = installation.run(message({}))
    assert clean.exit_code == 0 and len(clean.queued) == 1, clean.stderr

    policy_dir = installation.spool / "quarantine" / "policy" / "new"
    for value, kind, description in rules:
        data, envelope_bytes, environ = case_for(value, kind)
        before = set(policy_dir.iterdir())
        result = installation.run(data, envelope_bytes, env=environ)
        assert result.exit_code == 0 and result.queued == [], f"{value!r} {kind!r} not blocked: {result.stderr}"
        added = set(policy_dir.iterdir()) - before
        assert len(added) == 1, f"{value!r} {kind!r}"
        assert stored_reason(added.pop()) == description, (value, kind)
    logged = [line.split("\t")[4] for line in (installation.spool / "quarantine.log").read_text().splitlines()]
    assert logged == [description for _value, _kind, description in rules]
