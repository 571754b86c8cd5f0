"""The InvokeEndpointAsync wire request that botocore with a native ``Body`` sends, kept as a golden file.

``tests/data/invoke_endpoint_async_wire.json`` was captured from aiobotocore 3.10 / botocore 1.43.117,
whose model has ``Body``. The tests compare against it both a current client and, on aioboto3 15.5.0
(botocore 1.40.61, no ``Body`` in its model), a client fixed by ``fanout._body_patch``: the same
method, URL, payload bytes, signed header names and stable header values means the same wire request.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).parent / "data" / "invoke_endpoint_async_wire.json"

PARAMS: dict[str, Any] = {
    "EndpointName": "ep1",
    "Body": b'{"x": "\xc3\xa9"}' + bytes(range(256)),
    "ContentType": "application/json",
    "Accept": "application/json",
    "InferenceId": "iid-1",
    "RequestTTLSeconds": 600,
    "InvocationTimeoutSeconds": 120,
}
# Values that change per request or per library version, never what the service reads.
_VOLATILE = {"x-amz-date", "authorization", "amz-sdk-invocation-id", "amz-sdk-request", "user-agent"}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def wire_summary(url: str, headers: dict[str, Any], body: Any) -> dict[str, Any]:
    """What identifies a request on the wire, without its per-request values."""
    payload = body if isinstance(body, bytes) else _text(body).encode()
    authorization = _text(headers.get("Authorization", ""))
    signed = (
        authorization.split("SignedHeaders=", 1)[1].split(",", 1)[0]
        if "SignedHeaders=" in authorization
        else ""
    )
    return {
        "url": url,
        "headers": {k: _text(v) for k, v in sorted(headers.items()) if k.lower() not in _VOLATILE},
        "signed_headers": signed.split(",", 1)[0],
        "body_sha256": hashlib.sha256(payload).hexdigest(),
        "body_length": len(payload),
    }


def golden() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(GOLDEN.read_text())
    return result
