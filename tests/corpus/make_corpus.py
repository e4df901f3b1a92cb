#!/usr/bin/env python3
"""Write the hand-built test messages of tests/corpus/ (run once; the files are committed).

Each message is spelled out byte for byte below, so a reader sees exactly what shape is
tested; binary payloads (zip, TNEF) are built here because they cannot be typed. The expected
verdict of every file is in expected.tsv.
"""

from __future__ import annotations

import base64
import io
import os
import struct
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))

# A tiny "Windows program": the MZ/PE signature is what the checks look for, nothing runs.
FAKE_EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 44 + b"PE\x00\x00" + b"x" * 200
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
HEAD = b"From: Alice <alice@example.org>\nTo: bob@example.net\nDate: Mon, 1 Jan 2024 10:00:00 +0000\n"


def b64(data: bytes) -> bytes:
    return base64.encodebytes(data)


def make_zip(members: list[tuple[str, bytes]], password_flag: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    raw = buffer.getvalue()
    if password_flag:
        # Set the "encrypted" bit in every local and central header, as an encrypting zip tool does.
        raw = bytearray(raw)
        for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            start = 0
            while (found := raw.find(signature, start)) >= 0:
                flags = struct.unpack_from("<H", raw, found + offset)[0]
                struct.pack_into("<H", raw, found + offset, flags | 1)
                start = found + 4
        raw = bytes(raw)
    return raw


def tnef_attribute(level: int, attribute: int, data: bytes, checksum: int | None = None) -> bytes:
    if checksum is None:
        checksum = sum(data) & 0xFFFF
    return struct.pack("<BII", level, attribute, len(data)) + data + struct.pack("<H", checksum)


def make_tnef(name: str, data: bytes, bad_checksum: bool = False) -> bytes:
    """A minimal TNEF stream (winmail.dat) carrying one attachment."""
    out = struct.pack("<IH", 0x223E9F78, 0x0001)
    out += tnef_attribute(1, 0x00089006, struct.pack("<I", 0x00010000))  # attTnefVersion
    out += tnef_attribute(1, 0x00069007, b"IPM.Microsoft Mail.Note\x00")  # attMessageClass
    out += tnef_attribute(2, 0x00069002, b"\x01\x00\x00\x00" + b"\x00" * 10)  # attAttachRenddata
    out += tnef_attribute(2, 0x00018010, name.encode() + b"\x00")  # attAttachTitle
    out += tnef_attribute(2, 0x0006800F, data, 0x1234 if bad_checksum else None)  # attAttachData
    return out


def multipart(boundary: bytes, parts: list[bytes], extra_head: bytes = b"", subject: bytes = b"test") -> bytes:
    out = HEAD + b"Subject: " + subject + b"\nMIME-Version: 1.0\n" + extra_head
    out += (
        b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\n\nThis is a multi-part message in MIME format.\n'
    )
    for part in parts:
        out += b"--" + boundary + b"\n" + part
        if not part.endswith(b"\n"):
            out += b"\n"
    return out + b"--" + boundary + b"--\n"


def text_part(text: bytes = b"Hello, the file is attached.\n") -> bytes:
    return b"Content-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: 7bit\n\n" + text


def attachment(content_type: bytes, name: bytes, data: bytes, disposition_name: bytes | None = None) -> bytes:
    disposition_name = name if disposition_name is None else disposition_name
    return (
        b"Content-Type: " + content_type + b'; name="' + name + b'"\nContent-Transfer-Encoding: base64\n'
        b'Content-Disposition: attachment; filename="' + disposition_name + b'"\n\n' + b64(data)
    )


def messages() -> dict[str, bytes]:
    m: dict[str, bytes] = {}
    # ---- clean shapes that must pass
    m["clean-plain.eml"] = (
        HEAD + b"Subject: lunch\nMessage-ID: <1@example.org>\nMIME-Version: 1.0\n"
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nSee you at noon.\n"
    )
    m["clean-no-mime.eml"] = HEAD + b"Subject: old style\n\nA message without any MIME headers.\n"
    m["clean-alternative-inline-images.eml"] = (
        HEAD + b"Subject: newsletter\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/related; boundary="rel"; type="multipart/alternative"\n\n'
        b'--rel\nContent-Type: multipart/alternative; boundary="alt"\n\n'
        b"--alt\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
        b"Caf=C3=A9 news, see the logo.=\nSoft break.\n"
        b"--alt\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
        b'<p>Caf=C3=A9 news <img src=3D"cid:logo@x"></p>\n'
        b"--alt--\n"
        b'--rel\nContent-Type: image/png; name="logo.png"\nContent-Transfer-Encoding: base64\n'
        b'Content-ID: <logo@x>\nContent-Disposition: inline; filename="logo.png"\n\n' + b64(PNG) + b"--rel--\n"
    )
    m["clean-smime-signed.eml"] = (
        HEAD + b"Subject: signed\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256; boundary="sig"\n\n'
        b"This is an S/MIME signed message\n\n--sig\n"
        + text_part(b"Signed text.\n")
        + b'--sig\nContent-Type: application/pkcs7-signature; name="smime.p7s"\nContent-Transfer-Encoding: base64\n'
        b'Content-Disposition: attachment; filename="smime.p7s"\n\n'
        + b64(b"\x30\x82\x01\x00" + b"\x01" * 60)
        + b"--sig--\n"
    )
    m["clean-pgp-mime-signed.eml"] = (
        HEAD + b"Subject: pgp signed\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/signed; micalg=pgp-sha256; protocol="application/pgp-signature"; boundary="pgp"\n\n'
        b"--pgp\n"
        + text_part(b"Signed with PGP.\n")
        + b'--pgp\nContent-Type: application/pgp-signature; name="signature.asc"\n'
        b'Content-Disposition: attachment; filename="signature.asc"\n\n'
        b"-----BEGIN PGP SIGNATURE-----\n\niQEzBAEBCAAdFiEE\n=abcd\n-----END PGP SIGNATURE-----\n--pgp--\n"
    )
    m["clean-pgp-mime-encrypted.eml"] = (
        HEAD + b"Subject: pgp encrypted\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="enc"\n\n'
        b"--enc\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n"
        b'--enc\nContent-Type: application/octet-stream; name="encrypted.asc"\n\n'
        b"-----BEGIN PGP MESSAGE-----\n\nhQEMA1234\n=wxyz\n-----END PGP MESSAGE-----\n--enc--\n"
    )
    m["clean-calendar-invite.eml"] = (
        HEAD + b"Subject: Invitation: planning\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="mixed-cal"\n\n'
        b'--mixed-cal\nContent-Type: multipart/alternative; boundary="alt-cal"\n\n'
        b"--alt-cal\n"
        + text_part(b"You are invited.\n")
        + b"--alt-cal\nContent-Type: text/calendar; charset=utf-8; method=REQUEST\nContent-Transfer-Encoding: 7bit\n\n"
        b"BEGIN:VCALENDAR\nMETHOD:REQUEST\nBEGIN:VEVENT\nSUMMARY:planning\nEND:VEVENT\nEND:VCALENDAR\n"
        b"--alt-cal--\n"
        b'--mixed-cal\nContent-Type: application/ics; name="invite.ics"\n'
        b'Content-Disposition: attachment; filename="invite.ics"\n'
        b"Content-Transfer-Encoding: base64\n\n"
        + b64(b"BEGIN:VCALENDAR\nMETHOD:REQUEST\nEND:VCALENDAR\n")
        + b"--mixed-cal--\n"
    )
    inner = (
        b"From: Carol <carol@example.com>\nSubject: the report\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="inner"\n\n--inner\n'
        + text_part(b"Report attached.\n")
        + attachment(b"application/pdf", b"report.pdf", PDF)
        + b"--inner--\n"
    )
    m["clean-forwarded.eml"] = multipart(
        b"fwd",
        [text_part(b"FYI, forwarded below.\n"), b"Content-Type: message/rfc822\n\n" + inner],
        subject=b"Fwd: report",
    )
    m["clean-long-filename.eml"] = multipart(
        b"long", [text_part(), attachment(b"application/pdf", b"Quarterly results " + b"x" * 180 + b".pdf", PDF)]
    )
    m["clean-nonascii-names.eml"] = multipart(
        b"intl",
        [
            text_part(),
            b'Content-Type: application/pdf; name="=?utf-8?B?UmVjaG51bmcgZsO8ciBKw7xyZ2VuLnBkZg==?="\n'
            b"Content-Disposition: attachment; filename*=utf-8''Rechnung%20f%C3%BCr%20J%C3%BCrgen.pdf\n"
            b"Content-Transfer-Encoding: base64\n\n" + b64(PDF),
            b'Content-Type: image/png; name="=?iso-8859-1?Q?=E9t=E9.png?="\nContent-Transfer-Encoding: base64\n\n'
            + b64(PNG),
        ],
        subject=b"=?utf-8?q?Rechnung_f=C3=BCr_J=C3=BCrgen?=",
    )
    m["clean-uuencoded-text.eml"] = (
        HEAD
        + b"Subject: old client\n\nHere is the file:\n\nbegin 644 notes.txt\n"
        + _uu(b"These are the notes.\n")
        + b"`\nend\n\nBye.\n"
    )
    m["clean-zip.eml"] = multipart(
        b"z",
        [
            text_part(),
            attachment(b"application/zip", b"docs.zip", make_zip([("a.txt", b"text " * 50), ("b.pdf", PDF)])),
        ],
    )
    m["clean-crlf.eml"] = multipart(b"crlf", [text_part(), attachment(b"application/pdf", b"a.pdf", PDF)]).replace(
        b"\n", b"\r\n"
    )
    # ---- policy rules (the shipped default file)
    m["exe-attachment.eml"] = multipart(
        b"e", [text_part(), attachment(b"application/octet-stream", b"setup.exe", FAKE_EXE)]
    )
    m["scr-rfc2231-name.eml"] = multipart(
        b"r",
        [
            text_part(),
            b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n"
            b"Content-Disposition: attachment; filename*0*=utf-8''screen%20saver; filename*1=\".scr\"\n\n"
            + b64(b"not a program"),
        ],
    )
    m["vbs-rfc2047-name.eml"] = multipart(
        b"w",
        [
            text_part(),
            b'Content-Type: application/octet-stream; name="=?utf-8?B?bG92ZWxldHRlci52YnM=?="\n'
            b"Content-Transfer-Encoding: quoted-printable\n\nMsgBox =22hi=22\n",
        ],
    )
    m["exe-in-zip.eml"] = multipart(
        b"zz", [text_part(), attachment(b"application/zip", b"invoice.zip", make_zip([("invoice.exe", FAKE_EXE)]))]
    )
    m["exe-in-nested-zip.eml"] = multipart(
        b"nz",
        [
            text_part(),
            attachment(
                b"application/zip",
                b"outer.zip",
                make_zip([("readme.txt", b"hi"), ("inner.zip", make_zip([("deep/run.pif", b"not a program")]))]),
            ),
        ],
    )
    m["password-zip.eml"] = multipart(
        b"pz", [text_part(), attachment(b"application/zip", b"secret.zip", make_zip([("a.doc", b"x" * 100)], True))]
    )
    m["tnef-exe.eml"] = multipart(
        b"tn", [text_part(), attachment(b"application/ms-tnef", b"winmail.dat", make_tnef("setup.exe", FAKE_EXE))]
    )
    m["uuencoded-exe.eml"] = HEAD + b"Subject: see attached\n\nbegin 644 game.exe\n" + _uu(FAKE_EXE) + b"`\nend\n"
    m["forwarded-exe.eml"] = multipart(
        b"fe",
        [
            text_part(),
            b"Content-Type: message/rfc822\n\n"
            + b"From: x@example.com\nSubject: inner\nMIME-Version: 1.0\n"
            + b'Content-Type: multipart/mixed; boundary="in"\n\n'
            + b"--in\n"
            + attachment(b"application/octet-stream", b"patch.exe", FAKE_EXE)
            + b"--in--\n",
        ],
    )
    m["exe-renamed.eml"] = multipart(
        b"rn", [text_part(), attachment(b"application/octet-stream", b"document.dat", FAKE_EXE)]
    )
    # ---- malformed-MIME checks
    m["double-extension.eml"] = multipart(
        b"d", [text_part(), attachment(b"application/octet-stream", b"photo.gif.exe", b"GIF89a not really")]
    )
    m["double-extension-padded.eml"] = multipart(
        b"dp", [text_part(), attachment(b"application/octet-stream", b"photo.jpg                    .scr", b"GIF89a")]
    )
    m["clsid-extension.eml"] = multipart(
        b"c",
        [text_part(), attachment(b"application/octet-stream", b"file.{3050F4D8-98B5-11CF-BB82-00AA00BDCE0B}", b"x")],
    )
    m["executable-under-audio.eml"] = multipart(
        b"k",
        [
            b"Content-Type: text/html\n\n<iframe src=3Dcid:EA4DMGBP9p height=3D0 width=3D0></iframe>\n",
            b'Content-Type: audio/x-wav;\n\tname="song.exe"\nContent-Transfer-Encoding: base64\n'
            b"Content-ID: <EA4DMGBP9p>\n\n" + b64(b"RIFF not a program"),
        ],
    )
    m["undeclared-executable.eml"] = multipart(b"u", [text_part(), attachment(b"image/gif", b"picture.gif", FAKE_EXE)])
    m["header-comment.eml"] = multipart(
        b"hc",
        [
            text_part(),
            b'Content-T(xx)ype: application/octet-stream; name="a.bin"\nContent-Transfer-Encoding: base64\n\n'
            + b64(b"data"),
        ],
    )
    m["repeated-mime-header.eml"] = multipart(
        b"rh",
        [
            text_part(),
            b'Content-Type: text/plain; name="notes.txt"\nContent-Type: application/octet-stream; name="notes.bin"\n'
            b"Content-Transfer-Encoding: base64\n\n" + b64(b"data"),
        ],
    )
    # Seventeen multiparts one inside the other, each naming two boundaries: every choice lies inside
    # the others, so reading every combination would take more passes than the unpacker makes.
    nested = text_part()
    for level in reversed(range(17)):
        nested = (
            b'Content-Type: multipart/mixed; boundary="b%02d"; boundary="c%02d"\n\n--b%02d\n' % (level, level, level)
            + nested
            + b"--b%02d--\n" % level
        )
    m["many-readings.eml"] = HEAD + b"Subject: readings\nMIME-Version: 1.0\n" + nested
    m["long-boundary.eml"] = multipart(b"b" * 300, [text_part()])
    m["duplicate-boundary.eml"] = (
        HEAD + b'Subject: dup\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="same"\n\n'
        b'--same\nContent-Type: multipart/alternative; boundary="same"\n\n'
        b"--same\n" + text_part() + b"--same--\n"
    )
    # "cal" is a prefix of "calx": a parser that matches prefixes (reformime) ends the outer
    # part at the inner delimiter and sees a different structure than an exact-match walker.
    m["prefix-boundary.eml"] = (
        HEAD + b'Subject: prefix\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="cal"\n\n'
        b'--cal\nContent-Type: multipart/alternative; boundary="calx"\n\n'
        b"--calx\n" + text_part() + b"--calx--\n--cal--\n"
    )
    # A comment before the boundary's value: Python's email and GMime take "cm", MIME-tools
    # takes "(note)cm" and finds no delimiter; the harmless text is read both ways.
    m["ambiguous-boundary.eml"] = (
        HEAD + b"Subject: comment\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=(note)cm\n\n"
        b"--cm\n" + text_part() + b"--cm--\n"
    )
    m["conflicting-filenames.eml"] = multipart(
        b"cf", [text_part(), attachment(b"application/octet-stream", b"report.txt", b"data", b"report.doc")]
    )
    m["broken-continuation.eml"] = multipart(
        b"bc",
        [
            text_part(),
            b'\tContent-Type: application/octet-stream; name="a.bin"\nContent-Transfer-Encoding: base64\n\n'
            + b64(b"data"),
        ],
    )
    m["broken-header-line.eml"] = multipart(
        b"bh",
        [
            text_part(),
            b'Content-Type: application/octet-stream; name="a.bin"\nthis line is not a header\n'
            b"Content-Transfer-Encoding: base64\n\n" + b64(b"data"),
        ],
    )
    m["long-filename.eml"] = multipart(b"lf", [text_part(), attachment(b"application/pdf", b"a" * 300 + b".pdf", PDF)])
    m["nul-in-header.eml"] = multipart(
        b"nu",
        [
            text_part(),
            b'Content-Type: application/octet-stream; name="a\x00.bin"\nContent-Transfer-Encoding: base64\n\n'
            + b64(b"data"),
        ],
    )
    m["cr-in-header.eml"] = multipart(
        b"cr",
        [
            text_part(),
            b'Content-Type: application/octet-stream;\r name="a.bin"\nContent-Transfer-Encoding: base64\n\n'
            + b64(b"data"),
        ],
    )
    return m


def _uu(data: bytes) -> bytes:
    import binascii

    return b"".join(binascii.b2a_uu(data[i : i + 45]) for i in range(0, len(data), 45))


def main() -> None:
    for name, data in messages().items():
        with open(os.path.join(HERE, name), "wb") as out:
            out.write(data)
    print(f"wrote {len(messages())} messages to {HERE}")


if __name__ == "__main__":
    main()
