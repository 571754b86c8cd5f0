"""The fast path for the SQS tracker's hot calls: ReceiveMessage, DeleteMessageBatch and
ChangeMessageVisibilityBatch, with aiobotocore's parameters, wire request, results and errors.

A tracked run makes one ReceiveMessage per ~8 notifications and one DeleteMessageBatch per 10;
through aiobotocore each costs about 1.1 ms of CPU (per-call User-Agent, request-dict conversion,
the endpoint ruleset, event hooks, a model walk each way). ``FastSqs`` sends them with the machinery
of ``_fastpath`` (one connector, the endpoint and signer resolved once, botocore's SigV4 with the
key cached, botocore's error mapping) and reads them with conversions compiled once from the model.

**The wire request** is what botocore's JSON serializer makes: ``POST`` to the endpoint's ``/``,
``X-Amz-Target: AmazonSQS.<Operation>``, ``Content-Type: application/x-amz-json-1.0`` and, since SQS
is query-compatible, ``x-amzn-query-mode: true`` (all three taken from the client's own serializer
once), and ``json.dumps`` of the arguments in argument order, member names mapped as the model
says. It is sent only when every argument passes botocore's validation as a plain value (exact
``str``/``int``/``bool``/``list``/``tuple``/``dict`` types, ``min`` lengths and values, required
members, no unknown members, no ``None``); anything else is passed to the client's method
unchanged, so botocore's ``ParamValidationError`` (or its leniency) is what the caller gets.

**The result** of a 2xx is botocore's JSON parse, compiled: structures keep the model's members in
the model's order (wire names mapped back, ``null`` dropped, unknown keys ignored), lists and maps are
walked, scalars are taken as they are, and the shapes botocore converts (blobs, timestamps, tagged
unions) go through the client's parser for that value. ``ResponseMetadata`` is botocore's:
``RequestId`` from ``x-amzn-RequestId``, ``HTTPStatusCode``, every header lower-cased,
``MaxAttemptsReached`` and ``RetryAttempts: 0``. A body that is not a JSON object, a value of the
wrong JSON type, or a ``null`` in a list (botocore versions differ there) sends the whole response
through the client's own parser instead, so the result (or the exception) is its own.

**Errors** go through the client's parser and modeled-error pass and then the client's
``after-call`` event, where botocore's SQS handler turns the ``x-amzn-query-error`` code
(``AWS.SimpleQueueService.NonExistentQueue``) back into the modeled exception (``QueueDoesNotExist``):
the same exception class, ``Error`` dict and ``str()`` as aiobotocore's, so
``fanout._exceptions.run_level_error`` and ``fanout._retry.is_transient`` read them the same way.

**Everything else** (GetQueueAttributes, ``meta``, ``exceptions``, ...) is the wrapped client's,
reached through attribute access. A client whose SQS model does not speak the JSON protocol (a
botocore older than the ones fanout supports, or a model override) is not fast-pathed: every call is
delegated and ``fast`` is ``False``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

from yarl import URL

from ._exceptions import ConfigError
from ._fastpath import _FastClient, _Route, _Target, request_ids

__all__ = ["FastSqs"]

_OPERATIONS: Final = {
    "ReceiveMessage": "receive_message",
    "DeleteMessageBatch": "delete_message_batch",
    "ChangeMessageVisibilityBatch": "change_message_visibility_batch",
}

_Convert = Callable[[Any], Any]


class _Unusual(Exception):
    """A value the compiled conversion leaves to botocore (an argument, or a response value)."""


def _unusual(value: Any) -> Any:
    raise _Unusual


def _identity(value: Any) -> Any:
    return value


# ------------------------------------------------------------------------------------------------
# arguments: botocore's validation for plain values, and the JSON serializer's conversion


def _input(shape: Any, path: frozenset[str] = frozenset()) -> _Convert:
    """Check one argument as botocore's ParamValidator does and convert it as its JSON serializer
    does; raises ``_Unusual`` for anything that is not plainly valid."""
    if shape.name in path:
        return _unusual  # a recursive shape: rare enough to leave to botocore
    path = path | {shape.name}
    kind = shape.type_name
    minimum = shape.metadata.get("min")
    if kind == "string":
        if shape.serialization.get("jsonvalue") or shape.serialization.get("hostLabel"):
            return _unusual
        floor = int(minimum or 0)

        def string(value: Any) -> Any:
            if type(value) is not str or len(value) < floor:
                raise _Unusual
            return value

        return string
    if kind in ("integer", "long"):

        def integer(value: Any) -> Any:
            # bool passes botocore's isinstance check and is sent as true/false: left to botocore.
            if type(value) is not int or (minimum is not None and value < minimum):
                raise _Unusual
            return value

        return integer
    if kind == "boolean":

        def boolean(value: Any) -> Any:
            if type(value) is not bool:
                raise _Unusual
            return value

        return boolean
    if kind == "list":
        item = _input(shape.member, path)
        length = int(minimum or 0)

        def listing(value: Any) -> Any:
            kind = type(value)
            if (kind is not list and kind is not tuple) or len(value) < length:
                raise _Unusual
            return [item(element) for element in value]

        return listing
    if kind == "map":
        key, item = _input(shape.key, path), _input(shape.value, path)

        def mapping(value: Any) -> Any:
            if type(value) is not dict:
                raise _Unusual
            return {key(k): item(v) for k, v in value.items()}

        return mapping
    if kind == "structure" and not shape.is_document_type and not shape.is_tagged_union:
        members: dict[str, tuple[str, _Convert]] = {}
        for name, member in shape.members.items():
            if member.metadata.get("idempotencyToken") or member.serialization.get("location"):
                raise ConfigError(f"fast path: member {name} needs botocore's parameter handlers")
            members[name] = (member.serialization.get("name", name), _input(member, path))
        required = frozenset(shape.required_members)

        def structure(value: Any) -> Any:
            if type(value) is not dict or not required.issubset(value):
                raise _Unusual
            converted = {}
            for name, element in value.items():
                member = members.get(name)
                if member is None:
                    raise _Unusual  # unknown: botocore's ParamValidationError
                converted[member[0]] = member[1](element)
            return converted

        return structure
    return _unusual  # blobs, timestamps, floats, documents, unions: botocore's conversion


# ------------------------------------------------------------------------------------------------
# results: botocore's JSON parser, compiled


def _output(shape: Any, parser: Any, path: frozenset[str] = frozenset()) -> _Convert:
    """What the client's JSON parser makes of one value of ``shape``; ``_Unusual`` where the
    value is not of the JSON type the model expects (botocore then parses the whole response)."""
    if shape.name in path:
        return _unusual
    path = path | {shape.name}
    kind = shape.type_name
    if kind == "structure":
        if shape.is_document_type:
            return _identity
        if shape.is_tagged_union:
            return _botocore_value(parser, shape)
        members = [
            (name, member.serialization.get("name", name), _output(member, parser, path))
            for name, member in shape.members.items()
        ]

        def structure(value: Any) -> Any:
            if type(value) is not dict:
                raise _Unusual
            parsed = {}
            for name, key, convert in members:
                element = value.get(key)
                if element is not None:
                    parsed[name] = convert(element)
            return parsed

        return structure
    if kind == "list":
        item = _output(shape.member, parser, path)

        def listing(value: Any) -> Any:
            if type(value) is not list:
                raise _Unusual
            # A null element: botocore 1.40 parses it as the member shape, later versions keep None.
            return [_unusual(None) if element is None else item(element) for element in value]

        return listing
    if kind == "map":
        key, item = _output(shape.key, parser, path), _output(shape.value, parser, path)

        def mapping(value: Any) -> Any:
            if type(value) is not dict:
                raise _Unusual
            return {key(k): item(v) for k, v in value.items()}

        return mapping
    if hasattr(parser, f"_handle_{kind}"):
        return _botocore_value(parser, shape)  # blobs, timestamps: the parser's own conversion
    return _identity  # botocore's _default_handle: strings, numbers, booleans as JSON has them


def _botocore_value(parser: Any, shape: Any) -> _Convert:
    def convert(value: Any) -> Any:
        return parser._parse_shape(shape, value)

    return convert


class _JsonOperation:
    """One operation's request template and result conversion, read from the model once."""

    __slots__ = ("convert", "headers", "serialize")

    def __init__(self, operation: Any, parser: Any) -> None:
        from botocore.serialize import create_serializer

        # The serializer's constant part: X-Amz-Target, Content-Type, x-amzn-query-mode.
        request = create_serializer("json", False).serialize_to_request({}, operation)
        if request.get("url_path", "/") != "/" or request.get("query_string"):
            raise ConfigError(f"fast path: unexpected request target for {operation.name}")
        self.headers: dict[str, str] = dict(request["headers"])
        self.serialize = _input(operation.input_shape) if operation.input_shape is not None else None
        self.convert = _output(operation.output_shape, parser) if operation.output_shape is not None else None

    def arguments(self, kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """The JSON body's object; ``None`` when botocore must handle the call."""
        if self.serialize is None:
            return None if kwargs else {}
        try:
            converted: dict[str, Any] = self.serialize(kwargs)
        except _Unusual:
            return None
        return converted

    def parse(self, status: int, headers: dict[str, str], content: bytes) -> dict[str, Any] | None:
        """botocore's result for a 2xx; ``None`` when the client's parser must read it."""
        try:
            data = json.loads(content.decode("utf-8")) if content else {}
        except ValueError:
            return None  # botocore turns undecodable bodies into a message, or raises
        if type(data) is not dict:
            return None
        parsed: dict[str, Any] = {}
        if self.convert is not None:
            try:
                parsed = self.convert(data)
            except _Unusual:
                return None
        metadata = request_ids(headers)
        metadata["HTTPStatusCode"] = status
        # The dict _send made for this response alone: botocore's lower-cased copy of it.
        metadata["HTTPHeaders"] = headers
        # What the standard retry handler (max 1 attempt) and the endpoint add to every response.
        metadata["MaxAttemptsReached"] = True
        metadata["RetryAttempts"] = 0
        parsed["ResponseMetadata"] = metadata
        return parsed


class FastSqs(_FastClient):
    """An SQS client whose ``receive_message``, ``delete_message_batch`` and
    ``change_message_visibility_batch`` take the fast path; every other attribute is the client's.

    Build one per aiobotocore SQS client made with ``retries={"mode": "standard",
    "total_max_attempts": 1}`` (fanout retries the tracker's calls itself), use it as an async
    context manager or call ``aclose()``, and pass it where the client would go. ``counter`` is
    incremented under ``"sqs.ReceiveMessage"`` and so on for each call the fast path sends, as a
    ``before-call`` handler on the client counts them. Closing it closes its own connection pool,
    never the client.
    """

    def __init__(self, client: Any, *, counter: Counter[str] | None = None) -> None:
        service_model = client.meta.service_model
        fast = service_model.resolved_protocol == "json" and service_model.metadata.get("targetPrefix")
        super().__init__(client, tuple(_OPERATIONS) if fast else (), counter=counter)
        self._plans = {name: _JsonOperation(op, self._parser) for name, op in self._operations.items()}
        self._targets: dict[str, _Target] = {}

    @property
    def fast(self) -> bool:
        """Whether the three calls take the fast path (``False``: the client's model is not JSON)."""
        return bool(self._plans)

    def __getattr__(self, name: str) -> Any:
        # Only reached for what FastSqs lacks: the client's other calls and attributes.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._client, name)

    async def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        """ReceiveMessage, as the client's ``receive_message``."""
        return await self._call("ReceiveMessage", kwargs)

    async def delete_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        """DeleteMessageBatch, as the client's ``delete_message_batch``."""
        return await self._call("DeleteMessageBatch", kwargs)

    async def change_message_visibility_batch(self, **kwargs: Any) -> dict[str, Any]:
        """ChangeMessageVisibilityBatch, as the client's ``change_message_visibility_batch``."""
        return await self._call("ChangeMessageVisibilityBatch", kwargs)

    async def _call(self, name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        plan = self._plans.get(name)
        arguments = plan.arguments(kwargs) if plan is not None else None
        if plan is None or arguments is None:
            result: dict[str, Any] = await getattr(self._client, _OPERATIONS[name])(**kwargs)
            return result
        session = self._session
        if session is None:
            session = await self._ready()
        route = self._routes[name]
        target = self._targets.get(name) or self._target(name, route)
        headers = dict(plan.headers)
        body = json.dumps(arguments).encode("utf-8")
        status, response_headers, content = await self._signed_send(session, route, target, headers, body)
        if 200 <= status < 300:
            parsed = plan.parse(status, response_headers, content)
            if parsed is not None:
                return parsed
        return await self._parse_with_botocore(route, target, status, response_headers, content)

    def _target(self, name: str, route: _Route) -> _Target:
        from botocore.awsrequest import prepare_request_dict
        from botocore.serialize import create_serializer

        request_dict = create_serializer("json", False).serialize_to_request({}, route.operation)
        prepare_request_dict(request_dict, endpoint_url=route.endpoint_url)
        url: str = request_dict["url"]
        target = _Target(method=request_dict["method"], url=url, yarl_url=URL(url, encoded=True))
        self._targets[name] = target
        return target
