"""The entry point the generated program calls: serve, an administrator command, or one message."""

from __future__ import annotations

import os
import sys

from .settings import Settings


def main(frozen: dict, argv: list[str] | None = None) -> int:
    """Choose what this run does from its arguments; return the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    settings = Settings.from_mapping(frozen)
    if argv == ["--serve"]:
        from .engine.master import serve

        return serve(settings, os.path.abspath(sys.argv[0]))
    if argv:
        from .admin_commands import run_command

        return run_command(settings, argv)
    from .pipeline import process_message

    return process_message(settings, dict(os.environ))
