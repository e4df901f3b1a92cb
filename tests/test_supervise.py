"""The README's daemontools and runit recipes for the engine, followed literally with Debian's packages.

The service directory is made as the README says (the installed run file, a log/run with multilog
or svlogd), the supervisor runs on a temporary scan directory, and the engine must come up, log
with a time stamp, reload on `svc -h` / `sv hup` and stop on `svc -d` / `sv down`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from security_fixtures import install_wrapped

LOG_ACCOUNT = "nobody"  # the README names qmail's log account, qmaill; the test host need not have it
WAIT_SECONDS = 30.0

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a supervisor starts the engine as root")


@pytest.fixture(scope="module")
def installation():
    installed = install_wrapped("--engine-workers", "2")
    yield installed
    installed.remove()


def wait_for(condition, what: str) -> None:
    limit = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < limit:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def engine_status(installation) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(installation.program), "--engine-status"], capture_output=True, text=True, cwd="/", timeout=60
    )


def status_file(installation) -> dict:
    try:
        return json.loads((installation.spool / "engine.status").read_text())
    except (OSError, ValueError):
        return {}


def service_dir(root: Path, installation, logger: list[str]) -> Path:
    """mkdir the service with the installed run file and a log service, as the README's recipe does."""
    service = root / "qmail-scanner-engine"
    (service / "log" / "main").mkdir(parents=True)
    shutil.copy(installation.prefix / "bin" / "qmail-scanner-engine.run", service / "run")
    (service / "log" / "run").write_text("#!/bin/sh\nexec setuidgid " + LOG_ACCOUNT + " " + " ".join(logger) + "\n")
    (service / "log" / "run").chmod(0o755)
    shutil.chown(service / "log" / "main", LOG_ACCOUNT)
    return service


SUPERVISORS = {
    # name: the scanner of the service directory, the log service's logger, reload, stop, stop for good
    "daemontools": (["svscan"], ["multilog", "t", "./main"], ["svc", "-h"], ["svc", "-d"], ["svc", "-dx"]),
    "runit": (["runsvdir", "-P"], ["svlogd", "-tt", "./main"], ["sv", "hup"], ["sv", "down"], ["sv", "exit"]),
}


@pytest.mark.parametrize("supervisor", sorted(SUPERVISORS))
def test_the_readme_recipe_runs_logs_reloads_and_stops_the_engine(installation, tmp_path, supervisor):
    scanner, logger, reload, stop, finish = SUPERVISORS[supervisor]
    root = tmp_path / "service"
    service = service_dir(root, installation, logger)
    scan = subprocess.Popen([*scanner, str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for(lambda: engine_status(installation).returncode == 0, f"the engine under {supervisor}")
        shown = engine_status(installation).stdout
        assert "engine: running" in shown
        assert "recycled: 0, after 500 messages each (--engine-max-messages)" in shown, shown
        reloads = status_file(installation).get("reloads", 0)
        subprocess.run([*reload, str(service)], check=True, timeout=30)
        wait_for(lambda: status_file(installation).get("reloads", 0) == reloads + 1, "a reload")
        assert f"reloads: {reloads + 1})" in engine_status(installation).stdout
        subprocess.run([*stop, str(service)], check=True, timeout=30)
        wait_for(lambda: engine_status(installation).returncode == 1, "the engine to stop")
        assert not (installation.spool / "engine.sock").exists()
        log = (service / "log" / "main" / "current").read_text()
        stamp = "@4000" if supervisor == "daemontools" else time.strftime("%Y-%m-%d")
        assert any(line.startswith(stamp) for line in log.splitlines()), log
    finally:
        for directory in (service, service / "log"):
            subprocess.run([*finish, str(directory)], capture_output=True, timeout=30)
        os.killpg(scan.pid, signal.SIGTERM)
        scan.wait(timeout=30)
        wait_for(lambda: engine_status(installation).returncode == 1, "nothing left running")
