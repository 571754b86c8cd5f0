"""The dispatcher's own benchmark: fanout's ``Dispatcher`` against the plain aiobotocore ways.

Run by ``python -m benchmarks.dispatch`` (which reports it on its own) and by the ``usual_ways``
(submit only) and ``throttled`` scenarios of ``python -m benchmarks``.

(a) **Throughput** (``bench_throughput``): ``n`` inline 1 KB InvokeEndpointAsync calls, no server
throttle, through fanout's ``Dispatcher.submit_all`` (``max_in_flight`` 64, each result released
as it arrives) and through a bare aiobotocore loop, ``asyncio.gather`` over ``n`` coroutines under
``Semaphore(64)``, one client with ``max_pool_connections=64`` and botocore's retries off. The two
alternate within each repetition (the order flips every repetition) against the same emulator
process.

(b) **Throttled** (``bench_throttled``): the emulator's token bucket admits ``rate`` req/s
(``burst`` tokens, the bucket starts full) on InvokeEndpointAsync. For ``duration`` seconds, 64
workers each submit one request at a time, again and again: through fanout's ``Dispatcher.submit``
(its default retry policy and adaptive limiter) and through one aiobotocore client in botocore's
adaptive retry mode (``retries={"mode": "adaptive", "max_attempts": 10}``). At the window's end
the throttle is lifted and botocore's limiter opened, so what is still retrying finishes at once
instead of being cancelled inside aiobotocore's token bucket (which hangs on CPython 3.11); that
tail is not counted.

Both return every run as a ``Sample``, keyed by side (``fanout`` and ``bare``, or ``fanout`` and
``adaptive``), with the settings. Metrics of a throughput run: ``n``, ``succeeded``, ``failed``,
``rate``, ``wall_s``, ``client_cpu_per_k``, ``server_cpu_per_k`` (per 1,000 submits),
``preempted`` and ``others`` (signs of a busy machine, see ``CpuClock``), ``order``. Of a
throttled run: ``n`` (started), ``succeeded`` (accepted, as the client saw it),
``accepted_in_window``, ``goodput``, ``goodput_ratio``, ``accepted`` and ``throttled`` (the
emulator's counts over the window), ``waste`` (= throttled / accepted), ``gave_up``,
``longest_low``, ``collapsed`` (goodput below 0.5·R for more than 1 s after the first second),
``first_second_goodput``, ``reached_90``, ``cancelled_tail``, the CPU metrics per 1,000 accepted,
and for fanout its limiter's ``final_rate`` / ``final_limit``; series ``goodput`` (accepted per
second in each 0.5-s bucket of the window), ``throttled`` (per second, sampled from the emulator)
and for fanout ``rate`` and ``window`` (its limiter's paced rate and concurrency at each bucket's
end).

``env`` is what ``fanout.testing.run_emulator_process`` (or ``Emulator.env``) yields: the emulator
URL, region, credentials and ``FANOUT_ENDPOINT``. Both benchmarks *replace* the emulator's faults
through ``PUT /_fanout/faults`` and leave them cleared. They do not pin CPUs. ``server_pid``
(optional) adds the emulator's CPU.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import pairwise
from typing import Any

import anyio

from fanout import Dispatcher, InferenceRequest, Limits, Submission, open_runtime_client

from .._harness import CpuClock, Sample, Stat, ratio, repeat_sides_async, stat, values
from ._target import Control, open_control
from ._workload import client_location, env_session

__all__ = [
    "ADAPTIVE_RETRIES",
    "BUCKET_SECONDS",
    "GOODPUT_GOAL",
    "LABELS",
    "WARMUP_CALLS",
    "WASTE_GOAL",
    "Throttled",
    "Throughput",
    "bench_throttled",
    "bench_throughput",
]

BUCKET_SECONDS = 0.5
CONTENT_TYPE = "application/octet-stream"
THROUGHPUT_GOAL = 0.9
GOODPUT_GOAL = 0.95
WASTE_GOAL = 0.05
WARMUP_CALLS = 64
ADAPTIVE_RETRIES = {"mode": "adaptive", "max_attempts": 10}
LABELS = {
    "fanout": "fanout Dispatcher",
    "bare": "bare aiobotocore gather + Semaphore",
    "adaptive": "aiobotocore, botocore adaptive retries",
}


def _body(size: int) -> bytes:
    # Not JSON, so the emulator's model only hashes it.
    return (bytes(range(256)) * (size // 256 + 1))[:size]


@asynccontextmanager
async def _open_dispatcher(
    session: Any, env: dict[str, str], max_in_flight: int
) -> AsyncIterator[Dispatcher]:
    """fanout's Dispatcher for the emulator of ``env``: payload inline, the given concurrency."""
    limits = Limits(max_in_flight=max_in_flight, max_pending=max(1_000, 4 * max_in_flight))
    location = client_location(env)
    async with open_runtime_client(
        session,
        limits=limits,
        region_name=location["region_name"],
        endpoint_url=location["endpoint_url"],
        fast_path=True,  # as open_client does by default
    ) as runtime:
        yield Dispatcher(
            endpoint_name=env["FANOUT_ENDPOINT"], runtime=runtime, limits=limits, payload="inline"
        )


# --- (a) throughput ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Throughput:
    """What ``bench_throughput`` measured: its settings and every run of each side."""

    n: int
    repeat: int
    max_in_flight: int
    body_bytes: int
    sides: dict[str, list[Sample]]
    goal: float = THROUGHPUT_GOAL

    @property
    def ratio_rate(self) -> Stat:
        """fanout's submit rate over the bare loop's, repetition by repetition."""
        return ratio(self.sides["fanout"], self.sides["bare"], "rate")

    @property
    def met(self) -> bool:
        return self.ratio_rate.median >= self.goal


def _throughput_sample(clock: CpuClock, n: int, accepted: int, failed: int) -> Sample:
    rate = n / clock.wall if clock.wall > 0 else math.nan
    return Sample(
        metrics={"n": n, "succeeded": accepted, "failed": failed, "rate": rate, **clock.per_thousand(n)}
    )


async def _fanout_throughput(
    session: Any, env: dict[str, str], *, n: int, max_in_flight: int, body: bytes, server_pid: int | None
) -> Sample:
    async with _open_dispatcher(session, env, max_in_flight) as dispatcher:

        async def run(count: int) -> tuple[int, int]:
            accepted = rejected = 0
            requests = (InferenceRequest(body=body, content_type=CONTENT_TYPE) for _ in range(count))
            async with dispatcher.submit_all(requests) as results:
                async for result in results:
                    if isinstance(result, Submission):
                        accepted += 1
                    else:
                        rejected += 1
                    # What a tracker does once the outcome is in; keeps max_pending from filling.
                    dispatcher.release(result)
            return accepted, rejected

        await run(WARMUP_CALLS)
        with CpuClock(server_pid) as clock:
            accepted, rejected = await run(n)
    return _throughput_sample(clock, n, accepted, rejected)


async def _bare_throughput(
    session: Any, env: dict[str, str], *, n: int, max_in_flight: int, body: bytes, server_pid: int | None
) -> Sample:
    from aiobotocore.config import AioConfig

    config = AioConfig(
        max_pool_connections=max_in_flight, retries={"mode": "standard", "total_max_attempts": 1}
    )
    endpoint = env["FANOUT_ENDPOINT"]
    async with session.create_client("sagemaker-runtime", config=config, **client_location(env)) as client:
        semaphore = asyncio.Semaphore(max_in_flight)

        async def one() -> bool:
            async with semaphore:
                try:
                    await client.invoke_endpoint_async(
                        EndpointName=endpoint, Body=body, ContentType=CONTENT_TYPE
                    )
                except Exception:
                    return False
                return True

        async def run(count: int) -> list[bool]:
            # The recipe being measured: every call a coroutine up front, gathered.
            return await asyncio.gather(*(one() for _ in range(count)))

        await run(WARMUP_CALLS)
        with CpuClock(server_pid) as clock:
            results = await run(n)
    accepted = sum(results)
    return _throughput_sample(clock, n, accepted, n - accepted)


async def bench_throughput(
    env: dict[str, str],
    *,
    n: int,
    repeat: int,
    max_in_flight: int = 64,
    body_bytes: int = 1024,
    server_pid: int | None = None,
    timeout: float | None = None,
) -> Throughput:
    """(a): fanout's Dispatcher against a bare gather + Semaphore loop; see the module docstring.

    Each side of each repetition must finish within ``timeout`` seconds (default: 30 s plus
    ``n`` / 50), else ``TimeoutError``.
    """
    if n < 1 or repeat < 1:
        raise ValueError("n and repeat must be 1 or more")
    limit = timeout if timeout is not None else 30.0 + n / 50.0
    body = _body(body_bytes)
    session = env_session(env)

    async def within_limit(run: Callable[..., Awaitable[Sample]]) -> Sample:
        with anyio.fail_after(limit):
            return await run(session, env, n=n, max_in_flight=max_in_flight, body=body, server_pid=server_pid)

    async with open_control(env, clear_faults=True):
        sides = await repeat_sides_async(
            {
                "fanout": partial(within_limit, _fanout_throughput),
                "bare": partial(within_limit, _bare_throughput),
            },
            repeat,
        )
    return Throughput(n=n, repeat=repeat, max_in_flight=max_in_flight, body_bytes=body_bytes, sides=sides)


# --- (b) throttled -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Throttled:
    """What ``bench_throttled`` measured: its settings and every run of each side."""

    rate: float
    burst: float
    duration: float
    workers: int
    repeat: int
    sides: dict[str, list[Sample]]
    bucket_seconds: float = BUCKET_SECONDS
    adaptive_retries: dict[str, Any] = field(default_factory=lambda: dict(ADAPTIVE_RETRIES))

    @property
    def met(self) -> bool:
        """fanout's goal: goodput ≥ 0.95·R and waste ≤ 5 % (medians), and no collapsed run."""
        fanout = self.sides["fanout"]
        return (
            stat(values(fanout, "goodput_ratio")).median >= GOODPUT_GOAL
            and stat(values(fanout, "waste")).median <= WASTE_GOAL
            and sum(values(fanout, "collapsed")) == 0
        )


@dataclass(slots=True)
class _Tally:
    """What the workers of one throttled run saw; ``accepted_at`` is seconds since the window opened."""

    start: float
    deadline: float
    cap: int
    started: int = 0
    gave_up: int = 0
    accepted_at: list[float] = field(default_factory=list)

    def more(self) -> bool:
        return time.monotonic() < self.deadline and self.started < self.cap

    def accepted(self) -> None:
        self.accepted_at.append(time.monotonic() - self.start)

    @property
    def buckets(self) -> int:
        return math.ceil((self.deadline - self.start) / BUCKET_SECONDS - 1e-9)

    async def bucket_end(self, index: int) -> None:
        """Sleep until the end of bucket ``index`` (1-based)."""
        await anyio.sleep(max(0.0, self.start + index * BUCKET_SECONDS - time.monotonic()))


async def _counters(emulator: Control) -> tuple[int, int]:
    """(accepted invocations, throttled requests) so far."""
    stats = await emulator.stats()
    return int(stats["invocations"]["accepted"]), int(stats["faults"]["throttled"])


async def _sample_window(emulator: Control, tally: _Tally, samples: list[tuple[int, int]]) -> None:
    """The emulator's counters at every bucket boundary of the window; then the throttle goes off.

    Lifting the throttle at the window's end lets what is still retrying finish at once, so the
    tail is short for both sides, and every throttle counted belongs to the window.
    """
    try:
        for index in range(1, tally.buckets + 1):
            await tally.bucket_end(index)
            samples.append(await _counters(emulator))
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await emulator.set_faults({})


async def _fanout_throttled(session: Any, env: dict[str, str], tally: _Tally, workers: int) -> Sample:
    body = _body(1024)
    async with _open_dispatcher(session, env, workers) as dispatcher:

        async def worker() -> None:
            while tally.more():
                tally.started += 1
                result = await dispatcher.submit(InferenceRequest(body=body, content_type=CONTENT_TYPE))
                if isinstance(result, Submission):
                    tally.accepted()
                else:
                    tally.gave_up += 1
                dispatcher.release(result)

        rates: list[float] = []
        windows: list[float] = []
        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker)
            # The limiter's state at the end of every bucket, to plot beside the goodput.
            for index in range(1, tally.buckets + 1):
                await tally.bucket_end(index)
                stats = dispatcher.statistics()
                rates.append(math.nan if stats.current_rate is None else stats.current_rate)
                windows.append(stats.current_limit)
        stats = dispatcher.statistics()
    return Sample(
        metrics={
            "client_throttles": stats.throttles,
            **{f"retries:{kind}": count for kind, count in stats.retries_by_class.items()},
            "final_limit": stats.current_limit,
            "final_rate": math.nan if stats.current_rate is None else stats.current_rate,
        },
        series={"rate": rates, "window": windows},
    )


async def _adaptive_throttled(session: Any, env: dict[str, str], tally: _Tally, workers: int) -> Sample:
    from aiobotocore.config import AioConfig

    body = _body(1024)
    endpoint = env["FANOUT_ENDPOINT"]
    config = AioConfig(max_pool_connections=workers, retries=dict(ADAPTIVE_RETRIES))
    async with session.create_client("sagemaker-runtime", config=config, **client_location(env)) as client:
        limiter = _rate_limiter(client)

        async def worker() -> None:
            while tally.more():
                tally.started += 1
                try:
                    await client.invoke_endpoint_async(
                        EndpointName=endpoint, Body=body, ContentType=CONTENT_TYPE
                    )
                except Exception:
                    tally.gave_up += 1
                else:
                    tally.accepted()

        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker)
            await anyio.sleep(max(0.0, tally.deadline - time.monotonic()))
            opened = limiter is not None and await _open_gate(limiter)
    return Sample(metrics={"gate_opened": float(opened)})


def _rate_limiter(client: Any) -> Any | None:
    """aiobotocore's adaptive rate limiter of ``client``, found through its ``before-send`` hook."""
    try:
        from aiobotocore.retries.adaptive import AsyncClientRateLimiter

        events = client.meta.events
        handlers = getattr(events, "_emitter", events)._handlers.prefix_search(
            "before-send.sagemaker-runtime.InvokeEndpointAsync"
        )
    except (ImportError, AttributeError):
        return None
    for handler in handlers:
        owner = getattr(handler, "__self__", None)
        if isinstance(owner, AsyncClientRateLimiter):
            return owner
    return None


async def _open_gate(limiter: Any) -> bool:
    """After the window: let botocore's limiter pass every waiting and retrying call at once.

    Without this the tail can last minutes (64 calls queued at its 0.5 req/s floor), and cutting it
    short means cancelling tasks inside aiobotocore's token bucket, which on CPython 3.11 leaves the
    bucket's lock held and hangs the event loop's shutdown. Only the tail after the window changes;
    these are private attributes of aiobotocore 3.x, so any mismatch just skips this.
    """

    async def keep_rate(value: float) -> None:
        return None

    try:
        bucket = limiter._token_bucket
        condition = bucket._new_fill_rate_condition
        limiter._enabled = False
        bucket.set_max_rate = keep_rate  # responses in the tail would lower the rate again
        async with condition:
            bucket._set_max_rate(1e9)
            condition.notify_all()
    except AttributeError:
        return False
    return True


def _series(accepted_at: Sequence[float], duration: float) -> list[float]:
    buckets = [0] * math.ceil(duration / BUCKET_SECONDS - 1e-9)
    for t in accepted_at:
        index = int(t / BUCKET_SECONDS)
        if 0 <= t < duration and index < len(buckets):
            buckets[index] += 1
    return [count / BUCKET_SECONDS for count in buckets]


def _reach(series: Sequence[float], level: float) -> float:
    """When the goodput first reached ``level`` (start of that bucket, seconds); NaN if it never did."""
    return next((i * BUCKET_SECONDS for i, value in enumerate(series) if value >= level), math.nan)


def _longest_low(series: Sequence[float], rate: float) -> float:
    """The longest stretch (seconds) after the first second with goodput below 0.5·R."""
    longest = current = 0.0
    first = math.ceil(1.0 / BUCKET_SECONDS)
    for value in series[first:]:
        current = current + BUCKET_SECONDS if value < 0.5 * rate else 0.0
        longest = max(longest, current)
    return longest


def _throttled_sample(
    tally: _Tally,
    samples: Sequence[tuple[int, int]],
    before: tuple[int, int],
    after: tuple[int, int],
    *,
    rate: float,
    duration: float,
    clock: CpuClock,
) -> Sample:
    in_window = sum(1 for t in tally.accepted_at if t < duration)
    goodput = in_window / duration
    series = _series(tally.accepted_at, duration)
    counts = [before[1], *(throttled for _, throttled in samples)]
    throttle_series = [(b - a) / BUCKET_SECONDS for a, b in pairwise(counts)]
    # The last sample closes the window; the throttle is lifted right after it.
    window = samples[-1] if samples else after
    accepted, throttled = window[0] - before[0], window[1] - before[1]
    longest_low = _longest_low(series, rate)
    metrics = {
        "n": tally.started,
        "succeeded": len(tally.accepted_at),
        "accepted_in_window": in_window,
        "goodput": goodput,
        "goodput_ratio": goodput / rate,
        "accepted": accepted,
        "throttled": throttled,
        "waste": throttled / accepted if accepted else math.inf,
        "accepted_total": after[0] - before[0],
        "throttled_total": after[1] - before[1],
        "gave_up": tally.gave_up,
        "longest_low": longest_low,
        "collapsed": float(longest_low > 1.0),
        "first_second_goodput": sum(series[: math.ceil(1.0 / BUCKET_SECONDS)]) * BUCKET_SECONDS,
        "reached_90": _reach(series, 0.9 * rate),
        **clock.per_thousand(len(tally.accepted_at)),
    }
    return Sample(
        metrics={k: float(v) for k, v in metrics.items()},
        series={"goodput": series, "throttled": throttle_series},
    )


async def bench_throttled(
    env: dict[str, str],
    *,
    rate: float,
    duration: float,
    repeat: int,
    burst: float | None = None,
    workers: int = 64,
    server_pid: int | None = None,
    drain: float = 60.0,
) -> Throttled:
    """(b): fanout's Dispatcher against botocore's adaptive mode under a throttle of ``rate`` req/s.

    ``burst`` defaults to 0.05 s worth of tokens (at least 1). Each side of each repetition stops
    starting requests after ``duration`` seconds (or after 10·rate·duration + 1,000 requests); the
    throttle is then lifted and botocore's limiter opened so that what is still retrying finishes,
    within ``drain`` more seconds or it is cancelled.
    """
    if rate <= 0 or duration <= 0 or repeat < 1 or workers < 1:
        raise ValueError("rate, duration, repeat and workers must be positive")
    burst = burst if burst is not None else max(1.0, round(rate * 0.05))
    session = env_session(env)
    cap = int(10 * rate * duration) + 1_000
    throttle = {"throttle": {"rate": rate, "burst": burst}, "targets": ["sagemaker"]}

    async def within_window(
        emulator: Control, side: Callable[[Any, dict[str, str], _Tally, int], Awaitable[Sample]]
    ) -> Sample:
        await emulator.set_faults(throttle)
        before = await _counters(emulator)
        samples: list[tuple[int, int]] = []
        extra = Sample()
        start = time.monotonic()
        tally = _Tally(start=start, deadline=start + duration, cap=cap)
        with CpuClock(server_pid) as clock:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_sample_window, emulator, tally, samples)
                with anyio.move_on_after(duration + drain) as scope:
                    extra = await side(session, env, tally, workers)
        after = await _counters(emulator)
        sample = _throttled_sample(tally, samples, before, after, rate=rate, duration=duration, clock=clock)
        sample.metrics.update(extra.metrics, cancelled_tail=float(scope.cancelled_caught))
        sample.series.update(extra.series)
        return sample

    async with open_control(env, clear_faults=True) as emulator:
        sides = await repeat_sides_async(
            {
                "fanout": partial(within_window, emulator, _fanout_throttled),
                "adaptive": partial(within_window, emulator, _adaptive_throttled),
            },
            repeat,
        )
    return Throttled(rate=rate, burst=burst, duration=duration, workers=workers, repeat=repeat, sides=sides)
