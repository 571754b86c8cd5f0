"""The fast path for fetching results: S3 GetObject, with aiobotocore's parameters, wire request,
retries, result and errors.

A run that fetches its results makes one GetObject per succeeded request (and a ranged one per
failure object it reads); through aiobotocore each costs about 1.1 ms of CPU (per-call User-Agent,
parameter handlers, the endpoint ruleset, the signer's choice, event hooks, a walk of the 46-member
output shape). ``FastS3`` sends them with the machinery of ``_fastpath`` (one connector, botocore's
SigV4 with the key cached, aiobotocore's transport-error mapping) and does the per-bucket work once.

**What is resolved once per bucket**, by the client's own pipeline run for the bucket and a sentinel
key, exactly as ``_make_api_call`` runs it (in a request context of its own): the parameter handlers
(bucket-name validation, the redirect cache, ``ChecksumMode: ENABLED`` when response checksums are
validated), the endpoint ruleset (virtual-hosted or path-style, custom endpoint URLs such as the
emulator's, FIPS, dual-stack, ``addressing_style``), the serializer and ``prepare_request_dict``
(the User-Agent, the endpoint's headers), the checksum context, the ``choose-signer`` handlers, and
one prepared request made by the client's ``request-created`` handlers (its signer, the retry
headers). What is kept: the URL and request path around the sentinel, the headers before signing,
the request context, the first attempt's ``amz-sdk-request`` value, and a signer for the scope.
Buckets whose request the fast path would not reproduce stay on aiobotocore for good: ARNs (access
points, Object Lambda, outposts, multi-region access points), S3 Express directory buckets (their
own session auth), any signer other than botocore's ``S3SigV4Auth`` (SigV4a, a CRT signer), a
prepared request with headers or a URL the pipeline did not produce (a ``before-sign`` handler), a
proxy other than the endpoint's. A pipeline that raises (an invalid bucket name, no credentials) is
not cached: that call goes to aiobotocore, which raises its own error.

**What runs per call**: a type check of the arguments (``Bucket`` and ``Key`` strings, ``Key`` not
empty; ``Range``, ``IfMatch``, ``IfNoneMatch`` and ``ExpectedBucketOwner`` printable ASCII strings),
``percent_encode(Key, safe="/~")`` (the rest serializer's own call for ``{Key+}``, so ``/`` is kept
and nothing is normalised: spaces, unicode, ``~``, ``..``, ``//``, a leading ``/`` are as botocore
sends them), the request dict and context that botocore would build, ``get_frozen_credentials()``,
botocore's ``S3SigV4Auth.add_auth`` (``x-amz-content-sha256`` of the empty payload, or
``UNSIGNED-PAYLOAD`` as the client's ``s3`` config says, no path normalisation) with the signing key
cached per secret, day, region and service, and the GET.

**Retries** are the client's: after each attempt the client's endpoint emits ``needs-retry`` with
the same arguments as on aiobotocore (its legacy or standard retry handler, with its quota, and
the S3 region redirector decide, and it sleeps), and a retry is sent by the client's endpoint itself
(``create_request`` and ``_get_response``: signed anew, redirected when the redirector says so).
``ResponseMetadata.RetryAttempts`` and ``MaxAttemptsReached`` are set as they are there. A bucket
whose request was redirected is resolved again on its next call (the redirector caches its region).

**The result** of a 2xx is botocore's rest-xml parse, compiled: ``Body`` is aiobotocore's own
``AioStreamingBody`` over the unread aiohttp response (wrapped by aiobotocore's
``handle_checksum_body`` when a ``x-amz-checksum-*`` header is to be validated), so ``async with
response["Body"] as stream: await stream.read()`` reads, checks the length and the checksum, and
releases the connection as it does there; the header members are converted as the client's parser
converts them (timestamps remembered), in the model's order: ``LastModified`` a ``datetime`` in
UTC, ``ContentLength`` an ``int``, ``Metadata`` from ``x-amz-meta-*``. ``ResponseMetadata`` is
botocore's (``RequestId`` and ``HostId`` from ``x-amz-request-id`` and ``x-amz-id-2``,
``HTTPStatusCode``, every header lower-cased, ``ChecksumAlgorithm`` when one is checked). A
response with an ``Expires`` header (which botocore's ``before-parse`` handler rewrites) is parsed
by the client's own parser.

**Errors**: a non-2xx body is read and goes through the client's ``before-parse`` handlers, its
parser and its modeled-error pass, then (after the retries) its ``after-call`` event, so
NoSuchKey, NoSuchBucket, AccessDenied, a 403 without a body, 5xx and SlowDown raise the same
exception class with the same ``Error`` dict and ``str()`` as aiobotocore's. Transport failures are
mapped by ``_FastClient._send``, the mapping of aiobotocore's ``AIOHTTPSession.send``
(``EndpointConnectionError``, ``ConnectionClosedError``, ``ReadTimeoutError``, ...), and
``after-call-error`` is emitted for them, so ``fanout._retry.classify`` reads both paths alike.

**Everything else** (PutObject, HeadObject, ListObjectsV2, ``meta``, ``exceptions``, ...) is the
wrapped client's, reached through attribute access, and so is a GetObject with any other argument
(``VersionId``, ``PartNumber``, SSE-C keys, ``ChecksumMode``, the ``Response*`` overrides, a
``datetime``, a value of another type, an unknown name). A client whose retry mode is ``adaptive``
(its rate limiter hooks ``before-send``) or whose model is not rest-xml is not fast-pathed: every
call is delegated and ``fast`` is ``False``.

**What it does not do**: the first attempt emits none of ``before-call``, ``request-created``,
``before-sign``, ``before-send`` and ``response-received`` (a retry, made by the client's endpoint,
emits its own), so a ``Stubber`` or a ``before-call`` counter does not see fast-path calls; pass
``counter=`` to count them as the client's ``before-call`` events would. ``needs-retry``,
``after-call`` and ``after-call-error`` are emitted: the retry handlers, the region redirector and
the standard mode's retry quota need them. As in ``_fastpath``, a User-Agent feature registered
while a call refreshes its credentials is not in that call's first header, and the proxy
environment is read when the pool opens and when a bucket is resolved, not on every call.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Final, cast

import aiohttp
from yarl import URL

from ._exceptions import ConfigError
from ._fastpath import (
    _CACHE_LIMIT,
    ConnectionPool,
    _add_recursion_detection_header,
    _FastClient,
    _resolved,
    _signer_class,
    _SigningRequest,
    _Target,
    request_context,
    request_ids,
)

__all__ = ["FastS3"]

_OPERATION: Final = "GetObject"
_SENTINEL: Final = "~fanout~key~"
"""The key the pipeline is run with: unchanged by percent-encoding, impossible in a bucket name or host."""
_HEADER_ARGUMENTS: Final = ("Range", "IfMatch", "IfNoneMatch", "ExpectedBucketOwner")
"""String header members no parameter handler touches: sent as given, in argument order."""
_SIGNER_HEADERS: Final = frozenset(
    {"X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Content-SHA256", "Authorization"}
)
_RETRY_HEADERS: Final = ("amz-sdk-invocation-id", "amz-sdk-request")
_TIMESTAMP_CACHE: Final = 256

_Convert = Callable[[str], Any]


@cache
def _s3_signer_class() -> type[Any]:
    """botocore's ``S3SigV4Auth`` on a plain-dict request, with the derived key cached.

    ``S3SigV4Auth`` comes first in the MRO, so its payload hash and its unnormalised path win over
    the cached SigV4 signer's; that signer brings the host header and the cached signing key.
    """
    from botocore.auth import S3SigV4Auth

    class CachingS3SigV4Auth(S3SigV4Auth, _signer_class()):  # type: ignore[misc]
        pass

    return CachingS3SigV4Auth


@dataclass(frozen=True, slots=True)
class _Bucket:
    """What the client's pipeline resolves for one bucket, split around the sentinel key."""

    url: tuple[str, str]
    url_path: tuple[str, str]
    auth_path: tuple[str, str] | None
    request_dict: dict[str, Any]
    """The request dict botocore built for the sentinel (method, body, query string)."""
    headers: dict[str, str]
    """The headers before signing, after the argument headers (ChecksumMode's, the User-Agent)."""
    params: dict[str, Any]
    """What the parameter handlers added to the arguments (``ChecksumMode``)."""
    context: dict[str, Any]
    auth: Any
    sdk_request: str
    features: frozenset[str]
    """The User-Agent features the pipeline registered in its request context."""


class _StreamingSession:
    """Stands in for the aiohttp session in ``_FastClient._send``, which maps transport errors as
    aiobotocore's ``send`` does and reads the body: here the body is left unread for the caller's
    stream (aiobotocore reads a GetObject's body outside that mapping too)."""

    __slots__ = ("_session", "response")

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self.response: aiohttp.ClientResponse | None = None

    async def request(self, *args: Any, **kwargs: Any) -> _Unread:
        response = await self._session.request(*args, **kwargs)
        self.response = response
        return _Unread(response)


class _Unread:
    """The status and headers of a response whose body ``_FastClient._send`` must not read."""

    __slots__ = ("raw_headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.status = response.status
        self.raw_headers = response.raw_headers

    async def read(self) -> bytes:
        return b""


class _Timestamps:
    """The parser's conversion of a timestamp header, remembered: results written in the same
    second share their ``Last-Modified``, and dateutil's parse is the costliest part of a result."""

    def __init__(self, convert: _Convert) -> None:
        self._convert = convert
        self._seen: dict[str, Any] = {}

    def __call__(self, value: str) -> Any:
        parsed = self._seen.get(value)
        if parsed is None:
            parsed = self._convert(value)  # datetimes are immutable: sharing one is safe
            if len(self._seen) >= _TIMESTAMP_CACHE:
                self._seen.clear()
            self._seen[value] = parsed
        return parsed


def _identity(value: str) -> str:
    return value


class _Output:
    """GetObject's output shape, read once: how botocore's rest-xml parser fills each member."""

    def __init__(self, shape: Any, parser: Any) -> None:
        self.payload: str = shape.serialization["payload"]
        self.members: list[tuple[str, str, str, Any]] = []
        """(name, location, lower-cased header or prefix, conversion), in the model's order."""
        for name, member in shape.members.items():
            location = member.serialization.get("location")
            if location is None:
                continue
            header = member.serialization.get("name", name).lower()
            if location == "header":
                convert = self._converter(member, parser)
            elif location in ("headers", "statusCode"):
                convert = member  # the parser's own method, with the shape
            else:
                raise ConfigError(f"fast path: GetObject's {name} is in {location!r}")
            self.members.append((name, location, header, convert))
        self.parser = parser

    @staticmethod
    def _converter(member: Any, parser: Any) -> _Convert:
        kind = member.type_name
        if kind == "string" and not member.serialization.get("jsonvalue"):
            return _identity
        if kind in ("integer", "long"):
            return int  # the parser's _handle_integer
        if kind == "timestamp":
            return _Timestamps(lambda value: parser._parse_shape(member, value))

        def convert(value: str) -> Any:
            return parser._parse_shape(member, value)

        return convert

    def parse(self, response_dict: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """botocore's result for a 2xx whose headers need no ``before-parse`` handler."""
        status: int = response_dict["status_code"]
        metadata = request_ids(headers)
        parsed: dict[str, Any] = {"ResponseMetadata": metadata}
        for name, location, header, convert in self.members:
            if location == "header":
                value = headers.get(header)
                if value is not None:
                    parsed[name] = convert(value)
            elif location == "headers":
                parsed[name] = self.parser._parse_header_map(convert, headers)
            else:
                parsed[name] = self.parser._parse_shape(convert, status)
        parsed[self.payload] = response_dict["body"]
        metadata["HTTPStatusCode"] = status
        # The dict _send made for this response alone: botocore's lower-cased copy of it.
        metadata["HTTPHeaders"] = headers
        # Set by handle_checksum_body when the body's checksum is to be validated as it is read.
        algorithm = response_dict["context"].get("checksum", {}).get("response_algorithm")
        if algorithm:
            metadata["ChecksumAlgorithm"] = algorithm
        return parsed


class FastS3(_FastClient):
    """An S3 client whose ``get_object(Bucket=, Key=[, Range=])`` takes the fast path; every other
    call and attribute is the client's.

    Build one per aiobotocore S3 client, use it as an async context manager or call ``aclose()``,
    and pass it where the client would go. ``counter`` is incremented under ``"s3.GetObject"`` for
    each call the fast path sends, once however many attempts it takes, as a ``before-call``
    handler on the client counts them. Closing it closes its own connection pool, never the client.
    """

    def __init__(self, client: Any, *, counter: Counter[str] | None = None) -> None:
        super().__init__(client, (), counter=counter)
        service_model = client.meta.service_model
        retries = getattr(client.meta.config, "retries", None) or {}
        self._fast = (
            service_model.resolved_protocol == "rest-xml"
            and _OPERATION in service_model.operation_names
            and retries.get("mode") != "adaptive"
        )
        self._operation: Any = None
        self._output: _Output | None = None
        self._header_arguments: dict[str, str] = {}
        if self._fast:
            operation = service_model.operation_model(_OPERATION)
            payload = operation.output_shape.serialization.get("payload")
            if payload is None or operation.output_shape.members[payload].type_name != "blob":
                raise ConfigError("fast path: GetObject's output has no blob payload")
            factory = client._endpoint._response_parser_factory
            self._parser = factory.create_parser(service_model.resolved_protocol)
            self._operation = operation
            self._output = _Output(operation.output_shape, self._parser)
            for name in _HEADER_ARGUMENTS:
                member = operation.input_shape.members.get(name)
                if member is not None and member.serialization.get("location") == "header":
                    self._header_arguments[name] = member.serialization.get("name", name)
        self._pool: ConnectionPool | None = None
        self._buckets: dict[str, _Bucket | None] = {}
        """Each bucket's resolution, or ``None``: its calls stay on aiobotocore."""
        self._signers: dict[tuple[str, str, str], Any] = {}
        self._resolving = asyncio.Lock()

    @property
    def fast(self) -> bool:
        """Whether GetObject takes the fast path (``False``: adaptive retries, or not a rest-xml model)."""
        return self._fast

    def __getattr__(self, name: str) -> Any:
        # Only reached for what FastS3 lacks: the client's other calls and attributes.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._client, name)

    # ------------------------------------------------------------------------------------------
    # lifecycle

    async def _setup(self) -> None:
        """Open the connection pool: aiobotocore's connector, timeouts and the endpoint's proxy."""
        async with self._lock:
            if self._closed:
                raise RuntimeError(f"this {type(self).__name__} is closed")
            if self._session is not None or not self._fast:
                return
            pool = self._pool = ConnectionPool.of(self._client)
            # Picked for the client's endpoint; a bucket whose host would use another stays on aiobotocore.
            self._proxy_url, self._proxy_headers = pool.proxy_for(self._client.meta.endpoint_url)
            # Set by the Lambda runtime before any code runs, and never changed (see _fastpath).
            self._in_lambda = "AWS_LAMBDA_FUNCTION_NAME" in os.environ
            self._session = await pool.open(self._proxy_url)

    # ------------------------------------------------------------------------------------------
    # the call

    async def get_object(self, **kwargs: Any) -> dict[str, Any]:
        """GetObject, as the client's ``get_object``."""
        plan = self._plan(kwargs) if self._fast else None
        if plan is None:
            return await self._delegate(kwargs)
        bucket, key, argument_headers = plan
        session = self._session
        if session is None:
            session = await self._ready()
        route = self._buckets[bucket] if bucket in self._buckets else await self._resolve(bucket)
        if route is None:
            return await self._delegate(kwargs)
        from botocore.utils import percent_encode

        try:
            encoded: str = percent_encode(key, safe="/~")
        except UnicodeEncodeError:
            return await self._delegate(kwargs)  # a lone surrogate: the serializer's own error
        if self._counter is not None:
            self._counter["s3.GetObject"] += 1
        request_dict = self._request_dict(route, bucket, key, encoded, kwargs, argument_headers)
        from aiobotocore.context import start_as_current_context
        from botocore.context import ClientContext

        # The call's own request context, as _make_api_call has: a retry's User-Agent is rebuilt
        # from it, with the pipeline's features and any a retry handler adds (a region redirect).
        async with start_as_current_context(ClientContext(features=set(route.features))):
            return await self._call(session, route, request_dict)

    async def _call(
        self, session: aiohttp.ClientSession, route: _Bucket, request_dict: dict[str, Any]
    ) -> dict[str, Any]:
        """The endpoint's ``_send_request`` with a fast first attempt, and ``_make_api_call``'s end."""
        context = request_dict["context"]
        operation = self._operation
        endpoint = self._client._endpoint
        events = self._client.meta.events
        try:
            endpoint._update_retries_context(context, 1)
            response, exception = await self._first_attempt(session, route, request_dict)
            attempts = 1
            while await endpoint._needs_retry(attempts, operation, request_dict, response, exception):
                attempts += 1
                if response is not None and response[0].status_code < 300:
                    response[0].raw.release()  # a retried 2xx: its body is never read
                endpoint._update_retries_context(context, attempts, response)
                request = await endpoint.create_request(request_dict, operation)
                response, exception = await endpoint._get_response(request, operation, context)
            if response is not None and "ResponseMetadata" in response[1]:
                response[1]["ResponseMetadata"]["RetryAttempts"] = attempts - 1
            if exception is not None:
                raise exception
        except Exception as e:
            await events.emit(f"after-call-error.s3.{_OPERATION}", exception=e, context=context)
            raise
        finally:
            redirect = context["s3_redirect"]
            if redirect.get("redirected"):
                self._buckets.pop(redirect["bucket"], None)  # the redirector now knows its region
        assert response is not None
        http_response, parsed = response
        await events.emit(
            f"after-call.s3.{_OPERATION}",
            http_response=http_response,
            parsed=parsed,
            model=operation,
            context=context,
        )
        if http_response.status_code >= 300:
            code = context.get("error_code_override") or parsed.get("Error", {}).get("Code")
            raise self._client.exceptions.from_code(code)(parsed, _OPERATION)
        return parsed

    async def _delegate(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._client.get_object(**kwargs)
        return result

    def _plan(self, kwargs: dict[str, Any]) -> tuple[str, str, dict[str, str]] | None:
        """The bucket, the key and the argument headers (in argument order); ``None`` to delegate."""
        bucket = kwargs.get("Bucket")
        key = kwargs.get("Key")
        if type(bucket) is not str or type(key) is not str or not key:
            return None
        headers: dict[str, str] = {}
        for name, value in kwargs.items():
            if name == "Bucket" or name == "Key":
                continue
            header = self._header_arguments.get(name)
            if header is None or type(value) is not str or not (value.isascii() and value.isprintable()):
                return None
            headers[header] = value
        return bucket, key, headers

    def _request_dict(
        self,
        route: _Bucket,
        bucket: str,
        key: str,
        encoded: str,
        kwargs: dict[str, Any],
        argument_headers: dict[str, str],
    ) -> dict[str, Any]:
        """The request dict and context ``_make_api_call`` would build for this call."""
        params = dict(kwargs)
        for name, value in route.params.items():
            params.setdefault(name, value)
        context = dict(route.context)
        # What the handlers put in the context per call (see the redirector and _inject_s3_input_parameters).
        context["s3_redirect"] = {"redirected": False, "bucket": bucket, "params": params}
        context["input_params"] = {"Bucket": bucket, "Key": key}
        if "signing" in context:
            context["signing"] = dict(context["signing"])
        if "checksum" in context:
            context["checksum"] = dict(context["checksum"])
        headers = argument_headers
        headers.update(route.headers)
        if self._in_lambda:
            _add_recursion_detection_header(headers)
        request_dict = dict(route.request_dict)
        request_dict["url"] = route.url[0] + encoded + route.url[1]
        request_dict["url_path"] = route.url_path[0] + encoded + route.url_path[1]
        if route.auth_path is not None:
            request_dict["auth_path"] = route.auth_path[0] + encoded + route.auth_path[1]
        request_dict["headers"] = headers
        request_dict["context"] = context
        return request_dict

    async def _first_attempt(
        self, session: aiohttp.ClientSession, route: _Bucket, request_dict: dict[str, Any]
    ) -> tuple[tuple[Any, dict[str, Any]] | None, Exception | None]:
        """Sign and send the first attempt; ``(http_response, parsed)`` or the transport error, as
        the endpoint's ``_get_response`` returns them."""
        from aiobotocore.awsrequest import AioAWSResponse

        context = request_dict["context"]
        url: str = request_dict["url"]
        headers = dict(request_dict["headers"])
        credentials = self._client._request_signer._credentials
        frozen = None
        if credentials is not None:
            frozen = await _resolved(credentials.get_frozen_credentials())
        auth = route.auth
        # add_auth is synchronous, so no other call can change the shared signer in between.
        auth.credentials = frozen
        signing = _SigningRequest("GET", url, headers, b"")
        signing.context = context  # botocore signs with the request's context (and stamps it)
        auth.add_auth(signing)
        headers["amz-sdk-invocation-id"] = context["retries"]["invocation-id"]
        headers["amz-sdk-request"] = route.sdk_request
        headers["Accept-Encoding"] = "identity"
        streaming = _StreamingSession(session)
        target = _Target(method="GET", url=url, yarl_url=URL(url, encoded=True))
        try:
            status, response_headers, _ = await self._send(
                cast("aiohttp.ClientSession", streaming), target, headers, b""
            )
        except Exception as e:  # the mapped transport error: a value for needs-retry
            return None, e
        raw = streaming.response
        assert raw is not None
        http_response = AioAWSResponse(str(raw.url), status, response_headers, raw)
        parsed = await self._parse(http_response, response_headers, context)
        return (http_response, parsed), None

    async def _parse(
        self, http_response: Any, headers: dict[str, str], context: dict[str, Any]
    ) -> dict[str, Any]:
        """What the endpoint's ``_do_get_response`` makes of a response once it is received."""
        from aiobotocore.endpoint import convert_to_response_dict
        from aiobotocore.httpchecksum import handle_checksum_body

        operation = self._operation
        output = self._output
        assert output is not None
        response_dict = await convert_to_response_dict(http_response, operation)
        await handle_checksum_body(http_response, response_dict, context, operation)
        status: int = http_response.status_code
        if 200 <= status < 300 and "expires" not in headers:
            return output.parse(response_dict, headers)
        customized: dict[str, Any] = {}
        await self._client.meta.events.emit(
            f"before-parse.s3.{_OPERATION}",
            operation_model=operation,
            response_dict=response_dict,
            customized_response_dict=customized,
        )
        parsed: dict[str, Any] = await _resolved(self._parser.parse(response_dict, operation.output_shape))
        parsed.update(customized)
        if status >= 300:
            await _resolved(
                self._client._endpoint._add_modeled_error_fields(
                    response_dict, parsed, operation, self._parser
                )
            )
        return parsed

    # ------------------------------------------------------------------------------------------
    # one bucket's resolution

    async def _resolve(self, bucket: str) -> _Bucket | None:
        """The bucket's resolution (cached), or ``None`` when this call goes to aiobotocore."""
        async with self._resolving:
            if bucket in self._buckets:
                return self._buckets[bucket]
            try:
                route = await self._run_pipeline(bucket)
            except Exception:
                # Raised again by the client for this call (an invalid name, no credentials); not
                # cached, so the next call tries again.
                return None
            if len(self._buckets) >= _CACHE_LIMIT:
                self._buckets.clear()
            self._buckets[bucket] = route
            return route

    async def _run_pipeline(self, bucket: str) -> _Bucket | None:
        """``_make_api_call`` up to the prepared request, for the bucket and the sentinel key."""
        from aiobotocore.context import start_as_current_context
        from botocore.auth import AUTH_TYPE_MAPS, S3SigV4Auth, _host_from_url
        from botocore.client import resolve_checksum_context
        from botocore.context import get_context
        from botocore.utils import ArnParser

        if ArnParser.is_arn(bucket):
            return None
        client = self._client
        operation = self._operation
        async with start_as_current_context():
            context = request_context(client, operation)
            params = await client._emit_api_params(
                api_params={"Bucket": bucket, "Key": _SENTINEL}, operation_model=operation, context=context
            )
            endpoint_url, extra_headers, properties = await client._resolve_endpoint_ruleset(
                operation, params, context
            )
            if properties:
                context["endpoint_properties"] = properties
            request_dict = await client._convert_to_request_dict(
                api_params=params,
                operation_model=operation,
                endpoint_url=endpoint_url,
                context=context,
                headers=extra_headers,
            )
            resolve_checksum_context(request_dict, operation, params)
            features = frozenset(get_context().features)
            signer = client._request_signer
            signature_version = await _resolved(signer._choose_signer(_OPERATION, "standard", context))
            signing = context.get("signing") or {}
            if (
                AUTH_TYPE_MAPS.get(signature_version) is not S3SigV4Auth
                or signing.get("request_credentials")
                or signing.get("identity_cache") is not None
                or "read_timeout" in context
                or request_dict["method"] != "GET"
                or request_dict["body"]
            ):
                return None  # S3 Express, SigV4a, a CRT signer, ...: botocore's signer and hooks
            # One request made by the client's request-created handlers, from a copy: what its signer
            # and retry headers add, and that nothing else (a before-sign handler) changes it.
            probe_context = dict(context)
            if "signing" in context:
                probe_context["signing"] = dict(context["signing"])
            probe = dict(request_dict, headers=dict(request_dict["headers"]), context=probe_context)
            client._endpoint._update_retries_context(probe["context"], 1)
            prepared = await client._endpoint.create_request(probe, operation)
        url: str = request_dict["url"]
        expected = [*request_dict["headers"], *_RETRY_HEADERS]
        if (
            prepared.url != url
            or [name for name in prepared.headers if name not in _SIGNER_HEADERS] != expected
            or url.count(_SENTINEL) != 1
            or request_dict["url_path"].count(_SENTINEL) != 1
            or "?" in url.partition(_SENTINEL)[0]
        ):
            return None
        if self._pool is None or self._pool.proxy_for(url) != (self._proxy_url, self._proxy_headers):
            return None  # one connector, one proxy: the endpoint's (see _setup)
        region = signing.get("region") or signer._region_name
        service = signing.get("signing_name") or signer._signing_name
        scope = (service, region, _host_from_url(url))
        auth = self._signers.get(scope)
        if auth is None:
            auth = self._signers[scope] = _s3_signer_class()(*scope)
        auth_path = request_dict.get("auth_path")
        added = {name: value for name, value in params.items() if name not in ("Bucket", "Key")}
        return _Bucket(
            url=_split(url),
            url_path=_split(request_dict["url_path"]),
            auth_path=_split(auth_path) if isinstance(auth_path, str) and _SENTINEL in auth_path else None,
            request_dict=request_dict,
            headers=dict(request_dict["headers"]),
            params=added,
            context=context,
            auth=auth,
            sdk_request=_text(prepared.headers["amz-sdk-request"]),
            features=features,
        )


def _text(value: str | bytes) -> str:
    # The endpoint encodes a prepared request's header values to bytes.
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _split(text: str) -> tuple[str, str]:
    before, _, after = text.partition(_SENTINEL)
    return before, after
