"""What real mail parsers extract from crafted messages must reach our scanners (tests/differential).

Generated messages (hypothesis, a fixed seed and a random one) go through five reference parsers
(Python email, Perl MIME-tools, node mailparser, ripmime, GMime's `mu extract`) and our unpacker:
every payload a parser extracts byte for byte must be a decoded part of ours, or the message
blocked with a reason. One hand-written message per class of trick shows that a named parser
really extracts it, and EICAR samples go through the inspection with a real clamd.
`make differential N=...` runs the same comparison at scale with a table per class.
"""

from __future__ import annotations

import binascii
import os
import random
import re
from pathlib import Path

import pytest

from daemons import clamd_server_fixture  # noqa: F401 - fixture
from differential import compare, generator, refparsers
from differential.generator import (
    attachment_b64,
    b64,
    binhex,
    encode_body,
    headers,
    make_archive,
    mixed,
    multipart,
    part,
    simple_message,
    uuencode,
)
from differential.ours import archive_readers
from qmail_scanner import inspection
from qmail_scanner.settings import ScannerConfig
from scanner_fixtures import scan_settings, spooled_message

GENERATED_PER_SEED = 200
TEST_ESCAPES = Path("/tmp/diff-escapes-tests")  # `make differential` keeps its examples in /tmp/diff-escapes
FIXED_SEED = 20260101
RANDOM_SEED = random.randrange(2**32)


def test_every_reference_parser_is_installed():
    missing = refparsers.missing()
    if missing and os.environ.get("CI") != "true":
        pytest.skip("; ".join(missing))
    assert not missing, "tests/install-deps.sh installs every reference parser: " + "; ".join(missing)


def _report(run: compare.Run) -> str:
    escapes = compare.escape_variants(run)
    saved = compare.save_escapes(run, TEST_ESCAPES)
    lines = [
        f"{cls}: " + "; ".join(f"{v} x{n}" for v, n in variants.most_common()) for cls, variants in escapes.items()
    ]
    return f"escapes ({saved} examples in {TEST_ESCAPES}):\n" + "\n".join(lines)


@pytest.mark.parametrize("seed", [FIXED_SEED, RANDOM_SEED], ids=["fixed-seed", f"random-seed-{RANDOM_SEED}"])
def test_generated_payloads_reach_the_scanners(tmp_path, seed):
    """Each kept case: a reference parser extracts it, so our unpacker must see it decoded or block the message."""
    cases = generator.generate(GENERATED_PER_SEED, seed)
    assert len(cases) == GENERATED_PER_SEED
    run = compare.evaluate(cases, tmp_path / "messages")
    kept = [o for o in run.outcomes if o.kept]
    assert len(kept) > GENERATED_PER_SEED // 2, "the reference parsers extract most generated payloads"
    if seed == FIXED_SEED:  # a random seed may by chance draw few cases of a class that parsers rarely extract
        assert {o.cls for o in kept} == set(generator.CLASSES), "every class has cases a reference parser extracts"
    errors = [f"{Path(o.path).name}: {o.error}" for o in run.outcomes if o.error]
    assert not errors, errors[:10]
    assert not [o for o in run.outcomes if o.escaped], _report(run)


# One message per class, written out: the parser named extracts the payload (the class is real).
PROGRAM = b"MZ\x90\x00\x03\x00\x00\x00hand-written" + bytes(range(256))
INNER = simple_message(PROGRAM)


def _hand_written() -> dict[str, tuple[str, bytes, bytes]]:
    """class -> (a reference parser that extracts it, message, carrier)."""
    zipped, _name = make_archive("zip-deflate", "invoice.pdf", PROGRAM)
    deep = INNER
    for _ in range(18):
        deep = mixed([part("message/rfc822", deep, "7bit")])
    # Quoted-printable whose soft line breaks fall inside =XX escapes ("=9=\n0"): only some readers rejoin them.
    encoded = binascii.b2a_qp(PROGRAM, quotetabs=True, istext=False).replace(b"=\n", b"")
    qp_split_escapes = re.sub(rb"(=[0-9A-F])([0-9A-F])", rb"\1=\n\2", encoded)
    boundary_body = multipart([part("text/plain", b"hi\n"), attachment_b64(PROGRAM)], "bx")
    return {
        "control": ("python", simple_message(PROGRAM), PROGRAM),
        "rfc822-encoded": ("python", mixed([part("message/rfc822", b64(INNER), "base64")]), PROGRAM),
        "rfc822-nested": (
            "python",
            mixed([part("message/rfc822", b64(mixed([part("message/rfc822", INNER, "7bit")])), "base64")]),
            PROGRAM,
        ),
        "rfc822-cte-word": (
            "mailparser",
            mixed([part("message/rfc822", b64(INNER), "base64 (encoded)")]),
            PROGRAM,
        ),
        "message-subtype": ("python", mixed([part("message/global", INNER, "7bit")]), PROGRAM),
        "digest-default": (
            "python",
            headers(['Content-Type: multipart/digest; boundary="dg"']) + b"\n" + multipart([b"\n" + INNER], "dg"),
            PROGRAM,
        ),
        "multipart-cte": (
            "mimetools",
            headers(['Content-Type: multipart/mixed; boundary="bx"', "Content-Transfer-Encoding: base64"])
            + b"\n"
            + boundary_body,
            PROGRAM,
        ),
        "boundary-param": (
            "python",
            headers(['Content-Type: multipart/mixed; (note) boundary="bx"']) + b"\n" + boundary_body,
            PROGRAM,
        ),
        "line-ends": ("python", INNER.replace(b"\n", b"\r"), PROGRAM),
        "cte-spelling": (
            "mimetools",
            mixed([part("application/octet-stream", b64(PROGRAM), "base64 (comment)", "setup.exe")]),
            PROGRAM,
        ),
        "text-encodings": (
            "mimetools",
            mixed([part("text/plain", b"see below\n\n" + uuencode(PROGRAM, "setup.exe", "644") + b"\nbye\n")]),
            PROGRAM,
        ),
        "archives": ("python", mixed([part("application/zip", b64(zipped), "base64", "files.zip")]), zipped),
        "past-limits": ("python", deep, PROGRAM),
        "structure": (
            "gmime",
            headers(["Content-Type: text/plain", 'Content-Type: multipart/mixed; boundary="bx"'])
            + b"\n"
            + boundary_body,
            PROGRAM,
        ),
        "base64-forms": (
            "mailparser",
            mixed([part("application/octet-stream", qp_split_escapes, "quoted-printable", "setup.exe")]),
            PROGRAM,
        ),
        "preamble-epilogue": (
            "ripmime",
            headers(['Content-Type: multipart/mixed; boundary="bx"'])
            + b"\n"
            + multipart([part("text/plain", b"hi\n")], "bx", preamble=uuencode(PROGRAM)),
            PROGRAM,
        ),
    }


HAND_WRITTEN = _hand_written()


def _extract_one(tmp_path: Path, parser: str, message: bytes) -> list[str]:
    if parser not in refparsers.available():
        pytest.skip(f"{parser} is not installed")
    path = tmp_path / "message.eml"
    path.write_bytes(message)
    return refparsers.extract_all([str(path)], [parser])[parser][str(path)]


def test_every_class_has_a_hand_written_example():
    assert set(HAND_WRITTEN) == set(generator.CLASSES)


@pytest.mark.parametrize("cls", sorted(HAND_WRITTEN))
def test_a_reference_parser_extracts_the_hand_written_example(tmp_path, cls):
    parser, message, carrier = HAND_WRITTEN[cls]
    assert compare.sha(carrier) in _extract_one(tmp_path, parser, message)


@pytest.mark.parametrize("cls", sorted(HAND_WRITTEN))
def test_the_hand_written_example_reaches_the_scanners(tmp_path, cls):
    _parser, message, _carrier = HAND_WRITTEN[cls]
    path = tmp_path / "message.eml"
    path.write_bytes(message)
    mine = compare.run_ours([str(path)], str(compare.REPO / "lib"))[str(path)]
    assert not mine["error"]
    assert compare.sha(PROGRAM) in mine["hashes"] or mine["blocked"], f"{cls}: the program is not seen"


def test_binhex_and_uuencode_writers_are_real():
    """The generator's encoders agree with independent decoders (so a miss is the parsers', not ours)."""
    lines = uuencode(PROGRAM).splitlines()[1:-2]
    assert b"".join(binascii.a2b_uu(line) for line in lines) == PROGRAM
    assert binhex(PROGRAM).startswith(b"(This file must be converted with BinHex 4.0)")
    assert encode_body(INNER, "base64") == b64(INNER)


# ---------------------------------------------------------------- EICAR with a real clamd

# A few per class in CI; QS_EICAR_MESSAGES=2000 QS_EICAR_SAMPLE=100000 sends every kept one of 2000 through clamd.
EICAR_MESSAGES = int(os.environ.get("QS_EICAR_MESSAGES", "300"))
EICAR_SAMPLE = int(os.environ.get("QS_EICAR_SAMPLE", "24"))
EICAR_PER_CLASS = max(3, EICAR_SAMPLE // 16)


def test_generated_eicar_messages_are_quarantined_with_a_real_clamd(tmp_path, clamd_server):
    """EICAR messages a reference parser extracts: clamd (given the raw message and the scan_alone parts) or a
    blocking finding stops every one."""
    cases = [c for c in generator.generate(EICAR_MESSAGES, RANDOM_SEED) if c.eicar]
    run = compare.evaluate(cases, tmp_path / "messages")
    kept = [(c, o) for c, o in zip(cases, run.outcomes, strict=True) if o.kept]
    by_class: dict[str, list] = {}
    for item in kept:
        by_class.setdefault(item[0].cls, []).append(item)
    sample = [item for items in by_class.values() for item in items[:EICAR_PER_CLASS]][:EICAR_SAMPLE]
    assert sample
    config = ScannerConfig("clamd", "virus", (clamd_server.socket_path,), connect_timeout=2.0, scan_timeout=30.0)
    readers = archive_readers()
    missed = []
    for number, (item, outcome) in enumerate(sample):
        # The defaults: without --unzip, clamd reads the archives it can open in the raw message itself.
        settings = scan_settings(config, spooldir=str(tmp_path / f"spool{number}"), fix_mime=1, **readers)
        message = spooled_message(tmp_path, item.message, settings)
        try:
            verdict = inspection.inspect(message)
        finally:
            os.close(message.message_fd)
        if verdict.action != "quarantine":
            missed.append(f"{item.cls} ({item.variant}): {verdict.action}, {Path(outcome.path).name}")
    assert not missed, f"seed {RANDOM_SEED}: {len(missed)} of {len(sample)} EICAR messages got through: {missed}"
