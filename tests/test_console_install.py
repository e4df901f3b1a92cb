"""qs-console install: the console's own account, records/ shared through a group, release through the root helper."""

from __future__ import annotations

import os
import re
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


def test_one_command_installs_the_console_its_digest_timer_and_an_administrator_who_logs_in(base):
    """`qs-console install --admin --listen --base-url --digest-sender --start`: the README's second command."""
    from console_fixtures import ADMIN_PASSWORD, Client, api_answers, console_ready, free_port, stop, wait_for

    console_ready()
    spool = base / "spool"
    (spool / "records").mkdir(parents=True)
    subprocess.run(["chown", "-R", "qscand:qscand", str(spool)], check=True)
    prefix, data, port = base / "prefix", base / "data", free_port()
    install = [sys.executable, str(ROOT / "contrib" / "qs-console"), "install", "--prefix", str(prefix), "--data-dir",
               str(data), "--spooldir", str(spool), "--listen", f"127.0.0.1:{port}",
               "--base-url", f"http://console.example.net:{port}", "--digest-sender", "digest@example.net", "--start"]
    done = subprocess.run([*install, "--admin", "admin"], input=ADMIN_PASSWORD + "\n", capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "administrator admin: created with the password given on standard input" in done.stdout
    assert ADMIN_PASSWORD not in done.stdout
    launcher = f"/usr/bin/python3 {prefix}/bin/qs-console --data-dir {data}"
    units = {name: (prefix / "systemd" / name).read_text() for name in (
        "qs-console.service", "qs-console-load.service", "qs-console-digest.service", "qs-console-digest.timer")}
    assert f"\nExecStart={launcher} serve --listen 127.0.0.1:{port}\n" in units["qs-console.service"]
    assert f"\nExecStart={launcher} load\n" in units["qs-console-load.service"]
    assert "\nNice=10\n" in units["qs-console-load.service"] and "Nice=" not in units["qs-console.service"]
    assert f"\nExecStart={launcher} digest\n" in units["qs-console-digest.service"]
    assert "\nType=oneshot\n" in units["qs-console-digest.service"]
    assert "\nOnCalendar=*-*-* 07:00:00\n" in units["qs-console-digest.timer"]
    assert "exec nice -n 10 setpriv" in (prefix / "service" / "qs-console-load" / "run").read_text()
    verified = subprocess.run(["systemd-analyze", "verify", "--man=no", *(str(prefix / "systemd" / name)
                                                                          for name in units)],
                              capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0 and "Unknown" not in verified.stderr, verified.stderr
    if not os.path.isdir("/run/systemd/system"):  # here: no systemd, so --start says how instead
        assert "no systemd here" in done.stdout and f"ln -s {prefix}/service/qs-console " in done.stdout
        assert f"0 7 * * * qsconsole {launcher} digest" in done.stdout
    saved = (data / "console.json").read_text()
    assert f'"base_url": "http://console.example.net:{port}"' in saved and '"digest@example.net"' in saved
    assert '"console.example.net"' in saved  # the pages answer the address the digest's links name

    # A second run (an upgrade) keeps the administrator; a new one without a password on stdin gets one printed.
    again = subprocess.run([*install, "--admin", "admin"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=300)
    assert "administrator admin: exists, its password unchanged" in again.stdout, again.stdout + again.stderr
    second = subprocess.run([*install, "--admin", "deputy"], stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=300)
    generated = re.search(r"administrator deputy: created, password (\S+) \(shown this once", second.stdout)
    assert second.returncode == 0 and generated, second.stdout + second.stderr

    # serve started as the installed unit runs it: its User= and its ExecStart= line, word for word.
    unit = units["qs-console.service"]
    user = re.search(r"^User=(\S+)$", unit, re.M).group(1)
    command = re.search(r"^ExecStart=(.+)$", unit, re.M).group(1).split()
    server = subprocess.Popen(["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *command],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
                              env={"PATH": "/usr/bin:/bin"})
    try:
        wait_for(lambda: api_answers(port) or server.poll() is not None, 60, "the installed serve")
        assert server.poll() is None, server.communicate()
        for name, password in (("admin", ADMIN_PASSWORD), ("deputy", generated.group(1))):
            client = Client(port)
            status, answer, _ = client.login(name, password)
            assert (status, answer.get("role")) == (200, "admin"), answer
            assert client.get("/api/messages")[0] == 200
        assert Client(port).login("admin", "not the password")[0] == 401
        status, _, _ = Client(port).request("GET", "/login", headers={"Host": f"console.example.net:{port}"})
        assert status == 200  # the base URL's host is allowed
    finally:
        stop(server)
