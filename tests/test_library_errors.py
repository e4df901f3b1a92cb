"""A library that fails on a damaged file leaves a finding or a log line; the deadline still ends the message.

Issue 15 item 6: the wrappers around py7zr, rarfile, tnefparse and libmagic either caught
everything (`except Exception: return`: the deadline's TemporaryFailure, raised by the alarm
wherever the program is, vanished with it, and nothing was logged) or caught too little (a
damaged 7z makes py7zr raise lzma.LZMAError, a damaged winmail.dat makes tnefparse raise
LookupError or UnboundLocalError: an internal error, a 451, and the sender retries for days).
The libraries here are the real ones; only the *timing* of the deadline is arranged.
"""

from __future__ import annotations

import base64
import lzma
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mime_fixtures import CORPUS, all_findings, blocking_rules, make_settings, spool, unpack_bytes, work  # noqa: F401
from qmail_scanner import pipeline
from qmail_scanner.outcomes import TemporaryFailure
from qmail_scanner.unpack import magictype

PROGRAM = b"MZ\x90\x00" + b"\x00" * 60 + b"PE\x00\x00" + bytes(range(256)) * 8


def message_with(name: str, data: bytes, content_type: str = "application/octet-stream") -> bytes:
    return (
        b"From: a@example.org\nTo: b@example.net\nSubject: files\nMIME-Version: 1.0\n"
        b"Content-Type: multipart/mixed; boundary=BB\n\n--BB\nContent-Type: text/plain\n\nsee attached\n"
        b"--BB\nContent-Type: " + content_type.encode() + b'; name="' + name.encode() + b'"\n'
        b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(data) + b"--BB--\n"
    )


def damaged(data: bytes, fails, seed: int, start: int = 0, tries: int = 5000) -> bytes:
    """`data` with a few bytes from `start` on changed (seeded: always the same) such that `fails(copy)` holds."""
    chooser = random.Random(seed)
    for _ in range(tries):
        copy = bytearray(data)
        for _ in range(chooser.randint(1, 3)):
            copy[chooser.randrange(start, len(copy))] = chooser.randrange(256)
        if fails(bytes(copy)):
            return bytes(copy)
    raise AssertionError("no damaged copy makes the library fail that way")


def seven_zip(tmp_path: Path) -> bytes:
    source = tmp_path / "seven"
    source.mkdir()
    (source / "invoice.pdf").write_bytes(PROGRAM)
    (source / "notes.txt").write_bytes(b"hello\n")
    argv = ["7zz", "a", "-t7z", "a.7z", "invoice.pdf", "notes.txt"]
    subprocess.run(argv, cwd=source, check=True, stdout=subprocess.DEVNULL)
    return (source / "a.7z").read_bytes()


def py7zr_raises_lzma_error(tmp_path: Path):
    import py7zr

    def fails(data: bytes) -> bool:
        path = tmp_path / "probe.7z"
        path.write_bytes(data)
        try:
            with py7zr.SevenZipFile(path, mode="r") as archive:
                archive.needs_password()
                archive.list()
        except lzma.LZMAError:
            return True
        except Exception:
            return False
        return False

    return fails


def test_a_7z_that_makes_py7zr_raise_lzma_error_is_a_log_line_not_a_crash(tmp_path, spool, work, capfd):  # noqa: F811
    # The header of a 7z made by 7-Zip (its last bytes) is itself LZMA-compressed: damage there reaches lzma.
    archive = seven_zip(tmp_path)
    data = damaged(archive, py7zr_raises_lzma_error(tmp_path), seed=1, start=len(archive) - 120)
    settings = make_settings(spool, unzip=False, libarchive_path="")  # rar and 7z through rarfile and py7zr
    unpacked = unpack_bytes(message_with("a.7z", data), work, settings)
    rules = blocking_rules(all_findings(unpacked, settings))
    err = capfd.readouterr().err
    # Nothing of it can be read and nothing says the format is one we lack: as for libarchive,
    # a damaged archive that no tool opens is a log line (the virus scanners still see its bytes).
    assert "archive-unreadable" in rules or ("a.7z looks like a 7z archive" in err and "LZMAError" in err), err


def test_a_winmail_dat_that_makes_tnefparse_raise_is_a_log_line_and_the_tnef_program_tries(spool, work, capfd):  # noqa: F811
    from tnefparse.tnef import TNEF

    sys.path.insert(0, str(CORPUS))
    import make_corpus

    usual = (ValueError, IndexError, KeyError, TypeError)

    def fails(data: bytes) -> bool:
        try:
            _ = TNEF(data, do_checksum=False).attachments
        except usual:
            return False
        except Exception:
            return True  # LookupError (a code page it does not know), UnboundLocalError...
        return False

    data = damaged(make_corpus.make_tnef("setup.exe", PROGRAM), fails, seed=2)
    settings = make_settings(spool)
    unpack_bytes(message_with("winmail.dat", data, "application/ms-tnef"), work, settings)
    assert "tnefparse failed on winmail.dat" in capfd.readouterr().err


@pytest.fixture
def deadline_handler():
    """The program's own SIGALRM handler (the deadline raises TemporaryFailure), restored after."""
    previous = signal.signal(signal.SIGALRM, pipeline._raise_deadline)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def fire_the_deadline_inside(function_name: str, module_name: str):
    """A tracer that delivers SIGALRM once, on the first line run inside `module_name`.`function_name`."""
    fired = []

    def tracer(frame, event, arg):
        if event == "call" and frame.f_code.co_name == function_name and module_name in frame.f_code.co_filename:
            return local

    def local(frame, event, arg):
        if event == "line" and not fired:
            fired.append(frame.f_lineno)
            signal.raise_signal(signal.SIGALRM)  # the alarm, as setitimer delivers it: the handler raises here
        return local

    return tracer, fired


def test_the_deadline_inside_libmagic_is_a_temporary_failure(spool, work, deadline_handler):  # noqa: F811
    settings = make_settings(spool, have_python_magic=True)
    magictype.detect(b"\x00\x01warm up", settings)  # libmagic loaded before the deadline is armed
    tracer, fired = fire_the_deadline_inside("from_buffer", "magic")
    sys.settrace(tracer)
    try:
        with pytest.raises(TemporaryFailure, match="deadline"):
            magictype.detect(b"\x00\x01\x02 no signature we know" * 20, settings)
    finally:
        sys.settrace(None)
    assert fired  # the alarm did go off inside python-magic's from_buffer


def test_the_deadline_inside_py7zr_is_a_temporary_failure(tmp_path, spool, work, deadline_handler):  # noqa: F811
    settings = make_settings(spool, unzip=False, libarchive_path="")
    message = message_with("a.7z", seven_zip(tmp_path))
    tracer, fired = fire_the_deadline_inside("list", "py7zr")
    sys.settrace(tracer)
    try:
        with pytest.raises(TemporaryFailure, match="deadline"):
            unpack_bytes(message, work, settings)
    finally:
        sys.settrace(None)
    assert fired


def test_the_deadline_inside_tnefparse_is_a_temporary_failure(spool, work, deadline_handler):  # noqa: F811
    sys.path.insert(0, str(CORPUS))
    import make_corpus

    settings = make_settings(spool)
    message = message_with("winmail.dat", make_corpus.make_tnef("setup.exe", PROGRAM), "application/ms-tnef")
    tracer, fired = fire_the_deadline_inside("__init__", "tnefparse")
    sys.settrace(tracer)
    try:
        with pytest.raises(TemporaryFailure, match="deadline"):
            unpack_bytes(message, work, settings)
    finally:
        sys.settrace(None)
    assert fired
