"""benchmarks/dispatch.py at a minimal size: both parts complete and report. No timings are asserted."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import anyio
import pytest

from fanout.testing import default_config, open_emulator

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def anyio_backend() -> str:
    # The benchmark's bare side is plain asyncio; one backend keeps this smoke test short.
    return "asyncio"


@pytest.fixture
def dispatch(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("benchmarks.dispatch")


async def test_both_parts_complete_and_report(dispatch: ModuleType) -> None:
    with anyio.fail_after(30):
        async with open_emulator(default_config()) as emu:
            throughput = await dispatch.bench_throughput(emu.env, n=40, repeat=1, timeout=10)
            throttled = await dispatch.bench_throttled(
                emu.env, rate=100, duration=1.0, repeat=1, burst=5, drain=3
            )
            counters = emu.stats()
    assert counters["faults"]["throttled"] > 0
    for side in ("fanout", "bare"):
        (run,) = throughput.sides[side]
        assert (run.metrics["succeeded"], run.metrics["failed"]) == (40, 0)
    assert throughput.ratio_rate.n == 1
    for side in ("fanout", "adaptive"):
        (run,) = throttled.sides[side]
        assert len(run.series["goodput"]) == 2
        assert run.metrics["accepted"] >= run.metrics["accepted_in_window"]
    report = dispatch.render_markdown(throughput, throttled, command="smoke")
    for heading in ("## (a) Throughput", "**ratio fanout / bare**", "## (b) Throttled", "Goodput over time"):
        assert heading in report


def test_main_refuses_bad_sizes_before_starting_anything(dispatch: ModuleType) -> None:
    assert dispatch.main(["--n", "0"]) == 2
