"""``python -m benchmarks [--quick] [--scenario NAME ...] [--repeat N] [--real]``.

Runs the scenarios, writes ``RESULTS.md`` (and ``results.json`` with every
repetition's metrics) and the PNG plots into the results folder. By default the
benchmark pins itself to core 1 and the emulator to core 0, as in
``shared/reference/infra.md``; ``--no-pin`` leaves both to the scheduler.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._harness import ScenarioResult, command_line, machine_info, package_versions, pin, write_results
from .scenarios import DEFAULT_LATENCY, DEFAULT_REPEAT, SCENARIOS, Context, Size, load
from .scenarios._target import emulator_config

RESULTS = Path(__file__).resolve().parent / "results"


def _parser(prog: str = "python -m benchmarks") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="fanout benchmarks: inline vs S3, mixed sizes, the usual ways, throttling, tracking, "
        "the pipeline.",
        epilog="Run on their own, outside this suite: python -m benchmarks.faults (the fault matrix: "
        "fanout run killed with SIGKILL and resumed under every emulator fault; --quick, or minutes "
        "at its 100,000-request default), python -m benchmarks.memory [--lines N], python -m "
        "benchmarks.dispatch, python -m benchmarks.emulator, python -m benchmarks.tracking, python -m "
        "benchmarks.pipeline (the pipeline scenario on its own, with --profile).",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", const="quick", dest="size", help="under a minute each")
    size.add_argument("--tiny", action="store_const", const="tiny", dest="size", help="smoke-test size")
    parser.set_defaults(size="full")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIOS,
        metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="repetitions per side (default: 3 quick, 5 full)"
    )
    parser.add_argument(
        "--real",
        action="store_true",
        help="use the real endpoint named by FANOUT_ENDPOINT (with FANOUT_STAGING and FANOUT_QUEUE_URL) "
        "through the standard AWS configuration, instead of the emulator",
    )
    parser.add_argument(
        "--latency",
        default=None,
        metavar="JSON",
        help="per-API latency model for the emulator, a JSON object (or @FILE) merged over the default, "
        'e.g. \'{"s3.PutObject": {"kind": "lognormal", "median_ms": 30, "sigma": 0.3}}\'',
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results folder (default: {RESULTS})")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the benchmark and the emulator")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--no-uvloop", action="store_true", help="run async sides on the plain asyncio loop")
    return parser


def _latency(option: str | None) -> dict[str, Any]:
    latency = dict(DEFAULT_LATENCY)
    if option:
        text = Path(option[1:]).read_text(encoding="utf-8") if option.startswith("@") else option
        try:
            extra = json.loads(text)
        except ValueError as exc:
            raise SystemExit(f"--latency is not valid JSON: {exc}") from None
        if not isinstance(extra, dict):
            raise SystemExit(
                "--latency must be a JSON object of service or service.Operation to distribution"
            )
        latency.update(extra)
    from fanout import ConfigError
    from fanout.testing import faults_from_dict

    try:
        faults_from_dict({"latency": latency})
    except ConfigError as exc:
        raise SystemExit(f"--latency: {exc}") from None
    return latency


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m benchmarks") -> int:
    """The suite; ``prog`` is how it was invoked (``fanout bench`` from the CLI), for its help."""
    args = _parser(prog).parse_args(argv)
    size: Size = args.size
    repeat = args.repeat if args.repeat is not None else DEFAULT_REPEAT[size]
    if repeat < 1:
        raise SystemExit("--repeat must be 1 or more")
    names = args.scenario or list(SCENARIOS)
    machine = machine_info()
    latency = _latency(args.latency)
    pinning = pin(not args.no_pin and not args.real)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    def progress(message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)

    ctx = Context(
        size=size,
        repeat=repeat,
        results=out,
        real=args.real,
        latency=latency,
        emulator_cpu=pinning.server,
        plots=not args.no_plots,
        uvloop=not args.no_uvloop,
        progress=progress,
    )
    results: list[ScenarioResult] = []
    for name in names:
        module = load(name)
        print(f"{name}: {module.TITLE} ({size}, {repeat} repetition(s))", file=sys.stderr, flush=True)
        started = time.perf_counter()
        result: ScenarioResult = module.run(ctx)
        result.seconds = time.perf_counter() - started
        print(f"{name}: done in {result.seconds:.1f} s", file=sys.stderr, flush=True)
        for headline in result.headlines:
            print(f"  → {headline}", file=sys.stderr, flush=True)
        results.append(result)

    command = command_line("python -m benchmarks", argv)
    setup = {
        "target": "real endpoint (--real)" if args.real else "emulator (fanout.testing) in its own process",
        "size": f"{size}, {repeat} repetition(s) per side",
        "pinning": pinning.description,
        "event loop": "uvloop" if ctx.uvloop else "asyncio",
    }
    if not args.real:
        endpoint = emulator_config(latency)["endpoints"][0]
        setup["emulated endpoint"] = (
            f"{endpoint['instance_count']} instances × {endpoint['max_concurrent_invocations_per_instance']} "
            f"concurrent invocations, service time {_describe(endpoint['service_time'])} (unless a scenario "
            "says otherwise); a fresh emulator process for every run of every side"
        )
        setup["latency model (added per API by the emulator)"] = "; ".join(
            f"{key}: {_describe(value)}" for key, value in latency.items()
        )
    path = write_results(
        results, out, command=command, setup=setup, machine=machine, versions=package_versions()
    )
    print(f"wrote {path}", file=sys.stderr)
    return 0


def _describe(distribution: Any) -> str:
    if isinstance(distribution, int | float):
        return f"{distribution} ms"
    if not isinstance(distribution, dict):
        return str(distribution)
    kind = distribution.get("kind", "constant")
    if kind == "uniform":
        return f"uniform {distribution.get('low_ms', 0)}–{distribution.get('high_ms', 0)} ms"
    params = ", ".join(f"{k}={v}" for k, v in distribution.items() if k != "kind")
    return f"{kind} ({params})"


if __name__ == "__main__":
    sys.exit(main())
