"""Hypothesis strategies for crafted messages: structures and attacker tricks, each case tagged with its class.

Every case carries one payload (a small Windows program, unique per message, or the EICAR test
string) hidden by one trick. `carrier` is what a reference parser must extract for the case to
count (the payload itself, or for archive classes the archive attached to the message); the
payload is what our unpacker must hand the scanners as decoded bytes.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import gzip
import io
import itertools
import lzma
import os
import random
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass

from hypothesis import strategies as st

from archive_samples import tnef_with_attachment, zip_of

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
_serial = itertools.count(1)


@dataclass
class Case:
    """One generated message."""

    cls: str  # the trick's class, e.g. "boundary-param"
    variant: str  # which form of the trick, for the examples and the report
    message: bytes
    payload: bytes  # what our unpacker must see decoded
    carrier: bytes  # what a reference parser must extract for the case to be kept
    eicar: bool


# ---------------------------------------------------------------- payloads and encodings


@st.composite
def payloads(draw: st.DrawFn, eicar_share: float = 0.25) -> bytes:
    """A small program (unique: a serial number and random bytes) or the EICAR string."""
    if draw(st.integers(0, 99)) < eicar_share * 100:
        return EICAR
    rng = random.Random(draw(st.integers(0, 2**32)) ^ next(_serial) << 32)
    size = draw(st.sampled_from([60, 200, 700, 3000]))
    return b"MZ\x90\x00\x03\x00\x00\x00" + next(_serial).to_bytes(8, "big") + rng.randbytes(size)


def b64(data: bytes, width: int = 76) -> bytes:
    text = base64.b64encode(data)
    return b"\n".join(text[i : i + width] for i in range(0, len(text), width)) + b"\n"


def qp(data: bytes) -> bytes:
    return binascii.b2a_qp(data, quotetabs=True, istext=False).replace(b"\r\n", b"\n") + b"\n"


def qp_text(data: bytes) -> bytes:
    """Quoted-printable of text (line breaks kept as line breaks): for encoded messages."""
    return b"\n".join(binascii.b2a_qp(line, quotetabs=False) for line in data.split(b"\n")) + b"\n"


def uuencode(data: bytes, name: str = "setup.exe", mode: str = "644", begin: bytes = b"begin") -> bytes:
    lines = [begin + b" " + mode.encode() + b" " + name.encode()]
    lines += [binascii.b2a_uu(data[i : i + 45]).rstrip(b"\n") for i in range(0, len(data), 45)]
    return b"\n".join([*lines, b"`", b"end"]) + b"\n"


def yenc(data: bytes, name: str = "setup.exe") -> bytes:
    out = bytearray()
    line = bytearray()
    for byte in data:
        value = (byte + 42) % 256
        if value in (0, 10, 13, 61):
            line += bytes([61, (value + 64) % 256])
        else:
            line.append(value)
        if len(line) >= 128:
            out += line + b"\n"
            line = bytearray()
    if line:
        out += line + b"\n"
    crc = binascii.crc32(data)
    return (
        f"=ybegin line=128 size={len(data)} name={name}\n".encode()
        + bytes(out)
        + f"=yend size={len(data)} crc32={crc:08x}\n".encode()
    )


def binhex(data: bytes, name: str = "setup.exe") -> bytes:
    """BinHex 4.0 of a file with only a data fork (no run-length compression needed: 0x90 is escaped)."""
    fname = name.encode()
    header = bytes([len(fname)]) + fname + b"\x00" + b"APPL" + b"????" + b"\x00\x00"
    header += len(data).to_bytes(4, "big") + (0).to_bytes(4, "big")
    header += binascii.crc_hqx(header + b"\x00\x00", 0).to_bytes(2, "big")
    fork = data + binascii.crc_hqx(data + b"\x00\x00", 0).to_bytes(2, "big")
    rsrc = binascii.crc_hqx(b"\x00\x00", 0).to_bytes(2, "big")
    raw = (header + fork + rsrc).replace(b"\x90", b"\x90\x00")
    alphabet = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr"
    bits = "".join(f"{byte:08b}" for byte in raw)
    bits += "0" * (-len(bits) % 6)
    chars = bytes(alphabet[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))
    body = b":" + chars + b":"
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"(This file must be converted with BinHex 4.0)\n\n" + b"\n".join(lines) + b"\n"


# ---------------------------------------------------------------- message building


def headers(extra: list[str] | None = None, mime: bool = True) -> bytes:
    lines = [
        "From: Alice <alice@example.org>",
        "To: bob@example.net",
        "Subject: your documents",
        "Date: Mon, 1 Jan 2024 10:00:00 +0000",
        f"Message-ID: <{next(_serial)}@example.org>",
    ]
    if mime:
        lines.append("MIME-Version: 1.0")
    return ("\n".join(lines + (extra or [])) + "\n").encode()


def part(content_type: str | None, body: bytes, cte: str | None = None, filename: str | None = None) -> bytes:
    lines = []
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}" + (f'; name="{filename}"' if filename else ""))
    if cte is not None:
        lines.append(f"Content-Transfer-Encoding: {cte}")
    if filename:
        lines.append(f'Content-Disposition: attachment; filename="{filename}"')
    return "".join(line + "\n" for line in lines).encode() + b"\n" + body


def multipart(parts: list[bytes], boundary: str = "=_b1", preamble: bytes = b"") -> bytes:
    out = preamble
    for item in parts:
        out += f"--{boundary}\n".encode() + item
        if not out.endswith(b"\n"):
            out += b"\n"
    return out + f"--{boundary}--\n".encode()


TEXT = part("text/plain; charset=us-ascii", b"Please see the attached file.\n")


def attachment_b64(payload: bytes, filename: str = "setup.exe") -> bytes:
    return part("application/octet-stream", b64(payload), "base64", filename)


def simple_message(payload: bytes, filename: str = "setup.exe") -> bytes:
    """A plain message with the payload as a base64 attachment."""
    boundary = f"=_in{next(_serial)}"
    return (
        headers([f'Content-Type: multipart/mixed; boundary="{boundary}"'])
        + b"\n"
        + multipart([TEXT, attachment_b64(payload, filename)], boundary)
    )


def mixed(parts: list[bytes], extra: list[str] | None = None) -> bytes:
    boundary = f"=_out{next(_serial)}"
    return (
        headers([f'Content-Type: multipart/mixed; boundary="{boundary}"'] + (extra or []))
        + b"\n"
        + multipart([TEXT, *parts], boundary)
    )


def encode_body(data: bytes, cte: str) -> bytes:
    word = cte.lower().strip('"').split()[0].split(";")[0].split("(")[0]
    if "base64" in word:
        return b64(data)
    if "quoted" in word:
        return qp_text(data)
    if "uu" in word:
        return uuencode(data, "message.eml")
    return data


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@st.composite
def line_ending(draw: st.DrawFn, data: bytes) -> bytes:
    """Most mail as qmail hands it (LF), some as written on the wire (CRLF)."""
    return crlf(data) if draw(st.integers(0, 4)) == 0 else data


def case(cls: str, variant: str, message: bytes, payload: bytes, carrier: bytes | None = None) -> Case:
    return Case(cls, variant, message, payload, payload if carrier is None else carrier, payload == EICAR)


# ---------------------------------------------------------------- (1) containers

ENCODED_CTES = ["base64", "quoted-printable", "x-uuencode"]


@st.composite
def control(draw: st.DrawFn) -> Case:
    """No trick: a base64 attachment (the harness's own check)."""
    payload = draw(payloads())
    return case("control", "base64 attachment", draw(line_ending(simple_message(payload))), payload)


@st.composite
def rfc822_encoded(draw: st.DrawFn) -> Case:
    payload = draw(payloads())
    inner = simple_message(payload)
    cte = draw(st.sampled_from(ENCODED_CTES))
    where = draw(st.sampled_from(["part", "whole"]))
    body = encode_body(inner, cte)
    if where == "part":
        message = mixed([part("message/rfc822", body, cte)])
    else:
        message = headers(["Content-Type: message/rfc822", f"Content-Transfer-Encoding: {cte}"]) + b"\n" + body
    return case("rfc822-encoded", f"{where} {cte}", draw(line_ending(message)), payload)


@st.composite
def rfc822_nested(draw: st.DrawFn) -> Case:
    payload = draw(payloads())
    message = simple_message(payload)
    levels = draw(st.lists(st.sampled_from(["7bit", *ENCODED_CTES]), min_size=2, max_size=4))
    for cte in levels:
        message = mixed([part("message/rfc822", encode_body(message, cte), cte)])
    encoded = "+".join(sorted(set(levels) - {"7bit"})) or "none"
    return case("rfc822-nested", f"{len(levels)} levels, encoded {encoded}", draw(line_ending(message)), payload)


@st.composite
def cte_word_on_message(draw: st.DrawFn) -> Case:
    payload = draw(payloads())
    inner = simple_message(payload)
    cte = draw(
        st.sampled_from(
            ["base64 (encoded)", "base64 ", '"base64"', "BASE64;", "x-unknown", "7bit (plain)", "binary", "8bit junk"]
        )
    )
    return case(
        "rfc822-cte-word",
        cte,
        draw(line_ending(mixed([part("message/rfc822", encode_body(inner, cte), cte)]))),
        payload,
    )


@st.composite
def message_subtype(draw: st.DrawFn) -> Case:
    payload = draw(payloads())
    inner = simple_message(payload)
    subtype = draw(
        st.sampled_from(
            [
                "message/global",
                'message/partial; id="p1@example.org"; number=1; total=1',
                "message/external-body; access-type=x-mail",
                "message/news",
                "message/x-forwarded",
                "message/delivery-status",
                "message/global-headers",
                "message/disposition-notification",
            ]
        )
    )
    cte = draw(st.sampled_from(["7bit", "base64"]))
    body = encode_body(inner, cte)
    if subtype.startswith("message/external-body"):
        body = b"Content-Type: application/octet-stream\nContent-ID: <x@y>\n\n" + body if cte == "7bit" else body
    where = draw(st.sampled_from(["part", "whole"]))
    if where == "part":
        message = mixed([part(subtype, body, cte)])
    else:
        message = headers([f"Content-Type: {subtype}", f"Content-Transfer-Encoding: {cte}"]) + b"\n" + body
    return case("message-subtype", f"{where} {subtype.split(';')[0]} {cte}", draw(line_ending(message)), payload)


@st.composite
def digest_default(draw: st.DrawFn) -> Case:
    payload = draw(payloads())
    inner = simple_message(payload)
    cte = draw(st.sampled_from([None, "base64", "quoted-printable"]))
    item = part(None, encode_body(inner, cte) if cte else inner, cte)  # no type: the digest's message/rfc822
    blank_first = cte is None and draw(st.booleans())
    if blank_first:
        item = b"\n" + item  # an empty header block, then the message as the body
    boundary = f"=_dg{next(_serial)}"
    message = headers([f'Content-Type: multipart/digest; boundary="{boundary}"']) + b"\n" + multipart([item], boundary)
    variant = f"cte={cte}" + (", blank line first" if blank_first else "")
    return case("digest-default", variant, draw(line_ending(message)), payload)


@st.composite
def multipart_cte(draw: st.DrawFn) -> Case:
    payload = draw(payloads())
    cte = draw(st.sampled_from(["base64", "quoted-printable", "x-uuencode", "binary-ish"]))
    encoded_body = draw(st.booleans())
    boundary = f"=_mc{next(_serial)}"
    body = multipart([TEXT, attachment_b64(payload)], boundary)
    if encoded_body:
        body = encode_body(body, cte)
    message = headers([f'Content-Type: multipart/mixed; boundary="{boundary}"', f"Content-Transfer-Encoding: {cte}"])
    variant = f"{cte} {'encoded body' if encoded_body else 'plain body'}"
    return case("multipart-cte", variant, draw(line_ending(message + b"\n" + body)), payload)


# ---------------------------------------------------------------- (2) boundary parameter syntax


@st.composite
def boundary_param(draw: st.DrawFn) -> Case:
    payload = draw(payloads())
    n = next(_serial)
    real = f"b{n}x"
    forms = {
        "comment before parameter": (f'multipart/mixed; (note) boundary="{real}"', real),
        "comment before value": (f"multipart/mixed; boundary=(note){real}", real),
        "comment after value": (f"multipart/mixed; boundary={real}(note)", real),
        "space around equals": (f'multipart/mixed; boundary = "{real}"', real),
        "blank inside quotes": (f'multipart/mixed; boundary="{real} y"', f"{real} y"),
        "stray quote at start": (f'multipart/mixed; boundary="{real}', real),
        "stray quote at end": (f'multipart/mixed; boundary={real}"', real),
        "stray quote, body uses quote": (f'multipart/mixed; boundary={real}"', f'{real}"'),
        "rfc2231 boundary*": (f"multipart/mixed; boundary*=''{real}", real),
        "rfc2231 continuation": (f'multipart/mixed; boundary*0="{real[:2]}"; boundary*1="{real[2:]}"', real),
        "rfc2231 charset": (f"multipart/mixed; boundary*=us-ascii'en'{real}", real),
        "encoded word": (f'multipart/mixed; boundary="=?us-ascii?q?{real}?="', real),
        "encoded word literal": (f'multipart/mixed; boundary="=?us-ascii?q?{real}?="', f"=?us-ascii?q?{real}?="),
        "two boundaries, first used": (f'multipart/mixed; boundary="{real}"; boundary="z{n}"', real),
        "two boundaries, last used": (f'multipart/mixed; boundary="z{n}"; boundary="{real}"', real),
        "uppercase name": (f'multipart/mixed; BOUNDARY="{real}"', real),
        "no semicolon": (f'multipart/mixed boundary="{real}"', real),
        "folded in value": (f'multipart/mixed; boundary=\n "{real}"', real),
        "backslash in quotes": (f'multipart/mixed; boundary="{real[:1]}\\{real[1:]}"', real),
        "backslash literal": (f'multipart/mixed; boundary="{real[:1]}\\{real[1:]}"', f"{real[:1]}\\{real[1:]}"),
    }
    variant = draw(st.sampled_from(sorted(forms)))
    header, used = forms[variant]
    message = headers([f"Content-Type: {header}"]) + b"\n" + multipart([TEXT, attachment_b64(payload)], used)
    return case("boundary-param", variant, draw(line_ending(message)), payload)


# ---------------------------------------------------------------- (3) line ends


@st.composite
def line_ends(draw: st.DrawFn) -> Case:
    payload = draw(payloads())
    message = simple_message(payload)
    variant = draw(st.sampled_from(["cr only", "cr only body", "delimiter after bare cr", "mixed", "crcrlf"]))
    if variant == "cr only":
        message = message.replace(b"\n", b"\r")
    elif variant == "cr only body":
        head, _, body = message.partition(b"\n\n")
        message = head + b"\n\n" + body.replace(b"\n", b"\r")
    elif variant == "delimiter after bare cr":
        message = message.replace(b"\n--=_in", b"\r--=_in")
    elif variant == "mixed":
        lines = message.split(b"\n")
        ends = draw(st.lists(st.sampled_from([b"\n", b"\r\n", b"\r"]), min_size=len(lines), max_size=len(lines)))
        message = b"".join(line + end for line, end in zip(lines, ends, strict=True))
    else:
        message = message.replace(b"\n", b"\r\r\n")
    return case("line-ends", variant, message, payload)


# ---------------------------------------------------------------- (4) transfer encoding spellings


@st.composite
def cte_spelling(draw: st.DrawFn) -> Case:
    payload = draw(payloads())
    spelling = draw(
        st.sampled_from(
            [
                "base64 (comment)",
                '"base64"',
                "BASE64;",
                "=?us-ascii?q?base64?=",
                " base64 ",
                "base64; x=y",
                "(c) base64",
                "base-64",
                "Base64\t",
                "uue",
                "x-uue",
                "x-uu",
                "uuencode",
                "x-uuencode",
                "quoted-printable (comment)",
                '"quoted-printable"',
                "QUOTED-PRINTABLE;",
                "binhex40",
                "x-binhex40",
                "duplicate 7bit then base64",
                "duplicate base64 then 7bit",
            ]
        )
    )
    if spelling.startswith("duplicate"):
        first, second = ("7bit", "base64") if "7bit then" in spelling else ("base64", "7bit")
        item = (
            f'Content-Type: application/octet-stream; name="setup.exe"\nContent-Transfer-Encoding: {first}\n'
            f"Content-Transfer-Encoding: {second}\n\n"
        ).encode() + b64(payload)
    else:
        word = spelling.lower()
        if "uu" in word:
            body = uuencode(payload)
        elif "binhex" in word:
            body = binhex(payload)
        elif "quoted" in word:
            body = qp(payload)
        else:
            body = b64(payload)
        item = part("application/octet-stream", body, spelling, "setup.exe")
    return case("cte-spelling", spelling, draw(line_ending(mixed([item]))), payload)


# ---------------------------------------------------------------- (5) encodings inside text


@st.composite
def text_encodings(draw: st.DrawFn) -> Case:
    payload = draw(payloads())
    kind = draw(st.sampled_from(["uuencode", "uuencode", "uuencode", "binhex", "yenc", "uuencode-base64"]))
    name = draw(st.sampled_from(["setup.exe", "invoice.pdf"]))
    if kind == "uuencode":
        mode = draw(st.sampled_from(["644", "0644", "755", "100644", "7", "0", "6444"]))
        begin = draw(st.sampled_from([b"begin", b"begin", b"BEGIN", b"Begin"]))
        encoded = uuencode(payload, name, mode, begin)
        variant = f"uuencode mode {mode} {begin.decode()}"
    elif kind == "uuencode-base64":
        encoded = f"begin-base64 644 {name}\n".encode() + b64(payload, 60) + b"====\n"
        variant = "begin-base64"
    elif kind == "binhex":
        encoded = binhex(payload, name)
        variant = "binhex"
    else:
        encoded = yenc(payload, name)
        variant = "yenc"
    where = draw(
        st.sampled_from(
            ["non-mime body", "text/plain", "application/octet-stream", "text/x-whatever", "application/mac-binhex40"]
        )
    )
    text = b"Hello,\n\nthe file follows.\n\n" + encoded + b"\nBye\n"
    if where == "non-mime body":
        message = headers(mime=False) + b"\n" + text
    else:
        message = mixed([part(where, text if where != "application/mac-binhex40" else encoded)])
    return case("text-encodings", f"{variant} in {where}", draw(line_ending(message)), payload)


# ---------------------------------------------------------------- (6, 7) archives and limits


def _tool_archive(argv_for: object, name: str, payload: bytes, out_name: str) -> bytes | None:
    """An archive made by an external program from one member file; None when the program is missing."""
    with tempfile.TemporaryDirectory(prefix="qs-diff-arc-") as work:
        source = os.path.join(work, "in")
        os.mkdir(source)
        with open(os.path.join(source, name), "wb") as member:
            member.write(payload)
        out = os.path.join(work, out_name)
        argv = argv_for(source, name, out)  # type: ignore[operator]
        if shutil.which(argv[0]) is None:
            return None
        done = subprocess.run(argv, cwd=source, capture_output=True, check=False)
        if done.returncode != 0 or not os.path.exists(out):
            return None
        with open(out, "rb") as made:
            return made.read()


ARCHIVE_KINDS = [
    "zip-stored",
    "zip-deflate",
    "zip-bzip2",
    "zip-lzma",
    "zip-deflate64",
    "zip-in-zip",
    "zip-after-junk",
    "7z",
    "tar",
    "tar.gz",
    "gzip",
    "bzip2",
    "xz",
    "zstd",
    "iso9660",
    "cab",
    "tnef",
]


def make_archive(kind: str, name: str, payload: bytes) -> tuple[bytes | None, str]:
    """(archive bytes or None when it cannot be made here, attachment file name)."""
    methods = {
        "zip-stored": zipfile.ZIP_STORED,
        "zip-deflate": zipfile.ZIP_DEFLATED,
        "zip-bzip2": zipfile.ZIP_BZIP2,
        "zip-lzma": zipfile.ZIP_LZMA,
    }
    if kind in methods:
        return zip_of([(name, payload)], methods[kind]), "files.zip"
    if kind == "zip-in-zip":
        return zip_of([("inner.zip", zip_of([(name, payload)]))]), "files.zip"
    if kind == "zip-after-junk":
        return b"GIF89a" + os.urandom(40) + zip_of([(name, payload)]), "files.zip"
    if kind == "zip-deflate64":
        return _tool_archive(
            lambda s, n, o: ["7zz", "a", "-bd", "-tzip", "-mm=Deflate64", o, n], name, payload, "a.zip"
        ), "files.zip"
    if kind == "7z":
        return _tool_archive(lambda s, n, o: ["7zz", "a", "-bd", "-t7z", o, n], name, payload, "a.7z"), "files.7z"
    if kind in ("tar", "tar.gz"):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz" if kind == "tar.gz" else "w") as archive:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
        return buffer.getvalue(), "files." + kind
    if kind == "gzip":
        return gzip.compress(payload), name + ".gz"
    if kind == "bzip2":
        return bz2.compress(payload), name + ".bz2"
    if kind == "xz":
        return lzma.compress(payload), name + ".xz"
    if kind == "zstd":
        return _tool_archive(lambda s, n, o: ["zstd", "-q", "-o", o, n], name, payload, "a.zst"), name + ".zst"
    if kind == "iso9660":
        return _tool_archive(
            lambda s, n, o: ["xorriso", "-as", "mkisofs", "-quiet", "-J", "-o", o, s], name, payload, "a.iso"
        ), "files.iso"
    if kind == "cab":
        return _tool_archive(lambda s, n, o: ["gcab", "-c", "-z", o, n], name, payload, "a.cab"), "files.cab"
    if kind == "tnef":
        return tnef_with_attachment(name, payload), "winmail.dat"
    raise ValueError(kind)


@st.composite
def archives(draw: st.DrawFn) -> Case:
    payload = draw(payloads())
    kind = draw(st.sampled_from(ARCHIVE_KINDS))
    name = draw(st.sampled_from(["setup.exe", "invoice.pdf", "readme.txt"]))
    archive, filename = make_archive(kind, name, payload)
    if archive is None:
        archive, filename, kind = zip_of([(name, payload)]), "files.zip", "zip-deflate (tool missing)"
    message = mixed([part("application/octet-stream", b64(archive), "base64", filename)])
    return case("archives", f"{kind} member {name}", draw(line_ending(message)), payload, archive)


@st.composite
def past_limits(draw: st.DrawFn) -> Case:
    payload = draw(payloads())
    kind = draw(st.sampled_from(["message", "zip"]))
    depth = draw(st.integers(16, 26))
    if kind == "message":
        message = simple_message(payload)
        for _ in range(depth):
            message = mixed([part("message/rfc822", message, "7bit")])
        return case("past-limits", f"message nested {depth}", draw(line_ending(message)), payload)
    archive = zip_of([("setup.exe", payload)])
    for level in range(depth - 1):
        archive = zip_of([(f"level{level}.zip", archive)])
    message = mixed([part("application/zip", b64(archive), "base64", "files.zip")])
    return case("past-limits", f"zip nested {depth}", draw(line_ending(message)), payload, archive)


# ---------------------------------------------------------------- more tricks some reader accepts


@st.composite
def structure(draw: st.DrawFn) -> Case:
    """MIME structure that readers repair differently."""
    payload = draw(payloads())
    n = next(_serial)
    attach = attachment_b64(payload)
    body = multipart([TEXT, attach], f"s{n}")
    ctype = f'Content-Type: multipart/mixed; boundary="s{n}"'
    variant = draw(
        st.sampled_from(
            [
                "text/plain first, multipart second",
                "multipart first, text/plain second",
                "space before colon",
                "no MIME-Version",
                "no blank line after part headers",
                "inner boundary same as outer",
                "no closing delimiter",
                "junk after delimiter",
                "attachment in alternative",
                "only Content-Disposition",
                "type text/plain, base64 program",
                "header block ends with CR LF LF",
                "folded Content-Type first line",
            ]
        )
    )
    extra = [ctype]
    mime = True
    if variant == "text/plain first, multipart second":
        extra = ["Content-Type: text/plain", ctype]
    elif variant == "multipart first, text/plain second":
        extra = [ctype, "Content-Type: text/plain"]
    elif variant == "space before colon":
        extra = [f'Content-Type : multipart/mixed; boundary="s{n}"']
    elif variant == "no MIME-Version":
        mime = False
    elif variant == "no blank line after part headers":
        body = multipart([TEXT, attach.replace(b'filename="setup.exe"\n\n', b'filename="setup.exe"\n')], f"s{n}")
    elif variant == "inner boundary same as outer":
        inner = part(f'multipart/mixed; boundary="s{n}"', multipart([attach], f"s{n}"))
        body = multipart([TEXT, inner], f"s{n}")
    elif variant == "no closing delimiter":
        body = body[: body.rindex(f"--s{n}--".encode())]
    elif variant == "junk after delimiter":
        body = body.replace(f"--s{n}\n".encode(), f"--s{n} junk\n".encode())
    elif variant == "attachment in alternative":
        inner = part(f'multipart/alternative; boundary="a{n}"', multipart([TEXT, attach], f"a{n}"))
        body = multipart([inner], f"s{n}")
    elif variant == "only Content-Disposition":
        body = multipart(
            [
                TEXT,
                b'Content-Disposition: attachment; filename="setup.exe"\n'
                b"Content-Transfer-Encoding: base64\n\n" + b64(payload),
            ],
            f"s{n}",
        )
    elif variant == "type text/plain, base64 program":
        body = multipart([TEXT, part("text/plain", b64(payload), "base64")], f"s{n}")
    elif variant == "folded Content-Type first line":
        extra = [f'Content-Type:\n multipart/mixed;\n boundary="s{n}"']
    message = headers(extra, mime=mime) + b"\n" + body
    if variant == "header block ends with CR LF LF":
        message = message.replace(b"\n\n", b"\r\n\n", 1)
    return case("structure", variant, draw(line_ending(message)), payload)


@st.composite
def base64_forms(draw: st.DrawFn) -> Case:
    """Base64 and quoted-printable bodies written the way some encoders (or attackers) write them."""
    payload = draw(payloads())
    text = base64.b64encode(payload)
    variant = draw(
        st.sampled_from(
            [
                "one long line",
                "padding in the middle",
                "junk characters",
                "missing padding",
                "spaces inside",
                "short lines",
                "text before the base64",
                "qp soft breaks every 20 characters",
                "qp lower-case hex",
            ]
        )
    )
    cte = "base64"
    if variant == "one long line":
        body = text + b"\n"
    elif variant == "padding in the middle":
        cut = 3 * (len(payload) // 6)
        body = b64(payload[:cut]) + b64(payload[cut:])
    elif variant == "junk characters":
        body = b"\n".join(b"*" + text[i : i + 60] + b"!" for i in range(0, len(text), 60)) + b"\n"
    elif variant == "missing padding":
        body = b64(payload).rstrip(b"=\n") + b"\n"
    elif variant == "spaces inside":
        body = b"\n".join(b" ".join(text[i + j : i + j + 4] for j in range(0, 60, 4)) for i in range(0, len(text), 60))
        body += b"\n"
    elif variant == "short lines":
        body = b64(payload, 4)
    elif variant == "text before the base64":
        body = b"This is the attachment:\n\n" + b64(payload)
    elif variant == "qp soft breaks every 20 characters":
        cte = "quoted-printable"
        encoded = binascii.b2a_qp(payload, quotetabs=True, istext=False).replace(b"=\n", b"")
        body = b"=\n".join(encoded[i : i + 20] for i in range(0, len(encoded), 20)) + b"\n"
    else:
        cte = "quoted-printable"
        body = qp(payload).replace(b"=0D", b"=0d").replace(b"=FF", b"=ff").replace(b"=AB", b"=ab")
    message = mixed([part("application/octet-stream", body, cte, "setup.exe")])
    return case("base64-forms", variant, draw(line_ending(message)), payload)


@st.composite
def preamble_epilogue(draw: st.DrawFn) -> Case:
    """The payload outside every part: in a multipart's preamble or epilogue, uuencoded or as a whole part."""
    payload = draw(payloads())
    n = next(_serial)
    where = draw(st.sampled_from(["preamble", "epilogue"]))
    how = draw(st.sampled_from(["uuencode", "part-like", "nested preamble"]))
    hidden = uuencode(payload) if how != "part-like" else attachment_b64(payload)
    if how == "nested preamble":
        inner = part(f'multipart/mixed; boundary="i{n}"', hidden + multipart([TEXT], f"i{n}"))
        body = multipart([TEXT, inner], f"o{n}")
        where = "inner preamble"
    elif where == "preamble":
        body = multipart([TEXT], f"o{n}", preamble=hidden)
    else:
        body = multipart([TEXT], f"o{n}") + hidden
    message = headers([f'Content-Type: multipart/mixed; boundary="o{n}"']) + b"\n" + body
    return case("preamble-epilogue", f"{how} in {where}", draw(line_ending(message)), payload)


CLASSES = {
    "control": control,
    "rfc822-encoded": rfc822_encoded,
    "rfc822-nested": rfc822_nested,
    "rfc822-cte-word": cte_word_on_message,
    "message-subtype": message_subtype,
    "digest-default": digest_default,
    "multipart-cte": multipart_cte,
    "boundary-param": boundary_param,
    "line-ends": line_ends,
    "cte-spelling": cte_spelling,
    "text-encodings": text_encodings,
    "archives": archives,
    "past-limits": past_limits,
    "structure": structure,
    "base64-forms": base64_forms,
    "preamble-epilogue": preamble_epilogue,
}


def cases(classes: list[str] | None = None) -> st.SearchStrategy[Case]:
    """Any case of the named classes (all by default), the classes equally often."""
    return st.one_of([CLASSES[name]() for name in (classes or list(CLASSES))])


def generate(count: int, seed: int, classes: list[str] | None = None) -> list[Case]:
    """`count` cases drawn by hypothesis from a fixed seed (same seed, same cases in one process order)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    collected: list[Case] = []

    @hypothesis_seed(seed)
    @settings(
        max_examples=count,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(cases(classes))
    def collect(item: Case) -> None:
        collected.append(item)

    collect()
    return collected[:count]
