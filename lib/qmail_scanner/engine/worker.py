"""One pre-forked worker: take a connection, receive the caller's fds, run the per-message function, answer.

During a message the worker's fds 0, 1, 2 and the custom-error fd are the caller's (qmail-smtpd's
pipes and log) and its environment is the caller's allow-listed one: the per-message function
runs exactly as in the standalone program. Afterwards every fd of the caller is closed before
the answer goes out, so qmail-smtpd sees EOF on the custom-error pipe when the wrapper exits.
"""

from __future__ import annotations

import os
import select
import signal
import socket

from ..settings import Settings
from ..stderr_log import say
from . import wire

# A client gets this long to say hello and hand its fds over; the message itself has the deadline.
HANDSHAKE_SECONDS = 10.0
ANSWER_SECONDS = 10.0
BUSY, DONE, IDLE = b"B", b"D", b"I"  # took a connection; answered a message; dropped it


class Worker:
    """A worker's fds and counters; run() never returns (the process exits)."""

    def __init__(
        self, settings: Settings, listener: socket.socket, control_fd: int, events_fd: int, engine_log_fd: int
    ) -> None:
        self.settings = settings
        self.listener = listener
        self.control_fd = control_fd  # EOF here: finish the current message, then exit
        self.events_fd = events_fd  # BUSY / DONE bytes for the master
        self.engine_log_fd = engine_log_fd  # the engine's own stderr, restored after each message
        self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.served = 0

    def run(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # the master stops us through the control pipe
        # Nothing blocked (the master forks us with a clean mask; this does not depend on it): a
        # blocked SIGALRM would take the message's deadline away.
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        if any(config.name == "clamd" for config in self.settings.scanners):
            from ..scanners import clamd

            clamd.keep_sessions()  # one IDSESSION connection per clamd, kept across messages
        poller = select.epoll()
        # EXCLUSIVE: a connection wakes one idle worker, not all of them.
        poller.register(self.listener.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
        poller.register(self.control_fd, select.EPOLLIN)
        limit = self.settings.engine_max_messages
        while not limit or self.served < limit:
            events = poller.poll()
            if any(fd == self.control_fd for fd, _ in events):
                break
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                continue
            self.serve(conn)
        os._exit(0)

    def tell_master(self, event: bytes) -> None:
        try:
            os.write(self.events_fd, event)
        except OSError:
            pass  # a master that re-executed itself no longer reads us: we are retiring anyway

    def serve(self, conn: socket.socket) -> None:
        """One connection: handshake, message, answer. Never raises."""
        self.tell_master(BUSY)
        outcome = IDLE
        try:
            conn.settimeout(HANDSHAKE_SECONDS)
            uid = wire.peer_uid(conn)
            if uid != os.geteuid():
                say(
                    f"engine: refused a client running as uid {uid} (only the wrapper, uid {os.geteuid()}, may connect)"
                )
                return
            _caller_uid, mask, environ = wire.read_hello(conn)
            conn.sendall(wire.READY)
            fds = wire.receive_fds(conn, mask)
            cleanup: list = []
            try:
                code = self.run_message(fds, mask, environ, cleanup)
                self.served += 1
                outcome = DONE
                conn.settimeout(ANSWER_SECONDS)
                wire.answer(conn, code)
            finally:
                for step in cleanup:  # the work files go once the client has its answer
                    step()
        except wire.ClientGone:
            pass  # the client gave up waiting and ran the standalone program
        except (wire.BadClient, OSError) as problem:
            say(f"engine: connection dropped: {problem}")
        finally:
            conn.close()
            self.tell_master(outcome)

    def run_message(self, fds: list[int], mask: int, environ: dict[str, str], cleanup: list) -> int:
        """Put the caller's fds and environment in place, run the per-message function, take them away."""
        from ..pipeline import process_message

        settings = self.settings
        targets: list[int | None] = [0, 1, 2]
        if mask & wire.FD_CUSTOM_ERROR:
            # With custom errors off (0) the caller's pipe is only closed below, never used.
            targets.append(settings.custom_error_fd if settings.custom_error_fd > 2 else None)
        own_environ = dict(os.environ)
        try:
            for fd, target in zip(fds, targets):
                if target is not None:
                    os.dup2(fd, target)
            os.environ.clear()
            os.environ.update(environ)
            return process_message(settings, environ, cleanup)
        finally:
            for fd in fds:
                os.close(fd)
            # The caller's pipes close here: qmail-smtpd sees EOF on the custom-error fd.
            os.dup2(self.devnull, 0)
            os.dup2(self.devnull, 1)
            if settings.custom_error_fd > 2:
                os.dup2(self.devnull, settings.custom_error_fd)
            os.dup2(self.engine_log_fd, 2)
            os.environ.clear()
            os.environ.update(own_environ)
