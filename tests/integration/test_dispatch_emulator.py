"""The Dispatcher through aiobotocore against the local emulator, over loopback."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import anyio
import pytest
from aiobotocore.session import get_session

from fanout import Dispatcher, open_runtime_client
from fanout._config import Limits, RetryPolicy, Staging, parse_s3_uri
from fanout._exceptions import BucketNotFound, EndpointNotFound
from fanout._models import InferenceRequest, Submission
from fanout.testing import FaultConfig, NotificationFaults, ThrottleConfig, default_config, open_emulator

pytestmark = pytest.mark.anyio


@pytest.fixture
async def emulator(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    early = FaultConfig(notifications=NotificationFaults(early_rate=0.2))
    async with open_emulator(replace(default_config(), faults=early)) as emu:
        for name, value in emu.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("AWS_DEFAULT_REGION", emu.env["AWS_REGION"])
        yield emu


async def _output(emu: Any, location: str) -> dict[str, Any]:
    where = parse_s3_uri(location)
    with anyio.fail_after(10):
        while (obj := emu.s3.get_object(where.bucket, where.key)) is None:
            await anyio.sleep(0.02)
    result: dict[str, Any] = json.loads(obj.body)
    return result


async def test_inline_and_staged_payloads_arrive_byte_identical(emulator: Any) -> None:
    env = emulator.env
    limits = Limits(max_in_flight=8, max_pending=100)
    payloads = {
        "tiny": b"\x00\xff binary \xc3\xa9",
        "at-limit": bytes(range(256)) * 500,  # exactly 128,000 bytes
        "over-limit": b"\x01" + bytes(range(256)) * 500,  # 128,001 bytes
        "large": b"z" * 400_000,
    }
    assert len(payloads["at-limit"]) == 128_000 and len(payloads["over-limit"]) == 128_001
    async with open_runtime_client(limits=limits) as runtime, get_session().create_client("s3") as s3:
        dispatcher = Dispatcher(
            endpoint_name=env["FANOUT_ENDPOINT"],
            runtime=runtime,
            s3=s3,
            limits=limits,
            staging=Staging(location=env["FANOUT_STAGING"]),
        )
        await dispatcher.check()
        submissions: dict[str, Submission] = {}
        async with dispatcher.submit_all(
            InferenceRequest(body=b, id=k) for k, b in payloads.items()
        ) as outcomes:
            async for outcome in outcomes:
                assert isinstance(outcome, Submission), outcome
                assert outcome.id is not None
                submissions[outcome.id] = outcome
                dispatcher.release(outcome)
        assert {k: s.route for k, s in submissions.items()} == {
            "tiny": "inline",
            "at-limit": "inline",
            "over-limit": "s3",
            "large": "s3",
        }
        for key, body in payloads.items():
            submission = submissions[key]
            assert submission.output_location is not None
            output = await _output(emulator, submission.output_location)
            assert output == {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}
        assert dispatcher.statistics().staged == 2


async def test_unknown_endpoint_and_missing_bucket_are_run_level(emulator: Any) -> None:
    async with open_runtime_client(limits=Limits(max_in_flight=2)) as runtime:
        dispatcher = Dispatcher(
            endpoint_name="no-such-endpoint", runtime=runtime, retry=RetryPolicy(attempts=2)
        )
        with pytest.raises(EndpointNotFound):
            await dispatcher.submit(InferenceRequest(body=b"1"))
    async with get_session().create_client("s3") as s3, open_runtime_client() as runtime:
        dispatcher = Dispatcher(
            endpoint_name="fanout-demo",
            runtime=runtime,
            s3=s3,
            staging=Staging(location="s3://no-such-bucket/in"),
        )
        with pytest.raises(BucketNotFound):
            await dispatcher.check()


async def test_a_throttled_run_loses_and_duplicates_nothing(emulator: Any) -> None:
    n, rate = 1_500, 300.0
    emulator.set_faults(replace(FaultConfig(), throttle=ThrottleConfig(rate=rate, burst=rate / 10)))
    limits = Limits(max_in_flight=32, max_pending=n)
    retry = RetryPolicy(attempts=50, timeout=60, wait_initial=0.01, wait_max=0.5)
    accepted: set[str] = set()
    with anyio.fail_after(14):
        async with open_runtime_client(limits=limits) as runtime:
            dispatcher = Dispatcher(endpoint_name="fanout-demo", runtime=runtime, limits=limits, retry=retry)
            source = (InferenceRequest(body=str(i).encode(), id=str(i)) for i in range(n))
            async with dispatcher.submit_all(source) as outcomes:
                async for outcome in outcomes:
                    assert isinstance(outcome, Submission), outcome
                    accepted.add(outcome.inference_id)
    assert len(accepted) == n
    stats = emulator.stats()
    assert stats["invocations"]["accepted"] == n
    assert stats["duplicate_inference_ids"] == 0
    assert stats["faults"]["throttled"] == dispatcher.statistics().throttles > 0
