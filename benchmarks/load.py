#!/usr/bin/env python3
"""make load: N concurrent senders x M messages through the installed program, with faults, then an accounting.

Each sender behaves like qmail-smtpd plus a patient SMTP client: it hands its messages to the
program one at a time and retries a temporary failure (up to --retries times). Faults are
injected at random (--fault-rate): the next hop refusing temporarily or dying, the caller
vanishing before the envelope, the program killed while the message streams in. With clamd
available (a private instance, as the tests start it) viruses go through real scanning.

Afterwards every message must be in exactly one place with identical bytes: queued (the
stand-in's sink), quarantined (viruses or policy), rejected permanently, or still temp-failed
after all retries (reported, never silently lost). Prints throughput and p50/p99 latency.
"""

from __future__ import annotations

import argparse
import base64
import collections
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "lib")]

from harness import build_standin, caller_files, envelope, install, smtp_reply, strip_added_headers  # noqa: E402

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
FAULTS = ("next-hop-tempfail", "next-hop-dies", "caller-vanishes", "killed-while-streaming")


def build_message(message_id: str, rng: random.Random, with_virus: bool) -> tuple[str, bytes]:
    """(expected fate, message): clean text, clean attachment, policy block, or a virus."""
    head = (f"Received: from client by mx\nFrom: sender@example.org\nTo: rcpt@example.com\n"
            f"Subject: load {message_id}\nX-Load-Id: {message_id}\nMIME-Version: 1.0\n").encode()
    kinds = ["text", "text", "text", "attachment", "policy"] + (["virus"] if with_virus else [])
    kind = rng.choice(kinds)
    if kind == "text":
        return "queued", head + b"\n" + b"Hello, this is a plain message.\n" * rng.randrange(1, 400)
    payloads = {
        "attachment": ("report.pdf", b"%PDF-1.4\n" + rng.randbytes(rng.randrange(100, 200_000))),
        "policy": ("setup.exe", b"MZ\x90\x00" + rng.randbytes(5000)),
        "virus": ("eicar.com", EICAR),
    }
    name, payload = payloads[kind]
    body = (
        b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\nsee attached\n'
        b"--b\nContent-Type: application/octet-stream; name=\"" + name.encode() + b"\"\n"
        b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(payload) + b"--b--\n"
    )
    fate = {"attachment": "queued", "policy": "quarantined:policy", "virus": "quarantined:viruses"}[kind]
    return fate, head + body


def run_once(installation, message: bytes, env: dict[str, str], caller_vanishes: bool) -> tuple[int, str]:
    """One run as qmail-smtpd does it; safe to call from many threads (every fd closed exactly once)."""
    import subprocess

    raw_envelope = b"" if caller_vanishes else envelope("sender@example.org", "rcpt@example.com")
    with caller_files(message, raw_envelope) as (message_file, envelope_file):
        error_read, error_write = os.pipe()
        child_env = {"PATH": "/usr/bin:/bin", "QQ_STANDIN_DIR": str(installation.sink), **caller_env(installation, env)}
        try:
            process = subprocess.Popen(
                caller_command(installation), stdin=message_file, stdout=envelope_file, stderr=subprocess.DEVNULL,
                env=child_env,
                close_fds=False, preexec_fn=lambda: become_caller(installation, error_write),
            )
        finally:
            os.close(error_write)
        try:
            custom_error = b""
            while chunk := os.read(error_read, 4096):
                custom_error += chunk
        finally:
            os.close(error_read)
        code = process.wait(300)
    return code, smtp_reply(code, custom_error)


def caller_command(installation) -> list[str]:
    """The program itself, or with --engine the setuid wrapper (the engine's client)."""
    wrapper = getattr(installation, "wrapper", None)
    return [str(wrapper or installation.program)]


def caller_env(installation, env: dict[str, str]) -> dict[str, str]:
    """The wrapper passes only QS_* on: the test next hop turns QS_TEST_STANDIN_* back into the stand-in's."""
    if getattr(installation, "wrapper", None) is None:
        return env
    return {name.replace("QQ_STANDIN_", "QS_TEST_STANDIN_"): value for name, value in env.items()}


def become_caller(installation, error_write: int) -> None:
    """fd 6 as qmail-smtpd offers it; with --engine also qmail-smtpd's unprivileged account."""
    os.dup2(error_write, 6)
    if getattr(installation, "wrapper", None) is not None:
        from security_fixtures import caller_ids

        uid, gid = caller_ids()
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)


class Sender(threading.Thread):
    """One SMTP client's worth of messages, retried on temporary failures."""

    def __init__(self, number: int, installation, args, with_virus: bool, results: dict, lock) -> None:
        super().__init__(daemon=True)
        self.number = number
        self.installation = installation
        self.args = args
        self.rng = random.Random(args.seed * 1000 + number)
        self.with_virus = with_virus
        self.results = results
        self.lock = lock

    def run(self) -> None:
        for index in range(self.args.messages):
            message_id = f"{self.number:03d}-{index:05d}"
            fate, message = build_message(message_id, self.rng, self.with_virus)
            record = {"expected": fate, "message": message, "attempts": 0, "faults": [], "final": "", "latency": []}
            for _attempt in range(self.args.retries + 1):
                fault = self.rng.choice(FAULTS) if self.rng.random() < self.args.fault_rate else ""
                record["attempts"] += 1
                started = time.monotonic()
                code, reply = self.attempt(message, fault)
                record["latency"].append(time.monotonic() - started)
                if fault:
                    record["faults"].append(fault)
                if code == 0:
                    record["final"] = "accepted"
                    break
                if reply.startswith("554"):
                    record["final"] = "rejected"
                    break
                record["final"] = "temp-failed"
            with self.lock:
                self.results[message_id] = record

    def attempt(self, message: bytes, fault: str) -> tuple[int, str]:
        if fault == "killed-while-streaming":
            return self.kill_while_streaming(message)
        env = {}
        if fault == "next-hop-tempfail":
            env["QQ_STANDIN_EXIT"] = "71"
        elif fault == "next-hop-dies":
            env["QQ_STANDIN_DIE"] = "1"
        return run_once(self.installation, message, env, caller_vanishes=fault == "caller-vanishes")

    def kill_while_streaming(self, message: bytes) -> tuple[int, str]:
        """SIGKILL the program after part of the message: the envelope never comes, nothing may be queued."""
        import subprocess

        message_read, message_write = os.pipe()
        envelope_read, envelope_write = os.pipe()
        process = subprocess.Popen(
            caller_command(self.installation), stdin=message_read, stdout=envelope_read, stderr=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "QQ_STANDIN_DIR": str(self.installation.sink)},
        )
        os.close(message_read)
        os.close(envelope_read)
        try:
            os.write(message_write, message[: self.rng.randrange(1, len(message))][:60000])
            time.sleep(self.rng.uniform(0.0, 0.05))
            process.send_signal(signal.SIGKILL)
            process.wait(60)
        finally:
            os.close(message_write)
            os.close(envelope_write)
        return -9, "451 qq crashed"


def account(installation, results: dict) -> dict:
    """Find every message in the sink and the quarantine by its X-Load-Id; check bytes and uniqueness."""
    places: dict[str, list[tuple[str, bytes]]] = collections.defaultdict(list)
    for path in installation.sink.glob("*.msg"):
        data = path.read_bytes()
        body = strip_added_headers(data)
        places[_load_id(body)].append(("queued", body))
        if path.with_suffix(".env").read_bytes() != envelope("sender@example.org", "rcpt@example.com"):
            places[_load_id(body)].append(("bad-envelope", b""))
    for kind in ("viruses", "policy", "spam"):
        for path in (installation.spool / "quarantine" / kind / "new").iterdir():
            data = path.read_bytes()
            places[_load_id(data)].append((f"quarantined:{kind}", data))
    problems = []
    tally: collections.Counter = collections.Counter()
    for message_id, record in results.items():
        found = places.pop(message_id, [])
        if record["final"] == "accepted":
            if len(found) != 1:
                problems.append(f"{message_id}: accepted but found {len(found)} times: {[p for p, _ in found]}")
                continue
            place, data = found[0]
            intact = data == record["message"] if place == "queued" else data.endswith(record["message"])
            if not intact:
                problems.append(f"{message_id}: {place} copy differs from what was sent")
            if place != record["expected"]:
                problems.append(f"{message_id}: expected {record['expected']}, found {place}")
            tally[place] += 1
        else:
            if found:
                problems.append(f"{message_id}: {record['final']} but stored as {[p for p, _ in found]}")
            tally[record["final"]] += 1
    for message_id, found in places.items():
        problems.append(f"{message_id}: stored but never sent ({[p for p, _ in found]})")
    return {"tally": tally, "problems": problems}


def _load_id(data: bytes) -> str:
    marker = data.find(b"\nX-Load-Id: ")
    if marker < 0:
        return "?"
    end = data.find(b"\n", marker + 1)
    return data[marker + 12 : end].decode()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=20)
    parser.add_argument("--messages", type=int, default=200, help="messages per sender")
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--retries", type=int, default=5)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--no-clamd", action="store_true", help="internal checks only")
    parser.add_argument(
        "--engine", action="store_true",
        help="through the resident engine: the setuid wrapper as its client, run as nobody (root only)",
    )
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="qs-load-"))
    clamd = None
    engine = None
    engine_counts: dict = {}
    try:
        standin = build_standin(workdir)
        options: list[str] = []
        if not args.no_clamd and shutil.which("clamd"):
            from daemons import ClamdServer

            clamd = ClamdServer("clamd-load").start()
            options = ["--scanners", "clamd", "--clamd-servers", clamd.socket_path, "--skip-text-msgs", "no"]
        if args.engine:
            from engine_fixtures import Engine
            from security_fixtures import install_wrapped

            installation = install_wrapped(*options)
            engine = Engine(installation).start()
        else:
            installation = install(workdir / "qs", standin, *options)
        results: dict = {}
        lock = threading.Lock()
        senders = [Sender(n, installation, args, clamd is not None, results, lock) for n in range(args.senders)]
        started = time.monotonic()
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        elapsed = time.monotonic() - started
        if engine is not None:
            engine_counts = engine.status()
            engine.stop()
        accounting = account(installation, results)
        import subprocess

        subprocess.run([str(installation.program), "-z"], capture_output=True, check=False)  # the daily cleanup
        leftovers = installation.work_files()
    finally:
        if engine is not None:
            engine.stop()
        if clamd:
            clamd.remove()
    latencies = [value for record in results.values() for value in record["latency"]]
    attempts = sum(record["attempts"] for record in results.values())
    faults = collections.Counter(fault for record in results.values() for fault in record["faults"])
    print(f"load: {args.senders} senders x {args.messages} messages, clamd {'yes' if clamd else 'no'}, "
          f"{'through the engine' if args.engine else 'standalone'}, "
          f"fault rate {args.fault_rate}, seed {args.seed}")
    print(f"messages {len(results)}, attempts {attempts} in {elapsed:.1f} s: "
          f"{len(results) / elapsed:.1f} messages/s, {attempts / elapsed:.1f} runs/s")
    print(f"latency per run: p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
          f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, mean {statistics.fmean(latencies) * 1000:.0f} ms")
    print("faults injected: " + (", ".join(f"{name} {count}" for name, count in faults.items()) or "none"))
    print("where every message is: " + ", ".join(f"{name} {count}" for name, count in accounting["tally"].items()))
    if args.engine:
        print(f"engine: served {engine_counts.get('served')}, restarts {engine_counts.get('restarts')}")
    print(f"work files left: {len(leftovers)}")
    for problem in accounting["problems"][:20]:
        print(f"PROBLEM {problem}")
    shutil.rmtree(workdir, ignore_errors=True)
    if args.engine:
        installation.remove()  # its own public dir under /tmp (the wrapper's callers must reach it)
    ok = not accounting["problems"] and not leftovers and len(results) == args.senders * args.messages
    print("accounting: every message in exactly one place, bytes identical" if ok else "accounting: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
