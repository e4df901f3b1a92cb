#!/usr/bin/env python3
"""make demo: configure into ./demo, install there, run the sample messages, show the outcome.

No root setup and no qmail: the next hop is the qmail-queue demo sink (the test stand-in,
which keeps qmail-queue's envelope grammar and exit codes) storing queued mail in demo/queue.
When clamd and spamd are installed, private instances are started for the demo on sockets
under demo/run, with a test signature database (EICAR), and stopped at the end.
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


def start_daemons(run_dir: Path) -> tuple[list[str], list]:
    """Private clamd/spamd for the demo when installed; returns configure args and handles."""
    try:
        from daemons import start_demo_daemons
    except ImportError:
        return [], []
    return start_demo_daemons(run_dir)


def describe_landing(installation, result) -> str:
    if result.queued:
        return f"queued by the next hop ({len(result.queued)} copy) in {installation.sink.relative_to(ROOT)}"
    for kind in ("viruses", "policy", "spam"):
        directory = installation.spool / "quarantine" / kind / "new"
        if directory.exists() and any(directory.iterdir()):
            return f"quarantined in {directory.relative_to(ROOT)}"
    return "not queued (the sender is told by the SMTP reply)"


def main() -> int:
    if DEMO.exists():
        shutil.rmtree(DEMO)
    (DEMO / "bin").mkdir(parents=True)
    sink = build_standin(DEMO / "bin")
    demo_sink = sink.rename(DEMO / "bin" / "qmail-queue-demo-sink")
    scanner_args, handles = start_daemons(DEMO / "run")
    try:
        print("== configure (local install into ./demo, next hop = the qmail-queue demo sink)")
        installation = install(
            DEMO,
            demo_sink,
            *(scanner_args or ["--scanners", "none"]),
            "--log-details", "mailstats",
        )
        print(installation.configure_output.strip())
        if not scanner_args:
            print("\nNote: no clamd/spamd found, so only the internal checks run: the EICAR sample")
            print("passes unless an internal policy rule catches it (install clamav-daemon to see it blocked).")
        print()
        outcomes = []
        for sample in sorted(SAMPLES.glob("*.eml")):
            for kind in ("viruses", "policy", "spam"):
                for stale in (installation.spool / "quarantine" / kind / "new").glob("*"):
                    stale.unlink()
            raw = envelope("alice@example.org", "bob@example.com")
            result = installation.run(sample.read_bytes(), raw, env={"TCPREMOTEIP": "192.0.2.10"})
            reply = smtp_reply(result.exit_code, result.custom_error)
            landing = describe_landing(installation, result)
            outcomes.append((sample.name, result.exit_code, reply, landing))
            print(f"== {sample.name}")
            print(f"   exit {result.exit_code}; qmail-smtpd answers: {reply}")
            print(f"   {landing}; {result.seconds * 1000:.0f} ms")
            if result.queued:
                trace = result.queued[0].message.split(b"\n\n", 1)[0].decode("utf-8", "replace")
                added = [line for line in trace.splitlines() if line.startswith(("X-Qmail", " ", "X-Spam"))]
                print("   " + "\n   ".join(added[:8]))
            if result.stderr.strip():
                print(f"   log: {result.stderr.strip()}")
            print()
        show_logs(installation)
        print("== summary")
        for name, code, reply, landing in outcomes:
            print(f"   {name:28} exit {code:3}  {reply[:60]}")
    finally:
        for handle in handles:
            handle.stop()
    return 0


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
