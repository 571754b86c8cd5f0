"""Each fault knob of the emulator shows its effect on real aiobotocore clients."""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import anyio
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError, ConnectionClosedError

from fanout.testing import (
    Distribution,
    Emulator,
    EmulatorConfig,
    EndpointConfig,
    FaultConfig,
    NotificationFaults,
    ThrottleConfig,
    default_config,
    open_emulator,
)

pytestmark = pytest.mark.anyio

QUEUE = "fanout-notifications"


def seeded(seed: int = 11, **faults: Any) -> EmulatorConfig:
    return dataclasses.replace(default_config(), seed=seed, faults=FaultConfig(**faults))


@asynccontextmanager
async def clients(emu: Emulator) -> AsyncIterator[tuple[Any, Any]]:
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
        yield runtime, sqs


async def invoke_many(runtime: Any, count: int, endpoint: str = "fanout-demo") -> Counter[str]:
    """Send ``count`` invokes one after another; count outcomes by error code (or "ok")."""
    outcomes: Counter[str] = Counter()
    for i in range(count):
        try:
            await runtime.invoke_endpoint_async(EndpointName=endpoint, Body=b"{}", InferenceId=f"id-{i}")
        except ClientError as exc:
            outcomes[exc.response["Error"]["Code"]] += 1
        else:
            outcomes["ok"] += 1
    return outcomes


async def drain(emu: Emulator, sqs: Any, processed: int, *, timeout: float = 10) -> list[str]:
    """Every message body delivered for ``processed`` invocations, TestNotifications excluded."""
    url = emu.queue_url(QUEUE)
    bodies: list[str] = []
    with anyio.fail_after(timeout):
        while emu.stats()["invocations"]["processed"] < processed:
            await anyio.sleep(0.01)
        while True:
            reply = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
            messages = reply.get("Messages", [])
            if messages:
                await sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
                    ],
                )
                bodies.extend(m["Body"] for m in messages)
                continue
            stats = emu.stats()
            queue = stats["queues"][QUEUE]
            if stats["notifications"]["pending"] == 0 and queue["visible"] == queue["delayed"] == 0:
                break
            await anyio.sleep(0.02)
    return [b for b in bodies if "TestNotification" not in b]


def inference_ids(bodies: list[str]) -> list[str]:
    return [json.loads(json.loads(body)["Message"])["inferenceId"] for body in bodies]


async def test_throttle_bucket_rejects_above_its_rate_with_a_null_message() -> None:
    async with (
        open_emulator(seeded(throttle=ThrottleConfig(rate=2, burst=5))) as emu,
        clients(emu) as (runtime, _),
    ):
        start = time.monotonic()
        outcomes = await invoke_many(runtime, 30)
        elapsed = time.monotonic() - start
        assert set(outcomes) == {"ok", "ThrottlingException"}
        assert outcomes["ok"] >= 5
        assert outcomes["ok"] <= 5 + 2 * elapsed + 1
        assert emu.stats()["faults"]["throttled"] == outcomes["ThrottlingException"]
        with pytest.raises(ClientError) as info:
            await runtime.invoke_endpoint_async(EndpointName="fanout-demo", Body=b"{}")
        error = info.value.response
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert error["Error"] == {"Code": "ThrottlingException", "Message": None}
        assert emu.stats()["invocations"]["accepted"] == outcomes["ok"]


async def test_per_endpoint_buckets_are_independent() -> None:
    base = seeded(throttle=ThrottleConfig(rate=0.01, burst=3, per_endpoint=True))
    other = EndpointConfig(name="other", s3_output_path="s3://fanout-output/other")
    config = dataclasses.replace(base, endpoints=(*base.endpoints, other))
    async with open_emulator(config) as emu, clients(emu) as (runtime, _):
        assert await invoke_many(runtime, 5) == Counter({"ok": 3, "ThrottlingException": 2})
        assert await invoke_many(runtime, 5, "other") == Counter({"ok": 3, "ThrottlingException": 2})


async def test_error_rate_yields_500_internal_failure_and_503_service_unavailable() -> None:
    async with open_emulator(seeded(error_rate=0.5)) as emu, clients(emu) as (runtime, _):
        outcomes = await invoke_many(runtime, 60)
        assert outcomes["InternalFailure"] > 0
        assert outcomes["ServiceUnavailable"] > 0
        assert outcomes["ok"] > 0
        assert (
            emu.stats()["faults"]["errors_5xx"]
            == outcomes["InternalFailure"] + outcomes["ServiceUnavailable"]
        )
        requests = emu.stats()["requests"]["sagemaker.InvokeEndpointAsync"]
        assert requests == dict(outcomes)
        with pytest.raises((runtime.exceptions.InternalFailure, runtime.exceptions.ServiceUnavailable)):
            for _ in range(20):
                await runtime.invoke_endpoint_async(EndpointName="fanout-demo", Body=b"{}")


async def test_faults_are_reproducible_with_the_seed() -> None:
    runs = []
    for _ in range(2):
        async with open_emulator(seeded(seed=5, error_rate=0.3)) as emu, clients(emu) as (runtime, _):
            outcomes: list[str] = []
            for _ in range(30):
                try:
                    await runtime.invoke_endpoint_async(EndpointName="fanout-demo", Body=b"{}")
                    outcomes.append("ok")
                except ClientError as exc:
                    outcomes.append(exc.response["Error"]["Code"])
            runs.append(outcomes)
    assert runs[0] == runs[1]
    assert len(set(runs[0])) > 1


async def test_dropped_connections_reach_the_client_as_connection_errors() -> None:
    async with open_emulator(seeded(drop_connection_rate=1.0)) as emu, clients(emu) as (runtime, _):
        for _ in range(2):
            with pytest.raises(ConnectionClosedError):
                await runtime.invoke_endpoint_async(EndpointName="fanout-demo", Body=b"{}")
        emu.set_faults(FaultConfig())
        reply = await runtime.invoke_endpoint_async(EndpointName="fanout-demo", Body=b"{}")
        assert reply["ResponseMetadata"]["HTTPStatusCode"] == 202
        stats = emu.stats()
        assert stats["faults"]["dropped_connections"] == 2
        assert stats["requests"]["sagemaker.InvokeEndpointAsync"] == {"dropped": 2, "ok": 1}
        assert stats["invocations"]["accepted"] == 1


async def test_latency_is_added_per_api() -> None:
    latency = {"sqs.GetQueueAttributes": Distribution("constant", ms=200)}
    async with open_emulator(seeded(latency=latency)) as emu, clients(emu) as (runtime, sqs):
        start = time.monotonic()
        await sqs.get_queue_attributes(QueueUrl=emu.queue_url(QUEUE), AttributeNames=["All"])
        assert time.monotonic() - start >= 0.2
        await sqs.receive_message(QueueUrl=emu.queue_url(QUEUE))
        await runtime.invoke_endpoint_async(EndpointName="fanout-demo", Body=b"{}")
        assert emu.stats()["faults"]["delayed_requests"] == 1


async def test_faults_hit_only_their_targets() -> None:
    async with (
        open_emulator(seeded(error_rate=1.0, targets=("sqs.ReceiveMessage",))) as emu,
        clients(emu) as (
            runtime,
            sqs,
        ),
    ):
        await runtime.invoke_endpoint_async(EndpointName="fanout-demo", Body=b"{}")
        await sqs.get_queue_attributes(QueueUrl=emu.queue_url(QUEUE), AttributeNames=["All"])
        with pytest.raises(ClientError) as info:
            await sqs.receive_message(QueueUrl=emu.queue_url(QUEUE))
        assert info.value.response["Error"]["Code"] in ("InternalFailure", "ServiceUnavailable")


async def test_duplicate_notifications() -> None:
    async with open_emulator(seeded()) as emu, clients(emu) as (runtime, sqs):
        emu.set_faults(FaultConfig(notifications=NotificationFaults(duplicate_rate=0.1)))
        assert await invoke_many(runtime, 100) == {"ok": 100}
        ids = inference_ids(await drain(emu, sqs, 100))
        duplicated = emu.stats()["notifications"]["duplicated"]
        assert duplicated > 0
        assert len(ids) == 100 + duplicated
        assert set(ids) == {f"id-{i}" for i in range(100)}
        assert sum(n - 1 for n in Counter(ids).values()) == duplicated


async def test_lost_notifications() -> None:
    async with open_emulator(seeded()) as emu, clients(emu) as (runtime, sqs):
        emu.set_faults(FaultConfig(notifications=NotificationFaults(loss_rate=0.3)))
        await invoke_many(runtime, 60)
        ids = inference_ids(await drain(emu, sqs, 60))
        lost = emu.stats()["notifications"]["lost"]
        assert 0 < lost < 60
        assert len(ids) == len(set(ids)) == 60 - lost


async def test_malformed_notifications_cannot_be_parsed() -> None:
    async with open_emulator(seeded()) as emu, clients(emu) as (runtime, sqs):
        emu.set_faults(FaultConfig(notifications=NotificationFaults(malformed_rate=0.3)))
        await invoke_many(runtime, 60)
        bodies = await drain(emu, sqs, 60)
        assert len(bodies) == 60
        unparseable = 0
        for body in bodies:
            try:
                json.loads(body)
            except ValueError:
                unparseable += 1
        assert unparseable == emu.stats()["notifications"]["malformed"] > 0


async def test_delayed_and_reordered_notifications_all_arrive() -> None:
    faults = NotificationFaults(delay=Distribution("constant", ms=20), reorder_window_ms=200)
    config = dataclasses.replace(
        seeded(),
        endpoints=(
            dataclasses.replace(
                default_config().endpoints[0], instance_count=1, max_concurrent_invocations_per_instance=1
            ),
        ),
    )
    async with open_emulator(config) as emu, clients(emu) as (runtime, sqs):
        emu.set_faults(FaultConfig(notifications=faults))
        await invoke_many(runtime, 40)
        ids = inference_ids(await drain(emu, sqs, 40))
        assert sorted(ids) == sorted(f"id-{i}" for i in range(40))
        # one worker completes them in submission order; the random extra delay reorders them
        assert ids != [f"id-{i}" for i in range(40)]
        assert emu.stats()["notifications"]["delayed"] == 40


async def test_pending_delayed_deliveries_do_not_outlive_the_emulator() -> None:
    async with open_emulator(seeded()) as emu, clients(emu) as (runtime, _):
        emu.set_faults(
            FaultConfig(notifications=NotificationFaults(delay=Distribution("constant", ms=60_000)))
        )
        await invoke_many(runtime, 3)
        with anyio.fail_after(10):
            while emu.stats()["notifications"]["pending"] < 3:
                await anyio.sleep(0.01)
    assert emu.stats()["notifications"]["pending"] == 0
    assert emu.stats()["queues"][QUEUE]["sent"] == 2  # only the TestNotifications


async def test_faults_change_over_http() -> None:
    async with open_emulator(seeded()) as emu, clients(emu) as (runtime, _), aiohttp.ClientSession() as http:
        url = f"{emu.endpoint_url}/_fanout/faults"
        async with http.put(url, json={"error_rate": 1, "error_statuses": [503]}) as response:
            assert response.status == 200
        assert await invoke_many(runtime, 3) == {"ServiceUnavailable": 3}
        async with http.put(url, json={"notifications": {"loss_rate": -0.1}}) as response:
            assert response.status == 400
            assert (await response.json())["message"] == (
                "faults.notifications.loss_rate: must be between 0 and 1, got -0.1"
            )
        assert emu.faults.error_rate == 1
        async with http.put(url, json={}) as response:
            assert response.status == 200
        assert await invoke_many(runtime, 2) == {"ok": 2}


def slow_config(service_ms: float, **faults: Any) -> EmulatorConfig:
    """The default config with one worker that takes ``service_ms`` per invocation."""
    base = seeded(**faults)
    endpoint = dataclasses.replace(
        base.endpoints[0],
        instance_count=1,
        max_concurrent_invocations_per_instance=1,
        service_time=Distribution("constant", ms=service_ms),
    )
    return dataclasses.replace(base, endpoints=(endpoint,))


async def receive_now(emu: Emulator, sqs: Any) -> list[dict[str, Any]]:
    """The SageMaker notifications in the queue at this instant (no long poll), deleted."""
    url = emu.queue_url(QUEUE)
    found: list[dict[str, Any]] = []
    for _ in range(10):  # bounded: a few messages at most are in the queue
        reply = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = reply.get("Messages", [])
        if not messages:
            break
        for message in messages:
            await sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            value = json.loads(json.loads(message["Body"])["Message"])
            if value.get("eventName") != "TestNotification":
                found.append(value)
    return found


async def test_early_notifications_are_in_sqs_before_the_202_reaches_the_client() -> None:
    # 1 s per invocation: without the knob, the 202 comes back long before the notification, even on
    # a loaded machine
    async with open_emulator(slow_config(1_000)) as emu, clients(emu) as (runtime, sqs):
        await runtime.invoke_endpoint_async(EndpointName="fanout-demo", Body=b"{}", InferenceId="late")
        assert await receive_now(emu, sqs) == []
        with anyio.fail_after(10):
            while emu.stats()["invocations"]["processed"] < 1:
                await anyio.sleep(0.01)
        assert [m["inferenceId"] for m in await receive_now(emu, sqs)] == ["late"]

        emu.set_faults(FaultConfig(notifications=NotificationFaults(early_rate=1.0)))
        for inference_id, body in (("early-ok", b"{}"), ("early-failed", b'{"fail": true}')):
            start = time.monotonic()
            reply = await runtime.invoke_endpoint_async(
                EndpointName="fanout-demo", Body=body, InferenceId=inference_id
            )
            assert time.monotonic() - start >= 1.0  # the 202 waited for the invocation
            # the normal 202, every header included
            assert reply["ResponseMetadata"]["HTTPStatusCode"] == 202
            assert reply["InferenceId"] == inference_id
            assert reply["OutputLocation"].startswith("s3://fanout-output/results/")
            assert reply["FailureLocation"].startswith("s3://fanout-output/failures/")
            (message,) = await receive_now(emu, sqs)
            assert message["inferenceId"] == inference_id
            assert message["invocationStatus"] == ("Failed" if "fail" in inference_id else "Completed")
        stats = emu.stats()
        assert stats["notifications"]["early"] == 2
        assert stats["notifications"]["early_capped"] == 0
        assert stats["invocations"]["accepted"] == 3
        assert stats["requests"]["sagemaker.InvokeEndpointAsync"] == {"ok": 3}


async def test_early_rate_is_a_share_and_changes_over_http() -> None:
    async with (
        open_emulator(seeded()) as emu,
        clients(emu) as (runtime, sqs),
        aiohttp.ClientSession() as http,
    ):
        url = f"{emu.endpoint_url}/_fanout/faults"
        async with http.put(url, json={"notifications": {"early_rate": 0.3}}) as response:
            assert response.status == 200
        assert emu.faults.notifications.early_rate == 0.3
        assert await invoke_many(runtime, 100) == {"ok": 100}
        early = emu.stats()["notifications"]["early"]
        assert 10 <= early <= 60
        assert sorted(inference_ids(await drain(emu, sqs, 100))) == sorted(f"id-{i}" for i in range(100))


async def test_an_early_202_is_released_by_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fanout.testing._sagemaker.EARLY_HOLD_SECONDS", 0.2)
    config = slow_config(3_000, notifications=NotificationFaults(early_rate=1.0))
    async with open_emulator(config) as emu, clients(emu) as (runtime, sqs):
        start = time.monotonic()
        await runtime.invoke_endpoint_async(EndpointName="fanout-demo", Body=b"{}")
        assert 0.2 <= time.monotonic() - start < 2.5
        assert await receive_now(emu, sqs) == []
        assert emu.stats()["notifications"]["early_capped"] == 1


async def test_an_endpoint_without_topics_never_holds_its_202() -> None:
    base = slow_config(2_000, notifications=NotificationFaults(early_rate=1.0))
    silent = dataclasses.replace(base.endpoints[0], success_topic=None, error_topic=None)
    async with (
        open_emulator(dataclasses.replace(base, endpoints=(silent,))) as emu,
        clients(emu) as (runtime, _),
    ):
        start = time.monotonic()
        await runtime.invoke_endpoint_async(EndpointName="fanout-demo", Body=b"{}")
        assert time.monotonic() - start < 1.5
        assert emu.stats()["notifications"]["early"] == 0


async def test_a_dropped_response_loses_the_202_but_the_invocation_runs() -> None:
    async with (
        open_emulator(seeded(drop_response_rate=1.0)) as emu,
        clients(emu) as (runtime, sqs),
        get_session().create_client(
            "s3",
            region_name=emu.config.region,
            endpoint_url=emu.endpoint_url,
            aws_access_key_id="AKID",
            aws_secret_access_key="secret",
        ) as s3,
    ):
        with pytest.raises(ConnectionClosedError):
            await runtime.invoke_endpoint_async(
                EndpointName="fanout-demo", Body=b"{}", InferenceId="lost-202"
            )
        (body,) = await drain(emu, sqs, 1)
        message = json.loads(json.loads(body)["Message"])
        assert message["inferenceId"] == "lost-202"
        assert message["invocationStatus"] == "Completed"
        key = message["responseParameters"]["outputLocation"].removeprefix("s3://fanout-output/")
        output = await s3.get_object(Bucket="fanout-output", Key=key)
        assert json.loads(await output["Body"].read())["bytes"] == 2
        stats = emu.stats()
        assert stats["faults"]["dropped_responses"] == 1
        assert stats["faults"]["dropped_connections"] == 0
        assert stats["requests"]["sagemaker.InvokeEndpointAsync"] == {"dropped_response": 1}
        assert stats["invocations"]["accepted"] == stats["invocations"]["succeeded"] == 1


async def test_drops_before_and_after_the_handler_work_together() -> None:
    config = seeded(drop_connection_rate=0.3, drop_response_rate=0.3)
    async with open_emulator(config) as emu, clients(emu) as (runtime, sqs):
        answered = 0
        for i in range(60):
            try:
                await runtime.invoke_endpoint_async(
                    EndpointName="fanout-demo", Body=b"{}", InferenceId=f"id-{i}"
                )
            except ConnectionClosedError:
                pass
            else:
                answered += 1
        stats = emu.stats()
        before, after = stats["faults"]["dropped_connections"], stats["faults"]["dropped_responses"]
        assert before > 0 and after > 0
        assert answered + before + after == 60
        assert stats["requests"]["sagemaker.InvokeEndpointAsync"] == {
            "ok": answered,
            "dropped": before,
            "dropped_response": after,
        }
        # a request dropped before its handler never ran; one dropped after it did
        accepted = stats["invocations"]["accepted"]
        assert accepted == answered + after
        assert len(set(inference_ids(await drain(emu, sqs, accepted)))) == accepted
