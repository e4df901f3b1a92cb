"""The installed man pages render without a groff warning and document every option each program's --help lists."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import install

ROOT = Path(__file__).resolve().parent.parent
# Wide lines and no hyphenation: an option name is never split across two lines of the rendering.
GROFF = ["groff", "-man", "-Tutf8", "-ww", "-rLL=2000n", "-rHY=0", "-P-cbou"]
DASHES = str.maketrans({"\u2010": "-", "\u2011": "-", "\u2212": "-"})  # groff's hyphen and minus signs


@pytest.fixture(scope="module")
def installed(tmp_path_factory, standin):
    return install(tmp_path_factory.mktemp("man"), standin)


def page(installed, name: str) -> Path:
    return installed.prefix / "share" / "man" / "man8" / f"{name}.8"


def rendered(path: Path) -> str:
    completed = subprocess.run([*GROFF, str(path)], capture_output=True, text=True, check=False)
    assert completed.returncode == 0 and completed.stderr == "", f"{path.name}: {completed.stderr}"
    return completed.stdout.translate(DASHES)


def options_in_help(text: str) -> set[str]:
    """The option names argparse (or the program's usage) lists: those opening an indented line."""
    found = set()
    for line in text.splitlines():
        if re.match(r"\s+-", line):
            found.update(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", re.split(r"\s{2,}", line.strip())[0]))
    return found


def help_of(*argv: str) -> str:
    completed = subprocess.run(list(argv), capture_output=True, text=True, check=False, cwd="/")
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def tool_help(tool: Path) -> str:
    """qs-quarantine's help and every subcommand's; qs-report has no subcommands."""
    text = help_of(str(tool), "--help")
    commands = re.search(r"\{([a-z,]+)\}", text)
    for command in commands.group(1).split(",") if commands else ():
        text += help_of(str(tool), command, "--help")
    return text


def test_every_page_is_installed_and_renders_without_warnings(installed):
    names = sorted(path.name for path in page(installed, "x").parent.iterdir())
    assert names == ["qmail-scanner-configure.8", "qmail-scanner-queue.8", "qs-quarantine.8", "qs-report.8"]
    for name in names:
        text = rendered(page(installed, name[:-2]))
        assert "@VERSION@" not in text and "@OPTIONS@" not in text
        assert re.search(r"^NAME$", text, re.M) and re.search(r"^SEE ALSO$", text, re.M)


def test_man_reads_the_installed_pages(installed):
    """man(1) itself, as the administrator runs it on an installed page."""
    for name in ("qmail-scanner-queue", "qs-quarantine", "qs-report", "qmail-scanner-configure"):
        completed = subprocess.run(
            ["man", "--warnings", "-l", str(page(installed, name))], capture_output=True, text=True, check=False,
            env={"PATH": "/usr/bin:/bin", "MANWIDTH": "100", "MAN_KEEP_FORMATTING": "", "LANG": "C.UTF-8"},
        )
        assert completed.returncode == 0 and completed.stderr == "", completed.stderr
        assert "SYNOPSIS" in completed.stdout


@pytest.mark.parametrize(
    ("name", "argv"),
    [
        ("qmail-scanner-configure", lambda installed: [sys.executable, str(ROOT / "configure.py"), "--help"]),
        ("qmail-scanner-queue", lambda installed: [str(installed.program), "-h"]),
        ("qs-quarantine", None),
        ("qs-report", None),
    ],
)
def test_every_option_of_the_help_is_in_the_page(installed, name, argv):
    """A new option that nobody documented fails here."""
    text = tool_help(installed.prefix / "bin" / name) if argv is None else help_of(*argv(installed))
    options = options_in_help(text)
    assert len(options) >= 3, text  # the help was read, not an empty or changed layout
    page_text = rendered(page(installed, name))
    documented = {option for option in options if re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", page_text)}
    missing = sorted(options - documented)
    assert not missing, f"{name}.8 does not document {missing}"


def test_configure_page_follows_the_option_definitions(installed, tmp_path):
    """The OPTIONS section comes from options.py: an option added there appears in the page, with its help."""
    sys.path.insert(0, str(ROOT / "lib"))
    try:
        from qsconfigure import options
        from qsconfigure.man_pages import option_entries

        parser = options.build_parser()
        parser.add_argument("--zz-new-option", metavar="N", help="a fresh option (default %(default)s)", default=7)
        source = tmp_path / "page.8"
        source.write_text(".TH T 8\n.SH OPTIONS\n" + option_entries(parser))
    finally:
        sys.path.remove(str(ROOT / "lib"))
    text = " ".join(rendered(source).split())
    assert "--zz-new-option N a fresh option (default 7)" in text
    assert os.path.getsize(page(installed, "qmail-scanner-configure")) > 5000
