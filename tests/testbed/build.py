#!/usr/bin/env python3
"""Build the real qmail test bed on this machine (root): notqmail and simscan in a prefix of its own.

Usage: tests/testbed/build.py [--quiet]. Safe to re-run: each build is skipped while the installed
one carries the stamp of the same tarball, recipe and account ids. The sources come from the
shared vendor directory (<repo>/../shared/vendor, or $QS_SHARED_DIR/vendor); nothing of them is
copied into this repository. What it sets up, all under /opt/qmail-scanner-testbed:
- qmail accounts of its own (qsbed-alias, qsbed-qmaild, ... before the build: notqmail compiles the
  uids in), so the ids of a live qmail's qmaild, qmailq, ... are never looked at or changed; accounts
  that exist already are used as they are, never modified; and a mailbox account,
- notqmail with conf-qmail /opt/qmail-scanner-testbed/qmail, control files for a host that only ever
  talks to itself (every remote delivery is routed to 127.0.0.1:2525, so no DNS lookup happens),
  aliases to the mailbox account,
- simscan-clam and simscan-spam in its bin/, built against this qmail (its qmail-queue, control/ and
  work dir), each with a `-fd6` shim that moves simscan's reject text from fd 4 to notqmail's fd 6.
Nothing is written to /var/qmail: a live qmail on the same machine keeps its programs, control files,
queue, accounts and running daemons. The daemons are not started here: tests/testbed/qmail.py runs
them for a test session or benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import grp
import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
# /opt, not /tmp or /var/tmp: the bed holds setuid programs and root builds into it, so no other user may
# create or swap the directory first (/var/tmp is world-writable), nosuid mounts of /tmp and /var/tmp
# would break qmail-queue and simscan, and systemd-tmpfiles ages out files under /var/tmp. One directory
# to remove (with the qsbed-* accounts) when the bed is no longer wanted.
BED_ROOT = Path("/opt/qmail-scanner-testbed")
TESTBED = BED_ROOT / "run"  # run-time files of the bed: rules, logs, scanner configs, locks
RECIPE = "2"  # bump when a build recipe below changes: forces a rebuild everywhere
STOCK_QMAIL = Path("/var/qmail")  # a live qmail's usual home: the bed never writes there
# conf-users order of notqmail: alias, daemon, log, owner of the binaries, passwd, queue, remote, send.
QMAIL_ROLES = ("alias", "qmaild", "qmaill", "root", "qmailp", "qmailq", "qmailr", "qmails")
QMAIL_GROUP_ROLES = ("qmail", "nofiles")  # conf-groups order
ROLE_GROUPS = {"alias": "nofiles", "qmaild": "nofiles", "qmaill": "nofiles", "qmailp": "nofiles",
               "qmailq": "qmail", "qmailr": "qmail", "qmails": "qmail"}  # fmt: skip


@dataclass(frozen=True)
class QmailInstance:
    """One notqmail build: its home (conf-qmail) and its account names (conf-users, conf-groups)."""

    home: Path
    account_prefix: str  # "qsbed-": the bed's qmaild is qsbed-qmaild; "" would be the stock names

    def user(self, role: str) -> str:
        """The account for a role of INSTALL.ids.md (root stays root: it owns the binaries)."""
        return role if role == "root" else self.account_prefix + role

    def group(self, role: str) -> str:
        return self.account_prefix + role

    @property
    def users(self) -> dict[str, tuple[str, str]]:
        """user -> (group, home) of the accounts to create, as INSTALL.ids.md but named with the prefix."""
        return {
            self.user(role): (self.group(group), str(self.home / "alias" if role == "alias" else self.home))
            for role, group in ROLE_GROUPS.items()
        }

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self.group(role) for role in QMAIL_GROUP_ROLES)

    @property
    def bin(self) -> Path:
        return self.home / "bin"

    def conf_files(self) -> dict[str, str]:
        """conf-qmail, conf-users and conf-groups for this home and these names (read by notqmail's make)."""
        return {
            "conf-qmail": f"{self.home}\n",
            "conf-users": "".join(f"{self.user(role)}\n" for role in QMAIL_ROLES),
            "conf-groups": "".join(f"{self.group(role)}\n" for role in QMAIL_GROUP_ROLES),
        }


BED = QmailInstance(BED_ROOT / "qmail", "qsbed-")
QMAIL = BED.home
QMAIL_DAEMON_USER = BED.user("qmaild")  # qmail-smtpd runs as this (tcpserver -u/-g)
QMAIL_LOG_USER = BED.user("qmaill")  # qmail-send's logger runs as this
QMAIL_USERS = BED.users
MAILBOX_USER = "qmailtest"  # receives the bed's mail in ~/Maildir
MAILBOX_HOME = Path("/home") / MAILBOX_USER
SCANNER_USER = "qscand"  # the account this project's wrapper becomes
SIMSCAN_USER = BED.user("simscan")  # not a live simscan's account: its id is never reused or changed
SIMSCAN_WORKDIR = QMAIL / "simscan"
LOOPBACK_SMTP_PORT = 2525  # where smtproutes sends every remote delivery: back to ourselves, refused

CONTROL_FILES = {
    "me": "localhost\n",
    "locals": "localhost\nlocalhost.localdomain\n",
    "rcpthosts": "localhost\nlocalhost.localdomain\n",
    # "localhost" here would make qmail-inject write user@localhost.localhost, a remote address.
    "defaultdomain": "localdomain\n",
    "defaulthost": "localhost\n",
    "smtproutes": f":127.0.0.1:{LOOPBACK_SMTP_PORT}\n",
    # simscan's attachment check reads the first word of each line.
    "ssattach": ".scr\n.pif\n",
}
ALIASES = ("root", "postmaster", "mailer-daemon")

# Where simscan finds its scanners: fixed paths compiled in, pointed at a session's daemons at run time.
CLAMDSCAN_SHIM = QMAIL / "bin" / "clamdscan-testbed"
CLAMDSCAN_CONFIG = TESTBED / "clamdscan.conf"
SPAMD_SOCKET_LINK = TESTBED / "spamd.sock"


@dataclass(frozen=True)
class SimscanVariant:
    """One simscan build: installed as <bed>/qmail/bin/simscan-<name>, run through simscan-<name>-fd6."""

    name: str
    options: tuple[str, ...]

    @property
    def binary(self) -> Path:
        return QMAIL / "bin" / f"simscan-{self.name}"

    @property
    def shim(self) -> Path:
        return QMAIL / "bin" / f"simscan-{self.name}-fd6"


CLAM_OPTIONS = (
    f"--enable-user={SIMSCAN_USER}",
    # Every path simscan compiles in, named: its configure looks for /var/qmail by itself, and a simscan
    # built that way would hand the bed's mail to a live qmail's qmail-queue and read its control files.
    f"--enable-qmaildir={QMAIL}",
    f"--enable-workdir={SIMSCAN_WORKDIR}",
    f"--enable-controldir={QMAIL / 'control'}",
    f"--enable-qmail-queue={QMAIL / 'bin' / 'qmail-queue'}",
    "--enable-clamav=y",
    f"--enable-clamdscan={CLAMDSCAN_SHIM}",
    "--enable-attach=y",
    "--enable-ripmime=/usr/bin/ripmime",
    "--enable-custom-smtp-reject=y",
)
SIMSCAN_VARIANTS = (
    SimscanVariant("clam", CLAM_OPTIONS),
    SimscanVariant("spam", (*CLAM_OPTIONS, "--enable-spam=y", f"--enable-spamc-args=-U {SPAMD_SOCKET_LINK}")),
)


class BuildError(RuntimeError):
    """The bed cannot be built here (not root, sources missing, a build failed)."""


def shared_dir() -> Path:
    return Path(os.environ.get("QS_SHARED_DIR") or ROOT.parent / "shared")


def vendor_tarball(name: str) -> Path:
    """The one <name>-*.tar.gz of the shared vendor directory."""
    vendor = shared_dir() / "vendor"
    found = sorted(vendor.glob(f"{name}-*.tar.gz"))
    if not found:
        raise BuildError(f"no {name}-*.tar.gz in {vendor} (set QS_SHARED_DIR to the dir holding vendor/)")
    return found[-1]


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(f"testbed: {text}", flush=True)


def _run(argv: list[str], cwd: Path | None = None, log: Path | None = None) -> None:
    """Run a build step; on failure raise with the tail of its output."""
    completed = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if log:
        with open(log, "ab") as handle:
            handle.write(completed.stdout)
    if completed.returncode != 0:
        tail = completed.stdout.decode("utf-8", "replace")[-3000:]
        raise BuildError(f"{' '.join(argv)} failed in {cwd} ({completed.returncode}):\n{tail}")


def ensure_group(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        _run(["groupadd", "--system", name])
        return grp.getgrnam(name).gr_gid


def ensure_user(name: str, group: str, home: str, system: bool = True) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        argv = ["useradd", "--gid", group, "--home-dir", home, "--no-create-home", "--shell", "/usr/sbin/nologin"]
        _run([*argv, *(["--system"] if system else []), name])
        return pwd.getpwnam(name)


def ensure_qmail_accounts(instance: QmailInstance) -> None:
    """The groups and users of one notqmail build (created when missing; existing ones are left as they are)."""
    for group in instance.groups:
        ensure_group(group)
    for user, (group, home) in instance.users.items():
        ensure_user(user, group, home)


def ensure_accounts() -> None:
    """The bed's qmail accounts, the mailbox account, the scanner accounts of this project and of simscan."""
    ensure_qmail_accounts(BED)
    ensure_group(MAILBOX_USER)
    ensure_user(MAILBOX_USER, MAILBOX_USER, str(MAILBOX_HOME), system=False)
    for user in (SCANNER_USER, SIMSCAN_USER):
        ensure_group(user)
        ensure_user(user, user, "/nonexistent")


def _ids_fingerprint(users: tuple[str, ...]) -> str:
    return ",".join(f"{u}={pwd.getpwnam(u).pw_uid}:{pwd.getpwnam(u).pw_gid}" for u in users)


def _stamp(tarball: Path, *extra: str) -> str:
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    return "\n".join([f"recipe {RECIPE}", f"{tarball.name} sha256 {digest}", *extra]) + "\n"


def _is_current(stamp_file: Path, stamp: str, *installed: Path) -> bool:
    try:
        return stamp_file.read_text() == stamp and all(path.exists() for path in installed)
    except OSError:
        return False


def _unpack(tarball: Path, into: Path) -> Path:
    """Unpack into a fresh directory and return the single top-level source dir."""
    _run(["tar", "-xzf", str(tarball), "-C", str(into)])
    (source,) = [p for p in into.iterdir() if p.is_dir()]
    return source


def _build_once(name: str, tarball: Path, stamp: str, installed: tuple[Path, ...], steps, quiet: bool,
                home: Path = QMAIL) -> None:  # fmt: skip
    """Unpack the tarball and run steps(source, log) unless the stamp in home says this build is installed."""
    stamp_file = home / f".testbed-{name}"
    if _is_current(stamp_file, stamp, *installed):
        _say(quiet, f"{name}: {tarball.name} already installed")
        return
    _say(False, f"{name}: building {tarball.name}")
    with tempfile.TemporaryDirectory(prefix=f"qs-{name}-") as work:
        source = _unpack(tarball, Path(work))
        steps(source, Path(work) / "build.log")
    stamp_file.write_text(stamp)


def build_notqmail(quiet: bool, instance: QmailInstance = BED) -> None:
    """make it man && make setup check with this home and these names, unless the home holds that build."""
    tarball = vendor_tarball("notqmail")

    def steps(source: Path, log: Path) -> None:
        for name, text in instance.conf_files().items():
            (source / name).write_text(text)
        _run(["make", f"-j{os.cpu_count() or 1}", "it", "man"], source, log)
        _run(["make", "setup", "check"], source, log)

    instance.home.mkdir(mode=0o755, parents=True, exist_ok=True)
    installed = (instance.bin / "qmail-smtpd", instance.bin / "qmail-queue")
    stamp = _stamp(tarball, str(instance.home), _ids_fingerprint(tuple(instance.users)))
    _build_once("notqmail", tarball, stamp, installed, steps, quiet, instance.home)


def configure_qmail(instance: QmailInstance = BED, control_files: dict[str, str] = CONTROL_FILES) -> None:
    """Control files, aliases and the mailbox account's Maildir (rewritten every time: cheap, idempotent)."""
    control = instance.home / "control"
    for name, text in control_files.items():
        _write_if_changed(control / name, text, 0o644)
    alias = instance.home / "alias"
    alias_ids = pwd.getpwnam(instance.user("alias"))
    for name in ALIASES:
        path = alias / f".qmail-{name}"
        _write_if_changed(path, f"&{MAILBOX_USER}\n", 0o644)
        os.chown(path, alias_ids.pw_uid, alias_ids.pw_gid)
    owner = pwd.getpwnam(MAILBOX_USER)
    MAILBOX_HOME.mkdir(mode=0o755, parents=True, exist_ok=True)
    for directory in (MAILBOX_HOME, *(MAILBOX_HOME / "Maildir" / sub for sub in ("", "tmp", "new", "cur"))):
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chown(directory, owner.pw_uid, owner.pw_gid)
    MAILBOX_HOME.chmod(0o755)  # qmail-getpw refuses a home writable by others; readable is fine


def _write_if_changed(path: Path, text: str, mode: int) -> None:
    if not path.exists() or path.read_text() != text:
        staging = path.with_name(path.name + ".new")
        staging.write_text(text)
        staging.chmod(mode)
        staging.rename(path)


def build_simscan(quiet: bool) -> None:
    """Both simscan variants, the clamdscan shim and the fd-6 shims; each variant rebuilt only when stale."""
    tarball = vendor_tarball("simscan")
    ids = pwd.getpwnam(SIMSCAN_USER)
    SIMSCAN_WORKDIR.mkdir(exist_ok=True)
    os.chown(SIMSCAN_WORKDIR, ids.pw_uid, ids.pw_gid)
    SIMSCAN_WORKDIR.chmod(0o750)
    _build_clamdscan_shim()
    for variant in SIMSCAN_VARIANTS:
        # simscan writes its reject text to fd 4; notqmail reads the custom-error pipe on fd 6.
        _write_if_changed(variant.shim, f"#!/bin/sh\nexec {variant.binary} 4>&6\n", 0o755)
        stamp = _stamp(tarball, " ".join(variant.options), _ids_fingerprint((SIMSCAN_USER, *BED.users)))
        _build_once(f"simscan-{variant.name}", tarball, stamp, (variant.binary,), _simscan_steps(variant), quiet)


def _simscan_steps(variant: SimscanVariant):
    def steps(source: Path, log: Path) -> None:
        ids = pwd.getpwnam(SIMSCAN_USER)
        _run(["./configure", *variant.options], source, log)
        _run(["make"], source, log)
        staging = variant.binary.with_name(variant.binary.name + ".new")
        shutil.copyfile(source / "simscan", staging)
        os.chown(staging, ids.pw_uid, ids.pw_gid)
        staging.chmod(0o4711)  # chmod after chown: chown clears the setuid bit
        staging.rename(variant.binary)

    return steps


CLAMDSCAN_SHIM_SOURCE = f"""
/* simscan runs clamdscan with an empty environment and no options of ours: add the config file.
 * A program, not a script: /bin/sh would drop simscan's effective uid, and clamdscan could not
 * read simscan's work dir. */
#include <unistd.h>
int main(int argc, char **argv) {{
  char *args[argc + 2];
  int i;
  args[0] = "clamdscan";
  args[1] = "--config-file={CLAMDSCAN_CONFIG}";
  for (i = 1; i < argc; ++i) args[i + 1] = argv[i];
  args[argc + 1] = 0;
  execv("/usr/bin/clamdscan", args);
  return 111;
}}
"""


def _build_clamdscan_shim() -> None:
    source = TESTBED / "clamdscan-testbed.c"
    if CLAMDSCAN_SHIM.exists() and source.exists() and source.read_text() == CLAMDSCAN_SHIM_SOURCE:
        return
    source.write_text(CLAMDSCAN_SHIM_SOURCE)
    staging = CLAMDSCAN_SHIM.with_name(CLAMDSCAN_SHIM.name + ".new")
    _run(["cc", "-O2", "-Wall", "-o", str(staging), str(source)])
    staging.chmod(0o755)
    staging.rename(CLAMDSCAN_SHIM)


def missing_programs() -> list[str]:
    """Debian programs the bed needs (tests/install-deps.sh installs them)."""
    needed = ("make", "cc", "groff", "tcpserver", "tcprules", "ripmime", "clamdscan", "spamc", "useradd")
    return [name for name in needed if not shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")]


@contextlib.contextmanager
def build_lock(root: Path):
    """One build of a prefix at a time: test sessions and benchmarks that start together wait for each other."""
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(root / "build.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def check_can_build() -> None:
    if os.geteuid() != 0:
        raise BuildError("the qmail test bed is built as root (`make test` as root builds it)")
    missing = missing_programs()
    if missing:
        raise BuildError(f"missing programs {', '.join(missing)}: run tests/install-deps.sh as root")


def build(quiet: bool = False) -> None:
    """Everything above, in order; raises BuildError with the reason when it cannot."""
    check_can_build()
    with build_lock(BED_ROOT):
        ensure_accounts()
        build_notqmail(quiet)
        configure_qmail()
        TESTBED.mkdir(mode=0o755, exist_ok=True)
        build_simscan(quiet)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quiet", action="store_true", help="print nothing when all is built")
    args = parser.parse_args()
    try:
        build(args.quiet)
    except BuildError as error:
        print(f"testbed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
