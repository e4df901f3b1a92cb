"""A short `make site-run`: bursts with quiet spells past clamd's and spamd's timeouts, a reload, restarts.

Through the test bed's real qmail-smtpd, the setuid wrapper and the resident engine, with real
clamd and spamd (benchmarks/site_run.py drives it and accounts for every message).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest

from daemons import ClamdServer, SpamdServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import site_run

PLAN = site_run.Plan(
    rounds=4, burst=8, clients=3, down_sessions=2, idle_timeout=2, quiet=(3.5, 4.0), workers=3
)  # one round of each: plain, reload mid-burst, clamd restart, spamd restart


@pytest.fixture(scope="module")
def site_daemons():
    ClamdServer.require()
    SpamdServer.require()
    with contextlib.ExitStack() as stack:
        yield site_run.daemons(PLAN, stack)


def test_a_quiet_reloaded_site_with_daemon_restarts_loses_nothing_and_fails_only_while_clamd_is_down(
    qmail_bed, bed_engine, site_daemons
):
    clamd, spamd = site_daemons
    engine = bed_engine(*site_run.configure_args(clamd, spamd, PLAN.workers))
    served = engine.status().get("served", 0)
    qmail_bed.smtp.route(engine.installation.wrapper)
    lines: list[str] = []
    summary = site_run.SiteRun(
        qmail_bed.smtp.port, engine.installation, engine, clamd, spamd, PLAN, say=lines.append
    ).run()
    report = "\n".join([*lines, *summary.lines()])
    print(report)  # pytest -s shows the numbers
    assert summary.problems == [], report
    assert summary.rounds == 4 and summary.reloads == summary.clamd_restarts == summary.spamd_restarts == 1, report
    assert summary.temporary == summary.temporary_while_clamd_down >= PLAN.down_sessions, report
    assert summary.accepted == summary.sessions - summary.temporary, report
    assert summary.quarantined >= 2 and summary.spam_tagged >= 1 and summary.unchecked_spamd >= 1, report
    assert summary.delivered + summary.quarantined == summary.accepted, report
    assert engine.status().get("served", 0) - served >= summary.accepted  # the engine served them, not standalone
