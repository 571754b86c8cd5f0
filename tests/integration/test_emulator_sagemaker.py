"""The emulated InvokeEndpointAsync, driven by real aiobotocore clients over loopback."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import anyio
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from fanout.testing import (
    Distribution,
    Emulator,
    EmulatorConfig,
    EndpointConfig,
    ModelResult,
    QueueConfig,
    SubscriptionConfig,
    TopicConfig,
    default_config,
    open_emulator,
)

pytestmark = pytest.mark.anyio

QUEUE = "fanout-notifications"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
NOTIFICATION_KEYS = [
    "awsRegion",
    "eventTime",
    "receivedTime",
    "invocationStatus",
    "requestParameters",
    "responseParameters",
    "inferenceId",
    "eventVersion",
    "eventSource",
    "eventName",
]
SIGV4 = (
    "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/sagemaker/aws4_request, SignedHeaders=host, "
    "Signature=0"
)


@asynccontextmanager
async def clients(emu: Emulator) -> AsyncIterator[tuple[Any, Any, Any]]:
    """sagemaker-runtime, sqs and s3 clients with botocore's retries off."""
    session = get_session()
    options: dict[str, Any] = {
        "region_name": emu.config.region,
        "endpoint_url": emu.endpoint_url,
        "aws_access_key_id": "AKID",
        "aws_secret_access_key": "secret",
        "config": AioConfig(retries={"total_max_attempts": 1}),
    }
    async with AsyncExitStack() as stack:
        runtime = await stack.enter_async_context(session.create_client("sagemaker-runtime", **options))
        sqs = await stack.enter_async_context(session.create_client("sqs", **options))
        s3 = await stack.enter_async_context(session.create_client("s3", **options))
        yield runtime, sqs, s3


async def receive(
    sqs: Any, queue_url: str, count: int, *, raw: bool = False, timeout: float = 10
) -> list[Any]:
    """Up to ``count`` SageMaker messages (TestNotifications skipped), bounded in time."""
    messages: list[Any] = []
    with anyio.move_on_after(timeout):
        while len(messages) < count:
            reply = await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for message in reply.get("Messages", []):
                await sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                body = message["Body"] if raw else json.loads(message["Body"])["Message"]
                value = json.loads(body)
                if value.get("eventName") != "TestNotification":
                    messages.append(value)
    return messages


def config_with(**changes: Any) -> EmulatorConfig:
    """The default config with its endpoint changed."""
    base = default_config()
    endpoint = dataclasses.replace(base.endpoints[0], **changes)
    return dataclasses.replace(base, endpoints=(endpoint,))


async def test_accepted_invoke_is_202_with_body_id_and_location_headers() -> None:
    async with open_emulator() as emu, clients(emu) as (runtime, _, _):
        reply = await runtime.invoke_endpoint_async(
            EndpointName="fanout-demo", Body=b'{"x": 1}', ContentType="application/json", InferenceId="req-1"
        )
        meta = reply["ResponseMetadata"]
        assert meta["HTTPStatusCode"] == 202
        assert re.fullmatch(UUID, meta["RequestId"])
        assert reply["InferenceId"] == "req-1"
        match = re.fullmatch(rf"s3://fanout-output/results/({UUID})\.out", reply["OutputLocation"])
        assert match is not None
        assert reply["FailureLocation"] == f"s3://fanout-output/failures/{match.group(1)}-error.out"
        assert match.group(1) != reply["InferenceId"]

        generated = await runtime.invoke_endpoint_async(EndpointName="fanout-demo", Body=b"abc")
        assert re.fullmatch(UUID, generated["InferenceId"])
        assert generated["OutputLocation"] != reply["OutputLocation"]


async def test_output_path_extension_and_filename() -> None:
    async with open_emulator() as emu, clients(emu) as (runtime, _, _):
        named = await runtime.invoke_endpoint_async(
            EndpointName="fanout-demo", Body=b"a", S3OutputPathExtension="batch/7", Filename="row-1.json"
        )
        assert named["OutputLocation"] == "s3://fanout-output/results/batch/7/row-1.json"
        extended = await runtime.invoke_endpoint_async(
            EndpointName="fanout-demo", Body=b"a", S3OutputPathExtension="batch/7/"
        )
        assert re.fullmatch(rf"s3://fanout-output/results/batch/7/{UUID}\.out", extended["OutputLocation"])


async def test_no_failure_location_without_a_failure_path() -> None:
    async with open_emulator(config_with(s3_failure_path=None)) as emu, clients(emu) as (runtime, sqs, _):
        reply = await runtime.invoke_endpoint_async(EndpointName="fanout-demo", Body=b'{"fail": true}')
        assert "FailureLocation" not in reply
        assert "x-amzn-sagemaker-failurelocation" not in reply["ResponseMetadata"]["HTTPHeaders"]
        (failed,) = await receive(sqs, emu.queue_url(QUEUE), 1)
        assert failed["invocationStatus"] == "Failed"
        assert "failureLocation" not in failed["responseParameters"]


BOTH_TOPICS = ("SUCCESS_NOTIFICATION_TOPIC", "ERROR_NOTIFICATION_TOPIC")


@pytest.mark.parametrize("included", [False, True], ids=["default", "included"])
async def test_completed_notifications_inline_and_through_s3_carry_the_right_result(included: bool) -> None:
    config = config_with(include_inference_response_in=BOTH_TOPICS) if included else default_config()
    async with open_emulator(config) as emu, clients(emu) as (runtime, sqs, s3):
        inline_body = b'{"row": "inline"}'
        staged_body = b'{"row": "staged"}'
        await s3.put_object(Bucket="fanout-staging", Key="inputs/row.json", Body=staged_body)
        inline = await runtime.invoke_endpoint_async(
            EndpointName="fanout-demo",
            Body=inline_body,
            ContentType="application/json",
            Accept="application/json",
            InferenceId="inline-1",
        )
        staged = await runtime.invoke_endpoint_async(
            EndpointName="fanout-demo",
            InputLocation="s3://fanout-staging/inputs/row.json",
            InferenceId="s3-1",
        )
        messages = {m["inferenceId"]: m for m in await receive(sqs, emu.queue_url(QUEUE), 2)}
        assert set(messages) == {"inline-1", "s3-1"}
        for reply, body in ((inline, inline_body), (staged, staged_body)):
            message = messages[reply["InferenceId"]]
            if included:
                assert list(message) == [*NOTIFICATION_KEYS[:6], "responseBody", *NOTIFICATION_KEYS[6:]]
            else:
                assert list(message) == NOTIFICATION_KEYS
            assert message["invocationStatus"] == "Completed"
            assert message["awsRegion"] == "us-east-1"
            assert message["eventName"] == "InferenceResult"
            assert message["eventSource"] == "aws:sagemaker"
            assert message["eventVersion"] == "1.0"
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", message["eventTime"])
            assert message["receivedTime"] <= message["eventTime"]
            assert message["responseParameters"] == {
                "contentType": "application/json",
                "outputLocation": reply["OutputLocation"],
            }
            expected = {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}
            if included:
                assert message["responseBody"]["encoding"] == "BASE64"
                assert json.loads(base64.b64decode(message["responseBody"]["content"])) == expected
            key = reply["OutputLocation"].removeprefix("s3://fanout-output/")
            output = await s3.get_object(Bucket="fanout-output", Key=key)
            assert json.loads(await output["Body"].read()) == expected
            assert output["ContentType"] == "application/json"
        assert messages["inline-1"]["requestParameters"] == {
            "contentType": "application/json",
            "accept": "application/json",
            "endpointName": "fanout-demo",
        }
        assert messages["s3-1"]["requestParameters"] == {
            "endpointName": "fanout-demo",
            "inputLocation": "s3://fanout-staging/inputs/row.json",
        }


@pytest.mark.parametrize("included", [False, True], ids=["default", "included"])
async def test_failed_notification_and_failure_object(included: bool) -> None:
    config = config_with(include_inference_response_in=BOTH_TOPICS) if included else default_config()
    async with open_emulator(config) as emu, clients(emu) as (runtime, sqs, s3):
        reply = await runtime.invoke_endpoint_async(
            EndpointName="fanout-demo", Body=b'{"fail": true, "reason": "row 9"}', InferenceId="bad-1"
        )
        (message,) = await receive(sqs, emu.queue_url(QUEUE), 1)
        assert list(message) == [
            *NOTIFICATION_KEYS[:4],
            "failureReason",
            *NOTIFICATION_KEYS[4:6],
            *(["responseBody"] if included else []),
            *NOTIFICATION_KEYS[6:],
        ]
        assert message["invocationStatus"] == "Failed"
        assert message["inferenceId"] == "bad-1"
        assert "row 9" in message["failureReason"]
        assert message["responseParameters"]["failureLocation"] == reply["FailureLocation"]
        key = reply["FailureLocation"].removeprefix("s3://fanout-output/")
        failure = await s3.get_object(Bucket="fanout-output", Key=key)
        assert (await failure["Body"].read()).decode() == message["failureReason"]
        if included:
            assert base64.b64decode(message["responseBody"]["content"]).decode() == message["failureReason"]
        with pytest.raises(Exception, match="NoSuchKey"):
            await s3.get_object(
                Bucket="fanout-output", Key=reply["OutputLocation"].removeprefix("s3://fanout-output/")
            )
        assert emu.stats()["invocations"]["failed"] == 1


async def test_response_body_only_when_configured_and_small_enough() -> None:
    async def big(body: bytes, content_type: str | None, custom_attributes: str | None) -> ModelResult:
        size = int(body)
        return ModelResult.ok(b"x" * size, "application/octet-stream")

    config = config_with(include_inference_response_in=("SUCCESS_NOTIFICATION_TOPIC",), model=big)
    async with open_emulator(config) as emu, clients(emu) as (runtime, sqs, _):
        for size in (128_000, 128_001):
            await runtime.invoke_endpoint_async(
                EndpointName="fanout-demo", Body=str(size), InferenceId=str(size)
            )
        await runtime.invoke_endpoint_async(
            EndpointName="fanout-demo", Body=b"not a number", InferenceId="broken"
        )
        messages = {m["inferenceId"]: m for m in await receive(sqs, emu.queue_url(QUEUE), 3)}
        assert len(base64.b64decode(messages["128000"]["responseBody"]["content"])) == 128_000
        assert "responseBody" not in messages["128001"]
        assert messages["128001"]["invocationStatus"] == "Completed"
        # the error topic is not in IncludeInferenceResponseIn here
        assert messages["broken"]["invocationStatus"] == "Failed"
        assert "ValueError" in messages["broken"]["failureReason"]
        assert "responseBody" not in messages["broken"]


async def test_queued_requests_expire_after_their_ttl() -> None:
    release = anyio.Event()

    async def stuck(body: bytes, content_type: str | None, custom_attributes: str | None) -> ModelResult:
        await release.wait()
        return ModelResult.ok(b"{}")

    config = dataclasses.replace(
        config_with(instance_count=1, max_concurrent_invocations_per_instance=1, model=stuck),
        time_scale=0.005,
    )
    async with open_emulator(config) as emu, clients(emu) as (runtime, sqs, s3):
        first = await runtime.invoke_endpoint_async(
            EndpointName="fanout-demo", Body=b"1", InferenceId="first"
        )
        replies = [
            await runtime.invoke_endpoint_async(
                EndpointName="fanout-demo", Body=b"2", InferenceId=f"late-{i}", RequestTTLSeconds=60
            )
            for i in range(2)
        ]
        expired = await receive(sqs, emu.queue_url(QUEUE), 2)
        release.set()
        (completed,) = await receive(sqs, emu.queue_url(QUEUE), 1)
        assert completed["inferenceId"] == "first"
        assert completed["responseParameters"]["outputLocation"] == first["OutputLocation"]
        assert sorted(m["inferenceId"] for m in expired) == ["late-0", "late-1"]
        by_id = {r["InferenceId"]: r for r in replies}
        for message in expired:
            assert message["invocationStatus"] == "Expired"
            assert "RequestTTLSeconds (60 s)" in message["failureReason"]
            assert "responseBody" not in message
            location = by_id[message["inferenceId"]]["FailureLocation"]
            assert message["responseParameters"] == {"failureLocation": location}
            failure = await s3.get_object(
                Bucket="fanout-output", Key=location.removeprefix("s3://fanout-output/")
            )
            assert (await failure["Body"].read()).decode() == message["failureReason"]
        stats = emu.stats()
        assert stats["invocations"]["expired"] == 2
        assert stats["invocations"]["succeeded"] == 1


async def test_invocation_timeout_fails_the_inference() -> None:
    async def slow(body: bytes, content_type: str | None, custom_attributes: str | None) -> ModelResult:
        await anyio.sleep(30)
        return ModelResult.ok(b"{}")

    config = dataclasses.replace(config_with(model=slow), time_scale=0.01)
    async with open_emulator(config) as emu, clients(emu) as (runtime, sqs, _):
        await runtime.invoke_endpoint_async(
            EndpointName="fanout-demo", Body=b"1", InferenceId="slow", InvocationTimeoutSeconds=2
        )
        (message,) = await receive(sqs, emu.queue_url(QUEUE), 1)
        assert message["invocationStatus"] == "Failed"
        assert "InvocationTimeoutSeconds (2 s)" in message["failureReason"]
        assert emu.stats()["invocations"]["timed_out"] == 1


async def test_model_sees_content_type_and_custom_attributes() -> None:
    seen: list[tuple[bytes, str | None, str | None]] = []

    async def spy(body: bytes, content_type: str | None, custom_attributes: str | None) -> ModelResult:
        seen.append((body, content_type, custom_attributes))
        return ModelResult.ok(b"ok", "text/plain")

    config = config_with(model=spy, service_time=Distribution("constant", ms=1))
    async with open_emulator(config) as emu, clients(emu) as (runtime, sqs, _):
        await runtime.invoke_endpoint_async(
            EndpointName="fanout-demo", Body=b"payload", ContentType="text/csv", CustomAttributes="trace=1"
        )
        (message,) = await receive(sqs, emu.queue_url(QUEUE), 1)
        assert seen == [(b"payload", "text/csv", "trace=1")]
        assert message["responseParameters"]["contentType"] == "text/plain"


LONG = "a" * 1025
VALIDATION_CASES: list[tuple[dict[str, Any], str]] = [
    (
        {"Body": b"x" * 128_001},
        "Value at 'body' failed to satisfy constraint: Member must have length less than or equal to 128000",
    ),
    (
        {"Body": b"x", "InputLocation": "s3://fanout-staging/inputs/a"},
        "Provide exactly one of Body or InputLocation: the request has both.",
    ),
    ({"Body": None}, "Provide exactly one of Body or InputLocation: the request has neither."),
    ({"EndpointName": "nope"}, "Endpoint nope of account 123456789012 not found."),
    (
        {"Body": None, "InputLocation": "s3://fanout-staging/inputs/missing.json"},
        "Could not access the input location s3://fanout-staging/inputs/missing.json",
    ),
    (
        {"Body": None, "InputLocation": "s3://no-such-bucket/a"},
        "Could not access the input location s3://no-such-bucket/a",
    ),
    (
        {"EndpointName": "bad_name"},
        "Value 'bad_name' at 'endpointName' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9])*",
    ),
    (
        {"EndpointName": "e" * 64},
        "at 'endpointName' failed to satisfy constraint: Member must have length less than or equal to 63",
    ),
    (
        {"InferenceId": "i" * 65},
        "at 'inferenceId' failed to satisfy constraint: Member must have length less than or equal to 64",
    ),
    (
        {"ContentType": LONG},
        "at 'contentType' failed to satisfy constraint: Member must have length less than",
    ),
    (
        {"Accept": LONG},
        "at 'accept' failed to satisfy constraint: Member must have length less than or equal to 1024",
    ),
    (
        {"CustomAttributes": LONG},
        "1 validation error detected: Value at 'customAttributes' failed to satisfy constraint: "
        "Member must have length less than or equal to 1024",
    ),
    (
        {"RequestTTLSeconds": 21_601},
        "Value '21601' at 'requestTTLSeconds' failed to satisfy constraint: "
        "Member must have value less than or equal to 21600",
    ),
    (
        {"InvocationTimeoutSeconds": 3_601},
        "Value '3601' at 'invocationTimeoutSeconds' failed to satisfy constraint: "
        "Member must have value less than or equal to 3600",
    ),
    (
        {"S3OutputPathExtension": "s3://elsewhere"},
        "at 's3OutputPathExtension' failed to satisfy constraint: Member must satisfy regular expression",
    ),
    ({"Filename": "a.b.c"}, "Value 'a.b.c' at 'filename' failed to satisfy constraint: Member must satisfy"),
    ({"Filename": "f" * 33}, "at 'filename' failed to satisfy constraint: Member must have length less than"),
    (
        {"RequestTTLSeconds": 99_999, "InvocationTimeoutSeconds": 99_999},
        "2 validation errors detected: Value '99999' at 'requestTTLSeconds' failed to satisfy constraint: "
        "Member must have value less than or equal to 21600; Value '99999' at 'invocationTimeoutSeconds'",
    ),
]


async def test_each_validation_error_is_a_400_validation_error() -> None:
    async with open_emulator() as emu, clients(emu) as (runtime, _, _):
        for params, message in VALIDATION_CASES:
            request: dict[str, Any] = {"EndpointName": "fanout-demo", "Body": b"{}", **params}
            if request["Body"] is None:
                del request["Body"]
            with pytest.raises(runtime.exceptions.ValidationError) as info:
                await runtime.invoke_endpoint_async(**request)
            response = info.value.response
            assert response["ResponseMetadata"]["HTTPStatusCode"] == 400, params
            assert response["Error"]["Code"] == "ValidationError", params
            assert message in response["Error"]["Message"], params
            assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == "ValidationError"
            assert re.fullmatch(UUID, response["ResponseMetadata"]["RequestId"])
        stats = emu.stats()
        assert stats["invocations"]["rejected"] == len(VALIDATION_CASES)
        assert stats["invocations"]["accepted"] == 0
        assert stats["requests"]["sagemaker.InvokeEndpointAsync"] == {
            "ValidationError": len(VALIDATION_CASES)
        }


HEADER_CASES: list[tuple[dict[str, str], str]] = [
    (
        {"X-Amzn-SageMaker-RequestTTLSeconds": "59"},
        "Value '59' at 'requestTTLSeconds' failed to satisfy constraint: "
        "Member must have value greater than or equal to 60",
    ),
    (
        {"X-Amzn-SageMaker-InvocationTimeoutSeconds": "0"},
        "at 'invocationTimeoutSeconds' failed to satisfy constraint: Member must have value greater than",
    ),
    ({"X-Amzn-SageMaker-RequestTTLSeconds": "soon"}, "Value 'soon' at 'requestTTLSeconds'"),
    (
        {"X-Amzn-SageMaker-Inference-Id": "tab\tinside"},
        "at 'inferenceId' failed to satisfy constraint: Member must satisfy regular expression pattern: "
        r"\A\S[\p{Print}]*\z",
    ),
    (
        {"X-Amzn-SageMaker-InputLocation": "ftp://bucket/key"},
        "at 'inputLocation' failed to satisfy constraint: Member must satisfy regular expression pattern",
    ),
]


async def test_constraints_botocore_checks_locally_are_also_enforced_by_the_service() -> None:
    async with open_emulator() as emu, aiohttp.ClientSession() as http:
        for headers, message in HEADER_CASES:
            async with http.post(
                f"{emu.endpoint_url}/endpoints/fanout-demo/async-invocations",
                data=b"{}",
                headers={"Authorization": SIGV4, **headers},
            ) as response:
                assert response.status == 400, headers
                assert response.headers["x-amzn-ErrorType"] == "ValidationError"
                assert message in (await response.json())["message"], headers


async def test_https_input_location_is_read_from_the_s3_store() -> None:
    async with open_emulator() as emu, clients(emu) as (runtime, sqs, s3):
        await s3.put_object(Bucket="fanout-staging", Key="inputs/h.json", Body=b"{}")
        for location in (
            "https://fanout-staging.s3.us-east-1.amazonaws.com/inputs/h.json",
            "https://s3.us-east-1.amazonaws.com/fanout-staging/inputs/h.json",
        ):
            await runtime.invoke_endpoint_async(EndpointName="fanout-demo", InputLocation=location)
        messages = await receive(sqs, emu.queue_url(QUEUE), 2)
        assert [m["invocationStatus"] for m in messages] == ["Completed", "Completed"]


async def test_test_notification_goes_to_each_topic_at_start_and_on_create() -> None:
    async with open_emulator() as emu, clients(emu) as (_, sqs, _):
        url = emu.queue_url(QUEUE)
        reply = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        envelopes = [json.loads(m["Body"]) for m in reply["Messages"]]
        assert sorted(e["TopicArn"] for e in envelopes) == [
            "arn:aws:sns:us-east-1:123456789012:fanout-errors",
            "arn:aws:sns:us-east-1:123456789012:fanout-success",
        ]
        for envelope in envelopes:
            assert envelope["Type"] == "Notification"
            assert envelope["Message"] == (
                '{"eventVersion":"1.0","eventSource":"aws:sagemaker","eventName":"TestNotification"}'
            )
        emu.create_endpoint(
            EndpointConfig(
                name="second", s3_output_path="s3://fanout-output/second", success_topic="fanout-success"
            )
        )
        reply = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        (envelope,) = [json.loads(m["Body"]) for m in reply["Messages"]]
        assert json.loads(envelope["Message"])["eventName"] == "TestNotification"
        assert emu.stats()["notifications"]["published"] == 3


async def test_raw_delivery_puts_the_sagemaker_json_in_the_body() -> None:
    config = EmulatorConfig(
        buckets=("out",),
        queues=(QueueConfig("raw"),),
        topics=(TopicConfig("done", (SubscriptionConfig("raw", raw=True),)),),
        endpoints=(EndpointConfig(name="ep", s3_output_path="s3://out/r", success_topic="done"),),
    )
    async with open_emulator(config) as emu, clients(emu) as (runtime, sqs, _):
        assert emu.env["FANOUT_ENDPOINT"] == "ep"
        assert emu.env["FANOUT_QUEUE_URL"] == emu.queue_url("raw")
        assert "FANOUT_STAGING" not in emu.env
        reply = await runtime.invoke_endpoint_async(EndpointName="ep", Body=b"1")
        (message,) = await receive(sqs, emu.queue_url("raw"), 1, raw=True)
        assert message["inferenceId"] == reply["InferenceId"]
        assert "responseBody" not in message  # IncludeInferenceResponseIn is empty
        assert "FailureLocation" not in reply


async def test_stats_over_http_count_requests_and_duplicate_ids() -> None:
    async with open_emulator() as emu, clients(emu) as (runtime, _, _), aiohttp.ClientSession() as http:
        for _ in range(3):
            await runtime.invoke_endpoint_async(EndpointName="fanout-demo", Body=b"1", InferenceId="same")
        with anyio.fail_after(10):
            while emu.stats()["invocations"]["processed"] < 3:
                await anyio.sleep(0.01)
        async with http.get(f"{emu.endpoint_url}/_fanout/stats") as response:
            stats = await response.json()
        assert stats["duplicate_inference_ids"] == 2
        assert stats["invocations"]["accepted"] == 3
        assert stats["invocations"]["succeeded"] == 3
        assert stats["requests"]["sagemaker.InvokeEndpointAsync"] == {"ok": 3}
        assert stats["notifications"]["published"] == 2 + 3
        assert stats["queues"][QUEUE]["sent"] == 5
        assert stats["s3"]["objects"] == 3
        assert set(stats) >= {
            "requests",
            "invocations",
            "duplicate_inference_ids",
            "notifications",
            "queues",
            "s3",
            "faults",
        }


async def test_unsigned_requests_are_refused() -> None:
    async with (
        open_emulator() as emu,
        aiohttp.ClientSession() as http,
        http.post(f"{emu.endpoint_url}/endpoints/fanout-demo/async-invocations", data=b"{}") as response,
    ):
        assert response.status == 400
        assert response.headers["x-amzn-ErrorType"] == "IncompleteSignature"
