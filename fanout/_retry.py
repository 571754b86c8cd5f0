"""Error classes, the one retry builder, and the adaptive limiter that keeps fanout under the service's limit.

Three error classes decide what happens to a failed invoke:

- ``throttle``: the service asks us to slow down (``ThrottlingException`` with any
  status, any HTTP 429, ``TooManyRequestsException``, ``RequestLimitExceeded``,
  ``SlowDown``, ...). Retried, and it cuts the allowed concurrency and rate.
- ``transient``: the call may succeed if repeated (500, 502, 503, 504, connection
  errors, read and connect timeouts). Retried; a 503 is overload, so it also cuts.
- ``fatal``: repeating cannot help (``ValidationError``, other 4xx, access denied,
  anything unrecognised). Not retried.

``is_transient`` widens this for the tracker's read calls (receive, delete, head, list, get):
any 5xx and any broken connection is worth another try there. ``delivery_of`` says whether a
failed invoke may have been accepted anyway.

``retrying`` is the one retry builder, for the dispatcher and the tracking sources alike: tenacity,
bounded on attempts *and* time by a ``RetryPolicy`` (``_config`` names the tracker's), with
full-jitter exponential backoff.

botocore's own retries must be off (``total_max_attempts=1``) so they do not
multiply with these, and botocore's ``adaptive`` mode must not be used: its rate
falls to 0.5 req/s after a throttle in the first second, and its async token
bucket wakes every waiter per token and corrupts its lock when waiters are
cancelled on Python 3.11.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar

import anyio
import anyio.lowlevel
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from ._config import RetryPolicy
from ._exceptions import FanoutError, error_code, http_status

__all__ = [
    "THROTTLE_CODES",
    "TRANSIENT_CODES",
    "AdaptiveLimiter",
    "AimdControl",
    "Delivery",
    "ErrorClass",
    "LimiterStatistics",
    "Permit",
    "Signal",
    "call_with_retry",
    "classify",
    "continue_retrying",
    "delivery_of",
    "is_not_found",
    "is_overload",
    "is_transient",
    "retrying",
]

log = logging.getLogger("fanout.dispatch")

T = TypeVar("T")

ErrorClass: TypeAlias = Literal["throttle", "transient", "fatal"]
Signal: TypeAlias = Literal["success", "overload", "neutral"]
Delivery: TypeAlias = Literal["answered", "not_sent", "unknown"]
"""What a failed invoke attempt tells about the request's fate: the service ``answered`` (an HTTP
error response: not accepted), the request was ``not_sent`` (no connection was made), or it is
``unknown`` (it may have reached the endpoint and been accepted, but no answer came)."""

# botocore's standard-mode throttling list, plus the legacy spellings.
THROTTLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "InternalServerException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
_TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
_OVERLOAD_CODES = frozenset({"ServiceUnavailable", "ServiceUnavailableException"})


def classify(exc: BaseException) -> ErrorClass:
    """The class of an error raised by ``invoke_endpoint_async``."""
    if isinstance(exc, FanoutError):
        return "fatal"
    code = error_code(exc)
    status = http_status(exc)
    if code is not None or status is not None:
        if code in THROTTLE_CODES or status == 429:
            return "throttle"
        if code in TRANSIENT_CODES or status in _TRANSIENT_STATUS:
            return "transient"
        return "fatal"
    from botocore import exceptions as bce

    if isinstance(exc, bce.ConnectionError | bce.HTTPClientError):
        # Connection refused or reset, connect and read timeouts, a closed connection.
        return "transient"
    if isinstance(exc, bce.BotoCoreError):
        # ParamValidationError, NoCredentialsError and the like: repeating cannot help.
        return "fatal"
    if isinstance(exc, TimeoutError | ConnectionError):
        return "transient"
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - aiohttp is a dependency
        return "fatal"
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ServerTimeoutError):
        return "transient"
    return "fatal"


def delivery_of(exc: BaseException) -> Delivery:
    """Whether a failed attempt may have been accepted by the endpoint.

    Only a failure to connect proves the request never left: refused, unresolvable, a connect
    timeout, a proxy or TLS handshake failure, or a local error before sending. A connection that
    broke after it was made (reset, closed, read timeout) is ``unknown``: the request may have
    been received and queued, and only its 202 lost.
    """
    if http_status(exc) is not None or error_code(exc) is not None:
        return "answered"
    from botocore import exceptions as bce

    if isinstance(exc, bce.ConnectTimeoutError | bce.ProxyConnectionError | bce.SSLError):
        return "not_sent"
    if isinstance(exc, bce.EndpointConnectionError):
        # aiobotocore raises this for a refused connection and for a reset of an open one alike;
        # the aiohttp error it wraps tells them apart.
        cause = exc.kwargs.get("error")
        return "not_sent" if cause is None or _is_connect_failure(cause) else "unknown"
    if isinstance(exc, bce.ConnectionError | bce.HTTPClientError):
        return "unknown"
    if isinstance(exc, bce.BotoCoreError | FanoutError):
        return "not_sent"
    if isinstance(exc, ConnectionRefusedError):
        return "not_sent"
    return "unknown"


def _is_connect_failure(cause: object) -> bool:
    import socket

    if isinstance(cause, socket.gaierror | ConnectionRefusedError):
        return True
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - aiohttp comes with aiobotocore
        return False
    return isinstance(cause, aiohttp.ClientConnectorError)


def is_transient(exc: BaseException) -> bool:
    """Throttling, server errors and broken connections: worth another try for a read call.

    ``classify`` decides, widened to any 5xx and any aiohttp client error.
    """
    if classify(exc) != "fatal":
        return True
    status = http_status(exc)
    if status is not None and status >= 500:
        return True
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - aiohttp comes with aiobotocore
        return False
    return isinstance(exc, aiohttp.ClientError)


NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


def is_not_found(exc: BaseException) -> bool:
    """An S3 object (or key) that does not exist: an answer, not a failure."""
    return error_code(exc) in NOT_FOUND_CODES or http_status(exc) == 404


def is_overload(exc: BaseException) -> bool:
    """Whether an error says the service is overloaded (a throttle or a 503), so we should slow down."""
    if classify(exc) == "throttle":
        return True
    return error_code(exc) in _OVERLOAD_CODES or http_status(exc) == 503


def retrying(
    policy: RetryPolicy,
    *,
    retry_if: Callable[[BaseException], bool] | None = None,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> AsyncRetrying:
    """A fresh tenacity controller for one call.

    One per call, never shared: tenacity keeps per-call state on the object
    (jd/tenacity#93). Exponential backoff with full jitter, from
    ``wait_initial`` up to ``wait_max``; stops after ``attempts`` tries or once
    ``timeout`` seconds have passed since the first. ``retry_if`` says which
    errors are worth another try; by default, an invoke's: not fatal ones, and,
    with ``at_most_once``, not an attempt that may have been accepted. The last
    error is re-raised unchanged. Tests pass a tiny ``RetryPolicy`` or their own
    ``sleep`` so they never wait long.
    """

    def worth_another(exc: BaseException) -> bool:
        if classify(exc) == "fatal":
            return False
        return not (policy.at_most_once and delivery_of(exc) == "unknown")

    return AsyncRetrying(
        sleep=sleep,
        stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.timeout),
        wait=wait_random_exponential(multiplier=policy.wait_initial, max=policy.wait_max),
        retry=retry_if_exception(retry_if or worth_another),
        before_sleep=before_sleep,
        reraise=True,
    )


async def call_with_retry(policy: RetryPolicy, function: Callable[..., Awaitable[T]], /, **kwargs: Any) -> T:
    """``await function(**kwargs)``, retrying transient errors (``is_transient``) under ``policy``."""
    async for attempt in retrying(policy, retry_if=is_transient):
        with attempt:
            return await function(**kwargs)
    raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover


async def continue_retrying(
    policy: RetryPolicy,
    first_error: Exception,
    attempt: Callable[[], Awaitable[T]],
    *,
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> T:
    """Retry ``attempt`` after a first try, made outside tenacity, raised ``first_error``.

    Most invokes succeed at once, and a tenacity controller costs about 25 µs of CPU per call
    (a tenth of the invoke itself), so the first try is made bare and only a failure builds one.
    The controller is handed that first failure as its own first attempt, so the waits, the stop
    conditions and the retry counts are exactly tenacity's.
    """
    pending: Exception | None = first_error
    async for state in retrying(policy, before_sleep=before_sleep):
        with state:
            if pending is not None:
                error, pending = pending, None
                raise error
            return await attempt()
    raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover


class AimdControl:
    """The control law of ``AdaptiveLimiter``: AIMD on a concurrency window and on a paced send rate.

    Pure and synchronous: every method takes ``now`` (seconds, monotonic).

    Why AIMD and not CUBIC or a latency gradient: InvokeEndpointAsync returns as
    soon as the request is queued, so its latency says nothing about the
    endpoint's load (a Vegas or gradient controller would chase SigV4 and
    connection-pool noise). The only congestion signals are explicit: throttles
    and 503s. Against such a loss signal AIMD is the simplest law that is
    stable and converges; CUBIC's gain (fast recovery after a large cut) matters
    for long-lived flows with big windows, while here a gentle multiplicative
    decrease already keeps the rate near the limit, and AIMD's behaviour is easy
    to state and test.

    Two knobs are cut together. The concurrency window bounds work when the
    round trip is long; the paced rate is what bounds it on a short one, where
    even a window of 1 can send far above a server's rate limit.

    **Slow start.** A run does not open with the full window at once: that
    start-up wave is most of what a throttled run wastes. Both knobs start small
    (``initial_window``, ``initial_rate``) and grow exponentially while nothing
    pushes back: the window by one per success (doubling every round trip, as
    TCP's slow start), the rate doubling every ``doubling`` seconds, never past
    twice the measured send rate (so an input-bound run does not build up a rate
    that would overshoot later). The first overload signal ends slow start.
    Without ``adaptive`` (or ``slow_start``) it starts with the full window,
    unpaced. On an overload signal:

    - **one cut per epoch** (TCP's one-decrease-per-window rule): a permit
      carries the epoch in which it was granted, and only a signal from the
      current epoch cuts. A burst of 64 throttles from one start-up wave is one
      cut, not 64, which is what keeps fanout from collapsing at start-up;
    - the window becomes ``max(1, window * decrease)``;
    - the rate becomes ``decrease * min(rate, measured send rate)``, never below
      ``min_rate``. The send rate is measured from our own sends over the last
      second, so it is known from the first request on (botocore measures
      responses in 0.5-s buckets and so sees 0 at start-up, which is how it falls
      to its 0.5 req/s floor).

    On a success the window grows by ``1/window`` (one per window of successes)
    and the rate by ``increase`` times the rate at the last cut per second (so a
    cycle takes about ``(1 - decrease) / increase`` seconds at any scale). The
    rate never grows past twice the measured send rate, so an idle or
    input-bound period does not build up a rate that would overshoot later.
    ``max_per_second`` is a static ceiling on the rate in every mode.
    """

    def __init__(
        self,
        max_concurrency: int,
        *,
        max_per_second: float | None = None,
        adaptive: bool = True,
        decrease: float = 0.9,
        increase: float = 0.05,
        min_rate: float = 1.0,
        slow_start: bool = True,
        initial_window: int = 4,
        initial_rate: float = 32.0,
        doubling: float = 0.03,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be 1 or more, got {max_concurrency!r}")
        if not 0 < decrease < 1:
            raise ValueError(f"decrease must be between 0 and 1, got {decrease!r}")
        self.max_concurrency = max_concurrency
        self.max_per_second = max_per_second
        self.adaptive = adaptive
        self.decrease = decrease
        self.increase = increase
        self.min_rate = min_rate
        self.doubling = doubling
        self.slow_start = adaptive and slow_start
        """Growing exponentially from the initial window and rate, until the first overload."""
        self.window = float(min(max_concurrency, initial_window) if self.slow_start else max_concurrency)
        self.adaptive_rate: float | None = initial_rate if self.slow_start else None
        self.epoch = 0
        self.cuts = 0
        self._rate_at_cut = 0.0
        self._last_increase = 0.0
        self._sends: deque[float] = deque()
        self._recent_sends: deque[float] = deque()
        self._slow_start_ended = -math.inf
        self._slow_start_floor = 0.0
        self._successes: deque[float] = deque()

    @property
    def limit(self) -> int:
        """The concurrency allowed now."""
        return max(1, int(self.window))

    @property
    def rate(self) -> float | None:
        """The send rate allowed now, in requests per second, or ``None`` when unpaced."""
        rate = self.adaptive_rate
        if self.max_per_second is not None and (rate is None or rate > self.max_per_second):
            return self.max_per_second
        return rate

    def measured_rate(self, now: float) -> float:
        """Our own send rate over the last second (over the time since the first send when younger)."""
        return _rate(self._sends, now)

    def accepted_rate(self, now: float) -> float:
        """The rate of successful responses over the last second, measured the same way."""
        return _rate(self._successes, now)

    def on_send(self, now: float) -> int:
        """Record a send; returns the epoch to carry on its permit."""
        if self.adaptive:
            self._sends.append(now)
            _trim(self._sends, now)
            if self.slow_start:
                self._recent_sends.append(now)
        return self.epoch

    def on_success(self, now: float) -> None:
        if not self.adaptive:
            return
        self._successes.append(now)
        _trim(self._successes, now)
        if self.slow_start:
            self._grow_exponentially(now)
            return
        if self.window < self.max_concurrency:
            self.window = min(float(self.max_concurrency), self.window + 1.0 / self.window)
        if self.adaptive_rate is not None:
            elapsed = max(0.0, now - self._last_increase)
            self._last_increase = now
            ceiling = max(2.0 * self.measured_rate(now), 2.0 * self.min_rate)
            grown = self.adaptive_rate + self.increase * self._rate_at_cut * elapsed
            self.adaptive_rate = max(self.adaptive_rate, min(grown, ceiling))

    def _grow_exponentially(self, now: float) -> None:
        if self.window < self.max_concurrency:
            self.window = min(float(self.max_concurrency), self.window + 1.0)
        assert self.adaptive_rate is not None
        elapsed = max(0.0, now - self._last_increase) if self._last_increase else 0.0
        self._last_increase = now
        # Measured over the last doubling: a longer window lags an exponential rate and would hold it
        # back (over one doubling the mean is 0.72 of the rate, so twice it still lets it double).
        recent = self._recent_sends
        while recent and recent[0] < now - self.doubling:
            recent.popleft()
        sent = _rate(recent, now)
        ceiling = max(2.0 * sent, self.adaptive_rate)
        self.adaptive_rate = min(self.adaptive_rate * 2.0 ** (elapsed / self.doubling), ceiling)
        if self.window >= self.max_concurrency and self.adaptive_rate >= _UNUSED * sent:
            # Twice what we manage to send, with the whole window open: the rate no longer limits
            # anything (the input, the CPU or the round trip does), and pacing would only cost CPU.
            # Slow start is over without a push-back: unpaced, as without slow start.
            self.slow_start = False
            self.adaptive_rate = None
            self._slow_start_ended = now

    def on_overload(self, epoch: int, now: float) -> bool:
        """A throttle or 503 from a permit of ``epoch``; returns whether it cut the limits."""
        if not self.adaptive or epoch != self.epoch:
            return False
        self.epoch += 1
        self.cuts += 1
        self.window = max(1.0, self.window * self.decrease)
        if self.slow_start:
            self._end_slow_start(now)
            return True
        measured = self.measured_rate(now)
        if len(self._sends) < _MIN_SAMPLES:
            # Too few sends to measure a rate: a guess here is how botocore collapses at start-up.
            # The window cut alone slows us down until there is something to measure.
            return True
        # For a second after slow start the measuring window still holds the ramp and reads below
        # the rate actually sent: trust the paced rate until then.
        settled = now - self._slow_start_ended >= _MEASURING_WINDOW
        if self.adaptive_rate is not None and not settled:
            before = self.adaptive_rate
        else:
            before = min(self.adaptive_rate or math.inf, measured)
        rate = self.decrease * before
        if not settled:
            accepted = self._accepted_since_slow_start(now)
            if accepted is None:
                # Too soon to measure: slow start overshot the capacity, by about twice when the
                # service pushed back at once, so never cut below half its last rate.
                rate = max(rate, self._slow_start_floor)
            else:
                # A burst allowance (a token bucket starting full) can hide the capacity until slow
                # start has overshot it by far more than twice; what was accepted since slow start
                # ended is the capacity, and the ramp is not in it. Jump towards it, at most halving.
                rate = min(rate, max(accepted, _DEEPEST_CUT * before))
        if len(self._successes) >= _MIN_SAMPLES and settled:
            # While throttled, what the service accepted is its capacity: jump there at once
            # instead of stepping down one round trip at a time. But never below half the rate
            # before the cut: a stall (ours or the server's) makes the accepted rate read low, and
            # additive increase would take many seconds to climb back from such a deep cut.
            rate = min(rate, max(self.accepted_rate(now), _DEEPEST_CUT * before))
        self.adaptive_rate = max(self.min_rate, rate)
        self._rate_at_cut = self.adaptive_rate
        self._last_increase = now
        return True

    def _accepted_since_slow_start(self, now: float) -> float | None:
        """The rate of successes since slow start ended, or ``None`` with too few to tell."""
        since = now - self._slow_start_ended
        count = sum(1 for success in self._successes if success >= self._slow_start_ended)
        if count < _MIN_SAMPLES_AFTER_SLOW_START or since <= 0:
            return None
        return count / since

    def _end_slow_start(self, now: float) -> None:
        """The first push-back. When the service pushes back as soon as it is over its capacity,
        the rate has at most doubled since the last stretch without one, so it is at most twice the
        capacity, and cutting it by ``decrease`` once per epoch (a round trip) comes down to the
        capacity in a handful of round trips. A burst allowance hides the capacity for longer; then
        the rate accepted since this moment (once a few successes tell it) bounds the cuts instead
        (``on_overload``). The one-second measuring window is not used until a full window follows
        slow start: until then it holds the ramp and reads far below the capacity."""
        self.slow_start = False
        assert self.adaptive_rate is not None
        self._slow_start_floor = _DEEPEST_CUT * self.adaptive_rate
        self.adaptive_rate = max(self.min_rate, self.decrease * self.adaptive_rate)
        self._rate_at_cut = self.adaptive_rate
        self._last_increase = now
        self._slow_start_ended = now
        self._recent_sends.clear()


_MIN_SAMPLES = 20
_MIN_SAMPLES_AFTER_SLOW_START = 4
_DEEPEST_CUT = 0.5
_UNUSED = 1.9
_MEASURING_WINDOW = 1.0


def _per_second(rate: float | None) -> str:
    return "unpaced" if rate is None else f"{rate:,.1f}/s"


def _trim(events: deque[float], now: float) -> None:
    """Drop events older than the one-second window, so the deques stay O(rate), not O(requests)."""
    while events and events[0] < now - 1.0:
        events.popleft()


def _rate(events: deque[float], now: float) -> float:
    _trim(events, now)
    if not events:
        return 0.0
    # A floor on the span keeps a burst of simultaneous first events from reading as infinite.
    return len(events) / max(now - events[0], 0.01)


@dataclass(frozen=True, slots=True)
class LimiterStatistics:
    in_flight: int
    waiting: int
    limit: int
    rate: float | None
    cuts: int


class Permit:
    """The right to send one request; give it back with ``AdaptiveLimiter.release``, or use it as
    ``async with limiter.slot(permit)``. ``signal`` is how its request went, for the controller."""

    __slots__ = ("epoch", "released", "signal")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.released = False
        self.signal: Signal = "neutral"


class _Waiter:
    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = anyio.Event()


class AdaptiveLimiter:
    """A FIFO gate on concurrency and rate, driven by ``AimdControl``.

    Waiters queue in arrival order and only the head of the queue is ever
    awake: a release wakes the head alone, and the head sleeps until its pacing
    time itself, so granting a permit costs O(1) wake-ups however many tasks
    wait (no thundering herd). A waiter owns nothing until the synchronous step
    that hands it a permit, so cancelling it at any await leaks nothing; a
    cancelled head passes the turn on. Pacing is GCRA with a burst tolerance of
    ``burst`` seconds, so timer jitter does not cost throughput at high rates.
    """

    def __init__(
        self,
        max_concurrency: int,
        *,
        max_per_second: float | None = None,
        adaptive: bool = True,
        burst: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
        control: AimdControl | None = None,
    ) -> None:
        self.control = control or AimdControl(
            max_concurrency, max_per_second=max_per_second, adaptive=adaptive
        )
        self._clock = clock
        self._burst = burst
        self._in_flight = 0
        self._tat = -math.inf
        self._waiters: OrderedDict[_Waiter, None] = OrderedDict()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def statistics(self) -> LimiterStatistics:
        return LimiterStatistics(
            in_flight=self._in_flight,
            waiting=len(self._waiters),
            limit=self.control.limit,
            rate=self.control.rate,
            cuts=self.control.cuts,
        )

    def _delay(self, now: float, paced: bool) -> float:
        """Seconds until a permit may be granted, ``inf`` when the window is full."""
        if self._in_flight >= self.control.limit:
            return math.inf
        rate = self.control.rate
        if rate is None or not paced:
            return 0.0
        return self._tat - self._burst - now

    def _take(self, now: float, paced: bool) -> Permit:
        self._in_flight += 1
        if not paced:
            return Permit(self.control.epoch)
        rate = self.control.rate
        if rate is not None:
            self._tat = max(self._tat, now) + 1.0 / rate
        return Permit(self.control.on_send(now))

    def _wake_head(self) -> None:
        if self._waiters:
            next(iter(self._waiters)).event.set()

    async def acquire(self, *, paced: bool = True) -> Permit:
        """A permit: a place in the window and, when ``paced``, a send under the rate. Unpaced is
        for a call whose send was already counted (a staged request, paced before its upload)."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        now = self._clock()
        if not self._waiters and self._delay(now, paced) <= 0:
            return self._take(now, paced)
        waiter = _Waiter()
        self._waiters[waiter] = None
        try:
            while True:
                delay = math.inf
                if next(iter(self._waiters)) is waiter:
                    now = self._clock()
                    delay = self._delay(now, paced)
                    if delay <= 0:
                        del self._waiters[waiter]
                        permit = self._take(now, paced)
                        self._wake_head()
                        return permit
                if math.isinf(delay):
                    await waiter.event.wait()
                else:
                    with anyio.move_on_after(delay):
                        await waiter.event.wait()
                waiter.event = anyio.Event()
        except BaseException:
            if waiter in self._waiters:
                was_head = next(iter(self._waiters)) is waiter
                del self._waiters[waiter]
                if was_head:
                    self._wake_head()
            raise

    def release(self, permit: Permit) -> None:
        """Give a permit back; its ``signal`` says how its request went. Idempotent."""
        if permit.released:
            return
        permit.released = True
        self._in_flight -= 1
        now = self._clock()
        if permit.signal == "success":
            self.control.on_success(now)
        elif permit.signal == "overload" and self.control.on_overload(permit.epoch, now):
            log.debug(
                "overloaded: the window is now %d, the rate %s",
                self.control.limit,
                _per_second(self.control.rate),
            )
        self._wake_head()

    def slot(self, permit: Permit | None = None, *, paced: bool = True) -> _Slot:
        """``async with limiter.slot(permit) as held``: hold ``permit`` (or a new one, ``paced`` or
        not) for the block, and give it back however the block ends, with the signal set on it."""
        return _Slot(self, permit, paced)


class _Slot:
    """The async context manager of ``AdaptiveLimiter.slot`` (a class: it is on the hot path, and a
    generator-based one costs several times as much)."""

    __slots__ = ("_limiter", "_paced", "_permit")

    def __init__(self, limiter: AdaptiveLimiter, permit: Permit | None, paced: bool) -> None:
        self._limiter = limiter
        self._permit = permit
        self._paced = paced

    async def __aenter__(self) -> Permit:
        if self._permit is None:
            self._permit = await self._limiter.acquire(paced=self._paced)
        return self._permit

    async def __aexit__(self, *exc_info: object) -> None:
        if self._permit is not None:
            self._limiter.release(self._permit)


def signal_of(exc: BaseException | None) -> Signal:
    """What a finished attempt tells the controller."""
    if exc is None:
        return "success"
    return "overload" if is_overload(exc) else "neutral"


def describe(exc: BaseException) -> str:
    """A one-line reason for a ``Rejected`` outcome."""
    code = error_code(exc)
    response: Any = getattr(exc, "response", None)
    message = None
    if isinstance(response, dict):
        message = (response.get("Error") or {}).get("Message")
    if code is not None:
        return f"{code}: {message}" if message else code
    return f"{type(exc).__name__}: {exc}"
