"""Tracking benchmark: notifications per second, S3 calls per completion, notification-to-outcome latency.

    python -m benchmarks.tracking [--notifications 20000] [--requests 2000] [--repeat 1] [--no-pin]
    python benchmarks/tracking.py ...

Runs the tracker's own benchmark (``benchmarks/scenarios/_tracker.py``, where what it measures is
described): SQS throughput and latency against the emulator in its own process (pinned to one
core, this process to another), then S3 polling cost in HEAD and LIST mode against an in-process
emulator. Every repetition starts a fresh emulator. Writes ``results/tracking.md`` and
``results/tracking.json``.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import anyio

if __package__ in (None, ""):  # ``python benchmarks/tracking.py``: import the checkout as ``-m`` does
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import (
    Sample,
    Table,
    cell,
    command_line,
    header,
    pin,
    publish,
    ratio_stat,
    repeat_sides,
    standalone_parser,
    values,
)
from benchmarks.scenarios._target import emulator_process
from benchmarks.scenarios._tracker import measure_sqs, s3_cost
from benchmarks.scenarios._workload import loop_options

__all__ = ["main"]

RESULTS = Path(__file__).resolve().parent / "results" / "tracking.md"


def _repetition(args: argparse.Namespace, server_cpu: int | None) -> Sample:
    with emulator_process(cpu=server_cpu) as target:
        sample = measure_sqs(
            dict(target.env),
            notifications=args.notifications,
            rate=args.rate,
            seconds=args.seconds,
            uvloop=True,
        )
    for mode in ("head", "list"):
        cost = anyio.run(s3_cost, mode, args.requests, backend_options=loop_options(True))
        sample.metrics.update({f"{mode}:{k}": v for k, v in cost.items()})
    print(
        f"throughput {sample.metrics['per_s']:,.0f}/s wall, {sample.metrics['per_cpu_s']:,.0f}/CPU-s; "
        f"latency p50 {sample.metrics['p50_ms']:.1f} ms, p99 {sample.metrics['p99_ms']:.1f} ms; "
        f"S3 calls per completion: head {sample.metrics['head:per_completion']:.2f}, "
        f"list {sample.metrics['list:per_completion']:.3f}",
        file=sys.stderr,
        flush=True,
    )
    return sample


def report(args: argparse.Namespace, runs: list[Sample], *, command: str, setup: dict[str, str]) -> str:
    table = Table(["metric", "value", "goal"], numeric=False)
    table.add(
        f"notifications processed per second (wall, {args.notifications} queued)",
        cell(runs, "per_s", 0),
        "≥ 3,000",
    )
    table.add("notifications per CPU-second of the tracker process", cell(runs, "per_cpu_s", 0), "")
    table.add(
        f"notification sent → outcome emitted, p50 ({cell(runs, 'latency_count', 0)} at {args.rate:.0f}/s)",
        f"{cell(runs, 'p50_ms', 1)} ms",
        "",
    )
    table.add("notification sent → outcome emitted, p99", f"{cell(runs, 'p99_ms', 1)} ms", "")
    table.add(
        f"S3 calls per completion, HEAD mode ({args.requests} requests)",
        f"{cell(runs, 'head:per_completion', 2)} (head {cell(runs, 'head:head', 0)}, "
        f"get {cell(runs, 'head:get', 0)})",
        "",
    )
    table.add(
        "S3 calls per completion, LIST mode",
        f"{cell(runs, 'list:per_completion', 3)} (list {cell(runs, 'list:list', 0)}, "
        f"head {cell(runs, 'list:head', 0)}, get {cell(runs, 'list:get', 0)})",
        "≤ 0.05",
    )
    cheapest = [max(v, 1e-9) for v in values(runs, "list:per_completion")]
    head_over_list = ratio_stat(values(runs, "head:per_completion"), cheapest)
    table.add("HEAD / LIST cost ratio (same run)", f"{head_over_list.format(0)}×", "")
    lines = header("Tracking benchmark", command, setup)
    lines += [
        "## Results",
        "",
        f"{len(runs)} repetition(s), each with a fresh emulator; cells are the median (min–max).",
        "",
        table.to_markdown(),
        "",
        "S3 polling: interval 0.5 s growing to 4 s, service time uniform 0–3 s, no notifications, "
        "fetch off. Throughput and latency: SNS-envelope notifications with an inline responseBody, "
        "4 receivers, fetch off. When the per-CPU-second rate is well above the wall rate, the "
        "tracker was waiting on the emulator process, not on its own core.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = standalone_parser("python -m benchmarks.tracking", __doc__, RESULTS)
    parser.add_argument("--notifications", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=1, help="repetitions, each with a fresh emulator")
    args = parser.parse_args(argv)
    if min(args.notifications, args.requests, args.repeat) < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error("every size must be positive")
    command = command_line(parser.prog, argv)
    pinning = pin(args.pin)
    runs = repeat_sides({"tracker": partial(_repetition, args, pinning.server)}, args.repeat)["tracker"]
    setup = {
        "emulator": "`python -m fanout.testing`, default configuration, in its own process (throughput, "
        "latency); in this process (S3 cost)",
        "pinning": pinning.description,
        "event loop": "uvloop",
    }
    text = report(args, runs, command=command, setup=setup)
    publish(args.out, text, {"command": command, "setup": setup, "arguments": vars(args), "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
