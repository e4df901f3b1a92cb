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
import subprocess

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
    compiler: list[str], output: str, python: str, program: str, uid: int, gid: int, engine: tuple[str, ...] = ()
) -> None:
    """cc the wrapper with everything compiled in (argv list, no shell); engine: the -D words of engine_defines."""
    argv = [
        *compiler,
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
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as error:
        reason = f"the C compiler {compiler[0]} does not run: {error.strerror}"
        raise ConfigureError(reason, "set CC or install gcc; nothing was installed") from None
    if completed.returncode != 0:
        raise ConfigureError(
            f"the setuid wrapper does not compile ({' '.join(compiler)} exit {completed.returncode}):"
            f" {completed.stderr.strip()[:2000]}",
            "fix the C compiler (CC, gcc, libc6-dev) and re-run; nothing was installed",
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
            f"the wrapper {wrapper} does not run the program (exit {completed.returncode}): "
            f"{completed.stderr.strip()[:1000]}",
            f"the interpreter, the program and the engine must be readable and runnable by {user}",
        )


def wrapper_compiler() -> list[str]:
    """$CC when set (as make does), else cc or gcc; [] when there is none."""
    given = os.environ.get("CC", "").split()
    if given:
        located = find_program(given[0])
        return [located or given[0], *given[1:]]
    found = find_program("cc") or find_program("gcc")
    return [found] if found else []


def stage_wrapper(
    args, transaction, bindir: str, final_program: str, python: str, check_program: str
) -> tuple[str, str]:
    """Build the site's wrapper into the transaction; return (staged wrapper, check wrapper) ("", "": none built).

    Two builds from the same source and flags: the one installed names the final program; the check
    build names the staged check copy of it and no engine socket (a running engine would answer for
    the previous installation), so the checks run the new program through a wrapper before the swap.
    A compiler failure raises before anything is installed.
    """
    compiler = wrapper_compiler()
    if not compiler:
        print("no C compiler found: the setuid wrapper is not installed; run the program as the scanner account")
        return "", ""
    ids = account_ids(args.qs_user, args.qs_group)
    if ids is None:
        print(f"the account {args.qs_user}:{args.qs_group} does not exist: the setuid wrapper is not installed")
        return "", ""
    uid, gid = ids
    staged = transaction.stage_path(os.path.join(bindir, WRAPPER_NAME))
    compile_wrapper(compiler, staged, python, final_program, uid, gid, engine_defines(args))
    # With the scanner account root (--qs-user root) there is nothing to switch to: installed plain.
    setuid = os.geteuid() == 0 and uid != 0
    if setuid:
        os.chown(staged, *OWNER)
    os.chmod(staged, SETUID_MODE if setuid else PLAIN_MODE)  # after chown: chown clears the setuid bit
    if not check_program:
        return staged, ""
    check = os.path.join(os.path.dirname(staged), "check-" + WRAPPER_NAME)
    compile_wrapper(
        compiler,
        check,
        python,
        check_program,
        uid,
        gid,
        (f"-DQS_CUSTOM_ERROR_FD={int(args.custom_error_fd)}", f"-DQS_DEADLINE={int(args.deadline) + 1}"),
    )
    os.chmod(check, 0o700)  # root runs it (it drops to the account as the real one does); nobody else may
    return staged, check


def describe_wrapper(wrapper: str, user: str) -> str:
    """The line saying what was installed."""
    mode = os.stat(wrapper).st_mode & 0o7777
    if mode & 0o4000:
        return f"installed the setuid wrapper {wrapper} (root:root, mode {mode:04o}; it runs as {user})"
    return f"installed the wrapper {wrapper} (mode {mode:04o}, not setuid: only {user} can run it)"
