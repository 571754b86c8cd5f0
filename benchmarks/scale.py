"""Scale-out benchmark: ``fanout run --workers N`` against the same run in one process, on one machine.

    python -m benchmarks.scale [--quick | --tiny] [--repeat K] [--layout both|unpinned|pinned]
                               [--no-pin] [--out results/scale.md] [--section results/RESULTS.md]
    python benchmarks/scale.py ...

Runs the sides of ``benchmarks/scenarios/scale.py`` (where they, and what each number means, are
described): ``fanout run --no-fetch --tracker sqs`` in-process, with ``--workers 2`` and with
``--workers 4``, each as a one-line run (start-up) and an N-line run, in two layouts (everything
unpinned; the emulator on one core and the fanout tree on the other), all interleaved in one
rotation. Reports requests/s (wall, and per sender), CPU ms per request of the whole process tree in
steady state with the driver's and the workers' shares, start-up CPU per side and per worker, the
ratios to the in-process run (issue 12's goal: CPU per request with 2 workers at most 10 % above
it), and API calls per completion by operation. Writes ``results/scale.md`` and
``results/scale.json`` (every repetition, and ``figures``: each metric's median and spread).

Sizes: ``full`` 8,000 lines a run (the default), ``--quick`` 2,000, ``--tiny`` 300 (a smoke test).
``--repeat`` defaults to 3 (1 with ``--tiny``). ``--no-pin`` is ``--layout unpinned``.

``--section FILE``: also put the section into FILE (``results/RESULTS.md``), replacing the section
of the same title (and this benchmark's headline) if there is one.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # ``python benchmarks/scale.py``: import the checkout as ``-m`` does
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import pipeline
from benchmarks._harness import (
    ScenarioResult,
    command_line,
    header,
    machine_info,
    publish,
    repeat_sides,
    standalone_parser,
)
from benchmarks.pipeline import _checkout, scenario_section
from benchmarks.scenarios import Context, Size as SizeName
from benchmarks.scenarios.scale import (
    DEFAULT_REPEAT,
    GOAL_CPU_RATIO,
    HEADLINE_PREFIX,
    SIZES,
    WORKERS,
    derive,
    figures,
    open_layouts,
    report,
)

__all__ = ["main", "splice_section"]

RESULTS = Path(__file__).resolve().parent / "results" / "scale.md"
LAYOUTS = {"both": ("unpinned", "pinned"), "unpinned": ("unpinned",), "pinned": ("pinned",)}


def splice_section(path: Path, result: ScenarioResult, *, note: str) -> None:
    """Put the scale-out section and headline into the RESULTS.md at ``path``."""
    pipeline.splice_section(path, result, note=note, headline_prefix=HEADLINE_PREFIX)


def main(argv: list[str] | None = None) -> int:
    parser = standalone_parser("python -m benchmarks.scale", __doc__, RESULTS)
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_const", const="quick", dest="size", help="2,000 lines a run")
    sizes.add_argument(
        "--tiny", action="store_const", const="tiny", dest="size", help="300 lines a run (smoke test)"
    )
    parser.set_defaults(size="full")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (default: 3; 1 with --tiny)")
    parser.add_argument(
        "--layout",
        choices=list(LAYOUTS),
        default="both",
        help="unpinned, pinned (emulator on one core, the fanout tree on the other), or both (default)",
    )
    parser.add_argument(
        "--section", type=Path, default=None, metavar="FILE", help="also update FILE (RESULTS.md)"
    )
    args = parser.parse_args(argv)
    size_name: SizeName = args.size
    repeat = args.repeat if args.repeat is not None else DEFAULT_REPEAT[size_name]
    if repeat < 1:
        parser.error("--repeat must be 1 or more")
    wanted = LAYOUTS["unpinned" if not args.pin else args.layout]
    command = command_line(parser.prog, argv)
    machine = machine_info()
    out: Path = args.out
    ctx = Context(
        size=size_name,
        repeat=repeat,
        results=out.parent,
        plots=False,
        progress=lambda message: print(f"  {message}", file=sys.stderr, flush=True),
    )
    size = SIZES[size_name]
    started = time.perf_counter()
    with open_layouts(ctx, size, wanted) as benches:
        layouts = [bench.layout for bench in benches]
        sides = {name: run for bench in benches for name, run in bench.sides().items()}
        ctx.progress(
            f"{len(sides)} sides of {size.count:,} lines (and one line) each, {repeat} repetition(s)"
        )
        samples = repeat_sides(sides, repeat, progress=ctx.progress)
        commands = [run for bench in benches[:1] for run in bench.runs]
    seconds = time.perf_counter() - started
    result = report(ctx, size, samples, layouts)
    result.seconds = seconds
    names = [layout.name for layout in layouts]
    setup = {
        "target": "emulator (fanout.testing), one process per layout, serving every side and repetition",
        "size": f"{size_name}: {size.count:,} lines a run (and a one-line run), {repeat} repetition(s)",
        "layouts": "; ".join(f"{layout.name}: {layout.description}" for layout in layouts),
        "sides": f"{len(WORKERS)} per layout: "
        + ", ".join("in-process" if w == 1 else f"--workers {w}" for w in WORKERS),
        "event loop": "uvloop (fanout run, its workers too)",
        "fanout source": _checkout(),
    }
    lines = header("Scale-out benchmark", command, setup, headlines=result.headlines, machine=machine)
    lines += scenario_section(result)
    lines += [
        "## The commands",
        "",
        "In one layout (the other runs the same):",
        "",
        "```",
        *commands,
        "```",
        "",
    ]
    derived = derive(samples, names)
    data = {
        "command": command,
        "machine": machine,
        "setup": setup,
        "seconds": seconds,
        "size": {"name": size_name, "count": size.count, "body_bytes": size.body_bytes, "repeat": repeat},
        "layouts": layouts,
        "goal_cpu_ratio": GOAL_CPU_RATIO,
        "figures": figures(samples, derived),
        "derived": derived,
        "sides": {side: [s.metrics for s in runs] for side, runs in samples.items()},
    }
    publish(out, "\n".join(lines), data, echo=False)
    if args.section is not None:
        note = f"_Measured by `{command}`, apart from the rest of this file._"
        splice_section(args.section, result, note=note)
        print(f"updated {args.section}", file=sys.stderr)
    for headline in result.headlines:
        print(headline, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
