"""The ledger: which inferences are outstanding, and the one place that decides their outcome.

Pure and synchronous: every method that depends on time takes ``now``; nothing here does I/O.

Life of an inference id::

    expect(id, deadline)  before the invoke leaves, so an early notification finds it
       ├── resolve(n)     before track(): the notification is *held* (no outcome yet: "held")
       ├── forget(id)     the invoke was finally rejected: dropped, held notification too
       └── track(sub)     after the 202: emits the held outcome, if any, else waits
              ├── resolve(n)   first complete notification -> the Outcome; later ones -> "duplicate"
              └── expire(now)  no outcome by the deadline -> Expired

Each expected and tracked id gets exactly one outcome. Resolved ids are remembered in a
bounded LRU (``remember`` ids, 100,000 by default: about 15 MB) so a late duplicate is
recognised as a duplicate rather than as a message for another run; past that bound a very
late duplicate counts as unknown, which the SQS source leaves on the queue (or deletes with
``delete_unknown``). Expiry uses a heap of deadlines with lazy deletion: an entry whose id
is gone, or whose deadline changed, is skipped when it reaches the top.

An id that was expected but neither tracked nor forgotten by its (provisional) deadline is
dropped and counted as ``abandoned``: the dispatcher owns that request's ``Rejected``.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, TypeAlias

from .._models import IN_DOUBT_REASON, Expired, Failed, Notification, Submission, Succeeded

__all__ = ["DEFAULT_REMEMBER", "Ledger", "LedgerStatistics", "NoOutcome", "Resolution", "outcome_of"]

DEFAULT_REMEMBER = 100_000

Resolution: TypeAlias = Succeeded | Failed | Expired
"""An outcome the tracker produces (``Rejected`` belongs to the dispatcher)."""

NoOutcome: TypeAlias = Literal["held", "duplicate", "unknown"]
"""Why a notification produced no outcome: held until ``track()``, a repeat of one already
resolved (or held), or an id this ledger does not know."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerStatistics:
    expected: int
    """Expected but not yet tracked."""
    pending: int
    """Tracked and waiting for an outcome."""
    held: int
    """Notifications that arrived before track()."""
    resolved: int
    expired: int
    duplicates: int
    unknown: int
    forgotten: int
    abandoned: int


class _Entry:
    __slots__ = ("deadline", "held", "submission")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.submission: Submission | None = None
        self.held: Notification | None = None


class Ledger:
    """Outstanding inference ids and their outcomes (see the module docstring)."""

    def __init__(self, *, remember: int = DEFAULT_REMEMBER) -> None:
        if remember < 1:
            raise ValueError(f"remember must be 1 or more, got {remember!r}")
        self._remember = remember
        self._entries: dict[str, _Entry] = {}
        self._deadlines: list[tuple[float, str]] = []
        self._resolved: OrderedDict[str, None] = OrderedDict()
        self._tracked = 0
        self._held = 0
        self._counts = dict.fromkeys(
            ("resolved", "expired", "duplicates", "unknown", "forgotten", "abandoned"), 0
        )

    def expect(self, inference_id: str, deadline: float) -> None:
        """Register an id before its invoke is sent. Expecting a pending id again only moves its deadline."""
        entry = self._entries.get(inference_id)
        if entry is None:
            # A recently resolved id expected again is a new inference (a resubmission).
            self._resolved.pop(inference_id, None)
            entry = self._entries[inference_id] = _Entry(deadline)
        elif entry.deadline == deadline:
            return
        entry.deadline = deadline
        heapq.heappush(self._deadlines, (deadline, inference_id))

    def track(self, submission: Submission, now: float) -> Resolution | None:
        """Record the accepted submission; returns the outcome of a notification held for it, if any.

        A submission that was never expected is expected now, with its own deadline. Tracking an id
        that already has its outcome is ignored.
        """
        inference_id = submission.inference_id
        entry = self._entries.get(inference_id)
        if entry is None:
            if inference_id in self._resolved:
                return None
            self.expect(inference_id, submission.deadline)
            entry = self._entries[inference_id]
        if entry.submission is None:
            self._tracked += 1
        entry.submission = submission
        if entry.deadline != submission.deadline:
            entry.deadline = submission.deadline
            heapq.heappush(self._deadlines, (submission.deadline, inference_id))
        held = entry.held
        if held is None:
            return None
        entry.held = None
        self._held -= 1
        return self._resolve_entry(inference_id, entry, held, now)

    def resolve(self, notification: Notification, now: float) -> Resolution | NoOutcome:
        """The outcome the first time an id completes; otherwise why there is none (``NoOutcome``)."""
        inference_id = notification.inference_id
        entry = self._entries.get(inference_id)
        if entry is None:
            if inference_id in self._resolved:
                self._resolved.move_to_end(inference_id)
                self._counts["duplicates"] += 1
                return "duplicate"
            self._counts["unknown"] += 1
            return "unknown"
        if entry.submission is None:
            if entry.held is None:
                entry.held = notification
                self._held += 1
                return "held"
            self._counts["duplicates"] += 1
            return "duplicate"
        return self._resolve_entry(inference_id, entry, notification, now)

    def expire(self, now: float) -> list[Expired]:
        """Every tracked inference whose deadline is at or before ``now``, as Expired, once."""
        expired: list[Expired] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            deadline, inference_id = heapq.heappop(heap)
            entry = self._entries.get(inference_id)
            if entry is None or entry.deadline != deadline:
                continue
            del self._entries[inference_id]
            submission = entry.submission
            if submission is None:
                if entry.held is not None:
                    self._held -= 1
                self._counts["abandoned"] += 1
                continue
            self._tracked -= 1
            self._remember_resolved(inference_id)
            self._counts["expired"] += 1
            reason = IN_DOUBT_REASON if submission.in_doubt else None
            expired.append(_expired(submission, now, deadline=deadline, failure_reason=reason))
        return expired

    def next_deadline(self) -> float | None:
        """The earliest deadline still in the heap (possibly stale, so never later than the true one)."""
        return self._deadlines[0][0] if self._deadlines else None

    def forget(self, inference_id: str) -> bool:
        """Drop an id whose invoke was finally rejected; returns whether it was outstanding."""
        entry = self._entries.pop(inference_id, None)
        if entry is None:
            return False
        if entry.submission is not None:
            self._tracked -= 1
        if entry.held is not None:
            self._held -= 1
        self._counts["forgotten"] += 1
        self._compact()
        return True

    def is_known(self, inference_id: str) -> bool:
        """Outstanding, or resolved recently enough to be remembered."""
        return inference_id in self._entries or inference_id in self._resolved

    def is_pending(self, inference_id: str) -> bool:
        """Outstanding: expected or tracked, without an outcome yet."""
        return inference_id in self._entries

    def submission(self, inference_id: str) -> Submission | None:
        entry = self._entries.get(inference_id)
        return None if entry is None else entry.submission

    def pending(self) -> Iterator[Submission]:
        """The tracked submissions still waiting for an outcome (for S3 polling)."""
        for entry in self._entries.values():
            if entry.submission is not None:
                yield entry.submission

    def __len__(self) -> int:
        return len(self._entries)

    def statistics(self) -> LedgerStatistics:
        return LedgerStatistics(
            expected=len(self._entries) - self._tracked,
            pending=self._tracked,
            held=self._held,
            **self._counts,
        )

    def _resolve_entry(
        self, inference_id: str, entry: _Entry, notification: Notification, now: float
    ) -> Resolution:
        submission = entry.submission
        assert submission is not None
        del self._entries[inference_id]
        self._tracked -= 1
        self._remember_resolved(inference_id)
        self._counts["resolved"] += 1
        self._compact()
        return outcome_of(submission, notification, now)

    def _compact(self) -> None:
        # Resolved ids leave their heap entries behind until their deadline (hours away), so without
        # this the heap would grow with every request ever sent instead of with the pending ones.
        if len(self._deadlines) > 2 * len(self._entries) + 1024:
            self._deadlines = [
                (deadline, inference_id)
                for deadline, inference_id in self._deadlines
                if (entry := self._entries.get(inference_id)) is not None and entry.deadline == deadline
            ]
            heapq.heapify(self._deadlines)

    def _remember_resolved(self, inference_id: str) -> None:
        self._resolved[inference_id] = None
        if len(self._resolved) > self._remember:
            self._resolved.popitem(last=False)


def outcome_of(submission: Submission, notification: Notification, now: float) -> Resolution:
    """The outcome a notification means for its submission; ``completed_at`` is when fanout learned it."""
    output_location = notification.output_location or submission.output_location
    failure_location = notification.failure_location or submission.failure_location
    if notification.status == "Completed":
        return Succeeded(
            inference_id=submission.inference_id,
            id=submission.id,
            route=submission.route,
            output_location=output_location,
            result=notification.response_body,
            content_type=notification.response_content_type,
            attempts=submission.attempts,
            submitted_at=submission.submitted_at,
            completed_at=now,
        )
    if notification.status == "Failed":
        return Failed(
            inference_id=submission.inference_id,
            id=submission.id,
            route=submission.route,
            output_location=output_location,
            failure_location=failure_location,
            failure_reason=notification.failure_reason,
            attempts=submission.attempts,
            submitted_at=submission.submitted_at,
            completed_at=now,
        )
    return _expired(
        submission,
        now,
        deadline=submission.deadline,
        output_location=notification.output_location,
        failure_location=notification.failure_location,
        failure_reason=notification.failure_reason or "the service reported the request as expired",
    )


def _expired(
    submission: Submission,
    now: float,
    *,
    deadline: float,
    output_location: str | None = None,
    failure_location: str | None = None,
    failure_reason: str | None = None,
) -> Expired:
    """``Expired`` for a submission; the locations default to the submission's own."""
    return Expired(
        inference_id=submission.inference_id,
        id=submission.id,
        route=submission.route,
        output_location=output_location or submission.output_location,
        failure_location=failure_location or submission.failure_location,
        failure_reason=failure_reason,
        deadline=deadline,
        attempts=submission.attempts,
        submitted_at=submission.submitted_at,
        completed_at=now,
    )
