"""The Dispatcher: waits on the limits, then validates, routes, stages, registers and invokes.

Order of work for one request, and why:

1. read the next request, take a ``max_pending`` token, check the request locally, and
   take an in-flight permit from the ``AdaptiveLimiter`` -- all *before* a task
   is spawned, so live tasks never outnumber the limits whatever the input size;
2. route the payload (inline, or staged to S3 under a uuid4 key);
3. ``expect(inference_id, deadline)``: register before the first send, because
   a notification can arrive before the 202 does;
4. invoke, retrying throttles and transient errors with the *same* inference id
   (botocore's own retries are off, see ``runtime_client_config``);
5. on a 202 the pending token stays taken until ``complete()``; on a final
   rejection it is released at once and ``forget(inference_id)`` is called.

A bad request becomes a ``Rejected`` value and never stops the others. Only
run-level problems raise: ``EndpointNotFound`` (the service's "Endpoint X of
account Y not found." ``ValidationError``), ``CredentialsError``,
``ServiceUnreachable`` (retries ran out on connection errors) and
``BucketNotFound`` for the staging bucket.

Clients: the Dispatcher takes a ready sagemaker-runtime client and never makes
one. Make it with ``open_runtime_client`` (an aiobotocore session, an aioboto3
``Session`` or nothing), or yourself with ``config=runtime_client_config(limits)``
so that botocore does not retry and the connection pool matches ``max_in_flight``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
)
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from tenacity import RetryCallState

from ._body_patch import ensure_body_member
from ._config import (
    DEFAULT_LIMITS,
    DEFAULT_RETRY,
    Limits,
    PayloadMode,
    RetryPolicy,
    Staging,
    inference_deadline,
)
from ._exceptions import ConfigError, FanoutError, map_aws_errors
from ._models import InferenceRequest, Rejected, Route, Submission
from ._payload import (
    Invalid,
    Stager,
    choose_route,
    invoke_arguments,
    validate_endpoint_name,
    validate_request,
)
from ._retry import (
    AdaptiveLimiter,
    Permit,
    Signal,
    classify,
    delivery_of,
    describe,
    retrying,
    signal_of,
)

__all__ = [
    "Dispatcher",
    "DispatcherStatistics",
    "open_runtime_client",
    "runtime_client_config",
]

_PAYLOAD_MODES = ("auto", "inline", "s3")


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatcherStatistics:
    """A snapshot of a Dispatcher."""

    in_flight: int
    """Invoke calls on the wire now."""
    pending: int
    """``max_pending`` tokens taken: requests being submitted plus accepted ones not yet completed."""
    accepted: int
    """Invokes answered with a 202 (in-doubt requests are not counted here)."""
    rejected: int
    resends: int = 0
    """Attempts sent again under the same inference id after an attempt that may have reached the
    endpoint without an answer: the endpoint may run such a request twice."""
    in_doubt: int = 0
    """Requests tracked without a 202, because they may have been accepted (see ``Submission.in_doubt``)."""
    retries_by_class: Mapping[str, int] = field(default_factory=dict)
    """Retries made, by error class: ``throttle`` and ``transient``."""
    throttles: int
    """Throttled responses seen, including ones that were not retried."""
    current_limit: int
    """The concurrency the adaptive controller allows now."""
    current_rate: float | None = None
    """The send rate it allows now (requests per second), or ``None`` when unpaced."""
    inline: int
    s3: int
    staged: int = 0
    waiting: int = 0
    """Tasks waiting for an in-flight permit."""


def runtime_client_config(limits: Limits = DEFAULT_LIMITS, **overrides: Any) -> Any:
    """The ``AioConfig`` a sagemaker-runtime client for fanout needs.

    botocore's retries are off (``total_max_attempts=1``) because fanout retries
    itself; both would multiply. The connection pool is as large as
    ``max_in_flight``, so no call waits for a connection invisibly.
    """
    from aiobotocore.config import AioConfig

    options: dict[str, Any] = {
        "retries": {"total_max_attempts": 1, "mode": "standard"},
        "max_pool_connections": limits.max_in_flight,
    }
    options.update(overrides)
    return AioConfig(**options)


@asynccontextmanager
async def open_runtime_client(
    session: Any = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
    region_name: str | None = None,
    endpoint_url: str | None = None,
) -> AsyncIterator[Any]:
    """A sagemaker-runtime client configured for fanout, from whatever session the caller has.

    ``session`` is ``None`` (a new aiobotocore session, standard AWS chain), an
    aiobotocore ``AioSession`` or an aioboto3 ``Session``. The ``Body`` model
    patch is applied first, so this works on an aioboto3 whose botocore predates
    inline payloads.
    """
    if session is None:
        from aiobotocore.session import get_session

        session = get_session()
    ensure_body_member(session)
    config = runtime_client_config(limits)
    kwargs: dict[str, Any] = {"config": config}
    if region_name is None and not os.environ.get("AWS_DEFAULT_REGION"):
        # botocore reads only AWS_DEFAULT_REGION; AWS_REGION is the cross-SDK name.
        region_name = os.environ.get("AWS_REGION") or None
    if region_name is not None:
        kwargs["region_name"] = region_name
    if endpoint_url is not None:
        kwargs["endpoint_url"] = endpoint_url
    if hasattr(session, "create_client"):
        factory = session.create_client("sagemaker-runtime", **kwargs)
    else:
        factory = session.client("sagemaker-runtime", **kwargs)
    async with factory as client:
        yield client


class _RunFailed(Exception):
    """Carries a run-level error out of a worker without an exception group."""


class _Halted(FanoutError):
    """The run is stopping for a run-level error: no new attempt leaves."""


_HALT_GRACE = 5.0
"""After a run-level error, how long the attempts already on the wire may take to be answered, so
that whether they were accepted is known rather than in doubt."""


class Dispatcher:
    """Submits InvokeEndpointAsync calls within explicit limits. See the module docstring."""

    def __init__(
        self,
        *,
        endpoint_name: str,
        runtime: Any,
        s3: Any | None = None,
        limits: Limits = DEFAULT_LIMITS,
        retry: RetryPolicy = DEFAULT_RETRY,
        payload: PayloadMode = "auto",
        staging: Staging | None = None,
        expect: Callable[[str, float], None] | None = None,
        forget: Callable[[str, bool], None] | None = None,
        grace_period: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        validate_endpoint_name(endpoint_name)
        if payload not in _PAYLOAD_MODES:
            raise ConfigError(f"payload must be one of 'auto', 'inline' or 's3', got {payload!r}")
        if payload == "s3" and staging is None:
            raise ConfigError("payload mode 's3' needs a staging location (s3://bucket/prefix)")
        if staging is not None and s3 is None:
            raise ConfigError("a staging location needs an S3 client (s3=...)")
        if not isinstance(grace_period, int | float) or grace_period < 0:
            raise ConfigError(f"grace_period must be zero or more, got {grace_period!r}")
        self.endpoint_name = endpoint_name
        self._runtime = runtime
        self._limits = limits
        self._retry = retry
        self._mode: PayloadMode = payload
        self._stager = Stager(s3, staging) if staging is not None and s3 is not None else None
        self._delete_after = staging.delete_after if staging is not None else False
        self._expect = expect
        self._forget = forget
        self._grace_period = float(grace_period)
        self._clock = clock
        self._limiter = AdaptiveLimiter(
            limits.max_in_flight, max_per_second=limits.max_per_second, adaptive=retry.adaptive
        )
        self._pending_gate = anyio.Semaphore(limits.max_pending)
        self._halted = False
        self._pending = 0
        self._outstanding: Counter[str] = Counter()
        self._accepted = 0
        self._rejected = 0
        self._resends = 0
        self._in_doubt = 0
        self._throttles = 0
        self._retries: Counter[str] = Counter()
        self._routes: Counter[str] = Counter()

    # ---------------------------------------------------------------- public

    def statistics(self) -> DispatcherStatistics:
        limiter = self._limiter.statistics()
        return DispatcherStatistics(
            in_flight=limiter.in_flight,
            pending=self._pending,
            accepted=self._accepted,
            rejected=self._rejected,
            resends=self._resends,
            in_doubt=self._in_doubt,
            retries_by_class={"throttle": self._retries["throttle"], "transient": self._retries["transient"]},
            throttles=self._throttles,
            current_limit=limiter.limit,
            current_rate=limiter.rate,
            inline=self._routes["inline"],
            s3=self._routes["s3"],
            staged=self._stager.uploads if self._stager is not None else 0,
            waiting=limiter.waiting,
        )

    async def check(self) -> None:
        """Run-level preflight: credentials are present, and the staging bucket exists."""
        signer = getattr(self._runtime, "_request_signer", None)
        if signer is not None and getattr(signer, "_credentials", True) is None:
            from botocore.exceptions import NoCredentialsError

            # The one boundary words the error, as it does when botocore finds out on the first call.
            with map_aws_errors():
                raise NoCredentialsError()
        if self._stager is not None:
            await self._stager.check()

    async def submit(self, request: InferenceRequest) -> Submission | Rejected:
        """Submit one request, waiting on the limits first. Run-level problems raise."""
        await self._take_pending()
        try:
            return await self._process(request, None)
        except _RunFailed as exc:
            raise exc.args[0] from None

    @asynccontextmanager
    async def submit_all(
        self, requests: Iterable[InferenceRequest] | AsyncIterable[InferenceRequest]
    ) -> AsyncIterator[AsyncIterator[Submission | Rejected]]:
        """Submit every request, lazily; yields outcomes in completion order.

        Leaving the block early cancels whatever is still being submitted and
        gives every token back. A run-level error stops the run and is raised
        from the block.
        """
        send, receive = anyio.create_memory_object_stream[Submission | Rejected](self._limits.max_in_flight)
        failures: list[FanoutError] = []
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._feed, requests, tg, send, failures)
                try:
                    yield receive
                finally:
                    tg.cancel_scope.cancel()
                    self._drain(receive)
                    receive.close()
        except BaseExceptionGroup as group:
            if failures:
                raise failures[0] from None
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            self._halted = False
        if failures:
            raise failures[0]

    async def complete(self, submission: Submission) -> None:
        """An accepted inference has its outcome: give back its pending token, delete its staged input."""
        if not self._settle(submission.inference_id):
            return
        self._release_pending()
        if submission.staged and submission.input_location:
            await self._delete_staged(submission.input_location)

    # --------------------------------------------------------------- private

    async def _delete_staged(self, uri: str) -> None:
        """Delete an input fanout staged, when the staging location asks for it."""
        if self._delete_after and self._stager is not None:
            await self._stager.delete(uri)

    async def _take_pending(self) -> None:
        await self._pending_gate.acquire()
        self._pending += 1

    def _release_pending(self) -> None:
        self._pending -= 1
        self._pending_gate.release()

    async def _feed(
        self,
        requests: Iterable[InferenceRequest] | AsyncIterable[InferenceRequest],
        tg: TaskGroup,
        send: MemoryObjectSendStream[Submission | Rejected],
        failures: list[FanoutError],
    ) -> None:
        async with send, aclosing(_source(requests)) as source:
            while not self._halted:
                # Read first, then wait: a source that has ended must not wait for a token.
                try:
                    request = await anext(source)
                except StopAsyncIteration:
                    return
                await self._take_pending()
                invalid = validate_request(request)
                if invalid is not None:
                    await send.send(self._reject(request, invalid.reason))
                    continue
                try:
                    permit = await self._limiter.acquire()
                except BaseException:
                    self._release_pending()
                    raise
                tg.start_soon(self._worker, request, permit, send.clone(), tg, failures)

    async def _worker(
        self,
        request: InferenceRequest,
        permit: Permit,
        send: MemoryObjectSendStream[Submission | Rejected],
        tg: TaskGroup,
        failures: list[FanoutError],
    ) -> None:
        async with send:
            try:
                outcome = await self._process(request, permit, checked=True)
            except _RunFailed as exc:
                failures.append(exc.args[0])
                await self._halt()
                tg.cancel_scope.cancel()
                return
            try:
                await send.send(outcome)
            except BaseException:
                if isinstance(outcome, Submission):
                    # Nobody will ever see this submission, so nobody would complete it.
                    self._abandon(outcome)
                raise

    async def _halt(self) -> None:
        """Stop sending, and give the attempts on the wire a moment to be answered."""
        self._halted = True
        with anyio.move_on_after(_HALT_GRACE):
            while self._limiter.in_flight:
                await anyio.sleep(0.01)

    def _settle(self, inference_id: str) -> bool:
        """Forget one accepted submission; false when it was never accepted or already settled."""
        count = self._outstanding.get(inference_id, 0)
        if count <= 0:
            return False
        if count == 1:
            del self._outstanding[inference_id]
        else:
            self._outstanding[inference_id] = count - 1
        return True

    def _drain(self, receive: MemoryObjectReceiveStream[Submission | Rejected]) -> None:
        """Abandon the submissions left unread in the stream when the caller leaves early."""
        while True:
            try:
                outcome = receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return
            if isinstance(outcome, Submission):
                self._abandon(outcome)

    def _abandon(self, submission: Submission) -> None:
        if not self._settle(submission.inference_id):
            return
        self._release_pending()
        if self._forget is not None:
            self._forget(submission.inference_id, True)

    def _reject(
        self,
        request: InferenceRequest,
        reason: str,
        *,
        inference_id: str | None = None,
        route: Route | None = None,
        error: BaseException | None = None,
        attempts: int = 0,
        submitted_at: float | None = None,
    ) -> Rejected:
        """Count a rejection and give back its pending token."""
        self._rejected += 1
        self._release_pending()
        return Rejected(
            reason=reason,
            inference_id=inference_id or request.inference_id,
            id=request.id,
            route=route,
            error=error,
            attempts=attempts,
            submitted_at=submitted_at,
            completed_at=self._clock(),
        )

    async def _process(
        self, request: InferenceRequest, permit: Permit | None, *, checked: bool = False
    ) -> Submission | Rejected:
        """Route, stage, register and invoke one request that holds a pending token.

        Every path gives the token back except acceptance. ``_RunFailed`` wraps a
        run-level error. The permit, when given, is released on every path.
        """
        accepted = False
        try:
            if not checked:
                invalid = validate_request(request)
                if invalid is not None:
                    return self._reject(request, invalid.reason)
            submitted_at = self._clock()
            inference_id = request.inference_id or str(uuid.uuid4())
            body: bytes | None = None
            input_location = request.input_location
            route: Route = "s3"
            if input_location is None:
                loaded = await self._load_body(request)
                if isinstance(loaded, Invalid):
                    return self._reject(request, loaded.reason, inference_id=inference_id)
                chosen = choose_route(self._mode, len(loaded), staging=self._stager is not None)
                if isinstance(chosen, Invalid):
                    return self._reject(request, chosen.reason, inference_id=inference_id)
                route = chosen
                if route == "inline":
                    body = loaded
                else:
                    if permit is not None:
                        # Uploading is not an invoke: do not hold an invoke slot meanwhile.
                        self._limiter.release(permit)
                        permit = None
                    staged = await self._stage(request, loaded, inference_id, submitted_at)
                    if isinstance(staged, Rejected):
                        return staged
                    input_location = staged
            staged_input = input_location if request.input_location is None else None
            arguments = invoke_arguments(
                self.endpoint_name,
                request,
                inference_id=inference_id,
                body=body,
                input_location=input_location,
            )
            if self._expect is not None:
                self._expect(inference_id, self._deadline(request, submitted_at))
            fate = _Fate()
            try:
                response = await self._invoke(arguments, permit, fate)
            except _Attempted as failure:
                exc = failure.args[0]
                if self._is_run_level(exc):
                    if self._forget is not None:
                        self._forget(inference_id, fate.unanswered)
                    self._raise_run_level(exc)
                if fate.unanswered:
                    # It may have been accepted: track it rather than call it rejected.
                    accepted = True
                    return self._in_doubt_submission(
                        request, inference_id, route, input_location, staged_input, submitted_at, fate
                    )
                if self._forget is not None:
                    self._forget(inference_id, False)
                if staged_input is not None:
                    await self._delete_staged(staged_input)
                return self._reject(
                    request,
                    describe(exc),
                    inference_id=inference_id,
                    route=route,
                    error=exc,
                    attempts=fate.attempts,
                    submitted_at=submitted_at,
                )
            except BaseException:
                if self._forget is not None:
                    # Cancelled mid-invoke: the caller will never hold a Submission to track.
                    self._forget(inference_id, fate.unanswered)
                raise
            finally:
                permit = None
            accepted = True
            accepted_at = self._clock()
            self._accepted += 1
            self._routes[route] += 1
            self._outstanding[inference_id] += 1
            return Submission(
                inference_id=inference_id,
                id=request.id,
                route=route,
                input_location=input_location,
                output_location=response.get("OutputLocation"),
                failure_location=response.get("FailureLocation"),
                attempts=fate.attempts,
                submitted_at=submitted_at,
                accepted_at=accepted_at,
                deadline=self._deadline(request, accepted_at),
                staged=staged_input is not None,
            )
        except BaseException:
            if not accepted:
                self._release_pending()
            raise
        finally:
            if permit is not None:
                self._limiter.release(permit)

    def _in_doubt_submission(
        self,
        request: InferenceRequest,
        inference_id: str,
        route: Route,
        input_location: str | None,
        staged_input: str | None,
        submitted_at: float,
        fate: _Fate,
    ) -> Submission:
        now = self._clock()
        self._in_doubt += 1
        self._routes[route] += 1
        self._outstanding[inference_id] += 1
        return Submission(
            inference_id=inference_id,
            id=request.id,
            route=route,
            input_location=input_location,
            output_location=None,
            failure_location=None,
            attempts=fate.attempts,
            submitted_at=submitted_at,
            accepted_at=now,
            deadline=now + self._retry.in_doubt_wait,
            staged=staged_input is not None,
            in_doubt=True,
        )

    def _deadline(self, request: InferenceRequest, since: float) -> float:
        return inference_deadline(
            since,
            request_ttl_seconds=request.request_ttl_seconds,
            invocation_timeout_seconds=request.invocation_timeout_seconds,
            grace_period=self._grace_period,
        )

    async def _load_body(self, request: InferenceRequest) -> bytes | Invalid:
        if request.body is not None:
            return bytes(request.body)
        assert request.body_path is not None
        try:
            return await anyio.Path(request.body_path).read_bytes()
        except OSError as exc:
            return Invalid(f"cannot read body_path {str(request.body_path)!r}: {exc}")

    async def _stage(
        self, request: InferenceRequest, body: bytes, inference_id: str, submitted_at: float
    ) -> str | Rejected:
        assert self._stager is not None
        try:
            return await self._stager.upload(body, content_type=request.content_type)
        except FanoutError as exc:
            raise _RunFailed(exc) from exc
        except Exception as exc:
            return self._reject(
                request,
                f"staging the payload in S3 failed: {describe(exc)}",
                inference_id=inference_id,
                route="s3",
                error=exc,
                submitted_at=submitted_at,
            )

    async def _invoke(self, arguments: dict[str, Any], permit: Permit | None, fate: _Fate) -> dict[str, Any]:
        """Invoke with retries. Raises ``_Attempted(last error)`` when it gives up.

        The first attempt runs outside tenacity: most requests succeed at once, and building a
        retry controller per request costs as much CPU as a tenth of the invoke itself. Only a
        failed first attempt builds one, and replays that failure into it, so the waits, the
        stop conditions and the retry counts are exactly tenacity's.
        """
        try:
            return await self._attempt(arguments, permit, fate)
        except Exception as exc:
            first: Exception | None = exc
        try:
            async for attempt in retrying(self._retry, before_sleep=self._count_retry):
                with attempt:
                    if first is not None:
                        replay, first = first, None
                        raise replay
                    return await self._attempt(arguments, None, fate)
        except Exception as exc:
            raise _Attempted(exc) from exc
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    async def _attempt(self, arguments: dict[str, Any], permit: Permit | None, fate: _Fate) -> dict[str, Any]:
        """One invoke call under a limiter permit, reporting its result to the controller."""
        limiter = self._limiter
        if self._halted:
            if permit is not None:
                limiter.release(permit)
            raise _Halted("the run stopped before this request was sent")
        if permit is None:
            permit = await limiter.acquire()
        signal: Signal = "neutral"
        fate.attempts += 1
        try:
            response: dict[str, Any] = await self._runtime.invoke_endpoint_async(**arguments)
            signal = "success"
            return response
        except Exception as exc:
            signal = signal_of(exc)
            if classify(exc) == "throttle":
                self._throttles += 1
            if delivery_of(exc) == "unknown":
                fate.unanswered = True
            raise
        except BaseException:
            # Cancelled while the request was on the wire: it may have arrived.
            fate.unanswered = True
            raise
        finally:
            limiter.release(permit, signal)

    def _count_retry(self, state: RetryCallState) -> None:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        if exc is not None:
            self._retries[classify(exc)] += 1
            if delivery_of(exc) == "unknown":
                self._resends += 1

    def _is_run_level(self, exc: BaseException) -> bool:
        from botocore import exceptions as bce

        if classify(exc) != "fatal" and not isinstance(exc, bce.EndpointConnectionError):
            return False
        try:
            with map_aws_errors(endpoint_name=self.endpoint_name):
                raise exc
        except FanoutError:
            return True
        except BaseException:
            return False

    def _raise_run_level(self, exc: BaseException) -> NoReturn:
        """Raise a missing endpoint, missing credentials or an unreachable service as a run-level error."""
        try:
            with map_aws_errors(endpoint_name=self.endpoint_name):
                raise exc
        except FanoutError as mapped:
            raise _RunFailed(mapped) from exc


class _Fate:
    """What the attempts of one request tell about it."""

    __slots__ = ("attempts", "unanswered")

    def __init__(self) -> None:
        self.attempts = 0
        self.unanswered = False
        """Some attempt may have reached the endpoint without an answer."""


class _Attempted(Exception):
    """The last error of an invoke that gave up."""


async def _source(
    requests: Iterable[InferenceRequest] | AsyncIterable[InferenceRequest],
) -> AsyncGenerator[InferenceRequest, None]:
    if isinstance(requests, AsyncIterable):
        async for request in requests:
            yield request
    else:
        for request in requests:
            yield request
