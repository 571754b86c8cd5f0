"""The scale-out benchmark (``python -m benchmarks.scale``) runs end to end at its smallest size.

A subprocess, exactly as a user runs it, against an emulator on 127.0.0.1: in-process, ``--workers 2``
and ``--workers 4``, 300 lines each, one repetition, unpinned. Only completion, the report's shape and
finite ratios are asserted, never a timing.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SIDES = ("unpinned: in-process", "unpinned: --workers 2", "unpinned: --workers 4")
RESULTS_MD = """# fanout benchmark results

## Headline

- Pipeline: an earlier headline that stays.
- Scale-out: an old headline to be replaced.

## Setup

## Scale-out: fanout run --workers N on one machine

An old section to be replaced.

## After

Kept.
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scale")
    (out / "RESULTS.md").write_text(RESULTS_MD, encoding="utf-8")
    command = [
        sys.executable,
        "-m",
        "benchmarks.scale",
        "--tiny",
        "--no-pin",
        "--out",
        str(out / "scale.md"),
        "--section",
        str(out / "RESULTS.md"),
    ]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def _data(run: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run / "scale.json").read_text(encoding="utf-8"))
    return data


def test_the_report_has_its_tables(run: Path) -> None:
    report = (run / "scale.md").read_text(encoding="utf-8")
    assert report.startswith("# Scale-out benchmark")
    assert "python -m benchmarks.scale --tiny --no-pin" in report
    for title in (
        "**The goal, and the other ratios to the in-process run",
        "**Throughput and CPU: 300 requests",
        "**Start-up (`fanout run` on a one-line input)",
        "**API calls per completion by operation",
        "**Per repetition",
    ):
        assert title in report, title
    for side in SIDES:
        assert f"| {side} |" in report, side
    assert "| package | version |" in report


def test_every_side_completed_and_the_tree_is_split(run: Path) -> None:
    sides = _data(run)["sides"]
    assert tuple(sides) == SIDES
    for side, runs in sides.items():
        assert len(runs) == 1, side
        metrics = runs[0]
        assert metrics["succeeded"] == metrics["n"] == 300, side
        assert metrics["startup_succeeded"] == 1, side
        assert metrics["calls:sagemaker-runtime.InvokeEndpointAsync"] == 1.0, side
        assert metrics["calls:sqs.ReceiveMessage"] > 0, side
        # A difference of two runs' CPU: at 300 lines it is noise next to starting 4 workers, and
        # may come out below zero on a busy machine. Only that it was computed is asserted here.
        assert math.isfinite(metrics["steady_cpu_ms"]), side
        assert metrics["driver_cpu_s"] > 0, side
    assert sides[SIDES[0]][0]["workers_cpu_s"] == 0  # in-process: no worker process
    for side in SIDES[1:]:
        metrics = sides[side][0]
        assert metrics["workers_cpu_s"] > 0, side
        assert metrics["startup_per_worker_s"] > 0, side
        assert metrics["senders"] == metrics["workers"] > 1, side


def test_the_ratios_are_finite(run: Path) -> None:
    data = _data(run)
    ratios = data["figures"]["ratios"]
    for workers in (2, 4):
        for metric in ("steady_cpu_ms", "cpu_ms", "rate", "run_rate"):
            value = ratios[f"unpinned:w{workers}/in-process:{metric}"]["median"]
            assert value is not None and math.isfinite(value), (workers, metric)
            if metric != "steady_cpu_ms":  # a difference of two runs' CPU: see above
                assert value > 0, (workers, metric)
    assert data["goal_cpu_ratio"] == 1.10


def test_the_section_is_spliced_into_results(run: Path) -> None:
    text = (run / "RESULTS.md").read_text(encoding="utf-8")
    assert "- Pipeline: an earlier headline that stays." in text
    assert "an old headline to be replaced" not in text
    assert "An old section to be replaced." not in text
    assert text.count("## Scale-out: fanout run --workers N on one machine") == 1
    assert "cores shared with the emulator, `fanout run --workers 2` spent" in text
    assert "## After\n\nKept." in text
    assert "**API calls per completion by operation" in text
