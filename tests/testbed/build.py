#!/usr/bin/env python3
"""Build the real qmail test bed on this machine (root): notqmail in /var/qmail and simscan, the C peer.

Usage: tests/testbed/build.py [--quiet]. Safe to re-run: each build is skipped while the installed
one carries the stamp of the same tarball, recipe and account ids. The sources come from the
shared vendor directory (<repo>/../shared/vendor, or $QS_SHARED_DIR/vendor); nothing of them is
copied into this repository. What it sets up:
- the qmail accounts (before the build: notqmail compiles the uids in) and a mailbox account,
- notqmail in /var/qmail, control files for a host that only ever talks to itself (every remote
  delivery is routed to 127.0.0.1:2525, so no DNS lookup happens), aliases to the mailbox account,
- simscan-clam and simscan-spam in /var/qmail/bin, each with a `-fd6` shim that moves simscan's
  reject text from fd 4 to notqmail's custom-error fd 6.
The daemons are not started here: tests/testbed/qmail.py runs them for a test session or benchmark.
"""

from __future__ import annotations

import argparse
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
QMAIL = Path("/var/qmail")
TESTBED = QMAIL / "testbed"  # run-time files of the bed: rules, logs, scanner configs, locks
RECIPE = "1"  # bump when a build recipe below changes: forces a rebuild everywhere

QMAIL_GROUPS = ("nofiles", "qmail")
# user -> (group, home), as INSTALL.ids.md of notqmail
QMAIL_USERS = {
    "alias": ("nofiles", "/var/qmail/alias"),
    "qmaild": ("nofiles", "/var/qmail"),
    "qmaill": ("nofiles", "/var/qmail"),
    "qmailp": ("nofiles", "/var/qmail"),
    "qmailq": ("qmail", "/var/qmail"),
    "qmailr": ("qmail", "/var/qmail"),
    "qmails": ("qmail", "/var/qmail"),
}
MAILBOX_USER = "qmailtest"  # receives the bed's mail in ~/Maildir
MAILBOX_HOME = Path("/home") / MAILBOX_USER
SCANNER_USER = "qscand"  # the account this project's wrapper becomes
SIMSCAN_USER = "simscan"
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
    """One simscan build: installed as /var/qmail/bin/simscan-<name>, run through simscan-<name>-fd6."""

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


def ensure_accounts() -> None:
    """The qmail accounts, the mailbox account, the scanner accounts of this project and of simscan."""
    for group in QMAIL_GROUPS:
        ensure_group(group)
    for user, (group, home) in QMAIL_USERS.items():
        ensure_user(user, group, home)
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


def _build_once(name: str, tarball: Path, stamp: str, installed: tuple[Path, ...], steps, quiet: bool) -> None:
    """Unpack the tarball and run steps(source, log) unless the stamp says this build is installed."""
    stamp_file = QMAIL / f".testbed-{name}"
    if _is_current(stamp_file, stamp, *installed):
        _say(quiet, f"{name}: {tarball.name} already installed")
        return
    _say(False, f"{name}: building {tarball.name}")
    with tempfile.TemporaryDirectory(prefix=f"qs-{name}-") as work:
        source = _unpack(tarball, Path(work))
        steps(source, Path(work) / "build.log")
    stamp_file.write_text(stamp)


def build_notqmail(quiet: bool) -> None:
    """make it man && make setup check, unless /var/qmail already holds this build for these ids."""
    tarball = vendor_tarball("notqmail")

    def steps(source: Path, log: Path) -> None:
        _run(["make", f"-j{os.cpu_count() or 1}", "it", "man"], source, log)
        _run(["make", "setup", "check"], source, log)

    installed = (QMAIL / "bin" / "qmail-smtpd", QMAIL / "bin" / "qmail-queue")
    _build_once("notqmail", tarball, _stamp(tarball, _ids_fingerprint(tuple(QMAIL_USERS))), installed, steps, quiet)


def configure_qmail() -> None:
    """Control files, aliases and the mailbox account's Maildir (rewritten every time: cheap, idempotent)."""
    control = QMAIL / "control"
    for name, text in CONTROL_FILES.items():
        _write_if_changed(control / name, text, 0o644)
    alias = QMAIL / "alias"
    alias_ids = pwd.getpwnam("alias")
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
    TESTBED.mkdir(mode=0o755, exist_ok=True)


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
        stamp = _stamp(tarball, " ".join(variant.options), _ids_fingerprint((SIMSCAN_USER, *QMAIL_USERS)))
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


def build(quiet: bool = False) -> None:
    """Everything above, in order; raises BuildError with the reason when it cannot."""
    if os.geteuid() != 0:
        raise BuildError("the qmail test bed is built as root (`make test` as root builds it)")
    missing = missing_programs()
    if missing:
        raise BuildError(f"missing programs {', '.join(missing)}: run tests/install-deps.sh as root")
    ensure_accounts()
    QMAIL.mkdir(mode=0o755, exist_ok=True)
    build_notqmail(quiet)
    configure_qmail()
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
