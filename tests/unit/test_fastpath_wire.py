"""The fast path sends what aiobotocore sends, and answers and fails as aiobotocore does.

Every comparison runs the same call through a real aiobotocore client and through a ``FastInvoker``
made from it, with the clock and the invocation id frozen the same way for both (botocore signs
with ``botocore.auth.get_current_datetime`` and names the call with ``uuid.uuid4``), against servers
on 127.0.0.1 that record the raw request or play a scripted answer or transport failure.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import ssl
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fanout._exceptions import ConfigError
from fanout._fastpath import FastInvoker
from fanout._retry import delivery_of
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
    free_port as _free_port,
    freeze,
    mapper,
    outcome as _outcome,
    raw_server as _raw_server,
    serve as _serve,
)

pytestmark = pytest.mark.anyio

CALL = "sagemaker-runtime.InvokeEndpointAsync"


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    freeze(monkeypatch)


def _session() -> Any:
    """An aiobotocore session whose sagemaker-runtime model has ``Body`` (patched on old botocore)."""
    from aiobotocore.session import get_session

    from fanout._body_patch import ensure_body_member

    session = get_session()
    ensure_body_member(session)
    return session


def _config(**overrides: Any) -> Any:
    from aiobotocore.config import AioConfig

    options: dict[str, Any] = {
        "retries": {"total_max_attempts": 1, "mode": "standard"},
        "max_pool_connections": 4,
    }
    options.update(overrides)
    return AioConfig(**options)


@asynccontextmanager
async def _pair(
    endpoint_url: str | None,
    *,
    config: Any = None,
    credentials: bool = True,
    token: str | None = None,
    counter: Counter[str] | None = None,
    region: str = "us-east-1",
) -> AsyncIterator[tuple[Any, FastInvoker]]:
    """An aiobotocore sagemaker-runtime client and a fast path made from it."""

    kwargs: dict[str, Any] = {"region_name": region, "config": config or _config()}
    if endpoint_url is not None:
        kwargs["endpoint_url"] = endpoint_url
    if credentials:
        kwargs.update(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
        if token is not None:
            kwargs["aws_session_token"] = token
    async with (
        _session().create_client("sagemaker-runtime", **kwargs) as client,
        FastInvoker(client, counter=counter) as fast,
    ):
        yield client, fast


# ------------------------------------------------------------------------------------------------
# loopback servers


ACCEPTED: Answer = (
    202,
    {
        "Content-Type": "application/json",
        "X-Amzn-SageMaker-OutputLocation": "s3://out/results/x.out",
        "X-Amzn-SageMaker-FailureLocation": "s3://out/failures/x-error.out",
        "x-amzn-RequestId": "req-1",
    },
    b'{"InferenceId":"iid-1"}',
)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with _serve(Server(answer=ACCEPTED)) as running:
        yield running


# ------------------------------------------------------------------------------------------------
# the request


BODY_70K = bytes(range(256)) * 273 + b"tail"  # 69,892 bytes: over 64 KB, every byte value
REQUESTS: dict[str, dict[str, Any]] = {
    "inline": {
        "EndpointName": "ep1",
        "Body": b'{"x": "\xc3\xa9"}',
        "ContentType": "application/json",
        "Accept": "application/json",
        "InferenceId": "iid-1",
        "RequestTTLSeconds": 600,
        "InvocationTimeoutSeconds": 120,
    },
    "input-location": {
        "EndpointName": "ep1",
        "InputLocation": "s3://bucket/inputs/a b+c%2F.json",
        "InferenceId": "iid-2",
    },
    "every-header": {
        "InferenceId": "iid-3",
        "EndpointName": "fanout-demo",
        "CustomAttributes": "trace=abc,tenant=t-1",
        "Filename": "result.out",
        "S3OutputPathExtension": "runs/2026-03-04/a_b!*'()",
        "InvocationTimeoutSeconds": 3600,
        "RequestTTLSeconds": 21600,
        "Accept": "*/*",
        "ContentType": "text/csv; charset=utf-8",
        "Body": "a,b\n1,2\n",
    },
    "escaping": {
        "EndpointName": "ep 1/é%~:@+*",
        "Body": bytearray(b"\x00\xff\r\n"),
        "ContentType": "  application/json \t ",
        "CustomAttributes": 'a  b\tc \u00a0 d \u2003 ü "quoted" é=1;x',
        "InferenceId": "id with  spaces ~!@#$%^&*()",
    },
    "large": {"EndpointName": "ep1", "Body": BODY_70K, "ContentType": "application/octet-stream"},
    "largest-inline": {"EndpointName": "ep1", "Body": b"x" * 128_000},
    "over-the-limit": {"EndpointName": "ep1", "Body": b"y" * 128_001, "InputLocation": "s3://b/k"},
    "empty": {"EndpointName": "ep1"},
    "empty-strings": {"EndpointName": "", "ContentType": "", "Accept": ""},
}


async def _both(
    client: Any, fast: FastInvoker, server: Server, kwargs: dict[str, Any]
) -> tuple[Recorded, Recorded]:
    await client.invoke_endpoint_async(**kwargs)
    await fast.invoke_endpoint_async(**kwargs)
    return server.requests[-2], server.requests[-1]


@pytest.mark.parametrize("name", list(REQUESTS))
async def test_the_request_is_byte_for_byte_aiobotocores(frozen: None, server: Server, name: str) -> None:
    if not MODEL_MEMBERS.issuperset(REQUESTS[name]):
        pytest.skip("this botocore's model lacks some of these members")
    async with _pair(server.url) as (client, fast):
        botocore_request, fast_request = await _both(client, fast, server, REQUESTS[name])
    assert fast_request == botocore_request
    names = [name.lower() for name, _ in fast_request.headers]
    assert b"authorization" in names and b"x-amz-date" in names


async def test_session_tokens_lambda_trace_ids_and_a_path_prefix_are_sent_the_same(
    frozen: None, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "fn")
    monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1")
    async with _pair(server.url + "/prefix/", token="session-token/+=") as (client, fast):
        botocore_request, fast_request = await _both(client, fast, server, REQUESTS["inline"])
    assert fast_request == botocore_request
    headers = dict(fast_request.headers)
    assert headers[b"X-Amz-Security-Token"] == b"session-token/+="
    assert b"X-Amzn-Trace-Id" in headers
    assert fast_request.target.startswith("/prefix/endpoints/ep1/")


async def test_new_retries_mode_headers_are_followed(
    frozen: None, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiobotocore.retries import standard

    if not hasattr(standard, "NEW_RETRIES_ENABLED"):
        pytest.skip("this aiobotocore predates the opt-in retry behaviour")
    monkeypatch.setattr(standard, "NEW_RETRIES_ENABLED", True)
    async with _pair(server.url) as (client, fast):
        botocore_request, fast_request = await _both(client, fast, server, REQUESTS["inline"])
    assert fast_request == botocore_request
    assert dict(fast_request.headers)[b"amz-sdk-request"] == b"attempt=1; max=1"


@pytest.mark.parametrize("how", ["config", "environment"])
async def test_proxies_are_used_the_same_way(
    frozen: None, server: Server, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # The recording server plays the proxy: a plain-http proxy gets the absolute URL.
    target = "http://sagemaker.example.invalid:8080"
    config = _config()
    if how == "config":
        config = _config(proxies={"http": server.url})
    else:
        monkeypatch.setenv("HTTP_PROXY", server.url)
    async with _pair(target, config=config) as (client, fast):
        botocore_request, fast_request = await _both(client, fast, server, REQUESTS["inline"])
    assert fast_request == botocore_request
    assert fast_request.target == f"{target}/endpoints/ep1/async-invocations"


async def test_requests_after_a_date_change_and_a_key_rotation_are_signed_anew(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    import botocore.auth

    monkeypatch.setattr(uuid, "uuid4", lambda: INVOCATION_ID)
    async with _pair(server.url) as (client, fast):
        for day in (4, 5, 5):
            now = FROZEN.replace(day=day)
            monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *_, now=now, **__: now)
            botocore_request, fast_request = await _both(client, fast, server, REQUESTS["inline"])
            assert fast_request == botocore_request
        credentials = client._request_signer._credentials
        credentials.secret_key = "rotated-secret"
        botocore_request, fast_request = await _both(client, fast, server, REQUESTS["inline"])
    assert fast_request == botocore_request
    assert _verifies(fast_request, server.url, ACCESS_KEY, "rotated-secret", FROZEN.replace(day=5))


def test_the_request_matches_the_golden_capture(frozen: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.wire import PARAMS, golden, wire_summary

    captured: dict[str, Any] = {}

    async def send(self: FastInvoker, session: Any, target: Any, headers: dict[str, str], body: bytes) -> Any:
        # Accept-Encoding is added by the HTTP session, after botocore's request (what the golden holds).
        sent = {k: v for k, v in headers.items() if k != "Accept-Encoding"}
        captured.update(wire_summary(target.url, sent, body))
        return 202, {"x-amzn-requestid": "r"}, b'{"InferenceId":"iid-1"}'

    monkeypatch.setattr(FastInvoker, "_send", send)

    async def main() -> None:
        # The golden is for AWS's own endpoint; nothing is sent there, _send is replaced above.
        async with _pair(None) as (_, fast):
            await fast.invoke_endpoint_async(**PARAMS)

    asyncio.run(main())
    assert captured == golden()


# botocore's SigV4 trims and folds whitespace with str.split(), so Unicode spaces matter; control
# characters are left out because aiohttp refuses them in headers on both paths.
def _model_members() -> frozenset[str]:
    import botocore.session

    loader = botocore.session.get_session().get_component("data_loader")
    model = loader.load_service_model("sagemaker-runtime", "service-2")
    return frozenset(model["shapes"]["InvokeEndpointAsyncInput"]["members"]) | {"Body"}


# Filename and S3OutputPathExtension arrived in botocore 1.42.54: the aioboto3 pin has neither.
MODEL_MEMBERS = _model_members()
_HEADER_TEXT = st.text(st.characters(exclude_categories=["Cc", "Cs"]), max_size=40)
_MEMBERS: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {"EndpointName": st.text(st.characters(exclude_categories=["Cs"]), max_size=20)},
    optional={
        "Body": st.binary(max_size=300) | st.text(max_size=50),
        "ContentType": _HEADER_TEXT,
        "Accept": _HEADER_TEXT,
        "CustomAttributes": _HEADER_TEXT,
        "InferenceId": _HEADER_TEXT.filter(bool),
        "InputLocation": _HEADER_TEXT.filter(bool),
        "S3OutputPathExtension": _HEADER_TEXT.filter(bool),
        "Filename": _HEADER_TEXT.filter(bool),
        "RequestTTLSeconds": st.integers(60, 10**9),
        "InvocationTimeoutSeconds": st.integers(1, 10**9),
    },
).map(lambda kwargs: {k: v for k, v in kwargs.items() if k in MODEL_MEMBERS})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kwargs=_MEMBERS, order=st.randoms(use_true_random=False))
def test_any_arguments_are_signed_and_serialized_as_botocore_does(
    frozen: None, monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any], order: Any
) -> None:
    # Synchronous, with its own loop: Hypothesis draws must not run inside the async test runner.
    from aiobotocore.awsrequest import AioAWSResponse

    items = list(kwargs.items())
    order.shuffle(items)  # headers follow the argument order on both paths
    arguments = dict(items)
    sent: list[tuple[str, list[tuple[str, str]], bytes]] = []

    async def send(self: FastInvoker, session: Any, target: Any, headers: dict[str, str], body: bytes) -> Any:
        sent.append((target.url, [(k, v) for k, v in headers.items() if k != "Accept-Encoding"], bytes(body)))
        return ACCEPTED[0], {k.lower(): v for k, v in ACCEPTED[1].items()}, ACCEPTED[2]

    class Raw:
        async def read(self) -> bytes:
            return ACCEPTED[2]

    def before_send(request: Any, **_: Any) -> Any:
        headers = [(k, v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()]
        sent.append((request.url, headers, bytes(request.body or b"")))
        return AioAWSResponse(request.url, ACCEPTED[0], {k.lower(): v for k, v in ACCEPTED[1].items()}, Raw())

    async def main() -> tuple[Any, Any]:
        async with _pair("http://127.0.0.1:9") as (client, fast):
            client.meta.events.register("before-send.sagemaker-runtime.InvokeEndpointAsync", before_send)
            return await client.invoke_endpoint_async(**arguments), await fast.invoke_endpoint_async(
                **arguments
            )

    monkeypatch.setattr(FastInvoker, "_send", send)
    expected, result = asyncio.run(main())
    assert sent[1] == sent[0]
    assert result == expected


def _verifies(
    request: Recorded, base_url: str, access_key: str, secret_key: str, when: datetime.datetime
) -> bool:
    """Whether ``request`` carries the signature botocore's own signer makes for it with these keys."""
    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    headers = {k.decode(): v.decode() for k, v in request.headers}
    unsigned = {"authorization", "user-agent", "amz-sdk-invocation-id", "amz-sdk-request", "content-length"}
    signed = {k: v for k, v in headers.items() if k.lower() not in unsigned | {"accept", "accept-encoding"}}
    aws_request = AWSRequest(
        method=request.method, url=base_url + request.target, headers=signed, data=request.body
    )
    aws_request.context["timestamp"] = when.strftime(botocore.auth.SIGV4_TIMESTAMP)
    token = headers.get("X-Amz-Security-Token")
    signer = botocore.auth.SigV4Auth(Credentials(access_key, secret_key, token), "sagemaker", "us-east-1")
    signed_with = f"Credential={access_key}/{when:%Y%m%d}/us-east-1/sagemaker/aws4_request"
    original = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda *_, **__: when
    try:
        signer.add_auth(aws_request)
    finally:
        botocore.auth.get_current_datetime = original
    return (
        signed_with in headers["Authorization"]
        and aws_request.headers["Authorization"] == headers["Authorization"]
    )


async def test_refreshable_credentials_are_picked_up_on_every_call(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    import botocore.auth
    from aiobotocore.credentials import AioRefreshableCredentials

    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *_, **__: FROZEN)
    generation = 0

    async def refresh() -> dict[str, str]:
        nonlocal generation
        generation += 1
        # Inside botocore's mandatory refresh window, so every use refreshes: keys change per call.
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=1)
        return {
            "access_key": f"AKIDROTATED{generation}",
            "secret_key": f"secret-{generation}",
            "token": f"token-{generation}",
            "expiry_time": expiry.isoformat(),
        }

    credentials = AioRefreshableCredentials.create_from_metadata(await refresh(), refresh, "test")
    async with _pair(server.url) as (client, fast):
        client._request_signer._credentials = credentials
        for _ in range(3):
            await fast.invoke_endpoint_async(**REQUESTS["inline"])
    keys = []
    for request in server.requests:
        authorization = dict(request.headers)[b"Authorization"].decode()
        access_key = authorization.split("Credential=", 1)[1].split("/", 1)[0]
        keys.append(access_key)
        secret = "secret-" + access_key.removeprefix("AKIDROTATED")
        assert _verifies(request, server.url, access_key, secret, FROZEN)
        assert dict(request.headers)[b"X-Amz-Security-Token"].decode() == "token-" + access_key[-1]
    assert len(set(keys)) == 3


# ------------------------------------------------------------------------------------------------
# answers and errors


def _assert_same_outcome(expected: Any, actual: Any) -> None:
    assert_same_outcome(expected, actual, mapper(endpoint_name="ep1"))


def _json(status: int, code: str | None, body: Any, **headers: str) -> Answer:
    all_headers = {"Content-Type": "application/json", "x-amzn-RequestId": "req-9", **headers}
    if code is not None:
        all_headers["x-amzn-ErrorType"] = code
    return status, all_headers, body if isinstance(body, bytes) else json.dumps(body).encode()


ANSWERS: dict[str, Answer] = {
    "202": ACCEPTED,
    "202 without a failure location": (202, {"x-amzn-RequestId": "r"}, b'{"InferenceId":"i"}'),
    "202 with an S3-style request id": (202, {"x-amz-request-id": "r", "x-amz-id-2": "h"}, b"{}"),
    "202 with an empty body": (202, {"x-amzn-RequestId": "r"}, b""),
    "202 with a text body": (202, {"x-amzn-RequestId": "r"}, b"accepted"),
    "202 with a JSON list": (202, {}, b"[1, 2]"),
    "202 with JSON null": (202, {}, b"null"),
    "202 with non-UTF-8 bytes": (202, {}, b"\xff\xfe{"),
    "202 with an unusual member": (
        202,
        {},
        b'{"InferenceId": 5, "X-Amzn-SageMaker-OutputLocation": "s3://x"}',
    ),
    "200 (moto)": (200, {"X-Amzn-SageMaker-OutputLocation": "s3://o"}, b'{"InferenceId":"i"}'),
    "300": (300, {}, b""),
    "400 ValidationError": _json(400, "ValidationError", {"message": "Endpoint ep1 of account 1 not found."}),
    "400 ValidationError, modeled Message": _json(400, "ValidationError", {"Message": "bad"}),
    "400 ValidationError, long code": _json(
        400, "ValidationError:http://internal.amazon.com/coral/com.amazon.coral.validate/", {"message": "x"}
    ),
    "400 ThrottlingException, null message": _json(400, "ThrottlingException", {"message": None}),
    "400 code in the body only": _json(400, None, {"__type": "com.amazon.coral#ThrottlingException"}),
    "400 code key in the body": _json(400, None, {"code": "Throttling", "message": "slow down"}),
    "400 JSON list": _json(400, None, b"[]"),
    "403 InvalidClientTokenId": _json(403, "InvalidClientTokenId", {"message": "bad token"}),
    "429": _json(429, None, {"message": "Too Many Requests"}),
    "500 InternalFailure": _json(500, "InternalFailure", {"message": "An internal error occurred."}),
    "500 text body": (500, {"Content-Type": "text/plain"}, b"oops, not JSON"),
    "502 HTML body": (502, {"Content-Type": "text/html"}, b"<html><body>Bad Gateway</body></html>"),
    "503 ServiceUnavailable": _json(503, "ServiceUnavailable", {"message": "Service unavailable."}),
    "503 empty body": (503, {}, b""),
}


@pytest.mark.parametrize("name", list(ANSWERS))
async def test_answers_map_to_the_same_results_and_exceptions(
    frozen: None, server: Server, name: str
) -> None:
    server.answer = ANSWERS[name]
    async with _pair(server.url) as (client, fast):
        expected = await _outcome(client.invoke_endpoint_async, REQUESTS["inline"])
        actual = await _outcome(fast.invoke_endpoint_async, REQUESTS["inline"])
    _assert_same_outcome(expected, actual)
    if name.startswith("400 ValidationError"):
        assert isinstance(actual, client.exceptions.ValidationError)


async def test_an_accepted_invoke_returns_aiobotocores_shape(frozen: None, server: Server) -> None:
    async with _pair(server.url) as (_, fast):
        result = await fast.invoke_endpoint_async(**REQUESTS["inline"])
    metadata = result.pop("ResponseMetadata")
    assert result == {
        "OutputLocation": "s3://out/results/x.out",
        "FailureLocation": "s3://out/failures/x-error.out",
        "InferenceId": "iid-1",
    }
    assert metadata["RequestId"] == "req-1"
    assert metadata["HTTPStatusCode"] == 202
    assert metadata["RetryAttempts"] == 0
    assert metadata["HTTPHeaders"]["x-amzn-sagemaker-outputlocation"] == "s3://out/results/x.out"


@pytest.mark.parametrize("name", list(FAILURES))
async def test_transport_failures_map_to_the_same_botocore_errors(frozen: None, name: str) -> None:
    async with (
        _raw_server(FAILURES[name]) as url,
        _pair(url, config=_config(read_timeout=0.3, connect_timeout=2)) as (client, fast),
    ):
        expected = await _outcome(client.invoke_endpoint_async, REQUESTS["inline"])
        actual = await _outcome(fast.invoke_endpoint_async, REQUESTS["inline"])
    assert isinstance(expected, Exception)
    _assert_same_outcome(expected, actual)


async def test_a_refused_connection_maps_to_the_same_error(frozen: None) -> None:
    from botocore.exceptions import EndpointConnectionError

    url = f"http://127.0.0.1:{_free_port()}"
    async with _pair(url) as (client, fast):
        expected = await _outcome(client.invoke_endpoint_async, REQUESTS["inline"])
        actual = await _outcome(fast.invoke_endpoint_async, REQUESTS["inline"])
    assert isinstance(expected, EndpointConnectionError)
    _assert_same_outcome(expected, actual)
    assert delivery_of(actual) == "not_sent"


async def test_an_unreachable_proxy_maps_to_the_same_error(frozen: None) -> None:
    from botocore.exceptions import ProxyConnectionError

    config = _config(proxies={"http": f"http://user:pass@127.0.0.1:{_free_port()}"})
    async with _pair("http://sagemaker.example.invalid", config=config) as (client, fast):
        expected = await _outcome(client.invoke_endpoint_async, REQUESTS["inline"])
        actual = await _outcome(fast.invoke_endpoint_async, REQUESTS["inline"])
    assert isinstance(expected, ProxyConnectionError)
    _assert_same_outcome(expected, actual)


async def test_missing_credentials_fail_the_same_way(frozen: None, server: Server) -> None:
    from botocore.exceptions import NoCredentialsError

    async with _pair(server.url, credentials=False) as (client, fast):
        expected = await _outcome(client.invoke_endpoint_async, REQUESTS["inline"])
        actual = await _outcome(fast.invoke_endpoint_async, REQUESTS["inline"])
    assert isinstance(expected, NoCredentialsError)
    _assert_same_outcome(expected, actual)
    assert server.requests == []


# ------------------------------------------------------------------------------------------------
# TLS: verify, AWS_CA_BUNDLE and SSLError


@dataclass
class Tls:
    server_context: ssl.SSLContext
    ca_file: Path


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[Tls]:
    pytest.importorskip("cryptography")
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fanout test CA")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    yield Tls(context, cert_file)


@pytest.mark.parametrize("trust", ["AWS_CA_BUNDLE", "verify=False", "untrusted"])
async def test_tls_verification_follows_the_client(
    frozen: None, tls: Tls, monkeypatch: pytest.MonkeyPatch, trust: str
) -> None:
    from botocore.exceptions import SSLError

    if trust == "AWS_CA_BUNDLE":
        monkeypatch.setenv("AWS_CA_BUNDLE", str(tls.ca_file))
    async with (
        _serve(Server(answer=ACCEPTED), ssl_context=tls.server_context) as server,
        _session().create_client(
            "sagemaker-runtime",
            region_name="us-east-1",
            endpoint_url=server.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=_config(),
            verify=False if trust == "verify=False" else None,
        ) as client,
        FastInvoker(client) as fast,
    ):
        expected = await _outcome(client.invoke_endpoint_async, REQUESTS["inline"])
        actual = await _outcome(fast.invoke_endpoint_async, REQUESTS["inline"])
    _assert_same_outcome(expected, actual)
    if trust == "untrusted":
        assert isinstance(actual, SSLError)
        assert delivery_of(actual) == "not_sent"
    else:
        assert server.requests[0] == server.requests[1]


# ------------------------------------------------------------------------------------------------
# arguments the fast path leaves to aiobotocore, counting, and what it refuses


class _Readable(io.BytesIO):
    pass


DELEGATED: dict[str, dict[str, Any]] = {
    "TTL under its min": {"EndpointName": "ep1", "Body": b"x", "RequestTTLSeconds": 10},
    "empty inference id": {"EndpointName": "ep1", "Body": b"x", "InferenceId": ""},
    "Body of the wrong type": {"EndpointName": "ep1", "Body": 5},
    "unknown argument": {"EndpointName": "ep1", "Body": b"x", "Bogus": 1},
    "missing endpoint": {"Body": b"x"},
    "None value": {"EndpointName": "ep1", "Body": b"x", "Accept": None},
    "string TTL": {"EndpointName": "ep1", "Body": b"x", "RequestTTLSeconds": "600"},
    "boolean TTL": {"EndpointName": "ep1", "Body": b"x", "InvocationTimeoutSeconds": True},
}


@pytest.mark.parametrize("name", list(DELEGATED))
async def test_unusual_arguments_behave_exactly_as_botocore(frozen: None, server: Server, name: str) -> None:
    calls: Counter[str] = Counter()
    async with _pair(server.url, counter=calls) as (client, fast):
        expected = await _outcome(client.invoke_endpoint_async, DELEGATED[name])
        actual = await _outcome(fast.invoke_endpoint_async, DELEGATED[name])
    _assert_same_outcome(expected, actual)
    if isinstance(expected, Exception):
        assert calls == Counter()  # botocore refused it before its before-call event


async def test_a_file_like_body_is_sent_by_aiobotocore(frozen: None, server: Server) -> None:
    counted: Counter[str] = Counter()
    fast_counted: Counter[str] = Counter()
    async with _pair(server.url, counter=fast_counted) as (client, fast):
        client.meta.events.register("before-call", lambda event_name, **_: counted.update([event_name]))
        await client.invoke_endpoint_async(EndpointName="ep1", Body=_Readable(b"streamed"))
        await fast.invoke_endpoint_async(EndpointName="ep1", Body=_Readable(b"streamed"))
    assert server.requests[0] == server.requests[1]
    assert server.requests[1].body == b"streamed"
    assert counted == Counter({f"before-call.{CALL}": 2})
    assert fast_counted == Counter()


async def test_calls_are_counted_as_the_clients_before_call_events_count_them(server: Server) -> None:
    from_events: Counter[str] = Counter()
    from_fast: Counter[str] = Counter()
    server.answer = ANSWERS["400 ThrottlingException, null message"]
    async with _pair(server.url, counter=from_fast) as (client, fast):
        client.meta.events.register(
            "before-call", lambda event_name, **_: from_events.update([event_name.partition(".")[2]])
        )
        for _ in range(3):
            await _outcome(client.invoke_endpoint_async, REQUESTS["inline"])
            await _outcome(fast.invoke_endpoint_async, REQUESTS["inline"])
    assert from_fast == from_events == Counter({CALL: 3})


@pytest.mark.parametrize(
    "retries",
    [
        {"mode": "legacy", "total_max_attempts": 1},
        {"mode": "standard"},
        {"mode": "adaptive", "total_max_attempts": 1},
    ],
)
async def test_clients_that_retry_are_refused(retries: dict[str, Any]) -> None:

    async with _session().create_client(
        "sagemaker-runtime",
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=_config(retries=retries),
    ) as client:
        with pytest.raises(ConfigError, match="must not retry"):
            FastInvoker(client)


async def test_an_unsigned_client_is_refused() -> None:
    from botocore import UNSIGNED

    async with _session().create_client(
        "sagemaker-runtime",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        config=_config(signature_version=UNSIGNED),
    ) as client:
        with pytest.raises(ConfigError, match="SigV4"):
            async with FastInvoker(client):
                pass


async def test_a_closed_invoker_refuses_calls(server: Server) -> None:
    async with _pair(server.url) as (_, fast):
        await fast.invoke_endpoint_async(**REQUESTS["inline"])
    await fast.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await fast.invoke_endpoint_async(**REQUESTS["inline"])
