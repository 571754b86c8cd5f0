"""fanout's side of every scenario, through its public API only (``fanout.open_client``).

Two ways of driving the client, both public:

- ``api="map"``: ``async with client.map(requests) as outcomes``, the batch API that
  ``client.run`` and ``fanout run`` use. Outcomes carry ``submitted_at`` and
  ``completed_at``, so completion latency is known, but not the moment of the 202.
- ``api="submit"``: one task per request doing ``handle = await client.submit(r)``
  then ``await handle``, the API for services that embed fanout. The handle's
  ``submission`` has ``accepted_at``, so time to accept is known too. Like
  ``map``, it keeps at most ``max_pending`` requests submitted or pending and at
  most ``max_in_flight`` of them submitting, so work stays bounded and a request's
  clock starts when it can be sent; optionally requests start at a fixed rate
  (an open-loop offered load).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import anyio

from fanout import (
    DEFAULT_LIMITS,
    InferenceRequest,
    Limits,
    Outcome,
    RetryPolicy,
    S3Tracking,
    SqsTracking,
    Staging,
    Succeeded,
    open_client,
)

from .._harness import CpuClock
from ._workload import Item, RunRecord, Target, aio_session, verify

__all__ = ["FanoutSettings", "fanout_side", "run_fanout"]


@dataclass(frozen=True, slots=True)
class FanoutSettings:
    payload: Literal["auto", "inline", "s3"] = "auto"
    tracking: Literal["sqs", "head", "list"] = "sqs"
    limits: Limits = DEFAULT_LIMITS
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    api: Literal["map", "submit"] = "submit"
    interval: float = 0.1
    """S3 polling: the first interval, in seconds."""
    max_interval: float = 0.5
    """S3 polling: the longest interval, in seconds."""
    rate: float | None = None
    """Offered load: start one request every ``1 / rate`` seconds (open loop); None starts them as fast
    as the client takes them."""
    timeout: float = 600.0
    """Seconds one run may take before it fails (``TimeoutError``)."""


REAL_SQS_WAIT = 2
"""``--real``: seconds each SQS long poll waits, and (plus one) the pause after each run."""


def _tracking(settings: FanoutSettings, target: Target) -> SqsTracking | S3Tracking:
    if settings.tracking == "sqs":
        if target.queue_url is None:
            raise RuntimeError("SQS tracking needs a queue: set FANOUT_QUEUE_URL")
        if target.real:
            # One real queue serves every run: notifications of the other sides' invocations are
            # cleared, and long polls are short, so the pause after a run outlasts any poll that the
            # closed client left waiting in SQS (it would take, and hide, the next run's messages).
            return SqsTracking(
                queue_url=target.queue_url, wait_time_seconds=REAL_SQS_WAIT, delete_unknown=True
            )
        return SqsTracking(queue_url=target.queue_url)
    return S3Tracking(mode=settings.tracking, interval=settings.interval, max_interval=settings.max_interval)


def _requests(items: list[Item]) -> list[InferenceRequest]:
    return [InferenceRequest(body=item.body, id=item.id) for item in items]


async def run_fanout(items: list[Item], target: Target, settings: FanoutSettings) -> RunRecord:
    """Score ``items`` with ``fanout.open_client``; the clock runs from the first request to the last
    outcome (opening the client, which checks the queue and the bucket, is outside it)."""
    by_id = {item.id: item for item in items}
    requests = _requests(items)
    routes: dict[str, int] = {"inline": 0, "s3": 0}
    statuses: dict[str, int] = {}
    async with open_client(
        endpoint_name=target.endpoint_name,
        tracking=_tracking(settings, target),
        limits=settings.limits,
        retry=settings.retry,
        payload=settings.payload,
        staging=Staging(location=target.staging),
        session=aio_session(),
    ) as client:
        calls_before = Counter(client.statistics().api_calls)
        with CpuClock(target.server_pid) as clock:
            record = RunRecord(n=len(items), clock=clock)
            started = time.time()

            def settle(outcome: Outcome, accepted_at: float | None) -> None:
                if outcome.route is not None:
                    routes[outcome.route] += 1
                if outcome.submitted_at is not None and outcome.completed_at:
                    record.complete.append(outcome.completed_at - outcome.submitted_at)
                    if accepted_at is not None:
                        record.accept.append(accepted_at - outcome.submitted_at)
                        record.outcome.append(outcome.completed_at - accepted_at)
                        record.accepted_at.append(accepted_at - started)
                statuses[outcome.status] = statuses.get(outcome.status, 0) + 1
                if isinstance(outcome, Succeeded):
                    record.succeeded += 1
                    item = by_id.get(outcome.id or "")
                    record.verified += item is not None and verify(item, outcome.result)

            async def by_map() -> None:
                async with client.map(requests) as outcomes:
                    async for outcome in outcomes:
                        settle(outcome, None)

            async def by_submit() -> None:
                # As client.map does: at most max_pending accepted-or-submitting requests, and at most
                # max_in_flight of them submitting, so a request's clock starts when it can be sent.
                pending = anyio.Semaphore(settings.limits.max_pending)
                submitting = anyio.Semaphore(settings.limits.max_in_flight)
                clock_start = anyio.current_time()

                async def one(request: InferenceRequest) -> None:
                    try:
                        try:
                            handle = await client.submit(request)
                        finally:
                            submitting.release()
                        submission = handle.submission
                        outcome = await handle
                        settle(outcome, submission.accepted_at if submission is not None else None)
                    finally:
                        pending.release()

                async with anyio.create_task_group() as tg:
                    for index, request in enumerate(requests):
                        if settings.rate is not None:
                            await anyio.sleep_until(clock_start + index / settings.rate)
                        await pending.acquire()
                        await submitting.acquire()
                        tg.start_soon(one, request)

            with anyio.fail_after(settings.timeout):
                await (by_map() if settings.api == "map" else by_submit())
        # fanout counts each call (not each retried attempt); only used without the server's counters.
        record.calls = Counter(client.statistics().api_calls)
        record.calls.subtract(calls_before)
    record.extra.update(
        inline=float(routes["inline"]),
        s3=float(routes["s3"]),
        gave_up=float(statuses.get("rejected", 0)),
        failed=float(statuses.get("failed", 0)),
        expired=float(statuses.get("expired", 0)),
    )
    if target.real and settings.tracking == "sqs":
        await anyio.sleep(REAL_SQS_WAIT + 1)
    return record


def fanout_side(
    items: list[Item], settings: FanoutSettings
) -> Callable[[Target], Callable[[], Awaitable[RunRecord]]]:
    """What ``isolated`` needs: given the target of one run, the run."""

    def make(target: Target) -> Callable[[], Awaitable[RunRecord]]:
        return partial(run_fanout, items, target, settings)

    return make
