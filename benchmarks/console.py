#!/usr/bin/env python3
"""qs-console: the loader's rate and the API's search times over many records, on SQLite and PostgreSQL.

    benchmarks/console.py [--load 100000] [--search 1000000] [--postgresql-search]

`--load` records (format 1, made here, like a mail host's mix) are loaded by `qs-console load --once` into an empty
SQLite file and into a private PostgreSQL 15 cluster (fsync on): records per second, target 1,000. The SQLite database
is then filled to `--search` records and served by `qs-console serve`; each search the API offers is timed over HTTP
(the median of 5, after one warm-up), target 300 ms. `--postgresql-search` does the same on PostgreSQL (slower to fill).
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests")]

from console_fixtures import (  # noqa: E402
    ADMIN_PASSWORD,
    USER_PASSWORD,
    Client,
    Console,
    api_answers,
    console_ready,
    free_port,
    make_record,
    record_line,
    start_private_postgres,
    stop,
    wait_for,
)

LOAD_TARGET = 1000.0
SEARCH_TARGET = 0.300
FILE_RECORDS = 100_000
OUTCOMES = ["delivered"] * 90 + ["quarantined"] * 5 + ["rejected"] * 4 + ["tempfail"]
T0 = 1_700_000_000


def mix_record(number: int, chooser: random.Random) -> dict:
    """A record of a plausible mix: 50,000 senders in 2,000 domains; a third of the recipients are the host's own
    200 users of example.org (a big domain, busy addresses), the rest 20,000 in 500 domains; one in 3 to two."""
    recipients = [f"user{chooser.randrange(200)}@example.org" if chooser.random() < 0.3
                  else f"u{chooser.randrange(20000)}@dom{chooser.randrange(500)}.example"
                  for _ in range(1 + (number % 3 == 0))]
    return make_record(number, host=f"mx{number % 4}.example.net", time=T0 + number * 30,
                       sender=f"s{chooser.randrange(50000)}@d{chooser.randrange(2000)}.example",
                       recipients=recipients, outcome=chooser.choice(OUTCOMES),
                       subject=f"subject {chooser.randrange(10**6)} words here",
                       client_ip=f"10.{number % 200}.{(number // 200) % 250}.{number % 7}")


def write_ready(console: Console, first: int, count: int) -> None:
    """Records first..first+count-1 as settled ready files of FILE_RECORDS lines."""
    ready = console.records / "ready"
    ready.mkdir(parents=True, exist_ok=True)
    chooser = random.Random(first)
    for start in range(first, first + count, FILE_RECORDS):
        end = min(start + FILE_RECORDS, first + count)
        name = f"{time.time_ns() - 10**11:020d}-{start}.jsonl"
        (ready / name).write_bytes(b"".join(record_line(mix_record(number, chooser)) for number in range(start, end)))


def timed_load(console: Console, first: int, count: int) -> float:
    """Records per second of one `load --once` over `count` new records."""
    write_ready(console, first, count)
    started = time.monotonic()
    console.run("load", "--once", "--settle", "0", timeout=7200)
    seconds = time.monotonic() - started
    assert console.count() == first + count, (console.count(), first + count)
    return count / seconds


def searches(console: Console, total: int) -> list[tuple[str, str, dict]]:
    """(who, what, query) for each search the API offers, with values taken from a message in the middle."""
    middle_id = total // 2  # ids count from 1 in the benchmark's fresh databases
    sender, client_ip, subject = console.query(f"SELECT sender_key, client_ip, subject FROM console_message "
                                               f"WHERE id = {middle_id}")[0]
    rare = console.query(f"SELECT address_key FROM console_recipient WHERE message_id >= {middle_id} "
                         f"AND domain <> 'example.org' ORDER BY message_id LIMIT 1")[0][0]
    middle = T0 + total // 2 * 30
    return [
        ("admin", "newest 50", {}),
        ("admin", "outcome=quarantined", {"outcome": "quarantined"}),
        ("admin", "outcome=tempfail (rare)", {"outcome": "tempfail"}),
        ("admin", "sender (address)", {"sender": sender}),
        ("admin", "sender (@domain)", {"sender": "@" + sender.rpartition("@")[2]}),
        ("admin", "recipient (an address with few)", {"recipient": rare}),
        ("admin", "recipient (a busy address)", {"recipient": "user7@example.org"}),
        ("admin", "recipient (@domain, 500 in the mix)", {"recipient": "@dom7.example"}),
        ("admin", "recipient (@domain, a third of all)", {"recipient": "@example.org"}),
        ("admin", "busy address + outcome=quarantined", {"recipient": "user7@example.org", "outcome": "quarantined"}),
        ("admin", "client_ip", {"client_ip": client_ip}),
        ("admin", "host", {"host": "mx2.example.net"}),
        ("admin", "since..until (one day)", {"since": str(middle), "until": str(middle + 86400)}),
        ("admin", "q (subject, common)", {"q": "words"}),
        ("admin", "q (subject, one number)", {"q": subject.split()[1] + " words"}),
        ("admin", "outcome+host+day", {"outcome": "quarantined", "host": "mx1.example.net", "since": str(middle),
                                       "until": str(middle + 86400)}),
        ("recipient", "a recipient's own list", {}),
        ("recipient", "a recipient's own, outcome=quarantined", {"outcome": "quarantined"}),
        ("admin", "stats: 30 days (charts)", {"since": str(middle - 30 * 86400), "until": str(middle), "stats": "1"}),
        ("admin", "stats: one day, per hour (charts)", {"since": str(middle), "until": str(middle + 86400),
                                                        "stats": "1"}),
        ("recipient", "stats: a recipient's 30 days (charts)", {"since": str(middle - 30 * 86400),
                                                                "until": str(middle), "stats": "1"}),
    ]


def time_searches(console: Console, total: int) -> list[tuple[str, float, int]]:
    """Serve the console and time each search over HTTP: (what, median seconds, items)."""
    console.run("createuser", "admin", "--admin", stdin=ADMIN_PASSWORD + "\n", check=False)
    console.run("createuser", "reader", "--recipient", "user7@example.org", stdin=USER_PASSWORD + "\n", check=False)
    port = free_port()
    server = console.start("serve", "--listen", f"127.0.0.1:{port}")
    try:
        wait_for(lambda: api_answers(port), 60, "qs-console serve")
        clients = {"admin": Client(port), "recipient": Client(port)}
        clients["admin"].login("admin", ADMIN_PASSWORD)
        clients["recipient"].login("reader", USER_PASSWORD)
        results = []
        for who, what, query in searches(console, total):
            # The charts' numbers (GET /api/stats) are timed the same way; their item count is the messages counted.
            path = "/api/stats" if query.pop("stats", "") else "/api/messages"
            clients[who].get(path, **query)
            times = []
            for _ in range(5):
                started = time.monotonic()
                status, answer, _ = clients[who].get(path, **query)
                times.append(time.monotonic() - started)
                assert status == 200, answer
            items = answer["count"] if "count" in answer else sum(answer["totals"].values())
            results.append((what, statistics.median(times), items))
        return results
    finally:
        stop(server)


def report_searches(kind: str, total: int, results: list[tuple[str, float, int]]) -> bool:
    print(f"\nsearch over {total:,} records on {kind} (GET /api/messages, median of 5, target "
          f"{SEARCH_TARGET * 1000:.0f} ms)")
    for what, seconds, items in results:
        flag = "" if seconds <= SEARCH_TARGET else "   OVER TARGET"
        print(f"  {what:42s} {seconds * 1000:8.1f} ms  {items:3d} items{flag}")
    return all(seconds <= SEARCH_TARGET for _, seconds, _ in results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", type=int, default=100_000)
    parser.add_argument("--search", type=int, default=1_000_000)
    parser.add_argument("--postgresql-search", action="store_true")
    arguments = parser.parse_args()
    console_ready_or_exit()
    work = Path(tempfile.mkdtemp(prefix="qs-console-bench-"))
    cluster = start_private_postgres(fsync=True)
    good = True
    try:
        consoles = {"SQLite": Console(data_dir=work / "sqlite", spooldir=work / "spool-sqlite")}
        database = cluster.new_database("qsbench")
        consoles["PostgreSQL"] = Console(data_dir=work / "pg", spooldir=work / "spool-pg", db_url=database.url,
                                         database=database)
        for kind, console in consoles.items():
            console.records.mkdir(parents=True)
            console.run("migrate", "--db", console.db_url, "--spooldir", str(console.spooldir))
            rate = timed_load(console, 0, arguments.load)
            good &= rate >= LOAD_TARGET
            print(f"loader on {kind}: {arguments.load:,} records into an empty database at {rate:,.0f} records/s "
                  f"(target {LOAD_TARGET:,.0f})", flush=True)
        for kind, console in consoles.items():
            if kind == "PostgreSQL" and not arguments.postgresql_search:
                continue
            if arguments.search > arguments.load:
                rate = timed_load(console, arguments.load, arguments.search - arguments.load)
                print(f"loader on {kind}: filled to {arguments.search:,} records at {rate:,.0f} records/s", flush=True)
            good &= report_searches(kind, arguments.search, time_searches(console, arguments.search))
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("\nall within target" if good else "\nSOME OVER TARGET")
    return 0 if good else 1


def console_ready_or_exit() -> None:
    try:
        console_ready()
    except pytest.skip.Exception as skipped:
        print(f"console_bench: {skipped}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    sys.exit(main())
