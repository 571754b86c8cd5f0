"""``fanout run --check`` as a subprocess against the emulator: it checks, reports, sends nothing and
writes nothing. DescribeEndpoint is also asked of moto, an independent implementation."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fanout.testing import run_emulator_process
from tests.integration.cli_support import cli_env, control, run, write_lines


@pytest.fixture(scope="module")
def emulator() -> Iterator[dict[str, str]]:
    """One emulator for the module: every test checks that nothing reached it."""
    with run_emulator_process() as env:
        yield env


def _invokes(env: dict[str, str]) -> int:
    stats = control(env, "/_fanout/stats")
    assert stats["invocations"]["accepted"] == 0
    return sum(stats["requests"].get("sagemaker.InvokeEndpointAsync", {}).values())


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_a_clean_check_exits_0_reports_each_check_and_sends_and_writes_nothing(
    emulator: dict[str, str], tmp_path: Path
) -> None:
    lines = [{"id": f"r{n}", "body": {"n": n}} for n in range(30)]
    lines.append({"id": "big", "body": {"pad": "z" * 130_000}})  # through the staging bucket
    write_lines(tmp_path / "in.jsonl", lines)
    before = _files(tmp_path)
    args = ["-o", str(tmp_path / "out.jsonl"), "--journal", str(tmp_path / "journal.db")]
    result = run(cli_env(emulator), str(tmp_path / "in.jsonl"), "--check", *args)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    rows = {line.split()[0]: line.split()[1] for line in stderr.splitlines()[1:-1]}
    expected = ["input", "output", "journal", "region", "credentials", "endpoint", "notifications", "queue"]
    assert rows == dict.fromkeys([*expected, "staging"], "ok")
    assert f"{tmp_path / 'in.jsonl'}: 31 lines, all valid: 30 inline, 1 through S3" in stderr
    assert f"{tmp_path / 'out.jsonl'}: would be created" in stderr
    assert "fanout-demo: InService, async, outputs to s3://fanout-output/results" in stderr
    assert stderr.splitlines()[-1] == "fanout run --check: all is well; nothing was sent (exit code 0)"
    assert _invokes(emulator) == 0
    assert _files(tmp_path) == before  # no output, no journal
    stats = control(emulator, "/_fanout/stats")["requests"]
    assert stats["sagemaker.DescribeEndpoint"]["ok"] >= 1


def test_bad_lines_exit_2_naming_their_line_numbers_and_reasons(
    emulator: dict[str, str], tmp_path: Path
) -> None:
    lines: list[Any] = [
        {"id": "good", "body": {"x": 1}},
        "{not json",
        {"id": "both", "body": 1, "input_location": "s3://fanout-staging/inputs/x"},
        "",
        {"id": "good", "body": {"x": 2}},
        {"id": "big", "body": {"pad": "z" * 130_000}},
        {"id": "ascii", "body": 1, "content_type": "text/\u00e9"},
    ]
    lines += [f'{{"id": "x{n}", "bogus": 1}}' for n in range(25)]
    write_lines(tmp_path / "in.jsonl", lines)
    result = run(cli_env(emulator), str(tmp_path / "in.jsonl"), "--check", "--payload", "inline")
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "input          problem      " in stderr
    assert (
        "30 of 31 lines would be rejected (listed below); 1 request would be sent (1 inline, 0 through S3)"
        in (stderr)
    )
    listed = [line.strip() for line in stderr.splitlines() if line.startswith("  line ")]
    assert len(listed) == 20  # the first problems, in line order, then a count of the rest
    assert listed[0].startswith("line 2: malformed JSON")
    assert listed[1] == (
        "line 3: give exactly one of body, body_base64 or input_location, not body and input_location"
    )
    assert listed[2] == "line 5: duplicate id 'good': line 1 already has it"
    assert listed[3].startswith("line 6: payload is 130,0") and "128,000 bytes inline" in listed[3]
    assert listed[4] == "line 7: content_type must be ASCII, got 'text/é'"
    assert listed[5].startswith("line 8: unknown field 'bogus'")
    assert "  ... and 10 more" in stderr
    assert stderr.splitlines()[-1] == "fanout run --check: 1 problem; nothing was sent (exit code 2)"
    assert _invokes(emulator) == 0


def test_a_wrong_endpoint_queue_and_bucket_exit_2_each_named_at_once(
    emulator: dict[str, str], tmp_path: Path
) -> None:
    write_lines(tmp_path / "in.jsonl", [{"body": {"n": n}} for n in range(3)])
    (tmp_path / "out.jsonl").write_bytes(b"an earlier run's output\n")
    before = _files(tmp_path)
    queue = f"{emulator['AWS_ENDPOINT_URL']}/123456789012/no-such-queue"
    args = ["--endpoint", "no-such-endpoint", "--queue-url", queue, "--staging", "s3://no-such-bucket/x"]
    result = run(
        cli_env(emulator), str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--check", *args
    )
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    rows = {line.split()[0]: line.split(maxsplit=2)[1:] for line in stderr.splitlines()[1:-1]}
    assert rows["endpoint"][0] == rows["queue"][0] == rows["staging"][0] == "problem"
    assert rows["endpoint"][1].startswith(
        "endpoint 'no-such-endpoint' was not found in us-east-1 (DescribeEndpoint: Could not find endpoint"
    )
    assert rows["queue"][1] == f"SQS queue {queue!r} does not exist"
    assert rows["staging"][1] == "S3 bucket 'no-such-bucket' does not exist"
    assert rows["output"] == ["ok", f"{tmp_path / 'out.jsonl'}: exists, and a run would overwrite it"]
    assert stderr.splitlines()[-1] == "fanout run --check: 3 problems; nothing was sent (exit code 2)"
    assert "Traceback" not in stderr
    assert _files(tmp_path) == before  # the earlier output is left byte for byte
    assert _invokes(emulator) == 0


def test_json_summary_makes_the_report_machine_readable(emulator: dict[str, str], tmp_path: Path) -> None:
    write_lines(tmp_path / "in.jsonl", [{"body": {"n": 1}}, "[1]"])
    env = cli_env(emulator, AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None)
    result = run(env, str(tmp_path / "in.jsonl"), "--check", "--json-summary")
    assert result.returncode == 2, result.stderr.decode()
    document = json.loads(result.stderr)
    assert document["exit_code"] == 2
    check = document["check"]
    statuses = {item["subject"]: item["status"] for item in check["checks"]}
    assert statuses == {
        "input": "problem",
        "region": "ok",
        "credentials": "problem",
        "endpoint": "not checked",
        "queue": "not checked",
        "staging": "not checked",
    }
    assert check["input"]["first_problems"] == [
        {"line": 2, "id": "2", "reason": "expected a JSON object, got an array"}
    ]
    assert (check["ok"], check["problems"]) == (False, 2)
    assert _invokes(emulator) == 0


# -- DescribeEndpoint against moto ------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto on loopback, with the endpoint ``fanout-demo`` (an AsyncInferenceConfig in its endpoint
    configuration), the bucket ``check-staging`` and the queue ``check-notifications``."""
    pytest.importorskip("moto")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        sagemaker = _boto("sagemaker", url)
        sagemaker.create_model(
            ModelName="m",
            ExecutionRoleArn="arn:aws:iam::123456789012:role/r",
            PrimaryContainer={"Image": "x"},
        )
        variant = {"VariantName": "AllTraffic", "ModelName": "m", "InitialInstanceCount": 1}
        sagemaker.create_endpoint_config(
            EndpointConfigName="c",
            ProductionVariants=[{**variant, "InstanceType": "ml.m5.large"}],
            AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "s3://fanout-output/results"}},
        )
        sagemaker.create_endpoint(EndpointName="fanout-demo", EndpointConfigName="c")
        _boto("s3", url).create_bucket(Bucket="check-staging")
        _boto("sqs", url).create_queue(QueueName="check-notifications")
        yield url
    finally:
        server.stop()


def _boto(service: str, url: str) -> Any:
    import boto3

    return boto3.session.Session().client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="t",
    )


def test_describe_endpoint_answers_like_moto(emulator: dict[str, str], moto_url: str) -> None:
    """The emulator's DescribeEndpoint, read by botocore, has the shape and errors of moto's."""
    from botocore.exceptions import ClientError

    sagemaker = _boto("sagemaker", moto_url)
    emulated = _boto("sagemaker", emulator["AWS_ENDPOINT_URL"])
    theirs = sagemaker.describe_endpoint(EndpointName="fanout-demo")
    ours = emulated.describe_endpoint(EndpointName="fanout-demo")
    for key in ("EndpointName", "EndpointArn", "EndpointStatus", "CreationTime", "ProductionVariants"):
        assert type(ours[key]) is type(theirs[key]), key
    assert (
        ours["EndpointArn"]
        == theirs["EndpointArn"]
        == "arn:aws:sagemaker:us-east-1:123456789012:endpoint/fanout-demo"
    )
    assert ours["AsyncInferenceConfig"]["OutputConfig"]["NotificationConfig"]["SuccessTopic"].startswith(
        "arn:aws:sns:"
    )
    errors = []
    for client in (sagemaker, emulated):
        with pytest.raises(ClientError) as caught:
            client.describe_endpoint(EndpointName="no-such-endpoint")
        response: Any = caught.value.response
        errors.append((response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]))
        assert response["Error"]["Message"].startswith("Could not find endpoint ")
        assert (
            "arn:aws:sagemaker:us-east-1:123456789012:endpoint/no-such-endpoint"
            in response["Error"]["Message"]
        )
    assert errors == [("ValidationException", 400)] * 2
    with pytest.raises(ClientError) as caught:
        emulated.describe_endpoint(EndpointName="not_a_name")
    assert caught.value.response["Error"]["Message"] == (
        "1 validation error detected: Value 'not_a_name' at 'endpointName' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9])*"
    )


def test_check_against_moto_reads_its_endpoint_as_real_time(moto_url: str, tmp_path: Path) -> None:
    """moto's DescribeEndpoint leaves AsyncInferenceConfig out: its endpoints read as real-time ones,
    which is what --check must say of one."""
    queue_url = _boto("sqs", moto_url).get_queue_url(QueueName="check-notifications")["QueueUrl"]
    write_lines(tmp_path / "in.jsonl", [{"body": {"n": 1}}])
    env = cli_env(
        {
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
    )
    args = ["--check", "--queue-url", queue_url, "--staging", "s3://check-staging/in", "--json-summary"]
    statuses = {}
    for endpoint in ("fanout-demo", "not-in-moto"):
        result = run(env, str(tmp_path / "in.jsonl"), "--endpoint", endpoint, *args)
        assert result.returncode == 2, result.stderr.decode()
        checks = json.loads(result.stderr)["check"]["checks"]
        statuses[endpoint] = {item["subject"]: (item["status"], item["detail"]) for item in checks}
    assert statuses["fanout-demo"]["endpoint"] == (
        "problem",
        "endpoint 'fanout-demo' has no AsyncInferenceConfig: it is a real-time endpoint, and refuses "
        "InvokeEndpointAsync",
    )
    assert statuses["not-in-moto"]["endpoint"][0] == "problem"
    assert statuses["not-in-moto"]["endpoint"][1].startswith(
        "endpoint 'not-in-moto' was not found in us-east-1"
    )
    for found in statuses.values():
        assert found["queue"][0] == found["staging"][0] == found["credentials"][0] == "ok"
