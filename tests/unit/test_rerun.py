"""``--rerun``: which input lines an earlier output says did not succeed, and when it is not that input's."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from fanout._exceptions import ConfigError
from fanout._jsonl import format_outcome
from fanout._models import Expired, Failed, Outcome, Rejected, Succeeded
from fanout._rerun import RerunSelection, select_lines


def _input(*lines: Any) -> io.BytesIO:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    return io.BytesIO(text.encode())


def _earlier(path: Path, *records: dict[str, Any] | str) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


def _record(line: int, id: str, status: str) -> dict[str, Any]:
    return {"id": id, "line": line, "status": status, "inference_id": f"earlier-{line}"}


def _select(source: io.BytesIO, *earlier: str) -> RerunSelection:
    return select_lines(source, earlier, input_name="in.jsonl")


def test_lines_that_did_not_succeed_are_chosen_and_the_rest_skipped(tmp_path: Path) -> None:
    source = _input(
        {"id": "a", "body": 1},
        {"id": "b", "body": 2},
        "",  # blank: numbered, never run
        {"id": "c", "body": 3},
        {"id": "d", "body": 4},
        {"id": "e", "body": 5},
        "{not json",
    )
    earlier = _earlier(
        tmp_path / "out.jsonl",
        _record(1, "a", "succeeded"),
        _record(2, "b", "failed"),
        _record(4, "c", "expired"),
        _record(7, "7", "rejected"),  # a line that cannot be parsed has its number for its id
        # line 5 has no record (the run stopped early); line 6 succeeded twice, once after a failure
        _record(6, "e", "failed"),
        _record(6, "e", "succeeded"),
    )
    selection = _select(source, earlier)
    assert [line for line in range(1, 9) if selection.chooses(line)] == [2, 4, 5, 7]
    assert (selection.lines, selection.selected, selection.skipped) == (6, 4, 2)
    assert dict(selection.by_status) == {"failed": 1, "expired": 1, "rejected": 1, "no record": 1}
    assert selection.describe() == (
        f"rerun: 4 of 6 lines did not succeed in {earlier} "
        "(failed 1, expired 1, rejected 1, no record 1); 2 skipped"
    )


def test_a_success_counts_whichever_record_comes_first(tmp_path: Path) -> None:
    for order in (("succeeded", "failed"), ("failed", "succeeded")):
        earlier = _earlier(tmp_path / "out.jsonl", *(_record(1, "a", status) for status in order))
        assert not _select(_input({"id": "a", "body": 1}), earlier).chooses(1)


def test_records_written_by_the_run_itself_are_understood(tmp_path: Path) -> None:
    outcomes: list[tuple[int, Outcome]] = [
        (
            1,
            Succeeded(
                inference_id="i1", id="a", route="inline", output_location="s3://b/1", completed_at=2.0
            ),
        ),
        (2, Failed(inference_id="i2", id="b", route="inline", failure_reason="boom", completed_at=2.0)),
        (3, Expired(inference_id="i3", id="c", route="s3", completed_at=2.0)),
        (4, Rejected(reason="line 4: nope", id="4", line=4, completed_at=2.0)),
    ]
    earlier = tmp_path / "out.jsonl"
    earlier.write_bytes(b"".join(format_outcome(outcome, line) for line, outcome in outcomes))
    source = _input({"id": "a", "body": 1}, {"id": "b", "body": 1}, {"id": "c", "body": 1}, [1])
    selection = _select(source, str(earlier))
    assert [line for line in range(1, 5) if selection.chooses(line)] == [2, 3, 4]


def test_an_output_of_another_input_is_refused_naming_both_ids(tmp_path: Path) -> None:
    earlier = _earlier(tmp_path / "out.jsonl", _record(1, "a", "succeeded"), _record(2, "x", "failed"))
    with pytest.raises(ConfigError) as error:
        _select(_input({"id": "a", "body": 1}, {"id": "b", "body": 1}), earlier)
    assert str(error.value) == (
        f"--rerun {earlier!r} is not an output of the input 'in.jsonl': line 2 has id 'x', "
        "the input's line 2 has id 'b'"
    )


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (_record(3, "c", "failed"), "it has a record for line 3, and that line of the input does not exist"),
        (_record(2, "2", "failed"), "it has a record for line 2, and that line of the input is blank"),
        ({"id": "a", "status": "failed"}, "has a record without a line number (its line 1, id 'a')"),
        ({"id": "a", "line": "1", "status": "failed"}, "its line 1 has line '1', not an input line number"),
        (_record(1, "a", "done"), "its line 1 has status 'done', not one of succeeded"),
        ("[1, 2]", "its line 1 is not a JSON object"),
        ("{oops", "its line 1 is not JSON"),
    ],
)
def test_what_is_not_this_inputs_output_is_refused(tmp_path: Path, record: Any, message: str) -> None:
    earlier = _earlier(tmp_path / "out.jsonl", record)
    with pytest.raises(ConfigError, match=r"^--rerun ") as error:
        _select(_input({"id": "a", "body": 1}, ""), earlier)
    assert message in str(error.value)


def test_a_record_without_line_says_it_comes_from_an_older_fanout(tmp_path: Path) -> None:
    earlier = _earlier(tmp_path / "out.jsonl", {"id": "a", "status": "failed", "inference_id": "x"})
    with pytest.raises(ConfigError, match="written by a fanout older than the output's line field"):
        _select(_input({"id": "a", "body": 1}), earlier)


def test_an_unreadable_earlier_output_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read --rerun .*missing\.jsonl"):
        _select(_input({"id": "a", "body": 1}), str(tmp_path / "missing.jsonl"))


def test_a_duplicate_of_a_line_not_run_again_is_rejected_again(tmp_path: Path) -> None:
    source = _input(
        {"id": "a", "body": 1, "inference_id": "own-1"},
        {"id": "a", "body": 2},  # rejected earlier: line 1 had its id
        {"id": "c", "body": 3, "inference_id": "own-1"},  # rejected earlier: line 1 had its inference_id
        {"id": "d", "body": 4, "inference_id": "own-4"},
    )
    earlier = _earlier(
        tmp_path / "out.jsonl",
        _record(1, "a", "succeeded"),
        _record(2, "a", "rejected"),
        _record(3, "c", "rejected"),
        _record(4, "d", "failed"),
    )
    selection = _select(source, earlier)
    assert selection.conflict(2) == "duplicate id 'a': line 1 already has it"
    assert selection.conflict(3) == "duplicate inference_id 'own-1': line 1 already has it"
    assert selection.conflict(4) is None
    assert selection.own_inference_ids == 2  # lines 3 and 4 give their own, and are run again


def test_the_digest_follows_the_earlier_outputs_bytes(tmp_path: Path) -> None:
    first = _select(_input({"id": "a", "body": 1}), _earlier(tmp_path / "one", _record(1, "a", "failed")))
    same = _select(_input({"id": "a", "body": 1}), _earlier(tmp_path / "two", _record(1, "a", "failed")))
    other = _select(_input({"id": "a", "body": 1}), _earlier(tmp_path / "three", _record(1, "a", "expired")))
    assert first.digest == same.digest != other.digest


def test_an_empty_earlier_output_runs_everything(tmp_path: Path) -> None:
    selection = _select(_input({"body": 1}, {"body": 2}), _earlier(tmp_path / "out.jsonl"))
    assert (selection.selected, dict(selection.by_status)) == (2, {"no record": 2})


def test_the_outputs_of_a_run_and_its_rerun_are_read_as_one(tmp_path: Path) -> None:
    source = _input({"id": "a", "body": 1}, {"id": "b", "body": 2}, {"id": "c", "body": 3})
    first = _earlier(
        tmp_path / "out.jsonl",
        _record(1, "a", "succeeded"),
        _record(2, "b", "failed"),
        _record(3, "c", "failed"),
    )
    retry = _earlier(tmp_path / "retry.jsonl", _record(2, "b", "succeeded"), _record(3, "c", "expired"))
    alone = _select(source, retry)  # line 1 has no record there: it would be sent again
    assert [line for line in (1, 2, 3) if alone.chooses(line)] == [1, 3]
    both = _select(source, first, retry)
    assert [line for line in (1, 2, 3) if both.chooses(line)] == [3]
    assert dict(both.by_status) == {"expired": 1}
    assert (
        both.describe()
        == f"rerun: 1 of 3 lines did not succeed in {first} and {retry} (expired 1); 2 skipped"
    )
    assert both.digest != _select(source, retry, first).digest
