"""``fanout run`` as a subprocess against the emulator (itself a subprocess), faults on.

The CLI is configured only through the standard AWS variables and the FANOUT_*
defaults that ``fanout emulate`` prints. Inputs are a few hundred lines, so each
run takes a second or two.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fanout.testing import run_emulator_process

RUN_TIMEOUT = 120

FAULTS: dict[str, Any] = {
    "throttle": {"rate": 400, "burst": 40},
    "error_rate": 0.03,
    "drop_connection_rate": 0.02,
    "targets": ["sagemaker"],
    "notifications": {
        "duplicate_rate": 0.1,
        "delay": {"kind": "uniform", "low_ms": 0, "high_ms": 30},
        "reorder_window_ms": 20,
        "early_rate": 0.2,
    },
}


@pytest.fixture
def emulator() -> Iterator[dict[str, str]]:
    with run_emulator_process(faults={"notifications": {"early_rate": 0.2}}) as env:
        yield env


@pytest.fixture(scope="module")
def idle_emulator() -> Iterator[dict[str, str]]:
    """One emulator for the tests in which nothing may be accepted."""
    with run_emulator_process() as env:
        yield env


def _control(env: dict[str, str], path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        env["AWS_ENDPOINT_URL"] + path, data=data, method="GET" if body is None else "PUT"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, Any] = json.load(response)
    return result


def _cli_env(emulator_env: dict[str, str], **overrides: str | None) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "FANOUT_")) and name != "PYTHONHASHSEED"
    }
    env.update(
        AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_EC2_METADATA_DISABLED="true"
    )
    env.update(emulator_env)
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "fanout._cli", "run", *args]


def _run(env: dict[str, str], *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(_command(*args), env=env, input=stdin, capture_output=True, timeout=RUN_TIMEOUT)


def _outputs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _write_lines(path: Path, lines: list[Any]) -> None:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))


def _mixed_batch(count: int) -> tuple[list[Any], dict[str, bytes | None]]:
    """Lines and, per id, the bytes the endpoint will see (None: the line must fail)."""
    lines: list[Any] = []
    payloads: dict[str, bytes | None] = {}
    for index in range(count):
        request_id = f"r{index}"
        if index % 25 == 3:
            lines.append({"id": request_id, "body": {"fail": True, "reason": request_id}})
            payloads[request_id] = None
        elif index % 40 == 7:
            value = {"big": "y" * 130_000, "i": index}
            lines.append({"id": request_id, "body": value})
            payloads[request_id] = json.dumps(value, separators=(",", ":")).encode()
        elif index % 10 == 1:
            raw = os.urandom(64)
            lines.append(
                {"id": request_id, "body_base64": base64.b64encode(raw).decode(), "content_type": "x/y"}
            )
            payloads[request_id] = raw
        else:
            value = {"i": index, "text": f"héllo {index}"}
            lines.append({"id": request_id, "body": value})
            payloads[request_id] = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    return lines, payloads


def _check_results(outputs: list[dict[str, Any]], payloads: dict[str, bytes | None]) -> None:
    ids = collections.Counter(record["id"] for record in outputs)
    assert set(ids) == set(payloads)
    assert max(ids.values()) == 1
    for record in outputs:
        expected = payloads[record["id"]]
        if record["status"] == "expired":
            continue  # the tests that allow it check it
        if expected is None:
            assert record["status"] == "failed"
            assert record["id"] in record["failure_reason"]
            continue
        assert record["status"] == "succeeded", record
        assert record["result"]["sha256"] == hashlib.sha256(expected).hexdigest()
        assert record["payload"] == ("s3" if len(expected) > 128_000 else "inline")


def test_every_line_gets_one_output_carrying_its_own_sha256(emulator: dict[str, str], tmp_path: Path) -> None:
    _control(emulator, "/_fanout/faults", FAULTS)
    lines, payloads = _mixed_batch(300)
    _write_lines(tmp_path / "in.jsonl", lines)
    result = _run(
        _cli_env(emulator), str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--json-summary"
    )
    assert result.returncode == 1, result.stderr.decode()  # the "fail" lines failed
    outputs = _outputs(tmp_path / "out.jsonl")
    _check_results(outputs, payloads)
    assert not [record for record in outputs if record["status"] == "expired"]
    summary = json.loads(result.stderr.decode().strip().splitlines()[-1])
    assert summary["exit_code"] == 1
    assert summary["statuses"] == {"succeeded": 288, "failed": 12}
    assert summary["this_run"]["api_calls"]["sagemaker-runtime.InvokeEndpointAsync"] >= 300
    stats = _control(emulator, "/_fanout/stats")
    assert stats["duplicate_inference_ids"] == 0
    assert (
        stats["faults"]["throttled"] + stats["faults"]["errors_5xx"] + stats["faults"]["dropped_connections"]
    )
    assert stats["notifications"]["duplicated"] > 0


def test_all_succeeded_exits_0_and_stdin_stdout_work(emulator: dict[str, str]) -> None:
    stdin = "".join(json.dumps({"body": {"n": n}}) + "\n" for n in range(20)).encode()
    result = _run(_cli_env(emulator), "-", "-o", "-", "--quiet", stdin=stdin)
    assert result.returncode == 0, result.stderr.decode()
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(int(record["id"]) for record in records) == list(range(1, 21))
    assert {record["status"] for record in records} == {"succeeded"}
    assert result.stderr == b""


def test_sigkill_at_several_points_then_resume_writes_each_line_once(
    emulator: dict[str, str], tmp_path: Path
) -> None:
    # Slow invokes and small limits, so that each kill lands mid-run with requests on the wire.
    _control(
        emulator,
        "/_fanout/faults",
        {**FAULTS, "throttle": None, "latency": {"sagemaker": {"kind": "constant", "ms": 15}}},
    )
    lines, payloads = _mixed_batch(240)
    _write_lines(tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    args = [str(tmp_path / "in.jsonl"), "-o", str(output), "--journal", str(tmp_path / "journal.db")]
    args += ["--max-in-flight", "8", "--max-pending", "24", "--resume-wait", "2", "--quiet"]
    env = _cli_env(emulator)
    for kill_after in (30, 100, 170):
        process = subprocess.Popen(_command(*args), env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + RUN_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            if output.exists() and output.read_bytes().count(b"\n") >= kill_after:
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    final = _run(env, *args, "--json-summary")
    assert final.returncode == 1, final.stderr.decode()
    outputs = _outputs(output)
    _check_results(outputs, payloads)
    # What was on the wire at a kill is in doubt, and sent again under its inference id: every
    # line still has exactly one output line, and none had to be given up on.
    assert not [record for record in outputs if record["status"] == "expired"]
    summary = json.loads(final.stderr.decode().strip().splitlines()[-1])
    assert summary["statuses"] == {"succeeded": 230, "failed": 10}


def test_at_most_once_never_sends_a_request_twice_even_when_202s_are_lost(
    emulator: dict[str, str], tmp_path: Path
) -> None:
    # The endpoint accepts, runs and notifies, but the 202 never reaches fanout.
    faults = {**FAULTS, "throttle": None, "drop_connection_rate": 0.0, "drop_response_rate": 0.1}
    _control(emulator, "/_fanout/faults", faults)
    lines, payloads = _mixed_batch(200)
    _write_lines(tmp_path / "in.jsonl", lines)
    args = [str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--json-summary"]
    result = _run(_cli_env(emulator), *args, "--at-most-once", "--resume-wait", "20")
    assert result.returncode == 1, result.stderr.decode()
    _check_results(_outputs(tmp_path / "out.jsonl"), payloads)
    summary = json.loads(result.stderr.decode().strip().splitlines()[-1])
    stats = _control(emulator, "/_fanout/stats")
    assert stats["faults"]["dropped_responses"] > 0
    # In doubt, then settled by the notification the endpoint sent anyway; never sent twice.
    assert summary["this_run"]["in_doubt"] == stats["faults"]["dropped_responses"]
    assert summary["this_run"]["resends"] == 0
    assert stats["duplicate_inference_ids"] == 0
    assert summary["statuses"] == {"succeeded": 192, "failed": 8}


def test_lost_202s_are_sent_again_and_counted(emulator: dict[str, str], tmp_path: Path) -> None:
    _control(emulator, "/_fanout/faults", {**FAULTS, "throttle": None, "drop_response_rate": 0.1})
    lines, payloads = _mixed_batch(200)
    _write_lines(tmp_path / "in.jsonl", lines)
    result = _run(
        _cli_env(emulator), str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--json-summary"
    )
    assert result.returncode == 1, result.stderr.decode()
    _check_results(_outputs(tmp_path / "out.jsonl"), payloads)
    summary = json.loads(result.stderr.decode().strip().splitlines()[-1])
    stats = _control(emulator, "/_fanout/stats")
    # Exactly-once output, at-least-once processing: what ran twice is what fanout says it re-sent.
    assert 0 < stats["duplicate_inference_ids"] <= summary["this_run"]["resends"]
    assert summary["this_run"]["in_doubt"] == 0


def test_ctrl_c_drains_and_a_rerun_finishes(emulator: dict[str, str], tmp_path: Path) -> None:
    _control(emulator, "/_fanout/faults", {"latency": {"sagemaker": {"kind": "constant", "ms": 15}}})
    lines, payloads = _mixed_batch(150)
    _write_lines(tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    args = [str(tmp_path / "in.jsonl"), "-o", str(output), "--journal", str(tmp_path / "journal.db")]
    args += ["--max-in-flight", "4", "--max-pending", "12", "--resume-wait", "2", "--quiet"]
    env = _cli_env(emulator)
    process = subprocess.Popen(_command(*args), env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline and not (output.exists() and output.read_bytes().count(b"\n") >= 20):
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=RUN_TIMEOUT)
    assert process.returncode == 3, stderr.decode()
    assert b"stopping" in stderr
    assert len(_outputs(output)) < 150
    final = _run(env, *args)
    assert final.returncode == 1, final.stderr.decode()
    outputs = _outputs(output)
    _check_results(outputs, payloads)
    assert not [record for record in outputs if record["status"] == "expired"]


def test_bad_lines_become_rejected_records(emulator: dict[str, str], tmp_path: Path) -> None:
    lines = [
        {"id": "good", "body": {"x": 1}},
        "{not json",
        {"id": "both", "body": 1, "input_location": "s3://fanout-staging/inputs/x"},
        "[1, 2, 3]",
        {"id": "good", "body": {"x": 2}},
        {"id": 7, "body": 1},
        {"id": "big", "body": {"pad": "z" * 130_000}},
    ]
    _write_lines(tmp_path / "in.jsonl", lines)
    result = _run(
        _cli_env(emulator),
        str(tmp_path / "in.jsonl"),
        "-o",
        str(tmp_path / "out.jsonl"),
        "--payload",
        "inline",
        "--quiet",
    )
    assert result.returncode == 1, result.stderr.decode()
    records = {
        record["failure_reason"] or record["id"]: record for record in _outputs(tmp_path / "out.jsonl")
    }
    assert len(records) == len(lines)
    reasons = sorted(records)
    assert "good" in reasons
    expected_fragments = [
        "line 2: malformed JSON",
        "line 3: give exactly one of body, body_base64 or input_location, not body and input_location",
        "line 4: expected a JSON object, got an array",
        "line 5: duplicate id 'good': line 1 already has it",
        "line 6: id must be a non-empty string",
        "128,000 bytes",
    ]
    for fragment in expected_fragments:
        matching = [reason for reason in reasons if fragment in reason]
        assert len(matching) == 1, (fragment, reasons)
        assert records[matching[0]]["status"] == "rejected"


@pytest.mark.parametrize(
    ("extra_args", "env_overrides", "message"),
    [
        (("--endpoint", "no-such-endpoint"), {}, "endpoint 'no-such-endpoint' was not found"),
        (("--queue-url", "{base}/123456789012/no-such-queue"), {}, "no-such-queue"),
        (("--staging", "s3://no-such-bucket/x"), {}, "'no-such-bucket' does not exist"),
        ((), {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}, "no AWS credentials"),
        ((), {"FANOUT_ENDPOINT": None}, "no endpoint: pass --endpoint NAME or set FANOUT_ENDPOINT"),
        ((), {"FANOUT_QUEUE_URL": None}, "--tracker sqs needs --queue-url"),
        (("--request-ttl", "5"), {}, "must be between 60 and 21600 seconds"),
        (("--payload", "s3"), {"FANOUT_STAGING": None}, "--payload s3 needs a staging location"),
        (("--journal", "{tmp}/j.db", "-o", "-"), {}, "--journal needs an output file"),
        (("-o", "{tmp}/in.jsonl"), {}, "-o/--output and the input are the same file"),
        (("--journal", "{tmp}/out.jsonl"), {}, "are the same file"),
    ],
)
def test_run_level_problems_exit_2_with_a_clear_message(
    idle_emulator: dict[str, str],
    tmp_path: Path,
    extra_args: tuple[str, ...],
    env_overrides: dict[str, str | None],
    message: str,
) -> None:
    emulator = idle_emulator
    _write_lines(tmp_path / "in.jsonl", [{"body": {"n": n}} for n in range(5)])
    (tmp_path / "out.jsonl").write_bytes(b"an earlier run's output\n")
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    args = [arg.format(base=emulator["AWS_ENDPOINT_URL"], tmp=tmp_path) for arg in extra_args]
    result = _run(
        _cli_env(emulator, **env_overrides),
        str(tmp_path / "in.jsonl"),
        "-o",
        str(tmp_path / "out.jsonl"),
        *args,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert message in stderr
    assert "Traceback" not in stderr
    assert _control(emulator, "/_fanout/stats")["invocations"]["accepted"] == 0
    # Nothing was written: not the earlier output, not the input, and no journal is left behind.
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_a_second_run_on_the_same_journal_exits_2_and_names_it(
    emulator: dict[str, str], tmp_path: Path
) -> None:
    _control(emulator, "/_fanout/faults", {"latency": {"sagemaker": {"kind": "constant", "ms": 20}}})
    lines, payloads = _mixed_batch(120)
    _write_lines(tmp_path / "in.jsonl", lines)
    output, journal = tmp_path / "out.jsonl", tmp_path / "journal.db"
    args = [str(tmp_path / "in.jsonl"), "-o", str(output), "--journal", str(journal), "--max-in-flight", "2"]
    env = _cli_env(emulator)
    first = subprocess.Popen(_command(*args, "--quiet"), env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline and not (output.exists() and output.read_bytes().count(b"\n") >= 5):
        time.sleep(0.01)
    second = _run(env, *args)
    assert second.returncode == 2, second.stderr.decode()
    assert f"the journal {str(journal)!r} is in use by another fanout run" in second.stderr.decode()
    assert first.wait(timeout=RUN_TIMEOUT) == 1, first.stderr.read().decode() if first.stderr else ""
    _check_results(_outputs(output), payloads)


def test_a_missing_input_and_unknown_flags_are_usage_errors(
    idle_emulator: dict[str, str], tmp_path: Path
) -> None:
    emulator = idle_emulator
    missing = _run(_cli_env(emulator), str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "out.jsonl"))
    assert missing.returncode == 2
    assert b"does not exist" in missing.stderr
    unknown = _run(_cli_env(emulator), "-", "-o", "-", "--bogus")
    assert unknown.returncode == 2
    assert b"unrecognized arguments: --bogus" in unknown.stderr
