"""The SQLite journal that makes ``fanout run`` resumable after a crash, and its output log.

One row per input line moves through four states::

    READ  ──expect()──►  SENDING  ──202──►  ACCEPTED  ──outcome──►  DONE
      └───────────── rejected before it was sent ─────────────────►  DONE

A rerun with the same journal:

* skips DONE lines (their output line is already in the output file);
* re-registers ACCEPTED lines with the tracker and never sends them again;
* treats SENDING lines as *in doubt*: the process died between marking it and
  recording the 202, so the endpoint may or may not have it. By default the
  line is sent again under the same inference id (whichever copy's notification
  comes first settles it: the output line stays exactly once, the endpoint may
  run it twice); with ``--at-most-once`` it is tracked like an accepted one, its
  notification awaited for a bounded time, then reported ``expired``;
* sends READ lines, which never left the process, with the inference id chosen
  the first time. A request whose attempts all failed to connect is put back to
  READ (``mark_unsent``): it provably never left, so it is not in doubt.

Why SENDING can be trusted: the dispatcher calls ``expect()`` before the first
byte of an invoke leaves, and ``mark_sending`` commits before it returns. A
commit in WAL mode has written the WAL frames to the operating system, so it
survives SIGKILL (``synchronous=NORMAL`` skips the fsync: a power cut may lose
the newest commits, a killed process does not).

**Output, exactly once.** Let L be the concatenation, in ``seq`` order, of every
output line ever committed to the ``output`` table. The output file is always a
prefix of L, because:

1. a batch of outcomes is committed (rows DONE, lines into ``output`` with their
   byte offsets, ``output_end`` advanced) *before* its bytes are written, and the
   bytes are appended in ``seq`` order with nothing else ever written to the file;
2. a killed process leaves a prefix of what it wrote (appends to one file
   descriptor land in order, and the page cache outlives the process);
3. rows leave the ``output`` table only in a transaction that follows the flush
   that wrote them completely.

On resume, every line not in the ``output`` table is in the file. With S the
file's size and the table's lines starting at offsets s1 < s2 < ..., the file is
truncated to the start of the first line that does not end within S, and that
line and all after it are appended again from the table. The file is then
exactly L. Each DONE row put its line into L exactly once (the DONE transition
and the insert are one transaction, and DONE rows never produce another), so
every input line appears exactly once in the output. A file shorter than s1,
longer than L, or whose bytes differ from the table's, is not this journal's
output: that is a ``JournalError``, never a silent repair.

**One run at a time.** ``Journal.open`` takes an exclusive ``flock`` on the
database file for as long as the journal is open; a second ``fanout run`` on the
same journal fails at once with ``JournalError`` instead of corrupting it. The
file is created readable by its owner only (it holds results), and SQLite gives
its WAL files the same mode.

Without ``--journal`` the same class runs on a private temporary database, with
the durability work switched off, only to find duplicate ids in O(1) memory.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, TypeAlias, TypeVar

import anyio
import anyio.to_thread

from ._exceptions import JournalError
from ._models import Route, Submission

__all__ = [
    "ACCEPTED",
    "DONE",
    "READ",
    "SENDING",
    "Accepted",
    "Claim",
    "Journal",
    "JournalRow",
    "JournalStatistics",
    "JournalWorker",
    "Mark",
    "Outstanding",
    "Sending",
    "Unsent",
]

T = TypeVar("T")

READ: Final = 0
SENDING: Final = 1
ACCEPTED: Final = 2
DONE: Final = 3

_SCHEMA_VERSION: Final = "1"
_PAGE: Final = 1_000
_CACHE_KIB: Final = 8_192

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    line INTEGER PRIMARY KEY,
    crc INTEGER NOT NULL,
    id TEXT UNIQUE,
    inference_id TEXT UNIQUE,
    state INTEGER NOT NULL,
    route TEXT,
    input_location TEXT,
    output_location TEXT,
    failure_location TEXT,
    attempts INTEGER,
    submitted_at REAL,
    accepted_at REAL,
    deadline REAL,
    staged INTEGER,
    status TEXT
);
CREATE INDEX IF NOT EXISTS requests_open ON requests (state) WHERE state IN (1, 2);
CREATE TABLE IF NOT EXISTS output (seq INTEGER PRIMARY KEY, start INTEGER NOT NULL, text BLOB NOT NULL);
"""


def _lock(path: Path) -> int:
    """Create the journal file readable by its owner only, and lock it for this process.

    ``flock`` locks belong to the open file description, so SQLite's own POSIX locks on other
    descriptors of the file neither see nor release it; the lock ends when the descriptor is
    closed, or when the process dies.
    """
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise JournalError(f"cannot open the journal {str(path)!r}: {exc.strerror}") from exc
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, as before
        return descriptor
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(descriptor)
        raise JournalError(
            f"the journal {str(path)!r} is in use by another fanout run; wait for it to finish "
            "(or stop it), or give this run its own --journal"
        ) from exc
    return descriptor


def _connect(path: str | os.PathLike[str], *, durable: bool) -> sqlite3.Connection:
    """A connection to the journal at ``path`` with the schema in place, closed again if that fails."""
    # One connection, used by one thread at a time (``JournalWorker``'s lane), from worker threads.
    connection = sqlite3.connect(path, isolation_level="DEFERRED", check_same_thread=False)
    try:
        if durable:
            connection.execute("PRAGMA journal_mode=WAL").fetchone()
            connection.execute("PRAGMA synchronous=NORMAL")
        else:
            connection.execute("PRAGMA journal_mode=OFF")
            connection.execute("PRAGMA synchronous=OFF")
        connection.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        connection.executescript(_SCHEMA)
    except BaseException:
        connection.close()
        raise
    return connection


@dataclass(frozen=True, slots=True)
class Sending:
    """A request is about to be sent: it becomes SENDING (durable before the send)."""

    inference_id: str
    deadline: float
    now: float


@dataclass(frozen=True, slots=True)
class Unsent:
    """A request provably never left: back to READ."""

    inference_id: str


@dataclass(frozen=True, slots=True)
class Accepted:
    """A request was accepted: ACCEPTED with its locations (unless it is in doubt)."""

    submission: Submission


Mark: TypeAlias = Sending | Unsent | Accepted


@dataclass(frozen=True, slots=True)
class Claim:
    """An input line to record as READ (see ``Journal.claim``)."""

    line: int
    crc: int
    id: str
    inference_id: str
    route: Route | None


@dataclass(frozen=True, slots=True)
class JournalRow:
    """What the journal knew about one input line when this run started."""

    line: int
    crc: int
    state: int
    inference_id: str | None


@dataclass(frozen=True, slots=True)
class Outstanding:
    """A line an earlier run sent without recording its outcome."""

    line: int
    crc: int
    submission: Submission
    in_doubt: bool
    """Sent, but its 202 was never recorded: the endpoint may not have it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalStatistics:
    read: int
    sending: int
    accepted: int
    done: int


class Journal:
    """Per-line state of a batch run, and the exactly-once writer of its output file.

    Build it with ``Journal.open(path, fingerprint=...)`` (durable, resumable) or
    ``Journal.temporary()`` (duplicate detection only). Not thread-safe: one
    event loop drives it, and every method is quick and synchronous.
    """

    def __init__(
        self, connection: sqlite3.Connection, *, durable: bool, resumed: bool, lock: int | None = None
    ) -> None:
        self._db = connection
        self._lock = lock
        self._durable = durable
        self.durable = durable
        """Whether it survives the process (a ``--journal``), rather than only finding duplicates."""
        self.resumed = resumed
        """True when the journal already held state from an earlier run."""
        row = self._db.execute("SELECT COALESCE(MAX(line), 0) FROM requests").fetchone()
        self._known_up_to: int = row[0]
        self._next_seq = self._meta_int("next_seq", 1)
        self._output_end = self._meta_int("output_end", 0)
        self._flushed_seq = self._next_seq - 1
        self._output: BinaryIO | None = None
        self._claims = 0

    # -- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, fingerprint: Mapping[str, str]) -> Journal:
        """Open (or create) the journal at ``path`` for the run described by ``fingerprint``.

        A journal written by a run with another fingerprint (another endpoint,
        input or output) raises ``JournalError`` rather than mixing two runs.
        """
        path = Path(path)
        lock = _lock(path)
        try:
            connection = _connect(path, durable=True)
        except sqlite3.DatabaseError as exc:
            os.close(lock)
            raise JournalError(f"cannot use {str(path)!r} as a journal: {exc}") from exc
        except BaseException:
            os.close(lock)
            raise
        try:
            resumed = cls._check_fingerprint(connection, path, dict(fingerprint))
        except BaseException:
            connection.close()
            os.close(lock)
            raise
        return cls(connection, durable=True, resumed=resumed, lock=lock)

    @classmethod
    def temporary(cls) -> Journal:
        """A journal in a private temporary file, deleted on close; it only detects duplicates."""
        # A real file, not SQLite's "" temporary database, which lives in memory until it spills:
        # a million ids would cost well over 100 MB of RSS.
        descriptor, name = tempfile.mkstemp(prefix="fanout-", suffix=".journal")
        os.close(descriptor)
        try:
            connection = _connect(name, durable=False)
        finally:
            # Unlinked at once: the open connection keeps the file, nothing is left behind.
            os.unlink(name)
        return cls(connection, durable=False, resumed=False)

    @staticmethod
    def _check_fingerprint(connection: sqlite3.Connection, path: Path, fingerprint: dict[str, str]) -> bool:
        stored = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        if not stored:
            with connection:
                connection.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("version", _SCHEMA_VERSION),
                        ("fingerprint", json.dumps(fingerprint, sort_keys=True)),
                        ("next_seq", "1"),
                        ("output_end", "0"),
                    ],
                )
            return False
        if stored.get("version") != _SCHEMA_VERSION:
            raise JournalError(
                f"journal {str(path)!r} has format version {stored.get('version')!r}; "
                f"this fanout writes version {_SCHEMA_VERSION}"
            )
        recorded = json.loads(stored.get("fingerprint", "{}"))
        if recorded != fingerprint:
            differences = ", ".join(
                f"{key} {recorded.get(key)!r} (now {fingerprint.get(key)!r})"
                for key in sorted(set(recorded) | set(fingerprint))
                if recorded.get(key) != fingerprint.get(key)
            )
            raise JournalError(
                f"journal {str(path)!r} belongs to another run: {differences}; "
                "rerun with the same arguments, or use a new --journal path"
            )
        return True

    def _meta_int(self, key: str, default: int) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row is not None else default

    def close(self) -> None:
        """Commit what is left, close the database and let another run have it."""
        try:
            if self._db.in_transaction:
                self._db.commit()
        finally:
            self._db.close()
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None

    @staticmethod
    def remove(path: str | os.PathLike[str]) -> None:
        """Delete a closed journal and its SQLite side files."""
        for suffix in ("", "-wal", "-shm", "-journal"):
            with suppress(FileNotFoundError):
                os.unlink(f"{os.fspath(path)}{suffix}")

    # -- input side ------------------------------------------------------------------------------

    def rows(self) -> Iterator[JournalRow]:
        """The rows an earlier run left, in line order, paged so memory stays small.

        Only lines known when this journal was opened are listed, so rows this
        run adds never look like leftovers.
        """
        after = 0
        while page := self.rows_page(after):
            yield from page
            after = page[-1].line

    def rows_page(self, after: int) -> list[JournalRow]:
        """The next page of ``rows()``: rows of lines after ``after`` (empty at the end)."""
        if after >= self._known_up_to:
            return []
        page = self._db.execute(
            "SELECT line, crc, state, inference_id FROM requests "
            "WHERE line > ? AND line <= ? ORDER BY line LIMIT ?",
            (after, self._known_up_to, _PAGE),
        ).fetchall()
        return [JournalRow(line, crc, state, inference_id) for line, crc, state, inference_id in page]

    def claim_many(self, claims: Sequence[Claim]) -> list[str | None]:
        """``claim`` each line in turn; the reasons, in order."""
        return [
            self.claim(
                line=claim.line,
                crc=claim.crc,
                id=claim.id,
                inference_id=claim.inference_id,
                route=claim.route,
            )
            for claim in claims
        ]

    def claim(self, *, line: int, crc: int, id: str, inference_id: str, route: Route | None) -> str | None:
        """Record line ``line`` as READ, owning ``id`` and ``inference_id``.

        Returns ``None``, or the reason the line cannot be sent: its ``id`` or
        ``inference_id`` already belongs to an earlier line.
        """
        try:
            self._db.execute(
                "INSERT INTO requests (line, crc, id, inference_id, state, route) VALUES (?, ?, ?, ?, ?, ?)",
                (line, crc, id, inference_id, READ, route),
            )
        except sqlite3.IntegrityError:
            for column, value in (("id", id), ("inference_id", inference_id)):
                owner = self._db.execute(f"SELECT line FROM requests WHERE {column} = ?", (value,)).fetchone()
                if owner is not None:
                    return f"duplicate {column} {value!r}: line {owner[0]} already has it"
            raise
        self._claims += 1
        if not self._durable and self._claims % _PAGE == 0:
            # Nothing needs these rows to be durable; committing just bounds the open transaction.
            self._db.commit()
        return None

    # -- dispatch side ---------------------------------------------------------------------------

    def apply(self, marks: Iterable[Mark]) -> None:
        """Record what happened to sent requests, in the open transaction (``commit`` ends it)."""
        if not self._durable:
            return
        for mark in marks:
            if isinstance(mark, Sending):
                self._sending(mark)
            elif isinstance(mark, Unsent):
                self._unsent(mark.inference_id)
            else:
                self._accepted(mark.submission)

    def commit(self) -> None:
        self._db.commit()

    def mark_sending(self, inference_id: str, deadline: float, now: float) -> None:
        """The invoke for ``inference_id`` is about to leave; durable when this returns."""
        self.apply([Sending(inference_id, deadline, now)])
        self.commit()

    def mark_unsent(self, inference_id: str) -> None:
        """Every attempt for ``inference_id`` failed to connect; durable when this returns."""
        self.apply([Unsent(inference_id)])
        self.commit()

    def mark_accepted(self, submission: Submission) -> None:
        """The endpoint accepted it; committed with the next durable step (losing it only means
        the line is in doubt on resume, without its output location)."""
        self.apply([Accepted(submission)])

    def _sending(self, mark: Sending) -> None:
        # A line already SENDING (in doubt, sent again by this run) stays SENDING.
        self._db.execute(
            "UPDATE requests SET state = ?, deadline = ?, submitted_at = ?, accepted_at = ?, attempts = 1 "
            "WHERE inference_id = ? AND state IN (?, ?)",
            (SENDING, mark.deadline, mark.now, mark.now, mark.inference_id, READ, SENDING),
        )

    def _unsent(self, inference_id: str) -> None:
        # It never left, so it is READ again, not in doubt, and the next run sends it.
        self._db.execute(
            "UPDATE requests SET state = ? WHERE inference_id = ? AND state = ?",
            (READ, inference_id, SENDING),
        )

    def _accepted(self, submission: Submission) -> None:
        if submission.in_doubt:
            return  # no 202 was seen: it stays SENDING
        self._db.execute(
            "UPDATE requests SET state = ?, route = ?, input_location = ?, output_location = ?, "
            "failure_location = ?, attempts = ?, submitted_at = ?, accepted_at = ?, deadline = ?, staged = ? "
            "WHERE inference_id = ? AND state < ?",
            (
                ACCEPTED,
                submission.route,
                submission.input_location,
                submission.output_location,
                submission.failure_location,
                submission.attempts,
                submission.submitted_at,
                submission.accepted_at,
                submission.deadline,
                int(submission.staged),
                submission.inference_id,
                DONE,
            ),
        )

    def outstanding(self) -> Iterator[Outstanding]:
        """Every line an earlier run sent without recording its outcome, with its ``Submission``.

        In-doubt (SENDING) lines have no known locations; their route is the one
        expected when they were read.
        """
        after = 0
        while True:
            page = self._db.execute(
                "SELECT line, crc, inference_id, id, state, route, input_location, output_location, "
                "failure_location, attempts, submitted_at, accepted_at, deadline, staged FROM requests "
                "WHERE state IN (?, ?) AND line > ? ORDER BY line LIMIT ?",
                (SENDING, ACCEPTED, after, _PAGE),
            ).fetchall()
            if not page:
                return
            for row in page:
                (line, crc, inference_id, id, state, route, input_location, output_location) = row[:8]
                (failure_location, attempts, submitted_at, accepted_at, deadline, staged) = row[8:]
                submission = Submission(
                    inference_id=inference_id,
                    id=id,
                    route=route if route in ("inline", "s3") else "inline",
                    input_location=input_location,
                    output_location=output_location,
                    failure_location=failure_location,
                    attempts=attempts or 1,
                    submitted_at=submitted_at or 0.0,
                    accepted_at=accepted_at or submitted_at or 0.0,
                    deadline=deadline or 0.0,
                    staged=bool(staged),
                )
                yield Outstanding(line, crc, submission, state == SENDING)
            after = page[-1][0]

    def in_doubt(self, inference_id: str) -> bool:
        """Whether ``inference_id`` was sent by an earlier run that never saw its 202."""
        row = self._db.execute(
            "SELECT state FROM requests WHERE inference_id = ?", (inference_id,)
        ).fetchone()
        return row is not None and row[0] == SENDING

    # -- output side -----------------------------------------------------------------------------

    def attach_output(self, output: BinaryIO) -> None:
        """Use ``output`` for every line from now on, first repairing what a crash left.

        ``output`` must be positioned at its start for a durable journal and
        opened for reading and writing; a temporary journal takes any stream.
        """
        if self._durable:
            self._recover(output)
        self._output = output

    def _recover(self, output: BinaryIO) -> None:
        output.seek(0, os.SEEK_END)
        size = output.tell()
        pending = self._db.execute("SELECT seq, start, text FROM output ORDER BY seq").fetchall()
        base = pending[0][1] if pending else self._output_end
        if size < base:
            raise JournalError(
                f"the output file has {size:,} bytes but the journal recorded {base:,} bytes "
                "already written; it is not this run's output (or was truncated)"
            )
        cut = size
        rewrite: list[bytes] = []
        for _, start, text in pending:
            end = start + len(text)
            if rewrite or end > size:
                if not rewrite:
                    cut = start
                rewrite.append(text)
                continue
            output.seek(start)
            if output.read(len(text)) != text:
                raise JournalError(
                    f"the output file differs from the journal at byte {start:,}; it is not this run's output"
                )
        if not rewrite and size != self._output_end:
            raise JournalError(
                f"the output file has {size - self._output_end:,} bytes after the last line the journal "
                "recorded; it is not this run's output"
            )
        if rewrite:
            output.seek(cut)
            if not b"".join(rewrite).startswith(output.read(size - cut)):
                raise JournalError(
                    f"the output file differs from the journal after byte {cut:,}; "
                    "it is not this run's output"
                )
        output.seek(cut)
        output.truncate(cut)
        for text in rewrite:
            output.write(text)
        output.flush()
        self._db.execute("DELETE FROM output")
        self._db.commit()
        self._flushed_seq = self._next_seq - 1

    def write(self, lines: Sequence[tuple[int, int, str, bytes]]) -> int:
        """Record ``(input line, its crc32, status, output line)`` as DONE, then append the output lines.

        A line whose input line is already DONE is dropped (that can only be a
        duplicate delivery). Returns how many lines were written.
        """
        if self._output is None:
            raise JournalError("attach_output() must come before write()")
        if not self._durable:
            self._output.write(b"".join(text for *_, text in lines))
            self._output.flush()
            return len(lines)
        fresh: list[bytes] = []
        for line, crc, status, text in lines:
            cursor = self._db.execute(
                "INSERT INTO requests (line, crc, state, status) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (line) DO UPDATE SET state = excluded.state, status = excluded.status "
                "WHERE state < excluded.state",
                (line, crc, DONE, status),
            )
            if cursor.rowcount == 0:
                continue
            fresh.append(text)
        if not fresh:
            return 0
        # Lines the previous write flushed completely no longer need their copy here.
        self._db.execute("DELETE FROM output WHERE seq <= ?", (self._flushed_seq,))
        rows = []
        for text in fresh:
            rows.append((self._next_seq, self._output_end, text))
            self._next_seq += 1
            self._output_end += len(text)
        self._db.executemany("INSERT INTO output (seq, start, text) VALUES (?, ?, ?)", rows)
        self._db.executemany(
            "UPDATE meta SET value = ? WHERE key = ?",
            [(str(self._next_seq), "next_seq"), (str(self._output_end), "output_end")],
        )
        self._db.commit()
        self._output.write(b"".join(fresh))
        self._output.flush()
        self._flushed_seq = self._next_seq - 1
        return len(fresh)

    def statuses(self) -> dict[str, int]:
        """How many DONE lines ended in each status, over every run of this journal."""
        rows = self._db.execute(
            "SELECT status, COUNT(*) FROM requests WHERE state = ? GROUP BY status", (DONE,)
        ).fetchall()
        return {status: count for status, count in rows if status is not None}

    def statistics(self) -> JournalStatistics:
        counts = dict(self._db.execute("SELECT state, COUNT(*) FROM requests GROUP BY state").fetchall())
        return JournalStatistics(
            read=counts.get(READ, 0),
            sending=counts.get(SENDING, 0),
            accepted=counts.get(ACCEPTED, 0),
            done=counts.get(DONE, 0),
        )


class _Group:
    """Marks queued together, and the commit that makes them durable."""

    __slots__ = ("done", "error", "marks")

    def __init__(self) -> None:
        self.marks: list[Mark] = []
        self.done = anyio.Event()
        self.error: BaseException | None = None


class JournalWorker:
    """The journal's async face: SQLite runs in worker threads, one operation at a time, and the
    marks of concurrent sends share one commit.

    ``sending`` is awaited before a request is sent: its mark joins the current group, and ``run``
    (the flusher, started in the task group of the code that uses the worker) commits the group in
    one thread hop, however many sends joined it; the next group fills meanwhile. ``accepted`` and
    ``unsent`` marks ride along with the next commit, and ``flush`` commits what is left. A temporary
    journal records no marks. The SQLite connection is only ever used inside the lane.
    """

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._lane = anyio.Lock()
        self._group = _Group()
        self._wake = anyio.Event()

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a worker thread, alone on the journal."""
        async with self._lane:
            return await anyio.to_thread.run_sync(function, *args)

    async def sending(self, inference_id: str, deadline: float, now: float) -> None:
        """Mark a request SENDING; returns once that is durable."""
        if not self.journal.durable:
            return
        group = self._group
        group.marks.append(Sending(inference_id, deadline, now))
        self._wake.set()
        await group.done.wait()
        if group.error is not None:
            raise JournalError(f"the journal could not record a send: {group.error}") from group.error

    def unsent(self, inference_id: str) -> None:
        if self.journal.durable:
            self._group.marks.append(Unsent(inference_id))

    def accepted(self, submission: Submission) -> None:
        if self.journal.durable:
            self._group.marks.append(Accepted(submission))

    async def write(self, lines: Sequence[tuple[int, int, str, bytes]]) -> int:
        """``Journal.write`` in the lane, committing the queued marks with it."""
        if not self.journal.durable:
            # No SQLite work, only an append to the output: a thread hop would cost more than it.
            return self.journal.write(lines)
        async with self._lane:
            group = self._take()
            return await self._run(group, self._write, group.marks, lines)

    async def flush(self) -> None:
        """Commit the marks queued so far."""
        async with self._lane:
            group = self._take()
            if group.marks:
                await self._run(group, self._commit, group.marks)
            else:
                group.done.set()

    async def run(self) -> None:
        """Commit each group of marks as soon as one is waited for; until cancelled."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            await self.flush()

    def _take(self) -> _Group:
        group, self._group = self._group, _Group()
        return group

    async def _run(self, group: _Group, function: Callable[..., T], *args: Any) -> T:
        try:
            return await anyio.to_thread.run_sync(function, *args)
        except BaseException as exc:
            group.error = exc
            raise
        finally:
            group.done.set()

    def _commit(self, marks: Sequence[Mark]) -> None:
        self.journal.apply(marks)
        self.journal.commit()

    def _write(self, marks: Sequence[Mark], lines: Sequence[tuple[int, int, str, bytes]]) -> int:
        self.journal.apply(marks)
        written = self.journal.write(lines)
        self.journal.commit()  # write() commits only when it wrote something
        return written
