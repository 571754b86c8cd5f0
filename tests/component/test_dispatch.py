"""The Dispatcher against a scripted fake runtime client and a fake S3 client."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from fanout._aws import runtime_client_config
from fanout._config import Limits, RetryPolicy, Staging
from fanout._dispatch import Dispatcher
from fanout._exceptions import BucketNotFound, ConfigError, EndpointNotFound, ServiceUnreachable
from fanout._models import InferenceRequest, Rejected, Submission

pytestmark = pytest.mark.anyio

FAST_RETRY = RetryPolicy(attempts=5, timeout=10.0, wait_initial=0.001, wait_max=0.004)


def client_error(code: str, status: int, message: str | None = None) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "InvokeEndpointAsync",
    )


Script = Callable[[dict[str, Any], int], BaseException | None]


class FakeRuntime:
    """``invoke_endpoint_async`` with scripted latency and errors; records the peak concurrency."""

    def __init__(self, script: Script | None = None, *, latency: float = 0.0) -> None:
        self.script = script
        self.latency = latency
        self.calls: list[dict[str, Any]] = []
        self.attempts: dict[str, int] = {}
        self.in_flight = 0
        self.peak = 0
        self.on_call: Callable[[dict[str, Any]], None] | None = None

    async def invoke_endpoint_async(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        inference_id = kwargs["InferenceId"]
        attempt = self.attempts[inference_id] = self.attempts.get(inference_id, 0) + 1
        if self.on_call is not None:
            self.on_call(kwargs)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.latency:
                await anyio.sleep(self.latency)
            error = self.script(kwargs, attempt) if self.script else None
            if error is not None:
                raise error
            return {
                "InferenceId": inference_id,
                "OutputLocation": f"s3://out/results/{inference_id}.out",
                "FailureLocation": f"s3://out/failures/{inference_id}-error.out",
            }
        finally:
            self.in_flight -= 1


class FakeS3:
    def __init__(self, *, buckets: tuple[str, ...] = ("staging",)) -> None:
        self.buckets = set(buckets)
        self.objects: dict[tuple[str, str], bytes] = {}
        self.puts: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str]] = []

    def _bucket(self, bucket: str, operation: str) -> None:
        if bucket not in self.buckets:
            raise ClientError(
                {
                    "Error": {"Code": "NoSuchBucket", "Message": "nope"},
                    "ResponseMetadata": {"HTTPStatusCode": 404},
                },
                operation,
            )

    async def head_bucket(self, **kwargs: Any) -> dict[str, Any]:
        if kwargs["Bucket"] not in self.buckets:
            raise ClientError(
                {
                    "Error": {"Code": "404", "Message": "Not Found"},
                    "ResponseMetadata": {"HTTPStatusCode": 404},
                },
                "HeadBucket",
            )
        return {}

    async def put_object(self, **kwargs: Any) -> dict[str, Any]:
        self._bucket(kwargs["Bucket"], "PutObject")
        self.puts.append(kwargs)
        self.objects[kwargs["Bucket"], kwargs["Key"]] = kwargs["Body"]
        return {"ETag": '"x"'}

    async def delete_object(self, **kwargs: Any) -> dict[str, Any]:
        self.deleted.append((kwargs["Bucket"], kwargs["Key"]))
        self.objects.pop((kwargs["Bucket"], kwargs["Key"]), None)
        return {}


def requests(n: int, size: int = 10) -> Iterator[InferenceRequest]:
    for i in range(n):
        yield InferenceRequest(body=b"x" * size, id=str(i))


def make(runtime: Any, **kwargs: Any) -> Dispatcher:
    kwargs.setdefault("retry", FAST_RETRY)
    return Dispatcher(endpoint_name="ep", runtime=runtime, **kwargs)


def give_back(dispatcher: Dispatcher) -> None:
    """What the dispatcher's caller does once it has handed a result over: release its token."""
    dispatcher.release(Rejected(reason="any result"))


async def collect(dispatcher: Dispatcher, source: Any, *, give: bool = True) -> list[Submission | Rejected]:
    results: list[Submission | Rejected] = []
    async with dispatcher.submit_all(source) as outcomes:
        async for outcome in outcomes:
            results.append(outcome)
            if give:
                give_back(dispatcher)
    return results


async def test_limits_are_never_exceeded() -> None:
    runtime = FakeRuntime(latency=0.002)
    dispatcher = make(runtime, limits=Limits(max_in_flight=4, max_pending=6))
    peak_pending = 0

    def spy(_: dict[str, Any]) -> None:
        nonlocal peak_pending
        peak_pending = max(peak_pending, dispatcher.statistics().pending)

    runtime.on_call = spy
    unfinished: list[Submission] = []
    accepted = 0
    async with anyio.create_task_group() as tg, dispatcher.submit_all(requests(120)) as outcomes:
        async for outcome in outcomes:
            assert isinstance(outcome, Submission)
            accepted += 1
            unfinished.append(outcome)
            assert len(unfinished) <= 6

            async def finish_later(submission: Submission) -> None:
                await anyio.sleep(0.003)
                unfinished.remove(submission)
                give_back(dispatcher)

            tg.start_soon(finish_later, outcome)
    assert accepted == 120
    assert runtime.peak <= 4
    assert peak_pending <= 6
    stats = dispatcher.statistics()
    assert (stats.in_flight, stats.pending, stats.accepted, stats.inline) == (0, 0, 120, 120)


async def test_cancellation_mid_run_leaks_nothing() -> None:
    runtime = FakeRuntime(latency=0.01)
    forgotten: list[str] = []
    dispatcher = make(
        runtime,
        limits=Limits(max_in_flight=8, max_pending=16),
        forget=lambda inference_id, sent: forgotten.append(inference_id),
    )
    seen = 0
    with anyio.move_on_after(5):
        async with dispatcher.submit_all(requests(10_000)) as outcomes:
            async for outcome in outcomes:
                assert isinstance(outcome, Submission)
                give_back(dispatcher)
                seen += 1
                if seen == 20:
                    break
    assert seen == 20
    assert runtime.in_flight == 0
    stats = dispatcher.statistics()
    assert (stats.in_flight, stats.pending, stats.waiting) == (0, 0, 0)
    # Work cut off mid-invoke, and accepted work the caller never saw, was unregistered.
    assert len(forgotten) == len(set(forgotten)) == len(runtime.calls) - seen
    with anyio.fail_after(2):
        assert isinstance(await dispatcher.submit(InferenceRequest(body=b"again")), Submission)


async def test_outer_cancellation_while_waiting_on_limits_leaks_nothing() -> None:
    runtime = FakeRuntime(latency=10)
    dispatcher = make(runtime, limits=Limits(max_in_flight=2, max_pending=3))
    with anyio.move_on_after(0.05):
        async with dispatcher.submit_all(requests(100)) as outcomes:
            async for _ in outcomes:
                pass
    stats = dispatcher.statistics()
    assert (stats.in_flight, stats.pending, stats.waiting) == (0, 0, 0)
    runtime.latency = 0
    with anyio.fail_after(2):
        assert isinstance(await dispatcher.submit(InferenceRequest(body=b"again")), Submission)


async def test_a_fatal_error_on_one_request_does_not_stop_the_others() -> None:
    def script(kwargs: dict[str, Any], attempt: int) -> BaseException | None:
        return client_error("ValidationError", 400, "bad input") if kwargs["Body"] == b"bad" else None

    runtime = FakeRuntime(script)
    forgotten: list[str] = []
    dispatcher = make(runtime, forget=lambda inference_id, sent: forgotten.append(inference_id))
    source = [InferenceRequest(body=b"ok", id=str(i)) for i in range(20)]
    source[7] = InferenceRequest(body=b"bad", id="7")
    results = await collect(dispatcher, source)
    assert len(results) == 20
    rejected = [r for r in results if isinstance(r, Rejected)]
    assert len(rejected) == 1
    assert rejected[0].id == "7" and rejected[0].attempts == 1
    assert "ValidationError: bad input" in rejected[0].reason
    assert isinstance(rejected[0].error, ClientError)
    assert forgotten == [rejected[0].inference_id]
    assert dispatcher.statistics().rejected == 1


async def test_retries_reuse_the_inference_id() -> None:
    def script(kwargs: dict[str, Any], attempt: int) -> BaseException | None:
        return client_error("ThrottlingException", 400) if attempt <= 2 else None

    runtime = FakeRuntime(script)
    dispatcher = make(runtime)
    results = await collect(dispatcher, requests(10))
    assert all(isinstance(r, Submission) and r.attempts == 3 for r in results)
    assert len(runtime.calls) == 30
    assert set(runtime.attempts.values()) == {3}
    ids = {r.inference_id for r in results if isinstance(r, Submission)}
    assert ids == set(runtime.attempts)
    stats = dispatcher.statistics()
    assert stats.retries_by_class == {"throttle": 20, "transient": 0}
    assert stats.throttles == 20


async def test_a_given_inference_id_is_sent_unchanged() -> None:
    runtime = FakeRuntime()
    result = await make(runtime).submit(InferenceRequest(body=b"1", inference_id="my-id-1"))
    assert isinstance(result, Submission) and result.inference_id == "my-id-1"
    assert runtime.calls[0]["InferenceId"] == "my-id-1"


RETRIED: list[tuple[str, Callable[[], BaseException], str]] = [
    ("throttle-400", lambda: client_error("ThrottlingException", 400), "throttle"),
    ("throttle-429", lambda: client_error("TooManyRequests", 429), "throttle"),
    ("internal-500", lambda: client_error("InternalFailure", 500), "transient"),
    ("unavailable-503", lambda: client_error("ServiceUnavailable", 503), "transient"),
    ("bad-gateway-502", lambda: client_error("502", 502), "transient"),
    ("read-timeout", lambda: ReadTimeoutError(endpoint_url="http://x"), "transient"),
]


@pytest.mark.parametrize(("error", "klass"), [(e, k) for _, e, k in RETRIED], ids=[n for n, _, _ in RETRIED])
async def test_retryable_errors_are_retried(error: Callable[[], BaseException], klass: str) -> None:
    runtime = FakeRuntime(lambda kwargs, attempt: error() if attempt == 1 else None)
    dispatcher = make(runtime)
    result = await dispatcher.submit(InferenceRequest(body=b"1"))
    assert isinstance(result, Submission) and result.attempts == 2
    assert dispatcher.statistics().retries_by_class[klass] == 1


@pytest.mark.parametrize(
    "error",
    [
        client_error("ValidationError", 400, "Value at 'body' failed"),
        client_error("AccessDeniedException", 400, "not allowed"),
        client_error("SomethingElse", 404),
    ],
    ids=["validation", "access-denied", "other-4xx"],
)
async def test_fatal_errors_are_not_retried(error: BaseException) -> None:
    runtime = FakeRuntime(lambda kwargs, attempt: error)
    result = await make(runtime).submit(InferenceRequest(body=b"1"))
    assert isinstance(result, Rejected) and result.attempts == 1 and result.error is error
    assert len(runtime.calls) == 1


async def test_retries_stop_after_the_policy_attempts() -> None:
    runtime = FakeRuntime(lambda kwargs, attempt: client_error("InternalFailure", 500, "boom"))
    dispatcher = make(runtime, retry=RetryPolicy(attempts=3, wait_initial=0.001, wait_max=0.002))
    result = await dispatcher.submit(InferenceRequest(body=b"1", id="a"))
    assert isinstance(result, Rejected)
    assert result.attempts == 3 and "InternalFailure: boom" in result.reason
    assert dispatcher.statistics().pending == 1  # a result holds its token until it is given back
    give_back(dispatcher)
    assert dispatcher.statistics().pending == 0


async def test_connection_errors_that_never_recover_are_run_level() -> None:
    runtime = FakeRuntime(lambda kwargs, attempt: EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    dispatcher = make(runtime, retry=RetryPolicy(attempts=2, wait_initial=0.001, wait_max=0.002))
    with pytest.raises(ServiceUnreachable):
        await dispatcher.submit(InferenceRequest(body=b"1"))
    assert dispatcher.statistics().pending == 0


async def test_expect_is_called_before_the_invoke() -> None:
    registered: dict[str, float] = {}

    def check(kwargs: dict[str, Any]) -> None:
        assert kwargs["InferenceId"] in registered

    runtime = FakeRuntime()
    runtime.on_call = check
    now = 1_000.0

    async def expect(inference_id: str, deadline: float) -> None:
        registered[inference_id] = deadline

    dispatcher = make(runtime, expect=expect, grace_period=5.0, clock=lambda: now)
    result = await dispatcher.submit(
        InferenceRequest(body=b"1", request_ttl_seconds=60, invocation_timeout_seconds=10)
    )
    assert isinstance(result, Submission)
    assert registered == {result.inference_id: 1_000.0 + 60 + 10 + 5}
    assert result.deadline == result.accepted_at + 75


async def test_unknown_endpoint_is_run_level() -> None:
    error = client_error("ValidationError", 400, "Endpoint ep of account 123456789012 not found.")
    runtime = FakeRuntime(lambda kwargs, attempt: error, latency=0.001)
    dispatcher = make(runtime, limits=Limits(max_in_flight=4, max_pending=8))
    with pytest.raises(EndpointNotFound):
        await collect(dispatcher, requests(1_000))
    assert len(runtime.calls) < 50
    assert dispatcher.statistics().pending == 0
    with pytest.raises(EndpointNotFound):
        await dispatcher.submit(InferenceRequest(body=b"1"))


async def test_lazy_consumption_of_a_huge_generator() -> None:
    pulled = 0

    def huge() -> Iterator[InferenceRequest]:
        nonlocal pulled
        for i in range(1_000_000):
            pulled += 1
            yield InferenceRequest(body=b"1", id=str(i))

    dispatcher = make(FakeRuntime(), limits=Limits(max_in_flight=2, max_pending=4))
    taken = 0
    async with dispatcher.submit_all(huge()) as outcomes:
        async for outcome in outcomes:
            assert isinstance(outcome, Submission)
            give_back(dispatcher)
            taken += 1
            if taken == 100:
                break
    assert pulled <= 100 + 4 + 1


async def test_an_async_source_is_consumed_too() -> None:
    async def source() -> Any:
        for i in range(30):
            await anyio.lowlevel.checkpoint()
            yield InferenceRequest(body=b"1", id=str(i))

    results = await collect(make(FakeRuntime()), source())
    assert sorted(r.id or "" for r in results) == sorted(str(i) for i in range(30))


async def test_invalid_requests_are_rejected_without_a_call() -> None:
    runtime = FakeRuntime()
    dispatcher = make(runtime, payload="inline")
    results = await collect(
        dispatcher,
        [
            InferenceRequest(body=b"x" * 128_001, id="big"),
            InferenceRequest(body=b"x", input_location="s3://b/k", id="both"),
            InferenceRequest(body=b"x", request_ttl_seconds=30, id="ttl"),
            InferenceRequest(body=b"x" * 128_000, id="ok"),
        ],
    )
    by_id = {r.id: r for r in results}
    assert isinstance(by_id["ok"], Submission)
    big = by_id["big"]
    assert isinstance(big, Rejected) and "128,001 bytes" in big.reason
    assert isinstance(by_id["both"], Rejected) and "exactly one" in by_id["both"].reason
    assert isinstance(by_id["ttl"], Rejected) and "request_ttl_seconds" in by_id["ttl"].reason
    assert len(runtime.calls) == 1
    assert dispatcher.statistics().pending == 0


async def test_s3_staging_under_auto() -> None:
    runtime = FakeRuntime()
    s3 = FakeS3()
    staging = Staging(
        location="s3://staging/inputs",
        sse_kms_key_id="alias/k",
        expected_bucket_owner="123456789012",
        delete_after=True,
    )
    dispatcher = make(runtime, s3=s3, staging=staging)
    await dispatcher.check()
    small, large = b"s" * 128_000, b"L" * 128_001
    results = {
        r.id: r
        for r in await collect(
            dispatcher,
            [
                InferenceRequest(body=small, id="small"),
                InferenceRequest(body=large, id="large"),
                InferenceRequest(input_location="s3://mine/in.json", id="given"),
            ],
            give=False,
        )
    }
    inline, staged, given = results["small"], results["large"], results["given"]
    assert isinstance(inline, Submission) and inline.route == "inline" and not inline.staged
    assert isinstance(staged, Submission) and staged.route == "s3" and staged.staged
    assert isinstance(given, Submission) and given.route == "s3" and not given.staged
    assert given.input_location == "s3://mine/in.json"
    [put] = s3.puts
    assert put["Key"].startswith("inputs/") and len(put["Key"]) == len("inputs/") + 36
    assert put["ServerSideEncryption"] == "aws:kms" and put["SSEKMSKeyId"] == "alias/k"
    assert put["ExpectedBucketOwner"] == "123456789012"
    assert staged.input_location == f"s3://staging/{put['Key']}"
    sent = {c["InferenceId"]: c for c in runtime.calls}
    assert sent[staged.inference_id]["InputLocation"] == staged.input_location
    assert "Body" not in sent[staged.inference_id]
    assert sent[inline.inference_id]["Body"] == small
    for submission in (inline, staged, given):
        give_back(dispatcher)
        await dispatcher.delete_staged(submission)
    assert s3.deleted == [("staging", put["Key"])]
    stats = dispatcher.statistics()
    assert (stats.pending, stats.inline, stats.s3, stats.staged) == (0, 1, 2, 1)


async def test_a_rate_cap_counts_a_staged_request_once() -> None:
    # The upload runs without the invoke's permit; the permit it gave back for it is returned whole
    # (pacing time included), so 40 requests at 40/s all through S3 take a second, not two.
    runtime = FakeRuntime()
    dispatcher = make(
        runtime,
        s3=FakeS3(),
        staging=Staging(location="s3://staging/inputs"),
        payload="s3",
        limits=Limits(max_per_second=40.0),
        retry=RetryPolicy(adaptive=False, attempts=1),
    )
    started = time.monotonic()
    results = await collect(dispatcher, requests(40))
    elapsed = time.monotonic() - started
    assert all(isinstance(r, Submission) and r.staged for r in results)
    assert len(runtime.calls) == 40
    assert elapsed < 1.5  # two pacing slots per request would take 2 s


async def test_missing_staging_bucket_is_run_level() -> None:
    dispatcher = make(FakeRuntime(), s3=FakeS3(buckets=()), staging=Staging(location="s3://staging/in"))
    with pytest.raises(BucketNotFound):
        await dispatcher.check()
    with pytest.raises(BucketNotFound):
        await collect(dispatcher, [InferenceRequest(body=b"x" * 200_000)])
    assert dispatcher.statistics().pending == 0


async def test_oversized_without_staging_is_rejected() -> None:
    result = await make(FakeRuntime()).submit(InferenceRequest(body=b"x" * 200_000))
    assert isinstance(result, Rejected) and "no S3 staging location" in result.reason


async def test_body_path_is_read_when_sent(tmp_path: Any) -> None:
    path = tmp_path / "in.bin"
    path.write_bytes(b"\x00\x01payload")
    runtime = FakeRuntime()
    results = await collect(
        make(runtime),
        [InferenceRequest(body_path=path, id="a"), InferenceRequest(body_path=tmp_path / "missing", id="b")],
    )
    by_id = {r.id: r for r in results}
    assert isinstance(by_id["a"], Submission) and runtime.calls[0]["Body"] == b"\x00\x01payload"
    assert isinstance(by_id["b"], Rejected) and "cannot read body_path" in by_id["b"].reason


async def test_a_start_up_throttle_storm_is_absorbed_without_collapse() -> None:
    counter = itertools.count()

    def script(kwargs: dict[str, Any], attempt: int) -> BaseException | None:
        return client_error("ThrottlingException", 400) if next(counter) < 8 else None

    runtime = FakeRuntime(script, latency=0.001)
    retry = RetryPolicy(attempts=20, timeout=10.0, wait_initial=0.001, wait_max=0.004)
    dispatcher = make(runtime, limits=Limits(max_in_flight=32, max_pending=64), retry=retry)
    results = await collect(dispatcher, requests(40))
    assert all(isinstance(r, Submission) for r in results)
    stats = dispatcher.statistics()
    assert stats.throttles == 8
    # Each throttle in slow start comes a round trip after the last cut, so each cuts; but slow
    # start overshoots by at most twice, so the cuts stop at half its rate (32/s): no collapse.
    assert stats.current_rate is not None and stats.current_rate >= 16


async def test_slow_start_probes_instead_of_sending_the_whole_window_at_once() -> None:
    runtime = FakeRuntime(latency=0.02)
    dispatcher = make(runtime, limits=Limits(max_in_flight=64, max_pending=128))
    async with anyio.create_task_group() as tg:

        async def submit_many() -> None:
            await collect(dispatcher, requests(400))

        tg.start_soon(submit_many)
        await anyio.sleep(0.005)
        assert runtime.in_flight <= 8  # not the 64 a full window would send at once
    assert runtime.peak > 8  # and it grew from there
    assert runtime.peak <= 64


def test_configuration_errors_are_raised_at_construction() -> None:
    with pytest.raises(ConfigError, match="endpoint_name"):
        Dispatcher(endpoint_name="bad_name", runtime=FakeRuntime())
    with pytest.raises(ConfigError, match="staging"):
        Dispatcher(endpoint_name="ep", runtime=FakeRuntime(), payload="s3")
    with pytest.raises(ConfigError, match="S3 client"):
        Dispatcher(endpoint_name="ep", runtime=FakeRuntime(), staging=Staging(location="s3://bucket/x"))


def test_runtime_client_config_turns_botocore_retries_off() -> None:
    config = runtime_client_config(Limits(max_in_flight=17))
    assert config.retries["total_max_attempts"] == 1
    assert config.max_pool_connections == 17


async def test_the_run_ends_while_every_pending_token_is_held() -> None:
    dispatcher = make(FakeRuntime(), limits=Limits(max_in_flight=2, max_pending=3))
    with anyio.fail_after(2):
        results = await collect(dispatcher, requests(3), give=False)
    assert len(results) == 3 and dispatcher.statistics().pending == 3


def reset_after_sending() -> BaseException:
    """What aiobotocore raises when the server closed the connection before answering."""
    from aiohttp import ServerDisconnectedError
    from botocore.exceptions import ConnectionClosedError

    error: BaseException = ConnectionClosedError(endpoint_url="http://x", error=ServerDisconnectedError())
    return error


def refused() -> BaseException:
    """What aiobotocore raises for a refused connection: the request never left."""
    from aiohttp import ClientConnectorError
    from aiohttp.client_reqrep import ConnectionKey

    key = ConnectionKey("127.0.0.1", 1, False, True, None, None, None)
    error: BaseException = EndpointConnectionError(
        endpoint_url="http://127.0.0.1:1",
        error=ClientConnectorError(key, ConnectionRefusedError(111, "refused")),
    )
    return error


async def test_a_request_whose_answer_was_lost_is_sent_again_and_counted() -> None:
    runtime = FakeRuntime(lambda kwargs, attempt: reset_after_sending() if attempt == 1 else None)
    dispatcher = make(runtime)
    result = await dispatcher.submit(InferenceRequest(body=b"1"))
    assert isinstance(result, Submission) and not result.in_doubt and result.attempts == 2
    assert len({call["InferenceId"] for call in runtime.calls}) == 1
    stats = dispatcher.statistics()
    assert (stats.resends, stats.in_doubt, stats.accepted) == (1, 0, 1)


async def test_throttles_are_retries_not_resends() -> None:
    runtime = FakeRuntime(
        lambda kwargs, attempt: client_error("ThrottlingException", 400) if attempt == 1 else None
    )
    dispatcher = make(runtime)
    assert isinstance(await dispatcher.submit(InferenceRequest(body=b"1")), Submission)
    assert dispatcher.statistics().resends == 0


async def test_at_most_once_tracks_a_lost_answer_in_doubt_instead_of_sending_it_again() -> None:
    runtime = FakeRuntime(lambda kwargs, attempt: reset_after_sending())
    now = 1_000.0
    retry = RetryPolicy(attempts=5, wait_initial=0.001, wait_max=0.002, at_most_once=True, in_doubt_wait=42.0)
    dispatcher = make(runtime, retry=retry, clock=lambda: now)
    result = await dispatcher.submit(InferenceRequest(body=b"1"))
    assert isinstance(result, Submission) and result.in_doubt
    assert len(runtime.calls) == 1
    assert (result.output_location, result.deadline, result.attempts) == (None, now + 42.0, 1)
    stats = dispatcher.statistics()
    assert (stats.resends, stats.in_doubt, stats.accepted, stats.pending) == (0, 1, 0, 1)
    give_back(dispatcher)  # it holds a max_pending token like an accepted one
    assert dispatcher.statistics().pending == 0


async def test_retries_that_run_out_after_a_lost_answer_leave_the_request_in_doubt() -> None:
    def script(kwargs: dict[str, Any], attempt: int) -> BaseException:
        return reset_after_sending() if attempt == 1 else client_error("ThrottlingException", 400)

    runtime = FakeRuntime(script)
    forgotten: list[str] = []
    dispatcher = make(runtime, forget=lambda inference_id, sent: forgotten.append(inference_id))
    result = await dispatcher.submit(InferenceRequest(body=b"1"))
    # The first attempt may have been accepted: it is not "rejected", and its id is still tracked.
    assert isinstance(result, Submission) and result.in_doubt and result.attempts == FAST_RETRY.attempts
    assert forgotten == []


async def test_a_request_that_never_connected_is_unsent_not_in_doubt() -> None:
    runtime = FakeRuntime(lambda kwargs, attempt: refused())
    calls: list[tuple[str, bool]] = []
    dispatcher = make(
        runtime,
        retry=RetryPolicy(attempts=2, wait_initial=0.001, wait_max=0.002),
        forget=lambda inference_id, sent: calls.append((inference_id, sent)),
    )
    with pytest.raises(ServiceUnreachable):
        await dispatcher.submit(InferenceRequest(body=b"1", inference_id="never-left"))
    assert calls == [("never-left", False)]


async def test_a_request_cancelled_on_the_wire_may_have_arrived() -> None:
    runtime = FakeRuntime(latency=10)
    calls: list[tuple[str, bool]] = []
    dispatcher = make(runtime, forget=lambda inference_id, sent: calls.append((inference_id, sent)))
    with anyio.move_on_after(0.05):
        await dispatcher.submit(InferenceRequest(body=b"1", inference_id="on-the-wire"))
    assert calls == [("on-the-wire", True)]
