"""Fast paths for fanout's hot AWS calls: botocore's wire request, without botocore's per-call machinery.

Submitting is fanout's hot path, and tracking by SQS its second. Through aiobotocore a call costs
0.6 to 1.1 ms of CPU, most of it spent on work whose result is the same for every call of a run: the
event hooks, rebuilding the User-Agent, resolving the endpoint ruleset, choosing a signer,
rederiving the SigV4 key, walking the model to serialize and to parse. A fast path does that work
once per client and keeps only what varies per call, so a call costs little more than the aiohttp
POST itself. This module holds the machinery they share (``_FastClient``) and ``FastInvoker``, the
fast path for ``InvokeEndpointAsync`` (rest-json); ``_fastsqs.FastSqs`` is the one for the SQS
tracker's three hot calls (json). Every other call stays on aiobotocore.

**What is templated** (built once, from the client's own model and configuration):

- the URL: botocore's serializer renders the operation's path (for InvokeEndpointAsync
  ``/endpoints/{EndpointName}/async-invocations``, with its URI escaping) and
  ``prepare_request_dict`` joins it to the endpoint the client's ruleset resolves; cached per
  endpoint name, with the canonical path that SigV4 derives from it;
- the header members: for each input member with ``location: header``, its wire name and its
  botocore conversion (``str(value)`` for strings and integers); ``Body`` is the raw payload;
- the constant headers: the User-Agent the client would build (client features only), the
  ``amz-sdk-request`` value of a first attempt, ``Accept-Encoding: identity``;
- the signer: the signature version, signing name and region that the client's ``choose-signer``
  handlers and endpoint ruleset pick, per operation;
- the transport: one aiohttp ``ClientSession`` on one connector, made by the client's own
  ``AIOHTTPSession._create_connector`` (so TLS, ``verify``/``AWS_CA_BUNDLE``, client certificates,
  proxy TLS and the keep-alive settings are aiobotocore's), with the client's timeouts, the proxy
  and proxy headers botocore's ``ProxyConfiguration`` picks for the endpoint (``proxies`` and the
  ``HTTP(S)_PROXY``/``NO_PROXY`` environment), and ``max_pool_connections`` connections;
- the response: which output members come from which header or body key.

**What runs per call**: a type and ``min`` check of the arguments (botocore's validation rules),
the header dict in argument order, ``get_frozen_credentials()`` (so rotated credentials are picked
up at once), botocore's own ``SigV4Auth.add_auth`` on a light request object, the POST, and for a 2xx
a direct read of ``InferenceId``/``OutputLocation``/``FailureLocation``.

**What is cached and why it is safe**: the SigV4 signing key is derived from (secret key, date,
region, service) only, so it is kept per that tuple and rederived when the secret or the UTC date
changes. The canonical path, URL and ``Host`` are functions of the endpoint URL and the endpoint
name. The User-Agent and the ``amz-sdk-request`` value depend only on the client's configuration.
The ruleset result does not depend on the call's arguments for these operations (they have no
context parameters, which is checked). The proxy is picked once for the endpoint's scheme and host;
aiobotocore reads ``HTTP(S)_PROXY``/``NO_PROXY`` and ``BOTO_EXPERIMENTAL__ADD_PROXY_HOST_HEADER``
again on every call, so a change to them after the first call is not seen here. botocore's
recursion-detection handler reads ``AWS_LAMBDA_FUNCTION_NAME`` and ``_X_AMZN_TRACE_ID`` on every
call; the first is set once by the Lambda runtime before any code runs, so it is read when the fast
path opens, and only inside Lambda is the trace id (which the runtime changes per invocation) read
per call.

**Anything unusual goes to aiobotocore**: arguments that are not the plain types (``str``, ``int``,
``bytes``/``bytearray``/``str`` body), a value under its ``min``, a missing required member, an
unknown or ``None`` argument, a file-like ``Body``: the call is passed to
``client.invoke_endpoint_async`` unchanged, so the caller gets exactly botocore's behaviour,
``ParamValidationError`` included. A client the fast path cannot reproduce (botocore retries on,
another retry mode, a signer other than SigV4 with a signed payload, an operation with checksum,
compression or host-prefix traits, an HTTP session that is not aiohttp) is refused with
``ConfigError`` when the fast path is built or opened.

**How errors map**: a non-2xx response goes through the client's own response parser and its
modeled-error pass, so ``Error.Code`` (``x-amzn-ErrorType`` or ``__type``, the part before ``:`` and
after the last ``#``, the ``x-amzn-query-error`` translation of query-compatible services),
``Error.Message`` (``message`` or ``Message``, the raw text of a non-JSON body, the HTTP reason for
an empty or HTML 5xx) and the modeled fields are botocore's; standard mode's ``MaxAttemptsReached``
and ``RetryAttempts: 0`` are added as its retry handler and endpoint do. The client's
``after-call`` event is then emitted for the error, as ``_make_api_call`` does, because botocore
picks the exception class there for some services (SQS's ``error_code_override``), and the
exception is ``client.exceptions.from_code(code)(parsed, operation_name)``. Transport failures map
exactly as ``aiobotocore.httpsession.AIOHTTPSession.send`` maps them (``SSLError``,
``ProxyConnectionError``, ``ConnectionClosedError``, ``ConnectTimeoutError`` / ``ReadTimeoutError``,
``EndpointConnectionError`` wrapping the aiohttp error, ``HTTPClientError``), so
``fanout._retry.classify`` and ``delivery_of`` give the same answers on both paths.

**What it does not do**: botocore's events are not emitted for calls that succeed (nor
``after-call-error`` for transport failures), so handlers registered on the client for these
operations (``before-send`` stubs, a ``Stubber``, a ``before-call`` counter) do not see fast-path
calls; pass ``counter=`` to count calls as the client's ``before-call`` events would be counted
(delegated calls still emit them).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import socket
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import aiohttp
import aiohttp.http_exceptions
from yarl import URL

from ._exceptions import ConfigError

__all__ = ["ConnectionPool", "FastInvoker", "request_context", "request_ids"]

_OPERATION: Final = "InvokeEndpointAsync"
_CACHE_LIMIT: Final = 1024
"""Endpoint names whose URL and canonical path are kept; a run uses one or a few."""
_INT_FLOOR: Final = -(2**63)
_UNSUPPORTED_TRAITS: Final = (
    # Each needs botocore's per-call handlers: checksums, compression, a host prefix, UNSIGNED-PAYLOAD.
    "httpChecksum",
    "httpChecksumRequired",
    "requestcompression",
    "endpoint",
    "unsignedPayload",
)


async def _resolved(value: Any) -> Any:
    # aiobotocore made some of these methods async across versions (2.25 vs 3.x).
    if inspect.isawaitable(value):
        return await value
    return value


@dataclass(frozen=True, slots=True)
class _HeaderMember:
    header: str
    string: bool
    """A string member (else an integer one)."""
    minimum: int


@dataclass(frozen=True, slots=True)
class _Target:
    """Where one request goes: its method, its URL as botocore renders it, and that URL for aiohttp."""

    method: str
    url: str
    yarl_url: URL


@dataclass(frozen=True, slots=True)
class _Route:
    """What ``_setup`` resolves for one operation: what aiobotocore resolves on every call."""

    operation: Any
    call_name: str
    """``service-id.Operation``, as the client's ``before-call`` events name it."""
    auth: Any
    endpoint_url: str
    extra_headers: dict[str, str]
    context: dict[str, Any]
    """The request context ``_make_api_call`` would build (a copy goes to ``after-call``)."""


def _member_min(shape: Any, default: int) -> int:
    minimum = shape.metadata.get("min")
    if minimum is None and shape.serialization.get("hostLabel"):
        minimum = 1  # botocore's implicit min for host labels
    return int(minimum) if minimum is not None else default


def _retries(config: Any) -> tuple[str | None, int | None]:
    retries = dict(getattr(config, "retries", None) or {})
    total = retries.get("total_max_attempts")
    if total is None and retries.get("max_attempts") is not None:
        total = int(retries["max_attempts"]) + 1
    return retries.get("mode"), total


class _Template:
    """What the model says about the request and the response, read once."""

    def __init__(self, operation: Any) -> None:
        http = operation.http
        self.method: str = http.get("method", "POST")
        shape = operation.input_shape
        self.required = frozenset(shape.required_members)
        self.headers: dict[str, _HeaderMember] = {}
        self.uri_members: dict[str, int] = {}
        self.payload: str | None = shape.serialization.get("payload")
        for name, member in shape.members.items():
            location = member.serialization.get("location")
            if location == "header":
                if member.type_name not in ("string", "integer", "long") or member.metadata.get("jsonvalue"):
                    continue  # never on the fast path: such a call is delegated
                string = member.type_name == "string"
                self.headers[name] = _HeaderMember(
                    header=member.serialization.get("name", name),
                    string=string,
                    minimum=_member_min(member, 0 if string else _INT_FLOOR),
                )
            elif location == "uri":
                if member.type_name != "string":
                    raise ConfigError(f"fast path: URI member {name} is not a string")
                self.uri_members[name] = _member_min(member, 0)
        if len(self.uri_members) != 1 or "+}" in http["requestUri"]:
            raise ConfigError(f"fast path: unexpected request URI {http['requestUri']!r}")
        (self.uri_member,) = self.uri_members
        self.uri_min = self.uri_members[self.uri_member]
        if self.payload is not None and shape.members[self.payload].type_name != "blob":
            raise ConfigError(f"fast path: payload member {self.payload} is not a blob")
        for name, member in shape.members.items():
            if member.metadata.get("idempotencyToken") or member.serialization.get("hostLabel"):
                raise ConfigError(f"fast path: member {name} needs botocore's parameter handlers")
        self.payload_min = _member_min(shape.members[self.payload], 0) if self.payload is not None else 0

        output = operation.output_shape
        self.output_headers: list[tuple[str, str]] = []
        self.output_body: list[tuple[str, str]] = []
        self.fast_parse = output is not None and "payload" not in output.serialization
        if output is not None:
            for name, member in output.members.items():
                location = member.serialization.get("location")
                plain = member.type_name == "string" and not member.metadata.get("jsonvalue")
                if location not in (None, "header") or not plain:
                    self.fast_parse = False
                if location == "header":
                    self.output_headers.append((name, member.serialization.get("name", name).lower()))
                # The JSON body is walked for every member, header ones included, as botocore does.
                self.output_body.append((name, member.serialization.get("name", name)))

    def plan(self, kwargs: dict[str, Any]) -> tuple[str, dict[str, str], bytes | bytearray] | None:
        """The endpoint name, the member headers (in argument order) and the body; ``None`` to delegate."""
        endpoint_name: str | None = None
        body: bytes | bytearray = b""
        headers: dict[str, str] = {}
        header_members = self.headers
        for name, value in kwargs.items():
            member = header_members.get(name)
            kind = type(value)
            if member is not None:
                if member.string:
                    if kind is not str or len(value) < member.minimum:
                        return None
                    headers[member.header] = value
                else:
                    if kind is not int or value < member.minimum:
                        return None
                    headers[member.header] = str(value)
            elif name == self.uri_member:
                if kind is not str or len(value) < self.uri_min:
                    return None
                endpoint_name = value
            elif name == self.payload:
                if kind is bytes or kind is bytearray:
                    body = value
                elif kind is str:
                    body = value.encode("utf-8")
                else:
                    return None  # file-like bodies and wrong types: botocore's handling
                if len(body) < self.payload_min:
                    return None
            else:
                return None
        if endpoint_name is None or not self.required.issubset(kwargs):
            return None
        return endpoint_name, headers, body


def _signer_class() -> type[Any]:
    import botocore.auth

    unsigned = frozenset(botocore.auth.SIGNED_HEADERS_BLACKLIST)

    class _HeaderMap(dict[str, str]):
        # The part of botocore's HTTPHeaders that SigV4Auth.canonical_headers uses. The request's
        # header names are distinct model names, so one value per name is all there is.
        def get_all(self, name: str) -> list[str]:
            return [self[name]]

    class CachingSigV4Auth(botocore.auth.SigV4Auth):  # type: ignore[misc]
        """botocore's SigV4Auth on a plain-dict request, with the derived signing key cached.

        botocore derives ``kSigning`` (four HMACs) on every request; it depends only on the secret
        key, the date, the region and the service, so it is kept until one of them changes.
        """

        def __init__(self, service_name: str, region_name: str, host: str) -> None:
            super().__init__(None, service_name, region_name)
            self._host = host
            self._key: tuple[str, str, bytes] | None = None
            self._paths: dict[str, str] = {}

        def headers_to_sign(self, request: Any) -> _HeaderMap:
            signed = _HeaderMap()
            for name, value in request.headers.items():
                lname = name.lower()
                if lname not in unsigned:
                    signed[lname] = value
            if "host" not in signed:
                signed["host"] = self._host
            return signed

        def _normalize_url_path(self, path: str) -> str:
            normalized = self._paths.get(path)
            if normalized is None:
                if len(self._paths) >= _CACHE_LIMIT:
                    self._paths.clear()
                normalized = self._paths[path] = super()._normalize_url_path(path)
            return normalized

        def signature(self, string_to_sign: str, request: Any) -> str:
            datestamp = request.context["timestamp"][0:8]
            secret = self.credentials.secret_key
            cached = self._key
            if cached is None or cached[0] != secret or cached[1] != datestamp:
                # botocore's derivation, step for step (SigV4Auth.signature).
                k_date = self._sign(f"AWS4{secret}".encode(), datestamp)
                k_region = self._sign(k_date, self._region_name)
                k_service = self._sign(k_region, self._service_name)
                cached = (secret, datestamp, self._sign(k_service, "aws4_request"))
                self._key = cached
            signature: str = self._sign(cached[2], string_to_sign, hex=True)
            return signature

    return CachingSigV4Auth


class _SigningRequest:
    """The attributes of an ``AWSRequest`` that ``SigV4Auth.add_auth`` reads and writes."""

    __slots__ = ("body", "context", "headers", "method", "params", "url")

    def __init__(self, method: str, url: str, headers: dict[str, str], body: bytes | bytearray) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.params: dict[str, str] = {}
        self.context: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class ConnectionPool:
    """What the fast paths take from the client's aiobotocore HTTP session: its connector factory,
    its timeouts and its proxy configuration, so that their connections are made as its are."""

    create_connector: Callable[[str | None], Any]
    timeout: aiohttp.ClientTimeout
    proxy_config: Any

    @classmethod
    def of(cls, client: Any) -> ConnectionPool:
        http = client._endpoint.http_session
        create_connector = getattr(http, "_create_connector", None)
        timeout = getattr(http, "_timeout", None)
        if create_connector is None or not isinstance(timeout, aiohttp.ClientTimeout):
            raise ConfigError(
                f"fast path: needs aiobotocore's aiohttp session, the client has {type(http).__name__}"
            )
        proxy_config = getattr(http, "_proxy_config", None)
        if proxy_config is None:
            from botocore.httpsession import ProxyConfiguration

            config = client.meta.config
            proxy_config = ProxyConfiguration(
                proxies=config.proxies, proxies_settings=getattr(config, "proxies_config", None)
            )
        return cls(create_connector, timeout, proxy_config)

    def proxy_for(self, url: str) -> tuple[str | None, dict[str, str]]:
        """The proxy aiobotocore would use for ``url``, and its headers."""
        from botocore.utils import ensure_boolean

        proxy_url: str | None = self.proxy_config.proxy_url_for(url)
        headers = dict(self.proxy_config.proxy_headers_for(url))
        if ensure_boolean(os.environ.get("BOTO_EXPERIMENTAL__ADD_PROXY_HOST_HEADER", "")):
            from urllib.parse import urlparse

            headers["host"] = urlparse(url).hostname or ""
        return proxy_url, headers

    async def open(self, proxy_url: str | None) -> aiohttp.ClientSession:
        connector = await _resolved(self.create_connector(proxy_url))
        # The session settings of AIOHTTPSession._get_session, so aiohttp adds the same headers.
        return aiohttp.ClientSession(
            connector=connector,
            timeout=self.timeout,
            skip_auto_headers={"CONTENT-TYPE"},
            auto_decompress=False,
        )


def request_ids(headers: Mapping[str, str]) -> dict[str, Any]:
    """The start of botocore's ``ResponseMetadata`` (``_populate_response_metadata``): ``RequestId``,
    and for S3 ``HostId``, from the response's lower-cased headers."""
    metadata: dict[str, Any] = {}
    if "x-amzn-requestid" in headers:
        metadata["RequestId"] = headers["x-amzn-requestid"]
    elif "x-amz-request-id" in headers:
        metadata["RequestId"] = headers["x-amz-request-id"]
        metadata["HostId"] = headers.get("x-amz-id-2", "")
    return metadata


def request_context(client: Any, operation: Any) -> dict[str, Any]:
    """The request context botocore's ``_make_api_call`` builds for ``operation``, for the endpoint
    ruleset and the choose-signer hooks."""
    config = client.meta.config
    auth_type = operation.resolved_auth_type
    preference = getattr(config, "auth_scheme_preference", None)
    if operation.auth and preference:
        from botocore.auth import resolve_auth_scheme_preference

        auth_type = resolve_auth_scheme_preference(preference.split(","), operation.auth)
    return {
        "client_region": client.meta.region_name,
        "client_config": config,
        "has_streaming_input": operation.has_streaming_input,
        "auth_type": auth_type,
        "unsigned_payload": getattr(operation, "unsigned_payload", None),
        "auth_options": client.meta.service_model.metadata.get("auth"),
    }


class _FastClient:
    """What every fast path shares: the checks, the endpoint and signer resolved once per operation,
    one connection pool, signing and sending, and botocore's parsing of errors.

    A subclass names its operations, builds each request (method, URL, headers in botocore's
    order, body) and reads each 2xx; ``_signed_send`` and ``_parse_with_botocore`` do the rest.
    With no operations, nothing is checked or opened: the subclass delegates every call.
    """

    def __init__(self, client: Any, operations: Iterable[str], *, counter: Counter[str] | None) -> None:
        meta = client.meta
        service_model = meta.service_model
        names = tuple(operations)
        self._client = client
        self._counter = counter
        self._operations: dict[str, Any] = {}
        if names:
            mode, attempts = _retries(meta.config)
            if mode != "standard" or attempts != 1:
                raise ConfigError(
                    "fast path: the client must not retry (retries={'mode': 'standard', "
                    f"'total_max_attempts': 1}}, as runtime_client_config sets), got mode={mode!r}, "
                    f"total_max_attempts={attempts!r}"
                )
        for name in names:
            if name not in service_model.operation_names:
                raise ConfigError(f"fast path: {service_model.service_name} has no {name}")
            operation = service_model.operation_model(name)
            raw = getattr(operation, "_operation_model", None) or {}
            for trait in _UNSUPPORTED_TRAITS:
                if raw.get(trait):
                    raise ConfigError(f"fast path: {name} has the {trait!r} trait")
            context_parameters = getattr(operation, "context_parameters", None)
            if (
                context_parameters
                or getattr(operation, "static_context_parameters", None)
                or getattr(operation, "operation_context_parameters", None)
            ):
                raise ConfigError(f"fast path: {name}'s endpoint depends on its arguments")
            self._operations[name] = operation
        self._service_id: str = service_model.service_id.hyphenize()
        self._user_agent = _user_agent(client) if names else ""
        self._sdk_request = "attempt=1"
        try:
            from aiobotocore.retries import standard as aio_standard

            if getattr(aio_standard, "NEW_RETRIES_ENABLED", False):
                # aiobotocore then seeds ``max`` into the first attempt's header too.
                self._sdk_request = "attempt=1; max=1"
        except ImportError:  # pragma: no cover - aiobotocore is a dependency
            pass
        self._parser: Any = None
        if names:
            factory = client._endpoint._response_parser_factory
            self._parser = factory.create_parser(service_model.resolved_protocol)

        self._lock = asyncio.Lock()
        self._closed = False
        self._session: aiohttp.ClientSession | None = None
        self._routes: dict[str, _Route] = {}
        self._proxy_url: str | None = None
        self._proxy_headers: dict[str, str] = {}
        self._in_lambda = False

    @property
    def client(self) -> Any:
        """The aiobotocore client this fast path was made from (and delegates unusual calls to)."""
        return self._client

    def _ruleset_arguments(self, operation_name: str) -> dict[str, Any]:
        """Arguments for resolving the endpoint once; they cannot change it (no context parameters)."""
        return {}

    # ------------------------------------------------------------------------------------------
    # lifecycle

    async def __aenter__(self) -> Self:
        await self._setup()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (never the client); idempotent."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _ready(self) -> aiohttp.ClientSession:
        """The connection pool, opened on first use."""
        await self._setup()
        session = self._session
        assert session is not None
        return session

    async def _setup(self) -> None:
        """Resolve what aiobotocore resolves per call, once: endpoint, signer, proxy, connector."""
        async with self._lock:
            if self._closed:
                raise RuntimeError(f"this {type(self).__name__} is closed")
            if self._session is not None or not self._operations:
                return
            client = self._client
            signer = client._request_signer
            from botocore.auth import _host_from_url

            signer_class = _signer_class()
            signers: dict[tuple[str, str, str], Any] = {}
            routes: dict[str, _Route] = {}
            for name, operation in self._operations.items():
                context = request_context(client, operation)
                endpoint_url, extra_headers, _ = await _resolved(
                    client._resolve_endpoint_ruleset(operation, self._ruleset_arguments(name), context)
                )
                signature_version = await _resolved(signer._choose_signer(name, "standard", context))
                if signature_version != "v4" or context.get("payload_signing_enabled", True) is False:
                    raise ConfigError(
                        f"fast path: the client signs {name} with {signature_version!r}, not SigV4 "
                        "with a signed payload"
                    )
                signing = context.get("signing", {})
                region = signing.get("region") or signer._region_name
                if region is None:
                    from botocore.exceptions import NoRegionError

                    raise NoRegionError()
                service = signing.get("signing_name") or signer._signing_name
                key = (service, region, _host_from_url(endpoint_url))
                auth = signers.get(key)
                if auth is None:
                    # One signer per scope, so operations signed alike share the cached key.
                    auth = signers[key] = signer_class(*key)
                routes[name] = _Route(
                    operation=operation,
                    call_name=f"{self._service_id}.{name}",
                    auth=auth,
                    endpoint_url=endpoint_url,
                    extra_headers=dict(extra_headers or {}),
                    context=context,
                )

            pool = ConnectionPool.of(client)
            # The endpoint's scheme and host are the same for every call, so the proxy is too.
            endpoint_url = next(iter(routes.values())).endpoint_url
            self._proxy_url, self._proxy_headers = pool.proxy_for(endpoint_url)
            for route in routes.values():
                if pool.proxy_for(route.endpoint_url)[0] != self._proxy_url:
                    raise ConfigError("fast path: the operations resolve endpoints behind different proxies")
            # Set by the Lambda runtime before any code runs, and never changed (see the module doc).
            self._in_lambda = "AWS_LAMBDA_FUNCTION_NAME" in os.environ
            self._routes = routes
            self._session = await pool.open(self._proxy_url)

    # ------------------------------------------------------------------------------------------
    # the call

    async def _signed_send(
        self,
        session: aiohttp.ClientSession,
        route: _Route,
        target: _Target,
        headers: dict[str, str],
        body: bytes | bytearray,
    ) -> tuple[int, dict[str, str], bytes]:
        """Count, add the client's headers, sign and send a request whose own headers are in
        ``headers`` (in botocore's order); the status, the lower-cased headers and the body."""
        if self._counter is not None:
            self._counter[route.call_name] += 1
        if route.extra_headers:
            headers.update(route.extra_headers)
        headers["User-Agent"] = self._user_agent
        if self._in_lambda:
            _add_recursion_detection_header(headers)

        credentials = self._client._request_signer._credentials
        frozen = None
        if credentials is not None:
            frozen = await _resolved(credentials.get_frozen_credentials())
        auth = route.auth
        # add_auth is synchronous, so no other call can change the shared signer in between.
        auth.credentials = frozen
        auth.add_auth(_SigningRequest(target.method, target.url, headers, body))
        # (add_auth raises NoCredentialsError without credentials, as botocore does.)
        headers["amz-sdk-invocation-id"] = str(uuid.uuid4())
        headers["amz-sdk-request"] = self._sdk_request
        headers["Content-Length"] = str(len(body))
        headers["Accept-Encoding"] = "identity"
        return await self._send(session, target, headers, body)

    async def _send(
        self,
        session: aiohttp.ClientSession,
        target: _Target,
        headers: dict[str, str],
        body: bytes | bytearray,
    ) -> tuple[int, dict[str, str], bytes]:
        """POST and read the whole answer, mapping errors as ``AIOHTTPSession.send`` does."""
        from botocore import exceptions as bce

        url = target.url
        try:
            response = await session.request(
                target.method,
                target.yarl_url,
                headers=headers,
                # botocore's prepare() turns an empty body into None.
                data=body or None,
                proxy=self._proxy_url,
                proxy_headers=self._proxy_headers,
            )
            # aiobotocore's own conversion, kept whole: every header goes into the result's
            # ResponseMetadata.HTTPHeaders, the last of a repeated name wins, and bytes that are
            # not UTF-8 fail the call (HTTPClientError) as they fail aiobotocore's.
            response_headers = {k.decode("utf-8").lower(): v.decode("utf-8") for k, v in response.raw_headers}
            content = await response.read()
            return response.status, response_headers, content
        except aiohttp.ClientSSLError as e:
            raise bce.SSLError(endpoint_url=url, error=e) from e
        except (aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError) as e:
            from botocore.httpsession import mask_proxy_url

            raise bce.ProxyConnectionError(proxy_url=mask_proxy_url(self._proxy_url), error=e) from e
        except (
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientPayloadError,
            aiohttp.http_exceptions.BadStatusLine,
        ) as e:
            raise bce.ConnectionClosedError(
                error=e,
                request=_prepared_request(target.method, url, headers, body),
                endpoint_url=url,
            ) from e
        except aiohttp.ServerTimeoutError as e:
            if str(e).lower().startswith("connect"):
                raise bce.ConnectTimeoutError(endpoint_url=url, error=e) from e
            raise bce.ReadTimeoutError(endpoint_url=url, error=e) from e
        except (aiohttp.ClientConnectorError, aiohttp.ClientConnectionError, socket.gaierror) as e:
            raise bce.EndpointConnectionError(endpoint_url=url, error=e) from e
        except TimeoutError as e:
            raise bce.ReadTimeoutError(endpoint_url=url, error=e) from e
        except asyncio.CancelledError:
            raise
        except Exception as e:
            raise bce.HTTPClientError(error=e) from e

    # ------------------------------------------------------------------------------------------
    # responses

    async def _parse_with_botocore(
        self, route: _Route, target: _Target, status: int, headers: dict[str, str], content: bytes
    ) -> dict[str, Any]:
        """The client's own parser, for errors and unusual 2xx bodies; raises as the client does."""
        from botocore.awsrequest import HeadersDict

        operation = route.operation
        response_dict = {
            "headers": HeadersDict(headers),
            "status_code": status,
            "body": content,
            "context": {"operation_name": operation.name},
        }
        parser = self._parser
        parsed: dict[str, Any] = await _resolved(parser.parse(response_dict, operation.output_shape))
        if status >= 300:
            await _resolved(
                self._client._endpoint._add_modeled_error_fields(response_dict, parsed, operation, parser)
            )
        if isinstance(parsed, dict):
            parsed.setdefault("ResponseMetadata", {})["MaxAttemptsReached"] = True
            parsed["ResponseMetadata"]["RetryAttempts"] = 0
        if status < 300:
            return parsed
        # _make_api_call's ending: after-call handlers may pick the exception (error_code_override).
        from aiobotocore.awsrequest import AioAWSResponse

        context = dict(route.context)
        await _resolved(
            self._client.meta.events.emit(
                f"after-call.{self._service_id}.{operation.name}",
                http_response=AioAWSResponse(target.url, status, headers, _Content(content)),
                parsed=parsed,
                model=operation,
                context=context,
            )
        )
        code = context.get("error_code_override") or parsed.get("Error", {}).get("Code")
        raise self._client.exceptions.from_code(code)(parsed, operation.name)


class _Content:
    """The raw response an ``AioAWSResponse`` reads its (already read) content from."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    async def read(self) -> bytes:
        return self._content


class FastInvoker(_FastClient):
    """``invoke_endpoint_async`` with aiobotocore's parameters, wire request, results and errors.

    Build one per sagemaker-runtime client (after the ``Body`` model patch, when botocore needs
    it), use it as an async context manager or call ``aclose()``, and call
    ``await invoker.invoke_endpoint_async(**kwargs)`` where you would call the client's method.
    ``counter`` is incremented under ``"sagemaker-runtime.InvokeEndpointAsync"`` for each call the
    fast path sends, as a ``before-call`` handler on the client counts them. Closing the invoker
    closes its own connection pool, never the client.
    """

    def __init__(self, client: Any, *, counter: Counter[str] | None = None) -> None:
        service_model = client.meta.service_model
        if _OPERATION not in service_model.operation_names:
            raise ConfigError(f"fast path: {service_model.service_name} has no {_OPERATION}")
        super().__init__(client, (_OPERATION,), counter=counter)
        self._template = _Template(self._operations[_OPERATION])
        self._targets: dict[str, _Target] = {}

    def _ruleset_arguments(self, operation_name: str) -> dict[str, Any]:
        return {self._template.uri_member: "x"}

    async def invoke_endpoint_async(self, **kwargs: Any) -> dict[str, Any]:
        """Send one InvokeEndpointAsync; the same parameters, result and errors as aiobotocore's."""
        plan = self._template.plan(kwargs)
        if plan is None:
            result: dict[str, Any] = await self._client.invoke_endpoint_async(**kwargs)
            return result
        session = self._session
        if session is None:
            session = await self._ready()
        route = self._routes[_OPERATION]
        endpoint_name, headers, body = plan
        target = self._targets.get(endpoint_name) or self._target(route, endpoint_name)
        status, response_headers, content = await self._signed_send(session, route, target, headers, body)
        if 200 <= status < 300 and self._template.fast_parse:
            parsed = self._parse_success(status, response_headers, content)
            if parsed is not None:
                return parsed
        return await self._parse_with_botocore(route, target, status, response_headers, content)

    def _target(self, route: _Route, endpoint_name: str) -> _Target:
        from botocore.awsrequest import prepare_request_dict
        from botocore.serialize import create_serializer

        serializer = create_serializer(self._client.meta.service_model.resolved_protocol, False)
        request_dict = serializer.serialize_to_request(
            {self._template.uri_member: endpoint_name}, route.operation
        )
        prepare_request_dict(request_dict, endpoint_url=route.endpoint_url)
        url: str = request_dict["url"]
        target = _Target(method=self._template.method, url=url, yarl_url=URL(url, encoded=True))
        if len(self._targets) >= _CACHE_LIMIT:
            self._targets.clear()
        self._targets[endpoint_name] = target
        return target

    def _parse_success(self, status: int, headers: dict[str, str], content: bytes) -> dict[str, Any] | None:
        """botocore's rest-json result for a 2xx, read directly; ``None`` when botocore must parse it."""
        if content:
            try:
                data = json.loads(content.decode("utf-8"))
            except ValueError:
                return None  # botocore turns undecodable bodies into a message, or raises
            if type(data) is not dict:
                return None
        else:
            data = {}
        metadata = request_ids(headers)
        parsed: dict[str, Any] = {"ResponseMetadata": metadata}
        for name, header in self._template.output_headers:
            if header in headers:
                parsed[name] = headers[header]
        for name, key in self._template.output_body:
            value = data.get(key)
            if value is not None:
                parsed[name] = value
        metadata["HTTPStatusCode"] = status
        # The dict _send made for this response alone: botocore's lower-cased copy of it.
        metadata["HTTPHeaders"] = headers
        # What the standard retry handler (max 1 attempt) and the endpoint add to every response.
        metadata["MaxAttemptsReached"] = True
        metadata["RetryAttempts"] = 0
        return parsed


def _add_recursion_detection_header(headers: dict[str, str]) -> None:
    # botocore's before-call handler, which reads the environment on every call (inside Lambda).
    if "AWS_LAMBDA_FUNCTION_NAME" in os.environ and os.environ.get("_X_AMZN_TRACE_ID"):
        from botocore.handlers import add_recursion_detection_header

        add_recursion_detection_header({"headers": headers})


def _user_agent(client: Any) -> str:
    """The User-Agent the client sends on a call that registers no feature of its own."""
    creator = getattr(client, "_user_agent_creator", None)
    if creator is None:
        raise ConfigError("fast path: the client has no user agent creator")
    try:
        from botocore.context import ClientContext, reset_context, set_context
    except ImportError:  # pragma: no cover - botocore before request contexts
        text: str = creator.to_string()
        return text
    # Each call runs in a fresh context; features registered during one (a credential refresh)
    # would only show in that call's header, which the fast path does not reproduce.
    token = set_context(ClientContext())
    try:
        text = creator.to_string()
    finally:
        reset_context(token)
    return text


def _prepared_request(method: str, url: str, headers: Mapping[str, str], body: bytes | bytearray) -> Any:
    """The ``AWSPreparedRequest`` aiobotocore attaches to ``ConnectionClosedError``: header values
    encoded as botocore's endpoint does before ``prepare()`` adds ``Content-Length``."""
    from botocore.awsrequest import AWSPreparedRequest, HeadersDict

    prepared = HeadersDict()
    for name, value in headers.items():
        if name == "Accept-Encoding":
            continue  # added by the HTTP session, not part of botocore's request
        prepared[name] = value if name == "Content-Length" else value.encode("utf-8")
    return AWSPreparedRequest(method, url, prepared, body, False)
