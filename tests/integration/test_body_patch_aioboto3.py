"""With aioboto3 installed (15.5.0 pins a botocore without ``Body``), the patch makes it send Body.

Skipped unless aioboto3 is importable; a CI job on aioboto3 15.5.0 runs it.
"""

from __future__ import annotations

from typing import Any

import pytest

aioboto3 = pytest.importorskip("aioboto3")

from aiobotocore.awsrequest import AioAWSResponse  # noqa: E402

from fanout._body_patch import ensure_body_member  # noqa: E402

pytestmark = pytest.mark.anyio


class _Raw:
    async def read(self) -> bytes:
        return b'{"InferenceId":"iid-1"}'


async def test_aioboto3_session_sends_body_as_the_raw_payload() -> None:
    session: Any = aioboto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    ensure_body_member(session)
    captured: dict[str, Any] = {}

    def before_send(request: Any, **_: Any) -> AioAWSResponse:
        captured["headers"] = dict(request.headers)
        captured["body"] = request.body
        return AioAWSResponse(request.url, 202, {"x-amzn-RequestId": "r"}, _Raw())

    body = bytes(range(256)) * 4
    async with session.client("sagemaker-runtime") as client:
        client.meta.events.register("before-send.sagemaker-runtime.InvokeEndpointAsync", before_send)
        response = await client.invoke_endpoint_async(
            EndpointName="ep1", Body=body, ContentType="application/json", InferenceId="iid-1"
        )
    assert captured["body"] == body
    assert "Content-Type" not in captured["headers"]
    content_type = captured["headers"]["X-Amzn-SageMaker-Content-Type"]
    assert content_type in ("application/json", b"application/json")
    assert response["InferenceId"] == "iid-1"
