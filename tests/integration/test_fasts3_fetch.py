"""Result fetches on the S3 fast path, end to end: ``open_client`` against the emulator (whose
default endpoint puts no response in the notification, so every result is fetched) gives each
succeeded request its own result with one fast GetObject each, failure objects are read with a
ranged one, and against moto's server plain GetObjects of awkward keys answer as aiobotocore's do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from fanout import (
    Failed,
    InferenceRequest,
    Limits,
    Outcome,
    S3Tracking,
    SqsTracking,
    Succeeded,
    open_client,
)
from fanout._config import Tracking
from fanout._fasts3 import FastS3
from fanout.testing import Emulator, open_emulator

pytestmark = pytest.mark.anyio


@pytest.fixture
async def emulator(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Emulator]:
    async with open_emulator() as emu:
        for name, value in emu.env.items():
            monkeypatch.setenv(name, value)
        yield emu


@pytest.fixture
def paths(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many GetObjects each FastS3 sent itself ("fast") and left to aiobotocore ("delegated")."""
    counted: Counter[str] = Counter()
    call, delegate = FastS3._call, FastS3._delegate

    async def fast_call(self: FastS3, *args: Any) -> dict[str, Any]:
        counted["fast"] += 1
        return await call(self, *args)

    async def delegated(self: FastS3, kwargs: dict[str, Any]) -> dict[str, Any]:
        counted["delegated"] += 1
        return await delegate(self, kwargs)

    monkeypatch.setattr(FastS3, "_call", fast_call)
    monkeypatch.setattr(FastS3, "_delegate", delegated)
    return counted


def _body(n: int) -> Any:
    if n % 5 == 4:
        return {"fail": True, "reason": f"line {n} fails on purpose"}
    return {"n": n, "text": f"héllo {n}"}


def _expected(n: int) -> dict[str, Any]:
    data = json.dumps(_body(n), separators=(",", ":"), ensure_ascii=False).encode()
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


async def _run(emu: Emulator, tracking: Tracking, count: int) -> tuple[dict[str, Outcome], dict[str, int]]:
    requests = [InferenceRequest.from_json(_body(n), id=str(n)) for n in range(count)]
    outcomes: dict[str, Outcome] = {}
    async with open_client(
        endpoint_name=emu.env["FANOUT_ENDPOINT"], tracking=tracking, limits=Limits(max_in_flight=8)
    ) as client:
        with anyio.fail_after(30):
            async with client.map(requests) as stream:
                async for outcome in stream:
                    outcomes[outcome.id or ""] = outcome
        api_calls = dict(client.statistics().api_calls)
    return outcomes, api_calls


def _check(outcomes: dict[str, Outcome], count: int) -> int:
    """Each request's own result (or failure); the number that succeeded."""
    assert sorted(outcomes, key=int) == [str(n) for n in range(count)]
    succeeded = 0
    for n in range(count):
        outcome = outcomes[str(n)]
        if n % 5 == 4:
            assert isinstance(outcome, Failed), outcome
            assert outcome.failure_reason is not None and f"line {n} fails" in outcome.failure_reason
            continue
        assert isinstance(outcome, Succeeded), outcome
        assert outcome.result is not None
        assert json.loads(outcome.result) == _expected(n)
        assert outcome.content_type == "application/json"
        succeeded += 1
    return succeeded


async def test_every_result_is_fetched_on_the_fast_path(emulator: Emulator, paths: Counter[str]) -> None:
    count = 40
    tracking = SqsTracking(queue_url=emulator.env["FANOUT_QUEUE_URL"], wait_time_seconds=1)
    outcomes, api_calls = await _run(emulator, tracking, count)
    succeeded = _check(outcomes, count)
    assert succeeded == 32
    assert api_calls["s3.GetObject"] == succeeded  # one fetch per succeeded request, none for failures
    assert paths == Counter({"fast": succeeded})
    assert emulator.stats()["requests"]["s3.GetObject"] == {"ok": succeeded}


async def test_failure_objects_are_read_with_a_ranged_fast_get(
    emulator: Emulator, paths: Counter[str]
) -> None:
    # Tracking by S3 alone: the failure reason comes from the failure object's first 64 KiB.
    count = 10
    outcomes, api_calls = await _run(
        emulator, S3Tracking(mode="list", interval=0.05, max_interval=0.2), count
    )
    succeeded = _check(outcomes, count)
    assert api_calls["s3.GetObject"] == count  # the 8 results and the 2 failure objects
    assert succeeded == 8
    assert paths == Counter({"fast": count})


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


KEYS = [
    "results/plain.out",
    "results/with spaces/and  two.out",
    "résultats/ünïcødé/日本語/\U0001f600.out",
    "tilde~plus+percent%25/question?hash#/amp&eq=.out",
    "dots/../and//slashes/./x",
]


def _same_fields(result: dict[str, Any]) -> dict[str, Any]:
    """What must be equal on both paths (moto's request ids and dates differ from call to call)."""
    metadata = result["ResponseMetadata"]
    return {
        **{k: v for k, v in result.items() if k not in ("ResponseMetadata", "Body")},
        "HTTPStatusCode": metadata["HTTPStatusCode"],
        "ChecksumAlgorithm": metadata.get("ChecksumAlgorithm"),
        "RetryAttempts": metadata["RetryAttempts"],
    }


async def test_awkward_keys_read_from_moto_the_same_on_both_paths(moto_url: str, paths: Counter[str]) -> None:
    await anyio.to_thread.run_sync(_reset, moto_url)
    fast_calls: Counter[str] = Counter()
    options: dict[str, Any] = {
        "endpoint_url": moto_url,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "config": AioConfig(max_pool_connections=4),
    }
    async with (
        get_session().create_client("s3", **options) as client,
        FastS3(client, counter=fast_calls) as fast,
    ):
        await client.create_bucket(Bucket="fanout-moto")
        for n, key in enumerate(KEYS):
            # PutObject sends a CRC32 (botocore's default), which moto returns on GET: checked on read.
            await client.put_object(
                Bucket="fanout-moto",
                Key=key,
                Body=json.dumps({"n": n}).encode(),
                ContentType="application/json",
                Metadata={"inference-id": f"id-{n}"},
            )
        for key in KEYS:
            for extra in ({}, {"Range": "bytes=0-4"}):
                results = []
                for call in (client.get_object, fast.get_object):
                    result = await call(Bucket="fanout-moto", Key=key, **extra)
                    async with result["Body"] as stream:
                        results.append((await stream.read(), _same_fields(result)))
                (body, fields), (fast_body, fast_fields) = results
                assert fast_body == body and body.startswith(b'{"n"'), key
                assert fast_fields == fields, key
                assert fields["Metadata"]["inference-id"].startswith("id-")
                # The whole object's CRC32 is checked as the body is read; a range has none to check.
                assert fields["ChecksumAlgorithm"] == (None if extra else "crc32")
        errors = []
        for call in (client.get_object, fast.get_object):
            with pytest.raises(client.exceptions.NoSuchKey) as raised:
                await call(Bucket="fanout-moto", Key="results/no such key")
            errors.append(raised.value)
    expected, actual = errors
    assert str(actual) == str(expected)
    assert actual.response["Error"] == expected.response["Error"]
    assert fast_calls == Counter({"s3.GetObject": 2 * len(KEYS) + 1})
    assert paths == Counter({"fast": 2 * len(KEYS) + 1})
