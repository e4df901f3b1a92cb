"""qs-console install: the console's account, code, data dir, records access, release helper and service files (root).

The console runs as its own account (qsconsole), neither root nor the scanner's: it owns only its data
directory. Its code, run files, units and the release helper are root's, so neither account can rewrite
what the other (or root) runs. The spool's records/ becomes scanner:console 2770 (setgid: current.jsonl
is created in the console's group), so the loader can rename and delete record files; everything in
the spool is reached through qsconfigure.nofollow (root follows no link the scanner or console planted).
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from qsconfigure.nofollow import open_directory, open_entry
from qsconfigure.probes import ConfigureError
from qsconfigure.wrapper import CFLAGS, c_string, wrapper_compiler
from qsconsole import config

SOURCE_ROOT = Path(__file__).resolve().parent.parent.parent
HELPER_SOURCE = SOURCE_ROOT / "contrib" / "qs-console-release.c"
HELPER_NAME = "qs-console-release"
HELPER_MODE = 0o4750  # setuid root, runnable by root and the console's group only; it drops to the scanner account
RECORDS_MODE = 0o2770
DEFAULT_RELEASE_TOOL = "/var/qmail/bin/qs-quarantine"
# name -> (command, niceness). The loader yields the CPU to mail: at the scanner's priority on 2 cores it slows the
# engine's messages (README, "Measured"); a backlog it loads later costs nothing.
SERVICES = {"qs-console": ("serve --listen {listen}", 0), "qs-console-load": ("load", 10)}
DIGEST = "qs-console-digest"
DIGEST_TIME = "07:00"  # daily, after the night's mail, before the working day


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """The command line of `qs-console install`."""
    parser = argparse.ArgumentParser(prog="qs-console install", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", default="/usr/local/qs-console", help="code, helper, run files, units")
    parser.add_argument("--data-dir", default="/var/lib/qs-console", help="the console's own directory (0700)")
    parser.add_argument("--spooldir", default="/var/spool/qscan", help="the scanner's spool (configure --install's)")
    parser.add_argument("--release-tool", default=None,
                        help=f"the installed qs-quarantine (root's; default {DEFAULT_RELEASE_TOOL} when there); "
                             f"'': no release")
    parser.add_argument("--user", default="qsconsole", help="the console's account (created when missing)")
    parser.add_argument("--scanner-user", default="qscand", help="the scanner's account")
    parser.add_argument("--listen", default="127.0.0.1:8025", help="HOST:PORT for serve")
    parser.add_argument("--db", help="postgresql://... (default SQLite in the data dir)")
    parser.add_argument("--python", default="/usr/bin/python3", help="the interpreter with Debian's Django")
    parser.add_argument("--admin", metavar="NAME", help="create this administrator (password: the first line of "
                                                        "standard input, or generated and printed once)")
    parser.add_argument("--base-url", metavar="URL", help="the console's address as recipients reach it "
                                                          "(http://HOST:PORT; the digest's links)")
    parser.add_argument("--digest-sender", metavar="ADDR", help="the digest's sender (default postmaster@ this host)")
    parser.add_argument("--start", action="store_true", help="enable and start the units (systemd), or print the "
                                                             "daemontools/runit commands")
    return parser.parse_args(argv)


def ensure_account(user: str, home: str) -> tuple[int, int]:
    """The console's system group and user (no shell, its data dir as home) when missing; (uid, gid)."""
    try:
        grp.getgrnam(user)
    except KeyError:
        _run(["groupadd", "--system", user])
    try:
        pwd.getpwnam(user)
    except KeyError:
        _run(["useradd", "--system", "--gid", user, "--home-dir", home, "--no-create-home",
              "--shell", "/usr/sbin/nologin", user])
    return pwd.getpwnam(user).pw_uid, grp.getgrnam(user).gr_gid


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ConfigureError(f"{argv[0]} failed: {done.stderr.strip()}", "create the account by hand and re-run")


def root_directory(path: Path, mode: int = 0o755) -> None:
    """A directory root's alone (created when missing), whoever made it before."""
    fd = open_directory(str(path), mode)
    try:
        os.fchown(fd, 0, 0)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def write_root_file(path: Path, content: bytes, mode: int, group: int = 0) -> None:
    """Write path through a staged name and a rename: root's (group given), the mode given, never half-written."""
    staging = path.with_name(f".{path.name}.new")
    staging.unlink(missing_ok=True)
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(content)
        os.fchown(stream.fileno(), 0, group)
        os.fchmod(stream.fileno(), mode)  # after chown, which clears set-id bits
    os.replace(staging, path)


def install_code(prefix: Path, python: str) -> Path:
    """lib/qsconsole and the qs-console launcher under prefix, root's, compiled (qsconsole cannot write caches)."""
    for directory in (prefix, prefix / "bin", prefix / "lib", prefix / "libexec", prefix / "service",
                      prefix / "systemd"):
        root_directory(directory)
    target = prefix / "lib" / "qsconsole"
    staging = prefix / "lib" / ".qsconsole.new"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(SOURCE_ROOT / "lib" / "qsconsole", staging, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(target, ignore_errors=True)
    os.rename(staging, target)
    # By the interpreter that runs it (its bytecode version), as root: the console's account cannot write caches.
    subprocess.run([python, "-m", "compileall", "-q", str(target)], check=False, capture_output=True)
    launcher = prefix / "bin" / "qs-console"
    write_root_file(launcher, (SOURCE_ROOT / "contrib" / "qs-console").read_bytes(), 0o755)
    return launcher


def open_records(spooldir: str, scanner_uid: int, console_gid: int, console_uid: int) -> None:
    """records/ scanner:console 2770; current.jsonl and the loader's files in the console's group."""
    records = os.path.join(spooldir, "records")
    # The console's account must pass through the spool (0750 qscand) to reach records/: search only, for
    # others (o+x: no listing; every other name in the spool is 0700 or 0640, closed to others).
    fd = open_directory(spooldir)
    try:
        os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) | stat.S_IXOTH)
    finally:
        os.close(fd)
    fd = open_directory(records)
    try:
        os.fchown(fd, scanner_uid, console_gid)
        os.fchmod(fd, RECORDS_MODE)
    finally:
        os.close(fd)
    try:
        fd = open_entry(os.path.join(records, "current.jsonl"), os.O_RDONLY)
    except FileNotFoundError:
        pass
    else:
        os.fchown(fd, scanner_uid, console_gid)
        os.fchmod(fd, 0o640)
        os.close(fd)
    for name in ("ready", "rejected"):  # a loader run as root before: hand its directories to the console
        try:
            fd = open_directory(os.path.join(records, name))
        except FileNotFoundError:
            continue
        os.fchown(fd, console_uid, console_gid)
        os.close(fd)


def build_helper(prefix: Path, tool: str, scanner_uid: int, scanner_gid: int, console_gid: int) -> Path:
    """Compile contrib/qs-console-release.c for this tool and account; install it root:console 04750."""
    compiler = wrapper_compiler()
    if not compiler:
        raise ConfigureError("no C compiler for the release helper", "install gcc (or set CC) and re-run")
    info = os.stat(tool)
    if info.st_uid != 0 or info.st_mode & 0o022:
        raise ConfigureError(f"{tool} is not root's alone", "give the installed qs-quarantine (configure --install)")
    built = prefix / "libexec" / f".{HELPER_NAME}.build"
    argv = [*compiler, *CFLAGS, f"-DQS_TOOL={c_string(tool, 'the release tool path')}", f"-DQS_UID={scanner_uid}",
            f"-DQS_GID={scanner_gid}", "-o", str(built), str(HELPER_SOURCE)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ConfigureError(f"the release helper does not compile: {done.stderr.strip()[:2000]}", "fix cc and re-run")
    helper = prefix / "libexec" / HELPER_NAME
    write_root_file(helper, built.read_bytes(), HELPER_MODE, console_gid)
    built.unlink()
    return helper


def run_file(python: str, launcher: Path, data_dir: str, user: str, command: str, niceness: int = 0) -> str:
    """A daemontools / runit run script: started as root, the command runs as the console's account."""
    nice = f"nice -n {niceness} " if niceness else ""
    return ("#!/bin/sh\n"
            "exec 2>&1\n"
            f"exec {nice}setpriv --reuid={user} --regid={user} --init-groups {python} {launcher} --data-dir {data_dir} "
            f"{command}\n")


def systemd_unit(name: str, python: str, launcher: Path, data_dir: str, user: str, command: str,
                 niceness: int = 0) -> str:
    """A unit running the command as the console's account (no NoNewPrivileges: release runs the setuid helper)."""
    return ("[Unit]\n"
            f"Description=qmail-scanner console ({name})\n"
            "After=network.target postgresql.service\n\n"
            "[Service]\n"
            f"User={user}\nGroup={user}\n"
            f"ExecStart={python} {launcher} --data-dir {data_dir} {command}\n"
            + (f"Nice={niceness}\n" if niceness else "")
            + "UMask=0077\nRestart=always\nRestartSec=2\n"
            "ProtectSystem=full\nPrivateTmp=true\n\n"
            "[Install]\nWantedBy=multi-user.target\n")


def digest_units(python: str, launcher: Path, data_dir: str, user: str) -> dict[str, str]:
    """The daily digest: a oneshot service and the timer that starts it (a missed run is made up at boot)."""
    service = ("[Unit]\n"
               "Description=qmail-scanner console: the daily digest of quarantined mail\n"
               "After=network.target postgresql.service\n\n"
               "[Service]\nType=oneshot\n"
               f"User={user}\nGroup={user}\n"
               f"ExecStart={python} {launcher} --data-dir {data_dir} digest\n"
               "UMask=0077\nProtectSystem=full\nPrivateTmp=true\n")
    timer = ("[Unit]\n"
             "Description=qmail-scanner console: the daily digest\n\n"
             "[Timer]\n"
             f"OnCalendar=*-*-* {DIGEST_TIME}:00\nPersistent=true\nRandomizedDelaySec=300\n\n"
             "[Install]\nWantedBy=timers.target\n")
    return {f"{DIGEST}.service": service, f"{DIGEST}.timer": timer}


def cron_line(python: str, launcher: Path, data_dir: str, user: str) -> str:
    """The digest for a host without systemd: a line for /etc/cron.d (which names the account)."""
    hour, minute = DIGEST_TIME.split(":")
    return f"{int(minute)} {int(hour)} * * * {user} {python} {launcher} --data-dir {data_dir} digest"


def add_admin(name: str, as_console: list[str]) -> str:
    """Create the administrator: the password from standard input's first line, else generated; what to print."""
    given = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
    password = given or secrets.token_urlsafe(15)
    done = subprocess.run([*as_console, "createuser", name, "--admin"], input=password + "\n", capture_output=True,
                          text=True, check=False, cwd="/")
    if done.returncode != 0 and done.stderr.strip().endswith(f"{name} exists"):
        return f"administrator {name}: exists, its password unchanged"
    if done.returncode != 0:
        raise ConfigureError(f"qs-console createuser {name}: {done.stderr.strip()}", "give another password on stdin")
    if given:
        return f"administrator {name}: created with the password given on standard input"
    return f"administrator {name}: created, password {password} (shown this once: keep it)"


def systemd_runs() -> bool:
    """True when systemd is the init system here (sd_booted's test)."""
    return os.path.isdir("/run/systemd/system")


def start_units(prefix: Path, with_digest: bool) -> str:
    """Link, enable and start the units (systemd); what was done."""
    units = [prefix / "systemd" / f"{name}.service" for name in SERVICES]
    names = [f"{name}.service" for name in SERVICES]
    if with_digest:
        units += [prefix / "systemd" / f"{DIGEST}.service", prefix / "systemd" / f"{DIGEST}.timer"]
        names.append(f"{DIGEST}.timer")
    for argv in (["systemctl", "link", *map(str, units)], ["systemctl", "enable", "--now", *names]):
        _run(argv)
    return "started: " + " ".join(names)


def install(options: argparse.Namespace) -> int:
    """Every step, in an order a re-run repeats safely."""
    if os.geteuid() != 0:
        raise ConfigureError("qs-console install runs as root", "run it as root")
    for value in (options.prefix, options.data_dir, options.python, options.listen, options.user):
        c_string(value, "a path or name")
        if " " in value:
            raise ConfigureError(f"{value!r}: no spaces in paths here", "choose another path")
    prefix, data_dir = Path(options.prefix).resolve(), Path(options.data_dir).resolve()
    console_uid, console_gid = ensure_account(options.user, str(data_dir))
    scanner = pwd.getpwnam(options.scanner_user)
    launcher = install_code(prefix, options.python)
    fd = open_directory(str(data_dir), 0o700)
    try:
        os.fchown(fd, console_uid, console_gid)
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    open_records(options.spooldir, scanner.pw_uid, console_gid, console_uid)
    helper = ""
    if options.release_tool is None:  # configure --install puts qs-quarantine beside the program
        options.release_tool = DEFAULT_RELEASE_TOOL if os.path.isfile(DEFAULT_RELEASE_TOOL) else ""
    if options.release_tool:
        helper = str(build_helper(prefix, options.release_tool, scanner.pw_uid, scanner.pw_gid, console_gid))
    for name, (command, niceness) in SERVICES.items():
        command = command.format(listen=options.listen)
        service = prefix / "service" / name
        root_directory(service)
        write_root_file(service / "run", run_file(options.python, launcher, str(data_dir), options.user,
                                                  command, niceness).encode(), 0o755)
        write_root_file(prefix / "systemd" / f"{name}.service", systemd_unit(
            name, options.python, launcher, str(data_dir), options.user, command, niceness).encode(), 0o644)
    for name, text in digest_units(options.python, launcher, str(data_dir), options.user).items():
        write_root_file(prefix / "systemd" / name, text.encode(), 0o644)
    as_console = ["setpriv", f"--reuid={options.user}", f"--regid={options.user}", "--init-groups", options.python,
                  str(launcher), "--data-dir", str(data_dir)]
    migrate = [*as_console, "migrate", "--spooldir", options.spooldir, "--release-tool", helper]
    for flag, value in (("--db", options.db), ("--base-url", options.base_url),
                        ("--digest-sender", options.digest_sender)):
        migrate += [flag, value] if value is not None else []
    done = subprocess.run(migrate, check=False, cwd="/")
    if done.returncode != 0:
        raise ConfigureError(f"qs-console migrate as {options.user} exited {done.returncode}", "see above")
    print(f"qs-console installed in {prefix} (data {data_dir}, account {options.user}, serving {options.listen})")
    if options.admin:
        print(add_admin(options.admin, as_console))
    print(instructions(prefix, options, launcher, str(data_dir)))
    return 0


def instructions(prefix: Path, options: argparse.Namespace, launcher: Path, data_dir: str) -> str:
    """Start the units (--start under systemd), or say how; and how the digest runs daily."""
    with_digest = bool(config.load(Path(data_dir)).base_url)  # this run's --base-url, or an earlier run's
    cron = f"  {cron_line(options.python, launcher, data_dir, options.user)}"
    digest = "" if with_digest else " (give --base-url first: the digest's links need it)"
    if options.start and systemd_runs():
        return start_units(prefix, with_digest) + ("" if with_digest else f"; not the digest timer{digest}")
    units = " ".join(f"{prefix}/systemd/{name}" for name in (*(f"{s}.service" for s in SERVICES),
                                                               f"{DIGEST}.service", f"{DIGEST}.timer"))
    services = " ".join(f"{prefix}/service/{name}" for name in SERVICES)
    said = "" if not options.start else "no systemd here (/run/systemd/system): start it with daemontools or runit\n"
    return (f"{said}systemd: systemctl link {units}\n"
            f"         systemctl enable --now qs-console.service qs-console-load.service {DIGEST}.timer\n"
            f"daemontools: ln -s {services} /service/\n"
            f"runit:       ln -s {services} /etc/service/\n"
            f"the daily digest without systemd{digest}, a line for /etc/cron.d/{DIGEST}:\n{cron}")



def main(argv: list[str]) -> int:
    """`qs-console install ...`: one line on a problem, exit 1."""
    try:
        return install(parse_arguments(argv))
    except (ConfigureError, config.ConfigError, KeyError, OSError) as problem:
        print(f"qs-console install: {problem}", file=sys.stderr)
        return 1
