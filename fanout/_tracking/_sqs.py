"""The SQS source: long-poll receivers, batched deletes and visibility upkeep.

Up to ``receivers`` tasks long-poll the queue (``WaitTimeSeconds``, 10 messages a call) and hand
each parsed notification to the tracker with a :class:`Receipt`.

**Full batches.** ``ReceiveMessage`` returns as soon as any message is there, so at high rates
receivers that poll back to back come back almost empty: one call per notification. The
``ReceivePacer`` paces them by the arrival rate: only as many receivers poll as the rate needs
(each can take 10 messages a round trip), and after a small batch a receiver waits the short time
the rate needs to fill one (at most ``LINGER_MAX``) before it polls again. At low rates the wait is
short next to the gap between notifications, so an outcome still takes one round trip; at
hundreds a second a receive brings close to 10 messages.

The tracker answers each receipt through it:

- ``delete()``: the message is done with (its outcome was emitted, or it was a duplicate). Deletes
  are batched: ``DeleteMessageBatch`` goes out when 10 are ready or ``flush_delay`` after the first.
- ``leave()``: the inference id is not this run's. The message is left on the queue for its
  owner: the first time a message is seen its visibility is reset to 0, so another consumer of the
  same queue gets it at once; if it comes back to us, it is left alone and stays hidden for the
  queue's visibility timeout, so two runs sharing a queue do not bounce it in a hot loop. With
  ``delete_unknown`` it is deleted instead.

While the tracker holds a message (the notification waits for ``track()``, or its outcome waits
to be fetched, taken or acknowledged) a heartbeat extends its visibility
(``ChangeMessageVisibilityBatch``), so it is not redelivered meanwhile; on exit the messages still
held are made visible again. Malformed messages are counted, logged without their payload, and
deleted; test notifications are counted and deleted.

Calls are retried with backoff on transient errors. A queue that does not exist is the run-level
``QueueNotFound``, checked once before the receivers start (``check``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import anyio
from anyio.abc import TaskStatus

from .._config import RECEIVE_RETRY, TRACKING_CALL_RETRY, SqsTracking
from .._exceptions import ConfigError, FanoutError, TrackingError, error_code, map_aws_errors
from .._models import Notification
from .._retry import call_with_retry
from ._parse import Ignored, Malformed, parse_message

__all__ = ["LINGER_MAX", "Receipt", "ReceivePacer", "SqsSource"]

log = logging.getLogger("fanout.tracking")

T = TypeVar("T")

_BATCH = 10
_FILL = 8
"""How many messages a paced receive aims to find waiting."""
LINGER_MAX = 0.02
"""The longest a receiver waits after a small batch before it polls again, in seconds."""
_RATE_WINDOW = 1.0
_ROUND_TRIP_CLIP = 0.1
_RATE_FLOOR_SPAN = 0.1
_IDLE_CHECK = 0.05
_REMEMBER_LEFT = 10_000
_DRAIN_TIMEOUT = 5.0
"""How long leaving the tracker may wait for the last deletes (shielded)."""


class Receipt:
    """One received message, until the tracker says what to do with it."""

    __slots__ = ("_source", "done", "extended_at", "message_id", "receipt_handle")

    def __init__(self, source: SqsSource, message_id: str, receipt_handle: str, now: float) -> None:
        self._source = source
        self.message_id = message_id
        self.receipt_handle = receipt_handle
        self.extended_at = now
        self.done = False

    def delete(self) -> None:
        self._source._dispose(self, delete=True)

    def leave(self) -> None:
        self._source._dispose(self, delete=self._source.config.delete_unknown)


Handler = Callable[[Notification, Receipt], Awaitable[None]]


class _Batcher(Generic[T]):
    """Collects items and flushes them 10 at a time, or ``delay`` seconds after the first one."""

    def __init__(
        self, flush: Callable[[list[T]], Awaitable[None]], *, delay: float, concurrency: int
    ) -> None:
        self._flush = flush
        self._delay = delay
        self._items: deque[T] = deque()
        self._wake = anyio.Event()
        self._slots = anyio.Semaphore(concurrency)

    def put(self, item: T) -> None:
        self._items.append(item)
        if len(self._items) in (1, _BATCH):
            self._wake.set()

    async def _wait(self) -> None:
        await self._wake.wait()
        self._wake = anyio.Event()

    def _take(self) -> list[T]:
        return [self._items.popleft() for _ in range(min(_BATCH, len(self._items)))]

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                while True:
                    while not self._items:
                        await self._wait()
                    with anyio.move_on_after(self._delay):
                        while len(self._items) < _BATCH:
                            await self._wait()
                    while self._items:
                        await self._slots.acquire()
                        tg.start_soon(self._send, self._take())
                        if len(self._items) < _BATCH:
                            break
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(_DRAIN_TIMEOUT):
                while self._items:
                    await self._flush_safely(self._take())

    async def _send(self, batch: list[T]) -> None:
        try:
            # An acknowledgement that was started is finished even when the tracker is closing.
            with anyio.CancelScope(shield=True), anyio.move_on_after(_DRAIN_TIMEOUT * 2):
                await self._flush_safely(batch)
        finally:
            self._slots.release()

    async def _flush_safely(self, batch: list[T]) -> None:
        try:
            await self._flush(batch)
        except FanoutError:
            raise
        except Exception:
            log.warning("a batched SQS call failed; the messages will be delivered again", exc_info=True)


class ReceivePacer:
    """When the receivers poll: enough of them for the arrival rate, and each after a small batch
    only once one could have filled. Pure and synchronous: every method takes ``now`` (seconds)."""

    def __init__(self, receivers: int, *, linger_max: float = LINGER_MAX) -> None:
        self._receivers = receivers
        self._linger_max = linger_max
        self._arrivals: deque[tuple[float, int]] = deque()
        self._count = 0
        self._round_trip = 0.0

    def rate(self, now: float) -> float:
        """Messages received per second over the last second."""
        arrivals = self._arrivals
        while arrivals and arrivals[0][0] < now - _RATE_WINDOW:
            self._count -= arrivals.popleft()[1]
        if not arrivals:
            return 0.0
        # Younger than the window: over the time since the first arrival (a floor keeps one
        # burst from reading as a huge rate).
        return self._count / max(now - arrivals[0][0], _RATE_FLOOR_SPAN)

    def active(self, now: float) -> int:
        """How many receivers poll now: each takes at most 10 messages a round trip; twice what
        the rate needs, so that a rise is met before the backlog grows."""
        wanted = math.ceil(2 * self.rate(now) * self._round_trip / _BATCH)
        return min(self._receivers, max(1, wanted))

    def received(self, count: int, now: float, since: float) -> float:
        """Record a receive of ``count`` messages that started ``since`` seconds ago; returns how long
        that receiver waits before its next poll, so that polls start about ``_FILL`` messages apart."""
        if count:
            self._arrivals.append((now, count))
            self._count += count
            # Only a receive that found messages measures the round trip (an empty one long-polled); one
            # that waited for its first message over-measures it, hence the clip.
            sample = min(since, _ROUND_TRIP_CLIP)
            self._round_trip = 0.8 * self._round_trip + 0.2 * sample if self._round_trip else sample
        rate = self.rate(now)
        if not 0 < count < _BATCH or rate <= 0:
            return 0.0  # a full batch means a backlog: poll again at once; an empty one long-polled
        # Aim a little under a full batch: a full one leaves a remainder that the next (immediate) poll
        # would fetch alone. Staggered over ``active`` receivers, the queue is polled every gap /
        # active: that is what a message may wait, so one receiver's gap may be ``active`` bounds.
        active = self.active(now)
        return max(0.0, min(self._linger_max, _FILL / rate) * active - since)


class SqsSource:
    """Receives notifications from one queue and acknowledges them in batches."""

    def __init__(
        self,
        client: Any,
        config: SqsTracking,
        handler: Handler,
        *,
        flush_delay: float = 0.05,
        batch_concurrency: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._client = client
        self._handler = handler
        self._clock = clock
        self._url = config.queue_url
        self._pacer = ReceivePacer(config.receivers)
        self._holding: dict[str, Receipt] = {}
        self._left: OrderedDict[str, None] = OrderedDict()
        self._deletes: _Batcher[Receipt] = _Batcher(
            self._delete_batch, delay=flush_delay, concurrency=batch_concurrency
        )
        self._releases: _Batcher[Receipt] = _Batcher(
            self._release_batch, delay=flush_delay, concurrency=batch_concurrency
        )
        self._counts = dict.fromkeys(
            (
                "receive_calls",
                "received",
                "parsed",
                "malformed",
                "ignored",
                "deleted",
                "delete_failures",
                "left",
                "released",
                "extended",
                "handler_errors",
            ),
            0,
        )

    async def check(self) -> None:
        """Run-level preflight: ``QueueNotFound`` when the queue does not exist, ``ConfigError``
        when AWS refuses it otherwise (say, no ``sqs:GetQueueAttributes`` permission)."""
        try:
            with map_aws_errors(queue_url=self._url):
                await call_with_retry(
                    TRACKING_CALL_RETRY,
                    self._client.get_queue_attributes,
                    QueueUrl=self._url,
                    AttributeNames=["VisibilityTimeout"],
                )
        except FanoutError:
            raise
        except Exception as exc:
            if error_code(exc) is None:
                raise
            # Nothing has been sent yet: a queue this run cannot use is a configuration problem.
            raise ConfigError(f"the queue {self._url!r} cannot be used: {exc}") from exc

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._deletes.run)
                tg.start_soon(self._releases.run)
                if self.config.visibility_timeout > 0:
                    tg.start_soon(self._heartbeat)
                for index in range(self.config.receivers):
                    tg.start_soon(self._receive_loop, index)
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(_DRAIN_TIMEOUT):
                await self._release_held()

    async def _release_held(self) -> None:
        """Make the messages still held (outcomes nobody acknowledged) visible again at once, so the
        next consumer need not wait out their visibility timeout. Best effort."""
        held = [r for r in self._holding.values() if not r.done]
        for receipt in held:
            receipt.done = True
        self._holding.clear()
        for start in range(0, len(held), _BATCH):
            try:
                await self._change_visibility(held[start : start + _BATCH], 0)
            except Exception:
                log.debug("could not release %d held messages", len(held[start : start + _BATCH]))
                return
            self._counts["released"] += len(held[start : start + _BATCH])

    def statistics(self) -> dict[str, int]:
        return {**self._counts, "holding": len(self._holding)}

    async def _receive_loop(self, index: int) -> None:
        config = self.config
        pacer = self._pacer
        while True:
            if index >= pacer.active(self._clock()):
                await anyio.sleep(_IDLE_CHECK)  # not needed at this rate
                continue
            started = self._clock()
            try:
                with map_aws_errors(queue_url=self._url):
                    response = await call_with_retry(
                        RECEIVE_RETRY,
                        self._client.receive_message,
                        QueueUrl=self._url,
                        MaxNumberOfMessages=_BATCH,
                        WaitTimeSeconds=config.wait_time_seconds,
                        VisibilityTimeout=config.visibility_timeout,
                    )
            except FanoutError:
                raise
            except Exception as exc:
                raise TrackingError(f"receiving from {self._url} kept failing: {exc}") from exc
            self._counts["receive_calls"] += 1
            messages = response.get("Messages") or ()
            now = self._clock()
            linger = pacer.received(len(messages), now, now - started)
            for message in messages:
                await self._handle(message)
            if linger:
                await anyio.sleep(linger)

    async def _handle(self, message: dict[str, Any]) -> None:
        self._counts["received"] += 1
        receipt = Receipt(self, message.get("MessageId", ""), message["ReceiptHandle"], self._clock())
        self._holding[receipt.receipt_handle] = receipt
        result = parse_message(message.get("Body", ""))
        if isinstance(result, Malformed):
            self._counts["malformed"] += 1
            log.warning("deleting malformed notification message %s: %s", receipt.message_id, result.reason)
            receipt.delete()
            return
        if isinstance(result, Ignored):
            self._counts["ignored"] += 1
            log.debug("deleting message %s: %s", receipt.message_id, result.reason)
            receipt.delete()
            return
        self._counts["parsed"] += 1
        try:
            await self._handler(result.notification, receipt)
        except FanoutError:
            raise
        except Exception:
            self._counts["handler_errors"] += 1
            log.exception("handling message %s failed; it will be delivered again", receipt.message_id)
            if not receipt.done:
                self._holding.pop(receipt.receipt_handle, None)
                receipt.done = True

    def _dispose(self, receipt: Receipt, *, delete: bool) -> None:
        if receipt.done:
            return
        receipt.done = True
        self._holding.pop(receipt.receipt_handle, None)
        if delete:
            self._deletes.put(receipt)
            return
        self._counts["left"] += 1
        if receipt.message_id in self._left:
            return
        self._left[receipt.message_id] = None
        if len(self._left) > _REMEMBER_LEFT:
            self._left.popitem(last=False)
        self._releases.put(receipt)

    async def _delete_batch(self, batch: list[Receipt]) -> None:
        with map_aws_errors(queue_url=self._url):
            response = await call_with_retry(
                TRACKING_CALL_RETRY,
                self._client.delete_message_batch,
                QueueUrl=self._url,
                Entries=[{"Id": str(i), "ReceiptHandle": r.receipt_handle} for i, r in enumerate(batch)],
            )
        failed = response.get("Failed") or []
        self._counts["deleted"] += len(batch) - len(failed)
        if failed:
            # The message comes back later and is then recognised as a duplicate.
            self._counts["delete_failures"] += len(failed)
            log.debug("%d deletes failed: %s", len(failed), [f.get("Code") for f in failed])

    async def _release_batch(self, batch: list[Receipt]) -> None:
        await self._change_visibility(batch, 0)
        self._counts["released"] += len(batch)

    async def _change_visibility(self, batch: list[Receipt], timeout: int) -> None:
        with map_aws_errors(queue_url=self._url):
            await call_with_retry(
                TRACKING_CALL_RETRY,
                self._client.change_message_visibility_batch,
                QueueUrl=self._url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": r.receipt_handle, "VisibilityTimeout": timeout}
                    for i, r in enumerate(batch)
                ],
            )

    async def _heartbeat(self) -> None:
        timeout = self.config.visibility_timeout
        period = max(timeout / 4, 0.25)
        while True:
            await anyio.sleep(period)
            now = self._clock()
            due = [r for r in self._holding.values() if now - r.extended_at >= timeout / 2]
            for start in range(0, len(due), _BATCH):
                batch = due[start : start + _BATCH]
                try:
                    await self._change_visibility(batch, timeout)
                except FanoutError:
                    raise
                except Exception:
                    log.warning("could not extend the visibility of %d messages", len(batch), exc_info=True)
                    continue
                for receipt in batch:
                    receipt.extended_at = now
                self._counts["extended"] += len(batch)
