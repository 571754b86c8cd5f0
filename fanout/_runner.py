"""The public client: the one place that wires the dispatcher and the tracker together.

``open_client`` makes one long-lived aiobotocore client per service (botocore's
retries off for sagemaker-runtime, its pool as large as ``max_in_flight``),
starts the tracker, builds the dispatcher, and owns the task group in which the
*router* runs. The router reads every outcome from the tracker and hands it to
whoever asked for it: a ``Handle`` from ``submit``, a ``wait``, or a ``map``
stream. Wiring, in the order things happen for one request::

    dispatcher.submit*  ──expect(id, deadline)──►  tracker.expect      (before the first send)
           │ 202
           ▼
    client registers a slot, then tracker.track(submission)           (so no outcome is missed)
           ...
    tracker outcome ──► router ──► slot (handle / wait / map) ──► dispatcher.complete(submission)

``dispatcher.complete`` gives back the ``max_pending`` token the submission
held. For ``map`` it is called when the consumer *takes* the outcome, so a slow
consumer slows submission instead of growing a buffer: memory stays O(limits).
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter, OrderedDict, deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Mapping,
)
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias

import anyio
from anyio.abc import TaskGroup

from ._body_patch import ensure_body_member
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
)
from ._dispatch import Dispatcher, DispatcherStatistics, runtime_client_config
from ._exceptions import ConfigError, unwrap_task_errors
from ._models import InferenceRequest, Outcome, Rejected, Submission
from ._payload import validate_endpoint_name
from ._tracking import Tracker, TrackerStatistics, open_tracker

__all__ = ["Client", "ClientStatistics", "Handle", "RunReport", "open_client"]

Acknowledge: TypeAlias = Literal["auto", "manual"]

_FETCH_CONCURRENCY = 16
_RECENT = 1_000


# -- reports ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RunReport:
    """What one ``run`` (or ``fanout run``) did. Times are seconds.

    ``p50``/``p95``/``p99`` are times from the first attempt to the outcome of the
    requests that were accepted, within 1 %; ``None`` when there were none.
    """

    succeeded: int = 0
    failed: int = 0
    expired: int = 0
    rejected: int = 0
    inline: int = 0
    s3: int = 0
    retries: int = 0
    """Attempts beyond the first, over every request."""
    resends: int = 0
    """Requests sent again under the same inference id after an attempt that may have reached the
    endpoint without an answer: the endpoint may have run them twice (their outcome is reported once)."""
    in_doubt: int = 0
    """Requests tracked without a 202 because they may have been accepted."""
    throttles: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    api_calls: Mapping[str, int] = field(default_factory=dict)
    """Calls made, by ``service.Operation`` (for example ``sagemaker-runtime.InvokeEndpointAsync``)."""
    elapsed: float = 0.0

    @property
    def total(self) -> int:
        return self.succeeded + self.failed + self.expired + self.rejected

    @property
    def ok(self) -> bool:
        """Whether every request succeeded."""
        return self.total == self.succeeded

    @property
    def by_status(self) -> dict[str, int]:
        return {
            "succeeded": self.succeeded,
            "failed": self.failed,
            "expired": self.expired,
            "rejected": self.rejected,
        }

    @property
    def throughput(self) -> float:
        """Outcomes per second over the whole run."""
        return self.total / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            **self.by_status,
            "inline": self.inline,
            "s3": self.s3,
            "retries": self.retries,
            "resends": self.resends,
            "in_doubt": self.in_doubt,
            "throttles": self.throttles,
            "p50": self.p50,
            "p95": self.p95,
            "p99": self.p99,
            "api_calls": dict(self.api_calls),
            "elapsed": self.elapsed,
            "throughput": self.throughput,
        }


class _Latencies:
    """Streaming percentiles in O(1) memory: log-spaced buckets 1 % wide."""

    _BASE = math.log(1.01)

    def __init__(self) -> None:
        self._buckets: Counter[int] = Counter()
        self._count = 0

    def add(self, seconds: float) -> None:
        self._buckets[math.floor(math.log(max(seconds, 1e-6)) / self._BASE)] += 1
        self._count += 1

    def percentile(self, q: float) -> float | None:
        if not self._count:
            return None
        rank = max(1, math.ceil(q * self._count))
        seen = 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen >= rank:
                return float(math.exp((bucket + 0.5) * self._BASE))
        raise AssertionError("unreachable: the ranks add up to the count")  # pragma: no cover


class ReportBuilder:
    """Accumulates outcomes into a ``RunReport``; the CLI and ``Client.run`` share it."""

    def __init__(self, client: Client, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._clock = clock
        self._started = clock()
        self._status: Counter[str] = Counter()
        self._routes: Counter[str] = Counter()
        self._retries = 0
        self._latencies = _Latencies()
        before = client.statistics()
        self._throttles_before = before.dispatcher.throttles
        self._resends_before = before.dispatcher.resends
        self._in_doubt_before = before.dispatcher.in_doubt
        self._api_before = Counter(before.api_calls)
        self.extra_resends = 0
        """Re-sends the caller made itself (``fanout run`` re-sends requests in doubt on resume)."""

    def add(self, outcome: Outcome) -> None:
        self._status[outcome.status] += 1
        self._retries += max(outcome.attempts - 1, 0)
        if isinstance(outcome, Rejected):
            return
        if outcome.route is not None:
            self._routes[outcome.route] += 1
        if outcome.submitted_at is not None and outcome.completed_at:
            self._latencies.add(outcome.completed_at - outcome.submitted_at)

    def build(self) -> RunReport:
        now = self._client.statistics()
        api_calls = Counter(now.api_calls)
        api_calls.subtract(self._api_before)
        return RunReport(
            succeeded=self._status["succeeded"],
            failed=self._status["failed"],
            expired=self._status["expired"],
            rejected=self._status["rejected"],
            inline=self._routes["inline"],
            s3=self._routes["s3"],
            retries=self._retries,
            resends=now.dispatcher.resends - self._resends_before + self.extra_resends,
            in_doubt=now.dispatcher.in_doubt - self._in_doubt_before,
            throttles=now.dispatcher.throttles - self._throttles_before,
            p50=self._latencies.percentile(0.50),
            p95=self._latencies.percentile(0.95),
            p99=self._latencies.percentile(0.99),
            api_calls={name: count for name, count in sorted(api_calls.items()) if count > 0},
            elapsed=self._clock() - self._started,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientStatistics:
    """A snapshot of a running client."""

    dispatcher: DispatcherStatistics
    tracker: TrackerStatistics
    outstanding: int
    """Accepted inferences whose outcome has not reached the client yet."""
    completed: Mapping[str, int]
    """Outcomes the client has routed, by status (rejections included)."""
    api_calls: Mapping[str, int]
    """AWS API calls made by the client's aiobotocore clients, by ``service.Operation``."""


# -- handles and the router -------------------------------------------------------------------------


class _Slot:
    """Where the outcome of one accepted inference goes."""

    __slots__ = ("event", "outcome", "owned", "sink", "submission")

    def __init__(self, submission: Submission | None, *, owned: bool, sink: _Sink | None = None) -> None:
        self.submission = submission
        self.owned = owned
        """Whether this client's dispatcher holds a max_pending token for it."""
        self.sink = sink
        self.event = anyio.Event()
        self.outcome: Outcome | None = None

    def resolve(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.event.set()


class Handle:
    """One submitted request. ``await handle`` returns its ``Outcome``.

    A request that was rejected before it was accepted has a handle that is
    already done.
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


class _Sink:
    """The buffer between the router (and one map's feeder) and that map's consumer.

    Outcomes of accepted inferences are appended without waiting: each still
    holds a max_pending token until the consumer takes it, so there are never
    more than ``max_pending`` of them. Rejections hold no token, so the feeder
    waits for room before adding one.
    """

    def __init__(self, capacity: int) -> None:
        self._items: deque[tuple[Outcome, _Slot | None]] = deque()
        self._capacity = capacity
        self.outstanding = 0
        self.feeding = True
        self.error: BaseException | None = None
        self.closed = False
        self._changed = anyio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def push(self, outcome: Outcome, slot: _Slot | None) -> None:
        self._items.append((outcome, slot))
        self._notify()

    async def push_rejected(self, rejected: Rejected) -> None:
        while len(self._items) >= self._capacity and not self.closed:
            await self._changed.wait()
        if not self.closed:
            self.push(rejected, None)

    def finish(self, error: BaseException | None = None) -> None:
        self.feeding = False
        if error is not None and self.error is None:
            self.error = error
        self._notify()

    def delivered(self) -> None:
        self.outstanding -= 1
        self._notify()

    async def next(self) -> tuple[Outcome, _Slot | None] | None:
        while True:
            if self.error is not None:
                raise self.error
            if self._items:
                item = self._items.popleft()
                self._notify()
                return item
            if not self.feeding and self.outstanding == 0:
                return None
            await self._changed.wait()


class _Observer(Protocol):
    """Hooks the batch runner uses to journal each request's progress."""

    def expecting(self, inference_id: str, deadline: float) -> None: ...

    def unsent(self, inference_id: str) -> None:
        """An expected request provably never reached the endpoint and will not be sent now."""

    def accepted(self, submission: Submission) -> None: ...


class Client:
    """A running fanout client; make it with ``open_client``."""

    def __init__(
        self,
        *,
        dispatcher: Dispatcher,
        tracker: Tracker,
        task_group: TaskGroup,
        limits: Limits,
        api_calls: Counter[str],
        acknowledge: Acknowledge = "auto",
    ) -> None:
        self._dispatcher = dispatcher
        self._tracker = tracker
        self._tg = task_group
        self._limits = limits
        self._api_calls = api_calls
        self._auto_acknowledge = acknowledge == "auto"
        self._slots: dict[str, _Slot] = {}
        self._recent: OrderedDict[str, Outcome] = OrderedDict()
        self._completed: Counter[str] = Counter()
        self._observer: _Observer | None = None

    @property
    def endpoint_name(self) -> str:
        return self._dispatcher.endpoint_name

    # -- public ------------------------------------------------------------------------------------

    async def submit(self, request: InferenceRequest) -> Handle:
        """Submit one request; returns once the endpoint accepted it (or it was rejected).

        Waits on the limits first. Run-level problems (a missing endpoint,
        credentials) raise; a bad request comes back as a done handle whose
        outcome is ``Rejected``.
        """
        result = await self._dispatcher.submit(request)
        if isinstance(result, Rejected):
            slot = _Slot(None, owned=False)
            self._completed[result.status] += 1
            slot.resolve(result)
            return Handle(slot)
        return Handle(self._register(result, owned=True))

    def track(self, submission: Submission) -> Handle:
        """Follow an inference accepted earlier (say, by a process that has since stopped)."""
        return Handle(self._follow(submission))

    async def wait(self, inference_id: str) -> Outcome:
        """The outcome of an inference this client submitted or tracks.

        Raises ``KeyError`` for an inference id it does not know.
        """
        slot = self._slots.get(inference_id)
        if slot is not None:
            return await Handle(slot).wait()
        recent = self._recent.get(inference_id)
        if recent is not None:
            return recent
        raise KeyError(f"inference {inference_id!r} was not submitted or tracked by this client")

    def map(
        self, requests: Iterable[InferenceRequest] | AsyncIterable[InferenceRequest]
    ) -> AsyncGenerator[Outcome, None]:
        """Submit every request and yield each outcome as it arrives (completion order).

        ``requests`` is read lazily and memory stays O(limits) whatever its
        length. Leaving the loop early stops submitting once the iterator is
        closed: wrap it in ``contextlib.aclosing`` to close it at once. A
        run-level problem raises from the iteration.
        """
        return self._map(requests)

    async def run(self, requests: Iterable[InferenceRequest] | AsyncIterable[InferenceRequest]) -> RunReport:
        """Submit every request, wait for every outcome, and report on the run."""
        report = ReportBuilder(self)
        async with aclosing(self._map(requests)) as outcomes:
            async for outcome in outcomes:
                report.add(outcome)
        return report.build()

    def acknowledge(self, *outcomes: Outcome) -> None:
        """Say that these outcomes are stored safely, so their notifications may leave the queue.

        Needed only with ``acknowledge="manual"``: then a notification is deleted from SQS only
        once its outcome is acknowledged, and one never acknowledged (the process died first) is
        delivered again to the next run. With ``"auto"`` an outcome is acknowledged when it is
        handed to you, and this does nothing.
        """
        for outcome in outcomes:
            if outcome.inference_id is not None:
                self._tracker.acknowledge(outcome.inference_id)

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(
            dispatcher=self._dispatcher.statistics(),
            tracker=self._tracker.statistics(),
            outstanding=len(self._slots),
            completed=dict(self._completed),
            api_calls=dict(self._api_calls),
        )

    # -- internals -----------------------------------------------------------------------------------

    def _register(self, submission: Submission, *, owned: bool, sink: _Sink | None = None) -> _Slot:
        slot = _Slot(submission, owned=owned, sink=sink)
        self._slots[submission.inference_id] = slot
        if sink is not None:
            sink.outstanding += 1
        # After the slot exists: the tracker may deliver a held notification at once.
        self._tracker.track(submission)
        return slot

    def _follow(self, submission: Submission, sink: _Sink | None = None) -> _Slot:
        """Track an inference accepted earlier, without a max_pending token."""
        self._tracker.expect(submission.inference_id, submission.deadline)
        return self._register(submission, owned=False, sink=sink)

    def _expect(self, inference_id: str, deadline: float) -> None:
        if self._observer is not None:
            self._observer.expecting(inference_id, deadline)
        self._tracker.expect(inference_id, deadline)

    def _forget(self, inference_id: str, sent: bool) -> None:
        self._tracker.forget(inference_id)
        if not sent and self._observer is not None:
            self._observer.unsent(inference_id)

    async def _route(self) -> None:
        async for outcome in self._tracker:
            slot = self._slots.pop(outcome.inference_id or "", None)
            if slot is None:
                self._acknowledge_handed_over(outcome)
                continue
            self._completed[outcome.status] += 1
            slot.resolve(outcome)
            sink = slot.sink
            if sink is not None and not sink.closed:
                sink.push(outcome, slot)
                continue
            if sink is not None:
                # Its map was left: nobody takes it, so it stays unacknowledged (and is redelivered).
                sink.delivered()
                await self._complete(slot, handed_over=False)
                continue
            self._remember(outcome)
            await self._complete(slot)

    def _remember(self, outcome: Outcome) -> None:
        if outcome.inference_id is None:
            return
        self._recent[outcome.inference_id] = outcome
        if len(self._recent) > _RECENT:
            self._recent.popitem(last=False)

    def _acknowledge_handed_over(self, outcome: Outcome) -> None:
        if self._auto_acknowledge and outcome.inference_id is not None:
            self._tracker.acknowledge(outcome.inference_id)

    async def _complete(self, slot: _Slot, *, handed_over: bool = True) -> None:
        """The outcome was handed over (or never will be): acknowledge it unless manual, and give
        back its token."""
        if slot.outcome is not None and handed_over:
            self._acknowledge_handed_over(slot.outcome)
        submission = slot.submission
        if not slot.owned or submission is None:
            return
        if submission.staged:
            # Deleting the staged input is an S3 call; the router must not wait for it.
            self._tg.start_soon(self._dispatcher.complete, submission)
        else:
            await self._dispatcher.complete(submission)

    async def _map(
        self,
        requests: Iterable[InferenceRequest] | AsyncIterable[InferenceRequest],
        *,
        resume: Iterable[Submission] = (),
        fed: anyio.Event | None = None,
    ) -> AsyncGenerator[Outcome, None]:
        """``map``, plus submissions to follow (``resume``) and an event set once every request
        has been accepted or rejected (``fed``)."""
        sink = _Sink(self._limits.max_pending)
        for submission in resume:
            self._follow(submission, sink)
        scope = anyio.CancelScope()
        self._tg.start_soon(self._feed, requests, sink, scope, fed)
        try:
            while (item := await sink.next()) is not None:
                outcome, slot = item
                if slot is not None:
                    sink.delivered()
                    await self._complete(slot)
                yield outcome
        finally:
            scope.cancel()
            sink.closed = True
            # Outcomes nobody will read still hold tokens; give them back.
            while sink._items:
                _, leftover = sink._items.popleft()
                if leftover is not None:
                    sink.delivered()
                    await self._complete(leftover, handed_over=False)

    async def _feed(
        self,
        requests: Iterable[InferenceRequest] | AsyncIterable[InferenceRequest],
        sink: _Sink,
        scope: anyio.CancelScope,
        fed: anyio.Event | None,
    ) -> None:
        error: BaseException | None = None
        with scope:
            try:
                async with self._dispatcher.submit_all(requests) as results:
                    async for result in results:
                        if isinstance(result, Rejected):
                            self._completed[result.status] += 1
                            await sink.push_rejected(result)
                            continue
                        if self._observer is not None:
                            self._observer.accepted(result)
                        self._register(result, owned=True, sink=sink)
            except Exception as exc:
                error = exc
        sink.finish(error)
        if fed is not None:
            fed.set()


# -- opening ----------------------------------------------------------------------------------------


def _botocore_session(session: Any) -> Any:
    if session is None:
        from aiobotocore.session import get_session

        return get_session()
    return session


def _default_region(session: Any) -> str | None:
    """``AWS_REGION`` when the session has no region of its own: botocore reads only
    ``AWS_DEFAULT_REGION`` and profiles, while the other AWS SDKs read ``AWS_REGION``."""
    inner = getattr(session, "_session", session)
    try:
        configured = inner.get_config_variable("region")
    except Exception:
        configured = None
    if configured:
        return None
    return os.environ.get("AWS_REGION") or None


def _make_client(session: Any, service: str, config: Any) -> Any:
    # aiobotocore sessions have create_client; aioboto3 Sessions have client. Both are async CMs.
    kwargs: dict[str, Any] = {"config": config}
    region = _default_region(session)
    if region is not None:
        kwargs["region_name"] = region
    if hasattr(session, "create_client"):
        return session.create_client(service, **kwargs)
    if hasattr(session, "client"):
        return session.client(service, **kwargs)
    raise ConfigError(f"session must be an aiobotocore session or an aioboto3 Session, got {session!r}")


def _parts(tracking: Tracking) -> tuple[SqsTracking | None, S3Tracking | None]:
    """The SQS and the S3 part of ``tracking`` (a hybrid always has both)."""
    if isinstance(tracking, HybridTracking):
        return tracking.sqs, tracking.s3
    if isinstance(tracking, SqsTracking):
        return tracking, None
    return None, tracking


def _count_calls(client: Any, counter: Counter[str]) -> None:
    def before_call(event_name: str, **_: Any) -> None:
        # event_name is "before-call.<service>.<Operation>"
        counter[event_name.partition(".")[2]] += 1

    client.meta.events.register("before-call", before_call)


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
    acknowledge: Acknowledge = "auto",
) -> AsyncIterator[Client]:
    """Open a client for the async endpoint ``endpoint_name``.

    ``tracking`` says how outcomes are found: ``SqsTracking`` (SNS notifications
    in an SQS queue), ``S3Tracking`` (polling the output objects) or
    ``HybridTracking``. ``payload`` routes bodies inline (at most 128,000 bytes),
    through S3 (``staging`` says where) or ``"auto"`` by size. ``fetch`` downloads
    each result. ``session`` is an aiobotocore session or an aioboto3 ``Session``;
    by default a new aiobotocore session reads the standard AWS configuration.
    ``acknowledge="manual"`` keeps each notification on the queue until
    ``client.acknowledge(outcome)``, for callers that store outcomes durably.

    Checks before it returns: the queue exists, the staging bucket exists, and
    there are credentials (``QueueNotFound``, ``BucketNotFound``,
    ``CredentialsError``). Leaving the block cancels what is still in progress.
    """
    async with _open(
        endpoint_name=endpoint_name,
        tracking=tracking,
        limits=limits,
        retry=retry,
        payload=payload,
        staging=staging,
        fetch=fetch,
        session=session,
        acknowledge=acknowledge,
    ) as client:
        yield client


@asynccontextmanager
async def _open(
    *,
    endpoint_name: str,
    tracking: Tracking,
    limits: Limits,
    retry: RetryPolicy,
    payload: PayloadMode,
    staging: Staging | None,
    fetch: bool,
    session: Any,
    observer: _Observer | None = None,
    acknowledge: Acknowledge = "auto",
) -> AsyncIterator[Client]:
    from aiobotocore.config import AioConfig
    from botocore.exceptions import NoRegionError

    validate_endpoint_name(endpoint_name)
    if not isinstance(tracking, SqsTracking | S3Tracking | HybridTracking):
        raise ConfigError(f"tracking must be SqsTracking, S3Tracking or HybridTracking, got {tracking!r}")
    if payload == "s3" and staging is None:
        raise ConfigError("payload='s3' needs staging=Staging(location='s3://bucket/prefix')")
    session = _botocore_session(session)
    ensure_body_member(session)
    sqs_tracking, s3_tracking = _parts(tracking)
    uses_s3 = staging is not None or s3_tracking is not None or fetch
    grace_period = next(part.grace_period for part in (sqs_tracking, s3_tracking) if part is not None)
    api_calls: Counter[str] = Counter()

    async with AsyncExitStack() as stack:
        try:
            runtime = await stack.enter_async_context(
                _make_client(session, "sagemaker-runtime", runtime_client_config(limits))
            )
            _count_calls(runtime, api_calls)
            s3 = sqs = None
            if uses_s3:
                pool = _FETCH_CONCURRENCY + 4
                pool += staging.max_concurrency if staging is not None else 0
                pool += s3_tracking.max_concurrency if s3_tracking is not None else 0
                s3 = await stack.enter_async_context(
                    _make_client(session, "s3", AioConfig(max_pool_connections=pool))
                )
                _count_calls(s3, api_calls)
            if sqs_tracking is not None:
                pool = sqs_tracking.receivers + 8
                sqs = await stack.enter_async_context(
                    _make_client(session, "sqs", AioConfig(max_pool_connections=pool))
                )
                _count_calls(sqs, api_calls)
        except NoRegionError as exc:
            raise ConfigError(
                "no AWS region is configured: set AWS_REGION (or AWS_DEFAULT_REGION, or a profile's region)"
            ) from exc

        holder: list[Client] = []

        def expect(inference_id: str, deadline: float) -> None:
            holder[0]._expect(inference_id, deadline)

        def forget(inference_id: str, sent: bool) -> None:
            holder[0]._forget(inference_id, sent)

        dispatcher = Dispatcher(
            endpoint_name=endpoint_name,
            runtime=runtime,
            s3=s3,
            limits=limits,
            retry=retry,
            payload=payload,
            staging=staging,
            expect=expect,
            forget=forget,
            grace_period=grace_period,
        )
        await dispatcher.check()
        tracker = await stack.enter_async_context(
            open_tracker(
                tracking=tracking,
                sqs=sqs,
                s3=s3,
                fetch=fetch,
                fetch_concurrency=_FETCH_CONCURRENCY,
                max_pending=limits.max_pending,
            )
        )
        error: Exception | None = None
        with unwrap_task_errors():
            async with anyio.create_task_group() as tg:
                client = Client(
                    dispatcher=dispatcher,
                    tracker=tracker,
                    task_group=tg,
                    limits=limits,
                    api_calls=api_calls,
                    acknowledge=acknowledge,
                )
                client._observer = observer
                holder.append(client)
                tg.start_soon(client._route)
                try:
                    yield client
                except Exception as exc:
                    # Raised after the task group, so the caller sees it unwrapped.
                    error = exc
                finally:
                    tg.cancel_scope.cancel()
        if error is not None:
            raise error
