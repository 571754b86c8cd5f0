"""The tracker: the ledger, its sources (SQS, S3 or both), result fetching and the outcome stream.

Everything runs in the tracker's own task group, started by ``open_tracker`` (each part with
``tg.start()``, so "ready" is a fact, not a hope) and cancelled on exit.

Every outcome takes one path, whichever source found it and whenever ``track()`` came::

    source ──► ledger.resolve ──► resolved stream ──► fetchers ──► outcome stream ──► consumer
    track() ──► ledger.track (a held notification) ──┘  (fetch the result from S3 when the
    sweep ──► ledger.expire ─────────────────────────┘   notification did not carry it)

``fetch_concurrency`` fetcher tasks take resolved outcomes, download the result when fetching
is on and the notification had no ``responseBody``, and send the outcome to the stream, which
holds at most ``max_pending`` outcomes (a full stream makes the fetchers, and then the sources,
wait). A notification that arrives before ``track()`` is held by the ledger, and its message is
held too: it is deleted only when the outcome is acknowledged.

**Acknowledgement.** An SQS message is deleted only once the consumer calls
``acknowledge(inference_id)``: after it has stored the outcome durably (the CLI: after its
journal commit). Until then the message stays hidden, its visibility extended by the SQS
source's heartbeat; if the process dies, it reappears for the next run. Duplicates, test
notifications and malformed messages are deleted at once. On exit, messages still held are made
visible again, so the next run does not wait out their visibility timeout.

A result that cannot be fetched after retries becomes ``Failed`` with a reason that says so: the
caller asked for the bytes and did not get them, and ``output_location`` still says where they are.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._config import TRACKING_CALL_RETRY, HybridTracking, S3Tracking, SqsTracking, Tracking, parse_s3_uri
from .._exceptions import ConfigError, FanoutError, map_aws_errors, unwrap_task_errors
from .._models import Failed, Notification, Outcome, Submission, Succeeded
from .._retry import call_with_retry
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
    """Messages received from SQS."""
    receive_calls: int
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
    buffered: int
    """Outcomes in the stream, not yet taken by the consumer."""
    unacknowledged: int
    """Outcomes taken whose SQS message waits for ``acknowledge``."""
    fetched: int
    fetch_failures: int
    deleted: int
    left_on_queue: int


class Tracker:
    """Matches accepted inferences to their outcomes. Open it with :func:`open_tracker`."""

    def __init__(
        self,
        *,
        tracking: Tracking,
        sqs: Any | None,
        s3: Any | None,
        fetch: bool,
        fetch_concurrency: int,
        max_pending: int,
        clock: Callable[[], float] = time.time,
        remember: int = DEFAULT_REMEMBER,
    ) -> None:
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
            raise ConfigError(
                "S3 polling and result fetching need an S3 client (s3=...); or pass fetch=False"
            )
        self._ledger = Ledger(remember=remember)
        self._s3_client = s3
        self._fetch = fetch
        self._fetchers = fetch_concurrency
        self._clock = clock
        self._sqs = SqsSource(sqs, sqs_config, self._on_sqs) if sqs_config is not None else None
        self._s3 = (
            S3Source(s3, s3_config, self._on_s3, first_check_after=first_check_after, clock=clock)
            if s3_config is not None
            else None
        )
        # Unbounded, yet never longer than the number of tracked inferences: each entry is the one
        # outcome of one of them. The bound that matters is on the outcome stream below.
        self._resolved_send: MemoryObjectSendStream[tuple[Resolution, Receipt | None]]
        self._resolved_receive: MemoryObjectReceiveStream[tuple[Resolution, Receipt | None]]
        self._resolved_send, self._resolved_receive = anyio.create_memory_object_stream[
            tuple[Resolution, Receipt | None]
        ](math.inf)
        self._outcomes_send: MemoryObjectSendStream[Resolution]
        self._outcomes_receive: MemoryObjectReceiveStream[Resolution]
        self._outcomes_send, self._outcomes_receive = anyio.create_memory_object_stream[Resolution](
            max_pending
        )
        self._held: dict[str, Receipt] = {}
        """Messages of notifications the ledger holds until ``track()``."""
        self._unacknowledged: dict[str, Receipt] = {}
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
        """Record an accepted invoke; a notification that was held for it is resolved now."""
        outcome = self._ledger.track(submission, self._clock())
        if outcome is not None:
            self._resolved_send.send_nowait((outcome, self._held.pop(submission.inference_id, None)))
        elif self._s3 is not None and self._ledger.is_pending(submission.inference_id):
            self._s3.watch(submission)

    def forget(self, inference_id: str) -> None:
        """Drop an inference whose invoke was never accepted; a notification held for it goes too."""
        if self._ledger.forget(inference_id):
            if self._s3 is not None:
                self._s3.discard(inference_id)
            receipt = self._held.pop(inference_id, None)
            if receipt is not None:
                receipt.delete()

    # The consumer's side.

    def __aiter__(self) -> AsyncIterator[Outcome]:
        return self

    async def __anext__(self) -> Outcome:
        try:
            return await self._outcomes_receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    def acknowledge(self, inference_id: str) -> None:
        """The consumer has stored this outcome: its notification may leave the queue now."""
        receipt = self._unacknowledged.pop(inference_id, None)
        if receipt is not None:
            receipt.delete()

    def statistics(self) -> TrackerStatistics:
        ledger = self._ledger.statistics()
        sqs = self._sqs.statistics() if self._sqs is not None else {}
        s3 = self._s3.statistics() if self._s3 is not None else {}
        return TrackerStatistics(
            received=sqs.get("received", 0),
            receive_calls=sqs.get("receive_calls", 0),
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
            buffered=self._outcomes_receive.statistics().current_buffer_used,
            unacknowledged=len(self._unacknowledged),
            fetched=self._fetched,
            fetch_failures=self._fetch_failures,
            deleted=sqs.get("deleted", 0),
            left_on_queue=sqs.get("left", 0),
        )

    # Running.

    async def check(self) -> None:
        """Run-level preflight: ``QueueNotFound`` when the queue does not exist."""
        if self._sqs is not None:
            await self._sqs.check()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the sources, the deadline sweep and the fetchers until cancelled."""
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self._sweep)
                for _ in range(self._fetchers):
                    tg.start_soon(self._fetcher)
                if self._sqs is not None:
                    await tg.start(self._sqs.run)
                if self._s3 is not None:
                    await tg.start(self._s3.run)
                task_status.started()
        finally:
            self._outcomes_send.close()

    # Internals.

    async def _on_sqs(self, notification: Notification, receipt: Receipt) -> None:
        if not self._ledger.is_known(notification.inference_id):
            self._unknown += 1
            receipt.leave()
            return
        self._on_notification(notification, receipt)

    async def _on_s3(self, notification: Notification) -> None:
        self._on_notification(notification, None)

    def _on_notification(self, notification: Notification, receipt: Receipt | None) -> None:
        verdict = self._ledger.resolve(notification, self._clock())
        if verdict == "held":
            if receipt is not None:
                self._held[notification.inference_id] = receipt
            return
        if isinstance(verdict, str):
            if receipt is not None:
                receipt.delete()
            return
        if self._s3 is not None:
            self._s3.discard(verdict.inference_id)
        self._resolved_send.send_nowait((verdict, receipt))

    async def _fetcher(self) -> None:
        async for outcome, receipt in self._resolved_receive:
            if self._needs_fetch(outcome):
                assert isinstance(outcome, Succeeded)
                outcome = await self._fetch_result(outcome)
            if receipt is not None:
                self._unacknowledged[outcome.inference_id] = receipt
            self._resolved[outcome.status] += 1
            await self._outcomes_send.send(outcome)

    def _needs_fetch(self, outcome: Resolution) -> bool:
        return (
            self._fetch
            and isinstance(outcome, Succeeded)
            and outcome.result is None
            and outcome.output_location is not None
            and self._s3_client is not None
        )

    async def _fetch_result(self, outcome: Succeeded) -> Resolution:
        assert outcome.output_location is not None
        try:
            location = parse_s3_uri(outcome.output_location, what="output location")
        except ConfigError as exc:
            return self._fetch_failed(outcome, f"its output location cannot be read: {exc}")
        client = self._s3_client
        assert client is not None

        async def get() -> tuple[bytes, str | None]:
            self._gets += 1
            response = await client.get_object(Bucket=location.bucket, Key=location.key)
            return await read_body(response), response.get("ContentType")

        try:
            with map_aws_errors(bucket=location.bucket):
                body, content_type = await call_with_retry(TRACKING_CALL_RETRY, get)
        except FanoutError:
            raise
        except Exception as exc:
            log.warning("could not fetch the output of %s from %s: %s", outcome.inference_id, location, exc)
            return self._fetch_failed(outcome, f"the output at {location} could not be fetched: {exc}")
        self._fetched += 1
        return replace(outcome, result=body, content_type=outcome.content_type or content_type)

    def _fetch_failed(self, outcome: Succeeded, reason: str) -> Failed:
        self._fetch_failures += 1
        return Failed(
            inference_id=outcome.inference_id,
            id=outcome.id,
            route=outcome.route,
            output_location=outcome.output_location,
            failure_reason=reason,
            attempts=outcome.attempts,
            submitted_at=outcome.submitted_at,
            completed_at=outcome.completed_at,
        )

    async def _sweep(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            now = self._clock()
            expired = self._ledger.expire(now)
            for outcome in expired:
                if self._s3 is not None:
                    self._s3.discard(outcome.inference_id)
                self._resolved_send.send_nowait((outcome, None))
            if expired or self._held:
                # An id expected but never tracked is dropped at its deadline: so is its message.
                for inference_id in [i for i in self._held if not self._ledger.is_pending(i)]:
                    self._held.pop(inference_id).delete()
            deadline = self._ledger.next_deadline()
            delay = _SWEEP_MAX_SLEEP if deadline is None else deadline - self._clock()
            await anyio.sleep(min(max(delay, 0.01), _SWEEP_MAX_SLEEP))


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
    tracker = Tracker(
        tracking=tracking,
        sqs=sqs,
        s3=s3,
        fetch=fetch,
        fetch_concurrency=fetch_concurrency,
        max_pending=max_pending,
        clock=clock,
    )
    await tracker.check()
    with unwrap_task_errors():
        async with anyio.create_task_group() as tg:
            await tg.start(tracker.run)
            try:
                yield tracker
            finally:
                tg.cancel_scope.cancel()
