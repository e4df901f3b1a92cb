"""Hostile-input generation and the outcome check shared by tests/test_fuzz.py and tests/soak.py.

Generators are plain functions of a random.Random, so hypothesis (which draws the seed and
shrinks it) and the long soak run (which just counts up) produce the same shapes. Shapes:
MIME trees with broken boundaries and headers, every transfer encoding done right and wrong,
uuencode, nested message/rfc822, zips that are valid, overlapping, cut, encrypted or lying
about their sizes, and byte-level mutations of the seed corpus (tests/corpus).
"""

from __future__ import annotations

import base64
import io
import os
import quopri
import random
import resource
import struct
import subprocess
import time
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from harness import Installation, caller_files, envelope, smtp_reply, strip_added_headers

CORPUS = Path(__file__).resolve().parent / "corpus"
MEMORY_LIMIT_BYTES = 1 << 30  # address-space limit of one run: a blow-up becomes a MemoryError (51)
RSS_LIMIT_KB = 400 * 1024  # what a single message may cost at most
ENVELOPE = envelope("sender@example.org", "rcpt@example.com")
HOSTILE_NAMES = [
    "../../../../etc/passwd", "/etc/shadow", "..\\..\\boot.ini", "CON", "NUL.txt", "aux", "COM1.exe", "LPT9",
    ".", "..", "", " ", "a" * 300 + ".exe", "x\0y.exe", "doc.pdf\0.exe", "file.gif.exe", "{3050F4D8-98B5-11CF}.exe",
    "naïve résumé.pdf", "=?utf-8?B?Li4vLi4vZXRjL3Bhc3N3ZA==?=", "report.pdf      .scr", "line\nbreak.txt",
]
HEADER_NAMES = ["Subject", "From", "To", "Cc", "Message-ID", "Date", "Content-Type", "Content-Disposition",
                "Content-Transfer-Encoding", "MIME-Version", "Content-ID", "X-Mailer", "Received", "Reply-To"]
TYPES = ["text/plain", "text/html", "application/octet-stream", "application/pdf", "image/gif", "audio/wav",
         "application/zip", "application/ms-tnef", "message/rfc822", "application/x-msdownload", "text/x-uuencode"]


# ---------------------------------------------------------------- generators


def random_text(rng: random.Random, size: int) -> bytes:
    alphabet = [b"a", b"Z", b" ", b"\n", b"=", b"-", b"\t", b"\xe9", b"\0", b"\r", b"?", b";", b'"', b"\\", b"/"]
    weights = [30, 10, 10, 3, 2, 2, 1, 1, 0.2, 0.3, 1, 1, 1, 0.3, 0.5]
    return b"".join(rng.choices(alphabet, weights, k=size))


def encoded_word(rng: random.Random, text: bytes) -> bytes:
    choice = rng.randrange(5)
    if choice == 0:
        return b"=?utf-8?B?" + base64.b64encode(text) + b"?="
    if choice == 1:
        return b"=?iso-8859-1?Q?" + quopri.encodestring(text, header=True).replace(b"\n", b"") + b"?="
    if choice == 2:
        return b"=?x-unknown?B?" + base64.b64encode(text)[:-1] + b"?="  # bad charset, bad padding
    if choice == 3:
        return b"=?utf-8?Q?" + text[:40] + b"=ZZ?="
    return b"=?" + text[:20] + b"?="


def filename_param(rng: random.Random) -> bytes:
    name = rng.choice(HOSTILE_NAMES).encode("utf-8")
    form = rng.randrange(4)
    if form == 0:
        return b'name="' + name.replace(b'"', b'\\"') + b'"'
    if form == 1:
        return b"filename*=utf-8''" + "".join(f"%{b:02X}" for b in name).encode()
    if form == 2:
        half = len(name) // 2
        return b'filename*0="' + name[:half] + b'"; filename*1="' + name[half:] + b'"'
    return b"filename=" + encoded_word(rng, name)


def header_line(rng: random.Random) -> bytes:
    name = rng.choice(HEADER_NAMES).encode() if rng.random() < 0.85 else random_text(rng, rng.randrange(1, 20))
    value = random_text(rng, rng.choice([0, 5, 40, 200, 3000]))
    if rng.random() < 0.3:
        value = encoded_word(rng, value[:60]) + b" " + value
    if rng.random() < 0.2:
        value += b"\n\t" + random_text(rng, 50)  # continuation
    if rng.random() < 0.05:
        value += b"\n" + random_text(rng, 30)  # broken continuation
    separator = rng.choice([b": ", b":", b" : ", b"(c):"]) if rng.random() < 0.2 else b": "
    return name + separator + value + b"\n"


def encode_body(rng: random.Random, data: bytes) -> tuple[bytes, bytes]:
    """Return (Content-Transfer-Encoding value, encoded body), sometimes broken on purpose."""
    choice = rng.randrange(6)
    if choice == 0:
        encoded = base64.encodebytes(data)
        if rng.random() < 0.3:
            encoded = encoded.replace(b"A", b"!", 3)[: max(0, len(encoded) - rng.randrange(3))]
        return b"base64", encoded
    if choice == 1:
        return b"quoted-printable", quopri.encodestring(data) + (b"=Z\n=" if rng.random() < 0.3 else b"")
    if choice == 2:
        return b"x-uuencode", uuencode(data, rng.choice(HOSTILE_NAMES).encode("utf-8", "replace"))
    if choice == 3:
        return b"8bit", data
    if choice == 4:
        return rng.choice([b"bogus", b"base64; x=y", b""]), data
    return b"7bit", data.replace(b"\0", b"")


def uuencode(data: bytes, name: bytes) -> bytes:
    import binascii

    lines = [b"begin 644 " + name.replace(b"\n", b"") + b"\n"]
    for start in range(0, len(data), 45):
        lines.append(binascii.b2a_uu(data[start : start + 45]))
    lines.append(b"`\nend\n")
    return b"".join(lines)


def make_zip(rng: random.Random) -> bytes:
    """A zip archive, valid or hostile: overlapping entries, bad central directory, encrypted, lying sizes."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        warnings.simplefilter("ignore")  # duplicate member names are wanted here
        for index in range(rng.randrange(1, 5)):
            name = rng.choice([*HOSTILE_NAMES, "a.txt", "b.exe", "c.zip", "d/e/f.vbs"]).replace("\0", "_")
            body = b"\0" * rng.choice([10, 1000, 2_000_000]) if rng.random() < 0.3 else random_text(rng, 300)
            if rng.random() < 0.1:
                body = make_zip(random.Random(rng.random())) if index < 2 else body
            archive.writestr(zipfile.ZipInfo(name or "empty"), body)
    data = bytearray(buffer.getvalue())
    shape = rng.randrange(6)
    cd_offset = struct.unpack_from("<I", data, len(data) - 6)[0]
    if shape == 1:  # overlapping entries: every central entry points at the first local header
        position = cd_offset
        while data[position : position + 4] == b"PK\x01\x02":
            struct.pack_into("<I", data, position + 42, 0)
            name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, position + 28)
            position += 46 + name_len + extra_len + comment_len
    elif shape == 2:  # bad central directory
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(cd_offset, len(data))] = rng.randrange(256)
    elif shape == 3:  # encrypted flag on every entry
        position = 0
        while data[position : position + 4] == b"PK\x03\x04":
            data[position + 6] |= 1
            compressed = struct.unpack_from("<I", data, position + 18)[0]
            name_len, extra_len = struct.unpack_from("<HH", data, position + 26)
            position += 30 + name_len + extra_len + compressed
        position = cd_offset
        while data[position : position + 4] == b"PK\x01\x02":
            data[position + 8] |= 1
            name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, position + 28)
            position += 46 + name_len + extra_len + comment_len
    elif shape == 4:  # huge declared sizes in the central directory
        position = cd_offset
        while data[position : position + 4] == b"PK\x01\x02":
            struct.pack_into("<I", data, position + 24, 0xFFFFFFFF - rng.randrange(3))
            name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, position + 28)
            position += 46 + name_len + extra_len + comment_len
    elif shape == 5:  # cut short
        del data[rng.randrange(len(data)) :]
    return bytes(data)


def make_entity(rng: random.Random, depth: int = 0) -> bytes:
    """One MIME entity: headers, blank line, body; multipart recursion up to a small depth."""
    headers = b"".join(header_line(rng) for _ in range(rng.randrange(0, 3)))
    if depth < 4 and rng.random() < 0.4:
        boundary = rng.choice([b"b" + str(depth).encode(), b"=_" + random_text(rng, 10).replace(b"\n", b""),
                               b"x" * rng.choice([70, 300]), b"", b"b0"])
        subtype = rng.choice([b"mixed", b"alternative", b"related", b"signed", b"encrypted", b"weird"])
        headers += b'Content-Type: multipart/' + subtype + b'; boundary="' + boundary + b'"\n'
        parts = [make_entity(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
        body = random_text(rng, rng.randrange(0, 50)) + b"\n"
        for part in parts:
            body += b"--" + boundary + b"\n" + part + b"\n"
        if rng.random() < 0.8:
            body += b"--" + boundary + b"--\n"
        body += random_text(rng, rng.randrange(0, 30))
        return headers + b"\n" + body
    kind = rng.choice(TYPES)
    if kind == "message/rfc822" and depth < 4:
        return headers + b"Content-Type: message/rfc822\n\n" + make_message(rng, depth + 1)
    if kind == "application/zip":
        payload = make_zip(rng)
    elif kind == "application/ms-tnef":
        payload = b"\x78\x9f\x3e\x22" + rng.randbytes(rng.randrange(0, 400))
    elif kind == "application/x-msdownload":
        payload = b"MZ\x90\x00" + rng.randbytes(rng.randrange(0, 300))
    elif rng.random() < 0.1:
        payload = zlib.compress(b"\0" * 100000)
    else:
        payload = random_text(rng, rng.choice([0, 10, 500, 5000, 100_000]))
    encoding, body = encode_body(rng, payload)
    params = b"; " + filename_param(rng) if rng.random() < 0.6 else b""
    headers += b"Content-Type: " + kind.encode() + params + b"\n"
    if rng.random() < 0.5:
        headers += b"Content-Disposition: attachment; " + filename_param(rng) + b"\n"
    headers += b"Content-Transfer-Encoding: " + encoding + b"\n"
    return headers + b"\n" + body


def make_message(rng: random.Random, depth: int = 0) -> bytes:
    top = b"Received: from client by mx\nFrom: a@example.org\nTo: b@example.com\n"
    top += b"".join(header_line(rng) for _ in range(rng.randrange(0, 6)))
    if rng.random() < 0.9:
        top += b"MIME-Version: 1.0\n"
    return top + make_entity(rng, depth)


def seed_messages() -> list[tuple[str, bytes]]:
    return [(path.name, path.read_bytes()) for path in sorted(CORPUS.glob("*.eml"))]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """A few byte-level mutations: flips, deletions, duplications, splices of MIME-ish tokens."""
    buffer = bytearray(data)
    tokens = [b"\n--", b"boundary=", b"Content-Type: multipart/mixed; boundary=\"", b"\n\n", b"=?", b"?=", b"\0",
              b"begin 644 x.exe\n", b"PK\x03\x04", b"base64", b"\r", b"name=\"../../x\""]
    for _ in range(rng.randrange(1, 12)):
        if not buffer:
            buffer += rng.choice(tokens)
            continue
        position = rng.randrange(len(buffer))
        action = rng.randrange(5)
        if action == 0:
            buffer[position] = rng.randrange(256)
        elif action == 1:
            del buffer[position : position + rng.randrange(1, 200)]
        elif action == 2:
            chunk = bytes(buffer[position : position + rng.randrange(1, 2000)])
            buffer[position:position] = chunk * rng.randrange(1, 4)
        else:
            buffer[position:position] = rng.choice(tokens)
    return bytes(buffer)


def generate_case(seed: int) -> tuple[str, bytes]:
    """(kind, message) for a seed: fresh generation or a mutated seed-corpus message."""
    rng = random.Random(seed)
    seeds = seed_messages()
    if seeds and rng.random() < 0.4:
        name, data = rng.choice(seeds)
        return f"mutated:{name}", mutate(rng, data)
    return "generated", make_message(rng)


# ---------------------------------------------------------------- running and judging


@dataclass
class CaseResult:
    outcome: str  # queued | quarantined:<kind> | dropped | temp:<code> | perm:<code>
    exit_code: int
    seconds: float
    max_rss_kb: int
    stderr: str
    custom_error: bytes


def run_case(installation: Installation, message: bytes, timeout: float = 120.0) -> CaseResult:
    """One run of the installed program with fds 0/1 from files, fd 6 a pipe, memory bounded."""
    before_queue = set(installation.sink.glob("*.msg"))
    before_stored = {kind: set(_stored(installation, kind)) for kind in ("viruses", "policy", "spam")}
    with caller_files(message, ENVELOPE) as (message_file, envelope_file):
        error_read, error_write = os.pipe()

        def prepare() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
            os.dup2(error_write, 6)

        started = time.monotonic()
        process = subprocess.Popen(
            [str(installation.program)], stdin=message_file, stdout=envelope_file, stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin", "QQ_STANDIN_DIR": str(installation.sink)}, close_fds=False,
            preexec_fn=prepare,
        )
        os.close(error_write)
        try:
            stderr = process.stderr.read() if process.stderr else b""
        finally:
            if process.stderr:
                process.stderr.close()
        custom_error = b""
        while chunk := os.read(error_read, 4096):
            custom_error += chunk
        os.close(error_read)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
    code = process.returncode
    new_queue = sorted(set(installation.sink.glob("*.msg")) - before_queue)
    new_stored = {kind: sorted(set(_stored(installation, kind)) - before_stored[kind]) for kind in before_stored}
    outcome = judge(code, custom_error, message, new_queue, new_stored)
    for path in new_queue:  # keep the sink small over long runs
        for suffix in (".msg", ".env", ".fds"):
            path.with_suffix(suffix).unlink(missing_ok=True)
    for paths in new_stored.values():
        for path in paths:
            path.unlink()
    return CaseResult(outcome, code, seconds, usage.ru_maxrss, stderr.decode("utf-8", "replace"), custom_error)


def _stored(installation: Installation, kind: str) -> list[Path]:
    directory = installation.spool / "quarantine" / kind / "new"
    return list(directory.iterdir()) if directory.exists() else []


class UndefinedOutcome(AssertionError):
    """The run ended in a way no mail administrator could rely on."""


def judge(code: int, custom_error: bytes, message: bytes, queued: list[Path], stored: dict[str, list[Path]]) -> str:
    """Name the outcome, or raise UndefinedOutcome when the message is lost, duplicated or altered."""
    stored_count = sum(len(paths) for paths in stored.values())
    if code == 0:
        if len(queued) == 1 and stored_count == 0:
            body = strip_added_headers(queued[0].read_bytes())
            if body != message:
                raise UndefinedOutcome(f"queued message differs from what was sent ({len(body)} vs {len(message)})")
            return "queued"
        if not queued and stored_count == 1:
            kind, (path,) = next((k, v) for k, v in stored.items() if v)
            if not path.read_bytes().endswith(message):
                raise UndefinedOutcome(f"quarantined copy in {kind} is not the message as sent")
            return f"quarantined:{kind}"
        if not queued and stored_count == 0:
            return "dropped"
        raise UndefinedOutcome(f"exit 0 with {len(queued)} queued and {stored_count} stored")
    if queued:
        raise UndefinedOutcome(f"exit {code} but the message was queued")
    reply = smtp_reply(code, custom_error)
    if code < 0:
        raise UndefinedOutcome(f"killed by signal {-code}")
    return ("perm:" if reply.startswith("554") else "temp:") + str(code)


def is_internal_error(result: CaseResult) -> bool:
    """A temporary failure that came from a bug (an uncaught exception), not from a decision."""
    return "internal error" in result.stderr
