from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from hypothesis import given, strategies as st

from fanout import (
    BucketNotFound,
    CredentialsError,
    EndpointNotFound,
    Expired,
    Failed,
    FanoutError,
    InferenceExpired,
    InferenceFailed,
    InferenceRejected,
    InferenceRequest,
    QueueNotFound,
    Rejected,
    ServiceUnreachable,
    Succeeded,
)
from fanout._exceptions import error_code, http_status, map_aws_errors
from fanout._models import encode_json

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(json_values)
def test_json_bodies_are_compact_utf8_and_round_trip(value: object) -> None:
    body = InferenceRequest.from_json(value).body
    assert body is not None
    assert body == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    assert json.loads(body) == value


def test_non_ascii_is_not_escaped() -> None:
    assert encode_json({"q": "café"}) == '{"q":"café"}'.encode()


def test_outcomes_unwrap() -> None:
    assert Succeeded(inference_id="a", result=b"x").unwrap() == b"x"
    with pytest.raises(InferenceFailed, match="boom"):
        Failed(inference_id="a", failure_reason="boom").unwrap()
    with pytest.raises(InferenceExpired):
        Expired(inference_id="a").unwrap()
    cause = ValueError("bad")
    with pytest.raises(InferenceRejected) as info:
        Rejected(reason="too big", id="7", error=cause).unwrap()
    assert info.value.__cause__ is cause and info.value.id == "7"


def test_status_is_fixed_per_outcome() -> None:
    assert [o.status for o in (Succeeded(inference_id="a"), Failed(inference_id="a"))] == [
        "succeeded",
        "failed",
    ]
    assert Expired(inference_id="a").status == "expired"
    assert Rejected(reason="r").status == "rejected"


def _client_error(code: str, message: str = "", status: int = 400, op: str = "Op") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, op
    )


def test_error_code_and_status() -> None:
    exc = _client_error("ThrottlingException", status=400)
    assert error_code(exc) == "ThrottlingException"
    assert http_status(exc) == 400
    assert error_code(ValueError()) is None and http_status(ValueError()) is None


def test_map_aws_errors_maps_run_level_errors_and_keeps_the_cause() -> None:
    cases: list[tuple[BaseException, type[FanoutError], dict[str, str]]] = [
        (NoCredentialsError(), CredentialsError, {}),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), ServiceUnreachable, {}),
        (_client_error("NoSuchBucket", status=404), BucketNotFound, {"bucket": "b"}),
        (
            _client_error("AWS.SimpleQueueService.NonExistentQueue"),
            QueueNotFound,
            {"queue_url": "http://q"},
        ),
        (
            _client_error("ValidationError", "Endpoint nope of account 123456789012 not found."),
            EndpointNotFound,
            {"endpoint_name": "nope"},
        ),
    ]
    for original, expected, kwargs in cases:
        with pytest.raises(expected) as info, map_aws_errors(**kwargs):
            raise original
        assert info.value.__cause__ is original
        for value in kwargs.values():
            assert value in str(info.value)


def test_map_aws_errors_leaves_per_item_errors_alone() -> None:
    original = _client_error("ThrottlingException")
    with pytest.raises(ClientError) as info, map_aws_errors(bucket="b", endpoint_name="e"):
        raise original
    assert info.value is original


@pytest.mark.anyio
async def test_a_task_groups_single_error_comes_out_unwrapped() -> None:
    import anyio

    from fanout._exceptions import unwrap_task_errors

    cause = KeyError("AWS.SimpleQueueService.NonExistentQueue")

    async def fail() -> None:
        raise QueueNotFound("http://q") from cause

    with pytest.raises(QueueNotFound) as unwrapped, unwrap_task_errors():
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep_forever)
            tg.start_soon(fail)
    assert unwrapped.value.__cause__ is cause  # the cause it was raised with survives the trip

    with pytest.raises(BaseExceptionGroup) as info, unwrap_task_errors():
        raise BaseExceptionGroup("two", [QueueNotFound("http://q"), ExceptionGroup("inner", [ValueError()])])
    assert len(info.value.exceptions) == 2
