"""The workloads every side scores, the record of one run, and how a run becomes a ``Sample``.

Bodies are JSON objects padded to a chosen size. The emulator's default model
answers ``{"sha256": <hex of the input bytes>, "bytes": n}``, so every side can
check that each result belongs to its own request (``verified``). Against a real
endpoint the model is unknown, and only ``succeeded`` counts.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import inspect
import json
import math
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from fanout.testing import aws_environment

from .._harness import CpuClock, Sample, percentile

__all__ = [
    "Item",
    "RunRecord",
    "Target",
    "aio_session",
    "api_calls",
    "client_location",
    "count_calls",
    "env_session",
    "json_items",
    "loop_options",
    "measure",
    "mixed_items",
    "open_clients",
    "to_sample",
    "verify",
]


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    body: bytes
    sha256: str


def _padded_json(ident: str, size: int) -> bytes:
    head = json.dumps({"id": ident, "pad": ""}, separators=(",", ":")).encode()
    pad = max(0, size - len(head))
    return json.dumps({"id": ident, "pad": "x" * pad}, separators=(",", ":")).encode()


def _item(ident: str, size: int) -> Item:
    body = _padded_json(ident, size)
    return Item(ident, body, hashlib.sha256(body).hexdigest())


def json_items(count: int, *, size: int, prefix: str = "r") -> list[Item]:
    """``count`` JSON bodies of about ``size`` bytes each (never less than the bare object)."""
    return [_item(f"{prefix}{i}", size) for i in range(count)]


def mixed_items(count: int, *, small: int, large: int, large_every: int) -> list[Item]:
    """Mostly ``small`` bodies, with one ``large`` body every ``large_every`` requests."""
    return [_item(f"m{i}", large if i % large_every == large_every - 1 else small) for i in range(count)]


def verify(item: Item, result: bytes | None) -> bool:
    """True when ``result`` is the default model's answer for exactly this item's bytes."""
    if result is None:
        return False
    try:
        answer = json.loads(result)
    except ValueError:
        return False
    return isinstance(answer, dict) and answer.get("sha256") == item.sha256


@dataclass(frozen=True, slots=True)
class Target:
    """Where the benchmark sends its calls: the emulator's process, or a real endpoint (``--real``)."""

    env: Mapping[str, str]
    """Applied to ``os.environ`` while a side runs, so every client uses the standard AWS chain."""
    endpoint_name: str
    staging: str
    queue_url: str | None
    server_pid: int | None = None
    stats_url: str | None = None
    real: bool = False

    def stats(self) -> dict[str, Any] | None:
        if self.stats_url is None:
            return None
        from urllib.request import urlopen

        with urlopen(self.stats_url, timeout=10) as response:
            stats: dict[str, Any] = json.load(response)
            return stats


@cache
def aio_session() -> Any:
    """One aiobotocore session for the whole benchmark, as a long-lived service would hold.

    Clients made from it read the environment (the emulator of the run) when they are made;
    the session only spares loading the service models again for every run.
    """
    from aiobotocore.session import get_session

    return get_session()


def env_session(env: Mapping[str, str]) -> Any:
    """An aiobotocore session holding the credentials in ``env`` (an emulator's), for code that is handed
    an ``env`` rather than running inside it (``aws_environment``)."""
    from aiobotocore.session import get_session

    session = get_session()
    session.set_credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    return session


def client_location(env: Mapping[str, str]) -> dict[str, str]:
    """``region_name`` and ``endpoint_url`` of a client for the emulator in ``env``."""
    return {"region_name": env.get("AWS_REGION", "us-east-1"), "endpoint_url": env["AWS_ENDPOINT_URL"]}


@asynccontextmanager
async def open_clients(
    env: Mapping[str, str], *services: str, config: Any = None
) -> AsyncIterator[list[Any]]:
    """One aiobotocore client per service, for the emulator in ``env``."""
    session = env_session(env)
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                session.create_client(name, config=config, **client_location(env))
            )
            for name in services
        ]


@dataclass(slots=True)
class RunRecord:
    """What one side measured while scoring one workload."""

    n: int
    clock: CpuClock
    accept: list[float] = field(default_factory=list)
    """Seconds from the first call made for a request to its 202."""
    complete: list[float] = field(default_factory=list)
    """Seconds from the first call made for a request to its outcome being known to the caller."""
    outcome: list[float] = field(default_factory=list)
    """Seconds from a request's 202 to its outcome being known (what tracking costs in time)."""
    accepted_at: list[float] = field(default_factory=list)
    """Seconds since the start of the run at which each request was accepted (for timelines)."""
    succeeded: int = 0
    verified: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    """API calls counted by the client itself; used only when the server's counters are unavailable
    (``--real``)."""


def count_calls(client: Any, counter: Counter[str]) -> None:
    """Count every HTTP attempt a botocore or aiobotocore client sends, by ``service.Operation``."""

    def before_send(event_name: str, **_: Any) -> None:
        counter[event_name.partition(".")[2]] += 1

    client.meta.events.register("before-send", before_send)


def api_calls(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> dict[str, int]:
    """HTTP requests the emulator served between two stats snapshots, by ``service.Operation``."""
    if before is None or after is None:
        return {}
    calls: dict[str, int] = {}
    for name, outcomes in after.get("requests", {}).items():
        old = before.get("requests", {}).get(name, {})
        delta = sum(outcomes.values()) - sum(old.values())
        if delta:
            calls[name] = delta
    return calls


def _operation(calls: Mapping[str, int], operation: str) -> int:
    return sum(n for name, n in calls.items() if name.rsplit(".", 1)[-1] == operation)


def _delta(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, *path: str) -> float:
    def dig(stats: Mapping[str, Any] | None) -> float:
        node: Any = stats
        for key in path:
            if not isinstance(node, Mapping) or key not in node:
                return math.nan
            node = node[key]
        return float(node) if isinstance(node, int | float) else math.nan

    return dig(after) - dig(before)


def to_sample(
    record: RunRecord, before: Mapping[str, Any] | None = None, after: Mapping[str, Any] | None = None
) -> Sample:
    """Scalar metrics (per 1,000 inferences where it says so) and the raw latency series of one run."""
    n = max(record.n, 1)
    per_k = 1000.0 / n
    counted = before is not None and after is not None
    calls = api_calls(before, after) if counted else {k: v for k, v in record.calls.items() if v > 0}
    counted = counted or bool(calls)
    metrics: dict[str, float] = {
        "n": float(record.n),
        **record.clock.per_thousand(record.n),
        "throughput": record.succeeded / record.clock.wall if record.clock.wall > 0 else math.nan,
        "succeeded": float(record.succeeded),
        "verified": float(record.verified),
        "api_calls_per_k": sum(calls.values()) * per_k if counted else math.nan,
        "s3_puts_per_k": _operation(calls, "PutObject") * per_k if counted else math.nan,
        "invokes_per_k": _operation(calls, "InvokeEndpointAsync") * per_k if counted else math.nan,
        "throttled_per_k": _delta(before, after, "faults", "throttled") * per_k,
    }
    for q in (50, 95, 99):
        metrics[f"accept_p{q}_ms"] = percentile(record.accept, q) * 1000
        metrics[f"complete_p{q}_ms"] = percentile(record.complete, q) * 1000
        metrics[f"outcome_p{q}_ms"] = percentile(record.outcome, q) * 1000
    metrics["accept_mean_ms"] = sum(record.accept) / len(record.accept) * 1000 if record.accept else math.nan
    for name, count in calls.items():
        metrics[f"calls:{name}"] = count * per_k
    metrics.update(record.extra)
    return Sample(
        metrics=metrics,
        series={
            "accept": record.accept,
            "complete": record.complete,
            "outcome": record.outcome,
            "accepted_at": record.accepted_at,
        },
    )


def measure(
    target: Target,
    run: Callable[[], RunRecord] | Callable[[], Awaitable[RunRecord]],
    *,
    uvloop: bool = True,
) -> Sample:
    """Run one side once (an async one in a fresh event loop) and read the emulator's counters around it."""
    import anyio

    gc.collect()
    with aws_environment(target.env):
        before = target.stats()
        if inspect.iscoroutinefunction(run):
            record: RunRecord = anyio.run(run, backend="asyncio", backend_options=loop_options(uvloop))
        else:
            record = run()  # type: ignore[assignment]
        after = target.stats()
    return to_sample(record, before, after)


def loop_options(uvloop: bool) -> dict[str, Any]:
    """``anyio.run``'s asyncio backend options: uvloop when asked for and installed."""
    return {"use_uvloop": True} if uvloop and importlib.util.find_spec("uvloop") is not None else {}
