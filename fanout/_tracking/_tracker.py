"""The tracker: the ledger, its sources (SQS, S3 or both), result fetching and the outcome stream.

Everything runs in the tracker's own task group, which ``open_tracker`` starts with
``tg.start()`` for each part (so "ready" is a fact, not a hope) and cancels on exit.

Every notification, whichever source found it, takes one path: the ledger decides whether it is
the first complete one for a tracked id; when it is, the result is fetched from S3 if fetching is
on and the notification carried no ``responseBody`` (at most ``fetch_concurrency`` at a time),
and the outcome is delivered exactly once: to a task blocked in ``wait(inference_id)`` if there is
one, else into the stream read by ``async for outcome in tracker``. The stream holds at most
``max_pending`` outcomes; when it is full, delivery waits, and so do the sources behind it (their
SQS messages keep their visibility extended meanwhile). Only then is the SQS message deleted.
A notification that arrives before ``track()`` is the exception: the ledger holds it in memory and
its message is deleted at once, so the outcome depends on this process from then on (a resumed
``fanout run`` recovers such outcomes through S3).

A result that cannot be fetched after retries becomes ``Failed`` with a reason that says so: the
caller asked for the bytes and did not get them, and ``output_location`` still says where they are.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from .._config import HybridTracking, S3Tracking, SqsTracking, Tracking, parse_s3_uri
from .._exceptions import ConfigError, FanoutError, map_aws_errors, unwrap_task_errors
from .._models import Failed, Notification, Outcome, Submission, Succeeded
from ._errors import call_with_retry, retrying
from ._ledger import DEFAULT_REMEMBER, Ledger, Resolution
from ._s3 import S3Source, read_body
from ._sqs import Receipt, SqsSource

__all__ = ["Tracker", "TrackerStatistics", "open_tracker"]

log = logging.getLogger("fanout.tracking")

_SWEEP_MAX_SLEEP = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackerStatistics:
    """Counters of a running tracker; ``resolved`` is by status, ``s3_calls`` by type (head, list, get)."""

    received: int
    parsed: int
    duplicates: int
    unknown: int
    malformed: int
    test_notifications: int
    resolved: dict[str, int]
    s3_calls: dict[str, int]
    pending: int
    held: int
    expected: int
    waiting: int
    buffered: int
    fetched: int
    fetch_failures: int
    deleted: int
    left_on_queue: int


class _Waiter:
    __slots__ = ("count", "error", "event", "outcome")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.outcome: Outcome | None = None
        self.error: Exception | None = None
        self.count = 0


class Tracker:
    """Matches accepted inferences to their outcomes. Build it with :func:`open_tracker`."""

    def __init__(
        self,
        *,
        s3: Any | None,
        fetch: bool,
        fetch_concurrency: int,
        max_pending: int,
        clock: Callable[[], float],
        remember: int = DEFAULT_REMEMBER,
    ) -> None:
        self._ledger = Ledger(remember=remember)
        self._s3_client = s3
        self._fetch = fetch
        self._fetch_slots = anyio.Semaphore(fetch_concurrency)
        self._capacity = max_pending
        self._clock = clock
        self._tg: TaskGroup | None = None
        self._sqs: SqsSource | None = None
        self._s3: S3Source | None = None
        self._buffer: deque[Outcome] = deque()
        self._data = anyio.Event()
        self._space = anyio.Event()
        self._closed = False
        self._waiters: dict[str, _Waiter] = {}
        self._finishing: set[str] = set()
        self._resolved = {"succeeded": 0, "failed": 0, "expired": 0}
        self._unknown = 0
        self._gets = 0
        self._fetched = 0
        self._fetch_failures = 0

    # The dispatcher's side: synchronous, never blocks.

    def expect(self, inference_id: str, deadline: float) -> None:
        """Register an inference id before its invoke is sent."""
        self._ledger.expect(inference_id, deadline)

    def track(self, submission: Submission) -> None:
        """Record an accepted invoke; a notification that was held for it is delivered now."""
        outcome = self._ledger.track(submission, self._clock())
        if outcome is not None:
            assert self._tg is not None, "the tracker is not running"
            self._finishing.add(submission.inference_id)
            self._tg.start_soon(self._settle, outcome, None)
        elif self._s3 is not None and self._ledger.is_pending(submission.inference_id):
            self._s3.watch(submission)

    def forget(self, inference_id: str) -> None:
        """Drop an inference whose invoke was finally rejected; any notification held for it goes too."""
        if self._ledger.forget(inference_id):
            if self._s3 is not None:
                self._s3.discard(inference_id)
            waiter = self._waiters.pop(inference_id, None)
            if waiter is not None:
                waiter.error = LookupError(
                    f"inference {inference_id} was forgotten (its invoke was rejected)"
                )
                waiter.event.set()

    # The consumer's side.

    def __aiter__(self) -> AsyncIterator[Outcome]:
        return self

    async def __anext__(self) -> Outcome:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            await self._data.wait()
            self._data = anyio.Event()
        outcome = self._buffer.popleft()
        self._space.set()
        return outcome

    async def wait(self, inference_id: str) -> Outcome:
        """The outcome of one inference. A waiter registered before the outcome claims it from the
        stream; an outcome still sitting in the stream's buffer is taken out of it.

        Raises ``LookupError`` for an id that is not outstanding (unknown, or already delivered).
        """
        waiter = self._waiters.get(inference_id)
        if waiter is None:
            buffered = self._take_buffered(inference_id)
            if buffered is not None:
                return buffered
            if not self._ledger.is_pending(inference_id) and inference_id not in self._finishing:
                raise LookupError(
                    f"inference {inference_id} is not outstanding (unknown, or its outcome was delivered)"
                )
            waiter = self._waiters[inference_id] = _Waiter()
        waiter.count += 1
        try:
            await waiter.event.wait()
        finally:
            waiter.count -= 1
            if not waiter.count and not waiter.event.is_set():
                # The last waiter gave up: the outcome goes to the stream after all.
                del self._waiters[inference_id]
        if waiter.error is not None:
            raise waiter.error
        assert waiter.outcome is not None
        return waiter.outcome

    def statistics(self) -> TrackerStatistics:
        ledger = self._ledger.statistics()
        sqs = self._sqs.statistics() if self._sqs is not None else {}
        s3 = self._s3.statistics() if self._s3 is not None else {}
        return TrackerStatistics(
            received=sqs.get("received", 0),
            parsed=sqs.get("parsed", 0),
            duplicates=ledger.duplicates,
            unknown=self._unknown + ledger.unknown,
            malformed=sqs.get("malformed", 0),
            test_notifications=sqs.get("ignored", 0),
            resolved=dict(self._resolved),
            s3_calls={
                "head": s3.get("head", 0),
                "list": s3.get("list", 0),
                "get": s3.get("get", 0) + self._gets,
            },
            pending=ledger.pending,
            held=ledger.held,
            expected=ledger.expected,
            waiting=len(self._waiters),
            buffered=len(self._buffer),
            fetched=self._fetched,
            fetch_failures=self._fetch_failures,
            deleted=sqs.get("deleted", 0),
            left_on_queue=sqs.get("left", 0),
        )

    # Internals.

    async def _on_sqs(self, notification: Notification, receipt: Receipt) -> None:
        if not self._ledger.is_known(notification.inference_id):
            self._unknown += 1
            receipt.leave()
            return
        await self._on_notification(notification, receipt)

    async def _on_s3(self, notification: Notification) -> None:
        await self._on_notification(notification, None)

    async def _on_notification(self, notification: Notification, receipt: Receipt | None) -> None:
        outcome = self._ledger.resolve(notification, self._clock())
        if outcome is None:
            if receipt is not None:
                receipt.delete()
            return
        self._finishing.add(outcome.inference_id)
        if self._s3 is not None:
            self._s3.discard(outcome.inference_id)
        if self._needs_fetch(outcome):
            assert self._tg is not None
            # Acquired here, so a source waits for a free slot instead of piling up tasks.
            await self._fetch_slots.acquire()
            self._tg.start_soon(self._fetch_and_settle, outcome, receipt)
        else:
            await self._settle(outcome, receipt)

    def _needs_fetch(self, outcome: Resolution) -> bool:
        return (
            self._fetch
            and isinstance(outcome, Succeeded)
            and outcome.result is None
            and outcome.output_location is not None
            and self._s3_client is not None
        )

    async def _fetch_and_settle(self, outcome: Resolution, receipt: Receipt | None) -> None:
        try:
            assert isinstance(outcome, Succeeded)
            outcome = await self._fetch_result(outcome)
        finally:
            self._fetch_slots.release()
        await self._settle(outcome, receipt)

    async def _fetch_result(self, outcome: Succeeded) -> Resolution:
        assert outcome.output_location is not None
        location = parse_s3_uri(outcome.output_location, what="output location")

        client = self._s3_client
        assert client is not None

        async def get() -> tuple[bytes, str | None]:
            self._gets += 1
            response = await client.get_object(Bucket=location.bucket, Key=location.key)
            return await read_body(response), response.get("ContentType")

        try:
            with map_aws_errors(bucket=location.bucket):
                body, content_type = await call_with_retry(retrying(attempts=4), get)
        except FanoutError:
            raise
        except Exception as exc:
            self._fetch_failures += 1
            log.warning("could not fetch the output of %s from %s: %s", outcome.inference_id, location, exc)
            return Failed(
                inference_id=outcome.inference_id,
                id=outcome.id,
                route=outcome.route,
                output_location=outcome.output_location,
                failure_reason=f"the output at {location} could not be fetched: {exc}",
                attempts=outcome.attempts,
                submitted_at=outcome.submitted_at,
                completed_at=outcome.completed_at,
            )
        self._fetched += 1
        return replace(outcome, result=body, content_type=outcome.content_type or content_type)

    async def _settle(self, outcome: Resolution, receipt: Receipt | None) -> None:
        await self._deliver(outcome)
        self._resolved[outcome.status] += 1
        self._finishing.discard(outcome.inference_id)
        if receipt is not None:
            receipt.delete()

    async def _deliver(self, outcome: Resolution) -> None:
        while True:
            waiter = self._waiters.pop(outcome.inference_id, None)
            if waiter is not None:
                waiter.outcome = outcome
                waiter.event.set()
                return
            if len(self._buffer) < self._capacity:
                self._buffer.append(outcome)
                self._data.set()
                return
            await self._space.wait()
            self._space = anyio.Event()

    def _take_buffered(self, inference_id: str) -> Outcome | None:
        for index, outcome in enumerate(self._buffer):
            if outcome.inference_id == inference_id:
                del self._buffer[index]
                self._space.set()
                return outcome
        return None

    async def _sweep(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            now = self._clock()
            for expired in self._ledger.expire(now):
                if self._s3 is not None:
                    self._s3.discard(expired.inference_id)
                self._finishing.add(expired.inference_id)
                await self._settle(expired, None)
            deadline = self._ledger.next_deadline()
            delay = _SWEEP_MAX_SLEEP if deadline is None else deadline - self._clock()
            await anyio.sleep(min(max(delay, 0.01), _SWEEP_MAX_SLEEP))

    def _close(self) -> None:
        self._closed = True
        self._data.set()


@asynccontextmanager
async def open_tracker(
    *,
    tracking: Tracking,
    sqs: Any | None = None,
    s3: Any | None = None,
    fetch: bool = True,
    fetch_concurrency: int = 16,
    max_pending: int = 1000,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[Tracker]:
    """Start a tracker for ``tracking`` (SQS, S3 polling, or hybrid) and stop it on exit.

    ``sqs`` and ``s3`` are aiobotocore clients. ``max_pending`` bounds the outcome stream's
    buffer. Raises ``QueueNotFound`` before anything starts when the queue does not exist, and
    ``ConfigError`` when a client that the tracking mode needs is missing.
    """
    if isinstance(fetch_concurrency, bool) or not isinstance(fetch_concurrency, int) or fetch_concurrency < 1:
        raise ConfigError(f"fetch_concurrency must be an integer of 1 or more, got {fetch_concurrency!r}")
    if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
        raise ConfigError(f"max_pending must be an integer of 1 or more, got {max_pending!r}")
    sqs_config: SqsTracking | None
    s3_config: S3Tracking | None
    first_check_after: float | None = None
    if isinstance(tracking, SqsTracking):
        sqs_config, s3_config = tracking, None
    elif isinstance(tracking, S3Tracking):
        sqs_config, s3_config = None, tracking
    elif isinstance(tracking, HybridTracking):
        sqs_config, s3_config = tracking.sqs, tracking.s3
        first_check_after = tracking.reconcile_after
    else:
        raise ConfigError(f"tracking must be SqsTracking, S3Tracking or HybridTracking, got {tracking!r}")
    if sqs_config is not None and sqs is None:
        raise ConfigError("SQS tracking needs an SQS client (sqs=...)")
    if (s3_config is not None or fetch) and s3 is None:
        raise ConfigError("S3 polling and result fetching need an S3 client (s3=...); or pass fetch=False")

    tracker = Tracker(
        s3=s3, fetch=fetch, fetch_concurrency=fetch_concurrency, max_pending=max_pending, clock=clock
    )
    if sqs_config is not None:
        tracker._sqs = SqsSource(sqs, sqs_config, tracker._on_sqs)
        await tracker._sqs.check()
    if s3_config is not None:
        tracker._s3 = S3Source(
            s3, s3_config, tracker._on_s3, first_check_after=first_check_after, clock=clock
        )
    with unwrap_task_errors():
        async with anyio.create_task_group() as tg:
            tracker._tg = tg
            await tg.start(tracker._sweep)
            if tracker._sqs is not None:
                await tg.start(tracker._sqs.run)
            if tracker._s3 is not None:
                await tg.start(tracker._s3.run)
            try:
                yield tracker
            finally:
                tracker._close()
                tg.cancel_scope.cancel()
