"""The tracker's own benchmark: ``fanout.open_tracker`` fed by hand, with no dispatcher.

Run by ``python -m benchmarks.tracking`` (which reports it on its own) and, for SQS, by the
``tracking_cost`` scenario of ``python -m benchmarks``.

- ``throughput``: the queue is filled with pre-built SageMaker notifications (SNS envelope, inline
  responseBody), every id is expected and tracked, and then the tracker drains the queue: outcomes
  per second of wall time and per CPU-second of this process.
- ``latency``: the same kind of queue fed at a steady rate while the tracker consumes: the time from
  the SendMessageBatch call to the outcome coming out of ``async for``, p50 and p99.
- ``measure_sqs``: both, each in a fresh event loop, as one ``Sample``.
- ``s3_cost``: an in-process emulator runs real invocations (service time 0-3 s), tracked by S3
  polling alone, in HEAD or LIST mode: S3 API calls (head + list + get) per completion.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import replace
from typing import Any

import anyio

from fanout import S3Tracking, SqsTracking, Submission, Tracker, open_tracker
from fanout.testing import Distribution, default_config, open_emulator

from .._harness import CpuClock, Sample, percentile
from ._workload import loop_options, open_clients

__all__ = ["latency", "measure_sqs", "s3_cost", "throughput"]


def _client_config() -> Any:
    from aiobotocore.config import AioConfig

    return AioConfig(
        retries={"total_max_attempts": 1}, max_pool_connections=64, s3={"addressing_style": "path"}
    )


def notification_body(inference_id: str) -> str:
    message = {
        "awsRegion": "us-east-1",
        "eventTime": "2026-11-24T10:00:01.000Z",
        "receivedTime": "2026-11-24T10:00:00.000Z",
        "invocationStatus": "Completed",
        "requestParameters": {"contentType": "application/json", "endpointName": "fanout-demo"},
        "responseParameters": {
            "contentType": "application/json",
            "outputLocation": f"s3://fanout-output/results/{inference_id}.out",
        },
        "responseBody": {
            "content": base64.b64encode(b'{"sha256":"00","bytes":2}').decode(),
            "message": "Check S3 path location(if configured) or Cloudwatch for additional details.",
            "encoding": "BASE64",
        },
        "inferenceId": inference_id,
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
    }
    return json.dumps({"Type": "Notification", "MessageId": inference_id, "Message": json.dumps(message)})


def submission(inference_id: str, now: float) -> Submission:
    return Submission(
        inference_id=inference_id,
        id=inference_id,
        route="inline",
        input_location=None,
        output_location=f"s3://fanout-output/results/{inference_id}.out",
        failure_location=f"s3://fanout-output/failures/{inference_id}-error.out",
        attempts=1,
        submitted_at=now,
        accepted_at=now,
        deadline=now + 3600,
    )


def _track_all(tracker: Tracker, ids: list[str]) -> None:
    now = time.time()
    for inference_id in ids:
        tracker.expect(inference_id, now + 3600)
        tracker.track(submission(inference_id, now))


async def send_all(sqs: Any, queue_url: str, ids: list[str], sent: dict[str, float] | None = None) -> None:
    limiter = anyio.Semaphore(16)

    async def batch(chunk: list[str]) -> None:
        try:
            started = time.perf_counter()
            entries = [{"Id": str(i), "MessageBody": notification_body(x)} for i, x in enumerate(chunk)]
            await sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            if sent is not None:
                sent.update(dict.fromkeys(chunk, started))
        finally:
            limiter.release()

    async with anyio.create_task_group() as tg:
        for start in range(0, len(ids), 10):
            await limiter.acquire()
            tg.start_soon(batch, ids[start : start + 10])


async def drain(tracker: Tracker, count: int, emitted: dict[str, float] | None = None) -> None:
    received = 0
    async for outcome in tracker:
        if emitted is not None and outcome.inference_id is not None:
            emitted[outcome.inference_id] = time.perf_counter()
        tracker.acknowledge(outcome.inference_id or "")
        received += 1
        if received == count:
            return


async def throughput(env: dict[str, str], count: int) -> dict[str, float]:
    """``count`` queued notifications drained by the SQS tracker: outcomes per second and per CPU-second."""
    queue_url = env["FANOUT_QUEUE_URL"]
    async with open_clients(env, "sqs", config=_client_config()) as (sqs,):
        ids = [f"tp-{n:07d}" for n in range(count)]
        await send_all(sqs, queue_url, ids)
        tracking = SqsTracking(queue_url=queue_url, receivers=4)
        async with open_tracker(tracking=tracking, sqs=sqs, fetch=False, max_pending=count) as tracker:
            _track_all(tracker, ids)
            with CpuClock() as clock, anyio.fail_after(300):
                await drain(tracker, count)
            stats = tracker.statistics()
    return {
        "count": count,
        "wall": clock.wall,
        "cpu": clock.client_cpu,
        "per_s": count / clock.wall,
        "per_cpu_s": count / clock.client_cpu if clock.client_cpu > 0 else float("nan"),
        "receive_calls": stats.received / max(1, count),
    }


async def latency(env: dict[str, str], rate: float, seconds: float) -> dict[str, float]:
    """Notifications sent at ``rate`` per second for ``seconds``: SendMessageBatch → outcome, p50 and p99."""
    count = int(rate * seconds) // 10 * 10
    sent: dict[str, float] = {}
    emitted: dict[str, float] = {}
    async with (
        open_clients(env, "sqs", config=_client_config()) as (sqs,),
        open_clients(env, "sqs", config=_client_config()) as (producer,),
    ):
        # A fresh queue: long polls that the previous phase abandoned would still take messages
        # from the old one and hide them for the visibility timeout (as real SQS does).
        queue_url = (await sqs.create_queue(QueueName="tracking-latency"))["QueueUrl"]
        tracking = SqsTracking(queue_url=queue_url, receivers=4)
        async with open_tracker(
            tracking=tracking, sqs=sqs, fetch=False, max_pending=max(count, 1)
        ) as tracker:
            ids = [f"lat-{n:07d}" for n in range(count)]
            _track_all(tracker, ids)
            with anyio.fail_after(seconds + 60):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(drain, tracker, count, emitted)
                    start = time.perf_counter()
                    for index in range(0, count, 10):
                        await anyio.sleep(max(0.0, start + index / rate - time.perf_counter()))
                        tg.start_soon(send_all, producer, queue_url, ids[index : index + 10], sent)
    delays = [(emitted[i] - sent[i]) * 1000 for i in sent if i in emitted]
    return {
        "count": len(delays),
        "rate": rate,
        "p50_ms": percentile(delays, 50),
        "p99_ms": percentile(delays, 99),
    }


def measure_sqs(
    env: dict[str, str], *, notifications: int, rate: float, seconds: float, uvloop: bool
) -> Sample:
    """``throughput``, then ``latency``, each in a fresh event loop, against the emulator of ``env``."""
    options = loop_options(uvloop)
    drained = anyio.run(throughput, env, notifications, backend_options=options)
    paced = anyio.run(latency, env, rate, seconds, backend_options=options)
    return Sample(
        metrics={
            "n": float(notifications),
            "succeeded": drained["count"],
            "per_s": drained["per_s"],
            "per_cpu_s": drained["per_cpu_s"],
            "receive_calls": drained["receive_calls"],
            "latency_count": paced["count"],
            "p50_ms": paced["p50_ms"],
            "p99_ms": paced["p99_ms"],
        }
    )


async def s3_cost(mode: str, requests: int) -> dict[str, float]:
    """``requests`` real invocations on an in-process emulator, tracked by S3 polling in ``mode``
    (``head`` or ``list``) alone: S3 calls per completion."""
    base = default_config()
    endpoint = replace(
        base.endpoints[0],
        instance_count=4,
        max_concurrent_invocations_per_instance=250,
        service_time=Distribution("uniform", low_ms=0.0, high_ms=3000.0),
        success_topic=None,
        error_topic=None,
    )
    config = replace(base, endpoints=(endpoint,), seed=7)
    tracking = S3Tracking(
        mode="head" if mode == "head" else "list", interval=0.5, max_interval=4.0, max_concurrency=32
    )
    limiter = anyio.Semaphore(48)
    async with (
        open_emulator(config) as emu,
        open_clients(emu.env, "sagemaker-runtime", "s3", config=_client_config()) as (runtime, s3),
        open_tracker(tracking=tracking, s3=s3, fetch=False, max_pending=requests) as tracker,
    ):
        started = time.perf_counter()

        async def invoke(index: int) -> None:
            try:
                inference_id = f"{mode}-{index:06d}"
                tracker.expect(inference_id, time.time() + 3600)
                response = await runtime.invoke_endpoint_async(
                    EndpointName="fanout-demo",
                    Body=json.dumps({"n": index}).encode(),
                    ContentType="application/json",
                    InferenceId=inference_id,
                )
                tracker.track(
                    replace(
                        submission(inference_id, time.time()),
                        output_location=response["OutputLocation"],
                        failure_location=response.get("FailureLocation"),
                    )
                )
            finally:
                limiter.release()

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                tg.start_soon(drain, tracker, requests)
                for index in range(requests):
                    await limiter.acquire()
                    tg.start_soon(invoke, index)
        stats = tracker.statistics()
        elapsed = time.perf_counter() - started
    calls = sum(stats.s3_calls.values())
    return {
        **{k: float(v) for k, v in stats.s3_calls.items()},
        "calls": calls,
        "per_completion": calls / requests,
        "seconds": elapsed,
    }
