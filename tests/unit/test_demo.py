"""``fanout demo``'s pure parts: the finding sentence (it claims only what the reports show), the
width of what it prints, and its progress displays."""

from __future__ import annotations

import io
import re
from dataclasses import replace

import pytest

from fanout._cost import load_prices
from fanout._demo import (
    MAX_WIDTH,
    RATE,
    _LineProgress,
    _LiveProgress,
    _progress_for,
    finding,
    print_comparison,
)
from fanout._models import Failed, RunReport, Succeeded

INVOKE = "sagemaker-runtime.InvokeEndpointAsync"
PUT = "s3.PutObject"


def _report(*, p50: float | None, puts: int, total: int = 1_000, inline: int | None = None) -> RunReport:
    """A made-up report: ``total`` successes, ``puts`` staged inputs, ``inline`` sent inline."""
    inline = total - puts if inline is None else inline
    return RunReport(
        succeeded=total,
        inline=inline,
        s3=total - inline,
        p50=p50,
        p99=None if p50 is None else p50 * 3,
        api_calls={
            INVOKE: total,
            PUT: puts,
            "sqs.ReceiveMessage": total // 10,
            "sqs.DeleteMessageBatch": total // 10,
        },
        elapsed=2.0,
    )


def test_inline_faster_says_how_much_faster_and_what_it_saved() -> None:
    sentence = finding(_report(p50=0.034, puts=50), _report(p50=0.072, puts=1_000))
    assert sentence.startswith(
        "Inline was 2.1× faster at p50 (34 ms against 72 ms), saved 950 S3 PUTs per 1,000 requests and cost "
    )
    costs = re.search(r"cost (\$[\d.]+) against (\$[\d.]+) per 1,000 in request charges\.$", sentence)
    assert costs is not None
    inline_cost, s3_cost = (float(money[1:]) for money in costs.groups())
    assert inline_cost < s3_cost


def test_inline_slower_is_never_called_a_win() -> None:
    sentence = finding(_report(p50=0.045, puts=50), _report(p50=0.034, puts=1_000))
    assert "faster" not in sentence
    assert sentence.startswith(
        "Inline took 1.3× as long as all S3 at p50 (45 ms against 34 ms) "
        "but saved 950 S3 PUTs per 1,000 requests"
    )


def test_a_large_ratio_drops_the_decimal() -> None:
    sentence = finding(_report(p50=0.035, puts=46), _report(p50=0.985, puts=1_000))
    assert sentence.startswith("Inline was 28× faster at p50 (35 ms against 985 ms)")


def test_p50s_within_5_percent_are_about_as_fast() -> None:
    sentence = finding(_report(p50=0.034, puts=0), _report(p50=0.035, puts=1_000))
    assert sentence.startswith("Inline was about as fast as all S3 at p50 (34 ms against 35 ms), saved 1,000")


def test_more_puts_on_the_inline_path_is_said_so() -> None:
    sentence = finding(_report(p50=0.020, puts=1_000), _report(p50=0.040, puts=990))
    assert "saved" not in sentence
    assert (
        "Inline was 2.0× faster at p50 (20 ms against 40 ms) but made 10 more S3 PUTs per 1,000 requests"
        in (sentence)
    )


def test_one_more_put_is_singular() -> None:
    sentence = finding(_report(p50=0.020, puts=1_000), _report(p50=0.040, puts=999))
    assert "made 1 more S3 PUT per 1,000 requests" in sentence


def test_no_p50_claims_no_speed() -> None:
    sentence = finding(_report(p50=None, puts=0), _report(p50=0.040, puts=1_000))
    assert sentence.startswith(
        "No p50 to compare (no request accepted on inline (auto)); inline saved 1,000 S3 PUTs"
    )
    assert "faster" not in sentence and "as long" not in sentence


def _printed(inline: RunReport, s3: RunReport, monkeypatch: pytest.MonkeyPatch, columns: int) -> list[str]:
    monkeypatch.setenv("COLUMNS", str(columns))
    out = io.StringIO()
    print_comparison(inline, s3, out, load_prices())
    return out.getvalue().splitlines()


@pytest.mark.parametrize("columns", [80, 100, 300])
def test_every_line_fits_and_the_table_does_not_wrap(monkeypatch: pytest.MonkeyPatch, columns: int) -> None:
    lines = _printed(_report(p50=0.035, puts=46), _report(p50=0.985, puts=1_000), monkeypatch, columns)
    assert max(len(line) for line in lines) <= min(columns, MAX_WIDTH)
    assert not [line for line in lines if line != line.rstrip()]
    table = [line for line in lines if line.startswith(("┏", "┃", "┡", "│", "└"))]
    assert len(table) == 4 + 8  # top, header, rule, bottom, and one line per row
    assert len({len(line) for line in table}) == 1


def test_a_run_with_failures_says_the_numbers_cover_what_finished(monkeypatch: pytest.MonkeyPatch) -> None:
    partial = RunReport(
        succeeded=990, failed=10, inline=1_000, p50=0.03, api_calls={INVOKE: 1_000}, elapsed=1.0
    )
    text = " ".join(_printed(partial, _report(p50=0.06, puts=1_000), monkeypatch, 100))
    assert "Not every request succeeded (inline: 990 of 1,000; all S3: 1,000 of 1,000)" in " ".join(
        text.split()
    )


def test_a_path_that_fell_behind_the_offered_rate_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    slow = replace(_report(p50=0.4, puts=1_000), elapsed=1_000 / (RATE / 2))  # half the rate offered
    text = " ".join(" ".join(_printed(_report(p50=0.03, puts=46), slow, monkeypatch, 100)).split())
    assert f"all S3 ({RATE / 2:,.0f}/s) did not keep up with the {RATE:,.0f} requests/s offered" in text
    assert "inline (auto) (" not in text


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_live_display_and_a_pipe_the_lines() -> None:
    assert isinstance(_progress_for(_Terminal()), _LiveProgress)
    assert isinstance(_progress_for(io.StringIO()), _LineProgress)


def test_the_live_display_counts_outcomes_by_path() -> None:
    stream = _Terminal()
    with _LiveProgress(stream) as progress:
        progress.path_started("inline (auto)", 3)
        progress.sending()
        for index in range(3):
            progress.handed_over(Succeeded(inference_id=str(index)))
        progress.path_started("all S3", 3)
        progress.sending()
        progress.handed_over(Succeeded(inference_id="a"))
        progress.handed_over(Failed(inference_id="b"))
    text = stream.getvalue()
    last = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).split("\r")[-1]
    assert re.search(r"1/2 inline \(auto\).*\s3/3\s+[\d,]+/s", last)
    assert re.search(r"2/2 all S3.*\s2/3\s.*failed 1", last)
