"""``fanout report OUTPUT.jsonl``: what a run's output file says, read in one streaming pass.

The file may hold millions of lines, from this run or an earlier one (or several
resumed runs), so nothing is kept per line: counts are counters, times to outcome
go into log-spaced buckets 1 % wide (percentiles within 1 %, the maximum exact),
failure reasons are grouped under a normalised form (ids, uuids, numbers, times,
URIs and quoted text replaced by placeholders) with a cap on the number of groups,
and the completions per second for ``--plot`` are binned in seconds, the bins
widening when a run is long. Memory is bounded by those caps, not by the file.

A line that is not an output record (not JSON, not an object, an unknown status,
a time that is not ISO 8601) is counted and named by its line number; it never
stops the report. Fields this reader does not use, such as ``line``, are accepted.

Exit codes: 0 when the file was read (even with malformed lines); 2 when it could
not be read, the flags are wrong, or ``--plot`` is asked for without matplotlib.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TextIO

__all__ = [
    "REPORT_FIELDS",
    "Report",
    "add_report_parser",
    "normalise_reason",
    "read_report",
    "run_report",
]

EXIT_OK: Final = 0
EXIT_USAGE: Final = 2

_STATUSES: Final = ("succeeded", "failed", "expired", "rejected")
_ROUTES: Final = ("inline", "s3")
_QUANTILES: Final = (("p50", 0.50), ("p90", 0.90), ("p95", 0.95), ("p99", 0.99))
REPORT_FIELDS: Final = ("status", "payload", "submitted_at", "completed_at", "failure_reason")
"""The output fields the report reads; every other field (``result``, ``line``, ...) is passed over."""

_MAX_REASON_GROUPS: Final = 10_000
"""Distinct normalised reasons kept; beyond, reasons are counted as "other" (memory stays bounded)."""
_MAX_TIMELINE_BINS: Final = 20_000
_PLOT_POINTS: Final = 200
_MALFORMED_EXAMPLES: Final = 20
_REASON_CHARS: Final = 240
_PLOT_HINT: Final = "pip install 'fanout[plot]'"


# -- bounded accumulators ---------------------------------------------------------------------------


class _Histogram:
    """Durations in log-spaced buckets 1 % wide: percentiles within 1 % in O(buckets) memory."""

    _BASE: Final = math.log(1.01)
    _FLOOR: Final = 1e-6

    def __init__(self) -> None:
        self._buckets: Counter[int] = Counter()
        self.count = 0
        self.max: float | None = None

    def add(self, seconds: float) -> None:
        # A negative duration can only come from an edited file; it counts as (almost) instant.
        self._buckets[math.floor(math.log(max(seconds, self._FLOOR)) / self._BASE)] += 1
        self.count += 1
        self.max = seconds if self.max is None else max(self.max, seconds)

    def percentile(self, q: float) -> float | None:
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen >= rank:
                # The bucket's geometric middle, but never beyond the exact maximum.
                middle = math.exp((bucket + 0.5) * self._BASE)
                return min(middle, self.max) if self.max is not None else middle
        raise AssertionError("unreachable: the ranks add up to the count")  # pragma: no cover

    def cdf(self) -> list[tuple[float, float]]:
        """``(upper edge of a bucket, fraction at or below it)``, ascending."""
        points: list[tuple[float, float]] = []
        seen = 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            points.append((math.exp((bucket + 1) * self._BASE), seen / self.count))
        return points

    def summary(self) -> dict[str, float | int | None]:
        summary: dict[str, float | int | None] = {"count": self.count}
        for name, q in _QUANTILES:
            summary[name] = self.percentile(q)
        summary["max"] = self.max
        return summary


class _Timeline:
    """Completions per status in time bins; a bin doubles in width when there are too many.

    Bins count from the first completion read (outcomes are written in completion order, so it is
    close to the earliest), which keeps the plot's first bin from straddling the start of the run.
    """

    def __init__(self, width: float = 0.1) -> None:
        self.width = width
        self.origin: float | None = None
        self._bins: dict[int, Counter[str]] = {}

    def add(self, status: str, when: float) -> None:
        if self.origin is None:
            self.origin = when
        key = math.floor((when - self.origin) / self.width)
        counts = self._bins.get(key)
        if counts is None:
            if len(self._bins) >= _MAX_TIMELINE_BINS:
                self._widen()
                key = math.floor((when - self.origin) / self.width)
                counts = self._bins.get(key)
            if counts is None:
                counts = self._bins[key] = Counter()
        counts[status] += 1

    def _widen(self) -> None:
        # floor(t / 2w) == floor(floor(t / w) / 2), so merging the keys is exact.
        self.width *= 2
        merged: dict[int, Counter[str]] = {}
        for key, counts in self._bins.items():
            merged.setdefault(key // 2, Counter()).update(counts)
        self._bins = merged

    def rates(self, since: float, points: int = _PLOT_POINTS) -> tuple[list[float], dict[str, list[float]]]:
        """Seconds from ``since`` to each bin's start, and per status the outcomes per second in it."""
        if not self._bins or self.origin is None:
            return [], {}
        first, last = min(self._bins), max(self._bins)
        # Merge neighbouring bins so that a long run still plots as a readable line.
        group = max(1, math.ceil((last - first + 1) / points))
        width = self.width * group
        slots = (last - first) // group + 1
        series: dict[str, list[float]] = {}
        for key, counts in self._bins.items():
            slot = (key - first) // group
            for status, count in counts.items():
                series.setdefault(status, [0.0] * slots)[slot] += count / width
        starts = [self.origin + (first + slot * group) * self.width - since for slot in range(slots)]
        return starts, {status: series[status] for status in _STATUSES if status in series}


class _Reasons:
    """Failure reasons grouped by (status, normalised reason), with the first example of each."""

    def __init__(self) -> None:
        self.groups: Counter[tuple[str, str]] = Counter()
        self.examples: dict[tuple[str, str], tuple[str, str | None, int | None]] = {}
        self.other = 0
        """Reasons that found no room once ``_MAX_REASON_GROUPS`` groups existed."""

    def add(self, status: str, reason: str, request_id: str | None, line: int | None) -> None:
        key = (status, normalise_reason(reason))
        if key not in self.groups and len(self.groups) >= _MAX_REASON_GROUPS:
            self.other += 1
            return
        self.groups[key] += 1
        if key not in self.examples:
            self.examples[key] = (_clip(reason), request_id, line)


# -- failure reasons --------------------------------------------------------------------------------

# A URI ends before trailing punctuation: "from s3://b/k: not found" keeps its colon.
_URI: Final = re.compile(r"\b(?:s3|https?)://[^\s\"'<>()\[\]]*[^\s\"'<>()\[\].,:;!?]")
_UUID: Final = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_TIME: Final = re.compile(
    r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?(?![\w:])"
)
_QUOTED: Final = re.compile(r'"(?:[^"\\]|\\.)*"')
_HEX: Final = re.compile(r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{12,}\b")
_WORD_WITH_DIGITS: Final = re.compile(r"\w*\d\w*")
_DIGITS: Final = re.compile(r"\d+")
_SPACE: Final = re.compile(r"\s+")
_KEEP_WORDS: Final = frozenset({"s3", "S3", "sha256", "SHA256", "base64", "utf8", "UTF8", "http2", "HTTP2"})


def normalise_reason(reason: str) -> str:
    """``reason`` with its variable parts replaced, so that reasons differing only in them group together.

    URIs become ``<uri>``, uuids ``<uuid>``, ISO times ``<time>``, double-quoted text (such as the
    model's own message) ``"…"``, long hex strings ``<hex>`` and digit runs ``<n>``. Words such as
    ``s3`` and a three-digit status in parentheses, ``(500)``, are kept: they tell kinds of error apart.
    """
    text = _URI.sub("<uri>", reason)
    text = _UUID.sub("<uuid>", text)
    text = _TIME.sub("<time>", text)
    text = _QUOTED.sub('"…"', text)
    text = _HEX.sub("<hex>", text)
    text = _WORD_WITH_DIGITS.sub(lambda match: _numbers_in(match, text), text)
    return _clip(_SPACE.sub(" ", text).strip())


def _numbers_in(match: re.Match[str], text: str) -> str:
    word = match.group()
    if word in _KEEP_WORDS:
        return word
    start, end = match.span()
    if len(word) == 3 and word.isdigit() and text[start - 1 : start] == "(" and text[end : end + 1] == ")":
        return word  # "(500)", "(503)": an HTTP status, which separates kinds of failure
    return _DIGITS.sub("<n>", word)


def _clip(text: str) -> str:
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"


# -- reading ----------------------------------------------------------------------------------------


class _BadLine(Exception):
    pass


@dataclass(slots=True)
class Report:
    """What an output file says. Build it with ``read_report``."""

    source: str
    statuses: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    """Outcomes by ``payload``; ``none`` for records without one (most rejections)."""
    by_status_and_route: Counter[tuple[str, str]] = field(default_factory=Counter)
    malformed: int = 0
    malformed_examples: list[tuple[int, str]] = field(default_factory=list)
    blank: int = 0
    first: float | None = None
    """The earliest ``submitted_at`` or ``completed_at`` in the file (epoch seconds)."""
    last: float | None = None
    """The latest ``completed_at``."""
    timed: int = 0
    """Outcomes with a ``completed_at``: the ones the rate counts."""
    latency: dict[str, _Histogram] = field(default_factory=lambda: {"all": _Histogram()})
    reasons: _Reasons = field(default_factory=_Reasons)
    timeline: _Timeline | None = None

    @property
    def outcomes(self) -> int:
        return sum(self.statuses.values())

    @property
    def span(self) -> float | None:
        if self.first is None or self.last is None:
            return None
        return max(self.last - self.first, 0.0)

    @property
    def per_second(self) -> float | None:
        span = self.span
        return self.timed / span if span else None

    def top_reasons(self, top: int) -> list[tuple[str, str, int, tuple[str, str | None, int | None]]]:
        """``(status, normalised reason, count, (example, its id, its input line))``, most frequent first."""
        return [
            (status, reason, count, self.reasons.examples[(status, reason)])
            for (status, reason), count in self.reasons.groups.most_common(top)
        ]

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        return {
            "source": self.source,
            "outcomes": self.outcomes,
            "statuses": {status: self.statuses[status] for status in _STATUSES},
            "routes": dict(sorted(self.routes.items())),
            "by_status_and_route": {
                status: {
                    route: count
                    for (s, route), count in sorted(self.by_status_and_route.items())
                    if s == status
                }
                for status in _STATUSES
                if self.statuses[status]
            },
            "time_to_outcome": {
                route: histogram.summary() for route, histogram in self.latency.items() if histogram.count
            },
            "span": {
                "first": _iso(self.first),
                "last": _iso(self.last),
                "seconds": self.span,
                "outcomes_per_second": self.per_second,
            },
            "failure_reasons": {
                "groups": len(self.reasons.groups),
                "top": [
                    {
                        "status": status,
                        "reason": reason,
                        "count": count,
                        "example": example,
                        "example_id": example_id,
                        "example_line": example_line,
                    }
                    for status, reason, count, (example, example_id, example_line) in self.top_reasons(top)
                ],
                "ungrouped": self.reasons.other,
            },
            "malformed": {
                "count": self.malformed,
                "lines": [{"line": number, "reason": reason} for number, reason in self.malformed_examples],
            },
        }

    # -- accumulation ------------------------------------------------------------------------------

    def add_line(self, number: int, raw: bytes) -> None:
        if not raw.strip():
            self.blank += 1
            return
        try:
            self._add(raw)
        except _BadLine as bad:
            self.malformed += 1
            if len(self.malformed_examples) < _MALFORMED_EXAMPLES:
                self.malformed_examples.append((number, str(bad)))

    def _add(self, raw: bytes) -> None:
        try:
            record = json.loads(raw)
        except UnicodeDecodeError as exc:
            raise _BadLine(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
        except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
            raise _BadLine(f"not JSON ({exc})") from None
        except RecursionError:
            raise _BadLine("not JSON (nested too deeply)") from None
        if not isinstance(record, dict):
            raise _BadLine(f"expected a JSON object, got {type(record).__name__}")
        status = record.get("status")
        if status not in _STATUSES:
            raise _BadLine(f"status must be one of {', '.join(_STATUSES)}, got {_short(status)}")
        route = record.get("payload")
        if route is not None and route not in _ROUTES:
            raise _BadLine(f"payload must be inline, s3 or null, got {_short(route)}")
        submitted = _timestamp(record, "submitted_at")
        completed = _timestamp(record, "completed_at")
        reason = record.get("failure_reason")
        if reason is not None and not isinstance(reason, str):
            raise _BadLine(f"failure_reason must be a string or null, got {_short(reason)}")
        # Every check passed: only now does the record count, so a bad line changes nothing.
        route_name = route or "none"
        self.statuses[status] += 1
        self.routes[route_name] += 1
        self.by_status_and_route[(status, route_name)] += 1
        for moment in (submitted, completed):
            if moment is not None and (self.first is None or moment < self.first):
                self.first = moment
        if completed is not None:
            self.timed += 1
            if self.last is None or completed > self.last:
                self.last = completed
            if self.timeline is not None:
                self.timeline.add(status, completed)
        # Times to outcome are of accepted requests, as in the run's own summary: a rejection's
        # time is how long fanout took to give up, not how long the endpoint took.
        if status != "rejected" and submitted is not None and completed is not None:
            seconds = completed - submitted
            self.latency["all"].add(seconds)
            if route is not None:
                self.latency.setdefault(route, _Histogram()).add(seconds)
        if status != "succeeded" and reason:
            request_id = record.get("id")
            line = record.get("line")
            self.reasons.add(
                status,
                reason,
                request_id if isinstance(request_id, str) else None,
                line if isinstance(line, int) and not isinstance(line, bool) else None,
            )


def _timestamp(record: Mapping[str, Any], name: str) -> float | None:
    value = record.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _BadLine(f"{name} must be an ISO 8601 string or null, got {_short(value)}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _BadLine(f"{name} is not an ISO 8601 time: {_short(value)}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the contract writes UTC; a bare time is read as UTC too
    return moment.timestamp()


def _short(value: object) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):  # pragma: no cover - values come from json.loads
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def read_report(lines: Iterable[bytes], *, source: str = "-", timeline: bool = False) -> Report:
    """Read output lines (bytes, newline or not) into a ``Report``; pure apart from iterating ``lines``."""
    report = Report(source=source, timeline=_Timeline() if timeline else None)
    for number, raw in enumerate(lines, start=1):
        report.add_line(number, raw)
    return report


# -- the command ------------------------------------------------------------------------------------


def add_report_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``fanout report`` to the ``fanout`` command's subparsers."""
    report = subparsers.add_parser(
        "report",
        help="summarise an output file of fanout run",
        description=(
            "Read an output file of fanout run (this run's or an earlier one's) in one streaming pass and "
            "summarise it: outcomes by status and by route, time to outcome by route (p50/p90/p95/p99/max), "
            "the run's span and outcomes per second, and the most frequent failure reasons. Malformed lines "
            "are counted and named by line number. Exit codes: 0 read, 2 unreadable file or bad flags."
        ),
    )
    report.add_argument("output", metavar="OUTPUT", help="a JSONL output file of fanout run, or - for stdin")
    report.add_argument(
        "--plot",
        metavar="FILE.png",
        help=f"also write a PNG: time-to-outcome CDF by route and outcomes per second (needs {_PLOT_HINT})",
    )
    report.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    report.add_argument(
        "--top",
        type=_positive_int,
        default=10,
        metavar="N",
        help="failure reason groups to show (default: 10)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


def run_report(
    args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """``fanout report``: 0 when the file was read; 2 (with a message on stderr) when it could not be."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    source: str = args.output
    plot_path: str | None = args.plot
    top: int = getattr(args, "top", 10)

    def fail(message: str) -> int:
        print(f"fanout report: error: {message}", file=err)
        return EXIT_USAGE

    if plot_path is not None:
        # Both checks come before the read: a million-line file is not read only to fail at the end.
        if not _matplotlib_available():
            return fail(f"--plot needs matplotlib, which is not installed: {_PLOT_HINT}")
        folder = os.path.dirname(os.path.abspath(plot_path))
        if not os.path.isdir(folder):
            return fail(f"cannot write the plot {plot_path!r}: the folder {folder!r} does not exist")
    try:
        with _open(source) as stream:
            report = read_report(stream, source=source, timeline=plot_path is not None)
    except FileNotFoundError:
        return fail(f"the output file {source!r} does not exist")
    except IsADirectoryError:
        return fail(f"{source!r} is a folder, not an output file")
    except PermissionError:
        return fail(f"cannot read {source!r}: permission denied")
    except OSError as exc:
        return fail(f"cannot read {source!r}: {exc.strerror or exc}")
    if plot_path is not None:
        try:
            write_plot(report, plot_path)
        except OSError as exc:
            return fail(f"cannot write the plot {plot_path!r}: {exc.strerror or exc}")
    if args.json:
        document = report.to_dict(top)
        document["plot"] = plot_path
        print(json.dumps(document, ensure_ascii=False), file=out)
    else:
        render_report(report, out, top=top, plot=plot_path)
    return EXIT_OK


@contextmanager
def _open(source: str) -> Iterator[Iterable[bytes]]:
    """The file's lines as bytes, or standard input's for ``-`` (which is left open)."""
    if source == "-":
        yield sys.stdin.buffer
        return
    with open(source, "rb") as file:
        yield file


# -- rendering --------------------------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms" if seconds >= 0.001 else f"{seconds * 1000:.2f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes:.0f}m {rest:04.1f}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours:.0f}h {minutes:02.0f}m {rest:02.0f}s"


def render_report(report: Report, stream: TextIO, *, top: int = 10, plot: str | None = None) -> None:
    """The summary as rich tables on ``stream``."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=stream, highlight=False, soft_wrap=True)
    name = "standard input" if report.source == "-" else report.source
    title = f"fanout report: {name}: {report.outcomes:,} outcome{'' if report.outcomes == 1 else 's'}"
    if report.span is not None:
        title += f" over {_duration(report.span)}"
        if report.per_second is not None:
            title += f" ({report.per_second:,.1f}/s)"
    console.print(Text(title, style="bold"))
    if report.first is not None:
        console.print(f"from {_iso(report.first)} to {_iso(report.last)}")
    if not report.outcomes:
        console.print("no outcomes in the file")

    if report.outcomes:
        routes = [route for route in (*_ROUTES, "none") if report.routes[route]]
        counts = Table(title="outcomes by status and route", header_style="bold", title_justify="left")
        counts.add_column("status", style="bold")
        for route in routes:
            counts.add_column("no payload" if route == "none" else route, justify="right")
        counts.add_column("total", justify="right")
        for status in _STATUSES:
            if report.statuses[status]:
                cells = [f"{report.by_status_and_route[(status, route)]:,}" for route in routes]
                counts.add_row(status, *cells, f"{report.statuses[status]:,}")
        counts.add_section()
        counts.add_row("total", *(f"{report.routes[route]:,}" for route in routes), f"{report.outcomes:,}")
        console.print(counts)

    timed = [(route, report.latency[route]) for route in ("all", *_ROUTES) if route in report.latency]
    if any(histogram.count for _, histogram in timed):
        latency = Table(
            title="time to outcome (submitted_at to completed_at; accepted requests)",
            header_style="bold",
            title_justify="left",
        )
        latency.add_column("route", style="bold")
        latency.add_column("n", justify="right")
        for label, _ in _QUANTILES:
            latency.add_column(label, justify="right")
        latency.add_column("max", justify="right")
        for route, histogram in timed:
            if histogram.count:
                latency.add_row(
                    route,
                    f"{histogram.count:,}",
                    *(_duration(histogram.percentile(q)) for _, q in _QUANTILES),
                    _duration(histogram.max),
                )
        console.print(latency)

    groups = report.top_reasons(top)
    if groups:
        reasons = Table(
            title=f"failure reasons: top {len(groups)} of {len(report.reasons.groups):,} groups",
            header_style="bold",
            title_justify="left",
        )
        reasons.add_column("count", justify="right")
        reasons.add_column("status")
        reasons.add_column("reason (variable parts replaced)", overflow="fold")
        reasons.add_column("example", overflow="fold")
        for status, reason, count, (example, example_id, example_line) in groups:
            where = []
            if example_id is not None:
                where.append(f"id {example_id}")
            if example_line is not None:
                where.append(f"input line {example_line}")
            label = f"{example} ({', '.join(where)})" if where else example
            # Text, not markup: reasons hold brackets that rich would otherwise eat.
            reasons.add_row(f"{count:,}", status, Text(reason), Text(label))
        console.print(reasons)
        if report.reasons.other:
            console.print(
                f"{report.reasons.other:,} more failures whose reasons were not grouped (too many kinds)"
            )

    if report.malformed:
        console.print(
            Text(
                f"{report.malformed:,} malformed line{'' if report.malformed == 1 else 's'} skipped",
                style="bold",
            ),
            Text(f"(the first {len(report.malformed_examples)}):" if report.malformed > 1 else ":"),
        )
        for number, reason in report.malformed_examples:
            console.print(Text(f"  line {number}: {reason}"))
    if plot is not None:
        console.print(f"plot written to {plot}")


# -- plotting ---------------------------------------------------------------------------------------


def _matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        return False
    return True


def write_plot(report: Report, path: str) -> None:
    """A PNG with two panels: time to outcome CDF by route, and outcomes per second by status."""
    # A bare Figure needs no pyplot and no global backend, so this is safe inside any process.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 4.4), dpi=110)
    cdf_axes, rate_axes = figure.subplots(1, 2)

    plotted = False
    for route in ("all", *_ROUTES):
        histogram = report.latency.get(route)
        if histogram is None or not histogram.count:
            continue
        points = histogram.cdf()
        # Start at the first bucket's lower edge, at 0, so that each step rises where its bucket ends.
        xs = [points[0][0] / 1.01, *(x for x, _ in points)]
        ys = [0.0, *(y for _, y in points)]
        style = {"color": "grey", "linestyle": "--"} if route == "all" else {}
        cdf_axes.step(xs, ys, where="post", label=f"{route} (n={histogram.count:,})", **style)
        plotted = True
    cdf_axes.set_title("time to outcome, by route")
    cdf_axes.set_xlabel("time from submitted_at to completed_at")
    cdf_axes.set_ylabel("fraction of accepted requests")
    cdf_axes.set_ylim(0, 1.02)
    cdf_axes.grid(alpha=0.3)
    if plotted:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        cdf_axes.set_xscale("log")
        # Ticks at 1-2-5 steps labelled "20 ms", "1.00 s": a run often spans less than a decade,
        # where matplotlib's default labels are mostly minor ticks printed over each other.
        cdf_axes.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        cdf_axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _duration(x)))
        cdf_axes.xaxis.set_minor_formatter(NullFormatter())
        cdf_axes.legend(loc="lower right")
    else:
        cdf_axes.text(0.5, 0.5, "no timed outcomes", ha="center", va="center", transform=cdf_axes.transAxes)

    timeline = report.timeline
    starts, series = timeline.rates(report.first or 0.0) if timeline is not None else ([], {})
    for status, values in series.items():
        rate_axes.step(starts, values, where="post", label=status)
    rate_axes.set_title("outcomes per second, by status")
    rate_axes.set_xlabel("seconds since the first request")
    rate_axes.set_ylabel("outcomes / s")
    rate_axes.set_ylim(bottom=0)
    rate_axes.grid(alpha=0.3)
    if series:
        rate_axes.legend(loc="best")
    else:
        rate_axes.text(
            0.5, 0.5, "no completion times", ha="center", va="center", transform=rate_axes.transAxes
        )

    name = "standard input" if report.source == "-" else os.path.basename(report.source)
    figure.suptitle(f"{name}: {report.outcomes:,} outcome{'' if report.outcomes == 1 else 's'}")
    figure.tight_layout()
    figure.savefig(path, format="png")
