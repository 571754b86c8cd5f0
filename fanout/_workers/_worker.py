"""One worker: a dispatcher that sends the requests a client deals it, and answers with results.

It runs in a process of its own (``_process``) or in a Ray actor (``_ray``); either way the
transport hands it the client's messages (``inbox``) and a way to answer (``send``). It makes its
own AWS clients from the standard configuration of where it runs, checks them (``Ready``, or
``Stopped`` with the error), then sends what it is dealt through one long ``submit_all``.

It tracks nothing: the client already expected each request (and journaled it) before dealing
it, and tracks the submissions it gets back. The worker's own ``max_pending`` is the client's,
which deals no more than that; its share of the in-flight cap and of the rate is its own, and its
adaptive controller reacts to the throttling it sees.

When the client says ``HALT`` (or a run-level error happens here) the worker stops sending: what
is on the wire is answered, and ``Stopped`` lists every dealt request without a result, with
whether it may have reached the endpoint. When the client goes away, there is nobody to answer:
the worker cancels everything and ends.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import anyio

from .._aws import count_calls, ensure_session, open_aws_client, open_runtime_client
from .._dispatch import Dispatcher
from .._exceptions import FanoutError, unwrap_task_errors
from .._logging import configure_logging
from .._models import InferenceRequest, Rejected, Submission
from ._messages import (
    HALT,
    Cadence,
    Deal,
    FromClient,
    FromWorker,
    Ready,
    Results,
    Stopped,
    WorkerConfig,
    portable,
)

__all__ = ["serve_worker"]

_STATISTICS_EVERY = 0.25
"""Seconds between statistics sent while no result is (for the client's progress display)."""


class _Inbox:
    """The requests dealt and not yet taken by the dispatcher: its source."""

    def __init__(self) -> None:
        self._requests: deque[InferenceRequest] = deque()
        self._more = anyio.Event()
        self._closed = False

    def put(self, requests: list[InferenceRequest]) -> None:
        self._requests.extend(requests)
        self._more.set()

    def close(self) -> None:
        """No more requests: the ones not yet taken are never sent."""
        self._closed = True
        self._requests.clear()
        self._more.set()

    async def requests(self) -> AsyncGenerator[InferenceRequest, None]:
        while True:
            if self._requests:
                yield self._requests.popleft()
            elif self._closed:
                return
            else:
                self._more = anyio.Event()
                await self._more.wait()


class _Worker:
    dispatcher: Dispatcher

    def __init__(self, send: Callable[[FromWorker], Awaitable[None]]) -> None:
        self.api_calls: Counter[str] = Counter()
        self._send = send
        self.inbox = _Inbox()
        self.dealt: set[str] = set()
        """Inference ids dealt that have no result yet."""
        self.forgotten: dict[str, bool] = {}
        """What the dispatcher said of requests it will not answer for: whether each may have been sent."""
        self._results: list[Submission | Rejected] = []
        self._ready = anyio.Event()
        self._cadence = Cadence()

    def forget(self, inference_id: str, sent: bool) -> None:
        self.forgotten[inference_id] = sent

    async def listen(self, inbox: AsyncIterator[FromClient], done: anyio.CancelScope) -> None:
        async for message in inbox:
            if isinstance(message, Deal):
                self.dealt.update(request.inference_id or "" for request in message.requests)
                self.inbox.put(message.requests)
            elif message == HALT:
                self.dispatcher.halt()
                self.inbox.close()
        done.cancel()  # the client is gone: nobody to answer

    async def submit(self) -> FanoutError | None:
        try:
            async with self.dispatcher.submit_all(self.inbox.requests()) as results:
                async for result in results:
                    self.dealt.discard(result.inference_id or "")
                    self._results.append(portable(result))
                    self.dispatcher.release(result)
                    self._ready.set()
        except FanoutError as exc:
            return exc
        return None

    async def answer(self) -> None:
        """Send the results as they come, in batches, and the statistics now and then."""
        while True:
            with anyio.move_on_after(_STATISTICS_EVERY):
                await self._ready.wait()
            await self._cadence.turn()
            await self.flush()

    async def flush(self) -> None:
        self._ready = anyio.Event()
        results, self._results = self._results, []
        # Shielded: a frame cut in half by a cancellation would corrupt the stream.
        with anyio.CancelScope(shield=True):
            await self._send(Results(results, self.dispatcher.statistics(), dict(self.api_calls)))

    def stopped(self, error: FanoutError | None) -> Stopped:
        unanswered = [(inference_id, self.forgotten.get(inference_id, False)) for inference_id in self.dealt]
        return Stopped(
            unanswered=unanswered,
            error=error,
            statistics=self.dispatcher.statistics(),
            api_calls=dict(self.api_calls),
        )


async def serve_worker(
    config: WorkerConfig, inbox: AsyncIterator[FromClient], send: Callable[[FromWorker], Awaitable[None]]
) -> None:
    """Serve one client until it halts this worker or goes away (see the module docstring)."""
    if config.logging is not None:
        configure_logging(*config.logging)
    session = ensure_session()
    worker = _Worker(send)
    api_calls = worker.api_calls
    async with AsyncExitStack() as stack:
        try:
            runtime = await stack.enter_async_context(
                open_runtime_client(
                    session, limits=config.limits, fast_path=config.fast_path, counter=api_calls
                )
            )
            count_calls(getattr(runtime, "client", runtime), api_calls)
            s3 = None
            if config.staging is not None:
                from aiobotocore.config import AioConfig

                pool = AioConfig(max_pool_connections=config.staging.max_concurrency + 4)
                s3 = await stack.enter_async_context(open_aws_client(session, "s3", config=pool))
                count_calls(s3, api_calls)
            worker.dispatcher = Dispatcher(
                endpoint_name=config.endpoint_name,
                runtime=runtime,
                s3=s3,
                limits=config.limits,
                retry=config.retry,
                payload=config.payload,
                staging=config.staging,
                pending=anyio.Semaphore(config.limits.max_pending),
                forget=worker.forget,
                grace_period=config.grace_period,
            )
            await worker.dispatcher.check()
        except FanoutError as exc:
            await send(Stopped(error=exc))
            return
        await send(Ready(dict(api_calls)))
        error: FanoutError | None = None
        with anyio.CancelScope() as done, unwrap_task_errors():
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.listen, inbox, done)
                tg.start_soon(worker.answer)
                error = await worker.submit()
                tg.cancel_scope.cancel()
        if done.cancel_called:
            return
        await worker.flush()
        with anyio.CancelScope(shield=True):
            await send(worker.stopped(error))
