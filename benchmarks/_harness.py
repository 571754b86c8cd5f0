"""The benchmark framework: statistics, repetitions, CPU and memory accounting, the machine, reports.

Every benchmark (the scenarios of ``python -m benchmarks`` and the standalone ``dispatch``,
``tracking``, ``emulator`` and ``memory`` modules) runs several *sides* (ways of doing the same
workload) for the same number of repetitions, interleaved and in a rotating order, so that drift
on a busy machine lands on every side alike. Each run of a side returns a ``Sample``: named scalar
metrics plus raw series (latencies, timelines). The harness turns the repetitions into medians
with their spread (min–max) and into side-by-side ratios taken within the same repetition, and
writes the reports: Markdown for people, JSON with every repetition beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import resource
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import IO, Any

__all__ = [
    "ChildUsage",
    "CpuClock",
    "Pinning",
    "Sample",
    "ScenarioResult",
    "Stat",
    "Table",
    "cell",
    "child_pids",
    "command_line",
    "count_lines",
    "header",
    "json_summary",
    "jsonable",
    "machine_info",
    "median",
    "number",
    "package_versions",
    "percentile",
    "pin",
    "pooled",
    "proc_stat_fields",
    "process_cpu_seconds",
    "publish",
    "ratio",
    "ratio_cell",
    "ratio_stat",
    "repeat_sides",
    "repeat_sides_async",
    "rotations",
    "run_child",
    "standalone_parser",
    "stat",
    "times",
    "values",
    "write_report",
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


def number(value: float | None, digits: int = 1) -> str:
    """A table cell: thousands separated, ``–`` when unknown."""
    if value is None or math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


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
        """``median (min–max)``; the spread only when there is one."""
        if math.isnan(self.median):
            return "–"
        text = number(self.median, digits)
        if spread and self.n > 1 and self.maximum != self.minimum:
            text += f" ({number(self.minimum, digits)}–{number(self.maximum, digits)})"
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


# --- samples and repetitions ---------------------------------------------------------------------------


def times(value: Stat, digits: int = 2) -> str:
    """A ratio ``Stat`` as ``1.23 (1.10–1.40)×``, or ``–`` when there is none."""
    text = value.format(digits)
    return text if text == "–" else f"{text}×"


def json_summary(stderr: str) -> dict[str, Any] | None:
    """``fanout run --json-summary``'s line: the last line of ``stderr`` that is a JSON object."""
    for line in reversed(stderr.strip().splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def count_lines(path: Path) -> int:
    """Newlines in the file at ``path`` (0 when there is none), read in 1 MiB chunks."""
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(partial(handle.read, 1 << 20), b""))


@dataclass(slots=True)
class Sample:
    """One run of one side: scalar metrics and raw series (for percentiles and plots)."""

    metrics: dict[str, float] = field(default_factory=dict)
    series: dict[str, list[float]] = field(default_factory=dict)


def rotations(
    names: Sequence[str], repeat: int, *, progress: Callable[[str], None] | None = None
) -> Iterator[tuple[int, str]]:
    """``(position, side)`` for every run: each repetition runs every side once, and which side goes
    first rotates (with two sides, the order flips every repetition). ``progress`` hears of each run."""
    for rep in range(repeat):
        shift = rep % len(names) if names else 0
        for position, name in enumerate([*names[shift:], *names[:shift]]):
            if progress is not None:
                progress(f"{name} (repetition {rep + 1}/{repeat})")
            yield position, name


def _in_order(sample: Sample, position: int) -> Sample:
    sample.metrics.setdefault("order", float(position))
    return sample


def repeat_sides(
    sides: Mapping[str, Callable[[], Sample]],
    repeat: int,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[Sample]]:
    """Run every side ``repeat`` times, interleaved (``rotations``); ``order`` is each run's position."""
    samples: dict[str, list[Sample]] = {name: [] for name in sides}
    for position, name in rotations(list(sides), repeat, progress=progress):
        samples[name].append(_in_order(sides[name](), position))
    return samples


async def repeat_sides_async(
    sides: Mapping[str, Callable[[], Awaitable[Sample]]],
    repeat: int,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[Sample]]:
    """``repeat_sides`` for sides that run on the caller's event loop."""
    samples: dict[str, list[Sample]] = {name: [] for name in sides}
    for position, name in rotations(list(sides), repeat, progress=progress):
        samples[name].append(_in_order(await sides[name](), position))
    return samples


def values(samples: Sequence[Sample], name: str) -> list[float]:
    return [s.metrics.get(name, math.nan) for s in samples]


def median(samples: Sequence[Sample], name: str) -> float:
    return stat(values(samples, name)).median


def cell(samples: Sequence[Sample], name: str, digits: int = 1, *, scale: float = 1.0) -> str:
    """A metric's median (min–max) over the repetitions."""
    return stat(v * scale for v in values(samples, name)).format(digits)


def ratio(numerator: Sequence[Sample], denominator: Sequence[Sample], name: str) -> Stat:
    """``numerator / denominator`` for ``name``, repetition by repetition."""
    return ratio_stat(values(numerator, name), values(denominator, name))


def ratio_cell(numerator: Sequence[Sample], denominator: Sequence[Sample], name: str, digits: int = 2) -> str:
    text = ratio(numerator, denominator, name).format(digits)
    return text if text == "–" else f"{text}×"


def pooled(samples: Sequence[Sample], series: str, *, scale: float = 1.0) -> list[float]:
    """One series pooled over every repetition (for CDFs)."""
    return [v * scale for s in samples for v in s.series.get(series, [])]


# --- CPU, memory and processes -------------------------------------------------------------------------


def proc_stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (field 3 onwards); None if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and brackets; every later field follows the last ")".
    return text[text.rindex(")") + 2 :].split()


def process_cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one, with all its threads, when pid is None).

    Another process is read from its ``/proc/<pid>/stat`` clock ticks (Linux); NaN when unknown.
    """
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = proc_stat_fields(pid)
    if fields is None:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy (not idle, not waiting for I/O; steal counts as busy)."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            ticks = [int(x) for x in handle.readline().split()[1:9]]
    except (OSError, ValueError):
        return math.nan
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _involuntary_switches() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


@dataclass(slots=True)
class CpuClock:
    """Wall time and CPU time of this process and, optionally, of the emulator process, over a block.

    Two signs of a busy machine come with them: ``preempted``, this process's involuntary context
    switches per second, and ``others``, the cores' busy time spent by neither this process nor the
    emulator, in cores (NaN unless the emulator's pid is known).
    """

    server_pid: int | None = None
    wall: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float = math.nan
    preempted: float = 0.0
    others: float = math.nan
    _start: tuple[float, float, float, float, int] = (0.0, 0.0, 0.0, 0.0, 0)

    def __enter__(self) -> CpuClock:
        server = process_cpu_seconds(self.server_pid) if self.server_pid is not None else math.nan
        self._start = (
            time.perf_counter(),
            process_cpu_seconds(),
            server,
            _machine_busy_seconds(),
            _involuntary_switches(),
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        wall, client, server, busy, switches = self._start
        self.wall = time.perf_counter() - wall
        self.client_cpu = process_cpu_seconds() - client
        if self.server_pid is not None:
            self.server_cpu = process_cpu_seconds(self.server_pid) - server
        if self.wall > 0:
            self.preempted = (_involuntary_switches() - switches) / self.wall
            others = _machine_busy_seconds() - busy - self.client_cpu - self.server_cpu
            self.others = max(0.0, others) / self.wall if not math.isnan(others) else math.nan

    def per_thousand(self, count: int) -> dict[str, float]:
        """The usual metrics of a run that did ``count`` things: wall time and CPU per 1,000."""
        per_k = 1000.0 / max(count, 1)
        return {
            "wall_s": self.wall,
            "client_cpu": self.client_cpu,
            "client_cpu_per_k": self.client_cpu * per_k,
            "server_cpu_per_k": self.server_cpu * per_k,
            "preempted": self.preempted,
            "others": self.others,
        }


def child_pids(module: str) -> set[int]:
    """Pids of this process's children whose command line runs ``python -m <module>``."""
    me = os.getpid()
    found: set[int] = set()
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        fields = proc_stat_fields(int(entry))
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().split(b"\0")
        except OSError:
            continue
        if fields is not None and int(fields[1]) == me and module.encode() in cmdline:
            found.add(int(entry))
    return found


@dataclass(frozen=True, slots=True)
class ChildUsage:
    """What one child process used, from ``wait4``: its own figures, not its siblings'."""

    returncode: int
    wall: float
    cpu: float
    """User + system CPU seconds."""
    peak_rss_mb: float
    """The high-water mark of its resident set (``ru_maxrss``), in MiB."""


def run_child(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float,
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
    poll: float = 0.05,
) -> ChildUsage:
    """Run ``command`` to its end and measure it; past ``timeout`` seconds it is killed (TimeoutError).

    Its end is looked for every ``poll`` seconds, which bounds the error of ``wall``."""
    started = time.perf_counter()
    process = subprocess.Popen(
        list(command), env=None if env is None else dict(env), stdout=stdout, stderr=stderr
    )
    deadline = started + timeout
    try:
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{shlex.join(command)} took more than {timeout:g} s")
            time.sleep(poll)
    except BaseException:
        process.send_signal(signal.SIGKILL)
        process.wait()
        raise
    process.returncode = os.waitstatus_to_exitcode(status)
    kib = usage.ru_maxrss if sys.platform != "darwin" else usage.ru_maxrss / 1024
    return ChildUsage(
        returncode=process.returncode,
        wall=time.perf_counter() - started,
        cpu=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=kib / 1024,
    )


# --- the machine -----------------------------------------------------------------------------------------


def _load_average() -> str:
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


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
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{os.cpu_count()} × {model}",
        "memory": memory,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "load average at start (1, 5, 15 min)": _load_average(),
    }


_PACKAGES = (
    "fanout",
    "aiobotocore",
    "botocore",
    "boto3",
    "aiohttp",
    "anyio",
    "uvloop",
    "tenacity",
    "matplotlib",
)


def package_versions(names: Iterable[str] = _PACKAGES) -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass(frozen=True, slots=True)
class Pinning:
    """Which core the emulator gets (None: the scheduler decides) and how the report says it."""

    server: int | None
    description: str


def pin(enabled: bool, *, server: int | None = None, client: int | None = None) -> Pinning:
    """Pin this process (and so the children it starts later) to one core, and pick the emulator's.

    By default the emulator gets the first core this process may use and the benchmark the last,
    as in ``shared/reference/infra.md``; ``server`` and ``client`` choose them instead.
    """
    if not enabled or not hasattr(os, "sched_setaffinity"):
        return Pinning(None, "not pinned")
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return Pinning(None, f"not pinned (only {len(cores)} core available)")
    server = cores[0] if server is None else server
    client = cores[-1] if client is None else client
    if server == client or not {server, client} <= set(cores):
        return Pinning(None, f"not pinned (cores {server} and {client} are not two of {cores})")
    try:
        os.sched_setaffinity(0, {client})
    except OSError as exc:
        return Pinning(None, f"not pinned ({exc})")
    return Pinning(server, f"benchmark client on core {client}, emulator on core {server}")


# --- reports ---------------------------------------------------------------------------------------------


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


def command_line(program: str, argv: Sequence[str] | None) -> str:
    """How the benchmark was started, for the report (``argv`` None: this process's arguments)."""
    return shlex.join([*program.split(), *(sys.argv[1:] if argv is None else argv)])


def jsonable(value: Any) -> Any:
    """``value`` as JSON data: dataclasses as objects, NaN and infinities as null, paths as strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name[0] != "_"
        }
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def header(
    title: str,
    command: str,
    setup: Mapping[str, str],
    *,
    preamble: str | None = None,
    headlines: Sequence[str] = (),
    machine: Mapping[str, str] | None = None,
    versions: Mapping[str, str] | None = None,
) -> list[str]:
    """The top of every report: title, command, headlines, then the machine, setup and package versions."""
    machine = machine_info() if machine is None else machine
    versions = package_versions() if versions is None else versions
    out = [f"# {title}", ""]
    if preamble:
        out += [preamble, ""]
    out += ["```", command, "```", ""]
    if headlines:
        out += ["## Headline", "", *(f"- {h}" for h in headlines), ""]
    setup_table = Table(["", "value"], numeric=False)
    for key, value in {**machine, **setup, "load average at end (1, 5, 15 min)": _load_average()}.items():
        setup_table.add(key, value)
    version_table = Table(["package", "version"], numeric=False)
    for key, value in versions.items():
        version_table.add(key, value)
    return [*out, "## Setup", "", setup_table.to_markdown(), "", version_table.to_markdown(), ""]


def write_report(
    path: Path, markdown: str, data: Mapping[str, Any], *, data_path: Path | None = None
) -> Path:
    """Write ``markdown`` to ``path``, and ``data`` as JSON to ``data_path`` (by default beside it,
    ``.json``); return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown.rstrip() + "\n", encoding="utf-8")
    data_path = path.with_suffix(".json") if data_path is None else data_path
    data_path.write_text(json.dumps(jsonable(data), indent=1) + "\n", encoding="utf-8")
    return path


def standalone_parser(prog: str, description: str | None, report: Path) -> argparse.ArgumentParser:
    """The command line every standalone benchmark shares: ``--no-pin`` and ``--out`` (its report)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false", help="leave this process and the emulator unpinned"
    )
    parser.add_argument(
        "--out", type=Path, default=report, help=f"the Markdown report, JSON beside it (default: {report})"
    )
    return parser


def publish(path: Path, report: str, data: Mapping[str, Any], *, echo: bool = True) -> None:
    """Print ``report`` (unless ``echo`` is off) and write it, with ``data`` as JSON beside it."""
    if echo:
        print(report)
    write_report(path, report, data)
    print(f"wrote {path}", file=sys.stderr)


def write_results(
    results: Sequence[ScenarioResult],
    directory: Path,
    *,
    command: str,
    setup: Mapping[str, str],
    machine: Mapping[str, str] | None = None,
    versions: Mapping[str, str] | None = None,
) -> Path:
    """Write ``RESULTS.md`` and ``results.json`` (every repetition's metrics) into ``directory``, where
    the plots already are; return the path of ``RESULTS.md``."""
    machine = machine_info() if machine is None else machine
    out = header(
        "fanout benchmark results",
        command,
        setup,
        preamble="Every number below was measured on one machine in one run of the command below, each "
        "scenario's sides interleaved repetition by repetition. Cells show the median over the "
        "repetitions and, in brackets, the spread (min–max). Ratios are taken within each repetition, "
        "then summarised the same way.",
        headlines=[h for r in results for h in r.headlines],
        machine=machine,
        versions=versions,
    )
    for result in results:
        out += [f"## {result.title}", "", result.description.strip(), ""]
        for table in result.tables:
            out += [table.to_markdown(), ""]
        for plot in result.plots:
            out += [f"![{plot.stem}]({plot.name})", ""]
        out += [*(f"- {n}" for n in result.notes), ""] if result.notes else []
        out += [f"_Scenario time: {result.seconds:.1f} s._", ""]
    data = {
        "command": command,
        "machine": machine,
        "setup": setup,
        "scenarios": [
            {
                "name": r.name,
                "title": r.title,
                "seconds": r.seconds,
                "headlines": r.headlines,
                "sides": {
                    group: {side: [s.metrics for s in samples] for side, samples in sides.items()}
                    for group, sides in r.raw.items()
                },
            }
            for r in results
        ],
    }
    return write_report(directory / "RESULTS.md", "\n".join(out), data, data_path=directory / "results.json")
