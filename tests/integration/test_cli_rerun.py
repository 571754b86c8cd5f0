"""``fanout run INPUT --rerun EARLIER -o NEW`` as a subprocess against the emulator: only the lines
that did not succeed are sent, once, under new inference ids, into records with their own line
numbers; an earlier output of another input, or a path in two roles, stops it before anything."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from fanout.testing import run_emulator_process
from tests.integration.cli_support import (
    RUN_TIMEOUT,
    cli_env,
    command,
    control,
    read_outputs,
    run,
    write_lines,
)


@pytest.fixture
def emulator() -> Iterator[dict[str, str]]:
    with run_emulator_process() as env:
        yield env


@pytest.fixture(scope="module")
def idle_emulator() -> Iterator[dict[str, str]]:
    """One emulator for the tests in which nothing may be sent."""
    with run_emulator_process() as env:
        yield env


def _accepted(env: dict[str, str]) -> int:
    return int(control(env, "/_fanout/stats")["invocations"]["accepted"])


def _body(index: int, *, fail: bool) -> dict[str, Any]:
    return {"i": index, "text": f"héllo {index}", **({"fail": True, "reason": f"r{index}"} if fail else {})}


def _sent_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _publish_late_failures(env: dict[str, str], records: list[dict[str, Any]]) -> None:
    """Notifications of the earlier attempts, as if SNS delivered them again after that run ended."""
    session = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    )
    url = env["AWS_ENDPOINT_URL"]
    endpoint = session.client("sagemaker", endpoint_url=url).describe_endpoint(
        EndpointName=env["FANOUT_ENDPOINT"]
    )
    topic = endpoint["AsyncInferenceConfig"]["OutputConfig"]["NotificationConfig"]["ErrorTopic"]
    sns = session.client("sns", endpoint_url=url)
    for record in records:
        message = {
            "awsRegion": env["AWS_REGION"],
            "eventTime": "2026-01-01T00:00:00.000Z",
            "receivedTime": "2026-01-01T00:00:00.000Z",
            "invocationStatus": "Failed",
            "failureReason": "ClientError: the earlier attempt, notified late",
            "requestParameters": {"endpointName": env["FANOUT_ENDPOINT"]},
            "responseParameters": {"contentType": "text/plain"},
            "inferenceId": record["inference_id"],
            "eventVersion": "1.0",
            "eventSource": "aws:sagemaker",
            "eventName": "InferenceResult",
        }
        sns.publish(TopicArn=topic, Message=json.dumps(message))


def test_a_rerun_sends_only_what_did_not_succeed_and_keeps_the_line_numbers(
    emulator: dict[str, str], tmp_path: Path
) -> None:
    # Lines 1-40 with a blank line 21, so that line numbers and input positions differ.
    failing = {3, 8, 13, 19, 30, 38}
    bodies = {line: _body(line, fail=line in failing) for line in range(1, 41) if line != 21}
    lines: list[Any] = [
        {"id": f"r{line}", "body": bodies[line]} if line in bodies else "" for line in range(1, 41)
    ]
    lines[10] = {"id": "r11", "body": {"pad": "x" * 130_000, "i": 11}}  # through S3
    bodies[11] = lines[10]["body"]
    source = tmp_path / "in.jsonl"
    write_lines(source, lines)
    earlier, journal = tmp_path / "out.jsonl", tmp_path / "journal.db"
    env = cli_env(emulator)
    first = run(env, str(source), "-o", str(earlier), "--journal", str(journal), "--quiet")
    assert first.returncode == 1, first.stderr.decode()
    records = read_outputs(earlier)
    assert {record["line"] for record in records if record["status"] == "failed"} == failing
    # A run that stopped early leaves lines without a record: those are run again too.
    missing = {5, 11}
    earlier.write_text(
        "".join(json.dumps(record) + "\n" for record in records if record["line"] not in missing)
    )
    _publish_late_failures(emulator, [record for record in records if record["status"] == "failed"])

    # The earlier run's journal is not this command's: refused, before anything is sent or written.
    accepted = _accepted(emulator)
    mixed = run(
        env,
        str(source),
        "--rerun",
        str(earlier),
        "-o",
        str(tmp_path / "new.jsonl"),
        "--journal",
        str(journal),
    )
    assert mixed.returncode == 2, mixed.stderr.decode()
    assert f"journal {str(journal)!r} belongs to another run: " in mixed.stderr.decode()
    assert f"rerun None (now {str(earlier)!r})" in mixed.stderr.decode()
    assert not (tmp_path / "new.jsonl").exists()

    repaired = {
        line: {k: v for k, v in body.items() if k not in ("fail", "reason")} for line, body in bodies.items()
    }
    fixed = [{"id": f"r{line}", "body": repaired[line]} if line in bodies else "" for line in range(1, 41)]
    write_lines(source, fixed)
    result = run(
        env, "-", "--rerun", str(earlier), "-o", str(tmp_path / "new.jsonl"), "--json-summary",
        stdin=source.read_bytes(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    chosen = failing | missing
    assert _accepted(emulator) - accepted == len(chosen)  # nothing else was sent
    new = read_outputs(tmp_path / "new.jsonl")
    assert sorted(record["line"] for record in new) == sorted(chosen)  # each once
    earlier_ids = {record["inference_id"] for record in records}
    for record in new:
        line = record["line"]
        assert record["id"] == f"r{line}"
        assert record["status"] == "succeeded", record  # not settled by the earlier attempt's notification
        assert record["inference_id"] not in earlier_ids
        assert record["result"]["sha256"] == hashlib.sha256(_sent_bytes(fixed[line - 1]["body"])).hexdigest()
        assert record["payload"] == ("s3" if line == 11 else "inline")
    # Given with the rerun's own output, the earlier output leaves nothing to run.
    chained = run(
        env, str(source), "--check", "--rerun", str(earlier), "--rerun", str(tmp_path / "new.jsonl")
    )
    assert chained.returncode == 0, chained.stderr.decode()
    assert f"0 of 39 lines did not succeed in {earlier} and {tmp_path / 'new.jsonl'}; nothing to send" in (
        chained.stderr.decode()
    )
    summary = json.loads(result.stderr.decode().strip().splitlines()[-1])
    assert summary["rerun"] == {
        "sources": [str(earlier)],
        "lines": 39,
        "selected": 8,
        "skipped": 31,
        "by_status": {"failed": 6, "no record": 2},
        "own_inference_ids": 0,
    }
    assert summary["statuses"] == {"succeeded": 8}


def test_an_output_of_another_input_exits_2_before_anything_is_written(
    idle_emulator: dict[str, str], tmp_path: Path
) -> None:
    write_lines(tmp_path / "in.jsonl", [{"id": f"r{n}", "body": {"n": n}} for n in range(1, 6)])
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "other.jsonl": ({"id": "q3", "line": 3}, "line 3 has id 'q3', the input's line 3 has id 'r3'"),
        "long.jsonl": ({"id": "r9", "line": 9}, "that line of the input does not exist"),
        "old.jsonl": ({"id": "r2"}, "written by a fanout older than the output's line field"),
    }
    env = cli_env(idle_emulator)
    for name, (record, fragment) in cases.items():
        (tmp_path / name).write_text(json.dumps({"id": "r1", "line": 1, "status": "succeeded"}) + "\n")
        with (tmp_path / name).open("a") as earlier:
            earlier.write(json.dumps({**record, "status": "failed"}) + "\n")
        before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
        args = [
            "--rerun",
            str(tmp_path / name),
            "-o",
            str(tmp_path / "new.jsonl"),
            "--journal",
            str(tmp_path / "j.db"),
        ]
        result = run(env, str(tmp_path / "in.jsonl"), *args)
        stderr = result.stderr.decode()
        assert result.returncode == 2, stderr
        assert stderr.startswith(f"fanout run: error: --rerun {str(tmp_path / name)!r} ")
        assert fragment in stderr
        assert {
            path.name: path.read_bytes() for path in tmp_path.iterdir()
        } == before  # no output, no journal
    assert _accepted(idle_emulator) == 0


def test_one_path_in_two_roles_exits_2_and_writes_nothing(
    idle_emulator: dict[str, str], tmp_path: Path
) -> None:
    write_lines(tmp_path / "in.jsonl", [{"id": "a", "body": 1}])
    (tmp_path / "out.jsonl").write_text(json.dumps({"id": "a", "line": 1, "status": "failed"}) + "\n")
    os.symlink(tmp_path / "out.jsonl", tmp_path / "symlink.jsonl")
    os.link(tmp_path / "out.jsonl", tmp_path / "hardlink.jsonl")
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    env = cli_env(idle_emulator)
    for args, message in [
        (["-o", "out.jsonl"], "--rerun and -o/--output are the same file"),
        (["-o", "symlink.jsonl"], "--rerun and -o/--output are the same file"),
        (["-o", "hardlink.jsonl"], "--rerun and -o/--output are the same file"),
        (["-o", "new.jsonl", "--journal", "out.jsonl"], "--rerun and --journal are the same file"),
    ]:
        paths = [str(tmp_path / arg) if arg.endswith(".jsonl") else arg for arg in args]
        result = run(env, str(tmp_path / "in.jsonl"), "--rerun", str(tmp_path / "out.jsonl"), *paths)
        assert result.returncode == 2, result.stderr.decode()
        assert message in result.stderr.decode()
        assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before
    same_as_input = run(env, str(tmp_path / "in.jsonl"), "--rerun", str(tmp_path / "in.jsonl"), "-o", "-")
    assert same_as_input.returncode == 2
    assert b"--rerun and the input are the same file" in same_as_input.stderr
    assert _accepted(idle_emulator) == 0


def test_a_rerun_with_a_journal_killed_then_resumed_sends_each_chosen_line_once(
    emulator: dict[str, str], tmp_path: Path
) -> None:
    # Slow invokes and small limits, so that each kill lands mid-run with requests on the wire.
    control(emulator, "/_fanout/faults", {"latency": {"sagemaker": {"kind": "constant", "ms": 15}}})
    count = 200
    write_lines(
        tmp_path / "in.jsonl",
        [{"id": f"r{line}", "body": _body(line, fail=False)} for line in range(1, count + 1)],
    )
    chosen = {line for line in range(1, count + 1) if line % 4}  # 150 lines did not succeed earlier
    earlier = tmp_path / "earlier.jsonl"
    statuses = ["failed", "expired", "rejected"]
    earlier.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"r{line}",
                    "line": line,
                    "status": statuses[line % 3] if line in chosen else "succeeded",
                }
            )
            + "\n"
            for line in range(1, count + 1)
            if line != 7  # no record at all: chosen too
        )
    )
    output = tmp_path / "new.jsonl"
    args = [
        str(tmp_path / "in.jsonl"),
        "--rerun",
        str(earlier),
        "-o",
        str(output),
        "--journal",
        str(tmp_path / "j.db"),
    ]
    args += ["--max-in-flight", "8", "--max-pending", "24", "--resume-wait", "2", "--quiet"]
    env = cli_env(emulator)
    stats = control(emulator, "/_fanout/stats")
    accepted, duplicates = stats["invocations"]["accepted"], stats["duplicate_inference_ids"]
    for kill_after in (20, 60, 100):
        process = subprocess.Popen(command(*args), env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + RUN_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            if output.exists() and output.read_bytes().count(b"\n") >= kill_after:
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    final = run(env, *args, "--json-summary")
    assert final.returncode == 0, final.stderr.decode()
    outputs = read_outputs(output)
    assert sorted(record["line"] for record in outputs) == sorted(chosen)  # each chosen line once
    for record in outputs:
        assert record["status"] == "succeeded"
        expected = _sent_bytes(_body(record["line"], fail=False))
        assert record["result"]["sha256"] == hashlib.sha256(expected).hexdigest()
    stats = control(emulator, "/_fanout/stats")
    # One accepted invoke per chosen line, plus same-id resends of requests a kill left in doubt:
    # no line got a second inference id, and no line that succeeded earlier was sent.
    resent = stats["duplicate_inference_ids"] - duplicates
    assert stats["invocations"]["accepted"] - accepted == len(chosen) + resent
    summary = json.loads(final.stderr.decode().strip().splitlines()[-1])
    assert summary["statuses"] == {"succeeded": len(chosen)}
    by_status = collections.Counter(statuses[line % 3] for line in chosen if line != 7)
    assert summary["rerun"]["by_status"] == {**by_status, "no record": 1}
