"""The SQS fast path sends what aiobotocore sends, and answers and fails as aiobotocore does.

Every comparison runs the same call through a real aiobotocore SQS client and through a ``FastSqs``
made from it, with the clock and the invocation id frozen the same way for both, against servers on
127.0.0.1 that record the raw request or play a scripted answer or transport failure.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fanout._exceptions import ConfigError, QueueNotFound, run_level_error
from fanout._fastsqs import FastSqs
from fanout._retry import is_transient
from tests.fastwire import (
    ACCESS_KEY,
    FAILURES,
    FROZEN,
    INVOCATION_ID,
    SECRET_KEY,
    Answer,
    Recorded,
    Server,
    assert_same_outcome,
    comparable,
    free_port,
    freeze,
    mapper,
    outcome,
    raw_server,
    serve,
)

pytestmark = pytest.mark.anyio

QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/fanout-demo"
FAST_CALLS = {
    "receive_message": "sqs.ReceiveMessage",
    "delete_message_batch": "sqs.DeleteMessageBatch",
    "change_message_visibility_batch": "sqs.ChangeMessageVisibilityBatch",
}
_JSON_TYPE = "application/x-amz-json-1.0"


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    freeze(monkeypatch)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with serve(Server(answer=RECEIVED)) as running:
        yield running


def _config(**overrides: Any) -> Any:
    from aiobotocore.config import AioConfig

    options: dict[str, Any] = {
        "retries": {"total_max_attempts": 1, "mode": "standard"},
        "max_pool_connections": 4,
    }
    options.update(overrides)
    return AioConfig(**options)


def _client_kwargs(
    endpoint_url: str | None, config: Any, credentials: bool, token: str | None, region: str
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"region_name": region, "config": config or _config()}
    if endpoint_url is not None:
        kwargs["endpoint_url"] = endpoint_url
    if credentials:
        kwargs.update(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
        if token is not None:
            kwargs["aws_session_token"] = token
    return kwargs


@asynccontextmanager
async def _pair(
    endpoint_url: str | None,
    *,
    config: Any = None,
    credentials: bool = True,
    token: str | None = None,
    counter: Counter[str] | None = None,
    region: str = "us-east-1",
    session: Any = None,
) -> AsyncIterator[tuple[Any, FastSqs]]:
    """An aiobotocore SQS client and a fast path made from it."""
    from aiobotocore.session import get_session

    kwargs = _client_kwargs(endpoint_url, config, credentials, token, region)
    async with (
        (session or get_session()).create_client("sqs", **kwargs) as client,
        FastSqs(client, counter=counter) as fast,
    ):
        yield client, fast


# ------------------------------------------------------------------------------------------------
# the request


def _entries(count: int, visibility: int | None = None) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for n in range(count):
        entry: dict[str, Any] = {"Id": str(n), "ReceiptHandle": f"AQEB{n:04d}+/=handle=="}
        if visibility is not None:
            entry["VisibilityTimeout"] = visibility
        entries.append(entry)
    return entries


CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "receive: the tracker's": (
        "receive_message",
        {"QueueUrl": QUEUE_URL, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 20, "VisibilityTimeout": 60},
    ),
    "receive: the queue only": ("receive_message", {"QueueUrl": QUEUE_URL}),
    "receive: every member, another order": (
        "receive_message",
        {
            "VisibilityTimeout": 0,
            "QueueUrl": QUEUE_URL,
            "AttributeNames": ["All"],
            "MessageSystemAttributeNames": ("SentTimestamp", "ApproximateReceiveCount"),
            "MessageAttributeNames": ["All", "trace.*"],
            "MaxNumberOfMessages": 1,
            "WaitTimeSeconds": 0,
            "ReceiveRequestAttemptId": "attempt-1",
        },
    ),
    "receive: text JSON escapes": (
        "receive_message",
        {"QueueUrl": 'https://sqs.example/1/é q"\\\t\u2028\U0001f600', "ReceiveRequestAttemptId": "\x00"},
    ),
    "receive: out-of-range numbers": (
        "receive_message",
        {"QueueUrl": "", "MaxNumberOfMessages": -1, "WaitTimeSeconds": 10**30, "VisibilityTimeout": 0},
    ),
    "delete: ten entries": ("delete_message_batch", {"QueueUrl": QUEUE_URL, "Entries": _entries(10)}),
    "delete: one entry": ("delete_message_batch", {"QueueUrl": QUEUE_URL, "Entries": _entries(1)}),
    "delete: no entries": ("delete_message_batch", {"QueueUrl": QUEUE_URL, "Entries": []}),
    "delete: a tuple of entries, keys reordered": (
        "delete_message_batch",
        {
            "Entries": tuple({"ReceiptHandle": e["ReceiptHandle"], "Id": e["Id"]} for e in _entries(3)),
            "QueueUrl": "q",
        },
    ),
    "change visibility: ten entries": (
        "change_message_visibility_batch",
        {"QueueUrl": QUEUE_URL, "Entries": _entries(10, 600)},
    ),
    "change visibility: back to zero": (
        "change_message_visibility_batch",
        {"QueueUrl": QUEUE_URL, "Entries": _entries(4, 0)},
    ),
    "change visibility: without a timeout": (
        "change_message_visibility_batch",
        {"QueueUrl": QUEUE_URL, "Entries": _entries(2)},
    ),
}


def _model_members(operation: str) -> frozenset[str]:
    import botocore.session

    model = botocore.session.get_session().get_service_model("sqs")
    return frozenset(model.operation_model(operation).input_shape.members)


def _supported(method: str, kwargs: dict[str, Any]) -> bool:
    operation = FAST_CALLS[method].partition(".")[2]
    return _model_members(operation).issuperset(kwargs)


async def _both(
    client: Any, fast: FastSqs, server: Server, method: str, kwargs: dict[str, Any]
) -> tuple[Recorded, Recorded]:
    await getattr(client, method)(**kwargs)
    await getattr(fast, method)(**kwargs)
    return server.requests[-2], server.requests[-1]


@pytest.mark.parametrize("name", list(CALLS))
async def test_the_request_is_byte_for_byte_aiobotocores(frozen: None, server: Server, name: str) -> None:
    method, kwargs = CALLS[name]
    if not _supported(method, kwargs):
        pytest.skip("this botocore's model lacks some of these members")
    counted: Counter[str] = Counter()
    async with _pair(server.url, counter=counted) as (client, fast):
        botocore_request, fast_request = await _both(client, fast, server, method, kwargs)
    assert fast_request == botocore_request
    assert counted == Counter({FAST_CALLS[method]: 1})  # it did take the fast path
    headers = dict(fast_request.headers)
    assert headers[b"Content-Type"] == _JSON_TYPE.encode()
    assert headers[b"X-Amz-Target"] == f"AmazonSQS.{FAST_CALLS[method].partition('.')[2]}".encode()
    assert b"Authorization" in headers and b"X-Amz-Date" in headers


async def test_session_tokens_lambda_trace_ids_and_a_path_prefix_are_sent_the_same(
    frozen: None, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "fn")
    monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1")
    method, kwargs = CALLS["delete: ten entries"]
    async with _pair(server.url + "/prefix/", token="session-token/+=") as (client, fast):
        botocore_request, fast_request = await _both(client, fast, server, method, kwargs)
        # The trace id changes per Lambda invocation: it is read per call.
        monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-5759e988-bd862e3fe1be46a994272794;Sampled=0")
        botocore_again, fast_again = await _both(client, fast, server, method, kwargs)
    assert fast_request == botocore_request
    assert fast_again == botocore_again
    headers = dict(fast_again.headers)
    assert headers[b"X-Amz-Security-Token"] == b"session-token/+="
    assert headers[b"X-Amzn-Trace-Id"].endswith(b"4;Sampled=0")
    assert fast_request.target == "/prefix/"


@pytest.mark.parametrize("how", ["config", "environment"])
async def test_proxies_are_used_the_same_way(
    frozen: None, server: Server, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # The recording server plays the proxy: a plain-http proxy gets the absolute URL.
    target = "http://sqs.example.invalid:8080"
    config = _config(proxies={"http": server.url}) if how == "config" else _config()
    if how == "environment":
        monkeypatch.setenv("HTTP_PROXY", server.url)
    method, kwargs = CALLS["receive: the tracker's"]
    async with _pair(target, config=config) as (client, fast):
        botocore_request, fast_request = await _both(client, fast, server, method, kwargs)
    assert fast_request == botocore_request
    assert fast_request.target == f"{target}/"


async def test_requests_after_a_date_change_and_a_key_rotation_are_signed_anew(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    import botocore.auth

    monkeypatch.setattr(uuid, "uuid4", lambda: INVOCATION_ID)
    async with _pair(server.url) as (client, fast):
        for day in (4, 5, 5):
            now = FROZEN.replace(day=day)
            monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *_, now=now, **__: now)
            for method, kwargs in CALLS.values():
                if _supported(method, kwargs):
                    botocore_request, fast_request = await _both(client, fast, server, method, kwargs)
                    assert fast_request == botocore_request
        client._request_signer._credentials.secret_key = "rotated-secret"
        method, kwargs = CALLS["receive: the tracker's"]
        botocore_request, fast_request = await _both(client, fast, server, method, kwargs)
    assert fast_request == botocore_request


async def test_the_real_endpoint_and_region_are_resolved_as_botocore_does(
    frozen: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No endpoint_url: the ruleset's https://sqs.<region>.amazonaws.com/ (nothing is sent there).
    sent: list[tuple[str, dict[str, str]]] = []

    async def send(self: FastSqs, session: Any, target: Any, headers: dict[str, str], body: bytes) -> Any:
        sent.append((target.url, dict(headers)))
        return 200, {"x-amzn-requestid": "r"}, b"{}"

    monkeypatch.setattr(FastSqs, "_send", send)
    async with _pair(None, region="eu-west-3") as (_, fast):
        await fast.receive_message(QueueUrl=QUEUE_URL)
    url, headers = sent[0]
    assert url == "https://sqs.eu-west-3.amazonaws.com/"
    assert "/eu-west-3/sqs/aws4_request" in headers["Authorization"]


_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
_INTS = st.integers(-(2**40), 2**40)
_ENTRY = st.fixed_dictionaries({"Id": _TEXT, "ReceiptHandle": _TEXT}, optional={"VisibilityTimeout": _INTS})
_ARGUMENTS: st.SearchStrategy[tuple[str, dict[str, Any]]] = st.one_of(
    st.tuples(
        st.just("receive_message"),
        st.fixed_dictionaries(
            {"QueueUrl": _TEXT},
            optional={
                "MaxNumberOfMessages": _INTS,
                "WaitTimeSeconds": _INTS,
                "VisibilityTimeout": _INTS,
                "AttributeNames": st.lists(st.sampled_from(["All", "QueueArn", "Policy"]), max_size=3),
                "MessageAttributeNames": st.lists(_TEXT, max_size=3),
                "ReceiveRequestAttemptId": _TEXT,
            },
        ),
    ),
    st.tuples(
        st.just("delete_message_batch"),
        st.fixed_dictionaries(
            {
                "QueueUrl": _TEXT,
                "Entries": st.lists(
                    _ENTRY.map(lambda e: {k: v for k, v in e.items() if k != "VisibilityTimeout"}),
                    max_size=10,
                ),
            }
        ),
    ),
    st.tuples(
        st.just("change_message_visibility_batch"),
        st.fixed_dictionaries({"QueueUrl": _TEXT, "Entries": st.lists(_ENTRY, max_size=10)}),
    ),
)
_RECEIVED = (
    200,
    {"content-type": _JSON_TYPE, "x-amzn-requestid": "req-1"},
    json.dumps(
        {
            "Messages": [
                {
                    "MessageId": "m",
                    "ReceiptHandle": "r",
                    "MD5OfBody": "d",
                    "Body": "b",
                    "Attributes": {"A": "1"},
                }
            ]
        }
    ).encode(),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=_ARGUMENTS, order=st.randoms(use_true_random=False))
def test_any_arguments_are_signed_and_serialized_as_botocore_does(
    frozen: None, monkeypatch: pytest.MonkeyPatch, call: tuple[str, dict[str, Any]], order: Any
) -> None:
    # Synchronous, with its own loop: Hypothesis draws must not run inside the async test runner.
    from aiobotocore.awsrequest import AioAWSResponse

    method, kwargs = call
    items = list(kwargs.items())
    order.shuffle(items)  # the body follows the argument order on both paths
    arguments = dict(items)
    sent: list[tuple[str, list[tuple[str, str]], bytes]] = []
    answer = (
        _RECEIVED if method == "receive_message" else (200, _RECEIVED[1], b'{"Successful":[],"Failed":[]}')
    )

    async def send(self: FastSqs, session: Any, target: Any, headers: dict[str, str], body: bytes) -> Any:
        sent.append((target.url, [(k, v) for k, v in headers.items() if k != "Accept-Encoding"], bytes(body)))
        return answer[0], dict(answer[1]), answer[2]

    class Raw:
        async def read(self) -> bytes:
            return answer[2]

    def before_send(request: Any, **_: Any) -> Any:
        headers = [(k, v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()]
        sent.append((request.url, headers, bytes(request.body or b"")))
        return AioAWSResponse(request.url, answer[0], dict(answer[1]), Raw())

    async def main() -> tuple[Any, Any]:
        counted: Counter[str] = Counter()
        async with _pair("http://127.0.0.1:9", counter=counted) as (client, fast):
            client.meta.events.register("before-send.sqs", before_send)
            expected = await getattr(client, method)(**arguments)
            actual = await getattr(fast, method)(**arguments)
        assert counted == Counter({FAST_CALLS[method]: 1})
        return expected, actual

    monkeypatch.setattr(FastSqs, "_send", send)
    expected, result = asyncio.run(main())
    assert sent[1] == sent[0]
    assert result == expected


# ------------------------------------------------------------------------------------------------
# answers and errors


def _answer(status: int, body: Any, *, query_error: str | None = None, **headers: str) -> Answer:
    all_headers = {"Content-Type": _JSON_TYPE, "x-amzn-RequestId": "req-9", **headers}
    if query_error is not None:
        all_headers["x-amzn-query-error"] = query_error
    return status, all_headers, body if isinstance(body, bytes) else json.dumps(body).encode()


def _error(status: int, code: str, message: str | None, query_error: str | None = None) -> Answer:
    body: dict[str, Any] = {"__type": code}
    if message is not None:
        body["message"] = message
    return _answer(status, body, query_error=query_error)


_B64 = base64.b64encode(b"\x00\xffbinary").decode()
MESSAGE = {
    "MessageId": "5fea7756-0ea4-451a-a703-a558b933e274",
    "ReceiptHandle": "MbZj6wDWli+JvwwJaBV+3dcjk2YW2vA3+STFFljTM8tJJg6HRG6PYSasuWXPJB+Cw=",
    "MD5OfBody": "fafb00f5732ab283681e124bf8747ed1",
    "Body": json.dumps({"Type": "Notification", "Message": json.dumps({"inferenceId": "i-1"})}),
}
RECEIVED = _answer(200, {"Messages": [dict(MESSAGE, MessageId=f"m-{n}") for n in range(10)]})
WITH_ATTRIBUTES = {
    **MESSAGE,
    "Attributes": {"SentTimestamp": "1767225600000", "ApproximateReceiveCount": "2", "Unknown": "x"},
    "MD5OfMessageAttributes": "d25a6aea97eb8f585bfa92d314504a92",
    "MessageAttributes": {
        "text": {"DataType": "String", "StringValue": "v"},
        "blob": {"DataType": "Binary", "BinaryValue": _B64},
        "lists": {"DataType": "String.x", "StringListValues": ["a", "b"], "BinaryListValues": [_B64]},
    },
}
BATCH = {
    "Successful": [{"Id": "0"}, {"Id": "2"}],
    "Failed": [
        {
            "Id": "1",
            "SenderFault": True,
            "Code": "ReceiptHandleIsInvalid",
            "Message": "The input receipt handle is invalid.",
        }
    ],
}

ANSWERS: dict[str, tuple[str, Answer]] = {
    "receive: ten messages": ("receive_message", RECEIVED),
    "receive: none": ("receive_message", _answer(200, {})),
    "receive: attributes and message attributes": (
        "receive_message",
        _answer(200, {"Messages": [WITH_ATTRIBUTES]}),
    ),
    "receive: unknown and null members": (
        "receive_message",
        _answer(
            200, {"Messages": [{**MESSAGE, "Body": None, "Extra": 1}], "NextToken": "x", "Messages2": []}
        ),
    ),
    "receive: members of other JSON types": (
        "receive_message",
        _answer(200, {"Messages": [{**MESSAGE, "Body": 5, "MD5OfBody": ["x"], "Attributes": {"A": 1}}]}),
    ),
    "receive: a null message": ("receive_message", _answer(200, {"Messages": [None, MESSAGE]})),
    "receive: a null message attribute": (
        "receive_message",
        _answer(200, {"Messages": [{**MESSAGE, "MessageAttributes": {"a": None}}]}),
    ),
    "receive: messages not a list": ("receive_message", _answer(200, {"Messages": {"a": {}}})),
    "receive: a message not an object": ("receive_message", _answer(200, {"Messages": ["text"]})),
    "receive: invalid base64": (
        "receive_message",
        _answer(
            200,
            {
                "Messages": [
                    {**MESSAGE, "MessageAttributes": {"b": {"DataType": "Binary", "BinaryValue": "!"}}}
                ]
            },
        ),
    ),
    "receive: an empty body": ("receive_message", _answer(200, b"")),
    "receive: a text body": ("receive_message", _answer(200, b"not JSON")),
    "receive: a JSON list": ("receive_message", _answer(200, b"[]")),
    "receive: JSON null": ("receive_message", _answer(200, b"null")),
    "receive: not UTF-8": ("receive_message", _answer(200, b'{"Messages": "\xff"}')),
    "receive: no request id": ("receive_message", (200, {"Content-Type": _JSON_TYPE}, b"{}")),
    "delete: some failed": ("delete_message_batch", _answer(200, BATCH)),
    "delete: all deleted": (
        "delete_message_batch",
        _answer(200, {"Successful": [{"Id": "0"}], "Failed": []}),
    ),
    "change visibility: some failed": ("change_message_visibility_batch", _answer(200, BATCH)),
    "change visibility: SenderFault as text": (
        "change_message_visibility_batch",
        _answer(200, {"Successful": [], "Failed": [{"Id": "1", "SenderFault": "true", "Code": "X"}]}),
    ),
    "300": ("receive_message", (300, {}, b"")),
    "400 QueueDoesNotExist": (
        "receive_message",
        _error(
            400,
            "com.amazonaws.sqs#QueueDoesNotExist",
            "The specified queue does not exist.",
            "AWS.SimpleQueueService.NonExistentQueue;Sender",
        ),
    ),
    "400 QueueDoesNotExist on delete": (
        "delete_message_batch",
        _error(
            400,
            "com.amazonaws.sqs#QueueDoesNotExist",
            "The specified queue does not exist.",
            "AWS.SimpleQueueService.NonExistentQueue;Sender",
        ),
    ),
    "400 QueueDoesNotExist on change visibility": (
        "change_message_visibility_batch",
        _error(
            400,
            "com.amazonaws.sqs#QueueDoesNotExist",
            "The specified queue does not exist.",
            "AWS.SimpleQueueService.NonExistentQueue;Sender",
        ),
    ),
    "400 QueueDoesNotExist without the query header": (
        "receive_message",
        _error(400, "com.amazonaws.sqs#QueueDoesNotExist", "The specified queue does not exist."),
    ),
    "400 the legacy code in __type": (
        "receive_message",
        _error(400, "AWS.SimpleQueueService.NonExistentQueue", "The specified queue does not exist."),
    ),
    "400 a query header without a fault": (
        "receive_message",
        _error(400, "com.amazonaws.sqs#QueueDoesNotExist", "gone", "AWS.SimpleQueueService.NonExistentQueue"),
    ),
    "400 ThrottlingException": (
        "receive_message",
        _error(400, "com.amazonaws.sqs#ThrottlingException", "Rate exceeded", "ThrottlingException;Sender"),
    ),
    "400 RequestThrottled": (
        "delete_message_batch",
        _error(400, "com.amazonaws.sqs#RequestThrottled", "Request is throttled.", "RequestThrottled;Sender"),
    ),
    "403 OverLimit": (
        "receive_message",
        _error(403, "com.amazonaws.sqs#OverLimit", "Too many", "OverLimit;Sender"),
    ),
    "400 TooManyEntriesInBatchRequest": (
        "delete_message_batch",
        _error(
            400,
            "com.amazonaws.sqs#TooManyEntriesInBatchRequest",
            "11 entries",
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest;Sender",
        ),
    ),
    "400 ReceiptHandleIsInvalid": (
        "change_message_visibility_batch",
        _error(
            400, "com.amazonaws.sqs#ReceiptHandleIsInvalid", "bad handle", "ReceiptHandleIsInvalid;Sender"
        ),
    ),
    "400 an unknown code": ("receive_message", _error(400, "com.amazonaws.sqs#Novel", None, "Novel;Sender")),
    "400 Message key": ("receive_message", _answer(400, {"__type": "InvalidAddress", "Message": "bad url"})),
    "400 no __type": ("receive_message", _answer(400, {"message": "?"})),
    "400 text body": ("receive_message", _answer(400, b"<UnknownOperationException/>")),
    "403 AccessDenied": (
        "receive_message",
        _error(403, "com.amazon.coral.service#AccessDeniedException", "not allowed", "AccessDenied;Sender"),
    ),
    "403 InvalidClientTokenId": (
        "receive_message",
        _error(
            403,
            "com.amazon.coral.service#UnrecognizedClientException",
            "bad token",
            "InvalidClientTokenId;Sender",
        ),
    ),
    "429": ("receive_message", _answer(429, {"message": "Too Many Requests"})),
    "500 InternalError": (
        "receive_message",
        _error(500, "com.amazonaws.sqs#InternalError", "internal", "InternalError;Receiver"),
    ),
    "500 text body": ("delete_message_batch", (500, {"Content-Type": "text/plain"}, b"oops, not JSON")),
    "502 HTML body": (
        "receive_message",
        (502, {"Content-Type": "text/html"}, b"<html><body>Bad Gateway</body></html>"),
    ),
    "503 ServiceUnavailable": (
        "change_message_visibility_batch",
        _error(503, "com.amazonaws.sqs#ServiceUnavailable", "unavailable", "ServiceUnavailable;Receiver"),
    ),
    "503 empty body": ("receive_message", (503, {}, b"")),
}


def _call_for(method: str) -> dict[str, Any]:
    return next(kwargs for name, kwargs in CALLS.values() if name == method)


def _assert_same(expected: Any, actual: Any) -> None:
    assert_same_outcome(expected, actual, mapper(queue_url=QUEUE_URL))
    if isinstance(expected, Exception):
        assert is_transient(actual) == is_transient(expected)
        expected_level = run_level_error(expected, queue_url=QUEUE_URL)
        actual_level = run_level_error(actual, queue_url=QUEUE_URL)
        assert type(actual_level) is type(expected_level)
        assert str(actual_level) == str(expected_level)


@pytest.mark.parametrize("name", list(ANSWERS))
async def test_answers_map_to_the_same_results_and_exceptions(
    frozen: None, server: Server, name: str
) -> None:
    method, server.answer = ANSWERS[name]
    kwargs = _call_for(method)
    async with _pair(server.url) as (client, fast):
        expected = await outcome(getattr(client, method), kwargs)
        actual = await outcome(getattr(fast, method), kwargs)
    _assert_same(expected, actual)
    assert server.requests[0] == server.requests[1]
    if "QueueDoesNotExist" in name or "query header" in name:
        assert isinstance(actual, client.exceptions.QueueDoesNotExist)
    if "QueueDoesNotExist" in name or "legacy code" in name or "query header" in name:
        # The legacy code alone makes a plain ClientError on both paths; fanout reads it the same.
        assert isinstance(run_level_error(actual, queue_url=QUEUE_URL), QueueNotFound)


async def test_a_received_message_is_aiobotocores_dict(frozen: None, server: Server) -> None:
    server.answer = _answer(200, {"Messages": [WITH_ATTRIBUTES]})
    async with _pair(server.url) as (_, fast):
        result = await fast.receive_message(**CALLS["receive: the tracker's"][1])
    metadata = result.pop("ResponseMetadata")
    (message,) = result.pop("Messages")
    assert result == {}
    assert list(message) == [  # the model's member order, as botocore builds it
        "MessageId",
        "ReceiptHandle",
        "MD5OfBody",
        "Body",
        "Attributes",
        "MD5OfMessageAttributes",
        "MessageAttributes",
    ]
    assert message["Attributes"]["Unknown"] == "x"  # a map keeps every key
    assert message["MessageAttributes"]["blob"] == {"BinaryValue": b"\x00\xffbinary", "DataType": "Binary"}
    assert message["MessageAttributes"]["lists"]["BinaryListValues"] == [b"\x00\xffbinary"]
    assert metadata["RequestId"] == "req-9"
    assert metadata["HTTPStatusCode"] == 200
    assert metadata["HTTPHeaders"]["content-type"] == _JSON_TYPE
    assert (metadata["MaxAttemptsReached"], metadata["RetryAttempts"]) == (True, 0)


async def test_after_call_handlers_see_errors_as_on_aiobotocore(frozen: None, server: Server) -> None:
    # botocore picks SQS's exception class in an after-call handler; a handler of one's own sees it too.
    seen: list[tuple[str, int]] = []
    server.answer = ANSWERS["400 QueueDoesNotExist"][1]
    async with _pair(server.url) as (client, fast):

        def after_call(http_response: Any, parsed: Any, **_: Any) -> None:
            seen.append((parsed["Error"]["Code"], http_response.status_code))

        client.meta.events.register("after-call.sqs.ReceiveMessage", after_call)
        for call in (client.receive_message, fast.receive_message):
            await outcome(call, {"QueueUrl": QUEUE_URL})
    assert seen == [("AWS.SimpleQueueService.NonExistentQueue", 400)] * 2


@pytest.mark.parametrize("method", list(FAST_CALLS))
@pytest.mark.parametrize("name", list(FAILURES))
async def test_transport_failures_map_to_the_same_botocore_errors(
    frozen: None, name: str, method: str
) -> None:
    kwargs = _call_for(method)
    async with (
        raw_server(FAILURES[name]) as url,
        _pair(url, config=_config(read_timeout=0.3, connect_timeout=2)) as (client, fast),
    ):
        expected = await outcome(getattr(client, method), kwargs)
        actual = await outcome(getattr(fast, method), kwargs)
    assert isinstance(expected, Exception)
    _assert_same(expected, actual)
    assert is_transient(actual)


async def test_a_refused_connection_maps_to_the_same_error(frozen: None) -> None:
    from botocore.exceptions import EndpointConnectionError

    from fanout._exceptions import ServiceUnreachable

    url = f"http://127.0.0.1:{free_port()}"
    async with _pair(url) as (client, fast):
        expected = await outcome(client.receive_message, {"QueueUrl": QUEUE_URL})
        actual = await outcome(fast.receive_message, {"QueueUrl": QUEUE_URL})
    assert isinstance(expected, EndpointConnectionError)
    _assert_same(expected, actual)
    assert isinstance(run_level_error(actual, queue_url=QUEUE_URL), ServiceUnreachable)


async def test_missing_credentials_fail_the_same_way(frozen: None, server: Server) -> None:
    from botocore.exceptions import NoCredentialsError

    async with _pair(server.url, credentials=False) as (client, fast):
        expected = await outcome(client.receive_message, {"QueueUrl": QUEUE_URL})
        actual = await outcome(fast.receive_message, {"QueueUrl": QUEUE_URL})
    assert isinstance(expected, NoCredentialsError)
    _assert_same(expected, actual)
    assert server.requests == []


# ------------------------------------------------------------------------------------------------
# arguments left to aiobotocore, other calls, counting, and what is refused


DELEGATED: dict[str, tuple[str, dict[str, Any]]] = {
    "no queue": ("receive_message", {"MaxNumberOfMessages": 10}),
    "an unknown argument": ("receive_message", {"QueueUrl": QUEUE_URL, "Bogus": 1}),
    "a None value": ("receive_message", {"QueueUrl": QUEUE_URL, "WaitTimeSeconds": None}),
    "a string number": ("receive_message", {"QueueUrl": QUEUE_URL, "MaxNumberOfMessages": "10"}),
    "a boolean number": ("receive_message", {"QueueUrl": QUEUE_URL, "VisibilityTimeout": True}),
    "a queue URL of bytes": ("receive_message", {"QueueUrl": QUEUE_URL.encode()}),
    "a generator of names": ("receive_message", {"QueueUrl": QUEUE_URL, "AttributeNames": iter(["All"])}),
    "no entries": ("delete_message_batch", {"QueueUrl": QUEUE_URL}),
    "an entry without its handle": (
        "delete_message_batch",
        {"QueueUrl": QUEUE_URL, "Entries": [{"Id": "0"}]},
    ),
    "an entry with an unknown key": (
        "delete_message_batch",
        {"QueueUrl": QUEUE_URL, "Entries": [{"Id": "0", "ReceiptHandle": "r", "VisibilityTimeout": 1}]},
    ),
    "an entry that is not a dict": ("delete_message_batch", {"QueueUrl": QUEUE_URL, "Entries": ["r"]}),
    "a None entry": ("delete_message_batch", {"QueueUrl": QUEUE_URL, "Entries": [None]}),
    "a float timeout": (
        "change_message_visibility_batch",
        {"QueueUrl": QUEUE_URL, "Entries": [{"Id": "0", "ReceiptHandle": "r", "VisibilityTimeout": 1.5}]},
    ),
    "a boolean timeout": (
        "change_message_visibility_batch",
        {"QueueUrl": QUEUE_URL, "Entries": [{"Id": "0", "ReceiptHandle": "r", "VisibilityTimeout": False}]},
    ),
}


@pytest.mark.parametrize("name", list(DELEGATED))
async def test_unusual_arguments_behave_exactly_as_botocore(frozen: None, server: Server, name: str) -> None:
    method, kwargs = DELEGATED[name]
    fast_counted: Counter[str] = Counter()
    events: Counter[str] = Counter()
    async with _pair(server.url, counter=fast_counted) as (client, fast):
        expected = await outcome(getattr(client, method), kwargs)
        client.meta.events.register("before-call", lambda event_name, **_: events.update([event_name]))
        actual = await outcome(getattr(fast, method), kwargs)
    _assert_same(expected, actual)
    assert fast_counted == Counter()  # left to aiobotocore
    if not isinstance(expected, Exception):
        # botocore accepted it (bool is an int to its validator): the same request, through the client.
        assert server.requests[0] == server.requests[1]
        assert events == Counter({f"before-call.{FAST_CALLS[method]}": 1})


async def test_other_calls_and_attributes_are_the_clients(frozen: None, server: Server) -> None:
    events: Counter[str] = Counter()
    fast_counted: Counter[str] = Counter()
    server.answer = _answer(200, {"Attributes": {"VisibilityTimeout": "30"}})
    async with _pair(server.url, counter=fast_counted) as (client, fast):
        client.meta.events.register("before-call", lambda event_name, **_: events.update([event_name]))
        result = await fast.get_queue_attributes(QueueUrl=QUEUE_URL, AttributeNames=["VisibilityTimeout"])
        assert fast.meta is client.meta
        assert fast.exceptions is client.exceptions
        assert fast.client is client
        with pytest.raises(AttributeError):
            fast._no_such_attribute  # noqa: B018
    assert result["Attributes"] == {"VisibilityTimeout": "30"}
    assert events == Counter({"before-call.sqs.GetQueueAttributes": 1})
    assert fast_counted == Counter()


async def test_calls_are_counted_as_the_clients_before_call_events_count_them(server: Server) -> None:
    from_events: Counter[str] = Counter()
    from_fast: Counter[str] = Counter()
    server.answer = ANSWERS["400 ThrottlingException"][1]
    async with _pair(server.url, counter=from_fast) as (client, fast):
        client.meta.events.register(
            "before-call", lambda event_name, **_: from_events.update([event_name.partition(".")[2]])
        )
        for method in FAST_CALLS:
            for _ in range(2):
                await outcome(getattr(client, method), _call_for(method))
                await outcome(getattr(fast, method), _call_for(method))
    assert from_fast == from_events == Counter(dict.fromkeys(FAST_CALLS.values(), 2))


@pytest.mark.parametrize(
    "retries",
    [
        {"mode": "legacy", "total_max_attempts": 1},
        {"mode": "standard"},
        None,  # botocore's default: legacy, 5 attempts
    ],
)
async def test_clients_that_retry_are_refused(retries: dict[str, Any] | None) -> None:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    config = AioConfig() if retries is None else _config(retries=retries)
    async with get_session().create_client(
        "sqs",
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=config,
    ) as client:
        with pytest.raises(ConfigError, match="must not retry"):
            FastSqs(client)


async def test_a_model_that_is_not_json_is_passed_through(
    frozen: None, server: Server, tmp_path: Path
) -> None:
    # A model override that speaks the query protocol (as SQS did before botocore 1.31): no fast path.
    import botocore.session
    from aiobotocore.session import get_session

    model = botocore.session.get_session().get_component("data_loader").load_service_model("sqs", "service-2")
    model["metadata"]["protocol"] = "query"
    model["metadata"]["protocols"] = ["query"]
    model["metadata"].pop("awsQueryCompatible", None)
    folder = tmp_path / "sqs" / model["metadata"]["apiVersion"]
    folder.mkdir(parents=True)
    (folder / "service-2.json").write_text(json.dumps(model))
    session = get_session()
    session.get_component("data_loader").search_paths.insert(0, str(tmp_path))
    server.answer = (
        200,
        {"Content-Type": "text/xml"},
        b"<ReceiveMessageResponse><ReceiveMessageResult/><ResponseMetadata><RequestId>r</RequestId>"
        b"</ResponseMetadata></ReceiveMessageResponse>",
    )
    counted: Counter[str] = Counter()
    async with _pair(server.url, session=session, counter=counted) as (client, fast):
        assert client.meta.service_model.resolved_protocol == "query"
        assert not fast.fast
        expected = await client.receive_message(QueueUrl=QUEUE_URL)
        actual = await fast.receive_message(QueueUrl=QUEUE_URL)
    assert comparable(actual) == comparable(expected)
    assert server.requests[0] == server.requests[1]
    assert dict(server.requests[1].headers)[b"Content-Type"].startswith(b"application/x-www-form-urlencoded")
    assert counted == Counter()


async def test_a_json_model_takes_the_fast_path(server: Server) -> None:
    async with _pair(server.url) as (_, fast):
        assert fast.fast


async def test_a_closed_fast_path_refuses_calls(server: Server) -> None:
    async with _pair(server.url) as (_, fast):
        await fast.receive_message(QueueUrl=QUEUE_URL)
    await fast.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await fast.receive_message(QueueUrl=QUEUE_URL)
