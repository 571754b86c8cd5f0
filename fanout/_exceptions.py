"""Every exception fanout raises, and the one place where botocore errors become them.

Per-item problems never raise: they come back as outcome values (``Rejected``,
``Failed``, ``Expired``). Only run-level problems, which make the whole run
impossible or pointless, are exceptions::

    FanoutError(Exception)                    base of everything fanout raises
    ├── ConfigError(FanoutError, ValueError)  bad limits, policies, paths, flags or emulator config;
    │                                         raised when the object is built, before any network call
    ├── CredentialsError                      no AWS credentials could be found
    ├── ServiceUnreachable                    an AWS (or emulator) endpoint did not answer at all
    ├── EndpointNotFound                      the SageMaker endpoint does not exist (or is not async)
    ├── StagingError                          the S3 staging location cannot be used
    │   └── BucketNotFound                    ... because its bucket does not exist
    ├── TrackingError                         the completion channel itself is broken
    │   └── QueueNotFound                     the SQS queue does not exist
    ├── JournalError                          the resume journal is unreadable or belongs to another run
    └── InferenceError                        raised by ``Outcome.unwrap()`` only: an inference failed
        ├── InferenceRejected                 never accepted (bad input, or retries ran out)
        ├── InferenceFailed                   the model failed; carries ``failure_reason``
        └── InferenceExpired                  no outcome before its deadline

``map_aws_errors`` is the single boundary that turns botocore exceptions into
this tree, always with ``raise ... from exc`` so the cause is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "BucketNotFound",
    "ConfigError",
    "CredentialsError",
    "EndpointNotFound",
    "FanoutError",
    "InferenceError",
    "InferenceExpired",
    "InferenceFailed",
    "InferenceRejected",
    "JournalError",
    "QueueNotFound",
    "ServiceUnreachable",
    "StagingError",
    "TrackingError",
    "error_code",
    "http_status",
    "map_aws_errors",
    "unwrap_task_errors",
]


class FanoutError(Exception):
    """Base class of every exception fanout raises."""


class ConfigError(FanoutError, ValueError):
    """A configuration value is invalid; the message names the value and what is allowed."""


class CredentialsError(FanoutError):
    """No AWS credentials were found through the standard chain."""


class ServiceUnreachable(FanoutError):
    """An AWS service endpoint could not be reached at all."""


class EndpointNotFound(FanoutError):
    """The SageMaker endpoint named by ``endpoint_name`` does not exist."""

    def __init__(self, endpoint_name: str, message: str | None = None) -> None:
        self.endpoint_name = endpoint_name
        super().__init__(message or f"endpoint {endpoint_name!r} was not found")


class StagingError(FanoutError):
    """The S3 staging location for large payloads cannot be used."""


class BucketNotFound(StagingError):
    """The S3 bucket does not exist."""

    def __init__(self, bucket: str, message: str | None = None) -> None:
        self.bucket = bucket
        super().__init__(message or f"S3 bucket {bucket!r} does not exist")


class TrackingError(FanoutError):
    """The completion channel (SQS queue or S3 polling) is broken for the whole run."""


class QueueNotFound(TrackingError):
    """The SQS queue does not exist."""

    def __init__(self, queue_url: str, message: str | None = None) -> None:
        self.queue_url = queue_url
        super().__init__(message or f"SQS queue {queue_url!r} does not exist")


class JournalError(FanoutError):
    """The resume journal cannot be used."""


class InferenceError(FanoutError):
    """One inference did not succeed; raised only by ``Outcome.unwrap()``."""

    def __init__(self, message: str, *, inference_id: str | None, id: str | None = None) -> None:
        self.inference_id = inference_id
        self.id = id
        super().__init__(message)


class InferenceRejected(InferenceError):
    """The request was never accepted by the endpoint."""


class InferenceFailed(InferenceError):
    """The model reported a failure for this inference."""


class InferenceExpired(InferenceError):
    """No outcome arrived before the inference's deadline."""


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError``, or ``None`` for anything else."""
    response: Any = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    error = response.get("Error")
    if not isinstance(error, dict):
        return None
    code = error.get("Code")
    return str(code) if code is not None else None


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a botocore ``ClientError``, or ``None`` for anything else."""
    response: Any = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if isinstance(status, int) else None


_BUCKET_MISSING = frozenset({"NoSuchBucket"})
_QUEUE_MISSING = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
)


@contextmanager
def map_aws_errors(
    *,
    bucket: str | None = None,
    queue_url: str | None = None,
    endpoint_name: str | None = None,
) -> Iterator[None]:
    """Turn run-level botocore errors raised inside the block into fanout errors.

    Only errors that make the whole run impossible are mapped: missing
    credentials, an unreachable service, and a missing bucket, queue or endpoint
    (for the resource named by the keyword arguments). Everything else passes
    through unchanged, so per-item classification (``_retry``) still sees the
    original botocore exception.
    """
    from botocore import exceptions as bce

    try:
        yield
    except bce.NoCredentialsError as exc:
        raise CredentialsError(
            "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, or another source of the standard chain"
        ) from exc
    except bce.EndpointConnectionError as exc:
        raise ServiceUnreachable(f"could not connect to {exc.kwargs.get('endpoint_url')}") from exc
    except bce.ClientError as exc:
        code = error_code(exc)
        message = str(exc)
        if bucket is not None and (
            code in _BUCKET_MISSING or (code in {"404", "NotFound"} and "HeadBucket" in message)
        ):
            raise BucketNotFound(bucket) from exc
        if queue_url is not None and code in _QUEUE_MISSING:
            raise QueueNotFound(queue_url) from exc
        if (
            endpoint_name is not None
            and code == "ValidationError"
            and "not found" in message.lower()
            and "endpoint" in message.lower()
        ):
            raise EndpointNotFound(endpoint_name) from exc
        if code in {"InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch"}:
            raise CredentialsError(f"AWS rejected the credentials: {message}") from exc
        raise


@contextmanager
def unwrap_task_errors() -> Iterator[None]:
    """Let the one real error of a task group out as itself, not inside an exception group.

    A task group wraps what its tasks raise, together with the cancellations that error caused in
    the siblings. When exactly one real error remains it is raised unwrapped, so callers can write
    ``except QueueNotFound``; several real errors stay in their group.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        errors = _real_errors(group)
        if len(errors) == 1:
            raise errors[0] from None
        raise


def _real_errors(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    import anyio

    cancelled = anyio.get_cancelled_exc_class()
    errors: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            errors.extend(_real_errors(exc))
        elif not isinstance(exc, cancelled):
            errors.append(exc)
    return errors
