"""The loader: moves message records from the spool's records/ files into the database, exactly once each.

Protocol (shared with the mail path's writer): the writer appends one line per message to records/current.jsonl,
opening it by name each time. The loader renames current.jsonl to records/ready/<nanoseconds>-<pid>.jsonl (atomic; the
next writer creates a new current.jsonl), loads ready files oldest first in batches, one transaction per batch,
inserting a record only if its id is not there yet, and deletes a ready file only after all its rows are committed.
A kill at any point loses nothing (the file is still there) and doubles nothing (ids are unique). A line that is not
a version 1 record goes to records/rejected/<same name> with a log line, and loading goes on: the rejected lines of a
file are gathered in rejected/.<name>.partial and renamed to rejected/<name> just before the ready file is deleted,
so a kill between the two leaves rejected/<name> whole, and the next run, finding it, does not write them again.

The loader is also its host's agent for the console (remote_actions.py): between batches, and at least every
second when idle, it performs the actions a console on any host queued for this host's quarantine.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from django.db import DatabaseError, DataError, IntegrityError, connection, connections, transaction

from qsconsole import remote_actions, sender_lists
from qsconsole.actions import this_host
from qsconsole.console.models import Message, Recipient
from qsconsole.record_format import RecordError, Row, parse_line

RECORDS = "records"
CURRENT = "current.jsonl"
READY = "ready"
REJECTED = "rejected"
LOCK = "loader.lock"
BATCH = 1000
# A writer that opened current.jsonl just before the rename writes its line into the renamed file: a ready file is
# deleted only when it is this old and nothing was added since it was read to the end.
SETTLE_SECONDS = 2.0
POLL_SECONDS = 1.0
# How often queued actions for this host are looked for, whatever --poll says (a console waits for the answer).
AGENT_SECONDS = 0.5


class LoaderBusy(Exception):
    """Another loader holds records/loader.lock."""


@dataclass
class FileCounts:
    """What one ready file held."""

    loaded: int = 0
    present: int = 0
    rejected: int = 0


class Loader:
    """Loads one spool's records into the configured database."""

    def __init__(self, spooldir: Path, batch: int = BATCH, settle: float = SETTLE_SECONDS,
                 log: Callable[[str], None] | None = None) -> None:
        self.records = Path(spooldir) / RECORDS
        self.ready = self.records / READY
        self.rejected = self.records / REJECTED
        self.batch = batch
        self.settle = settle
        self.log = log or (lambda line: print(f"qs-console load: {line}", file=sys.stderr, flush=True))
        self.stopping = False
        self.lock_fd = -1
        self.host = ""
        self.next_agent_step = 0.0
        self.abandoned_checked = False

    def lock(self) -> None:
        """Take records/loader.lock for the life of the process: one loader per spool."""
        if not self.records.is_dir():
            raise FileNotFoundError(f"{self.records} does not exist (the mail path creates it with its first record)")
        self.ready.mkdir(mode=0o750, exist_ok=True)
        self.rejected.mkdir(mode=0o750, exist_ok=True)
        self.lock_fd = os.open(self.records / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LoaderBusy(f"another loader holds {self.records / LOCK}") from None

    def rotate(self) -> Path | None:
        """Rename a non-empty current.jsonl into ready/; the writers' next record starts a new one."""
        current = self.records / CURRENT
        try:
            if current.stat().st_size == 0:
                return None
        except FileNotFoundError:
            return None
        target = self.ready / f"{time.time_ns():020d}-{os.getpid()}.jsonl"
        os.rename(current, target)
        return target

    def ready_files(self) -> list[Path]:
        """Ready files, oldest first (their names begin with the rename's time)."""
        return sorted(path for path in self.ready.iterdir() if path.name.endswith(".jsonl")
                      and not path.name.startswith("."))

    def run_once(self) -> FileCounts:
        """Rotate, then load every ready file; the totals."""
        self.rotate()  # first: records move out of the writers' way even while the database is down
        self.agent_step(force=True)
        total = FileCounts()
        for path in self.ready_files():
            if self.stopping:
                break
            self.agent_step()
            counts = self.load_file(path)
            total.loaded += counts.loaded
            total.present += counts.present
            total.rejected += counts.rejected
        if total.loaded:
            refresh_statistics()
        # The scanner's copy of the sender lists follows the database on every host, whoever changed them.
        try:
            if sender_lists.export(self.records.parent):
                self.log(f"{RECORDS}/{sender_lists.FILE_NAME} written from the database")
        except OSError as error:
            self.log(f"{RECORDS}/{sender_lists.FILE_NAME} not written: {one_line(str(error))}")
        return total

    def run_forever(self, poll: float = POLL_SECONDS) -> None:
        """Load until SIGTERM or SIGINT, which end it between batches; a database outage is waited out."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        while not self.stopping:
            try:
                self.run_once()
            except DatabaseError as error:
                self.log(f"database error, retrying in {poll:g} s: {one_line(str(error))}")
                # Django drops a connection whose rollback failed, not one that broke outside a transaction: the
                # next round starts on a fresh one either way.
                connections.close_all()
            deadline = time.monotonic() + poll
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(0.05)
                try:
                    self.agent_step()
                except DatabaseError as error:
                    self.log(f"database error serving the console's requests: {one_line(str(error))}")
                    connections.close_all()
                    break

    def stop(self, signum: int = 0, frame: object = None) -> None:
        """End after the current batch (a signal handler)."""
        self.stopping = True

    def agent_step(self, force: bool = False) -> None:
        """Perform the console's queued actions for this host (at most every AGENT_SECONDS unless forced).

        Only on PostgreSQL: a console on SQLite serves one host and never queues. Requests an earlier loader claimed
        and never finished are failed as unknown once, at the first step: they are never run again.
        """
        if self.stopping or (not force and time.monotonic() < self.next_agent_step) \
                or not remote_actions.queues():
            return
        self.host = self.host or this_host()
        if not self.abandoned_checked:
            for _ in range(remote_actions.fail_abandoned(self.host)):
                self.log("a request an earlier loader began and never finished is failed as unknown (see the "
                         "console's audit log; check this host's quarantine)")
            self.abandoned_checked = True
        remote_actions.serve_requests(self.host, self.log)
        self.next_agent_step = time.monotonic() + AGENT_SECONDS

    def load_file(self, path: Path) -> FileCounts:
        """Load one ready file in batches and delete it when every row is committed and no writer can add more."""
        counts = FileCounts()
        renamed_at = rename_time(path)
        kept = self.rejected / path.name
        partial = self.rejected / f".{path.name}.partial"
        partial.unlink(missing_ok=True)  # a run stopped inside this file: its lines are gathered again
        already_kept = kept.exists()  # an earlier run finished this file and was killed before deleting it
        with open(path, "rb") as stream:
            line_number = 0
            while not self.stopping:
                self.agent_step()
                rows: list[tuple[Row, int, bytes]] = []
                rejects: list[tuple[int, bytes, str]] = []
                at_end = False
                while len(rows) < self.batch:
                    start = stream.tell()
                    line = stream.readline()
                    if not line:
                        at_end = True
                        break
                    if not line.endswith(b"\n") and time.time() - renamed_at < self.settle:
                        # A writer may still be inside its one write: read the line again once the file settled.
                        stream.seek(start)
                        at_end = True
                        break
                    line_number += 1
                    if not line.strip():
                        continue
                    whole = line if line.endswith(b"\n") else line + b"\n"
                    try:
                        rows.append((parse_line(line), line_number, whole))
                    except RecordError as error:
                        rejects.append((line_number, whole, str(error)))
                if rows:
                    refused_before = len(rejects)
                    loaded = self.store_or_sort_out(rows, rejects)
                    counts.loaded += loaded
                    counts.present += len(rows) - loaded - (len(rejects) - refused_before)
                if rejects:
                    self.reject(path, partial, rejects, already_kept)
                    counts.rejected += len(rejects)
                if at_end and self.finished(stream, path, renamed_at):
                    # Writers hold a shared lock for their one write; under the exclusive one nobody is
                    # inside a write, and one that opened the old name finds it deleted and opens the new.
                    try:
                        fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:  # a writer is inside its write (never wait on a stopped one)
                        time.sleep(0.05)
                        continue
                    if os.fstat(stream.fileno()).st_size != stream.tell():
                        fcntl.flock(stream.fileno(), fcntl.LOCK_UN)  # a line came in: read it first
                        continue
                    if not already_kept and counts.rejected:
                        os.rename(partial, kept)
                    remote_actions.test_stop("rejected-kept")
                    path.unlink()
                    self.log(f"{path.name}: {counts.loaded} loaded, {counts.present} already there, "
                             f"{counts.rejected} rejected")
                    break
        return counts

    def finished(self, stream, path: Path, renamed_at: float) -> bool:
        """At the end of the file: true when it is settled and nothing was added since it was read."""
        wait = renamed_at + self.settle - time.time()
        if wait > 0:
            time.sleep(min(wait, 0.2))
            return False
        return os.fstat(stream.fileno()).st_size == stream.tell()

    def store_or_sort_out(self, rows: list[tuple[Row, int, bytes]], rejects: list[tuple[int, bytes, str]]) -> int:
        """Store a batch; when the database refuses its data, store row by row and reject the rows it refuses.

        A record the database cannot take (a value out of a column's range, text it will not store) must not stop
        every record behind it: the loader would retry that batch for ever.
        """
        try:
            return self.store([row for row, _, _ in rows])
        except (DataError, IntegrityError):
            pass
        loaded = 0
        for row, line_number, line in rows:
            try:
                loaded += self.store([row])
            except (DataError, IntegrityError) as error:
                rejects.append((line_number, line, f"refused by the database: {one_line(str(error))[:200]}"))
        return loaded

    def store(self, rows: list[Row]) -> int:
        """Insert the rows whose record id is new, with their recipients, in one transaction; how many were new."""
        unique: dict[str, Row] = {}
        for row in rows:
            unique.setdefault(row.record_id, row)
        with transaction.atomic():
            present = set(Message.objects.filter(record_id__in=list(unique)).values_list("record_id", flat=True))
            new = [row for record_id, row in unique.items() if record_id not in present]
            if not new:
                return 0
            Message.objects.bulk_create(
                [Message(record_id=row.record_id, time=datetime.fromtimestamp(row.time, timezone.utc), **row.columns)
                 for row in new],
                ignore_conflicts=True)
            keys = dict(Message.objects.filter(record_id__in=[row.record_id for row in new])
                        .values_list("record_id", "pk"))
            Recipient.objects.bulk_create(
                [Recipient(message_id=keys[row.record_id], address=address, address_key=key, domain=domain)
                 for row in new for address, key, domain in row.recipients],
                ignore_conflicts=True)
        return len(new)

    def reject(self, path: Path, partial: Path, rejects: list[tuple[int, bytes, str]], already_kept: bool) -> None:
        """Append rejected lines to the file's partial rejected file, one write each, and say so in the log."""
        if already_kept:
            for line_number, _, reason in rejects:
                self.log(f"{path.name} line {line_number} rejected ({reason}): already kept in {REJECTED}/{path.name}")
            return
        fd = os.open(partial, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o640)
        try:
            for line_number, line, reason in rejects:
                os.write(fd, line)
                self.log(f"{path.name} line {line_number} rejected ({reason}): kept in {REJECTED}/{path.name}")
        finally:
            os.close(fd)


def refresh_statistics() -> None:
    """SQLite's planner needs table statistics to start a recipient search from its index; PRAGMA optimize gathers
    them when they are missing or stale, cheaply otherwise (PostgreSQL's autovacuum does this by itself)."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA optimize")


def rename_time(path: Path) -> float:
    """When a ready file was renamed: its name's first part, else its change time."""
    try:
        return int(path.name.partition("-")[0]) / 1e9
    except ValueError:
        return path.stat().st_ctime


def one_line(text: str) -> str:
    """Text on one line with control characters escaped (a database error can quote data)."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)[:500]
