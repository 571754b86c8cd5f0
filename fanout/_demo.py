"""``fanout demo``: the inline path against the S3 path, side by side, on an embedded emulator.

No credentials, no flags, well under a minute. The emulator gets per-API
latencies in the range AWS shows from inside a region, so that the extra S3
PUT of the S3 path costs what it costs there, not what it costs on loopback.
The batch mixes small JSON payloads with some over 128,000 bytes: in the
inline run (``payload="auto"``) only those go through S3.

Unlike ``default_config()`` (AWS's default: no response in the notifications),
the demo's endpoint sets ``IncludeInferenceResponseIn`` to both topics, so the
results ride in the notifications and neither path spends a GET per result;
the comparison is of the way in.

What it prints is meant to be read top to bottom as one short story: the table,
a legend for its rows, how the numbers were made, and one sentence with the
finding, computed from the two reports (``finding``). Every line fits in 100
columns. Progress goes to stderr: a live display on a terminal, one line per
phase anywhere else (so CI logs and pipes get no control codes).
"""

from __future__ import annotations

import dataclasses
import random
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO

from ._client import Observer, open_client
from ._config import Limits, PayloadMode, SqsTracking, Staging
from ._cost import CostReport, PriceTable, cost_of, format_money, load_prices
from ._loop import run
from ._models import MAX_INLINE_BODY_BYTES, InferenceRequest, Outcome, RunReport, Submission

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from .testing import EmulatorConfig

__all__ = ["DemoProgress", "finding", "main", "print_comparison", "run_demo"]

REQUESTS: Final = 600
RATE: Final = 100.0
"""Requests per second offered to each path: below what either sustains on one core, so that the times
compare the two ways in, not two queues. Unpaced, every request is submitted at once and the S3 path's
p50 is mostly its wait behind 16 concurrent uploads (about 20× the inline p50 on a laptop)."""
LARGE_SHARE: Final = 0.05
"""The share of payloads over 128,000 bytes."""
MAX_WIDTH: Final = 100
"""Every printed line fits in this many columns, however wide the terminal."""

_LATENCY_MEDIANS_MS: Final = {
    "sagemaker": 12.0,
    "s3.PutObject": 25.0,
    "s3": 8.0,
    "sqs": 6.0,
}
"""Per-call latency the emulator adds (lognormal medians); the note printed under the table quotes them."""
_LATENCY_SIGMA: Final = 0.35

_PATHS: Final[tuple[tuple[PayloadMode, str], ...]] = (("auto", "inline (auto)"), ("s3", "all S3"))
"""Each path's payload mode and its label, in the order they run (the table's columns)."""

_PUT: Final = "s3.PutObject"


def _latencies() -> dict[str, object]:
    from .testing import Distribution

    return {
        api: Distribution("lognormal", median_ms=median, sigma=_LATENCY_SIGMA)
        for api, median in _LATENCY_MEDIANS_MS.items()
    }


def _emulator_config() -> EmulatorConfig:
    """``default_config()`` with the response included in both topics' notifications."""
    from .testing import default_config

    base = default_config()
    endpoints = tuple(
        dataclasses.replace(
            endpoint,
            include_inference_response_in=("SUCCESS_NOTIFICATION_TOPIC", "ERROR_NOTIFICATION_TOPIC"),
        )
        for endpoint in base.endpoints
    )
    return dataclasses.replace(base, endpoints=endpoints)


def _batch(count: int, seed: int = 7) -> Iterator[InferenceRequest]:
    rng = random.Random(seed)
    for index in range(count):
        if rng.random() < LARGE_SHARE:
            padding = "x" * (MAX_INLINE_BODY_BYTES + rng.randrange(1, 64_000))
            value: object = {"index": index, "kind": "large", "padding": padding}
        else:
            value = {"index": index, "kind": "small", "features": [rng.random() for _ in range(16)]}
        yield InferenceRequest.from_json(value, id=str(index))


# -- progress ---------------------------------------------------------------------------------------


class DemoProgress(Protocol):
    """Hears which path runs and each outcome it hands over (on the event loop: must not block)."""

    def path_started(self, label: str, total: int) -> None: ...

    def sending(self) -> None:
        """A request is about to be sent (the first one starts the path's clock)."""

    def handed_over(self, outcome: Outcome) -> None: ...


class _PathObserver:
    """The client's public ``Observer`` hook, passing each handed-over outcome on to the progress."""

    def __init__(self, progress: DemoProgress) -> None:
        self._progress = progress

    async def sending(self, inference_id: str, deadline: float) -> None:
        self._progress.sending()

    def unsent(self, inference_id: str) -> None:
        return None

    def accepted(self, submission: Submission) -> None:
        return None

    def handed_over(self, outcome: Outcome) -> None:
        self._progress.handed_over(outcome)


class _LineProgress:
    """One line per phase, for pipes and CI logs: nothing that redraws, no control codes."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._phase = 0

    def __enter__(self) -> _LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def note(self, message: str) -> None:
        print(message, file=self._stream, flush=True)

    def path_started(self, label: str, total: int) -> None:
        self._phase += 1
        self.note(f"fanout demo: {self._phase}/{len(_PATHS)} {label}: scoring {_requests(total)}")

    def sending(self) -> None:
        return None

    def handed_over(self, outcome: Outcome) -> None:
        return None


class _LiveProgress:
    """A rich progress display on a terminal: one bar per path, done of total, mean rate, elapsed."""

    def __init__(self, stream: TextIO) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        console = _console(stream)
        self._progress: Progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=30),
            TextColumn("{task.completed:>6,.0f}/{task.total:,.0f}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[others]}"),
            console=console,
            refresh_per_second=8,
        )
        self._task: TaskID | None = None
        self._others: Counter[str] = Counter()
        self._phase = 0
        self._done = 0
        self._first_sent: float | None = None
        """When the running path sent its first request: the rate's clock, as the report's
        throughput (the emulator's start-up is not the path's time)."""

    def __enter__(self) -> _LiveProgress:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def note(self, message: str) -> None:
        self._progress.console.print(message)

    def path_started(self, label: str, total: int) -> None:
        self._phase += 1
        self._others.clear()
        self._done = 0
        description = f"{self._phase}/{len(_PATHS)} {label:<13}"
        self._task = self._progress.add_task(description, total=total, start=False, rate="", others="")
        self._first_sent = None

    def sending(self) -> None:
        if self._first_sent is None:
            self._first_sent = time.monotonic()
            if self._task is not None:
                self._progress.start_task(self._task)

    def handed_over(self, outcome: Outcome) -> None:
        if self._task is None:
            return
        if outcome.status != "succeeded":
            self._others[outcome.status] += 1
        self._done += 1
        elapsed = time.monotonic() - self._first_sent if self._first_sent is not None else 0.0
        rate = f"{self._done / elapsed:>5,.0f}/s" if elapsed > 0 else ""
        others = " · ".join(f"{status} {count:,}" for status, count in sorted(self._others.items()))
        self._progress.update(self._task, completed=self._done, rate=rate, others=others)


class _Display(DemoProgress, AbstractContextManager[Any], Protocol):
    """A progress display that ``main`` opens around the run and writes its own notes through (so
    that a note does not tear the live display)."""

    def note(self, message: str) -> None: ...


def _progress_for(stream: TextIO) -> _Display:
    return _LiveProgress(stream) if stream.isatty() else _LineProgress(stream)


# -- running ----------------------------------------------------------------------------------------


async def _one_path(
    env: dict[str, str], payload: PayloadMode, count: int, observer: Observer | None
) -> RunReport:
    async with open_client(
        endpoint_name=env["FANOUT_ENDPOINT"],
        tracking=SqsTracking(queue_url=env["FANOUT_QUEUE_URL"], wait_time_seconds=1),
        limits=Limits(max_in_flight=64, max_pending=2_000, max_per_second=RATE),
        payload=payload,
        staging=Staging(location=env["FANOUT_STAGING"]),
        observer=observer,
    ) as client:
        return await client.run(_batch(count))


async def run_demo(
    count: int = REQUESTS, progress: DemoProgress | None = None
) -> tuple[RunReport, RunReport]:
    """Score the same generated batch through both paths; returns (inline, s3) reports.

    Each path gets a fresh emulator, so neither sees the other's queue or objects.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    observer = _PathObserver(progress) if progress is not None else None
    reports: list[RunReport] = []
    for payload, label in _PATHS:
        if progress is not None:
            progress.path_started(label, count)
        reports.append(await _on_emulator(payload, count, observer))
    inline, s3 = reports
    return inline, s3


async def _on_emulator(payload: PayloadMode, count: int, observer: Observer | None) -> RunReport:
    from .testing import FaultConfig, aws_environment, open_emulator

    async with open_emulator(_emulator_config()) as emulator:
        emulator.set_faults(FaultConfig(latency=_latencies(), targets=()))  # type: ignore[arg-type]
        with aws_environment(emulator.env):
            return await _one_path(emulator.env, payload, count, observer)


# -- the comparison ---------------------------------------------------------------------------------


def _per_thousand(report: RunReport, name: str | None = None) -> float | None:
    if not report.total:
        return None
    calls = sum(report.api_calls.values()) if name is None else report.api_calls.get(name, 0)
    return calls * 1000 / report.total


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.0f} ms"


def _requests(count: int) -> str:
    return f"{count:,} request" + ("" if count == 1 else "s")


def _cost(report: RunReport, prices: PriceTable) -> CostReport:
    inferences = report.inline + report.s3
    return cost_of(
        report.api_calls, inferences=inferences, inline=report.inline, prices=prices, notifications=inferences
    )


def _per_thousand_cost(cost: CostReport) -> str:
    per_1000 = cost.per_1000_inferences
    return "-" if per_1000 is None else format_money(per_1000, cost.currency)


def _times(ratio: float) -> str:
    # One decimal where it carries information (1.3×), none where it would be noise (28×).
    return f"{ratio:,.1f}×" if ratio < 10 else f"{ratio:,.0f}×"


_SAME_SPEED: Final = 1.05
"""p50s within 5% of each other are "about as fast": closer than that, the emulator's noise decides."""


def _p50_clause(inline: RunReport, s3: RunReport) -> tuple[str, int]:
    """How inline compared at p50, and which way it leans: 1 inline's favour, -1 against, 0 neither."""
    if inline.p50 is None or s3.p50 is None:
        missing = " and ".join(
            label for (_, label), report in zip(_PATHS, (inline, s3), strict=True) if report.p50 is None
        )
        return f"No p50 to compare (no request accepted on {missing})", 0
    quoted = f"({_ms(inline.p50)} against {_ms(s3.p50)})"
    if inline.p50 > 0 and s3.p50 / inline.p50 >= _SAME_SPEED:
        return f"Inline was {_times(s3.p50 / inline.p50)} faster at p50 {quoted}", 1
    if s3.p50 > 0 and inline.p50 / s3.p50 >= _SAME_SPEED:
        return f"Inline took {_times(inline.p50 / s3.p50)} as long as all S3 at p50 {quoted}", -1
    return f"Inline was about as fast as all S3 at p50 {quoted}", 0


def _puts_clause(inline: RunReport, s3: RunReport) -> tuple[str, int] | None:
    inline_puts, s3_puts = _per_thousand(inline, _PUT), _per_thousand(s3, _PUT)
    if inline_puts is None or s3_puts is None:
        return None
    saved = round(s3_puts - inline_puts)
    if saved > 0:
        return f"saved {saved:,} S3 PUT{'' if saved == 1 else 's'} per 1,000 requests", 1
    if saved < 0:
        return f"made {-saved:,} more S3 PUT{'' if saved == -1 else 's'} per 1,000 requests", -1
    return "made as many S3 PUTs", 0


def _cost_clause(inline_cost: CostReport, s3_cost: CostReport) -> str | None:
    inline_per, s3_per = inline_cost.per_1000_inferences, s3_cost.per_1000_inferences
    if inline_per is None or s3_per is None:
        return None
    inline_money, s3_money = (
        format_money(inline_per, inline_cost.currency),
        format_money(s3_per, s3_cost.currency),
    )
    if inline_money == s3_money:
        return f"cost the same in request charges ({inline_money} per 1,000)"
    return f"cost {inline_money} against {s3_money} per 1,000 in request charges"


def finding(inline: RunReport, s3: RunReport, prices: PriceTable | None = None) -> str:
    """One sentence with what the two reports show, in the inline path's words; it claims only what
    the numbers say (a slower inline p50 is said to be slower)."""
    prices = prices if prices is not None else load_prices()
    head, lean = _p50_clause(inline, s3)
    rest: list[str] = []
    puts = _puts_clause(inline, s3)
    if puts is not None:
        clause, puts_lean = puts
        rest.append(clause)
    else:
        puts_lean = 0
    cost = _cost_clause(_cost(inline, prices), _cost(s3, prices))
    if cost is not None:
        rest.append(cost)
    if not rest:
        return f"{head}."
    if inline.p50 is None or s3.p50 is None:
        return f"{head}; inline {' and '.join(rest)}."
    joint = " but " if lean * puts_lean < 0 else ", " if len(rest) > 1 else " and "
    return f"{head}{joint}{' and '.join(rest)}."


def _legend(prices: PriceTable) -> list[tuple[str, str]]:
    return [
        ("throughput", f"requests finished per second; both paths are offered {RATE:,.0f}/s"),
        (
            "p50 / p99 to completion",
            "from submit to outcome (S3 upload included), at that steady rate: half / 99% of requests took "
            "at most this",
        ),
        ("API calls / 1,000", "every AWS call fanout made, per 1,000 requests"),
        ("S3 PUTs / 1,000", "payloads fanout uploaded for the endpoint to read, per 1,000 requests"),
        (
            "sent inline / via S3",
            "auto sends bodies of up to 128,000 bytes inline and larger ones via S3; "
            "all S3 sends every one via S3",
        ),
        (
            "request cost / 1,000",
            f"per-request AWS charges at {prices.region} list prices of {prices.taken} (fanout's calls "
            "and the endpoint's S3 and SNS requests), compute not included",
        ),
    ]


def _legend_lines(legend: list[tuple[str, str]], width: int) -> list[str]:
    """The legend as a hanging-indent list, wrapped here rather than by rich: a grid would pad every
    line with spaces to the full width, which ends up in pipes and logs."""
    indent = max(len(name) for name, _ in legend) + 2
    lines: list[str] = []
    for name, meaning in legend:
        wrapped = textwrap.wrap(meaning, width=max(width - indent, 20))
        lines.append(f"{name:<{indent}}{wrapped[0]}")
        lines.extend(" " * indent + more for more in wrapped[1:])
    return lines


def _say(console: Console, prose: str, style: str | None = None) -> None:
    # Wrapped here, not by rich, which leaves a space at the end of each wrapped line.
    for line in textwrap.wrap(prose, width=console.width, break_long_words=False, break_on_hyphens=False):
        console.print(line, style=style, soft_wrap=True)


def _console(stream: TextIO) -> Console:
    from rich.console import Console

    # A pipe gets rich's default (80, or $COLUMNS); a terminal its own width, capped so that a wide
    # one does not stretch prose past what reads well.
    width = min(Console(file=stream).width, MAX_WIDTH)
    return Console(file=stream, width=width, highlight=False)


def print_comparison(
    inline: RunReport, s3: RunReport, stream: TextIO = sys.stdout, prices: PriceTable | None = None
) -> None:
    from rich.table import Table

    prices = prices if prices is not None else load_prices()
    console = _console(stream)
    table = Table(title_justify="left")
    table.add_column("")
    for _, label in _PATHS:
        table.add_column(label, justify="right")
    inline_cost, s3_cost = _cost(inline, prices), _cost(s3, prices)
    rows = [
        ("throughput", f"{inline.throughput:,.0f}/s", f"{s3.throughput:,.0f}/s"),
        ("p50 to completion", _ms(inline.p50), _ms(s3.p50)),
        ("p99 to completion", _ms(inline.p99), _ms(s3.p99)),
        ("API calls / 1,000", _count(_per_thousand(inline)), _count(_per_thousand(s3))),
        ("S3 PUTs / 1,000", _count(_per_thousand(inline, _PUT)), _count(_per_thousand(s3, _PUT))),
        ("sent inline / via S3", f"{inline.inline:,} / {inline.s3:,}", f"{s3.inline:,} / {s3.s3:,}"),
        ("succeeded", f"{inline.succeeded:,}", f"{s3.succeeded:,}"),
        ("request cost / 1,000", _per_thousand_cost(inline_cost), _per_thousand_cost(s3_cost)),
    ]
    for row in rows:
        table.add_row(*row)

    _say(
        console,
        f"fanout demo: {_requests(max(inline.total, s3.total))} per path, "
        f"about {LARGE_SHARE:.0%} of them over 128,000 bytes",
    )
    console.print(table)

    for line in _legend_lines(_legend(prices), console.width):
        console.print(line)
    console.print()

    latencies = ", ".join(
        f"{_API_NAMES.get(api, api)} ~{median:.0f} ms" for api, median in _LATENCY_MEDIANS_MS.items()
    )
    _say(
        console,
        f"The emulator adds per-call latencies like AWS's within a region ({latencies}; lognormal), and its "
        "endpoint sets IncludeInferenceResponseIn=SUCCESS,ERROR, so results ride in the notifications "
        "and neither path spends an S3 GET per result: only the way in differs.",
    )
    behind = [
        f"{label} ({report.throughput:,.0f}/s)"
        for report, (_, label) in zip((inline, s3), _PATHS, strict=True)
        if report.throughput < 0.9 * RATE
    ]
    if behind:
        _say(
            console,
            f"{' and '.join(behind)} did not keep up with the {RATE:,.0f} requests/s offered on this "
            "machine, so its times include waiting in fanout's queue, not only the way in.",
        )
    if not (inline.ok and s3.ok):
        _say(
            console,
            f"Not every request succeeded (inline: {inline.succeeded:,} of {inline.total:,}; all S3: "
            f"{s3.succeeded:,} of {s3.total:,}), so the numbers cover what finished.",
        )
    console.print()
    _say(console, finding(inline, s3, prices), style="bold")


_API_NAMES: Final = {
    "sagemaker": "InvokeEndpointAsync",
    "s3": "other S3",
    "s3.PutObject": "S3 PutObject",
    "sqs": "SQS",
}


def main(count: int = REQUESTS, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    progress = _progress_for(err)
    with progress:
        progress.note("fanout demo: starting an embedded emulator on 127.0.0.1 (no AWS account needed)")
        inline, s3 = run(run_demo, count, progress)
    print_comparison(inline, s3, out)
    return 0 if inline.ok and s3.ok else 1
