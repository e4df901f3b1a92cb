"""Hostile input: every generated, mutated or seed message ends in a defined outcome, in time and memory.

Defined = exit 0 with the message queued or quarantined byte for byte (or deliberately dropped),
or a temporary/permanent code with nothing queued. An uncaught exception inside the engine ends
as a temporary failure too, which is safe for the mail but is a bug: it fails the test here.
The budget is small in `make test` (QS_FUZZ_EXAMPLES, default 40); `make soak` runs long.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_fixtures import (
    RSS_LIMIT_KB,
    generate_case,
    is_internal_error,
    make_message,
    make_zip,
    run_case,
    seed_messages,
)

EXAMPLES = int(os.environ.get("QS_FUZZ_EXAMPLES", "40"))
DEADLINE = 30
FUZZ_OPTIONS = ("--unzip", "yes", "--block-password-protected", "yes", "--deadline", str(DEADLINE))


@pytest.fixture(scope="module")
def fuzz_installation(make_installation):
    return make_installation(*FUZZ_OPTIONS)


def check(installation, message: bytes, label: str):
    result = run_case(installation, message, timeout=DEADLINE + 30)
    assert not is_internal_error(result), f"{label}: engine bug: {result.stderr[-2000:]}"
    assert result.seconds < DEADLINE + 5, f"{label}: took {result.seconds:.1f} s"
    assert result.max_rss_kb < RSS_LIMIT_KB, f"{label}: used {result.max_rss_kb} KB"
    assert installation.work_files() == [], label
    return result


@pytest.mark.parametrize(("name", "message"), seed_messages(), ids=[name for name, _ in seed_messages()])
def test_seed_corpus_messages_end_in_a_defined_outcome(fuzz_installation, name, message):
    check(fuzz_installation, message, name)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_generated_and_mutated_messages_end_in_a_defined_outcome(fuzz_installation, seed):
    kind, message = generate_case(seed)
    check(fuzz_installation, message, f"{kind} seed={seed}")


@settings(max_examples=max(10, EXAMPLES // 2), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1), shape=st.sampled_from(["inline", "nested", "base64"]))
def test_hostile_zip_archives_end_in_a_defined_outcome(fuzz_installation, seed, shape):
    import base64
    import random

    rng = random.Random(seed)
    archive = make_zip(rng)
    if shape == "nested":
        import io
        import zipfile

        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as outer:
            outer.writestr("inner.zip", archive)
        archive = buffer.getvalue()
    message = (
        b"From: a@example.org\nSubject: archive\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\nsee attached\n'
        b'--b\nContent-Type: application/zip; name="files.zip"\nContent-Transfer-Encoding: base64\n\n'
        + base64.encodebytes(archive) + b"--b--\n"
    )
    check(fuzz_installation, message, f"zip seed={seed} shape={shape}")


def test_zip_bomb_is_bounded(fuzz_installation):
    """A small zip declaring and holding a huge expansion is stopped by the limits, not by memory."""
    import base64
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for index in range(4):
            archive.writestr(f"zeros{index}.bin", b"\0" * 60_000_000)
    message = (
        b"From: a@example.org\nSubject: bomb\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n'
        b'Content-Type: application/zip; name="bomb.zip"\nContent-Transfer-Encoding: base64\n\n'
        + base64.encodebytes(buffer.getvalue()) + b"--b--\n"
    )
    result = check(fuzz_installation, message, "zip bomb")
    assert result.outcome != "queued" or result.seconds < DEADLINE


def test_deeply_nested_message_is_bounded(fuzz_installation):
    message = b"From: a@example.org\nSubject: deep\n"
    for depth in range(300):
        message += b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="d' + str(depth).encode() + b'"\n\n'
        message += b"--d" + str(depth).encode() + b"\n"
    message += b"Content-Type: text/plain\n\nbottom\n"
    check(fuzz_installation, message, "deep nesting")


def test_generator_is_deterministic():
    """The same seed gives the same message, so a failing seed can be replayed."""
    assert generate_case(12345) == generate_case(12345)
    import random

    assert make_message(random.Random(7)) == make_message(random.Random(7))
