"""Scale-out on one machine: ``fanout run --workers N`` against the same run in one process.

The sides are ``fanout run`` as a subprocess, ``python -m fanout run IN -o OUT --no-fetch --tracker
sqs --json-summary --quiet``, over N JSONL lines of about 200-byte JSON bodies (the notifications
carry the response, so nothing is fetched):

- ``in-process``: no ``--workers``: the driver sends the invokes itself (``--workers 1`` is the same
  thing: no worker process is started);
- ``--workers 2`` and ``--workers 4``: the driver (the ``fanout run`` process) reads the input,
  deals the lines to N worker processes (``python -m fanout._workers FD``, its children) that send
  the invokes, tracks the outcomes over SQS itself, and writes the output.

Each run of a side is two runs of the CLI, back to back: one over a **one-line** input (the
start-up: interpreter, imports, clients, preflight, starting and stopping the workers, shutdown),
then one over the **N lines**. The steady-state cost per request is the difference over N − 1, so
each worker's start-up (about 0.6 s of CPU, imports mostly) is reported on its own and not spread
over the requests.

**CPU of the process tree.** The driver waits for its workers, so their CPU is added to the
driver's children's time when they are reaped. The benchmark waits for the driver's exit without
reaping it (``waitid(WNOWAIT)``), reads the zombie's ``/proc/<pid>/stat``: its own user + system time
(the driver) and its reaped children's (the workers), then reaps it with ``wait4``, whose figure is
the whole tree (the driver and every child it reaped). Workers = children's time; driver = tree −
workers.

**Layouts.** The machine has 2 cores and the emulator (``python -m fanout.testing``, one process,
no latency added, 5–20 ms service time over 256 slots, as in the pipeline benchmark) shares them.
``unpinned``: the emulator and the fanout tree are all left to the scheduler. ``pinned``: the emulator
on the first core, the fanout tree (driver and workers alike) on the last. Each layout has its own
emulator process and input; the sides of both layouts are interleaved in one rotation.

After each run the benchmark waits until the emulator has nothing left to do (no backlog, nothing
on the queue), so no run pays for the previous one's work.
"""

from __future__ import annotations

import gc
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

from .._harness import (
    CpuClock,
    Sample,
    ScenarioResult,
    Stat,
    Table,
    cell,
    count_lines,
    json_summary,
    number,
    pin,
    proc_stat_fields,
    process_cpu_seconds,
    repeat_sides,
    stat,
    times,
    values,
)
from . import Context
from ._target import emulator_process
from ._workload import api_calls, json_items
from .pipeline import Bench, Size as PipelineSize, cli_env, pipeline_config

__all__ = [
    "DEFAULT_REPEAT",
    "GOAL_CPU_RATIO",
    "HEADLINE_PREFIX",
    "NAME",
    "SIZES",
    "TITLE",
    "WORKERS",
    "Layout",
    "ScaleBench",
    "Size",
    "TreeUsage",
    "derive",
    "figures",
    "open_layouts",
    "report",
    "run",
    "run_tree",
    "side_name",
]

NAME = "scale"
TITLE = "Scale-out: fanout run --workers N on one machine"
HEADLINE_PREFIX = "Scale-out: "


@dataclass(frozen=True, slots=True)
class Size:
    count: int
    """Lines of the input of each run of a side (and repetition)."""
    body_bytes: int = 200


SIZES = {"tiny": Size(300), "quick": Size(2_000), "full": Size(8_000)}
DEFAULT_REPEAT = {"tiny": 1, "quick": 3, "full": 3}

WORKERS = (1, 2, 4)
"""Senders per side: 1 is the in-process run (no ``--workers``), the others worker processes."""
GOAL_CPU_RATIO = 1.10
"""Issue 12: CPU per request with 2 workers at most 10 % above the in-process run's."""
IN_PROCESS = "in-process"


def side_label(workers: int) -> str:
    return IN_PROCESS if workers == 1 else f"--workers {workers}"


def side_name(layout: str, workers: int) -> str:
    return f"{layout}: {side_label(workers)}"


# --- measuring a process tree ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TreeUsage:
    """What a process and the children it reaped used (``run_tree``)."""

    returncode: int
    wall: float
    """From fork to exit, seconds."""
    cpu: float
    """User + system CPU seconds of the tree: the process and every child it waited for (``wait4``)."""
    children_cpu: float
    """The reaped children's share (``/proc/<pid>/stat`` cutime + cstime, in clock ticks)."""

    @property
    def own_cpu(self) -> float:
        """The process's own share: the tree's CPU less its children's."""
        return max(0.0, self.cpu - self.children_cpu)


def run_tree(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float,
    cpus: frozenset[int] | None = None,
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
    poll: float = 0.01,
) -> TreeUsage:
    """Run ``command`` (on ``cpus``, when given) to its end; its CPU with its children's, and theirs.

    The exit is awaited without reaping (``waitid(WNOWAIT)``), so the zombie's ``/proc`` entry still
    tells its children's time; then ``wait4`` reaps it. Past ``timeout`` seconds it is killed."""
    preexec = None if cpus is None else partial(os.sched_setaffinity, 0, set(cpus))
    started = time.perf_counter()
    process = subprocess.Popen(list(command), env=dict(env), stdout=stdout, stderr=stderr, preexec_fn=preexec)
    deadline = started + timeout
    try:
        while os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{shlex.join(command)} took more than {timeout:g} s")
            time.sleep(poll)
        wall = time.perf_counter() - started
        fields = proc_stat_fields(process.pid)
    except BaseException:
        process.kill()
        process.wait()
        raise
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    children = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK") if fields else math.nan
    return TreeUsage(
        returncode=process.returncode,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        children_cpu=children,
    )


# --- the layouts and the sides ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the emulator and the fanout tree run."""

    name: str
    description: str
    emulator_cpu: int | None
    """The emulator's core; None: the scheduler decides."""
    tree_cpus: frozenset[int] | None
    """The cores of ``fanout run`` and its workers; None: this process's."""


@dataclass(slots=True)
class ScaleBench:
    """The sides of one layout: its emulator and input (a pipeline ``Bench``) and where the tree runs."""

    layout: Layout
    bench: Bench
    runs: list[str] = field(default_factory=list)
    """The commands run, once each, as the report shows them (``DIR``: the scratch folder)."""

    @property
    def n(self) -> int:
        return self.bench.n

    def cli(self, workers: int, *, one_line: bool) -> dict[str, float]:
        """One ``fanout run`` over the input (or its first line) with ``workers`` senders: its figures."""
        bench = self.bench
        target = bench.target
        count = 1 if one_line else bench.n
        output = bench.workdir / "out.jsonl"
        output.unlink(missing_ok=True)
        command = [
            sys.executable,
            "-m",
            "fanout",
            "run",
            str(bench.one_line if one_line else bench.input),
            "-o",
            str(output),
            "--no-fetch",
            "--tracker",
            "sqs",
            "--json-summary",
            "--quiet",
            "--endpoint",
            target.endpoint_name,
            "--queue-url",
            target.queue_url or "",
            *([] if workers == 1 else ["--workers", str(workers)]),
        ]
        shown = shlex.join(["python", *command[1:]])
        shown = shown.replace(str(bench.workdir), "DIR").replace(target.queue_url or "QUEUE_URL", "QUEUE_URL")
        if shown not in self.runs:
            self.runs.append(shown)
        stderr_path = bench.workdir / "stderr.txt"
        with stderr_path.open("wb") as stderr, CpuClock(target.server_pid) as clock:
            usage = run_tree(
                command,
                env=bench.env,
                timeout=bench.timeout,
                cpus=self.layout.tree_cpus,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        text = stderr_path.read_text(encoding="utf-8", errors="replace")
        summary = json_summary(text)
        if summary is None or usage.returncode != 0:
            raise RuntimeError(f"{shlex.join(command)} exited {usage.returncode}: {text[-3000:]}")
        this_run: dict[str, Any] = summary.get("this_run", {})
        calls: dict[str, int] = this_run.get("api_calls", {})
        completed = sum(int(this_run.get(k, 0)) for k in ("succeeded", "failed", "expired"))
        lines = count_lines(output)
        elapsed = float(this_run.get("elapsed") or math.nan)
        # Other processes' CPU use in cores: the machine's busy time less the tree's, this process's
        # and the emulator's.
        others = clock.others * clock.wall - usage.cpu if clock.wall > 0 else math.nan
        return {
            "n": float(count),
            "succeeded": float(this_run.get("succeeded", 0)) if lines == count else 0.0,
            "completed": float(completed),
            "output_lines": float(lines),
            "senders": float(summary.get("workers", math.nan)),
            "wall_s": usage.wall,
            "run_s": elapsed,
            "cpu_s": usage.cpu,
            "driver_cpu_s": usage.own_cpu,
            "workers_cpu_s": usage.children_cpu,
            "server_cpu_s": clock.server_cpu,
            "others": max(0.0, others / clock.wall) if not math.isnan(others) else math.nan,
            "p50_s": float(this_run.get("p50") or math.nan),
            **{f"calls:{op}": c / max(completed, 1) for op, c in calls.items()},
        }

    def side(self, workers: int) -> Sample:
        """The one-line run, then the N-line run; the N-line run's figures, with start-up taken out."""
        gc.collect()
        bench = self.bench
        first = self.cli(workers, one_line=True)
        bench.drained()
        before = bench.target.stats()
        pid = bench.target.server_pid
        server = process_cpu_seconds(pid) if pid is not None else math.nan
        started = time.perf_counter()
        full = self.cli(workers, one_line=False)
        bench.drained()
        elapsed = time.perf_counter() - started
        server = process_cpu_seconds(pid) - server if pid is not None else math.nan
        served = api_calls(before, bench.target.stats())
        n = full["n"]
        completed = max(full["completed"], 1.0)
        steady = n - 1
        steady_wall = full["wall_s"] - first["wall_s"]
        metrics: dict[str, float] = {
            **{k: v for k, v in full.items() if k != "server_cpu_s"},
            "workers": float(workers),
            "rate": n / full["wall_s"],
            "run_rate": n / full["run_s"] if full["run_s"] > 0 else math.nan,
            "steady_rate": steady / steady_wall if steady_wall > 0 else math.nan,
            "cpu_ms": full["cpu_s"] / n * 1000,
            "steady_cpu_ms": (full["cpu_s"] - first["cpu_s"]) / steady * 1000,
            "steady_driver_ms": (full["driver_cpu_s"] - first["driver_cpu_s"]) / steady * 1000,
            "steady_workers_ms": (full["workers_cpu_s"] - first["workers_cpu_s"]) / steady * 1000,
            "tree_busy": full["cpu_s"] / full["wall_s"],
            "startup_wall_s": first["wall_s"],
            "startup_cpu_s": first["cpu_s"],
            "startup_driver_cpu_s": first["driver_cpu_s"],
            "startup_workers_cpu_s": first["workers_cpu_s"],
            "startup_per_worker_s": first["workers_cpu_s"] / workers if workers > 1 else math.nan,
            "startup_succeeded": first["succeeded"],
            "server_cpu_ms": server / n * 1000,
            "server_busy": server / elapsed if elapsed > 0 else math.nan,
            "served_per_completion": sum(served.values()) / completed,
            **{f"served:{op}": c / completed for op, c in served.items()},
        }
        metrics["rate_per_sender"] = metrics["rate"] / workers
        metrics["run_rate_per_sender"] = metrics["run_rate"] / workers
        metrics["steady_rate_per_sender"] = metrics["steady_rate"] / workers
        cpu = metrics["steady_cpu_ms"]
        metrics["driver_share"] = metrics["steady_driver_ms"] / cpu if cpu > 0 else math.nan
        return Sample(metrics=metrics)

    def sides(self) -> dict[str, Callable[[], Sample]]:
        return {side_name(self.layout.name, w): partial(self.side, w) for w in WORKERS}


@contextmanager
def _layout_bench(ctx: Context, layout: Layout, size: Size) -> Iterator[ScaleBench]:
    with (
        tempfile.TemporaryDirectory(prefix=f"fanout-scale-{layout.name}-") as scratch,
        emulator_process(pipeline_config(), cpu=layout.emulator_cpu) as target,
    ):
        items = json_items(size.count, size=size.body_bytes)
        pipeline_size = PipelineSize(size.count, size.body_bytes)
        bench = Bench(ctx, target, Path(scratch), pipeline_size, items, cli_env(target.env))
        bench.write_inputs()
        yield ScaleBench(layout, bench)


@contextmanager
def open_layouts(ctx: Context, size: Size, layouts: Sequence[str]) -> Iterator[list[ScaleBench]]:
    """One emulator and input per layout (``unpinned``, ``pinned``), in that order.

    The unpinned emulator starts while this process may use every core; then, for ``pinned``, this
    process is pinned (``pin``: the last core for it and the fanout tree, the first for the emulator).
    A layout that cannot be had (one core) is left out, and ``ctx.progress`` says so."""
    cores = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    with ExitStack() as stack:
        benches: list[ScaleBench] = []
        if "unpinned" in layouts:
            unpinned = Layout("unpinned", "everything left to the scheduler on every core", None, cores)
            benches.append(stack.enter_context(_layout_bench(ctx, unpinned, size)))
        if "pinned" in layouts:
            pinning = pin(True)
            if pinning.server is None:
                ctx.progress(f"no pinned layout: {pinning.description}")
            else:
                tree = frozenset(os.sched_getaffinity(0))
                description = (
                    f"emulator on core {pinning.server}, the fanout tree (driver and workers) on core "
                    f"{', '.join(str(c) for c in sorted(tree))}"
                )
                pinned = Layout("pinned", description, pinning.server, tree)
                benches.append(stack.enter_context(_layout_bench(ctx, pinned, size)))
        yield benches


# --- derived figures -------------------------------------------------------------------------------


def _ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    return [x / y if y else math.nan for x, y in zip(a, b, strict=True)]


RATIOS = (
    ("steady_cpu_ms", "CPU ms per request, steady state (tree)"),
    ("cpu_ms", "CPU ms per request, whole process tree with start-up"),
    ("rate", "requests/s, wall (fork to exit)"),
    ("run_rate", "requests/s, the run's own clock"),
    ("steady_rate", "requests/s, steady state (wall less the one-line run's)"),
)


def derive(samples: Mapping[str, list[Sample]], layouts: Sequence[str]) -> dict[str, list[float]]:
    """Per repetition, side by side: each worker count against the in-process run of its layout."""
    derived: dict[str, list[float]] = {}
    for layout in layouts:
        base = samples[side_name(layout, 1)]
        for workers in WORKERS[1:]:
            other = samples[side_name(layout, workers)]
            for metric, _ in RATIOS:
                derived[f"{layout}:w{workers}/in-process:{metric}"] = _ratios(
                    values(other, metric), values(base, metric)
                )
    return derived


def figures(samples: Mapping[str, list[Sample]], derived: Mapping[str, list[float]]) -> dict[str, Any]:
    """Medians and spreads (``Stat``) of every metric of every side, and of every ratio, for quoting."""
    sides: dict[str, dict[str, Stat]] = {}
    for name, runs in samples.items():
        metrics = sorted({k for s in runs for k in s.metrics})
        sides[name] = {metric: stat(values(runs, metric)) for metric in metrics}
    return {"sides": sides, "ratios": {name: stat(v) for name, v in derived.items()}}


# --- the report ------------------------------------------------------------------------------------


def goals_table(derived: Mapping[str, list[float]], layouts: Sequence[str]) -> Table:
    table = Table(
        ["layout", "measure", "goal", "measured", "met"],
        title="The goal, and the other ratios to the in-process run (per repetition, median and min–max)",
        numeric=False,
    )
    for layout in layouts:
        for workers in WORKERS[1:]:
            for metric, label in RATIOS:
                value = stat(derived[f"{layout}:w{workers}/in-process:{metric}"])
                goal = metric == "steady_cpu_ms" and workers == 2
                met = "–"
                if goal and not math.isnan(value.median):
                    met = "yes" if value.median <= GOAL_CPU_RATIO else "**no**"
                table.add(
                    layout,
                    f"{label}, `--workers {workers}` / in-process",
                    f"≤{GOAL_CPU_RATIO:.2f}×" if goal else "–",
                    times(value, 3 if metric.endswith("cpu_ms") else 2),
                    met,
                )
    return table


def throughput_table(samples: Mapping[str, list[Sample]], size: Size) -> Table:
    table = Table(
        [
            "side",
            "requests/s (wall, fork to exit)",
            "requests/s (run's own clock)",
            "requests/s (steady state)",
            "requests/s per sender (run's own clock)",
            "CPU ms / request, steady state (tree)",
            "driver ms / request",
            "workers ms / request",
            "driver's share",
            "CPU ms / request, with start-up",
            "tree CPU busy (cores)",
            "succeeded",
        ],
        title=f"Throughput and CPU: {size.count:,} requests of about {size.body_bytes} bytes a run "
        "(median, min–max)",
    )
    for name, runs in samples.items():
        table.add(
            name,
            cell(runs, "rate", 0),
            cell(runs, "run_rate", 0),
            cell(runs, "steady_rate", 0),
            cell(runs, "run_rate_per_sender", 0),
            cell(runs, "steady_cpu_ms", 3),
            cell(runs, "steady_driver_ms", 3),
            cell(runs, "steady_workers_ms", 3),
            stat(100 * v for v in values(runs, "driver_share")).format(0) + " %",
            cell(runs, "cpu_ms", 3),
            cell(runs, "tree_busy", 2),
            f"{cell(runs, 'succeeded', 0)}/{cell(runs, 'n', 0)}",
        )
    return table


def startup_table(samples: Mapping[str, list[Sample]]) -> Table:
    table = Table(
        [
            "side",
            "start-up CPU, tree (s)",
            "driver (s)",
            "workers (s)",
            "per worker (s)",
            "start-up wall (s)",
            "emulator CPU ms / request",
            "emulator CPU busy",
            "other processes (cores)",
            "p50 submitted → completed (s)",
        ],
        title="Start-up (`fanout run` on a one-line input) and the machine during the N-line run "
        "(median, min–max)",
    )
    for name, runs in samples.items():
        table.add(
            name,
            cell(runs, "startup_cpu_s", 2),
            cell(runs, "startup_driver_cpu_s", 2),
            cell(runs, "startup_workers_cpu_s", 2),
            cell(runs, "startup_per_worker_s", 2),
            cell(runs, "startup_wall_s", 2),
            cell(runs, "server_cpu_ms", 3),
            cell(runs, "server_busy", 2),
            cell(runs, "others", 2),
            cell(runs, "p50_s", 3),
        )
    return table


def _short(op: str) -> str:
    return op.removeprefix("calls:").removeprefix("served:")


def calls_table(samples: Mapping[str, list[Sample]]) -> Table:
    ops = sorted({k for runs in samples.values() for s in runs for k in s.metrics if k.startswith("calls:")})
    table = Table(
        ["side", "senders", *(_short(op) for op in ops), "all (client)", "served by the emulator"],
        title="API calls per completion by operation, as `fanout run` counted them (`--json-summary`'s "
        "`this_run.api_calls` over the completed requests; median, min–max); the last column: every "
        "HTTP request the emulator served during the run, preflight included, per completion",
    )
    for name, runs in samples.items():
        total = stat(sum(v for k, v in s.metrics.items() if k.startswith("calls:")) for s in runs)
        table.add(
            name,
            cell(runs, "senders", 0),
            *(stat(s.metrics.get(op, 0.0) for s in runs).format(3) for op in ops),
            total.format(3),
            cell(runs, "served_per_completion", 3),
        )
    return table


def repetitions_table(
    samples: Mapping[str, list[Sample]], derived: Mapping[str, list[float]], layouts: Sequence[str]
) -> Table:
    headers = ["repetition", "first side"]
    for layout in layouts:
        headers += [f"{layout}: CPU/request ×, w2", f"{layout}: requests/s ×, w2"]
    headers.append("other processes during the runs (cores, max)")
    table = Table(headers, title="Per repetition (`--workers 2` / in-process; the side order rotates)")
    order = {name: values(runs, "order") for name, runs in samples.items()}
    repetitions = len(next(iter(samples.values()), []))
    for index in range(repetitions):
        first = next((name for name, positions in order.items() if positions[index] == 0), "–")
        cells: list[str] = [str(index + 1), first]
        for layout in layouts:
            cells.append(number(derived[f"{layout}:w2/in-process:steady_cpu_ms"][index], 3))
            cells.append(number(derived[f"{layout}:w2/in-process:rate"][index], 2))
        others = [values(runs, "others")[index] for runs in samples.values()]
        cells.append(number(max((o for o in others if not math.isnan(o)), default=math.nan), 2))
        table.add(*cells)
    return table


def _headline(
    samples: Mapping[str, list[Sample]], derived: Mapping[str, list[float]], layouts: Sequence[str]
) -> str:
    """The goal in every layout, the wall-clock speed-up, and the receives per completion (first layout)."""
    goal: list[str] = []
    speed: list[str] = []
    for layout in layouts:
        cpu = stat(derived[f"{layout}:w2/in-process:steady_cpu_ms"])
        met = "met" if cpu.median <= GOAL_CPU_RATIO else "not met"
        goal.append(f"{times(cpu)} {layout} ({met})")
        rate = stat(derived[f"{layout}:w2/in-process:rate"])
        run_rate = stat(derived[f"{layout}:w2/in-process:run_rate"])
        speed.append(f"{rate.median:.2f}× {layout} ({run_rate.median:.2f}× on the run's own clock)")
    receives = [
        stat(values(samples[side_name(layouts[0], w)], "calls:sqs.ReceiveMessage")).median for w in WORKERS
    ]
    return (
        f"{HEADLINE_PREFIX}on {os.cpu_count()} cores shared with the emulator, `fanout run --workers 2` "
        f"spent {' and '.join(goal)} the steady-state CPU per request of the in-process run (goal "
        f"≤{GOAL_CPU_RATIO:.2f}×), and ran at {' and '.join(speed)} its requests/s from fork to exit; "
        f"ReceiveMessage calls per completion with 1, 2 and 4 senders ({layouts[0]}): "
        f"{', '.join(number(r, 3) for r in receives)}."
    )


def report(
    ctx: Context, size: Size, samples: dict[str, list[Sample]], layouts: Sequence[Layout]
) -> ScenarioResult:
    names = [layout.name for layout in layouts]
    derived = derive(samples, names)
    for layout in names:  # kept with the repetitions in the JSON, beside the sides' own metrics
        for workers in WORKERS[1:]:
            for index, sample in enumerate(samples[side_name(layout, workers)]):
                for metric, _ in RATIOS:
                    ratio = derived[f"{layout}:w{workers}/in-process:{metric}"][index]
                    sample.metrics[f"vs_in_process:{metric}"] = ratio
    headline = _headline(samples, derived, names)
    where = "; ".join(f"`{layout.name}`: {layout.description}" for layout in layouts)
    description = f"""
`fanout run IN -o OUT --no-fetch --tracker sqs --json-summary --quiet` as a subprocess over
{size.count:,} JSONL lines of about {size.body_bytes}-byte JSON bodies, with no `--workers` (the driver
sends itself: `--workers 1` is the same), `--workers 2` and `--workers 4` (the driver deals the lines to
worker processes that send the invokes; it keeps SQS tracking, the output and the journal). Each run of
a side is a one-line run (start-up: interpreter, imports, preflight, starting and stopping the workers)
followed by the {size.count:,}-line run; steady state is the difference over N − 1. CPU is the whole
process tree's (driver + the workers it reaps): the driver's zombie is read from `/proc` before it is
reaped (its own time, and its children's), then `wait4` gives the tree's. The emulator (one process,
no latency added, 5–20 ms service over 256 slots, notifications with the response) shares the
machine's 2 cores. Layouts: {where}. Every side of every layout runs once per repetition, in a
rotating order; ratios are taken within a repetition and layout, then summarised.
"""
    notes = [
        "Senders: the processes that send InvokeEndpointAsync: the driver itself in-process, else the "
        "worker processes. Requests/s per sender is the run's own-clock rate over them.",
        "Requests/s (wall): N over the driver's life, fork to exit, worker start-up included. Run's own "
        "clock: `this_run.elapsed`, from the client being open (the workers ready) to the last outcome. "
        "Steady state: (N − 1) over the N-line run's wall time less the one-line run's.",
        "CPU ms / request, steady state: (tree CPU of the N-line run − tree CPU of the one-line run) / "
        "(N − 1); driver and workers are split the same way. With start-up: the N-line run's tree CPU / N.",
        "Start-up per worker: the workers' CPU in the one-line run over their number (their imports, "
        "config, at most one request, shutdown); it is paid once per run, not per request.",
        "Emulator CPU: from `/proc/<pid>/stat`, from the N-line run's start until the emulator is idle "
        "again, over N. Other processes: the machine's busy time less the tree's, this process's and the "
        "emulator's, in cores: a sign of a busy machine (an idle emulator uses none).",
        "API calls: `this_run.api_calls` of the N-line run (without its preflight calls), divided by its "
        "completed requests. SQS tracking stays in the driver, so ReceiveMessage and DeleteMessageBatch "
        "per completion do not depend on the number of senders; receives per notification fall as the "
        "notification rate rises (the receives are paced to it).",
        "p50 submitted → completed: `this_run.p50`. With workers the driver deals up to `--max-pending` "
        "(1,000) lines ahead, and each worker holds its share of `--max-in-flight` (64): a dealt line "
        "waits in its worker, so this latency grows while the throughput does not suffer.",
    ]
    return ScenarioResult(
        name=NAME,
        title=TITLE,
        description=description,
        tables=[
            goals_table(derived, names),
            throughput_table(samples, size),
            startup_table(samples),
            calls_table(samples),
            repetitions_table(samples, derived, names),
        ],
        notes=notes,
        headlines=[headline],
        raw={"": samples},
    )


# --- the scenario ----------------------------------------------------------------------------------


def run(ctx: Context) -> ScenarioResult:
    """The suite's entry: one layout, ``pinned`` when the suite pinned this process, else ``unpinned``."""
    if ctx.real:
        return ScenarioResult(
            name=NAME,
            title=TITLE,
            description="Skipped with `--real`: this benchmark measures the client's CPU against the "
            "emulator on this machine.",
        )
    size = SIZES[ctx.size]
    tree = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    if ctx.emulator_cpu is None:
        layout = Layout("unpinned", "everything left to the scheduler", None, tree)
    else:
        layout = Layout("pinned", f"emulator on core {ctx.emulator_cpu}", ctx.emulator_cpu, tree)
    with _layout_bench(ctx, layout, size) as bench:
        samples = repeat_sides(bench.sides(), ctx.repeat, progress=ctx.progress)
    return report(ctx, size, samples, [layout])
