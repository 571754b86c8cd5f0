"""The engine of ``fanout run``: JSONL lines in, the client, the journal, JSONL lines out.

No user interface here (that is ``_cli``). Three tasks share one task group:

* the *reader* turns input lines into requests, lazily, as the dispatcher asks
  for them (so memory does not grow with the input): it skips what the journal
  says is done or already sent, claims each new line's ``id`` in the journal
  (a duplicate is a per-line rejection), and sends unparseable lines straight
  to the writer;
* the *consumer* reads the client's outcome stream;
* the *writer* batches outcomes, records them in the journal and appends their
  lines to the output, exactly once (see ``_journal``).

Without ``--journal`` a temporary journal still finds duplicate ids, on disk.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import aclosing, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO, cast

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

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
)
from ._exceptions import ConfigError, JournalError, unwrap_task_errors
from ._journal import ACCEPTED, DONE, READ, SENDING, Journal, JournalRow, Outstanding
from ._jsonl import LineDefaults, format_outcome, parse_line
from ._models import Expired, InferenceRequest, Outcome, Rejected, Route, Submission
from ._payload import Invalid, choose_route
from ._runner import Client, ReportBuilder, RunReport, _open

__all__ = ["Batch", "BatchOptions", "BatchResult", "Progress", "count_lines"]

_CHUNK_LINES = 256
_CHUNK_BYTES = 1 << 20
_WRITE_BATCH = 512
_DEFAULT_RECONCILE_AFTER = 30.0
_STOP_DRAIN_SECONDS = 5.0
_STOP_QUIET_SECONDS = 0.3
_IN_DOUBT = (
    "in doubt: an earlier run stopped while sending this request and no notification arrived in time; "
    "it may never have reached the endpoint, and it was not sent again (send it again if needed)"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchOptions:
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
    resume_wait: float | None = None
    """On resume, how long a request sent by the earlier run waits for its notification before the
    fallback: an S3 lookup when it was accepted, ``expired`` when it is in doubt. ``None``: S3
    after 30 seconds, and in-doubt requests wait until their own deadline."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """A snapshot for the progress display."""

    read: int
    submitted: int
    accepted: int
    completed: Mapping[str, int]
    throttles: int
    current_limit: int
    outstanding: int
    earlier: int
    """Lines done by earlier runs of this journal (skipped now)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchResult:
    report: RunReport
    """This run's outcomes."""
    stopped: bool
    """The run stopped early on request; the journal (if any) keeps the rest."""
    statuses: Mapping[str, int]
    """Outcomes by status over every run of the journal (just this run's without one)."""
    earlier: int
    resumed: int
    """Requests sent by an earlier run that this run tracked again."""


class Batch:
    """One ``fanout run``. ``await batch.run(stop=event)``; ``batch.progress()`` meanwhile."""

    def __init__(self, options: BatchOptions, *, session: Any = None) -> None:
        if options.journal is not None and options.output == "-":
            raise ConfigError(
                "--journal needs an output file, not standard output: on resume it repairs the "
                "output's last lines"
            )
        self.options = options
        self._session = session
        self._client: Client | None = None
        self._lines: dict[str, tuple[int, int]] = {}
        self._resumed: dict[str, tuple[int, int]] = {}
        self._in_doubt: set[str] = set()
        self._read = 0
        self._submitted = 0
        self._earlier = 0
        self._parse_rejected = 0
        self._consumed = 0
        self.accepted_any = False
        """Whether anything reached the endpoint (this run, or an earlier one being resumed)."""

    # -- public --------------------------------------------------------------------------------------

    def progress(self) -> Progress:
        client = self._client
        if client is None:
            return Progress(
                read=self._read,
                submitted=self._submitted,
                accepted=0,
                completed={},
                throttles=0,
                current_limit=self.options.limits.max_in_flight,
                outstanding=0,
                earlier=self._earlier,
            )
        stats = client.statistics()
        completed = dict(stats.completed)
        if self._parse_rejected:
            completed["rejected"] = completed.get("rejected", 0) + self._parse_rejected
        return Progress(
            read=self._read,
            submitted=self._submitted,
            accepted=stats.dispatcher.accepted,
            completed=completed,
            throttles=stats.dispatcher.throttles,
            current_limit=stats.dispatcher.current_limit,
            outstanding=stats.outstanding,
            earlier=self._earlier,
        )

    async def run(self, *, stop: anyio.Event | None = None) -> BatchResult:
        """Run to the end, or until ``stop`` is set: then stop reading, let the invokes on the wire
        finish, and (with a journal) leave the accepted ones to the next run; without one, wait for
        their outcomes."""
        stop = stop if stop is not None else anyio.Event()
        options = self.options
        journal = self._open_journal()
        try:
            with self._open_output(journal) as output, self._open_input() as source:
                journal.attach_output(output)
                earlier = journal.statuses() if journal.resumed else {}
                self._earlier = sum(earlier.values())
                resumed = self._resume(journal.outstanding() if journal.resumed else ())
                tracking = self._tracking(journal.resumed)
                observer = _JournalObserver(journal, self)
                async with _open(
                    endpoint_name=options.endpoint_name,
                    tracking=tracking,
                    limits=options.limits,
                    retry=options.retry,
                    payload=options.payload,
                    staging=options.staging,
                    fetch=options.fetch,
                    session=self._session,
                    observer=observer,
                ) as client:
                    self._client = client
                    report = ReportBuilder(client)
                    stopped = await self._pump(client, journal, source, resumed, report, stop)
                    result = report.build()
            statuses = dict(earlier)
            for status, count in result.by_status.items():
                statuses[status] = statuses.get(status, 0) + count
            return BatchResult(
                report=result,
                stopped=stopped,
                statuses={status: count for status, count in statuses.items() if count},
                earlier=self._earlier,
                resumed=len(resumed),
            )
        finally:
            journal.close()

    # -- opening ---------------------------------------------------------------------------------

    def _open_journal(self) -> Journal:
        options = self.options
        if options.journal is None:
            return Journal.temporary()
        fingerprint = {
            "endpoint_name": options.endpoint_name,
            "input": options.input if options.input == "-" else os.path.abspath(options.input),
            "output": os.path.abspath(options.output),
        }
        return Journal.open(options.journal, fingerprint=fingerprint)

    @contextmanager
    def _open_output(self, journal: Journal) -> Iterator[BinaryIO]:
        path = self.options.output
        if path == "-":
            yield sys.stdout.buffer
            return
        mode = "r+b" if journal.resumed and os.path.exists(path) else "w+b"
        try:
            output = cast(BinaryIO, open(path, mode))  # noqa: SIM115 - closed below
        except OSError as exc:
            raise ConfigError(f"cannot write the output {path!r}: {exc.strerror}") from exc
        with output:
            yield output

    @contextmanager
    def _open_input(self) -> Iterator[BinaryIO]:
        path = self.options.input
        if path == "-":
            yield sys.stdin.buffer
            return
        try:
            source = open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"cannot read the input {path!r}: {exc.strerror}") from exc
        with source:
            yield source

    def _resume(self, outstanding: Iterable[Outstanding]) -> list[Submission]:
        wait = self.options.resume_wait
        now = time.time()
        submissions = []
        for item in outstanding:
            submission = item.submission
            if item.in_doubt and wait is not None:
                submission = replace(submission, deadline=min(submission.deadline, now + wait))
            self._resumed[submission.inference_id] = (item.line, item.crc)
            if item.in_doubt:
                self._in_doubt.add(submission.inference_id)
            submissions.append(submission)
        if submissions:
            self.accepted_any = True
        return submissions

    def _tracking(self, resuming: bool) -> Tracking:
        tracking = self.options.tracking
        if resuming and isinstance(tracking, SqsTracking):
            # The earlier run may have deleted a notification whose outcome it never wrote down, and
            # its unfinished long polls may still take a few new ones (SQS hides a message received
            # by a poll whose client is gone for the visibility timeout): look in S3 as well.
            return HybridTracking(
                queue_url=tracking.queue_url,
                reconcile_after=self.options.resume_wait or _DEFAULT_RECONCILE_AFTER,
                sqs=tracking,
                s3=S3Tracking(mode="head", grace_period=tracking.grace_period),
            )
        return tracking

    # -- the three tasks ---------------------------------------------------------------------------

    async def _pump(
        self,
        client: Client,
        journal: Journal,
        source: BinaryIO,
        resumed: list[Submission],
        report: ReportBuilder,
        stop: anyio.Event,
    ) -> bool:
        send, receive = anyio.create_memory_object_stream[tuple[int, int, Outcome]](_WRITE_BATCH)
        fed = anyio.Event()
        watcher = anyio.CancelScope()

        async def leave_when_fed(consuming: anyio.CancelScope) -> None:
            # With a journal a stop does not wait for outcomes: once nothing is on the wire, leave.
            # First write down the outcomes already received: the tracker has deleted (or is about
            # to delete) their notifications, so the next run could only find them in S3.
            with watcher:
                await stop.wait()
                await fed.wait()
                with anyio.move_on_after(_STOP_DRAIN_SECONDS):
                    seen = -1
                    while seen != self._consumed or client.statistics().tracker.buffered:
                        seen = self._consumed
                        await anyio.sleep(_STOP_QUIET_SECONDS)
                consuming.cancel()

        with unwrap_task_errors():
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._writer, journal, receive, report)
                try:
                    with anyio.CancelScope() as consuming:
                        if self.options.journal is not None:
                            tg.start_soon(leave_when_fed, consuming)
                        requests = self._requests(journal, source, send, stop)
                        async with aclosing(client._map(requests, resume=resumed, fed=fed)) as outcomes:
                            async for outcome in outcomes:
                                self._consumed += 1
                                located = self._locate(outcome)
                                await send.send((*located, self._explain(outcome)))
                finally:
                    watcher.cancel()
                    # The writer drains what is queued, then ends.
                    send.close()
        return stop.is_set()

    def _explain(self, outcome: Outcome) -> Outcome:
        if isinstance(outcome, Expired) and outcome.inference_id in self._in_doubt:
            return replace(outcome, failure_reason=_IN_DOUBT)
        return outcome

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
        journal: Journal,
        source: BinaryIO,
        rejected: MemoryObjectSendStream[tuple[int, int, Outcome]],
        stop: anyio.Event,
    ) -> AsyncIterator[InferenceRequest]:
        options = self.options
        rows = journal.rows()
        row: JournalRow | None = next(rows, None)
        number = 0
        while not stop.is_set():
            chunk = await anyio.to_thread.run_sync(_read_chunk, source, abandon_on_cancel=True)
            if not chunk:
                return
            for raw in chunk:
                number += 1
                if stop.is_set():
                    return
                raw = raw.rstrip(b"\r\n")
                if not raw.strip():
                    continue
                self._read += 1
                crc = zlib.crc32(raw)
                while row is not None and row.line < number:
                    row = next(rows, None)
                known = row if row is not None and row.line == number else None
                if known is not None:
                    if known.crc != crc:
                        raise JournalError(
                            f"line {number} of the input is not the line the journal recorded; "
                            "the input changed since the earlier run"
                        )
                    if known.state in (DONE, SENDING, ACCEPTED):
                        continue
                parsed = parse_line(raw, number, options.defaults, now=time.time())
                if isinstance(parsed, Rejected):
                    self._parse_rejected += 1
                    await rejected.send((number, crc, parsed))
                    continue
                assert parsed.id is not None
                if known is not None and known.state == READ and known.inference_id is not None:
                    inference_id = known.inference_id
                else:
                    inference_id = parsed.inference_id or str(uuid.uuid4())
                    conflict = journal.claim(
                        line=number,
                        crc=crc,
                        id=parsed.id,
                        inference_id=inference_id,
                        route=self._expected_route(parsed),
                    )
                    if conflict is not None:
                        self._parse_rejected += 1
                        duplicate = Rejected(
                            reason=f"line {number}: {conflict}",
                            id=parsed.id,
                            inference_id=parsed.inference_id,
                            line=number,
                            completed_at=time.time(),
                        )
                        await rejected.send((number, crc, duplicate))
                        continue
                self._lines[parsed.id] = (number, crc)
                self._submitted += 1
                yield replace(parsed, inference_id=inference_id)

    def _expected_route(self, request: InferenceRequest) -> Route | None:
        if request.body is None:
            return "s3"
        chosen = choose_route(
            self.options.payload, len(request.body), staging=self.options.staging is not None
        )
        return None if isinstance(chosen, Invalid) else chosen

    async def _writer(
        self,
        journal: Journal,
        receive: MemoryObjectReceiveStream[tuple[int, int, Outcome]],
        report: ReportBuilder,
    ) -> None:
        async with receive:
            async for first in receive:
                batch = [first]
                while len(batch) < _WRITE_BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                records = []
                for line, crc, outcome in batch:
                    report.add(outcome)
                    records.append((line, crc, outcome.status, format_outcome(outcome)))
                journal.write(records)


class _JournalObserver:
    def __init__(self, journal: Journal, batch: Batch) -> None:
        self._journal = journal
        self._batch = batch

    def expecting(self, inference_id: str, deadline: float) -> None:
        self._journal.mark_sending(inference_id, deadline, time.time())

    def accepted(self, submission: Submission) -> None:
        self._batch.accepted_any = True
        self._journal.mark_accepted(submission)


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
