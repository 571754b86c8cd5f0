"""Prometheus metrics of running clients, and a ``/metrics`` server (``pip install 'fanout[metrics]'``).

**One copy of each fact.** The counters and gauges are read from ``client.statistics()`` when the
registry is scraped, by a custom collector (``CounterMetricFamily``, ``GaugeMetricFamily``):
nothing is counted a second time. Only the two histograms are observed as requests go, through the
client's ``Observer`` hooks (``accepted``, ``handed_over``), since a distribution cannot be rebuilt
from totals. The names, their labels and their sources are listed in ``docs/observability.md``.

**One set of metrics per registry.** ``metrics_for(registry)`` makes the collector (which also
yields the histograms) the first time it sees a registry, registers it once, and returns the same
object afterwards (a ``WeakKeyDictionary``, so a registry that is dropped takes its metrics with
it). Several clients in one process therefore never collide on a registry: each ``open_client``
attaches its client, and the collector sums over the attached clients. When a client's block ends
it is detached, and its final counts stay in a *retired* total, so a counter never goes down
(Prometheus would read that as a reset); its gauges leave with it. Clients that must be told
apart use a registry each.

**prometheus_client is imported only when metrics are asked for**; importing fanout never does, and
asking without it installed is a ``ConfigError`` that says ``pip install 'fanout[metrics]'``.
"""

from __future__ import annotations

import errno
import math
import socket
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast
from weakref import WeakKeyDictionary

import anyio

from ._dispatch import DispatcherStatistics
from ._exceptions import ConfigError
from ._models import Outcome, Rejected, Submission
from ._tracking import TrackerStatistics

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Histogram
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

__all__ = [
    "INSTALL_HINT",
    "NOTIFICATION_KINDS",
    "TIME_BUCKETS",
    "Metrics",
    "MetricsObserver",
    "MetricsServer",
    "default_registry",
    "metrics_for",
    "notification_kinds",
    "serve_metrics",
]

INSTALL_HINT = "pip install 'fanout[metrics]'"

TIME_BUCKETS: tuple[float, ...] = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    *(30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0),
    math.inf,
)
"""The histograms' upper bounds, in seconds: from 5 ms (an inline invoke answered at once) to an
hour (the longest ``InvocationTimeoutSeconds``), roughly 1-2.5-5 per decade up to 10 s, then
minute steps. Both histograms share them, so their buckets line up on one dashboard."""

STATUSES = ("succeeded", "failed", "expired", "rejected")
ROUTES = ("inline", "s3")
RETRY_CLASSES = ("throttle", "transient")
NOTIFICATION_KINDS = ("outcome", "duplicate", "test", "malformed", "unknown")

_SHUTDOWN_TIMEOUT = 1.0
"""How long a scrape still in progress may take when the server stops."""

_SNAPSHOT_TRIES = 3


class Snapshot(Protocol):
    """What the metrics read of a client's statistics (``ClientStatistics`` has it)."""

    @property
    def dispatcher(self) -> DispatcherStatistics: ...

    @property
    def tracker(self) -> TrackerStatistics: ...

    @property
    def outstanding(self) -> int: ...

    @property
    def completed(self) -> Mapping[str, int]: ...

    @property
    def api_calls(self) -> Mapping[str, int]: ...


class Source(Protocol):
    """A client, as far as the metrics are concerned."""

    def statistics(self) -> Snapshot: ...


def _require_prometheus() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"metrics need prometheus-client, which is not installed: {INSTALL_HINT}") from exc


def default_registry() -> CollectorRegistry:
    """prometheus_client's default registry (``REGISTRY``); ``ConfigError`` when it is not installed."""
    _require_prometheus()
    from prometheus_client import REGISTRY

    return REGISTRY


def notification_kinds(tracker: TrackerStatistics) -> dict[str, int]:
    """SQS notification messages by kind, derived from the tracker's counters.

    Every message the tracker receives is counted once, as ``malformed`` (not a notification it can
    read), ``test`` (``test_notifications``: SageMaker's TestNotification, or an SNS message that is
    not a notification), or ``parsed``; a parsed one is a ``duplicate`` (of an outcome already
    resolved, or held), ``unknown`` (for an inference this client does not know), or else an
    ``outcome``: it carried the outcome of a request the tracker was waiting for (resolved at once,
    or held until the 202 came). So ``outcome = parsed - duplicates - unknown``, and the kinds add
    up to the messages received.

    With S3 tracking, an output found by polling is not a notification and counts nowhere here; a
    lookup that loses a race with a notification counts as a ``duplicate`` (or ``unknown``), so in
    hybrid mode ``outcome`` may rarely step back by one.
    """
    return {
        "outcome": max(tracker.parsed - tracker.duplicates - tracker.unknown, 0),
        "duplicate": tracker.duplicates,
        "test": tracker.test_notifications,
        "malformed": tracker.malformed,
        "unknown": tracker.unknown,
    }


_Key = tuple[str, tuple[str, ...]]
"""A counter's name (without ``_total``) and its label values."""


def _counters(snapshot: Snapshot) -> Counter[_Key]:
    """Every counter of one client's snapshot."""
    counts: Counter[_Key] = Counter()
    for status in STATUSES:
        counts["fanout_outcomes", (status,)] = snapshot.completed.get(status, 0)
    dispatcher = snapshot.dispatcher
    counts["fanout_submissions", ("inline",)] = dispatcher.inline
    counts["fanout_submissions", ("s3",)] = dispatcher.s3
    counts["fanout_throttles", ()] = dispatcher.throttles
    for klass in RETRY_CLASSES:
        counts["fanout_retries", (klass,)] = dispatcher.retries_by_class.get(klass, 0)
    counts["fanout_resends", ()] = dispatcher.resends
    for name, count in snapshot.api_calls.items():
        service, _, operation = name.partition(".")
        counts["fanout_api_calls", (service, operation)] += count
    for kind, count in notification_kinds(snapshot.tracker).items():
        counts["fanout_notifications", (kind,)] = count
    return counts


_COUNTERS: tuple[tuple[str, str, tuple[str, ...], tuple[tuple[str, ...], ...] | None], ...] = (
    (
        "fanout_outcomes",
        "Outcomes handed over to the caller, by final status (rejections included).",
        ("status",),
        tuple((status,) for status in STATUSES),
    ),
    (
        "fanout_submissions",
        "Requests accepted by the endpoint (202, or in doubt), by payload route.",
        ("route",),
        tuple((route,) for route in ROUTES),
    ),
    ("fanout_throttles", "Throttled InvokeEndpointAsync responses, retried or not.", (), ((),)),
    (
        "fanout_retries",
        "InvokeEndpointAsync attempts retried, by error class.",
        ("class",),
        tuple((klass,) for klass in RETRY_CLASSES),
    ),
    (
        "fanout_resends",
        "Requests sent again under the same inference id after an attempt that may have reached "
        "the endpoint without an answer (the endpoint may run them twice).",
        (),
        ((),),
    ),
    ("fanout_api_calls", "AWS API calls made, by service and operation.", ("service", "operation"), None),
    (
        "fanout_notifications",
        "SQS notification messages received, by kind (see docs/observability.md).",
        ("kind",),
        tuple((kind,) for kind in NOTIFICATION_KINDS),
    ),
)
"""Each counter: name, help, label names, and the label values always exposed (``None``: as seen)."""

_GAUGES: tuple[tuple[str, str], ...] = (
    ("fanout_in_flight", "InvokeEndpointAsync calls on the wire now."),
    (
        "fanout_pending",
        "max_pending tokens taken: requests being submitted, plus outcomes not handed over yet.",
    ),
    ("fanout_outstanding", "Accepted inferences whose outcome has not been handed over yet."),
    ("fanout_concurrency_limit", "The in-flight window the adaptive controller allows now."),
    (
        "fanout_rate_limit_per_second",
        "The send rate the adaptive controller allows now, in requests per second; absent while it "
        "does not pace.",
    ),
    ("fanout_buffered_outcomes", "Outcomes the tracker holds for the caller, not taken yet."),
)


class MetricsObserver:
    """Observes the two histograms through a client's ``Observer`` hooks.

    ``fanout_time_to_accept_seconds``: ``accepted_at - submitted_at`` of each accepted submission,
    from the first attempt (retries and S3 staging included) to the 202; a submission in doubt got
    no 202 and is not observed. ``fanout_time_to_outcome_seconds``: ``completed_at - submitted_at``
    of each outcome handed over that was accepted (succeeded, failed or expired: the same set as
    ``RunReport``'s percentiles); rejections are not.
    """

    __slots__ = ("_accept", "_outcome")

    def __init__(self, accept: Mapping[str, Histogram], outcome: Mapping[str, Histogram]) -> None:
        self._accept = accept
        self._outcome = outcome

    async def sending(self, inference_id: str, deadline: float) -> None:
        return None

    def unsent(self, inference_id: str) -> None:
        return None

    def accepted(self, submission: Submission) -> None:
        if not submission.in_doubt:
            self._accept[submission.route].observe(max(submission.accepted_at - submission.submitted_at, 0.0))

    def handed_over(self, outcome: Outcome) -> None:
        if isinstance(outcome, Rejected) or outcome.route is None or outcome.submitted_at is None:
            return
        if outcome.completed_at:
            self._outcome[outcome.route].observe(max(outcome.completed_at - outcome.submitted_at, 0.0))


class Metrics:
    """The fanout metrics of one registry: the collector of the clients attached to it, and the
    histograms they observe. Get it with ``metrics_for(registry)``."""

    def __init__(self) -> None:
        _require_prometheus()
        from prometheus_client import Histogram

        self._lock = threading.Lock()
        self._live: list[Source] = []
        self._retired: Counter[_Key] = Counter()
        self._accept = Histogram(
            "fanout_time_to_accept_seconds",
            "Seconds from a request's first attempt to its 202, by payload route.",
            ["route"],
            buckets=TIME_BUCKETS,
            registry=None,
        )
        self._outcome = Histogram(
            "fanout_time_to_outcome_seconds",
            "Seconds from a request's first attempt to its outcome (succeeded, failed or expired), "
            "by payload route.",
            ["route"],
            buckets=TIME_BUCKETS,
            registry=None,
        )
        self.observer = MetricsObserver(
            {route: self._accept.labels(route) for route in ROUTES},
            {route: self._outcome.labels(route) for route in ROUTES},
        )

    # -- clients -----------------------------------------------------------------------------------

    def attach(self, client: Source) -> None:
        """Count ``client`` in this registry's metrics from now on."""
        with self._lock:
            if not any(live is client for live in self._live):
                self._live.append(client)

    def detach(self, client: Source) -> None:
        """Stop reading ``client``: its final counts stay in the counters, its gauges leave."""
        with self._lock:
            if not any(live is client for live in self._live):
                return
            self._live = [live for live in self._live if live is not client]
            self._retired.update(_counters(_snapshot(client)))

    # -- the collector -----------------------------------------------------------------------------

    def describe(self) -> Iterator[Metric]:
        """The families, without samples: what the registry checks for name clashes."""
        yield from self._families([], Counter())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            live = list(self._live)
            counts = Counter(self._retired)
        snapshots = [_snapshot(client) for client in live]
        for snapshot in snapshots:
            counts.update(_counters(snapshot))
        yield from self._families(snapshots, counts, samples=True)

    def _families(
        self, snapshots: list[Snapshot], counts: Counter[_Key], *, samples: bool = False
    ) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for name, documentation, labels, fixed in _COUNTERS:
            counter = CounterMetricFamily(name, documentation, labels=labels)
            if samples:
                seen = [key[1] for key in counts if key[0] == name]
                for labelled in fixed if fixed is not None else sorted(seen):
                    counter.add_metric(list(labelled), counts.get((name, labelled), 0))
            yield counter
        dispatchers = [snapshot.dispatcher for snapshot in snapshots]
        rates = [dispatcher.current_rate for dispatcher in dispatchers]
        values: dict[str, float | None] = {
            "fanout_in_flight": sum(d.in_flight for d in dispatchers),
            "fanout_pending": sum(d.pending for d in dispatchers),
            "fanout_outstanding": sum(snapshot.outstanding for snapshot in snapshots),
            "fanout_concurrency_limit": sum(d.current_limit for d in dispatchers),
            # Unpaced (None) has no number: the series is absent rather than NaN or +Inf, which
            # would poison a sum or a graph. Several clients are paced only if each one is.
            "fanout_rate_limit_per_second": (
                None if not rates or any(rate is None for rate in rates) else sum(cast(list[float], rates))
            ),
            "fanout_buffered_outcomes": sum(snapshot.tracker.buffered for snapshot in snapshots),
        }
        for name, documentation in _GAUGES:
            gauge = GaugeMetricFamily(name, documentation)
            value = values[name]
            if samples and value is not None:
                gauge.add_metric([], value)
            yield gauge
        if samples:
            yield from self._accept.collect()
            yield from self._outcome.collect()
        else:
            yield from self._accept.describe()
            yield from self._outcome.describe()


def _snapshot(client: Source) -> Snapshot:
    """The client's statistics. A scrape from another thread (prometheus_client's own server) may
    meet a dict that the event loop is changing; reading again is enough."""
    for _ in range(_SNAPSHOT_TRIES - 1):
        try:
            return client.statistics()
        except RuntimeError:
            continue
    return client.statistics()


_BY_REGISTRY: WeakKeyDictionary[CollectorRegistry, Metrics] = WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()


def metrics_for(registry: object) -> Metrics:
    """The fanout metrics of ``registry``, registered on it the first time (see the module docstring).

    ``ConfigError`` when prometheus-client is not installed, when ``registry`` is not a
    ``CollectorRegistry``, or when it already has other metrics under fanout's names.
    """
    _require_prometheus()
    from prometheus_client import CollectorRegistry

    if not isinstance(registry, CollectorRegistry):
        raise ConfigError(
            f"must be a prometheus_client CollectorRegistry, got {registry!r}", field="registry"
        )
    with _REGISTRY_LOCK:
        metrics = _BY_REGISTRY.get(registry)
        if metrics is None:
            metrics = Metrics()
            try:
                registry.register(cast("Collector", metrics))
            except ValueError as exc:
                raise ConfigError(
                    f"already has metrics under fanout's names: {exc}", field="registry"
                ) from exc
            _BY_REGISTRY[registry] = metrics
    return metrics


# -- serving -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricsServer:
    """Where ``serve_metrics`` listens: ``port`` is the bound one (the one chosen, for port 0)."""

    address: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/metrics"


@asynccontextmanager
async def serve_metrics(
    registry: CollectorRegistry, *, port: int, address: str = "127.0.0.1"
) -> AsyncIterator[MetricsServer]:
    """Serve ``registry`` on ``http://address:port/metrics`` for as long as the block lasts::

        registry = CollectorRegistry()
        async with serve_metrics(registry, port=9100), open_client(..., registry=registry) as client:
            ...

    It is prometheus_client's aiohttp handler on this event loop: a scrape reads the clients'
    statistics on the loop that changes them, and leaving the block closes the listening socket
    (a scrape still in progress gets a second to finish). ``port=0`` takes a free port; the
    yielded ``MetricsServer`` says which. The address defaults to loopback: pass ``"0.0.0.0"`` (or
    ``"::"``) for Prometheus on another host to reach it.

    ``ConfigError`` when prometheus-client is not installed, or when the address cannot be bound
    (say, the port is taken: the message names it).
    """
    _require_prometheus()
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"must be a port number from 0 to 65535, got {port!r}", field="port")
    if not isinstance(address, str) or not address:
        raise ConfigError(f"must be a host name or an IP address, got {address!r}", field="address")
    from aiohttp import web
    from prometheus_client.aiohttp import make_aiohttp_handler

    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, address, port)
        try:
            await site.start()
        except OSError as exc:
            raise _bind_error(exc, address, port) from exc
        yield MetricsServer(address=address, port=int(runner.addresses[0][1]))
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()


def _bind_error(exc: OSError, address: str, port: int) -> ConfigError:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"{port} is already in use on {address}: choose another port, or 0 for any free one",
            field="port",
        )
    if exc.errno == errno.EACCES:
        return ConfigError(f"{port} cannot be bound on {address}: {reason}", field="port")
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(f"{address!r} cannot be bound: {reason}", field="address")
    return ConfigError(f"cannot serve metrics on {address} port {port}: {reason}")
