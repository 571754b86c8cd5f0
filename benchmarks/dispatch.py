"""Dispatcher benchmark: fanout's submit path against the plain aiobotocore ways, side by side in one run.

    python -m benchmarks.dispatch [--quick] [--n N] [--rate R] [--repeat K] [--duration S] [--burst B]
    python benchmarks/dispatch.py ...

Runs ``bench_throughput`` and ``bench_throttled`` (``benchmarks/scenarios/_dispatcher.py``, where
what they measure is described) on the emulator in its own process, pinned to one core and this
process to another, and reports them on their own.

(a) Throughput: submits/s and client CPU-seconds per 1,000 submits, the median and min–max over
the repetitions, and the ratio fanout/bare taken within each repetition.

(b) Throttled: per side, goodput/R (calls accepted inside the window per second, over R), throttled
calls per accepted call (both counted by the emulator), requests that gave up, a goodput series
per 0.5 s, and whether the side *collapsed*: goodput below 0.5·R for more than 1 s after the first
second.

Writes ``results/dispatch.md`` and ``results/dispatch.json``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

if __package__ in (None, ""):  # ``python benchmarks/dispatch.py``: import the checkout as ``-m`` does
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import (
    Sample,
    Table,
    cell,
    command_line,
    header,
    number,
    pin,
    publish,
    ratio,
    standalone_parser,
    stat,
    values,
)
from benchmarks.scenarios._dispatcher import (
    BUCKET_SECONDS,
    GOODPUT_GOAL,
    LABELS,
    WARMUP_CALLS,
    WASTE_GOAL,
    Throttled,
    Throughput,
    bench_throttled,
    bench_throughput,
)
from benchmarks.scenarios._target import emulator_process

__all__ = ["Throttled", "Throughput", "bench_throttled", "bench_throughput", "main", "render_markdown"]

RESULTS = Path(__file__).resolve().parent / "results" / "dispatch.md"


# --- report --------------------------------------------------------------------------------------------


def render_markdown(
    throughput: Throughput | None,
    throttled: Throttled | None,
    *,
    command: str,
    setup: dict[str, str] | None = None,
) -> str:
    """The report: the two tables, then the goodput series of every throttled run."""
    lines = header(
        "Dispatcher benchmark",
        command,
        setup or {},
        preamble="Other work may have shared the machine, so rates are indicative; the ratios are taken "
        "within each repetition, side by side. Cells: median (min–max) over the repetitions.",
    )
    if throughput is not None:
        lines += _throughput_markdown(throughput)
    if throttled is not None:
        lines += _throttled_markdown(throttled)
    return "\n".join(lines).rstrip() + "\n"


def _throughput_markdown(result: Throughput) -> list[str]:
    fanout, bare = result.sides["fanout"], result.sides["bare"]
    table = Table(["side", "submits/s", "client CPU-s per 1,000", "emulator CPU-s per 1,000", "failed"])
    for name, runs in result.sides.items():
        table.add(
            LABELS[name],
            cell(runs, "rate", 0),
            cell(runs, "client_cpu_per_k", 3),
            cell(runs, "server_cpu_per_k", 3),
            f"{sum(values(runs, 'failed')):.0f}",
        )
    table.add(
        "**ratio fanout / bare**",
        f"**{result.ratio_rate.format(3)}**",
        ratio(fanout, bare, "client_cpu_per_k").format(3),
        "",
        "",
    )
    verdict = "met" if result.met else "**not met**"
    per_rep = ", ".join(
        f"{f / b:.3f}" for f, b in zip(values(fanout, "rate"), values(bare, "rate"), strict=True)
    )
    busy = {
        name: stat(
            c / w for c, w in zip(values(runs, "client_cpu"), values(runs, "wall_s"), strict=True)
        ).median
        for name, runs in result.sides.items()
    }
    extra = stat(
        f - b
        for f, b in zip(values(fanout, "client_cpu_per_k"), values(bare, "client_cpu_per_k"), strict=True)
    ).median
    per_rep_table = Table(
        [
            "repetition",
            "fanout submits/s",
            "bare submits/s",
            "ratio",
            "fanout / bare CPU-s per 1,000",
            "other CPU (fanout, bare)",
            "context switches/s (fanout, bare)",
        ]
    )
    for index, (f, b) in enumerate(zip(fanout, bare, strict=True), 1):
        fm, bm = f.metrics, b.metrics
        per_rep_table.add(
            index,
            number(fm["rate"], 0),
            number(bm["rate"], 0),
            f"{fm['rate'] / bm['rate']:.3f}",
            f"{number(fm['client_cpu_per_k'], 3)} / {number(bm['client_cpu_per_k'], 3)}",
            f"{number(fm['others'], 2)}, {number(bm['others'], 2)}",
            f"{number(fm['preempted'], 0)}, {number(bm['preempted'], 0)}",
        )
    return [
        "## (a) Throughput, no throttle",
        "",
        f"{result.n:,} inline {result.body_bytes:,}-byte InvokeEndpointAsync calls per side and "
        f"repetition, {result.max_in_flight} in flight, {result.repeat} repetitions alternating the "
        f"two sides (the order flips every repetition), after {WARMUP_CALLS} warm-up calls each. fanout: "
        "`Dispatcher.submit_all` (payload inline, each result released as it arrives). bare: "
        "`asyncio.gather` over every call under `asyncio.Semaphore`, one client, `max_pool_connections` "
        "= in flight, botocore retries off. Median (min–max).",
        "",
        table.to_markdown(),
        "",
        f"Goal: fanout ≥ {result.goal}× the bare rate (median of the per-repetition ratios): {verdict}. "
        f"Per-repetition ratios: {per_rep}. Client CPU busy while submitting (CPU time / wall time, median): "
        f"fanout {busy['fanout']:.0%}, bare {busy['bare']:.0%}; fanout spends {number(1000 * extra, 0)} µs "
        "more client CPU per submit (median of the per-repetition differences).",
        "",
        "Other processes' CPU use (cores) and this client's involuntary context switches per second show "
        "how busy the machine was during each side:",
        "",
        per_rep_table.to_markdown(),
        "",
    ]


def _series_table(columns: Sequence[tuple[str, Sample]], key: str) -> str:
    table = Table(["t (s)", *(name for name, _ in columns)])
    series = [run.series.get(key, []) for _, run in columns]
    for bucket in range(max(map(len, series), default=0)):
        cells = (number(s[bucket], 0) if bucket < len(s) else "–" for s in series)
        table.add(f"{bucket * BUCKET_SECONDS:.1f}", *cells)
    return table.to_markdown()


def _throttled_markdown(result: Throttled) -> list[str]:
    table = Table(
        [
            "side",
            "goodput / R",
            "throttled per accepted",
            "gave up",
            "accepted in 1st second",
            "first reaches 0.9·R at (s)",
            "longest stretch < 0.5·R (s)",
            "collapsed runs",
            "client CPU-s per 1,000 accepted",
        ]
    )
    for name, runs in result.sides.items():
        never = sum(1 for v in values(runs, "reached_90") if math.isnan(v))
        table.add(
            LABELS[name],
            cell(runs, "goodput_ratio", 3),
            cell(runs, "waste", 3),
            cell(runs, "gave_up", 0),
            cell(runs, "first_second_goodput", 0),
            cell(runs, "reached_90", 1) + (f", never in {never}" if never else ""),
            cell(runs, "longest_low", 1),
            f"{sum(values(runs, 'collapsed')):.0f} of {len(runs)}",
            cell(runs, "client_cpu_per_k", 3),
        )
    per_run = Table(
        [
            "side",
            "run",
            "order",
            "goodput / R",
            "accepted",
            "throttled",
            "throttled per accepted",
            "gave up",
            "tail cancelled",
            "final rate / window",
            "other CPU (cores)",
            "context switches/s",
        ]
    )
    for name, runs in result.sides.items():
        for index, run in enumerate(runs, 1):
            m = run.metrics
            final = f"{number(m['final_rate'], 0)} / {m['final_limit']:.0f}" if "final_limit" in m else "–"
            per_run.add(
                LABELS[name],
                index,
                f"{m['order']:.0f}",
                number(m["goodput_ratio"], 3),
                f"{m['accepted']:,.0f}",
                f"{m['throttled']:,.0f}",
                number(m["waste"], 3),
                f"{m['gave_up']:.0f}",
                "yes" if m["cancelled_tail"] else "no",
                final,
                number(m["others"], 2),
                number(m["preempted"], 0),
            )
    fanout = result.sides["fanout"]
    verdict = "met" if result.met else "**not met**"
    columns = [
        (f"{name} #{index}", run) for name, runs in result.sides.items() for index, run in enumerate(runs, 1)
    ]
    lines = [
        "## (b) Throttled endpoint",
        "",
        f"The emulator admits R = {number(result.rate, 0)} InvokeEndpointAsync/s (token bucket, burst "
        f"{number(result.burst, 0)}, starting full; a throttled call gets 400 ThrottlingException). "
        f"{result.workers} workers each send one inline 1 KB request at a time for "
        f"{number(result.duration, 1)} s per side and repetition, {result.repeat} repetitions "
        "alternating the sides. fanout: `Dispatcher.submit` with its default retry policy and adaptive "
        "limiter (botocore retries off). botocore: one aiobotocore client with "
        f"`retries={result.adaptive_retries}`. Goodput counts the 202s the client got inside the window; "
        "throttled and accepted calls are the emulator's counts over the window. At the window's end the "
        "throttle is lifted (and botocore's limiter opened) so the calls still retrying finish quickly; "
        "that tail is not counted. Collapse: goodput below 0.5·R for more than 1 s after the first "
        "second. Median (min–max).",
        "",
        table.to_markdown(),
        "",
        f"Goal for fanout: goodput ≥ {GOODPUT_GOAL}·R, waste ≤ {WASTE_GOAL:.0%}, no collapse: {verdict} "
        f"(goodput/R {cell(fanout, 'goodput_ratio', 3)}, waste {cell(fanout, 'waste', 3)}, "
        f"{sum(values(fanout, 'collapsed')):.0f} collapsed runs).",
        "",
        "Per run (order: position within its repetition; fanout's paced rate and window at the end; other "
        "processes' CPU use in cores and this client's involuntary context switches per second):",
        "",
        per_run.to_markdown(),
        "",
        f"### Goodput over time (accepted per second, {BUCKET_SECONDS} s buckets)",
        "",
        _series_table(columns, "goodput"),
        "",
        f"### Throttled calls over time (per second, sampled from the emulator every {BUCKET_SECONDS} s)",
        "",
        _series_table(columns, "throttled"),
    ]
    paced = [(name, run) for name, run in columns if "rate" in run.series]
    if paced:
        lines += [
            "",
            "### fanout's paced rate at the end of each bucket (req/s; – = not paced yet)",
            "",
            _series_table(paced, "rate"),
        ]
    return [*lines, ""]


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
    parser = standalone_parser(
        "python -m benchmarks.dispatch",
        "fanout's Dispatcher vs bare aiobotocore (throughput) and vs botocore adaptive mode (throttled), on "
        "the emulator in its own process.",
        RESULTS,
    )
    parser.add_argument("--quick", action="store_true", help=f"small sizes: {QUICK}")
    parser.add_argument("--n", type=int, default=None, help="(a) submits per side and repetition")
    parser.add_argument("--rate", type=float, default=None, help="(b) the server's throttle, req/s")
    parser.add_argument("--burst", type=float, default=None, help="(b) the throttle's burst, tokens")
    parser.add_argument("--duration", type=float, default=None, help="(b) seconds per side and repetition")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (each runs both sides)")
    parser.add_argument("--part", choices=("all", "throughput", "throttled"), default="all")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    n = args.n if args.n is not None else plan.n
    repeat = args.repeat if args.repeat is not None else plan.repeat
    rate = args.rate if args.rate is not None else plan.rate
    duration = args.duration if args.duration is not None else plan.duration
    burst = args.burst if args.burst is not None else plan.burst
    if n < 1 or repeat < 1 or rate <= 0 or duration <= 0 or (burst is not None and burst < 1):
        print("--n, --repeat, --rate and --duration must be positive, --burst at least 1", file=sys.stderr)
        return 2
    command = command_line(parser.prog, argv)
    pinning = pin(args.pin)
    with emulator_process(cpu=pinning.server) as target:
        env, server_pid = dict(target.env), target.server_pid

        async def run() -> tuple[Throughput | None, Throttled | None]:
            throughput = throttled = None
            if args.part in ("all", "throughput"):
                throughput = await bench_throughput(env, n=n, repeat=repeat, server_pid=server_pid)
            if args.part in ("all", "throttled"):
                throttled = await bench_throttled(
                    env, rate=rate, duration=duration, repeat=repeat, burst=burst, server_pid=server_pid
                )
            return throughput, throttled

        throughput, throttled = anyio.run(run, backend="asyncio")
    setup = {
        "emulator": "`python -m fanout.testing`, default configuration, in its own process",
        "pinning": pinning.description,
        "event loop": "asyncio",
    }
    report = render_markdown(throughput, throttled, command=command, setup=setup)
    publish(
        args.out,
        report,
        {"command": command, "setup": setup, "throughput": throughput, "throttled": throttled},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
