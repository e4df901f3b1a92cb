"""qs-console install: the console's own account, records/ shared through a group, release through the root helper."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from actions_fixtures import envelope_bytes, make_message, make_settings, queued
from qmail_scanner import message_record
from qmail_scanner.actions import carry_out
from qmail_scanner.records import Finding, Verdict
from qsconfigure.tools_install import render_tool

pytest_plugins = ("actions_fixtures",)

ROOT = Path(__file__).resolve().parent.parent
ORIGINAL = b"From: a@example.net\nSubject: held\n\nthe body\n"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="install creates an account and setuid files: root only")


def as_console(*argv: str) -> subprocess.CompletedProcess:
    """argv run as the console's account (as its run file does)."""
    return subprocess.run(["setpriv", "--reuid=qsconsole", "--regid=qsconsole", "--init-groups", *argv],
                          capture_output=True, text=True, timeout=120, cwd="/", env={"PATH": "/usr/bin:/bin"})


@pytest.fixture
def base():
    """A directory every account can traverse (pytest's tmp_path is root's 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="qs-console-install-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def test_install_then_release_as_the_console_account(base, standin):
    spool = base / "spool"
    settings = make_settings(spool, log_details="no")
    message = make_message(settings, ORIGINAL, sender="a@example.net", recipients=("bob@example.org",))
    finding = Finding("policy", "x", "")
    verdict = Verdict(action="quarantine", quarantine_kind="policy", reason="held", findings=[finding])
    assert carry_out(message, verdict) == 0
    quarantine_id = message.area.message_id
    (spool / "records").mkdir(exist_ok=True)
    subprocess.run(["chown", "-R", "qscand:qscand", str(spool)], check=True)
    spool.chmod(0o750)
    (spool / "quarantine").chmod(0o700)
    (spool / "records").chmod(0o750)
    # The installed tools: root's; qmail-queue is the stand-in, its queue the scanner account's.
    tools = base / "bin"
    tools.mkdir(mode=0o755)
    queue = base / "queue"
    queue.mkdir()
    shutil.chown(queue, "qscand", "qscand")
    shutil.copy(standin, tools / "standin")
    qmail_queue = tools / "qmail-queue"
    qmail_queue.write_text(f"#!/bin/sh\nQQ_STANDIN_DIR={queue} exec {tools / 'standin'}\n")
    qmail_queue.chmod(0o755)
    paths = {"spooldir": str(spool), "qmail_queue_binary": str(qmail_queue)}
    tool = tools / "qs-quarantine"
    tool.write_text(render_tool((ROOT / "contrib" / "qs-quarantine").read_text(), "/usr/bin/python3", "-I", paths))
    tool.chmod(0o755)

    done = subprocess.run([sys.executable, str(ROOT / "contrib" / "qs-console"), "install", "--prefix",
                           str(base / "prefix"), "--data-dir", str(base / "data"), "--spooldir", str(spool),
                           "--release-tool", str(tool)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    data = (base / "data").stat()
    assert (data.st_uid, stat.S_IMODE(data.st_mode)) == (_uid("qsconsole"), 0o700)
    records = (spool / "records").stat()
    assert (records.st_uid, records.st_gid, stat.S_IMODE(records.st_mode)) == (
        _uid("qscand"), _gid("qsconsole"), 0o2770)
    helper = (base / "prefix" / "libexec" / "qs-console-release").stat()
    assert (helper.st_uid, helper.st_gid, stat.S_IMODE(helper.st_mode)) == (0, _gid("qsconsole"), 0o4750)
    for written in ("service/qs-console/run", "service/qs-console-load/run", "systemd/qs-console.service",
                    "systemd/qs-console-load.service", "bin/qs-console", "lib/qsconsole/cli.py"):
        info = (base / "prefix" / written).stat()
        assert info.st_uid == 0 and not info.st_mode & 0o022, written
    assert "User=qsconsole" in (base / "prefix" / "systemd" / "qs-console.service").read_text()
    assert "--reuid=qsconsole" in (base / "prefix" / "service" / "qs-console-load" / "run").read_text()
    assert (base / "data" / "console.sqlite3").exists()

    # The console's account cannot read the quarantine itself.
    assert as_console("ls", str(spool / "quarantine" / "policy" / "new")).returncode != 0
    helper_path = str(base / "prefix" / "libexec" / "qs-console-release")
    for refused in (["release", "--", "../" + quarantine_id], ["release", "--", str(spool / "quarantine")],
                    ["release", "--", "-x"], ["release", quarantine_id], ["release", "--", quarantine_id, "extra"],
                    ["release", "--spooldir", "/tmp", "--", quarantine_id], ["delete", quarantine_id],
                    ["release", "--to", "a b@example.org", "--", quarantine_id], ["delete", "--", "../x"],
                    ["delete", "--", quarantine_id, "extra"], ["delete", "--", "-x"], ["show", "--", quarantine_id],
                    ["show", "--raw", quarantine_id], ["show", "--headers", "--", quarantine_id],
                    ["show", "--raw", "--", "../" + quarantine_id], ["show", "--raw", "--raw", "--", quarantine_id],
                    ["list"], ["purge", "--days", "0"], ["delete", "--to", "bob@example.org", "--", quarantine_id]):
        answer = as_console(helper_path, *refused)
        assert answer.returncode == 64, (refused, answer.stderr)
    assert not queued(queue)
    # Through the helper: delivered by qmail-queue with the original envelope, the copy marked released.
    answer = as_console(helper_path, "release", "--", quarantine_id)
    assert answer.returncode == 0, answer.stderr
    [(released, envelope)] = queued(queue)
    assert envelope == envelope_bytes("a@example.net", ["bob@example.org"])
    assert released.endswith(ORIGINAL) and released.startswith(b"X-Qmail-Scanner-Released: ")
    assert not list((spool / "quarantine" / "policy" / "new").iterdir())
    # The console's download and learning read the stored bytes; its delete removes the copy.
    [stored] = (spool / "quarantine" / "policy" / "cur").iterdir()
    shown = subprocess.run(["setpriv", "--reuid=qsconsole", "--regid=qsconsole", "--init-groups", helper_path,
                            "show", "--raw", "--", quarantine_id], capture_output=True, timeout=120, cwd="/")
    assert shown.returncode == 0 and shown.stdout == stored.read_bytes(), shown.stderr
    answer = as_console(helper_path, "delete", "--", quarantine_id)
    assert answer.returncode == 0 and answer.stdout == f"deleted {quarantine_id}\n", answer.stderr
    assert not stored.exists()

    # The loader, as the console's account, takes what the scanner account wrote (group-readable by setgid).
    subprocess.run(["setpriv", "--reuid=qscand", "--regid=qscand", "--clear-groups", "sh", "-c",
                    f"umask 077; printf '' >> {spool / 'records' / 'current.jsonl'}"], check=True)
    assert (spool / "records" / "current.jsonl").stat().st_gid == _gid("qsconsole")
    loaded = as_console("/usr/bin/python3", str(base / "prefix" / "bin" / "qs-console"), "--data-dir",
                        str(base / "data"), "load", "--once")
    assert loaded.returncode == 0, loaded.stderr


def test_a_fifo_planted_as_current_jsonl_is_refused_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "current.jsonl")
    started = time.monotonic()
    with pytest.raises(OSError):
        message_record._open_current(str(tmp_path / "current.jsonl"))
    assert time.monotonic() - started < 1
    reader = os.open(tmp_path / "current.jsonl", os.O_RDONLY | os.O_NONBLOCK)  # with a reader the open succeeds
    try:
        with pytest.raises(OSError, match="not a plain file"):
            message_record._open_current(str(tmp_path / "current.jsonl"))
    finally:
        os.close(reader)
    os.unlink(tmp_path / "current.jsonl")
    (tmp_path / "other").write_bytes(b"")
    os.link(tmp_path / "other", tmp_path / "current.jsonl")
    with pytest.raises(OSError, match="not a plain file"):
        message_record._open_current(str(tmp_path / "current.jsonl"))


def _uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid


def _gid(name: str) -> int:
    import grp

    return grp.getgrnam(name).gr_gid


def test_a_configure_rerun_keeps_the_console_s_access_to_records(base):
    """configure --install lays the spool out again: it must not take records/ back from the console's loader."""
    from qsconfigure.install import Installer, install_spool

    spool = base / "spool"
    installer = Installer("", "qscand", "qscand", may_chown=True)
    install_spool(installer, str(spool))
    assert stat.S_IMODE((spool / "records").stat().st_mode) == 0o750  # before the console: the scanner's alone
    # What `qs-console install` sets up:
    spool.chmod(0o751)
    os.chown(spool / "records", _uid("qscand"), _gid("nogroup"))  # the console's group; any group shows it
    (spool / "records").chmod(0o2770)
    install_spool(installer, str(spool))
    records = (spool / "records").stat()
    assert (records.st_uid, records.st_gid, stat.S_IMODE(records.st_mode)) == (
        _uid("qscand"), _gid("nogroup"), 0o2770)
    assert stat.S_IMODE(spool.stat().st_mode) == 0o751
    assert stat.S_IMODE((spool / "quarantine").stat().st_mode) == 0o700  # everything else as configure lays it out
