"""--install's checks of the staged installation, run as the scanner account before anything is swapped in.

What qmail-smtpd will do with the new installation is done here first, on the staged copies:
the frozen interpreter runs as the account, the program loads its engine and the optional
modules configure found, the policy file compiles, and a test message goes through the program
(and through a wrapper built like the installed one) to a harmless end: its envelope is
malformed on purpose, so the program spools the message as the account, reads the envelope and
stops with 91 before any scan, alert, log line or queueing. Any failure: nothing was installed.
"""

from __future__ import annotations

import json
import subprocess
import tempfile

from .as_account import CHECK_PATH, Account, become, run_as
from .probes import ConfigureError

TEST_MESSAGE = b"From: configure.py@localhost\nSubject: configure.py --install check\n\nnot delivered\n"
TEST_ENVELOPE = b"X"  # not F<sender>: qmail-queue's envelope format error, before anything is scanned or queued
ENVELOPE_FORMAT_EXIT = 91
ENVELOPE_FORMAT_TEXT = "envelope does not start with F"
# Run as the account: the test message's work files (named <time>.<pid>_..., kept only under --debug 100).
REMOVE_WORK_FILES = """
import os, shutil, sys
spool, tag = sys.argv[1], sys.argv[2]
for sub in ("tmp", "working/tmp", "working/new", "working/cur"):
    try:
        names = os.listdir(os.path.join(spool, sub))
    except OSError:
        continue
    for name in names:
        path = os.path.join(spool, sub, name)
        if tag in name and name.split(".", 1)[0].isdigit():
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
"""
NOTHING_CHANGED = "nothing was installed: the previous program, wrapper and engine are in place"


def check_staged(
    account: Account | None,
    python: str,
    program: str,
    version: str,
    extra_sys_path: list[str],
    modules: list[str],
    spooldir: str,
    wrapper: str = "",
    compile_policy: bool = True,
) -> None:
    """Every check in order; the first failure raises ConfigureError saying what failed and what to do."""
    who = account.name if account is not None else "the scanner account"
    code, output = run_as(account, [python, "-I", "-S", "-c", "import sys; print(sys.version_info >= (3, 9))"])
    if code != 0 or output.strip() != "True":
        _fail(f"{who} cannot run the interpreter {python}: {_last(output, code)}", "give --python /usr/bin/python3")
    code, output = run_as(account, [python, "-I", "-S", program, "-v"])
    if code != 0 or f"qmail-scanner {version}" not in output:
        _fail(f"the new program does not start as {who}: {_last(output, code)}", "is the engine directory readable?")
    if modules:
        imports = f"import sys; sys.path[:0] = {json.dumps(extra_sys_path)}; import {', '.join(modules)}"
        code, output = run_as(account, [python, "-I", "-S", "-c", imports])
        if code != 0:
            _fail(
                f"{who} cannot import {', '.join(modules)} from {', '.join(extra_sys_path)}: {_last(output, code)}",
                f"make those directories readable by {who}, or remove the module",
            )
    if compile_policy:
        code, output = run_as(account, [python, "-I", "-S", program, "-g"])
        if code != 0:
            _fail(f"the policy file does not compile: {_last(output, code)}", "fix the lines named and re-run")
    _run_test_message([python, "-I", "-S", program], account, "the new program", (python, spooldir))
    if wrapper:
        code, output = run_as(None, [wrapper, "-v"])  # root runs it: the wrapper itself drops to the account
        if code != 0 or f"qmail-scanner {version}" not in output:
            _fail(f"the new wrapper does not run the program: {_last(output, code)}", f"can {who} run {python}?")
        _run_test_message([wrapper], None, "the new wrapper", (python, spooldir), account)


def _run_test_message(
    argv: list[str], account: Account | None, what: str, cleaner: tuple[str, str], owner: Account | None = None
) -> None:
    """The test message on fd 0, the malformed envelope on fd 1, as qmail-smtpd hands them over.

    argv runs as `account` (None: as root, for the wrapper, which drops by itself); the work files
    a --debug 100 program keeps are removed afterwards as the spool's owner (the account).
    """
    with tempfile.TemporaryFile() as message, tempfile.TemporaryFile() as envelope:
        message.write(TEST_MESSAGE)
        envelope.write(TEST_ENVELOPE)
        message.seek(0)
        envelope.seek(0)
        try:
            process = subprocess.Popen(
                argv, stdin=message, stdout=envelope, stderr=subprocess.PIPE, cwd="/", env={"PATH": CHECK_PATH},
                preexec_fn=become(account),
            )
            _, stderr = process.communicate(timeout=120)
        except (OSError, subprocess.SubprocessError) as error:
            _fail(f"{what} does not take a test message: {error}", "see the error above")
    python, spooldir = cleaner
    run_as(owner or account, [python, "-I", "-S", "-c", REMOVE_WORK_FILES, spooldir, f".{process.pid}_"])
    said = stderr.decode("utf-8", "replace")
    if process.returncode != ENVELOPE_FORMAT_EXIT or ENVELOPE_FORMAT_TEXT not in said:
        _fail(
            f"{what} does not take a test message (exit {process.returncode}, expected"
            f" {ENVELOPE_FORMAT_EXIT}): {_last(said, process.returncode)}",
            "can the scanner account write its spool (working/, tmp/)?",
        )


def _last(output: str, code: int) -> str:
    lines = output.strip().splitlines()
    return lines[-1][:300] if lines else f"exit {code}, no output"


def _fail(reason: str, hint: str) -> None:
    raise ConfigureError(f"install check: {reason}", f"{hint}; {NOTHING_CHANGED}")
