"""Building a ``RunReport`` from the outcomes of a run, in O(1) memory whatever its length.

``Client.run`` and ``fanout run`` share it. The API-call, throttle and re-send counts are taken as
differences of the client's statistics between the start and the end of the run.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Protocol

from ._dispatch import DispatcherStatistics
from ._models import Outcome, Rejected, RunReport

__all__ = ["ReportBuilder"]


class _Snapshot(Protocol):
    """What a report needs of a client's statistics (``ClientStatistics`` has it)."""

    @property
    def dispatcher(self) -> DispatcherStatistics: ...

    @property
    def api_calls(self) -> Mapping[str, int]: ...


class _Latencies:
    """Streaming percentiles in O(1) memory: log-spaced buckets 1 % wide."""

    _BASE = math.log(1.01)

    def __init__(self) -> None:
        self._buckets: Counter[int] = Counter()
        self._count = 0

    def add(self, seconds: float) -> None:
        self._buckets[math.floor(math.log(max(seconds, 1e-6)) / self._BASE)] += 1
        self._count += 1

    def percentile(self, q: float) -> float | None:
        if not self._count:
            return None
        rank = max(1, math.ceil(q * self._count))
        seen = 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen >= rank:
                return float(math.exp((bucket + 0.5) * self._BASE))
        raise AssertionError("unreachable: the ranks add up to the count")  # pragma: no cover


class ReportBuilder:
    """Accumulates outcomes into a ``RunReport``. ``statistics`` is the client's ``statistics``."""

    def __init__(
        self, statistics: Callable[[], _Snapshot], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._statistics = statistics
        self._clock = clock
        self._started = clock()
        self._status: Counter[str] = Counter()
        self._routes: Counter[str] = Counter()
        self._retries = 0
        self._latencies = _Latencies()
        before = statistics()
        self._throttles_before = before.dispatcher.throttles
        self._resends_before = before.dispatcher.resends
        self._in_doubt_before = before.dispatcher.in_doubt
        self._api_before = Counter(before.api_calls)
        self.extra_resends = 0
        """Re-sends the caller made itself (``fanout run`` re-sends requests in doubt on resume)."""

    def add(self, outcome: Outcome) -> None:
        self._status[outcome.status] += 1
        self._retries += max(outcome.attempts - 1, 0)
        if isinstance(outcome, Rejected):
            return
        if outcome.route is not None:
            self._routes[outcome.route] += 1
        if outcome.submitted_at is not None and outcome.completed_at:
            self._latencies.add(outcome.completed_at - outcome.submitted_at)

    def build(self) -> RunReport:
        now = self._statistics()
        api_calls = Counter(now.api_calls)
        api_calls.subtract(self._api_before)
        return RunReport(
            succeeded=self._status["succeeded"],
            failed=self._status["failed"],
            expired=self._status["expired"],
            rejected=self._status["rejected"],
            inline=self._routes["inline"],
            s3=self._routes["s3"],
            retries=self._retries,
            resends=now.dispatcher.resends - self._resends_before + self.extra_resends,
            in_doubt=now.dispatcher.in_doubt - self._in_doubt_before,
            throttles=now.dispatcher.throttles - self._throttles_before,
            p50=self._latencies.percentile(0.50),
            p95=self._latencies.percentile(0.95),
            p99=self._latencies.percentile(0.99),
            api_calls={name: count for name, count in sorted(api_calls.items()) if count > 0},
            elapsed=self._clock() - self._started,
        )
