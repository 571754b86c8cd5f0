"""Where a scenario sends its calls: an emulator in its own (pinned) process, or a real endpoint.

The emulator runs ``python -m fanout.testing`` with a configuration written
here: one endpoint whose worker pool is large enough never to be the limit,
outputs and failures in S3, both notification topics delivered to one SQS
queue, a staging bucket, and the per-API latency model. Its counters
(``/_fanout/stats``) give the API calls of each side, and its CPU time comes
from ``/proc``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeAlias

from .._harness import Sample
from . import Context
from ._workload import RunRecord, Target, measure

__all__ = ["ENDPOINT", "emulator_config", "isolated", "open_target", "set_faults"]

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


def _children_running(module: str) -> set[int]:
    """Pids of this process's children whose command line runs ``python -m <module>``."""
    me = os.getpid()
    found: set[int] = set()
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                stat = handle.read()
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().split(b"\0")
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == me and module.encode() in cmdline:
            found.add(int(entry))
    return found


@contextmanager
def open_target(ctx: Context, **config: Any) -> Iterator[Target]:
    """An emulator started with ``emulator_config(ctx.latency, **config)``, or the real endpoint."""
    if ctx.real:
        yield real_target()
        return
    from fanout.testing import run_emulator_process

    with tempfile.TemporaryDirectory(prefix="fanout-bench-") as scratch:
        path = Path(scratch) / "emulator.json"
        path.write_text(json.dumps(emulator_config(ctx.latency, **config)), encoding="utf-8")
        before = _children_running("fanout.testing")
        with run_emulator_process(path, cpu=ctx.emulator_cpu) as env:
            started = _children_running("fanout.testing") - before
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


def set_faults(target: Target, faults: Mapping[str, Any]) -> None:
    """Replace the emulator's faults at run time (``PUT /_fanout/faults``); latency is part of faults."""
    if target.stats_url is None:
        raise RuntimeError("faults can only be injected into the emulator, not a real endpoint")
    from urllib.request import Request, urlopen

    url = target.stats_url.rsplit("/", 1)[0] + "/faults"
    request = Request(url, data=json.dumps(dict(faults)).encode(), method="PUT")
    request.add_header("Content-Type", "application/json")
    with urlopen(request, timeout=10) as response:
        response.read()


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
