"""``fanout report``: output files with known timestamps, read back as counts, percentiles and groups."""

from __future__ import annotations

import argparse
import io
import itertools
import json
import math
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, strategies as st

from fanout import _report_command
from fanout._report_command import (
    _Histogram,
    _Timeline,
    add_report_parser,
    normalise_reason,
    read_report,
    run_report,
)

BASE = 1_790_000_000.0
"""An epoch second (in 2026) where every test run starts."""
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def _record(
    status: str,
    route: str | None,
    submitted: float | None,
    completed: float | None,
    reason: str | None = None,
    *,
    id: str = "x",
    line: int | None = None,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": id,
        "inference_id": None if status == "rejected" else f"iid-{id}",
        "status": status,
        "payload": route,
        "output_location": None,
        "failure_location": None,
        "failure_reason": reason,
        "attempts": 1,
        "submitted_at": _iso(submitted),
        "completed_at": _iso(completed),
        "result": {"ok": True} if status == "succeeded" else None,
    }
    if line is not None:
        record["line"] = line
    return record


def _write(path: Path, lines: list[dict[str, Any] | str | bytes]) -> Path:
    with path.open("wb") as file:
        for line in lines:
            if isinstance(line, dict):
                file.write(json.dumps(line).encode() + b"\n")
            elif isinstance(line, str):
                file.write(line.encode() + b"\n")
            else:
                file.write(line + b"\n")
    return path


def _known_run() -> list[dict[str, Any] | str | bytes]:
    """100 inline outcomes taking 0.1 s .. 10.0 s, 100 through S3 taking 20.1 s .. 30.0 s, and three others.

    Every request is submitted at BASE + i (i = 0..99), so the run spans BASE to BASE + 129.
    """
    lines: list[dict[str, Any] | str | bytes] = []
    for i in range(100):
        took = (i + 1) / 10
        status = "failed" if i % 10 == 0 else "succeeded"
        reason = (
            f'ClientError: Received server error (500) from model with message "bad r{i}".'
            if i % 10 == 0
            else None
        )
        lines.append(_record(status, "inline", BASE + i, BASE + i + took, reason, id=f"r{i}", line=i + 1))
    lines.extend(
        _record("succeeded", "s3", BASE + i, BASE + i + 20 + (i + 1) / 10, id=f"s{i}") for i in range(100)
    )
    lines.append(
        _record("expired", "s3", BASE + 5, BASE + 65, "no outcome arrived before the deadline", id="e1")
    )
    lines.append(
        _record("rejected", None, None, BASE + 1, "line 7: malformed JSON: Expecting value: line 1", id="7")
    )
    lines.append(
        _record("rejected", None, None, BASE + 2, "line 9: malformed JSON: Expecting value: line 1", id="9")
    )
    return lines


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fanout")
    commands = parser.add_subparsers(dest="command", required=True)
    add_report_parser(commands)
    return parser.parse_args(["report", *argv])


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_report(_parse(*argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _json(*argv: str) -> dict[str, Any]:
    code, out, err = _run(*argv, "--json")
    assert code == 0, err
    document: dict[str, Any] = json.loads(out)
    return document


# -- what the report says ---------------------------------------------------------------------------


def test_counts_by_status_and_route(tmp_path: Path) -> None:
    document = _json(str(_write(tmp_path / "out.jsonl", _known_run())))
    assert document["outcomes"] == 203
    assert document["statuses"] == {"succeeded": 190, "failed": 10, "expired": 1, "rejected": 2}
    assert document["routes"] == {"inline": 100, "none": 2, "s3": 101}
    assert document["by_status_and_route"] == {
        "succeeded": {"inline": 90, "s3": 100},
        "failed": {"inline": 10},
        "expired": {"s3": 1},
        "rejected": {"none": 2},
    }


def test_time_to_outcome_percentiles_overall_and_by_route(tmp_path: Path) -> None:
    latency = _json(str(_write(tmp_path / "out.jsonl", _known_run())))["time_to_outcome"]
    # Nearest rank over 0.1 .. 10.0 s: p50 is the 50th value, 5.0 s; within 1 % (the bucket width).
    inline = latency["inline"]
    assert inline["count"] == 100
    for name, expected in (("p50", 5.0), ("p90", 9.0), ("p95", 9.5), ("p99", 9.9)):
        assert inline[name] == pytest.approx(expected, rel=0.01), name
    assert inline["max"] == pytest.approx(10.0, abs=1e-3)  # the maximum is exact (to the file's ms)
    s3 = latency["s3"]
    assert s3["count"] == 101  # the expired one took 60 s and counts: it was accepted
    assert s3["p50"] == pytest.approx(25.1, rel=0.01)
    assert s3["max"] == pytest.approx(60.0, abs=1e-3)
    everything = latency["all"]
    assert everything["count"] == 201  # rejections are not timed
    assert everything["p50"] == pytest.approx(20.1, rel=0.01)  # the 101st of 201
    assert everything["p99"] == pytest.approx(29.9, rel=0.01)


def test_span_and_outcomes_per_second(tmp_path: Path) -> None:
    span = _json(str(_write(tmp_path / "out.jsonl", _known_run())))["span"]
    assert span["first"] == _iso(BASE)
    assert span["last"] == _iso(BASE + 99 + 30.0)
    assert span["seconds"] == pytest.approx(129.0, abs=1e-3)
    assert span["outcomes_per_second"] == pytest.approx(203 / 129.0, rel=1e-4)


def test_failure_reasons_group_by_their_normalised_form(tmp_path: Path) -> None:
    reasons = _json(str(_write(tmp_path / "out.jsonl", _known_run())))["failure_reasons"]
    assert reasons["groups"] == 3
    top = reasons["top"]
    assert [(group["status"], group["count"]) for group in top] == [
        ("failed", 10),
        ("rejected", 2),
        ("expired", 1),
    ]
    failed = top[0]
    # The model's own message varies per request; the status in parentheses is kept.
    assert failed["reason"] == 'ClientError: Received server error (500) from model with message "…".'
    assert failed["example"].endswith('message "bad r0".')
    assert (failed["example_id"], failed["example_line"]) == ("r0", 1)
    assert top[1]["reason"] == "line <n>: malformed JSON: Expecting value: line <n>"
    assert top[1]["example_line"] is None  # records without a line field are fine
    assert _json(str(tmp_path / "out.jsonl"), "--top", "1")["failure_reasons"]["top"] == top[:1]


def test_the_rich_summary(tmp_path: Path) -> None:
    path = _write(tmp_path / "out.jsonl", _known_run())
    code, out, err = _run(str(path))
    assert (code, err) == (0, "")
    assert f"fanout report: {path}: 203 outcomes over 2m 09.0s (1.6/s)" in out
    for text in ("outcomes by status and route", "time to outcome", "failure reasons: top 3 of 3 groups"):
        assert text in out
    assert "5.00 s" in out  # inline p50
    assert "(500)" in out and "id r0, input line 1" in out


def test_reasons_with_brackets_are_printed_as_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # rich reads it; one row per line keeps the text whole
    reason = "ValueError: [bold]not markup[/bold] in [red]"
    path = _write(tmp_path / "out.jsonl", [_record("failed", "inline", BASE, BASE + 1, reason)])
    code, out, _ = _run(str(path))
    assert code == 0
    assert "[bold]not markup[/bold] in [red]" in out
    assert "1 outcome over" in out


def test_an_empty_file_reports_no_outcomes(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    code, out, _ = _run(str(path))
    assert code == 0 and "no outcomes in the file" in out
    document = _json(str(path))
    assert document["outcomes"] == 0
    assert document["time_to_outcome"] == {}
    assert document["span"] == {"first": None, "last": None, "seconds": None, "outcomes_per_second": None}


# -- bad lines --------------------------------------------------------------------------------------


def _with_bad_lines(tmp_path: Path) -> Path:
    good = _record("succeeded", "inline", BASE, BASE + 1)
    return _write(
        tmp_path / "out.jsonl",
        [
            good,
            "{not json",
            "[1, 2]",
            "",
            {**good, "status": "weird"},
            {**good, "completed_at": "yesterday"},
            {**good, "submitted_at": 12},
            {**good, "payload": "carrier-pigeon"},
            {**good, "failure_reason": ["a"]},
            b"\xff\xfe\x00 not utf-8",
            good,
        ],
    )


def test_malformed_lines_are_counted_and_named_by_line_number(tmp_path: Path) -> None:
    document = _json(str(_with_bad_lines(tmp_path)))
    assert document["outcomes"] == 2
    malformed = document["malformed"]
    assert malformed["count"] == 8  # the blank line 4 is not a record and not an error
    by_line = {item["line"]: item["reason"] for item in malformed["lines"]}
    assert sorted(by_line) == [2, 3, 5, 6, 7, 8, 9, 10]
    assert by_line[2].startswith("not JSON")
    assert by_line[3] == "expected a JSON object, got list"
    assert by_line[5] == 'status must be one of succeeded, failed, expired, rejected, got "weird"'
    assert by_line[6] == 'completed_at is not an ISO 8601 time: "yesterday"'
    assert by_line[7] == "submitted_at must be an ISO 8601 string or null, got 12"
    assert by_line[8] == 'payload must be inline, s3 or null, got "carrier-pigeon"'
    assert by_line[9].startswith("failure_reason must be a string or null")
    assert by_line[10].startswith("not UTF-8") or by_line[10].startswith("not JSON")


def test_malformed_lines_in_the_rich_summary_never_a_traceback(tmp_path: Path) -> None:
    code, out, err = _run(str(_with_bad_lines(tmp_path)))
    assert (code, err) == (0, "")
    assert "8 malformed lines skipped" in out
    assert "line 6: completed_at is not an ISO 8601 time" in out


def test_only_the_first_malformed_lines_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_report_command, "_MALFORMED_EXAMPLES", 3)
    report = read_report(b"nope\n" for _ in range(50))
    assert report.malformed == 50
    assert [number for number, _ in report.malformed_examples] == [1, 2, 3]


# -- files, stdin and errors ------------------------------------------------------------------------


def test_a_missing_file_exits_2_with_a_message(tmp_path: Path) -> None:
    code, out, err = _run(str(tmp_path / "absent.jsonl"))
    assert (code, out) == (2, "")
    assert err == f"fanout report: error: the output file {str(tmp_path / 'absent.jsonl')!r} does not exist\n"


def test_a_folder_exits_2_with_a_message(tmp_path: Path) -> None:
    code, _, err = _run(str(tmp_path))
    assert code == 2 and "is a folder" in err


def test_standard_input(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = _write(tmp_path / "out.jsonl", _known_run()).read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    document = _json("-")
    assert document["source"] == "-" and document["outcomes"] == 203


def test_a_stream_is_read_lazily_in_one_pass() -> None:
    def lines() -> Iterator[bytes]:
        for i in range(20_000):
            yield json.dumps(_record("succeeded", "inline", BASE + i / 100, BASE + i / 100 + 0.5)).encode()

    report = read_report(lines())
    assert report.outcomes == 20_000
    assert report.latency["inline"].percentile(0.5) == pytest.approx(0.5, rel=0.01)


# -- plots ------------------------------------------------------------------------------------------


def test_the_plot_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    source = _write(tmp_path / "out.jsonl", _known_run())
    plot = tmp_path / "report.png"
    code, out, err = _run(str(source), "--plot", str(plot))
    assert (code, err) == (0, "")
    assert plot.read_bytes()[:8] == PNG_MAGIC
    assert f"plot written to {plot}" in out
    assert _json(str(source), "--plot", str(tmp_path / "again.png"))["plot"] == str(tmp_path / "again.png")


def test_a_plot_of_a_file_without_times_is_still_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    source = _write(tmp_path / "out.jsonl", [_record("rejected", None, None, None, "line 1: bad")])
    code, _, err = _run(str(source), "--plot", str(tmp_path / "p.png"))
    assert (code, err) == (0, "")
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG_MAGIC


def test_without_matplotlib_the_plot_asks_for_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A None entry in sys.modules makes the import raise ImportError, as if it were not installed.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    source = _write(tmp_path / "out.jsonl", _known_run())
    code, out, err = _run(str(source), "--plot", str(tmp_path / "p.png"))
    assert (code, out) == (2, "")
    assert "pip install 'fanout[plot]'" in err
    assert not (tmp_path / "p.png").exists()


def test_a_plot_into_a_missing_folder_fails_before_reading(tmp_path: Path) -> None:
    code, _, err = _run(str(tmp_path / "absent.jsonl"), "--plot", str(tmp_path / "no" / "p.png"))
    assert code == 2 and "does not exist" in err and "no" in err


def test_bad_flags_are_usage_errors() -> None:
    with pytest.raises(SystemExit) as caught:
        _parse("out.jsonl", "--top", "0")
    assert caught.value.code == 2


# -- the bounded parts ------------------------------------------------------------------------------


@given(st.lists(st.floats(min_value=1e-3, max_value=1e5), min_size=1, max_size=300))
def test_percentiles_are_within_one_percent_and_the_max_is_exact(values: list[float]) -> None:
    histogram = _Histogram()
    for value in values:
        histogram.add(value)
    ordered = sorted(values)
    for q in (0.5, 0.9, 0.95, 0.99):
        exact = ordered[max(1, math.ceil(q * len(ordered))) - 1]
        estimate = histogram.percentile(q)
        assert estimate is not None
        assert exact / 1.011 <= estimate <= exact * 1.011
    assert histogram.max == max(values)
    cdf = histogram.cdf()
    assert cdf[-1][1] == 1.0
    assert all(a[0] < b[0] and a[1] <= b[1] for a, b in itertools.pairwise(cdf))


def test_the_timeline_widens_its_bins_and_keeps_every_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_report_command, "_MAX_TIMELINE_BINS", 16)
    timeline = _Timeline(width=1.0)
    for second in range(1_000):
        timeline.add("succeeded" if second % 4 else "failed", BASE + second + 0.5)
    assert timeline.width == 64.0  # 1,000 one-second bins do not fit in 16 until they are 64 s wide
    starts, series = timeline.rates(BASE, points=1_000)
    assert len(starts) <= 16
    total = sum(rate * 64.0 for values in series.values() for rate in values)
    assert total == pytest.approx(1_000)
    assert set(series) == {"succeeded", "failed"}
    assert starts[0] == pytest.approx(0.5)  # bins count from the first completion


def test_reason_groups_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_report_command, "_MAX_REASON_GROUPS", 3)
    records = [
        _record("failed", "inline", BASE, BASE + 1, f"kind {chr(97 + i)} of failure") for i in range(10)
    ]
    report = read_report(json.dumps(record).encode() for record in records)
    assert len(report.reasons.groups) == 3
    assert report.reasons.other == 7
    assert report.to_dict()["failure_reasons"]["ungrouped"] == 7


# -- normalising reasons ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "normalised"),
    [
        ("object 1b4e28ba-2fa1-11d2-883f-0016d3cca427 is gone", "object <uuid> is gone"),
        (
            "ClientError: Failed to download s3://bucket-7/in/12/x.json: the object does not exist.",
            "ClientError: Failed to download <uri>: the object does not exist.",
        ),
        ("timed out after 3600 s at 2026-11-29T20:06:24.664Z", "timed out after <n> s at <time>"),
        ("request r17 failed on attempt 3", "request r<n> failed on attempt <n>"),
        ("digest deadbeef0123456789abcdef mismatch", "digest <hex> mismatch"),
        ("Received server error (503) from model", "Received server error (503) from model"),
        ("S3 PUT failed; sha256 differs", "S3 PUT failed; sha256 differs"),
        ("spaces\n\tcollapse   here", "spaces collapse here"),
        ("id must be a non-empty string, got a number 12", "id must be a non-empty string, got a number <n>"),
    ],
)
def test_normalise_reason(reason: str, normalised: str) -> None:
    assert normalise_reason(reason) == normalised


@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=0, max_value=10**12))
def test_reasons_differing_only_in_numbers_group_together(a: int, b: int) -> None:
    template = "the model timed out after {} s on request r{}"
    assert normalise_reason(template.format(a, b)) == normalise_reason(template.format(b, a))


@given(st.text(max_size=100))
def test_normalising_twice_changes_nothing(reason: str) -> None:
    once = normalise_reason(reason)
    assert normalise_reason(once) == once


def test_long_reasons_are_clipped() -> None:
    assert len(normalise_reason("x" * 1_000)) == 240
