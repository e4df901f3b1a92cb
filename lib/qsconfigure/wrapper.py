"""The setuid wrapper: compile contrib/qmail-scanner-queue.c with this site's paths and install it.

Python scripts cannot be setuid; qmail's callers (qmail-smtpd as qmaild, qmail-inject as
any local user) run the wrapper, which becomes the scanner account, cleans the environment
and execs the frozen interpreter with -I -S on the installed program.

Modes: the wrapper is root:root with the setuid bit (04755) and drops to the scanner account
before anything else, so the account it runs as cannot rewrite it (the original's wrapper was
owned by that account, which could). The program and the engine are root's and writable by root only.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import tempfile

from .probes import ConfigureError, find_program

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.path.dirname(os.path.dirname(HERE))
WRAPPER_SOURCE = os.path.join(SOURCE_ROOT, "contrib", "qmail-scanner-queue.c")
WRAPPER_NAME = "qmail-scanner-queue"
SETUID_MODE = 0o4755  # setuid root, runnable by qmail's callers; it drops to the scanner account at once
OWNER = (0, 0)  # root:root: nothing the scanner account runs can rewrite or chmod it
PLAIN_MODE = 0o755  # when we may not change owners (a --prefix install as a normal user)
UMASK = 0o077  # work and quarantine files are the scanner account's alone
FIXED_PATH = "/usr/local/bin:/usr/bin:/bin"
CFLAGS = ("-O2", "-Wall", "-Wextra", "-D_FORTIFY_SOURCE=2", "-fstack-protector-strong")


def frozen_interpreter(program_path: str, fallback: str) -> str:
    """The interpreter named on the program's #! line (what configure froze), else fallback."""
    try:
        with open(program_path, "rb") as handle:
            first = handle.readline(4096)
    except OSError:
        return fallback
    if not first.startswith(b"#!"):
        return fallback
    words = first[2:].decode("utf-8", "replace").split()
    return words[0] if words and os.path.isabs(words[0]) else fallback


def c_string(text: str, what: str) -> str:
    """A path as a C string literal for -D; refuse what would need escaping."""
    if any(ch in text for ch in '"\\\n\r\0') or not text.isprintable():
        raise ConfigureError(f"{what} {text!r} cannot be compiled into the wrapper", "use a plain path")
    return f'"{text}"'


def account_ids(user: str, group: str) -> tuple[int, int] | None:
    try:
        return pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def compile_wrapper(
    compiler: str, output: str, python: str, program: str, uid: int, gid: int, engine: tuple[str, ...] = ()
) -> None:
    """cc the wrapper with everything compiled in (argv list, no shell); engine: the -D words of engine_defines."""
    argv = [
        compiler,
        *CFLAGS,
        f"-DQS_PYTHON={c_string(python, 'the interpreter path')}",
        f"-DQS_PROGRAM={c_string(program, 'the program path')}",
        f"-DQS_UID={uid}",
        f"-DQS_GID={gid}",
        f"-DQS_UMASK=0{UMASK:o}",
        f"-DQS_PATH={c_string(FIXED_PATH, 'PATH')}",
        *engine,
        "-o",
        output,
        WRAPPER_SOURCE,
    ]
    completed = subprocess.run(argv, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise ConfigureError(
            f"the setuid wrapper does not compile: {completed.stderr.strip()[:2000]}",
            "give --skip-setuid-test to install without it",
        )


def engine_defines(args) -> tuple[str, ...]:
    """Where the engine listens (in the final spool), which fd carries custom errors, how long a message may take."""
    socket_path = os.path.join(os.path.abspath(args.spooldir), "engine.sock")
    return (
        f"-DQS_ENGINE_SOCKET={c_string(socket_path, 'the engine socket path')}",
        f"-DQS_CUSTOM_ERROR_FD={int(args.custom_error_fd)}",
        f"-DQS_DEADLINE={int(args.deadline) + 1}",
    )


def check_wrapper(wrapper: str, user: str) -> None:
    """The original's setuid test: run `wrapper -v` and expect the program to answer as the account."""
    completed = subprocess.run([wrapper, "-v"], capture_output=True, text=True, check=False, timeout=60)
    if completed.returncode != 0 or "qmail-scanner" not in completed.stdout:
        raise ConfigureError(
            f"the installed wrapper does not run the program (exit {completed.returncode}): "
            f"{completed.stderr.strip()[:1000]}",
            f"the interpreter, the program and the engine must be readable and runnable by {user}",
        )


def build_and_install_wrapper(args, installer, program_path: str, python_executable: str) -> str:
    """Build the wrapper for this site and install it setuid root into bindir; return its path ("" if skipped)."""
    compiler = find_program("cc") or find_program("gcc")
    if not compiler:
        print("no C compiler found: the setuid wrapper is not installed; run the program as the scanner account")
        return ""
    ids = account_ids(args.qs_user, args.qs_group)
    if ids is None:
        print(f"the account {args.qs_user}:{args.qs_group} does not exist: the setuid wrapper is not installed")
        return ""
    uid, gid = ids
    destdir = getattr(args, "destdir", "") or ""
    # With --destdir the wrapper is staged inside it but must name the final paths.
    final_program = program_path
    if destdir:
        root = os.path.abspath(destdir)
        final_program = "/" + os.path.relpath(os.path.abspath(program_path), root)
    python = frozen_interpreter(program_path, python_executable)
    destination = os.path.join(installer.path(args.bindir), WRAPPER_NAME)
    with tempfile.TemporaryDirectory(prefix="qs-wrapper-") as build_dir:
        built = os.path.join(build_dir, WRAPPER_NAME)
        compile_wrapper(compiler, built, python, final_program, uid, gid, engine_defines(args))
        staging = destination + ".new"
        try:
            os.unlink(staging)
        except FileNotFoundError:
            pass
        shutil.copyfile(built, staging)
    # With the scanner account root (--qs-user root) there is nothing to switch to: installed plain.
    setuid = os.geteuid() == 0 and uid != 0
    if setuid:
        os.chown(staging, *OWNER)
    # chmod after chown: chown clears the setuid bit.
    mode = SETUID_MODE if setuid else PLAIN_MODE
    os.chmod(staging, mode)
    os.rename(staging, destination)
    if not destdir and not getattr(args, "skip_setuid_test", False):
        check_wrapper(destination, args.qs_user)
    if setuid:
        print(f"installed the setuid wrapper {destination} (root:root, mode {mode:04o}; it runs as {args.qs_user})")
    else:
        print(f"installed the wrapper {destination} (mode {mode:04o}, not setuid: only {args.qs_user} can run it)")
    return destination
