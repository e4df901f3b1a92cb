"""Readings of an ambiguous message: which way each ambiguity is read in one pass, and which passes to make.

Mail clients disagree where MIME is ambiguous (a repeated header or parameter, a boundary
matched exactly or as a line prefix, a continuation split from its header by an empty line,
a nested multipart reusing its parent's boundary, a header block without the empty line
before the body). The unpacker walks the message once per reading and the checks run over
the union of the parts: blocked in any reading means blocked. The walk names each ambiguity
where it meets it (a choice point, most of them at the start of an entity); the plan below
then reads the message with every choice the other way, and, for choices inside one another's
entity, each one alone the other way (and alone the first way), which covers every
combination of up to three nested choices. Choices in separate entities do not change each
other's parts, so the first two readings cover them all. A message needing more readings
than the bound is its own outcome (rule `mime-readings`).
"""

from __future__ import annotations

from ..records import Finding
from ..recordtype import field, record

TYPE_CHECKING = False  # importing typing costs every message milliseconds
if TYPE_CHECKING:
    from .sink import Unpacked

READING_NOTE = " in one reading of an ambiguous message: "
DECODED_ORIGIN = 1 << 40  # offsets in a decoded container's file start here (walker.Reader.origin)


@record(frozen=True)
class Ambiguity:
    """One place a mail client may read differently: the format rule it breaks and what it is."""

    rule: str  # the --fix-mime 2 rule, e.g. "duplicate-boundary-parameter"
    text: str  # what a reader is told, e.g. "duplicate boundary parameter"
    part_name: str = ""


@record
class Reading:
    """One pass: every choice point read the first way, or the other way, except the listed ones."""

    alternative: bool = False
    exceptions: frozenset = frozenset()
    met: dict = field(default_factory=dict)  # choice point -> its ambiguity text, as met in this pass
    options: dict = field(default_factory=dict)  # choice point of more than two ways -> the way this pass takes
    counts: dict = field(default_factory=dict)  # choice point of more than two ways -> how many ways, as met

    def choose(self, point: tuple, text: str) -> bool:
        """Whether this pass reads the choice point the other way (the first way is what today's walk does)."""
        self.met[point] = text
        return self.alternative != (point in self.exceptions)

    def option(self, point: tuple, text: str, count: int) -> int:
        """Which of `count` ways this pass reads a choice point (0 the first, 1 the other way, 2... its own pass)."""
        self.counts[point] = count
        if point in self.options:
            self.met[point] = text
            return min(self.options[point], count - 1)
        return 1 if self.choose(point, text) else 0

    def flipped(self, points: object) -> frozenset:
        """The choice points among `points` this reading takes the other way (a third way or more: (point, way))."""
        return frozenset(
            (p, self.options[p]) if p in self.options else p
            for p in points
            if p in self.options or self.alternative != (p in self.exceptions)
        )

    @property
    def description(self) -> str:
        """The ambiguities this pass reads the other way, for the reason text."""
        return ", ".join(dict.fromkeys(self.met[p] for p in self.met if self.flipped([p])))


class Plan:
    """Which readings to make after the first pass, bounded by `limit` passes in all."""

    def __init__(self, limit: int) -> None:
        self.limit = max(2, limit)
        self.known: dict = {}  # every choice point met so far -> text
        self.tried: set[frozenset] = set()
        self.waiting: list[Reading] = []
        self.passes = 0
        self.single: set = set()  # choice points already given readings of their own

    def record(self, reading: Reading, ends: dict[int, int]) -> None:
        """Take in what a finished pass met (`ends`: where each entity ended, by where it started)."""
        self.passes += 1
        self.tried.add(reading.flipped(reading.met))
        new = [point for point in reading.met if point not in self.known]
        for point in new:
            self.known[point] = reading.met[point]
        if self.passes == 1 and new:
            self.waiting.append(Reading(alternative=True))
        for point in new:  # a way beyond the second (another boundary spelling): a pass of its own
            self.waiting += [Reading(options={point: way}) for way in range(2, reading.counts.get(point, 2))]
        for point in self.known:
            if point not in self.single and any(_nested(point, other, ends) for other in self.known if other != point):
                self.single.add(point)
                self.waiting += [Reading(exceptions=frozenset([point])), Reading(True, frozenset([point]))]

    def next_reading(self) -> Reading | None:
        """The next reading worth a pass, or None when every planned one is done."""
        while self.waiting:
            reading = self.waiting.pop(0)
            if reading.flipped(self.known) not in self.tried:
                return reading
        return None


def _nested(point: tuple, other: tuple, ends: dict[int, int]) -> bool:
    """Whether one choice lies inside the other's entity (a choice not tied to one entity is inside all)."""
    start, other_start = point[1], other[1]
    if not isinstance(start, int) or not isinstance(other_start, int):
        return True
    if start >= DECODED_ORIGIN or other_start >= DECODED_ORIGIN:
        return True  # inside a decoded container: its offsets are not the message's
    end = max(ends.get(start, start), start + 1)
    other_end = max(ends.get(other_start, other_start), other_start + 1)
    return start <= other_start < end or other_start <= start < other_end


def note_readings(findings: list[Finding], unpacked: Unpacked, first_reading: list[Finding]) -> list[Finding]:
    """Say in each finding that only another reading shows which ambiguity that reading took.

    `first_reading` is what the same checks find in the parts of the first reading alone. A
    finding beyond those was made on a part only another reading has; a finding on a part
    whose names disagree was made on one of the names only some clients use.
    """
    first = {(f.rule, f.part_name) for f in first_reading}
    firsts, others = unpacked.parts[: unpacked.first_reading_parts], unpacked.parts[unpacked.first_reading_parts :]
    noted = []
    for finding in findings:
        texts: list[str] = []
        if finding.kind == "policy" and (
            (finding.rule, finding.part_name) not in first or _only_lenient(finding.part_name, firsts, unpacked)
        ):
            texts = [p.reading for p in others if p.reading and finding.part_name in _shown_names(p)]
            texts = texts or [p.reading for p in others if p.reading]
        elif finding.part_name:
            texts = [p.reading for p in firsts if _disagrees(p, finding.part_name)]
        if texts and READING_NOTE not in finding.reason:
            reason = finding.reason + READING_NOTE + "; ".join(dict.fromkeys(texts))
            finding = Finding(finding.kind, finding.rule, reason, finding.part_name, finding.monitor_only, finding.part)
        noted.append(finding)
    return noted


def _only_lenient(shown: str, firsts: list, unpacked: Unpacked) -> bool:
    """Whether the first reading shows this name only in what ripmime alone makes of text (an epilogue...).

    Then the reading that shows it as a part of its own is the one to name.
    """
    if not unpacked.lenient_parts or not shown:
        return False
    showing = [p for p in firsts if shown in _shown_names(p)]
    return bool(showing) and all(p.index in unpacked.lenient_parts for p in showing)


def _shown_names(part: object) -> list[str]:
    """The names a finding on this part may carry (archive members as `container/name`)."""
    names = [f"{part.container}/{n}" if part.container else n for n in part.filenames]  # type: ignore[attr-defined]
    return [*names, ""]


def _disagrees(part: object, shown: str) -> bool:
    """A part whose claimed names disagree (one reading each) and which carries this name."""
    return bool(part.reading) and len(part.filenames) > 1 and shown in _shown_names(part)  # type: ignore[attr-defined]
