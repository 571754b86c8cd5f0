"""``fanout run --workers N`` against the emulator: the same contracts as one process.

The driver and its worker processes are real processes, so the kills are real: SIGKILL of the
driver (its workers must not outlive it), SIGKILL of one worker (the others take its requests),
and of every worker (exit 3, the journal intact, and a resume with another N finishes the run).
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
from typing import Any

import pytest

from fanout.testing import run_emulator_process
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

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for the workers")

SLOW = {"latency": {"sagemaker": {"kind": "constant", "ms": 15}}}


@pytest.fixture
def emulator() -> Iterator[dict[str, str]]:
    with run_emulator_process(faults={"notifications": {"early_rate": 0.2}}) as env:
        yield env


def _workers_of(pid: int) -> list[int]:
    """The worker processes of the driver ``pid`` (its children running ``fanout._workers``)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"fanout._workers" in cmdline:
                found.append(int(child))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _lines_in(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _kill_mid_run(driver: subprocess.Popen[bytes], output: Path, workers: int, kill_after: int) -> None:
    """SIGKILL the driver once ``output`` has ``kill_after`` lines; its workers must exit too."""
    _wait_for(lambda: len(_workers_of(driver.pid)) == workers, f"{workers} workers")
    children = _workers_of(driver.pid)
    _wait_for(lambda: _lines_in(output) >= kill_after or driver.poll() is not None, "output")
    driver.send_signal(signal.SIGKILL)
    assert driver.wait(timeout=30) == -signal.SIGKILL
    # Its workers see their socket close and stop: none keeps sending for a dead run.
    _wait_for(lambda: not any(_alive(pid) for pid in children), "the workers to exit")


def _summary(result: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(result.stderr.decode().strip().splitlines()[-1])
    return summary


def test_two_workers_write_every_line_once_with_its_own_result(
    emulator: dict[str, str], tmp_path: Path
) -> None:
    control(emulator, "/_fanout/faults", FAULTS)
    lines, payloads = mixed_batch(300)
    write_lines(tmp_path / "in.jsonl", lines)
    args = [str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--json-summary"]
    result = run(cli_env(emulator), *args, "--workers", "2", "--rate", "400")
    assert result.returncode == 1, result.stderr.decode()
    written = read_outputs(tmp_path / "out.jsonl")
    check_results(written, payloads)
    assert not [record for record in written if record["status"] == "expired"]
    summary = _summary(result)
    assert summary["statuses"] == {"succeeded": 288, "failed": 12}
    # The workers' calls are counted, and their start-up checks are left out as the client's are.
    assert summary["this_run"]["api_calls"]["sagemaker-runtime.InvokeEndpointAsync"] >= 300
    assert "s3.HeadBucket" not in summary["this_run"]["api_calls"]
    stats = control(emulator, "/_fanout/stats")
    faults = stats["faults"]
    assert faults["throttled"] + faults["errors_5xx"] + faults["dropped_connections"]
    # What ran twice is only ever what fanout says it re-sent (in doubt after a broken connection).
    assert stats["duplicate_inference_ids"] <= summary["this_run"]["resends"]


def test_sigkill_of_the_driver_stops_its_workers_and_a_resume_with_another_count_finishes(
    emulator: dict[str, str], tmp_path: Path
) -> None:
    control(emulator, "/_fanout/faults", {**FAULTS, "throttle": None, **SLOW})
    lines, payloads = mixed_batch(240)
    write_lines(tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    args = [str(tmp_path / "in.jsonl"), "-o", str(output), "--journal", str(tmp_path / "journal.db")]
    args += ["--max-in-flight", "8", "--max-pending", "24", "--resume-wait", "2"]
    env = cli_env(emulator)
    for workers, kill_after in ((2, 40), (3, 120)):
        driver = subprocess.Popen(
            command(*args, "--quiet", "--workers", str(workers)), env=env, stderr=subprocess.DEVNULL
        )
        _kill_mid_run(driver, output, workers, kill_after)
    final = run(env, *args, "--json-summary")  # and one process to finish
    assert final.returncode == 1, final.stderr.decode()
    written = read_outputs(output)
    check_results(written, payloads)
    assert not [record for record in written if record["status"] == "expired"]
    assert _summary(final)["statuses"] == {"succeeded": 230, "failed": 10}
    # Only requests in doubt at a kill were sent again; an accepted one never is.
    stats = control(emulator, "/_fanout/stats")
    assert stats["invocations"]["accepted"] - stats["duplicate_inference_ids"] == len(lines)


def test_a_killed_worker_leaves_its_requests_to_the_others(emulator: dict[str, str], tmp_path: Path) -> None:
    control(emulator, "/_fanout/faults", SLOW)
    lines, payloads = mixed_batch(240)
    write_lines(tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    args = [str(tmp_path / "in.jsonl"), "-o", str(output), "--workers", "2", "--json-summary"]
    args += ["--max-in-flight", "8", "--max-pending", "40"]
    driver = subprocess.Popen(command(*args), env=cli_env(emulator), stderr=subprocess.PIPE)
    _wait_for(lambda: len(_workers_of(driver.pid)) == 2, "two workers")
    _wait_for(lambda: _lines_in(output) >= 40, "output")
    victim = _workers_of(driver.pid)[0]
    os.kill(victim, signal.SIGKILL)
    _, stderr = driver.communicate(timeout=RUN_TIMEOUT)
    assert driver.returncode == 1, stderr.decode()
    assert f"(pid {victim}) was killed by SIGKILL" in stderr.decode()
    written = read_outputs(output)
    check_results(written, payloads)
    assert not [record for record in written if record["status"] == "expired"]
    summary = json.loads(stderr.decode().strip().splitlines()[-1])
    assert summary["statuses"] == {"succeeded": 230, "failed": 10}


def test_when_every_worker_dies_the_run_exits_3_and_a_resume_finishes(
    emulator: dict[str, str], tmp_path: Path
) -> None:
    control(emulator, "/_fanout/faults", SLOW)
    lines, payloads = mixed_batch(200)
    write_lines(tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    args = [str(tmp_path / "in.jsonl"), "-o", str(output), "--journal", str(tmp_path / "journal.db")]
    args += ["--max-in-flight", "4", "--max-pending", "16", "--resume-wait", "2"]
    env = cli_env(emulator)
    driver = subprocess.Popen(command(*args, "--workers", "2", "--quiet"), env=env, stderr=subprocess.PIPE)
    _wait_for(lambda: len(_workers_of(driver.pid)) == 2, "two workers")
    _wait_for(lambda: _lines_in(output) >= 20, "output")
    for pid in _workers_of(driver.pid):
        os.kill(pid, signal.SIGKILL)
    _, stderr = driver.communicate(timeout=RUN_TIMEOUT)
    assert driver.returncode == 3, stderr.decode()
    assert "no worker is left" in stderr.decode()
    assert "Traceback" not in stderr.decode()
    final = run(env, *args, "--workers", "2")
    assert final.returncode == 1, final.stderr.decode()
    written = read_outputs(output)
    check_results(written, payloads)
    assert not [record for record in written if record["status"] == "expired"]


def test_bad_lines_and_run_level_problems_are_handled_as_with_one_process(
    emulator: dict[str, str], tmp_path: Path
) -> None:
    lines = [
        {"id": "good", "body": {"x": 1}},
        "{not json",
        {"id": "good", "body": {"x": 2}},
        {"id": "big", "body": {"pad": "z" * 130_000}},
        {"id": "ttl", "body": 1, "request_ttl_seconds": 5},
    ]
    write_lines(tmp_path / "in.jsonl", lines)
    env = cli_env(emulator)
    args = [str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--payload", "inline", "--quiet"]
    result = run(env, *args, "--workers", "2")
    assert result.returncode == 1, result.stderr.decode()
    written = read_outputs(tmp_path / "out.jsonl")
    assert len(written) == len(lines)
    statuses = sorted(record["status"] for record in written)
    assert statuses == ["rejected", "rejected", "rejected", "rejected", "succeeded"]
    reasons = " | ".join(record["failure_reason"] or "" for record in written)
    assert "line 2: malformed JSON" in reasons
    assert "duplicate id 'good'" in reasons
    assert "128,000 bytes" in reasons  # checked by a worker
    assert "request_ttl_seconds" in reasons

    # A run-level problem found by a worker (the endpoint does not exist) exits 2, as with one process.
    (tmp_path / "out2.jsonl").write_bytes(b"an earlier run's output\n")
    missing = run(
        env, str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out2.jsonl"), "--workers", "2",
        "--endpoint", "no-such-endpoint",
    )  # fmt: skip
    assert missing.returncode == 2, missing.stderr.decode()
    assert "endpoint 'no-such-endpoint' was not found" in missing.stderr.decode()
    assert "Traceback" not in missing.stderr.decode()
    assert (tmp_path / "out2.jsonl").read_bytes() == b"an earlier run's output\n"

    for value, message in (("0", "expected 1 or more, got 0"), ("two", "expected a whole number, got 'two'")):
        usage = run(env, str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out3.jsonl"), "--workers", value)
        assert usage.returncode == 2
        assert message in usage.stderr.decode()
