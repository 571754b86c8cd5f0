"""An emulated endpoint whose model is a real model server (``ContainerModel``, ``--model-url``).

The server is the stand-in of ``model_container``: an aiohttp app on 127.0.0.1 that implements the
SageMaker hosting contract. In-process tests drive the emulator with aiobotocore clients; the last
test runs ``python -m fanout.testing --model-url`` and ``fanout run`` as subprocesses.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from anyio.from_thread import start_blocking_portal

from fanout.testing import (
    ContainerModel,
    ContainerNotHealthy,
    Emulator,
    EmulatorConfig,
    EndpointConfig,
    default_config,
    open_emulator,
    run_emulator_process,
)
from fanout.testing._emu_config import model_error_reason
from fanout.testing._server import with_model_url
from tests.integration.model_container import STANDIN_TYPE, expected_answer, model_container

pytestmark = pytest.mark.anyio

ENDPOINT = "fanout-demo"
QUEUE = "fanout-notifications"


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


async def notifications(sqs: Any, emu: Emulator, count: int, timeout: float = 10) -> dict[str, Any]:
    """``count`` SageMaker notifications by inference id (TestNotifications skipped), bounded in time."""
    found: dict[str, Any] = {}
    with anyio.move_on_after(timeout):
        while len(found) < count:
            reply = await sqs.receive_message(
                QueueUrl=emu.queue_url(QUEUE), MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            for message in reply.get("Messages", []):
                value = json.loads(json.loads(message["Body"])["Message"])
                if value.get("eventName") != "TestNotification":
                    found[value["inferenceId"]] = value
    return found


async def read_s3(s3: Any, uri: str) -> tuple[bytes, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    reply = await s3.get_object(Bucket=bucket, Key=key)
    return await reply["Body"].read(), reply["ContentType"]


def config_for(url: str, *, startup_timeout: float = 10, **endpoint: Any) -> EmulatorConfig:
    """The default config with ``--model-url url``, and its endpoint changed by ``endpoint``."""
    config = with_model_url(default_config(), url, startup_timeout)
    return dataclasses.replace(config, endpoints=(dataclasses.replace(config.endpoints[0], **endpoint),))


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (the port was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_requests_pass_through_and_2xx_answers_are_the_outputs() -> None:
    async with (
        model_container() as standin,
        open_emulator(config_for(standin.url)) as emu,
        clients(emu) as (runtime, sqs, s3),
    ):
        await s3.put_object(Bucket="fanout-staging", Key="inputs/c.bin", Body=b"\x00\x01staged")
        await runtime.invoke_endpoint_async(
            EndpointName=ENDPOINT,
            Body=b'{"row": 1}',
            ContentType="application/json",
            Accept="application/json",
            CustomAttributes="trace=abc",
            InferenceId="a",
        )
        await runtime.invoke_endpoint_async(
            EndpointName=ENDPOINT, Body=b"1,2,3", ContentType="text/csv", Accept="text/csv", InferenceId="b"
        )
        await runtime.invoke_endpoint_async(
            EndpointName=ENDPOINT, InputLocation="s3://fanout-staging/inputs/c.bin", InferenceId="c"
        )
        found = await notifications(sqs, emu, 3)
        assert {key: value["invocationStatus"] for key, value in found.items()} == dict.fromkeys(
            "abc", "Completed"
        )
        outputs = {
            key: await read_s3(s3, value["responseParameters"]["outputLocation"])
            for key, value in found.items()
        }

    seen = {invocation.body: invocation for invocation in standin.invocations}
    assert len(standin.invocations) == 3
    row = seen[b'{"row": 1}']
    assert (row.content_type, row.accept, row.custom_attributes) == (
        "application/json",
        "application/json",
        "trace=abc",
    )
    csv = seen[b"1,2,3"]
    assert (csv.content_type, csv.accept, csv.custom_attributes) == ("text/csv", "text/csv", None)
    staged = seen[b"\x00\x01staged"]  # fetched from S3 by the emulator, sent as the body
    assert staged.content_type == "application/octet-stream"
    assert staged.custom_attributes is None

    # the answer's Content-Type is the output's, in S3 and in the notification
    assert outputs["a"] == (
        json.dumps(
            expected_answer(b'{"row": 1}', "application/json", "application/json", "trace=abc")
        ).encode(),
        "application/json",
    )
    assert found["a"]["responseParameters"]["contentType"] == "application/json"
    assert found["a"]["requestParameters"]["accept"] == "application/json"
    assert outputs["b"] == (f"{hashlib.sha256(b'1,2,3').hexdigest()},5\n".encode(), "text/csv")
    assert found["b"]["responseParameters"]["contentType"] == "text/csv"
    body, content_type = outputs["c"]
    assert content_type == STANDIN_TYPE
    assert json.loads(body)["sha256"] == hashlib.sha256(b"\x00\x01staged").hexdigest()


async def test_other_statuses_are_failures_with_the_models_message() -> None:
    long_message = "x" * 5000
    cases = {
        "server": ({"status": 500, "message": "CUDA out of memory"}, "CUDA out of memory"),
        "client": ({"status": 422, "message": "no such feature: colour"}, "no such feature: colour"),
        "long": ({"status": 503, "message": long_message}, long_message),
    }
    async with (
        model_container() as standin,
        open_emulator(config_for(standin.url)) as emu,
        clients(emu) as (runtime, sqs, s3),
    ):
        for inference_id, (body, _) in cases.items():
            await runtime.invoke_endpoint_async(
                EndpointName=ENDPOINT, Body=json.dumps(body).encode(), InferenceId=inference_id
            )
        found = await notifications(sqs, emu, len(cases))
        failures = {
            key: await read_s3(s3, value["responseParameters"]["failureLocation"])
            for key, value in found.items()
        }
    assert {value["invocationStatus"] for value in found.values()} == {"Failed"}
    assert found["server"]["failureReason"] == (
        'ClientError: Received server error (500) from model with message "CUDA out of memory". '
        "See the SageMaker Endpoint logs in your account for more information."
    )
    assert found["client"]["failureReason"] == model_error_reason(422, "no such feature: colour")
    assert "Received client error (422)" in found["client"]["failureReason"]
    # the reason carries a bounded prefix; the failure location has the whole body
    reason = found["long"]["failureReason"]
    assert "Received server error (503)" in reason
    assert "x" * 1000 + '..."' in reason
    assert len(reason) < 1200
    for key, (_, message) in cases.items():
        assert failures[key][0] == message.encode()
        assert failures[key][1].startswith("text/plain")


async def test_the_emulator_is_ready_only_once_the_ping_answers_200() -> None:
    async with model_container(unhealthy_pings=3) as standin:
        async with open_emulator(config_for(standin.url)) as emu, clients(emu) as (runtime, sqs, _):
            assert standin.pings == 4  # three 503s, then the 200 that made it ready
            await runtime.invoke_endpoint_async(EndpointName=ENDPOINT, Body=b"{}", InferenceId="after")
            found = await notifications(sqs, emu, 1)
        assert found["after"]["invocationStatus"] == "Completed"


async def test_a_model_server_that_never_becomes_healthy_stops_the_start() -> None:
    async with model_container(never_healthy=True) as standin:
        with pytest.raises(
            ContainerNotHealthy, match=r"within 0\.5 s \(the last check: GET .*/ping answered 503\)"
        ):
            async with open_emulator(config_for(standin.url, startup_timeout=0.5)):
                pytest.fail("the emulator must not start")
        assert standin.pings >= 2
    with pytest.raises(ContainerNotHealthy, match="failed: ClientConnectorError"):
        async with open_emulator(config_for(closed_port_url(), startup_timeout=0.3)):
            pytest.fail("the emulator must not start")


async def test_connection_errors_and_timeouts_are_failures_not_crashes() -> None:
    gone = EndpointConfig(
        name="gone",
        s3_output_path="s3://fanout-output/gone",
        s3_failure_path="s3://fanout-output/gone-failures",
        error_topic="fanout-errors",
        model=ContainerModel(closed_port_url()),
    )
    async with (
        model_container() as standin,
        open_emulator(dataclasses.replace(config_for(standin.url), time_scale=0.01)) as emu,
        clients(emu) as (runtime, sqs, _),
    ):
        emu.create_endpoint(gone)  # added at run time: not pinged, so it starts
        await runtime.invoke_endpoint_async(EndpointName="gone", Body=b"{}", InferenceId="refused")
        await runtime.invoke_endpoint_async(
            EndpointName=ENDPOINT, Body=b'{"sleep": 5}', InvocationTimeoutSeconds=1, InferenceId="slow"
        )
        await runtime.invoke_endpoint_async(EndpointName=ENDPOINT, Body=b"{}", InferenceId="fine")
        found = await notifications(sqs, emu, 3)
        stats = emu.stats()
    assert "Could not send the request to the model at http://127.0.0.1:" in found["refused"]["failureReason"]
    assert "ClientConnectorError" in found["refused"]["failureReason"]
    # 1 s scaled by time_scale: the request to the server is cancelled, the worker goes on
    assert "Invocation timed out" in found["slow"]["failureReason"]
    assert found["fine"]["invocationStatus"] == "Completed"
    assert stats["invocations"]["timed_out"] == 1


async def test_one_session_keeps_its_connection_alive() -> None:
    async with model_container() as standin:
        config = config_for(standin.url, instance_count=1, max_concurrent_invocations_per_instance=1)
        async with open_emulator(config) as emu, clients(emu) as (runtime, sqs, _):
            for index in range(20):
                await runtime.invoke_endpoint_async(
                    EndpointName=ENDPOINT, Body=b"{}", InferenceId=f"r{index}"
                )
            found = await notifications(sqs, emu, 20)
    assert len(found) == 20
    # one worker, one session: the 20 requests share a kept-alive connection
    assert len({invocation.peer_port for invocation in standin.invocations}) == 1


def test_the_same_config_serves_one_emulator_after_another() -> None:
    """A config holding a ContainerModel is a value: each emulator (and loop) gets its own session."""

    async def once(config: EmulatorConfig) -> str:
        async with open_emulator(config) as emu, clients(emu) as (runtime, sqs, _):
            await runtime.invoke_endpoint_async(EndpointName=ENDPOINT, Body=b"{}", InferenceId="x")
            found = await notifications(sqs, emu, 1)
        return str(found["x"]["invocationStatus"])

    with start_blocking_portal() as portal, portal.wrap_async_context_manager(model_container()) as standin:
        config = config_for(standin.url)
        assert anyio.run(once, config) == "Completed"
        # a new event loop: the first emulator closed its session, this one opens its own
        assert anyio.run(once, config) == "Completed"
    assert len(standin.invocations) == 2


# --------------------------------------------------------------------------------------------------
# the whole path: python -m fanout.testing --model-url, then fanout run, as subprocesses


def _cli_env(emulator_env: dict[str, str]) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "FANOUT_")) and name != "PYTHONHASHSEED"
    }
    env.update(
        AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_EC2_METADATA_DISABLED="true"
    )
    env.update(emulator_env)
    return env


def test_fanout_run_through_the_emulator_to_the_model_container(tmp_path: Path) -> None:
    lines: list[dict[str, Any]] = [{"id": f"plain-{n}", "body": {"n": n}} for n in range(20)]
    lines += [
        {
            "id": "attrs",
            "body": {"n": "attrs"},
            "custom_attributes": "tenant=7",
            "accept": "application/json",
        },
        {
            "id": "csv",
            "body_base64": base64.b64encode(b"1,2,3\n").decode(),
            "content_type": "text/csv",
            "accept": "text/csv",
        },
        {"id": "boom", "body": {"status": 500, "message": "model exploded"}},
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(model_container(unhealthy_pings=2)) as standin,
        run_emulator_process(model_url=standin.url, model_startup_timeout=20) as env,
    ):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "fanout._cli",
                "run",
                str(tmp_path / "in.jsonl"),
                "-o",
                str(tmp_path / "out.jsonl"),
            ],
            env=_cli_env(env),
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert standin.pings >= 3  # the emulator waited for the 200
    assert result.returncode == 1, result.stderr.decode()  # "boom" failed, the rest succeeded
    records = {
        record["id"]: record for record in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())
    }
    assert sorted(records) == sorted(line["id"] for line in lines)  # one output line per input line
    for n in range(20):
        record = records[f"plain-{n}"]
        assert record["status"] == "succeeded", record
        body = json.dumps({"n": n}, separators=(",", ":")).encode()
        assert record["result"]["sha256"] == hashlib.sha256(body).hexdigest()
        assert record["result"]["content_type"] == "application/json"
    attrs = records["attrs"]["result"]
    assert (attrs["custom_attributes"], attrs["accept"]) == ("tenant=7", "application/json")
    csv = base64.b64decode(records["csv"]["result_base64"])
    assert csv == f"{hashlib.sha256(b'1,2,3' + bytes([10])).hexdigest()},6\n".encode()
    assert records["boom"]["status"] == "failed"
    assert (
        'Received server error (500) from model with message "model exploded"'
        in records["boom"]["failure_reason"]
    )
    assert len(standin.invocations) == len(lines)
