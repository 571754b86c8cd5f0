"""Server-level behaviour of the emulator that no single service owns."""

from __future__ import annotations

import json

import aiohttp
import anyio
import pytest

from fanout.testing import open_emulator

pytestmark = pytest.mark.anyio

_SQS_SCOPE = "AWS4-HMAC-SHA256 Credential=testing/20261124/us-east-1/sqs/aws4_request, Signature=x"


async def _sqs(http: aiohttp.ClientSession, url: str, operation: str, body: dict[str, object]) -> object:
    async with http.post(
        url,
        data=json.dumps(body),
        headers={
            "Authorization": _SQS_SCOPE,
            "X-Amz-Target": f"AmazonSQS.{operation}",
            "Content-Type": "application/x-amz-json-1.0",
        },
    ) as response:
        assert response.status == 200, await response.text()
        return json.loads(await response.read())


async def test_a_long_poll_whose_client_hung_up_takes_no_message() -> None:
    async with open_emulator() as emu, aiohttp.ClientSession() as http:
        queue_url = emu.queue_url("fanout-notifications")
        await _sqs(http, emu.endpoint_url, "PurgeQueue", {"QueueUrl": queue_url})
        with anyio.move_on_after(0.3):
            await _sqs(
                http, emu.endpoint_url, "ReceiveMessage", {"QueueUrl": queue_url, "WaitTimeSeconds": 20}
            )
        await anyio.sleep(0.05)
        await _sqs(http, emu.endpoint_url, "SendMessage", {"QueueUrl": queue_url, "MessageBody": "hello"})
        received = await _sqs(
            http, emu.endpoint_url, "ReceiveMessage", {"QueueUrl": queue_url, "WaitTimeSeconds": 1}
        )
        assert isinstance(received, dict)
        assert [message["Body"] for message in received.get("Messages", [])] == ["hello"]
