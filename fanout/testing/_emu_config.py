"""The emulator's configuration: frozen dataclasses, validated when built, and strict loading.

Every dataclass checks itself in ``__post_init__`` and raises ``ConfigError`` with a message of the
form ``<field>: <problem>, got <value>``. The loaders (``load_config``, ``config_from_dict``,
``faults_from_dict``) refuse unknown keys and prefix each message with the key path, so a bad file
fails at start with, for example, ``faults.notifications.loss_rate: must be between 0 and 1, got -0.1``.

Time: durations of the emulator's own knobs (service time, latency, notification delays) are in
milliseconds and are real time. ``EmulatorConfig.time_scale`` scales only the two protocol durations
whose minimums are long, ``RequestTTLSeconds`` (60..21600) and ``InvocationTimeoutSeconds``
(1..3600): with ``time_scale=0.01`` a request TTL of 60 s expires after 0.6 s, so tests of expiry
and timeouts stay quick. 1.0 (the default) is real seconds.

A file is JSON, or TOML when its name ends in ``.toml``. Its shape mirrors the dataclasses; a
distribution is ``{"kind": "uniform", "low_ms": 1, "high_ms": 5}`` or a bare number (constant ms), and
an endpoint's ``model`` is ``"default"``, an import path ``"package.module:function"`` or the URL of
a model server that implements the SageMaker hosting contract (``ContainerModel``). A file applies
on top of ``default_config()`` (see ``load_config`` for the merge rule) unless it says
``extends = "none"``; ``config_to_data`` is the inverse of the loader (``--print-config`` writes it
as TOML). The reference for users is ``docs/emulator.md``.
"""

from __future__ import annotations

import importlib
import json
import math
import random
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias, TypeVar

from .._exceptions import ConfigError
from ._container import DEFAULT_STARTUP_TIMEOUT, ContainerModel
from ._model import Model, ModelResult, default_model, model_error_reason

__all__ = [
    "ACCOUNT_ID",
    "NOTIFICATION_TOPICS",
    "SERVICES",
    "Distribution",
    "DistributionKind",
    "EmulatorConfig",
    "EndpointConfig",
    "FaultConfig",
    "Model",
    "ModelResult",
    "NotificationFaults",
    "QueueConfig",
    "SubscriptionConfig",
    "ThrottleConfig",
    "TopicConfig",
    "config_from_dict",
    "config_to_data",
    "default_config",
    "default_model",
    "faults_from_dict",
    "load_config",
    "model_error_reason",
]

ACCOUNT_ID = "123456789012"
SERVICES = ("sagemaker", "s3", "sqs", "sns")
NOTIFICATION_TOPICS = ("SUCCESS_NOTIFICATION_TOPIC", "ERROR_NOTIFICATION_TOPIC")

DistributionKind: TypeAlias = Literal["constant", "uniform", "normal", "lognormal", "exponential"]
_DISTRIBUTION_PARAMS: dict[str, tuple[str, ...]] = {
    "constant": ("ms",),
    "uniform": ("low_ms", "high_ms"),
    "normal": ("mean_ms", "stddev_ms"),
    "lognormal": ("median_ms", "sigma"),
    "exponential": ("mean_ms",),
}

_ENDPOINT_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")
_RESOURCE_NAME = re.compile(r"[a-zA-Z0-9_-]{1,80}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
_S3_URI = re.compile(r"s3://([^/]+)(?:/(.*))?")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")
_ACCOUNT = re.compile(r"\d{12}")


# ---------------------------------------------------------------------------------------------------
# small checks; each raises ConfigError("<name>: <problem>, got <value>")


def _fail(name: str, problem: str, value: object) -> ConfigError:
    return ConfigError(f"{name}: {problem}, got {value!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_rate(name: str, value: object) -> None:
    if not _is_number(value) or not 0 <= value <= 1:  # type: ignore[operator]
        raise _fail(name, "must be between 0 and 1", value)


def _check_non_negative(name: str, value: object) -> None:
    if not _is_number(value) or value < 0:  # type: ignore[operator]
        raise _fail(name, "must be a number >= 0", value)


def _check_positive(name: str, value: object) -> None:
    if not _is_number(value) or value <= 0:  # type: ignore[operator]
        raise _fail(name, "must be a number > 0", value)


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise _fail(name, f"must be an integer {bound}", value)


def _check_name(name: str, value: object, pattern: re.Pattern[str], what: str) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _fail(name, f"must be {what}", value)


def _check_s3_uri(name: str, value: object) -> str:
    """Return the bucket of an ``s3://bucket/prefix`` URI."""
    match = _S3_URI.fullmatch(value) if isinstance(value, str) else None
    if match is None or not _BUCKET.fullmatch(match.group(1)):
        raise _fail(name, "must be an S3 URI s3://bucket/prefix with a valid bucket name", value)
    return match.group(1)


# ---------------------------------------------------------------------------------------------------
# distributions


@dataclass(frozen=True, slots=True)
class Distribution:
    """A random duration in milliseconds; ``sample`` returns seconds, never negative.

    ``constant`` uses ``ms``; ``uniform`` ``low_ms``..``high_ms``; ``normal`` ``mean_ms`` and
    ``stddev_ms``; ``lognormal`` ``median_ms`` and ``sigma`` (of the underlying normal);
    ``exponential`` ``mean_ms``. Parameters of other kinds must stay 0.
    """

    kind: DistributionKind = "constant"
    ms: float = 0.0
    low_ms: float = 0.0
    high_ms: float = 0.0
    mean_ms: float = 0.0
    stddev_ms: float = 0.0
    median_ms: float = 0.0
    sigma: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in _DISTRIBUTION_PARAMS:
            raise _fail("kind", f"must be one of {', '.join(_DISTRIBUTION_PARAMS)}", self.kind)
        allowed = _DISTRIBUTION_PARAMS[self.kind]
        for param in ("ms", "low_ms", "high_ms", "mean_ms", "stddev_ms", "median_ms", "sigma"):
            value = getattr(self, param)
            _check_non_negative(param, value)
            if param not in allowed and value != 0:
                raise _fail(
                    param, f"is not a parameter of a {self.kind} distribution ({', '.join(allowed)})", value
                )
        if self.kind == "uniform" and self.high_ms < self.low_ms:
            raise _fail("high_ms", f"must be >= low_ms ({self.low_ms})", self.high_ms)

    @property
    def is_zero(self) -> bool:
        return all(getattr(self, p) == 0 for p in _DISTRIBUTION_PARAMS[self.kind] if p != "sigma")

    def sample(self, rng: random.Random) -> float:
        """One draw, in seconds."""
        kind = self.kind
        if kind == "constant":
            value = self.ms
        elif kind == "uniform":
            value = rng.uniform(self.low_ms, self.high_ms)
        elif kind == "normal":
            value = rng.gauss(self.mean_ms, self.stddev_ms)
        elif kind == "lognormal":
            value = self.median_ms * math.exp(rng.gauss(0.0, self.sigma))
        else:
            value = rng.expovariate(1.0 / self.mean_ms) if self.mean_ms > 0 else 0.0
        return max(0.0, value) / 1000.0


ZERO = Distribution()


# ---------------------------------------------------------------------------------------------------
# the model


# ``ModelResult``, ``Model``, ``default_model`` and ``model_error_reason`` live in ``_model``, which
# ``_container`` (a model server as a model) shares without importing this module.


# ---------------------------------------------------------------------------------------------------
# resources


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """An SQS queue created at start; ``attributes`` as CreateQueue takes them."""

    name: str
    attributes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_name("name", self.name, _RESOURCE_NAME, "1-80 characters of letters, digits, '-' or '_'")
        if not isinstance(self.attributes, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.attributes.items()
        ):
            raise _fail("attributes", "must map attribute names to string values", self.attributes)


@dataclass(frozen=True, slots=True)
class SubscriptionConfig:
    """Delivery of a topic to a queue; ``raw`` is ``RawMessageDelivery`` (no SNS envelope)."""

    queue: str
    raw: bool = False

    def __post_init__(self) -> None:
        _check_name("queue", self.queue, _RESOURCE_NAME, "a queue name")
        if not isinstance(self.raw, bool):
            raise _fail("raw", "must be true or false", self.raw)


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """An SNS topic created at start, with its subscriptions."""

    name: str
    subscriptions: tuple[SubscriptionConfig, ...] = ()

    def __post_init__(self) -> None:
        _check_name("name", self.name, re.compile(r"[a-zA-Z0-9_-]{1,256}"), "a topic name")
        if not all(isinstance(s, SubscriptionConfig) for s in self.subscriptions):
            raise _fail("subscriptions", "must be SubscriptionConfig values", self.subscriptions)


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """One async endpoint, as ``AsyncInferenceConfig`` would declare it.

    ``success_topic``/``error_topic`` name topics of the ``EmulatorConfig`` (no topic: no
    notification for that outcome). ``include_inference_response_in`` holds
    ``SUCCESS_NOTIFICATION_TOPIC`` and/or ``ERROR_NOTIFICATION_TOPIC``. The worker pool has
    ``instance_count * max_concurrent_invocations_per_instance`` workers; each invocation takes a
    ``service_time`` draw plus whatever ``model`` takes.
    """

    name: str
    s3_output_path: str
    s3_failure_path: str | None = None
    success_topic: str | None = None
    error_topic: str | None = None
    include_inference_response_in: tuple[str, ...] = ()
    instance_count: int = 1
    max_concurrent_invocations_per_instance: int = 4
    service_time: Distribution = ZERO
    model: Model = default_model

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or len(self.name) > 63 or not _ENDPOINT_NAME.fullmatch(self.name):
            raise _fail(
                "name", "must be an endpoint name (at most 63 letters, digits and inner '-')", self.name
            )
        _check_s3_uri("s3_output_path", self.s3_output_path)
        if self.s3_failure_path is not None:
            _check_s3_uri("s3_failure_path", self.s3_failure_path)
        for attr in ("success_topic", "error_topic"):
            value = getattr(self, attr)
            if value is not None and not isinstance(value, str):
                raise _fail(attr, "must be a topic name", value)
        include = self.include_inference_response_in
        if not isinstance(include, tuple) or not all(item in NOTIFICATION_TOPICS for item in include):
            raise _fail(
                "include_inference_response_in",
                f"must hold only {' and '.join(NOTIFICATION_TOPICS)}",
                include,
            )
        _check_int("instance_count", self.instance_count, 1, 1000)
        _check_int(
            "max_concurrent_invocations_per_instance", self.max_concurrent_invocations_per_instance, 1, 1000
        )
        if not isinstance(self.service_time, Distribution):
            raise _fail("service_time", "must be a Distribution", self.service_time)
        if not callable(self.model):
            raise _fail(
                "model", "must be an async function (body, content_type, custom_attributes)", self.model
            )

    @property
    def workers(self) -> int:
        return self.instance_count * self.max_concurrent_invocations_per_instance

    def includes_response(
        self, topic: Literal["SUCCESS_NOTIFICATION_TOPIC", "ERROR_NOTIFICATION_TOPIC"]
    ) -> bool:
        return topic in self.include_inference_response_in


# ---------------------------------------------------------------------------------------------------
# faults


@dataclass(frozen=True, slots=True)
class ThrottleConfig:
    """A token bucket: ``rate`` requests per second on average, bursts of up to ``burst``.

    One bucket for all targeted requests, or one per endpoint (per service for S3/SQS/SNS)
    with ``per_endpoint``.
    """

    rate: float
    burst: float = 1.0
    per_endpoint: bool = False

    def __post_init__(self) -> None:
        _check_positive("rate", self.rate)
        if not _is_number(self.burst) or self.burst < 1:
            raise _fail("burst", "must be a number >= 1", self.burst)
        if not isinstance(self.per_endpoint, bool):
            raise _fail("per_endpoint", "must be true or false", self.per_endpoint)


@dataclass(frozen=True, slots=True)
class NotificationFaults:
    """Faults applied to every SNS delivery into SQS, in this order: loss, malformation, duplication,
    delay (a ``delay`` draw plus a uniform extra 0..``reorder_window_ms``, which reorders).

    ``early_rate`` is the share of accepted invocations (of endpoints with a topic) whose
    notification is published before their 202 is written: on AWS, SNS can deliver to SQS before
    the HTTP response reaches the client. The runtime holds such a 202 until the invocation has
    finished and published (for at most 5 s of real time), so a client sees the
    notification of a request it does not yet know was accepted. The delivery faults above still
    apply to that notification.
    """

    duplicate_rate: float = 0.0
    loss_rate: float = 0.0
    malformed_rate: float = 0.0
    delay: Distribution = ZERO
    reorder_window_ms: float = 0.0
    early_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("duplicate_rate", "loss_rate", "malformed_rate", "early_rate"):
            _check_rate(name, getattr(self, name))
        if not isinstance(self.delay, Distribution):
            raise _fail("delay", "must be a Distribution", self.delay)
        _check_non_negative("reorder_window_ms", self.reorder_window_ms)

    @property
    def active(self) -> bool:
        """Whether any delivery fault is on (``early_rate`` acts on the 202, not on deliveries)."""
        return (
            bool(self.duplicate_rate or self.loss_rate or self.malformed_rate or self.reorder_window_ms)
            or not self.delay.is_zero
        )


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Faults the emulator injects; change them at run time with ``emu.set_faults``.

    ``throttle``, ``error_rate`` (statuses drawn from ``error_statuses``: 500 ``InternalFailure``,
    503 ``ServiceUnavailable``), ``drop_connection_rate`` and ``drop_response_rate`` apply to the
    requests named by ``targets``: a service (``sagemaker``, ``s3``, ``sqs``, ``sns``) or
    ``service.Operation``. ``drop_connection_rate`` aborts the connection before the request is
    handled; ``drop_response_rate`` handles it (an InvokeEndpointAsync is accepted, runs and
    notifies) and then aborts the connection instead of writing the response, so the client never
    sees that its request took effect (a lost 202). A request meets at most one of these faults,
    drawn in this order: throttle, dropped connection, 5xx, dropped response.
    ``latency`` adds a delay before a request is handled, keyed the same way (the most specific
    key wins). ``notifications`` applies to deliveries from SNS into SQS, and to when they are
    published relative to the 202 (``early_rate``).
    """

    throttle: ThrottleConfig | None = None
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 503)
    drop_connection_rate: float = 0.0
    drop_response_rate: float = 0.0
    targets: tuple[str, ...] = ("sagemaker",)
    latency: Mapping[str, Distribution] = field(default_factory=dict)
    notifications: NotificationFaults = field(default_factory=NotificationFaults)

    def __post_init__(self) -> None:
        if self.throttle is not None and not isinstance(self.throttle, ThrottleConfig):
            raise _fail("throttle", "must be a ThrottleConfig", self.throttle)
        _check_rate("error_rate", self.error_rate)
        _check_rate("drop_connection_rate", self.drop_connection_rate)
        _check_rate("drop_response_rate", self.drop_response_rate)
        if (
            not isinstance(self.error_statuses, tuple)
            or not self.error_statuses
            or not all(s in (500, 503) for s in self.error_statuses)
        ):
            raise _fail("error_statuses", "must be a non-empty list of 500 and/or 503", self.error_statuses)
        if not isinstance(self.targets, tuple):
            raise _fail("targets", "must be a list of services or service.Operation", self.targets)
        for target in self.targets:
            _check_target("targets", target)
        if not isinstance(self.latency, Mapping):
            raise _fail("latency", "must map services or service.Operation to distributions", self.latency)
        for key, value in self.latency.items():
            _check_target(f"latency.{key}", key)
            if not isinstance(value, Distribution):
                raise _fail(f"latency.{key}", "must be a Distribution", value)
        if not isinstance(self.notifications, NotificationFaults):
            raise _fail("notifications", "must be NotificationFaults", self.notifications)


def _check_target(name: str, target: object) -> None:
    if not isinstance(target, str) or target.split(".", 1)[0] not in SERVICES:
        raise _fail(name, f"must be a service ({', '.join(SERVICES)}) or service.Operation", target)


# ---------------------------------------------------------------------------------------------------
# the whole emulator


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """Everything the emulator declares at start. Every bucket, queue and topic that an endpoint,
    a subscription or ``staging`` names must be declared here too.

    ``seed`` makes fault injection and service times reproducible (None: a random seed, reported
    in the stats). ``time_scale`` multiplies ``RequestTTLSeconds`` and ``InvocationTimeoutSeconds``
    only: 0.01 lets a 60 s TTL expire after 0.6 s in a test; 1.0 is real time.
    """

    region: str = "us-east-1"
    account_id: str = ACCOUNT_ID
    seed: int | None = None
    time_scale: float = 1.0
    buckets: tuple[str, ...] = ()
    queues: tuple[QueueConfig, ...] = ()
    topics: tuple[TopicConfig, ...] = ()
    endpoints: tuple[EndpointConfig, ...] = ()
    staging: str | None = None
    faults: FaultConfig = field(default_factory=FaultConfig)

    def __post_init__(self) -> None:
        _check_name("region", self.region, _REGION, "an AWS region such as us-east-1")
        _check_name("account_id", self.account_id, _ACCOUNT, "12 digits")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise _fail("seed", "must be an integer", self.seed)
        _check_positive("time_scale", self.time_scale)
        for i, bucket in enumerate(self.buckets):
            _check_name(f"buckets[{i}]", bucket, _BUCKET, "a valid S3 bucket name")
        for attr, kind in (("queues", QueueConfig), ("topics", TopicConfig), ("endpoints", EndpointConfig)):
            items = getattr(self, attr)
            if not isinstance(items, tuple) or not all(isinstance(item, kind) for item in items):
                raise _fail(attr, f"must be a tuple of {kind.__name__}", items)
            seen: set[str] = set()
            for i, item in enumerate(items):
                if item.name in seen:
                    raise _fail(f"{attr}[{i}].name", "is declared twice", item.name)
                seen.add(item.name)
        if not isinstance(self.faults, FaultConfig):
            raise _fail("faults", "must be a FaultConfig", self.faults)
        self._check_references()

    def _check_references(self) -> None:
        buckets = set(self.buckets)
        queues = {q.name for q in self.queues}
        topics = {t.name for t in self.topics}

        def need(name: str, value: str, declared: set[str], what: str) -> None:
            if value not in declared:
                known = ", ".join(sorted(declared)) or "none"
                raise _fail(name, f"names an undeclared {what} (declared: {known})", value)

        for t, topic in enumerate(self.topics):
            for s, sub in enumerate(topic.subscriptions):
                need(f"topics[{t}].subscriptions[{s}].queue", sub.queue, queues, "queue")
        for e, endpoint in enumerate(self.endpoints):
            need(
                f"endpoints[{e}].s3_output_path",
                _check_s3_uri("", endpoint.s3_output_path),
                buckets,
                "bucket",
            )
            if endpoint.s3_failure_path is not None:
                bucket = _check_s3_uri("", endpoint.s3_failure_path)
                need(f"endpoints[{e}].s3_failure_path", bucket, buckets, "bucket")
            for attr in ("success_topic", "error_topic"):
                value = getattr(endpoint, attr)
                if value is not None:
                    need(f"endpoints[{e}].{attr}", value, topics, "topic")
        if self.staging is not None:
            need("staging", _check_s3_uri("staging", self.staging), buckets, "bucket")

    def endpoint(self, name: str) -> EndpointConfig | None:
        return next((e for e in self.endpoints if e.name == name), None)


def default_config() -> EmulatorConfig:
    """The configuration ``fanout emulate`` serves: endpoint ``fanout-demo`` (2 instances x 64),
    outputs in ``s3://fanout-output/results``, failures in ``s3://fanout-output/failures``, success
    topic ``fanout-success`` and error topic ``fanout-errors`` both delivered with the SNS envelope
    to queue ``fanout-notifications``, and staging ``s3://fanout-staging/inputs``.

    As on AWS when ``IncludeInferenceResponseIn`` is not set, the notifications carry no
    ``responseBody``: a client reads each result from its output location. Replace the endpoint
    with ``include_inference_response_in=("SUCCESS_NOTIFICATION_TOPIC", "ERROR_NOTIFICATION_TOPIC")``
    (``NOTIFICATION_TOPICS``) to have the results ride in them. No fault is on.
    """
    queue = "fanout-notifications"
    return EmulatorConfig(
        buckets=("fanout-output", "fanout-staging"),
        queues=(QueueConfig(queue),),
        topics=(
            TopicConfig("fanout-success", (SubscriptionConfig(queue),)),
            TopicConfig("fanout-errors", (SubscriptionConfig(queue),)),
        ),
        endpoints=(
            EndpointConfig(
                name="fanout-demo",
                s3_output_path="s3://fanout-output/results",
                s3_failure_path="s3://fanout-output/failures",
                success_topic="fanout-success",
                error_topic="fanout-errors",
                instance_count=2,
                max_concurrent_invocations_per_instance=64,
                service_time=Distribution("uniform", low_ms=0.0, high_ms=5.0),
            ),
        ),
        staging="s3://fanout-staging/inputs",
    )


# ---------------------------------------------------------------------------------------------------
# strict loading from dicts and files, on top of a base configuration

EXTENDS: Final = ("default", "none")
# the lists of named resources that a file merges into its base by name (buckets are bare names)
_NAMED_LISTS: Final = ("buckets", "queues", "topics", "endpoints")


def load_config(source: str | Path | Mapping[str, Any]) -> EmulatorConfig:
    """Load what ``fanout emulate --config`` reads: a JSON or TOML file (or its content as a dict),
    applied on top of ``default_config()`` unless it says ``extends = "none"``; ``ConfigError`` if bad.

    The merge rule (``config_from_dict`` with ``base``): a top-level key the file gives replaces the
    base's value, except ``buckets``, ``queues``, ``topics`` and ``endpoints``, which are merged by
    name: the file's entries come first, in its order (so its first endpoint is the one the export
    lines name), an entry named like one of the base's updates that one key by key, and the base's
    other entries follow. Nothing can be removed from the base: start from empty with ``extends``.
    """
    if isinstance(source, Mapping):
        return config_from_dict(source, base=default_config())
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read emulator config {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        data: Any = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"emulator config {str(path)!r} is not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}"
        ) from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"emulator config {str(path)!r} must hold an object at the top level")
    return config_from_dict(data, base=default_config())


def config_from_dict(data: Mapping[str, Any], *, base: EmulatorConfig | None = None) -> EmulatorConfig:
    """Build an ``EmulatorConfig`` from plain data; unknown keys and bad values raise ``ConfigError``.

    With no ``base`` the data is the whole configuration (the dataclasses' defaults fill the rest);
    with one, the data applies on top of it by the rule of ``load_config``. An ``"extends"`` key in
    the data overrides ``base``: ``"default"`` is ``default_config()``, ``"none"`` is nothing.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: must be an object, got {data!r}")
    if "extends" in data:
        extends = data["extends"]
        if extends not in EXTENDS:
            raise _fail("extends", "must be 'default' (apply on top of the defaults) or 'none'", extends)
        base = default_config() if extends == "default" else None
        data = {key: value for key, value in data.items() if key != "extends"}
    if base is not None:
        data = _merge(config_to_data(base, named_models=False), data)
    return _build(EmulatorConfig, data, "", _EMULATOR_FIELDS, also_allowed=("extends",))


def config_to_data(config: EmulatorConfig, *, named_models: bool = True) -> dict[str, Any]:
    """The plain data that ``config_from_dict`` turns back into ``config``: every key, in the
    dataclasses' order, None where a value is unset.

    ``named_models``: each model as a file names it (``"default"``, an import path, a URL or
    ``{url, startup_timeout}``), or ``ConfigError`` for one that has no such name (a lambda, a
    closure); False keeps the model objects, for merging in memory.
    """

    def distribution(value: Distribution) -> dict[str, Any]:
        return {"kind": value.kind, **{p: getattr(value, p) for p in _DISTRIBUTION_PARAMS[value.kind]}}

    def endpoint(index: int, value: EndpointConfig) -> dict[str, Any]:
        return {
            "name": value.name,
            "s3_output_path": value.s3_output_path,
            "s3_failure_path": value.s3_failure_path,
            "success_topic": value.success_topic,
            "error_topic": value.error_topic,
            "include_inference_response_in": list(value.include_inference_response_in),
            "instance_count": value.instance_count,
            "max_concurrent_invocations_per_instance": value.max_concurrent_invocations_per_instance,
            "service_time": distribution(value.service_time),
            "model": _model_name(value.model, f"endpoints[{index}].model") if named_models else value.model,
        }

    faults = config.faults
    throttle = faults.throttle
    notifications = faults.notifications
    return {
        "region": config.region,
        "account_id": config.account_id,
        "seed": config.seed,
        "time_scale": config.time_scale,
        "buckets": list(config.buckets),
        "queues": [{"name": q.name, "attributes": dict(q.attributes)} for q in config.queues],
        "topics": [
            {"name": t.name, "subscriptions": [{"queue": s.queue, "raw": s.raw} for s in t.subscriptions]}
            for t in config.topics
        ],
        "endpoints": [endpoint(i, e) for i, e in enumerate(config.endpoints)],
        "staging": config.staging,
        "faults": {
            "throttle": None
            if throttle is None
            else {"rate": throttle.rate, "burst": throttle.burst, "per_endpoint": throttle.per_endpoint},
            "error_rate": faults.error_rate,
            "error_statuses": list(faults.error_statuses),
            "drop_connection_rate": faults.drop_connection_rate,
            "drop_response_rate": faults.drop_response_rate,
            "targets": list(faults.targets),
            "latency": {key: distribution(value) for key, value in faults.latency.items()},
            "notifications": {
                "duplicate_rate": notifications.duplicate_rate,
                "loss_rate": notifications.loss_rate,
                "malformed_rate": notifications.malformed_rate,
                "delay": distribution(notifications.delay),
                "reorder_window_ms": notifications.reorder_window_ms,
                "early_rate": notifications.early_rate,
            },
        },
    }


def _model_name(model: Model, path: str) -> str | dict[str, Any]:
    if model is default_model:
        return "default"
    if isinstance(model, ContainerModel):
        if model.startup_timeout == DEFAULT_STARTUP_TIMEOUT:
            return model.url
        return {"url": model.url, "startup_timeout": model.startup_timeout}
    module, name = getattr(model, "__module__", None), getattr(model, "__qualname__", "")
    # only a module-level name that imports back to this very function is a name the loader takes
    if module and name.isidentifier() and getattr(importlib.import_module(module), name, None) is model:
        return f"{module}:{name}"
    raise _fail(
        path, "has no name a file can hold (use 'default', 'package.module:function' or a URL)", model
    )


def _merge(base: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` on top of ``base`` (both plain data), by the rule of ``load_config``.

    Entries that are not well-formed pass through unmerged, so the builder reports them at the
    index the file gave them (the file's entries keep their indexes: they come first).
    """
    merged = dict(base)
    for key, value in data.items():
        given_list = isinstance(value, Sequence) and not isinstance(value, str | bytes)
        merged[key] = _merge_named(base[key], value) if key in _NAMED_LISTS and given_list else value
    return merged


def _entry_name(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry  # a bucket, or the short form of a queue
    name = entry.get("name") if isinstance(entry, Mapping) else None
    return name if isinstance(name, str) else None


def _merge_named(defaults: Sequence[Any], given: Sequence[Any]) -> list[Any]:
    by_name = {_entry_name(entry): entry for entry in defaults}
    merged: list[Any] = []
    seen: set[str] = set()
    for entry in given:
        name = _entry_name(entry)
        if name is not None:
            seen.add(name)
            default = by_name.get(name)
            if isinstance(default, Mapping):
                # the keys given replace the default's, the others keep their values; a bare name
                # ("q" among the queues) names the default entry as it is. A name given twice is
                # merged twice, and the builder reports it as declared twice.
                entry = {**default, **entry} if isinstance(entry, Mapping) else default
        merged.append(entry)
    merged.extend(entry for entry in defaults if _entry_name(entry) not in seen)
    return merged


def faults_from_dict(data: Mapping[str, Any], *, path: str = "faults") -> FaultConfig:
    """Build a ``FaultConfig`` from plain data (also what ``PUT /_fanout/faults`` accepts)."""
    return _build(FaultConfig, data, path, _FAULT_FIELDS)


Converter: TypeAlias = Callable[[Any, str], Any]
_T = TypeVar("_T")


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _build(
    cls: type[_T],
    data: Any,
    path: str,
    converters: Mapping[str, Converter],
    *,
    also_allowed: Sequence[str] = (),
) -> _T:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'}: must be an object, got {data!r}")
    allowed = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in allowed:
            names = ", ".join([*allowed, *also_allowed])
            raise ConfigError(f"{_join(path, str(key))}: unknown key (allowed: {names})")
        convert = converters.get(key)
        kwargs[key] = convert(value, _join(path, key)) if convert else value
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # the dataclass names its own field; put the key path in front of it
        raise ConfigError(f"{path}.{exc}" if path else str(exc)) from None
    except TypeError as exc:
        raise ConfigError(f"{path or 'config'}: {exc}") from None


def _list_of(item: Converter) -> Converter:
    def convert(value: Any, path: str) -> tuple[Any, ...]:
        if not isinstance(value, Sequence) or isinstance(value, str | bytes):
            raise ConfigError(f"{path}: must be a list, got {value!r}")
        return tuple(item(v, _join(path, i)) for i, v in enumerate(value))

    return convert


def _plain(value: Any, path: str) -> Any:
    return value


def _distribution(value: Any, path: str) -> Distribution:
    if _is_number(value):
        return _build(Distribution, {"kind": "constant", "ms": value}, path, {})
    if isinstance(value, Mapping):
        kind = value.get("kind", "constant")
        params = _DISTRIBUTION_PARAMS.get(kind) if isinstance(kind, str) else None
        if params is None:
            raise ConfigError(f"{path}.kind: must be one of {', '.join(_DISTRIBUTION_PARAMS)}, got {kind!r}")
        for key in value:
            if key != "kind" and key not in params:
                raise ConfigError(
                    f"{_join(path, str(key))}: unknown key for a {kind} distribution "
                    f"(allowed: kind, {', '.join(params)})"
                )
    return _build(Distribution, value, path, {})


def _queue(value: Any, path: str) -> QueueConfig:
    if isinstance(value, str):
        value = {"name": value}
    return _build(QueueConfig, value, path, {})


def _subscription(value: Any, path: str) -> SubscriptionConfig:
    if isinstance(value, str):
        value = {"queue": value}
    return _build(SubscriptionConfig, value, path, {})


def _topic(value: Any, path: str) -> TopicConfig:
    return _build(TopicConfig, value, path, {"subscriptions": _list_of(_subscription)})


def _model(value: Any, path: str) -> Model:
    if callable(value):
        return value  # type: ignore[no-any-return]
    if value == "default":
        return default_model
    if isinstance(value, str) and "://" in value:  # a URL, with a scheme it may get wrong
        try:
            return ContainerModel(value)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {str(exc).removeprefix('url: ')}") from None
    if isinstance(value, Mapping):
        # {url = "...", startup_timeout = 120}: a model server that needs longer to start
        for key in value:
            if key not in ("url", "startup_timeout"):
                raise ConfigError(f"{_join(path, str(key))}: unknown key (allowed: url, startup_timeout)")
        if "url" not in value:
            raise ConfigError(f"{path}.url: is required (the model server, e.g. http://127.0.0.1:8080)")
        try:
            return ContainerModel(value["url"], **{k: v for k, v in value.items() if k != "url"})
        except ConfigError as exc:
            raise ConfigError(f"{path}.{exc}") from None
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(
            f"{path}: must be 'default', an import path 'package.module:function' or a model server "
            f"URL 'http://host:port', got {value!r}"
        )
    module_name, _, attr = value.partition(":")
    try:
        model = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{path}: cannot import {value!r}: {exc}") from None
    if not callable(model):
        raise ConfigError(f"{path}: {value!r} is not callable")
    return model  # type: ignore[no-any-return]


def _endpoint(value: Any, path: str) -> EndpointConfig:
    return _build(
        EndpointConfig,
        value,
        path,
        {"include_inference_response_in": _list_of(_plain), "service_time": _distribution, "model": _model},
    )


def _latency(value: Any, path: str) -> dict[str, Distribution]:
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{path}: must be an object of service or service.Operation to distribution, got {value!r}"
        )
    return {str(k): _distribution(v, _join(path, str(k))) for k, v in value.items()}


def _throttle(value: Any, path: str) -> ThrottleConfig | None:
    return None if value is None else _build(ThrottleConfig, value, path, {})


def _notifications(value: Any, path: str) -> NotificationFaults:
    return _build(NotificationFaults, value, path, {"delay": _distribution})


_FAULT_FIELDS: dict[str, Converter] = {
    "throttle": _throttle,
    "error_statuses": _list_of(_plain),
    "targets": _list_of(_plain),
    "latency": _latency,
    "notifications": _notifications,
}

_EMULATOR_FIELDS: dict[str, Converter] = {
    "buckets": _list_of(_plain),
    "queues": _list_of(_queue),
    "topics": _list_of(_topic),
    "endpoints": _list_of(_endpoint),
    "faults": lambda value, path: faults_from_dict(value, path=path),
}
