"""With aioboto3 installed (15.5.0 pins a botocore without ``Body``), the patch makes it send Body.

Skipped unless aioboto3 is importable; ``.ci/run`` runs this file in a second environment with
aioboto3 15.5.0 (aiobotocore 2.25.1, botocore 1.40.61).
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


async def test_aioboto3_sends_the_same_wire_request_as_a_native_body_client() -> None:
    from tests.wire import PARAMS, golden, wire_summary

    session: Any = aioboto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    ensure_body_member(session)
    captured: dict[str, Any] = {}

    def before_send(request: Any, **_: Any) -> AioAWSResponse:
        captured.update(wire_summary(request.url, dict(request.headers), request.body))
        return AioAWSResponse(request.url, 202, {"x-amzn-RequestId": "r"}, _Raw())

    async with session.client("sagemaker-runtime") as client:
        client.meta.events.register("before-send.sagemaker-runtime.InvokeEndpointAsync", before_send)
        await client.invoke_endpoint_async(**PARAMS)
    assert captured == golden()


async def test_fanout_scores_through_an_aioboto3_session(monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib
    import json

    import fanout
    from fanout.testing import open_emulator

    async with open_emulator() as emu:
        for name, value in emu.env.items():
            monkeypatch.setenv(name, value)
        small = fanout.InferenceRequest(body=b'{"n": 1}', id="small")
        large = fanout.InferenceRequest(body=b"x" * 128_001, id="large")
        async with (
            fanout.open_client(
                endpoint_name=emu.env["FANOUT_ENDPOINT"],
                tracking=fanout.SqsTracking(queue_url=emu.env["FANOUT_QUEUE_URL"], wait_time_seconds=1),
                staging=fanout.Staging(location=emu.env["FANOUT_STAGING"]),
                session=aioboto3.Session(),
            ) as client,
            client.map([small, large]) as stream,
        ):
            outcomes = {outcome.id: outcome async for outcome in stream}
    for request in (small, large):
        outcome = outcomes[request.id]
        assert isinstance(outcome, fanout.Succeeded), outcome
        assert outcome.result is not None and request.body is not None
        assert json.loads(outcome.result)["sha256"] == hashlib.sha256(request.body).hexdigest()
    assert (outcomes["small"].route, outcomes["large"].route) == ("inline", "s3")
