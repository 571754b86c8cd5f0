"""Scenario 2: a mix of small and large payloads, ``auto`` routing against everything through S3."""

from __future__ import annotations

from dataclasses import dataclass

from fanout import MAX_INLINE_BODY_BYTES

from .._harness import Sample, ScenarioResult, Table, cell, median, ratio, ratio_cell, repeat_sides
from . import Context
from ._fanout import FanoutSettings, fanout_side
from ._target import isolated
from ._workload import mixed_items

NAME = "mixed_sizes"
TITLE = "Mixed sizes: auto routing vs all through S3"


@dataclass(frozen=True, slots=True)
class Size:
    count: int
    small: int
    large: int
    large_every: int


SIZES = {
    "tiny": Size(count=20, small=2_000, large=200_000, large_every=10),
    "quick": Size(count=500, small=2_000, large=200_000, large_every=10),
    "full": Size(count=2_000, small=2_000, large=200_000, large_every=10),
}

AUTO = "payload=auto"
ALL_S3 = "payload=s3"


def run(ctx: Context) -> ScenarioResult:
    size = SIZES[ctx.size]
    items = mixed_items(size.count, small=size.small, large=size.large, large_every=size.large_every)
    sides = {
        AUTO: isolated(ctx, fanout_side(items, FanoutSettings(payload="auto"))),
        ALL_S3: isolated(ctx, fanout_side(items, FanoutSettings(payload="s3"))),
    }
    samples = repeat_sides(sides, ctx.repeat, progress=ctx.progress)
    return _report(size, samples)


def _report(size: Size, samples: dict[str, list[Sample]]) -> ScenarioResult:
    large = sum(1 for i in range(size.count) if i % size.large_every == size.large_every - 1)
    table = Table(
        [
            "mode",
            f"time for {size.count:,} (s)",
            "inferences/s",
            "auto / s3 throughput",
            "accept p50 (ms)",
            "accept p99 (ms)",
            "completion p50 (ms)",
            "completion p99 (ms)",
            "sent inline",
            "S3 PUTs / 1k",
            "API calls / 1k",
            "client CPU-s / 1k",
        ]
    )
    for name, runs in samples.items():
        table.add(
            name,
            cell(runs, "wall_s", 2),
            cell(runs, "throughput", 0),
            ratio_cell(samples[AUTO], runs, "throughput") if name == ALL_S3 else "–",
            cell(runs, "accept_p50_ms"),
            cell(runs, "accept_p99_ms"),
            cell(runs, "complete_p50_ms", 0),
            cell(runs, "complete_p99_ms", 0),
            f"{cell(runs, 'inline', 0)}/{size.count}",
            cell(runs, "s3_puts_per_k", 0),
            cell(runs, "api_calls_per_k", 0),
            cell(runs, "client_cpu_per_k", 2),
        )
    speed = ratio(samples[AUTO], samples[ALL_S3], "throughput").median
    headline = (
        f"With {large / size.count:.0%} of payloads over {MAX_INLINE_BODY_BYTES:,} bytes, auto routing "
        f"runs {speed:.2f}× the throughput of all-S3 and makes {median(samples[AUTO], 's3_puts_per_k'):,.0f} "
        f"instead of {median(samples[ALL_S3], 's3_puts_per_k'):,.0f} S3 PUTs per 1,000 inferences."
    )
    description = f"""
{size.count:,} JSON requests: {size.count - large:,} of {size.small:,} bytes and {large:,} of {size.large:,}
bytes (one in {size.large_every}), which are over the {MAX_INLINE_BODY_BYTES:,}-byte inline limit and must go
through S3. `payload=auto` sends each body inline when it fits and stages the rest; `payload=s3` stages
every body, as the SageMaker SDK does. fanout's default limits and SQS tracking in both.
"""
    return ScenarioResult(
        name=NAME,
        title=TITLE,
        description=description,
        tables=[table],
        headlines=[headline],
        raw={"": samples},
    )
