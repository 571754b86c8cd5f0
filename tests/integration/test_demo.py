"""``fanout demo`` end to end on its embedded emulator, with a small batch: what it prints, where,
and that the sentence at the end says what the two reports measured."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from fanout import _demo
from fanout._models import RunReport

COUNT = 60
"""Small enough for about 2 s, large enough that the generated batch has bodies over 128,000 bytes."""
WIDE = 250
"""$COLUMNS for the run: wider than the cap, so the 100-column limit is the demo's, not the default 80."""


@dataclass(frozen=True)
class DemoRun:
    code: int
    stdout: str
    stderr: str
    inline: RunReport
    s3: RunReport


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoRun]:
    reports: list[tuple[RunReport, RunReport]] = []
    real = _demo.run_demo

    async def spy(count: int = _demo.REQUESTS, progress: Any = None) -> tuple[RunReport, RunReport]:
        result = await real(count, progress)
        reports.append(result)
        return result

    with pytest.MonkeyPatch.context() as patch:
        # Module-scoped, so conftest's per-test AWS isolation has not run yet: do it here.
        for name in list(os.environ):
            if name.startswith(("AWS_", "FANOUT_")):
                patch.delenv(name, raising=False)
        patch.setenv("AWS_CONFIG_FILE", "/dev/null")
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        patch.setenv("COLUMNS", str(WIDE))
        patch.setattr(_demo, "run_demo", spy)
        stdout, stderr = io.StringIO(), io.StringIO()
        code = _demo.main(COUNT, stdout=stdout, stderr=stderr)
    [(inline, s3)] = reports
    yield DemoRun(code, stdout.getvalue(), stderr.getvalue(), inline, s3)


def test_both_paths_succeed_and_it_exits_0(demo: DemoRun) -> None:
    assert demo.code == 0
    assert demo.inline.total == demo.s3.total == COUNT
    assert demo.inline.ok and demo.s3.ok
    # The generated batch has bodies over 128,000 bytes: auto sends only those through S3.
    assert 0 < demo.inline.s3 < COUNT
    assert demo.s3.s3 == COUNT


def test_every_line_fits_in_100_columns(demo: DemoRun) -> None:
    lines = (demo.stdout + demo.stderr).splitlines()
    too_long = [line for line in lines if len(line) > _demo.MAX_WIDTH]
    assert not too_long
    # The cap is what held the prose in, not rich's 80-column default for pipes.
    assert max(len(line) for line in demo.stdout.splitlines()) > 80


def test_the_table_does_not_wrap(demo: DemoRun) -> None:
    rows = [line.split("│")[1:-1] for line in demo.stdout.splitlines() if line.startswith("│ ")]
    cells = {row[0].strip(): [cell.strip() for cell in row[1:]] for row in rows}
    assert list(cells) == [
        "throughput",
        "p50 to completion",
        "p99 to completion",
        "API calls / 1,000",
        "S3 PUTs / 1,000",
        "sent inline / via S3",
        "succeeded",
        "request cost / 1,000",
    ]
    inline, s3 = demo.inline, demo.s3
    assert cells["sent inline / via S3"] == [
        f"{inline.inline:,} / {inline.s3:,}",
        f"{s3.inline:,} / {s3.s3:,}",
    ]
    assert cells["succeeded"] == [str(COUNT), str(COUNT)]


def test_a_legend_explains_the_rows(demo: DemoRun) -> None:
    lines = demo.stdout.splitlines()
    for name in ("throughput", "p50 / p99 to completion", "API calls / 1,000", "request cost / 1,000"):
        assert any(line.startswith(name + "  ") for line in lines), name
    text = " ".join(demo.stdout.split())
    assert "every AWS call fanout made, per 1,000 requests" in text
    assert "compute not included" in text
    assert "IncludeInferenceResponseIn=SUCCESS,ERROR" in text


def _finding(stdout: str) -> str:
    paragraphs = [" ".join(block.split()) for block in stdout.strip().split("\n\n")]
    return paragraphs[-1]


def test_the_finding_states_the_measured_numbers(demo: DemoRun) -> None:
    sentence = _finding(demo.stdout)
    inline, s3 = demo.inline, demo.s3
    assert inline.p50 is not None and s3.p50 is not None
    assert sentence == _demo.finding(inline, s3)
    assert f"({inline.p50 * 1000:,.0f} ms against {s3.p50 * 1000:,.0f} ms)" in sentence
    ratio = s3.p50 / inline.p50
    times = re.search(r"Inline (?:was|took) ([\d.,]+)× (faster|as long)", sentence)
    if ratio >= 1.05:
        assert times is not None and times.group(2) == "faster"
        assert float(times.group(1).replace(",", "")) == pytest.approx(
            ratio, abs=0.5 if ratio >= 10 else 0.05
        )
    elif ratio <= 1 / 1.05:
        assert times is not None and times.group(2) == "as long"
        assert float(times.group(1)) == pytest.approx(1 / ratio, abs=0.05)
    else:
        assert "about as fast" in sentence
    puts = round(
        (
            s3.api_calls.get("s3.PutObject", 0) / s3.total
            - inline.api_calls.get("s3.PutObject", 0) / inline.total
        )
        * 1000
    )
    assert puts > 0
    assert f"saved {puts:,} S3 PUTs per 1,000 requests" in sentence


def test_progress_goes_to_stderr_one_line_per_phase_without_control_codes(demo: DemoRun) -> None:
    assert demo.stderr.splitlines() == [
        "fanout demo: starting an embedded emulator on 127.0.0.1 (no AWS account needed)",
        f"fanout demo: 1/2 inline (auto): scoring {COUNT} requests",
        f"fanout demo: 2/2 all S3: scoring {COUNT} requests",
    ]
    assert "\x1b" not in demo.stderr + demo.stdout
    assert "scoring" not in demo.stdout
