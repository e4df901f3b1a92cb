"""Actions on a copy another host holds: an ActionRequest row that the holding host's own loader performs.

The quarantined bytes stay on the host that quarantined them, readable only by its scanner account. A console that
serves the pages on host A and is asked to release a message held on host B writes a pending row for B into the
shared PostgreSQL database and polls it; B's `qs-console load`, between batches and at least every second, claims
B's pending rows (FOR UPDATE SKIP LOCKED, then a conditional update: one performer each), runs them through
actions.run_local (the same root-owned helper as a local action) and writes the answer back. The database is the
only channel: no host listens for another, none holds another's credentials for its quarantine.

Never twice: a row is claimed only while pending and younger than the answer timeout, and the waiting console fails
a row nobody claimed in time (the two are conditional updates on the row's state, so exactly one wins). A row
claimed but never finished (the loader was killed inside the action) is not run again: a release done twice
delivers twice. It is failed as "unknown" by the console that waits for it, or by the host's next loader.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import DateTimeField, ExpressionWrapper, Value
from django.db.models.functions import Now

from qsconsole.actions import (
    RELEASE_SECONDS,
    NotReleasable,
    Released,
    Request,
    one_line,
    run_local,
)
from qsconsole.console.models import ActionRequest, Message

# Claimed by a loader, being done: not a state a console writes (pending, done, failed are the model's others).
RUNNING = "running"
POLL_SECONDS = 0.1
# Past the helper's own timeout, a row still running means its loader died inside the action.
RUN_GRACE_SECONDS = 30
UNKNOWN = "unknown: the host's loader stopped while doing it; check the host's quarantine"
# A test-only stop (environment QS_CONSOLE_TEST_STOP=<point>): the process stops itself there, so a test can kill it
# at exactly that point with a real SIGKILL. Never set in a service's environment.
TEST_STOP_VARIABLE = "QS_CONSOLE_TEST_STOP"


def unanswered(host: str) -> str:
    """The answer for a request nobody claimed in time."""
    return f"{host} has not answered (is its qs-console load running?)"


def answer_seconds() -> float:
    """How long a request may wait for its host's loader (console.json remote_answer_seconds)."""
    return float(settings.CONSOLE.remote_answer_seconds)


def queues() -> bool:
    """True when another host's copy is reached by queueing: a shared PostgreSQL database (SQLite serves one host)."""
    return connection.vendor == "postgresql"


def queue_and_wait(host: str, request: Request, requested_by: str = "") -> Released:
    """Queue `request` for `host`'s loader and wait for its answer; NotReleasable(504) when none comes in time."""
    if connection.in_atomic_block:
        # The row would be invisible to the other host until this transaction ends, after the wait.
        raise RuntimeError("a remote action is queued outside a transaction")
    return wait(submit(host, request, requested_by), host)


def submit(host: str, request: Request, requested_by: str = "") -> int:
    """Write the pending row (its time by the database's clock, the one every host's loader compares); its id."""
    message = Message.objects.filter(host=host, quarantine_id=request.quarantine_id).only("pk").first()
    row = ActionRequest.objects.create(host=host, verb=request.verb, quarantine_id=request.quarantine_id,
                                       to=request.to, message=message, requested_by=requested_by[:150])
    ActionRequest.objects.filter(pk=row.pk).update(requested=Now())
    return row.pk


def wait(pk: int, host: str) -> Released:
    """Poll the row until its host answers; fail it when nobody claims it in time or its performer died."""
    pickup_deadline = time.monotonic() + answer_seconds()
    run_deadline = None
    while True:
        state = ActionRequest.objects.filter(pk=pk).values_list("state", flat=True).first()
        now = time.monotonic()
        if state in (ActionRequest.DONE, ActionRequest.FAILED):
            return collect(pk)
        if state == ActionRequest.PENDING and now > pickup_deadline:
            if finish(pk, ActionRequest.FAILED, unanswered(host), only_if=ActionRequest.PENDING):
                raise NotReleasable(504, unanswered(host))
            continue  # claimed just now: wait for its answer
        if state == RUNNING:
            run_deadline = run_deadline or now + RELEASE_SECONDS + RUN_GRACE_SECONDS
            if now > run_deadline and finish(pk, ActionRequest.FAILED, UNKNOWN, only_if=RUNNING):
                raise NotReleasable(504, f"{host}: {UNKNOWN}")
        if state is None:
            raise NotReleasable(500, "the action request was removed while waiting for it")
        time.sleep(POLL_SECONDS)


def collect(pk: int) -> Released:
    """The answer of a finished row; a fetch's bytes are taken off the row (they live on their host, not here)."""
    row = ActionRequest.objects.get(pk=pk)
    data = bytes(row.data) if row.data is not None else b""
    if data:
        ActionRequest.objects.filter(pk=pk).update(data=None)
    return Released(ok=row.state == ActionRequest.DONE, detail=row.detail, data=data)


def finish(pk: int, state: str, detail: str, data: bytes | None = None, only_if: str = "") -> bool:
    """Write a row's answer (only while it is in state `only_if`, when given); true when it was written."""
    rows = ActionRequest.objects.filter(pk=pk)
    if only_if:
        rows = rows.filter(state=only_if)
    return rows.update(state=state, detail=detail, data=data, finished=Now()) == 1


# The holding host's side, run by its loader.

def answer_window() -> ExpressionWrapper:
    """The oldest `requested` time a loader still performs: now less the answer timeout, by the database's clock."""
    return ExpressionWrapper(Now() - Value(timedelta(seconds=answer_seconds())), output_field=DateTimeField())


def fail_abandoned(host: str) -> int:
    """At a loader's start: rows an earlier loader of this host claimed and never finished become failed, unknown."""
    return ActionRequest.objects.filter(host=host, state=RUNNING).update(
        state=ActionRequest.FAILED, detail=UNKNOWN, finished=Now())


def claim(host: str) -> ActionRequest | None:
    """The oldest pending request for `host` that is still awaited, now ours (state running); None when there is none.

    A request older than the answer timeout is failed instead: its console has answered 504 or is gone, and an
    action nobody waits for is not done late (a release an administrator was told failed must not arrive later).
    """
    ActionRequest.objects.filter(host=host, state=ActionRequest.PENDING, requested__lt=answer_window()).update(
        state=ActionRequest.FAILED, detail=unanswered(host), finished=Now())
    with transaction.atomic():
        row = (ActionRequest.objects.select_for_update(skip_locked=True)
               .filter(host=host, state=ActionRequest.PENDING, requested__gte=answer_window())
               .order_by("pk").defer("data").first())
        if row is None:
            return None
        ActionRequest.objects.filter(pk=row.pk, state=ActionRequest.PENDING).update(state=RUNNING)
    row.state = RUNNING
    return row


def perform_claimed(row: ActionRequest) -> Released:
    """Do a claimed request on this host's quarantine and write its answer into the row.

    run_local refuses an unknown verb and a fetch over MAX_FETCH_BYTES, so the row never carries more than that.
    """
    test_stop("request-claimed")
    try:
        done = run_local(Request(row.verb, row.quarantine_id, row.to))
    except NotReleasable as refusal:
        done = Released(ok=False, detail=f"refused ({refusal.status}): {refusal}")
    # Unconditional: should the console have given up meanwhile, the row still tells what was done.
    finish(row.pk, ActionRequest.DONE if done.ok else ActionRequest.FAILED, done.detail, done.data or None)
    return done


def serve_requests(host: str, log: Callable[[str], None]) -> int:
    """Claim and perform this host's awaited requests, oldest first; how many."""
    count = 0
    while (row := claim(host)) is not None:
        done = perform_claimed(row)
        log(f"request {row.pk} by {one_line(row.requested_by) or 'the console'}: {row.verb} "
            f"{one_line(row.quarantine_id)}{' to ' + one_line(row.to) if row.to else ''}: "
            f"{'done' if done.ok else 'failed'}: {done.detail}")
        count += 1
    return count


def test_stop(point: str) -> None:
    """Stop this process here when a test asked for this point (QS_CONSOLE_TEST_STOP); a no-op otherwise."""
    if os.environ.get(TEST_STOP_VARIABLE) == point:
        os.kill(os.getpid(), signal.SIGSTOP)

