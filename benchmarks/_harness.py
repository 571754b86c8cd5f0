"""Timing, CPU accounting, repetitions, statistics and the Markdown report.

A scenario runs several *sides* (ways of doing the same workload) for the same
number of repetitions, interleaved and in a rotating order, so that drift on a
busy machine lands on every side alike. Each run of a side returns a
``Sample``: named scalar metrics plus raw series (latencies, timelines). The
harness turns the repetitions into medians with their spread (min–max) and
into side-by-side ratios taken within the same repetition.
"""

from __future__ import annotations

import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

__all__ = [
    "CpuClock",
    "Sample",
    "ScenarioResult",
    "Stat",
    "Table",
    "machine_info",
    "package_versions",
    "percentile",
    "process_cpu_seconds",
    "ratio_stat",
    "repeat_sides",
    "stat",
    "write_results",
]


# --- statistics ----------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) with linear interpolation between closest ranks; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


@dataclass(frozen=True, slots=True)
class Stat:
    """A metric over repetitions: the median and the spread (min–max, and the interquartile range)."""

    median: float
    minimum: float
    maximum: float
    q1: float
    q3: float
    n: int

    def format(self, digits: int = 1, *, spread: bool = True) -> str:
        if math.isnan(self.median):
            return "–"
        text = _number(self.median, digits)
        if spread and self.n > 1 and self.maximum != self.minimum:
            text += f" ({_number(self.minimum, digits)}–{_number(self.maximum, digits)})"
        return text


def stat(values: Iterable[float]) -> Stat:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return Stat(math.nan, math.nan, math.nan, math.nan, math.nan, 0)
    return Stat(
        median=percentile(finite, 50),
        minimum=min(finite),
        maximum=max(finite),
        q1=percentile(finite, 25),
        q3=percentile(finite, 75),
        n=len(finite),
    )


def ratio_stat(numerators: Sequence[float], denominators: Sequence[float]) -> Stat:
    """Ratios taken repetition by repetition (same run, side by side), summarised like any metric."""
    pairs = zip(numerators, denominators, strict=True)
    return stat(a / b if b else math.nan for a, b in pairs)


def _number(value: float, digits: int) -> str:
    if math.isinf(value):
        return "∞"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


# --- CPU accounting ------------------------------------------------------------------------------------


def process_cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one, with all its threads, when pid is None).

    Another process is read from /proc (Linux); NaN when that is not possible.
    """
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            text = handle.read()
    except OSError:
        return math.nan
    # The command name (field 2) may contain spaces; every later field follows the last ")".
    fields = text[text.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


@dataclass(slots=True)
class CpuClock:
    """Wall time and CPU time of this process and, optionally, of the emulator process, over a block."""

    server_pid: int | None = None
    wall: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float = math.nan
    _start: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __enter__(self) -> CpuClock:
        server = process_cpu_seconds(self.server_pid) if self.server_pid is not None else math.nan
        self._start = (time.perf_counter(), process_cpu_seconds(), server)
        return self

    def __exit__(self, *exc_info: object) -> None:
        wall, client, server = self._start
        self.wall = time.perf_counter() - wall
        self.client_cpu = process_cpu_seconds() - client
        if self.server_pid is not None:
            self.server_cpu = process_cpu_seconds(self.server_pid) - server


# --- repetitions -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Sample:
    """One run of one side: scalar metrics and raw series (for percentiles and plots)."""

    metrics: dict[str, float] = field(default_factory=dict)
    series: dict[str, list[float]] = field(default_factory=dict)


def repeat_sides(
    sides: Mapping[str, Callable[[], Sample]],
    repeat: int,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[Sample]]:
    """Run every side ``repeat`` times, interleaved, rotating which side goes first."""
    names = list(sides)
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for rep in range(repeat):
        shift = rep % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            if progress is not None:
                progress(f"{name} (repetition {rep + 1}/{repeat})")
            samples[name].append(sides[name]())
    return samples


# --- report --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Table:
    """A Markdown table: the first column left-aligned, the others right-aligned unless ``numeric`` is off."""

    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    title: str | None = None
    numeric: bool = True
    """Right-align every column but the first; False left-aligns them all."""

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def to_markdown(self) -> str:
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        align = ["---"] + ["---:" if self.numeric else "---"] * (len(self.headers) - 1)
        parts = [f"**{self.title}**\n"] if self.title else []
        parts.append("\n".join([line(self.headers), line(align), *(line(r) for r in self.rows)]))
        return "\n".join(parts)


@dataclass(slots=True)
class ScenarioResult:
    """What a scenario hands to the report: prose, tables, plots and the headline sentences."""

    name: str
    title: str
    description: str
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    headlines: list[str] = field(default_factory=list)
    seconds: float = 0.0
    raw: dict[str, dict[str, list[Sample]]] = field(default_factory=dict)


def machine_info() -> dict[str, str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in handle if ln.startswith("model name")), "unknown"
            )
    except OSError:
        model = platform.processor() or "unknown"
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            kib = int(handle.readline().split()[1])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        memory = "unknown"
    try:
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "unknown"
    return {
        "cpu": f"{os.cpu_count()} × {model}",
        "memory": memory,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "load average at start (1, 5, 15 min)": load,
    }


_PACKAGES = ("fanout", "aiobotocore", "botocore", "boto3", "aiohttp", "anyio", "uvloop", "matplotlib")


def package_versions(names: Iterable[str] = _PACKAGES) -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_results(
    results: Sequence[ScenarioResult],
    directory: Path,
    *,
    command: str,
    setup: Mapping[str, str],
    machine: Mapping[str, str] | None = None,
    versions: Mapping[str, str] | None = None,
) -> Path:
    """Write ``RESULTS.md`` into ``directory`` (plots are already there) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    machine = machine_info() if machine is None else machine
    versions = package_versions() if versions is None else versions
    out: list[str] = ["# fanout benchmark results", ""]
    out += [
        "Every number below was measured on one machine in one run of the command below, each scenario's "
        "sides interleaved repetition by repetition. Cells show the median over the repetitions and, in "
        "brackets, the spread (min–max). Ratios are taken within each repetition, then summarised the "
        "same way.",
        "",
        "```",
        command,
        "```",
        "",
    ]
    headlines = [h for r in results for h in r.headlines]
    if headlines:
        out += ["## Headline", "", *(f"- {h}" for h in headlines), ""]
    out += ["## Setup", ""]
    setup_table = Table(["", "value"], numeric=False)
    for key, value in {**machine, **setup}.items():
        setup_table.add(key, value)
    out += [setup_table.to_markdown(), ""]
    version_table = Table(["package", "version"], numeric=False)
    for key, value in versions.items():
        version_table.add(key, value)
    out += [version_table.to_markdown(), ""]
    for result in results:
        out += [f"## {result.title}", "", result.description.strip(), ""]
        for table in result.tables:
            out += [table.to_markdown(), ""]
        for plot in result.plots:
            out += [f"![{plot.stem}]({plot.name})", ""]
        out += [*(f"- {n}" for n in result.notes), ""] if result.notes else []
        out += [f"_Scenario time: {result.seconds:.1f} s._", ""]
    path = directory / "RESULTS.md"
    path.write_text("\n".join(out).rstrip() + "\n", encoding="utf-8")
    return path
