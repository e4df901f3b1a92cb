"""One source for options: the README's tables, `configure.py --help` and the program's -h say the same.

The help comes from lib/qsconfigure/options.py; the README is written by hand, so every option,
its argument word and its default are compared here, from the real `--help` output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from harness import CONFIGURE, ROOT, install
from qsconfigure import scanner_probes
from qsconfigure.options import build_parser, inverted_yes_no, shown_defaults
from test_configure_compat import frozen_settings

README = (ROOT / "README.md").read_text(encoding="utf-8")
ORIGINAL_GROUP = "options of the original"
FLOAT_SHOWN = re.compile(r"(?<![\d.])\d+\.0(?![\d.])")  # 1200.0, not 127.0.0.1


def section(title: str) -> str:
    """The README text under a `## title` heading, up to the next one of that level."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else len(README)]


def table_rows(text: str, header: str) -> list[list[str]]:
    """The cells of the Markdown table that starts with `header`, `\\|` read as `|`."""
    lines = text[text.index(header) :].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line)[1:-1]
        rows.append([cell.strip().replace("\\|", "|") for cell in cells])
    return rows


def readme_options(rows: list[list[str]]) -> dict[str, tuple[str, list[str]]]:
    """option -> (argument word as the README writes it, the rest of its cells)."""
    found = {}
    for row in rows:
        for span in re.findall(r"`(--[^`]+)`", row[0]):
            name, _, word = span.partition(" ")
            found[name] = (word, row[1:])
    return found


def help_entries() -> dict[str, tuple[str, str]]:
    """option -> (argument word, help text) from the real `configure.py --help`, one entry per option."""
    environment = {**os.environ, "COLUMNS": "400"}
    result = subprocess.run(
        [sys.executable, str(CONFIGURE), "--help"], capture_output=True, text=True, check=True, env=environment
    )
    entries: dict[str, tuple[str, str]] = {}
    current: list[str] = []
    for line in [*result.stdout.splitlines(), ""]:
        if line.startswith("  -") or not line.startswith("    "):
            if current:
                invocation, *first = re.split(r"\s{2,}", current[0].strip(), maxsplit=1)
                text = first[0] if first else ""
                words = " ".join([text, *(part.strip() for part in current[1:])]).strip()
                for name_and_word in invocation.split(", "):
                    name, _, word = name_and_word.partition(" ")
                    if name.startswith("--") and name != "--help":
                        entries[name] = (word, words)
            current = [line] if line.startswith("  -") else []
        elif current:
            current.append(line)
    return entries


def shown_in_help(text: str) -> str:
    match = re.search(r"\(default (.*)\)$", text)
    return match.group(1) if match else ""


def readable(word: str) -> str:
    """argparse's `{a,b}` and `[yes|no]` as the README writes them: `a|b`, and nothing for yes/no."""
    word = word.strip("[]")
    if word.startswith("{"):
        word = word.strip("{}").replace(",", "|")
    return "" if word == "yes|no" else word


@pytest.fixture(scope="module")
def helped() -> dict[str, tuple[str, str]]:
    return help_entries()


@pytest.fixture(scope="module")
def documented() -> tuple[dict, dict]:
    main = readme_options(table_rows(section("configure.py options"), "| option | default | meaning |"))
    original = readme_options(table_rows(section("Migrating from Qmail-Scanner"), "| original option | here |"))
    return main, original


def original_options() -> set[str]:
    parser = build_parser()
    group = next(g for g in parser._action_groups if g.title.startswith(ORIGINAL_GROUP))
    return {name for action in group._group_actions for name in action.option_strings}


def test_every_option_in_help_is_in_the_readme_and_back(helped, documented):
    main, original = documented
    assert len(helped) > 80  # the parse found the options, not a handful
    missing = set(helped) - set(main) - set(original)
    assert not missing, f"in --help, not in the README: {sorted(missing)}"
    unknown = (set(main) | set(original)) - set(helped)
    assert not unknown, f"in the README, not in --help: {sorted(unknown)}"
    own = set(helped) - original_options()
    assert own <= set(main), f"options of this program missing from the options table: {sorted(own - set(main))}"


def test_defaults_and_argument_words_agree(helped, documented):
    main, _ = documented
    for name, (word, cells) in main.items():
        help_word, text = helped[name]
        assert cells[0] == shown_in_help(text), f"{name}: README says {cells[0]!r}, --help {shown_in_help(text)!r}"
        assert word == readable(help_word), f"{name}: README writes {word!r}, --help {help_word!r}"


def test_help_prints_defaults_as_written_never_as_floats(helped):
    for name, (_word, text) in helped.items():
        assert not FLOAT_SHOWN.search(shown_in_help(text)), f"{name}: {text}"
    assert shown_in_help(helped["--deadline"][1]) == "1200"


def test_shown_defaults_are_the_parsers_defaults():
    parser = build_parser()
    shown = shown_defaults(parser)
    for action in parser._actions:
        name = action.option_strings[-1]
        text, value = shown.get(name, ""), action.default
        if not text or value in (None, "", []):
            continue
        first = text.split(";")[0].split(" ")[0]
        if isinstance(value, bool):
            value = not value if action.type is inverted_yes_no else value  # --no-QQ-check stores qq_check
            assert first == ("yes" if value else "no"), name
        elif isinstance(value, (int, float)):
            assert float(first) == value, name
        elif isinstance(value, list):
            assert first == ",".join(value), name
        else:
            assert text.split(";")[0].removeprefix("./") == value, name


def test_scanner_server_defaults_are_what_the_probes_try(helped):
    spamd = shown_in_help(helped["--spamd-servers"][1])
    assert all(address in spamd for address in scanner_probes.SPAMD_DEFAULT_ADDRESSES), spamd
    assert shown_in_help(helped["--rspamd-servers"][1]) == ", ".join(scanner_probes.RSPAMD_DEFAULT_ADDRESSES)
    assert "clamd.conf" in shown_in_help(helped["--clamd-servers"][1])
    assert f"default `{scanner_probes.RSPAMD_DEFAULT_ADDRESSES[0]}`" in section("Antivirus and spam scanners")
    assert scanner_probes.CLAMD_CONF_PATHS[0] in section("Antivirus and spam scanners")


def test_qq_check_and_its_old_spelling_freeze_the_same_program(tmp_path):
    """--qq-check no is --no-QQ-check (alone or yes); --qq-check yes and --no-QQ-check no both require the next hop."""
    absent = tmp_path / "absent" / "qmail-queue"

    def run(*words: str) -> tuple[subprocess.CompletedProcess, dict | None]:
        output = tmp_path / f"p{len(list(tmp_path.glob('p*.py')))}.py"
        argv = [sys.executable, str(CONFIGURE), "--qmail-queue-binary", str(absent), "--scanners", "none"]
        result = subprocess.run(
            [*argv, "--notify", "none", "--output", str(output), *words], capture_output=True, text=True, check=False
        )
        return result, frozen_settings(output) if result.returncode == 0 else None

    frozen = []
    for words in (["--qq-check", "no"], ["--no-QQ-check"], ["--no-QQ-check", "yes"], ["--no-QQ-check", "1"]):
        result, settings = run(*words)
        assert result.returncode == 0, (words, result.stderr)
        frozen.append({k: v for k, v in settings.items() if k != "configure_command"})
    assert all(settings == frozen[0] for settings in frozen)
    refusals = [run(*words)[0] for words in ([], ["--qq-check", "yes"], ["--no-QQ-check", "no"], ["--qq-check"])]
    assert all(r.returncode == 1 for r in refusals)
    assert len({r.stderr for r in refusals}) == 1
    assert f"{absent} is not an executable file" in refusals[0].stderr and "--qq-check no" in refusals[0].stderr


def test_the_programs_flags_are_the_readmes(tmp_path, standin):
    installed = install(tmp_path / "qs", standin)
    result = subprocess.run([str(installed.program), "-h"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    flags = {match for match in re.findall(r"^  (-{1,2}[a-z-]+)", result.stdout, re.MULTILINE)}
    in_usage = set(re.findall(r"(?<![\w-])(-{1,2}[a-z-]+)", result.stdout.splitlines()[0]))
    rows = table_rows(section("Operation"), "| flag | does |")
    documented = {re.search(r"`(-{1,2}[a-z-]+)", row[0]).group(1) for row in rows}
    assert len(flags) >= 7
    assert flags == documented == in_usage, (flags, documented, in_usage)
