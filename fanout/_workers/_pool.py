"""The client's side of its workers: it deals requests out and takes results back.

A ``WorkerPool`` stands where a client's ``Dispatcher`` would (the same ``submit``, ``submit_all``,
``statistics``, ``check`` and ``delete_staged``, and the same hooks), but the invokes are sent by
worker processes or Ray actors (``Link``), each running a dispatcher with its share of the limits
(``_worker``). For one request::

    submit_all ──► max_pending token, checked, an inference id ──► expect (journal, tracker)
              ──► dealt to the worker with the fewest unanswered requests (batched per worker)
    worker ──► Results ──► accepted hook, or forget for a rejection ──► the caller's stream

The client keeps everything that has one copy per run: the input, the tracker, the journal, the
output and ``max_pending``. A request is expected (and journaled SENDING) before it leaves this
process, so whatever happens to a worker, a resume knows it may have been sent.

**A worker that dies** leaves its unanswered requests in doubt, as a killed run does. They are
dealt again to the workers still alive, under the same inference ids, as a resume sends requests
in doubt (``at_most_once`` forbids it: then the run stops with ``WorkerError``, and the journal
keeps them in doubt for the next run). With no worker left the run stops the same way.

**A run-level error** in one worker halts all of them: no attempt starts any more, what is on the
wire is answered, and the requests that were never sent are forgotten as unsent. Then the error is
raised from ``submit_all``, as the in-process dispatcher raises it.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from dataclasses import fields, replace
from typing import Any, Protocol

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from .._config import Limits, PayloadMode, RetryPolicy, Staging, inference_deadline, share_limits
from .._dispatch import (
    DispatcherStatistics,
    _nothing_accepted,
    _nothing_to_expect,
    _nothing_to_forget,
    _source,
)
from .._exceptions import FanoutError, WorkerError, unwrap_task_errors
from .._logging import current_logging
from .._models import InferenceRequest, Rejected, Submission
from .._payload import validate_request
from .._staging import Stager
from ._messages import HALT, Cadence, Deal, FromClient, FromWorker, Ready, Results, Stopped, WorkerConfig

__all__ = ["Launcher", "Link", "WorkerPool"]

log = logging.getLogger("fanout.workers")

_STOP_GRACE = 10.0
"""How long halted workers may take to answer for what is on the wire before they are closed."""
_START_TIMEOUT = 120.0


class Link(Protocol):
    """One worker as the client sees it: a process (``_process``) or a Ray actor (``_ray``)."""

    name: str
    """How messages call it: ``worker 2 (pid 4242)``."""

    async def send(self, message: FromClient) -> None:
        """Deliver ``message``; raises ``anyio.BrokenResourceError`` when the worker is gone."""

    async def receive(self) -> FromWorker:
        """The next message; raises ``anyio.EndOfStream`` when the worker is gone."""

    async def death(self) -> str:
        """What became of a worker that went away (``was killed by SIGKILL``), for messages."""


Launcher = Callable[[Sequence[WorkerConfig]], AbstractAsyncContextManager[Sequence[Link]]]
"""Starts one worker per config and yields their links; leaving it stops them."""


class _Call:
    """The results of one ``submit_all`` (or ``submit``), and how many it still waits for."""

    __slots__ = ("error", "feeding", "scope", "send", "waiting")

    def __init__(self, send: MemoryObjectSendStream[Submission | Rejected]) -> None:
        self.send = send
        self.waiting = 0
        """Requests dealt without a result yet."""
        self.feeding = True
        self.scope = anyio.CancelScope()
        """Cancelled when the run stops: nothing more is read."""
        self.error: FanoutError | None = None

    def end_if_done(self) -> None:
        if not self.feeding and not self.waiting:
            self.send.close()


class _Worker:
    __slots__ = ("alive", "api_calls", "cadence", "dealt", "link", "outbox", "statistics", "stopped", "wake")

    def __init__(self, link: Link) -> None:
        self.link = link
        self.alive = True
        self.stopped = anyio.Event()
        self.outbox: list[InferenceRequest] = []
        self.wake = anyio.Event()
        self.cadence = Cadence()
        self.dealt: dict[str, tuple[InferenceRequest, _Call]] = {}
        """The requests dealt to it without a result yet."""
        self.statistics: DispatcherStatistics | None = None
        self.api_calls: dict[str, int] = {}


class WorkerPool:
    """Deals requests to ``count`` workers that ``launch`` starts. See the module docstring.

    ``run`` starts the workers and must run (in the client's task group) while the pool is used;
    it returns once they are all ready, and raises the error that kept one from starting.
    """

    def __init__(
        self,
        *,
        endpoint_name: str,
        count: int,
        launch: Launcher,
        s3: Any | None = None,
        limits: Limits,
        retry: RetryPolicy,
        payload: PayloadMode,
        staging: Staging | None,
        fast_path: bool,
        pending: anyio.Semaphore,
        expect: Callable[[str, float], Awaitable[None]] = _nothing_to_expect,
        forget: Callable[[str, bool], None] = _nothing_to_forget,
        accepted: Callable[[Submission], None] = _nothing_accepted,
        grace_period: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.endpoint_name = endpoint_name
        self.count = count
        self._launch = launch
        self._limits = limits
        self._retry = retry
        share = share_limits(limits, count)
        self._configs = [
            WorkerConfig(
                endpoint_name=endpoint_name,
                limits=share,
                retry=retry,
                payload=payload,
                staging=staging,
                fast_path=fast_path,
                grace_period=grace_period,
                index=index,
                logging=current_logging(),
            )
            for index in range(1, count + 1)
        ]
        self._stager = Stager(s3, staging) if staging is not None and s3 is not None else None
        self._delete_after = staging is not None and staging.delete_after
        self._pending = pending
        self._expect = expect
        self._forget = forget
        self._accepted = accepted
        self._grace_period = grace_period
        self._clock = clock
        self._workers: list[_Worker] = []
        self._failure: FanoutError | None = None
        self._calls: set[_Call] = set()
        self._submitting = 0
        self._rejected = 0
        self._redealt = 0

    # -- the dispatcher's interface ------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the workers, serve them, and stop them when cancelled."""
        async with self._launch(self._configs) as links:
            self._workers = [_Worker(link) for link in links]
            with anyio.move_on_after(_START_TIMEOUT) as starting:
                for worker in self._workers:
                    await self._started(worker)
            if starting.cancelled_caught:
                raise WorkerError(f"the workers were not ready within {_START_TIMEOUT:.0f} s")
            log.info("%d workers ready: %s", len(links), ", ".join(link.name for link in links))
            try:
                async with anyio.create_task_group() as tg:
                    for worker in self._workers:
                        tg.start_soon(self._listen, worker)
                        tg.start_soon(self._write, worker)
                    task_status.started()
            finally:
                with anyio.CancelScope(shield=True):
                    await self._stop_all()

    async def check(self) -> None:
        """The workers checked their credentials and staging bucket when they started."""
        if self._failure is not None:
            raise self._failure

    def statistics(self) -> DispatcherStatistics:
        parts = [worker.statistics for worker in self._workers if worker.statistics is not None]
        total: dict[str, Any] = {}
        for item in fields(DispatcherStatistics):
            name = item.name
            values = [getattr(part, name) for part in parts]
            if name == "retries_by_class":
                counter: Counter[str] = Counter()
                for value in values:
                    counter.update(value)
                total[name] = dict(counter)
            elif name == "current_rate":
                total[name] = None if not values or None in values else sum(values)
            else:
                total[name] = sum(values)
        total["pending"] = self._limits.max_pending - self._pending.value
        total["submitting"] = self._submitting
        total["rejected"] = total["rejected"] + self._rejected
        total["resends"] = total["resends"] + self._redealt
        if not parts:
            total["current_limit"] = self._limits.max_in_flight
        return DispatcherStatistics(**total)

    def api_calls(self) -> Counter[str]:
        """The AWS API calls the workers made, by ``service.Operation``."""
        counter: Counter[str] = Counter()
        for worker in self._workers:
            counter.update(worker.api_calls)
        return counter

    async def submit(self, request: InferenceRequest) -> Submission | Rejected:
        send, receive = anyio.create_memory_object_stream[Submission | Rejected](1)
        call = _Call(send)
        self._calls.add(call)
        try:
            with receive:
                await self._pending.acquire()
                await self._take(request, call)
                call.feeding = False
                call.end_if_done()
                async for result in receive:
                    return result
        finally:
            self._calls.discard(call)
        raise call.error or self._failure or WorkerError("the workers stopped before the request was sent")

    @asynccontextmanager
    async def submit_all(
        self, requests: Iterable[InferenceRequest] | AsyncIterable[InferenceRequest]
    ) -> AsyncIterator[AsyncIterator[Submission | Rejected]]:
        """Deal every request, lazily; yields the results in completion order, each holding a
        ``max_pending`` token. A run-level error is raised from the block once the workers have
        answered for what was on the wire."""
        send, receive = anyio.create_memory_object_stream[Submission | Rejected](math.inf)
        call = _Call(send)
        self._calls.add(call)
        try:
            with unwrap_task_errors():
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._feed, requests, call)
                    try:
                        yield receive
                    finally:
                        tg.cancel_scope.cancel()
        finally:
            self._calls.discard(call)
            call.feeding = False
            call.send.close()
            while True:  # results nobody will read: give their tokens back
                try:
                    self._drop(receive.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            receive.close()
        if call.error is not None:
            raise call.error

    def release(self, result: Submission | Rejected) -> None:
        self._pending.release()

    async def delete_staged(self, submission: Submission) -> None:
        if submission.staged and submission.input_location and self._delete_after and self._stager:
            await self._stager.delete(submission.input_location)

    # -- dealing -----------------------------------------------------------------------------------

    async def _feed(
        self, requests: Iterable[InferenceRequest] | AsyncIterable[InferenceRequest], call: _Call
    ) -> None:
        """Read ``requests`` and deal them; each is expected in a task of its own, so that a
        durable journal commits the SENDING marks of many together."""
        try:
            with call.scope:
                async with anyio.create_task_group() as tg, aclosing(_source(requests)) as source:
                    async for request in source:
                        # Read first, then wait: a source that has ended must not wait for a token.
                        await self._pending.acquire()
                        tg.start_soon(self._take, request, call)
        finally:
            call.feeding = False
            call.end_if_done()

    async def _take(self, request: InferenceRequest, call: _Call) -> None:
        """Check, expect and deal one request that holds a token."""
        if self._failure is not None:
            self._pending.release()  # the run is stopping: it is never sent
            return
        self._submitting += 1
        invalid = validate_request(request)
        if invalid is not None:
            self._rejected += 1
            self._submitting -= 1
            rejected = Rejected(
                reason=invalid.reason,
                inference_id=request.inference_id,
                id=request.id,
                completed_at=self._clock(),
            )
            self._hand_out(call, rejected)
            return
        if request.inference_id is None:
            request = replace(request, inference_id=str(uuid.uuid4()))
        inference_id = request.inference_id
        assert inference_id is not None
        deadline = inference_deadline(
            self._clock(),
            request_ttl_seconds=request.request_ttl_seconds,
            invocation_timeout_seconds=request.invocation_timeout_seconds,
            grace_period=self._grace_period,
        )
        try:
            await self._expect(inference_id, deadline)
        except BaseException:
            self._submitting -= 1
            self._pending.release()
            raise
        call.waiting += 1
        if not self._deal(inference_id, request, call):
            self._unsent(inference_id, call)

    def _deal(self, inference_id: str, request: InferenceRequest, call: _Call) -> bool:
        """Give ``request`` to the live worker with the fewest unanswered requests."""
        if self._failure is not None:
            return False
        alive = [worker for worker in self._workers if worker.alive]
        if not alive:
            return False
        worker = min(alive, key=lambda worker: len(worker.dealt))
        worker.dealt[inference_id] = (request, call)
        worker.outbox.append(request)
        worker.wake.set()
        return True

    def _unsent(self, inference_id: str, call: _Call) -> None:
        """A request that was expected but will never be sent."""
        self._forget(inference_id, False)
        self._resolve(call)
        self._pending.release()

    def _resolve(self, call: _Call) -> None:
        self._submitting -= 1
        call.waiting -= 1
        call.end_if_done()

    def _hand_out(self, call: _Call, result: Submission | Rejected) -> None:
        try:
            call.send.send_nowait(result)  # unbounded: it holds no more than max_pending
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._drop(result)  # the reader has left

    def _drop(self, result: Submission | Rejected) -> None:
        """A result nobody will take: give its token back; nobody will track a submission."""
        self._pending.release()
        if isinstance(result, Submission):
            self._forget(result.inference_id, True)

    # -- each worker -------------------------------------------------------------------------------

    async def _started(self, worker: _Worker) -> None:
        try:
            message = await worker.link.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError) as exc:
            raise WorkerError(f"{worker.link.name} did not start: it {await worker.link.death()}") from exc
        if isinstance(message, Stopped):
            worker.alive = False
            error = message.error or WorkerError(f"{worker.link.name} stopped as it started")
            raise error
        if not isinstance(message, Ready):
            raise WorkerError(f"{worker.link.name} said {type(message).__name__} before it was ready")
        worker.api_calls = message.api_calls

    async def _write(self, worker: _Worker) -> None:
        """Send the requests dealt to ``worker``, batched: all that were dealt since the last send."""
        while worker.alive:
            if self._failure is not None:
                # Dealt, but they have not left: they are never sent.
                for request in worker.outbox:
                    entry = worker.dealt.pop(request.inference_id or "", None)
                    if entry is not None:
                        self._unsent(request.inference_id or "", entry[1])
                worker.outbox = []
                message: FromClient = HALT
            elif worker.outbox:
                message = Deal(worker.outbox)
                worker.outbox = []
            else:
                await worker.wake.wait()
                await worker.cadence.turn()
                worker.wake = anyio.Event()
                continue
            try:
                with anyio.CancelScope(shield=True):  # half a frame would corrupt the stream
                    await worker.link.send(message)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return  # its listener sees it die
            if message == HALT:
                return

    async def _listen(self, worker: _Worker) -> None:
        try:
            while True:
                message = await worker.link.receive()
                if isinstance(message, Results):
                    worker.statistics = message.statistics
                    worker.api_calls = message.api_calls
                    for result in message.results:
                        self._answered(worker, result)
                elif isinstance(message, Stopped):
                    self._stopped(worker, message)
                    return
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            worker.alive = False
            self._died(worker, await worker.link.death())

    def _answered(self, worker: _Worker, result: Submission | Rejected) -> None:
        entry = worker.dealt.pop(result.inference_id or "", None)
        if entry is None:
            return  # answered for after it was dealt again elsewhere: the later answer counts
        _, call = entry
        if isinstance(result, Submission):
            self._accepted(result)
        elif result.inference_id is not None:
            self._forget(result.inference_id, False)
        self._hand_out(call, result)
        self._resolve(call)

    def _stopped(self, worker: _Worker, message: Stopped) -> None:
        worker.alive = False
        worker.stopped.set()
        if message.statistics is not None:
            worker.statistics = message.statistics
        worker.api_calls = message.api_calls or worker.api_calls
        for inference_id, sent in message.unanswered:
            entry = worker.dealt.pop(inference_id, None)
            if entry is not None:
                self._forget(inference_id, sent)
                self._resolve(entry[1])
                self._pending.release()
        if message.error is not None:
            self._fail(message.error)
        elif worker.dealt:
            self._orphaned(worker, f"{worker.link.name} stopped without answering for them")

    def _died(self, worker: _Worker, how: str) -> None:
        worker.alive = False
        worker.stopped.set()
        self._orphaned(worker, f"{worker.link.name} {how}")

    def _orphaned(self, worker: _Worker, why: str) -> None:
        """Requests dealt to a worker that is gone: in doubt, like a killed run's."""
        orphans, worker.dealt = worker.dealt, {}
        alive = any(other.alive for other in self._workers)
        if self._failure is None and alive and (not orphans or not self._retry.at_most_once):
            log.warning("%s; its %d unanswered requests go to the other workers", why, len(orphans))
            if not orphans:
                return
            for inference_id, (request, call) in orphans.items():
                self._redealt += 1
                if not self._deal(inference_id, request, call):
                    self._in_doubt(inference_id, call)
            return
        for inference_id, (_, call) in orphans.items():
            self._in_doubt(inference_id, call)
        if self._retry.at_most_once and orphans:
            reason = (
                f"{why}; {len(orphans)} requests it was sending are in doubt, and at-most-once keeps "
                "them from being sent again"
            )
        elif orphans:
            reason = f"{why}; no worker is left for its {len(orphans)} unanswered requests"
        else:
            reason = f"{why}; no worker is left"
        self._fail(WorkerError(reason))

    def _in_doubt(self, inference_id: str, call: _Call) -> None:
        self._forget(inference_id, True)  # it stays in doubt in the journal: a resume sees to it
        self._resolve(call)
        self._pending.release()

    def _fail(self, error: FanoutError) -> None:
        """Stop the run: halt every worker, and raise ``error`` from each ``submit_all``."""
        if self._failure is not None:
            return
        self._failure = error
        for call in self._calls:
            call.error = error
            call.scope.cancel()
        for worker in self._workers:
            worker.wake.set()  # its writer sends HALT

    async def _stop_all(self) -> None:
        """Halt every worker and wait (a while) for each to answer for what it has."""
        if self._failure is None:
            self._failure = WorkerError("the client closed")  # keeps anything new from being dealt
        for worker in self._workers:
            worker.wake.set()
        with anyio.move_on_after(_STOP_GRACE):
            for worker in self._workers:
                if worker.alive:
                    await self._drain(worker)

    async def _drain(self, worker: _Worker) -> None:
        try:
            await worker.link.send(HALT)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return
        try:
            while True:
                message = await worker.link.receive()
                if isinstance(message, Results):
                    for result in message.results:
                        self._answered(worker, result)
                elif isinstance(message, Stopped):
                    self._stopped(worker, message)
                    return
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return
