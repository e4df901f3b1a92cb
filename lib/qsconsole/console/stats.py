"""Numbers for the charts: messages per day (or hour) per outcome, the top viruses, policy rules and spam sender
domains, the spam score histogram, bytes per outcome and scanner times, over a time range, for what a user may see.

Each number is one aggregate query over the range (the time index bounds it), except the scanner times, which are read
from the newest SCANNER_SAMPLE records of the range (their JSON lists aggregate differently on each database).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

from django.db import connection
from django.db.models import Count, Q, Sum, TextField, Value
from django.db.models.functions import Coalesce, NullIf, Substr, TruncDay, TruncHour
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


def compute(profile: Profile, since: str = "", until: str = "", host: str = "") -> Stats:
    """The numbers for the range and host (all hosts when empty) over the messages this user may see."""
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
    rows = (messages.order_by().annotate(bucket=bucket_expression(unit)).values("bucket", "outcome")
            .annotate(count=Count("id"), size=Sum("size")))
    for row in rows:
        bucket = row["bucket"] if isinstance(row["bucket"], str) else bucket_name(row["bucket"], unit)
        counts = series.setdefault(row["outcome"], [0] * len(buckets))
        if bucket in position:
            counts[position[bucket]] += row["count"]
        totals[row["outcome"]] = totals.get(row["outcome"], 0) + row["count"]
        sizes[row["outcome"]] = sizes.get(row["outcome"], 0) + (row["size"] or 0)
    outcomes = [name for name in OUTCOMES if name in totals] + sorted(set(totals) - set(OUTCOMES))
    return Stats(since=start, until=end, unit=unit, host=host, outcomes=outcomes, buckets=buckets,
                 series={name: series[name] for name in outcomes}, totals={name: totals[name] for name in outcomes},
                 bytes={name: sizes[name] for name in outcomes},
                 viruses=top(messages.filter(kind="virus"), RULE_OR_REASON),
                 policy_rules=top(messages.filter(kind="policy"), RULE_OR_REASON),
                 spam_domains=top(messages.filter(kind="spam"), "sender_domain"),
                 spam_scores=score_histogram(messages),
                 **scanner_times(messages))


def top(messages, name) -> list[Counted]:
    """The TOP most frequent values of `name` (a column or an expression), most frequent first."""
    rows = (messages.order_by().annotate(label=name if not isinstance(name, str) else NullIf(name, Value("")))
            .values("label").annotate(count=Count("id")).order_by("-count", "label")[:TOP])
    return [Counted(name=row["label"] or "(none)", count=row["count"]) for row in rows]


def score_histogram(messages) -> list[Counted]:
    """Messages per spam score bin, in one pass: a conditional count per bin."""
    bins = {"below 0": Q(spam_score__lt=0)}
    for low in range(SCORE_TOP):
        bins[str(low)] = Q(spam_score__gte=low, spam_score__lt=low + 1)
    bins[f"{SCORE_TOP}+"] = Q(spam_score__gte=SCORE_TOP)
    keys = {name: f"bin{number}" for number, name in enumerate(bins)}
    counts = messages.order_by().aggregate(**{keys[name]: Count("id", filter=condition)
                                              for name, condition in bins.items()})
    return [Counted(name=name, count=counts[keys[name]] or 0) for name in bins]


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
