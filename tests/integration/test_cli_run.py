"""``fanout run`` as a subprocess against the emulator (itself a subprocess), faults on.

The CLI is configured only through the standard AWS variables and the FANOUT_*
defaults that ``fanout emulate`` prints. Inputs are a few hundred lines, so each
run takes a second or two.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout.testing import run_emulator_process
from tests.fastwire import free_port
from tests.integration.cli_support import (
    FAULTS,
    RUN_TIMEOUT,
    check_results,
    cli_env,
    command,
    control,
    mixed_batch,
    read_outputs,
    run,
    write_lines,
)


@pytest.fixture
def emulator() -> Iterator[dict[str, str]]:
    with run_emulator_process(faults={"notifications": {"early_rate": 0.2}}) as env:
        yield env


@pytest.fixture(scope="module")
def idle_emulator() -> Iterator[dict[str, str]]:
    """One emulator for the tests in which nothing may be accepted."""
    with run_emulator_process() as env:
        yield env


def test_every_line_gets_one_output_carrying_its_own_sha256(emulator: dict[str, str], tmp_path: Path) -> None:
    control(emulator, "/_fanout/faults", FAULTS)
    lines, payloads = mixed_batch(300)
    write_lines(tmp_path / "in.jsonl", lines)
    result = run(
        cli_env(emulator), str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--json-summary"
    )
    assert result.returncode == 1, result.stderr.decode()  # the "fail" lines failed
    outputs = read_outputs(tmp_path / "out.jsonl")
    check_results(outputs, payloads)
    assert not [record for record in outputs if record["status"] == "expired"]
    summary = json.loads(result.stderr.decode().strip().splitlines()[-1])
    assert summary["exit_code"] == 1
    assert summary["statuses"] == {"succeeded": 288, "failed": 12}
    assert summary["this_run"]["api_calls"]["sagemaker-runtime.InvokeEndpointAsync"] >= 300
    stats = control(emulator, "/_fanout/stats")
    assert stats["duplicate_inference_ids"] == 0
    assert (
        stats["faults"]["throttled"] + stats["faults"]["errors_5xx"] + stats["faults"]["dropped_connections"]
    )
    assert stats["notifications"]["duplicated"] > 0


def test_all_succeeded_exits_0_and_stdin_stdout_work(emulator: dict[str, str]) -> None:
    stdin = "".join(json.dumps({"body": {"n": n}}) + "\n" for n in range(20)).encode()
    result = run(cli_env(emulator), "-", "-o", "-", "--quiet", stdin=stdin)
    assert result.returncode == 0, result.stderr.decode()
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(int(record["id"]) for record in records) == list(range(1, 21))
    assert {record["status"] for record in records} == {"succeeded"}
    assert result.stderr == b""


def test_sigkill_at_several_points_then_resume_writes_each_line_once(
    emulator: dict[str, str], tmp_path: Path
) -> None:
    # Slow invokes and small limits, so that each kill lands mid-run with requests on the wire.
    control(
        emulator,
        "/_fanout/faults",
        {**FAULTS, "throttle": None, "latency": {"sagemaker": {"kind": "constant", "ms": 15}}},
    )
    lines, payloads = mixed_batch(240)
    write_lines(tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    args = [str(tmp_path / "in.jsonl"), "-o", str(output), "--journal", str(tmp_path / "journal.db")]
    args += ["--max-in-flight", "8", "--max-pending", "24", "--resume-wait", "2", "--quiet"]
    env = cli_env(emulator)
    for kill_after in (30, 100, 170):
        process = subprocess.Popen(command(*args), env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + RUN_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            if output.exists() and output.read_bytes().count(b"\n") >= kill_after:
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    final = run(env, *args, "--json-summary")
    assert final.returncode == 1, final.stderr.decode()
    outputs = read_outputs(output)
    check_results(outputs, payloads)
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
    control(emulator, "/_fanout/faults", faults)
    lines, payloads = mixed_batch(200)
    write_lines(tmp_path / "in.jsonl", lines)
    args = [str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--json-summary"]
    result = run(cli_env(emulator), *args, "--at-most-once", "--resume-wait", "20")
    assert result.returncode == 1, result.stderr.decode()
    check_results(read_outputs(tmp_path / "out.jsonl"), payloads)
    summary = json.loads(result.stderr.decode().strip().splitlines()[-1])
    stats = control(emulator, "/_fanout/stats")
    assert stats["faults"]["dropped_responses"] > 0
    # In doubt, then settled by the notification the endpoint sent anyway; never sent twice.
    assert summary["this_run"]["in_doubt"] == stats["faults"]["dropped_responses"]
    assert summary["this_run"]["resends"] == 0
    assert stats["duplicate_inference_ids"] == 0
    assert summary["statuses"] == {"succeeded": 192, "failed": 8}


def test_lost_202s_are_sent_again_and_counted(emulator: dict[str, str], tmp_path: Path) -> None:
    control(emulator, "/_fanout/faults", {**FAULTS, "throttle": None, "drop_response_rate": 0.1})
    lines, payloads = mixed_batch(200)
    write_lines(tmp_path / "in.jsonl", lines)
    result = run(
        cli_env(emulator), str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--json-summary"
    )
    assert result.returncode == 1, result.stderr.decode()
    check_results(read_outputs(tmp_path / "out.jsonl"), payloads)
    summary = json.loads(result.stderr.decode().strip().splitlines()[-1])
    stats = control(emulator, "/_fanout/stats")
    # Exactly-once output, at-least-once processing: what ran twice is what fanout says it re-sent.
    assert 0 < stats["duplicate_inference_ids"] <= summary["this_run"]["resends"]
    assert summary["this_run"]["in_doubt"] == 0


def test_ctrl_c_drains_and_a_rerun_finishes(emulator: dict[str, str], tmp_path: Path) -> None:
    control(emulator, "/_fanout/faults", {"latency": {"sagemaker": {"kind": "constant", "ms": 15}}})
    lines, payloads = mixed_batch(150)
    write_lines(tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    args = [str(tmp_path / "in.jsonl"), "-o", str(output), "--journal", str(tmp_path / "journal.db")]
    args += ["--max-in-flight", "4", "--max-pending", "12", "--resume-wait", "2", "--quiet"]
    env = cli_env(emulator)
    process = subprocess.Popen(command(*args), env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline and not (output.exists() and output.read_bytes().count(b"\n") >= 20):
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=RUN_TIMEOUT)
    assert process.returncode == 3, stderr.decode()
    assert b"stopping" in stderr
    assert len(read_outputs(output)) < 150
    final = run(env, *args)
    assert final.returncode == 1, final.stderr.decode()
    outputs = read_outputs(output)
    check_results(outputs, payloads)
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
    write_lines(tmp_path / "in.jsonl", lines)
    result = run(
        cli_env(emulator),
        str(tmp_path / "in.jsonl"),
        "-o",
        str(tmp_path / "out.jsonl"),
        "--payload",
        "inline",
        "--quiet",
    )
    assert result.returncode == 1, result.stderr.decode()
    written = read_outputs(tmp_path / "out.jsonl")
    records = {record["failure_reason"] or record["id"]: record for record in written}
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
    write_lines(tmp_path / "in.jsonl", [{"body": {"n": n}} for n in range(5)])
    (tmp_path / "out.jsonl").write_bytes(b"an earlier run's output\n")
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    args = [arg.format(base=emulator["AWS_ENDPOINT_URL"], tmp=tmp_path) for arg in extra_args]
    result = run(
        cli_env(emulator, **env_overrides),
        str(tmp_path / "in.jsonl"),
        "-o",
        str(tmp_path / "out.jsonl"),
        *args,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert message in stderr
    assert "Traceback" not in stderr
    assert control(emulator, "/_fanout/stats")["invocations"]["accepted"] == 0
    # Nothing was written: not the earlier output, not the input, and no journal is left behind.
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_a_second_run_on_the_same_journal_exits_2_and_names_it(
    emulator: dict[str, str], tmp_path: Path
) -> None:
    control(emulator, "/_fanout/faults", {"latency": {"sagemaker": {"kind": "constant", "ms": 20}}})
    lines, payloads = mixed_batch(120)
    write_lines(tmp_path / "in.jsonl", lines)
    output, journal = tmp_path / "out.jsonl", tmp_path / "journal.db"
    args = [str(tmp_path / "in.jsonl"), "-o", str(output), "--journal", str(journal), "--max-in-flight", "2"]
    env = cli_env(emulator)
    first = subprocess.Popen(command(*args, "--quiet"), env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline and not (output.exists() and output.read_bytes().count(b"\n") >= 5):
        time.sleep(0.01)
    second = run(env, *args)
    assert second.returncode == 2, second.stderr.decode()
    assert f"the journal {str(journal)!r} is in use by another fanout run" in second.stderr.decode()
    assert first.wait(timeout=RUN_TIMEOUT) == 1, first.stderr.read().decode() if first.stderr else ""
    check_results(read_outputs(output), payloads)


def test_a_missing_input_and_unknown_flags_are_usage_errors(
    idle_emulator: dict[str, str], tmp_path: Path
) -> None:
    emulator = idle_emulator
    missing = run(cli_env(emulator), str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "out.jsonl"))
    assert missing.returncode == 2
    assert b"does not exist" in missing.stderr
    unknown = run(cli_env(emulator), "-", "-o", "-", "--bogus")
    assert unknown.returncode == 2
    assert b"unrecognized arguments: --bogus" in unknown.stderr


def test_the_summary_prices_the_run_and_report_reads_its_output(
    emulator: dict[str, str], tmp_path: Path
) -> None:
    lines, payloads = mixed_batch(80)
    write_lines(tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    result = run(cli_env(emulator), str(tmp_path / "in.jsonl"), "-o", str(output), "--json-summary")
    assert result.returncode == 1, result.stderr.decode()
    summary = json.loads(result.stderr.decode().strip().splitlines()[-1])
    cost = summary["cost"]
    this_run = summary["this_run"]
    calls = {line["operation"]: line["calls"] for line in cost["lines"] if line["made_by"] == "fanout"}
    assert calls == {name: count for name, count in this_run["api_calls"].items() if name in calls}
    assert calls["sqs.ReceiveMessage"] == this_run["api_calls"]["sqs.ReceiveMessage"]
    # Through S3, each inline request would have cost a PUT (staging) and a GET (the endpoint).
    prices = {line["operation"]: line["unit_price"] for line in cost["lines"]}
    saved = this_run["inline"] * (prices["s3.PutObject"] + prices.get("s3.GetObject", 0.0004 / 1000))
    assert cost["counterfactual"]["inline_saved"] == pytest.approx(saved)
    assert cost["per_1000_inferences"] == pytest.approx(
        cost["total"] * 1000 / (this_run["inline"] + this_run["s3"])
    )
    assert cost["compute_counted"] is False

    report = subprocess.run(
        [*command()[:-1], "report", str(output), "--json"], capture_output=True, timeout=RUN_TIMEOUT
    )
    assert report.returncode == 0, report.stderr.decode()
    document = json.loads(report.stdout)
    assert document["outcomes"] == len(payloads)
    assert document["statuses"] == {"succeeded": 76, "failed": 4, "expired": 0, "rejected": 0}
    assert document["failure_reasons"]["top"][0]["count"] == 4  # the failing lines, grouped as one reason

    bad_prices = tmp_path / "prices.json"
    bad_prices.write_text("{}")
    refused = run(
        cli_env(emulator),
        str(tmp_path / "in.jsonl"),
        "-o",
        str(tmp_path / "o2.jsonl"),
        "--prices",
        str(bad_prices),
    )
    assert refused.returncode == 2
    assert str(bad_prices) in refused.stderr.decode()
    assert not (tmp_path / "o2.jsonl").exists()


def _emulator_pid(port: int) -> int:
    """The emulator this test process started on ``port`` (other tests' emulators may be running)."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            cmdline = (status.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields["PPid"]) == os.getpid() and cmdline.endswith(b"fanout.testing\0--port\0%d\0" % port):
            return int(status.parent.name)
    raise AssertionError("no emulator process found")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the emulator in /proc")
def test_a_run_level_error_mid_run_prints_what_finished_and_how_to_resume(tmp_path: Path) -> None:
    lines, _ = mixed_batch(600)
    write_lines(tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    args = [str(tmp_path / "in.jsonl"), "-o", str(output), "--journal", str(tmp_path / "j.db")]
    port = free_port()
    faults = {"latency": {"sagemaker": {"kind": "constant", "ms": 20}}}
    with run_emulator_process(port=port, faults=faults) as env:
        process = subprocess.Popen(
            command(*args, "--max-in-flight", "2"), env=cli_env(env), stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline and not (
            output.exists() and output.read_bytes().count(b"\n") >= 20
        ):
            time.sleep(0.01)
        os.kill(_emulator_pid(port), signal.SIGKILL)  # the service goes away mid-run
        _, stderr = process.communicate(timeout=RUN_TIMEOUT)
    text = stderr.decode()
    assert process.returncode == 3, text
    assert "Traceback" not in text and "unexpected error" not in text
    written = len(read_outputs(output))
    assert f"fanout run: {written:,} outcome" in text  # the summary of what finished
    assert "stopped: rerun the same command to finish; the journal skips what is done" in text
    assert text.strip().splitlines()[-1].startswith("fanout run: error: could not connect to")


def test_a_closed_stdout_ends_the_run_quietly(emulator: dict[str, str], tmp_path: Path) -> None:
    stdin = "".join(json.dumps({"body": {"n": n}}) + "\n" for n in range(300)).encode()
    process = subprocess.Popen(
        command("-", "-o", "-"), env=cli_env(emulator), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    process.stdin.write(stdin)
    process.stdin.close()
    first = [process.stdout.readline() for _ in range(3)]  # | head -3
    process.stdout.close()
    assert process.wait(timeout=RUN_TIMEOUT) == 3
    assert all(json.loads(line)["status"] == "succeeded" for line in first)
    assert process.stderr.read() == b""  # no traceback, no message: as Unix tools do
