"""A reload (SIGHUP) lets the running workers finish their message, and the watchdog still works across it.

The master re-executes itself and passes on the workers of the generation before: how long each has
been busy, their event pipes, the counters. Every session through the real chain (qmail-smtpd of the
test bed, the setuid wrapper, the engine, the real qmail-queue) must end as it would without the reload.
"""

from __future__ import annotations

import os
import signal
import smtplib
import threading
import time

import pytest

from engine_fixtures import Engine
from security_fixtures import install_wrapped
from testbed.qmail import RECIPIENT, install_scanner, unique_marker, wait_for_delivery

TRICKLE_SECONDS = 6.0
TRICKLE_PIECES = 24


@pytest.fixture(scope="module")
def bed_reload_engine(qmail_bed):
    """The engine of an install of its own behind the bed's qmail-smtpd: these tests reload it."""
    engine = Engine(install_scanner("--engine-workers", "3")).start()
    yield engine
    engine.stop()
    engine.installation.remove()


def trickle(port: int, marker: str, box: list) -> None:
    """One SMTP session whose message arrives in pieces over TRICKLE_SECONDS; box gets (code, text)."""
    lines = [f"From: slow@example.org\r\nTo: {RECIPIENT}\r\nSubject: {marker}\r\n\r\n".encode()]
    lines += [f"line {n} of a message typed by a slow sender {marker}\r\n".encode() for n in range(TRICKLE_PIECES)]
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example.org", timeout=120) as client:
        client.helo("client.example.org")
        assert client.mail("slow@example.org")[0] == 250
        assert client.rcpt(RECIPIENT)[0] == 250
        client.putcmd("data")
        code, text = client.getreply()
        assert code == 354, text
        for line in lines:  # qmail-smtpd runs QMAILQUEUE at DATA: the worker is busy all along
            client.send(line)
            time.sleep(TRICKLE_SECONDS / len(lines))
        client.send(b".\r\n")
        code, text = client.getreply()
        box.append((code, text.decode("utf-8", "replace")))


def test_sighup_while_slow_senders_are_in_data_delivers_both(qmail_bed, bed_reload_engine):
    """Before: the new master took the busy times for monotonic timestamps and killed both workers (451)."""
    engine = bed_reload_engine
    qmail_bed.smtp.route(engine.installation.wrapper)
    before = engine.status()
    markers = [unique_marker(), unique_marker()]
    boxes: list[list] = [[], []]
    threads = [
        threading.Thread(target=trickle, args=(qmail_bed.smtp.port, marker, box), daemon=True)
        for marker, box in zip(markers, boxes)
    ]
    for thread in threads:
        thread.start()
    engine.wait_until(lambda: len(engine.busy_workers()) >= 2, 20)
    time.sleep(1.0)
    engine.signal(signal.SIGHUP)
    engine.wait_until(lambda: engine.status().get("reloads", 0) > before.get("reloads", 0), 30)
    # The new master runs while both messages are still arriving: the reload really came mid-DATA.
    assert all(thread.is_alive() for thread in threads)
    for thread in threads:
        thread.join(120)
    assert [box[0][0] for box in boxes] == [250, 250], boxes
    for marker in markers:
        assert marker.encode() in wait_for_delivery(marker)
    # The retired workers' answers count as served by the new master; nobody was killed.
    engine.wait_until(lambda: engine.status().get("served", 0) >= before.get("served", 0) + 2, 10)
    assert engine.status().get("killed", 0) == before.get("killed", 0)
    assert "still busy" not in engine.log()


@pytest.fixture()
def short_deadline_engine():
    installation = install_wrapped("--deadline", "2", "--engine-workers", "2")
    running = Engine(installation).start()
    yield running
    running.stop()
    installation.remove()


SLOW = b"From: a@example.org\nSubject: slow\n\n" + b"a line of a long message\n" * 40_000


def test_worker_stuck_past_the_deadline_is_still_killed_after_a_reload(short_deadline_engine):
    """The re-executed master keeps the watchdog: deadline + 10 s after the message began, not sooner."""
    engine = short_deadline_engine
    box: list = []
    thread = threading.Thread(target=lambda: box.append(engine.installation.run(SLOW, pause=0.01)), daemon=True)
    thread.start()
    engine.wait_until(engine.busy_workers, 30)
    stuck = engine.busy_workers()
    for pid in stuck:
        os.kill(pid, signal.SIGSTOP)  # not even its own alarm runs now
    engine.signal(signal.SIGHUP)
    engine.wait_until(lambda: engine.status().get("reloads", 0) >= 1, 30)
    thread.join(60)
    result = box[0]
    assert result.exit_code == 71 and "stopped before answering" in result.stderr, result.stderr
    assert result.queued == []
    assert 10 <= result.seconds < 40  # killed by the new master at deadline + grace, not at once
    engine.wait_until(lambda: not set(stuck) & set(engine.workers()), 10)  # killed and reaped
    assert engine.status().get("killed", 0) >= 1
    assert "still busy" in engine.log()
    assert engine.installation.run(SLOW[:2000]).exit_code == 0


def test_idle_worker_that_does_not_exit_after_a_reload_is_killed(short_deadline_engine):
    """Told to exit, it must go; one that hangs would keep its memory, and a later stop would wait for ever."""
    engine = short_deadline_engine
    hung = engine.workers()[0]
    os.kill(hung, signal.SIGSTOP)
    engine.signal(signal.SIGHUP)
    engine.wait_until(lambda: engine.status().get("reloads", 0) >= 1, 30)
    engine.wait_until(lambda: hung not in engine.workers(), 2 + 10 + 15)
    assert "still there" in engine.log()
    assert engine.stop() == 0
