"""The benchmark suite, and the standalone benchmarks, run end to end at their smallest size and report.

Subprocesses, exactly as a user runs them (``python -m benchmarks``, ``python -m
benchmarks.memory`` ...), against emulators on 127.0.0.1. Only completion and the
report's shape are asserted, never a timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ("inline_vs_s3", "mixed_sizes", "usual_ways", "throttled", "tracking_cost", "pipeline")
PLOTS = (
    "inline_vs_s3_accept_cdf.png",
    "inline_vs_s3_completion_cdf.png",
    "throttled_goodput.png",
    "pipeline_cpu.png",
)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    command = [sys.executable, "-m", "benchmarks", "--tiny", "--repeat", "1", "--no-pin", "--out", str(out)]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def test_every_scenario_reports_a_table_and_a_headline(results: Path) -> None:
    data = json.loads((results / "results.json").read_text(encoding="utf-8"))
    assert [s["name"] for s in data["scenarios"]] == list(SCENARIOS)
    report = (results / "RESULTS.md").read_text(encoding="utf-8")
    for scenario in data["scenarios"]:
        assert f"## {scenario['title']}" in report
        assert scenario["headlines"], scenario["name"]
    assert "python -m benchmarks --tiny" in report
    assert "| package | version |" in report


def test_every_side_completed_its_whole_workload(results: Path) -> None:
    data = json.loads((results / "results.json").read_text(encoding="utf-8"))
    for scenario in data["scenarios"]:
        for group, sides in scenario["sides"].items():
            assert sides, (scenario["name"], group)
            for side, runs in sides.items():
                assert len(runs) == 1, side
                run = runs[0]
                if scenario["name"] == "throttled":
                    # A window of time, not a workload: requests still retrying when it closes are cut off.
                    assert run["succeeded"] > 0, side
                else:
                    assert run["succeeded"] == run["n"] > 0, (scenario["name"], group, side)


def test_results_are_checked_against_each_request(results: Path) -> None:
    data = json.loads((results / "results.json").read_text(encoding="utf-8"))
    usual = next(s for s in data["scenarios"] if s["name"] == "usual_ways")
    for side, runs in usual["sides"][""].items():
        assert runs[0]["verified"] == runs[0]["n"], side


def test_plots_are_written(results: Path) -> None:
    for name in PLOTS:
        assert (results / name).stat().st_size > 0, name


STANDALONE = {
    "memory": (["--lines", "200"], "# Memory of fanout run"),
    "tracking": (
        ["--notifications", "100", "--requests", "10", "--rate", "100", "--seconds", "0.2"],
        "# Tracking benchmark",
    ),
    "pipeline": (["--tiny", "--repeat", "1", "--no-plots"], "# Pipeline benchmark"),
    # Exits 1 when a rate is under its target, which a size this small may be.
    "emulator": (["--repetitions", "1", "--invokes", "50", "--messages", "100"], "# Emulator throughput"),
}


@pytest.mark.parametrize("name", list(STANDALONE))
def test_standalone_benchmark_reports(name: str, tmp_path: Path) -> None:
    arguments, title = STANDALONE[name]
    out = tmp_path / f"{name}.md"
    command = [sys.executable, "-m", f"benchmarks.{name}", *arguments, "--no-pin", "--out", str(out)]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode in ((0, 1) if name == "emulator" else (0,)), done.stderr[-4000:]
    assert out.read_text(encoding="utf-8").startswith(title)
    data = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert data["command"].startswith(f"python -m benchmarks.{name} ")
    if name == "memory":
        assert (data["output_lines"], data["exit_code"]) == (200, 0)
    if name == "pipeline":
        for side, runs in data["sides"].items():
            assert [(r["succeeded"], r["n"]) for r in runs] == [(r["n"], r["n"]) for r in runs], side


def test_pipeline_reports_its_goals_and_counts_every_call(results: Path) -> None:
    data = json.loads((results / "results.json").read_text(encoding="utf-8"))
    pipeline = next(s for s in data["scenarios"] if s["name"] == "pipeline")
    sides = pipeline["sides"][""]
    for side in ("fanout run", "fanout run --journal", "fanout submit only", "bare aiobotocore loop"):
        run = sides[side][0]
        assert run["calls:sagemaker-runtime.InvokeEndpointAsync"] == 1.0, side
        assert run["cpu_ms"] > 0, side
    assert sides["fanout run"][0]["calls:sqs.ReceiveMessage"] > 0
    report = (results / "RESULTS.md").read_text(encoding="utf-8")
    assert "SQS ReceiveMessage calls per notification" in report
    assert "![pipeline_cpu](pipeline_cpu.png)" in report
