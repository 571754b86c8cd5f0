"""Parsing SQS bodies: SNS envelope and raw delivery, every status, responseBody, and garbage."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, strategies as st

from fanout._tracking import Ignored, Malformed, Parsed, parse_message

COMPLETED: dict[str, Any] = {
    "awsRegion": "us-east-1",
    "eventTime": "2022-01-25T22:46:00.608Z",
    "receivedTime": "2022-01-25T22:46:00.000Z",
    "invocationStatus": "Completed",
    "requestParameters": {"contentType": "application/json", "endpointName": "fanout-demo"},
    "responseParameters": {
        "contentType": "application/json",
        "outputLocation": "s3://fanout-output/results/8f1e.out",
    },
    "inferenceId": "iid-1",
    "eventVersion": "1.0",
    "eventSource": "aws:sagemaker",
    "eventName": "InferenceResult",
}
FAILED: dict[str, Any] = {
    **COMPLETED,
    "invocationStatus": "Failed",
    "failureReason": "ClientError: Received server error (500) from model.",
    "responseParameters": {"failureLocation": "s3://fanout-output/failures/8f1e-error.out"},
}
EXPIRED: dict[str, Any] = {**COMPLETED, "invocationStatus": "Expired", "responseParameters": {}}


def envelope(message: str) -> str:
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": "5d1e",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:success",
            "Message": message,
            "Timestamp": "2022-01-25T22:46:00.700Z",
            "SignatureVersion": "1",
            "Signature": "x",
            "SigningCertURL": "https://example.invalid/cert.pem",
            "UnsubscribeURL": "https://example.invalid/unsub",
        }
    )


def both_formats(value: dict[str, Any]) -> list[str]:
    raw = json.dumps(value, separators=(",", ":"))
    return [raw, envelope(raw)]


@pytest.mark.parametrize("body", both_formats(COMPLETED))
def test_completed_in_both_formats(body: str) -> None:
    result = parse_message(body)
    assert isinstance(result, Parsed)
    n = result.notification
    assert n.inference_id == "iid-1"
    assert n.status == "Completed"
    assert n.output_location == "s3://fanout-output/results/8f1e.out"
    assert n.response_content_type == "application/json"
    assert n.response_body is None
    assert n.event_time == pytest.approx(1643150760.608)
    assert n.received_time == pytest.approx(1643150760.0)


@pytest.mark.parametrize("body", both_formats(FAILED))
def test_failed_carries_reason_and_location(body: str) -> None:
    result = parse_message(body)
    assert isinstance(result, Parsed)
    n = result.notification
    assert n.status == "Failed"
    assert n.failure_reason == "ClientError: Received server error (500) from model."
    assert n.failure_location == "s3://fanout-output/failures/8f1e-error.out"


@pytest.mark.parametrize("body", both_formats(EXPIRED))
def test_expired(body: str) -> None:
    result = parse_message(body)
    assert isinstance(result, Parsed)
    assert result.notification.status == "Expired"


def test_bytes_body() -> None:
    assert isinstance(parse_message(json.dumps(COMPLETED).encode()), Parsed)
    assert isinstance(parse_message(b"\xff\xfe"), Malformed)


def test_response_body_is_decoded() -> None:
    payload = b'{"sha256": "abc", "bytes": 3}'
    value = {
        **COMPLETED,
        "responseBody": {
            "content": base64.b64encode(payload).decode(),
            "message": "Check S3 path location(if configured) or Cloudwatch for additional details.",
            "encoding": "BASE64",
        },
    }
    for body in both_formats(value):
        result = parse_message(body)
        assert isinstance(result, Parsed)
        assert result.notification.response_body == payload


def test_bad_base64_drops_the_body_but_keeps_the_result() -> None:
    value = {**COMPLETED, "responseBody": {"content": "not base64!!", "encoding": "BASE64"}}
    result = parse_message(json.dumps(value))
    assert isinstance(result, Parsed)
    assert result.notification.response_body is None


def test_plain_text_response_body() -> None:
    value = {**COMPLETED, "responseBody": {"content": "héllo", "encoding": "UTF8"}}
    result = parse_message(json.dumps(value))
    assert isinstance(result, Parsed)
    assert result.notification.response_body == "héllo".encode()


@pytest.mark.parametrize(
    "value",
    [
        {"eventVersion": "1.0", "eventSource": "aws:sagemaker", "eventName": "TestNotification"},
        {"inferenceId": "iid-1", "eventName": "InferenceResult"},
        {"hello": "world"},
    ],
)
def test_not_a_result_is_ignored(value: dict[str, Any]) -> None:
    for body in both_formats(value):
        assert isinstance(parse_message(body), Ignored)


def test_subscription_confirmation_is_ignored() -> None:
    body = json.dumps({"Type": "SubscriptionConfirmation", "Message": "You have chosen to subscribe"})
    assert isinstance(parse_message(body), Ignored)


@pytest.mark.parametrize(
    "body",
    [
        "",
        "not json at all",
        "[1, 2, 3]",
        '"a string"',
        "42",
        "null",
        '{"Type": "Notification", "Message": "not json"}',
        '{"Type": "Notification", "Message": "[1]"}',
        '{"Type": "Notification", "Message": 7}',
        json.dumps({**COMPLETED, "inferenceId": None}),
        json.dumps({k: v for k, v in COMPLETED.items() if k != "inferenceId"}),
        json.dumps({**COMPLETED, "invocationStatus": "Exploded"}),
        "[" * 100_000,
    ],
)
def test_garbage_is_malformed(body: str) -> None:
    result = parse_message(body)
    assert isinstance(result, Malformed)
    assert "secret" not in result.reason


def test_malformed_reason_never_quotes_the_payload() -> None:
    secret = "s3cr3t-payload"
    for body in (secret, json.dumps([secret]), json.dumps({**COMPLETED, "invocationStatus": secret * 10})):
        result = parse_message(body)
        assert isinstance(result, Malformed)
        assert secret * 2 not in result.reason


def test_bad_timestamps_are_none() -> None:
    result = parse_message(json.dumps({**COMPLETED, "eventTime": "yesterday", "receivedTime": 5}))
    assert isinstance(result, Parsed)
    assert result.notification.event_time is None
    assert result.notification.received_time is None


@given(st.text(max_size=200) | st.binary(max_size=200))
def test_never_raises(body: str | bytes) -> None:
    assert isinstance(parse_message(body), Parsed | Ignored | Malformed)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=10,
    )
)
def test_never_raises_on_any_json(value: Any) -> None:
    for body in (json.dumps(value), envelope(json.dumps(value))):
        assert isinstance(parse_message(body), Parsed | Ignored | Malformed)
