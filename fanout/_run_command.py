"""The engine of ``fanout run``: JSONL lines in, the public client, the journal, JSONL lines out.

No user interface here (that is ``_cli``). Inside ``RunCommand.run`` these tasks share one task
group:

* the *reader* turns input lines into requests, lazily, as the dispatcher asks for them (so
  memory does not grow with the input): it skips what the journal says is done or accepted, claims
  each new line's ``id`` in the journal (a duplicate is a per-line rejection), and sends lines
  that cannot be requests straight to the writer;
* two *consumers*: the outcomes of ``client.map`` (this run's requests), and of
  ``client.as_completed`` (the requests an earlier run left accepted, followed with
  ``client.track``);
* the *writer* batches outcomes, records them in the journal and appends their lines to the
  output, exactly once (see ``_journal``), and only then acknowledges them, so a notification
  leaves the SQS queue only once its line is durable;
* the journal's *flusher* (``JournalWorker.run``): every SQLite call runs in a worker thread, and
  the SENDING marks of concurrent sends share one commit.

Nothing is written before the start-up checks pass: the paths are distinct files (checked
first), the journal is locked, the client checked region, credentials, queue and staging bucket,
and the endpoint proved to exist by accepting a request (or nothing needed sending). Until then
the writer holds the outcomes back, and a configuration error leaves an earlier output untouched.

**Requests in doubt** (sent, but no 202 was recorded: a run killed mid-send, or a connection lost
after sending) are sent again under the same inference id by default: exactly-once output,
at-least-once processing. With ``at_most_once`` they are tracked instead, for
``RetryPolicy.in_doubt_wait`` seconds (on resume with SQS, at least the visibility timeout plus a
long poll, since a killed run's receives hide messages that long), then reported ``expired``.

Without ``--journal`` a temporary journal still finds duplicate ids, on disk.

**``--rerun EARLIER``** (``_rerun``): before the journal is opened, the earlier output and the input
are read and matched (a mismatch is a ``ConfigError``, nothing written); the reader then skips every
line that is not selected, so an earlier success is never sent, and each selected line is claimed
with a new inference id, so a late notification of its earlier attempt is unknown to this run. The
journal's fingerprint names the earlier output and its sha256. Standard input is copied to a
temporary file first, since it is read twice.

**``--check``** (``_check``) calls ``check_input``: the same reader on a temporary journal, then the
dispatcher's pure planning of each request, with nothing sent and nothing written.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO, cast

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._client import Client, open_client
from ._config import (
    DEFAULT_LIMITS,
    DEFAULT_RETRY,
    HybridTracking,
    Limits,
    PayloadMode,
    RetryPolicy,
    S3Tracking,
    SqsTracking,
    Staging,
    Tracking,
    Workers,
)
from ._exceptions import ConfigError, CredentialsError, EndpointNotFound, JournalError, unwrap_task_errors
from ._journal import ACCEPTED, DONE, SENDING, Claim, Journal, JournalRow, JournalWorker, Outstanding
from ._jsonl import LineDefaults, format_outcome, parse_line
from ._models import (
    IN_DOUBT_REASON,
    Expired,
    InferenceRequest,
    Outcome,
    Rejected,
    Route,
    RunReport,
    Submission,
)
from ._paths import check_distinct
from ._payload import Invalid, choose_route, plan_request, validate_request
from ._report import ReportBuilder
from ._rerun import RerunSelection, select_lines

__all__ = ["InputCheck", "LineProblem", "RunCommand", "RunOptions", "RunProgress", "RunResult", "count_lines"]

log = logging.getLogger("fanout.run")

_CHUNK_LINES = 256
_CHUNK_BYTES = 1 << 20
_WRITE_BATCH = 512
_RECONCILE_AFTER = 30.0
_STOP_DRAIN_SECONDS = 5.0
_STOP_QUIET_SECONDS = 0.3
_HOLD_BEFORE_READY = 10_000
"""Outcomes held back before the endpoint proved to exist; past this many, the output is opened."""
_FLOOR_MARGIN = 5.0

_Located = tuple[int, int, Outcome]
"""An outcome with its input line number and the line's crc32."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """Everything ``fanout run`` was asked to do."""

    input: str
    """A path, or ``-`` for standard input."""
    output: str
    """A path, or ``-`` for standard output."""
    endpoint_name: str
    tracking: Tracking
    limits: Limits = DEFAULT_LIMITS
    retry: RetryPolicy = DEFAULT_RETRY
    payload: PayloadMode = "auto"
    staging: Staging | None = None
    fetch: bool = True
    defaults: LineDefaults = field(default_factory=LineDefaults)
    journal: str | None = None
    fast_path: bool = True
    workers: Workers | None = None
    """Send from worker processes or Ray actors (``--workers``, ``--ray``); ``None``: this process."""
    rerun: tuple[str, ...] = ()
    """Earlier outputs of the same input (``--rerun``): only the lines they do not show succeeded
    are run (see ``_rerun``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunProgress:
    """A snapshot for the progress display."""

    read: int
    submitted: int
    accepted: int
    completed: Mapping[str, int]
    throttles: int
    current_limit: int
    """The in-flight cap the adaptive controller allows now (``--max-in-flight`` at most)."""
    outstanding: int
    earlier: int
    """Lines done by earlier runs of this journal (skipped now)."""
    resends: int = 0
    in_doubt: int = 0
    """Requests in doubt whose notification is awaited now (see ``in_doubt_until``)."""
    in_doubt_until: float | None = None
    """When the last of them is given up on (POSIX time)."""
    in_flight: int = 0
    """InvokeEndpointAsync calls on the wire now."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    report: RunReport
    """This run's outcomes."""
    stopped: bool
    """The run stopped early on request; the journal (if any) keeps the rest."""
    statuses: Mapping[str, int]
    """Outcomes by status over every run of the journal (just this run's without one)."""
    earlier: int
    resumed: int
    """Requests sent by an earlier run that this run tracked again."""
    in_doubt_wait: float | None = None
    """How long requests in doubt were awaited, when this run awaited any."""
    in_doubt_floor: float | None = None
    """Set when ``in_doubt_wait`` was raised above the asked value, to this minimum."""
    workers: int = 1
    """How many processes sent the requests: 1 is ``fanout run`` itself, more are worker processes
    (``--workers``) or Ray actors (``--ray``)."""
    rerun: RerunSelection | None = None
    """With ``--rerun``: the lines selected from the earlier output."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LineProblem:
    """An input line that a run would reject, and why (worded as its ``rejected`` record)."""

    line: int
    id: str | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InputCheck:
    """What ``RunCommand.check_input`` found: every line read as a run reads it, nothing sent."""

    lines: int
    """Non-blank lines read (with ``--rerun``: the selected ones)."""
    requests: int
    """Lines that would be sent."""
    inline: int
    s3: int
    """Requests that would go through S3: staged by fanout, or given as ``input_location``."""
    problems: int
    """Lines that would be rejected."""
    first_problems: Sequence[LineProblem]
    """The first few of them, in line order."""
    rerun: RerunSelection | None = None


class RunCommand:
    """One ``fanout run``. ``await command.run(stop=event)``; ``command.progress()`` meanwhile."""

    def __init__(
        self, options: RunOptions, *, session: Any = None, registry: Any = None, writes: bool = True
    ) -> None:
        """``writes=False``: the command only checks its input (``check_input``); ``options.output``
        is not used, and ``run`` refuses to start."""
        if writes and options.journal is not None and options.output == "-":
            raise ConfigError(
                "--journal needs an output file, not standard output: on resume it repairs the "
                "output's last lines"
            )
        if "-" in options.rerun:
            raise ConfigError("--rerun needs the earlier output's file, not standard input")
        for earlier in options.rerun or (None,):
            check_distinct(
                {
                    "the input": options.input,
                    "-o/--output": options.output if writes else None,
                    "--journal": options.journal,
                    "--rerun": earlier,
                }
            )
        self.options = options
        self._writes = writes
        self._session = session
        self._registry = registry
        """A prometheus_client registry for the client's metrics (``open_client(registry=...)``)."""
        self._client: Client | None = None
        self._lines: dict[str, tuple[int, int]] = {}
        self._resumed: dict[str, tuple[int, int]] = {}
        self._awaiting: dict[str, float] = {}
        """Requests in doubt being awaited, with their deadlines."""
        self._resent: set[str] = set()
        """Requests in doubt from an earlier run that this run sends again."""
        self._in_doubt_wait = options.retry.in_doubt_wait
        self._in_doubt_floor: float | None = None
        self._in_doubt_awaited = 0
        self._ready = anyio.Event()
        """Set once nothing stands in the way of writing the output (see the module docstring)."""
        self._read_all = False
        self._writer_done = anyio.Event()
        self._read = 0
        self._submitted = 0
        self._earlier = 0
        self._parse_rejected = 0
        self._consumed = 0
        self.accepted_any = False
        """Whether anything reached the endpoint (this run, or an earlier one being resumed)."""
        self.partial: RunResult | None = None
        """When the run stopped with a run-level error: what it finished before."""
        self.selection: RerunSelection | None = None
        """With ``--rerun``: the lines to run, once the run has read the earlier output."""
        self._spool: BinaryIO | None = None
        """Standard input copied to a temporary file, for ``--rerun``, which reads the input twice."""

    # -- public --------------------------------------------------------------------------------------

    def progress(self) -> RunProgress:
        client = self._client
        limits = self.options.limits
        stats = client.statistics() if client is not None else None
        completed = dict(stats.completed) if stats is not None else {}
        if self._parse_rejected:
            completed["rejected"] = completed.get("rejected", 0) + self._parse_rejected
        return RunProgress(
            read=self._read,
            submitted=self._submitted,
            accepted=stats.dispatcher.accepted if stats is not None else 0,
            completed=completed,
            throttles=stats.dispatcher.throttles if stats is not None else 0,
            current_limit=stats.dispatcher.current_limit if stats is not None else limits.max_in_flight,
            outstanding=stats.outstanding if stats is not None else 0,
            earlier=self._earlier,
            resends=(stats.dispatcher.resends if stats is not None else 0) + len(self._resent),
            in_doubt=len(self._awaiting),
            in_doubt_until=max(self._awaiting.values(), default=None),
            in_flight=stats.dispatcher.in_flight if stats is not None else 0,
        )

    async def run(self, *, stop: anyio.Event | None = None) -> RunResult:
        """Run to the end, or until ``stop`` is set: then stop reading, let the invokes on the wire
        finish, and (with a journal) leave the accepted ones to the next run; without one, wait for
        their outcomes."""
        if not self._writes:
            raise ConfigError("-o/--output is needed: where the outcomes go (only --check goes without)")
        self.check_output_writable()
        with self._spooled():
            # Before the journal exists: a --rerun that does not match the input creates nothing.
            await self._select()
            return await self._run(stop if stop is not None else anyio.Event())

    async def check_input(self, *, keep: int = 20) -> InputCheck:
        """Read every input line as a run reads it (the same reader: parsing, duplicate ids found in a
        temporary journal, the ``--rerun`` selection), and plan each request as the dispatcher does
        (validation, and the inline or S3 route), sending nothing and writing nothing. ``keep``: how
        many problems to keep, in line order."""
        with self._spooled():
            await self._select()
            journal = await anyio.to_thread.run_sync(Journal.temporary)
            try:
                return await self._check_lines(JournalWorker(journal), keep)
            finally:
                journal.close()

    async def _check_lines(self, worker: JournalWorker, keep: int) -> InputCheck:
        options = self.options
        staging = options.staging is not None
        found: list[LineProblem] = []
        problems = 0
        routes = {"inline": 0, "s3": 0}

        def problem(line: int, id: str | None, reason: str) -> None:
            nonlocal problems
            problems += 1
            if len(found) < keep or (found and line < found[-1].line):
                prefix = f"line {line}: "
                found.append(LineProblem(line=line, id=id, reason=reason.removeprefix(prefix)))
                found.sort(key=lambda item: item.line)
                del found[keep:]

        async def collect(receive: MemoryObjectReceiveStream[_Located]) -> None:
            async with receive:
                async for line, _, rejected in receive:
                    assert isinstance(rejected, Rejected)
                    problem(line, rejected.id, rejected.reason)

        send, receive = anyio.create_memory_object_stream[_Located](_WRITE_BATCH)
        with self._open_input() as source:
            async with anyio.create_task_group() as tg:
                tg.start_soon(collect, receive)
                async with send:
                    async for request in self._read_requests(worker, source, send, anyio.Event()):
                        assert request.id is not None and request.inference_id is not None
                        line, _ = self._lines.pop(request.id)
                        invalid = validate_request(request)
                        plan = invalid or plan_request(
                            request,
                            request.body,
                            inference_id=request.inference_id,
                            mode=options.payload,
                            staging=staging,
                        )
                        if isinstance(plan, Invalid):
                            problem(line, request.id, plan.reason)
                        else:
                            routes[plan.route] += 1
        return InputCheck(
            lines=self._read,
            requests=sum(routes.values()),
            inline=routes["inline"],
            s3=routes["s3"],
            problems=problems,
            first_problems=tuple(found),
            rerun=self.selection,
        )

    @contextmanager
    def _spooled(self) -> Iterator[None]:
        try:
            yield
        finally:
            if self._spool is not None:
                self._spool.close()
                self._spool = None

    async def _select(self) -> None:
        """With ``--rerun``: read the earlier output and the input, and choose the lines to run."""
        options = self.options
        if not options.rerun or self.selection is not None:
            return
        rerun = options.rerun
        if options.input == "-":
            # Closed by _spooled when the run ends.
            spool = self._spool = cast(BinaryIO, tempfile.TemporaryFile(prefix="fanout-input-"))  # noqa: SIM115
            await anyio.to_thread.run_sync(shutil.copyfileobj, sys.stdin.buffer, spool)
            self.selection = await anyio.to_thread.run_sync(
                lambda: select_lines(spool, rerun, input_name="standard input")
            )
        else:

            def select() -> RerunSelection:
                with self._open_input() as source:
                    return select_lines(source, rerun, input_name=options.input)

            self.selection = await anyio.to_thread.run_sync(select)
        log.info("%s", self.selection.describe())

    async def _run(self, stop: anyio.Event) -> RunResult:
        options = self.options
        journal = await anyio.to_thread.run_sync(self._open_journal)
        worker = JournalWorker(journal)
        output = _Output(options.output, worker)
        failure: BaseException | None = None
        report: ReportBuilder | None = None
        earlier: dict[str, int] = {}
        resumed: list[Submission] = []
        workers = 1
        try:
            with output, self._open_input() as source:
                if journal.resumed:
                    # An earlier run's output: checked and repaired before anything else happens.
                    await output.open()
                earlier = await worker.call(journal.statuses) if journal.resumed else {}
                self._earlier = sum(earlier.values())
                log.info(
                    "run: %s to endpoint %s, output %s%s",
                    options.input,
                    options.endpoint_name,
                    options.output,
                    f", journal {options.journal}" if options.journal else "",
                )
                tracking = self._tracking(journal.resumed)
                outstanding: list[Outstanding] = (
                    await worker.call(list, journal.outstanding()) if journal.resumed else []
                )
                resumed = self._resume(outstanding, tracking)
                if journal.resumed:
                    log.info(
                        "resuming: %d lines done by earlier runs, %d requests of theirs still outstanding",
                        self._earlier,
                        len(outstanding),
                    )
                async with open_client(
                    endpoint_name=options.endpoint_name,
                    tracking=tracking,
                    limits=options.limits,
                    retry=options.retry,
                    payload=options.payload,
                    staging=options.staging,
                    fetch=options.fetch,
                    session=self._session,
                    observer=_JournalObserver(worker, self),
                    acknowledge="manual",
                    fast_path=options.fast_path,
                    workers=options.workers,
                    registry=self._registry,
                ) as client:
                    self._client = client
                    workers = client.workers
                    report = ReportBuilder(client.statistics)
                    stopped = await self._pump(client, worker, output, source, resumed, report, stop)
                    result = self._built(report)
                    log.info(
                        "finished: %d outcomes in %.1f s (%s)%s",
                        result.total,
                        result.elapsed,
                        ", ".join(f"{count} {status}" for status, count in result.by_status.items() if count),
                        ", stopped early" if stopped else "",
                    )
                await worker.flush()
            return self._result(
                result, stopped=stopped, earlier=earlier, resumed=len(resumed), workers=workers
            )
        except BaseException as exc:
            failure = exc
            if report is not None and isinstance(exc, Exception):
                # What finished before the run-level error, for the summary the user still gets.
                self.partial = self._result(
                    self._built(report), stopped=True, earlier=earlier, resumed=len(resumed), workers=workers
                )
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await worker.flush()
            discard = failure is not None and self._nothing_sent(journal, output, failure)
            journal.close()
            if discard and options.journal is not None:
                # A journal this run created for a run that sent nothing (say, a mistyped endpoint)
                # would only stand in the way of the corrected command: its fingerprint differs.
                Journal.remove(options.journal)

    def _built(self, report: ReportBuilder) -> RunReport:
        report.extra_resends = len(self._resent)
        return report.build()

    def _result(
        self, report: RunReport, *, stopped: bool, earlier: Mapping[str, int], resumed: int, workers: int
    ) -> RunResult:
        statuses = dict(earlier)
        for status, count in report.by_status.items():
            statuses[status] = statuses.get(status, 0) + count
        return RunResult(
            report=report,
            stopped=stopped,
            statuses={status: count for status, count in statuses.items() if count},
            earlier=self._earlier,
            resumed=resumed,
            in_doubt_wait=self._in_doubt_wait if self._in_doubt_awaited else None,
            in_doubt_floor=self._in_doubt_floor,
            workers=workers,
            rerun=self.selection,
        )

    # -- opening ---------------------------------------------------------------------------------

    def _nothing_sent(self, journal: Journal, output: _Output, failure: BaseException) -> bool:
        """Whether this run created the journal and nothing it records can have reached the endpoint."""
        if self.options.journal is None or journal.resumed or output.opened or self.accepted_any:
            return False
        if isinstance(failure, EndpointNotFound | CredentialsError):
            return True  # whatever was on the wire was refused like the request that said so
        rows = journal.statistics()
        return not rows.sending and not rows.accepted

    def _open_journal(self) -> Journal:
        options = self.options
        if options.journal is None:
            return Journal.temporary()
        fingerprint = {
            "endpoint_name": options.endpoint_name,
            "input": options.input if options.input == "-" else os.path.abspath(options.input),
            "output": os.path.abspath(options.output),
        }
        if options.rerun and self.selection is not None:
            # A rerun's journal is not a plain run's, nor a rerun's of other earlier outputs.
            fingerprint["rerun"] = " + ".join(os.path.abspath(path) for path in options.rerun)
            fingerprint["rerun_sha256"] = self.selection.digest
        return Journal.open(options.journal, fingerprint=fingerprint)

    def check_output_writable(self) -> None:
        """Fail now, not once the run is under way, when the output cannot be written."""
        path = self.options.output
        if not self._writes or path == "-":
            return
        if os.path.isdir(path):
            raise ConfigError(f"the output {path!r} is a directory")
        target = path if os.path.exists(path) else (os.path.dirname(os.path.abspath(path)) or ".")
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise ConfigError(f"cannot write the output {path!r}: its folder does not exist")
        if not os.access(target, os.W_OK):
            raise ConfigError(f"cannot write the output {path!r}: permission denied")

    @contextmanager
    def _open_input(self) -> Iterator[BinaryIO]:
        path = self.options.input
        if self._spool is not None:
            self._spool.seek(0)
            yield self._spool
            return
        if path == "-":
            yield sys.stdin.buffer
            return
        try:
            source = open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"cannot read the input {path!r}: {exc.strerror}") from exc
        with source:
            yield source

    def _resume(self, outstanding: Sequence[Outstanding], tracking: Tracking) -> list[Submission]:
        """The submissions of an earlier run to track again.

        Requests in doubt are sent again when their line is read, unless ``at_most_once``: then
        they are tracked for the in-doubt wait, which with SQS is at least the visibility timeout
        plus a long poll, because a killed run's receives keep their messages hidden that long.
        """
        at_most_once = self.options.retry.at_most_once
        sqs = tracking.sqs if isinstance(tracking, HybridTracking) else tracking
        if at_most_once and isinstance(sqs, SqsTracking):
            floor = sqs.visibility_timeout + sqs.wait_time_seconds + _FLOOR_MARGIN
            if self._in_doubt_wait < floor:
                self._in_doubt_wait = self._in_doubt_floor = floor
        now = time.time()
        submissions = []
        for item in outstanding:
            self.accepted_any = True
            if item.in_doubt and not at_most_once:
                continue
            submission = item.submission
            if item.in_doubt:
                deadline = now + self._in_doubt_wait
                submission = replace(submission, deadline=deadline, in_doubt=True)
                self._awaiting[submission.inference_id] = deadline
                self._in_doubt_awaited += 1
            self._resumed[submission.inference_id] = (item.line, item.crc)
            submissions.append(submission)
        return submissions

    def _tracking(self, resuming: bool) -> Tracking:
        tracking = self.options.tracking
        if resuming and isinstance(tracking, SqsTracking):
            # Accepted requests of the earlier run whose notification that run took but never
            # acknowledged reappear only after the visibility timeout; S3 may have them sooner.
            return HybridTracking(
                queue_url=tracking.queue_url,
                reconcile_after=min(self._in_doubt_wait, _RECONCILE_AFTER),
                sqs=tracking,
                s3=S3Tracking(mode="head", grace_period=tracking.grace_period),
            )
        return tracking

    # -- the tasks -------------------------------------------------------------------------------

    async def _pump(
        self,
        client: Client,
        worker: JournalWorker,
        output: _Output,
        source: BinaryIO,
        resumed: list[Submission],
        report: ReportBuilder,
        stop: anyio.Event,
    ) -> bool:
        send, receive = anyio.create_memory_object_stream[_Located](_WRITE_BATCH)
        handles = [client.track(submission) for submission in resumed]
        consuming = [anyio.CancelScope(), anyio.CancelScope()]

        async def follow_resumed(send: MemoryObjectSendStream[_Located]) -> None:
            with consuming[1]:
                async with send:
                    await self._consume(client.as_completed(handles), send)

        async def leave_when_sent() -> None:
            # With a journal a stop does not wait for outcomes: once nothing is on the wire, leave.
            # First write down the outcomes already received, so the next run need not wait for
            # their notifications to become visible again.
            await stop.wait()
            while not self._read_all or client.statistics().dispatcher.submitting:
                await anyio.sleep(0.05)
            with anyio.move_on_after(_STOP_DRAIN_SECONDS):
                seen = -1
                while seen != self._consumed or client.statistics().tracker.buffered:
                    seen = self._consumed
                    await anyio.sleep(_STOP_QUIET_SECONDS)
            for scope in consuming:
                scope.cancel()

        with unwrap_task_errors():
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                tg.start_soon(self._writer, client, worker, output, receive, report)
                try:
                    async with send:
                        if self.options.journal is not None:
                            tg.start_soon(leave_when_sent)
                        tg.start_soon(follow_resumed, send.clone())
                        with consuming[0]:
                            requests = self._requests(worker, source, send, stop)
                            async with client.map(requests) as outcomes:
                                await self._consume(outcomes, send)
                    # Finished (or stopped) without a run-level error: what waits may be written.
                    self._ready.set()
                except BaseException:
                    for scope in consuming:
                        scope.cancel()
                    raise
                # The writer drains what is queued, then ends; the flusher is not needed after.
                await self._writer_done.wait()
                tg.cancel_scope.cancel()
        return stop.is_set()

    async def _consume(
        self, outcomes: AsyncIterator[Outcome], send: MemoryObjectSendStream[_Located]
    ) -> None:
        async for outcome in outcomes:
            self._consumed += 1
            await send.send((*self._locate(outcome), self._explain(outcome)))

    def _explain(self, outcome: Outcome) -> Outcome:
        """Word an in-doubt expiry in the terms of the command line."""
        awaited = self._awaiting.pop(outcome.inference_id or "", None) is not None
        if awaited and isinstance(outcome, Expired) and outcome.failure_reason == IN_DOUBT_REASON:
            return replace(outcome, failure_reason=self._in_doubt_reason())
        return outcome

    def _in_doubt_reason(self) -> str:
        wait = f"{self._in_doubt_wait:,.0f} s (--resume-wait)"
        if self.options.retry.at_most_once:
            return (
                "in doubt: the invoke may have reached the endpoint (sent, but no 202 was recorded); "
                f"no notification arrived within {wait}, and --at-most-once kept it from being sent "
                "again. Rerun the line if it is safe to process it twice."
            )
        return (
            "in doubt: the invoke may have reached the endpoint (a connection broke after sending), "
            f"retries ran out, and no notification arrived within {wait}"
        )

    def _locate(self, outcome: Outcome) -> tuple[int, int]:
        if outcome.inference_id is not None:
            found = self._resumed.pop(outcome.inference_id, None)
            if found is not None:
                return found
        found = self._lines.pop(outcome.id, None) if outcome.id is not None else None
        if found is None:
            raise AssertionError(f"an outcome for a request this run never read: {outcome!r}")
        return found

    async def _requests(
        self,
        worker: JournalWorker,
        source: BinaryIO,
        rejected: MemoryObjectSendStream[_Located],
        stop: anyio.Event,
    ) -> AsyncIterator[InferenceRequest]:
        try:
            async for request in self._read_requests(worker, source, rejected, stop):
                yield request
        finally:
            self._read_all = True

    async def _read_requests(
        self,
        worker: JournalWorker,
        source: BinaryIO,
        rejected: MemoryObjectSendStream[_Located],
        stop: anyio.Event,
    ) -> AsyncIterator[InferenceRequest]:
        options = self.options
        journal = worker.journal
        resend_in_doubt = not options.retry.at_most_once
        known_rows = _KnownRows(worker)
        selection = self.selection
        number = 0
        while not stop.is_set():
            chunk = await anyio.to_thread.run_sync(_read_chunk, source, abandon_on_cancel=True)
            if not chunk:
                return
            ready: list[tuple[int, int, InferenceRequest | Rejected]] = []
            claims: list[Claim] = []
            for raw in chunk:
                number += 1
                raw = raw.rstrip(b"\r\n")
                if not raw.strip() or (selection is not None and not selection.chooses(number)):
                    continue
                self._read += 1
                crc = zlib.crc32(raw)
                known = await known_rows.at(number)
                if known is not None:
                    if known.crc != crc:
                        raise JournalError(
                            f"line {number} of the input is not the line the journal recorded; "
                            "the input changed since the earlier run"
                        )
                    if known.state in (DONE, ACCEPTED) or (known.state == SENDING and not resend_in_doubt):
                        continue
                parsed = parse_line(raw, number, options.defaults, now=time.time())
                conflict = selection.conflict(number) if selection is not None else None
                if conflict is not None and isinstance(parsed, InferenceRequest):
                    # The earlier run rejected it as a duplicate of a line this rerun skips.
                    parsed = Rejected(
                        reason=f"line {number}: {conflict}",
                        id=parsed.id,
                        line=number,
                        completed_at=time.time(),
                    )
                if isinstance(parsed, Rejected):
                    ready.append((number, crc, parsed))
                    continue
                assert parsed.id is not None
                if known is not None and known.inference_id is not None:
                    inference_id = known.inference_id
                    if known.state == SENDING:
                        # In doubt: sent again under the same id, which the endpoint may run twice.
                        self._resent.add(inference_id)
                else:
                    inference_id = parsed.inference_id or str(uuid.uuid4())
                    route = self._expected_route(parsed)
                    claims.append(Claim(number, crc, parsed.id, inference_id, route))
                ready.append((number, crc, replace(parsed, inference_id=inference_id)))
            conflicts = dict(
                zip(
                    (claim.line for claim in claims),
                    await worker.call(journal.claim_many, claims) if claims else [],
                    strict=True,
                )
            )
            for line, crc, item in ready:
                if isinstance(item, InferenceRequest) and conflicts.get(line) is not None:
                    item = Rejected(
                        reason=f"line {line}: {conflicts[line]}",
                        id=item.id,
                        inference_id=None,
                        line=line,
                        completed_at=time.time(),
                    )
                if isinstance(item, Rejected):
                    self._parse_rejected += 1
                    await rejected.send((line, crc, item))
                    continue
                assert item.id is not None
                self._lines[item.id] = (line, crc)
                self._submitted += 1
                yield item
                if stop.is_set():
                    return

    def _expected_route(self, request: InferenceRequest) -> Route | None:
        if request.body is None:
            return "s3"
        chosen = choose_route(
            self.options.payload, len(request.body), staging=self.options.staging is not None
        )
        return None if isinstance(chosen, Invalid) else chosen

    async def _writer(
        self,
        client: Client,
        worker: JournalWorker,
        output: _Output,
        receive: MemoryObjectReceiveStream[_Located],
        report: ReportBuilder,
    ) -> None:
        held: list[_Located] = []
        try:
            async with receive:
                async for first in receive:
                    batch = [first]
                    while len(batch) < _WRITE_BATCH:
                        try:
                            batch.append(receive.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    held.extend(batch)
                    if self._ready.is_set() or len(held) >= _HOLD_BEFORE_READY:
                        await self._write(client, worker, output, held, report)
                        held = []
            if held and self._ready.is_set():
                await self._write(client, worker, output, held, report)
        finally:
            self._writer_done.set()

    async def _write(
        self,
        client: Client,
        worker: JournalWorker,
        output: _Output,
        batch: list[_Located],
        report: ReportBuilder,
    ) -> None:
        await output.open()
        records = []
        for line, crc, outcome in batch:
            report.add(outcome)
            records.append((line, crc, outcome.status, format_outcome(outcome, line)))
        await worker.write(records)
        # Durable now: the notifications may leave the queue.
        client.acknowledge(*(outcome for _, _, outcome in batch))


class _KnownRows:
    """The journal's rows for the input lines, fetched a page at a time as the reader needs them."""

    def __init__(self, worker: JournalWorker) -> None:
        self._worker = worker
        self._page: list[JournalRow] = []
        self._index = 0
        self._after = 0
        self._done = False

    async def at(self, line: int) -> JournalRow | None:
        while not self._done:
            while self._index < len(self._page) and self._page[self._index].line < line:
                self._index += 1
            if self._index < len(self._page):
                row = self._page[self._index]
                return row if row.line == line else None
            self._page = await self._worker.call(self._worker.journal.rows_page, self._after)
            self._index = 0
            if not self._page:
                self._done = True
            else:
                self._after = self._page[-1].line
        return None


class _Output:
    """The output file, opened only when the first line is written (or a resume repairs it):
    until then an earlier file at that path is left as it was."""

    def __init__(self, path: str, worker: JournalWorker) -> None:
        self._path = path
        self._worker = worker
        self._file: BinaryIO | None = None
        self.opened = False

    async def open(self) -> None:
        if not self.opened:
            self.opened = True
            await self._worker.call(self._open)

    def _open(self) -> None:
        journal = self._worker.journal
        if self._path == "-":
            journal.attach_output(sys.stdout.buffer)
            return
        mode = "r+b" if journal.resumed and os.path.exists(self._path) else "w+b"
        try:
            self._file = cast(BinaryIO, open(self._path, mode))  # noqa: SIM115 - closed in __exit__
        except OSError as exc:
            raise ConfigError(f"cannot write the output {self._path!r}: {exc.strerror}") from exc
        journal.attach_output(self._file)

    def __enter__(self) -> _Output:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()


class _JournalObserver:
    """The client's ``Observer`` for ``fanout run``: each request's progress goes to the journal."""

    def __init__(self, worker: JournalWorker, command: RunCommand) -> None:
        self._worker = worker
        self._command = command

    async def sending(self, inference_id: str, deadline: float) -> None:
        await self._worker.sending(inference_id, deadline, time.time())

    def unsent(self, inference_id: str) -> None:
        if inference_id not in self._command._resent:  # an earlier run's attempt may have arrived
            self._worker.unsent(inference_id)

    def accepted(self, submission: Submission) -> None:
        command = self._command
        command.accepted_any = True
        if submission.in_doubt:
            command._awaiting[submission.inference_id] = submission.deadline
            command._in_doubt_awaited += 1
        else:
            command._ready.set()
        self._worker.accepted(submission)

    def handed_over(self, outcome: Outcome) -> None:
        return None


def _read_chunk(source: BinaryIO) -> list[bytes]:
    lines: list[bytes] = []
    size = 0
    while len(lines) < _CHUNK_LINES and size < _CHUNK_BYTES:
        line = source.readline()
        if not line:
            break
        lines.append(line)
        size += len(line)
    return lines


def count_lines(path: str) -> int | None:
    """The number of non-blank lines of a regular file (for an ETA); ``None`` for anything else."""
    if path == "-" or not os.path.isfile(path):
        return None
    count = 0
    with open(path, "rb") as source:
        for line in source:
            if line.strip():
                count += 1
    return count
