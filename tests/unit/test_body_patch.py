"""The Body model patch: it restores Body exactly, and a patched client sends it as the raw payload."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from aiobotocore.awsrequest import AioAWSResponse
from aiobotocore.session import get_session

from fanout._body_patch import add_body_member, ensure_body_member

pytestmark = pytest.mark.anyio

_INPUT = "InvokeEndpointAsyncInput"


def _strip_body(model: dict[str, Any]) -> None:
    """Make a model look like botocore < 1.43.29."""
    shape = model["shapes"][_INPUT]
    del shape["members"]["Body"]
    del shape["payload"]
    del model["shapes"]["AsyncBodyBlob"]
    shape["required"] = ["EndpointName", "InputLocation"]


def _loaded_model(session: Any) -> dict[str, Any]:
    model: dict[str, Any] = session.get_component("data_loader").load_service_model(
        "sagemaker-runtime", "service-2"
    )
    return model


def test_the_patch_restores_body_exactly() -> None:
    current = _loaded_model(get_session())
    old = copy.deepcopy(current)
    _strip_body(old)
    assert add_body_member(old)
    shape, original = old["shapes"][_INPUT], current["shapes"][_INPUT]
    assert shape["members"]["Body"] == {"shape": "AsyncBodyBlob"}
    assert {k: v for k, v in original["members"]["Body"].items() if k != "documentation"} == {
        "shape": "AsyncBodyBlob"
    }
    assert shape["payload"] == original["payload"] == "Body"
    assert shape["required"] == original["required"] == ["EndpointName"]
    assert old["shapes"]["AsyncBodyBlob"] == {
        k: v for k, v in current["shapes"]["AsyncBodyBlob"].items() if k != "documentation"
    }
    assert not add_body_member(old)


def test_no_op_on_a_botocore_that_has_body() -> None:
    session = get_session()
    before = copy.deepcopy(_loaded_model(session))
    assert not ensure_body_member(session)
    assert _loaded_model(session) == before


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    async def read(self) -> bytes:
        return self._body


async def _send(session: Any, **params: Any) -> dict[str, Any]:
    captured: dict[str, Any] = {}

    def before_send(request: Any, **_: Any) -> AioAWSResponse:
        captured["url"] = request.url
        captured["headers"] = dict(request.headers)
        captured["body"] = request.body
        body = b'{"InferenceId":"iid-1"}'
        headers = {"x-amzn-RequestId": "r", "X-Amzn-SageMaker-OutputLocation": "s3://o/k.out"}
        return AioAWSResponse(request.url, 202, headers, _Raw(body))

    async with session.create_client(
        "sagemaker-runtime",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ) as client:
        client.meta.events.register("before-send.sagemaker-runtime.InvokeEndpointAsync", before_send)
        captured["response"] = await client.invoke_endpoint_async(**params)
    return captured


_PARAMS = {
    "EndpointName": "ep1",
    "Body": b'{"x": "\xc3\xa9"}' + bytes(range(256)),
    "ContentType": "application/json",
    "Accept": "application/json",
    "InferenceId": "iid-1",
}
_VOLATILE = {"X-Amz-Date", "Authorization", "amz-sdk-invocation-id", "User-Agent"}


def _stable(headers: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in headers.items() if k not in _VOLATILE}


async def test_a_patched_client_sends_body_as_the_raw_payload() -> None:
    reference = await _send(get_session(), **_PARAMS)

    session = get_session()
    _strip_body(_loaded_model(session))
    assert ensure_body_member(session)
    patched = await _send(session, **_PARAMS)

    assert patched["body"] == _PARAMS["Body"] == reference["body"]
    assert (
        patched["url"]
        == reference["url"]
        == "https://runtime.sagemaker.us-east-1.amazonaws.com/endpoints/ep1/async-invocations"
    )
    assert _stable(patched["headers"]) == _stable(reference["headers"])
    assert patched["headers"]["X-Amzn-SageMaker-Content-Type"] == b"application/json" or (
        patched["headers"]["X-Amzn-SageMaker-Content-Type"] == "application/json"
    )
    assert "Content-Type" not in patched["headers"]
    assert patched["response"]["InferenceId"] == "iid-1"


async def test_a_stripped_model_cannot_send_body_without_the_patch() -> None:
    from botocore.exceptions import ParamValidationError

    session = get_session()
    _strip_body(_loaded_model(session))
    with pytest.raises(ParamValidationError):
        await _send(session, **_PARAMS)


async def test_patching_a_fresh_client() -> None:
    session = get_session()
    _strip_body(_loaded_model(session))
    async with session.create_client(
        "sagemaker-runtime", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    ) as client:
        assert ensure_body_member(client)
        shape = client.meta.service_model.operation_model("InvokeEndpointAsync").input_shape
        assert "Body" in shape.members and shape.serialization.get("payload") == "Body"


def test_rejects_other_objects() -> None:
    with pytest.raises(TypeError):
        ensure_body_member(object())


async def test_the_native_and_the_patched_client_match_the_golden_wire_request() -> None:
    from tests.wire import PARAMS, golden, wire_summary

    session = get_session()
    native = await _send(session, **PARAMS)
    assert wire_summary(native["url"], native["headers"], native["body"]) == golden()

    stripped = get_session()
    _strip_body(_loaded_model(stripped))
    assert ensure_body_member(stripped)
    patched = await _send(stripped, **PARAMS)
    assert wire_summary(patched["url"], patched["headers"], patched["body"]) == golden()
