"""Charts: GET /api/stats counts known records exactly (per day and per hour, per outcome, top lists, the spam score
histogram, bytes, scanner times), by role, on SQLite and PostgreSQL; the /charts page escapes mail's labels."""

from __future__ import annotations

import re

import pytest

from console_fixtures import (
    ADMIN_PASSWORD,
    USER_PASSWORD,
    Client,
    append_record,
    create_users,
    make_record,
    migrated_console,
    serving,
)

T = 1_733_011_200  # 2024-12-01 00:00:00 UTC
HOUR = 3600
HOSTILE_VIRUS = '<svg onload=alert(1)>&Trojan"'
ALICE, BOB = "alice@example.org", "bob@example.org"
# number: (seconds after T, outcome, kind, rule, sender, recipient, spam score, size, host, spamd seconds)
RECORDS = {
    1: (1 * HOUR, "delivered", "", "", "a@friends.example", ALICE, 1.5, 1000, "mx1", 0.5),
    2: (2 * HOUR, "delivered", "spam", "SPAM", "x@spam1.example", BOB, 7.2, 2000, "mx1", 1.0),
    3: (25 * HOUR, "quarantined", "virus", "Eicar-Test-Signature", "v@vir.example", ALICE, -2.0, 3000, "mx2", None),
    4: (26 * HOUR, "quarantined", "virus", HOSTILE_VIRUS, "v@vir.example", BOB, 0.0, 4000, "mx1", None),
    5: (27 * HOUR, "rejected", "virus", "Eicar-Test-Signature", "v@vir.example", BOB, None, 5000, "mx2", None),
    6: (49 * HOUR, "rejected", "policy", "bad-extension", "p@pol.example", ALICE, None, 6000, "mx1", None),
    7: (50 * HOUR, "quarantined", "spam", "SPAM", "y@spam1.example", BOB, 15.0, 7000, "mx1", 1.5),
    8: (50 * HOUR + 1800, "rejected", "spam", "SPAM", "z@Spam2.example", BOB, 25.0, 8000, "mx2", 2.0),
    9: (51 * HOUR, "tempfail", "", "", "t@friends.example", ALICE, None, 9000, "mx1", None),
    # Outside the range: an hour before it, and at its (excluded) end.
    10: (-1 * HOUR, "delivered", "virus", "Outside-Before", "o@out.example", ALICE, 3.0, 10, "mx1", None),
    11: (72 * HOUR, "delivered", "virus", "Outside-After", "o@out.example", ALICE, 3.0, 10, "mx1", None),
}
RANGE = {"since": str(T), "until": str(T + 72 * HOUR)}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request, tmp_path_factory):
    """RECORDS loaded into a console with admin, alice and bob, served on a loopback port."""
    console = migrated_console(request, tmp_path_factory.mktemp(f"charts-{request.param}"), request.param)
    create_users(console, {"alice": [ALICE], "bob": [BOB]})
    for number, (offset, outcome, kind, rule, sender, recipient, score, size, host, spamd) in RECORDS.items():
        scanners = [{"name": "clamd", "answer": "clean", "seconds": number * 0.01}]
        if spamd is not None:
            scanners.append({"name": "spamd", "answer": "scored", "seconds": spamd})
        append_record(console.records, make_record(
            number, host=host, time=float(T + offset), outcome=outcome, kind=kind, rule=rule, sender=sender,
            recipients=[recipient], spam_score=score, size=size, scanners=scanners,
            reason=f"Virus found: {rule}" if kind == "virus" else ""))
    console.run("load", "--once", "--settle", "0")
    assert console.count() == len(RECORDS)
    with serving(console) as port:
        yield port


def stats(port: int, username: str, **query) -> dict:
    client = Client(port)
    assert client.login(username, ADMIN_PASSWORD if username == "admin" else USER_PASSWORD)[0] == 200
    status, answer, _ = client.get("/api/stats", **query)
    assert status == 200, answer
    return answer


def named(items: list[dict]) -> dict[str, int]:
    return {item["name"]: item["count"] for item in items}


def test_an_administrator_gets_exact_counts_per_day(served):
    answer = stats(served, "admin", **RANGE)
    assert answer["unit"] == "day"
    assert answer["buckets"] == ["2024-12-01", "2024-12-02", "2024-12-03"]
    assert answer["outcomes"] == ["delivered", "quarantined", "rejected", "tempfail"]
    assert answer["series"] == {"delivered": [2, 0, 0], "quarantined": [0, 2, 1], "rejected": [0, 1, 2],
                                "tempfail": [0, 0, 1]}
    assert answer["totals"] == {"delivered": 2, "quarantined": 3, "rejected": 3, "tempfail": 1}
    assert answer["bytes"] == {"delivered": 3000, "quarantined": 14000, "rejected": 19000, "tempfail": 9000}
    assert [(item["name"], item["count"]) for item in answer["viruses"]] == [("Eicar-Test-Signature", 2),
                                                                            (HOSTILE_VIRUS, 1)]
    assert named(answer["policy_rules"]) == {"bad-extension": 1}
    assert [(item["name"], item["count"]) for item in answer["spam_domains"]] == [("spam1.example", 2),
                                                                                 ("spam2.example", 1)]
    scores = named(answer["spam_scores"])
    assert {name: count for name, count in scores.items() if count} == {"below 0": 1, "0": 1, "1": 1, "7": 1,
                                                                         "15": 1, "20+": 1}
    assert list(scores)[:3] == ["below 0", "0", "1"] and list(scores)[-1] == "20+" and len(scores) == 22
    scanners = {item["name"]: (item["count"], item["value"]) for item in answer["scanners"]}
    assert scanners["clamd"][0] == 9 and scanners["clamd"][1] == pytest.approx(0.05)
    assert scanners["spamd"][0] == 4 and scanners["spamd"][1] == pytest.approx(1.25)
    assert answer["scanner_sample"] == 9


def test_a_short_range_is_counted_per_hour_and_a_host_filters(served):
    answer = stats(served, "admin", since=str(T + 50 * HOUR), until=str(T + 51 * HOUR + 1))
    assert answer["unit"] == "hour"
    assert answer["buckets"] == ["2024-12-03 02", "2024-12-03 03"]
    assert answer["series"] == {"quarantined": [1, 0], "rejected": [1, 0], "tempfail": [0, 1]}
    answer = stats(served, "admin", host="mx2", **RANGE)
    assert answer["totals"] == {"quarantined": 1, "rejected": 2}
    assert named(answer["viruses"]) == {"Eicar-Test-Signature": 2}
    assert named(answer["spam_domains"]) == {"spam2.example": 1}


def test_a_recipient_counts_only_their_own_messages(served):
    answer = stats(served, "alice", **RANGE)
    assert answer["totals"] == {"delivered": 1, "quarantined": 1, "rejected": 1, "tempfail": 1}
    assert named(answer["viruses"]) == {"Eicar-Test-Signature": 1}
    assert answer["spam_domains"] == []
    assert answer["scanner_sample"] == 4
    answer = stats(served, "bob", **RANGE)
    assert answer["totals"] == {"delivered": 1, "quarantined": 2, "rejected": 2}
    assert named(answer["viruses"]) == {"Eicar-Test-Signature": 1, HOSTILE_VIRUS: 1}


def test_stats_need_a_session_and_a_sensible_range(served):
    assert Client(served).get("/api/stats")[:2] == (401, {"error": "authentication required"})
    client = Client(served)
    client.login("admin", ADMIN_PASSWORD)
    for query in ({"since": "yesterday"}, {"since": str(T + 10), "until": str(T)},
                  {"since": str(T), "until": str(T + 401 * 86400)}):
        status, answer, _ = client.get("/api/stats", **query)
        assert status == 400 and answer["error"], query
    status, answer, _ = client.get("/api/stats")  # the last 30 days by default: none of these records
    assert status == 200 and answer["totals"] == {} and len(answer["buckets"]) in (30, 31)


def test_the_charts_page_draws_svg_and_escapes_a_hostile_virus_name(served):
    client = Client(served)
    client.login("admin", ADMIN_PASSWORD)
    status, page, headers = client.get("/charts", since="2024-12-01", until="2024-12-03")
    assert status == 200
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")
    text = page.decode()
    assert "<svg onload" not in text and 'alert(1)>&Trojan"' not in text
    assert "&lt;svg onload=alert(1)&gt;&amp;Trojan&quot;" in text
    assert text.count('<svg xmlns="http://www.w3.org/2000/svg"') == 7
    # Nothing the policy blocks: no inline script, no style attribute or element.
    assert not re.search(r"<script(?! src=)|<style|<[^>]*\s(style|on\w+)=", text, re.IGNORECASE)
    # The whole of 2024-12-03 is in the range (an "until" date is inclusive): all nine messages, per outcome.
    assert re.search(r'<td class="outcome-rejected">rejected</td><td>3</td><td>19000</td>', text)
    assert '<rect x="' in text and "Eicar-Test-Signature" in text
    status, page, _ = client.get("/charts", since="2024-12-05", until="2024-12-01")
    assert status == 400 and b'id="problem"' in page
