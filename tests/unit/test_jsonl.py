"""The JSONL contract: input lines become requests or per-line rejections; outcomes become records."""

from __future__ import annotations

import base64
import hashlib
import json
import math
from typing import Any

import pytest
from hypothesis import given, strategies as st

from fanout._jsonl import (
    OUTPUT_FIELDS,
    LineDefaults,
    format_outcome,
    format_timestamp,
    outcome_record,
    parse_line,
)
from fanout._models import Expired, Failed, InferenceRequest, Rejected, Succeeded, encode_json

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)


def _request(line: str | bytes, number: int = 1, defaults: LineDefaults | None = None) -> InferenceRequest:
    parsed = parse_line(line, number) if defaults is None else parse_line(line, number, defaults)
    assert isinstance(parsed, InferenceRequest), parsed
    return parsed


def _rejected(line: str | bytes, number: int = 7) -> Rejected:
    parsed = parse_line(line, number, now=1_700_000_000.0)
    assert isinstance(parsed, Rejected), parsed
    assert parsed.line == number
    assert parsed.reason.startswith(f"line {number}: ")
    assert parsed.completed_at == 1_700_000_000.0
    return parsed


def test_body_is_compact_utf8_json_and_id_defaults_to_the_line_number() -> None:
    request = _request('{"body": {"text": "héllo", "n": [1, 2]}}', 42)
    assert request.body == '{"text":"héllo","n":[1,2]}'.encode()
    assert request.id == "42"
    assert request.input_location is None
    assert request.content_type == "application/json"


def test_body_base64_and_input_location_and_optional_fields() -> None:
    raw = bytes(range(256))
    line = json.dumps(
        {
            "id": "a",
            "body_base64": base64.b64encode(raw).decode(),
            "content_type": "application/octet-stream",
            "accept": "text/csv",
            "custom_attributes": "k=v",
            "inference_id": "iid-1",
        }
    )
    request = _request(line)
    assert (request.body, request.id, request.inference_id) == (raw, "a", "iid-1")
    assert (request.content_type, request.accept, request.custom_attributes) == (
        "application/octet-stream",
        "text/csv",
        "k=v",
    )
    located = _request('{"input_location": "s3://bucket-1/in/x.json"}')
    assert located.input_location == "s3://bucket-1/in/x.json"
    assert located.body is None


def test_command_line_defaults_apply_unless_the_line_overrides_them() -> None:
    defaults = LineDefaults(content_type="text/plain", request_ttl_seconds=120, invocation_timeout_seconds=30)
    request = _request('{"body": 1}', 1, defaults)
    assert (request.content_type, request.request_ttl_seconds, request.invocation_timeout_seconds) == (
        "text/plain",
        120,
        30,
    )
    assert (
        _request('{"body": 1, "content_type": "application/x"}', 1, defaults).content_type == "application/x"
    )


def test_a_json_null_body_is_a_body() -> None:
    assert _request('{"body": null}').body == b"null"


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("{not json", "malformed JSON"),
        ('{"body": NaN}', "malformed JSON"),
        ("[1, 2]", "expected a JSON object, got an array"),
        ('"text"', "expected a JSON object, got a string"),
        ("", "malformed JSON"),
        ('{"id": "x"}', "give exactly one of body, body_base64 or input_location"),
        ('{"body": 1, "input_location": "s3://b-1/k"}', "not body and input_location"),
        ('{"body": 1, "body_base64": "AA=="}', "not body and body_base64"),
        ('{"body_base64": "not base64!"}', "body_base64 is not valid base64"),
        ('{"body_base64": 12}', "body_base64 must be a base64 string"),
        ('{"input_location": "http://x/y"}', "input_location must look like s3://"),
        ('{"input_location": 5}', "input_location must be an s3:// URI string"),
        ('{"body": 1, "content_type": 3}', "content_type must be a non-empty string"),
        ('{"body": 1, "accept": ""}', "accept must be a non-empty string"),
        ('{"body": 1, "inference_id": null}', "inference_id must be a non-empty string"),
        ('{"body": 1, "bodyy": 2}', "unknown field 'bodyy'"),
    ],
)
def test_bad_lines_become_rejections_that_name_the_line_and_the_reason(line: str, fragment: str) -> None:
    rejected = _rejected(line)
    assert fragment in rejected.reason


def test_a_rejection_keeps_the_line_id_when_there_is_one() -> None:
    assert _rejected('{"id": "mine", "body": 1, "input_location": "s3://b-1/k"}').id == "mine"
    assert _rejected("{broken").id == "7"


@pytest.mark.parametrize("bad_id", ["5", "null", '""', "[]", "true"])
def test_a_non_string_or_empty_id_is_rejected(bad_id: str) -> None:
    rejected = _rejected(f'{{"id": {bad_id}, "body": 1}}')
    assert "id must be a non-empty string" in rejected.reason
    assert rejected.id == "7"


def test_invalid_utf8_is_rejected() -> None:
    assert "not valid UTF-8" in _rejected(b'{"body": "\xff"}').reason


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ('{"body": 1e400}', "1e400 is too large for a double"),
        ('{"body": [-1e999]}', "-1e999 is too large for a double"),
        ('{"body": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested 100001 levels deep"),
        ('{"body": "\\ud800"}', "'body' holds a lone surrogate '\\ud800'"),
        ('{"body": {"k": ["x\\udc00"]}}', "'body' holds a lone surrogate"),
        ('{"body": {"\\udfff": 1}}', "a key of 'body' holds a lone surrogate"),
        ('{"id": "\\ud800", "body": 1}', "'id' holds a lone surrogate"),
        ('{"inference_id": "a\\ud800", "body": 1}', "'inference_id' holds a lone surrogate"),
        ('{"body": 1, "custom_attributes": "\\ud800"}', "'custom_attributes' holds a lone surrogate"),
        ('{"body": ' + "9" * 5000 + "}", "malformed JSON"),
    ],
)
def test_hostile_lines_are_rejections_not_crashes(line: str, fragment: str) -> None:
    rejected = _rejected(line)
    assert fragment in rejected.reason
    assert rejected.id == "7"
    format_outcome(rejected).decode("utf-8")  # and the rejection itself can be written


def test_pairs_of_surrogates_and_deep_but_allowed_nesting_are_fine() -> None:
    assert _request('{"body": "\\ud83d\\ude00"}').body == '"\U0001f600"'.encode()
    deep = "[" * 500 + "]" * 500
    assert _request('{"body": ' + deep + "}").body == deep.encode()
    assert _request('{"body": "' + "[" * 5000 + '"}').body == ('"' + "[" * 5000 + '"').encode()


def test_encode_json_refuses_what_is_not_json() -> None:
    for value in (math.inf, math.nan, "\ud800"):
        with pytest.raises(ValueError):
            encode_json(value)


@given(json_values)
def test_any_json_body_round_trips(value: Any) -> None:
    request = _request(json.dumps({"body": value}))
    assert request.body == encode_json(value)
    assert json.loads(request.body) == value


@given(st.binary(max_size=300))
def test_any_bytes_round_trip_through_body_base64(raw: bytes) -> None:
    assert _request(json.dumps({"body_base64": base64.b64encode(raw).decode()})).body == raw


# -- output records ------------------------------------------------------------------------------


def _decode(line: bytes) -> dict[str, Any]:
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    record: dict[str, Any] = json.loads(line)
    assert list(record)[: len(OUTPUT_FIELDS)] == list(OUTPUT_FIELDS)
    assert len(record) == len(OUTPUT_FIELDS) + 1
    return record


def test_a_success_with_json_output_carries_the_parsed_result() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    outcome = Succeeded(
        inference_id="iid",
        id="a",
        route="inline",
        output_location="s3://out/r/1.out",
        result=json.dumps({"sha256": digest}).encode(),
        content_type="application/json; charset=utf-8",
        attempts=2,
        submitted_at=1_700_000_000.5,
        completed_at=1_700_000_001.25,
    )
    record = _decode(format_outcome(outcome, 7))
    assert record == {
        "id": "a",
        "line": 7,
        "inference_id": "iid",
        "status": "succeeded",
        "payload": "inline",
        "output_location": "s3://out/r/1.out",
        "failure_location": None,
        "failure_reason": None,
        "attempts": 2,
        "submitted_at": "2023-11-14T22:13:20.500Z",
        "completed_at": "2023-11-14T22:13:21.250Z",
        "result": {"sha256": digest},
    }


@pytest.mark.parametrize(
    ("result", "content_type"),
    [(b"\x00\xff", "application/octet-stream"), (b"{bad", "application/json"), (b"1,2", "text/csv")],
)
def test_other_output_goes_to_result_base64(result: bytes, content_type: str) -> None:
    outcome = Succeeded(inference_id="i", result=result, content_type=content_type, completed_at=1.0)
    record = _decode(format_outcome(outcome))
    assert base64.b64decode(record["result_base64"]) == result
    assert "result" not in record


@pytest.mark.parametrize(
    "result",
    [b"[" * 10_000 + b"]" * 10_000, b'{"v": 1e999}', b'{"v": "\\ud800"}', b"NaN"],
    ids=["too-deep", "out-of-range", "lone-surrogate", "nan"],
)
def test_json_output_that_cannot_be_written_back_as_json_goes_to_result_base64(result: bytes) -> None:
    outcome = Succeeded(inference_id="i", result=result, content_type="application/json", completed_at=1.0)
    record = _decode(format_outcome(outcome))
    assert base64.b64decode(record["result_base64"]) == result


def test_output_of_unknown_type_is_parsed_when_it_is_json() -> None:
    record = outcome_record(Succeeded(inference_id="i", result=b'{"a":1}', content_type=None))
    assert record["result"] == {"a": 1}


def test_failures_expiries_and_rejections_have_a_reason_and_a_null_result() -> None:
    failed = _decode(
        format_outcome(
            Failed(inference_id="i", id="f", route="s3", failure_location="s3://o/f", failure_reason="boom")
        )
    )
    assert (failed["status"], failed["payload"], failed["failure_reason"], failed["result"]) == (
        "failed",
        "s3",
        "boom",
        None,
    )
    assert failed["failure_location"] == "s3://o/f"
    expired = _decode(format_outcome(Expired(inference_id="i", id="e")))
    assert expired["status"] == "expired"
    assert expired["failure_reason"]
    rejected = _decode(format_outcome(_rejected("{nope")))
    assert rejected["status"] == "rejected"
    assert rejected["inference_id"] is None
    assert rejected["submitted_at"] is None
    assert rejected["completed_at"] == "2023-11-14T22:13:20.000Z"
    assert rejected["failure_reason"].startswith("line 7: malformed JSON")
    assert rejected["line"] == 7  # an unreadable line's rejection carries its own number


def test_timestamps_are_utc_iso8601() -> None:
    assert format_timestamp(0.0) is None
    assert format_timestamp(None) is None
    assert format_timestamp(86_400.0) == "1970-01-02T00:00:00.000Z"


def test_non_ascii_results_are_written_as_utf8() -> None:
    line = format_outcome(Succeeded(inference_id="i", result='{"t":"ü"}'.encode(), content_type="text/json"))
    assert "ü".encode() in line
