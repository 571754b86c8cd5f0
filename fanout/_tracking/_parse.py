"""Turn an SQS message body into a SageMaker notification, or say why it is not one.

An SQS body is either the SNS envelope (``{"Type": "Notification", "Message": "<json string>"}``,
the default delivery) or, with raw message delivery, the SageMaker JSON itself. Parsing never
raises: the result is one of three small values, so the caller can count each kind, delete what
can never be used, and never log a payload.

- ``Parsed``: a notification with an ``inferenceId`` and a status of Completed, Failed or Expired;
- ``Ignored``: a message that is not an inference result (SageMaker's ``TestNotification``, a
  message without ``invocationStatus``, an SNS subscription confirmation);
- ``Malformed``: not JSON, not an object, an envelope whose ``Message`` is not JSON, a result with
  no ``inferenceId`` or an unknown status. The ``reason`` never quotes the payload.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias, cast

from .._models import InvocationStatus, Notification

__all__ = ["Ignored", "Malformed", "ParseResult", "Parsed", "parse_message", "parse_notification"]

_STATUSES: frozenset[str] = frozenset({"Completed", "Failed", "Expired"})


@dataclass(frozen=True, slots=True)
class Parsed:
    notification: Notification


@dataclass(frozen=True, slots=True)
class Ignored:
    reason: str


@dataclass(frozen=True, slots=True)
class Malformed:
    reason: str


ParseResult: TypeAlias = Parsed | Ignored | Malformed


def parse_message(body: str | bytes) -> ParseResult:
    """Parse one SQS message body, in either delivery format."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            return Malformed("the body is not UTF-8")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return Malformed("the body is not JSON")
    if not isinstance(value, dict):
        return Malformed(f"the body is a JSON {_kind(value)}, not an object")
    if "Type" in value and "Message" in value and "invocationStatus" not in value:
        return _unwrap_envelope(value)
    return parse_notification(value)


def _unwrap_envelope(envelope: dict[str, Any]) -> ParseResult:
    kind = envelope.get("Type")
    if kind != "Notification":
        # SubscriptionConfirmation and UnsubscribeConfirmation reach a queue subscribed by hand.
        return Ignored(f"an SNS {kind!s} message")
    message = envelope.get("Message")
    if not isinstance(message, str):
        return Malformed("the SNS envelope's Message is not a string")
    try:
        value = json.loads(message)
    except (ValueError, RecursionError):
        return Malformed("the SNS envelope's Message is not JSON")
    if not isinstance(value, dict):
        return Malformed(f"the SNS envelope's Message is a JSON {_kind(value)}, not an object")
    return parse_notification(value)


def parse_notification(value: dict[str, Any]) -> ParseResult:
    """Parse the SageMaker notification JSON (already decoded)."""
    if value.get("eventName") == "TestNotification":
        return Ignored("a TestNotification")
    status = value.get("invocationStatus")
    if status is None:
        return Ignored("no invocationStatus")
    if status not in _STATUSES:
        return Malformed("an unknown invocationStatus")
    inference_id = value.get("inferenceId")
    if not isinstance(inference_id, str) or not inference_id:
        return Malformed("no inferenceId")
    response = value.get("responseParameters")
    response = response if isinstance(response, dict) else {}
    body, content_type = _response_body(value.get("responseBody"))
    return Parsed(
        Notification(
            inference_id=inference_id,
            status=cast(InvocationStatus, status),
            output_location=_string(response.get("outputLocation")),
            failure_location=_string(response.get("failureLocation")),
            failure_reason=_string(value.get("failureReason")),
            response_body=body,
            response_content_type=_string(response.get("contentType")) or content_type,
            event_time=_timestamp(value.get("eventTime")),
            received_time=_timestamp(value.get("receivedTime")),
        )
    )


def _response_body(value: Any) -> tuple[bytes | None, str | None]:
    """Decode ``responseBody``; an undecodable body is dropped so the caller falls back to S3."""
    if not isinstance(value, dict):
        return None, None
    content = value.get("content")
    if not isinstance(content, str):
        return None, None
    encoding = value.get("encoding")
    content_type = _string(value.get("contentType"))
    if isinstance(encoding, str) and encoding.upper() != "BASE64":
        return content.encode("utf-8"), content_type
    try:
        return base64.b64decode(content, validate=True), content_type
    except (binascii.Error, ValueError):
        return None, None


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _timestamp(value: Any) -> float | None:
    """ISO 8601 (SageMaker writes ``2022-01-25T22:58:17.235Z``) to POSIX seconds."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"
