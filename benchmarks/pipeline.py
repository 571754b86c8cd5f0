"""Pipeline benchmark: ``fanout run`` end to end against its parts and a bare aiobotocore loop.

    python -m benchmarks.pipeline [--quick | --tiny] [--repeat K] [--no-pin] [--out results/pipeline.md]
                                  [--profile DIR [--py-spy PATH]] [--section results/RESULTS.md]
    python benchmarks/pipeline.py ...

Runs the ``pipeline`` scenario of ``python -m benchmarks`` (``benchmarks/scenarios/pipeline.py``,
where the sides and what each number means are described) and reports it on its own:
``results/pipeline.md``, ``results/pipeline.json`` and ``results/pipeline_cpu.png``, the stacked
bars of client CPU per request by component. The default size is ``full`` (6,000 requests a side).

``--profile DIR``: after the repetitions, against the same emulator, profile one ``fanout run``
(the subprocess), the submit-only side and the bare loop, keep the raw profiles in DIR and add
where the CPU goes to the report: by layer, by task (for ``fanout run``) and the top functions.
With py-spy (``--py-spy PATH``, or ``py-spy`` on PATH) the profiles sample the thread holding the
GIL 200 times a second; otherwise cProfile is used (deterministic, but it slows Python code down
more than C code, so its shares lean towards Python).

``--section FILE``: also put the scenario's section into FILE (``results/RESULTS.md``), replacing
the section of the same title (and this scenario's headline) if there is one.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # ``python benchmarks/pipeline.py``: import the checkout as ``-m`` does
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import (
    Sample,
    ScenarioResult,
    Table,
    command_line,
    header,
    machine_info,
    pin,
    publish,
    repeat_sides,
    standalone_parser,
)
from benchmarks.scenarios import DEFAULT_REPEAT, Context, Size as SizeName
from benchmarks.scenarios.pipeline import SIZES, Bench, open_bench, report

__all__ = ["main", "profile_sides", "scenario_section", "splice_section"]

RESULTS = Path(__file__).resolve().parent / "results" / "pipeline.md"
HEADLINE_PREFIX = "Pipeline: "


# --- profiles --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Profile:
    """One profiled run: stacks (outermost frame first) with their weight, and the run's own figures."""

    side: str
    tool: str
    stacks: Counter[tuple[str, ...]] = field(default_factory=Counter)
    cpu_ms: float = float("nan")
    """Client CPU per request of the profiled run (the profiler's overhead included)."""

    @property
    def total(self) -> float:
        return float(sum(self.stacks.values()))


LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SigV4 signing", ("SigV4Auth", "add_auth", "hmac", "get_current_datetime", "signers.py", "auth.py")),
    ("JSON", ("json/", "json.decoder", "json.encoder")),
    ("uuid", ("uuid.py",)),
    ("aiohttp (HTTP client)", ("aiohttp/", "yarl/", "multidict/")),
    ("botocore + aiobotocore (generic call path)", ("botocore/",)),
    ("fast path (fanout/_fastpath.py)", ("_fastpath.py",)),
    ("tenacity (retry wrapper)", ("tenacity/",)),
    ("anyio (tasks, cancel scopes, semaphores)", ("anyio/",)),
    ("SQLite journal", ("sqlite3", "_journal.py")),
    ("tracker (fanout/_tracking)", ("fanout/_tracking",)),
    ("CLI: JSONL in, output out, report", ("_run_command.py", "_jsonl.py", "_cli.py", "_report.py")),
    ("Client (fanout/_client.py)", ("_client.py",)),
    (
        "dispatcher, limiter, retry (fanout)",
        ("_dispatch.py", "_retry.py", "_payload.py", "_config.py", "_models.py"),
    ),
    ("asyncio + the event loop", ("asyncio/", "runners.py")),
)
IMPORTS = ("_find_and_load", "_get_module_details", "<frozen importlib", "_compile_bytecode")


def layer(frames: Sequence[str]) -> str:
    """The layer of a sample: imports if any frame imports, else the innermost frame with a known layer."""
    if any(marker in frame for frame in frames for marker in IMPORTS):
        return "imports and start-up"
    for frame in reversed(frames):
        for name, markers in LAYERS:
            if any(marker in frame for marker in markers):
                return name
    return "other"


def _short(frame: str) -> str:
    """``function (module.py:line)`` without the folders."""
    return re.sub(r" \((?:[^():]*/)?", " (", frame)


TASK_ROOTS = ("TaskHandle._run_coro", "WorkerThread.run", "_worker (")


def task(frames: Sequence[str]) -> str:
    """For a py-spy stack of ``fanout run``: the task (or thread) it runs in, by the task's coroutine."""
    if any(marker in frame for frame in frames for marker in IMPORTS):
        return "imports and start-up"
    for index, frame in enumerate(frames):
        if frame.startswith(TASK_ROOTS[0]) and index + 1 < len(frames):
            return _short(frames[index + 1]).split(" (")[0]
        if frame.startswith(TASK_ROOTS[1:]):
            return "worker thread: " + _short(frame).split(" (")[0]
    return "the event loop and callbacks outside tasks"


def _read_py_spy(path: Path) -> Counter[tuple[str, ...]]:
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def _read_cprofile(stats: pstats.Stats) -> Counter[tuple[str, ...]]:
    """Self time per function, in microseconds, each as a one-frame stack (cProfile keeps no stacks)."""
    stacks: Counter[tuple[str, ...]] = Counter()
    table: dict[tuple[str, int, str], tuple[int, int, float, float, object]] = stats.stats  # type: ignore[attr-defined]
    for (filename, line, function), (_, _, own, _, _) in table.items():
        stacks[(f"{function} ({filename}:{line})",)] += int(own * 1e6)
    return stacks


class _PySpy:
    """py-spy sampling this process while a block runs."""

    def __init__(self, py_spy: str, output: Path) -> None:
        self._command = [py_spy, "record", "--gil", "-r", "200", "-f", "raw", "-o", str(output)]
        self._command += ["--pid", str(os.getpid())]
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _PySpy:
        self._process = subprocess.Popen(self._command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # attached and sampling
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def profile_sides(bench: Bench, folder: Path, py_spy: str | None) -> list[Profile]:
    """``fanout run``, the submit-only side and the bare loop, each once under the profiler."""
    folder.mkdir(parents=True, exist_ok=True)
    tool = "py-spy" if py_spy else "cProfile"
    profiles: list[Profile] = []
    # fanout run, the subprocess.
    raw = folder / ("fanout-run.txt" if py_spy else "fanout-run.prof")
    if py_spy:
        prefix = [py_spy, "record", "--gil", "-r", "200", "-f", "raw", "-o", str(raw), "--"]
    else:
        prefix = [sys.executable, "-m", "cProfile", "-o", str(raw)]
    sample = bench.side(lambda: bench.cli(prefix=[*prefix, sys.executable, "-m", "fanout"]), bench.n)
    stacks = _read_py_spy(raw) if py_spy else _read_cprofile(pstats.Stats(str(raw)))
    profiles.append(Profile("fanout run", tool, stacks, sample.metrics["cpu_ms"]))
    # The in-process sides.
    sides: dict[str, Callable[[], Sample]] = {
        "fanout submit only": bench.submit_only,
        "bare aiobotocore loop": bench.bare,
    }
    for name, run in sides.items():
        out = folder / f"{name.replace(' ', '-')}.{'txt' if py_spy else 'prof'}"
        # Only the side itself is profiled (its client, warm-up and timed loop), not the wait after it.
        if py_spy:
            with _PySpy(py_spy, out):
                sample = run()
            stacks = _read_py_spy(out)
        else:
            profiler = cProfile.Profile()
            profiler.enable()
            try:
                sample = run()
            finally:
                profiler.disable()
            profiler.dump_stats(str(out))
            stacks = _read_cprofile(pstats.Stats(profiler))
        bench.drained()
        profiles.append(Profile(name, tool, stacks, sample.metrics["cpu_ms"]))
    return profiles


def profile_markdown(profiles: Sequence[Profile], *, top: int = 15) -> list[str]:
    """Where the CPU goes: by layer (all sides), by task (``fanout run``), the top functions (each side)."""
    if not profiles:
        return []
    tool = profiles[0].tool
    layers: dict[str, Counter[str]] = {}
    for profile in profiles:
        counts: Counter[str] = Counter()
        for frames, weight in profile.stacks.items():
            counts[layer(frames)] += weight
        layers[profile.side] = counts
    names = sorted(
        {name for counts in layers.values() for name in counts},
        key=lambda n: -sum(c[n] for c in layers.values()),
    )
    by_layer = Table(
        ["layer", *(f"{p.side}: share, ms/request" for p in profiles)],
        title=f"By layer: the innermost frame of a known layer takes the sample ({tool})",
    )
    for name in names:
        cells = []
        for profile in profiles:
            share = layers[profile.side][name] / profile.total if profile.total else 0.0
            cells.append(f"{share:.1%}, {share * profile.cpu_ms:.3f}" if share else "–")
        by_layer.add(name, *cells)
    by_layer.add(
        "**all (measured CPU ms/request of the profiled run)**", *(f"{p.cpu_ms:.3f}" for p in profiles)
    )
    lines = ["## Where the CPU goes", "", by_layer.to_markdown(), ""]
    e2e = profiles[0]
    if tool == "py-spy":
        tasks: Counter[str] = Counter()
        for frames, weight in e2e.stacks.items():
            tasks[task(frames)] += weight
        by_task = Table(
            ["task (its coroutine)", "share", "ms/request"], title=f"`{e2e.side}` by task ({tool})"
        )
        for name, weight in tasks.most_common(top):
            share = weight / e2e.total
            by_task.add(f"`{name}`", f"{share:.1%}", f"{share * e2e.cpu_ms:.3f}")
        lines += [by_task.to_markdown(), ""]
    for profile in profiles:
        own: Counter[str] = Counter()
        for frames, weight in profile.stacks.items():
            own[_short(frames[-1])] += weight
        functions = Table(
            ["function (self time)", "share", "ms/request"], title=f"`{profile.side}`: top functions"
        )
        for name, weight in own.most_common(top):
            share = weight / profile.total
            functions.add(f"`{name}`", f"{share:.1%}", f"{share * profile.cpu_ms:.4f}")
        lines += [functions.to_markdown(), ""]
    return lines


# --- reports ---------------------------------------------------------------------------------------


def scenario_section(result: ScenarioResult, *, note: str | None = None) -> list[str]:
    """The scenario's section, as ``write_results`` renders it into RESULTS.md."""
    out = [f"## {result.title}", "", result.description.strip(), ""]
    if note:
        out += [note, ""]
    for table in result.tables:
        out += [table.to_markdown(), ""]
    for plot in result.plots:
        out += [f"![{plot.stem}]({plot.name})", ""]
    out += [*(f"- {n}" for n in result.notes), ""] if result.notes else []
    out += [f"_Scenario time: {result.seconds:.1f} s._", ""]
    return out


def splice_section(
    path: Path, result: ScenarioResult, *, note: str, headline_prefix: str = HEADLINE_PREFIX
) -> None:
    """Put ``result``'s section into the RESULTS.md at ``path``: in place of the section of the same
    title, or at the end; and its headline (which starts with ``headline_prefix``) in place of the
    previous one, or last in the list."""
    lines = path.read_text(encoding="utf-8").splitlines()
    section = scenario_section(result, note=note)
    heading = f"## {result.title}"
    if heading in lines:
        start = lines.index(heading)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[start:end] = section
    else:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += ["", *section]
    if "## Headline" in lines:
        start = lines.index("## Headline") + 2
        end = next((i for i in range(start, len(lines)) if not lines[i].startswith("- ")), len(lines))
        kept = [line for line in lines[start:end] if not line.startswith(f"- {headline_prefix}")]
        lines[start:end] = [*kept, *(f"- {h}" for h in result.headlines)]
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = standalone_parser("python -m benchmarks.pipeline", __doc__, RESULTS)
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument(
        "--quick", action="store_const", const="quick", dest="size", help="1,500 requests a side"
    )
    sizes.add_argument("--tiny", action="store_const", const="tiny", dest="size", help="smoke-test size")
    parser.set_defaults(size="full")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (default: 3 quick, 5 full)")
    parser.add_argument(
        "--profile", type=Path, default=None, metavar="DIR", help="profile, raw files into DIR"
    )
    parser.add_argument(
        "--py-spy", default=shutil.which("py-spy"), metavar="PATH", help="py-spy to profile with"
    )
    parser.add_argument(
        "--section", type=Path, default=None, metavar="FILE", help="also update FILE (RESULTS.md)"
    )
    parser.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG plot")
    args = parser.parse_args(argv)
    size_name: SizeName = args.size
    repeat = args.repeat if args.repeat is not None else DEFAULT_REPEAT[size_name]
    if repeat < 1:
        parser.error("--repeat must be 1 or more")
    command = command_line(parser.prog, argv)
    machine = machine_info()
    pinning = pin(args.pin)
    out: Path = args.out
    ctx = Context(
        size=size_name,
        repeat=repeat,
        results=out.parent,
        emulator_cpu=pinning.server,
        plots=args.plots,
        progress=lambda message: print(f"  {message}", file=sys.stderr, flush=True),
    )
    size = SIZES[size_name]
    started = time.perf_counter()
    profiles: list[Profile] = []
    with open_bench(ctx, size) as bench:
        samples = repeat_sides(bench.sides(), repeat, progress=ctx.progress)
        seconds = time.perf_counter() - started
        if args.profile is not None:
            ctx.progress(f"profiling with {'py-spy' if args.py_spy else 'cProfile'} into {args.profile}")
            profiles = profile_sides(bench, args.profile, args.py_spy)
    result = report(ctx, size, samples)
    result.seconds = seconds
    setup = {
        "target": "emulator (fanout.testing) in its own process, one process for every side and repetition",
        "size": f"{size_name}: {size.count:,} requests a side, {repeat} repetition(s)",
        "pinning": pinning.description,
        "event loop": "uvloop (fanout run always; the in-process sides too)",
        "fanout source": _checkout(),
    }
    lines = header("Pipeline benchmark", command, setup, headlines=result.headlines, machine=machine)
    lines += scenario_section(result)
    lines += profile_markdown(profiles)
    data = {
        "command": command,
        "machine": machine,
        "setup": setup,
        "size": {"name": size_name, "count": size.count, "body_bytes": size.body_bytes, "repeat": repeat},
        "sides": {side: [s.metrics for s in runs] for side, runs in samples.items()},
        "profiles": {
            p.side: {"tool": p.tool, "cpu_ms": p.cpu_ms, "layers": _layer_shares(p)} for p in profiles
        },
    }
    publish(out, "\n".join(lines), data, echo=False)
    if args.section is not None:
        note = f"_Measured by `{command}` ({pinning.description}), apart from the rest of this file._"
        splice_section(args.section, result, note=note)
        print(f"updated {args.section}", file=sys.stderr)
    for headline in result.headlines:
        print(headline, file=sys.stderr)
    return 0


def _checkout() -> str:
    """The commit of the checkout the benchmark ran from, and whether fanout/ had uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--", "fanout"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    if not commit:
        return "unknown (not a git checkout)"
    return f"commit {commit}" + (
        f", with uncommitted changes to {len(changes.splitlines())} file(s) under fanout/" if changes else ""
    )


def _layer_shares(profile: Profile) -> Mapping[str, float]:
    counts: Counter[str] = Counter()
    for frames, weight in profile.stacks.items():
        counts[layer(frames)] += weight
    return {name: weight / profile.total for name, weight in counts.most_common()} if profile.total else {}


if __name__ == "__main__":
    sys.exit(main())
