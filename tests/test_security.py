"""A local user running the setuid wrapper with a hostile environment gains nothing.

Every hostile case has a control that shows the same trick works on an unprotected process,
so a passing case means the wrapper stopped it, not that the trick was a dud.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine_fixtures import engine, engine_installation  # noqa: F401 - fixtures
from security_fixtures import (
    SCANNER_USER,
    caller_ids,
    compile_c,
    public_dir,
    run_as,
    world_python,
    wrapped,  # noqa: F401 - fixture
    wrapped_fresh,  # noqa: F401 - fixture
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="crossing uids needs root to set them up")

CLEAN = b"Received: from client by mx\nFrom: a@example.org\nTo: b@example.com\nSubject: hello\n\nplain text\n"
ALLOWED_PREFIXES = ("TCP", "QS_")
ALLOWED_NAMES = {"RELAYCLIENT", "DATABYTES", "SMTPAUTHUSER", "PATH", "LC_CTYPE"}  # LC_CTYPE: Python's own coercion

EVIL_MODULE = """
import os
with open(os.path.join({markers!r}, "{name}-%d" % os.getuid()), "w") as marker:
    marker.write("ran")
"""
EVIL_LIBRARY = r"""
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void evil(void) {
  char path[4096];
  snprintf(path, sizeof path, "%s/preload-%d", MARKERS, (int)getuid());
  FILE *marker = fopen(path, "w");
  if (marker) { fputs("ran", marker); fclose(marker); }
}
unsigned int la_version(unsigned int version) { return version; }
"""


@pytest.fixture(scope="module")
def evil(tmp_path_factory) -> Path:
    """A world-readable dir of traps: Python modules, a startup file, a user site, a preload library."""
    root = public_dir("qs-evil-")
    markers = root / "markers"
    markers.mkdir()
    markers.chmod(0o777)
    modules = root / "pythonpath"
    modules.mkdir()
    for name in ("sitecustomize", "usercustomize", "signal", "socket", "shutil", "base64", "zipfile", "stat", "errno"):
        (modules / f"{name}.py").write_text(EVIL_MODULE.format(markers=str(markers), name=name))
    package = modules / "qmail_scanner"
    package.mkdir()
    (package / "__init__.py").write_text(EVIL_MODULE.format(markers=str(markers), name="engine"))
    (root / "startup.py").write_text(EVIL_MODULE.format(markers=str(markers), name="startup"))
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    python = world_python()
    system_version = subprocess.run(
        [python, "-c", "import sys; print('python%d.%d' % sys.version_info[:2])"], capture_output=True, text=True
    ).stdout.strip() or version
    user_site = root / "home" / ".local" / "lib" / system_version / "site-packages"
    user_site.mkdir(parents=True)
    (user_site / "usercustomize.py").write_text(EVIL_MODULE.format(markers=str(markers), name="home-usercustomize"))
    (user_site / "evil.pth").write_text(f"import os; open(os.path.join({str(markers)!r}, 'home-pth'), 'w')\n")
    (root / "home" / ".pythonrc.py").write_text(EVIL_MODULE.format(markers=str(markers), name="pythonrc"))
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for name in ("python3", "sh", "env", "qmail-queue", "cc", "tnef", "clamdscan"):
        (bin_dir / name).write_text(f"#!/bin/sh\n: > {markers}/path-{name}\n")
        (bin_dir / name).chmod(0o755)
    compile_c(EVIL_LIBRARY, root / "evil.so", "-shared", "-fPIC", f'-DMARKERS="{markers}"')
    for path in [root, *root.rglob("*")]:
        if path.is_dir():
            path.chmod(0o777 if path == markers else 0o755)
    return root


def markers(evil: Path) -> list[str]:
    return sorted(p.name for p in (evil / "markers").iterdir())


def clear_markers(evil: Path) -> None:
    for path in (evil / "markers").iterdir():
        path.unlink()


def hostile_environments(evil: Path) -> dict[str, dict[str, str]]:
    home = str(evil / "home")
    return {
        "PYTHONPATH": {"PYTHONPATH": str(evil / "pythonpath")},
        "PYTHONSTARTUP+INSPECT": {"PYTHONSTARTUP": str(evil / "startup.py"), "PYTHONINSPECT": "1"},
        "LD_PRELOAD": {
            "LD_PRELOAD": str(evil / "evil.so"), "LD_AUDIT": str(evil / "evil.so"), "LD_LIBRARY_PATH": str(evil),
        },
        "IFS+PATH": {"IFS": "/", "PATH": str(evil / "bin"), "SHELL": str(evil / "bin" / "sh")},
        "HOME": {"HOME": home, "PYTHONUSERBASE": str(evil / "home" / ".local"), "PYTHONHOME": home},
    }


def assert_delivered_intact(result, message: bytes = CLEAN) -> None:
    assert result.exit_code == 0, result.stderr
    assert len(result.queued) == 1
    from harness import strip_added_headers

    assert strip_added_headers(result.queued[0].message) == message
    assert result.queued[0].envelope == b"Fsender@example.org\0Trcpt@example.com\0\0"


def next_hop_environment(result) -> dict[str, str]:
    assert len(result.environs) == 1
    lines = result.environs[0].splitlines()
    names = {}
    for line in lines:
        name, _, value = line.partition("=")
        names[name] = value
    return names


def test_wrapper_is_root_owned_setuid_root_and_everything_root_runs_is_roots(wrapped):  # noqa: F811
    info = wrapped.wrapper.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o4755)
    for path in [wrapped.program, *installed_engine_files(wrapped), wrapped.program.parent]:
        mode = path.lstat().st_mode
        assert path.lstat().st_uid == 0, path
        assert not mode & (stat.S_IWGRP | stat.S_IWOTH), path
    assert "installed the setuid wrapper" in wrapped.configure_output
    assert "root:root, mode 4755; it runs as qstest" in wrapped.configure_output


def installed_engine_files(installation) -> list[Path]:
    """What root, qmail's callers or the engine run or read as code: the engine dir, the run file, the unit."""
    lib = installation.prefix / "lib"
    bindir = installation.program.parent
    return [lib, *sorted(lib.rglob("*")), bindir / "qmail-scanner-engine.run", bindir / "qmail-scanner-engine.service"]


# Run as the scanner account: every way to change a file or what its name points to. Only
# PermissionError counts as refused; anything else (success or another error) is printed.
TAMPER = r"""
import os
for path in {paths!r}:
    is_dir = os.path.isdir(path)
    def write():
        name = os.path.join(path, "planted") if is_dir else path
        os.close(os.open(name, os.O_WRONLY | (os.O_CREAT | os.O_EXCL if is_dir else 0), 0o755))
    def replace():
        if is_dir:
            os.rename(path, path + ".moved")
            return
        with open(path + ".evil", "wb") as evil:
            evil.write(b"#!/bin/sh\necho owned\n")
        os.replace(path + ".evil", path)
    attempts = {{
        "write": write,
        "chmod": lambda: os.chmod(path, 0o6777),
        "chown": lambda: os.chown(path, os.getuid(), os.getgid()),
        "replace": replace,
    }}
    for what, attempt in attempts.items():
        try:
            attempt()
        except PermissionError:
            continue
        except OSError as error:
            print(what, path, "failed otherwise:", error)
            continue
        print(what, path, "allowed")
"""


def tamper_as_scanner(installation, paths: list[Path]) -> list[str]:
    uid, gid = installation.scanner_ids
    probe = run_as(uid, gid, TAMPER.format(paths=[str(p) for p in paths]))
    assert probe.returncode == 0, probe.stderr
    return probe.stdout.splitlines()


def test_scanner_account_cannot_rewrite_the_wrapper_the_program_or_the_engine(wrapped):  # noqa: F811
    before = {path: (path.read_bytes() if path.is_file() else b"", path.lstat()) for path in
              [wrapped.wrapper, wrapped.program, *installed_engine_files(wrapped)]}
    assert tamper_as_scanner(wrapped, list(before)) == []
    for path, (content, info) in before.items():
        now = path.lstat()
        assert (now.st_mode, now.st_uid, now.st_gid, now.st_ino) == (info.st_mode, info.st_uid, info.st_gid,
                                                                       info.st_ino), path
        assert not path.is_file() or path.read_bytes() == content, path
    assert not (wrapped.program.parent / "qmail-scanner-queue.evil").exists()


def test_control_the_same_tampering_succeeds_on_a_wrapper_the_scanner_account_owns(wrapped):  # noqa: F811
    """The original's model (owned by the account, 6755, in a dir it may write): every attempt works."""
    uid, gid = wrapped.scanner_ids
    directory = public_dir("qs-old-model-")
    try:
        os.chown(directory, uid, gid)
        copy = directory / "qmail-scanner-queue"
        copy.write_bytes(wrapped.wrapper.read_bytes())
        os.chown(copy, uid, gid)
        copy.chmod(0o6755)
        assert sorted(line.split()[0] for line in tamper_as_scanner(wrapped, [copy])) == [
            "chmod", "chown", "replace", "write"]
        assert copy.read_bytes().startswith(b"#!/bin/sh")
    finally:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)


def proc_status(pid: int) -> dict[str, list[str]]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.split()
    return fields


def signal_numbers(status: dict[str, list[str]], field: str) -> set[int]:
    mask = int(status[field][0], 16)
    return {number for number in range(1, 65) if mask & (1 << (number - 1))}


def test_wrapper_ends_as_the_scanner_account_with_no_groups_and_no_way_back(wrapped):  # noqa: F811
    """A caller with supplementary groups (qmaild's nofiles): the scanner gets none of them, and no root."""
    import grp

    groups = (grp.getgrnam("users").gr_gid, grp.getgrnam("nogroup").gr_gid)
    with message_in_flight(wrapped, b"Subject: slow\n\n", work_files=1, groups=groups) as process:
        status = proc_status(process.pid)
    uid, gid = wrapped.scanner_ids
    assert status["Uid"] == [str(uid)] * 4
    assert status["Gid"] == [str(gid)] * 4
    assert status["Groups"] == []
    assert status["CapPrm"] == status["CapEff"] == ["0000000000000000"]


@pytest.mark.parametrize("model", ["not setuid", "setuid to the scanner account (the original's 6755)"])
def test_wrapper_refuses_to_run_when_it_cannot_drop_root_for_the_scanner_account(wrapped, model):  # noqa: F811
    """Without the setuid-root bit the wrapper cannot become the scanner account: exit 81, nothing queued."""
    directory = public_dir("qs-wrong-mode-")
    try:
        copy = directory / "qmail-scanner-queue"
        copy.write_bytes(wrapped.wrapper.read_bytes())
        if model == "not setuid":
            copy.chmod(0o755)
        else:
            os.chown(copy, *wrapped.scanner_ids)
            copy.chmod(0o6755)
        result = wrapped.run(CLEAN, executable=copy)
        assert result.exit_code == 81
        assert "not running as the scanner account" in result.stderr
        assert result.queued == []
    finally:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)


def odd_caller_signals() -> None:
    """What a careless caller leaves behind: SIGCHLD, SIGHUP and SIGUSR1 ignored, SIGALRM and SIGTERM blocked.

    The program resets what it uses itself; SIGUSR1, which it never touches, shows the wrapper's reset.
    """
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    ignore_in_the_kernel(GLIBC_RESERVED_SIGNAL)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGTERM})


# glibc's sigaction() refuses 32 (its thread-cancel signal), but the kernel takes it: a caller
# (some supervisors do) can leave it ignored, and an ignored disposition survives execve.
GLIBC_RESERVED_SIGNAL = 32
RT_SIGACTION = {"x86_64": 13, "aarch64": 134}


LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: a preexec_fn runs after fork, where loading is unsafe


def ignore_in_the_kernel(number: int) -> None:
    """rt_sigaction(number, SIG_IGN) past glibc's wrapper."""
    action = (ctypes.c_ulong * 6)(1)  # handler SIG_IGN (1), no flags, no restorer, empty mask
    if LIBC.syscall(ctypes.c_long(RT_SIGACTION[platform.machine()]), number, action, None, 8) != 0:
        raise OSError(ctypes.get_errno(), "rt_sigaction")


ODD_IGNORED = {signal.SIGCHLD, signal.SIGHUP, signal.SIGUSR1, GLIBC_RESERVED_SIGNAL}
ODD_BLOCKED = {signal.SIGALRM, signal.SIGTERM}
# Python itself ignores SIGPIPE at start-up and the program ignores SIGXFSZ: these are theirs.
PROGRAMS_OWN_IGNORED = {signal.SIGPIPE, signal.SIGXFSZ}


def test_program_starts_from_a_clean_signal_state_whatever_the_caller_left(wrapped):  # noqa: F811
    with message_in_flight(wrapped, b"Subject: slow\n\n", work_files=1, setup=odd_caller_signals) as process:
        status = proc_status(process.pid)
    assert signal_numbers(status, "SigBlk") == set()
    assert signal_numbers(status, "SigIgn") <= PROGRAMS_OWN_IGNORED


def test_control_the_odd_signal_state_reaches_a_program_started_without_the_wrapper():
    uid, gid = caller_ids()

    def become_caller() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        odd_caller_signals()

    process = subprocess.Popen(["sleep", "30"], preexec_fn=become_caller)
    try:
        time.sleep(0.2)
        status = proc_status(process.pid)
        assert signal_numbers(status, "SigBlk") >= ODD_BLOCKED
        assert signal_numbers(status, "SigIgn") >= ODD_IGNORED
    finally:
        process.kill()
        process.wait()


def test_wrapper_waiting_for_the_engine_has_a_clean_signal_state(engine):  # noqa: F811
    """On the engine path the wrapper itself waits for the worker's answer: no inherited mask or SIG_IGN there."""
    installation = engine.installation
    with message_in_flight(installation, b"Subject: slow\n\n", work_files=1, setup=odd_caller_signals) as process:
        assert engine.busy_workers(), "the message did not go to the engine"
        status = proc_status(process.pid)
    assert signal_numbers(status, "SigBlk") == set()
    assert signal_numbers(status, "SigIgn") == set()
    assert status["Groups"] == []


def test_unprivileged_caller_gets_the_message_queued_as_the_scanner_account(wrapped):  # noqa: F811
    result = wrapped.run(CLEAN, env={"TCPREMOTEIP": "192.0.2.9", "RELAYCLIENT": ""})
    assert_delivered_intact(result)
    environment = next_hop_environment(result)
    uid, gid = wrapped.scanner_ids
    assert environment["ids"] == f"{uid}:{uid}:{gid}:{gid}"  # real and effective: no way back to nobody
    assert b"Clear:RC:1(192.0.2.9):" in result.queued[0].message
    assert wrapped.work_files() == []


@pytest.mark.parametrize("case", ["PYTHONPATH", "PYTHONSTARTUP+INSPECT", "LD_PRELOAD", "IFS+PATH", "HOME"])
def test_hostile_environment_gains_nothing(wrapped, evil, case):  # noqa: F811
    hostile = hostile_environments(evil)[case]
    clear_markers(evil)
    result = wrapped.run(CLEAN, env={**hostile, "TCPREMOTEIP": "192.0.2.1"}, timeout=30)
    assert_delivered_intact(result)
    assert markers(evil) == []
    environment = next_hop_environment(result)
    for name in hostile:
        assert name not in environment or (name == "PATH" and environment[name] != hostile[name])
    assert environment["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert environment["TCPREMOTEIP"] == "192.0.2.1"
    for name in environment:
        assert name == "ids" or name in ALLOWED_NAMES or name.startswith(ALLOWED_PREFIXES), name


@pytest.mark.parametrize("case", ["PYTHONPATH", "PYTHONSTARTUP+INSPECT", "LD_PRELOAD", "HOME"])
def test_control_the_same_environment_subverts_an_unprotected_python(evil, case):
    """Without the wrapper's clean environment and -I -S, each trap fires."""
    clear_markers(evil)
    hostile = hostile_environments(evil)[case]
    if case == "HOME":
        hostile = {"HOME": hostile["HOME"], "PYTHONUSERBASE": hostile["PYTHONUSERBASE"]}
    uid, gid = caller_ids()

    def drop() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    code = "import signal, socket, shutil, base64, zipfile" if case == "PYTHONPATH" else "pass"
    argv = [world_python(), "-i"] if case.startswith("PYTHONSTARTUP") else [world_python(), "-c", code]
    subprocess.run(argv, env={**hostile, "PATH": "/usr/bin:/bin"}, preexec_fn=drop, input=b"", capture_output=True,
                   cwd="/", timeout=30, check=False)
    assert markers(evil) != []


def test_huge_environment_is_cut_to_the_allow_list(wrapped):  # noqa: F811
    env = {f"JUNK{i:05d}": "j" * 1000 for i in range(1200)}
    env.update({f"QS_OPTION{i:04d}": "q" for i in range(300)})
    env["TCPREMOTEHOST"] = "h" * 100_000  # longer than any caller sets: dropped
    env["TCPREMOTEIP"] = "192.0.2.44"
    assert sum(len(k) + len(v) + 2 for k, v in env.items()) > 1_300_000
    result = wrapped.run(CLEAN, env=env, timeout=60)
    assert_delivered_intact(result)
    environment = next_hop_environment(result)
    assert "TCPREMOTEHOST" not in environment
    assert environment["TCPREMOTEIP"] == "192.0.2.44"
    assert not any(name.startswith("JUNK") for name in environment)
    assert len(environment) <= 64 + 3
    assert max(len(v) for v in environment.values()) <= 1024


@pytest.mark.parametrize("closed", [0, 1])
def test_closed_message_or_envelope_fd_is_a_read_error_and_queues_nothing(wrapped, closed):  # noqa: F811
    result = wrapped.run(CLEAN, close_fds=(closed,))
    assert result.exit_code == 54
    assert result.queued == []
    assert wrapped.work_files() == []


def test_closed_fd_2_does_not_put_our_messages_into_the_mail(wrapped):  # noqa: F811
    result = wrapped.run(CLEAN, close_fds=(2,))
    assert_delivered_intact(result)
    assert b"qmail-scanner" not in result.queued[0].message.split(b"\n\n", 1)[1]
    assert wrapped.work_files() == []


@pytest.mark.parametrize("closed", [(0,), (1,), (2,), (0, 1, 2)])
def test_program_without_wrapper_handles_closed_standard_fds(wrapped, closed):  # noqa: F811
    """Run directly (as the scanner account): the program itself refuses missing fds 0/1, survives a closed fd 2."""
    result = wrapped.run(CLEAN, close_fds=closed, executable=wrapped.program, caller=wrapped.scanner_ids)
    if 0 in closed or 1 in closed:
        assert result.exit_code == 54
        assert result.queued == []
    else:
        assert_delivered_intact(result)
        assert b"qmail-scanner[" not in result.queued[0].message
    assert wrapped.work_files() == []


def test_administrator_flags_are_refused_to_other_users(wrapped):  # noqa: F811
    refused = wrapped.run(b"", args=("-z",))
    assert refused.exit_code == 100
    assert "root and the scanner account" in refused.stderr
    allowed = wrapped.run(b"", args=("-v",), caller=(0, 0))
    assert allowed.exit_code == 0, allowed.stderr
    odd = wrapped.run(b"", args=("--evil",), caller=(0, 0))
    assert odd.exit_code == 100


def test_caller_cannot_signal_or_trace_the_running_scanner(wrapped):  # noqa: F811
    """The scanner's real uid is the scanner account: the caller may not kill or ptrace it."""
    uid, gid = caller_ids()
    with message_in_flight(wrapped, b"Subject: slow\n\n", work_files=1) as process:
        probe = run_as(uid, gid, f"import os\ntry:\n    os.kill({process.pid}, 15)\nexcept PermissionError:\n"
                                 f"    print('refused')\n")
        assert probe.stdout.strip() == "refused"
        status = Path(f"/proc/{process.pid}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert set(uids) == {str(wrapped.scanner_ids[0])}


@contextlib.contextmanager
def message_in_flight(installation, first_bytes: bytes, work_files: int, groups: tuple[int, ...] = (), setup=None):
    """Run the wrapper as the unprivileged caller, stalled mid-message until the block ends.

    groups: the caller's supplementary groups; setup: run in the caller just before exec.
    Yields the process once `work_files` work files exist; then finishes the message and
    the envelope and requires a clean exit.
    """
    uid, gid = caller_ids()
    message_read, message_write = os.pipe()
    envelope_read, envelope_write = os.pipe()

    def become_caller() -> None:
        os.setgroups(list(groups))
        os.setgid(gid)
        os.setuid(uid)
        if setup:
            setup()

    process = subprocess.Popen([str(installation.wrapper)], stdin=message_read, stdout=envelope_read,
                               stderr=subprocess.DEVNULL, env={}, preexec_fn=become_caller)
    os.close(message_read)
    os.close(envelope_read)
    try:
        os.write(message_write, first_bytes)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(installation.work_files()) < work_files:
            time.sleep(0.05)
        assert len(installation.work_files()) >= work_files, "the scanner never started spooling"
        yield process
    finally:
        os.close(message_write)
        os.write(envelope_write, b"Fa@example.org\0Tb@example.com\0\0")
        os.close(envelope_write)
        assert process.wait(30) == 0


def test_spool_and_work_files_are_private_to_the_scanner_account(wrapped):  # noqa: F811
    uid, gid = wrapped.scanner_ids
    spool = wrapped.spool.stat()
    assert (spool.st_uid, spool.st_gid) == (uid, gid)
    assert stat.S_IMODE(spool.st_mode) == 0o750
    for relative in ("tmp", "working/tmp", "quarantine/viruses/new", "quarantine/policy/new", "archives/new"):
        info = (wrapped.spool / relative).stat()
        assert stat.S_IMODE(info.st_mode) == 0o700, relative
        assert info.st_uid == uid
    for name in ("quarantine.log", "mailstats.csv", "qmail-queue.log"):
        assert not (wrapped.spool / name).stat().st_mode & stat.S_IRWXO, name
    caller_uid, caller_gid = caller_ids()
    probe = run_as(caller_uid, caller_gid, f"import os\ntry:\n    os.listdir({str(wrapped.spool)!r})\n"
                                           f"except PermissionError:\n    print('refused')\n")
    assert probe.stdout.strip() == "refused"


def test_work_files_in_flight_are_exclusive_and_private(wrapped_fresh):  # noqa: F811
    """While a message streams in, its work file and dir are 0600/0700 and owned by the scanner account."""
    installation = wrapped_fresh
    with message_in_flight(installation, b"Subject: in flight\n\n" + b"x" * 10_000, work_files=2):
        found = installation.work_files()
        assert len(found) == 2
        for path in found:
            info = path.lstat()
            assert info.st_uid == installation.scanner_ids[0]
            assert stat.S_IMODE(info.st_mode) == (0o700 if stat.S_ISDIR(info.st_mode) else 0o600)
    assert installation.work_files() == []


def test_quarantined_message_is_durable_and_unreadable_by_others(wrapped_fresh):  # noqa: F811
    message = (
        b"From: a@example.org\nSubject: invoice\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\nsee attached\n'
        b'--b\nContent-Type: application/octet-stream; name="invoice.exe"\nContent-Transfer-Encoding: base64\n\n'
        b"TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAA=\n--b--\n"
    )
    result = wrapped_fresh.run(message)
    assert result.exit_code == 0, result.stderr
    assert result.queued == []
    stored = list((wrapped_fresh.spool / "quarantine" / "policy" / "new").iterdir())
    assert len(stored) == 1
    info = stored[0].stat()
    assert info.st_uid == wrapped_fresh.scanner_ids[0]
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert message in stored[0].read_bytes()
    uid, gid = caller_ids()
    probe = run_as(uid, gid, f"try:\n    open({str(stored[0])!r}, 'rb').read()\nexcept PermissionError:\n"
                             f"    print('refused')\n")
    assert probe.stdout.strip() == "refused"


def test_other_users_cannot_plant_anything_in_the_spool(wrapped):  # noqa: F811
    uid, gid = caller_ids()
    for relative in ("tmp", "working/tmp", "quarantine/policy/tmp"):
        target = wrapped.spool / relative / "planted"
        probe = run_as(uid, gid, f"import os\ntry:\n    os.symlink('/etc', {str(target)!r})\n"
                                 f"except PermissionError:\n    print('refused')\n")
        assert probe.stdout.strip() == "refused", relative
        assert not target.is_symlink()


def test_cleanup_removes_planted_symlinks_without_following_them(wrapped_fresh):  # noqa: F811
    """Even a symlink that got into the work dirs (by root's hand) is removed, never followed."""
    installation = wrapped_fresh
    outside = public_dir("qs-outside-")
    (outside / "precious").write_bytes(b"keep me")
    (outside / "dir").mkdir()
    (outside / "dir" / "file").write_bytes(b"keep me too")
    planted = [
        installation.spool / "tmp" / "1.99999_1.000000aaaaaa",
        installation.spool / "working" / "tmp" / "1.99999_2.000000bbbbbb",
        installation.spool / "working" / "new" / "link-to-file",
    ]
    planted[0].symlink_to(outside / "dir")
    planted[1].symlink_to(outside / "precious")
    planted[2].symlink_to(outside / "precious")
    for link in planted:
        os.utime(link, (1_000_000, 1_000_000), follow_symlinks=False)
    cleanup = installation.run(b"", args=("-z",), caller=(0, 0))
    assert cleanup.exit_code == 0, cleanup.stderr
    assert [p for p in planted if p.is_symlink()] == []
    assert (outside / "precious").read_bytes() == b"keep me"
    assert (outside / "dir" / "file").read_bytes() == b"keep me too"


HOSTILE_NAMES = [
    "../../../../../../../../tmp/qs-escape-{token}",
    "/tmp/qs-escape-{token}-absolute",
    "..\\..\\..\\tmp\\qs-escape-{token}-backslash",
    "CON", "NUL", "aux.txt", "COM1", "LPT1.exe", ".", "..", "~root",
    "a" * 5000 + ".exe",
    "name-with-nul\0../../tmp/qs-escape-{token}-nul",
    "line\nbreak.txt",
]


def hostile_name_message(token: str) -> bytes:
    import base64
    import io
    import zipfile

    parts = [b"From: a@example.org\nSubject: names\nMIME-Version: 1.0\n"
             b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\nhi\n']
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        for index, name in enumerate(HOSTILE_NAMES):
            info = zipfile.ZipInfo(name.format(token=token).replace("\0", "_"))
            bundle.writestr(info, f"member {index}\n")
    for index, name in enumerate(HOSTILE_NAMES):
        text = name.format(token=token)
        quoted = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\n ")
        encoded = "".join(f"%{b:02X}" if not chr(b).isalnum() else chr(b) for b in text.encode())
        parts.append(
            f'--b\nContent-Type: application/octet-stream; name="{quoted}"\n'
            f"Content-Disposition: attachment; filename*=utf-8''{encoded}\n"
            f"Content-Transfer-Encoding: base64\n\n{base64.b64encode(f'part {index}'.encode()).decode()}\n".encode()
        )
    parts.append(b'--b\nContent-Type: application/zip; name="names.zip"\nContent-Transfer-Encoding: base64\n\n'
                 + base64.encodebytes(archive.getvalue()) + b"--b--\n")
    return b"".join(parts)


def snapshot(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")}


def test_names_from_mail_never_become_paths_outside_the_work_dir():
    from security_fixtures import install_wrapped

    installation = install_wrapped("--debug", "100", "--unzip", "yes")  # debug 100 keeps the work files
    try:
        token = os.urandom(4).hex()
        before = snapshot(installation.prefix)
        result = installation.run(hostile_name_message(token))
        assert result.exit_code in (0, 31, 82), result.stderr
        assert list(Path("/tmp").glob(f"qs-escape-{token}*")) == []
        after = snapshot(installation.prefix) - before
        unpack_dirs = [p for p in installation.spool.joinpath("tmp").iterdir()]
        assert len(unpack_dirs) == 1
        allowed_roots = (
            str(unpack_dirs[0]), str(installation.spool / "working" / "tmp"), str(installation.sink),
            str(installation.spool / "quarantine"), str(installation.spool / "failed"),
            str(installation.spool / "syslog-unavailable"),  # the marker of an outage of syslog (none runs here)
            str(installation.spool / "records" / "current.jsonl"),  # the message's record for the console
        )
        strays = [p for p in after if not p.startswith(allowed_roots) and p != str(unpack_dirs[0])]
        assert strays == []
        names = [p.name for p in unpack_dirs[0].rglob("*")]
        assert names, "the unpacker wrote no parts at all"
        assert all(name.startswith("p") and name[1:6].isdigit() for name in names), names
    finally:
        installation.remove()


def test_spool_refuses_a_planted_symlink_as_work_file(tmp_path):
    from qmail_scanner.outcomes import TemporaryFailure
    from qmail_scanner.spool import WorkArea, deliver_to_maildir, spool_message

    target = tmp_path / "target"
    target.write_bytes(b"original")
    link = tmp_path / "work"
    link.symlink_to(target)
    area = WorkArea("id1", str(link), str(tmp_path / "unpack"))
    read_end, write_end = os.pipe()
    os.write(write_end, b"attacker bytes")
    os.close(write_end)
    with pytest.raises(TemporaryFailure):
        spool_message(area, read_end, 4096)
    os.close(read_end)
    assert target.read_bytes() == b"original"

    maildir = tmp_path / "maildir"
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "tmp" / "id2").symlink_to(target)
    with pytest.raises(TemporaryFailure):
        deliver_to_maildir(str(maildir), [b"quarantined bytes"], "id2")
    assert target.read_bytes() == b"original"
    assert list((maildir / "new").iterdir()) == []


def test_work_area_removal_does_not_follow_a_symlinked_unpack_dir(tmp_path):
    from qmail_scanner.spool import WorkArea

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"x")
    (tmp_path / "unpack").symlink_to(outside)
    WorkArea("id", str(tmp_path / "message"), str(tmp_path / "unpack")).remove()
    assert (outside / "keep").read_bytes() == b"x"


_ = (signal, threading, SCANNER_USER)


def test_destdir_install_stages_the_wrapper_with_the_final_paths_compiled_in(standin):
    """Packagers: everything lands under --destdir, and the wrapper names the final program path."""
    import subprocess as run
    import sys as system

    from harness import CONFIGURE
    from security_fixtures import ensure_account

    ensure_account(SCANNER_USER)
    stage = public_dir("qs-destdir-")
    final = f"/opt/qs-destdir-{os.urandom(3).hex()}"
    try:
        completed = run.run(
            [system.executable, str(CONFIGURE), "--destdir", str(stage), "--bindir", f"{final}/bin",
             "--spooldir", f"{final}/spool", "--libdir", f"{final}/lib", "--qmail-queue-binary", str(standin),
             "--output", str(stage / "qs.py"), "--batch", "--quiet", "--install", "--notify", "none",
             "--scanners", "none", "--qs-user", SCANNER_USER, "--qs-group", SCANNER_USER, "--python", world_python()],
            capture_output=True, text=True, check=False,
        )
        assert completed.returncode == 0, completed.stderr
        wrapper = stage / final.lstrip("/") / "bin" / "qmail-scanner-queue"
        info = wrapper.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o4755)
        binary = wrapper.read_bytes()
        assert f"{final}/bin/qmail-scanner-queue.py".encode() in binary
        assert str(stage).encode() not in binary
        assert not Path(final).exists()
    finally:
        import shutil

        shutil.rmtree(stage, ignore_errors=True)


def plant_as_scanner(installation, code: str) -> None:
    uid, gid = installation.scanner_ids
    probe = run_as(uid, gid, f"import os\nspool = {str(installation.spool)!r}\n{code}")
    assert probe.returncode == 0, probe.stderr


# What the scanner account can do in its spool before root runs --install again; {outside} is a
# root-owned dir with `precious` (root 0600) and `dir` (root 0755) in it.
PLANTS = {
    "log file -> root file": "os.unlink(spool + '/quarantine.log'); os.symlink('{outside}/precious', "
                             "spool + '/quarantine.log')",
    "maildir -> root dir": "os.rename(spool + '/quarantine/viruses/new', spool + '/old');"
                           " os.symlink('{outside}/dir', spool + '/quarantine/viruses/new')",
    "work dir on the way -> root dir": "os.rename(spool + '/working', spool + '/old');"
                                       " os.symlink('{outside}/dir', spool + '/working')",
    "policy file -> missing root file": "os.unlink(spool + '/quarantine-events.txt');"
                                        " os.symlink('{outside}/created-by-root', spool + '/quarantine-events.txt')",
}


def outside_snapshot(outside: Path) -> dict[str, tuple]:
    return {path.name: (path.lstat().st_mode, path.lstat().st_uid, path.lstat().st_gid,
                        path.read_bytes() if path.is_file() else sorted(p.name for p in path.iterdir()))
            for path in outside.iterdir()}


@pytest.mark.parametrize("plant", list(PLANTS))
def test_reinstall_never_follows_a_link_the_scanner_account_planted_in_the_spool(wrapped_fresh, plant):  # noqa: F811
    """Root's configure --install chmods and chowns in the spool: a planted link must not aim that at root's files."""
    outside = public_dir("qs-outside-")
    (outside / "precious").write_bytes(b"root's own")
    (outside / "precious").chmod(0o600)
    (outside / "dir").mkdir(mode=0o755)
    (outside / "dir" / "file").write_bytes(b"root's too")
    before = outside_snapshot(outside)
    plant_as_scanner(wrapped_fresh, PLANTS[plant].format(outside=outside))
    completed = subprocess.run(wrapped_fresh.configure_argv, capture_output=True, text=True, check=False)
    assert outside_snapshot(outside) == before
    assert not (outside / "created-by-root").exists()
    if completed.returncode != 0:  # refused: the link named, or the policy the account cannot read (nothing installed)
        assert any(text in completed.stderr for text in ("--install follows no link there",
                                                         "the policy file does not compile")), completed.stderr


def test_reinstall_refuses_a_hard_link_to_a_root_file_in_the_spool(wrapped_fresh):  # noqa: F811
    """fs.protected_hardlinks stops the scanner account making one; a host without it must not lose root's file."""
    outside = public_dir("qs-outside-")
    (outside / "precious").write_bytes(b"root's own")
    (outside / "precious").chmod(0o600)
    (wrapped_fresh.spool / "mailstats.csv").unlink()
    os.link(outside / "precious", wrapped_fresh.spool / "mailstats.csv")  # as root: what the sysctl would allow
    before = outside_snapshot(outside)
    completed = subprocess.run(wrapped_fresh.configure_argv, capture_output=True, text=True, check=False)
    assert completed.returncode == 1
    assert "not a plain file with one name" in completed.stderr
    assert outside_snapshot(outside) == before


def test_policy_is_compiled_as_the_scanner_account_not_as_root(wrapped_fresh):  # noqa: F811
    """Root's `-g` read the account's policy file: linked to a root-only file, its lines became readable rules."""
    outside = public_dir("qs-outside-")
    secret = outside / "root-only"
    secret.write_text("secret.exe\tSIZE=-1\troot-only line\n")
    secret.chmod(0o600)
    plant_as_scanner(wrapped_fresh, f"os.unlink(spool + '/quarantine-events.txt')\n"
                                    f"os.symlink({str(secret)!r}, spool + '/quarantine-events.txt')\n"
                                    f"os.unlink(spool + '/quarantine-events.compiled')")
    completed = subprocess.run(wrapped_fresh.configure_argv, capture_output=True, text=True, check=False)
    assert completed.returncode == 1  # the account cannot read it: the install stops before anything is replaced
    assert "the policy file does not compile: cannot read" in completed.stderr
    assert "Permission denied" in completed.stderr
    compiled = wrapped_fresh.spool / "quarantine-events.compiled"
    assert not compiled.exists() or b"root-only line" not in compiled.read_bytes()


def test_reinstall_signals_only_the_scanner_accounts_engine(wrapped_fresh, tmp_path):  # noqa: F811
    """engine.status is the account's file: a forged pid of a root process running `--serve` gets no SIGHUP."""
    record = tmp_path / "hup"
    code = ("import signal, sys, time\n"
            f"signal.signal(signal.SIGHUP, lambda *_: open({str(record)!r}, 'w').close())\n"
            "print('ready', flush=True)\ntime.sleep(60)\n")
    victim = subprocess.Popen([sys.executable, "-c", code, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        assert victim.stdout.readline().strip() == "ready"
        plant_as_scanner(wrapped_fresh, "import json\nwith open(spool + '/engine.status', 'w') as f:\n"
                                        f"    json.dump({{'state': 'running', 'pid': {victim.pid}}}, f)\n")
        completed = subprocess.run(wrapped_fresh.configure_argv, capture_output=True, text=True, check=False)
        assert completed.returncode == 0, completed.stderr
        time.sleep(0.5)
        assert not record.exists()
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()
