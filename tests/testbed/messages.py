"""Messages for SMTP sessions through the bed: LF line ends (as qmail stores them), a unique marker each."""

from __future__ import annotations

import base64
import os

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
BOUNDARY = "=_qs_bed_boundary"


def _headers(marker: str, subject: str, extra: str = "") -> bytes:
    return (
        "From: Alice Example <alice@example.org>\n"
        "To: Bob Example <qmailtest@localhost>\n"
        f"Subject: {subject}\n"
        f"Message-ID: <{marker}@example.org>\n"
        "Date: Wed, 25 Nov 2026 08:00:00 +0000\n"
        "MIME-Version: 1.0\n" + extra
    ).encode()


def plain(marker: str, size: int = 4096, subject: str = "lunch on friday", body: bytes = b"") -> bytes:
    """A text/plain message of about `size` bytes (body lines of ordinary prose)."""
    head = _headers(marker, subject, "Content-Type: text/plain; charset=us-ascii\n") + b"\n" + body
    line = b"Shall we meet for lunch on Friday at noon? The usual place is fine with me.\n"
    return head + line * max(0, (size - len(head)) // len(line))


def with_attachment(marker: str, filename: str, data: bytes, content_type: str = "application/octet-stream") -> bytes:
    """multipart/mixed: a short text part and one base64 attachment."""
    encoded = base64.encodebytes(data)
    return (
        _headers(marker, "attachment", f'Content-Type: multipart/mixed; boundary="{BOUNDARY}"\n')
        + b"\n"
        + f"--{BOUNDARY}\nContent-Type: text/plain; charset=us-ascii\n\nSee the attachment.\n".encode()
        + f'--{BOUNDARY}\nContent-Type: {content_type}; name="{filename}"\n'.encode()
        + b"Content-Transfer-Encoding: base64\n"
        + f'Content-Disposition: attachment; filename="{filename}"\n\n'.encode()
        + encoded
        + f"--{BOUNDARY}--\n".encode()
    )


def random_attachment(marker: str, size: int) -> bytes:
    """`size` random bytes, as encrypted data looks: never the same twice, so no scanner cache answers."""
    return with_attachment(marker, "figures.bin", os.urandom(size))


def eicar(marker: str) -> bytes:
    return with_attachment(marker, "eicar.com", EICAR)


def gtube(marker: str) -> bytes:
    return plain(marker, 1024, subject="special offer", body=b"Buy now!\n" + GTUBE + b"\n")
