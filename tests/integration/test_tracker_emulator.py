"""The tracker against the emulator, with notification faults on: exactly one outcome per request.

There is no dispatcher here: the test plays its part with a plain sagemaker-runtime client,
calling ``expect`` before each invoke and ``track`` after its 202.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from typing import Any

import anyio
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from fanout._config import HybridTracking, S3Tracking, SqsTracking, inference_deadline
from fanout._models import Expired, Failed, Outcome, Submission, Succeeded
from fanout._tracking import Tracker, open_tracker
from fanout.testing import (
    Distribution,
    EmulatorConfig,
    EndpointConfig,
    FaultConfig,
    NotificationFaults,
    default_config,
    open_emulator,
)
from fanout.testing._server import Emulator

pytestmark = pytest.mark.anyio

TIME_SCALE = 0.005
"""Emulated seconds to real seconds: a 60 s RequestTTLSeconds lasts 0.3 s."""
GRACE = 1.0
FAULTS = FaultConfig(
    notifications=NotificationFaults(
        duplicate_rate=0.10,
        loss_rate=0.02,
        malformed_rate=0.01,
        delay=Distribution("uniform", low_ms=0.0, high_ms=30.0),
        reorder_window_ms=50.0,
        early_rate=0.15,
    )
)


def emulator_config() -> EmulatorConfig:
    base = default_config()
    demo = base.endpoints[0]
    slow = replace(
        demo,
        name="fanout-slow",
        instance_count=1,
        max_concurrent_invocations_per_instance=1,
        service_time=Distribution("constant", ms=40.0),
    )
    # No topics and no failure path: an expired request leaves no trace at all.
    silent = EndpointConfig(
        name="fanout-silent",
        s3_output_path="s3://fanout-output/silent",
        instance_count=1,
        max_concurrent_invocations_per_instance=1,
        service_time=Distribution("constant", ms=100.0),
    )
    return replace(base, endpoints=(demo, slow, silent), time_scale=TIME_SCALE, seed=1234, faults=FAULTS)


@asynccontextmanager
async def clients(emu: Emulator) -> AsyncIterator[tuple[Any, Any, Any]]:
    env = emu.env
    options: dict[str, Any] = {
        "endpoint_url": emu.endpoint_url,
        "region_name": env["AWS_REGION"],
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "config": AioConfig(
            retries={"total_max_attempts": 1}, max_pool_connections=64, s3={"addressing_style": "path"}
        ),
    }
    session = get_session()
    async with AsyncExitStack() as stack:
        runtime = await stack.enter_async_context(session.create_client("sagemaker-runtime", **options))
        sqs = await stack.enter_async_context(session.create_client("sqs", **options))
        s3 = await stack.enter_async_context(session.create_client("s3", **options))
        yield runtime, sqs, s3


async def invoke(
    runtime: Any, tracker: Tracker, endpoint: str, index: int, body: bytes, *, ttl: int | None = None
) -> None:
    """What the dispatcher does: expect, invoke, track."""
    inference_id = f"{endpoint}-{index:05d}"
    submitted_at = time.time()
    provisional = inference_deadline(
        submitted_at + 30, request_ttl_seconds=None, invocation_timeout_seconds=None, grace_period=GRACE
    )
    tracker.expect(inference_id, provisional)
    arguments: dict[str, Any] = {
        "EndpointName": endpoint,
        "Body": body,
        "ContentType": "application/json",
        "InferenceId": inference_id,
    }
    if ttl is not None:
        arguments |= {"RequestTTLSeconds": ttl, "InvocationTimeoutSeconds": 60}
    response = await runtime.invoke_endpoint_async(**arguments)
    accepted_at = time.time()
    scaled = (ttl or 21_600) + (60 if ttl is not None else 900)
    tracker.track(
        Submission(
            inference_id=response["InferenceId"],
            id=str(index),
            route="inline",
            input_location=None,
            output_location=response["OutputLocation"],
            failure_location=response.get("FailureLocation"),
            attempts=1,
            submitted_at=submitted_at,
            accepted_at=accepted_at,
            deadline=accepted_at + scaled * TIME_SCALE + GRACE,
        )
    )


def request_body(index: int) -> bytes:
    value: dict[str, Any] = {"n": index, "pad": "x" * (index % 50)}
    if index % 10 == 3:
        value |= {"fail": True, "reason": f"request {index} asked to fail"}
    return json.dumps(value).encode()


async def test_exactly_one_outcome_per_request_under_notification_faults() -> None:
    demo_count, slow_count, silent_count = 2000, 30, 12
    total = demo_count + slow_count + silent_count
    bodies: dict[str, bytes] = {}
    outcomes: list[Outcome] = []
    tracking = HybridTracking(
        queue_url="http://placeholder/1/q",
        reconcile_after=1.0,
        s3=S3Tracking(mode="list", interval=0.25, max_interval=1.0),
    )
    async with open_emulator(emulator_config()) as emu, clients(emu) as (runtime, sqs, s3):
        queue_url = emu.env["FANOUT_QUEUE_URL"]
        tracking = replace(
            tracking, queue_url=queue_url, sqs=SqsTracking(queue_url=queue_url, wait_time_seconds=1)
        )
        async with open_tracker(tracking=tracking, sqs=sqs, s3=s3, max_pending=total) as tracker:
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:

                    async def consume() -> None:
                        async for outcome in tracker:
                            outcomes.append(outcome)
                            if len(outcomes) == total:
                                return

                    tg.start_soon(consume)
                    limiter = anyio.Semaphore(48)

                    async def one(endpoint: str, index: int, ttl: int | None) -> None:
                        try:
                            body = request_body(index)
                            bodies[f"{endpoint}-{index:05d}"] = body
                            await invoke(runtime, tracker, endpoint, index, body, ttl=ttl)
                        finally:
                            limiter.release()

                    for endpoint, count, ttl in (
                        ("fanout-slow", slow_count, 60),
                        ("fanout-silent", silent_count, 60),
                        ("fanout-demo", demo_count, None),
                    ):
                        for index in range(count):
                            await limiter.acquire()
                            tg.start_soon(one, endpoint, index, ttl)
            with anyio.move_on_after(0.5):
                extra = await tracker.__anext__()
                pytest.fail(f"an extra outcome: {extra}")
            stats = tracker.statistics()
        emulated = emu.stats()

    counts = Counter(o.inference_id for o in outcomes)
    assert len(counts) == total
    assert set(counts.values()) == {1}
    by_status = Counter(o.status for o in outcomes)
    for outcome in outcomes:
        assert outcome.inference_id is not None
        body = bodies[outcome.inference_id]
        endpoint, number = outcome.inference_id.rsplit("-", 1)
        assert outcome.id == str(int(number))
        if isinstance(outcome, Succeeded):
            # Every result belongs to its own request.
            assert outcome.result is not None
            assert json.loads(outcome.result) == {
                "sha256": hashlib.sha256(body).hexdigest(),
                "bytes": len(body),
            }
        elif isinstance(outcome, Failed):
            reason = outcome.failure_reason or ""
            if endpoint == "fanout-demo":
                assert f"request {int(number)} asked to fail" in reason
            else:
                assert "expired" in reason.lower() or "asked to fail" in reason
        else:
            assert isinstance(outcome, Expired)
            assert endpoint != "fanout-demo"
    expired_here = {o.inference_id for o in outcomes if isinstance(o, Expired)}
    assert any(i.startswith("fanout-silent") for i in expired_here)  # our own deadline
    assert any(i.startswith("fanout-slow") for i in expired_here)  # the service's Expired notice
    assert by_status["failed"] >= demo_count // 10
    notes = emulated["notifications"]
    assert notes["lost"] > 0 and notes["duplicated"] > 0 and notes["malformed"] > 0
    assert stats.duplicates > 0
    assert stats.malformed > 0
    assert stats.s3_calls["list"] > 0  # lost notices were reconciled through S3
    assert (stats.pending, stats.held, stats.expected) == (0, 0, 0)
    # Every result came inline with its notification, or was fetched when found through S3.
    assert stats.fetch_failures == 0


async def test_sqs_only_tracking_with_s3_mode_head() -> None:
    """A smaller run in pure S3 HEAD mode and then pure SQS mode on the same emulator."""
    config = replace(emulator_config(), faults=FaultConfig())
    async with open_emulator(config) as emu, clients(emu) as (runtime, sqs, s3):
        for tracking, client in (
            (S3Tracking(mode="head", interval=0.05, max_interval=0.5), None),
            (SqsTracking(queue_url=emu.env["FANOUT_QUEUE_URL"], wait_time_seconds=1), sqs),
        ):
            outcomes: list[Outcome] = []
            async with open_tracker(tracking=tracking, sqs=client, s3=s3) as tracker:
                with anyio.fail_after(15):
                    for index in range(40):
                        await invoke(runtime, tracker, "fanout-demo", index, request_body(index))
                    async for outcome in tracker:
                        outcomes.append(outcome)
                        if len(outcomes) == 40:
                            break
                stats = tracker.statistics()
            assert sorted(o.id or "" for o in outcomes) == sorted(str(i) for i in range(40))
            assert Counter(o.status for o in outcomes) == {"succeeded": 36, "failed": 4}
            if isinstance(tracking, S3Tracking):
                assert stats.s3_calls["head"] >= 40
            else:
                # AWS's default: the notification does not carry the output, so each success is
                # fetched (one GET), and nothing is looked for in S3.
                assert stats.s3_calls == {"head": 0, "list": 0, "get": 36}
            # Drain what the previous mode left on the queue before the next one.
            await sqs.purge_queue(QueueUrl=emu.env["FANOUT_QUEUE_URL"])
