"""--install: the program, the pinned byte-compiled engine, the spool, owners and modes.

Re-running it is safe: directories are created when missing, the site's edited
quarantine-events.txt is kept, and a changed program is backed up before it is replaced.
With --destdir every write goes under that directory and no account is created.
"""

from __future__ import annotations

import compileall
import filecmp
import grp
import os
import pwd
import py_compile
import shutil
import subprocess
import sys
import time

from .nofollow import open_directory, open_entry
from .probes import ConfigureError, find_program
from .tools_install import install_tools_and_pages
from .wrapper import WRAPPER_NAME

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.path.dirname(os.path.dirname(HERE))
ENGINE_SOURCE = os.path.join(SOURCE_ROOT, "lib", "qmail_scanner")
TEMPLATES = os.path.join(SOURCE_ROOT, "templates")
WRAPPER_SOURCE = os.path.join(SOURCE_ROOT, "contrib", "qmail-scanner-queue.c")
PROGRAM_NAME = "qmail-scanner-queue.py"
SPOOL_DIRS = ("tmp", "working/tmp", "working/new", "working/cur")
SPOOL_MAILDIRS = ("quarantine/viruses", "quarantine/policy", "quarantine/spam", "archives", "failed")
LOG_FILES = ("quarantine.log", "mailstats.csv", "qmail-queue.log")


class Installer:
    """Writes under destdir (may be empty), owning spool files by the scanner account.

    The spool is the scanner account's: everything in it is created, chmodded and chowned
    through fds opened without following links (nofollow.py), never by path.
    """

    def __init__(self, destdir: str, owner: str, group: str, may_chown: bool) -> None:
        self.destdir = destdir
        self.uid = self.gid = -1
        if may_chown:
            try:
                self.uid = pwd.getpwnam(owner).pw_uid
                self.gid = grp.getgrnam(group).gr_gid
            except KeyError:
                pass

    def path(self, target: str) -> str:
        return os.path.join(self.destdir, target.lstrip("/")) if self.destdir else target

    def _own_fd(self, fd: int, mode: int) -> None:
        os.fchmod(fd, mode)
        if self.uid >= 0 and os.geteuid() == 0:
            os.fchown(fd, self.uid, self.gid)
            os.fchmod(fd, mode)  # chown may clear set-id bits: the mode is what was asked

    def own(self, path: str, mode: int) -> None:
        """Give an existing plain file the mode and the scanner account (a link there is refused)."""
        fd = open_entry(path, os.O_RDONLY)
        try:
            self._own_fd(fd, mode)
        finally:
            os.close(fd)

    def create_file(self, path: str, mode: int, content: bytes | None = None) -> bool:
        """Create path (content None: an empty file if missing, else only if missing); own it. True if created."""
        flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if content is not None else os.O_APPEND)
        try:
            fd = open_entry(path, flags, mode)
        except FileExistsError:
            return False
        try:
            if content is not None:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view) :]
            self._own_fd(fd, mode)
        finally:
            os.close(fd)
        return True

    def directory(self, target: str, mode: int, owned: bool = True) -> str:
        path = self.path(target)
        fd = open_directory(path, mode)
        try:
            if owned:
                self._own_fd(fd, mode)
        finally:
            os.close(fd)
        return path


def ensure_account(user: str, group: str) -> None:
    """Create the scanner's system group and user when missing (real installs only)."""
    try:
        grp.getgrnam(group)
    except KeyError:
        _run_admin(["groupadd", "--system", group])
    try:
        pwd.getpwnam(user)
    except KeyError:
        _run_admin(
            [
                "useradd",
                "--system",
                "--gid",
                group,
                "--home-dir",
                "/nonexistent",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                user,
            ]
        )


def _run_admin(argv: list[str]) -> None:
    binary = find_program(argv[0])
    if not binary:
        raise ConfigureError(f"cannot create the scanner account: {argv[0]} not found", "create it by hand and re-run")
    completed = subprocess.run([binary, *argv[1:]], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise ConfigureError(f"{argv[0]} failed: {completed.stderr.strip()}", "create the account by hand and re-run")


def install_engine(installer: Installer, engine_dir: str) -> str:
    """Copy the engine to its versioned dir and byte-compile it (checked hashes are not needed)."""
    target_parent = installer.path(engine_dir)
    target = os.path.join(target_parent, "qmail_scanner")
    staging = target + ".new"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(ENGINE_SOURCE, staging, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    ok = compileall.compile_dir(
        staging, quiet=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH, force=True
    )
    if not ok:
        raise ConfigureError("the engine does not byte-compile", "is this Python too old for the engine?")
    shutil.rmtree(target, ignore_errors=True)
    os.rename(staging, target)
    for root, _dirs, files in os.walk(target_parent):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    return target


def install_program(installer: Installer, bindir: str, rendered: str) -> str:
    """Install the program, keeping a changed previous one as a dated backup."""
    directory = installer.directory(bindir, 0o755, owned=False)
    destination = os.path.join(directory, PROGRAM_NAME)
    if os.path.exists(destination) and not filecmp.cmp(destination, rendered, shallow=False):
        backup = f"{destination}.{time.strftime('%Y%m%d-%H%M%S')}"
        os.rename(destination, backup)
        print(f"kept the previous program as {backup}")
    staging = destination + ".new"
    shutil.copyfile(rendered, staging)
    os.chmod(staging, 0o755)  # readable and runnable, writable by root only
    os.rename(staging, destination)
    return destination


def install_spool(installer: Installer, spooldir: str, etcdir: str = "", logdir: str = "") -> None:
    """The 2.x spool layout: work dirs 0700, maildirs, log files, the default policy file.

    The log files go to logdir and the policy file to etcdir when the site named them (st patch).
    """
    etcdir, logdir = etcdir or spooldir, logdir or spooldir
    for directory in dict.fromkeys((spooldir, etcdir, logdir)):
        installer.directory(directory, 0o750)
    for relative in SPOOL_DIRS:
        for part in _prefixes(relative):
            installer.directory(os.path.join(spooldir, part), 0o700)
    for relative in SPOOL_MAILDIRS:
        for part in _prefixes(relative):
            installer.directory(os.path.join(spooldir, part), 0o700)
        for sub in ("tmp", "new", "cur"):
            installer.directory(os.path.join(spooldir, relative, sub), 0o700)
    for name in LOG_FILES:
        path = installer.path(os.path.join(logdir, name))
        installer.create_file(path, 0o640)
    policy = installer.path(os.path.join(etcdir, "quarantine-events.txt"))
    shipped = os.path.join(TEMPLATES, "quarantine-events.txt")
    if not os.path.exists(shipped):
        return
    with open(shipped, "rb") as template:
        if not installer.create_file(policy, 0o640, template.read()):
            print(f"kept the site's {policy}")


def _prefixes(relative: str) -> list[str]:
    parts = relative.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def install(args, settings: dict, rendered: str) -> None:
    """Lay everything out; print what the administrator does next."""
    real_install = not args.prefix and not args.destdir
    if real_install and os.geteuid() != 0:
        raise ConfigureError("--install needs root", "run as root, or use --prefix DIR for a local install")
    if real_install:
        ensure_account(args.qs_user, args.qs_group)
    installer = Installer(args.destdir, args.qs_user, args.qs_group, may_chown=os.geteuid() == 0)
    install_engine(installer, settings["engine_dir"])
    program = install_program(installer, args.bindir, rendered)
    install_spool(installer, settings["spooldir"], settings.get("etcdir", ""), settings.get("logdir", ""))
    install_tools_and_pages(installer, args, settings, program, _final_path(args, program))
    wrapper = _install_wrapper(args, installer, program)
    if not args.destdir:
        _compile_policy(program, installer)
    # The advice names the final paths, also when staged under --destdir.
    print(f"installed {program}")
    if not wrapper:
        # Never advise the .py itself: run by qmaild it could not write the scanner's spool.
        print(f"QMAILQUEUE must name the setuid wrapper {os.path.join(args.bindir, WRAPPER_NAME)}, which is not")
        print("installed (see above); re-run with --install once a C compiler and the account are there.")
        return
    runner = _final_path(args, wrapper)
    print("Add QMAILQUEUE to the tcprules of qmail-smtpd, for example in /etc/tcp.smtp:")
    print(f'  127.:allow,RELAYCLIENT="",QMAILQUEUE="{runner}"')
    print(f'  :allow,QMAILQUEUE="{runner}"')
    print("then rebuild the cdb that tcpserver -x reads: tcprules /etc/tcp.smtp.cdb /etc/tcp.smtp.tmp < /etc/tcp.smtp")
    print(f"Run '{runner} -z' daily from cron (as {args.qs_user}) to remove stale work files.")
    _install_engine_files(args, installer, program, settings)


def _install_engine_files(args, installer: Installer, program: str, settings: dict) -> None:
    """Run file and systemd unit next to the program; a running engine reloads the new program."""
    from .engine_files import print_engine_advice, reload_running_engine, write_engine_files

    final_program = _final_path(args, program)
    run_path, unit_path = write_engine_files(os.path.dirname(program), final_program, settings["deadline_seconds"])
    print_engine_advice(run_path, unit_path, _final_path(args, run_path), _final_path(args, unit_path))
    if not args.destdir:
        pid = reload_running_engine(settings["spooldir"], installer.uid if installer.uid >= 0 else os.geteuid())
        if pid:
            print(f"the running engine (pid {pid}) reloads: new workers use this installation")


def _final_path(args, staged: str) -> str:
    """A path under --destdir as it will be on the installed system."""
    if args.destdir and staged.startswith(args.destdir):
        return "/" + os.path.relpath(staged, args.destdir)
    return staged


def _compile_policy(program: str, installer: Installer) -> None:
    """`program -g` as the scanner account: root never reads or writes the account's files by path."""
    account = (installer.uid, installer.gid) if installer.uid > 0 and os.geteuid() == 0 else None

    def become_account() -> None:
        os.umask(0o027)  # the compiled rules: 0640, as the source
        if account:
            os.setgroups([])
            os.setresgid(account[1], account[1], account[1])
            os.setresuid(account[0], account[0], account[0])

    completed = subprocess.run(
        [program, "-g"], capture_output=True, text=True, check=False, cwd="/", preexec_fn=become_account,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
    )
    if completed.returncode != 0:
        print(f"warning: compiling the policy file failed: {completed.stdout.strip()} {completed.stderr.strip()}")


def _install_wrapper(args, installer: Installer, program: str) -> str:
    """Build and install the setuid wrapper when a C compiler is present; return its path.

    --skip-setuid-test keeps the original's meaning: the wrapper is built and installed, only
    the run-time test of the setuid step is not made (packagers build as a normal user or in a chroot).
    """
    if not os.path.exists(WRAPPER_SOURCE):
        return ""
    from .wrapper import build_and_install_wrapper

    return build_and_install_wrapper(args, installer, program, sys.executable)
