"""The S3 fast path sends what aiobotocore sends, and retries, answers and fails as aiobotocore does.

Every comparison runs the same GetObject through a real aiobotocore S3 client and through a
``FastS3`` made from it (or from a twin client, where the client's own state, its retry counters
or its region cache, must evolve apart), with the clock, the invocation id and the retry sleeps
frozen the same way for both, against servers on 127.0.0.1 that record the raw request or play
scripted answers or transport failures, or, for real endpoints, with the request caught before it
leaves.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import functools
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from yarl import URL

from fanout._exceptions import ConfigError, run_level_error
from fanout._fasts3 import FastS3, _StreamingSession, _Unread
from fanout._retry import is_transient
from tests.fastwire import (
    ACCESS_KEY,
    FAILURES,
    FROZEN,
    SECRET_KEY,
    Answer,
    Recorded,
    ScriptedServer,
    Server,
    assert_same_outcome,
    free_port,
    freeze,
    mapper,
    raw_server,
    serve,
)

pytestmark = pytest.mark.anyio

BUCKET = "fanout-output"
KEY = "results/5fea7756-0ea4-451a-a703-a558b933e274.out"
OBJECT = b'{"sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","bytes":4}'
NO_RETRIES = {"mode": "standard", "total_max_attempts": 1}


@functools.cache
def _session() -> Any:
    # One session for the module: its loaders cache the model, so a client costs 4 ms, not 60.
    from aiobotocore.session import get_session

    return get_session()


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sign at ``FROZEN``, name every call alike, and retry at once, on both paths."""
    import botocore.endpoint
    from aiobotocore.endpoint import AioEndpoint

    freeze(monkeypatch)
    monkeypatch.setattr(botocore.endpoint, "get_current_datetime", lambda *_, **__: FROZEN)

    async def no_sleep(self: Any, seconds: float) -> None:
        pass

    monkeypatch.setattr(AioEndpoint, "_sleep", no_sleep)


def _ok(body: bytes = OBJECT, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    return (
        status,
        {
            "x-amz-id-2": "host-id/+=",
            "x-amz-request-id": "5C2B9EXAMPLE",
            "Last-Modified": "Wed, 04 Mar 2026 05:06:07 GMT",
            "ETag": '"d41d8cd98f00b204e9800998ecf8427e"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/json",
            "x-amz-meta-inference-id": "5fea7756",
            **(headers or {}),
        },
        body,
    )


def _error(status: int, code: str | None, message: str = "", **extra: str) -> Answer:
    headers = {"x-amz-request-id": "ERR1", "x-amz-id-2": "err-host"}
    if code is None:
        return status, headers, b""
    fields = "".join(f"<{name}>{value}</{name}>" for name, value in extra.items())
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>{fields}"
        "<RequestId>ERR1</RequestId><HostId>err-host</HostId></Error>"
    )
    return status, {**headers, "Content-Type": "application/xml"}, body.encode()


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    scripted = ScriptedServer(answer=_ok())
    async with serve(scripted):
        yield scripted


def _config(**overrides: Any) -> Any:
    from aiobotocore.config import AioConfig

    # No retries option: botocore's default (legacy, 5 attempts), as open_client's S3 client has.
    options: dict[str, Any] = {"max_pool_connections": 4}
    options.update(overrides)
    return AioConfig(**options)


@asynccontextmanager
async def _client(
    endpoint_url: str | None,
    *,
    config: Any = None,
    credentials: bool = True,
    token: str | None = None,
    region: str = "us-east-1",
) -> AsyncIterator[Any]:
    kwargs: dict[str, Any] = {"region_name": region, "config": config or _config()}
    if endpoint_url is not None:
        kwargs["endpoint_url"] = endpoint_url
    if credentials:
        kwargs.update(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
        if token is not None:
            kwargs["aws_session_token"] = token
    async with _session().create_client("s3", **kwargs) as client:
        yield client


@asynccontextmanager
async def _pair(
    endpoint_url: str | None, *, counter: Counter[str] | None = None, **options: Any
) -> AsyncIterator[tuple[Any, FastS3]]:
    """An aiobotocore S3 client and a fast path made from it."""
    async with _client(endpoint_url, **options) as client, FastS3(client, counter=counter) as fast:
        yield client, fast


async def _fetch(call: Callable[..., Awaitable[dict[str, Any]]], kwargs: dict[str, Any]) -> Any:
    """The result with its body read (as fanout reads it), or the exception of the call or the read."""
    try:
        result = await call(**kwargs)
        async with result.pop("Body") as stream:
            result["Body"] = await stream.read()
    except Exception as exc:
        return exc
    return result


async def _both(
    client: Any, fast: FastS3, server: Server, kwargs: dict[str, Any]
) -> tuple[Any, Any, list[Recorded], list[Recorded]]:
    """Each path's outcome and the requests each sent (retries included)."""
    start = len(server.requests)
    expected = await _fetch(client.get_object, kwargs)
    middle = len(server.requests)
    actual = await _fetch(fast.get_object, kwargs)
    return expected, actual, server.requests[start:middle], server.requests[middle:]


def _assert_same(expected: Any, actual: Any) -> None:
    assert_same_outcome(expected, actual, mapper(bucket=BUCKET))
    if isinstance(expected, Exception):
        assert is_transient(actual) == is_transient(expected)
        expected_level = run_level_error(expected, bucket=BUCKET)
        actual_level = run_level_error(actual, bucket=BUCKET)
        assert type(actual_level) is type(expected_level)
        assert str(actual_level) == str(expected_level)


def _events(client: Any) -> Counter[str]:
    """The client's calls, counted as fanout's count_calls counts them."""
    counted: Counter[str] = Counter()
    client.meta.events.register("before-call", lambda event_name, **_: counted.update([event_name[12:]]))
    return counted


# ------------------------------------------------------------------------------------------------
# the request


REQUESTS: dict[str, dict[str, Any]] = {
    "the tracker's fetch": {"Bucket": BUCKET, "Key": KEY},
    "a failure object's first 64 KiB": {
        "Bucket": BUCKET,
        "Key": "failures/5fea7756-error.out",
        "Range": "bytes=0-65535",
    },
    "spaces, unicode, ~ and reserved characters": {
        "Bucket": BUCKET,
        "Key": "résultats/a b+c~d%e?f#g&h=i;j,k:l@m$n!o'p(q)r*s[t]u\U0001f600",
    },
    "dot segments and empty segments": {"Bucket": BUCKET, "Key": "a/../b/./c//d/.."},
    "a leading slash": {"Bucket": BUCKET, "Key": "/leading/slash"},
    "every header member, in another order": {
        "ExpectedBucketOwner": "123456789012",
        "Key": KEY,
        "Range": "bytes=10-",
        "IfNoneMatch": '"d41d8cd98f00b204e9800998ecf8427e"',
        "Bucket": BUCKET,
        "IfMatch": '"d41d8cd98f00b204e9800998ecf8427e"',
    },
    "a bucket with dots, capitals and an underscore": {"Bucket": "My.Bucket_1", "Key": KEY},
}


async def test_the_request_is_byte_for_byte_aiobotocores(frozen: None, server: ScriptedServer) -> None:
    counted: Counter[str] = Counter()
    fast_requests: dict[str, Recorded] = {}
    async with _pair(server.url, counter=counted) as (client, fast):
        for name, kwargs in REQUESTS.items():
            expected, actual, sent, fast_sent = await _both(client, fast, server, kwargs)
            assert fast_sent == sent, name
            _assert_same(expected, actual)
            assert actual["Body"] == OBJECT
            (fast_requests[name],) = fast_sent
    assert counted == Counter({"s3.GetObject": len(REQUESTS)})  # every one took the fast path
    headers = dict(fast_requests["a failure object's first 64 KiB"].headers)
    assert headers[b"x-amz-checksum-mode"] == b"ENABLED"
    assert (
        headers[b"X-Amz-Content-SHA256"]
        == b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert b"range;x-amz-checksum-mode" in headers[b"Authorization"]
    # A custom endpoint is addressed path-style, and the key is encoded as botocore encodes it.
    assert fast_requests["a bucket with dots, capitals and an underscore"].target.startswith("/My.Bucket_1/")
    assert fast_requests["dot segments and empty segments"].target == f"/{BUCKET}/a/../b/./c//d/.."


async def test_session_tokens_lambda_trace_ids_rotated_keys_and_new_days_are_sent_the_same(
    frozen: None, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import botocore.auth

    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "fn")
    monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1")
    kwargs = REQUESTS["a failure object's first 64 KiB"]
    async with _pair(server.url, token="session-token/+=") as (client, fast):
        for day in (4, 5, 5):
            now = FROZEN.replace(day=day)
            monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *_, now=now, **__: now)
            _, _, sent, fast_sent = await _both(client, fast, server, kwargs)
            assert fast_sent == sent
        client._request_signer._credentials.secret_key = "rotated-secret"
        monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-5759e988-bd862e3fe1be46a994272794;Sampled=0")
        _, _, sent, fast_sent = await _both(client, fast, server, kwargs)
    assert fast_sent == sent
    headers = dict(fast_sent[0].headers)
    assert headers[b"X-Amz-Security-Token"] == b"session-token/+="
    assert headers[b"X-Amzn-Trace-Id"].endswith(b"4;Sampled=0")


async def test_proxies_are_used_the_same_way(frozen: None, server: ScriptedServer) -> None:
    # The recording server plays the proxy: a plain-http proxy gets the absolute URL.
    target = "http://s3.example.invalid:8080"
    async with _pair(target, config=_config(proxies={"http": server.url})) as (client, fast):
        _, _, sent, fast_sent = await _both(client, fast, server, REQUESTS["the tracker's fetch"])
    assert fast_sent == sent
    assert fast_sent[0].target == f"{target}/{BUCKET}/{KEY}"


class _Caught:
    """What reaches the wire, caught before it leaves: aiobotocore's ``before-send`` on one side,
    the fast path's aiohttp request on the other. Both are answered with a 200."""

    ANSWER = _ok()

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[tuple[str, str]]]] = []

    def before_send(self, request: Any, **_: Any) -> Any:
        from aiobotocore.awsrequest import AioAWSResponse

        headers = [(k, v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()]
        self.sent.append((request.url, headers))
        if request.url.endswith("?session"):  # S3 Express: its CreateSession, before the call
            return AioAWSResponse(request.url, 200, {}, _Raw(request.url, _SESSION_XML))
        # aiobotocore's send lower-cases the names, as the fast path's does.
        answer = {k.lower(): v for k, v in self.ANSWER[1].items()}
        return AioAWSResponse(request.url, 200, answer, _Raw(request.url))

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Catch the fast path's requests (the client's are caught by ``before_send``)."""
        sent = self.sent

        async def request(streaming: _StreamingSession, method: str, url: URL, **kwargs: Any) -> _Unread:
            sent.append((str(url), [(k, v) for k, v in kwargs["headers"].items() if k != "Accept-Encoding"]))
            raw: Any = _Raw(str(url))
            streaming.response = raw
            return _Unread(raw)

        monkeypatch.setattr(_StreamingSession, "request", request)


_SESSION_XML = (
    b"<CreateSessionResult><Credentials><SessionToken>token</SessionToken><SecretAccessKey>secret"
    b"</SecretAccessKey><AccessKeyId>ASIA</AccessKeyId><Expiration>2030-01-01T00:00:00Z</Expiration>"
    b"</Credentials></CreateSessionResult>"
)


class _Raw:
    """A response that is never sent: its headers and body, for both paths' response objects."""

    def __init__(self, url: str, body: bytes = b"") -> None:
        self.url = URL(url, encoded=True)
        self.status = 200
        self.raw_headers = tuple((k.lower().encode(), v.encode()) for k, v in _Caught.ANSWER[1].items())
        self._body = body

    async def read(self) -> bytes:
        return self._body


_ENDPOINTS: dict[str, tuple[str | None, dict[str, Any]]] = {
    "a custom endpoint (path-style)": ("http://127.0.0.1:9", {}),
    "a custom https endpoint with a path": ("https://minio.example:9000/base/", {}),
    "the regional endpoint": (None, {}),
    "path-style addressing": (None, {"s3": {"addressing_style": "path"}}),
    "virtual addressing": (None, {"s3": {"addressing_style": "virtual"}}),
    "dual-stack": (None, {"s3": {"use_dualstack_endpoint": True}}),
    "FIPS": (None, {"use_fips_endpoint": True}),
    "payload signing off": (None, {"s3": {"payload_signing_enabled": False}}),
    "transfer acceleration": (None, {"s3": {"use_accelerate_endpoint": True}}),
}
_BUCKETS = st.one_of(
    st.from_regex(r"[a-z0-9][a-z0-9.-]{1,30}[a-z0-9]", fullmatch=True),
    st.sampled_from(
        ["fanout-output", "My_Bucket", "a.b.c", "192.168.1.10", "ap-abc123-s3alias", "xn--bcher"]
    ),
)
_FRAGMENTS = [
    "/",
    "//",
    "..",
    ".",
    " ",
    "~",
    "%",
    "%2F",
    "+",
    "?",
    "#",
    "&",
    "=",
    "é",
    "日本",
    "\U0001f600",
    "\x7f",
]
_KEYS = (
    st.lists(
        st.one_of(st.sampled_from(_FRAGMENTS), st.text(st.characters(exclude_categories=["Cs"]), max_size=8)),
        min_size=1,
        max_size=6,
    )
    .map("".join)
    .filter(bool)
)
_CALLS = st.lists(
    st.fixed_dictionaries(
        {"Bucket": _BUCKETS, "Key": _KEYS},
        optional={"Range": st.sampled_from(["bytes=0-65535", "bytes=10-", "bytes=-5"])},
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    endpoint=st.sampled_from(sorted(_ENDPOINTS)),
    region=st.sampled_from(["us-east-1", "eu-west-3", "us-west-2"]),
    calls=_CALLS,
)
def test_any_bucket_and_key_is_addressed_and_signed_as_botocore_does(
    frozen: None, monkeypatch: pytest.MonkeyPatch, endpoint: str, region: str, calls: list[dict[str, Any]]
) -> None:
    # Synchronous, with its own loop: Hypothesis draws must not run inside the async test runner.
    caught = _Caught()
    caught.install(monkeypatch)
    endpoint_url, options = _ENDPOINTS[endpoint]

    async def main() -> None:
        counted: Counter[str] = Counter()
        async with _pair(endpoint_url, region=region, config=_config(**options), counter=counted) as (
            client,
            fast,
        ):
            client.meta.events.register("before-send.s3", caught.before_send)
            for kwargs in calls:
                start = len(caught.sent)
                expected = await _fetch(client.get_object, kwargs)
                middle = len(caught.sent)
                actual = await _fetch(fast.get_object, kwargs)
                assert caught.sent[middle:] == caught.sent[start:middle], kwargs
                _assert_same(expected, actual)
        took_fast_path = [kwargs for kwargs in calls if fast._buckets.get(kwargs["Bucket"]) is not None]
        assert counted == Counter({"s3.GetObject": len(took_fast_path)} if took_fast_path else {})

    asyncio.run(main())


async def test_real_endpoints_are_resolved_per_bucket_as_botocore_resolves_them(
    frozen: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    caught = _Caught()
    caught.install(monkeypatch)
    counted: Counter[str] = Counter()
    async with _pair(None, region="eu-west-3", counter=counted) as (_, fast):
        for bucket in ("fanout-output", "fanout.dotted"):
            await fast.get_object(Bucket=bucket, Key="a b/c")
    (virtual, _), (path, _) = caught.sent
    assert virtual == "https://fanout-output.s3.eu-west-3.amazonaws.com/a%20b/c"
    assert path == "https://s3.eu-west-3.amazonaws.com/fanout.dotted/a%20b/c"
    assert "/eu-west-3/s3/aws4_request" in dict(caught.sent[0][1])["Authorization"]
    assert counted == Counter({"s3.GetObject": 2})


# ------------------------------------------------------------------------------------------------
# answers, retries and errors


def _crc32(body: bytes) -> str:
    return base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()


ANSWERS: dict[str, Answer] = {
    "200: a result": _ok(),
    "200: metadata, encryption, storage class, tags, a version, a lock date": _ok(
        headers={
            "x-amz-meta-Model": "v2",
            "x-amz-meta-empty": "",
            "x-amz-server-side-encryption": "aws:kms",
            "x-amz-server-side-encryption-aws-kms-key-id": "arn:aws:kms:us-east-1:1:key/k",
            "x-amz-server-side-encryption-bucket-key-enabled": "true",
            "x-amz-storage-class": "STANDARD_IA",
            "x-amz-tagging-count": "3",
            "x-amz-version-id": "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY",
            "x-amz-delete-marker": "false",
            "x-amz-mp-parts-count": "2",
            "x-amz-object-lock-retain-until-date": "2030-01-01T00:00:00.000Z",
            "Cache-Control": "no-cache",
            "Content-Encoding": "identity",
        }
    ),
    "200: no request id": (200, {"Content-Type": "application/json"}, OBJECT),
    "200: a valid CRC32": _ok(
        headers={"x-amz-checksum-crc32": _crc32(OBJECT), "x-amz-checksum-type": "FULL_OBJECT"}
    ),
    "200: a wrong CRC32 (the read fails)": _ok(headers={"x-amz-checksum-crc32": _crc32(b"other")}),
    "200: a multipart checksum (not checked)": _ok(headers={"x-amz-checksum-crc32": "AAAAAA==-3"}),
    "200: an empty object": _ok(b""),
    "200: an Expires header": _ok(headers={"Expires": "Thu, 01 Jan 2037 00:00:00 GMT"}),
    "200: an Expires header that is no date": _ok(headers={"Expires": "never"}),
    "206: a range": _ok(OBJECT[:10], 206, {"Content-Range": f"bytes 0-9/{len(OBJECT)}"}),
    "304: not modified": (304, {"x-amz-request-id": "R304", "ETag": '"e"'}, b""),
    "404 NoSuchKey": _error(404, "NoSuchKey", "The specified key does not exist.", Key=KEY),
    "404 NoSuchBucket": _error(404, "NoSuchBucket", "The specified bucket does not exist", BucketName=BUCKET),
    "403 AccessDenied": _error(403, "AccessDenied", "Access Denied"),
    "403 without a body": _error(403, None),
    "400 InvalidArgument": _error(400, "InvalidArgument", "Invalid Argument", ArgumentName="x-amz-x"),
    "416 InvalidRange": _error(416, "InvalidRange", "The requested range is not satisfiable"),
    "500 InternalError (retried)": _error(500, "InternalError", "We encountered an internal error."),
    "500 without a body (retried)": _error(500, None),
    "503 SlowDown (retried)": _error(503, "SlowDown", "Please reduce your request rate."),
    "502 HTML from a proxy (retried)": (502, {"Content-Type": "text/html"}, b"<html>Bad Gateway</html>"),
}


async def test_answers_map_to_the_same_results_retries_and_exceptions(
    frozen: None, server: ScriptedServer
) -> None:
    fast_counted: Counter[str] = Counter()
    async with _pair(server.url, counter=fast_counted) as (client, fast):
        counted = _events(client)
        for name, answer in ANSWERS.items():
            server.answer = answer
            expected, actual, sent, fast_sent = await _both(
                client, fast, server, {"Bucket": BUCKET, "Key": KEY}
            )
            assert fast_sent == sent, name
            assert len(sent) == (5 if "retried" in name else 1), name  # botocore's legacy mode: 5 attempts
            _assert_same(expected, actual)
            if isinstance(expected, Exception) and hasattr(expected, "response"):
                assert actual.response["ResponseMetadata"]["RetryAttempts"] == len(sent) - 1
    assert fast_counted == counted == Counter({"s3.GetObject": len(ANSWERS)})


async def test_a_result_is_aiobotocores_dict_field_by_field(frozen: None, server: ScriptedServer) -> None:
    from aiobotocore.response import AioStreamingBody

    server.answer = ANSWERS["200: metadata, encryption, storage class, tags, a version, a lock date"]
    async with _pair(server.url) as (client, fast):
        expected = await client.get_object(Bucket=BUCKET, Key=KEY)
        actual = await fast.get_object(Bucket=BUCKET, Key=KEY)
        for result in (expected, actual):
            async with result["Body"] as stream:
                assert await stream.read(5) + await stream.read() == OBJECT
    assert type(actual.pop("Body")) is type(expected.pop("Body")) is AioStreamingBody
    assert list(actual) == list(expected)  # botocore's order: the metadata, then the model's
    for name, value in expected.items():
        assert type(actual[name]) is type(value), name
        assert actual[name] == value, name
    assert actual["LastModified"] == datetime.datetime(2026, 3, 4, 5, 6, 7, tzinfo=datetime.UTC)
    assert actual["ContentLength"] == len(OBJECT)
    assert actual["ContentType"] == "application/json"
    assert actual["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'
    assert actual["Metadata"] == {"inference-id": "5fea7756", "model": "v2", "empty": ""}
    metadata = actual["ResponseMetadata"]
    assert (metadata["RequestId"], metadata["HostId"]) == ("5C2B9EXAMPLE", "host-id/+=")
    assert metadata["HTTPHeaders"]["x-amz-tagging-count"] == "3"
    assert metadata["RetryAttempts"] == 0


@pytest.mark.parametrize("retries", [None, {"mode": "standard", "max_attempts": 2}])
async def test_retries_follow_the_clients_policy(
    frozen: None, server: ScriptedServer, retries: dict[str, Any] | None
) -> None:
    # Twin clients, so each path's retry state (the standard mode's quota) evolves on its own.
    config = _config() if retries is None else _config(retries=retries)
    slow_down, internal = _error(503, "SlowDown", "Reduce your rate."), _error(500, "InternalError", "Oops")
    outcomes: list[list[Any]] = []
    counts: list[Counter[str]] = []
    requests: list[list[Recorded]] = []
    for fast_path in (False, True):
        counted: Counter[str] = Counter()
        async with _pair(server.url, config=config, counter=counted) as (client, fast):
            events = _events(client)
            call = fast.get_object if fast_path else client.get_object
            start = len(server.requests)
            server.script = [slow_down, internal, _ok()]
            first = await _fetch(call, {"Bucket": BUCKET, "Key": KEY})
            server.script = [slow_down] * 6
            second = await _fetch(call, {"Bucket": BUCKET, "Key": KEY})
            outcomes.append([first, second])
            counts.append(counted + events)
            requests.append(server.requests[start:])
    (first, second), (fast_first, fast_second) = outcomes
    _assert_same(first, fast_first)
    _assert_same(second, fast_second)
    assert requests[1] == requests[0]
    assert counts[0] == counts[1] == Counter({"s3.GetObject": 2})
    assert fast_first["ResponseMetadata"]["RetryAttempts"] == 2
    assert fast_second.response["ResponseMetadata"]["MaxAttemptsReached"] is True
    attempts = [dict(r.headers)[b"amz-sdk-request"].split(b"attempt=")[1][:1] for r in requests[1]]
    most = 5 if retries is None else 3
    assert attempts == [b"1", b"2", b"3", *(str(n).encode() for n in range(1, most + 1))]


async def test_features_the_clients_handlers_register_are_sent_on_every_attempt(
    frozen: None, server: ScriptedServer
) -> None:
    from botocore.useragent import register_feature_id

    def handler(**_: Any) -> None:
        register_feature_id("PAGINATOR")  # "C", into the call's own request context

    requests: list[list[Recorded]] = []
    for fast_path in (False, True):
        async with _pair(server.url) as (client, fast):
            client.meta.events.register("before-parameter-build.s3.GetObject", handler)
            start = len(server.requests)
            server.script = [_error(503, "SlowDown", "Reduce your rate.")]
            call = fast.get_object if fast_path else client.get_object
            await _fetch(call, {"Bucket": BUCKET, "Key": KEY})
            requests.append(server.requests[start:])
    assert requests[1] == requests[0]
    for request in requests[1]:  # the first attempt and the retry, which rebuilds the User-Agent
        features = dict(request.headers)[b"User-Agent"].split(b" m/")[1].split(b" ")[0]
        assert b"C" in features.split(b",")


async def test_a_wrong_region_is_redirected_and_the_bucket_resolved_again(
    frozen: None, server: ScriptedServer
) -> None:
    redirect = _error(301, "PermanentRedirect", "Use the eu-west-1 endpoint.", Bucket=BUCKET)
    redirect[1]["x-amz-bucket-region"] = "eu-west-1"
    requests: list[list[Recorded]] = []
    outcomes: list[list[Any]] = []
    counted: Counter[str] = Counter()
    for fast_path in (False, True):
        async with _pair(server.url, counter=counted) as (client, fast):
            call = fast.get_object if fast_path else client.get_object
            start = len(server.requests)
            server.script = [redirect]
            outcomes.append([await _fetch(call, {"Bucket": BUCKET, "Key": KEY}) for _ in range(2)])
            requests.append(server.requests[start:])
            if fast_path:
                assert fast._buckets[BUCKET] is not None  # resolved again, on the second call
    assert requests[1] == requests[0]
    for expected, actual in zip(*outcomes, strict=True):
        _assert_same(expected, actual)
    scopes = [dict(r.headers)[b"Authorization"].split(b"/")[2] for r in requests[1]]
    assert scopes == [b"us-east-1", b"eu-west-1", b"eu-west-1"]
    assert counted == Counter({"s3.GetObject": 2})


async def test_after_call_handlers_see_fast_calls_as_on_aiobotocore(
    frozen: None, server: ScriptedServer
) -> None:
    seen: list[tuple[int, str | None]] = []
    server.answer = ANSWERS["404 NoSuchKey"]
    async with _pair(server.url) as (client, fast):

        def after_call(http_response: Any, parsed: Any, **_: Any) -> None:
            seen.append((http_response.status_code, parsed.get("Error", {}).get("Code")))

        client.meta.events.register("after-call.s3.GetObject", after_call)
        for call in (client.get_object, fast.get_object):
            await _fetch(call, {"Bucket": BUCKET, "Key": KEY})
    assert seen == [(404, "NoSuchKey")] * 2


async def test_transport_failures_map_to_the_same_botocore_errors(frozen: None) -> None:
    config = _config(retries=NO_RETRIES, read_timeout=0.2, connect_timeout=2)
    for name, failure in FAILURES.items():
        async with raw_server(failure) as url, _pair(url, config=config) as (client, fast):
            expected = await _fetch(client.get_object, {"Bucket": BUCKET, "Key": KEY})
            actual = await _fetch(fast.get_object, {"Bucket": BUCKET, "Key": KEY})
        assert isinstance(expected, Exception), name
        _assert_same(expected, actual)


async def test_a_refused_connection_is_retried_and_fails_the_same_way(frozen: None) -> None:
    from botocore.exceptions import EndpointConnectionError

    from fanout._exceptions import ServiceUnreachable

    async with _pair(f"http://127.0.0.1:{free_port()}") as (client, fast):
        expected = await _fetch(client.get_object, {"Bucket": BUCKET, "Key": KEY})
        actual = await _fetch(fast.get_object, {"Bucket": BUCKET, "Key": KEY})
    assert isinstance(expected, EndpointConnectionError)
    _assert_same(expected, actual)
    assert isinstance(run_level_error(actual, bucket=BUCKET), ServiceUnreachable)


async def test_missing_credentials_fail_the_same_way(frozen: None, server: ScriptedServer) -> None:
    from botocore.exceptions import NoCredentialsError

    async with _pair(server.url, credentials=False) as (client, fast):
        expected = await _fetch(client.get_object, {"Bucket": BUCKET, "Key": KEY})
        actual = await _fetch(fast.get_object, {"Bucket": BUCKET, "Key": KEY})
    assert isinstance(expected, NoCredentialsError)
    _assert_same(expected, actual)
    assert server.requests == []


async def test_each_body_releases_its_connection(frozen: None, server: ScriptedServer) -> None:
    import anyio

    server.answer = _ok(OBJECT * 100)
    async with _pair(server.url, config=_config(max_pool_connections=1)) as (_, fast):
        with anyio.fail_after(5):  # a connection not given back would hold the only one
            for n in range(6):
                response = await fast.get_object(Bucket=BUCKET, Key=KEY, Range="bytes=0-65535")
                async with response["Body"] as stream:
                    data = await (stream.read(3) if n % 2 else stream.read())
                assert data == (OBJECT[:3] if n % 2 else OBJECT * 100)


# ------------------------------------------------------------------------------------------------
# calls left to aiobotocore, other calls, and clients that are not fast-pathed


DELEGATED: dict[str, dict[str, Any]] = {
    "a version": {"Bucket": BUCKET, "Key": KEY, "VersionId": "v1"},
    "SSE-C": {"Bucket": BUCKET, "Key": KEY, "SSECustomerAlgorithm": "AES256", "SSECustomerKey": "k" * 32},
    "ChecksumMode given": {"Bucket": BUCKET, "Key": KEY, "ChecksumMode": "ENABLED"},
    "a response override": {"Bucket": BUCKET, "Key": KEY, "ResponseContentType": "text/plain"},
    "a part number": {"Bucket": BUCKET, "Key": KEY, "PartNumber": 1},
    "a datetime condition": {"Bucket": BUCKET, "Key": KEY, "IfModifiedSince": FROZEN},
    "an empty key": {"Bucket": BUCKET, "Key": ""},
    "a key of bytes": {"Bucket": BUCKET, "Key": KEY.encode()},
    "no key": {"Bucket": BUCKET},
    "a bucket name botocore refuses": {"Bucket": "no/such bucket", "Key": KEY},
    "a None range": {"Bucket": BUCKET, "Key": KEY, "Range": None},
    "a range that is not text": {"Bucket": BUCKET, "Key": KEY, "Range": 5},
    "a non-ASCII condition": {"Bucket": BUCKET, "Key": KEY, "IfMatch": "é"},
    "an unknown argument": {"Bucket": BUCKET, "Key": KEY, "Bogus": 1},
    "a lone surrogate in the key": {"Bucket": BUCKET, "Key": "a\ud800b"},
}


async def test_unusual_arguments_behave_exactly_as_botocore(frozen: None, server: ScriptedServer) -> None:
    fast_counted: Counter[str] = Counter()
    async with _pair(server.url, counter=fast_counted) as (client, fast):
        events = _events(client)
        for name, kwargs in DELEGATED.items():
            before = events["s3.GetObject"]
            expected, actual, sent, fast_sent = await _both(client, fast, server, kwargs)
            _assert_same(expected, actual)
            assert fast_sent == sent, name  # the same request through the client, or none
            assert events["s3.GetObject"] - before in (0, 2), name
    assert fast_counted == Counter()  # all left to aiobotocore


@pytest.mark.parametrize(
    "bucket",
    [
        "arn:aws:s3:us-west-2:123456789012:accesspoint/fanout",
        "arn:aws:s3-object-lambda:us-west-2:123456789012:accesspoint/fanout",
        "fanout--usw2-az1--x-s3",  # an S3 Express directory bucket: its own session auth
    ],
)
async def test_special_buckets_are_left_to_aiobotocore(
    frozen: None, monkeypatch: pytest.MonkeyPatch, bucket: str
) -> None:
    caught = _Caught()
    caught.install(monkeypatch)
    fast_counted: Counter[str] = Counter()
    async with _pair(None, region="us-west-2", counter=fast_counted) as (client, fast):
        client.meta.events.register("before-send.s3", caught.before_send)
        events = _events(client)
        expected = await _fetch(client.get_object, {"Bucket": bucket, "Key": KEY})
        actual = await _fetch(fast.get_object, {"Bucket": bucket, "Key": KEY})
        assert fast._buckets[bucket] is None
    _assert_same(expected, actual)
    assert caught.sent[-1] == caught.sent[-2]
    assert events["s3.GetObject"] == 2
    assert fast_counted == Counter()


async def test_other_calls_and_attributes_are_the_clients(frozen: None, server: ScriptedServer) -> None:
    fast_counted: Counter[str] = Counter()
    server.answer = (200, {"x-amz-request-id": "r", "ETag": '"e"'}, b"")
    async with _pair(server.url, counter=fast_counted) as (client, fast):
        events = _events(client)
        await fast.put_object(Bucket=BUCKET, Key=KEY, Body=b"{}")
        head = await fast.head_object(Bucket=BUCKET, Key=KEY)
        assert fast.meta is client.meta
        assert fast.exceptions is client.exceptions
        assert fast.client is client
        assert fast.fast
        with pytest.raises(AttributeError):
            fast._no_such_attribute  # noqa: B018
    assert head["ETag"] == '"e"'
    assert events == Counter({"s3.PutObject": 1, "s3.HeadObject": 1})
    assert fast_counted == Counter()


async def test_an_adaptive_client_is_passed_through(frozen: None, server: ScriptedServer) -> None:
    # Its rate limiter hooks before-send, which the fast path does not emit.
    fast_counted: Counter[str] = Counter()
    config = _config(retries={"mode": "adaptive"})
    async with _pair(server.url, config=config, counter=fast_counted) as (client, fast):
        events = _events(client)
        assert not fast.fast
        expected, actual, sent, fast_sent = await _both(client, fast, server, {"Bucket": BUCKET, "Key": KEY})
    _assert_same(expected, actual)
    assert fast_sent == sent
    assert events == Counter({"s3.GetObject": 2})
    assert fast_counted == Counter()


async def test_a_client_without_aiohttp_is_refused(server: ScriptedServer) -> None:
    pytest.importorskip("httpx")
    from aiobotocore.httpxsession import HttpxSession

    async with _client(server.url, config=_config(http_session_cls=HttpxSession)) as client:
        with pytest.raises(ConfigError, match="aiohttp session"):
            async with FastS3(client):
                pass


async def test_a_closed_fast_path_refuses_calls(server: ScriptedServer) -> None:
    async with _pair(server.url) as (_, fast):
        await _fetch(fast.get_object, {"Bucket": BUCKET, "Key": KEY})
    await fast.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await fast.get_object(Bucket=BUCKET, Key=KEY)
