"""Conformance: the real ``fanout run`` CLI against moto (S3, SNS, SQS) and an endpoint stand-in.

Nothing here comes from ``fanout.testing``: the buckets, topics, queue and SNS -> SQS delivery are
moto's (``ThreadedMotoServer`` on 127.0.0.1), and the endpoint is ``standin.py``, written from the
protocol notes. The CLI is a subprocess configured only through the standard AWS variables
(``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``, ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL_SQS``, region
and fake credentials), as scripts outside this repository drive it.

Every scenario checks the contract of ``fanout run``: one output line per input line, the right
status, every ``result`` carrying the sha256 of that line's own request bytes, and the exit code.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.conformance.standin import ACCOUNT, MAX_BODY, EndpointSpec, Faults, StandIn, run_standin

REGION = "us-east-1"
RUN_TIMEOUT = 120
IN_DOUBT = "in doubt"


# -- moto and the AWS resources ------------------------------------------------------------------


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


def _client(service: str, url: str) -> Any:
    return boto3.session.Session().client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 2}, connect_timeout=5, read_timeout=30),
    )


@dataclass(frozen=True, slots=True)
class World:
    """One scenario's resources in moto, named uniquely so scenarios never see each other's."""

    moto_url: str
    endpoint: EndpointSpec
    output_bucket: str
    staging_bucket: str
    queue_url: str

    @property
    def staging(self) -> str:
        return f"s3://{self.staging_bucket}/inputs"


def _world(moto_url: str) -> World:
    suffix = uuid.uuid4().hex[:10]
    s3, sns, sqs = (_client(name, moto_url) for name in ("s3", "sns", "sqs"))
    output_bucket, staging_bucket = f"conf-out-{suffix}", f"conf-staging-{suffix}"
    for bucket in (output_bucket, staging_bucket):
        s3.create_bucket(Bucket=bucket)
    queue_url = sqs.create_queue(QueueName=f"conf-notifications-{suffix}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    topics = []
    for kind in ("success", "error"):
        arn = sns.create_topic(Name=f"conf-{kind}-{suffix}")["TopicArn"]
        sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)  # SNS envelope: the default
        topics.append(arn)
    endpoint = EndpointSpec(
        name=f"conf-endpoint-{suffix}",
        output_path=f"s3://{output_bucket}/async-output",
        failure_path=f"s3://{output_bucket}/async-failures",
        success_topic=topics[0],
        error_topic=topics[1],
    )
    return World(moto_url, endpoint, output_bucket, staging_bucket, queue_url)


# -- inputs and checks ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expected:
    data: bytes | None
    """The bytes the endpoint must see; None: the line must fail."""
    reason: str | None
    payload: str
    content_type: str = "application/json"
    input_location: str | None = None


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _mixed_batch(
    world: World, count: int, *, seed: int, fail: bool = True
) -> tuple[list[Any], dict[str, Expected]]:
    """Small JSON bodies, ``body_base64``, ``"fail": true`` lines, bodies over 128,000 bytes (staged
    in S3 by the client) and ``input_location`` lines uploaded beforehand."""
    rng = random.Random(seed)
    s3 = _client("s3", world.moto_url)
    lines: list[Any] = []
    expected: dict[str, Expected] = {}
    for index in range(count):
        request_id = f"r{index}"
        if fail and index % 25 == 3:
            reason = f"reason-{request_id}"
            lines.append({"id": request_id, "body": {"fail": True, "reason": reason}})
            expected[request_id] = Expected(None, reason, "inline")
        elif index % 50 == 7:
            value = {"big": "ü" * 65_000, "i": index}  # 130,000+ bytes of UTF-8, fewer characters
            assert len(_compact(value)) > MAX_BODY
            lines.append({"id": request_id, "body": value})
            expected[request_id] = Expected(_compact(value), None, "s3")
        elif index % 50 == 17:
            raw = rng.randbytes(300)
            key = f"preuploaded/{request_id}"
            s3.put_object(Bucket=world.staging_bucket, Key=key, Body=raw)
            lines.append({"id": request_id, "input_location": f"s3://{world.staging_bucket}/{key}"})
            expected[request_id] = Expected(raw, None, "s3", input_location=lines[-1]["input_location"])
        elif index % 10 == 1:
            raw = rng.randbytes(rng.randint(1, 200))
            lines.append(
                {
                    "id": request_id,
                    "body_base64": base64.b64encode(raw).decode(),
                    "content_type": "application/octet-stream",
                }
            )
            expected[request_id] = Expected(raw, None, "inline", "application/octet-stream")
        else:
            value = {"i": index, "text": f"héllo wörld 日本 {index}", "nested": [index, None, True, 1.5]}
            lines.append({"id": request_id, "body": value})
            expected[request_id] = Expected(_compact(value), None, "inline")
    return lines, expected


def _write_lines(path: Path, lines: list[Any]) -> None:
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")


def _outputs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _check(
    outputs: list[dict[str, Any]],
    expected: dict[str, Expected],
    standin: StandIn,
    *,
    in_doubt_allowed: int = 0,
    resends_allowed: int = 0,
    headers: tuple[int | None, int | None] = (None, None),
) -> collections.Counter[str]:
    """The contract for every line, joined with what the stand-in really did; returns the count by
    status. ``in_doubt_allowed`` lines may be ``expired`` as "in doubt" (on the wire when an earlier
    run was killed), and as many inference ids may have been sent twice (resent after such a kill).
    ``headers`` are the RequestTTLSeconds and InvocationTimeoutSeconds every invoke must carry.

    A failure lists each kind of wrong line with the stand-in faults its request met.
    """
    standin.wait_idle()
    assert standin.errors == [], f"the stand-in itself failed: {standin.errors}"
    rejected = {name: n for name, n in standin.counters.items() if name.startswith("rejected.")}
    assert not rejected, f"the endpoint rejected invokes: {rejected}"
    ids = collections.Counter(str(record.get("id")) for record in outputs)
    duplicated = {request_id: n for request_id, n in ids.items() if n > 1}
    assert not duplicated, f"ids with more than one output line: {duplicated}"
    assert set(ids) == set(expected), (
        f"missing: {sorted(set(expected) - set(ids))}, unexpected: {sorted(set(ids) - set(expected))}"
    )
    inference_ids = {str(record.get("inference_id")) for record in outputs}
    strangers = set(standin.accepted) - inference_ids
    assert not strangers, f"the endpoint accepted inference ids that no output line has: {strangers}"
    resent = {iid: len(accepted) for iid, accepted in standin.accepted.items() if len(accepted) > 1}
    assert len(resent) <= resends_allowed, f"inference ids accepted more than once: {resent}"

    problems: list[tuple[str, str, dict[str, Any]]] = []
    statuses: collections.Counter[str] = collections.Counter()
    in_doubt = 0
    for record in outputs:
        want = expected[record["id"]]
        status = record["status"]
        statuses[status] += 1
        accepted = standin.accepted.get(str(record.get("inference_id")), [])
        faults = ",".join(sorted({f for a in accepted for f in a.faults})) or "none"
        if not accepted:
            faults = "never accepted by the endpoint"

        def wrong(kind: str, record: dict[str, Any] = record, faults: str = faults) -> None:
            problems.append((kind, faults, record))

        if status == "expired" and (record.get("failure_reason") or "").startswith(IN_DOUBT):
            in_doubt += 1
            continue
        if want.data is None:
            if status != "failed":
                wrong(f"{status}, should be failed")
            elif want.reason not in (record.get("failure_reason") or ""):
                wrong("failed without the model's reason in failure_reason")
            elif record.get("failure_location") not in {a.failure_location for a in accepted}:
                wrong("failed with a failure_location the endpoint did not give its inference id")
        else:
            result = record.get("result")
            if status != "succeeded":
                wrong(f"{status}, should be succeeded")
            elif not isinstance(result, dict):
                wrong(f"succeeded with result {result!r}")
            elif result.get("sha256") != hashlib.sha256(want.data).hexdigest() or result.get("bytes") != len(
                want.data
            ):
                wrong("succeeded with the result of other bytes")
            elif record.get("output_location") not in {a.output_location for a in accepted}:
                wrong("succeeded with an output_location the endpoint did not give its inference id")
        if record.get("payload") != want.payload:
            wrong(f"payload {record.get('payload')!r}, should be {want.payload!r}")
        for sent in accepted:
            if ("inline" if sent.inline else "s3") != want.payload:
                wrong(f"sent {'inline' if sent.inline else 'through S3'}, should be {want.payload}")
            if want.input_location is not None and sent.input_location != want.input_location:
                wrong(f"sent InputLocation {sent.input_location!r}, should be {want.input_location!r}")
            if sent.content_type != want.content_type:
                wrong(f"sent ContentType {sent.content_type!r}, should be {want.content_type!r}")
            if (sent.request_ttl_seconds, sent.invocation_timeout_seconds) != headers:
                wrong(
                    f"sent RequestTTLSeconds/InvocationTimeoutSeconds "
                    f"{(sent.request_ttl_seconds, sent.invocation_timeout_seconds)}, should be {headers}"
                )
    assert in_doubt <= in_doubt_allowed, f"{in_doubt} lines in doubt, at most {in_doubt_allowed} allowed"
    if problems:
        kinds = collections.Counter((kind, faults) for kind, faults, _ in problems)
        summary = "\n".join(
            f"  {n} x {kind} (stand-in faults of those requests: {faults})"
            for (kind, faults), n in sorted(kinds.items())
        )
        examples = "\n".join(f"  {record}" for _, _, record in problems[:5])
        raise AssertionError(
            f"{len(problems)} of {len(outputs)} output lines are wrong:\n{summary}\nfor example:\n{examples}"
        )
    return statuses


def _exit_code_for(statuses: collections.Counter[str]) -> int:
    return 0 if set(statuses) == {"succeeded"} else 1


def _check_every_request_was_accepted(standin: StandIn, count: int) -> None:
    """For runs that were not killed: each line reached the endpoint exactly once, and no
    connection broke."""
    assert len(standin.accepted) == count
    assert standin.counters["accepted"] == count
    assert standin.counters["connection_errors"] == 0


# -- running the CLI -----------------------------------------------------------------------------


def _cli_env(world: World, standin: StandIn) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "FANOUT_")) and name.lower() not in ("http_proxy", "https_proxy")
    }
    env.update(
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_REGION=REGION,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=standin.url,
        AWS_ENDPOINT_URL_S3=world.moto_url,
        AWS_ENDPOINT_URL_SQS=world.moto_url,
        NO_PROXY="127.0.0.1,localhost",
    )
    return env


def _command(world: World, tmp_path: Path, tracker: str, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "fanout._cli", "run", str(tmp_path / "in.jsonl")]
    command += ["-o", str(tmp_path / "out.jsonl"), "--endpoint", world.endpoint.name, "--tracker", tracker]
    if tracker != "s3":
        command += ["--queue-url", world.queue_url]
    if tracker == "hybrid":
        command += ["--reconcile-after", "2"]  # lost notifications are found in S3 soon
    command += ["--staging", world.staging, "--payload", "auto", *extra]
    return command


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(command, env=env, capture_output=True, timeout=RUN_TIMEOUT)


def _summary(result: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    lines = result.stderr.decode().strip().splitlines()
    assert lines, "no summary on stderr"
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


def _scenario(
    moto_url: str,
    tmp_path: Path,
    *,
    tracker: str,
    faults: Faults,
    count: int,
    seed: int,
    garbage: bool,
    ttl_and_timeout: tuple[int, int] | None = None,
) -> None:
    world = _world(moto_url)
    extra = ["--json-summary"]
    if ttl_and_timeout is not None:
        extra += ["--request-ttl", str(ttl_and_timeout[0]), "--invocation-timeout", str(ttl_and_timeout[1])]
    lines, expected = _mixed_batch(world, count, seed=seed)
    _write_lines(tmp_path / "in.jsonl", lines)
    with run_standin(moto_url=moto_url, endpoints=[world.endpoint], faults=faults, seed=seed) as standin:
        standin.announce(world.queue_url if garbage else None)
        result = _run(_command(world, tmp_path, tracker, *extra), _cli_env(world, standin))
        stderr = result.stderr.decode()
        assert "Traceback" not in stderr, stderr
        statuses = _check(
            _outputs(tmp_path / "out.jsonl"), expected, standin, headers=ttl_and_timeout or (None, None)
        )
        assert result.returncode == _exit_code_for(statuses) == 1, stderr
        summary = _summary(result)
        assert summary["exit_code"] == 1
        assert summary["statuses"] == dict(statuses)
        _check_every_request_was_accepted(standin, count)
        for name, share in (("early", faults.early), ("duplicated", faults.duplicate), ("lost", faults.lost)):
            assert (standin.counters[name] > 0) == (share > 0), (name, standin.counters)


# -- the stand-in itself, through boto3 ----------------------------------------------------------


def test_standin_answers_like_the_service(moto_url: str) -> None:
    """The stand-in's wire behaviour, as botocore parses it: 202 and its headers, the errors."""
    world = _world(moto_url)
    with run_standin(moto_url=moto_url, endpoints=[world.endpoint]) as standin:
        runtime = _client("sagemaker-runtime", standin.url)
        name = world.endpoint.name
        answer = runtime.invoke_endpoint_async(
            EndpointName=name, Body=b'{"x":1}', ContentType="application/json", InferenceId="my-id-1"
        )
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
        assert answer["ResponseMetadata"]["RequestId"]
        assert answer["InferenceId"] == "my-id-1"
        output, failure = answer["OutputLocation"], answer["FailureLocation"]
        assert output.startswith(f"s3://{world.output_bucket}/async-output/") and output.endswith(".out")
        key = output.rsplit("/", 1)[1].removesuffix(".out")
        assert failure == f"s3://{world.output_bucket}/async-failures/{key}-error.out"
        assert key != "my-id-1" and uuid.UUID(key)

        def error(**params: Any) -> tuple[int, str, str]:
            try:
                runtime.invoke_endpoint_async(**params)
            except runtime.exceptions.ClientError as exc:
                response = exc.response
                return (
                    response["ResponseMetadata"]["HTTPStatusCode"],
                    response["Error"]["Code"],
                    response["Error"]["Message"],
                )
            raise AssertionError(f"accepted: {params}")

        status, code, message = error(EndpointName=name, Body=b"x" * (MAX_BODY + 1))
        assert (status, code) == (400, "ValidationError") and "128000" in message
        status, code, message = error(EndpointName=name, Body=b"{}", InputLocation="s3://b/k")
        assert (status, code) == (400, "ValidationError") and "exactly one" in message
        status, code, message = error(EndpointName=name)
        assert (status, code) == (400, "ValidationError") and "exactly one" in message
        status, code, message = error(EndpointName="nope", Body=b"{}")
        assert (status, code, message) == (
            400,
            "ValidationError",
            f"Endpoint nope of account {ACCOUNT} not found.",
        )
        status, code, message = error(EndpointName=name, Body=b"{}", InferenceId="tab\tinside")
        assert (status, code) == (400, "ValidationError") and "inferenceId" in message
        status, code, message = error(EndpointName=name, Body=b"{}", InferenceId="x" * 65)
        assert (status, code) == (400, "ValidationError") and "inferenceId" in message
        status, code, message = error(EndpointName=name, Body=b"{}", RequestTTLSeconds=21_601)
        assert (status, code) == (400, "ValidationError") and "requestTTLSeconds" in message

        unsigned = _client("sagemaker-runtime", standin.url)

        def strip_authorization(request: Any, **_: Any) -> None:
            del request.headers["Authorization"]

        unsigned.meta.events.register("before-send.sagemaker-runtime.*", strip_authorization)
        try:
            unsigned.invoke_endpoint_async(EndpointName=name, Body=b"{}")
        except unsigned.exceptions.ClientError as exc:
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 403
            assert exc.response["Error"]["Code"] == "MissingAuthenticationTokenException"
        else:
            raise AssertionError("an unsigned request was accepted")

        failing = runtime.invoke_endpoint_async(
            EndpointName=name, Body=b'{"fail":true,"reason":"boom"}', InferenceId="my-id-2"
        )
        standin.wait_idle()
        assert standin.errors == []
        assert standin.counters["accepted"] == 2
        s3 = _client("s3", moto_url)
        stored = s3.get_object(Bucket=world.output_bucket, Key=f"async-output/{key}.out")
        assert stored["ContentType"] == "application/json"
        assert json.loads(stored["Body"].read()) == {
            "sha256": hashlib.sha256(b'{"x":1}').hexdigest(),
            "bytes": 7,
        }
        failure_key = failing["FailureLocation"].split("/", 3)[3]
        failure_text = s3.get_object(Bucket=world.output_bucket, Key=failure_key)["Body"].read().decode()
        assert "boom" in failure_text

        sqs = _client("sqs", moto_url)
        envelopes: list[dict[str, Any]] = []
        for _ in range(10):
            received = sqs.receive_message(
                QueueUrl=world.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            envelopes += [json.loads(m["Body"]) for m in received.get("Messages", [])]
            if len(envelopes) >= 2:
                break
        assert len(envelopes) == 2
        assert {e["Type"] for e in envelopes} == {"Notification"}  # the SNS envelope, not raw delivery
        by_topic = {e["TopicArn"]: json.loads(e["Message"]) for e in envelopes}
        success = by_topic[world.endpoint.success_topic]
        assert list(success) == [
            "awsRegion",
            "eventTime",
            "receivedTime",
            "invocationStatus",
            "requestParameters",
            "responseParameters",
            "inferenceId",
            "eventVersion",
            "eventSource",
            "eventName",
        ]
        assert success["invocationStatus"] == "Completed"
        assert success["inferenceId"] == "my-id-1"
        assert success["requestParameters"] == {"contentType": "application/json", "endpointName": name}
        assert success["responseParameters"] == {"contentType": "application/json", "outputLocation": output}
        assert (success["eventVersion"], success["eventSource"], success["eventName"]) == (
            "1.0",
            "aws:sagemaker",
            "InferenceResult",
        )
        assert "responseBody" not in success
        failed = by_topic[world.endpoint.error_topic]
        assert failed["invocationStatus"] == "Failed"
        assert failed["inferenceId"] == "my-id-2"
        assert "boom" in failed["failureReason"]
        assert failed["responseParameters"]["failureLocation"] == failing["FailureLocation"]
        assert "outputLocation" not in failed["responseParameters"]
        assert "responseBody" not in failed


# -- the scenarios -------------------------------------------------------------------------------


def test_sqs_tracker_with_early_and_duplicated_notifications(moto_url: str, tmp_path: Path) -> None:
    _scenario(
        moto_url,
        tmp_path,
        tracker="sqs",
        faults=Faults(early=0.15, duplicate=0.15),
        count=300,
        seed=1,
        garbage=True,
        ttl_and_timeout=(3600, 600),
    )


def test_hybrid_tracker_recovers_lost_notifications_from_s3(moto_url: str, tmp_path: Path) -> None:
    _scenario(
        moto_url,
        tmp_path,
        tracker="hybrid",
        faults=Faults(early=0.1, duplicate=0.1, lost=0.1),
        count=200,
        seed=2,
        garbage=True,
    )


def test_s3_tracker(moto_url: str, tmp_path: Path) -> None:
    _scenario(
        moto_url,
        tmp_path,
        tracker="s3",
        faults=Faults(early=0.1, duplicate=0.1, lost=0.3),
        count=200,
        seed=3,
        garbage=False,
    )


def test_all_succeeded_exits_0(moto_url: str, tmp_path: Path) -> None:
    world = _world(moto_url)
    lines, expected = _mixed_batch(world, 40, seed=4, fail=False)
    _write_lines(tmp_path / "in.jsonl", lines)
    with run_standin(
        moto_url=moto_url, endpoints=[world.endpoint], faults=Faults(duplicate=0.2), seed=4
    ) as standin:
        result = _run(_command(world, tmp_path, "sqs", "--quiet"), _cli_env(world, standin))
        assert result.returncode == 0, result.stderr.decode()
        assert result.stderr == b""
        assert _check(_outputs(tmp_path / "out.jsonl"), expected, standin) == {"succeeded": 40}
        _check_every_request_was_accepted(standin, 40)


def test_two_sigkills_then_resume(moto_url: str, tmp_path: Path) -> None:
    """SIGKILL a journaled run twice, mid-run, then let the same command finish.

    A request on the wire at a kill is "in doubt" for the next run: it may be reported
    ``expired`` with an "in doubt" reason, or sent again under its inference id (its outcome still
    written once); at most ``max_in_flight`` such requests per kill. Everything else must come out
    exactly as in an uninterrupted run.
    """
    world = _world(moto_url)
    count, max_in_flight = 240, 8
    lines, expected = _mixed_batch(world, count, seed=5)
    _write_lines(tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    extra = ["--journal", str(tmp_path / "journal.db"), "--max-in-flight", str(max_in_flight)]
    extra += ["--max-pending", "24", "--resume-wait", "2", "--quiet"]
    command = _command(world, tmp_path, "sqs", *extra)
    faults = Faults(early=0.1, duplicate=0.1)
    with run_standin(
        moto_url=moto_url, endpoints=[world.endpoint], faults=faults, service_time=(0.02, 0.15), seed=5
    ) as standin:
        standin.announce(world.queue_url)
        env = _cli_env(world, standin)
        seen = []
        for kill_after in (40, 130):
            process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + RUN_TIMEOUT
                while process.poll() is None and time.monotonic() < deadline:
                    if output.exists() and output.read_bytes().count(b"\n") >= kill_after:
                        break
                    time.sleep(0.01)
                assert process.poll() is None, f"the run ended (code {process.returncode}) before the kill"
                process.send_signal(signal.SIGKILL)
                assert process.wait(timeout=30) == -signal.SIGKILL
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=30)
            seen.append(output.read_bytes().count(b"\n"))
        final = _run(command, env)
        stderr = final.stderr.decode()
        assert "Traceback" not in stderr, stderr
        statuses = _check(
            _outputs(output),
            expected,
            standin,
            in_doubt_allowed=2 * max_in_flight,
            resends_allowed=2 * max_in_flight,
        )
        assert final.returncode == _exit_code_for(statuses) == 1, stderr
        assert seen[0] < count and seen[1] < count
        resent = sum(len(accepted) - 1 for accepted in standin.accepted.values())
        print(
            f"lines at the kills: {seen}; statuses: {dict(statuses)}; resent: {resent}; "
            f"never accepted: {count - len(standin.accepted)}; stand-in: {dict(standin.counters)}"
        )
