"""Where a benchmark sends its calls: an emulator in its own (pinned) process, or a real endpoint.

``open_target`` runs ``python -m fanout.testing`` with a configuration written
here (``emulator_config``): one endpoint whose worker pool is large enough never
to be the limit, outputs and failures in S3, both notification topics delivered
to one SQS queue, a staging bucket, and the per-API latency model.
``emulator_process`` runs it with any configuration (the standalone benchmarks use
its defaults). Its counters (``/_fanout/stats``, ``Target.stats`` or an async
``Control``) give the API calls of each side, and its CPU time comes from ``/proc``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeAlias

import aiohttp
import anyio

from .._harness import Sample, child_pids
from . import Context
from ._workload import RunRecord, Target, measure

__all__ = [
    "ENDPOINT",
    "Control",
    "emulator_config",
    "emulator_process",
    "isolated",
    "open_control",
    "open_target",
]

ENDPOINT = "fanout-bench"
QUEUE = "fanout-notifications"
STAGING = "s3://fanout-staging/inputs"


def emulator_config(
    latency: Mapping[str, Any],
    *,
    service_time: Mapping[str, Any] | None = None,
    workers: tuple[int, int] = (4, 64),
    include_response: bool = True,
    faults: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The emulator's configuration as plain data (its JSON file format)."""
    instances, per_instance = workers
    return {
        "extends": "none",  # exactly what this scenario declares, not the defaults as well
        "seed": 7,
        "buckets": ["fanout-output", "fanout-staging"],
        "queues": [QUEUE],
        "topics": [
            {"name": "fanout-success", "subscriptions": [QUEUE]},
            {"name": "fanout-errors", "subscriptions": [QUEUE]},
        ],
        "endpoints": [
            {
                "name": ENDPOINT,
                "s3_output_path": "s3://fanout-output/results",
                "s3_failure_path": "s3://fanout-output/failures",
                "success_topic": "fanout-success",
                "error_topic": "fanout-errors",
                "include_inference_response_in": (
                    ["SUCCESS_NOTIFICATION_TOPIC", "ERROR_NOTIFICATION_TOPIC"] if include_response else []
                ),
                "instance_count": instances,
                "max_concurrent_invocations_per_instance": per_instance,
                "service_time": dict(service_time or {"kind": "uniform", "low_ms": 50, "high_ms": 100}),
            }
        ],
        "staging": STAGING,
        "faults": {**(faults or {}), "latency": dict(latency)},
    }


@contextmanager
def emulator_process(config: Mapping[str, Any] | None = None, *, cpu: int | None = None) -> Iterator[Target]:
    """``python -m fanout.testing`` in its own process (pinned to ``cpu`` when given), serving
    ``config`` (the emulator's JSON format, over its defaults; None: its default configuration).

    ``server_pid`` is that process, for its CPU time.
    """
    from fanout.testing import run_emulator_process

    with tempfile.TemporaryDirectory(prefix="fanout-bench-") as scratch:
        path: Path | None = None
        if config is not None:
            path = Path(scratch) / "emulator.json"
            path.write_text(json.dumps(config), encoding="utf-8")
        before = child_pids("fanout.testing")
        with run_emulator_process(path, cpu=cpu) as env:
            started = child_pids("fanout.testing") - before
            # aiobotocore reads AWS_DEFAULT_REGION, not AWS_REGION, for the region of a client.
            env = {"AWS_DEFAULT_REGION": env.get("AWS_REGION", "us-east-1"), **env}
            yield Target(
                env=env,
                endpoint_name=env.get("FANOUT_ENDPOINT", ENDPOINT),
                staging=env.get("FANOUT_STAGING", STAGING),
                queue_url=env.get("FANOUT_QUEUE_URL"),
                server_pid=min(started) if len(started) == 1 else None,
                stats_url=f"{env['AWS_ENDPOINT_URL']}/_fanout/stats",
            )


@contextmanager
def open_target(ctx: Context, **config: Any) -> Iterator[Target]:
    """An emulator started with ``emulator_config(ctx.latency, **config)``, or the real endpoint."""
    if ctx.real:
        yield real_target()
        return
    with emulator_process(emulator_config(ctx.latency, **config), cpu=ctx.emulator_cpu) as target:
        yield target


Run: TypeAlias = Callable[[], RunRecord] | Callable[[], Awaitable[RunRecord]]


def isolated(ctx: Context, make_run: Callable[[Target], Run], **config: Any) -> Callable[[], Sample]:
    """A side that gets a fresh emulator process for every run.

    Fresh state makes repetitions independent. It also matters for SQS: a long
    poll that a closed client left waiting in the server would still take a
    message meant for the next client on the same queue, and hide it for the
    visibility timeout.
    """

    def side() -> Sample:
        with open_target(ctx, **config) as target:
            return measure(target, make_run(target), uvloop=ctx.uvloop)

    return side


class Control:
    """The emulator's control API (``/_fanout/stats``, ``/_fanout/faults``) on the caller's event loop.

    ``http`` is the session it uses, there for the caller's own calls to the emulator as well.
    """

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url

    async def stats(self) -> dict[str, Any]:
        async with self.http.get(f"{self.url}/_fanout/stats") as response:
            stats: dict[str, Any] = await response.json()
            return stats

    async def set_faults(self, faults: Mapping[str, Any]) -> None:
        """Replace the emulator's faults (latency is part of faults)."""
        async with self.http.put(f"{self.url}/_fanout/faults", json=dict(faults)) as response:
            if response.status != 200:
                raise RuntimeError(f"the emulator refused the faults {faults}: {await response.text()}")


@asynccontextmanager
async def open_control(
    env: Mapping[str, str], *, connections: int = 100, clear_faults: bool = False
) -> AsyncIterator[Control]:
    """A ``Control`` for the loopback emulator of ``env``; ``clear_faults`` clears its faults on the way
    in and on the way out (even when cancelled)."""
    url = env["AWS_ENDPOINT_URL"]
    host = url.split("://", 1)[-1].split(":", 1)[0]
    if host not in ("127.0.0.1", "localhost"):
        raise ValueError(f"benchmarks drive a loopback emulator only, got {url!r}")
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
        control = Control(http, url)
        if not clear_faults:
            yield control
            return
        await control.set_faults({})
        try:
            yield control
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await control.set_faults({})


class RealTargetError(RuntimeError):
    """``--real`` needs FANOUT_ENDPOINT and FANOUT_STAGING (and FANOUT_QUEUE_URL for SQS tracking)."""


def real_target() -> Target:
    """The endpoint named by FANOUT_ENDPOINT, through the standard AWS configuration chain."""
    missing = [name for name in ("FANOUT_ENDPOINT", "FANOUT_STAGING") if not os.environ.get(name)]
    if missing:
        raise RealTargetError(
            f"--real needs {' and '.join(missing)} (and FANOUT_QUEUE_URL for SQS tracking); "
            "AWS credentials and region come from the standard AWS configuration"
        )
    region = os.environ.get("AWS_REGION")
    # aiobotocore reads only AWS_DEFAULT_REGION (and profiles); the other AWS SDKs read AWS_REGION.
    env = {"AWS_DEFAULT_REGION": region} if region and not os.environ.get("AWS_DEFAULT_REGION") else {}
    return Target(
        env=env,
        endpoint_name=os.environ["FANOUT_ENDPOINT"],
        staging=os.environ["FANOUT_STAGING"],
        queue_url=os.environ.get("FANOUT_QUEUE_URL"),
        real=True,
    )
