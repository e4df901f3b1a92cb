"""The probe framework: each probe is one small function; results print autoconf style."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from .as_account import run_as


class ConfigureError(Exception):
    """A requested component is missing or broken: one-line reason plus a hint."""

    def __init__(self, reason: str, hint: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


@dataclass
class ProbeResult:
    """What one probe found: a value to freeze (path, version...) or why it is absent."""

    found: bool
    value: str = ""  # the path or address found
    version: str = ""
    detail: str = ""  # why not found / what is wrong
    hint: str = ""
    extra: dict = field(default_factory=dict)

    def describe(self) -> str:
        if not self.found:
            return f"no ({self.detail})" if self.detail else "no"
        text = self.value or "yes"
        return f"{text} ({self.version})" if self.version else text


@dataclass
class ProbeLog:
    """Every probe result, in order, for the summary and the generated program's header."""

    lines: list[tuple[str, str]] = field(default_factory=list)
    quiet: bool = False

    def check(self, label: str, probe: Callable[[], ProbeResult]) -> ProbeResult:
        """Run a probe, print `checking for <label>... <result>`, remember it."""
        if not self.quiet:
            print(f"checking for {label}... ", end="", flush=True)
        result = probe()
        description = result.describe()
        if not self.quiet:
            print(description)
        self.lines.append((label, description))
        return result


def find_program(name: str, extra_dirs: tuple[str, ...] = ()) -> str | None:
    """Find an executable on PATH or in the extra dirs (sbin dirs are not always on PATH)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *extra_dirs, "/usr/sbin", "/usr/local/sbin", "/sbin"])
    return shutil.which(name, path=search)


def run_quietly(argv: list[str], timeout: float = 20.0, input_bytes: bytes | None = None) -> tuple[int, str]:
    """Run a probe command without a shell; return (exit code, combined output); -1 if it cannot run."""
    try:
        completed = subprocess.run(argv, input=input_bytes, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return -1, str(error)
    output = (completed.stdout + completed.stderr).decode("utf-8", "replace")
    return completed.returncode, output


def probe_python(requested: str) -> ProbeResult:
    """The real interpreter binary: symlinks and version-manager shims resolved."""
    candidate = requested or sys.executable
    located = shutil.which(candidate) or candidate
    code, output = run_quietly(
        [
            located,
            "-I",
            "-S",
            "-c",
            "import sys, os; print(os.path.realpath(sys.executable)); print(sys.version.split()[0])",
        ]
    )
    if code != 0:
        return ProbeResult(False, detail=f"{candidate} does not run", hint="give --python /path/to/python3")
    real_path, version = output.split()[:2]
    major, minor = (int(x) for x in version.split(".")[:2])
    if (major, minor) < (3, 9):
        return ProbeResult(False, detail=f"Python {version} is too old", hint="Python 3.9 or newer is needed")
    return ProbeResult(True, real_path, version)


# Where each optional module comes from: (Debian package, PyPI name). Debian 12's python3-magic is
# python-magic (ahupp's, the API the program uses), not the "magic" bindings file(1) ships.
MODULE_PACKAGES = {
    "magic": ("python3-magic", "python-magic"),
    "tnefparse": ("", "tnefparse"),
    "rarfile": ("python3-rarfile", "rarfile"),
    "py7zr": ("python3-py7zr", "py7zr"),
    "inflate64": ("", "inflate64"),
}
HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.path.dirname(os.path.dirname(HERE))


def module_hint(module: str, python: str) -> str:
    """How to make module importable by the program's interpreter: the Debian package, else PyPI."""
    debian, pypi = MODULE_PACKAGES.get(module, ("", module))
    if debian:
        return f"apt-get install {debian} (PyPI: {pypi})"
    return f"PyPI {pypi}, not packaged by Debian: {python} -m pip install {pypi} (system-wide, not into a venv)"


def probe_python_module(python: str, module: str, check_code: str = "", account=None) -> ProbeResult:
    """The module as the program's interpreter imports it (its own site dirs, run as the scanner account).

    Never configure's own sys.path: a build venv or the checkout must not end up frozen into the
    program. -I keeps out PYTHON* variables, the user's site and the current directory.
    """
    code = (
        "import os\n"
        f"import {module} as m\n"
        f"{check_code}\n"
        "f = os.path.abspath(m.__file__)\n"
        "print(os.path.dirname(os.path.dirname(f)) if os.path.basename(f) == '__init__.py' else os.path.dirname(f))\n"
        "print(getattr(m, '__version__', ''))\n"
    )
    exit_code, output = run_as(account, [python, "-I", "-c", code], timeout=20.0)
    if exit_code != 0:
        last = (output.strip().splitlines() or ["import failed"])[-1]
        if "ModuleNotFoundError" in last or exit_code == -1:
            detail = f"not importable by {python}"
        else:
            detail = f"fails under {python}: {last[:100]}"
        return ProbeResult(False, detail=detail, hint=module_hint(module, python))
    lines = [*output.splitlines(), ""]
    if os.path.realpath(lines[0]).startswith(SOURCE_ROOT.rstrip("/") + "/"):
        detail = f"only in the source tree ({lines[0]}), which the program must not need"
        return ProbeResult(False, detail=detail, hint=module_hint(module, python))
    return ProbeResult(True, lines[0], lines[1])


LIBARCHIVE_MIN_VERSION = 3_002_000  # archive_entry_is_encrypted, read by the unpacker, came in 3.2


def probe_libarchive(python: str) -> ProbeResult:
    """The system libarchive.so, loadable by the target interpreter through ctypes: its path by soname.

    The soname's link, not the file it points to: a library upgrade renames the file, not the link.
    """
    code = (
        "import ctypes, ctypes.util, glob\n"
        "names = [p for d in ('/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib',"
        " '/usr/local/lib', '/lib/x86_64-linux-gnu') for p in sorted(glob.glob(d + '/libarchive.so.1[3-9]'))]\n"
        "found = ctypes.util.find_library('archive')\n"
        "names += [found] if found else []\n"
        "for name in names:\n"
        "    try:\n"
        "        lib = ctypes.CDLL(name)\n"
        "    except OSError:\n"
        "        continue\n"
        "    lib.archive_entry_is_encrypted\n"
        "    print(name)\n"
        "    print(lib.archive_version_number())\n"
        "    break\n"
    )
    exit_code, output = run_quietly([python, "-I", "-S", "-c", code])
    lines = output.split()
    if exit_code != 0 or len(lines) < 2 or not lines[1].isdigit():
        problem = (output.strip().splitlines() or ["?"])[-1][:100]
        return ProbeResult(
            False,
            detail="no libarchive.so.13 loadable" if exit_code == 0 else problem,
            hint="apt-get install libarchive13 (7z, rar, tar, iso, cab and more zip methods are then read)",
        )
    number = int(lines[1])
    version = f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"
    if number < LIBARCHIVE_MIN_VERSION:
        return ProbeResult(False, detail=f"libarchive {version} is older than 3.2")
    return ProbeResult(True, lines[0], version)


SEVENZIP_NAMES = ("7zz", "7z", "7za")  # Debian's 7zip package, then p7zip's
SEVENZIP_PROBE_ZIP = bytes.fromhex(  # "m" holding b"ok\n" * 100 in Deflate64 (7zz a -tzip -mm=Deflate64)
    "504b0304150000000900522e865d8d3734c5160000002c010000010000006de5c2a10d000000c230cfab08fe77bc30bfa66bf4e903"
    "504b01023f03150000000900522e865d8d3734c5160000002c010000010024000000000000002080a481000000006d0a0020000000"
    "00000100180009c69fb64585dd0100000000000000000000000000000000504b0506000000000100010053000000350000000000"
)


def probe_sevenzip() -> ProbeResult:
    """7-Zip, checked by decoding a Deflate64 zip member to stdout: the zip methods no library here reads."""
    import tempfile

    for name in SEVENZIP_NAMES:
        binary = find_program(name)
        if not binary:
            continue
        with tempfile.TemporaryDirectory() as directory:
            sample = os.path.join(directory, "probe.zip")
            with open(sample, "wb") as out:
                out.write(SEVENZIP_PROBE_ZIP)
            try:
                done = subprocess.run(
                    [binary, "e", "-so", "-tzip", "-bd", "--", sample],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=20,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired):
                continue
        if done.returncode == 0 and done.stdout == b"ok\n" * 100:
            return ProbeResult(True, binary, _sevenzip_version(binary))
    return ProbeResult(
        False, detail="no 7zz, 7z or 7za decoding Deflate64", hint="apt-get install 7zip (Deflate64 and implode zips)"
    )


def _sevenzip_version(binary: str) -> str:
    """The version from 7-Zip's banner ("7-Zip (z) 26.02 (x64) : ..."), or ""."""
    _, output = run_quietly([binary, "i"])
    words = output.split("\n", 2)[1].split() if output.count("\n") >= 2 else []
    return next((word for word in words if word[:1].isdigit() and "." in word), "")


def probe_syslog(socket_path: str) -> ProbeResult:
    """A syslog daemon listening at --syslog-socket (a datagram or stream unix socket), as the program sends."""
    import socket
    import stat

    try:
        mode = os.stat(socket_path).st_mode
    except OSError as error:
        return ProbeResult(False, detail=error.strerror.lower())
    if not stat.S_ISSOCK(mode):
        return ProbeResult(False, detail="not a socket")
    problem = ""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_UNIX, kind) as client:
            client.settimeout(2.0)
            try:
                client.connect(socket_path)
            except OSError as error:
                problem = (error.strerror or str(error)).lower()
                continue
        return ProbeResult(True, socket_path)
    return ProbeResult(False, detail=f"{problem}: no daemon listens")


def syslog_fallback_note(socket_path: str, result: ProbeResult, logdir: str) -> str:
    """What the program does with its per-message lines when no syslog daemon listens: one line for configure."""
    return (
        f"configure.py: note: no syslog at {socket_path} ({result.detail}): each message's line goes to"
        " qmail-smtpd's log instead (stderr, with a time, in syslog's form; said once there and marked by"
        f" {os.path.join(logdir, 'syslog-unavailable')}) until a syslog daemon listens;"
        f" --log-details mailstats writes {os.path.join(logdir, 'mailstats.csv')} instead"
    )
