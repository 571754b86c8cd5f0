"""Configuration objects. Each is frozen and validated when it is built.

A bad value raises ``ConfigError`` naming the field, the value and what is
allowed, before anything touches the network.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Literal, TypeAlias

from ._exceptions import ConfigError

__all__ = [
    "DEFAULT_INVOCATION_TIMEOUT_SECONDS",
    "DEFAULT_LIMITS",
    "DEFAULT_REQUEST_TTL_SECONDS",
    "DEFAULT_RETRY",
    "RECEIVE_RETRY",
    "TRACKING_CALL_RETRY",
    "HybridTracking",
    "Limits",
    "PayloadMode",
    "RetryPolicy",
    "S3Location",
    "S3Tracking",
    "SqsTracking",
    "Staging",
    "Tracking",
    "Workers",
    "check_payload_mode",
    "inference_deadline",
    "parse_s3_uri",
    "share_limits",
]

PayloadMode: TypeAlias = Literal["auto", "inline", "s3"]

_S3_URI = re.compile(r"^s3://([^/]+)/?(.*)$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def _positive(name: str, value: float | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"must be a positive number, got {value!r}", field=name)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"must be a positive number, got {value!r}", field=name)


def _non_negative(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(f"must be zero or more, got {value!r}", field=name)


@dataclass(frozen=True, slots=True)
class S3Location:
    """A parsed ``s3://bucket/prefix`` URI; ``key`` is the part after the bucket (may be empty)."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def join(self, name: str) -> S3Location:
        prefix = self.key.rstrip("/")
        return S3Location(self.bucket, f"{prefix}/{name}" if prefix else name)


def parse_s3_uri(uri: str, *, what: str = "S3 location", field: str | None = None) -> S3Location:
    """Parse ``s3://bucket/key``; raise ``ConfigError`` naming ``what`` (or ``field``) when it is not one."""
    match = _S3_URI.match(uri) if isinstance(uri, str) else None
    if match is None:
        problem = "must look like s3://bucket/prefix"
        raise (
            ConfigError(f"{problem}, got {uri!r}", field=field)
            if field
            else ConfigError(f"{what} {problem}, got {uri!r}")
        )
    bucket, key = match.group(1), match.group(2)
    if not _BUCKET.match(bucket):
        problem = f"{uri!r} has an invalid bucket name {bucket!r}"
        raise ConfigError(problem, field=field) if field else ConfigError(f"{what} {problem}")
    return S3Location(bucket, key)


def check_payload_mode(payload: object, staging: object) -> None:
    """The payload mode is known, and ``s3`` has somewhere to stage payloads."""
    if payload not in ("auto", "inline", "s3"):
        raise ConfigError(f"must be one of auto, inline or s3, got {payload!r}", field="payload")
    if payload == "s3" and staging is None:
        raise ConfigError("s3 needs a staging location (s3://bucket/prefix)", field="payload")


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The explicit limits of a client.

    ``max_in_flight`` caps concurrent InvokeEndpointAsync HTTP calls (the
    connection pool is sized to match). ``max_pending`` caps accepted but
    unfinished inferences: the real backpressure, because an accepted invoke
    returns at once while the endpoint's queue fills. ``max_per_second``
    optionally caps the rate of invoke calls.
    """

    max_in_flight: int = 64
    max_pending: int = 1_000
    max_per_second: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_in_flight", "max_pending"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"must be an integer of 1 or more, got {value!r}", field=name)
        _positive("max_per_second", self.max_per_second, allow_none=True)


DEFAULT_LIMITS = Limits()


def share_limits(limits: Limits, workers: int) -> Limits:
    """One worker's share of ``limits`` when ``workers`` send side by side: the in-flight cap and
    the rate are split (rounded up, so no share is zero), and ``max_pending`` is not, because the
    client that deals the requests owns it for all of them."""
    return replace(
        limits,
        max_in_flight=max(1, math.ceil(limits.max_in_flight / workers)),
        max_per_second=None if limits.max_per_second is None else limits.max_per_second / workers,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Workers:
    """Send from several worker processes, or Ray actors, instead of the client's own process.

    The client keeps tracking, the limits it owns (``max_pending``) and every hook; each worker
    runs a dispatcher with its share of ``max_in_flight`` and ``max_per_second``
    (``share_limits``), adapting to throttling on its own.

    ``count`` is the number of workers; ``None`` means one per core of this machine (of the Ray
    cluster, with ``ray``). ``ray`` runs them as Ray actors: ``"local"`` starts a Ray of its own on
    this machine, ``"auto"`` joins the cluster ``ray.init`` finds (``RAY_ADDRESS``, or one already
    running here), and anything else is a cluster address (``ray://host:10001``, ``host:6379``).
    """

    count: int | None = None
    ray: str | None = None

    def __post_init__(self) -> None:
        count = self.count
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ConfigError(
                f"must be an integer of 1 or more (or None: one per core), got {count!r}", field="workers"
            )
        if self.ray is not None and (not isinstance(self.ray, str) or not self.ray.strip()):
            raise ConfigError(f"must be 'local', 'auto' or a cluster address, got {self.ray!r}", field="ray")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How invoke calls are retried: bounded by ``attempts`` and by ``timeout`` seconds in total.

    Waits grow exponentially from ``wait_initial`` up to ``wait_max`` with full
    jitter. Throttling also feeds the adaptive controller when ``adaptive`` is on.
    """

    attempts: int = 8
    timeout: float = 300.0
    wait_initial: float = 0.05
    wait_max: float = 20.0
    adaptive: bool = True
    at_most_once: bool = False
    """Never send a request twice. By default an attempt that may have reached the endpoint
    without an answer (the connection broke after sending: the 202 may be lost) is retried under
    the same inference id, so the endpoint may run it twice while its outcome is still reported
    once. With ``at_most_once`` such a request is not retried but tracked *in doubt*."""
    in_doubt_wait: float = 300.0
    """How long, in seconds, a request in doubt waits for its notification before it is reported
    ``Expired``. In doubt: it may have been accepted, but no 202 came (and ``at_most_once``, or
    retries that ran out, kept it from being sent again)."""

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise ConfigError(f"must be an integer of 1 or more, got {self.attempts!r}", field="attempts")
        if not isinstance(self.at_most_once, bool):
            raise ConfigError(f"must be True or False, got {self.at_most_once!r}", field="at_most_once")
        _positive("in_doubt_wait", self.in_doubt_wait)
        _positive("timeout", self.timeout)
        _positive("wait_initial", self.wait_initial)
        _positive("wait_max", self.wait_max)
        if self.wait_max < self.wait_initial:
            raise ConfigError(
                f"wait_max ({self.wait_max!r}) must be at least wait_initial ({self.wait_initial!r})"
            )


DEFAULT_RETRY = RetryPolicy()

TRACKING_CALL_RETRY = RetryPolicy(attempts=5, timeout=60.0, wait_initial=0.1, wait_max=10.0)
"""Retries of one tracking call (delete, change visibility, get, the queue check): transient errors only."""
RECEIVE_RETRY = RetryPolicy(attempts=100, timeout=120.0, wait_initial=0.1, wait_max=10.0)
"""Retries of a receive: two minutes of a queue that keeps failing end the run (``TrackingError``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Staging:
    """Where payloads that go through S3 are uploaded.

    Keys are ``<prefix>/<uuid4>`` so they cannot be guessed. ``delete_after``
    removes the staged input once its inference has an outcome.
    """

    location: str
    sse_kms_key_id: str | None = None
    expected_bucket_owner: str | None = None
    delete_after: bool = False
    max_concurrency: int = 16

    def __post_init__(self) -> None:
        parse_s3_uri(self.location, field="staging")
        if self.expected_bucket_owner is not None and not re.fullmatch(r"\d{12}", self.expected_bucket_owner):
            raise ConfigError(
                f"expected_bucket_owner must be a 12-digit account id, got {self.expected_bucket_owner!r}"
            )
        if (
            isinstance(self.max_concurrency, bool)
            or not isinstance(self.max_concurrency, int)
            or self.max_concurrency < 1
        ):
            raise ConfigError(
                f"max_concurrency must be an integer of 1 or more, got {self.max_concurrency!r}"
            )

    @property
    def s3(self) -> S3Location:
        return parse_s3_uri(self.location, what="staging location")


@dataclass(frozen=True, slots=True, kw_only=True)
class SqsTracking:
    """Track completions from SNS notifications delivered to an SQS queue.

    ``receivers`` long-poll concurrently. A message for an inference id this
    run does not know is left on the queue for its owner, unless
    ``delete_unknown`` is set.
    """

    queue_url: str
    receivers: int = 4
    wait_time_seconds: int = 20
    visibility_timeout: int = 60
    delete_unknown: bool = False
    grace_period: float = 60.0
    """Added to RequestTTLSeconds + InvocationTimeoutSeconds to form each deadline."""

    def __post_init__(self) -> None:
        if not isinstance(self.queue_url, str) or not self.queue_url.startswith(("https://", "http://")):
            raise ConfigError(f"must be an SQS queue URL, got {self.queue_url!r}", field="queue_url")
        if not 1 <= self.receivers <= 64:
            raise ConfigError(f"must be between 1 and 64, got {self.receivers!r}", field="receivers")
        if not 0 <= self.wait_time_seconds <= 20:
            raise ConfigError(
                f"must be between 0 and 20, got {self.wait_time_seconds!r}", field="wait_time_seconds"
            )
        if not 0 <= self.visibility_timeout <= 43_200:
            raise ConfigError(
                f"visibility_timeout must be between 0 and 43200, got {self.visibility_timeout!r}"
            )
        _non_negative("grace_period", self.grace_period)


@dataclass(frozen=True, slots=True, kw_only=True)
class S3Tracking:
    """Track completions by polling S3 for the output and failure objects.

    ``mode="head"`` sends a HEAD per pending request, with intervals that grow
    from ``interval`` to ``max_interval``. ``mode="list"`` pages through the
    output and failure prefixes and resolves many pending requests per call.
    """

    mode: Literal["head", "list"] = "list"
    interval: float = 1.0
    max_interval: float = 15.0
    max_concurrency: int = 16
    grace_period: float = 60.0

    def __post_init__(self) -> None:
        if self.mode not in ("head", "list"):
            raise ConfigError(f"must be 'head' or 'list', got {self.mode!r}", field="mode")
        _positive("interval", self.interval)
        _positive("max_interval", self.max_interval)
        if self.max_interval < self.interval:
            raise ConfigError(
                f"max_interval ({self.max_interval!r}) must be at least interval ({self.interval!r})"
            )
        if self.max_concurrency < 1:
            raise ConfigError(f"must be 1 or more, got {self.max_concurrency!r}", field="max_concurrency")
        _non_negative("grace_period", self.grace_period)


@dataclass(frozen=True, slots=True, kw_only=True)
class HybridTracking:
    """SQS first; requests still pending ``reconcile_after`` seconds after acceptance are
    looked up in S3, so lost notifications are recovered."""

    queue_url: str
    reconcile_after: float = 30.0
    sqs: SqsTracking | None = None
    s3: S3Tracking | None = None

    def __post_init__(self) -> None:
        _positive("reconcile_after", self.reconcile_after)
        if self.sqs is None:
            object.__setattr__(self, "sqs", SqsTracking(queue_url=self.queue_url))
        if self.s3 is None:
            object.__setattr__(self, "s3", S3Tracking())


Tracking: TypeAlias = SqsTracking | S3Tracking | HybridTracking


DEFAULT_REQUEST_TTL_SECONDS = 21_600
"""The service's default RequestTTLSeconds (6 hours)."""
DEFAULT_INVOCATION_TIMEOUT_SECONDS = 900
"""The service's default InvocationTimeoutSeconds (15 minutes)."""


def inference_deadline(
    accepted_at: float,
    *,
    request_ttl_seconds: int | None,
    invocation_timeout_seconds: int | None,
    grace_period: float,
) -> float:
    """When an accepted inference with no outcome counts as ``Expired``.

    The service may keep a request queued for its TTL and then run it for its
    invocation timeout; past both, plus a grace period for the notification to
    travel, no outcome will come.
    """
    ttl = DEFAULT_REQUEST_TTL_SECONDS if request_ttl_seconds is None else request_ttl_seconds
    timeout = (
        DEFAULT_INVOCATION_TIMEOUT_SECONDS
        if invocation_timeout_seconds is None
        else invocation_timeout_seconds
    )
    return accepted_at + ttl + timeout + grace_period
