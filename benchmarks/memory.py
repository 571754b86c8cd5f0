"""Peak memory of ``fanout run`` on a long input: ``python -m benchmarks.memory [--lines N] [--journal]``.

The real CLI (``fanout run``, a subprocess) scores N generated lines against the emulator in its
own process (service time 0, no added latency, each result inline in its SQS notification), so
that what grows, if anything does, is the client. Memory must stay O(limits), not O(N): the
benchmark fails (exit 1) when the peak RSS of the ``fanout run`` process (its own ``ru_maxrss``,
from ``wait4``) goes over ``--limit-mb`` (150 by default), or when an output line is missing.
Prints the figures as one JSON line and writes ``results/memory.md`` and ``results/memory.json``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # ``python benchmarks/memory.py``: import the checkout as ``-m`` does
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import Table, command_line, header, pin, publish, run_child, standalone_parser
from benchmarks.scenarios._target import emulator_config, emulator_process

RESULTS = Path(__file__).resolve().parent / "results" / "memory.md"
LIMITS = ("--max-in-flight", "64", "--max-pending", "1000")
FANOUT_RUN = (sys.executable, "-m", "fanout._cli", "run")
"""The ``fanout`` console script, run with this interpreter."""


def write_input(path: Path, lines: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for index in range(lines):
            handle.write(f'{{"id":"r{index}","body":{{"i":{index},"text":"a small JSON payload"}}}}\n')


def measure(
    lines: int, *, journal: bool, folder: Path, server_cpu: int | None, timeout: float
) -> dict[str, Any]:
    """Run ``fanout run`` over ``lines`` generated lines and return its figures."""
    source, output, log = folder / "in.jsonl", folder / "out.jsonl", folder / "stderr.txt"
    write_input(source, lines)
    config = emulator_config({}, service_time={"kind": "constant", "ms": 0}, include_response=True)
    command = [*FANOUT_RUN, str(source), "-o", str(output), "--quiet", "--json-summary", *LIMITS]
    if journal:
        command += ["--journal", str(folder / "journal.db")]
    with emulator_process(config, cpu=server_cpu) as target, log.open("w+", encoding="utf-8") as stderr:
        usage = run_child(command, env={**os.environ, **target.env}, timeout=timeout, stderr=stderr)
        stats = target.stats() or {}
        stderr.seek(0)
        messages = stderr.read().strip().splitlines()
    try:
        summary: dict[str, Any] = json.loads(messages[-1]) if messages else {}
    except ValueError:
        summary = {}
    return {
        "lines": lines,
        "journal": journal,
        "exit_code": usage.returncode,
        "succeeded": summary.get("statuses", {}).get("succeeded", 0),
        "output_lines": _count_lines(output),
        "invocations": stats.get("invocations", {}).get("accepted"),
        "elapsed_s": round(usage.wall, 1),
        "lines_per_s": round(lines / usage.wall),
        "cpu_s": round(usage.cpu, 1),
        "peak_rss_mb": round(usage.peak_rss_mb, 1),
        "stderr": messages[-5:] if usage.returncode else [],
    }


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def report(figures: dict[str, Any], *, limit_mb: float, command: str, setup: dict[str, str]) -> str:
    table = Table(
        ["lines", "journal", "peak RSS (MB)", "limit (MB)", "output lines", "lines/s", "CPU-s", "exit"]
    )
    table.add(
        f"{figures['lines']:,}",
        "yes" if figures["journal"] else "no",
        f"{figures['peak_rss_mb']:.1f}",
        f"{limit_mb:g}",
        f"{figures['output_lines']:,}",
        f"{figures['lines_per_s']:,}",
        f"{figures['cpu_s']:.1f}",
        figures["exit_code"],
    )
    lines = header("Memory of fanout run", command, setup)
    lines += [
        "## Results",
        "",
        "`fanout run` (the CLI, in its own process) scores generated JSONL lines against the emulator in "
        f"another process: service time 0, no added latency, results inline in the notifications; limits "
        f"`{' '.join(LIMITS)}`. Peak RSS is the `fanout run` process's own high-water mark (`ru_maxrss` "
        "from `wait4`). Memory must stay O(limits), not O(lines).",
        "",
        table.to_markdown(),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = standalone_parser("python -m benchmarks.memory", __doc__, RESULTS)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--journal", action="store_true", help="with a durable --journal (default: without)")
    parser.add_argument("--limit-mb", type=float, default=150.0)
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds fanout run may take (default: 120 + lines / 50)"
    )
    args = parser.parse_args(argv)
    if args.lines < 1:
        parser.error("--lines must be 1 or more")
    command = command_line(parser.prog, argv)
    timeout = args.timeout if args.timeout is not None else 120 + args.lines / 50
    # `fanout run` inherits this process's core; the emulator gets another.
    pinning = pin(args.pin)
    with tempfile.TemporaryDirectory(prefix="fanout-memory-") as folder:
        figures = measure(
            args.lines, journal=args.journal, folder=Path(folder), server_cpu=pinning.server, timeout=timeout
        )
    print(json.dumps(figures))
    setup = {"pinning": pinning.description}
    text = report(figures, limit_mb=args.limit_mb, command=command, setup=setup)
    data = {"command": command, "setup": setup, "limit_mb": args.limit_mb, **figures}
    publish(args.out, text, data, echo=False)
    ok = figures["output_lines"] == args.lines and figures["peak_rss_mb"] <= args.limit_mb
    if not ok:
        print(f"FAILED: expected {args.lines} lines under {args.limit_mb} MB", file=sys.stderr)
        for message in figures["stderr"]:
            print(f"  {message}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
