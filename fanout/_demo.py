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
"""

from __future__ import annotations

import dataclasses
import random
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, TextIO

from ._client import open_client
from ._config import Limits, PayloadMode, SqsTracking, Staging
from ._cost import COMPUTE_NOTE, CostReport, cost_of, format_money, load_prices
from ._loop import run
from ._models import MAX_INLINE_BODY_BYTES, InferenceRequest, RunReport

if TYPE_CHECKING:
    from .testing import EmulatorConfig

__all__ = ["main", "run_demo"]

REQUESTS = 2_000
LARGE_SHARE = 0.05
"""The share of payloads over 128,000 bytes."""
INCLUDED_LINE = (
    "Emulator endpoint configured with IncludeInferenceResponseIn=SUCCESS,ERROR, "
    "so results ride in the notifications."
)


def _latencies() -> dict[str, object]:
    from .testing import Distribution

    def lognormal(median_ms: float) -> Distribution:
        return Distribution("lognormal", median_ms=median_ms, sigma=0.35)

    return {
        "sagemaker": lognormal(12.0),
        "s3": lognormal(8.0),
        "s3.PutObject": lognormal(25.0),
        "sqs": lognormal(6.0),
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


async def _one_path(env: dict[str, str], payload: PayloadMode, count: int) -> RunReport:
    async with open_client(
        endpoint_name=env["FANOUT_ENDPOINT"],
        tracking=SqsTracking(queue_url=env["FANOUT_QUEUE_URL"], wait_time_seconds=1),
        limits=Limits(max_in_flight=64, max_pending=2_000),
        payload=payload,
        staging=Staging(location=env["FANOUT_STAGING"]),
    ) as client:
        return await client.run(_batch(count))


async def run_demo(count: int = REQUESTS) -> tuple[RunReport, RunReport]:
    """Score the same generated batch through both paths; returns (inline, s3) reports.

    Each path gets a fresh emulator, so neither sees the other's queue or objects.
    """
    inline = await _on_emulator("auto", count)
    s3 = await _on_emulator("s3", count)
    return inline, s3


async def _on_emulator(payload: PayloadMode, count: int) -> RunReport:
    from .testing import FaultConfig, aws_environment, open_emulator

    async with open_emulator(_emulator_config()) as emulator:
        emulator.set_faults(FaultConfig(latency=_latencies(), targets=()))  # type: ignore[arg-type]
        with aws_environment(emulator.env):
            return await _one_path(emulator.env, payload, count)


def _per_thousand(report: RunReport, name: str | None = None) -> str:
    if not report.total:
        return "-"
    calls = sum(report.api_calls.values()) if name is None else report.api_calls.get(name, 0)
    return f"{calls * 1000 / report.total:,.0f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.0f} ms"


def _cost(report: RunReport) -> CostReport:
    inferences = report.inline + report.s3
    prices = load_prices()
    return cost_of(
        report.api_calls, inferences=inferences, inline=report.inline, prices=prices, notifications=inferences
    )


def _per_thousand_cost(cost: CostReport) -> str:
    per_1000 = cost.per_1000_inferences
    return "-" if per_1000 is None else format_money(per_1000, cost.currency)


def print_comparison(inline: RunReport, s3: RunReport, stream: TextIO = sys.stdout) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"fanout demo: {inline.total:,} requests per path ({LARGE_SHARE:.0%} over 128,000 bytes)",
        title_justify="left",
    )
    table.add_column("")
    table.add_column("inline (auto)", justify="right")
    table.add_column("all S3", justify="right")
    inline_cost, s3_cost = _cost(inline), _cost(s3)
    rows = [
        ("throughput", f"{inline.throughput:,.0f}/s", f"{s3.throughput:,.0f}/s"),
        ("p50 to completion", _ms(inline.p50), _ms(s3.p50)),
        ("p99 to completion", _ms(inline.p99), _ms(s3.p99)),
        ("API calls / 1,000", _per_thousand(inline), _per_thousand(s3)),
        ("S3 PUTs / 1,000", _per_thousand(inline, "s3.PutObject"), _per_thousand(s3, "s3.PutObject")),
        ("sent inline / via S3", f"{inline.inline:,} / {inline.s3:,}", f"{s3.inline:,} / {s3.s3:,}"),
        ("succeeded", f"{inline.succeeded:,}", f"{s3.succeeded:,}"),
        ("request cost / 1,000", _per_thousand_cost(inline_cost), _per_thousand_cost(s3_cost)),
    ]
    for row in rows:
        table.add_row(*row)
    console = Console(file=stream, highlight=False)
    console.print(table)
    console.print(
        "Emulated latency per call: InvokeEndpointAsync ~12 ms, S3 PutObject ~25 ms, other S3 ~8 ms, "
        "SQS ~6 ms (lognormal)."
    )
    console.print(INCLUDED_LINE)
    if inline_cost.total < s3_cost.total:
        console.print(
            f"At {inline_cost.region} list prices of {inline_cost.prices_taken}, sending inline saved "
            f"{format_money(s3_cost.total - inline_cost.total, inline_cost.currency)} per "
            f"{inline.total:,} requests in S3 PUTs and GETs. {COMPUTE_NOTE}"
        )


def main() -> int:
    print("fanout demo: starting an embedded emulator on 127.0.0.1 (no AWS account needed)", file=sys.stderr)
    inline, s3 = run(run_demo)
    print_comparison(inline, s3)
    return 0 if inline.ok and s3.ok else 1
