"""The fault matrix (``python -m benchmarks.faults``) at CI size: 2,000 requests, 2 SIGKILLs.

``fanout run --journal`` runs as a subprocess against the emulator (another subprocess) with every
fault on, is killed twice at random moments and resumed until it finishes. Every input line must
then have exactly one output line, and every succeeded line its own request's digest. The
benchmark's report of the run goes into the failure message, with example lines.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.faults import CI, run_matrix, to_markdown


@pytest.mark.slow
def test_killed_and_resumed_under_every_fault_loses_duplicates_and_mixes_up_nothing(tmp_path: Path) -> None:
    result = run_matrix(CI, workdir=tmp_path / "matrix")
    report = to_markdown(result, f"run_matrix(CI) with seed {CI.seed}")
    (tmp_path / "faults.md").write_text(report, encoding="utf-8")
    check = result.check
    assert not result.errors, report
    assert result.finished, report
    assert (check.lost, check.duplicated, check.wrong, check.missing) == (0, 0, 0, 0), report
    assert (check.unparseable, check.unknown_ids, check.wrong_failures) == (0, 0, 0), report
    assert check.lines == CI.requests, report
    # the matrix did what it says: it killed, and the faults happened
    assert result.kills == CI.kills, report
    faults = result.stats["faults"]
    assert faults["throttled"] and faults["errors_5xx"], json.dumps(faults)
    assert faults["dropped_connections"] and faults["dropped_responses"], json.dumps(faults)
    notifications = result.stats["notifications"]
    for counter in ("duplicated", "lost", "malformed", "early"):
        assert notifications[counter], json.dumps(notifications)
    assert check.statuses["succeeded"] > CI.requests * 0.8, report
