"""``fanout run --ray`` against the emulator (in its own process, on loopback).

Ray's start-up costs seconds, so only one test pays for a Ray of its own: ``fanout run --ray`` as
a subprocess, which starts a local Ray, passes it this environment (the emulator's), and shuts it
down at the end. The others share the session's Ray (``local_ray``, two CPUs): a subprocess driver
joins it with ``--ray auto`` as a Ray job would, or the CLI's ``main`` runs in this process, where
``--ray`` finds that Ray initialised and uses it, as a Ray driver using fanout would: the real path
from the flags to the actors, without another Ray. Killing an actor is ``ray.kill`` from a thread
while the run goes on. Every run checks that each line has one output carrying its own result
(the emulator's model answers the sha256 of the bytes it was sent).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("ray", reason="needs Ray: pip install 'fanout[ray]'")

import ray

from fanout import ConfigError
from fanout._cli import main
from fanout._jsonl import OUTPUT_FIELDS
from fanout._workers import _ray as ray_workers
from fanout._workers._ray import actor_environment
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
    write_lines,
)

SLOW = {"latency": {"sagemaker": {"kind": "constant", "ms": 15}}}
BAD_LINES = [
    "{not json",
    {"id": "r0", "body": {"again": True}},
    {"id": "ttl", "body": 1, "request_ttl_seconds": 5},
]


@pytest.fixture
def emulator() -> Iterator[dict[str, str]]:
    with run_emulator_process(faults={"notifications": {"early_rate": 0.2}}) as env:
        yield env


def _summary(stderr: str) -> dict[str, Any]:
    """The ``--json-summary`` line (Ray may write its own lines to stderr too)."""
    for line in reversed(stderr.strip().splitlines()):
        if line.startswith('{"exit_code"'):
            summary: dict[str, Any] = json.loads(line)
            return summary
    raise AssertionError(f"no summary in {stderr!r}")


def _raylets_below(root: int) -> set[int]:
    """The raylet processes among the descendants of ``root``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), list(children.get(root, []))
    while todo:
        pid = todo.pop()
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"/raylet"):
                found.add(pid)
        except OSError:
            continue
        todo.extend(children.get(pid, []))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _lines_in(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _fanout_actors() -> list[str]:
    """The names of the fanout workers alive in the session's Ray, whoever's driver they belong to."""
    named = ray.util.list_named_actors(all_namespaces=True)
    return [actor["name"] for actor in named if actor["name"].startswith("fanout-worker-")]


def _in_process(monkeypatch: pytest.MonkeyPatch, emulator: dict[str, str], *args: str) -> int:
    """``fanout run ARGS`` in this process, with the emulator's environment, on the session's Ray."""
    for name, value in emulator.items():
        monkeypatch.setenv(name, value)
    return main(["run", *args])


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc for Ray's processes")
def test_ray_run_writes_every_line_once_with_its_own_result(emulator: dict[str, str], tmp_path: Path) -> None:
    control(emulator, "/_fanout/faults", FAULTS)
    lines, payloads = mixed_batch(300)
    write_lines(tmp_path / "in.jsonl", lines + BAD_LINES)
    args = [str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--json-summary", "--rate", "400"]
    args += ["--ray", "--workers", "2"]  # a local Ray of its own
    with (tmp_path / "stderr").open("wb") as errors:
        driver = subprocess.Popen(command(*args), env=cli_env(emulator), stderr=errors)
        raylets: set[int] = set()
        deadline = time.monotonic() + RUN_TIMEOUT
        while driver.poll() is None and time.monotonic() < deadline:
            raylets |= _raylets_below(driver.pid)
            time.sleep(0.05)
        driver.wait(timeout=30)
    stderr = (tmp_path / "stderr").read_text()
    assert driver.returncode == 1, stderr
    assert "Traceback" not in stderr
    written = read_outputs(tmp_path / "out.jsonl")
    assert len(written) == len(lines) + len(BAD_LINES)
    assert all(tuple(record)[: len(OUTPUT_FIELDS)] == OUTPUT_FIELDS for record in written)
    rejected = [record for record in written if record["status"] == "rejected"]
    assert len(rejected) == len(BAD_LINES)
    reasons = " | ".join(record["failure_reason"] for record in rejected)
    assert "line 301: malformed JSON" in reasons
    assert "duplicate id 'r0'" in reasons
    assert "request_ttl_seconds" in reasons
    check_results([record for record in written if record["status"] != "rejected"], payloads)
    assert not [record for record in written if record["status"] == "expired"]
    summary = _summary(stderr)
    assert summary["exit_code"] == 1
    assert summary["statuses"] == {"succeeded": 288, "failed": 12, "rejected": 3}
    assert summary["workers"] == 2
    # The actors' calls are counted.
    assert summary["this_run"]["api_calls"]["sagemaker-runtime.InvokeEndpointAsync"] >= 300
    stats = control(emulator, "/_fanout/stats")
    assert (
        stats["faults"]["throttled"] + stats["faults"]["errors_5xx"] + stats["faults"]["dropped_connections"]
    )
    assert stats["duplicate_inference_ids"] <= summary["this_run"]["resends"]
    # The Ray it started is shut down: its raylet is gone.
    assert len(raylets) == 1
    assert not any(_alive(pid) for pid in raylets)


def test_a_driver_that_joins_a_cluster_is_sigkilled_then_a_resume_writes_each_line_once(
    local_ray: Any,
    emulator: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    control(emulator, "/_fanout/faults", {**FAULTS, "throttle": None, **SLOW})
    lines, payloads = mixed_batch(240)
    write_lines(tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    args = [str(tmp_path / "in.jsonl"), "-o", str(output), "--journal", str(tmp_path / "journal.db")]
    args += ["--max-in-flight", "8", "--max-pending", "24", "--resume-wait", "2", "--workers", "2"]
    # The driver joins the session's Ray as a job would (`ray job submit --runtime-env-json`): fanout
    # gives the actors no keys, the job's env_vars do, and Ray merges the two.
    keys = {name: emulator[name] for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env = cli_env(
        emulator,
        RAY_ADDRESS=ray.get_runtime_context().gcs_address,
        RAY_JOB_CONFIG_JSON_ENV_VAR=json.dumps({"runtime_env": {"env_vars": keys}}),
    )
    driver = subprocess.Popen(command(*args, "--quiet", "--ray", "auto"), env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + RUN_TIMEOUT
    while driver.poll() is None and _lines_in(output) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    actors = _fanout_actors()
    driver.send_signal(signal.SIGKILL)
    _, stderr = driver.communicate(timeout=30)
    assert driver.returncode == -signal.SIGKILL, stderr.decode()
    assert len(actors) == 2, stderr.decode()
    # Ray kills the actors of a driver that died (they are its).
    deadline = time.monotonic() + 30
    while set(actors) & set(_fanout_actors()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not set(actors) & set(_fanout_actors())
    # The resume, in this process, uses the session's Ray as it is ("local": credentials included).
    code = _in_process(monkeypatch, emulator, *args, "--json-summary", "--ray")
    stderr_resumed = capsys.readouterr().err
    assert code == 1, stderr_resumed
    written = read_outputs(output)
    check_results(written, payloads)
    assert not [record for record in written if record["status"] == "expired"]
    assert _summary(stderr_resumed)["statuses"] == {"succeeded": 230, "failed": 10}
    # Only requests in doubt at the kill were sent again; an accepted one never is.
    stats = control(emulator, "/_fanout/stats")
    assert stats["invocations"]["accepted"] - stats["duplicate_inference_ids"] == len(lines)


def test_a_killed_actor_leaves_its_requests_to_the_other(
    local_ray: Any,
    emulator: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    control(emulator, "/_fanout/faults", SLOW)
    lines, payloads = mixed_batch(300)
    write_lines(tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    killed: list[str] = []
    done = threading.Event()

    def kill_one() -> None:
        deadline = time.monotonic() + RUN_TIMEOUT
        while _lines_in(output) < 60:
            if done.is_set() or time.monotonic() > deadline:
                return
            time.sleep(0.01)
        for actor in ray.util.list_named_actors(all_namespaces=True):
            if actor["name"].startswith("fanout-worker-1-"):
                ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]))
                killed.append(actor["name"])
        if not done.wait(RUN_TIMEOUT):  # a hung run: stop it (twice: abort), so that the test fails
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(2)
            os.kill(os.getpid(), signal.SIGINT)

    killer = threading.Thread(target=kill_one)
    killer.start()
    try:
        code = _in_process(
            monkeypatch, emulator, str(tmp_path / "in.jsonl"), "-o", str(output), "--json-summary",
            "--ray", "--workers", "2", "--max-in-flight", "8", "--max-pending", "40",
        )  # fmt: skip
    finally:
        done.set()
        killer.join()
    stderr = capsys.readouterr().err
    assert len(killed) == 1, stderr
    assert code == 1, stderr
    # The warning says what Ray reported.
    warnings = caplog.text + stderr
    assert f"worker 1 (Ray actor {killed[0]}) died (Ray: " in warnings
    assert "killed by `ray.kill`" in warnings
    written = read_outputs(output)
    check_results(written, payloads)
    assert not [record for record in written if record["status"] == "expired"]
    summary = _summary(stderr)
    assert summary["statuses"] == {"succeeded": 288, "failed": 12}
    assert summary["this_run"]["resends"] > 0  # what it had been dealt went to the other actor
    stats = control(emulator, "/_fanout/stats")
    assert stats["duplicate_inference_ids"] <= summary["this_run"]["resends"]
    # Leaving the run killed the other actor too.
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"] in killed]


def test_a_cluster_is_given_no_credentials(
    local_ray: Any,
    emulator: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_lines(tmp_path / "in.jsonl", [{"id": "a", "body": 1}])
    args = [str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--quiet", "--workers", "2"]
    # "auto" joins a cluster: its actors get the region and the endpoint URL, never the keys, and
    # the session's Ray has none of its own.
    code = _in_process(monkeypatch, emulator, *args, "--ray", "auto")
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert "no AWS credentials" in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "out.jsonl").exists() or not (tmp_path / "out.jsonl").read_bytes()


def test_what_the_actors_are_given() -> None:
    environ = {
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
        "AWS_ENDPOINT_URL_SQS": "http://127.0.0.1:2",
        "AWS_ACCESS_KEY_ID": "AKIA...",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_SESSION_TOKEN": "token",
        "AWS_PROFILE": "mine",
        "AWS_SHARED_CREDENTIALS_FILE": "/home/me/.aws/credentials",
        "FANOUT_ENDPOINT": "fanout-demo",
        "HOME": "/home/me",
    }
    assert actor_environment(environ, everything=False) == {
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
        "AWS_ENDPOINT_URL_SQS": "http://127.0.0.1:2",
    }
    assert actor_environment(environ, everything=True) == {
        name: value for name, value in environ.items() if name != "HOME"
    }


@pytest.mark.anyio
async def test_ray_is_started_and_shut_down_by_one_thread_that_lives_in_between(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ray's processes get SIGKILL when the thread that started them ends (PR_SET_PDEATHSIG).
    calls: list[tuple[str, threading.Thread]] = []

    def init(address: str) -> bool:
        calls.append(("init", threading.current_thread()))
        return True

    monkeypatch.setattr(ray_workers, "_init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append(("shutdown", threading.current_thread())))
    async with ray_workers._initialised("local") as started:
        assert started
        await anyio.sleep(0.05)
        assert calls[0][1].is_alive()
        assert calls[0][1] is not threading.current_thread()
    assert [what for what, _ in calls] == ["init", "shutdown"]
    assert calls[0][1] is calls[1][1]


@pytest.mark.anyio
async def test_an_address_where_nothing_answers_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    never = threading.Event()

    def init(address: str) -> bool:
        never.wait(10)
        return False  # (had it started a Ray, the thread would shut it down as it is left)

    monkeypatch.setattr(ray_workers, "_init", init)
    monkeypatch.setattr(ray_workers, "_INIT_TIMEOUT", 0.2)
    with pytest.raises(ConfigError, match=r"ray '10.0.0.1:6379': could not join a Ray cluster within 0 s"):
        async with ray_workers._initialised("10.0.0.1:6379"):
            pass
    never.set()
