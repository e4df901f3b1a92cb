#!/usr/bin/env python3
"""make demo: configure into ./demo, install there, run the sample messages, show the outcome.

No root setup and no qmail: the next hop is the qmail-queue demo sink (the test stand-in,
which keeps qmail-queue's envelope grammar and exit codes) storing queued mail in demo/queue.
When clamd and spamd are installed, private instances are started for the demo on private
sockets, clamd with a test signature database (EICAR), and stopped at the end. The demo keeps
the defaults a new install gets (alerts to the admin only; spam tagged, not quarantined) and
says for each sample what those defaults do with it; a sample that ends otherwise fails the demo.
Then the postmaster's console is set up over the demo's records and left running on loopback
(contrib/demo_console.py); `make demo-stop` (demo.py --stop) stops it.
"""

from __future__ import annotations

import argparse
import email.parser
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import demo_console  # noqa: E402

from harness import build_standin, envelope, install, smtp_reply  # noqa: E402

DEMO = ROOT / "demo"
SAMPLES = ROOT / "contrib" / "demo" / "samples"


def expected(sample: str, scanners: set[str]) -> tuple[str, str]:
    """What a new install's defaults do with a sample: the outcome the summary shows, and why, in words."""
    if sample.startswith("03-") and "clamd" in scanners:
        return "quarantined: viruses", "clamd finds EICAR: quarantined in quarantine/viruses, the admin alerted"
    if sample.startswith("03-"):
        return "quarantined: policy", "no clamd: EICAR goes unnamed, but invoice.com (DOS program) is blocked by policy"
    if sample.startswith("04-"):
        return "quarantined: policy", "photo.gif.exe, a double extension: quarantined by policy, the admin alerted"
    if sample.startswith("05-") and "spamd" in scanners:
        return "queued, tagged as spam", (
            "GTUBE is spam to spamd; the default delivers it tagged (X-Spam-Flag: YES, X-Spam-Status: Yes): "
            "--sa-quarantine N would quarantine it, --sa-subject TEXT tag its subject"
        )
    if sample.startswith("05-"):
        return "queued", "no spamd here: GTUBE is delivered without a spam check (install spamd)"
    if sample.startswith("06-"):
        return "quarantined: policy", "a program named invoice.pdf, zipped in a base64 forward: quarantined by its type"
    return "queued", "clean: queued by the next hop, with the trace header on top"


def start_daemons(wanted: bool = True) -> tuple[list[str], list]:
    """Private clamd/spamd for the demo when installed; returns configure args and the servers."""
    from daemons import ClamdServer, SpamdServer

    scanners, args, servers = [], [], []
    for name, server_class in (("clamd", ClamdServer), ("spamd", SpamdServer)):
        if not wanted or not (shutil.which(name) or Path("/usr/sbin", name).exists()):
            continue
        try:
            server = server_class(f"demo-{name}").start()
        except Exception as error:  # the demo goes on with what works
            print(f"({name} did not start: {error})")
            continue
        servers.append(server)
        scanners.append(name)
        args += [f"--{name}-servers", server.socket_path]
        print(f"started a private {name} for the demo on {server.socket_path}")
    if not scanners:
        return [], servers
    return ["--scanners", ",".join(scanners), *args], servers


def shown(path: Path) -> Path:
    """A path as the reader finds it: relative to the source tree when inside it."""
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def quarantine_contents(installation) -> set[Path]:
    found = set()
    for kind in ("viruses", "policy", "spam"):
        directory = installation.spool / "quarantine" / kind / "new"
        if directory.exists():
            found.update(directory.iterdir())
    return found


def describe_landing(installation, result, quarantined: set[Path]) -> str:
    if result.queued:
        return f"queued by the next hop ({len(result.queued)} copy) in {shown(installation.sink)}"
    if quarantined:
        return f"quarantined as {shown(next(iter(quarantined)))}"
    return "not queued (the sender is told by the SMTP reply)"


def outcome(result, quarantined: set[Path]) -> str:
    """The short outcome of one sample, in the words expected() uses."""
    if result.queued:
        head = result.queued[0].message.split(b"\n\n", 1)[0]
        return "queued, tagged as spam" if b"\nX-Spam-Flag: YES" in head else "queued"
    if quarantined:
        return "quarantined: " + next(iter(quarantined)).parent.parent.name
    return f"not queued (exit {result.exit_code})"


def added_headers(queued: bytes, original: bytes) -> list[str]:
    """The header lines we put above the message as it arrived."""
    head = queued[: len(queued) - len(original)] if queued.endswith(original) else queued.split(b"\n\n")[0]
    return head.decode("utf-8", "replace").splitlines()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="configure, install and run the sample messages")
    parser.add_argument("--dir", type=Path, default=DEMO, help="where to install the demo (default ./demo)")
    parser.add_argument("--no-daemons", action="store_true", help="do not start clamd and spamd: internal checks only")
    parser.add_argument("--port", type=int, default=demo_console.DEFAULT_PORT,
                        help=f"the console's loopback port (default {demo_console.DEFAULT_PORT}, another when taken)")
    parser.add_argument("--stop", action="store_true", help="stop the demo's console (make demo-stop) and exit")
    options = parser.parse_args(argv)
    demo = options.dir.resolve()
    if options.stop:
        print(demo_console.stop(demo))
        return 0
    demo_console.stop(demo)  # a console left by the last demo serves from the directory removed next
    if demo.exists():
        shutil.rmtree(demo)
    (demo / "bin").mkdir(parents=True)
    sink = build_standin(demo / "bin")
    demo_sink = sink.rename(demo / "bin" / "qmail-queue-demo-sink")
    inject = write_inject_sink(demo / "bin" / "qmail-inject-demo-sink", demo / "alerts")
    scanner_args, handles = start_daemons(not options.no_daemons)
    scanners = {handle.program for handle in handles}
    try:
        print(f"== configure (local install into {shown(demo)}, next hop = the qmail-queue demo sink)")
        installation = install(
            demo,
            demo_sink,
            *(scanner_args or ["--scanners", "none"]),
            "--log-details", "mailstats",
            "--qmail-inject-binary", str(inject),
            "--notify", "admin",  # the default of a new install (the test harness would otherwise say none)
            "--admin", "postmaster",
            "--domain", "example.com",
            "--local-domains", "example.com",
        )  # fmt: skip
        print(installation.configure_output.strip())
        if not scanner_args:
            print("\nNote: no clamd/spamd here, so only the internal checks run: the EICAR sample is blocked")
            print("for its .com name, not named as a virus (install clamav-daemon and spamd to see them work).")
        print()
        outcomes = []
        for sample in sorted(SAMPLES.glob("*.eml")):
            before = quarantine_contents(installation)
            raw = envelope("alice@example.org", "bob@example.com")
            result = installation.run(sample.read_bytes(), raw, env={"TCPREMOTEIP": "192.0.2.10"})
            reply = smtp_reply(result.exit_code, result.custom_error)
            quarantined = quarantine_contents(installation) - before
            meant, said = expected(sample.name, scanners)
            got = outcome(result, quarantined)
            outcomes.append((sample.name, result.exit_code, reply, got, meant))
            print(f"== {sample.name}")
            print(f"   {said}")
            print(f"   exit {result.exit_code}; qmail-smtpd answers: {reply}")
            print(f"   {describe_landing(installation, result, quarantined)}; {result.seconds * 1000:.0f} ms")
            if got != meant:
                print(f"   NOT AS SAID ABOVE: {got}")
            if result.queued:
                print("   " + "\n   ".join(added_headers(result.queued[0].message, sample.read_bytes())))
            if result.stderr.strip():
                print(f"   log: {result.stderr.strip()}")
            print()
        show_logs(installation)
        show_alerts(demo)
        show_report(installation, demo)
        print("== summary")
        for name, code, reply, got, meant in outcomes:
            mark = "" if got == meant else f"   <- said: {meant}"
            print(f"   {name:28} exit {code:3}  {reply[:24]:24}  {got}{mark}")
        print()
        console_agrees = show_console(demo, installation, {name: got for name, _, _, got, _ in outcomes}, options.port)
    finally:
        for handle in handles:
            handle.remove()
    return 0 if console_agrees and all(got == meant for *_, got, meant in outcomes) else 1


def show_console(demo: Path, installation, outcomes: dict[str, str], port: int) -> bool:
    """Start the console over the demo's records; print its address, login and each sample as it shows it."""
    missing = demo_console.available()
    if missing:
        print(f"== console not started: {missing}")
        return True
    parser = email.parser.BytesHeaderParser()
    samples = {str(parser.parsebytes(path.read_bytes())["Message-ID"]): path.name for path in SAMPLES.glob("*.eml")}
    try:
        console = demo_console.start(demo, installation.spool, installation.prefix / "bin" / "qs-quarantine",
                                     samples, port)
    except (demo_console.ConsoleProblem, OSError, ValueError) as problem:
        print(f"== console not started: {problem}")
        return False
    home = demo_console.directory(demo)
    print(f"== console: {console.url}  (qs-console serve, pid {console.pid}; data in {shown(home / 'data')}, "
          f"log {shown(home / 'serve.log')})")
    print(f"   user: {console.user}  password: {console.password}  (generated for this demo, shown only here)")
    print("   stop it with: make demo-stop")
    print("   the demo's messages as the console shows them (read back through its API):")
    agree = len(console.messages) == len(outcomes)
    for message in console.messages:
        mark = ""
        if outcomes.get(message.sample) != message.outcome:
            mark, agree = f"   <- the demo saw: {outcomes.get(message.sample, 'no such sample')}", False
        reason = f" ({message.reason})" if message.reason else ""
        print(f"   {message.sample:28} message {message.console_id:<3} {message.outcome}{reason}{mark}")
    if len(console.messages) != len(outcomes):
        print(f"   THE CONSOLE HAS {len(console.messages)} MESSAGES, the demo ran {len(outcomes)}")
    return agree


def write_inject_sink(path: Path, directory: Path) -> Path:
    """The qmail-inject demo sink: stores each alert it is given as a file, sends nothing."""
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"#!{sys.executable} -I\n"
        '"""qmail-inject demo sink: keeps alerts in a directory instead of sending them."""\n'
        "import os, sys\n"
        f"target = os.path.join({str(directory)!r}, f'alert-{{os.getpid()}}.eml')\n"
        "with open(target, 'wb') as alert:\n"
        "    alert.write(sys.stdin.buffer.read())\n"
    )
    path.chmod(0o755)
    return path


def show_alerts(demo: Path) -> None:
    alerts = sorted((demo / "alerts").glob("*.eml"))
    print(f"== alerts: {len(alerts)} handed to qmail-inject (the demo sink keeps them in {shown(demo / 'alerts')})")
    if alerts:
        text = alerts[0].read_text(errors="replace")
        print("   first one:")
        print("   " + "\n   ".join(text.splitlines()[:24]))
    print()


def show_report(installation, demo: Path) -> None:
    page = demo / "report.html"
    result = subprocess.run(
        [sys.executable, str(ROOT / "contrib" / "qs-report"), "--spooldir", str(installation.spool), "-o", str(page)],
        capture_output=True, text=True, check=False,
    )
    if result.returncode == 0:
        print(f"== report page: {shown(page)} (open it in a browser)")
    else:
        print(f"== report page not written: {result.stderr.strip()}")
    print()


def show_logs(installation) -> None:
    for name in ("quarantine.log", "mailstats.csv"):
        path = installation.spool / name
        if path.exists() and path.stat().st_size:
            print(f"== {shown(path)}")
            print(path.read_text(errors="replace").rstrip())
            print()
    tool = ROOT / "contrib" / "qs-quarantine"
    if tool.exists():
        print("== contrib/qs-quarantine list")
        listing = subprocess.run(
            [sys.executable, str(tool), "--spooldir", str(installation.spool), "list"],
            capture_output=True, text=True, check=False,
        )
        print((listing.stdout + listing.stderr).rstrip())
        print()


if __name__ == "__main__":
    sys.exit(main())
