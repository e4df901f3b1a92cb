"""The manual pages as installed: man/*.8 with the version filled in, configure's options from options.py.

The OPTIONS section of qmail-scanner-configure(8) is generated from the same parser `--help`
prints, so the page cannot miss an option or show another default.
"""

from __future__ import annotations

import argparse
import os

from .options import build_parser

HERE = os.path.dirname(os.path.abspath(__file__))
MAN_SOURCE = os.path.join(os.path.dirname(os.path.dirname(HERE)), "man")
OPTIONS_MARK = "@OPTIONS@"
VERSION_MARK = "@VERSION@"


def roff_text(text: str) -> str:
    """Plain text as roff: backslashes and hyphens escaped, no line starting a request."""
    escaped = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + escaped if escaped.startswith((".", "'")) else escaped


def option_entries(parser: argparse.ArgumentParser) -> str:
    """Every option of the parser as .SS groups of .TP entries, help texts with their defaults expanded."""
    formatter = parser._get_formatter()
    lines: list[str] = []
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.option_strings and a.help != argparse.SUPPRESS]
        if not actions:
            continue
        lines.append(f".SS {roff_text(group.title or 'options')}")
        for action in actions:
            names = ", ".join(action.option_strings)
            arguments = ""
            if action.nargs != 0:
                arguments = formatter._format_args(action, formatter._get_default_metavar_for_optional(action))
            lines.append(".TP")
            words = [f"\\fB{roff_text(names)}\\fR"]
            if arguments:
                words.append(f"\\fI{roff_text(arguments)}\\fR")
            lines.append(" ".join(words))
            lines.append(roff_text(formatter._expand_help(action)) if action.help else "")
    return "\n".join(line for line in lines if line) + "\n"


def render_pages(version: str) -> dict[str, str]:
    """Installed file name -> page text, for every page in man/."""
    pages = {}
    for name in sorted(os.listdir(MAN_SOURCE)):
        if not name.endswith((".8", ".8.in")):
            continue
        with open(os.path.join(MAN_SOURCE, name), encoding="utf-8") as handle:
            text = handle.read().replace(VERSION_MARK, version)
        if name.endswith(".in"):
            name = name[: -len(".in")]
            text = text.replace(OPTIONS_MARK + "\n", option_entries(build_parser()))
        pages[name] = text
    return pages
