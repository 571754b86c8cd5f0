"""Routing (inline or S3) and local validation of one InvokeEndpointAsync call, and S3 staging.

botocore checks only types, required members and ``min`` constraints; the
128,000-byte limit, the exclusivity of ``Body`` and ``InputLocation``, every
``max`` and every pattern are enforced by the service alone, with a 400
``ValidationError`` after a network round trip. Everything here checks them
first, so a bad request becomes a ``Rejected`` value that names the offending
field and never costs a call. The checks are pure; only ``Stager`` does I/O.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from ._config import PayloadMode, S3Location, Staging, parse_s3_uri
from ._exceptions import ConfigError, StagingError, error_code, map_aws_errors
from ._models import MAX_INLINE_BODY_BYTES, InferenceRequest, Route

__all__ = [
    "Invalid",
    "Stager",
    "choose_route",
    "invoke_arguments",
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
            f"endpoint_name must be 1-63 letters, digits and inner hyphens "
            f"(pattern [a-zA-Z0-9](-*[a-zA-Z0-9])*), got {endpoint_name!r}"
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


class Stager:
    """Uploads payloads to ``<staging prefix>/<uuid4>`` with bounded concurrency.

    The keys are random, so staged inputs cannot be guessed or collide. SSE-KMS
    and ``ExpectedBucketOwner`` are applied to every call when configured.
    """

    def __init__(self, s3: Any, staging: Staging) -> None:
        self._s3 = s3
        self._staging = staging
        self._location: S3Location = staging.s3
        self._limiter = anyio.CapacityLimiter(staging.max_concurrency)
        self.uploads = 0
        self.deletes = 0

    def _owner(self) -> dict[str, str]:
        owner = self._staging.expected_bucket_owner
        return {"ExpectedBucketOwner": owner} if owner else {}

    async def check(self) -> None:
        """Raise ``BucketNotFound`` (or ``StagingError``) when the staging bucket cannot be used."""
        bucket = self._location.bucket
        try:
            with map_aws_errors(bucket=bucket):
                await self._s3.head_bucket(Bucket=bucket, **self._owner())
        except StagingError:
            raise
        except Exception as exc:
            if error_code(exc) is None:
                raise
            raise StagingError(f"staging bucket {bucket!r} cannot be used: {exc}") from exc

    async def upload(self, body: bytes, *, content_type: str | None) -> str:
        """Upload ``body`` and return its ``s3://`` URI. A missing bucket raises ``BucketNotFound``."""
        location = self._location.join(str(uuid.uuid4()))
        arguments: dict[str, Any] = {"Bucket": location.bucket, "Key": location.key, "Body": body}
        if content_type:
            arguments["ContentType"] = content_type
        if self._staging.sse_kms_key_id:
            arguments["ServerSideEncryption"] = "aws:kms"
            arguments["SSEKMSKeyId"] = self._staging.sse_kms_key_id
        arguments.update(self._owner())
        async with self._limiter:
            with map_aws_errors(bucket=location.bucket):
                await self._s3.put_object(**arguments)
        self.uploads += 1
        return str(location)

    async def delete(self, uri: str) -> None:
        """Delete a staged input; failures are ignored because the object is only garbage now."""
        location = parse_s3_uri(uri, what="staged input")
        try:
            async with self._limiter:
                await self._s3.delete_object(Bucket=location.bucket, Key=location.key, **self._owner())
        except Exception:
            return
        self.deletes += 1
