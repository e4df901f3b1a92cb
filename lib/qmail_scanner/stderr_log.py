"""The program's one way to complain: a line on stderr, which qmail-smtpd sends to its log."""

from __future__ import annotations

import os


def say(text: str) -> None:
    """One clear line on stderr, tagged with the program name and pid."""
    try:
        os.write(2, f"qmail-scanner[{os.getpid()}]: {text}\n".encode("utf-8", "replace"))
    except OSError:
        pass
