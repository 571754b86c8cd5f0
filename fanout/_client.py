"""The public client: the one place that wires the dispatcher and the tracker together.

``open_client`` makes one long-lived AWS client per service (``_aws``), builds a ``Client`` (which
builds its ``Dispatcher`` and ``Tracker``), checks what can be checked before anything is sent, and
runs the client's tasks in a task group of its own block: the tracker, the *router*, and the
deleter of staged inputs. For one request::

    submit / map ──► dispatcher: max_pending token, expect (observer.sending, tracker.expect),
                     invoke ──► accepted (observer.accepted) ──► Submission, holding the token
                        ──► the client registers a slot, then tracker.track(submission)
    tracker outcome ──► router ──► its slot: a Handle, or the stream of the map (or as_completed)
                        ──► handed over to the caller: the token is released, the outcome
                            acknowledged (unless manual), observer.handed_over

**One owner per limit.** ``max_pending`` is a semaphore the client owns: the dispatcher takes a
token before it reads a request, every result holds it, and the client releases it when it hands
the outcome over. A rejection holds one too, until it is handed over. For ``map``, handing over
means the consumer took the outcome: a slow consumer slows submission instead of growing a buffer,
so memory stays O(limits). Concurrency (``max_in_flight``) and rate belong to the dispatcher.

**Every task lives in the scope of the code that uses it.** ``map`` is an ``async with`` that owns
its feeder; ``as_completed`` owns no task; nothing spawns into a task group it was handed.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Generator, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._aws import count_calls, ensure_session, open_aws_client, runtime_client_config
from ._config import (
    DEFAULT_LIMITS,
    DEFAULT_RETRY,
    HybridTracking,
    Limits,
    PayloadMode,
    RetryPolicy,
    S3Tracking,
    SqsTracking,
    Staging,
    Tracking,
    Workers,
    check_payload_mode,
)
from ._dispatch import Dispatcher, DispatcherStatistics
from ._exceptions import ConfigError, unwrap_task_errors
from ._fastpath import FastInvoker
from ._fasts3 import FastS3
from ._fastsqs import FastSqs
from ._metrics import metrics_for
from ._models import InferenceRequest, Outcome, Rejected, RunReport, Submission
from ._report import ReportBuilder
from ._tracking import Tracker, TrackerStatistics
from ._workers import Launcher, WorkerPool, open_launcher

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["Acknowledge", "Client", "ClientStatistics", "Handle", "Observer", "OutcomeStream", "open_client"]

Acknowledge: TypeAlias = Literal["auto", "manual"]

log = logging.getLogger("fanout.client")

_FETCH_CONCURRENCY = 16
_DELETE_CONCURRENCY = 4


class Observer(Protocol):
    """Hooks into the life of each request, for callers that record it: ``fanout run``'s journal,
    metrics. Implement all four; each is called on the event loop, and must not block it.

    ``sending`` is awaited before a request's first send, so what it records is durable before the
    request can reach the endpoint.
    """

    async def sending(self, inference_id: str, deadline: float) -> None:
        """The request is about to be sent (again, when retried from an earlier run)."""

    def unsent(self, inference_id: str) -> None:
        """Every attempt failed to connect: the request provably never reached the endpoint, and
        will not be sent by this client."""

    def accepted(self, submission: Submission) -> None:
        """The endpoint accepted the request (202), or it is in doubt (``submission.in_doubt``)."""

    def handed_over(self, outcome: Outcome) -> None:
        """The outcome was handed over to the caller."""


class _Observers:
    """Several observers heard as one, each hook in turn in the order given (``sending`` awaits
    each before the next, so all of them before the request is sent)."""

    __slots__ = ("_observers",)

    def __init__(self, observers: Sequence[Observer]) -> None:
        self._observers = tuple(observers)

    async def sending(self, inference_id: str, deadline: float) -> None:
        for observer in self._observers:
            await observer.sending(inference_id, deadline)

    def unsent(self, inference_id: str) -> None:
        for observer in self._observers:
            observer.unsent(inference_id)

    def accepted(self, submission: Submission) -> None:
        for observer in self._observers:
            observer.accepted(submission)

    def handed_over(self, outcome: Outcome) -> None:
        for observer in self._observers:
            observer.handed_over(outcome)


def _observe_all(*observers: Observer | None) -> Observer | None:
    """One observer for those given (``None`` for none): the caller's first, then the metrics."""
    present = [observer for observer in observers if observer is not None]
    if len(present) <= 1:
        return present[0] if present else None
    return _Observers(present)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientStatistics:
    """A snapshot of a running client."""

    dispatcher: DispatcherStatistics
    tracker: TrackerStatistics
    outstanding: int
    """Accepted inferences whose outcome has not been handed over yet."""
    completed: Mapping[str, int]
    """Outcomes the client has handed over, by status (rejections included)."""
    api_calls: Mapping[str, int]
    """AWS API calls made by the client's aiobotocore clients, by ``service.Operation``."""


class _Slot:
    """Where the outcome of one request goes, and what it holds until it is handed over."""

    __slots__ = ("event", "handed_over", "holds_token", "outcome", "stream", "submission")

    def __init__(self, submission: Submission | None, *, holds_token: bool) -> None:
        self.submission = submission
        self.handed_over = False
        self.holds_token = holds_token
        """Whether it holds a ``max_pending`` token (it does unless it was only tracked)."""
        self.event = anyio.Event()
        self.outcome: Outcome | None = None
        self.stream: MemoryObjectSendStream[_Slot] | None = None
        """The stream of the ``map`` or ``as_completed`` that hands it over, if any."""


class Handle:
    """One submitted or tracked request. ``await handle`` returns its ``Outcome``.

    A request that was rejected before it was accepted has a handle that is already done.
    """

    __slots__ = ("_slot",)

    def __init__(self, slot: _Slot) -> None:
        self._slot = slot

    @property
    def submission(self) -> Submission | None:
        """What the endpoint accepted, or ``None`` for a rejected request."""
        return self._slot.submission

    @property
    def inference_id(self) -> str | None:
        if self._slot.submission is not None:
            return self._slot.submission.inference_id
        return self._slot.outcome.inference_id if self._slot.outcome is not None else None

    def done(self) -> bool:
        return self._slot.outcome is not None

    def outcome(self) -> Outcome:
        """The outcome; raises ``anyio.WouldBlock`` when it has not arrived yet."""
        if self._slot.outcome is None:
            raise anyio.WouldBlock(f"inference {self.inference_id} has no outcome yet")
        return self._slot.outcome

    async def wait(self) -> Outcome:
        await self._slot.event.wait()
        assert self._slot.outcome is not None
        return self._slot.outcome

    def __await__(self) -> Generator[Any, None, Outcome]:
        return self.wait().__await__()

    def __repr__(self) -> str:
        state = self._slot.outcome.status if self._slot.outcome is not None else "pending"
        return f"<Handle inference_id={self.inference_id!r} {state}>"


class OutcomeStream:
    """Outcomes in completion order: ``async for outcome in stream``. Taking one hands it over."""

    def __init__(self, client: Client, receive: MemoryObjectReceiveStream[_Slot]) -> None:
        self._client = client
        self._receive = receive

    def __aiter__(self) -> OutcomeStream:
        return self

    async def __anext__(self) -> Outcome:
        try:
            slot = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None
        self._client._hand_over(slot)
        assert slot.outcome is not None
        return slot.outcome

    def _close(self) -> None:
        """Outcomes nobody will take give their tokens back, unacknowledged (they are redelivered)."""
        while True:
            try:
                self._client._drop(self._receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
        self._receive.close()


class Client:
    """A running fanout client; make it with ``open_client``."""

    def __init__(
        self,
        *,
        endpoint_name: str,
        tracking: Tracking,
        runtime: Any,
        s3: Any | None,
        sqs: Any | None,
        limits: Limits = DEFAULT_LIMITS,
        retry: RetryPolicy = DEFAULT_RETRY,
        payload: PayloadMode = "auto",
        staging: Staging | None = None,
        fetch: bool = True,
        observer: Observer | None = None,
        acknowledge: Acknowledge = "auto",
        api_calls: Counter[str] | None = None,
        fast_path: bool = True,
        workers: tuple[int, Launcher] | None = None,
    ) -> None:
        if acknowledge not in ("auto", "manual"):
            raise ConfigError(f"must be 'auto' or 'manual', got {acknowledge!r}", field="acknowledge")
        self._limits = limits
        self._observer = observer
        self._auto_acknowledge = acknowledge == "auto"
        self._api_calls = api_calls if api_calls is not None else Counter()
        self._pending = anyio.Semaphore(limits.max_pending, max_value=limits.max_pending)
        self._tracker = Tracker(
            tracking=tracking,
            sqs=sqs,
            s3=s3,
            fetch=fetch,
            fetch_concurrency=_FETCH_CONCURRENCY,
            max_pending=limits.max_pending,
        )
        self._pool: WorkerPool | None = None
        self._dispatcher: Dispatcher | WorkerPool
        if workers is not None:
            count, launch = workers
            self._dispatcher = self._pool = WorkerPool(
                endpoint_name=endpoint_name,
                count=count,
                launch=launch,
                s3=s3,
                limits=limits,
                retry=retry,
                payload=payload,
                staging=staging,
                fast_path=fast_path,
                pending=self._pending,
                expect=self._expect,
                forget=self._forget,
                accepted=self._accepted,
                grace_period=_grace_period(tracking),
            )
        else:
            self._dispatcher = Dispatcher(
                endpoint_name=endpoint_name,
                runtime=runtime,
                s3=s3,
                limits=limits,
                retry=retry,
                payload=payload,
                staging=staging,
                pending=self._pending,
                expect=self._expect,
                forget=self._forget,
                accepted=self._accepted,
                grace_period=_grace_period(tracking),
            )
        self._slots: dict[str, _Slot] = {}
        self._completed: Counter[str] = Counter()
        self._deletions_send, self._deletions_receive = anyio.create_memory_object_stream[Submission](
            math.inf
        )

    @property
    def endpoint_name(self) -> str:
        return self._dispatcher.endpoint_name

    @property
    def workers(self) -> int:
        """How many processes send: 1 is this one; more are worker processes or Ray actors."""
        return self._pool.count if self._pool is not None else 1

    # -- public ------------------------------------------------------------------------------------

    async def submit(self, request: InferenceRequest) -> Handle:
        """Submit one request; returns once the endpoint accepted it (or it was rejected).

        Waits on the limits first. Run-level problems (a missing endpoint, credentials) raise; a
        bad request comes back as a done handle whose outcome is ``Rejected``.
        """
        result = await self._dispatcher.submit(request)
        if isinstance(result, Rejected):
            slot = _Slot(None, holds_token=True)
            slot.outcome = result
            slot.event.set()
            self._hand_over(slot)
            return Handle(slot)
        return Handle(self._register(result, holds_token=True))

    def track(self, submission: Submission) -> Handle:
        """Follow an inference accepted earlier (say, by a process that has since stopped).

        It holds no ``max_pending`` token: it was sent outside this client's limits.
        """
        self._tracker.expect(submission.inference_id, submission.deadline)
        return Handle(self._register(submission, holds_token=False))

    def as_completed(self, handles: Sequence[Handle]) -> OutcomeStream:
        """The outcomes of ``handles``, in completion order: ``async for outcome in ...``.

        A handle belongs to at most one ``as_completed`` (or ``map``). It owns no task, so there
        is nothing to close.
        """
        send, receive = anyio.create_memory_object_stream[_Slot](max(len(handles), 1))
        with send:
            for handle in handles:
                slot = handle._slot
                if slot.stream is not None:
                    raise ValueError(f"{handle!r} is already being waited for by another stream")
                if slot.outcome is not None:
                    send.send_nowait(slot)
                else:
                    slot.stream = send.clone()
        return OutcomeStream(self, receive)

    @asynccontextmanager
    async def map(
        self, requests: Iterable[InferenceRequest] | AsyncIterable[InferenceRequest]
    ) -> AsyncIterator[OutcomeStream]:
        """Submit every request and hand over each outcome as it arrives (completion order)::

            async with client.map(requests) as outcomes:
                async for outcome in outcomes:
                    ...

        ``requests`` is read lazily and memory stays O(limits) whatever its length. Leaving the
        block stops submitting; outcomes not taken stay unacknowledged. A run-level problem raises
        from the block.
        """
        # Every item in the stream holds a max_pending token, so it never holds more than that.
        send, receive = anyio.create_memory_object_stream[_Slot](self._limits.max_pending)
        stream = OutcomeStream(self, receive)
        try:
            with unwrap_task_errors():
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._feed, requests, send)
                    try:
                        yield stream
                    finally:
                        tg.cancel_scope.cancel()
        finally:
            stream._close()

    async def run(self, requests: Iterable[InferenceRequest] | AsyncIterable[InferenceRequest]) -> RunReport:
        """Submit every request, wait for every outcome, and report on the run."""
        report = ReportBuilder(self.statistics)
        async with self.map(requests) as outcomes:
            async for outcome in outcomes:
                report.add(outcome)
        return report.build()

    def acknowledge(self, *outcomes: Outcome) -> None:
        """Say that these outcomes are stored safely, so their notifications may leave the queue.

        Needed only with ``acknowledge="manual"``: then a notification is deleted from SQS only
        once its outcome is acknowledged, and one never acknowledged (the process died first) is
        delivered again to the next run. With ``"auto"`` an outcome is acknowledged when it is
        handed over, and this does nothing more.
        """
        for outcome in outcomes:
            if outcome.inference_id is not None:
                self._tracker.acknowledge(outcome.inference_id)

    def statistics(self) -> ClientStatistics:
        api_calls = self._api_calls if self._pool is None else self._api_calls + self._pool.api_calls()
        return ClientStatistics(
            dispatcher=self._dispatcher.statistics(),
            tracker=self._tracker.statistics(),
            outstanding=len(self._slots),
            completed=dict(self._completed),
            api_calls=dict(api_calls),
        )

    # -- the dispatcher's hooks ------------------------------------------------------------------------

    async def _expect(self, inference_id: str, deadline: float) -> None:
        if self._observer is not None:
            await self._observer.sending(inference_id, deadline)
        self._tracker.expect(inference_id, deadline)

    def _forget(self, inference_id: str, sent: bool) -> None:
        self._tracker.forget(inference_id)
        if not sent and self._observer is not None:
            self._observer.unsent(inference_id)

    def _accepted(self, submission: Submission) -> None:
        if self._observer is not None:
            self._observer.accepted(submission)

    # -- routing ---------------------------------------------------------------------------------------

    async def _serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(self._tracker.run)
            tg.start_soon(self._route)
            for _ in range(_DELETE_CONCURRENCY):
                tg.start_soon(self._delete_staged)
            task_status.started()

    def _register(self, submission: Submission, *, holds_token: bool) -> _Slot:
        slot = _Slot(submission, holds_token=holds_token)
        self._slots[submission.inference_id] = slot
        # After the slot exists: a notification held for it resolves at once.
        self._tracker.track(submission)
        return slot

    async def _feed(
        self,
        requests: Iterable[InferenceRequest] | AsyncIterable[InferenceRequest],
        send: MemoryObjectSendStream[_Slot],
    ) -> None:
        """Submit ``requests`` for one ``map``: a rejection goes to its stream at once, a
        submission when its outcome arrives."""
        async with send, self._dispatcher.submit_all(requests) as results:
            async for result in results:
                if isinstance(result, Rejected):
                    slot = _Slot(None, holds_token=True)
                    slot.outcome = result
                    slot.event.set()
                    await send.send(slot)
                    continue
                slot = _Slot(result, holds_token=True)
                slot.stream = send.clone()
                self._slots[result.inference_id] = slot
                self._tracker.track(result)

    async def _route(self) -> None:
        async for outcome in self._tracker:
            slot = self._slots.pop(outcome.inference_id or "", None)
            if slot is None:
                continue  # forgotten meanwhile: nobody waits for it
            slot.outcome = outcome
            slot.event.set()
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "outcome of %s: %s",
                    outcome.inference_id,
                    outcome.status,
                    extra={"id": outcome.id, "inference_id": outcome.inference_id},
                )
            if slot.stream is None:
                self._hand_over(slot)  # a Handle: handed over as soon as it is done
                continue
            with slot.stream:
                try:
                    slot.stream.send_nowait(slot)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    self._drop(slot)  # its map was left: nobody will take it

    def _hand_over(self, slot: _Slot) -> None:
        """The caller has the outcome: release its token, acknowledge it (unless manual)."""
        outcome = slot.outcome
        assert outcome is not None
        if slot.handed_over:
            return
        slot.handed_over = True
        self._completed[outcome.status] += 1
        if self._auto_acknowledge and outcome.inference_id is not None:
            self._tracker.acknowledge(outcome.inference_id)
        if self._observer is not None:
            self._observer.handed_over(outcome)
        self._release(slot)

    def _drop(self, slot: _Slot) -> None:
        """Nobody will take this outcome: release its token, and leave it unacknowledged."""
        self._release(slot)

    def _release(self, slot: _Slot) -> None:
        if slot.holds_token:
            slot.holds_token = False
            self._pending.release()
            if slot.submission is not None and slot.submission.staged:
                self._deletions_send.send_nowait(slot.submission)

    async def _delete_staged(self) -> None:
        async for submission in self._deletions_receive:
            await self._dispatcher.delete_staged(submission)


def _grace_period(tracking: Tracking) -> float:
    sqs, s3 = _parts(tracking)
    return next(part.grace_period for part in (sqs, s3) if part is not None)


def _parts(tracking: Tracking) -> tuple[SqsTracking | None, S3Tracking | None]:
    """The SQS and the S3 part of ``tracking`` (a hybrid always has both)."""
    if isinstance(tracking, HybridTracking):
        return tracking.sqs, tracking.s3
    if isinstance(tracking, SqsTracking):
        return tracking, None
    if isinstance(tracking, S3Tracking):
        return None, tracking
    raise ConfigError(
        f"must be SqsTracking, S3Tracking or HybridTracking, got {tracking!r}", field="tracking"
    )


@asynccontextmanager
async def open_client(
    *,
    endpoint_name: str,
    tracking: Tracking,
    limits: Limits = DEFAULT_LIMITS,
    retry: RetryPolicy = DEFAULT_RETRY,
    payload: PayloadMode = "auto",
    staging: Staging | None = None,
    fetch: bool = True,
    session: Any = None,
    observer: Observer | None = None,
    acknowledge: Acknowledge = "auto",
    fast_path: bool = True,
    workers: Workers | None = None,
    registry: CollectorRegistry | None = None,
) -> AsyncIterator[Client]:
    """Open a client for the async endpoint ``endpoint_name``.

    ``tracking`` says how outcomes are found: ``SqsTracking`` (SNS notifications in an SQS queue),
    ``S3Tracking`` (polling the output objects) or ``HybridTracking``. ``payload`` routes bodies
    inline (at most 128,000 bytes), through S3 (``staging`` says where) or ``"auto"`` by size.
    ``fetch`` downloads each result. ``session`` is an aiobotocore session or an aioboto3
    ``Session``; by default a new aiobotocore session reads the standard AWS configuration.
    ``observer`` hears of each request's progress (see ``Observer``). ``acknowledge="manual"`` keeps
    each notification on the queue until ``client.acknowledge(outcome)``, for callers that store
    outcomes durably. ``fast_path`` sends InvokeEndpointAsync with fanout's own request template and
    botocore's signer over one aiohttp connector (a third of aiobotocore's CPU per call, the same
    wire request), the tracker's ReceiveMessage, DeleteMessageBatch and
    ChangeMessageVisibilityBatch, and the result fetches' GetObject the same way; ``False`` sends
    them through aiobotocore like every other call. ``workers`` sends
    from worker processes (or Ray actors) instead of this one, each with its share of
    ``max_in_flight`` and ``max_per_second``; the client still deals, tracks and owns
    ``max_pending`` (see ``Workers``). Workers make their AWS clients from the standard
    configuration where they run, not from ``session``.

    ``registry`` (a prometheus_client ``CollectorRegistry``; needs ``pip install 'fanout[metrics]'``)
    exposes the client's Prometheus metrics (``fanout_*``) on it: pass ``prometheus_client.REGISTRY``
    for the default registry, or a registry of your own (serve it with ``serve_metrics``). The
    default, ``None``, exposes nothing: a library that registers on the process-wide registry
    unasked surprises its host (its names appear in the host's scrapes, and a second client, or a
    test that opens many, would have to share them), and whether metrics appear should not depend
    on whether some other package pulled prometheus-client in. Clients that share a registry are
    summed; when the block ends, the client's gauges leave and its counts stay in the counters (see
    ``docs/observability.md``).

    Checks before it returns: the region, credentials, the queue and the staging bucket
    (``ConfigError``, ``CredentialsError``, ``QueueNotFound``, ``BucketNotFound``). Leaving the
    block cancels what is still in progress.
    """
    from aiobotocore.config import AioConfig

    sqs_part, s3_part = _parts(tracking)
    check_payload_mode(payload, staging)
    metrics = metrics_for(registry) if registry is not None else None
    session = ensure_session(session)
    api_calls: Counter[str] = Counter()
    async with AsyncExitStack() as stack:

        async def aws(service: str, config: Any) -> Any:
            client = await stack.enter_async_context(open_aws_client(session, service, config=config))
            count_calls(client, api_calls)
            return client

        launcher: tuple[int, Launcher] | None = None
        runtime = None
        if workers is not None:
            launcher = await stack.enter_async_context(open_launcher(workers))
        else:
            runtime = await aws("sagemaker-runtime", runtime_client_config(limits))
            if fast_path:
                runtime = await stack.enter_async_context(FastInvoker(runtime, counter=api_calls))
        s3 = sqs = None
        if staging is not None or s3_part is not None or fetch:
            pool = _FETCH_CONCURRENCY + _DELETE_CONCURRENCY
            pool += staging.max_concurrency if staging is not None else 0
            pool += s3_part.max_concurrency if s3_part is not None else 0
            s3 = await aws("s3", AioConfig(max_pool_connections=pool))
            if fast_path:
                s3 = await stack.enter_async_context(FastS3(s3, counter=api_calls))
        if sqs_part is not None:
            # botocore's retries off, on both paths: the tracker retries its SQS calls itself
            # (call_with_retry), and the two would multiply.
            retries = {"mode": "standard", "total_max_attempts": 1}
            sqs = await aws("sqs", AioConfig(max_pool_connections=sqs_part.receivers + 8, retries=retries))
            if fast_path:
                sqs = await stack.enter_async_context(FastSqs(sqs, counter=api_calls))
        client = Client(
            endpoint_name=endpoint_name,
            tracking=tracking,
            runtime=runtime,
            s3=s3,
            sqs=sqs,
            limits=limits,
            retry=retry,
            payload=payload,
            staging=staging,
            fetch=fetch,
            observer=_observe_all(observer, metrics.observer if metrics is not None else None),
            acknowledge=acknowledge,
            api_calls=api_calls,
            fast_path=fast_path,
            workers=launcher,
        )
        if metrics is not None:
            metrics.attach(client)
            stack.callback(metrics.detach, client)
        await client._tracker.check()
        with unwrap_task_errors():
            async with anyio.create_task_group() as tg:
                if client._pool is not None:
                    await tg.start(client._pool.run)  # the workers check what they use as they start
                await client._dispatcher.check()
                await tg.start(client._serve)
                try:
                    yield client
                finally:
                    tg.cancel_scope.cancel()
