"""Fault injection: what happens to a request around its handler, and to each SNS delivery.

``FaultInjector.decide`` picks one action per request: ``pass``, ``throttle``, ``error`` or
``drop`` (the connection is aborted before the handler runs), or ``drop_response`` (the handler
runs, then the connection is aborted instead of the response being written).

Both injectors draw from their own ``random.Random`` seeded from the emulator's seed, so a run
with the same seed and the same sequence of requests injects the same faults. Both can be
reconfigured at run time with ``set``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any, Literal, TypeAlias

from ._emu_config import FaultConfig, NotificationFaults
from ._sns import Deliver

__all__ = ["Action", "Deliver", "FaultInjector", "NotificationFaultInjector", "TokenBucket"]

Action: TypeAlias = Literal["pass", "throttle", "error", "drop", "drop_response"]


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; starts full."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class FaultInjector:
    """Decides, per request, the added latency and whether it is throttled, failed or dropped
    (before it is handled, or after, instead of its response)."""

    def __init__(
        self, faults: FaultConfig, *, seed: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rng = random.Random(f"{seed}/requests")
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self.throttled = 0
        self.errors_5xx = 0
        self.dropped_connections = 0
        self.dropped_responses = 0
        self.delayed_requests = 0
        self.set(faults)

    @property
    def faults(self) -> FaultConfig:
        return self._faults

    def set(self, faults: FaultConfig) -> None:
        self._faults = faults
        self._buckets.clear()
        self._targets = frozenset(faults.targets)
        # the hot path asks "is anything on?" once, so a fault-free emulator pays nothing
        self._request_faults = bool(
            faults.throttle or faults.error_rate or faults.drop_connection_rate or faults.drop_response_rate
        )
        self._latency = {key: dist for key, dist in faults.latency.items() if not dist.is_zero}

    def latency(self, service: str, operation: str) -> float:
        """Seconds to wait before handling this request (0 when no latency is configured)."""
        if not self._latency:
            return 0.0
        dist = self._latency.get(f"{service}.{operation}") or self._latency.get(service)
        if dist is None:
            return 0.0
        self.delayed_requests += 1
        return dist.sample(self._rng)

    def decide(self, service: str, operation: str, scope: str) -> tuple[Action, int]:
        """The action for one request and, for ``error``, its status (500 or 503).

        For ``drop_response`` the caller runs the handler and then aborts the connection, whatever
        the handler answered.

        ``scope`` keys a per-endpoint throttle bucket (the endpoint name, or the service).
        """
        if not self._request_faults:
            return "pass", 0
        if service not in self._targets and f"{service}.{operation}" not in self._targets:
            return "pass", 0
        faults = self._faults
        if faults.throttle is not None:
            key = scope if faults.throttle.per_endpoint else ""
            bucket = self._buckets.get(key)
            now = self._clock()
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(faults.throttle.rate, faults.throttle.burst, now)
            if not bucket.take(now):
                self.throttled += 1
                return "throttle", 400
        if faults.drop_connection_rate and self._rng.random() < faults.drop_connection_rate:
            self.dropped_connections += 1
            return "drop", 0
        if faults.error_rate and self._rng.random() < faults.error_rate:
            self.errors_5xx += 1
            return "error", self._rng.choice(faults.error_statuses)
        if faults.drop_response_rate and self._rng.random() < faults.drop_response_rate:
            self.dropped_responses += 1
            return "drop_response", 0
        return "pass", 0

    def statistics(self) -> dict[str, int]:
        return {
            "throttled": self.throttled,
            "errors_5xx": self.errors_5xx,
            "dropped_connections": self.dropped_connections,
            "dropped_responses": self.dropped_responses,
            "delayed_requests": self.delayed_requests,
        }


class NotificationFaultInjector:
    """Wraps ``SnsHub.deliver``: loses, malforms, duplicates, delays and reorders deliveries.

    Delayed deliveries are ``loop.call_later`` timers that ``close`` cancels, so none outlives the
    emulator.
    """

    def __init__(self, faults: NotificationFaults, deliver: Deliver, *, seed: int) -> None:
        self._deliver = deliver
        self._rng = random.Random(f"{seed}/notifications")
        self._timers: set[asyncio.TimerHandle] = set()
        self._closed = False
        self.delivered = 0
        self.duplicated = 0
        self.lost = 0
        self.malformed = 0
        self.delayed = 0
        self.set(faults)

    def set(self, faults: NotificationFaults) -> None:
        self._faults = faults
        self._active = faults.active

    def __call__(self, queue_name: str, body: str, attributes: dict[str, Any] | None) -> None:
        if not self._active:
            self._send(queue_name, body, attributes)
            return
        faults, rng = self._faults, self._rng
        if faults.loss_rate and rng.random() < faults.loss_rate:
            self.lost += 1
            return
        if faults.malformed_rate and rng.random() < faults.malformed_rate:
            self.malformed += 1
            # a strict prefix of a JSON document is never valid JSON
            body = body[: max(1, len(body) // 2)]
        copies = 1
        if faults.duplicate_rate and rng.random() < faults.duplicate_rate:
            self.duplicated += 1
            copies = 2
        for _ in range(copies):
            delay = faults.delay.sample(rng)
            if faults.reorder_window_ms:
                delay += rng.uniform(0.0, faults.reorder_window_ms) / 1000.0
            if delay > 0:
                self.delayed += 1
                self._later(delay, queue_name, body, attributes)
            else:
                self._send(queue_name, body, attributes)

    def _send(self, queue_name: str, body: str, attributes: dict[str, Any] | None) -> None:
        if self._closed:
            return
        self.delivered += 1
        self._deliver(queue_name, body, attributes)

    def _later(self, delay: float, queue_name: str, body: str, attributes: dict[str, Any] | None) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            try:
                self._send(queue_name, body, attributes)
            except Exception:
                self.lost += 1  # the queue went away while the delivery was delayed

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    def close(self) -> None:
        """Cancel every pending delayed delivery; later deliveries are dropped."""
        self._closed = True
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    @property
    def pending(self) -> int:
        return len(self._timers)

    def statistics(self) -> dict[str, int]:
        return {
            "delivered": self.delivered,
            "duplicated": self.duplicated,
            "lost": self.lost,
            "malformed": self.malformed,
            "delayed": self.delayed,
            "pending": len(self._timers),
        }
