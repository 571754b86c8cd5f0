"""Scenario 5: what finding out costs: SQS notifications vs S3 HEAD polling vs S3 LIST polling."""

from __future__ import annotations

from dataclasses import dataclass

from .._harness import Sample, ScenarioResult, Table, cell, median, repeat_sides
from . import Context
from ._fanout import FanoutSettings, fanout_side
from ._target import isolated, open_target
from ._tracker import measure_sqs
from ._workload import json_items

NAME = "tracking_cost"
TITLE = "Tracking cost: SQS vs S3 HEAD vs S3 LIST"


@dataclass(frozen=True, slots=True)
class Size:
    count: int
    body_bytes: int
    interval: float
    max_interval: float
    notifications: int
    """For the tracker alone: notifications drained from a pre-filled queue."""
    notification_rate: float
    notification_seconds: float
    service_high_ms: float = 1_000
    """The endpoint's service time is uniform from 100 ms to this: wider than elsewhere, so outcomes keep
    arriving for a while and polling has to wait for them."""


SIZES = {
    "tiny": Size(
        20, 1_000, 0.05, 0.2, 200, notification_rate=200, notification_seconds=0.3, service_high_ms=200
    ),
    "quick": Size(400, 1_000, 0.1, 0.5, notifications=5_000, notification_rate=500, notification_seconds=2),
    "full": Size(
        2_000, 1_000, 0.1, 0.5, notifications=20_000, notification_rate=1_000, notification_seconds=5
    ),
}

SQS = "SQS notifications"
HEAD = "S3 HEAD polling"
LIST = "S3 LIST polling"

TRACKING_OPERATIONS = (
    "sqs.ReceiveMessage",
    "sqs.DeleteMessageBatch",
    "sqs.DeleteMessage",
    "s3.HeadObject",
    "s3.ListObjectsV2",
    "s3.GetObject",
)


def run(ctx: Context) -> ScenarioResult:
    size = SIZES[ctx.size]
    items = json_items(size.count, size=size.body_bytes)
    modes = {
        SQS: FanoutSettings(tracking="sqs"),
        HEAD: FanoutSettings(tracking="head", interval=size.interval, max_interval=size.max_interval),
        LIST: FanoutSettings(tracking="list", interval=size.interval, max_interval=size.max_interval),
    }
    service = {"kind": "uniform", "low_ms": 100, "high_ms": size.service_high_ms}
    # Without the response in the notification, every tracker has to GET each result: like for like.
    sides = {
        name: isolated(ctx, fanout_side(items, settings), include_response=False, service_time=service)
        for name, settings in modes.items()
    }
    samples = repeat_sides(sides, ctx.repeat, progress=ctx.progress)
    alone = None if ctx.real else _tracker_alone(ctx, size)
    return _report(ctx, size, samples, alone)


def _tracker_alone(ctx: Context, size: Size) -> list[Sample]:
    """The SQS tracker on its own, with its component benchmark (``python -m benchmarks.tracking``)."""

    def side() -> Sample:
        with open_target(ctx) as target:
            return measure_sqs(
                dict(target.env),
                notifications=size.notifications,
                rate=size.notification_rate,
                seconds=size.notification_seconds,
                uvloop=ctx.uvloop,
            )

    return repeat_sides({"alone": side}, ctx.repeat, progress=ctx.progress)["alone"]


def _zero(sample: Sample, name: str) -> Sample:
    """The sample with ``name`` at 0 when the emulator saw no such call (rather than unknown)."""
    return Sample(metrics={name: sample.metrics.get(name, 0.0)})


def _tracking_calls(sample: Sample) -> float:
    return sum(sample.metrics.get(f"calls:{op}", 0.0) for op in TRACKING_OPERATIONS)


def _report(
    ctx: Context, size: Size, samples: dict[str, list[Sample]], alone: list[Sample] | None
) -> ScenarioResult:
    for runs in samples.values():
        for sample in runs:
            sample.metrics["tracking_calls_per_k"] = _tracking_calls(sample)
    used = [
        op
        for op in TRACKING_OPERATIONS
        if any(f"calls:{op}" in s.metrics for r in samples.values() for s in r)
    ]
    table = Table(
        [
            "tracking",
            f"time for {size.count:,} (s)",
            "202 → outcome p50 (ms)",
            "202 → outcome p99 (ms)",
            "tracking calls / completion",
            *(f"{op} / completion" for op in used),
            "all API calls / completion",
        ]
    )
    for name, runs in samples.items():
        table.add(
            name,
            cell(runs, "wall_s", 2),
            cell(runs, "outcome_p50_ms", 0),
            cell(runs, "outcome_p99_ms", 0),
            cell(runs, "tracking_calls_per_k", 2, scale=0.001),
            *(cell([_zero(s, f"calls:{op}") for s in runs], f"calls:{op}", 2, scale=0.001) for op in used),
            cell(runs, "api_calls_per_k", 2, scale=0.001),
        )
    per = {name: median(runs, "tracking_calls_per_k") / 1000 for name, runs in samples.items()}
    lag = {name: median(runs, "outcome_p50_ms") for name, runs in samples.items()}
    headline = (
        f"Tracking by SQS costs {per[SQS]:.2f} API calls per completion against {per[HEAD]:.2f} for S3 HEAD "
        f"and {per[LIST]:.2f} for S3 LIST polling, and learns of an outcome in {lag[SQS]:.0f} ms at p50 "
        f"against {lag[HEAD]:.0f} and {lag[LIST]:.0f} ms."
    )
    response = (
        "Whether each tracker must GET the result depends on the endpoint's `IncludeInferenceResponseIn`."
        if ctx.real
        else "The endpoint does not include the response in its notifications here, so every tracker GETs "
        "each result: the difference is only in how each one learns that an outcome exists."
    )
    service = (
        "" if ctx.real else f"; the endpoint's service time here is uniform 100–{size.service_high_ms:g} ms"
    )
    description = f"""
{size.count:,} small requests through fanout (inline, default limits) with each tracker. {response}
SQS receives the SNS notifications (long polls, batched deletes); S3 HEAD polls each pending output and
failure object; S3 LIST pages through the output and failure prefixes. Polling starts every
{size.interval} s and backs off to {size.max_interval} s (fanout's defaults are 1 s and 15 s against real
service times of seconds){service}.
"""
    tables = [table]
    raw = {"": samples}
    if alone is not None:
        component = Table(
            ["measure", "value"],
            title="The SQS tracker alone (the tracker's own benchmark, `python -m benchmarks.tracking`, "
            "run here)",
        )
        component.add(
            f"notifications drained per second ({size.notifications:,} queued)", cell(alone, "per_s", 0)
        )
        component.add("notifications per CPU-second of the client", cell(alone, "per_cpu_s", 0))
        component.add("SQS messages received per notification", cell(alone, "receive_calls", 3))
        component.add(
            f"SendMessageBatch → outcome, p50 (ms, at {size.notification_rate:g}/s)", cell(alone, "p50_ms", 1)
        )
        component.add(
            f"SendMessageBatch → outcome, p99 (ms, at {size.notification_rate:g}/s)", cell(alone, "p99_ms", 1)
        )
        tables.append(component)
        raw["tracker alone"] = {"SQS tracker": alone}
    return ScenarioResult(
        name=NAME,
        title=TITLE,
        description=description,
        tables=tables,
        headlines=[headline],
        notes=[
            'Calls are counted by the emulator. "202 → outcome" runs from the accepted invoke to the '
            "outcome (with its result fetched) in the caller's hands.",
            "SQS idle long polls while the queue is empty count as calls too; they are what a run costs.",
        ],
        raw=raw,
    )
