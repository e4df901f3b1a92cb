"""`--serve`: the master. It owns the socket, keeps the pool of workers full, kills a worker past its deadline,
reloads on SIGHUP and stops cleanly on SIGTERM.

It runs in the foreground for a supervisor (daemontools, runit, systemd). Started as root it
becomes the scanner account before it creates anything; the socket is created by that account
with mode 0600, so only the wrapper (which runs as the account) can connect.

Reload (SIGHUP, and `configure --install`): the running workers are told to finish their message
and exit; the master checks that the newly installed program starts, then re-executes it,
keeping the listening socket and the lock, so new workers run the new settings, policy and code
while no connection is refused.
"""

from __future__ import annotations

import fcntl
import gc
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from ..settings import Settings
from ..stderr_log import say
from . import status
from .worker import BUSY, DONE, IDLE, Worker

# A worker still busy this long after its message's deadline is killed (its own alarm failed).
KILL_GRACE_SECONDS = 10.0
STATUS_EVERY_SECONDS = 1.0
BACKLOG = 128
# More unexpected worker deaths than this within RESPAWN_WINDOW slows respawning to one a second.
RESPAWN_BURST = 10
RESPAWN_WINDOW = 10.0
# Re-executing passes the socket, the lock, the retiring workers (with their event pipes) and the
# counters in this variable.
INHERIT_VARIABLE = "QS_ENGINE_INHERITED"
# Held blocked until run() has its handlers: a stop or reload sent while the engine starts (or
# re-executes itself, which resets handlers but keeps the mask) waits instead of killing it.
CONTROL_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


@dataclass
class Slot:
    """One worker as the master sees it."""

    pid: int
    control_fd: int  # closing it tells the worker to finish and exit
    events_fd: int  # BUSY / DONE bytes from the worker
    busy_since: float | None = None  # time.monotonic() of this master
    killed: bool = False
    retired: bool = False  # told to finish and exit (reload or stop): its exit is no restart
    retired_since: float | None = None  # an idle retired worker still alive this long after is stuck


def default_workers() -> int:
    """Workers mostly wait on clamd and spamd: four per core, at least four."""
    return max(4, min(64, 4 * (os.cpu_count() or 1)))


def serve(settings: Settings, program: str) -> int:
    """Run the engine until SIGTERM; return the exit code for the supervisor."""
    # SETMASK, not BLOCK: whatever else the supervisor blocked (SIGALRM: the workers' deadline) is cleared.
    signal.pthread_sigmask(signal.SIG_SETMASK, CONTROL_SIGNALS)
    inherited = _inherited()
    if inherited is None:
        problem = _become_scanner_account(settings)
        if problem:
            say(f"engine: {problem}")
            return 111
    os.umask(0o077)
    _reserve_low_fds(settings.custom_error_fd)
    try:
        if inherited is None:
            lock_fd = _take_lock(settings.spooldir)
            listener = _listen(settings.spooldir)
        else:
            lock_fd = inherited["lock_fd"]
            listener = socket.socket(fileno=inherited["listen_fd"])
            os.set_inheritable(lock_fd, False)
            listener.set_inheritable(False)
    except OSError as error:
        say(f"engine: cannot start: {error}")
        return 111
    _preload(settings)
    master = Master(settings, program, listener, lock_fd, inherited or {})
    return master.run()


def _inherited() -> dict | None:
    text = os.environ.pop(INHERIT_VARIABLE, "")
    if not text:
        return None
    try:
        values = json.loads(text)
        return values if isinstance(values, dict) else None
    except ValueError:
        return None


def _slot_state(slot: Slot, now: float) -> dict:
    """A worker as the re-executed master needs it: durations, not times.

    The new master rebases them on its own monotonic clock. (CLOCK_MONOTONIC is system-wide and
    survives exec, so the times themselves would do; durations do not depend on that.)
    """

    def age(since: float | None) -> float | None:
        return None if since is None else max(0.0, now - since)

    return {
        "events_fd": slot.events_fd,
        "busy_for": age(slot.busy_since),
        "retired_for": age(slot.retired_since),
        "killed": slot.killed,
    }


def _inherited_slots(passed: dict, now: float) -> dict[int, Slot]:
    """The retiring workers a master before the reload passed on, on this master's clock."""
    slots = {}
    for key, values in passed.items():
        slot = Slot(int(key), -1, -1, retired=True, retired_since=now)
        if isinstance(values, dict):
            slot.events_fd = int(values["events_fd"])
            os.set_inheritable(slot.events_fd, False)
            slot.killed = bool(values.get("killed"))
            slot.retired_since = now - float(values.get("retired_for") or 0.0)
            busy_for = values.get("busy_for")
        else:
            # A master from before this format (a reload is how an upgrade starts): it passed
            # busy_since - now, minus the time busy, and no event pipe.
            busy_for = None if values is None else -float(values)
        if busy_for is not None:
            slot.busy_since = now - float(busy_for)
        slots[slot.pid] = slot
    return slots


def _become_scanner_account(settings: Settings) -> str:
    """As root, switch to the scanner account for good; as anyone else, stay. Returns a problem or ""."""
    if os.geteuid() != 0:
        return ""
    import grp
    import pwd

    try:
        uid = pwd.getpwnam(settings.qs_user).pw_uid
        gid = grp.getgrnam(settings.qs_group).gr_gid
    except KeyError:
        return f"the scanner account {settings.qs_user}:{settings.qs_group} does not exist"
    if uid == 0:
        return ""  # a --prefix install made by root for root
    os.setgroups([gid])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    return ""


def _reserve_low_fds(custom_error_fd: int) -> None:
    """/dev/null on 0, 1 and every free fd up to the custom-error fd: workers put the caller's fds there.

    Then no socket, pipe or file of the engine ever takes one of those numbers.
    """
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    reserved = [0, 1, *(fd for fd in range(2, custom_error_fd + 1) if fd == null or not _is_open(fd))]
    for fd in reserved:
        if fd != null:
            os.dup2(null, fd, inheritable=False)
    if null not in reserved:
        os.close(null)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _take_lock(spooldir: str) -> int:
    """One engine per spool: a second one refuses to start instead of stealing the socket."""
    fd = os.open(os.path.join(spooldir, status.LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OSError(f"another engine runs on {spooldir} (it holds {status.LOCK_NAME})") from None
    return fd


def _listen(spooldir: str) -> socket.socket:
    """Bind under a temporary name, then rename onto engine.sock: there is never a moment without a socket."""
    path = status.socket_path(spooldir)
    temporary = f"{path}.{os.getpid()}"
    try:
        os.unlink(temporary)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(temporary)  # umask 077: mode 0600, owned by the scanner account
    os.chmod(temporary, 0o600)
    listener.listen(BACKLOG)
    listener.setblocking(False)
    os.rename(temporary, path)
    return listener


def _preload(settings: Settings) -> None:
    """Import everything a message may need once, before forking: workers start warm and share the pages."""
    from .. import (  # noqa: F401
        actions,
        domain_settings,
        formatcheck,
        inspection,
        logs,
        notify,
        pipeline,
        policy,
        spam_policy,
        trace,
        verdict,
    )
    from ..scanners import scanner_module
    from ..unpack import archives, content, magictype, reformime, walker, ziplisting  # noqa: F401

    for config in settings.scanners:
        try:
            scanner_module(config.name)
        except Exception as error:  # the message will report it as a scanner failure
            say(f"engine: scanner {config.name}: {error}")
    if settings.have_python_magic:
        magictype.detect(b"\x00\x01preload", settings)  # loads libmagic's database once
    gc.collect()
    gc.freeze()  # the preloaded objects stay in pages the workers share


class Master:
    """The pool, the signals and the counters."""

    def __init__(self, settings: Settings, program: str, listener: socket.socket, lock_fd: int, inherited: dict):
        self.settings = settings
        self.program = program
        self.listener = listener
        self.lock_fd = lock_fd
        self.size = settings.engine_workers or default_workers()
        self.slots: dict[int, Slot] = {}
        now = time.monotonic()
        # Workers of the generations before a reload: they finish their message; we still read their
        # events (served, busy) and enforce the deadline.
        self.retiring: dict[int, Slot] = _inherited_slots(inherited.get("retiring", {}), now)
        self.counters = {
            name: int(inherited.get("counters", {}).get(name, 0))
            for name in ("served", "restarts", "killed", "recycled", "reloads")
        }
        self.started = float(inherited.get("started", time.time()))
        self.deaths: list[float] = [now - float(age) for age in inherited.get("death_ages", [])]
        self.stopping = False
        self.reload_wanted = False
        self.last_status: tuple = ()
        self.last_status_time = 0.0
        self.engine_log_fd = os.dup(2)
        self.wake_read, self.wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # ------------------------------------------------------------ main loop

    def run(self) -> int:
        signal.set_wakeup_fd(self.wake_write)
        signal.signal(signal.SIGHUP, self._on_reload)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes the poll through the wakeup fd
        signal.pthread_sigmask(signal.SIG_UNBLOCK, CONTROL_SIGNALS)  # what came while starting runs now
        say(f"engine: serving {status.socket_path(self.settings.spooldir)} with {self.size} workers")
        while True:
            if not self.stopping:
                self._fill_pool()
            self._wait_for_events()
            self._reap()
            self._enforce_deadlines()
            if self.reload_wanted and not self.stopping:
                self.reload_wanted = False
                self._reload()
            if self.stopping:
                self._stop_accepting()
                if not self.slots and not self.retiring:
                    self._write_status("stopped", force=True)
                    say("engine: stopped")
                    return 0
            self._write_status("running")

    def _on_reload(self, signum: int, frame: object) -> None:
        self.reload_wanted = True

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _wait_for_events(self) -> None:
        poller = select.poll()
        poller.register(self.wake_read, select.POLLIN)
        by_fd = {}
        for slot in (*self.slots.values(), *self.retiring.values()):
            if slot.events_fd >= 0:
                poller.register(slot.events_fd, select.POLLIN)
                by_fd[slot.events_fd] = slot
        for fd, _ in poller.poll(STATUS_EVERY_SECONDS * 1000):
            if fd == self.wake_read:
                try:
                    while os.read(self.wake_read, 512):
                        pass
                except BlockingIOError:
                    pass
                continue
            self._take_events(by_fd[fd])

    # ------------------------------------------------------------ the pool

    def _fill_pool(self) -> None:
        now = time.monotonic()
        self.deaths = [t for t in self.deaths if now - t < RESPAWN_WINDOW]
        missing = self.size - len(self.slots)
        if missing > 0 and len(self.deaths) > RESPAWN_BURST:
            missing = 1  # workers keep dying: one a second until they stop
            if self.deaths and now - self.deaths[-1] < 1.0:
                return
        for _ in range(missing):
            self._spawn()

    def _spawn(self) -> None:
        control_read, control_write = os.pipe2(os.O_CLOEXEC)
        events_read, events_write = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            try:
                signal.set_wakeup_fd(-1)
                for signum in (signal.SIGCHLD,):
                    signal.signal(signum, signal.SIG_DFL)
                for fd in (control_write, events_read, self.wake_read, self.wake_write, self.lock_fd):
                    os.close(fd)
                for slot in self.slots.values():
                    os.close(slot.control_fd)
                    os.close(slot.events_fd)
                for slot in self.retiring.values():
                    if slot.events_fd >= 0:
                        os.close(slot.events_fd)
                Worker(self.settings, self.listener, control_read, events_write, self.engine_log_fd).run()
            finally:
                os._exit(70)
        os.close(control_read)
        os.close(events_write)
        os.set_blocking(events_read, False)
        self.slots[pid] = Slot(pid, control_write, events_read)

    def _reap(self) -> None:
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(wait_status)
            retired = self.retiring.pop(pid, None)
            if retired is not None:
                if retired.events_fd >= 0:
                    self._take_events(retired)  # its last DONE counts as served
                    os.close(retired.events_fd)
                if code != 0 or retired.busy_since is not None:
                    self._say_death(retired, code)
                continue
            slot = self.slots.pop(pid, None)
            if slot is None:
                continue  # not a worker (none of ours is unknown: reloads pass every one on)
            self._take_events(slot)  # a DONE written just before the worker exited
            os.close(slot.control_fd)
            os.close(slot.events_fd)
            if code == 0 and slot.busy_since is None:
                self.counters["recycled"] += not slot.retired
                continue
            self.counters["restarts"] += 1
            self.deaths.append(time.monotonic())
            self._say_death(slot, code)

    @staticmethod
    def _say_death(slot: Slot, code: int) -> None:
        how = f"killed by signal {-code}" if code < 0 else f"exited {code}"
        during = " during a message (the client temp-failed)" if slot.busy_since is not None else ""
        which = "retired worker" if slot.retired else "worker"
        say(f"engine: {which} {slot.pid} {how}{during}")

    def _take_events(self, slot: Slot) -> None:
        """Read what a worker reported (BUSY, DONE, IDLE bytes) and update its state and the counters."""
        try:
            events = os.read(slot.events_fd, 512)
        except OSError:
            return
        for event in events:
            if event == BUSY[0]:
                slot.busy_since = time.monotonic()
            elif event in (DONE[0], IDLE[0]):
                slot.busy_since = None
                self.counters["served"] += event == DONE[0]

    def _enforce_deadlines(self) -> None:
        """Kill a worker busy past the deadline (its own alarm failed), or retired but not gone as long."""
        limit = self.settings.deadline_seconds + KILL_GRACE_SECONDS
        now = time.monotonic()
        for slot in (*self.slots.values(), *self.retiring.values()):
            if slot.killed:
                continue
            if slot.busy_since is not None and now - slot.busy_since > limit:
                doing = f"still busy {now - slot.busy_since:.0f} s after taking a message"
            elif slot.busy_since is None and slot.retired_since is not None and now - slot.retired_since > limit:
                doing = f"still there {now - slot.retired_since:.0f} s after being told to exit"
            else:
                continue
            which = "retired worker" if slot.retired else "worker"
            say(f"engine: {which} {slot.pid} {doing}: killed")
            self._kill(slot.pid)
            slot.killed = True
            self.counters["killed"] += 1

    @staticmethod
    def _kill(pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    # ------------------------------------------------------------ reload and stop

    def _retire_all(self) -> None:
        """Tell every worker to finish its message and exit."""
        now = time.monotonic()
        for slot in self.slots.values():
            slot.retired = True
            slot.retired_since = now
            try:
                os.close(slot.control_fd)
            except OSError:
                pass
            slot.control_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)  # keeps the bookkeeping simple

    def _reload(self) -> None:
        """Check that the installed program starts, then re-execute it with the socket and the lock."""
        check = subprocess.run(
            [self.program, "-v"], stdin=subprocess.DEVNULL, capture_output=True, timeout=120, check=False
        )
        if check.returncode != 0:
            problem = check.stderr.decode(errors="replace").strip()[:500]
            say(f"engine: reload refused, {self.program} -v failed: {problem}")
            return
        signal.pthread_sigmask(signal.SIG_BLOCK, CONTROL_SIGNALS)  # from here the new program takes them, in run()
        if self._stop_delivered():
            signal.pthread_sigmask(signal.SIG_UNBLOCK, CONTROL_SIGNALS)
            return  # a stop that came during the check wins: re-executing would forget it
        say("engine: reloading: running workers finish their message, new ones start with the new settings")
        self._retire_all()
        now = time.monotonic()
        retiring = [*self.slots.values(), *self.retiring.values()]
        self.counters["reloads"] += 1
        state = {
            "listen_fd": self.listener.fileno(),
            "lock_fd": self.lock_fd,
            "retiring": {str(slot.pid): _slot_state(slot, now) for slot in retiring},
            "counters": self.counters,
            "started": self.started,
            "death_ages": [now - t for t in self.deaths],
        }
        # Their event pipes go along: the new master sees their DONE (served) and when they turn busy.
        passed = [self.listener.fileno(), self.lock_fd, *(slot.events_fd for slot in retiring if slot.events_fd >= 0)]
        for fd in passed:
            os.set_inheritable(fd, True)
        environment = dict(os.environ, **{INHERIT_VARIABLE: json.dumps(state)})
        sys.stderr.flush()
        try:
            os.execve(self.program, [self.program, "--serve"], environment)
        except OSError as error:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, CONTROL_SIGNALS)
            say(f"engine: reload failed, cannot run {self.program}: {error.strerror}; keeping the old settings")
            for fd in passed:
                os.set_inheritable(fd, False)

    def _stop_delivered(self) -> bool:
        """SIGTERM or SIGINT came, even if its Python handler has not run yet (the wakeup fd has its number)."""
        try:
            woken = os.read(self.wake_read, 512)
        except BlockingIOError:
            woken = b""
        self.stopping = self.stopping or signal.SIGTERM in woken or signal.SIGINT in woken
        return self.stopping

    def _stop_accepting(self) -> None:
        """Remove the socket (new clients run standalone) and let every worker finish."""
        if self.listener.fileno() < 0:
            return
        try:
            os.unlink(status.socket_path(self.settings.spooldir))  # the lock makes it ours
        except OSError:
            pass
        self.listener.close()
        self._retire_all()
        say(f"engine: stopping: {sum(s.busy_since is not None for s in self.slots.values())} message(s) in flight")

    def _write_status(self, state: str, force: bool = False) -> None:
        busy = sum(slot.busy_since is not None for slot in (*self.slots.values(), *self.retiring.values()))
        snapshot = (state, len(self.slots), busy, len(self.retiring), tuple(self.counters.values()))
        now = time.monotonic()
        if not force and snapshot == self.last_status and now - self.last_status_time < status.FRESH_SECONDS / 3:
            return
        if not force and now - self.last_status_time < STATUS_EVERY_SECONDS and snapshot[:2] == self.last_status[:2]:
            return
        values = {
            "state": state,
            "pid": os.getpid(),
            "started": self.started,
            "updated": time.time(),
            "workers": len(self.slots),
            "configured": self.size,
            "busy": busy,
            "retiring": len(self.retiring),
            **self.counters,
        }
        try:
            status.write_status(self.settings.spooldir, values)
        except OSError as error:
            say(f"engine: cannot write the status file: {error}")
        self.last_status = snapshot
        self.last_status_time = now
