"""The SQS source on the fast path, end to end, against the local emulator and against moto's server:
receives, batched deletes and visibility changes (a message left for its owner, a held message's
heartbeat) all go through ``FastSqs``; faults and a missing queue fail as they do through aiobotocore.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from fanout._config import SqsTracking
from fanout._exceptions import QueueNotFound, run_level_error
from fanout._fastsqs import FastSqs
from fanout._models import Outcome, Submission, Succeeded
from fanout._retry import classify, delivery_of, is_transient
from fanout._tracking import open_tracker
from fanout.testing import Emulator, FaultConfig, ThrottleConfig, open_emulator

pytestmark = pytest.mark.anyio

FAST_CALLS = ("sqs.ReceiveMessage", "sqs.DeleteMessageBatch", "sqs.ChangeMessageVisibilityBatch")
# What open_client's SQS client must be for the fast path: botocore's retries off (fanout retries).
SQS_CONFIG = AioConfig(retries={"mode": "standard", "total_max_attempts": 1}, max_pool_connections=16)


@asynccontextmanager
async def _sqs(**options: Any) -> AsyncIterator[tuple[Any, FastSqs, Counter[str], Counter[str]]]:
    """An SQS client, a fast path over it, the fast path's call counts and the client's own."""
    fast_calls: Counter[str] = Counter()
    client_calls: Counter[str] = Counter()
    async with get_session().create_client("sqs", config=SQS_CONFIG, **options) as client:
        client.meta.events.register(
            "before-call", lambda event_name, **_: client_calls.update([event_name.partition(".")[2]])
        )
        async with FastSqs(client, counter=fast_calls) as fast:
            assert fast.fast
            yield client, fast, fast_calls, client_calls


def _notification(inference_id: str) -> str:
    """An SNS envelope around a SageMaker completion, as the success topic delivers it."""
    message = {
        "awsRegion": "us-east-1",
        "eventTime": "2026-11-24T10:00:01.000Z",
        "receivedTime": "2026-11-24T10:00:00.000Z",
        "invocationStatus": "Completed",
        "requestParameters": {"contentType": "application/json", "endpointName": "fanout-demo"},
        "responseParameters": {
            "contentType": "application/json",
            "outputLocation": f"s3://out/results/{inference_id}.out",
        },
        "inferenceId": inference_id,
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
    }
    return json.dumps(
        {"Type": "Notification", "MessageId": f"sns-{inference_id}", "Message": json.dumps(message)}
    )


def _submission(inference_id: str) -> Submission:
    now = time.time()
    return Submission(
        inference_id=inference_id,
        id=inference_id,
        route="inline",
        input_location=None,
        output_location=f"s3://out/results/{inference_id}.out",
        failure_location=None,
        attempts=1,
        submitted_at=now,
        accepted_at=now,
        deadline=now + 3600,
    )


async def _run_the_source(client: Any, fast: FastSqs, queue_url: str, fast_calls: Counter[str]) -> None:
    """Outcomes for 24 tracked notifications, one held past a heartbeat, one of another run left."""
    ids = [f"fast-{n:02d}" for n in range(25)]
    held = ids[-1]
    # A short visibility timeout, so the heartbeat extends the held message within a second or two.
    tracking = SqsTracking(queue_url=queue_url, receivers=2, wait_time_seconds=1, visibility_timeout=2)
    outcomes: list[Outcome] = []
    await client.purge_queue(QueueUrl=queue_url)  # the emulator's start-up test notifications
    async with open_tracker(tracking=tracking, sqs=fast, fetch=False) as tracker:
        for inference_id in ids:
            tracker.expect(inference_id, time.time() + 3600)
        for inference_id in ids[:-1]:
            tracker.track(_submission(inference_id))
        bodies = [_notification(inference_id) for inference_id in [*ids, "not-ours"]]
        for start in range(0, len(bodies), 10):
            entries = [
                {"Id": str(n), "MessageBody": body} for n, body in enumerate(bodies[start : start + 10])
            ]
            await client.send_message_batch(QueueUrl=queue_url, Entries=entries)
        with anyio.fail_after(20):
            async for outcome in tracker:
                outcomes.append(outcome)
                tracker.acknowledge(outcome.inference_id or "")
                if len(outcomes) == len(ids) - 1:
                    break
            # The held message waits for track(): the heartbeat extends its visibility meanwhile.
            while tracker.statistics().held < 1 or fast_calls["sqs.ChangeMessageVisibilityBatch"] < 2:
                await anyio.sleep(0.05)
            await anyio.sleep(1.5)
            tracker.track(_submission(held))
            outcomes.append(await tracker.__anext__())
            tracker.acknowledge(held)
            while tracker.statistics().deleted < len(ids):
                await anyio.sleep(0.05)
        stats = tracker.statistics()
    assert sorted(o.inference_id or "" for o in outcomes) == ids
    assert all(isinstance(o, Succeeded) for o in outcomes)
    assert stats.deleted == len(ids)
    assert stats.unknown >= 1 and stats.left_on_queue >= 1
    # The message of another run is still on the queue (hidden at most one visibility timeout).
    with anyio.fail_after(10):
        left: list[dict[str, Any]] = []
        while not left:
            answer = await fast.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            left = answer.get("Messages", [])
    assert len(left) == 1 and "not-ours" in left[0]["Body"]


def _assert_all_on_the_fast_path(fast_calls: Counter[str], client_calls: Counter[str]) -> None:
    assert fast_calls["sqs.ReceiveMessage"] >= 2
    assert fast_calls["sqs.DeleteMessageBatch"] >= 3  # 25 deletes, at most 10 a batch
    # One release of the message left for its owner, and at least one heartbeat of the held one.
    assert fast_calls["sqs.ChangeMessageVisibilityBatch"] >= 2
    assert not set(FAST_CALLS) & set(client_calls)  # none of them went through aiobotocore
    assert client_calls["sqs.GetQueueAttributes"] == 1  # the tracker's check, the client's call


# ------------------------------------------------------------------------------------------------
# the emulator


@pytest.fixture
async def emulator(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Emulator]:
    async with open_emulator() as emu:
        for name, value in emu.env.items():
            monkeypatch.setenv(name, value)
        yield emu


async def test_the_sqs_source_runs_on_the_fast_path_against_the_emulator(emulator: Emulator) -> None:
    queue_url = emulator.env["FANOUT_QUEUE_URL"]
    async with _sqs() as (client, fast, fast_calls, client_calls):
        await _run_the_source(client, fast, queue_url, fast_calls)
    _assert_all_on_the_fast_path(fast_calls, client_calls)
    requests = emulator.stats()["requests"]
    for call in FAST_CALLS[1:]:
        assert requests[call] == {"ok": fast_calls[call]}
    # The receivers' last long polls were cancelled when the tracker closed: the emulator never answered.
    answered = requests["sqs.ReceiveMessage"]["ok"]
    assert answered <= fast_calls["sqs.ReceiveMessage"] <= answered + 2


SQS_FAULTS: dict[str, FaultConfig] = {
    "throttled": FaultConfig(throttle=ThrottleConfig(rate=1e-6, burst=1), targets=("sqs",)),
    "500": FaultConfig(error_rate=1.0, error_statuses=(500,), targets=("sqs",)),
    "503": FaultConfig(error_rate=1.0, error_statuses=(503,), targets=("sqs",)),
    "connection dropped": FaultConfig(drop_connection_rate=1.0, targets=("sqs",)),
    "response lost": FaultConfig(drop_response_rate=1.0, targets=("sqs",)),
}


@pytest.mark.parametrize("name", list(SQS_FAULTS))
async def test_emulator_faults_fail_the_same_way_on_both_paths(emulator: Emulator, name: str) -> None:
    queue_url = emulator.env["FANOUT_QUEUE_URL"]
    calls: dict[str, dict[str, Any]] = {
        "receive_message": {"QueueUrl": queue_url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 0},
        "delete_message_batch": {"QueueUrl": queue_url, "Entries": [{"Id": "0", "ReceiptHandle": "x"}]},
        "change_message_visibility_batch": {
            "QueueUrl": queue_url,
            "Entries": [{"Id": "0", "ReceiptHandle": "x", "VisibilityTimeout": 0}],
        },
    }
    async with _sqs() as (client, fast, _, _):
        emulator.set_faults(SQS_FAULTS[name])
        if name == "throttled":
            await client.get_queue_attributes(QueueUrl=queue_url)  # takes the bucket's one token
        for method, kwargs in calls.items():
            outcomes: list[BaseException] = []
            for call in (getattr(client, method), getattr(fast, method)):
                with pytest.raises(Exception) as raised:
                    await call(**kwargs)
                outcomes.append(raised.value)
            expected, actual = outcomes
            assert type(actual) is type(expected)
            assert classify(actual) == classify(expected)
            assert delivery_of(actual) == delivery_of(expected)
            assert is_transient(actual) and is_transient(expected)
            expected_response: Any = getattr(expected, "response", None) or {}
            actual_response: Any = getattr(actual, "response", None) or {}
            assert actual_response.get("Error") == expected_response.get("Error")


async def test_a_missing_queue_is_queue_not_found_on_both_paths(emulator: Emulator) -> None:
    missing = emulator.env["FANOUT_QUEUE_URL"].rsplit("/", 1)[0] + "/no-such-queue"
    async with _sqs() as (client, fast, _, _):
        outcomes = []
        for call in (client.receive_message, fast.receive_message):
            with pytest.raises(client.exceptions.QueueDoesNotExist) as raised:
                await call(QueueUrl=missing, WaitTimeSeconds=0)
            outcomes.append(raised.value)
        expected, actual = outcomes
        assert str(actual) == str(expected)
        assert actual.response["Error"] == expected.response["Error"]
        for exc in (expected, actual):
            assert isinstance(run_level_error(exc, queue_url=missing), QueueNotFound)
        with pytest.raises(QueueNotFound):
            async with open_tracker(tracking=SqsTracking(queue_url=missing), sqs=fast, fetch=False):
                pass


# ------------------------------------------------------------------------------------------------
# moto


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _reset(url: str) -> None:
    with urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10):
        pass


def _moto(url: str) -> dict[str, Any]:
    return {
        "endpoint_url": url,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }


async def test_the_sqs_source_runs_on_the_fast_path_against_moto(moto_url: str) -> None:
    await anyio.to_thread.run_sync(_reset, moto_url)
    async with _sqs(**_moto(moto_url)) as (client, fast, fast_calls, client_calls):
        queue_url = (await client.create_queue(QueueName="fanout-fast-path"))["QueueUrl"]
        client_calls.clear()
        await _run_the_source(client, fast, queue_url, fast_calls)
    _assert_all_on_the_fast_path(fast_calls, client_calls)


async def test_a_missing_queue_against_moto_fails_the_same_way(moto_url: str) -> None:
    missing = f"{moto_url}/123456789012/no-such-queue"
    async with _sqs(**_moto(moto_url)) as (client, fast, _, _):
        outcomes = []
        for call in (client.receive_message, fast.receive_message):
            with pytest.raises(Exception) as raised:
                await call(QueueUrl=missing, WaitTimeSeconds=0)
            outcomes.append(raised.value)
        expected, actual = outcomes
        assert type(actual) is type(expected)
        assert str(actual) == str(expected)
        for exc in (expected, actual):
            assert isinstance(run_level_error(exc, queue_url=missing), QueueNotFound)
