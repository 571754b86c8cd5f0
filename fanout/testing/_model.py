"""What an emulated endpoint runs for each invocation: a model function and what it returns.

``default_model`` hashes its input, so a test can check end to end that each result belongs to its
own request; ``model_error_reason`` is SageMaker's wording for a model that answered an error, shared
by the default model and by model servers (``_container``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeAlias

__all__ = ["Model", "ModelResult", "default_model", "model_error_reason"]


@dataclass(frozen=True, slots=True)
class ModelResult:
    """What a model function returns: an output, or a failure with its reason.

    On failure, ``body`` (default: the reason in UTF-8) is written to the failure location and
    ``failure_reason`` becomes the notification's ``failureReason``.
    """

    body: bytes = b""
    content_type: str = "application/json"
    failure_reason: str | None = None

    @classmethod
    def ok(cls, body: bytes, content_type: str = "application/json") -> ModelResult:
        return cls(body=body, content_type=content_type)

    @classmethod
    def fail(cls, reason: str, body: bytes | None = None, content_type: str = "text/plain") -> ModelResult:
        return cls(
            body=reason.encode() if body is None else body, content_type=content_type, failure_reason=reason
        )

    @property
    def failed(self) -> bool:
        return self.failure_reason is not None


Model: TypeAlias = Callable[[bytes, str | None, str | None], Awaitable[ModelResult]]
"""``async def model(body, content_type, custom_attributes) -> ModelResult``."""


def model_error_reason(status: int, message: str) -> str:
    """The ``failureReason`` of an invocation whose model answered ``status``, in SageMaker's words."""
    kind = "client" if 400 <= status < 500 else "server"
    return (
        f"ClientError: Received {kind} error ({status}) from model with message {json.dumps(message)}. "
        "See the SageMaker Endpoint logs in your account for more information."
    )


async def default_model(body: bytes, content_type: str | None, custom_attributes: str | None) -> ModelResult:
    """``{"sha256": <hex of the input>, "bytes": <count>}``; a JSON object with ``"fail": true`` fails.

    The failure reason includes the object's ``"reason"`` when it has one, so a test can tell
    which request a failure belongs to.
    """
    if body[:1] == b"{":
        try:
            value = json.loads(body)
        except ValueError:
            value = None
        if isinstance(value, dict) and value.get("fail") is True:
            detail = value.get("reason", "the input asked to fail")
            return ModelResult.fail(model_error_reason(500, str(detail)))
    digest = hashlib.sha256(body).hexdigest()
    return ModelResult.ok(json.dumps({"sha256": digest, "bytes": len(body)}, separators=(",", ":")).encode())
