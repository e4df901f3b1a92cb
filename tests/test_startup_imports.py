"""The per-message start-up stays lean: a clean message must not import the heavy modules.

Each of these costs the whole mail flow milliseconds per message (measured with
`python -X importtime`); `make bench` measures the total. This test fails when a change
pulls one of them onto the clean path, long before a benchmark would be run.
"""

from __future__ import annotations

import pytest

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
    + b"plain text line\n"
    * 200
)

# What most mail user agents send for a plain message: MIME headers with a charset parameter and
# an RFC 2047 subject. The parameter parser and the encoded-word decoder are written by hand, so
# neither needs re; the body says "begin " (which makes the unpacker look for uuencoded blocks)
# and has a line starting with "begin", which must not need re either.
MIME_TEXT = (
    b"From: =?utf-8?q?Ren=C3=A9e?= <renee@example.org>\nTo: bob@example.com\nMIME-Version: 1.0\n"
    b'Content-Type: text/plain; charset="utf-8"; format=flowed\nContent-Transfer-Encoding: 8bit\n'
    b"Subject: =?utf-8?q?d=C3=A9jeuner_=C3=A0?= =?utf-8?b?bWlkaQ==?=\nMessage-ID: <y@example.org>\n\n"
    + "Déjeuner à midi, we begin at noon.\nbegin with the soup\n".encode()
    + b"plain text line\n" * 150
)

# What a webmail or Outlook sends: multipart/alternative, text and HTML, quoted-printable. The
# boundary parameter is quoted, bodies are decoded with binascii and neither part has a name, so
# the attachment-name patterns (double extension, CLSID) are never needed: no re either. A
# message with attachments may import re (double-barrelled names, regex policy rules); that is
# not the clean path.
ALTERNATIVE = (
    b"From: Alice <alice@example.org>\nTo: bob@example.com\nMIME-Version: 1.0\n"
    b"Subject: =?iso-8859-1?Q?r=E9union?=\nMessage-ID: <z@example.org>\n"
    b'Content-Type: multipart/alternative;\n\tboundary="----=_NextPart_000_0001_01D9"\n\n'
    b"This is a multi-part message in MIME format.\n\n"
    b"------=_NextPart_000_0001_01D9\n"
    b'Content-Type: text/plain; charset="iso-8859-1"\nContent-Transfer-Encoding: quoted-printable\n\n'
    + b"R=E9union demain =E0 dix heures, salle B. Merci de confirmer votre pr=E9sence=\n avant midi.\n"
    * 20
    + b"\n------=_NextPart_000_0001_01D9\n"
    b'Content-Type: text/html; charset="iso-8859-1"\nContent-Transfer-Encoding: quoted-printable\n\n'
    b'<html><head><meta http-equiv=3D"Content-Type" content=3D"text/html; charset=3Diso-8859-1"></head>\n'
    + b"<body><p>R=E9union demain =E0 dix heures, salle B.</p></body>\n" * 20
    + b"</html>\n\n------=_NextPart_000_0001_01D9--\n"
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


@pytest.mark.parametrize(
    "message", [CLEAN, MIME_TEXT, ALTERNATIVE], ids=["plain", "mime-text-encoded-subject", "multipart-alternative"]
)
def test_clean_message_imports_no_heavy_module(installation, message: bytes):
    modules = imported_modules(installation, message)
    heavy = {name: why for name, why in HEAVY_MODULES.items() if name in modules}
    assert heavy == {}


def attachment_message(filename: str, data: bytes) -> bytes:
    import base64

    encoded = base64.encodebytes(data)
    return (
        b'From: a@example.org\nSubject: file\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n\n'
        b"--b\nContent-Type: text/plain\n\nsee attached\n"
        b'--b\nContent-Type: application/octet-stream; name="' + filename.encode() + b'"\n'
        b"Content-Transfer-Encoding: base64\n\n" + encoded + b"--b--\n"
    )


def test_libmagic_is_loaded_only_for_binary_content_the_signatures_do_not_know(installation):
    """Loading libmagic's database costs ~20 ms a message: text and known signatures skip it."""
    assert "'have_python_magic': True" in installation.program.read_text()  # configure found python-magic
    text = imported_modules(installation, attachment_message("notes.txt", b"meeting notes\n" * 100))
    assert "magic" not in text
    pdf = imported_modules(installation, attachment_message("report.pdf", b"%PDF-1.4\n" + b"x" * 500))
    assert "magic" not in pdf
    unknown_binary = imported_modules(installation, attachment_message("data.bin", b"\x00\x01\x02\x03" * 300))
    assert "magic" in unknown_binary


def zip_bytes() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("minutes.txt", "minutes of the meeting\n" * 400)
        archive.writestr("docs/", b"")
        archive.writestr("docs/figures.csv", "quarter,revenue\n" + "2026Q1,1000\n" * 300)
    return buffer.getvalue()


@pytest.mark.parametrize("unzip", [False, True], ids=["listed", "unzipped"])
def test_zip_attachment_is_read_without_zipfile(make_installation, unzip: bool):
    """A zip (and every .docx, .xlsx, .odt) is opened by ziplisting: zipfile's imports cost 10 ms a message."""
    installation = make_installation("--unzip", "yes") if unzip else make_installation()
    modules = imported_modules(installation, attachment_message("minutes.zip", zip_bytes()))
    assert "qmail_scanner.unpack.ziplisting" in modules  # the archive was looked into
    assert "zipfile" not in modules
    heavy = {name: why for name, why in HEAVY_MODULES.items() if name in modules and name != "re"}
    assert heavy == {}
