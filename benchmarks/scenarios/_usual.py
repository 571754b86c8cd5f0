"""What users write today, written out as plainly as they write it.

All three follow the SageMaker SDK's ``AsyncPredictor`` flow for each request:
``put_object`` the payload under ``async-endpoint-inputs/``, ``invoke_endpoint_async``
with ``InputLocation`` (the SDK has no inline ``Body``), then an S3
``object_exists``-style wait: HEAD the output and the failure object every
``delay`` seconds, at most ``max_attempts`` times, and GET the output once it
exists. They differ only in how requests are spread over time:

- ``sdk_async_predictor``: the SDK's batch idiom, sequential: ``predict_async`` for
  every request, then ``get_result(waiter_config)`` for each response in order;
- ``boto3_thread_pool``: a script with ``ThreadPoolExecutor(32)``, one blocking
  upload–invoke–wait–get per request per thread;
- ``aiobotocore_gather``: one coroutine per request, all started with
  ``asyncio.gather`` (no limit; the default connection pool of 10).

The SDK waits 15 s between HEADs; the benchmark scales that down (the endpoint's
service time is scaled down too) but keeps the pattern. Nothing here is fanout.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import anyio

from .._harness import CpuClock
from ._workload import Item, RunRecord, Target, aio_session, count_calls, verify

__all__ = ["UsualSettings", "aiobotocore_gather", "boto3_thread_pool", "sdk_async_predictor"]


@dataclass(frozen=True, slots=True)
class UsualSettings:
    delay: float = 0.25
    """Seconds between HEAD rounds (the SDK's WaiterConfig.delay is 15 s)."""
    max_attempts: int = 60
    """HEAD rounds before giving up on one request (the SDK's WaiterConfig.max_attempts)."""
    threads: int = 32
    content_type: str = "application/json"
    timeout: float = 600.0
    """Seconds a whole run may take; past it, the run fails with ``TimeoutError``."""


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _input_key(target: Target) -> tuple[str, str]:
    # The SDK's naming: <prefix>/async-endpoint-inputs/<name>/<timestamp>-<uuid4>.
    bucket, prefix = _split(target.staging)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d-%H-%M-%S-%f")
    name = f"async-endpoint-inputs/{target.endpoint_name}/{stamp}-{uuid.uuid4()}"
    return bucket, f"{prefix.rstrip('/')}/{name}" if prefix else name


def _missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code in ("404", "NoSuchKey", "NotFound")


# One request's (seconds to its 202, its 202 since the run started, seconds to its outcome, output).
_Outcome = tuple[float, float, float, bytes | None]


def _record(items: list[Item], outcomes: list[_Outcome], clock: CpuClock, calls: Counter[str]) -> RunRecord:
    record = RunRecord(n=len(items), clock=clock, calls=calls)
    for item, (accept, accepted_at, complete, result) in zip(items, outcomes, strict=True):
        record.accept.append(accept)
        record.accepted_at.append(accepted_at)
        record.complete.append(complete)
        record.outcome.append(complete - accept)
        record.succeeded += result is not None
        record.verified += verify(item, result)
    return record


# --- boto3 (the SDK pattern and the thread pool) ----------------------------------------------------------


class _Boto3Flow:
    """One request's upload, invoke and wait, with blocking boto3 clients shared by every thread."""

    def __init__(self, target: Target, settings: UsualSettings, *, pool: int) -> None:
        import boto3
        from botocore.config import Config

        session = boto3.session.Session()
        config = Config(max_pool_connections=pool)
        self.s3 = session.client("s3", config=config)
        self.runtime = session.client("sagemaker-runtime", config=config)
        self.calls: Counter[str] = Counter()
        count_calls(self.s3, self.calls)
        count_calls(self.runtime, self.calls)
        self.target = target
        self.settings = settings
        self.deadline = time.monotonic() + settings.timeout

    def check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise TimeoutError(f"the run took more than {self.settings.timeout} s")

    def submit(self, item: Item) -> dict[str, Any]:
        bucket, key = _input_key(self.target)
        self.s3.put_object(Bucket=bucket, Key=key, Body=item.body, ContentType=self.settings.content_type)
        response: dict[str, Any] = self.runtime.invoke_endpoint_async(
            EndpointName=self.target.endpoint_name,
            InputLocation=f"s3://{bucket}/{key}",
            ContentType=self.settings.content_type,
        )
        return response

    def _exists(self, uri: str | None) -> bool:
        if uri is None:
            return False
        bucket, key = _split(uri)
        try:
            self.s3.head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            if _missing(exc):
                return False
            raise
        return True

    def result(self, response: dict[str, Any]) -> bytes | None:
        """Wait as the SDK's two ``object_exists`` waiters do, then GET the output; None on failure."""
        output, failure = response.get("OutputLocation"), response.get("FailureLocation")
        for attempt in range(self.settings.max_attempts):
            self.check_deadline()
            if attempt:
                time.sleep(self.settings.delay)
            if self._exists(output):
                bucket, key = _split(str(output))
                body: bytes = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                return body
            if self._exists(failure):
                return None
        return None

    def close(self) -> None:
        self.s3.close()
        self.runtime.close()


def sdk_async_predictor(items: list[Item], target: Target, settings: UsualSettings) -> RunRecord:
    """``predict_async`` for each request in turn, then ``get_result`` with a waiter for each in order."""
    flow = _Boto3Flow(target, settings, pool=10)
    try:
        with CpuClock(target.server_pid) as clock:
            record = RunRecord(n=len(items), clock=clock)
            run_start = time.perf_counter()
            pending: list[tuple[Item, float, dict[str, Any]]] = []
            for item in items:
                flow.check_deadline()
                start = time.perf_counter()
                response = flow.submit(item)
                accepted = time.perf_counter()
                record.accept.append(accepted - start)
                record.accepted_at.append(accepted - run_start)
                pending.append((item, start, response))
            for item, start, response in pending:
                result = flow.result(response)
                record.complete.append(time.perf_counter() - start)
                record.outcome.append(record.complete[-1] - record.accept[len(record.complete) - 1])
                record.succeeded += result is not None
                record.verified += verify(item, result)
            record.calls = flow.calls
    finally:
        flow.close()
    return record


def boto3_thread_pool(items: list[Item], target: Target, settings: UsualSettings) -> RunRecord:
    """``ThreadPoolExecutor(threads).map`` over a blocking upload–invoke–wait–get per request."""
    flow = _Boto3Flow(target, settings, pool=settings.threads)
    try:
        with CpuClock(target.server_pid) as clock:
            run_start = time.perf_counter()

            def score(item: Item) -> _Outcome:
                start = time.perf_counter()
                response = flow.submit(item)
                accepted = time.perf_counter()
                result = flow.result(response)
                return accepted - start, accepted - run_start, time.perf_counter() - start, result

            with ThreadPoolExecutor(max_workers=settings.threads) as pool:
                outcomes = list(pool.map(score, items))
        return _record(items, outcomes, clock, flow.calls)
    finally:
        flow.close()


# --- aiobotocore gather -------------------------------------------------------------------------------------


async def aiobotocore_gather(items: list[Item], target: Target, settings: UsualSettings) -> RunRecord:
    """One coroutine per request, all at once through ``asyncio.gather``, with default client settings."""
    session = aio_session()
    async with (
        session.create_client("s3") as s3,
        session.create_client("sagemaker-runtime") as runtime,
    ):
        calls: Counter[str] = Counter()
        count_calls(s3, calls)
        count_calls(runtime, calls)

        async def exists(uri: str | None) -> bool:
            if uri is None:
                return False
            bucket, key = _split(uri)
            try:
                await s3.head_object(Bucket=bucket, Key=key)
            except Exception as exc:
                if _missing(exc):
                    return False
                raise
            return True

        async def score(item: Item) -> _Outcome:
            start = time.perf_counter()
            bucket, key = _input_key(target)
            await s3.put_object(Bucket=bucket, Key=key, Body=item.body, ContentType=settings.content_type)
            response = await runtime.invoke_endpoint_async(
                EndpointName=target.endpoint_name,
                InputLocation=f"s3://{bucket}/{key}",
                ContentType=settings.content_type,
            )
            accepted = time.perf_counter()
            output, failure = response.get("OutputLocation"), response.get("FailureLocation")
            result: bytes | None = None
            for attempt in range(settings.max_attempts):
                if attempt:
                    await asyncio.sleep(settings.delay)
                if await exists(output):
                    out_bucket, out_key = _split(output)
                    got = await s3.get_object(Bucket=out_bucket, Key=out_key)
                    async with got["Body"] as stream:
                        result = await stream.read()
                    break
                if await exists(failure):
                    break
            return accepted - start, accepted - run_start, time.perf_counter() - start, result

        with CpuClock(target.server_pid) as clock:
            run_start = time.perf_counter()
            with anyio.fail_after(settings.timeout):
                outcomes = await asyncio.gather(*(score(item) for item in items))
    return _record(items, outcomes, clock, calls)
