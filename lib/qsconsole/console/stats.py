"""Numbers for the charts: messages per day (or hour) per outcome, the top viruses, policy rules and spam sender
domains, the spam score histogram, bytes per outcome and scanner times, over a time range, for what a user may see.

The numbers come from two aggregate queries over the range (the time index bounds it) and the scanner times from the
newest SCANNER_SAMPLE records of the range (their JSON lists aggregate differently on each database).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

from django.db import connection
from django.db.models import Case, Count, IntegerField, Sum, TextField, Value, When
from django.db.models.functions import Cast, Coalesce, Floor, NullIf, Substr, TruncDay, TruncHour
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from qsconsole.console.api import BadQuery, authenticated, error, parse_time, visible
from qsconsole.console.models import OUTCOMES, Profile

DEFAULT_DAYS = 30
LONGEST = timedelta(days=400)
HOURLY_UP_TO = timedelta(days=2)
TOP = 10
SCANNER_SAMPLE = 5000
# Spam score bins: below 0, then one per whole point up to SCORE_TOP, then SCORE_TOP and over.
SCORE_TOP = 20
# A finding's rule names it (a virus's name, a policy rule); an older record without one has only its reason.
RULE_OR_REASON = Coalesce(NullIf("rule", Value("")), "reason", output_field=TextField())


@dataclass
class Counted:
    """One name (a virus, rule, domain, scanner, score bin) and its number."""

    name: str
    count: int
    value: float = 0.0


@dataclass
class Stats:
    """Everything the charts show for one range."""

    since: datetime
    until: datetime
    unit: str  # "day" or "hour"
    host: str
    outcomes: list[str]
    buckets: list[str]  # "YYYY-MM-DD" or "YYYY-MM-DD HH", every one of the range, oldest first
    series: dict[str, list[int]]  # outcome: a count per bucket
    totals: dict[str, int]
    bytes: dict[str, int]
    viruses: list[Counted] = field(default_factory=list)
    policy_rules: list[Counted] = field(default_factory=list)
    spam_domains: list[Counted] = field(default_factory=list)
    spam_scores: list[Counted] = field(default_factory=list)
    scanners: list[Counted] = field(default_factory=list)  # count: messages it answered; value: average seconds
    scanner_sample: int = 0

    def as_json(self) -> dict:
        answer = asdict(self)
        answer["since"], answer["until"] = self.since.timestamp(), self.until.timestamp()
        return answer


def time_range(since: str, until: str) -> tuple[datetime, datetime]:
    """The range from the query's since and until (parse_time's forms); until defaults to now, since to 30 days
    before it. BadQuery for an empty, reversed or over-long range."""
    end = parse_time(until, "until") if until else datetime.now(timezone.utc)
    start = parse_time(since, "since") if since else end - timedelta(days=DEFAULT_DAYS)
    if start >= end:
        raise BadQuery("since must be before until")
    if end - start > LONGEST:
        raise BadQuery(f"the range is at most {LONGEST.days} days")
    return start, end


def bucket_names(start: datetime, end: datetime, unit: str) -> list[str]:
    """Every bucket the range touches, oldest first."""
    step = timedelta(hours=1) if unit == "hour" else timedelta(days=1)
    moment = start.replace(minute=0, second=0, microsecond=0)
    if unit == "day":
        moment = moment.replace(hour=0)
    names = []
    while moment < end:
        names.append(bucket_name(moment, unit))
        moment += step
    return names


def bucket_name(moment: datetime, unit: str) -> str:
    return moment.strftime("%Y-%m-%d %H" if unit == "hour" else "%Y-%m-%d")


def bucket_expression(unit: str):
    """The bucket of a row's time in SQL. SQLite keeps times as 'YYYY-MM-DD HH:MM:SS' text in UTC: a prefix is the
    bucket, without a Python function call per row (Django's Trunc on SQLite is one)."""
    if connection.vendor == "sqlite":
        return Substr("time", 1, 13 if unit == "hour" else 10)
    return (TruncHour if unit == "hour" else TruncDay)("time", tzinfo=timezone.utc)


def score_bin():
    """A row's spam score bin in SQL: -1 below 0, the whole points 0 to SCORE_TOP - 1, SCORE_TOP at or over it, NULL
    without a score. SQLite's CAST truncates (floor, for the scores it is given); PostgreSQL's rounds: FLOOR there."""
    whole = Cast("spam_score", IntegerField()) if connection.vendor == "sqlite" \
        else Cast(Floor("spam_score"), IntegerField())
    return Case(When(spam_score__lt=0, then=Value(-1)), When(spam_score__gte=SCORE_TOP, then=Value(SCORE_TOP)),
                default=whole, output_field=IntegerField())


def compute(profile: Profile, since: str = "", until: str = "", host: str = "") -> Stats:
    """The numbers for the range and host (all hosts when empty) over the messages this user may see.

    Two passes over the range's rows (the time index bounds them) and the scanner sample: counts and bytes per
    bucket, outcome and score bin in one; the findings of every kind in the other.
    """
    start, end = time_range(since, until)
    unit = "hour" if end - start <= HOURLY_UP_TO else "day"
    messages = visible(profile).filter(time__gte=start, time__lt=end)
    if host:
        messages = messages.filter(host=host)
    buckets = bucket_names(start, end, unit)
    position = {name: number for number, name in enumerate(buckets)}
    series: dict[str, list[int]] = {}
    totals: dict[str, int] = {}
    sizes: dict[str, int] = {}
    scores = [0] * (SCORE_TOP + 2)  # below 0, 0 .. SCORE_TOP - 1, SCORE_TOP and over
    rows = (messages.order_by().annotate(bucket=bucket_expression(unit), score=score_bin())
            .values("bucket", "outcome", "score").annotate(count=Count("id"), size=Sum("size")))
    for row in rows:
        bucket = row["bucket"] if isinstance(row["bucket"], str) else bucket_name(row["bucket"], unit)
        counts = series.setdefault(row["outcome"], [0] * len(buckets))
        if bucket in position:
            counts[position[bucket]] += row["count"]
        totals[row["outcome"]] = totals.get(row["outcome"], 0) + row["count"]
        sizes[row["outcome"]] = sizes.get(row["outcome"], 0) + (row["size"] or 0)
        if row["score"] is not None:
            scores[min(max(row["score"], -1), SCORE_TOP) + 1] += row["count"]
    outcomes = [name for name in OUTCOMES if name in totals] + sorted(set(totals) - set(OUTCOMES))
    names = ["below 0", *(str(low) for low in range(SCORE_TOP)), f"{SCORE_TOP}+"]
    found = findings(messages)
    return Stats(since=start, until=end, unit=unit, host=host, outcomes=outcomes, buckets=buckets,
                 series={name: series[name] for name in outcomes}, totals={name: totals[name] for name in outcomes},
                 bytes={name: sizes[name] for name in outcomes},
                 viruses=found["virus"], policy_rules=found["policy"], spam_domains=found["spam"],
                 spam_scores=[Counted(name=name, count=count) for name, count in zip(names, scores)],
                 **scanner_times(messages))


def findings(messages) -> dict[str, list[Counted]]:
    """The TOP viruses and policy rules (by rule, else reason) and sender domains of spam, most frequent first."""
    label = Case(When(kind="spam", then=NullIf("sender_domain", Value(""))), default=RULE_OR_REASON,
                 output_field=TextField())
    rows = (messages.filter(kind__in=["virus", "policy", "spam"]).order_by().annotate(label=label)
            .values("kind", "label").annotate(count=Count("id")))
    found: dict[str, list[Counted]] = {"virus": [], "policy": [], "spam": []}
    for row in rows:
        found[row["kind"]].append(Counted(name=row["label"] or "(none)", count=row["count"]))
    return {kind: sorted(items, key=lambda item: (-item.count, item.name))[:TOP] for kind, items in found.items()}


def scanner_times(messages) -> dict:
    """Average seconds per scanner over the newest SCANNER_SAMPLE messages of the range."""
    seconds: dict[str, list[float]] = {}
    sample = 0
    for scanners in messages.order_by("-time").values_list("scanners", flat=True)[:SCANNER_SAMPLE]:
        sample += 1
        for answer in scanners if isinstance(scanners, list) else []:
            if not isinstance(answer, dict) or not isinstance(answer.get("name"), str):
                continue
            taken = answer.get("seconds")
            if isinstance(taken, (int, float)) and not isinstance(taken, bool) and taken >= 0:
                seconds.setdefault(answer["name"], []).append(float(taken))
    averaged = [Counted(name=name, count=len(times), value=sum(times) / len(times)) for name, times in seconds.items()]
    return {"scanners": sorted(averaged, key=lambda item: (-item.value, item.name)), "scanner_sample": sample}


@require_GET
@authenticated
def stats_api(request: HttpRequest, profile: Profile) -> JsonResponse:
    """GET /api/stats?since=&until=&host=: the chart numbers as JSON."""
    try:
        stats = compute(profile, request.GET.get("since", ""), request.GET.get("until", ""),
                        request.GET.get("host", ""))
    except BadQuery as problem:
        return error(400, str(problem))
    return JsonResponse(stats.as_json())
