"""configure --install as a transaction: a failed reinstall changes nothing; the program needs no checkout or venv.

Installations use the real setuid wrapper and the scanner account qstest (security_fixtures), and mail
goes through the installed wrapper as qmail-smtpd would hand it over (caller nobody).
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest

from harness import CONFIGURE, ROOT, STANDIN_SOURCE
from security_fixtures import (
    HOP_SOURCE,
    SCANNER_USER,
    WrappedInstallation,
    compile_c,
    ensure_account,
    install_wrapped,
    public_dir,
    world_python,
)

CLEAN = b"From: a@example.org\nSubject: hi\n\nhello\n"
MAX_BACKUPS = 3  # lib/qsconfigure/transaction.py


def snapshot(installation: WrappedInstallation) -> dict[str, tuple[int, str, int]]:
    """Every installed file of the program, wrapper, engine, engine files, tools and man pages: inode, hash, mode."""
    found = {}
    for top in (installation.prefix / "bin", installation.prefix / "lib", installation.prefix / "share"):
        for path in sorted(top.rglob("*")):
            if path.is_file() and not path.is_symlink():
                info = path.stat()
                found[str(path.relative_to(installation.prefix))] = (
                    info.st_ino, hashlib.sha256(path.read_bytes()).hexdigest(), info.st_mode,
                )
    return found


def reinstall(installation: WrappedInstallation, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """configure --install again over the installation (later options override the first run's)."""
    return subprocess.run(
        [*installation.configure_argv, *args], capture_output=True, text=True, check=False,
        env={**os.environ, **(env or {})},
    )


def accepts_mail(installation: WrappedInstallation) -> bool:
    result = installation.run(CLEAN)
    return result.exit_code == 0 and len(result.queued) == 1


def private_python(directory: Path) -> str:
    """A copy of a Python the scanner account could run, in a root-only (0700) directory: it cannot."""
    directory.mkdir(mode=0o700)
    copy = directory / "python3"
    shutil.copy2(os.path.realpath(world_python()), copy)
    return str(copy)


@pytest.fixture()
def installed():
    installation = install_wrapped()
    assert accepts_mail(installation)
    yield installation
    installation.remove()


def test_a_good_install_is_checked_as_the_account_and_leaves_no_staging(installed):
    assert "installed the setuid wrapper" in installed.configure_output
    assert stat.S_IMODE(installed.wrapper.stat().st_mode) == 0o4755
    leftovers = [p for p in installed.prefix.rglob(".qmail-scanner-staging*")]
    assert leftovers == []
    assert installed.program.read_text().splitlines()[0] == f"#!{os.path.realpath(world_python())} -IS"
    records = (installed.spool / "records" / "current.jsonl").read_text()
    assert "\"subject\":\"hi\"" in records.replace(" ", "")  # the fixture's message is there
    assert "--install check" not in records  # the check's test message is no mail for the console


def test_reinstall_with_an_interpreter_the_account_cannot_run_changes_nothing(installed, tmp_path):
    before = snapshot(installed)
    python = private_python(installed.prefix / "private")
    result = reinstall(installed, "--python", python, "--deadline", "300")
    assert result.returncode == 1
    error = [line for line in result.stderr.splitlines() if line.startswith("configure.py: error:")]
    assert len(error) == 1 and f"the scanner account {SCANNER_USER} cannot run {python}" in error[0]
    assert "--python" in result.stderr.split("configure.py: hint:", 1)[1]
    after = snapshot(installed)
    after = {name: value for name, value in after.items() if not name.startswith("bin/private")}
    before = {name: value for name, value in before.items() if not name.startswith("bin/private")}
    assert after == before
    assert accepts_mail(installed)


@pytest.mark.parametrize("failure", ["policy", "compiler"])
def test_reinstall_failing_at_a_later_step_changes_nothing(installed, failure):
    """The failure comes after the engine, program and wrapper were staged: none of them reaches its place."""
    before = snapshot(installed)
    policy = installed.spool / "quarantine-events.txt"
    good_policy = policy.read_bytes()
    env = {}
    if failure == "policy":
        policy.write_bytes(good_policy + b"this line has no tab\n")
    else:
        env = {"CC": "false"}
    result = reinstall(installed, "--deadline", "300", env=env)
    assert result.returncode == 1, result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("configure.py: ")]
    assert len(errors) == 2  # what failed, and what to do
    expected = "the policy file does not compile" if failure == "policy" else "the setuid wrapper does not compile"
    assert expected in errors[0]
    assert "nothing was installed" in errors[1]
    assert snapshot(installed) == before
    assert not list(installed.prefix.rglob(".qmail-scanner-staging*"))
    policy.write_bytes(good_policy)
    assert accepts_mail(installed)


def test_a_failed_check_after_the_swap_puts_the_previous_installation_back(installed):
    """Rolled back, not only refused: the transaction restores what it replaced (byte-identical, same inode)."""
    from qsconfigure.transaction import Transaction

    target = installed.prefix / "bin" / "qmail-scanner-queue.py"
    engine = installed.prefix / "lib" / "2.0.0" / "qmail_scanner"
    before = snapshot(installed)
    with Transaction() as transaction:
        transaction.stage_file(str(target), b"#!/bin/false\n", 0o755)
        staged = Path(transaction.stage_path(str(engine), is_dir=True))
        staged.mkdir()
        (staged / "__init__.py").write_text("broken = True\n")
        transaction.swap()
        assert target.read_bytes() == b"#!/bin/false\n" and (engine / "__init__.py").read_text() == "broken = True\n"
        transaction.roll_back()
    assert snapshot(installed) == before
    assert accepts_mail(installed)


def test_backups_are_bounded_and_an_unchanged_rerun_replaces_nothing(installed):
    bindir = installed.prefix / "bin"
    same = reinstall(installed)
    assert same.returncode == 0, same.stderr
    assert installed.program.stat().st_ino == snapshot(installed)["bin/qmail-scanner-queue.py"][0]
    assert not list(bindir.glob("qmail-scanner-queue.py.2*"))  # same options: nothing replaced, no backup
    for deadline in range(300, 306):
        result = reinstall(installed, "--deadline", str(deadline))
        assert result.returncode == 0, result.stderr
    program_backups = list(bindir.glob("qmail-scanner-queue.py.2*"))
    wrapper_backups = list(bindir.glob("qmail-scanner-queue.2*"))
    assert len(program_backups) == MAX_BACKUPS
    assert len(wrapper_backups) == MAX_BACKUPS
    newest = sorted(program_backups)[-1].read_text()
    assert "'deadline_seconds': 304.0" in newest  # the last 3 runs' predecessors are kept, older ones go
    for backup in wrapper_backups:
        assert not backup.stat().st_mode & (stat.S_ISUID | stat.S_ISGID)  # no old setuid wrapper lying around
    pages = installed.prefix / "share" / "man" / "man8"
    assert sorted(path.name for path in pages.iterdir()) == [
        "qmail-scanner-configure.8", "qmail-scanner-queue.8", "qs-quarantine.8", "qs-report.8",
    ]  # staged with the rest, and no dated copies for man to list
    assert accepts_mail(installed)


def frozen_sys_path(program: str) -> list[str]:
    """The extra_sys_path the program was frozen with."""
    line = next(line for line in program.splitlines() if "'extra_sys_path':" in line)
    return ast.literal_eval(line.split(":", 1)[1].strip().rstrip(",").rstrip("}"))


def copy_checkout(destination: Path) -> Path:
    """What configure needs from the checkout: configure.py, lib, templates, contrib, man."""
    destination.mkdir()
    shutil.copy2(CONFIGURE, destination / "configure.py")
    for name in ("lib", "templates", "contrib", "man"):
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, destination / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return destination


def venv_with_modules(directory: Path, base: str) -> Path:
    """A build venv holding python-magic (copied in, so it lives under this directory) and seeing jinja2."""
    subprocess.run([base, "-m", "venv", "--without-pip", "--copies", str(directory)], check=True)
    python = directory / "bin" / "python3"
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip())
    magic = subprocess.run(
        [sys.executable, "-c", "import magic, os; print(os.path.dirname(magic.__file__))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    shutil.copytree(magic, site / "magic")
    (site / "configure-deps.pth").write_text(str(Path(jinja2.__file__).parent.parent) + "\n")
    return python


def install_from(configure: Path, python: Path | str, prefix: Path, *args: str) -> tuple[WrappedInstallation, str]:
    """install_wrapped's installation, with another configure.py and interpreter running it."""
    scanner_ids = ensure_account(SCANNER_USER)
    sink = prefix / "queue"
    sink.mkdir()
    os.chown(sink, *scanner_ids)
    standin = compile_c(STANDIN_SOURCE, prefix / "qmail-queue-standin")
    hop = compile_c(HOP_SOURCE, prefix / "next-hop", f'-DSINK="{sink}"', f'-DSTANDIN="{standin}"')
    argv = [
        str(python), str(configure), "--prefix", str(prefix), "--qmail-queue-binary", str(hop),
        "--output", str(prefix / "qmail-scanner-queue.py"), "--batch", "--install", "--notify", "none",
        "--scanners", "none", "--qs-user", SCANNER_USER, "--qs-group", SCANNER_USER, *args,
    ]
    completed = subprocess.run(argv, capture_output=True, text=True, check=False)
    bindir = prefix / "bin"
    installation = WrappedInstallation(
        prefix=prefix, wrapper=bindir / "qmail-scanner-queue", program=bindir / "qmail-scanner-queue.py",
        spool=prefix / "spool", sink=sink, scanner_ids=scanner_ids,
        configure_output=completed.stdout + completed.stderr, configure_argv=argv,
    )
    return installation, "" if completed.returncode == 0 else completed.stdout + completed.stderr


def test_the_install_keeps_working_after_the_checkout_and_its_venv_are_deleted():
    work = public_dir("qs-clone-")
    prefix = public_dir("qs-from-clone-")
    try:
        clone = copy_checkout(work / "checkout")
        python = venv_with_modules(clone / ".venv", world_python())
        installation, failed = install_from(clone / "configure.py", python, prefix)
        assert not failed, failed
        shutil.rmtree(work)
        assert accepts_mail(installation)
        for path in (prefix / "bin").iterdir():
            if path.is_file():
                assert str(work).encode() not in path.read_bytes(), path  # nothing frozen from the clone or its venv
        assert all(path.startswith("/usr/") for path in frozen_sys_path(installation.program.read_text()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(prefix, ignore_errors=True)


def fake_pyenv(home: Path) -> Path:
    """A pyenv-like layout in a 0700 home: a shell-script shim exec'ing a Python built under that home."""
    home.mkdir(mode=0o700)
    version = home / ".pyenv" / "versions" / "3.x"
    subprocess.run([world_python(), "-m", "venv", "--without-pip", "--copies", str(version)], check=True)
    site = Path(subprocess.run(
        [str(version / "bin" / "python3"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip())
    (site / "configure-deps.pth").write_text(str(Path(jinja2.__file__).parent.parent) + "\n")
    shim = home / ".pyenv" / "shims" / "python3"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{version}/bin/python3" "$@"\n')
    shim.chmod(0o755)
    return shim


def test_a_pyenv_shim_in_a_private_home_is_passed_over_by_default_and_refused_when_named():
    home = public_dir("qs-home-") / "root-like"
    prefix = public_dir("qs-pyenv-")
    refused_prefix = public_dir("qs-pyenv-refused-")
    try:
        shim = fake_pyenv(home)
        installation, failed = install_from(CONFIGURE, shim, prefix)
        assert not failed, failed
        interpreter = installation.program.read_text().splitlines()[0][2:].split()[0]
        assert not interpreter.startswith(str(home)) and interpreter == os.path.realpath(interpreter)
        assert "give --python to choose" in installation.configure_output
        assert accepts_mail(installation)
        before = snapshot(installation)
        for target_prefix in (prefix, refused_prefix):
            result = subprocess.run(
                [*installation.configure_argv, "--prefix", str(target_prefix), "--python", str(shim)],
                capture_output=True, text=True, check=False,
            )
            assert result.returncode == 1
            assert f"--python {shim}: the scanner account {SCANNER_USER} cannot run {home}" in result.stderr
            assert "configure.py: hint: give --python" in result.stderr
        assert snapshot(installation) == before
        assert sorted(p.name for p in refused_prefix.iterdir()) == []  # refused before anything was made
        assert accepts_mail(installation)
    finally:
        shutil.rmtree(home.parent, ignore_errors=True)
        shutil.rmtree(prefix, ignore_errors=True)
        shutil.rmtree(refused_prefix, ignore_errors=True)


def test_module_probes_run_in_the_target_interpreter_and_name_the_real_packages(tmp_path, standin):
    """Run from the project's venv (python-magic, tnefparse... installed there), the probes look in --python."""
    result = subprocess.run(
        [sys.executable, str(CONFIGURE), "--batch", "--prefix", str(tmp_path / "qs"), "--qmail-queue-binary",
         str(standin), "--notify", "none", "--scanners", "none", "--output", str(tmp_path / "p.py"),
         "--python", world_python()],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    real = os.path.realpath(world_python())
    assert "checking for python-magic... /usr/lib/python3/dist-packages" in result.stdout  # Debian's python3-magic
    assert f"checking for tnefparse... no (not importable by {real})" in result.stdout
    assert "tnefparse: PyPI tnefparse, not packaged by Debian" in result.stdout
    program = (tmp_path / "p.py").read_text()
    assert ".venv" not in program
    assert frozen_sys_path(program) == ["/usr/lib/python3/dist-packages"]


def test_a_second_install_while_one_runs_is_refused_and_changes_nothing(installed):
    """Two --install runs at once would share one staging dir; the second waits for nobody and says so."""
    import fcntl

    before = snapshot(installed)
    fd = os.open(installed.prefix / "bin", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # what a running configure --install holds
        result = reinstall(installed, "--deadline", "301")
    finally:
        os.close(fd)
    assert result.returncode != 0
    assert "another configure --install is installing" in result.stdout + result.stderr
    assert snapshot(installed) == before
    assert reinstall(installed, "--deadline", "301").returncode == 0  # and once it is done, it goes through
