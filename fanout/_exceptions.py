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
    ├── WorkerError                           a worker process or Ray actor died, or could not start
    └── InferenceError                        raised by ``Outcome.unwrap()`` only: an inference failed
        ├── InferenceRejected                 never accepted (bad input, or retries ran out)
        ├── InferenceFailed                   the model failed; carries ``failure_reason``
        └── InferenceExpired                  no outcome before its deadline

``run_level_error`` is the one pure decision of what a botocore exception means
for the whole run; ``map_aws_errors`` is the boundary that applies it, always
with ``raise ... from exc`` so the cause is kept. Everything else a botocore call
raises concerns one request, and the retry classes in ``_retry`` handle it.

A ``ConfigError`` may name the ``field`` it is about; ``ConfigError.naming``
rewords it for the command line (``--queue-url`` rather than ``queue_url``), so a
rule is written once and each caller sees its own name for the value.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
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
    "WorkerError",
    "error_code",
    "http_status",
    "map_aws_errors",
    "run_level_error",
    "unwrap_task_errors",
]


class FanoutError(Exception):
    """Base class of every exception fanout raises.

    It pickles with its message and attributes as they are, whatever the subclass's ``__init__``
    takes, so an error raised in a worker process or Ray actor arrives in the driver unchanged.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type[FanoutError], args: tuple[Any, ...], state: dict[str, Any]) -> FanoutError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class ConfigError(FanoutError, ValueError):
    """A configuration value is invalid; the message names the value and what is allowed.

    With ``field``, the message is ``"<field> <problem>"``; ``naming`` says it with another name.
    """

    def __init__(self, problem: str, *, field: str | None = None) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field} {problem}" if field else problem)

    def naming(self, names: Mapping[str, str]) -> str:
        """The message with the field called by its name in ``names`` (say, the CLI flag)."""
        if self.field is None or self.field not in names:
            return str(self)
        return f"{names[self.field]} {self.problem}"


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


class WorkerError(FanoutError):
    """A worker (a process of ``--workers``, or a Ray actor of ``--ray``) died or could not start."""


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
_CREDENTIALS_REJECTED = frozenset(
    {"InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch"}
)


def run_level_error(
    exc: BaseException,
    *,
    bucket: str | None = None,
    queue_url: str | None = None,
    endpoint_name: str | None = None,
) -> FanoutError | None:
    """The run-level error that ``exc`` (raised by a botocore call) means, or ``None``.

    Run level: missing credentials, an unreachable service, credentials AWS rejects, and a
    missing bucket, queue or endpoint (for the resource named by the keyword arguments). Pure: it
    only looks at ``exc``; the caller raises the result ``from exc``.
    """
    from botocore import exceptions as bce

    if isinstance(exc, FanoutError):
        return exc
    if isinstance(exc, bce.NoCredentialsError):
        return CredentialsError(
            "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, or another source of the standard chain"
        )
    if isinstance(exc, bce.EndpointConnectionError):
        return ServiceUnreachable(f"could not connect to {exc.kwargs.get('endpoint_url')}")
    if not isinstance(exc, bce.ClientError):
        return None
    code = error_code(exc)
    message = str(exc)
    if bucket is not None and (
        code in _BUCKET_MISSING or (code in {"404", "NotFound"} and "HeadBucket" in message)
    ):
        return BucketNotFound(bucket)
    if queue_url is not None and code in _QUEUE_MISSING:
        return QueueNotFound(queue_url)
    if (
        endpoint_name is not None
        and code == "ValidationError"
        and "not found" in message.lower()
        and "endpoint" in message.lower()
    ):
        return EndpointNotFound(endpoint_name)
    if code in _CREDENTIALS_REJECTED:
        return CredentialsError(f"AWS rejected the credentials: {message}")
    return None


@contextmanager
def map_aws_errors(
    *,
    bucket: str | None = None,
    queue_url: str | None = None,
    endpoint_name: str | None = None,
) -> Iterator[None]:
    """Raise what ``run_level_error`` makes of an error raised inside the block; let the rest pass.

    Everything that is not run level passes through unchanged, so per-item classification
    (``_retry``) still sees the original botocore exception.
    """
    try:
        yield
    except FanoutError:
        raise
    except Exception as exc:
        mapped = run_level_error(exc, bucket=bucket, queue_url=queue_url, endpoint_name=endpoint_name)
        if mapped is None:
            raise
        raise mapped from exc


@contextmanager
def unwrap_task_errors() -> Iterator[None]:
    """Let the one real error of a task group out as itself, not inside an exception group.

    A task group wraps what its tasks raise, together with the cancellations that error caused in
    the siblings. When exactly one real error remains it is raised unwrapped, so callers can write
    ``except QueueNotFound``. Several run-level errors at once (the service went away, and every
    task that calls it says so) are one problem: the first is raised. Anything else stays in its
    group, because an error that is not fanout's is a bug and must not be hidden.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        errors = _real_errors(group)
        if len(errors) == 1 or (errors and all(isinstance(error, FanoutError) for error in errors)):
            error = errors[0]
            # Its own cause stays (``raise ... from exc`` where it was raised); the group it came
            # out of is not a cause, only the way it travelled.
            raise error from error.__cause__
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
