"""`make test` on a mail host: the test bed lives in its own prefix and runs beside the host's live qmail.

A second notqmail, built with its own conf-qmail and account names and with its qmail-send running,
stands in for the live qmail (the real /var/qmail is never touched, not even to simulate one). The
bed is then built (a second build must do nothing), started, and carries a message end to end; the
stand-in's files and processes must be as they were. tests/conftest.py guards /var/qmail itself.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from testbed import messages
from testbed.build import (
    BED,
    BED_ROOT,
    CONTROL_FILES,
    QMAIL,
    QMAIL_ROLES,
    SIMSCAN_USER,
    STOCK_QMAIL,
    TESTBED,
    BuildError,
    QmailInstance,
    build,
    build_lock,
    build_notqmail,
    check_can_build,
    configure_qmail,
    ensure_accounts,
    ensure_qmail_accounts,
)
from testbed.isolation import (
    STOCK_USERS,
    accounts_snapshot,
    describe_changes,
    files_snapshot,
    stock_qmail_snapshot,
    tree_digest,
)
from testbed.qmail import (
    QmailSend,
    SmtpServer,
    alive_qmail_send,
    install_scanner,
    send,
    unique_marker,
    wait_for_delivery,
)

STANDIN_ROOT = Path("/opt/qmail-scanner-standin")  # another prefix: not inside the bed's, not /var/qmail
STANDIN = QmailInstance(STANDIN_ROOT / "qmail", "qslive-")
STANDIN_LOG = STANDIN_ROOT / "qmail-send.log"
STANDIN_CONTROL = {name: text for name, text in CONTROL_FILES.items() if name != "ssattach"}


def _require_bed_build() -> None:
    try:
        check_can_build()
    except BuildError as error:
        pytest.skip(f"no qmail test bed: {error}")


def _processes_of(instance: QmailInstance) -> dict[int, str]:
    """pid -> program of every running process whose program is in the instance's bin/."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                program = os.readlink(entry / "exe")
            except OSError:
                continue
            if program.startswith(f"{instance.bin}/"):
                found[int(entry.name)] = program
    return found


def _start_standin() -> subprocess.Popen:
    """Build the stand-in (skipped when built) and start its qmail-send as a site's rc script would."""
    with build_lock(STANDIN_ROOT):
        ensure_accounts()  # the mailbox account its aliases name
        ensure_qmail_accounts(STANDIN)
        build_notqmail(True, STANDIN)
        configure_qmail(STANDIN, STANDIN_CONTROL)
    logger = STANDIN.user("qmaill")
    STANDIN_LOG.touch()
    shutil.chown(STANDIN_LOG, logger, STANDIN.group("nofiles"))
    process = subprocess.Popen(
        [str(STANDIN.bin / "qmail-start"), "./Maildir/", "/bin/sh", "-c", f"exec cat >> {STANDIN_LOG}"],
        cwd=STANDIN.home,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={"PATH": f"{STANDIN.bin}:/usr/bin:/bin"},
    )
    deadline = time.monotonic() + 10
    # qmail-send and its helpers (lspawn, rspawn, clean) running, and its start logged: the tree has settled.
    while not (alive_qmail_send(process.pid) and len(_processes_of(STANDIN)) >= 4 and "status:" in _log()):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            raise AssertionError(f"the stand-in's qmail-send did not start: {_log()}")
        time.sleep(0.05)
    return process


def _log() -> str:
    return STANDIN_LOG.read_text(errors="replace")[-2000:]


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # qmail-send finishes its deliveries and exits
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _build_fingerprint() -> dict[str, tuple[int, int]]:
    """What any rebuild of the bed would replace: its binaries and build stamps (mtime, size)."""
    stamps = {path.name: (path.stat().st_mtime_ns, path.stat().st_size) for path in QMAIL.glob(".testbed-*")}
    return {**stamps, **files_snapshot(QMAIL, ("bin",))}


def test_bed_runs_beside_a_live_qmail_and_leaves_it_alone():
    _require_bed_build()
    standin = _start_standin()
    try:
        before_tree = tree_digest(STANDIN.home)
        before_parts = {part: tree_digest(STANDIN.home, (part,)) for part in ("bin", "control", "queue")}
        before_processes = _processes_of(STANDIN)
        before_accounts = accounts_snapshot((*STOCK_USERS, *STANDIN.users), (*STANDIN.groups, "qmail", "nofiles"))

        build(quiet=True)  # builds the bed when this machine has none yet
        built = _build_fingerprint()
        build(quiet=True)
        assert describe_changes(built, _build_fingerprint()) == [], "a second build of the bed rebuilt something"

        sender = QmailSend().start()
        directory = Path(tempfile.mkdtemp(prefix="isolation-", dir=TESTBED))
        directory.chmod(0o755)
        smtp = SmtpServer(directory).start()
        scanner = install_scanner()
        try:
            assert _processes_of(BED), "the bed's qmail-send is not running beside the stand-in"
            smtp.route(scanner.wrapper)
            marker = unique_marker()
            reply = send(smtp.port, messages.plain(marker))
            assert reply.accepted, reply
            delivered = wait_for_delivery(marker)
            assert b"X-Qmail-Scanner" in delivered
        finally:
            smtp.stop()
            sender.stop()
            scanner.remove()
            shutil.rmtree(directory, ignore_errors=True)

        after_parts = {part: tree_digest(STANDIN.home, (part,)) for part in ("bin", "control", "queue")}
        assert after_parts == before_parts, "the bed changed the live qmail's bin/, control/ or queue/"
        assert tree_digest(STANDIN.home) == before_tree, "the bed changed a file of the live qmail"
        after_processes = _processes_of(STANDIN)
        assert after_processes == before_processes, "the live qmail's daemons did not all keep running"
        after_accounts = accounts_snapshot((*STOCK_USERS, *STANDIN.users), (*STANDIN.groups, "qmail", "nofiles"))
        assert describe_changes(before_accounts, after_accounts) == []
    finally:
        _stop(standin)


def test_bed_compiles_in_its_own_home_and_accounts_never_the_stock_ones():
    """qmail-showctl of the bed: its home and its own account ids; no bed program names /var/qmail."""
    _require_bed_build()
    build(quiet=True)
    shown = subprocess.run([str(BED.bin / "qmail-showctl")], capture_output=True, text=True, check=False).stdout
    assert f"qmail home directory: {QMAIL}." in shown
    assert QMAIL != STOCK_QMAIL and STOCK_QMAIL not in QMAIL.parents and BED_ROOT not in STOCK_QMAIL.parents
    uids = [int(uid) for uid in re.search(r"user ids: ([\d, ]+)\.", shown).group(1).split(", ")]
    assert uids == [pwd.getpwnam(BED.user(role)).pw_uid for role in QMAIL_ROLES]
    for role in STOCK_USERS:
        assert BED.user(role) != role, "the bed uses a stock qmail account name"
        try:
            stock = pwd.getpwnam(role).pw_uid
        except KeyError:
            continue
        assert stock not in uids, f"the bed runs as the uid of the host's {role}"
    assert SIMSCAN_USER != "simscan"
    for program in sorted(BED.bin.iterdir()):
        assert b"/var/qmail" not in program.read_bytes(), f"{program} names /var/qmail"


def test_the_snapshots_see_a_change(tmp_path):
    """The guard and the digests would notice: a changed size, a touched file, a new file, another mode."""
    for part in ("bin", "control"):
        (tmp_path / part).mkdir()
        (tmp_path / part / "file").write_text("one\n")
    snapshot, digest = files_snapshot(tmp_path), tree_digest(tmp_path)
    assert describe_changes(snapshot, files_snapshot(tmp_path)) == [] and tree_digest(tmp_path) == digest

    (tmp_path / "control" / "file").write_text("two!\n")
    assert describe_changes(snapshot, files_snapshot(tmp_path)) == [
        f"changed: control/file {snapshot['control/file']} -> {files_snapshot(tmp_path)['control/file']}"
    ]
    os.utime(tmp_path / "bin" / "file", ns=(0, 0))
    (tmp_path / "bin" / "new").touch()
    changes = describe_changes(snapshot, files_snapshot(tmp_path))
    assert "added: bin/new" in changes and any(line.startswith("changed: bin/file ") for line in changes)

    digest = tree_digest(tmp_path)
    (tmp_path / "bin" / "file").chmod(0o600)
    assert tree_digest(tmp_path) != digest


def test_stock_qmail_snapshot_covers_var_qmail_and_the_stock_accounts():
    """What the session guard compares: every file of /var/qmail's bin/ and control/, and the stock accounts."""
    snapshot = stock_qmail_snapshot()
    for part in ("bin", "control"):
        for path in (STOCK_QMAIL / part).glob("*"):
            assert str(path) in snapshot
    for name in STOCK_USERS:
        assert (f"user {name}" in snapshot) == _exists(name)


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True
