"""The JSONL contract of ``fanout run``: one input line in, one output record out.

Pure functions, no I/O. An input line becomes an ``InferenceRequest`` or, when it
cannot be one, a ``Rejected`` that names the line and the reason. An outcome
becomes the output object with exactly the contract's fields.

Hostile lines are rejections, never crashes: invalid UTF-8, ``NaN``/``Infinity``
and numbers too large for a double (``1e400`` would be sent as ``Infinity``, which
is not JSON), nesting deeper than ``MAX_DEPTH``, and strings holding lone
surrogates (``"\ud800"`` is valid JSON but not Unicode, so it can be neither sent
nor written back).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from ._config import parse_s3_uri
from ._exceptions import ConfigError
from ._models import Expired, InferenceRequest, Outcome, Rejected, Succeeded, encode_json

__all__ = [
    "INPUT_FIELDS",
    "MAX_DEPTH",
    "OUTPUT_FIELDS",
    "LineDefaults",
    "format_outcome",
    "format_timestamp",
    "outcome_record",
    "parse_line",
]

MAX_DEPTH: Final = 512
"""The deepest nesting of arrays and objects an input line may have."""

_PAYLOAD_FIELDS: Final = ("body", "body_base64", "input_location")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
_OPTIONAL_STRING_FIELDS: Final = ("content_type", "accept", "custom_attributes", "inference_id")
INPUT_FIELDS: Final = frozenset(("id", *_PAYLOAD_FIELDS, *_OPTIONAL_STRING_FIELDS))
"""Every field an input line may have; any other field is a mistake worth reporting."""

OUTPUT_FIELDS: Final = (
    "id",
    "line",
    "inference_id",
    "status",
    "payload",
    "output_location",
    "failure_location",
    "failure_reason",
    "attempts",
    "submitted_at",
    "completed_at",
)
"""The fields every output record has, in order; ``result`` or ``result_base64`` follows them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LineDefaults:
    """Values the command line gives every request, unless the line says otherwise."""

    content_type: str | None = "application/json"
    request_ttl_seconds: int | None = None
    invocation_timeout_seconds: int | None = None


_DEFAULTS = LineDefaults()


class _BadLine(Exception):
    def __init__(self, reason: str, *, id: str | None = None, inference_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.id = id
        self.inference_id = inference_id


def parse_line(
    raw: bytes | str, line: int, defaults: LineDefaults = _DEFAULTS, *, now: float = 0.0
) -> InferenceRequest | Rejected:
    """Turn input line number ``line`` (1-based) into a request, or a ``Rejected`` saying why not.

    The request's ``id`` defaults to the line number, as a string. ``now`` becomes
    the ``completed_at`` of a rejection.
    """
    try:
        return _parse(raw, line, defaults)
    except _BadLine as bad:
        return Rejected(
            reason=f"line {line}: {bad.reason}",
            id=bad.id if bad.id is not None else str(line),
            inference_id=bad.inference_id,
            line=line,
            completed_at=now,
        )


def _parse(raw: bytes | str, line: int, defaults: LineDefaults) -> InferenceRequest:
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _BadLine(f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    else:
        text = raw
    depth = _nesting(text)
    if depth > MAX_DEPTH:
        raise _BadLine(f"nested {depth} levels deep; at most {MAX_DEPTH} are allowed")
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise _BadLine(f"malformed JSON: {exc}") from None
    except _OutOfRange as exc:
        raise _BadLine(str(exc)) from None
    except ValueError as exc:  # NaN or Infinity, or an integer of more than 4,300 digits
        raise _BadLine(f"malformed JSON: {exc}") from None
    except RecursionError:  # pragma: no cover - _nesting keeps lines far from the limit
        raise _BadLine("nested too deeply") from None
    surrogate = _find_surrogate(value) if _may_hold_surrogates(text) else None
    if surrogate is not None:
        where, found = surrogate
        raise _BadLine(
            f"{where} holds a lone surrogate {found!a}, which is not valid Unicode "
            "(a \\ud800-\\udfff escape that is not half of a pair)"
        )
    if not isinstance(value, dict):
        raise _BadLine(f"expected a JSON object, got {_json_type(value)}")

    raw_id = value.get("id")
    if "id" in value and not (isinstance(raw_id, str) and raw_id):
        raise _BadLine(f"id must be a non-empty string, got {_json_type(raw_id)} {_short(raw_id)}")
    request_id = raw_id if isinstance(raw_id, str) else str(line)
    raw_inference_id = value.get("inference_id")
    inference_id = raw_inference_id if isinstance(raw_inference_id, str) else None

    def bad(reason: str) -> _BadLine:
        return _BadLine(reason, id=request_id, inference_id=inference_id)

    unknown = sorted(set(value) - INPUT_FIELDS)
    if unknown:
        allowed = ", ".join(sorted(INPUT_FIELDS))
        raise bad(f"unknown field {', '.join(map(repr, unknown))} (allowed: {allowed})")
    for name in _OPTIONAL_STRING_FIELDS:
        if name in value and not (isinstance(value[name], str) and value[name]):
            raise bad(f"{name} must be a non-empty string, got {_json_type(value[name])}")

    given = [name for name in _PAYLOAD_FIELDS if name in value]
    if len(given) != 1:
        if given:
            raise bad(f"give exactly one of body, body_base64 or input_location, not {' and '.join(given)}")
        raise bad("give exactly one of body, body_base64 or input_location")

    body: bytes | None = None
    input_location: str | None = None
    if "body" in value:
        body = encode_json(value["body"])
    elif "body_base64" in value:
        encoded = value["body_base64"]
        if not isinstance(encoded, str):
            raise bad(f"body_base64 must be a base64 string, got {_json_type(encoded)}")
        try:
            body = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise bad(f"body_base64 is not valid base64: {exc}") from None
    else:
        location = value["input_location"]
        if not isinstance(location, str):
            raise bad(f"input_location must be an s3:// URI string, got {_json_type(location)}")
        try:
            parse_s3_uri(location, what="input_location")
        except ConfigError as exc:
            raise bad(str(exc)) from None
        input_location = location

    return InferenceRequest(
        body=body,
        input_location=input_location,
        id=request_id,
        inference_id=inference_id,
        content_type=value.get("content_type", defaults.content_type),
        accept=value.get("accept"),
        custom_attributes=value.get("custom_attributes"),
        request_ttl_seconds=defaults.request_ttl_seconds,
        invocation_timeout_seconds=defaults.invocation_timeout_seconds,
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class _OutOfRange(ValueError):
    pass


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _OutOfRange(
            f"the number {text[:40]} is too large for a double: it would be sent as Infinity, "
            "which is not JSON"
        )
    return value


def _nesting(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` outside strings, found without recursion."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return 0  # cannot be deeper; the common case costs two C-speed scans
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _may_hold_surrogates(text: str) -> bool:
    return _SURROGATE_ESCAPE.search(text) is not None or _SURROGATE.search(text) is not None


def _find_surrogate(value: object, where: str = "the line") -> tuple[str, str] | None:
    """The first lone surrogate in any key or string of ``value``, with where it is."""
    stack: list[tuple[object, str]] = [(value, where)]
    while stack:
        item, place = stack.pop()
        if isinstance(item, str):
            found = _SURROGATE.search(item)
            if found is not None:
                return place, found.group()
        elif isinstance(item, dict):
            for key, child in item.items():
                found = _SURROGATE.search(key)
                if found is not None:
                    return f"a key of {place}", found.group()
                stack.append((child, repr(key) if place == where else place))
        elif isinstance(item, list):
            stack.extend((child, place) for child in item)
    return None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string" if value else "an empty string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _short(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def format_timestamp(timestamp: float | None) -> str | None:
    """ISO 8601 in UTC with millisecond precision and a ``Z`` suffix, or ``None``."""
    if timestamp is None or timestamp <= 0:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def _is_json_type(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def _decode_result(result: bytes, content_type: str | None) -> tuple[str, Any]:
    """``result`` when the output is JSON we can write back as JSON, else ``result_base64``."""
    if content_type is None or _is_json_type(content_type):
        try:
            text = result.decode("utf-8")
            if _nesting(text) <= MAX_DEPTH:
                value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
                if not _may_hold_surrogates(text) or _find_surrogate(value) is None:
                    return "result", value
        except ValueError:  # UnicodeDecodeError, json.JSONDecodeError, a number out of range
            pass
    return "result_base64", base64.b64encode(result).decode("ascii")


def outcome_record(outcome: Outcome, line: int | None = None) -> dict[str, Any]:
    """The output object for one outcome: the contract fields, then ``result`` or ``result_base64``.

    ``line`` is the input line number (1-based) the outcome answers; a rejection of an unreadable
    line carries its own. With duplicate ids, it is what joins an output record to its line.

    ``result`` is the parsed output when its content type is JSON and it parses;
    other output bytes go to ``result_base64``. With no output bytes (not fetched,
    or not a success) the record has ``"result": null``.
    """
    if line is None and isinstance(outcome, Rejected):
        line = outcome.line
    record: dict[str, Any] = {
        "id": outcome.id,
        "line": line,
        "inference_id": outcome.inference_id,
        "status": outcome.status,
        "payload": outcome.route,
        "output_location": None if isinstance(outcome, Rejected) else outcome.output_location,
        "failure_location": getattr(outcome, "failure_location", None),
        "failure_reason": _failure_reason(outcome),
        "attempts": outcome.attempts,
        "submitted_at": format_timestamp(outcome.submitted_at),
        "completed_at": format_timestamp(outcome.completed_at),
    }
    if isinstance(outcome, Succeeded) and outcome.result is not None:
        key, decoded = _decode_result(outcome.result, outcome.content_type)
        record[key] = decoded
    else:
        record["result"] = None
    return record


def _failure_reason(outcome: Outcome) -> str | None:
    if isinstance(outcome, Rejected):
        return outcome.reason
    if isinstance(outcome, Succeeded):
        return None
    if isinstance(outcome, Expired):
        return outcome.failure_reason or "no outcome arrived before the deadline"
    return outcome.failure_reason


def format_outcome(outcome: Outcome, line: int | None = None) -> bytes:
    """One output line: the record as compact UTF-8 JSON, newline-terminated."""
    text = json.dumps(
        outcome_record(outcome, line), ensure_ascii=False, separators=(",", ":"), allow_nan=False
    )
    return text.encode("utf-8") + b"\n"
