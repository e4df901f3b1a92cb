#!/usr/bin/env python3
"""make demo: configure into ./demo, install there, run the sample messages, show the outcome.

No root setup and no qmail: the next hop is the qmail-queue demo sink (the test stand-in,
which keeps qmail-queue's envelope grammar and exit codes) storing queued mail in demo/queue.
When clamd and spamd are installed, private instances are started for the demo on private
sockets, clamd with a test signature database (EICAR), and stopped at the end.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from harness import build_standin, envelope, install, smtp_reply  # noqa: E402

DEMO = ROOT / "demo"
SAMPLES = ROOT / "contrib" / "demo" / "samples"


def start_daemons() -> tuple[list[str], list]:
    """Private clamd/spamd for the demo when installed; returns configure args and the servers."""
    from daemons import ClamdServer, SpamdServer

    scanners, args, servers = [], [], []
    for name, server_class, extra in (
        ("clamd", ClamdServer, []),
        ("spamd", SpamdServer, ["--sa-quarantine", "5", "--sa-subject", "[SPAM]"]),
    ):
        if not (shutil.which(name) or Path("/usr/sbin", name).exists()):
            continue
        try:
            server = server_class(f"demo-{name}").start()
        except Exception as error:  # the demo goes on with what works
            print(f"({name} did not start: {error})")
            continue
        servers.append(server)
        scanners.append(name)
        args += [f"--{name}-servers", server.socket_path, *extra]
        print(f"started a private {name} for the demo on {server.socket_path}")
    if not scanners:
        return [], servers
    return ["--scanners", ",".join(scanners), *args], servers


def quarantine_contents(installation) -> set[Path]:
    found = set()
    for kind in ("viruses", "policy", "spam"):
        directory = installation.spool / "quarantine" / kind / "new"
        if directory.exists():
            found.update(directory.iterdir())
    return found


def describe_landing(installation, result, quarantined: set[Path]) -> str:
    if result.queued:
        return f"queued by the next hop ({len(result.queued)} copy) in {installation.sink.relative_to(ROOT)}"
    if quarantined:
        return f"quarantined as {next(iter(quarantined)).relative_to(ROOT)}"
    return "not queued (the sender is told by the SMTP reply)"


def added_headers(queued: bytes, original: bytes) -> list[str]:
    """The header lines we put above the message as it arrived."""
    head = queued[: len(queued) - len(original)] if queued.endswith(original) else queued.split(b"\n\n")[0]
    return head.decode("utf-8", "replace").splitlines()


def main() -> int:
    if DEMO.exists():
        shutil.rmtree(DEMO)
    (DEMO / "bin").mkdir(parents=True)
    sink = build_standin(DEMO / "bin")
    demo_sink = sink.rename(DEMO / "bin" / "qmail-queue-demo-sink")
    inject = write_inject_sink(DEMO / "bin" / "qmail-inject-demo-sink", DEMO / "alerts")
    scanner_args, handles = start_daemons()
    try:
        print("== configure (local install into ./demo, next hop = the qmail-queue demo sink)")
        installation = install(
            DEMO,
            demo_sink,
            *(scanner_args or ["--scanners", "none"]),
            "--log-details", "mailstats",
            "--qmail-inject-binary", str(inject),
            "--notify", "psender,admin",
            "--admin", "postmaster",
            "--domain", "example.com",
            "--local-domains", "example.com",
        )
        print(installation.configure_output.strip())
        if not scanner_args:
            print("\nNote: no clamd/spamd found, so only the internal checks run: the EICAR sample")
            print("passes unless an internal policy rule catches it (install clamav-daemon to see it blocked).")
        print()
        outcomes = []
        for sample in sorted(SAMPLES.glob("*.eml")):
            before = quarantine_contents(installation)
            raw = envelope("alice@example.org", "bob@example.com")
            result = installation.run(sample.read_bytes(), raw, env={"TCPREMOTEIP": "192.0.2.10"})
            reply = smtp_reply(result.exit_code, result.custom_error)
            landing = describe_landing(installation, result, quarantine_contents(installation) - before)
            outcomes.append((sample.name, result.exit_code, reply, landing))
            print(f"== {sample.name}")
            print(f"   exit {result.exit_code}; qmail-smtpd answers: {reply}")
            print(f"   {landing}; {result.seconds * 1000:.0f} ms")
            if result.queued:
                print("   " + "\n   ".join(added_headers(result.queued[0].message, sample.read_bytes())))
            if result.stderr.strip():
                print(f"   log: {result.stderr.strip()}")
            print()
        show_logs(installation)
        show_alerts()
        show_report(installation)
        print("== summary")
        for name, code, reply, landing in outcomes:
            short = landing.split(" (")[0].split(" in ")[0]
            if landing.startswith("quarantined as"):
                short = "quarantined: " + landing.split("/quarantine/")[1].split("/")[0]
            print(f"   {name:28} exit {code:3}  {reply[:24]:24}  {short}")
    finally:
        for handle in handles:
            handle.remove()
    return 0


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


def show_alerts() -> None:
    alerts = sorted((DEMO / "alerts").glob("*.eml"))
    print(f"== alerts: {len(alerts)} handed to qmail-inject (the demo sink keeps them in demo/alerts)")
    if alerts:
        text = alerts[0].read_text(errors="replace")
        print("   first one:")
        print("   " + "\n   ".join(text.splitlines()[:24]))
    print()


def show_report(installation) -> None:
    page = DEMO / "report.html"
    result = subprocess.run(
        [sys.executable, str(ROOT / "contrib" / "qs-report"), "--spooldir", str(installation.spool), "-o", str(page)],
        capture_output=True, text=True, check=False,
    )
    if result.returncode == 0:
        print(f"== report page: {page.relative_to(ROOT)} (open it in a browser)")
    else:
        print(f"== report page not written: {result.stderr.strip()}")
    print()


def show_logs(installation) -> None:
    for name in ("quarantine.log", "mailstats.csv"):
        path = installation.spool / name
        if path.exists() and path.stat().st_size:
            print(f"== {path.relative_to(ROOT)}")
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
