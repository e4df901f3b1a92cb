"""An installation with the setuid wrapper, run by an unprivileged caller the way qmail-smtpd runs it.

The test process is root. The scanner account is a system user `qstest`; the caller is `nobody`,
switched to in the child before exec, so the wrapper really crosses a uid boundary. Everything the
unprivileged processes touch lives in world-traversable dirs under /tmp (pytest's own dirs are 0700).
The next hop is a small C program that records the environment it inherited, then execs the
qmail-queue stand-in with its sink compiled in (the wrapper removes QQ_STANDIN_* from the environment).
"""

from __future__ import annotations

import grp
import os
import pwd
import resource
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import (
    CONFIGURE,
    STANDIN_SOURCE,
    QueuedMessage,
    finish_run,
    load_queued,
    spool_work_files,
    start_feeding,
)

SCANNER_USER = "qstest"
CALLER_USER = "nobody"
CUSTOM_ERROR_FD = 6

HOP_SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
extern char **environ;
int main(void) {
  char path[4096];
  FILE *record;
  snprintf(path, sizeof path, "%s/%ld.environ", SINK, (long)getpid());
  record = fopen(path, "w");
  if (!record) return 63;
  for (char **entry = environ; *entry; ++entry) fprintf(record, "%s\n", *entry);
  fprintf(record, "ids=%d:%d:%d:%d\n", (int)getuid(), (int)geteuid(), (int)getgid(), (int)getegid());
  fclose(record);
  if (getenv("QS_TEST_HOP_PAUSE_MS")) usleep(1000 * atoi(getenv("QS_TEST_HOP_PAUSE_MS"))); /* a slow disk */
  /* The wrapper passes QS_* only: the load test's faults for the stand-in come as QS_TEST_STANDIN_*. */
  if (getenv("QS_TEST_STANDIN_EXIT")) setenv("QQ_STANDIN_EXIT", getenv("QS_TEST_STANDIN_EXIT"), 1);
  if (getenv("QS_TEST_STANDIN_DIE")) setenv("QQ_STANDIN_DIE", getenv("QS_TEST_STANDIN_DIE"), 1);
  setenv("QQ_STANDIN_DIR", SINK, 1);
  execl(STANDIN, STANDIN, (char *)0);
  return 81;
}
"""


def ensure_account(name: str) -> tuple[int, int]:
    """A system user and group of that name (created when missing); returns (uid, gid)."""
    try:
        grp.getgrnam(name)
    except KeyError:
        subprocess.run(["groupadd", "--system", name], check=True)
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--gid", name, "--home-dir", "/nonexistent", "--no-create-home",
             "--shell", "/usr/sbin/nologin", name],
            check=True,
        )
    entry = pwd.getpwnam(name)
    return entry.pw_uid, grp.getgrnam(name).gr_gid


def caller_ids() -> tuple[int, int]:
    entry = pwd.getpwnam(CALLER_USER)
    return entry.pw_uid, entry.pw_gid


def public_dir(prefix: str) -> Path:
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    directory.chmod(0o755)
    return directory


def world_runnable(path: str) -> bool:
    """True when every dir on the way is traversable and the file runnable by others."""
    real = os.path.realpath(path)
    parts = Path(real).parents
    if not all(os.stat(p).st_mode & stat.S_IXOTH for p in parts):
        return False
    return bool(os.stat(real).st_mode & stat.S_IXOTH)


def world_python() -> str:
    """An interpreter the scanner account can run: ours if reachable, else the system one."""
    if world_runnable(sys.executable):
        return sys.executable
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate) and world_runnable(candidate):
            return candidate
    pytest.skip("no Python interpreter runnable by an unprivileged account")
    return ""


def compile_c(source: str | Path, output: Path, *defines: str) -> Path:
    if isinstance(source, str):
        source_path = output.with_suffix(".c")
        source_path.write_text(source)
    else:
        source_path = source
    subprocess.run(["cc", "-O2", "-Wall", *defines, "-o", str(output), str(source_path)], check=True)
    output.chmod(0o755)
    return output


@dataclass
class WrappedResult:
    exit_code: int
    stderr: str
    custom_error: bytes | None
    queued: list[QueuedMessage]
    environs: list[str]  # what each next-hop run inherited, one text per run
    seconds: float
    stdout: str = ""  # only with administrator flags


@dataclass
class WrappedInstallation:
    """configure.py --install with the wrapper, scanner account qstest, caller nobody."""

    prefix: Path
    wrapper: Path
    program: Path
    spool: Path
    sink: Path
    scanner_ids: tuple[int, int]
    configure_output: str
    notes: dict = field(default_factory=dict)
    configure_argv: list[str] = field(default_factory=list)  # to install again over it

    def run(
        self,
        message: bytes,
        envelope_bytes: bytes = b"Fsender@example.org\0Trcpt@example.com\0\0",
        env: dict[str, str] | None = None,
        caller: tuple[int, int] | None = None,
        close_fds: tuple[int, ...] = (),
        args: tuple[str, ...] = (),
        executable: Path | None = None,
        timeout: float = 60.0,
        pause: float = 0.0,
    ) -> WrappedResult:
        """Run the wrapper as qmail-smtpd would, but as an unprivileged caller with env as given."""
        caller = caller_ids() if caller is None else caller
        before = set(self.sink.glob("*"))
        message_read, message_write = os.pipe()
        envelope_read, envelope_write = os.pipe()
        error_read, error_write = os.pipe()

        def become_caller() -> None:
            os.dup2(error_write, CUSTOM_ERROR_FD)
            for fd in close_fds:
                os.close(fd)
            os.setgroups([])
            os.setgid(caller[1])
            os.setuid(caller[0])

        started = time.monotonic()
        # With administrator flags the program prints: give it a real stdout then.
        process = subprocess.Popen(
            [str(executable or self.wrapper), *args],
            stdin=message_read,
            stdout=subprocess.PIPE if args else envelope_read,
            stderr=subprocess.PIPE,
            env=dict(env or {}),
            close_fds=False,
            preexec_fn=become_caller,
        )
        for fd in (message_read, envelope_read, error_write):
            os.close(fd)

        feeder = start_feeding(message_write, envelope_write, message, envelope_bytes, pause=pause)
        stdout, stderr, custom_error = finish_run(process, feeder, error_read, timeout)
        new = sorted(set(self.sink.glob("*")) - before)
        queued = [load_queued(path) for path in new if path.suffix == ".msg"]
        environs = [path.read_text() for path in new if path.suffix == ".environ"]
        return WrappedResult(
            process.returncode, stderr.decode("utf-8", "replace"), custom_error, queued, environs,
            time.monotonic() - started, stdout.decode("utf-8", "replace"),
        )

    def work_files(self) -> list[Path]:
        return spool_work_files(self.spool)

    def remove(self) -> None:
        shutil.rmtree(self.prefix, ignore_errors=True)


def install_wrapped(*configure_args: str) -> WrappedInstallation:
    """Install into a public temp prefix with the setuid wrapper for the qstest account."""
    scanner_ids = ensure_account(SCANNER_USER)
    prefix = public_dir("qs-wrapped-")
    sink = prefix / "queue"
    sink.mkdir()
    os.chown(sink, *scanner_ids)
    standin = compile_c(STANDIN_SOURCE, prefix / "qmail-queue-standin")
    hop = compile_c(HOP_SOURCE, prefix / "next-hop", f'-DSINK="{sink}"', f'-DSTANDIN="{standin}"')
    argv = [
        sys.executable, str(CONFIGURE), "--prefix", str(prefix), "--qmail-queue-binary", str(hop),
        "--output", str(prefix / "qmail-scanner-queue.py"), "--batch", "--quiet", "--install",
        "--python", world_python(), "--qs-user", SCANNER_USER, "--qs-group", SCANNER_USER,
    ]
    given = " ".join(configure_args)
    if "--notify" not in given:
        argv += ["--notify", "none"]
    if "--scanners" not in given:
        argv += ["--scanners", "none"]
    argv += list(configure_args)
    completed = subprocess.run(argv, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"configure failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
    return WrappedInstallation(
        prefix=prefix,
        wrapper=prefix / "bin" / "qmail-scanner-queue",
        program=prefix / "bin" / "qmail-scanner-queue.py",
        spool=prefix / "spool",
        sink=sink,
        scanner_ids=scanner_ids,
        configure_output=completed.stdout + completed.stderr,
        configure_argv=argv,
    )


def run_as(uid: int, gid: int, code: str) -> subprocess.CompletedProcess:
    """Run a Python snippet as another user (to show what that user can and cannot do)."""

    def drop() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return subprocess.run(
        [world_python(), "-I", "-S", "-c", code], capture_output=True, text=True, preexec_fn=drop, check=False,
        env={"PATH": "/usr/bin:/bin"}, cwd="/",
    )


def limit_file_size(limit: int):
    """A preexec function setting RLIMIT_FSIZE (disk quota stand-in)."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.fixture(scope="session")
def wrapped():
    """One wrapped installation for the session (tests must not depend on its spool being empty)."""
    installation = install_wrapped()
    yield installation
    installation.remove()


@pytest.fixture()
def wrapped_fresh():
    installation = install_wrapped()
    yield installation
    installation.remove()
