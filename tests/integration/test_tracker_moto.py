"""Conformance: the same SQS source against moto's server, with real SNS -> SQS delivery.

One queue is subscribed to two topics: the success topic with the SNS envelope (the default) and
the error topic with raw message delivery, so the tracker reads both formats from one queue.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from fanout._config import SqsTracking
from fanout._exceptions import QueueNotFound
from fanout._models import Failed, Outcome, Submission, Succeeded
from fanout._tracking import open_tracker

pytestmark = pytest.mark.anyio


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


@asynccontextmanager
async def clients(url: str) -> AsyncIterator[dict[str, Any]]:
    options: dict[str, Any] = {
        "endpoint_url": url,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "config": AioConfig(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"}),
    }
    session = get_session()
    async with AsyncExitStack() as stack:
        yield {
            name: await stack.enter_async_context(session.create_client(name, **options))
            for name in ("sqs", "sns", "s3")
        }


def sagemaker_message(inference_id: str, status: str, **extra: Any) -> str:
    message: dict[str, Any] = {
        "awsRegion": "us-east-1",
        "eventTime": "2026-11-24T10:00:01.000Z",
        "receivedTime": "2026-11-24T10:00:00.000Z",
        "invocationStatus": status,
        "requestParameters": {"contentType": "application/json", "endpointName": "fanout-demo"},
        "responseParameters": {"contentType": "application/json"},
        "inferenceId": inference_id,
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
    }
    if status == "Completed":
        message["responseParameters"]["outputLocation"] = f"s3://moto-out/results/{inference_id}.out"
    else:
        message["failureReason"] = f"ClientError: {inference_id} failed"
        message["responseParameters"]["failureLocation"] = f"s3://moto-out/failures/{inference_id}-error.out"
    message.update(extra)
    return json.dumps(message, separators=(",", ":"))


def submission(inference_id: str) -> Submission:
    now = time.time()
    return Submission(
        inference_id=inference_id,
        id=inference_id,
        route="inline",
        input_location=None,
        output_location=f"s3://moto-out/results/{inference_id}.out",
        failure_location=f"s3://moto-out/failures/{inference_id}-error.out",
        attempts=1,
        submitted_at=now,
        accepted_at=now,
        deadline=now + 3600,
    )


def reset(url: str) -> None:
    with urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10):
        pass


async def test_sns_to_sqs_in_both_formats(moto_url: str) -> None:
    await anyio.to_thread.run_sync(reset, moto_url)
    async with clients(moto_url) as c:
        sqs, sns, s3 = c["sqs"], c["sns"], c["s3"]
        queue_url = (await sqs.create_queue(QueueName="fanout-conformance"))["QueueUrl"]
        attributes = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        queue_arn = attributes["Attributes"]["QueueArn"]
        success = (await sns.create_topic(Name="fanout-success"))["TopicArn"]
        errors = (await sns.create_topic(Name="fanout-errors"))["TopicArn"]
        await sns.subscribe(TopicArn=success, Protocol="sqs", Endpoint=queue_arn)
        await sns.subscribe(
            TopicArn=errors, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"}
        )
        await s3.create_bucket(Bucket="moto-out")
        for n in range(3):
            await s3.put_object(Bucket="moto-out", Key=f"results/ok-{n}.out", Body=f"result {n}".encode())

        ids = [f"ok-{n}" for n in range(3)] + ["inline-0", "bad-0", "bad-1"]
        tracking = SqsTracking(queue_url=queue_url, receivers=1, wait_time_seconds=1)
        outcomes: list[Outcome] = []
        async with open_tracker(tracking=tracking, sqs=sqs, s3=s3) as tracker:
            for inference_id in ids:
                tracker.expect(inference_id, time.time() + 3600)
                tracker.track(submission(inference_id))
            await sns.publish(
                TopicArn=success,
                Message=json.dumps(
                    {"eventVersion": "1.0", "eventSource": "aws:sagemaker", "eventName": "TestNotification"}
                ),
            )
            for n in range(3):
                await sns.publish(TopicArn=success, Message=sagemaker_message(f"ok-{n}", "Completed"))
            inline = {"content": base64.b64encode(b'{"inline":true}').decode(), "encoding": "BASE64"}
            await sns.publish(
                TopicArn=success, Message=sagemaker_message("inline-0", "Completed", responseBody=inline)
            )
            for name in ("bad-0", "bad-1"):
                await sns.publish(TopicArn=errors, Message=sagemaker_message(name, "Failed"))
            await sns.publish(TopicArn=errors, Message=sagemaker_message("bad-0", "Failed"))  # a duplicate
            await sns.publish(TopicArn=success, Message=sagemaker_message("not-ours", "Completed"))
            with anyio.fail_after(15):
                async for outcome in tracker:
                    outcomes.append(outcome)
                    tracker.acknowledge(outcome.inference_id or "")  # stored: its message may go
                    if len(outcomes) == len(ids):
                        break
                while tracker.statistics().received < 9 or tracker.statistics().deleted < 8:
                    await anyio.sleep(0.05)
            stats = tracker.statistics()

        assert sorted(o.inference_id or "" for o in outcomes) == sorted(ids)
        by_id = {o.inference_id: o for o in outcomes}
        for n in range(3):
            ok = by_id[f"ok-{n}"]
            assert isinstance(ok, Succeeded) and ok.result == f"result {n}".encode()
        inline_outcome = by_id["inline-0"]
        assert isinstance(inline_outcome, Succeeded) and inline_outcome.result == b'{"inline":true}'
        for name in ("bad-0", "bad-1"):
            bad = by_id[name]
            assert isinstance(bad, Failed)
            assert bad.failure_reason == f"ClientError: {name} failed"
            assert bad.failure_location == f"s3://moto-out/failures/{name}-error.out"
        assert stats.test_notifications == 1
        assert stats.duplicates >= 1
        assert stats.unknown >= 1
        assert stats.s3_calls["get"] == 3
        # Only the message of another run is left on the queue.
        left = await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        bodies = [m["Body"] for m in left.get("Messages", [])]
        assert len(bodies) == 1 and "not-ours" in bodies[0]
        assert json.loads(bodies[0])["Type"] == "Notification"  # the envelope, as delivered


async def test_missing_queue_against_moto(moto_url: str) -> None:
    async with clients(moto_url) as c:
        missing = f"{moto_url}/123456789012/no-such-queue"
        with pytest.raises(QueueNotFound):
            async with open_tracker(tracking=SqsTracking(queue_url=missing), sqs=c["sqs"], fetch=False):
                pass
