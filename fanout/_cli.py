"""The ``fanout`` command: ``run``, ``report``, ``emulate``, ``demo`` and ``bench``; only the user interface.

Exit codes of ``fanout run`` (a contract, see the README):
0 every request succeeded; 1 the run finished but some did not; 2 a usage or
configuration error, nothing submitted; 3 the run was aborted (the journal keeps
its state).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
import textwrap
import time
import traceback
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import datetime
from typing import Any, Literal, NoReturn, TextIO

import anyio

from ._check import CheckReport, check_run
from ._config import (
    DEFAULT_RETRY,
    HybridTracking,
    Limits,
    PayloadMode,
    S3Tracking,
    SqsTracking,
    Staging,
    Tracking,
    Workers,
    check_payload_mode,
)
from ._cost import DEFAULT_REGION, CostReport, PriceTable, cost_of, load_prices
from ._exceptions import ConfigError, FanoutError, unwrap_task_errors
from ._jsonl import LineDefaults
from ._logging import configure_logging
from ._loop import run
from ._metrics import default_registry, serve_metrics
from ._models import RunReport
from ._payload import validate_endpoint_name
from ._report_command import add_report_parser, run_report
from ._run_command import RunCommand, RunOptions, RunProgress, RunResult, count_lines

__all__ = ["EXIT_ABORTED", "EXIT_OK", "EXIT_SOME_FAILED", "EXIT_USAGE", "main", "parse_run_options"]

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_ABORTED = 3

CLI_NAMES = {
    "endpoint_name": "--endpoint",
    "queue_url": "--queue-url",
    "payload": "--payload",
    "staging": "--staging",
    "max_in_flight": "--max-in-flight",
    "max_pending": "--max-pending",
    "max_per_second": "--rate",
    "in_doubt_wait": "--resume-wait",
    "reconcile_after": "--reconcile-after",
    "workers": "--workers",
    "ray": "--ray",
    "port": "--metrics-port",
    "address": "--metrics-addr",
}
"""The command-line flag of each library parameter, so that errors name what the user typed."""

RUN_EPILOG = """\
input: one JSON object per line, e.g.
  {"id": "a1", "body": {"text": "hello"}}
  {"id": "a2", "body_base64": "aGVsbG8=", "content_type": "application/octet-stream"}
  {"id": "a3", "input_location": "s3://bucket/inputs/a3.json"}
id: a unique string (default: the line number); exactly one of body (JSON, sent as compact
UTF-8), body_base64 (raw bytes) or input_location; optional content_type, accept,
custom_attributes, inference_id. Output: one JSON object per input line (id, line, status,
result, ...). See docs/cli.md.
"""

_STATUSES = ("succeeded", "failed", "expired", "rejected")

_ENV_ENDPOINT = "FANOUT_ENDPOINT"
_ENV_QUEUE_URL = "FANOUT_QUEUE_URL"
_ENV_STAGING = "FANOUT_STAGING"


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fanout")
    except PackageNotFoundError:  # a source checkout on sys.path, not installed
        from . import __version__

        return __version__


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _workers(text: str) -> int | Literal["auto"]:
    """``--workers``: a count, or ``auto`` (one per core, or per CPU of the Ray cluster)."""
    return "auto" if text == "auto" else _positive_int(text)


def _ranged_int(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number of seconds, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high} seconds, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fanout", description="Fan requests out to an Amazon SageMaker Async Inference endpoint."
    )
    parser.add_argument("--version", action="version", version=f"fanout {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser(
        "run",
        help="score a JSONL file through an async endpoint",
        description=(
            "Submit one InvokeEndpointAsync per input line and write one output line per input\n"
            "line, in completion order. Exit codes: 0 all succeeded, 1 some did not, 2 usage or\n"
            "configuration error (nothing submitted), 3 aborted (the journal keeps its state)."
        ),
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("input", metavar="INPUT", help="JSONL requests, or - for standard input")
    run.add_argument(
        "-o",
        "--output",
        metavar="OUTPUT",
        help="JSONL outcomes, or - for stdout (required, except with --check)",
    )
    run.add_argument("--endpoint", metavar="NAME", help=f"endpoint name (default: ${_ENV_ENDPOINT})")
    run.add_argument(
        "--tracker",
        choices=("sqs", "s3", "hybrid"),
        default="sqs",
        help="how outcomes are found: SNS notifications in SQS, polling S3, or both (default: sqs)",
    )
    run.add_argument(
        "--queue-url", metavar="URL", help=f"SQS queue for sqs and hybrid (default: ${_ENV_QUEUE_URL})"
    )
    run.add_argument(
        "--reconcile-after",
        type=_positive_float,
        default=HybridTracking.__dataclass_fields__["reconcile_after"].default,
        metavar="SECONDS",
        help=(
            "hybrid: how long after acceptance a request without a notification is looked up in S3 "
            "(default: %(default)g)"
        ),
    )
    run.add_argument(
        "--payload",
        choices=("auto", "inline", "s3"),
        default="auto",
        help="inline Body (at most 128,000 bytes), S3 InputLocation, or auto by size (default: auto)",
    )
    run.add_argument(
        "--staging",
        metavar="S3_URI",
        help=f"s3://bucket/prefix for payloads sent via S3 (default: ${_ENV_STAGING})",
    )
    run.add_argument(
        "--max-in-flight",
        type=_positive_int,
        default=64,
        metavar="N",
        help="concurrent InvokeEndpointAsync calls (default: %(default)s)",
    )
    run.add_argument(
        "--max-pending",
        type=_positive_int,
        default=1_000,
        metavar="N",
        help="accepted inferences without an outcome yet: the backpressure (default: %(default)s)",
    )
    run.add_argument(
        "--rate",
        type=_positive_float,
        metavar="PER_SECOND",
        help="cap on invokes per second (default: none; throttles are adapted to either way)",
    )
    run.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help=(
            "send from N worker processes (auto: one per core); --rate and --max-in-flight are "
            "split among them (default: 1, this process)"
        ),
    )
    run.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help=(
            "run the workers as Ray actors: on a new local Ray without ADDRESS, or on the cluster at "
            "ADDRESS (auto: the one ray.init finds); --workers then defaults to the cluster's CPUs "
            "(needs fanout[ray])"
        ),
    )
    run.add_argument(
        "--journal", metavar="PATH", help="SQLite journal; rerun with it to resume after a crash"
    )
    run.add_argument(
        "--rerun",
        action="append",
        metavar="EARLIER_OUTPUT",
        help=(
            "run only the lines that did not succeed in EARLIER_OUTPUT, an earlier output of this INPUT "
            "(failed, expired, rejected, or with no record); the new output keeps their line numbers. "
            "Give it once per earlier output (the first run's and each rerun's). Each line is sent "
            "under a new inference id, except lines that give their own inference_id, which is sent again"
        ),
    )
    run.add_argument(
        "--check",
        action="store_true",
        help=(
            "check every input line and the configuration (region, credentials, endpoint, queue, "
            "staging bucket), then exit: 0 if all is well, 2 with the problems; sends nothing and "
            "writes no file, so -o is optional"
        ),
    )
    run.add_argument(
        "--request-ttl",
        type=_ranged_int(60, 21_600),
        metavar="SECONDS",
        help="RequestTTLSeconds, 60 to 21,600: how long a request may wait in the endpoint's queue "
        "(default: the service's, 21,600)",
    )
    run.add_argument(
        "--invocation-timeout",
        type=_ranged_int(1, 3_600),
        metavar="SECONDS",
        help="InvocationTimeoutSeconds, 1 to 3,600: how long the model may take "
        "(default: the service's, 900)",
    )
    run.add_argument("--no-fetch", action="store_true", help="do not download results; write their locations")
    run.add_argument(
        "--no-fast-path",
        dest="fast_path",
        action="store_false",
        help=(
            "send InvokeEndpointAsync, the SQS tracker's calls and the result fetches through "
            "aiobotocore instead of fanout's own request templates (the same wire, more CPU)"
        ),
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on http://ADDR:PORT/metrics while the run lasts (0: any free port)",
    )
    run.add_argument(
        "--metrics-addr",
        default="127.0.0.1",
        metavar="ADDR",
        help="the address --metrics-port listens on (default: %(default)s)",
    )
    run.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log to stderr: -v for the run's milestones and rejections, -vv for every request",
    )
    run.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text lines, or one JSON object per line for log pipelines (default: text)",
    )
    run.add_argument(
        "--prices",
        metavar="FILE",
        help="price table for the cost block, shaped like fanout/data/prices.json (default: the shipped one)",
    )
    run.add_argument(
        "--price-region",
        default=DEFAULT_REGION,
        metavar="REGION",
        help="the region whose list prices the cost block uses (default: %(default)s)",
    )
    run.add_argument(
        "--content-type",
        default="application/json",
        metavar="TYPE",
        help="ContentType of lines that give none (default: %(default)s)",
    )
    run.add_argument(
        "--resume-wait",
        type=_positive_float,
        default=DEFAULT_RETRY.in_doubt_wait,
        metavar="SECONDS",
        help=(
            "how long a request in doubt (sent, but no 202 came) waits for its notification before it "
            "is reported expired; on resume with SQS at least the visibility timeout plus a long poll "
            "(default: %(default)g)"
        ),
    )
    run.add_argument(
        "--at-most-once",
        action="store_true",
        help=(
            "never send a request twice: a request in doubt is awaited, not sent again under the same "
            "inference id (by default it is, so the endpoint may run it twice; the output has it once)"
        ),
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar and no summary table")
    run.add_argument(
        "--json-summary", action="store_true", help="print the summary as one JSON line on stderr"
    )

    emulate = commands.add_parser(
        "emulate", help="run the local emulator", description="Run the local SageMaker/S3/SQS/SNS emulator."
    )
    emulate.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
    emulate.add_argument(
        "--config",
        metavar="FILE",
        help="emulator configuration (JSON, or TOML), applied on top of the defaults; see docs/emulator.md",
    )
    emulate.add_argument(
        "--print-config",
        action="store_true",
        help="print the configuration it would serve, as TOML, and exit",
    )
    emulate.add_argument(
        "--model-url",
        metavar="URL",
        help="send invocations to this model server (POST /invocations, GET /ping), e.g. http://127.0.0.1:8080",
    )
    emulate.add_argument(
        "--model-startup-timeout",
        metavar="SECONDS",
        type=float,
        help="how long to wait for the model server's GET /ping to answer 200 (default: 60)",
    )

    add_report_parser(commands)

    commands.add_parser(
        "demo",
        help="compare the inline and S3 paths on a local emulator",
        description="Score a generated batch through the inline and the S3 path on an embedded emulator.",
    )
    bench = commands.add_parser(
        "bench",
        help="run the benchmark suite (python -m benchmarks) from a source checkout",
        description="Run the benchmark suite; every argument is passed on to python -m benchmarks.",
        add_help=False,
    )
    bench.add_argument("bench_args", nargs="*")
    for sub in commands.choices.values():
        # A flag the command does not know is reported with the command's usage, not fanout's.
        sub.set_defaults(command_parser=sub)
    return parser


def parse_run_options(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> RunOptions:
    """Turn ``fanout run`` arguments (and the FANOUT_* defaults) into ``RunOptions``.

    Raises ``ConfigError`` with a message fit for the user.
    """
    endpoint = args.endpoint or environ.get(_ENV_ENDPOINT)
    if not endpoint:
        raise ConfigError(f"no endpoint: pass --endpoint NAME or set {_ENV_ENDPOINT}")
    validate_endpoint_name(endpoint)
    queue_url = args.queue_url or environ.get(_ENV_QUEUE_URL)
    tracking: Tracking
    if args.tracker in ("sqs", "hybrid"):
        if not queue_url:
            raise ConfigError(
                f"--tracker {args.tracker} needs --queue-url URL (or {_ENV_QUEUE_URL}); "
                "--tracker s3 polls S3 instead"
            )
        tracking = (
            SqsTracking(queue_url=queue_url)
            if args.tracker == "sqs"
            else HybridTracking(queue_url=queue_url, reconcile_after=args.reconcile_after)
        )
    else:
        tracking = S3Tracking()
    payload: PayloadMode = args.payload
    staging_uri = args.staging or environ.get(_ENV_STAGING)
    staging: Staging | None = None
    try:
        check_payload_mode(payload, staging_uri)
    except ConfigError as exc:
        raise ConfigError(f"{exc.naming(CLI_NAMES)}: pass --staging or set {_ENV_STAGING}") from exc
    if staging_uri and payload != "inline":
        # The inline path never touches the staging bucket, so it needs no s3:PutObject.
        staging = Staging(location=staging_uri)
    content_type = args.content_type
    if not content_type or not content_type.isascii():
        raise ConfigError(f"--content-type must be a non-empty ASCII media type, got {content_type!r}")
    if args.input != "-" and not os.path.exists(args.input):
        raise ConfigError(f"the input {args.input!r} does not exist")
    for earlier in args.rerun or ():
        if earlier != "-" and not os.path.exists(earlier):
            raise ConfigError(f"--rerun {earlier!r} does not exist")
    workers: Workers | None = None
    count = None if args.workers in (None, "auto") else args.workers
    if args.ray is not None:
        if importlib.util.find_spec("ray") is None:
            raise ConfigError("--ray needs Ray, which is not installed: pip install 'fanout[ray]'")
        workers = Workers(count=count, ray=args.ray)
    elif args.workers == "auto" or (count is not None and count > 1):
        workers = Workers(count=count)
    return RunOptions(
        input=args.input,
        output=args.output if args.output is not None else "-",  # only --check goes without -o
        endpoint_name=endpoint,
        tracking=tracking,
        limits=Limits(
            max_in_flight=args.max_in_flight, max_pending=args.max_pending, max_per_second=args.rate
        ),
        retry=replace(DEFAULT_RETRY, at_most_once=args.at_most_once, in_doubt_wait=args.resume_wait),
        payload=payload,
        staging=staging,
        fetch=not args.no_fetch,
        defaults=LineDefaults(
            content_type=content_type,
            request_ttl_seconds=args.request_ttl,
            invocation_timeout_seconds=args.invocation_timeout,
        ),
        journal=args.journal,
        fast_path=args.fast_path,
        workers=workers,
        rerun=tuple(args.rerun or ()),
    )


def exit_code(result: RunResult) -> int:
    if result.stopped:
        return EXIT_ABORTED
    not_succeeded = sum(count for status, count in result.statuses.items() if status != "succeeded")
    return EXIT_OK if not not_succeeded else EXIT_SOME_FAILED


# -- summary ----------------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def cost_of_run(result: RunResult, options: RunOptions, prices: PriceTable) -> CostReport:
    """The run's requests at list prices. The endpoint publishes a notification per inference when
    outcomes come through SQS (so it has topics); with S3 tracking that is not known, and left out."""
    report = result.report
    inferences = report.inline + report.s3
    notified = not isinstance(options.tracking, S3Tracking)
    return cost_of(
        report.api_calls,
        inferences=inferences,
        inline=report.inline,
        prices=prices,
        notifications=inferences if notified else 0,
    )


def summary_dict(result: RunResult, code: int, cost: CostReport | None = None) -> dict[str, Any]:
    return {
        "exit_code": code,
        "stopped": result.stopped,
        "statuses": dict(result.statuses),
        "earlier_runs": result.earlier,
        "resumed": result.resumed,
        "workers": result.workers,
        **({"rerun": result.rerun.to_dict()} if result.rerun is not None else {}),
        "this_run": result.report.to_dict(),
        **({"cost": cost.to_dict()} if cost is not None else {}),
    }


def render_summary(
    result: RunResult, code: int, stream: TextIO, cost: CostReport | None = None, *, journal: bool = True
) -> None:
    """The table printed at the end of every run (on stderr; the output may be stdout)."""
    from rich.console import Console
    from rich.table import Table

    report: RunReport = result.report
    console = Console(file=stream, highlight=False, soft_wrap=True)
    outcomes = _count(report.total, "outcome")
    title = f"fanout run: {outcomes} in {report.elapsed:.1f} s ({report.throughput:,.0f}/s)"
    if result.stopped:
        title += " - stopped early"
    table = Table(title=title, show_header=True, header_style="bold", title_justify="left")
    table.add_column("", style="bold")
    table.add_column("this run", justify="right")
    resumed = result.earlier > 0
    if resumed:
        table.add_column("all runs", justify="right")

    def row(name: str, value: str, total: str = "") -> None:
        table.add_row(name, value, total) if resumed else table.add_row(name, value)

    for status in ("succeeded", "failed", "expired", "rejected"):
        row(status, f"{report.by_status[status]:,}", f"{result.statuses.get(status, 0):,}")
    table.add_section()
    row("inline", f"{report.inline:,}")
    row("s3", f"{report.s3:,}")
    row("retries", f"{report.retries:,}")
    row("re-sent", f"{report.resends:,}")
    row("in doubt", f"{report.in_doubt:,}")
    row("throttles", f"{report.throttles:,}")
    table.add_section()
    row("p50 to completion", _seconds(report.p50))
    row("p95 to completion", _seconds(report.p95))
    row("p99 to completion", _seconds(report.p99))
    if report.api_calls:
        table.add_section()
        for name, count in report.api_calls.items():
            row(name, f"{count:,}")
    console.print(table)
    if cost is not None and cost.inferences:
        console.print(cost.table())
        for note in cost.notes:
            if note.startswith(("Compute is not counted", "Not priced")):
                console.print(note)
    if result.workers > 1:
        console.print(
            f"workers: {result.workers} sent the requests; this process tracked them and wrote the output"
        )
    if result.rerun is not None:
        console.print(result.rerun.describe())
        if result.rerun.own_inference_ids:
            console.print(
                f"rerun: {_count(result.rerun.own_inference_ids, 'line')} sent again under the inference_id "
                "the input gives (a late notification of the earlier attempt could have settled it)"
            )
    if result.resumed:
        console.print(f"resumed: tracked {_count(result.resumed, 'request')} sent by an earlier run")
    if report.resends:
        console.print(
            f"re-sent: {_count(report.resends, 'request')} in doubt sent again under the same inference id; "
            "the endpoint may have run them twice (each has one output line; --at-most-once avoids this)"
        )
    if result.in_doubt_wait is not None:
        note = (
            f"in doubt: requests without a 202 waited up to {result.in_doubt_wait:,.0f} s for a notification"
        )
        if result.in_doubt_floor is not None:
            note += (
                " (raised from --resume-wait: a killed run's SQS receives hide messages for the "
                "visibility timeout plus a long poll)"
            )
        console.print(note)
    if result.stopped:
        console.print(
            "stopped: rerun the same command to finish; the journal skips what is done"
            if journal
            else "stopped: without --journal, a rerun starts again from the first line"
        )
    console.print(f"exit code {code}")


# -- progress ---------------------------------------------------------------------------------------


class _Display:
    """The progress display on stderr, refreshed four times a second from ``batch.progress()``.

    Two lines: the bar with done/total, the rate, the elapsed time and the ETA (for stdin, where
    the total is unknown, the count, the rate and the elapsed time); then the outcomes, labelled as
    in the summary, and what is in flight against the adaptive cap ("of 64 allowed": the
    controller's window, which throttling lowers and success raises, up to --max-in-flight).
    When the run ends, a last frame shows the final counts.
    """

    def __init__(self, batch: RunCommand, *, enabled: bool) -> None:
        self._batch = batch
        self._enabled = enabled
        self._live: Any = None

    def note(self, message: str) -> None:
        if self._live is not None:
            self._live.console.print(message)
        else:
            print(message, file=sys.stderr, flush=True)

    async def run(self) -> None:
        if not self._enabled:
            return
        from rich.console import Console, Group
        from rich.live import Live
        from rich.progress import BarColumn, Progress, TextColumn
        from rich.text import Text

        if self._batch.options.rerun:
            total = None  # the selected lines: known once the run has read the earlier output (_draw)
        else:
            total = await anyio.to_thread.run_sync(
                count_lines, self._batch.options.input, abandon_on_cancel=True
            )
        bar = Progress(TextColumn("[bold]fanout"), BarColumn(), TextColumn("{task.description}"))
        task = bar.add_task("", total=total)
        detail = Text()
        clock = _Rate()
        with Live(Group(bar, detail), console=Console(file=sys.stderr), refresh_per_second=4) as live:
            self._live = live
            try:
                while True:
                    self._draw(bar, task, detail, clock, total)
                    await anyio.sleep(0.25)
            finally:
                # The last frame: the final counts, and the rate over the whole run, as the summary.
                self._draw(bar, task, detail, clock, total, final=True)
                live.refresh()
                self._live = None

    def _draw(
        self, bar: Any, task: Any, detail: Any, clock: _Rate, total: int | None, *, final: bool = False
    ) -> None:
        snapshot = self._batch.progress()
        if total is None and self._batch.selection is not None:
            total = self._batch.selection.selected
            bar.update(task, total=total)
        done = sum(snapshot.completed.values()) + snapshot.earlier
        rate, throttle_rate = clock.update(done - snapshot.earlier, snapshot.throttles, whole_run=final)
        elapsed = _clock_time(clock.elapsed)
        if total is None:
            head = f"{done:,} done · {rate:,.0f}/s · elapsed {elapsed}"
        else:
            left = max(total - done, 0)
            eta = _clock_time(left / rate) if rate > 0 and left else ("0:00:00" if not left else "-:--:--")
            head = f"{done:,}/{total:,} · {rate:,.0f}/s · elapsed {elapsed} · ETA {eta}"
        bar.update(task, completed=done, description=head)
        detail.plain = _detail(snapshot, throttle_rate)


class _Rate:
    """Outcomes and throttles per second, over the last few seconds."""

    _WINDOW = 5.0

    def __init__(self) -> None:
        self._start = time.monotonic()
        self._samples: list[tuple[float, int, int]] = []

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def update(self, done: int, throttles: int, *, whole_run: bool = False) -> tuple[float, float]:
        """The rates over the last few seconds, or with ``whole_run`` since the display started."""
        now = time.monotonic()
        if whole_run:
            span = now - self._start
            return (done / span, throttles / span) if span > 0 else (0.0, 0.0)
        self._samples.append((now, done, throttles))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self._WINDOW:
            self._samples.pop(0)
        then, done_then, throttles_then = self._samples[0]
        span = now - then
        if span <= 0:
            return 0.0, 0.0
        return (done - done_then) / span, (throttles - throttles_then) / span


def _clock_time(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _detail(snapshot: RunProgress, throttle_rate: float) -> str:
    completed = snapshot.completed
    counts = " · ".join(f"{status} {completed.get(status, 0):,}" for status in _STATUSES)
    detail = (
        f"{counts} · in flight {snapshot.in_flight:,} of {snapshot.current_limit:,} allowed · "
        f"throttled {throttle_rate:,.1f}/s"
    )
    if snapshot.in_doubt and snapshot.in_doubt_until is not None:
        until = datetime.fromtimestamp(snapshot.in_doubt_until).strftime("%H:%M:%S")
        detail += f" · awaiting {snapshot.in_doubt:,} in doubt until {until} (--resume-wait shortens it)"
    return detail


# -- running ----------------------------------------------------------------------------------------


async def _execute(
    batch: RunCommand, display: _Display, metrics: tuple[Any, int, str] | None = None
) -> tuple[RunResult | None, bool]:
    """Run the batch with Ctrl-C handling, serving ``metrics`` (registry, port, address) meanwhile;
    returns (result, aborted)."""
    async with AsyncExitStack() as stack:
        if metrics is not None:
            registry, port, address = metrics
            server = await stack.enter_async_context(serve_metrics(registry, port=port, address=address))
            display.note(f"serving metrics on {server.url}")
        return await _execute_run(batch, display)


async def _execute_run(batch: RunCommand, display: _Display) -> tuple[RunResult | None, bool]:
    stop = anyio.Event()
    aborted = False
    result: RunResult | None = None
    run_scope = anyio.CancelScope()

    async def watch_signals() -> None:
        nonlocal aborted
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
            async for _ in received:
                if not stop.is_set():
                    stop.set()
                    if batch.options.journal is not None:
                        display.note(
                            "stopping: no new requests; waiting for the invokes on the wire, then leaving "
                            "the accepted ones in the journal (Ctrl-C again to abort)"
                        )
                    else:
                        display.note(
                            "stopping: no new requests; waiting for the outcomes of accepted requests "
                            "(Ctrl-C again to abort; they are lost without --journal)"
                        )
                else:
                    aborted = True
                    run_scope.cancel()
                    return

    with unwrap_task_errors():
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_signals)
            tg.start_soon(display.run)
            with run_scope:
                result = await batch.run(stop=stop)
            tg.cancel_scope.cancel()
    return result, aborted or result is None


def _count(number: int, noun: str) -> str:
    """``1 outcome``, ``2 outcomes``: every count a message shows, with its noun in the right number."""
    return f"{number:,} {noun}" if number == 1 else f"{number:,} {noun}s"


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _message(exc: FanoutError) -> str:
    return exc.naming(CLI_NAMES) if isinstance(exc, ConfigError) else str(exc)


def _run_command(args: argparse.Namespace) -> int:
    configure_logging(args.verbose, args.log_format)
    if args.check:
        return _check_command(args)
    try:
        options = parse_run_options(args)
        prices = load_prices(args.prices, args.price_region)
        registry = default_registry() if args.metrics_port is not None else None
        batch = RunCommand(options, registry=registry)
    except FanoutError as exc:
        print(f"fanout run: error: {_message(exc)}", file=sys.stderr)
        return EXIT_USAGE
    show_progress = not args.quiet and not args.json_summary and sys.stderr.isatty()
    display = _Display(batch, enabled=show_progress)
    try:
        metrics = (registry, args.metrics_port, args.metrics_addr) if registry is not None else None
        result, aborted = run(_execute, batch, display, metrics)
    except FanoutError as exc:
        if not batch.accepted_any:
            print(f"fanout run: error: {_message(exc)}", file=sys.stderr)
            return EXIT_USAGE
        # Mid-run: what finished is written; say so, then what stopped the run, as Ctrl-C does.
        if batch.partial is not None:
            _print_summary(args, batch.partial, EXIT_ABORTED, cost_of_run(batch.partial, options, prices))
        print(f"fanout run: error: {_message(exc)}", file=sys.stderr)
        return EXIT_ABORTED
    except KeyboardInterrupt:
        print("fanout run: aborted", file=sys.stderr)
        return EXIT_ABORTED
    except BrokenPipeError:
        # The reader of the output went away (``| head``): stop quietly, as Unix tools do. Point
        # stdout at /dev/null so that the interpreter's last flush does not fail again.
        _silence_stdout()
        return EXIT_ABORTED
    except Exception:
        traceback.print_exc()
        print("fanout run: aborted by an unexpected error", file=sys.stderr)
        return EXIT_ABORTED
    if aborted or result is None:
        print(
            "fanout run: aborted" + (" (the journal keeps its state)" if options.journal else ""),
            file=sys.stderr,
        )
        return EXIT_ABORTED
    code = exit_code(result)
    _print_summary(args, result, code, cost_of_run(result, options, prices))
    return code


def _check_command(args: argparse.Namespace) -> int:
    """``fanout run --check``: the report on stderr, exit 0 or 2; nothing sent, no file written."""
    try:
        options = parse_run_options(args)
    except FanoutError as exc:
        print(f"fanout run --check: error: {_message(exc)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        report = run(check_run, options, args.output is not None)
    except KeyboardInterrupt:
        print("fanout run --check: aborted", file=sys.stderr)
        return EXIT_ABORTED
    code = EXIT_OK if report.ok else EXIT_USAGE
    if args.json_summary:
        print(json.dumps({"exit_code": code, "check": report.to_dict()}), file=sys.stderr)
    else:
        render_check(report, code, sys.stderr, input_name=args.input)
    return code


def render_check(report: CheckReport, code: int, stream: TextIO, *, input_name: str) -> None:
    """The report of ``fanout run --check``: one line per thing checked, then the first problem lines.

    In a log or a pipe, plain lines that are never wrapped, so that each finding stays whole; on a
    terminal, each detail wraps under itself instead of at the screen's edge.
    """
    from rich.console import Console
    from rich.markup import escape

    console = Console(file=stream, highlight=False, soft_wrap=True)
    styles = {"ok": "green", "problem": "bold red", "warning": "yellow", "not checked": "dim"}
    width = max((len(finding.subject) for finding in report.findings), default=0)
    indent = 2 + width + 2 + 11 + 2
    room = console.width - indent if console.is_terminal and console.width - indent >= 30 else None
    console.print(f"fanout run --check {escape(input_name)}")
    for finding in report.findings:
        status = f"[{styles[finding.status]}]{finding.status:<11}[/]"
        detail = _wrapped(finding.detail, room)
        console.print(f"  {finding.subject:<{width}}  {status}  {escape(detail[0])}")
        for rest in detail[1:]:
            console.print(" " * indent + escape(rest))
    lines = report.input
    if lines is not None and lines.problems:
        console.print(f"lines a run would reject ({lines.problems:,}):")
        for item in lines.first_problems:
            text = _wrapped(f"line {item.line}: {item.reason}", None if room is None else console.width - 4)
            console.print(f"  {text[0]}", markup=False)
            for rest in text[1:]:
                console.print(f"    {rest}", markup=False)
        more = lines.problems - len(lines.first_problems)
        if more:
            console.print(f"  ... and {more:,} more")
    verdict = "all is well" if report.ok else _count(report.problems, "problem")
    if report.warnings:
        verdict += f", {_count(report.warnings, 'warning')}"
    console.print(f"fanout run --check: {verdict}; nothing was sent (exit code {code})")


def _wrapped(text: str, width: int | None) -> list[str]:
    """``text`` in lines of at most ``width`` columns (whole words, URLs and ARNs kept whole), or
    as one line when ``width`` is ``None``."""
    if width is None:
        return [text]
    return textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False) or [""]


def _print_summary(args: argparse.Namespace, result: RunResult, code: int, cost: CostReport) -> None:
    if args.json_summary:
        print(json.dumps(summary_dict(result, code, cost)), file=sys.stderr)
    elif not args.quiet:
        render_summary(result, code, sys.stderr, cost, journal=args.journal is not None)


def _bench(arguments: Sequence[str]) -> int:
    # The suite is not part of the wheel: it lives beside the package in a source checkout, which
    # is where ``python -m benchmarks`` finds it too (the current directory).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        from benchmarks.__main__ import main as bench
    except ImportError:
        print(
            "fanout bench: the benchmarks/ folder is not importable here; run it from a source "
            "checkout of fanout (python -m benchmarks --help)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return bench(list(arguments), prog="fanout bench")


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["bench"]:
        # Every flag belongs to the suite's own parser, including --help.
        return _bench(arguments[1:])
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(arguments)
        if unknown:
            args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        if args.command == "run" and args.output is None and not args.check:
            # Not required=True: --check goes without it. Worded as argparse words a missing flag.
            args.command_parser.error("the following arguments are required: -o/--output")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command == "run":
        return _run_command(args)
    if args.command == "report":
        return run_report(args)
    if args.command == "emulate":
        from .testing._server import serve

        return serve(
            port=args.port,
            config_path=args.config,
            print_config=args.print_config,
            model_url=args.model_url,
            model_startup_timeout=args.model_startup_timeout,
        )
    from ._demo import main as demo

    return demo()


if __name__ == "__main__":
    sys.exit(main())
