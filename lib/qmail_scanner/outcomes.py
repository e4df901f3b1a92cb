"""Exit codes of the qmail-queue contract and the exceptions that carry them.

This is the one place where an outcome becomes an exit code and an SMTP text.
Anything else that wants to stop processing raises one of the exceptions below.
"""

from __future__ import annotations

# Exit codes, named by what qmail-smtpd answers (see qmail-queue(8)).
QUEUED = 0
PERM_ADDRESS_TOO_LONG = 11  # 554 envelope address too long for qq (#5.1.3)
PERM_REJECTED = 31  # 554 mail server permanently rejected message (#5.3.0)
TEMP_OUT_OF_MEMORY = 51  # 451 qq out of memory
TEMP_TIMEOUT = 52  # 451 qq timeout
TEMP_WRITE_ERROR = 53  # 451 qq write error or disk full
TEMP_READ_ERROR = 54  # 451 qq read error
TEMP_CONFIG = 55  # 451 qq unable to read configuration
TEMP_NETWORK = 56  # 451 qq trouble making network connection
TEMP_HOME_DIR = 61  # 451 qq trouble in home directory
TEMP_CREATE_FILES = 63  # 451 qq trouble creating files in queue
TEMP_REJECTED = 71  # 451 mail server temporarily rejected message (#4.3.0)
CUSTOM_ERROR_EXIT = 82  # text on the custom-error fd decides D (554) or Z (451)
TEMP_INTERNAL_BUG = 81  # 451 qq internal bug
TEMP_ENVELOPE_FORMAT = 91  # 451 qq internal bug (envelope format error)

# The custom-error fd takes at most this many bytes, including the D/Z prefix.
CUSTOM_ERROR_MAX_BYTES = 255


class Outcome(Exception):
    """Processing ends here with this exit code; `smtp_text` explains it to the sender.

    The sender learns what kind of problem it was, never our paths, addresses or programs:
    those go in `detail`, which only the log sees.
    """

    exit_code: int = TEMP_INTERNAL_BUG
    permanent: bool = False

    def __init__(self, smtp_text: str, exit_code: int | None = None, detail: str = "") -> None:
        super().__init__(smtp_text)
        self.smtp_text = smtp_text
        self.detail = detail or smtp_text
        if exit_code is not None:
            self.exit_code = exit_code


class TemporaryFailure(Outcome):
    """The sender must retry later (4xx): nothing was queued or stored."""

    exit_code = TEMP_REJECTED
    permanent = False


class PermanentReject(Outcome):
    """The message is refused for good (5xx) with a clear reason."""

    exit_code = PERM_REJECTED
    permanent = True


class EnvelopeError(Outcome):
    """The envelope on fd 1 broke qmail-queue's grammar; codes as qmail-queue gives them."""

    permanent = False


def custom_error_line(outcome: Outcome) -> bytes:
    """Render the one-line custom-error text (`D...` permanent, `Z...` temporary)."""
    prefix = "D" if outcome.permanent else "Z"
    text = " ".join(outcome.smtp_text.split())  # no CR/LF or runs of blanks
    line = (prefix + text).encode("utf-8", "replace")
    return line[:CUSTOM_ERROR_MAX_BYTES]
