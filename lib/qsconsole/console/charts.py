"""The charts page: stats.py's numbers as inline SVG bar charts drawn here, and the same numbers as tables.

No script and no style attribute (the content security policy allows neither inline): a chart is rectangles and text
with SVG presentation attributes, laid out in Python and written by a template, so every label from mail (a virus
name, a sender domain) goes through autoescaping like any other text on the pages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from qsconsole.console.api import BadQuery
from qsconsole.console.models import Profile
from qsconsole.console.stats import Counted, Stats, compute
from qsconsole.console.views import api_query, page

WIDTH = 760
BAR_HEIGHT = 18
LABEL_WIDTH = 220
LABEL_CHARACTERS = 34
COLUMN_CHART_HEIGHT = 200
MARGIN = 30
COLOURS = {"delivered": "#4a9a5b", "quarantined": "#d8901a", "rejected": "#c23b3b", "dropped": "#7a7a7a",
           "tempfail": "#4f7fc0"}
OTHER_COLOUR = "#a0a0a0"
BAR_COLOUR = "#5b7fa8"


@dataclass
class Rect:
    x: float
    y: float
    width: float
    height: float
    fill: str
    title: str


@dataclass
class Text:
    x: float
    y: float
    text: str
    anchor: str = "start"


@dataclass
class Chart:
    """One SVG drawing: its size, rectangles (each with a tooltip) and text."""

    name: str
    title: str
    width: int
    height: int
    rects: list[Rect] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)


def short(text: str) -> str:
    """A label cut to fit beside its bar (the tooltip and the table keep the whole)."""
    return text if len(text) <= LABEL_CHARACTERS else text[:LABEL_CHARACTERS - 1] + "\u2026"


def stacked_columns(stats: Stats) -> Chart:
    """Messages per bucket, one column each, stacked by outcome, with a legend."""
    count = max(len(stats.buckets), 1)
    top = max([sum(stats.series[name][index] for name in stats.outcomes) for index in range(len(stats.buckets))]
              + [1])
    plot_height = COLUMN_CHART_HEIGHT
    plot_width = WIDTH - 2 * MARGIN
    step = plot_width / count
    chart = Chart("per-time", f"messages per {stats.unit}", WIDTH, plot_height + 60)
    for index, bucket in enumerate(stats.buckets):
        bottom = plot_height + 10
        for name in stats.outcomes:
            value = stats.series[name][index]
            if not value:
                continue
            height = value / top * plot_height
            bottom -= height
            chart.rects.append(Rect(round(MARGIN + index * step, 2), round(bottom, 2), round(max(step - 1, 0.5), 2),
                                    round(height, 2), COLOURS.get(name, OTHER_COLOUR), f"{bucket}: {value} {name}"))
    chart.texts.append(Text(MARGIN - 4, 20, str(top), "end"))
    chart.texts.append(Text(MARGIN - 4, plot_height + 10, "0", "end"))
    every = max(1, count // 8)
    for index in range(0, len(stats.buckets), every):
        chart.texts.append(Text(round(MARGIN + index * step, 2), plot_height + 26, stats.buckets[index]))
    x = MARGIN
    for name in stats.outcomes:
        chart.rects.append(Rect(x, plot_height + 40, 10, 10, COLOURS.get(name, OTHER_COLOUR), name))
        chart.texts.append(Text(x + 14, plot_height + 49, f"{name} {stats.totals[name]}"))
        x += 150
    return chart


def horizontal_bars(name: str, title: str, items: list[Counted], values: list[float] | None = None,
                    unit: str = "") -> Chart:
    """One bar per item, its label on the left and its number on the right."""
    numbers = values if values is not None else [float(item.count) for item in items]
    top = max([*numbers, 1e-9])
    chart = Chart(name, title, WIDTH, max(len(items), 1) * (BAR_HEIGHT + 4) + 8)
    room = WIDTH - LABEL_WIDTH - 90
    for index, (item, number) in enumerate(zip(items, numbers)):
        y = 4 + index * (BAR_HEIGHT + 4)
        shown = f"{number:.3f}{unit}" if values is not None else str(item.count)
        chart.rects.append(Rect(LABEL_WIDTH, y, round(max(number / top * room, 1), 2), BAR_HEIGHT, BAR_COLOUR,
                                f"{item.name}: {shown}"))
        chart.texts.append(Text(LABEL_WIDTH - 6, y + 13, short(item.name), "end"))
        chart.texts.append(Text(LABEL_WIDTH + round(number / top * room, 2) + 6, y + 13, shown))
    if not items:
        chart.texts.append(Text(LABEL_WIDTH, 18, "none in this range"))
    return chart


def columns(name: str, title: str, items: list[Counted]) -> Chart:
    """A histogram: one column per bin, labelled below."""
    top = max([item.count for item in items] + [1])
    plot_height = 140
    step = (WIDTH - 2 * MARGIN) / max(len(items), 1)
    chart = Chart(name, title, WIDTH, plot_height + 40)
    for index, item in enumerate(items):
        height = item.count / top * plot_height
        x = round(MARGIN + index * step, 2)
        if item.count:
            chart.rects.append(Rect(x, round(plot_height + 10 - height, 2), round(step - 2, 2), round(height, 2),
                                    BAR_COLOUR, f"score {item.name}: {item.count}"))
        chart.texts.append(Text(round(x + step / 2, 2), plot_height + 26, item.name, "middle"))
    chart.texts.append(Text(MARGIN - 4, 20, str(top), "end"))
    return chart


def charts_of(stats: Stats) -> list[Chart]:
    """Every chart of the page, in reading order."""
    bytes_items = [Counted(name=name, count=stats.bytes[name]) for name in stats.outcomes]
    return [
        stacked_columns(stats),
        horizontal_bars("viruses", "top viruses", stats.viruses),
        horizontal_bars("policy-rules", "top policy rules", stats.policy_rules),
        horizontal_bars("spam-domains", "top sender domains of spam", stats.spam_domains),
        columns("spam-scores", "spam scores", stats.spam_scores),
        horizontal_bars("bytes", "bytes per outcome", bytes_items),
        horizontal_bars("scanners", "average seconds per scanner", stats.scanners,
                        [item.value for item in stats.scanners], " s"),
    ]


@require_GET
@page
def charts_page(request: HttpRequest, profile: Profile) -> HttpResponse:
    """The date-range form, the charts, and their numbers as tables."""
    query = {name: request.GET.get(name, "").strip() for name in ("since", "until", "host")}
    wanted = api_query(query)  # a date in "until" takes in that whole day, as the search form's does
    try:
        stats = compute(profile, wanted.get("since", ""), wanted.get("until", ""), wanted.get("host", ""))
    except BadQuery as problem:
        return render(request, "console/charts.html", {"profile": profile, "query": query, "problem": str(problem)},
                      status=400)
    rows = [(bucket, [stats.series[name][index] for name in stats.outcomes])
            for index, bucket in enumerate(stats.buckets)]
    outcome_rows = [(name, stats.totals[name], stats.bytes[name]) for name in stats.outcomes]
    context = {"profile": profile, "query": query, "stats": stats, "charts": charts_of(stats), "rows": rows,
               "outcome_rows": outcome_rows}
    return render(request, "console/charts.html", context)
