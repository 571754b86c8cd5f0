"""Scenario 4: a throttled endpoint. fanout's retries and adaptive limiter against botocore's adaptive mode.

This runs the dispatcher's own benchmark, ``bench_throttled`` (as
``python -m benchmarks.dispatch`` runs it), on an emulator process started here, and reports it
with the rest: the emulator throttles InvokeEndpointAsync with a token bucket
(400 ``ThrottlingException``, as SageMaker does); for a fixed window, 64 workers
submit one request after another through fanout's Dispatcher and, in turn,
through one aiobotocore client in botocore's adaptive retry mode.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from .._harness import Sample, ScenarioResult, Table, cell, median, ratio
from . import Context
from ._dispatcher import Throttled, bench_throttled
from ._plots import rate_plot
from ._target import open_target

_T = TypeVar("_T")

NAME = "throttled"
TITLE = "Throttled endpoint: fanout vs botocore adaptive mode"


@dataclass(frozen=True, slots=True)
class Size:
    rate: float
    duration: float
    drain: float


SIZES = {
    "tiny": Size(rate=50, duration=0.5, drain=0.5),
    "quick": Size(rate=300, duration=5.0, drain=10.0),
    "full": Size(rate=400, duration=20.0, drain=30.0),
}

FANOUT = "fanout"
ADAPTIVE = "adaptive"
LABELS = {FANOUT: "fanout Dispatcher (default retry policy)", ADAPTIVE: "aiobotocore, retries mode=adaptive"}


def run(ctx: Context) -> ScenarioResult:
    if ctx.real:
        return ScenarioResult(
            name=NAME,
            title=TITLE,
            description="Skipped with `--real`: the throttle is injected by the emulator, and a real "
            "endpoint should not be pushed into throttling on purpose.",
        )
    size = SIZES[ctx.size]
    ctx.progress(
        f"{LABELS[FANOUT]} and {LABELS[ADAPTIVE]}, {ctx.repeat} repetition(s) of {size.duration:g} s"
    )
    with open_target(ctx) as target:
        result, orphans = run_leaving_orphans(
            partial(
                bench_throttled,
                dict(target.env),
                rate=size.rate,
                duration=size.duration,
                repeat=ctx.repeat,
                server_pid=target.server_pid,
                drain=size.drain,
            ),
            uvloop=ctx.uvloop,
        )
    samples = {LABELS[name]: runs for name, runs in result.sides.items()}
    return _report(ctx, size, result, samples, orphans)


def run_leaving_orphans(main: Callable[[], Awaitable[_T]], *, uvloop: bool) -> tuple[_T, int]:
    """Run ``main`` in a fresh event loop; drop, rather than await, the tasks it leaves behind.

    On CPython 3.11, cancelling a waiter of aiobotocore's adaptive token bucket can leave the
    bucket's ``asyncio.Condition`` lock held (shared/reference/peers.md §1.6); the orphaned
    ``Condition.wait`` tasks then never finish, and ``asyncio.run`` would wait for them forever
    when it closes the loop. Returns the result and the number of such tasks.
    """
    loop: asyncio.AbstractEventLoop
    if uvloop:
        try:
            import uvloop as uv
        except ImportError:
            loop = asyncio.new_event_loop()
        else:
            loop = uv.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        result = loop.run_until_complete(main())
        orphans = [task for task in asyncio.all_tasks(loop) if not task.done()]
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        # The orphans are garbage once the loop is gone; their "destroyed but pending" reports are noise.
        loop.set_exception_handler(lambda _loop, _context: None)
        loop.close()
    return result, len(orphans)


def _report(
    ctx: Context, size: Size, result: Throttled, samples: dict[str, list[Sample]], orphans: int
) -> ScenarioResult:
    ours, theirs = samples[LABELS[FANOUT]], samples[LABELS[ADAPTIVE]]
    table = Table(
        [
            "client",
            "goodput (accepted/s)",
            "goodput / throttle rate",
            "goodput in the first second",
            "throttled calls per accepted",
            "gave up",
            "longest stretch under half the rate (s)",
            "collapsed runs",
            "client CPU-s / 1k accepted",
        ]
    )
    for label, runs in samples.items():
        table.add(
            label,
            cell(runs, "goodput", 0),
            cell(runs, "goodput_ratio", 2),
            cell(runs, "first_second_goodput", 0),
            cell(runs, "waste", 3),
            cell(runs, "gave_up", 0),
            cell(runs, "longest_low", 1),
            f"{sum(int(s.metrics['collapsed']) for s in runs)}/{len(runs)}",
            cell(runs, "client_cpu_per_k", 2),
        )
    bucket = result.bucket_seconds
    plots = []
    if ctx.plots:
        # One real repetition per side, the median by goodput, rather than an average of curves.
        chosen: dict[str, Sample] = {}
        for label, runs in samples.items():
            ordered = sorted(runs, key=lambda s: s.metrics["goodput"])
            chosen[label] = ordered[len(ordered) // 2]
        plot = rate_plot(
            {f"{label}: accepted/s": s.series["goodput"] for label, s in chosen.items()},
            ctx.results / "throttled_goodput.png",
            title=f"Goodput under a throttle of {size.rate:g} requests/s",
            bucket=bucket,
            ylabel="per second",
            dashed={f"{label}: throttled/s": s.series["throttled"] for label, s in chosen.items()},
            hline=(f"throttle rate {size.rate:g}/s", size.rate),
        )
        plots = [plot] if plot is not None else []
    share = median(ours, "goodput_ratio")
    headline = (
        f"Against an endpoint throttled at {size.rate:g} requests/s, fanout keeps {share:.0%} of the "
        f"allowed rate ({ratio(ours, theirs, 'goodput').median:.2f}× botocore adaptive's goodput) with "
        f"{median(ours, 'waste'):.3f} throttled calls per accepted one, against "
        f"{median(theirs, 'waste'):.3f} for botocore adaptive."
    )
    burst = result.burst
    description = f"""
The emulator admits {size.rate:g} InvokeEndpointAsync calls per second (a token bucket of {burst:g} tokens
that starts full) and answers every other call with a 400 `ThrottlingException`. For {size.duration:g} s per
side and repetition, 64 workers submit 1 KiB inline requests one after another: through fanout's Dispatcher
(its default retry policy, adaptive limiter on), and through one aiobotocore client with
`retries={result.adaptive_retries}`. Goodput counts the calls accepted inside the window;
throttled calls are counted by the emulator. The two sides alternate in each repetition, against one
emulator process.
"""
    return ScenarioResult(
        name=NAME,
        title=TITLE,
        description=description,
        tables=[table],
        plots=plots,
        headlines=[headline],
        notes=[
            "Run by `bench_throttled` (the dispatcher's own benchmark, `python -m benchmarks.dispatch`), "
            "which replaces the emulator's faults with the throttle alone: this scenario has no added "
            "latency.",
            '"Collapsed": goodput under half the rate for more than 1 s after the first second. What is '
            f"still retrying when the window closes gets {size.drain:g} s more, then is cancelled.",
            f"The plot shows one repetition per side (the median by goodput), in {bucket:g}-s buckets; "
            "dashed lines are the throttled calls per second.",
            "botocore's adaptive mode starts with no measured rate: its first throttles drop its fill rate "
            "to the 0.5 requests/s floor, and it climbs back at CUBIC's pace (shared/reference/peers.md "
            f"§1.5). A {size.duration:g}-s window mostly shows that cold start; the full size runs "
            f"{SIZES['full'].duration:g} s per side.",
            *(
                [
                    f"After the benchmark, {orphans} task(s) were left stuck in aiobotocore's adaptive token "
                    "bucket: cancelling its waiters leaves the bucket's lock held on CPython 3.11, so a "
                    "client whose adaptive limiter was ever cancelled deadlocks (shared/reference/peers.md "
                    "§1.6)."
                ]
                if orphans
                else []
            ),
        ],
        raw={"": samples},
    )
