"""The spam scanners of a message on a thread of their own, started while the antivirus runs.

The spam verdict is used only when nothing blocked the message, exactly as when the scanners
run one after the other; it is always waited for, so no scan outlives its message (its work
files and fds are gone after it).
"""

from __future__ import annotations

import threading

from .records import ScanResult

TYPE_CHECKING = False  # typing costs milliseconds per message; only type checkers look here
if TYPE_CHECKING:
    from .message import Message


class BackgroundScan:
    """run_spam_scanners(message) on a thread; results() waits, staying responsive to the deadline signal."""

    def __init__(self, message: Message) -> None:
        from .scanners import run_spam_scanners

        self.message = message
        self.outcome: list[ScanResult] | None = None
        self.error: BaseException | None = None

        def work() -> None:
            try:
                self.outcome = run_spam_scanners(message)
            except BaseException as error:  # re-raised in the message's own thread
                self.error = error

        self.thread = threading.Thread(target=work, name="spam-scan", daemon=True)
        self.thread.start()

    def results(self) -> list[ScanResult]:
        """Wait for the spam scanners; their results (empty when they raised: see raise_failure)."""
        while self.thread.is_alive():
            # Join in slices: the deadline alarm is delivered to this (the main) thread only.
            self.thread.join(min(0.5, max(0.01, self.message.remaining())))
        return self.outcome or []

    def raise_failure(self) -> None:
        """Raise what the spam scanners raised, when their answer counts."""
        if self.error is not None:
            raise self.error

    def finish(self, seconds: float = 5.0) -> None:
        """Wait a bounded time for the thread after the message failed (its deadline has passed by then)."""
        self.thread.join(seconds)
