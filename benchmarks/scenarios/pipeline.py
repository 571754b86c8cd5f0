"""Scenario 6: the pipeline. ``fanout run`` end to end, its parts, and a bare aiobotocore loop.

One emulator process serves every side of every repetition: pinned to one core, while this process,
and so every ``fanout run`` it starts, is pinned to the other (``--no-pin`` leaves both to the
scheduler). No latency is added and the endpoint's service time is short (uniform 5–20 ms over 256
workers), so each side runs as fast as its own CPU lets it: this measures what the client spends.
The sides, run once per repetition in a rotating order:

- ``fanout run``: the CLI as a subprocess, ``python -m fanout run IN -o OUT --no-fetch --tracker
  sqs --json-summary --quiet``, over N JSONL lines of about 200-byte JSON bodies (the notifications
  carry the response, so there is nothing to fetch);
- ``fanout run --journal``: the same with a fresh SQLite journal;
- ``fanout run --no-fast-path`` (a reference): InvokeEndpointAsync through aiobotocore;
- fanout submit only, in this process: ``open_runtime_client(session, limits=..., fast_path=True,
  counter=...)`` and ``Dispatcher(endpoint_name=..., runtime=...)``, ``async with
  dispatcher.submit_all(requests) as results: async for r in results: dispatcher.release(r)``;
- the bare aiobotocore loop of the dispatcher's benchmark (``_dispatcher``): ``asyncio.gather`` over
  N coroutines under ``Semaphore(64)``, one client with 64 pooled connections, retries off;
- the SQS tracker alone (``_tracker.throughput``): N notifications queued, then drained by
  ``open_tracker`` (4 receivers, no fetch), timed from the first receive to the last outcome;
- ``fanout run`` on a one-line input: the command's fixed cost (interpreter, imports, clients,
  preflight checks, shutdown).

The in-process sides each make 64 warm-up calls first (not timed) and call a second endpoint of the
same emulator that has no notification topics, so they leave nothing on the queue the CLI reads.
After every side the harness waits until the emulator has nothing left to do (no backlog, no
message on the queue), so no side pays for the previous one's work.

What each side reports: requests per second of wall time (for the CLI, N over the whole process's
life, from fork to exit; also N over the run's own clock, ``this_run.elapsed``), client CPU per
request (the CLI's own user + system CPU from ``wait4``; in this process, ``getrusage``, as
``time.process_time`` reads it), the emulator's CPU per request (from ``/proc``, from the side's
start until the emulator is idle again), and API calls per request by type (for the CLI, its
``--json-summary``'s ``this_run.api_calls``; for the in-process sides, counted by the client: the
fast path's ``counter``, ``before-send`` events on the bare client, less the warm-up calls). The
ratios are taken within each repetition, side by side, and then summarised.
"""

from __future__ import annotations

import gc
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from fanout import Dispatcher, InferenceRequest, Limits, Submission, open_runtime_client

from .._harness import (
    CpuClock,
    Sample,
    ScenarioResult,
    Stat,
    Table,
    cell,
    count_lines,
    json_summary,
    median,
    number,
    process_cpu_seconds,
    repeat_sides,
    run_child,
    stat,
    times,
    values,
)
from . import Context
from ._dispatcher import WARMUP_CALLS, _bare_throughput
from ._plots import _pyplot
from ._target import emulator_config, emulator_process
from ._tracker import throughput as tracker_throughput
from ._workload import (
    Item,
    Target,
    api_calls,
    client_location,
    count_calls,
    env_session,
    json_items,
    loop_options,
)

__all__ = [
    "NAME",
    "SIZES",
    "TITLE",
    "Bench",
    "Size",
    "open_bench",
    "pipeline_config",
    "run",
]

NAME = "pipeline"
TITLE = "The pipeline: fanout run end to end, its parts, and a bare aiobotocore loop"


@dataclass(frozen=True, slots=True)
class Size:
    count: int
    """Requests per side and repetition (notifications, for the tracker alone)."""
    body_bytes: int = 200


SIZES = {"tiny": Size(40), "quick": Size(1_500), "full": Size(6_000)}

MAX_IN_FLIGHT = 64
SERVICE_TIME = {"kind": "uniform", "low_ms": 5, "high_ms": 20}
QUIET = "fanout-bench-quiet"
"""The endpoint the in-process sides call: no notification topics, so nothing reaches the queue."""
CONTENT_TYPE = "application/json"

E2E = "fanout run"
JOURNAL = "fanout run --journal"
NO_FAST = "fanout run --no-fast-path"
SUBMIT = "fanout submit only"
BARE = "bare aiobotocore loop"
TRACKER = "SQS tracker alone"
FIXED = "fanout run, one line"
CLI_SIDES = (E2E, JOURNAL, NO_FAST)
MAIN_SIDES = (E2E, JOURNAL, SUBMIT, BARE, NO_FAST)

GOAL_E2E = 1.0
GOAL_PER_CORE = 2.5
GOAL_JOURNAL = 0.9
GOAL_RECEIVES = 0.15
RECEIVE_RATE = 500.0
"""The receive-calls goal holds at this many notifications per second or more."""

PLOT = "pipeline_cpu.png"
BARE_BAR = "bare aiobotocore\nsubmit only"


def pipeline_config() -> dict[str, Any]:
    """The emulator: the suite's endpoint (notifications with the response, to the queue) plus a quiet
    twin without topics for the in-process sides; no faults, no added latency."""
    config = emulator_config({}, service_time=SERVICE_TIME, workers=(4, 64))
    config["faults"] = {}
    loud: dict[str, Any] = config["endpoints"][0]
    quiet = {
        k: v
        for k, v in loud.items()
        if k not in ("success_topic", "error_topic", "include_inference_response_in")
    }
    config["endpoints"].append({**quiet, "name": QUIET})
    return config


def cli_env(emulator: Mapping[str, str]) -> dict[str, str]:
    """This environment without AWS_* and FANOUT_* settings, pointed at the emulator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FANOUT_"))}
    env.update(
        AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true"
    )
    env.update(emulator)
    return env


class _CountingSession:
    """An aiobotocore session whose clients count every HTTP attempt they send (``count_calls``)."""

    def __init__(self, session: Any, counter: Counter[str]) -> None:
        self._session = session
        self._counter = counter

    @asynccontextmanager
    async def create_client(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async with self._session.create_client(*args, **kwargs) as client:
            count_calls(client, self._counter)
            yield client


async def _submit_only(env: dict[str, str], body: bytes, n: int, timeout: float) -> Sample:
    """fanout's submit path alone: the fast path's runtime client and a Dispatcher, in this process."""
    session = env_session(env)
    counter: Counter[str] = Counter()
    limits = Limits(max_in_flight=MAX_IN_FLIGHT)
    async with open_runtime_client(
        session, limits=limits, fast_path=True, counter=counter, **client_location(env)
    ) as runtime:
        dispatcher = Dispatcher(endpoint_name=QUIET, runtime=runtime, limits=limits)

        async def submit(count: int) -> int:
            requests = [InferenceRequest(body=body, content_type=CONTENT_TYPE) for _ in range(count)]
            accepted = 0
            async with dispatcher.submit_all(requests) as results:
                async for result in results:
                    accepted += isinstance(result, Submission)
                    dispatcher.release(result)
            return accepted

        with anyio.fail_after(timeout):
            await submit(WARMUP_CALLS)
            before = Counter(counter)
            with CpuClock() as clock:
                accepted = await submit(n)
    calls = counter - before
    return Sample(
        metrics={
            "n": float(n),
            "succeeded": float(accepted),
            "wall_s": clock.wall,
            "rate": n / clock.wall if clock.wall > 0 else math.nan,
            "cpu_s": clock.client_cpu,
            "cpu_ms": clock.client_cpu / n * 1000,
            "others": clock.others,
            **{f"calls:{op}": count / n for op, count in calls.items()},
        }
    )


async def _bare(env: dict[str, str], body: bytes, n: int, timeout: float) -> Sample:
    """The dispatcher benchmark's bare aiobotocore loop, its client's calls counted."""
    counter: Counter[str] = Counter()
    session = _CountingSession(env_session(env), counter)
    with anyio.fail_after(timeout):
        sample = await _bare_throughput(
            session,
            {**env, "FANOUT_ENDPOINT": QUIET},
            n=n,
            max_in_flight=MAX_IN_FLIGHT,
            body=body,
            server_pid=None,
        )
    m = sample.metrics
    # Only InvokeEndpointAsync is called; the warm-up's calls are not the measured loop's.
    calls = {
        op: count - (WARMUP_CALLS if op.endswith(".InvokeEndpointAsync") else 0)
        for op, count in counter.items()
    }
    return Sample(
        metrics={
            "n": m["n"],
            "succeeded": m["succeeded"],
            "wall_s": m["wall_s"],
            "rate": m["rate"],
            "cpu_s": m["client_cpu"],
            "cpu_ms": m["client_cpu_per_k"],  # CPU-seconds per 1,000 = ms per request
            "others": m["others"],
            **{f"calls:{op}": count / n for op, count in calls.items() if count > 0},
        }
    )


@dataclass(slots=True)
class Bench:
    """Every side of the pipeline benchmark against one emulator (``target``), files in ``workdir``."""

    ctx: Context
    target: Target
    workdir: Path
    size: Size
    items: list[Item]
    env: dict[str, str]

    @property
    def n(self) -> int:
        return self.size.count

    @property
    def timeout(self) -> float:
        return 60.0 + self.n / 50.0

    @property
    def input(self) -> Path:
        return self.workdir / "in.jsonl"

    @property
    def one_line(self) -> Path:
        return self.workdir / "one.jsonl"

    def write_inputs(self) -> None:
        with self.input.open("w", encoding="utf-8") as out:
            for item in self.items:
                out.write(json.dumps({"id": item.id, "body": json.loads(item.body)}, separators=(",", ":")))
                out.write("\n")
        with self.input.open("rb") as lines:
            self.one_line.write_bytes(lines.readline())

    def drained(self, timeout: float = 120.0) -> None:
        """Wait until the emulator has nothing left to do: no backlog, nothing on any queue."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.target.stats() or {}
            busy = sum(
                e.get("backlog", 0) + e.get("in_flight", 0) for e in stats.get("endpoints", {}).values()
            )
            queued = sum(
                q.get("visible", 0) + q.get("in_flight", 0) + q.get("delayed", 0)
                for q in stats.get("queues", {}).values()
            )
            pending = stats.get("notifications", {}).get("pending", 0)
            if busy + queued + pending == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the emulator still had work after {timeout:g} s: {stats}")
            time.sleep(0.02)

    def side(self, run: Callable[[], Sample], requests: int) -> Sample:
        """Run one side; add the emulator's CPU from its start until the emulator is idle again, and the
        calls it served, per request (``requests`` includes warm-up calls)."""
        gc.collect()
        pid = self.target.server_pid
        before = self.target.stats()
        server = process_cpu_seconds(pid) if pid is not None else math.nan
        started = time.perf_counter()
        sample = run()
        self.drained()
        elapsed = time.perf_counter() - started
        server = process_cpu_seconds(pid) - server if pid is not None else math.nan
        served = api_calls(before, self.target.stats())
        sample.metrics.update(
            server_cpu_ms=server / requests * 1000,
            server_busy=server / elapsed if elapsed > 0 else math.nan,
            served_per_request=sum(served.values()) / requests,
        )
        return sample

    # --- the sides ---------------------------------------------------------------------------------

    def cli(
        self, *extra: str, journal: bool = False, one_line: bool = False, prefix: Sequence[str] = ()
    ) -> Sample:
        """``fanout run`` over the input (or its first line), with ``extra`` options and a fresh journal.

        ``prefix`` replaces ``python -m fanout`` (a profiler's command line that runs it)."""
        count = 1 if one_line else self.n
        output = self.workdir / "out.jsonl"
        database = self.workdir / "journal.db"
        for path in (
            output,
            *(database.with_name(database.name + s) for s in ("", "-wal", "-shm", "-journal")),
        ):
            path.unlink(missing_ok=True)
        command = [
            *(prefix or (sys.executable, "-m", "fanout")),
            "run",
            str(self.one_line if one_line else self.input),
            "-o",
            str(output),
            "--no-fetch",
            "--tracker",
            "sqs",
            "--json-summary",
            "--quiet",
            "--endpoint",
            self.target.endpoint_name,
            "--queue-url",
            self.target.queue_url or "",
            *(["--journal", str(database)] if journal else []),
            *extra,
        ]
        stderr_path = self.workdir / "stderr.txt"
        with stderr_path.open("wb") as stderr, CpuClock(self.target.server_pid) as clock:
            usage = run_child(
                command,
                env=self.env,
                timeout=self.timeout,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                poll=0.01,
            )
        text = stderr_path.read_text(encoding="utf-8", errors="replace")
        summary = json_summary(text)
        if summary is None:
            raise RuntimeError(f"{shlex.join(command)} exited {usage.returncode}: {text[-3000:]}")
        this_run: dict[str, Any] = summary.get("this_run", {})
        calls: dict[str, int] = this_run.get("api_calls", {})
        notified = int(this_run.get("succeeded", 0)) + int(this_run.get("failed", 0))
        elapsed = float(this_run.get("elapsed") or math.nan)
        lines = count_lines(output)
        # Other processes' CPU use in cores: the machine's busy time less the CLI's and the emulator's.
        others = clock.others * clock.wall - usage.cpu if clock.wall > 0 else math.nan
        return Sample(
            metrics={
                "n": float(count),
                "succeeded": float(this_run.get("succeeded", 0)) if lines == count else 0.0,
                "output_lines": float(lines),
                "exit_code": float(usage.returncode),
                "wall_s": usage.wall,
                "rate": count / usage.wall,
                "run_s": elapsed,
                "run_rate": count / elapsed if elapsed > 0 else math.nan,
                "cpu_s": usage.cpu,
                "cpu_ms": usage.cpu / count * 1000,
                "client_busy": usage.cpu / usage.wall,
                "rss_mb": usage.peak_rss_mb,
                "others": max(0.0, others / clock.wall) if not math.isnan(others) else math.nan,
                "receives_per_notification": calls.get("sqs.ReceiveMessage", 0) / max(notified, 1),
                "notification_rate": notified / elapsed if elapsed > 0 else math.nan,
                **{f"calls:{op}": n / count for op, n in calls.items()},
            }
        )

    def submit_only(self) -> Sample:
        return anyio.run(
            _submit_only,
            dict(self.target.env),
            self.items[0].body,
            self.n,
            self.timeout,
            backend="asyncio",
            backend_options=loop_options(self.ctx.uvloop),
        )

    def bare(self) -> Sample:
        return anyio.run(
            _bare,
            dict(self.target.env),
            self.items[0].body,
            self.n,
            self.timeout,
            backend="asyncio",
            backend_options=loop_options(self.ctx.uvloop),
        )

    def tracker_alone(self) -> Sample:
        drained = anyio.run(
            tracker_throughput,
            dict(self.target.env),
            self.n,
            backend="asyncio",
            backend_options=loop_options(self.ctx.uvloop),
        )
        return Sample(
            metrics={
                "n": float(self.n),
                "succeeded": drained["count"],
                "wall_s": drained["wall"],
                "rate": drained["per_s"],
                "cpu_s": drained["cpu"],
                "cpu_ms": drained["cpu"] / self.n * 1000,
            }
        )

    def sides(self) -> dict[str, Callable[[], Sample]]:
        warm = self.n + WARMUP_CALLS
        return {
            E2E: partial(self.side, self.cli, self.n),
            JOURNAL: partial(self.side, partial(self.cli, journal=True), self.n),
            SUBMIT: partial(self.side, self.submit_only, warm),
            BARE: partial(self.side, self.bare, warm),
            NO_FAST: partial(self.side, partial(self.cli, "--no-fast-path"), self.n),
            TRACKER: partial(self.side, self.tracker_alone, self.n),
            FIXED: partial(self.side, partial(self.cli, one_line=True), 1),
        }


@contextmanager
def open_bench(ctx: Context, size: Size) -> Iterator[Bench]:
    """The emulator process (pinned to ``ctx.emulator_cpu``), the input files, and a ``Bench`` on them."""
    with (
        tempfile.TemporaryDirectory(prefix="fanout-pipeline-") as scratch,
        emulator_process(pipeline_config(), cpu=ctx.emulator_cpu) as target,
    ):
        items = json_items(size.count, size=size.body_bytes)
        bench = Bench(ctx, target, Path(scratch), size, items, cli_env(target.env))
        bench.write_inputs()
        yield bench


# --- the scenario ------------------------------------------------------------------------------------


def run(ctx: Context) -> ScenarioResult:
    if ctx.real:
        return ScenarioResult(
            name=NAME,
            title=TITLE,
            description="Skipped with `--real`: this benchmark measures the client's CPU against the "
            "emulator on a core of its own, and reads the emulator's CPU and counters.",
        )
    size = SIZES[ctx.size]
    ctx.progress(f"{len(MAIN_SIDES) + 2} sides of {size.count:,} requests, one emulator process")
    with open_bench(ctx, size) as bench:
        samples = repeat_sides(bench.sides(), ctx.repeat, progress=ctx.progress)
    return report(ctx, size, samples)


# --- derived figures -------------------------------------------------------------------------------


def _per_rep(samples: Mapping[str, Sequence[Sample]], name: str, metric: str) -> list[float]:
    return values(samples[name], metric)


def derive(samples: Mapping[str, list[Sample]], n: int) -> dict[str, list[float]]:
    """Per repetition: the goals' ratios and the CPU attribution (ms per request), side by side."""
    e2e = _per_rep(samples, E2E, "cpu_ms")
    fixed = [cpu / n * 1000 for cpu in _per_rep(samples, FIXED, "cpu_s")]
    submit = _per_rep(samples, SUBMIT, "cpu_ms")
    tracking = _per_rep(samples, TRACKER, "cpu_ms")
    journal = _per_rep(samples, JOURNAL, "cpu_ms")
    no_fast = _per_rep(samples, NO_FAST, "cpu_ms")
    bare = _per_rep(samples, BARE, "cpu_ms")

    def ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
        return [x / y if y else math.nan for x, y in zip(a, b, strict=True)]

    return {
        "e2e_vs_bare": ratios(_per_rep(samples, E2E, "rate"), _per_rep(samples, BARE, "rate")),
        "e2e_run_vs_bare": ratios(_per_rep(samples, E2E, "run_rate"), _per_rep(samples, BARE, "rate")),
        "submit_vs_bare_per_core": ratios(bare, submit),
        "e2e_vs_bare_per_core": ratios(bare, e2e),
        "e2e_beyond_fixed_vs_bare_per_core": ratios(bare, [e - f for e, f in zip(e2e, fixed, strict=True)]),
        "journal_vs_plain": ratios(_per_rep(samples, JOURNAL, "rate"), _per_rep(samples, E2E, "rate")),
        "journal_run_vs_plain": ratios(
            _per_rep(samples, JOURNAL, "run_rate"), _per_rep(samples, E2E, "run_rate")
        ),
        "fast_vs_no_fast": ratios(_per_rep(samples, E2E, "rate"), _per_rep(samples, NO_FAST, "rate")),
        "receives": _per_rep(samples, E2E, "receives_per_notification"),
        "notification_rate": _per_rep(samples, E2E, "notification_rate"),
        "part:fixed": fixed,
        "part:submit": submit,
        "part:tracking": tracking,
        "part:rest": [e - f - s - t for e, f, s, t in zip(e2e, fixed, submit, tracking, strict=True)],
        "part:journal": [j - e for j, e in zip(journal, e2e, strict=True)],
        "part:aiobotocore_submit_extra": [x - e for x, e in zip(no_fast, e2e, strict=True)],
    }


def _met(value: Stat, goal: float, *, at_most: bool = False) -> str:
    if math.isnan(value.median):
        return "–"
    ok = value.median <= goal if at_most else value.median >= goal
    return "yes" if ok else "**no**"


def goals_table(derived: Mapping[str, list[float]], samples: Mapping[str, list[Sample]]) -> Table:
    table = Table(
        ["measure", "goal", "measured", "met"],
        title="Goals (median of the per-repetition ratios, min–max)",
        numeric=False,
    )
    e2e = stat(derived["e2e_vs_bare"])
    table.add(
        "`fanout run --no-fetch --tracker sqs` end to end vs bare aiobotocore submit-only loop "
        "(requests/s; the CLI's whole process, from fork to exit)",
        f"≥{GOAL_E2E:.1f}×",
        times(e2e),
        _met(e2e, GOAL_E2E),
    )
    e2e_run = stat(derived["e2e_run_vs_bare"])
    table.add(
        "the same, on the run's own clock (`this_run.elapsed`: no interpreter start-up, imports or "
        "preflight)",
        f"≥{GOAL_E2E:.1f}×",
        times(e2e_run),
        _met(e2e_run, GOAL_E2E),
    )
    per_core = stat(derived["submit_vs_bare_per_core"])
    table.add(
        "fanout submit-only vs bare aiobotocore loop, per core (requests per client CPU-second)",
        f"≥{GOAL_PER_CORE:.1f}×",
        times(per_core),
        _met(per_core, GOAL_PER_CORE),
    )
    journal = stat(derived["journal_vs_plain"])
    table.add(
        "`--journal` vs without (requests/s, whole process)",
        f"≥{GOAL_JOURNAL:.1f}×",
        times(journal),
        _met(journal, GOAL_JOURNAL),
    )
    receives = stat(derived["receives"])
    rate = stat(derived["notification_rate"])
    at_rate = (
        ""
        if math.isnan(rate.median)
        else f" at {number(rate.median, 0)} (min {number(rate.minimum, 0)}) notifications/s"
    )
    met = _met(receives, GOAL_RECEIVES, at_most=True)
    if met != "–" and rate.minimum < RECEIVE_RATE:
        met += f" (below {RECEIVE_RATE:.0f}/s in some runs)"
    table.add(
        f"SQS ReceiveMessage calls per notification, `fanout run` (goal at ≥{RECEIVE_RATE:.0f}/s){at_rate}",
        f"≤{GOAL_RECEIVES:.2f}",
        receives.format(3),
        met,
    )
    return table


PARTS = (
    (
        "part:fixed",
        "fixed cost",
        "`fanout run` on a one-line input (interpreter start, imports, clients, "
        "preflight checks, shutdown): its CPU-seconds divided by N",
    ),
    (
        "part:submit",
        "submit",
        "the submit-only side: fast-path runtime client + `Dispatcher.submit_all`, "
        "CPU per request in this process",
    ),
    (
        "part:tracking",
        "tracking",
        "the SQS tracker alone: N queued notifications drained by `open_tracker` "
        "(4 receivers, no fetch), CPU per notification",
    ),
    (
        "part:rest",
        "the rest",
        "`fanout run` minus the three above: reading and parsing the JSONL, the "
        "client's bookkeeping between dispatcher and tracker, writing the output lines, the report, and "
        "whatever the parts cost more together than apart",
    ),
    ("part:journal", "journal and its I/O", "`fanout run --journal` minus `fanout run`"),
)


def attribution_table(derived: Mapping[str, list[float]], samples: Mapping[str, list[Sample]]) -> Table:
    table = Table(
        ["component", "how it is measured", "client CPU ms / request"],
        title="Where the CPU of `fanout run` goes (per repetition, then median and min–max)",
        numeric=False,
    )
    for key, label, how in PARTS:
        table.add(label, how, stat(derived[key]).format(3))
    table.add("**`fanout run`, all of it**", "its own CPU (`wait4`) over N", cell(samples[E2E], "cpu_ms", 3))
    table.add("**`fanout run --journal`, all of it**", "", cell(samples[JOURNAL], "cpu_ms", 3))
    table.add(
        "aiobotocore's invoke instead of the fast path",
        "`fanout run --no-fast-path` minus `fanout run`",
        stat(derived["part:aiobotocore_submit_extra"]).format(3),
    )
    table.add(
        "bare aiobotocore loop, for scale",
        "its CPU per request in this process",
        cell(samples[BARE], "cpu_ms", 3),
    )
    return table


def sides_table(samples: Mapping[str, list[Sample]], size: Size) -> Table:
    table = Table(
        [
            "side",
            "requests/s (wall)",
            "requests/s (run's own clock)",
            "client CPU ms / request",
            "client CPU busy",
            "emulator CPU ms / request",
            "emulator CPU busy",
            "API calls / request (client's count)",
            "peak RSS (MiB)",
            "succeeded",
        ],
        title=f"Every side: {size.count:,} requests of about {size.body_bytes} bytes (median, min–max)",
    )
    for name in (*MAIN_SIDES, TRACKER, FIXED):
        runs = samples[name]
        cli = name in CLI_SIDES or name == FIXED
        busy = (
            cell(runs, "client_busy", 2)
            if cli
            else stat(
                c / w for c, w in zip(values(runs, "cpu_s"), values(runs, "wall_s"), strict=True)
            ).format(2)
        )
        calls = sum_calls(runs)
        table.add(
            name,
            cell(runs, "rate", 0),
            cell(runs, "run_rate", 0) if cli else "–",
            cell(runs, "cpu_ms", 3),
            busy,
            "–" if name in (TRACKER, FIXED) else cell(runs, "server_cpu_ms", 3),
            "–" if name in (TRACKER, FIXED) else cell(runs, "server_busy", 2),
            "–" if name == TRACKER else number(calls, 3),
            cell(runs, "rss_mb", 0) if cli else "–",
            f"{cell(runs, 'succeeded', 0)}/{cell(runs, 'n', 0)}",
        )
    return table


def sum_calls(runs: Sequence[Sample]) -> float:
    return stat(sum(v for k, v in s.metrics.items() if k.startswith("calls:")) for s in runs).median


def calls_table(samples: Mapping[str, list[Sample]]) -> Table:
    sides = [*MAIN_SIDES, FIXED]
    ops = sorted({k for name in sides for s in samples[name] for k in s.metrics if k.startswith("calls:")})
    table = Table(
        ["side", *(op.removeprefix("calls:") for op in ops), "served by the emulator"],
        title="API calls per request by type, as the client counted them (median); the last column: "
        "every HTTP request the emulator served during the side, per request (preflight and warm-up "
        "included)",
    )
    for name in sides:
        runs = samples[name]
        table.add(
            name,
            *(stat(s.metrics.get(op, 0.0) for s in runs).format(3, spread=False) for op in ops),
            cell(runs, "served_per_request", 3),
        )
    return table


def repetitions_table(samples: Mapping[str, list[Sample]], derived: Mapping[str, list[float]]) -> Table:
    table = Table(
        [
            "repetition",
            "first side",
            "e2e / bare",
            "submit / bare per core",
            "journal / plain",
            "receives / notification",
            "other CPU during `fanout run` (cores)",
        ],
        title="Per repetition (the side order rotates)",
    )
    order = {name: values(runs, "order") for name, runs in samples.items()}
    for index in range(len(samples[E2E])):
        first = next((name for name, positions in order.items() if positions[index] == 0), "–")
        table.add(
            index + 1,
            first,
            number(derived["e2e_vs_bare"][index], 3),
            number(derived["submit_vs_bare_per_core"][index], 3),
            number(derived["journal_vs_plain"][index], 3),
            number(derived["receives"][index], 3),
            number(values(samples[E2E], "others")[index], 2),
        )
    return table


COLOURS = {
    "fixed cost": "#9e9e9e",
    "submit": "#1f77b4",
    "tracking": "#2ca02c",
    "the rest": "#ff7f0e",
    "journal and its I/O": "#9467bd",
    "submit (aiobotocore) and the rest": "#d62728",
    "bare aiobotocore submit": "#8c564b",
}


def bars(
    samples: Mapping[str, list[Sample]], derived: Mapping[str, list[float]], n: int
) -> dict[str, dict[str, float]]:
    """The stacked bars, from medians: every bar's top is its side's median CPU per request."""
    e2e = median(samples[E2E], "cpu_ms")
    fixed = stat(derived["part:fixed"]).median
    submit = median(samples[SUBMIT], "cpu_ms")
    tracking = median(samples[TRACKER], "cpu_ms")
    return {
        BARE_BAR: {"bare aiobotocore submit": median(samples[BARE], "cpu_ms")},
        "fanout\nsubmit only": {"submit": submit},
        "fanout run": {
            "fixed cost": fixed,
            "submit": submit,
            "tracking": tracking,
            "the rest": e2e - fixed - submit - tracking,
        },
        "fanout run\n--journal": {
            "fixed cost": fixed,
            "submit": submit,
            "tracking": tracking,
            "the rest": e2e - fixed - submit - tracking,
            "journal and its I/O": median(samples[JOURNAL], "cpu_ms") - e2e,
        },
        "fanout run\n--no-fast-path": {
            "fixed cost": fixed,
            "tracking": tracking,
            "submit (aiobotocore) and the rest": median(samples[NO_FAST], "cpu_ms") - fixed - tracking,
        },
    }


def cpu_plot(stacks: Mapping[str, Mapping[str, float]], path: Path, *, title: str) -> Path | None:
    """A stacked bar per side: client CPU ms per request by component (negative parts drawn as 0)."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(8.5, 4.8), dpi=110)
    labels = list(stacks)
    bottoms = [0.0] * len(labels)
    for component, colour in COLOURS.items():
        heights = [max(0.0, stacks[label].get(component, 0.0)) for label in labels]
        if not any(heights):
            continue
        ax.bar(labels, heights, bottom=bottoms, color=colour, label=component, width=0.6)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    bare = stacks.get(BARE_BAR, {}).get("bare aiobotocore submit")
    if bare is not None:
        ax.axhline(bare, linestyle=":", color="grey", linewidth=1, label="the bare loop's level")
    for x, label in enumerate(labels):
        total = sum(stacks[label].values())
        ax.annotate(f"{total:.3f}", (x, bottoms[x]), ha="center", va="bottom", fontsize=8)
    ax.set_title(title)
    ax.set_ylabel("client CPU ms per request")
    ax.set_ylim(0, max(bottoms) * 1.15 if max(bottoms) > 0 else 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def report(ctx: Context, size: Size, samples: dict[str, list[Sample]]) -> ScenarioResult:
    derived = derive(samples, size.count)
    # Kept with the repetitions in results.json, beside the sides' own metrics.
    for index, sample in enumerate(samples[E2E]):
        sample.metrics.update({f"derived:{k}": v[index] for k, v in derived.items()})
    e2e = stat(derived["e2e_vs_bare"])
    per_core = stat(derived["submit_vs_bare_per_core"])
    journal = stat(derived["journal_vs_plain"])
    receives = stat(derived["receives"])
    headline = (
        f"Pipeline: `fanout run --no-fetch --tracker sqs` over {size.count:,} requests ran at "
        f"{e2e.median:.2f}× the rate of a bare aiobotocore submit-only loop (goal ≥{GOAL_E2E:.1f}); "
        f"fanout's submit path alone got {per_core.median:.2f}× the bare loop's requests per CPU-second "
        f"(goal ≥{GOAL_PER_CORE:.1f}); `--journal` kept {journal.median:.2f}× the rate "
        f"(goal ≥{GOAL_JOURNAL:.1f}); "
        f"{receives.median:.3f} ReceiveMessage calls per notification (goal ≤{GOAL_RECEIVES:.2f})."
    )
    plots: list[Path] = []
    if ctx.plots:
        plot = cpu_plot(
            bars(samples, derived, size.count),
            ctx.results / PLOT,
            title=f"Client CPU per request by component ({size.count:,} requests, medians)",
        )
        plots += [plot] if plot is not None else []
    description = f"""
Every side runs against one emulator process, pinned to its own core when this process is pinned to the
other (the `fanout run` subprocesses inherit this process's core). No latency is added and the endpoint
answers in 5–20 ms with 256 workers, so every side runs as fast as its CPU lets it; all use 64 invokes in
flight. The sides, in a rotating order in each repetition: `python -m fanout run IN -o OUT --no-fetch
--tracker sqs --json-summary --quiet` over {size.count:,} JSONL lines of about {size.body_bytes}-byte JSON
bodies (the notifications carry the response); the same with `--journal` (a fresh SQLite file); the same
with `--no-fast-path`; fanout's submit path alone in this process (`open_runtime_client(...,
fast_path=True)` and `Dispatcher.submit_all`, each result released as it arrives); the bare aiobotocore
loop of the dispatcher's benchmark (`asyncio.gather` under `Semaphore(64)`, retries off); the SQS tracker
alone draining {size.count:,} queued notifications; and `fanout run` on a one-line input (its fixed cost).
The in-process sides send the same body after 64 warm-up calls, to a twin endpoint without notification
topics. After each side the harness waits for the emulator to finish its work.
"""
    notes = [
        "Requests/s (wall): for `fanout run`, N over the subprocess's whole life (fork to exit); the run's "
        "own clock is its `this_run.elapsed`. For the in-process sides, N over the timed loop.",
        "Client CPU: the subprocess's own user + system time from `wait4` (every thread, its journal "
        "writer too); in this process, `getrusage(RUSAGE_SELF)` over the timed loop (= `time.process_time`). "
        "Client CPU busy: CPU-seconds over wall seconds.",
        "Emulator CPU: from `/proc/<pid>/stat`, from the side's start until the emulator is idle again "
        "(so the invocations' processing, S3 writes and notifications count too), over N (plus the "
        "warm-up calls for the in-process sides). Emulator CPU busy near 1.0 means the emulator's core was "
        "the limit.",
        "API calls by type: `fanout run`'s `--json-summary` (`this_run.api_calls`: the run itself, without "
        "its preflight `HeadBucket` and `GetQueueAttributes`); the submit-only side's fast-path `counter`; "
        "the bare loop's `before-send` events, less its 64 warm-up calls.",
        "The bars of the plot are built from medians (so each bar's top is that side's median CPU per "
        "request); 'the rest' is the median of `fanout run` minus the medians of the other three parts. The "
        "attribution table takes the same differences within each repetition. A negative difference is "
        "drawn as 0.",
        "The tracker-alone part drains a queue filled beforehand, so every receive returns 10 messages: the "
        "tracker's floor. Inside `fanout run` notifications trickle in, and the receives that return fewer "
        "land in 'the rest'.",
    ]
    if ctx.plots and not plots:
        notes.append("No plot: matplotlib is not installed (the `bench` extra).")
    derived_table = Table(
        ["other ratios", "value"],
        title="More ratios, per repetition (median, min–max)",
    )
    derived_table.add(
        "`fanout run` vs bare loop, per core (whole process)", times(stat(derived["e2e_vs_bare_per_core"]))
    )
    derived_table.add(
        "`fanout run` vs bare loop, per core, beyond the fixed cost",
        times(stat(derived["e2e_beyond_fixed_vs_bare_per_core"])),
    )
    derived_table.add(
        "`--journal` vs without, on the run's own clock", times(stat(derived["journal_run_vs_plain"]))
    )
    derived_table.add(
        "`fanout run` vs `--no-fast-path` (requests/s)", times(stat(derived["fast_vs_no_fast"]))
    )
    return ScenarioResult(
        name=NAME,
        title=TITLE,
        description=description,
        tables=[
            goals_table(derived, samples),
            sides_table(samples, size),
            attribution_table(derived, samples),
            calls_table(samples),
            derived_table,
            repetitions_table(samples, derived),
        ],
        notes=notes,
        plots=plots,
        headlines=[headline],
        raw={"": samples},
    )
