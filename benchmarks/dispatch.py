"""Dispatcher benchmark: fanout's submit path against the plain aiobotocore ways, side by side in one run.

    python -m benchmarks.dispatch [--quick] [--n N] [--rate R] [--repeat K] [--duration S] [--burst B]
    python benchmarks/dispatch.py ...

(a) **Throughput** (``bench_throughput``): ``n`` inline 1 KB InvokeEndpointAsync calls, no server
throttle, through fanout's ``Dispatcher.submit_all`` (``max_in_flight`` 64, each submission
completed as it arrives) and through a bare aiobotocore loop, ``asyncio.gather`` over ``n``
coroutines under ``Semaphore(64)``, one client with ``max_pool_connections=64`` and botocore's
retries off. The two alternate within each repetition (the order flips every repetition) against
the same emulator process. Reported: submits/s and client CPU-seconds per 1,000 submits, the
median and min–max over the repetitions, and the ratio fanout/bare taken within each repetition.

(b) **Throttled** (``bench_throttled``): the emulator's token bucket admits ``rate`` req/s
(``burst`` tokens, the bucket starts full) on InvokeEndpointAsync. For ``duration`` seconds, 64
workers each submit one request at a time, again and again: through fanout's ``Dispatcher.submit``
(its default retry policy and adaptive limiter) and through one aiobotocore client in botocore's
adaptive retry mode (``retries={"mode": "adaptive", "max_attempts": 10}``). Reported per side:
goodput/R (calls accepted inside the window per second, over R), throttled calls per accepted call
(both counted by the emulator), requests that gave up, a goodput series per 0.5 s, and whether the
side *collapsed*: goodput below 0.5·R for more than 1 s after the first second. At the window's end
the throttle is lifted and botocore's limiter opened, so what is still retrying finishes at once
instead of being cancelled inside aiobotocore's token bucket (which hangs on CPython 3.11); that
tail is not counted.

Functions for ``python -m benchmarks`` (every one bounded in count and in time):

    async def bench_throughput(env, *, n, repeat, max_in_flight=64, body_bytes=1024,
                               server_pid=None, timeout=None) -> dict[str, Any]
    async def bench_throttled(env, *, rate, duration, repeat, burst=None, workers=64,
                              server_pid=None, drain=60.0) -> dict[str, Any]
    def render_markdown(throughput, throttled, *, command=None, info=None) -> str
    def environment_info() -> dict[str, str]
    def emulator_pid(env) -> int | None       # the child ``python -m fanout.testing`` serving env
    def main(argv=None) -> int

``env`` is what ``fanout.testing.run_emulator_process`` (or ``Emulator.env``) yields: the emulator
URL, region, credentials and ``FANOUT_ENDPOINT``. Both benchmarks *replace* the emulator's faults
through ``PUT /_fanout/faults`` and leave them cleared. The functions do not pin CPUs; ``main`` pins
the emulator to CPU 0 and itself to CPU 1. ``server_pid`` (optional) adds the emulator's CPU.

Result shapes (``Stat`` = ``{"median", "min", "max"}``)::

    bench_throughput -> {"n", "repeat", "max_in_flight", "body_bytes",
        "sides": {"fanout"|"bare": {"label", "rate": Stat, "cpu_per_1000": Stat,
                  "server_cpu_per_1000": Stat | None, "runs": [run, ...]}},
        "ratio_rate": Stat, "ratio_cpu": Stat, "ratio_rate_runs": [...], "goal": 0.9, "met": bool}
    bench_throttled -> {"rate", "burst", "duration", "workers", "repeat", "bucket_seconds": 0.5,
        "sides": {"fanout"|"adaptive": {"label", "goodput_ratio": Stat, "waste": Stat,
                  "gave_up": Stat, "longest_low": Stat, "reached_90": Stat, "cpu_per_1000": Stat,
                  "collapsed_runs": int, "runs": [run, ...]}},
        "goals": {...}, "met": bool}

where each throttled ``run`` holds ``series`` (accepted per second in each 0.5-s bucket of the
window, client-side), ``throttle_series`` (throttled per second, sampled from the emulator),
``goodput_ratio``, ``waste`` (= ``throttled`` / ``accepted``, the emulator's counts over the
window), ``collapsed``, ``longest_low`` and ``reached_90`` (seconds), and for fanout
``rate_series`` / ``window_series`` (its limiter's paced rate and concurrency at each bucket's end).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import anyio

if __package__ in (None, ""):
    # ``python benchmarks/dispatch.py``: make the repository importable as it is for ``-m``.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fanout._config import Limits
from fanout._dispatch import Dispatcher, open_runtime_client
from fanout._models import InferenceRequest, Submission

__all__ = [
    "bench_throttled",
    "bench_throughput",
    "emulator_pid",
    "environment_info",
    "main",
    "render_markdown",
]

RESULTS = Path(__file__).resolve().parent / "results" / "dispatch.md"
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


# --- small helpers -------------------------------------------------------------------------------------


def _stat(values: Sequence[float]) -> dict[str, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"median": math.nan, "min": math.nan, "max": math.nan}
    return {"median": statistics.median(finite), "min": min(finite), "max": max(finite)}


def _body(size: int) -> bytes:
    # Not JSON, so the emulator's model only hashes it.
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def _cpu_ticks(pid: int | None) -> float | None:
    """CPU-seconds (user + system) a process has used, from /proc; None when unknown."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def emulator_pid(env: dict[str, str]) -> int | None:
    """The pid of this process's child ``python -m fanout.testing`` that serves ``env``, if there is one."""
    port = env.get("AWS_ENDPOINT_URL", "").rsplit(":", 1)[-1]
    me = str(os.getpid())
    candidates: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii") as stat:
                parent = stat.read().rsplit(")", 1)[1].split()[1]
            if parent != me:
                continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                argv = cmdline.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "fanout.testing" in argv:
            candidates.append(int(entry.name))
            if port in argv:
                return int(entry.name)
    return candidates[0] if len(candidates) == 1 else None


def _machine_busy() -> float | None:
    """CPU-seconds all CPUs have spent busy (not idle, not waiting for I/O; steal included)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(x) for x in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class _Meter:
    """Wall time, this process's CPU time and (optionally) the emulator's CPU time over a block.

    Two signs of a busy machine: ``preempted``, this process's involuntary context switches per
    second, and ``others``, the CPUs' busy time not spent by this process or the emulator, in cores
    (when the emulator's pid is known; steal time counts as busy).
    """

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.wall = self.cpu = self.preempted = 0.0
        self.server_cpu: float | None = None
        self.others: float | None = None

    def __enter__(self) -> _Meter:
        self._busy0 = _machine_busy()
        self._server0 = _cpu_ticks(self.server_pid)
        self._switches0 = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
        self._cpu0 = time.process_time()
        self._wall0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall0
        self.cpu = time.process_time() - self._cpu0
        switches = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - self._switches0
        self.preempted = switches / self.wall if self.wall > 0 else 0.0
        server = _cpu_ticks(self.server_pid)
        if server is not None and self._server0 is not None:
            self.server_cpu = server - self._server0
        busy = _machine_busy()
        if busy is not None and self._busy0 is not None and self.server_cpu is not None and self.wall > 0:
            self.others = max(0.0, busy - self._busy0 - self.cpu - self.server_cpu) / self.wall


@dataclass(slots=True)
class _Emulator:
    """The control side of a running emulator: its faults and its counters."""

    url: str
    http: aiohttp.ClientSession

    async def set_faults(self, faults: dict[str, Any]) -> None:
        async with self.http.put(f"{self.url}/_fanout/faults", json=faults) as response:
            if response.status != 200:
                raise RuntimeError(f"the emulator refused the faults {faults}: {await response.text()}")

    async def counters(self) -> tuple[int, int]:
        """(accepted invocations, throttled requests) so far."""
        async with self.http.get(f"{self.url}/_fanout/stats") as response:
            stats = await response.json()
        return int(stats["invocations"]["accepted"]), int(stats["faults"]["throttled"])


@asynccontextmanager
async def _control(env: dict[str, str]) -> AsyncIterator[_Emulator]:
    url = env["AWS_ENDPOINT_URL"]
    host = url.split("://", 1)[-1].split(":", 1)[0]
    if host not in ("127.0.0.1", "localhost"):
        raise ValueError(f"the dispatch benchmark runs against a loopback emulator only, got {url!r}")
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        emulator = _Emulator(url, http)
        await emulator.set_faults({})
        try:
            yield emulator
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await emulator.set_faults({})


def _session(env: dict[str, str]) -> Any:
    from aiobotocore.session import get_session

    session = get_session()
    session.set_credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    return session


def _client_kwargs(env: dict[str, str]) -> dict[str, Any]:
    return {"region_name": env.get("AWS_REGION", "us-east-1"), "endpoint_url": env["AWS_ENDPOINT_URL"]}


# --- (a) throughput ------------------------------------------------------------------------------------


async def _fanout_throughput(
    session: Any, env: dict[str, str], *, n: int, max_in_flight: int, body: bytes, server_pid: int | None
) -> dict[str, Any]:
    limits = Limits(max_in_flight=max_in_flight, max_pending=max(1_000, 4 * max_in_flight))
    endpoint = env["FANOUT_ENDPOINT"]
    async with open_runtime_client(session, limits=limits, **_client_kwargs(env)) as runtime:
        dispatcher = Dispatcher(endpoint_name=endpoint, runtime=runtime, limits=limits, payload="inline")

        async def run(count: int) -> tuple[int, int]:
            accepted = rejected = 0
            requests = (InferenceRequest(body=body, content_type=CONTENT_TYPE) for _ in range(count))
            async with dispatcher.submit_all(requests) as outcomes:
                async for outcome in outcomes:
                    if isinstance(outcome, Submission):
                        accepted += 1
                        # What a tracker does once the outcome is in; keeps max_pending from filling.
                        await dispatcher.complete(outcome)
                    else:
                        rejected += 1
            return accepted, rejected

        await run(WARMUP_CALLS)
        with _Meter(server_pid) as meter:
            accepted, rejected = await run(n)
    return _throughput_run(meter, n, accepted, rejected)


async def _bare_throughput(
    session: Any, env: dict[str, str], *, n: int, max_in_flight: int, body: bytes, server_pid: int | None
) -> dict[str, Any]:
    from aiobotocore.config import AioConfig

    config = AioConfig(
        max_pool_connections=max_in_flight, retries={"mode": "standard", "total_max_attempts": 1}
    )
    endpoint = env["FANOUT_ENDPOINT"]
    async with session.create_client("sagemaker-runtime", config=config, **_client_kwargs(env)) as client:
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
        with _Meter(server_pid) as meter:
            results = await run(n)
    accepted = sum(results)
    return _throughput_run(meter, n, accepted, n - accepted)


def _throughput_run(meter: _Meter, n: int, accepted: int, failed: int) -> dict[str, Any]:
    return {
        "n": n,
        "accepted": accepted,
        "failed": failed,
        "wall": meter.wall,
        "rate": n / meter.wall if meter.wall > 0 else math.nan,
        "cpu": meter.cpu,
        "cpu_per_1000": 1000.0 * meter.cpu / n,
        "server_cpu_per_1000": (1000.0 * meter.server_cpu / n) if meter.server_cpu is not None else None,
        "preempted": meter.preempted,
        "others": meter.others,
    }


async def bench_throughput(
    env: dict[str, str],
    *,
    n: int,
    repeat: int,
    max_in_flight: int = 64,
    body_bytes: int = 1024,
    server_pid: int | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """(a): fanout's Dispatcher against a bare gather + Semaphore loop; see the module docstring.

    Each side of each repetition must finish within ``timeout`` seconds (default: 30 s plus
    ``n`` / 50), else ``TimeoutError``.
    """
    if n < 1 or repeat < 1:
        raise ValueError("n and repeat must be 1 or more")
    limit = timeout if timeout is not None else 30.0 + n / 50.0
    body = _body(body_bytes)
    session = _session(env)
    sides = {"fanout": _fanout_throughput, "bare": _bare_throughput}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    async with _control(env):
        for index in range(repeat):
            order = list(sides) if index % 2 == 0 else list(reversed(sides))
            for name in order:
                with anyio.fail_after(limit):
                    run = await sides[name](
                        session, env, n=n, max_in_flight=max_in_flight, body=body, server_pid=server_pid
                    )
                run["order"] = order.index(name)
                runs[name].append(run)
    ratio_rate = [f["rate"] / b["rate"] for f, b in zip(runs["fanout"], runs["bare"], strict=True)]
    ratio_cpu = [
        f["cpu_per_1000"] / b["cpu_per_1000"] for f, b in zip(runs["fanout"], runs["bare"], strict=True)
    ]
    result_sides: dict[str, Any] = {}
    for name, side_runs in runs.items():
        server = [r["server_cpu_per_1000"] for r in side_runs if r["server_cpu_per_1000"] is not None]
        result_sides[name] = {
            "label": LABELS[name],
            "rate": _stat([r["rate"] for r in side_runs]),
            "cpu_per_1000": _stat([r["cpu_per_1000"] for r in side_runs]),
            "server_cpu_per_1000": _stat(server) if server else None,
            "failed": sum(r["failed"] for r in side_runs),
            "runs": side_runs,
        }
    ratio = _stat(ratio_rate)
    return {
        "n": n,
        "repeat": repeat,
        "max_in_flight": max_in_flight,
        "body_bytes": body_bytes,
        "sides": result_sides,
        "ratio_rate": ratio,
        "ratio_cpu": _stat(ratio_cpu),
        "ratio_rate_runs": ratio_rate,
        "goal": THROUGHPUT_GOAL,
        "met": ratio["median"] >= THROUGHPUT_GOAL,
    }


# --- (b) throttled -------------------------------------------------------------------------------------


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

    async def window_end(self) -> None:
        await anyio.sleep(max(0.0, self.deadline - time.monotonic()))


async def _sample_window(emulator: _Emulator, tally: _Tally, samples: list[tuple[float, int, int]]) -> None:
    """The emulator's counters at every bucket boundary of the window; then the throttle goes off.

    Lifting the throttle at the window's end lets what is still retrying finish at once, so the
    tail is short for both sides, and every throttle counted belongs to the window.
    """
    buckets = math.ceil((tally.deadline - tally.start) / BUCKET_SECONDS - 1e-9)
    try:
        for index in range(1, buckets + 1):
            await anyio.sleep(max(0.0, tally.start + index * BUCKET_SECONDS - time.monotonic()))
            accepted, throttled = await emulator.counters()
            samples.append((time.monotonic() - tally.start, accepted, throttled))
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await emulator.set_faults({})


async def _fanout_throttled(session: Any, env: dict[str, str], tally: _Tally, workers: int) -> dict[str, Any]:
    limits = Limits(max_in_flight=workers, max_pending=max(1_000, 4 * workers))
    body = _body(1024)
    async with open_runtime_client(session, limits=limits, **_client_kwargs(env)) as runtime:
        dispatcher = Dispatcher(
            endpoint_name=env["FANOUT_ENDPOINT"], runtime=runtime, limits=limits, payload="inline"
        )

        async def worker() -> None:
            while tally.more():
                tally.started += 1
                outcome = await dispatcher.submit(InferenceRequest(body=body, content_type=CONTENT_TYPE))
                if isinstance(outcome, Submission):
                    tally.accepted()
                    await dispatcher.complete(outcome)
                else:
                    tally.gave_up += 1

        rates: list[float] = []
        windows: list[int] = []
        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker)
            # The limiter's state at the end of every bucket, to plot beside the goodput.
            buckets = math.ceil((tally.deadline - tally.start) / BUCKET_SECONDS - 1e-9)
            for index in range(1, buckets + 1):
                await anyio.sleep(max(0.0, tally.start + index * BUCKET_SECONDS - time.monotonic()))
                stats = dispatcher.statistics()
                rates.append(math.nan if stats.current_rate is None else stats.current_rate)
                windows.append(stats.current_limit)
    return {
        "client_throttles": stats.throttles,
        "retries": dict(stats.retries_by_class),
        "final_limit": stats.current_limit,
        "final_rate": stats.current_rate,
        "rate_series": rates,
        "window_series": windows,
    }


async def _adaptive_throttled(
    session: Any, env: dict[str, str], tally: _Tally, workers: int
) -> dict[str, Any]:
    from aiobotocore.config import AioConfig

    body = _body(1024)
    endpoint = env["FANOUT_ENDPOINT"]
    config = AioConfig(max_pool_connections=workers, retries=dict(ADAPTIVE_RETRIES))
    async with session.create_client("sagemaker-runtime", config=config, **_client_kwargs(env)) as client:
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
            await tally.window_end()
            opened = limiter is not None and await _open_gate(limiter)
    return {"gate_opened": opened}


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
) -> dict[str, Any]:
    """(b): fanout's Dispatcher against botocore's adaptive mode under a throttle of ``rate`` req/s.

    ``burst`` defaults to 0.05 s worth of tokens (at least 1). Each side of each repetition stops
    starting requests after ``duration`` seconds (or after 10·rate·duration + 1,000 requests); the
    throttle is then lifted and botocore's limiter opened so that what is still retrying finishes,
    within ``drain`` more seconds or it is cancelled.
    """
    if rate <= 0 or duration <= 0 or repeat < 1 or workers < 1:
        raise ValueError("rate, duration, repeat and workers must be positive")
    burst = burst if burst is not None else max(1.0, round(rate * 0.05))
    session = _session(env)
    sides = {"fanout": _fanout_throttled, "adaptive": _adaptive_throttled}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    cap = int(10 * rate * duration) + 1_000
    throttle = {"throttle": {"rate": rate, "burst": burst}, "targets": ["sagemaker"]}
    async with _control(env) as emulator:
        for index in range(repeat):
            order = list(sides) if index % 2 == 0 else list(reversed(sides))
            for name in order:
                await emulator.set_faults(throttle)
                before = await emulator.counters()
                samples: list[tuple[float, int, int]] = []
                extra: dict[str, Any] = {}
                start = time.monotonic()
                tally = _Tally(start=start, deadline=start + duration, cap=cap)
                with _Meter(server_pid) as meter:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(_sample_window, emulator, tally, samples)
                        with anyio.move_on_after(duration + drain) as scope:
                            extra = await sides[name](session, env, tally, workers)
                after = await emulator.counters()
                run = _throttled_run(tally, samples, before, after, rate=rate, duration=duration, meter=meter)
                run.update(extra, order=order.index(name), cancelled_tail=scope.cancelled_caught)
                runs[name].append(run)
    result_sides: dict[str, Any] = {}
    for name, side_runs in runs.items():
        result_sides[name] = {
            "label": LABELS[name],
            "goodput_ratio": _stat([r["goodput_ratio"] for r in side_runs]),
            "waste": _stat([r["waste"] for r in side_runs]),
            "gave_up": _stat([r["gave_up"] for r in side_runs]),
            "longest_low": _stat([r["longest_low"] for r in side_runs]),
            "reached_90": _stat([r["reached_90"] for r in side_runs]),
            "cpu_per_1000": _stat([r["cpu_per_1000"] for r in side_runs]),
            "collapsed_runs": sum(r["collapsed"] for r in side_runs),
            "runs": side_runs,
        }
    fanout = result_sides["fanout"]
    goals = {"goodput_ratio": GOODPUT_GOAL, "waste": WASTE_GOAL, "collapse": False}
    return {
        "rate": rate,
        "burst": burst,
        "duration": duration,
        "workers": workers,
        "repeat": repeat,
        "bucket_seconds": BUCKET_SECONDS,
        "adaptive_retries": dict(ADAPTIVE_RETRIES),
        "sides": result_sides,
        "goals": goals,
        "met": fanout["goodput_ratio"]["median"] >= GOODPUT_GOAL
        and fanout["waste"]["median"] <= WASTE_GOAL
        and fanout["collapsed_runs"] == 0,
    }


def _throttled_run(
    tally: _Tally,
    samples: Sequence[tuple[float, int, int]],
    before: tuple[int, int],
    after: tuple[int, int],
    *,
    rate: float,
    duration: float,
    meter: _Meter,
) -> dict[str, Any]:
    in_window = sum(1 for t in tally.accepted_at if t < duration)
    goodput = in_window / duration
    series = _series(tally.accepted_at, duration)
    throttle_series: list[float] = []
    previous = before[1]
    for _, _, count in samples:
        throttle_series.append((count - previous) / BUCKET_SECONDS)
        previous = count
    # The last sample closes the window; the throttle is lifted right after it.
    window = samples[-1] if samples else (0.0, *after)
    accepted, throttled = window[1] - before[0], window[2] - before[1]
    longest_low = _longest_low(series, rate)
    return {
        "started": tally.started,
        "accepted_client": len(tally.accepted_at),
        "accepted_in_window": in_window,
        "goodput": goodput,
        "goodput_ratio": goodput / rate,
        "accepted": accepted,
        "throttled": throttled,
        "waste": throttled / accepted if accepted else math.inf,
        "accepted_total": after[0] - before[0],
        "throttled_total": after[1] - before[1],
        "gave_up": tally.gave_up,
        "series": series,
        "throttle_series": throttle_series,
        "longest_low": longest_low,
        "collapsed": longest_low > 1.0,
        "first_second_goodput": sum(series[: math.ceil(1.0 / BUCKET_SECONDS)]) * BUCKET_SECONDS,
        "reached_90": _reach(series, 0.9 * rate),
        "wall": meter.wall,
        "cpu": meter.cpu,
        "cpu_per_1000": 1000.0 * meter.cpu / max(1, len(tally.accepted_at)),
        "preempted": meter.preempted,
        "others": meter.others,
    }


# --- report --------------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:,.{digits}f}"


def _cell(stat: dict[str, float] | None, digits: int = 0) -> str:
    if stat is None:
        return "–"
    return f"{_num(stat['median'], digits)} ({_num(stat['min'], digits)}–{_num(stat['max'], digits)})"


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment_info() -> dict[str, str]:
    """Machine, versions, date and load, for the report."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    versions = ", ".join(
        f"{name} {_package(name)}"
        for name in ("fanout", "aiobotocore", "botocore", "aiohttp", "anyio", "tenacity")
    )
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{model}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "versions": versions,
        "load": load,
    }


def render_markdown(
    throughput: dict[str, Any] | None,
    throttled: dict[str, Any] | None,
    *,
    command: str | None = None,
    info: dict[str, str] | None = None,
) -> str:
    """The report: the two tables, then the goodput series of every throttled run."""
    lines = ["# Dispatcher benchmark", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    if info:
        lines += [
            f"Date: {info['date']}. Machine: {info['machine']}; {info['python']}; {info['versions']}.",
            f"Load average at start: {info['load']}"
            + (f"; at end: {info['end_load']}." if "end_load" in info else ".")
            + " Other work may have shared the machine, so rates are indicative; the ratios are taken "
            "within each repetition, side by side.",
            "",
        ]
        if "pinning" in info:
            lines += [info["pinning"], ""]
    if throughput is not None:
        lines += _throughput_markdown(throughput)
    if throttled is not None:
        lines += _throttled_markdown(throttled)
    return "\n".join(lines).rstrip() + "\n"


def _throughput_markdown(result: dict[str, Any]) -> list[str]:
    sides = result["sides"]
    lines = [
        "## (a) Throughput, no throttle",
        "",
        f"{result['n']:,} inline {result['body_bytes']:,}-byte InvokeEndpointAsync calls per side and "
        f"repetition, {result['max_in_flight']} in flight, {result['repeat']} repetitions alternating the "
        "two sides (the order flips every repetition), after 64 warm-up calls each. fanout: "
        "`Dispatcher.submit_all` (payload inline, each submission completed as it arrives). bare: "
        "`asyncio.gather` over every call under `asyncio.Semaphore`, one client, `max_pool_connections` "
        "= in flight, botocore retries off. Median (min–max).",
        "",
        "| side | submits/s | client CPU-s per 1,000 | emulator CPU-s per 1,000 | failed |",
        "|---|---:|---:|---:|---:|",
    ]
    lines.extend(
        f"| {side['label']} | {_cell(side['rate'])} | {_cell(side['cpu_per_1000'], 3)} | "
        f"{_cell(side['server_cpu_per_1000'], 3)} | {side['failed']} |"
        for side in sides.values()
    )
    ratio, cpu = result["ratio_rate"], result["ratio_cpu"]
    verdict = "met" if result["met"] else "**not met**"
    runs = ", ".join(f"{r:.3f}" for r in result["ratio_rate_runs"])
    busy = {
        name: statistics.median(r["cpu"] / r["wall"] for r in side["runs"]) for name, side in sides.items()
    }
    extra = statistics.median(
        f["cpu_per_1000"] - b["cpu_per_1000"]
        for f, b in zip(sides["fanout"]["runs"], sides["bare"]["runs"], strict=True)
    )
    lines += [
        f"| **ratio fanout / bare** | **{_cell(ratio, 3)}** | {_cell(cpu, 3)} | | |",
        "",
        f"Goal: fanout ≥ {result['goal']}× the bare rate (median of the per-repetition ratios): {verdict}. "
        f"Per-repetition ratios: {runs}. Client CPU busy while submitting (CPU time / wall time, median): "
        f"fanout {busy['fanout']:.0%}, bare {busy['bare']:.0%}; fanout spends {_num(1000 * extra, 0)} µs "
        "more client CPU per submit (median of the per-repetition differences).",
        "",
        "Other processes' CPU use (cores) and this client's involuntary context switches per second show "
        "how busy the machine was during each side:",
        "",
        "| repetition | fanout submits/s | bare submits/s | ratio | fanout / bare CPU-s per 1,000 | "
        "other CPU (fanout, bare) | context switches/s (fanout, bare) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines.extend(
        f"| {i} | {_num(f['rate'])} | {_num(b['rate'])} | {f['rate'] / b['rate']:.3f} | "
        f"{_num(f['cpu_per_1000'], 3)} / {_num(b['cpu_per_1000'], 3)} | "
        f"{_num(f['others'], 2)}, {_num(b['others'], 2)} | {_num(f['preempted'])}, {_num(b['preempted'])} |"
        for i, (f, b) in enumerate(zip(sides["fanout"]["runs"], sides["bare"]["runs"], strict=True), 1)
    )
    lines.append("")
    return lines


def _series_table(columns: Sequence[tuple[str, dict[str, Any]]], key: str) -> list[str]:
    lines = [
        "| t (s) | " + " | ".join(name for name, _ in columns) + " |",
        "|---:|" + "---:|" * len(columns),
    ]
    length = max((len(run[key]) for _, run in columns), default=0)
    for bucket in range(length):
        values = [run[key][bucket] if bucket < len(run[key]) else math.nan for _, run in columns]
        lines.append(f"| {bucket * BUCKET_SECONDS:.1f} | " + " | ".join(_num(v) for v in values) + " |")
    return lines


def _throttled_markdown(result: dict[str, Any]) -> list[str]:
    rate = result["rate"]
    sides = result["sides"]
    lines = [
        "## (b) Throttled endpoint",
        "",
        f"The emulator admits R = {_num(rate)} InvokeEndpointAsync/s (token bucket, burst "
        f"{_num(result['burst'])}, starting full; a throttled call gets 400 ThrottlingException). "
        f"{result['workers']} workers each send one inline 1 KB request at a time for "
        f"{_num(result['duration'], 1)} s per side and repetition, {result['repeat']} repetitions "
        "alternating the sides. fanout: `Dispatcher.submit` with its default retry policy and adaptive "
        "limiter (botocore retries off). botocore: one aiobotocore client with "
        f"`retries={result['adaptive_retries']}`. Goodput counts the 202s the client got inside the window; "
        "throttled and accepted calls are the emulator's counts over the window. At the window's end the "
        "throttle is lifted (and botocore's limiter opened) so the calls still retrying finish quickly; "
        "that tail is not counted. Collapse: goodput below 0.5·R for more than 1 s after the first "
        "second. Median (min–max).",
        "",
        "| side | goodput / R | throttled per accepted | gave up | accepted in 1st second | "
        "first reaches 0.9·R at (s) | longest stretch < 0.5·R (s) | collapsed runs | "
        "client CPU-s per 1,000 accepted |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for side in sides.values():
        first = _stat([r["first_second_goodput"] for r in side["runs"]])
        never = sum(1 for r in side["runs"] if not math.isfinite(r["reached_90"]))
        reached = _cell(side["reached_90"], 1) + (f", never in {never}" if never else "")
        lines.append(
            f"| {side['label']} | {_cell(side['goodput_ratio'], 3)} | {_cell(side['waste'], 3)} | "
            f"{_cell(side['gave_up'])} | {_cell(first)} | {reached} | {_cell(side['longest_low'], 1)} | "
            f"{side['collapsed_runs']} of {len(side['runs'])} | {_cell(side['cpu_per_1000'], 3)} |"
        )
    fanout = sides["fanout"]
    verdict = "met" if result["met"] else "**not met**"
    lines += [
        "",
        f"Goal for fanout: goodput ≥ {GOODPUT_GOAL}·R, waste ≤ {WASTE_GOAL:.0%}, no collapse: {verdict} "
        f"(goodput/R {_num(fanout['goodput_ratio']['median'], 3)}, "
        f"waste {_num(fanout['waste']['median'], 3)}, {fanout['collapsed_runs']} collapsed runs).",
        "",
        "Per run (order: position within its repetition; fanout's paced rate and window at the end; other "
        "processes' CPU use in cores and this client's involuntary context switches per second):",
        "",
        "| side | run | order | goodput / R | accepted | throttled | throttled per accepted | gave up | "
        "tail cancelled | final rate / window | other CPU (cores) | context switches/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---:|",
    ]
    for side in sides.values():
        for index, run in enumerate(side["runs"], 1):
            final = f"{_num(run.get('final_rate'))} / {run['final_limit']}" if "final_limit" in run else "–"
            lines.append(
                f"| {side['label']} | {index} | {run['order']} | {_num(run['goodput_ratio'], 3)} | "
                f"{run['accepted']:,} | {run['throttled']:,} | {_num(run['waste'], 3)} | {run['gave_up']} | "
                f"{'yes' if run['cancelled_tail'] else 'no'} | {final} | {_num(run['others'], 2)} | "
                f"{_num(run['preempted'])} |"
            )
    columns = [
        (f"{name} #{index}", run) for name, side in sides.items() for index, run in enumerate(side["runs"], 1)
    ]
    lines += ["", f"### Goodput over time (accepted per second, {BUCKET_SECONDS} s buckets)", ""]
    lines += _series_table(columns, "series")
    lines += [
        "",
        f"### Throttled calls over time (per second, sampled from the emulator every {BUCKET_SECONDS} s)",
        "",
    ]
    lines += _series_table(columns, "throttle_series")
    paced = [(name, run) for name, run in columns if "rate_series" in run]
    if paced:
        lines += [
            "",
            "### fanout's paced rate at the end of each bucket (req/s; – = not paced yet)",
            "",
        ]
        lines += _series_table(paced, "rate_series")
    lines.append("")
    return lines


# --- command line --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    n: int
    repeat: int
    rate: float
    burst: float | None
    duration: float


QUICK = _Plan(n=2_000, repeat=3, rate=300.0, burst=None, duration=5.0)
FULL = _Plan(n=10_000, repeat=5, rate=400.0, burst=None, duration=20.0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.dispatch",
        description="fanout's Dispatcher vs bare aiobotocore (throughput) and vs botocore adaptive mode "
        "(throttled), on the emulator in its own process.",
    )
    parser.add_argument("--quick", action="store_true", help=f"small sizes: {QUICK}")
    parser.add_argument("--n", type=int, default=None, help="(a) submits per side and repetition")
    parser.add_argument("--rate", type=float, default=None, help="(b) the server's throttle, req/s")
    parser.add_argument("--burst", type=float, default=None, help="(b) the throttle's burst, tokens")
    parser.add_argument("--duration", type=float, default=None, help="(b) seconds per side and repetition")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (each runs both sides)")
    parser.add_argument("--part", choices=("all", "throughput", "throttled"), default="all")
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin the emulator to CPU 0 and this to CPU 1"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"the Markdown report (default: {RESULTS})")
    return parser


def _pin(cpu: int) -> bool:
    if not hasattr(os, "sched_setaffinity"):
        return False
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plan = QUICK if args.quick else FULL
    n = args.n if args.n is not None else plan.n
    repeat = args.repeat if args.repeat is not None else plan.repeat
    rate = args.rate if args.rate is not None else plan.rate
    duration = args.duration if args.duration is not None else plan.duration
    burst = args.burst if args.burst is not None else plan.burst
    if n < 1 or repeat < 1 or rate <= 0 or duration <= 0 or (burst is not None and burst < 1):
        print("--n, --repeat, --rate and --duration must be positive, --burst at least 1", file=sys.stderr)
        return 2
    from fanout.testing import run_emulator_process

    program = "python -m benchmarks.dispatch" if __package__ else "python benchmarks/dispatch.py"
    command = " ".join([program, *(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))])
    info = environment_info()
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    with run_emulator_process(cpu=0 if pin else None) as env:
        pinned = pin and _pin(1)
        server_pid = emulator_pid(env)
        info["pinning"] = (
            "The emulator (`python -m fanout.testing`, default configuration) ran pinned to CPU 0, this "
            "client pinned to CPU 1 (asyncio event loop)."
            if pinned
            else "Neither process was pinned."
        )

        async def run() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
            throughput = throttled = None
            if args.part in ("all", "throughput"):
                throughput = await bench_throughput(env, n=n, repeat=repeat, server_pid=server_pid)
            if args.part in ("all", "throttled"):
                throttled = await bench_throttled(
                    env, rate=rate, duration=duration, repeat=repeat, burst=burst, server_pid=server_pid
                )
            return throughput, throttled

        throughput, throttled = anyio.run(run, backend="asyncio")
    info["end_load"] = environment_info()["load"]
    report = render_markdown(throughput, throttled, command=command.strip(), info=info)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
