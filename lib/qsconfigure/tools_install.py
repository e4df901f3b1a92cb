"""--install for the administrator's tools and manual: qs-quarantine and qs-report beside the program, man pages.

The installed tools run with the program's own interpreter (read from its #! line, so they can
never disagree) and carry this installation's paths in their INSTALLED line: `qs-quarantine list`
needs neither arguments nor the source tree. They are root's, 0755: the scanner account cannot
change what root runs. The pages go to <prefix>/share/man/man8 (/usr/local/share/man/man8 for a
system install, which man(1) searches on Debian).
"""

from __future__ import annotations

import json
import os
import subprocess
import time

from .man_pages import render_pages
from .probes import ConfigureError

HERE = os.path.dirname(os.path.abspath(__file__))
CONTRIB = os.path.join(os.path.dirname(os.path.dirname(HERE)), "contrib")
# The interpreter flags of each tool. qs-quarantine needs only the standard library: -I -S, as the
# program. qs-report draws charts with matplotlib when it is there, and Debian's python3-matplotlib
# is in /usr/lib/python3/dist-packages, which only the site module adds: -I alone still ignores
# PYTHON* variables, the user's site directory and the current directory.
TOOLS = {"qs-quarantine": "-IS", "qs-report": "-I"}
INSTALLED_LINE = "INSTALLED: dict[str, str] = {}"
MAN_SECTION = "8"  # administrator commands (Debian: the program, configure and the tools alike)
SYSTEM_MANDIR = "/usr/local/share/man"


def frozen_interpreter(program: str) -> str:
    """The interpreter on the installed program's #! line."""
    with open(program, encoding="utf-8") as handle:
        first = handle.readline()
    if not first.startswith("#!") or not first[2:].split():
        raise ConfigureError(f"{program} has no #! line", "re-run configure.py")
    return first[2:].split()[0]


def installed_paths(settings: dict, program: str) -> dict[str, str]:
    """What the tools need to find this installation without arguments (as the program has it)."""
    spooldir = settings["spooldir"]
    return {
        "spooldir": spooldir,
        "logdir": settings.get("logdir") or spooldir,
        "etcdir": settings.get("etcdir") or spooldir,
        "qmail_queue_binary": settings["qmail_queue_binary"],
        "program": program,
        "version": settings.get("version", ""),
    }


def render_tool(source: str, interpreter: str, flags: str, paths: dict[str, str]) -> str:
    """The tool's text with the frozen interpreter on its #! line and the installation's paths."""
    lines = source.splitlines(keepends=True)
    if not lines or not lines[0].startswith("#!"):
        raise ConfigureError("an admin tool in contrib/ has no #! line", "is the source tree intact?")
    marked = [i for i, line in enumerate(lines) if line.rstrip("\n") == INSTALLED_LINE]
    if len(marked) != 1:
        raise ConfigureError(f"an admin tool in contrib/ has {len(marked)} lines {INSTALLED_LINE!r}, not one",
                             "is the source tree intact?")
    lines[0] = f"#!{interpreter} {flags}\n"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    frozen = json.dumps(paths, sort_keys=True)
    lines[marked[0]] = f"INSTALLED: dict[str, str] = {frozen}  # frozen by configure --install {stamp}\n"
    return "".join(lines)


def tool_files(directory: str, interpreter: str, paths: dict[str, str]) -> list[tuple[str, bytes, int]]:
    """(target, content, mode) of every tool, to go into directory (the program's)."""
    files = []
    for name, flags in TOOLS.items():
        with open(os.path.join(CONTRIB, name), encoding="utf-8") as handle:
            text = render_tool(handle.read(), interpreter, flags, paths)
        files.append((os.path.join(directory, name), text.encode("utf-8"), 0o755))
    return files


def page_files(man_directory: str, version: str) -> list[tuple[str, bytes, int]]:
    """(target, content, mode) of every man page, to go into man_directory (…/man8)."""
    pages = render_pages(version)
    return [(os.path.join(man_directory, name), text.encode("utf-8"), 0o644) for name, text in pages.items()]


def check_tools(tools: list[str]) -> None:
    """Each installed tool starts (--help) by its installed path, with no PATH of the caller's."""
    for tool in tools:
        completed = subprocess.run(
            [tool, "--help"], capture_output=True, text=True, check=False, cwd="/", env={"PATH": "/usr/bin:/bin"}
        )
        if completed.returncode != 0:
            reason = (completed.stderr.strip().splitlines() or ["no output"])[-1]
            raise ConfigureError(f"the installed {tool} does not start: {reason}", "is the frozen interpreter intact?")


def matplotlib_version(interpreter: str) -> str:
    """matplotlib's version as the tools' interpreter finds it under -I, or "" (qs-report then draws tables)."""
    completed = subprocess.run(
        [interpreter, "-I", "-c", "import matplotlib; print(matplotlib.__version__)"],
        capture_output=True, text=True, check=False, cwd="/", env={"PATH": "/usr/bin:/bin"}, timeout=60,
    )
    return completed.stdout.strip() if completed.returncode == 0 else ""


def mandir(args) -> str:
    """Where the pages go: under --prefix, else /usr/local/share/man (under --destdir when staging)."""
    return os.path.join(os.path.abspath(args.prefix), "share", "man") if args.prefix else SYSTEM_MANDIR


def install_tools_and_pages(
    installer, args, settings: dict, program: str, final_program: str, stage
) -> list[str]:
    """The hook install.py calls: tools beside the program, pages under the man directory. Returns every path.

    stage is the install transaction's stage_file(target, content, mode) -> staged path: the
    files are built there, checked there, and swapped in with everything else.
    """
    put = stage

    def put_page(target: str, content: bytes, mode: int) -> str:
        return stage(target, content, mode, keep_backup=False)
    interpreter = frozen_interpreter(program)
    paths = installed_paths(settings, final_program or program)
    man_directory = installer.directory(os.path.join(mandir(args), f"man{MAN_SECTION}"), 0o755, owned=False)
    # Beside the installed program (its bindir, under --destdir), also when `program` is a staged copy.
    tools = [put(*entry) for entry in tool_files(installer.path(args.bindir), interpreter, paths)]
    pages = [put_page(*entry) for entry in page_files(man_directory, settings.get("version", ""))]
    check_tools(tools)
    charts = matplotlib_version(interpreter)
    print(f"installed {', '.join(TOOLS)} beside the program (interpreter {interpreter}) and {len(pages)} man pages")
    print(f"in {man_directory}")
    if charts:
        print(f"qs-report draws charts with matplotlib {charts}")
    else:
        print(f"qs-report: {interpreter} has no matplotlib: the page shows tables (apt-get install python3-matplotlib)")
    return tools + pages
