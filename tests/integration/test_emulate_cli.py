"""``python -m fanout.testing`` (what ``fanout emulate`` runs): export lines that a plain aiobotocore
script can use with no other configuration, a clean stop on SIGINT, and clear errors for a bad config."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest

from fanout import ConfigError
from fanout.testing import config_from_dict, default_config, load_config, run_emulator_process
from fanout.testing._server import ENV_NAMES, READY_LINE

SCRIPT = r"""
import asyncio, hashlib, json, os
from aiobotocore.session import get_session

async def main():
    session = get_session()
    endpoint = os.environ["FANOUT_ENDPOINT"]
    queue_url = os.environ["FANOUT_QUEUE_URL"]
    bucket, _, prefix = os.environ["FANOUT_STAGING"].removeprefix("s3://").partition("/")
    report = {"errors": {}}
    async with session.create_client("sagemaker-runtime") as runtime, \
            session.create_client("sqs") as sqs, session.create_client("s3") as s3:
        inline_body = b'{"row": 1}'
        staged_body = b'{"row": 2}'
        await s3.put_object(Bucket=bucket, Key=f"{prefix}/row-2.json", Body=staged_body)
        replies = {
            "inline": await runtime.invoke_endpoint_async(
                EndpointName=endpoint, Body=inline_body, ContentType="application/json",
                InferenceId="inline"),
            "s3": await runtime.invoke_endpoint_async(
                EndpointName=endpoint, InputLocation=f"s3://{bucket}/{prefix}/row-2.json", InferenceId="s3"),
        }
        results = {}
        for _ in range(20):
            if len(results) == 2:
                break
            reply = await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for message in reply.get("Messages", []):
                await sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                notification = json.loads(json.loads(message["Body"])["Message"])
                if notification.get("invocationStatus") == "Completed":
                    location = notification["responseParameters"]["outputLocation"]
                    out_bucket, _, key = location.removeprefix("s3://").partition("/")
                    output = await s3.get_object(Bucket=out_bucket, Key=key)
                    results[notification["inferenceId"]] = {
                        "location": location,
                        "output": json.loads(await output["Body"].read()),
                    }
        report["results"] = results
        report["locations"] = {k: r["OutputLocation"] for k, r in replies.items()}
        report["expected"] = {
            "inline": {"sha256": hashlib.sha256(inline_body).hexdigest(), "bytes": len(inline_body)},
            "s3": {"sha256": hashlib.sha256(staged_body).hexdigest(), "bytes": len(staged_body)},
        }
        cases = {
            "too_large": {"Body": b"x" * 128_001},
            "both": {"Body": b"{}", "InputLocation": f"s3://{bucket}/{prefix}/row-2.json"},
            "neither": {},
            "unknown_endpoint": {"Body": b"{}", "EndpointName": "no-such-endpoint"},
            "missing_input": {"InputLocation": f"s3://{bucket}/{prefix}/absent.json"},
        }
        for name, params in cases.items():
            try:
                await runtime.invoke_endpoint_async(**{"EndpointName": endpoint, **params})
            except runtime.exceptions.ValidationError as exc:
                report["errors"][name] = [exc.response["ResponseMetadata"]["HTTPStatusCode"],
                                          exc.response["Error"]["Message"]]
    print(json.dumps(report))

asyncio.run(main())
"""


SIGV4 = (
    "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/sagemaker/aws4_request, SignedHeaders=host, "
    "Signature=0"
)


def start_emulator(*args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "fanout.testing", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    env: dict[str, str] = {}
    for line in process.stdout:  # bounded: the emulator prints the ready line right after the exports
        line = line.strip()
        if line == READY_LINE:
            break
        assert line.startswith("export "), line
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
    return process, env


def test_export_lines_drive_a_plain_aiobotocore_script(tmp_path: Path) -> None:
    process, exports = start_emulator("--port", "0")
    try:
        assert list(exports) == list(ENV_NAMES)
        assert exports["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        assert exports["FANOUT_ENDPOINT"] == "fanout-demo"
        assert (
            exports["FANOUT_QUEUE_URL"] == f"{exports['AWS_ENDPOINT_URL']}/123456789012/fanout-notifications"
        )
        assert exports["FANOUT_STAGING"] == "s3://fanout-staging/inputs"
        script = tmp_path / "client.py"
        script.write_text(SCRIPT)
        result = subprocess.run(
            [sys.executable, str(script)],
            env={**os.environ, **exports},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert set(report["results"]) == {"inline", "s3"}
        for name in ("inline", "s3"):
            assert report["results"][name]["output"] == report["expected"][name]
            assert report["results"][name]["location"] == report["locations"][name]
        errors = report["errors"]
        assert set(errors) == {"too_large", "both", "neither", "unknown_endpoint", "missing_input"}
        assert all(status == 400 for status, _ in errors.values())
        assert "Member must have length less than or equal to 128000" in errors["too_large"][1]
        assert "has both" in errors["both"][1]
        assert "has neither" in errors["neither"][1]
        assert errors["unknown_endpoint"][1] == "Endpoint no-such-endpoint of account 123456789012 not found."
        assert "absent.json" in errors["missing_input"][1]
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr
    assert "fanout emulator listening on" in stderr
    # AWS's default, and said at start so nobody builds on responses riding in the notifications
    assert "IncludeInferenceResponseIn unset: results only at the output location" in stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"colour": "red"}', "colour: unknown key"),
        (
            '{"faults": {"notifications": {"loss_rate": -0.1}}}',
            "faults.notifications.loss_rate: must be between 0 and 1, got -0.1",
        ),
        ("{broken", "is not valid json"),
    ],
)
def test_a_bad_config_fails_at_start_with_a_clear_message(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "emu.json"
    config.write_text(content)
    result = subprocess.run(
        [sys.executable, "-m", "fanout.testing", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "fanout emulate: invalid emulator config" in result.stderr
    assert message in result.stderr


def test_a_config_file_and_the_subprocess_helper(tmp_path: Path) -> None:
    config = tmp_path / "emu.toml"
    config.write_text(
        'extends = "none"\nseed = 1\nbuckets = ["out"]\nqueues = ["done"]\n'
        '[[topics]]\nname = "t"\nsubscriptions = [{queue = "done", raw = true}]\n'
        '[[endpoints]]\nname = "scorer"\ns3_output_path = "s3://out/r"\nsuccess_topic = "t"\n'
    )
    with run_emulator_process(config, cpu=0) as env:
        assert env["FANOUT_ENDPOINT"] == "scorer"
        assert env["FANOUT_QUEUE_URL"].endswith("/123456789012/done")
        assert "FANOUT_STAGING" not in env
        with urllib.request.urlopen(f"{env['AWS_ENDPOINT_URL']}/_fanout/stats", timeout=10) as response:
            stats = json.load(response)
        assert stats["seed"] == 1
        assert stats["queues"]["done"]["sent"] == 1  # the TestNotification


def test_the_subprocess_helper_starts_with_the_faults_it_is_given() -> None:
    with (
        pytest.raises(ConfigError, match=r"faults\.notifications\.early_rate: must be between 0 and 1"),
        run_emulator_process(faults={"notifications": {"early_rate": 2}}),
    ):
        pass
    with run_emulator_process(faults={"notifications": {"early_rate": 1.0}}) as env:
        request = urllib.request.Request(
            f"{env['AWS_ENDPOINT_URL']}/endpoints/fanout-demo/async-invocations",
            data=b"{}",
            method="POST",
            headers={"Authorization": SIGV4, "Content-Type": "application/octet-stream"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 202
        with urllib.request.urlopen(f"{env['AWS_ENDPOINT_URL']}/_fanout/stats", timeout=10) as response:
            stats = json.load(response)
        assert stats["notifications"]["early"] == 1
        assert stats["notifications"]["early_capped"] == 0
        assert stats["queues"]["fanout-notifications"]["sent"] == 3  # 2 TestNotifications and this one


def test_print_config_prints_the_default_config_as_toml_that_loads_back(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fanout.testing", "--print-config"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert config_from_dict(tomllib.loads(result.stdout)) == default_config()
    printed = tmp_path / "printed.toml"
    printed.write_text(result.stdout)
    assert load_config(printed) == default_config()


def test_print_config_shows_what_a_partial_file_and_the_model_url_make(tmp_path: Path) -> None:
    config = tmp_path / "partial.json"
    config.write_text(json.dumps({"seed": 4, "faults": {"error_rate": 0.25}}))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fanout.testing",
            "--config",
            str(config),
            "--model-url",
            "http://127.0.0.1:8080",
            "--print-config",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = tomllib.loads(result.stdout)
    assert data["seed"] == 4
    assert data["faults"]["error_rate"] == 0.25
    (endpoint,) = data["endpoints"]
    assert endpoint["name"] == "fanout-demo"
    assert endpoint["model"] == "http://127.0.0.1:8080"
    assert endpoint["service_time"] == {"kind": "constant", "ms": 0.0}


def test_a_partial_config_file_adds_to_the_default_emulator(tmp_path: Path) -> None:
    config = tmp_path / "mine.toml"
    config.write_text(
        '[[endpoints]]\nname = "my-model"\ns3_output_path = "s3://fanout-output/my-model"\n'
        'success_topic = "fanout-success"\nerror_topic = "fanout-errors"\n'
        "[faults.notifications]\nearly_rate = 1.0\n"
    )
    with run_emulator_process(config) as env:
        # the file's endpoint comes first, so the exports name it; the defaults are all there
        assert env["FANOUT_ENDPOINT"] == "my-model"
        assert env["FANOUT_QUEUE_URL"].endswith("/123456789012/fanout-notifications")
        assert env["FANOUT_STAGING"] == "s3://fanout-staging/inputs"
        with urllib.request.urlopen(f"{env['AWS_ENDPOINT_URL']}/_fanout/stats", timeout=10) as response:
            stats = json.load(response)
    assert set(stats["endpoints"]) == {"my-model", "fanout-demo"}


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model-url", "localhost:8080"], "fanout emulate: --model-url: must be a model server URL"),
        (
            ["--model-url", "http://127.0.0.1:8080", "--model-startup-timeout", "0"],
            "fanout emulate: --model-startup-timeout: must be a number > 0, got 0.0",
        ),
        (
            ["--model-url", "http://127.0.0.1:CLOSED", "--model-startup-timeout", "0.5"],
            "did not become healthy within 0.5 s (the last check: GET http://127.0.0.1:",
        ),
    ],
)
def test_a_model_server_that_cannot_be_used_fails_at_start(args: list[str], message: str) -> None:
    args = [arg.replace("CLOSED", str(_closed_port())) for arg in args]
    result = subprocess.run(
        [sys.executable, "-m", "fanout.testing", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""  # no export line for an emulator that is not ready
    assert message in result.stderr


def test_ctrl_c_stops_the_wait_for_the_model_server() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fanout.testing",
            "--model-url",
            f"http://127.0.0.1:{_closed_port()}",
            "--model-startup-timeout",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        # printed before the wait starts (EOF, if the process died, ends the read too)
        assert "waiting for the model server at http://127.0.0.1:" in process.stderr.readline()
    finally:
        process.send_signal(signal.SIGINT)
        stdout, _ = process.communicate(timeout=15)  # well before the 60 s of the startup timeout
    assert process.returncode == 0
    assert stdout == ""
