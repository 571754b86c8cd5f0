"""The client's side of its workers (``WorkerPool``) against scripted links: no process, no network.

Each fake worker answers a ``Deal`` the way its script says (accept, reject, never answer, die,
or stop with a run-level error), so that routing, tokens, re-dealing and halting can be checked
exactly.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

from fanout import EndpointNotFound, InferenceRequest, Limits, Rejected, RetryPolicy, Submission, WorkerError
from fanout._dispatch import DispatcherStatistics
from fanout._exceptions import unwrap_task_errors
from fanout._workers._messages import (
    HALT,
    Deal,
    FromClient,
    FromWorker,
    Ready,
    Results,
    Stopped,
    WorkerConfig,
    decode,
    encode,
)
from fanout._workers._pool import Link, WorkerPool

pytestmark = pytest.mark.anyio

Answer = Callable[["FakeLink", InferenceRequest], "Submission | Rejected | None"]


def _statistics(accepted: int = 0) -> DispatcherStatistics:
    return DispatcherStatistics(
        in_flight=1,
        pending=0,
        accepted=accepted,
        rejected=0,
        throttles=2,
        current_limit=4,
        inline=accepted,
        s3=0,
    )


def accept(link: FakeLink, request: InferenceRequest) -> Submission:
    now = time.time()
    assert request.inference_id is not None
    return Submission(
        inference_id=request.inference_id,
        id=request.id,
        route="inline",
        input_location=None,
        output_location=f"s3://bucket/out/{request.inference_id}.out",
        failure_location=None,
        attempts=1,
        submitted_at=now,
        accepted_at=now,
        deadline=now + 60,
        staged=False,
        in_doubt=False,
    )


@dataclass
class FakeLink:
    """A worker whose answers are scripted; every message goes through the real encoding."""

    index: int
    answer: Answer = accept
    start_error: Exception | None = None
    name: str = ""
    dealt: list[InferenceRequest] = field(default_factory=list)
    received: list[FromClient] = field(default_factory=list)
    outbox: list[FromWorker] = field(default_factory=list)
    dead: bool = False
    halted: bool = False
    answered: int = 0
    wake: anyio.Event = field(default_factory=anyio.Event)

    def __post_init__(self) -> None:
        self.name = f"fake worker {self.index}"
        self.outbox.append(Stopped(error=self.start_error) if self.start_error else Ready({}))  # type: ignore[arg-type]

    def post(self, message: FromWorker) -> None:
        self.outbox.append(decode(encode(message)[4:]))  # type: ignore[arg-type]
        self.wake.set()

    def die(self) -> None:
        self.dead = True
        self.wake.set()

    async def send(self, message: FromClient) -> None:
        if self.dead:
            raise anyio.BrokenResourceError
        message = decode(encode(message)[4:])  # type: ignore[assignment]
        self.received.append(message)
        if isinstance(message, Deal):
            results = []
            for request in message.requests:
                self.dealt.append(request)
                result = self.answer(self, request)
                if result is not None:
                    results.append(result)
            if results and not self.dead:
                self.answered += len(results)
                calls = {"sagemaker-runtime.InvokeEndpointAsync": self.answered}
                self.post(Results(results, _statistics(self.answered), calls))
        elif message == HALT:
            self.halted = True
            answered = {r.inference_id for m in self.outbox if isinstance(m, Results) for r in m.results}
            unanswered = [(r.inference_id or "", False) for r in self.dealt if r.inference_id not in answered]
            if not self.dead:
                self.post(Stopped(unanswered=unanswered))

    async def receive(self) -> FromWorker:
        while not self.outbox:
            if self.dead:
                raise anyio.EndOfStream
            self.wake = anyio.Event()
            await self.wake.wait()
        return self.outbox.pop(0)

    async def death(self) -> str:
        return "was killed by SIGKILL"


class Recorder:
    """The client's hooks: what was expected, forgotten and accepted."""

    def __init__(self) -> None:
        self.expected: list[str] = []
        self.forgotten: list[tuple[str, bool]] = []
        self.accepted: list[str] = []

    async def expect(self, inference_id: str, deadline: float) -> None:
        self.expected.append(inference_id)

    def forget(self, inference_id: str, sent: bool) -> None:
        self.forgotten.append((inference_id, sent))

    def accept(self, submission: Submission) -> None:
        self.accepted.append(submission.inference_id)


def _pool(
    links: list[FakeLink], recorder: Recorder, *, max_pending: int = 50, retry: RetryPolicy | None = None
) -> tuple[WorkerPool, anyio.Semaphore, list[Sequence[WorkerConfig]]]:
    launched: list[Sequence[WorkerConfig]] = []

    @asynccontextmanager
    async def launch(configs: Sequence[WorkerConfig]) -> AsyncIterator[Sequence[Link]]:
        launched.append(configs)
        yield links

    pending = anyio.Semaphore(max_pending)
    pool = WorkerPool(
        endpoint_name="ep",
        count=len(links),
        launch=launch,
        limits=Limits(max_in_flight=9, max_pending=max_pending, max_per_second=30.0),
        retry=retry or RetryPolicy(),
        payload="auto",
        staging=None,
        fast_path=True,
        pending=pending,
        expect=recorder.expect,
        forget=recorder.forget,
        accepted=recorder.accept,
    )
    return pool, pending, launched


def _requests(count: int) -> list[InferenceRequest]:
    return [InferenceRequest(body=b"{}", id=f"r{n}", inference_id=f"id-{n}") for n in range(count)]


async def _collect(pool: WorkerPool, requests: list[InferenceRequest]) -> list[Submission | Rejected]:
    results = []
    async with pool.submit_all(requests) as stream:
        async for result in stream:
            results.append(result)
            pool.release(result)
    return results


async def test_requests_are_shared_out_and_every_result_comes_back_once() -> None:
    links = [FakeLink(1), FakeLink(2)]
    recorder = Recorder()
    pool, pending, launched = _pool(links, recorder)
    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        results = await _collect(pool, _requests(200))
        statistics = pool.statistics()
        tg.cancel_scope.cancel()
    assert sorted(result.inference_id or "" for result in results) == sorted(f"id-{n}" for n in range(200))
    assert all(isinstance(result, Submission) for result in results)
    # Every request was expected (journaled) before it was dealt, and accepted once.
    assert sorted(recorder.expected) == sorted(recorder.accepted) == sorted(f"id-{n}" for n in range(200))
    assert min(len(link.dealt) for link in links) > 50  # both took a share
    assert pending.value == 50  # every token given back
    # Each worker gets its share of the in-flight cap and the rate; max_pending stays the client's.
    shares = [config.limits for config in launched[0]]
    assert [(s.max_in_flight, s.max_per_second, s.max_pending) for s in shares] == [(5, 15.0, 50)] * 2
    assert statistics.accepted == 200
    assert statistics.throttles > 0  # the workers' statistics add up
    assert pool.api_calls()["sagemaker-runtime.InvokeEndpointAsync"] == 200
    assert all(link.halted for link in links)  # stopped when the pool was


async def test_a_bad_request_is_rejected_before_it_is_dealt() -> None:
    links = [FakeLink(1)]
    recorder = Recorder()
    pool, pending, _ = _pool(links, recorder)
    bad = InferenceRequest(body=b"{}", input_location="s3://b/k", id="bad")
    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        results = await _collect(pool, [bad, *_requests(3)])
        tg.cancel_scope.cancel()
    rejected = [result for result in results if isinstance(result, Rejected)]
    assert len(rejected) == 1 and rejected[0].id == "bad"
    assert "bad" not in {request.id for request in links[0].dealt}
    assert pending.value == 50


async def test_a_dead_worker_s_requests_are_dealt_to_the_others() -> None:
    def silent(link: FakeLink, request: InferenceRequest) -> Submission | None:
        if len(link.dealt) == 5:
            link.die()
        return None  # it never answers: its requests are in doubt when it dies

    links = [FakeLink(1, answer=silent), FakeLink(2)]
    recorder = Recorder()
    pool, pending, _ = _pool(links, recorder)
    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        results = await _collect(pool, _requests(100))
        statistics = pool.statistics()
        tg.cancel_scope.cancel()
    assert sorted(result.inference_id or "" for result in results) == sorted(f"id-{n}" for n in range(100))
    taken_over = {request.inference_id for request in links[0].dealt}
    assert taken_over and taken_over <= {request.inference_id for request in links[1].dealt}
    assert statistics.resends == len(taken_over)  # sent again under the same ids, and counted
    assert pending.value == 50


async def test_with_at_most_once_a_dead_worker_stops_the_run_and_leaves_its_requests_in_doubt() -> None:
    def silent(link: FakeLink, request: InferenceRequest) -> Submission | None:
        if len(link.dealt) == 3:
            link.die()
        return None

    links = [FakeLink(1, answer=silent), FakeLink(2)]
    recorder = Recorder()
    pool, pending, _ = _pool(links, recorder, retry=RetryPolicy(at_most_once=True))
    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        with pytest.raises(
            WorkerError, match=r"fake worker 1 was killed by SIGKILL; \d+ requests .* at-most-once"
        ):
            await _collect(pool, _requests(100))
        tg.cancel_scope.cancel()
    in_doubt = {inference_id for inference_id, sent in recorder.forgotten if sent}
    assert in_doubt == {request.inference_id for request in links[0].dealt}
    assert pending.value == 50


async def test_a_run_level_error_in_one_worker_halts_the_others_and_is_raised() -> None:
    def missing(link: FakeLink, request: InferenceRequest) -> None:
        link.post(Stopped(error=EndpointNotFound("ep"), unanswered=[(request.inference_id or "", False)]))
        link.dead = True

    def slow(link: FakeLink, request: InferenceRequest) -> None:
        return None  # answers only for what it was dealt, when halted

    links = [FakeLink(1, answer=missing), FakeLink(2, answer=slow)]
    recorder = Recorder()
    pool, pending, _ = _pool(links, recorder, max_pending=10)
    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        with pytest.raises(EndpointNotFound, match="endpoint 'ep' was not found"):
            await _collect(pool, _requests(100))
        tg.cancel_scope.cancel()
    assert links[1].halted
    # Nothing was sent: every request dealt is forgotten as unsent, and nothing more was read.
    assert recorder.forgotten and all(not sent for _, sent in recorder.forgotten)
    assert len(recorder.expected) <= 10 + 1
    assert pending.value == 10


async def test_a_worker_that_cannot_start_raises_its_error_from_run() -> None:
    links = [FakeLink(1), FakeLink(2, start_error=EndpointNotFound("ep"))]
    pool, _, _ = _pool(links, Recorder())
    with pytest.raises(EndpointNotFound), unwrap_task_errors():
        async with anyio.create_task_group() as tg:
            await tg.start(pool.run)


async def test_leaving_submit_all_early_gives_every_token_back() -> None:
    links = [FakeLink(1), FakeLink(2)]
    recorder = Recorder()
    pool, pending, _ = _pool(links, recorder, max_pending=20)
    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        async with pool.submit_all(_requests(1000)) as stream:
            async for result in stream:
                pool.release(result)
                break
        await anyio.sleep(0.05)  # results still on their way are dropped as they arrive
        tg.cancel_scope.cancel()
    assert pending.value == 20


async def test_submit_sends_one_request(anyio_backend: Any) -> None:
    links = [FakeLink(1)]
    pool, pending, _ = _pool(links, Recorder())
    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        result = await pool.submit(InferenceRequest(body=b"{}", id="one"))
        tg.cancel_scope.cancel()
    assert isinstance(result, Submission) and result.id == "one"
    assert result.inference_id == links[0].dealt[0].inference_id  # the pool gave it its id
    assert pending.value == 49  # the caller holds the token until it hands the outcome over
