"""Planning one InvokeEndpointAsync call: local validation and routing (inline or S3). Pure.

botocore checks only types, required members and ``min`` constraints; the
128,000-byte limit, the exclusivity of ``Body`` and ``InputLocation``, every
``max`` and every pattern are enforced by the service alone, with a 400
``ValidationError`` after a network round trip. Everything here checks them
first, so a bad request becomes a ``Rejected`` value that names the offending
field and never costs a call. Staging a payload in S3 is ``_staging``'s job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._config import PayloadMode
from ._exceptions import ConfigError
from ._models import MAX_INLINE_BODY_BYTES, InferenceRequest, Route

__all__ = [
    "Invalid",
    "Plan",
    "choose_route",
    "invoke_arguments",
    "plan_request",
    "validate_endpoint_name",
    "validate_inference_id",
    "validate_request",
]

# Patterns from the sagemaker-runtime model (botocore 1.43). Java's \p{Print} is ASCII 0x20-0x7E.
_ENDPOINT_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")
_INFERENCE_ID = re.compile(r"[!-~][ -~]*")
_INPUT_LOCATION = re.compile(r"(https|s3)://([^/]+)/?(.*)", re.DOTALL)
_OUTPUT_PATH_EXTENSION = re.compile(r"(?!s3:|https:)[a-zA-Z0-9!_.*'()/-]+")
_FILENAME = re.compile(r"(?!.*\..*\.)[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_HEADER_MAX = 1024
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why a request cannot be sent; becomes ``Rejected.reason``."""

    reason: str


def validate_endpoint_name(endpoint_name: str) -> None:
    """Raise ``ConfigError`` unless the name matches the service's pattern (1-63 characters)."""
    if (
        not isinstance(endpoint_name, str)
        or not 1 <= len(endpoint_name) <= 63
        or not _ENDPOINT_NAME.fullmatch(endpoint_name)
    ):
        raise ConfigError(
            "must be 1-63 letters, digits and inner hyphens "
            f"(pattern [a-zA-Z0-9](-*[a-zA-Z0-9])*), got {endpoint_name!r}",
            field="endpoint_name",
        )


def _header(name: str, value: object, *, max_length: int = _HEADER_MAX) -> str | None:
    if not isinstance(value, str):
        return f"{name} must be a string, got {type(value).__name__}"
    if not value.isascii():
        return f"{name} must be ASCII, got {value!r}"
    # \p{ASCII} would admit control characters, but they cannot travel in an HTTP header.
    if _CONTROL.search(value):
        return f"{name} must not contain control characters, got {value!r}"
    if len(value) > max_length:
        return f"{name} is {len(value)} characters long; the limit is {max_length}"
    return None


def _integer(name: str, value: object, low: int, high: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{name} must be an integer, got {value!r}"
    if not low <= value <= high:
        return f"{name} must be between {low} and {high}, got {value}"
    return None


def validate_inference_id(inference_id: object) -> str | None:
    """The reason an inference id would be refused, or ``None`` when it is valid."""
    if not isinstance(inference_id, str):
        return f"inference_id must be a string, got {type(inference_id).__name__}"
    if not 1 <= len(inference_id) <= 64:
        return f"inference_id must be 1-64 characters long, got {len(inference_id)}"
    if not _INFERENCE_ID.fullmatch(inference_id):
        return f"inference_id must be printable ASCII and must not start with a space, got {inference_id!r}"
    return None


def validate_request(request: InferenceRequest) -> Invalid | None:
    """Every check the service would make that does not depend on the payload's size."""
    given = [
        name
        for name, value in (
            ("body", request.body),
            ("body_path", request.body_path),
            ("input_location", request.input_location),
        )
        if value is not None
    ]
    if len(given) != 1:
        found = ", ".join(given) if given else "none"
        return Invalid(f"give exactly one of body, body_path or input_location (got {found})")
    problems: list[str | None] = []
    body: object = request.body
    if body is not None and not isinstance(body, bytes | bytearray | memoryview):
        problems.append(f"body must be bytes, got {type(body).__name__}")
    if request.input_location is not None:
        location = request.input_location
        if not isinstance(location, str) or not 1 <= len(location) <= 1024:
            problems.append(f"input_location must be an S3 URI of 1-1024 characters, got {location!r}")
        elif not _INPUT_LOCATION.fullmatch(location):
            problems.append(f"input_location must look like s3://bucket/key, got {location!r}")
        else:
            problems.append(_header("input_location", location))
    if request.inference_id is not None:
        problems.append(validate_inference_id(request.inference_id))
    for name in ("content_type", "accept", "custom_attributes"):
        value = getattr(request, name)
        if value is not None:
            problems.append(_header(name, value))
    if request.request_ttl_seconds is not None:
        problems.append(_integer("request_ttl_seconds", request.request_ttl_seconds, 60, 21_600))
    if request.invocation_timeout_seconds is not None:
        problems.append(_integer("invocation_timeout_seconds", request.invocation_timeout_seconds, 1, 3_600))
    extension = request.s3_output_path_extension
    if extension is not None and (
        not isinstance(extension, str)
        or not 1 <= len(extension) <= 512
        or not _OUTPUT_PATH_EXTENSION.fullmatch(extension)
    ):
        problems.append(
            "s3_output_path_extension must be 1-512 characters of letters, digits and !_.*'()/- "
            f"and must not start with s3: or https:, got {extension!r}"
        )
    filename = request.filename
    if filename is not None and (
        not isinstance(filename, str) or not 1 <= len(filename) <= 32 or not _FILENAME.fullmatch(filename)
    ):
        problems.append(
            "filename must be 1-32 characters of letters, digits, '-', '_' and at most one '.', "
            f"starting with a letter or digit, got {filename!r}"
        )
    reasons = [problem for problem in problems if problem is not None]
    return Invalid("; ".join(reasons)) if reasons else None


def choose_route(mode: PayloadMode, size: int, *, staging: bool) -> Route | Invalid:
    """Where a payload of ``size`` bytes goes. ``staging`` says whether S3 staging is configured."""
    if mode == "inline" or (mode == "auto" and size <= MAX_INLINE_BODY_BYTES):
        if size > MAX_INLINE_BODY_BYTES:
            return Invalid(
                f"payload is {size:,} bytes; the service accepts at most {MAX_INLINE_BODY_BYTES:,} bytes "
                "inline (use payload mode 'auto' or 's3' with a staging location)"
            )
        if size == 0:
            return Invalid("payload is empty; the service needs at least one byte of Body")
        return "inline"
    if not staging:
        return Invalid(
            f"payload is {size:,} bytes, more than the {MAX_INLINE_BODY_BYTES:,} bytes allowed inline, "
            "and no S3 staging location is configured"
        )
    return "s3"


_OPTIONAL_MEMBERS: Mapping[str, str] = {
    "content_type": "ContentType",
    "accept": "Accept",
    "custom_attributes": "CustomAttributes",
    "request_ttl_seconds": "RequestTTLSeconds",
    "invocation_timeout_seconds": "InvocationTimeoutSeconds",
    "s3_output_path_extension": "S3OutputPathExtension",
    "filename": "Filename",
}


def invoke_arguments(
    endpoint_name: str,
    request: InferenceRequest,
    *,
    inference_id: str,
    body: bytes | None = None,
    input_location: str | None = None,
) -> dict[str, Any]:
    """The keyword arguments of ``invoke_endpoint_async`` for a validated request."""
    arguments: dict[str, Any] = {"EndpointName": endpoint_name, "InferenceId": inference_id}
    if body is not None:
        arguments["Body"] = body
    if input_location is not None:
        arguments["InputLocation"] = input_location
    for field_name, member in _OPTIONAL_MEMBERS.items():
        value = getattr(request, field_name)
        if value is not None:
            arguments[member] = value
    return arguments


@dataclass(frozen=True, slots=True)
class Plan:
    """How one valid request will be sent."""

    inference_id: str
    route: Route
    body: bytes | None
    """The payload: sent inline, or staged in S3 first when ``route`` is ``"s3"``; ``None`` when the
    caller gave an ``input_location``."""
    input_location: str | None
    """The caller's own ``InputLocation``, already uploaded."""

    @property
    def needs_staging(self) -> bool:
        return self.route == "s3" and self.body is not None


def plan_request(
    request: InferenceRequest, body: bytes | None, *, inference_id: str, mode: PayloadMode, staging: bool
) -> Plan | Invalid:
    """The plan for ``request``, whose payload (read from ``body_path`` if need be) is ``body``.

    ``staging`` says whether an S3 staging location is configured.
    """
    if body is None:
        return Plan(inference_id, "s3", None, request.input_location)
    route = choose_route(mode, len(body), staging=staging)
    if isinstance(route, Invalid):
        return route
    return Plan(inference_id, route, body, None)
