"""The values that flow through fanout: requests, submissions, notifications, outcomes and run reports.

All are frozen, slotted dataclasses. Times are POSIX timestamps in seconds
(``time.time()``), because journals and deadlines must survive a restart.
Outcomes never hold the request payload, so tracking a million pending
inferences costs memory for their ids and locations only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

from ._exceptions import InferenceExpired, InferenceFailed, InferenceRejected

__all__ = [
    "IN_DOUBT_REASON",
    "MAX_INLINE_BODY_BYTES",
    "Expired",
    "Failed",
    "InferenceRequest",
    "InvocationStatus",
    "JSONValue",
    "Notification",
    "Outcome",
    "Rejected",
    "Route",
    "RunReport",
    "Submission",
    "Succeeded",
    "encode_json",
]

MAX_INLINE_BODY_BYTES = 128_000
"""The service's limit for an inline ``Body``, in bytes (not characters)."""

IN_DOUBT_REASON = (
    "in doubt: the invoke may have reached the endpoint, but no answer came and no notification "
    "arrived in time; it was not sent again"
)
"""The ``failure_reason`` of an ``Expired`` request that was in doubt."""

JSONValue: TypeAlias = Any
Route: TypeAlias = Literal["inline", "s3"]
InvocationStatus: TypeAlias = Literal["Completed", "Failed", "Expired"]


def encode_json(value: JSONValue) -> bytes:
    """Encode a JSON value exactly as the CLI contract says: compact, UTF-8, not ASCII-escaped.

    Raises ``ValueError`` for what is not JSON: NaN and infinities, and strings holding lone
    surrogates (``UnicodeEncodeError`` is a ``ValueError``).
    """
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


@dataclass(frozen=True, slots=True, kw_only=True)
class InferenceRequest:
    """One invocation to send.

    Give exactly one payload: ``body`` (raw bytes), ``body_path`` (a local file,
    read when the request is sent) or ``input_location`` (an ``s3://`` URI that
    is already uploaded). ``InferenceRequest.from_json`` builds ``body`` from a
    JSON value. Nothing is validated here; the dispatcher checks everything the
    service would reject and turns a bad request into a ``Rejected`` outcome.
    """

    body: bytes | None = None
    body_path: Path | None = None
    input_location: str | None = None
    id: str | None = None
    """The caller's own identifier, carried through to the outcome."""
    inference_id: str | None = None
    """Sent as ``X-Amzn-SageMaker-Inference-Id``; fanout generates a uuid4 when absent."""
    content_type: str | None = "application/json"
    accept: str | None = None
    custom_attributes: str | None = None
    request_ttl_seconds: int | None = None
    invocation_timeout_seconds: int | None = None
    s3_output_path_extension: str | None = None
    filename: str | None = None

    @classmethod
    def from_json(cls, value: JSONValue, **kwargs: Any) -> InferenceRequest:
        """A request whose body is ``value`` encoded as compact UTF-8 JSON."""
        return cls(body=encode_json(value), **kwargs)


@dataclass(frozen=True, slots=True, kw_only=True)
class Submission:
    """An invocation the endpoint accepted (HTTP 202)."""

    inference_id: str
    id: str | None
    route: Route
    input_location: str | None
    """The S3 input: the caller's, or the staged copy when ``staged`` is true."""
    output_location: str | None
    failure_location: str | None
    attempts: int
    submitted_at: float
    """When the first attempt started."""
    accepted_at: float
    deadline: float
    """After this moment, with no notification, the inference is ``Expired``."""
    staged: bool = False
    in_doubt: bool = False
    """No 202 was seen, yet the endpoint may have accepted the request (its connection broke after
    sending). It is tracked, without output locations, until ``deadline``; see
    ``RetryPolicy.at_most_once``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    """A SageMaker async-inference notification, parsed from SNS or SQS."""

    inference_id: str
    status: InvocationStatus
    output_location: str | None = None
    failure_location: str | None = None
    failure_reason: str | None = None
    response_body: bytes | None = None
    """The decoded ``responseBody.content``, when the endpoint includes it."""
    response_content_type: str | None = None
    event_time: float | None = None
    received_time: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Succeeded:
    """The model produced an output."""

    inference_id: str
    id: str | None = None
    route: Route | None = None
    output_location: str | None = None
    result: bytes | None = None
    """The output bytes, when fetching is on."""
    content_type: str | None = None
    attempts: int = 1
    submitted_at: float | None = None
    completed_at: float = 0.0
    status: Literal["succeeded"] = field(default="succeeded", init=False)

    def unwrap(self) -> bytes | None:
        return self.result


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    """The model, or the platform, reported a failure."""

    inference_id: str
    id: str | None = None
    route: Route | None = None
    output_location: str | None = None
    failure_location: str | None = None
    failure_reason: str | None = None
    attempts: int = 1
    submitted_at: float | None = None
    completed_at: float = 0.0
    status: Literal["failed"] = field(default="failed", init=False)

    def unwrap(self) -> bytes | None:
        raise InferenceFailed(
            f"inference {self.inference_id} failed: {self.failure_reason or 'no reason given'}",
            inference_id=self.inference_id,
            id=self.id,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Expired:
    """No outcome arrived before the deadline (RequestTTLSeconds + InvocationTimeoutSeconds + grace)."""

    inference_id: str
    id: str | None = None
    route: Route | None = None
    output_location: str | None = None
    failure_location: str | None = None
    failure_reason: str | None = None
    deadline: float = 0.0
    attempts: int = 1
    submitted_at: float | None = None
    completed_at: float = 0.0
    status: Literal["expired"] = field(default="expired", init=False)

    def unwrap(self) -> bytes | None:
        raise InferenceExpired(
            f"inference {self.inference_id} expired: {self.failure_reason or 'past its deadline'}",
            inference_id=self.inference_id,
            id=self.id,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected:
    """The request was never accepted: invalid locally, refused by the service, or retries ran out."""

    reason: str
    inference_id: str | None = None
    id: str | None = None
    route: Route | None = None
    line: int | None = None
    """The input line number, for requests read from JSONL."""
    error: BaseException | None = field(default=None, compare=False, repr=False)
    attempts: int = 0
    submitted_at: float | None = None
    completed_at: float = 0.0
    status: Literal["rejected"] = field(default="rejected", init=False)

    def unwrap(self) -> bytes | None:
        raise InferenceRejected(
            f"request {self.id or self.inference_id} was rejected: {self.reason}",
            inference_id=self.inference_id,
            id=self.id,
        ) from self.error


Outcome: TypeAlias = Succeeded | Failed | Expired | Rejected


@dataclass(frozen=True, slots=True, kw_only=True)
class RunReport:
    """What one ``run`` (or ``fanout run``) did. Times are seconds.

    ``p50``/``p95``/``p99`` are times from the first attempt to the outcome of the
    requests that were accepted, within 1 %; ``None`` when there were none.
    """

    succeeded: int = 0
    failed: int = 0
    expired: int = 0
    rejected: int = 0
    inline: int = 0
    s3: int = 0
    retries: int = 0
    """Attempts beyond the first, over every request."""
    resends: int = 0
    """Requests sent again under the same inference id after an attempt that may have reached the
    endpoint without an answer: the endpoint may have run them twice (their outcome is reported once)."""
    in_doubt: int = 0
    """Requests tracked without a 202 because they may have been accepted."""
    throttles: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    api_calls: Mapping[str, int] = field(default_factory=dict)
    """Calls made, by ``service.Operation`` (for example ``sagemaker-runtime.InvokeEndpointAsync``)."""
    elapsed: float = 0.0

    @property
    def total(self) -> int:
        return self.succeeded + self.failed + self.expired + self.rejected

    @property
    def ok(self) -> bool:
        """Whether every request succeeded."""
        return self.total == self.succeeded

    @property
    def by_status(self) -> dict[str, int]:
        return {
            "succeeded": self.succeeded,
            "failed": self.failed,
            "expired": self.expired,
            "rejected": self.rejected,
        }

    @property
    def throughput(self) -> float:
        """Outcomes per second over the whole run."""
        return self.total / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            **self.by_status,
            "inline": self.inline,
            "s3": self.s3,
            "retries": self.retries,
            "resends": self.resends,
            "in_doubt": self.in_doubt,
            "throttles": self.throttles,
            "p50": self.p50,
            "p95": self.p95,
            "p99": self.p99,
            "api_calls": dict(self.api_calls),
            "elapsed": self.elapsed,
            "throughput": self.throughput,
        }
