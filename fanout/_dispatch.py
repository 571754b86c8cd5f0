"""The Dispatcher: sends InvokeEndpointAsync calls within the limits, and retries them.

For one request, in order:

1. take a ``max_pending`` token, check the request, and take an in-flight permit from the
   ``AdaptiveLimiter``, all *before* a task is spawned, so live tasks never outnumber the limits
   whatever the input size. The token limiter is the caller's (the client owns ``max_pending``):
   every result the dispatcher hands out holds one token, which the caller gives back when it
   hands the outcome over. On every other path the dispatcher gives it back itself;
2. plan (``_payload.plan_request``, pure): validate and route, inline or S3;
3. stage the payload in S3 when it goes that way (without holding an invoke slot meanwhile);
4. ``expect(inference_id, deadline)``: register before the first send, because a notification
   can arrive before the 202 does;
5. invoke under a permit, retrying throttles and transient errors with the *same* inference id
   (botocore's own retries are off, see ``_aws.runtime_client_config``);
6. the result: a ``Submission`` (accepted, or *in doubt* when some attempt may have been accepted
   without an answer), a ``Rejected``, or a run-level error, raised.

A bad request becomes a ``Rejected`` value and never stops the others. Only run-level problems
raise (``_exceptions.run_level_error``): a missing endpoint, missing or rejected credentials, an
unreachable service, a missing staging bucket. Then the dispatcher stops sending and gives the
attempts on the wire a moment to be answered, so that whether each was accepted is known rather
than in doubt, and only then cancels the rest.

The dispatcher never makes an AWS client: it takes a ready sagemaker-runtime client (see
``_aws.open_runtime_client``), and an S3 client when it stages payloads.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream
from tenacity import RetryCallState

from ._config import (
    DEFAULT_LIMITS,
    DEFAULT_RETRY,
    Limits,
    PayloadMode,
    RetryPolicy,
    Staging,
    check_payload_mode,
    inference_deadline,
)
from ._exceptions import ConfigError, FanoutError, map_aws_errors, run_level_error, unwrap_task_errors
from ._models import InferenceRequest, Rejected, Route, Submission
from ._payload import Invalid, Plan, invoke_arguments, plan_request, validate_endpoint_name, validate_request
from ._retry import AdaptiveLimiter, Permit, classify, continue_retrying, delivery_of, describe, signal_of
from ._staging import Stager

__all__ = ["Dispatcher", "DispatcherStatistics"]

log = logging.getLogger("fanout.dispatch")

_HALT_GRACE = 5.0
"""After a run-level error, how long the attempts already on the wire may take to be answered."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatcherStatistics:
    """A snapshot of a Dispatcher."""

    in_flight: int
    """Invoke calls on the wire now."""
    submitting: int = 0
    """Requests taken from the input and not yet accepted or rejected."""
    pending: int
    """``max_pending`` tokens taken: requests being submitted, plus results not yet given back."""
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


class _Halted(Exception):
    """The run is stopping for a run-level error: this attempt was not sent."""


class _Fate:
    """What the attempts of one request tell about it."""

    __slots__ = ("attempts", "unanswered")

    def __init__(self) -> None:
        self.attempts = 0
        self.unanswered = False
        """Some attempt may have reached the endpoint without an answer."""


async def _nothing_to_expect(inference_id: str, deadline: float) -> None:
    return None


def _nothing_to_forget(inference_id: str, sent: bool) -> None:
    return None


def _nothing_accepted(submission: Submission) -> None:
    return None


class Dispatcher:
    """Submits InvokeEndpointAsync calls within explicit limits. See the module docstring.

    ``pending`` is the ``max_pending`` token limiter, owned by the caller (a new one of
    ``limits.max_pending`` tokens when not given). ``expect`` is awaited before a request's first
    send; ``forget(inference_id, sent)`` is called for a request that will not be tracked (``sent``:
    whether it may have reached the endpoint); ``accepted`` for each submission as soon as it exists.
    """

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
        pending: anyio.Semaphore | None = None,
        expect: Callable[[str, float], Awaitable[None]] = _nothing_to_expect,
        forget: Callable[[str, bool], None] = _nothing_to_forget,
        accepted: Callable[[Submission], None] = _nothing_accepted,
        grace_period: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        validate_endpoint_name(endpoint_name)
        check_payload_mode(payload, staging)
        if staging is not None and s3 is None:
            raise ConfigError("a staging location needs an S3 client (s3=...)", field="s3")
        if not isinstance(grace_period, int | float) or grace_period < 0:
            raise ConfigError(f"must be zero or more, got {grace_period!r}", field="grace_period")
        self.endpoint_name = endpoint_name
        self._runtime = runtime
        self._limits = limits
        self._retry = retry
        self._mode: PayloadMode = payload
        self._stager = Stager(s3, staging) if staging is not None and s3 is not None else None
        self._delete_after = staging.delete_after if staging is not None else False
        self._pending = pending or anyio.Semaphore(limits.max_pending, max_value=limits.max_pending)
        self._expect = expect
        self._forget = forget
        self._accepted_hook = accepted
        self._grace_period = float(grace_period)
        self._clock = clock
        self._limiter = AdaptiveLimiter(
            limits.max_in_flight, max_per_second=limits.max_per_second, adaptive=retry.adaptive
        )
        self._halted = False
        self._submitting = 0
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
            submitting=self._submitting,
            pending=self._limits.max_pending - self._pending.value,
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
        client = getattr(self._runtime, "client", self._runtime)  # the fast path wraps the client
        signer = getattr(client, "_request_signer", None)
        if signer is not None and getattr(signer, "_credentials", True) is None:
            from botocore.exceptions import NoCredentialsError

            # The one boundary words the error, as it does when botocore finds out on the first call.
            with map_aws_errors():
                raise NoCredentialsError()
        if self._stager is not None:
            await self._stager.check()

    async def submit(self, request: InferenceRequest) -> Submission | Rejected:
        """Submit one request, waiting on the limits first. The result holds a ``max_pending``
        token. Run-level problems raise."""
        await self._pending.acquire()
        self._submitting += 1
        try:
            return await self._send(request, None)
        except _Halted as exc:  # pragma: no cover - a single submit is never halted
            raise AssertionError("halted outside submit_all") from exc
        finally:
            self._submitting -= 1

    @asynccontextmanager
    async def submit_all(
        self, requests: Iterable[InferenceRequest] | AsyncIterable[InferenceRequest]
    ) -> AsyncIterator[AsyncIterator[Submission | Rejected]]:
        """Submit every request, lazily; yields the results in completion order, each holding a
        ``max_pending`` token.

        Leaving the block early cancels whatever is still being submitted; results nobody read
        give their tokens back. A run-level error stops the run and is raised from the block.
        """
        send, receive = anyio.create_memory_object_stream[Submission | Rejected](self._limits.max_in_flight)
        try:
            with unwrap_task_errors():
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._feed, requests, tg, send)
                    try:
                        yield receive
                    finally:
                        tg.cancel_scope.cancel()
                        while True:  # results nobody will read: give their tokens back
                            try:
                                self._drop(receive.receive_nowait())
                            except (anyio.WouldBlock, anyio.EndOfStream):
                                break
                        receive.close()
        finally:
            self._halted = False

    def halt(self) -> None:
        """Stop sending, as after a run-level error elsewhere: no attempt starts any more (retries
        included), and what is on the wire is still answered. ``submit_all`` then ends once its
        source does; for a request that will not be sent, ``forget`` says so."""
        self._halted = True

    def release(self, result: Submission | Rejected) -> None:
        """Give back the ``max_pending`` token ``result`` holds, once it has been handed over (for a
        caller that let the dispatcher make its token limiter)."""
        self._pending.release()

    async def delete_staged(self, submission: Submission) -> None:
        """Delete the input fanout staged for ``submission``, when the staging location asks for it."""
        if submission.staged and submission.input_location and self._delete_after and self._stager:
            await self._stager.delete(submission.input_location)

    # --------------------------------------------------------------- private

    async def _feed(
        self,
        requests: Iterable[InferenceRequest] | AsyncIterable[InferenceRequest],
        tg: TaskGroup,
        send: MemoryObjectSendStream[Submission | Rejected],
    ) -> None:
        async with send, aclosing(_source(requests)) as source:
            while not self._halted:
                # Read first, then wait: a source that has ended must not wait for a token.
                try:
                    request = await anext(source)
                except StopAsyncIteration:
                    return
                await self._pending.acquire()
                self._submitting += 1
                invalid = validate_request(request)
                if invalid is not None:
                    self._submitting -= 1
                    await self._hand_out(send, self._reject(request, invalid.reason))
                    continue
                try:
                    permit = await self._limiter.acquire()
                except BaseException:
                    self._submitting -= 1
                    self._pending.release()
                    raise
                tg.start_soon(self._worker, request, permit, send.clone())

    async def _worker(
        self, request: InferenceRequest, permit: Permit, send: MemoryObjectSendStream[Submission | Rejected]
    ) -> None:
        async with send:
            try:
                result = await self._send(request, permit, checked=True)
            except _Halted:
                return  # never sent; the next run sends it
            except FanoutError:
                if self._halted:
                    return  # the run is already stopping for the first run-level error
                await self._halt()
                raise
            finally:
                self._submitting -= 1
            await self._hand_out(send, result)

    async def _hand_out(
        self, send: MemoryObjectSendStream[Submission | Rejected], result: Submission | Rejected
    ) -> None:
        try:
            try:
                send.send_nowait(result)  # the buffer has room unless the reader lags: no checkpoint
            except anyio.WouldBlock:
                await send.send(result)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._drop(result)  # the reader has left
        except BaseException:
            self._drop(result)
            raise

    def _drop(self, result: Submission | Rejected) -> None:
        """A result nobody will take: give its token back; nobody will track a submission."""
        self._pending.release()
        if isinstance(result, Submission):
            self._forget(result.inference_id, True)

    async def _halt(self) -> None:
        """Stop sending, and give the attempts on the wire a moment to be answered."""
        self._halted = True
        with anyio.move_on_after(_HALT_GRACE):
            while self._limiter.in_flight:
                await anyio.sleep(0.01)

    async def _send(
        self, request: InferenceRequest, permit: Permit | None, *, checked: bool = False
    ) -> Submission | Rejected:
        """Send one request that holds a ``max_pending`` token: the result keeps the token; an
        exception gives it back."""
        try:
            return await self._plan_and_invoke(request, permit, checked=checked)
        except BaseException:
            self._pending.release()
            raise
        finally:
            if permit is not None:
                self._limiter.release(permit)  # idempotent: usually the attempt gave it back

    async def _plan_and_invoke(
        self, request: InferenceRequest, permit: Permit | None, *, checked: bool
    ) -> Submission | Rejected:
        submitted_at = self._clock()
        if not checked and (invalid := validate_request(request)) is not None:
            return self._reject(request, invalid.reason)
        inference_id = request.inference_id or str(uuid.uuid4())
        body = await self._load_body(request)
        if isinstance(body, Invalid):
            return self._reject(request, body.reason, inference_id=inference_id)
        plan = plan_request(
            request, body, inference_id=inference_id, mode=self._mode, staging=self._stager is not None
        )
        if isinstance(plan, Invalid):
            return self._reject(request, plan.reason, inference_id=inference_id)
        input_location = plan.input_location
        # A permit taken before the upload was paced: the invoke's own must not be, or --rate would
        # count each staged request twice (and so halve the S3 path's rate).
        paced = True
        if plan.needs_staging:
            if permit is not None:
                self._limiter.release(permit)  # uploading is not an invoke: free the slot meanwhile
                permit, paced = None, False
            staged = await self._stage(request, plan, submitted_at)
            if isinstance(staged, Rejected):
                return staged
            input_location = staged
        arguments = invoke_arguments(
            self.endpoint_name,
            request,
            inference_id=inference_id,
            body=None if plan.needs_staging else plan.body,
            input_location=input_location,
        )
        await self._expect(inference_id, self._deadline(request, submitted_at))
        fate = _Fate()
        try:
            response = await self._invoke(arguments, permit, fate, paced=paced)
        except BaseException as exc:
            return await self._failed(request, plan, input_location, submitted_at, fate, exc)
        self._accepted += 1
        accepted_at = self._clock()
        return self._submission(
            request,
            plan,
            input_location,
            fate,
            submitted_at=submitted_at,
            accepted_at=accepted_at,
            deadline=self._deadline(request, accepted_at),
            response=response,
        )

    async def _failed(
        self,
        request: InferenceRequest,
        plan: Plan,
        input_location: str | None,
        submitted_at: float,
        fate: _Fate,
        exc: BaseException,
    ) -> Submission | Rejected:
        """What an invoke that gave up (or was cancelled, or halted) becomes."""
        inference_id = plan.inference_id
        run_level = (
            run_level_error(exc, endpoint_name=self.endpoint_name) if isinstance(exc, Exception) else None
        )
        if not isinstance(exc, Exception) or isinstance(exc, _Halted) or run_level is not None:
            # The run ends: nobody will track it here. It is in doubt if it may have arrived.
            self._forget(inference_id, fate.unanswered)
            if run_level is not None and run_level is not exc:
                raise run_level from exc
            raise exc
        if fate.unanswered:
            # It may have been accepted: track it rather than call it rejected.
            self._in_doubt += 1
            now = self._clock()
            return self._submission(
                request,
                plan,
                input_location,
                fate,
                submitted_at=submitted_at,
                accepted_at=now,
                deadline=now + self._retry.in_doubt_wait,
                response=None,
            )
        self._forget(inference_id, False)
        if plan.needs_staging and input_location is not None and self._delete_after and self._stager:
            await self._stager.delete(input_location)
        return self._reject(
            request,
            describe(exc),
            inference_id=inference_id,
            route=plan.route,
            error=exc,
            attempts=fate.attempts,
            submitted_at=submitted_at,
        )

    def _submission(
        self,
        request: InferenceRequest,
        plan: Plan,
        input_location: str | None,
        fate: _Fate,
        *,
        submitted_at: float,
        accepted_at: float,
        deadline: float,
        response: Mapping[str, Any] | None,
    ) -> Submission:
        self._routes[plan.route] += 1
        submission = Submission(
            inference_id=plan.inference_id,
            id=request.id,
            route=plan.route,
            input_location=input_location,
            output_location=response.get("OutputLocation") if response is not None else None,
            failure_location=response.get("FailureLocation") if response is not None else None,
            attempts=fate.attempts,
            submitted_at=submitted_at,
            accepted_at=accepted_at,
            deadline=deadline,
            staged=plan.needs_staging,
            in_doubt=response is None,
        )
        if log.isEnabledFor(logging.DEBUG):  # the hot path: build nothing when it is off
            log.debug(
                "accepted %s %s after %d attempts",
                submission.inference_id,
                "in doubt" if submission.in_doubt else f"via {submission.route}",
                submission.attempts,
                extra={"id": submission.id, "inference_id": submission.inference_id},
            )
        self._accepted_hook(submission)
        return submission

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
        self._rejected += 1
        log.info(
            "rejected %s: %s",
            request.id or inference_id or request.inference_id,
            reason,
            extra={"id": request.id, "inference_id": inference_id or request.inference_id},
        )
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

    def _deadline(self, request: InferenceRequest, since: float) -> float:
        return inference_deadline(
            since,
            request_ttl_seconds=request.request_ttl_seconds,
            invocation_timeout_seconds=request.invocation_timeout_seconds,
            grace_period=self._grace_period,
        )

    async def _load_body(self, request: InferenceRequest) -> bytes | Invalid | None:
        if request.body is not None:
            return bytes(request.body)
        if request.body_path is None:
            return None
        try:
            return await anyio.Path(request.body_path).read_bytes()
        except OSError as exc:
            return Invalid(f"cannot read body_path {str(request.body_path)!r}: {exc}")

    async def _stage(self, request: InferenceRequest, plan: Plan, submitted_at: float) -> str | Rejected:
        assert self._stager is not None and plan.body is not None
        try:
            return await self._stager.upload(plan.body, content_type=request.content_type)
        except FanoutError:
            raise
        except Exception as exc:
            return self._reject(
                request,
                f"staging the payload in S3 failed: {describe(exc)}",
                inference_id=plan.inference_id,
                route="s3",
                error=exc,
                submitted_at=submitted_at,
            )

    async def _invoke(
        self, arguments: dict[str, Any], permit: Permit | None, fate: _Fate, *, paced: bool = True
    ) -> dict[str, Any]:
        """Invoke with retries; the last error is raised when it gives up. The first attempt may
        use ``permit`` (or take one, ``paced`` or not); later ones take their own, paced."""
        try:
            return await self._attempt(arguments, permit, fate, paced=paced)
        except Exception as exc:
            first = exc
        return await continue_retrying(
            self._retry, first, lambda: self._attempt(arguments, None, fate), before_sleep=self._count_retry
        )

    async def _attempt(
        self, arguments: dict[str, Any], permit: Permit | None, fate: _Fate, *, paced: bool = True
    ) -> dict[str, Any]:
        """One invoke call under a limiter permit, reporting its result to the controller."""
        if self._halted:
            raise _Halted("the run stopped before this request was sent")
        async with self._limiter.slot(permit, paced=paced) as held:
            fate.attempts += 1
            try:
                response: dict[str, Any] = await self._runtime.invoke_endpoint_async(**arguments)
            except Exception as exc:
                held.signal = signal_of(exc)
                if classify(exc) == "throttle":
                    self._throttles += 1
                if delivery_of(exc) == "unknown":
                    fate.unanswered = True
                raise
            except BaseException:
                fate.unanswered = True  # cancelled while the request was on the wire: it may have arrived
                raise
            held.signal = "success"
            return response

    def _count_retry(self, state: RetryCallState) -> None:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        if exc is not None:
            kind = classify(exc)
            self._retries[kind] += 1
            if delivery_of(exc) == "unknown":
                self._resends += 1
            log.debug("retrying after a %s error (attempt %d): %s", kind, state.attempt_number, describe(exc))


async def _source(
    requests: Iterable[InferenceRequest] | AsyncIterable[InferenceRequest],
) -> AsyncGenerator[InferenceRequest, None]:
    if isinstance(requests, AsyncIterable):
        async for request in requests:
            yield request
    else:
        for request in requests:
            yield request
