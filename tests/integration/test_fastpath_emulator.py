"""The fast path against the local emulator: its invokes are accepted, run and notify; faults and
rotating credentials behave as they do through aiobotocore."""

from __future__ import annotations

import datetime
import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from aiobotocore.session import get_session

from fanout._body_patch import ensure_body_member
from fanout._fastpath import FastInvoker
from fanout._retry import classify, delivery_of
from fanout.testing import Emulator, FaultConfig, ThrottleConfig, open_emulator

pytestmark = pytest.mark.anyio

CALL = "sagemaker-runtime.InvokeEndpointAsync"


@pytest.fixture
async def emulator(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Emulator]:
    async with open_emulator() as emu:
        for name, value in emu.env.items():
            monkeypatch.setenv(name, value)
        yield emu


def _session() -> Any:
    session = get_session()
    ensure_body_member(session)  # botocore before 1.43.29 has no Body
    return session


@asynccontextmanager
async def _runtime(counter: Counter[str] | None = None) -> AsyncIterator[tuple[Any, FastInvoker]]:
    from aiobotocore.config import AioConfig

    config = AioConfig(retries={"total_max_attempts": 1, "mode": "standard"}, max_pool_connections=8)
    async with (
        _session().create_client("sagemaker-runtime", config=config) as runtime,
        FastInvoker(runtime, counter=counter) as fast,
    ):
        yield runtime, fast


async def _notifications(queue_url: str, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """The notifications for ``wanted`` inference ids, by id, read from the SQS queue."""
    found: dict[str, dict[str, Any]] = {}
    async with get_session().create_client("sqs") as sqs:
        with anyio.fail_after(30):
            while not wanted <= found.keys():
                answer = await sqs.receive_message(
                    QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
                )
                for message in answer.get("Messages", []):
                    envelope = json.loads(message["Body"])
                    notification = json.loads(envelope.get("Message", message["Body"]))
                    if notification.get("inferenceId") in wanted:
                        found[notification["inferenceId"]] = notification
                    await sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return found


async def test_fast_path_invokes_are_accepted_run_and_notify(emulator: Emulator) -> None:
    env = emulator.env
    endpoint = env["FANOUT_ENDPOINT"]
    bodies = {f"fast-{n}": json.dumps({"n": n, "fail": n % 5 == 4}).encode() for n in range(10)}
    staged = b'{"staged": true}'
    calls: Counter[str] = Counter()
    async with _runtime(calls) as (_, fast), get_session().create_client("s3") as s3:
        await s3.put_object(Bucket="fanout-staging", Key="inputs/fast.json", Body=staged)
        responses = {
            inference_id: await fast.invoke_endpoint_async(
                EndpointName=endpoint,
                Body=body,
                ContentType="application/json",
                InferenceId=inference_id,
                RequestTTLSeconds=600,
            )
            for inference_id, body in bodies.items()
        }
        responses["fast-staged"] = await fast.invoke_endpoint_async(
            EndpointName=endpoint,
            InputLocation="s3://fanout-staging/inputs/fast.json",
            ContentType="application/json",
            InferenceId="fast-staged",
        )
    bodies["fast-staged"] = staged
    assert calls == Counter({CALL: len(bodies)})
    assert emulator.stats()["requests"]["sagemaker.InvokeEndpointAsync"] == {"ok": len(bodies)}
    for inference_id, response in responses.items():
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 202
        assert response["InferenceId"] == inference_id
        assert response["OutputLocation"].startswith("s3://fanout-output/results/")

    notifications = await _notifications(env["FANOUT_QUEUE_URL"], set(bodies))
    for inference_id, body in bodies.items():
        notification = notifications[inference_id]
        failing = json.loads(body).get("fail", False)
        assert notification["invocationStatus"] == ("Failed" if failing else "Completed")
        if not failing:
            location = responses[inference_id]["OutputLocation"]
            assert notification["responseParameters"]["outputLocation"] == location
            bucket, _, key = location.removeprefix("s3://").partition("/")
            output = emulator.s3.get_object(bucket, key)
            assert output is not None
            assert json.loads(output.body)["sha256"] == hashlib.sha256(body).hexdigest()


FAULTS: dict[str, FaultConfig] = {
    "throttled": FaultConfig(throttle=ThrottleConfig(rate=1e-6, burst=1)),
    "500": FaultConfig(error_rate=1.0, error_statuses=(500,)),
    "503": FaultConfig(error_rate=1.0, error_statuses=(503,)),
    "connection dropped": FaultConfig(drop_connection_rate=1.0),
    "response lost": FaultConfig(drop_response_rate=1.0),
}


@pytest.mark.parametrize("name", list(FAULTS))
async def test_emulator_faults_fail_the_same_way_on_both_paths(emulator: Emulator, name: str) -> None:
    kwargs = {"EndpointName": emulator.env["FANOUT_ENDPOINT"], "Body": b'{"n": 1}', "InferenceId": "f-1"}
    emulator.set_faults(FAULTS[name])
    outcomes: list[BaseException] = []
    async with _runtime() as (runtime, fast):
        if name == "throttled":
            await runtime.invoke_endpoint_async(**kwargs)  # takes the bucket's one token
        for call in (runtime.invoke_endpoint_async, fast.invoke_endpoint_async):
            with pytest.raises(Exception) as raised:
                await call(**kwargs)
            outcomes.append(raised.value)
    expected, actual = outcomes
    assert type(actual) is type(expected)
    assert classify(actual) == classify(expected)
    assert delivery_of(actual) == delivery_of(expected)
    expected_response: Any = getattr(expected, "response", None) or {}
    actual_response: Any = getattr(actual, "response", None) or {}
    assert actual_response.get("Error") == expected_response.get("Error")


async def test_rotating_credentials_are_accepted(emulator: Emulator) -> None:
    from aiobotocore.credentials import AioRefreshableCredentials

    generation = 0

    async def refresh() -> dict[str, str]:
        nonlocal generation
        generation += 1
        # Inside botocore's mandatory refresh window: every call gets new keys.
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=1)
        return {
            "access_key": f"AKIDROTATING{generation}",
            "secret_key": f"secret-{generation}",
            "token": f"token-{generation}",
            "expiry_time": expiry.isoformat(),
        }

    credentials = AioRefreshableCredentials.create_from_metadata(await refresh(), refresh, "test")
    async with _runtime() as (runtime, fast):
        runtime._request_signer._credentials = credentials
        for n in range(3):
            response = await fast.invoke_endpoint_async(
                EndpointName=emulator.env["FANOUT_ENDPOINT"], Body=b"{}", InferenceId=f"rot-{n}"
            )
            assert response["InferenceId"] == f"rot-{n}"
    assert generation == 4  # the first keys, then new ones for each of the three calls
