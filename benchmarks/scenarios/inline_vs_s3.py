"""Scenario 1: the same workload through the inline path and through the S3 path.

Two phases. At a fixed offered rate (well below what either path can take), the
latencies show the round trips and nothing else; the gap between the paths is
compared with one S3 PUT round trip, measured alone in the same repetition and
configured in the emulator's latency model. As fast as it goes (fanout's
default limits), the phase shows throughput and client CPU per inference.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from fanout import Staging

from .._harness import (
    CpuClock,
    Sample,
    ScenarioResult,
    Table,
    cell,
    median,
    pooled,
    ratio_cell,
    repeat_sides,
    stat,
    values,
)
from . import Context
from ._fanout import FanoutSettings, fanout_side
from ._plots import cdf_plot
from ._target import isolated
from ._workload import Item, RunRecord, Target, aio_session, json_items

STAGING_CONCURRENCY = Staging(location="s3://bucket/prefix").max_concurrency

NAME = "inline_vs_s3"
TITLE = "Inline vs S3, same workload"


@dataclass(frozen=True, slots=True)
class Size:
    body_bytes: int
    latency_count: int
    rate: float
    throughput_count: int
    put_count: int


SIZES = {
    "tiny": Size(body_bytes=4_000, latency_count=10, rate=50, throughput_count=20, put_count=5),
    "quick": Size(body_bytes=8_000, latency_count=200, rate=100, throughput_count=600, put_count=50),
    "full": Size(body_bytes=8_000, latency_count=1_000, rate=100, throughput_count=3_000, put_count=200),
}

INLINE = "inline"
S3 = "S3"
PUT = "S3 PUT alone"


async def put_alone(items: list[Item], target: Target) -> RunRecord:
    """Sequential ``put_object`` calls of the same bodies, with the same kind of client fanout uses."""
    bucket, _, prefix = target.staging.removeprefix("s3://").partition("/")
    async with aio_session().create_client("s3") as s3:
        with CpuClock(target.server_pid) as clock:
            record = RunRecord(n=len(items), clock=clock)
            for item in items:
                start = time.perf_counter()
                await s3.put_object(Bucket=bucket, Key=f"{prefix}/calibration/{uuid.uuid4()}", Body=item.body)
                record.accept.append(time.perf_counter() - start)
                record.succeeded += 1
    return record


def configured_median_ms(distribution: Any) -> float:
    """The median of a latency distribution in the emulator's format, in ms (NaN if unknown)."""
    if isinstance(distribution, int | float):
        return float(distribution)
    if not isinstance(distribution, dict):
        return math.nan
    kind = distribution.get("kind", "constant")
    if kind == "constant":
        return float(distribution.get("ms", 0))
    if kind == "uniform":
        return (float(distribution.get("low_ms", 0)) + float(distribution.get("high_ms", 0))) / 2
    if kind == "normal":
        return float(distribution.get("mean_ms", 0))
    if kind == "lognormal":
        return float(distribution.get("median_ms", 0))
    if kind == "exponential":
        return float(distribution.get("mean_ms", 0)) * math.log(2)
    return math.nan


def run(ctx: Context) -> ScenarioResult:
    size = SIZES[ctx.size]
    latency_items = json_items(size.latency_count, size=size.body_bytes, prefix="l")
    throughput_items = json_items(size.throughput_count, size=size.body_bytes, prefix="t")

    def side(items: list[Item], settings: FanoutSettings) -> Callable[[], Sample]:
        return isolated(ctx, fanout_side(items, settings))

    latency = repeat_sides(
        {
            INLINE: side(latency_items, FanoutSettings(payload="inline", rate=size.rate)),
            S3: side(latency_items, FanoutSettings(payload="s3", rate=size.rate)),
            PUT: isolated(ctx, lambda target: partial(put_alone, latency_items[: size.put_count], target)),
        },
        ctx.repeat,
        progress=lambda m: ctx.progress(f"paced at {size.rate:g}/s: {m}"),
    )
    throughput = repeat_sides(
        {
            INLINE: side(throughput_items, FanoutSettings(payload="inline")),
            S3: side(throughput_items, FanoutSettings(payload="s3")),
        },
        ctx.repeat,
        progress=lambda m: ctx.progress(f"as fast as it goes: {m}"),
    )
    return _report(ctx, size, latency, throughput)


def _report(
    ctx: Context,
    size: Size,
    latency: dict[str, list[Sample]],
    throughput: dict[str, list[Sample]],
) -> ScenarioResult:
    paced = Table(
        [
            "path",
            "accept p50 (ms)",
            "accept p95 (ms)",
            "accept p99 (ms)",
            "completion p50 (ms)",
            "completion p99 (ms)",
            "API calls / 1k",
            "S3 PUTs / 1k",
            "client CPU-s / 1k",
        ],
        title=f"At a fixed offered rate of {size.rate:g} requests/s ({size.latency_count:,} requests)",
    )
    for name in (INLINE, S3):
        runs = latency[name]
        paced.add(
            name,
            cell(runs, "accept_p50_ms"),
            cell(runs, "accept_p95_ms"),
            cell(runs, "accept_p99_ms"),
            cell(runs, "complete_p50_ms"),
            cell(runs, "complete_p99_ms"),
            cell(runs, "api_calls_per_k", 0),
            cell(runs, "s3_puts_per_k", 0),
            cell(runs, "client_cpu_per_k", 2),
        )
    fast = Table(
        [
            "path",
            f"time for {size.throughput_count:,} (s)",
            "inferences/s",
            "inline / S3 throughput",
            "completion p50 (ms)",
            "completion p99 (ms)",
            "API calls / 1k",
            "S3 PUTs / 1k",
            "client CPU-s / 1k",
        ],
        title=f"As fast as it goes, fanout's default limits ({size.throughput_count:,} requests)",
    )
    for name in (INLINE, S3):
        runs = throughput[name]
        fast.add(
            name,
            cell(runs, "wall_s", 2),
            cell(runs, "throughput", 0),
            ratio_cell(throughput[INLINE], runs, "throughput") if name == S3 else "–",
            cell(runs, "complete_p50_ms", 0),
            cell(runs, "complete_p99_ms", 0),
            cell(runs, "api_calls_per_k", 0),
            cell(runs, "s3_puts_per_k", 0),
            cell(runs, "client_cpu_per_k", 2),
        )

    # The gap, repetition by repetition: S3 accept minus inline accept, against a PUT measured alone.
    gap_p50 = stat(
        s - i
        for s, i in zip(
            values(latency[S3], "accept_p50_ms"), values(latency[INLINE], "accept_p50_ms"), strict=True
        )
    )
    gap_mean = stat(
        s - i
        for s, i in zip(
            values(latency[S3], "accept_mean_ms"), values(latency[INLINE], "accept_mean_ms"), strict=True
        )
    )
    put_p50 = stat(values(latency[PUT], "accept_p50_ms"))
    put_mean = stat(values(latency[PUT], "accept_mean_ms"))
    configured = configured_median_ms(ctx.latency.get("s3.PutObject", ctx.latency.get("s3")))
    gap = Table(["", "p50 (ms)", "mean (ms)"], title="The gap against one S3 PUT round trip")
    gap.add("S3 accept − inline accept (measured)", gap_p50.format(1), gap_mean.format(1))
    gap.add(
        f"S3 PUT alone, sequential (measured, {size.put_count} calls)", put_p50.format(1), put_mean.format(1)
    )
    if not ctx.real:
        gap.add(
            "S3 PUT latency injected by the emulator (configured)", f"{configured:.1f}", f"{configured:.1f}"
        )
    gap.add(
        "gap / measured PUT",
        f"{gap_p50.median / put_p50.median:.2f}",
        f"{gap_mean.median / put_mean.median:.2f}",
    )

    plots = []
    if ctx.plots:
        accept_plot = cdf_plot(
            {
                f"{INLINE} (accept)": pooled(latency[INLINE], "accept", scale=1000),
                f"{S3} (accept)": pooled(latency[S3], "accept", scale=1000),
                PUT: pooled(latency[PUT], "accept", scale=1000),
            },
            ctx.results / "inline_vs_s3_accept_cdf.png",
            title=f"Time to accept at {size.rate:g} requests/s: inline vs S3",
            xlabel="milliseconds from the first call to the 202",
        )
        completion_plot = cdf_plot(
            {
                INLINE: pooled(latency[INLINE], "complete", scale=1000),
                S3: pooled(latency[S3], "complete", scale=1000),
            },
            ctx.results / "inline_vs_s3_completion_cdf.png",
            title=f"Time to completion at {size.rate:g} requests/s: inline vs S3",
            xlabel="milliseconds from the first call to the outcome",
        )
        plots = [p for p in (accept_plot, completion_plot) if p is not None]

    speed = ratio_cell(throughput[INLINE], throughput[S3], "throughput")
    configured_text = "" if ctx.real else f" ({configured:.0f} ms configured in the emulator)"
    headlines = [
        f"Inline accepts {gap_p50.median:.1f} ms sooner than S3 at p50; one S3 PUT round trip takes "
        f"{put_p50.median:.1f} ms measured alone{configured_text}, so gap / PUT = "
        f"{gap_p50.median / put_p50.median:.2f}. As fast as it goes, inline runs "
        f"{speed} S3's throughput, and the S3 path makes {median(latency[S3], 's3_puts_per_k'):,.0f} S3 PUTs "
        f"per 1,000 inferences where inline makes {median(latency[INLINE], 's3_puts_per_k'):,.0f}."
    ]
    description = f"""
The same {size.body_bytes:,}-byte JSON requests sent by fanout with `payload=inline` (the body rides in
the InvokeEndpointAsync call) and with `payload=s3` (each body is uploaded to the staging bucket first,
then invoked with `InputLocation`). Tracking is SQS in both. Time to accept runs from the request's first
call (the upload on the S3 path) to the 202; time to completion, to the outcome in the caller's hands.
The paced phase starts one request every {1000 / size.rate:g} ms (an open-loop offered load of
{size.rate:g}/s, far below what either path can take, so nothing queues); fanout's limits are its defaults.
The S3 PUT row is {size.put_count} sequential `put_object` calls of the same bodies, measured in the same
repetitions.
"""
    return ScenarioResult(
        name=NAME,
        title=TITLE,
        description=description,
        tables=[paced, gap, fast],
        plots=plots,
        headlines=headlines,
        notes=[
            "The gap should equal one PUT round trip: the S3 path makes exactly one more call per request "
            "before its invoke, and the invoke itself is the same call.",
            "API calls and S3 PUTs are counted by the emulator; the S3 path's PUT count is the staging "
            "uploads (the endpoint's own output writes are not HTTP calls).",
            f"As fast as it goes, the S3 path is bounded by fanout's staging concurrency "
            f"(`Staging.max_concurrency`, {STAGING_CONCURRENCY} uploads at once by default): at one PUT "
            f"round trip each, at most about {STAGING_CONCURRENCY / put_p50.median * 1000:,.0f} "
            "uploads/s here.",
        ],
        raw={"paced": latency, "fast": throughput},
    )
