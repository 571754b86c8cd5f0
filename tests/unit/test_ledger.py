"""The ledger: exactly one outcome per expected-and-tracked id, whatever order things arrive in."""

from __future__ import annotations

import math
from collections import Counter
from typing import Literal

import pytest
from hypothesis import given, settings, strategies as st

from fanout._models import Expired, Failed, InvocationStatus, Notification, Submission, Succeeded
from fanout._tracking import Ledger
from fanout._tracking._ledger import Resolution

STATUSES: list[InvocationStatus] = ["Completed", "Failed", "Expired"]
STATUS_OF = {"Completed": "succeeded", "Failed": "failed", "Expired": "expired"}


def submission(inference_id: str, *, deadline: float = 1e9, accepted_at: float = 0.0) -> Submission:
    return Submission(
        inference_id=inference_id,
        id=f"req-{inference_id}",
        route="inline",
        input_location=None,
        output_location=f"s3://out/results/{inference_id}.out",
        failure_location=f"s3://out/failures/{inference_id}-error.out",
        attempts=2,
        submitted_at=accepted_at - 1,
        accepted_at=accepted_at,
        deadline=deadline,
    )


def notification(inference_id: str, status: InvocationStatus = "Completed") -> Notification:
    return Notification(
        inference_id=inference_id,
        status=status,
        output_location=f"s3://out/results/{inference_id}.out" if status == "Completed" else None,
        failure_reason="boom" if status == "Failed" else None,
        response_body=b"{}" if status == "Completed" else None,
    )


def test_resolve_then_duplicate() -> None:
    ledger = Ledger()
    ledger.expect("a", 100.0)
    assert ledger.track(submission("a", deadline=100.0), 1.0) is None
    outcome = ledger.resolve(notification("a"), 5.0)
    assert isinstance(outcome, Succeeded)
    assert outcome.id == "req-a"
    assert outcome.route == "inline"
    assert outcome.attempts == 2
    assert outcome.result == b"{}"
    assert outcome.completed_at == 5.0
    assert outcome.submitted_at == -1
    assert ledger.resolve(notification("a"), 6.0) == "duplicate"
    assert ledger.expire(math.inf) == []
    stats = ledger.statistics()
    assert (stats.resolved, stats.duplicates, stats.unknown, stats.pending) == (1, 1, 0, 0)
    assert ledger.is_known("a")
    assert not ledger.is_pending("a")


def test_notification_before_track_is_held() -> None:
    ledger = Ledger()
    ledger.expect("a", 100.0)
    assert ledger.resolve(notification("a", "Failed"), 1.0) == "held"
    assert ledger.resolve(notification("a", "Completed"), 1.5) == "duplicate"
    assert ledger.statistics().held == 1
    outcome = ledger.track(submission("a", deadline=100.0), 2.0)
    assert isinstance(outcome, Failed)
    assert outcome.failure_reason == "boom"
    assert outcome.failure_location == "s3://out/failures/a-error.out"
    stats = ledger.statistics()
    assert (stats.held, stats.duplicates, stats.resolved) == (0, 1, 1)


def test_forget_drops_held_notification() -> None:
    ledger = Ledger()
    ledger.expect("a", 100.0)
    ledger.resolve(notification("a"), 1.0)
    assert ledger.forget("a")
    assert not ledger.forget("a")
    assert ledger.resolve(notification("a"), 2.0) == "unknown"
    assert not ledger.is_known("a")
    stats = ledger.statistics()
    assert (stats.held, stats.forgotten, stats.unknown) == (0, 1, 1)


def test_unknown_id() -> None:
    ledger = Ledger()
    assert ledger.resolve(notification("nobody"), 1.0) == "unknown"
    assert ledger.statistics().unknown == 1
    assert not ledger.is_known("nobody")


def test_expiry_uses_the_submission_deadline_and_skips_stale_entries() -> None:
    ledger = Ledger()
    ledger.expect("a", 10.0)
    ledger.expect("b", 20.0)
    ledger.track(submission("a", deadline=30.0), 1.0)  # the provisional deadline moves later
    ledger.track(submission("b", deadline=20.0), 1.0)
    assert ledger.next_deadline() == 10.0
    assert ledger.expire(15.0) == []
    expired = ledger.expire(25.0)
    assert [e.inference_id for e in expired] == ["b"]
    assert expired[0].deadline == 20.0
    assert expired[0].completed_at == 25.0
    assert ledger.resolve(notification("b"), 26.0) == "duplicate"  # a late notice
    assert ledger.statistics().duplicates == 1
    assert [e.inference_id for e in ledger.expire(30.0)] == ["a"]
    assert ledger.expire(math.inf) == []


def test_expected_but_never_tracked_is_abandoned_not_expired() -> None:
    ledger = Ledger()
    ledger.expect("a", 10.0)
    ledger.resolve(notification("a"), 1.0)
    assert ledger.expire(11.0) == []
    stats = ledger.statistics()
    assert (stats.abandoned, stats.held, stats.expected) == (1, 0, 0)


def test_track_without_expect_and_track_after_outcome() -> None:
    ledger = Ledger()
    assert ledger.track(submission("a", deadline=50.0), 0.0) is None
    assert ledger.statistics().pending == 1
    assert isinstance(ledger.resolve(notification("a"), 1.0), Succeeded)
    assert ledger.track(submission("a", deadline=50.0), 2.0) is None
    assert ledger.statistics().pending == 0


def test_service_expired_notification() -> None:
    ledger = Ledger()
    ledger.track(submission("a", deadline=50.0), 0.0)
    outcome = ledger.resolve(notification("a", "Expired"), 1.0)
    assert isinstance(outcome, Expired)
    assert outcome.deadline == 50.0
    assert outcome.failure_reason


def test_pending_lists_tracked_submissions_only() -> None:
    ledger = Ledger()
    ledger.expect("a", 10.0)
    ledger.track(submission("b"), 0.0)
    assert [s.inference_id for s in ledger.pending()] == ["b"]
    assert len(ledger) == 2


def test_remembered_ids_are_bounded() -> None:
    ledger = Ledger(remember=2)
    for name in "abc":
        ledger.track(submission(name), 0.0)
        ledger.resolve(notification(name), 1.0)
    assert not ledger.is_known("a")
    assert ledger.is_known("b") and ledger.is_known("c")
    assert ledger.resolve(notification("a"), 2.0) == "unknown"
    assert ledger.statistics().unknown == 1
    with pytest.raises(ValueError):
        Ledger(remember=0)


# Any interleaving.

Event = tuple[str, str, InvocationStatus | None]


@st.composite
def scripts(draw: st.DrawFn) -> tuple[list[Event], dict[str, Literal["track", "forget"]], int]:
    count = draw(st.integers(1, 8))
    per_id: list[list[Event]] = []
    fates: dict[str, Literal["track", "forget"]] = {}
    for index in range(count):
        name = f"i{index}"
        fate: Literal["track", "forget"] = draw(st.sampled_from(["track", "forget"]))
        fates[name] = fate
        notices = draw(st.lists(st.sampled_from(STATUSES), max_size=4))
        later: list[Event] = [("resolve", name, s) for s in notices]
        where = draw(st.integers(0, len(later)))
        later.insert(where, (fate, name, None))
        per_id.append([("expect", name, None), *later])
    strays = draw(st.lists(st.sampled_from(STATUSES), max_size=2))
    per_id.append([("resolve", "stray", s) for s in strays])
    merged: list[Event] = []
    while any(per_id):
        queue = draw(st.sampled_from([q for q in per_id if q]))
        merged.append(queue.pop(0))
    remember = draw(st.sampled_from([1, 3, 1000]))
    return merged, fates, remember


def run(events: list[Event], remember: int) -> tuple[Ledger, list[Resolution]]:
    ledger = Ledger(remember=remember)
    outcomes: list[Resolution] = []
    for step, (kind, name, status) in enumerate(events):
        now = float(step)
        if kind == "expect":
            ledger.expect(name, 1e6)
        elif kind == "track":
            if (held := ledger.track(submission(name, deadline=1e6), now)) is not None:
                outcomes.append(held)
        elif kind == "forget":
            ledger.forget(name)
        else:
            assert status is not None
            if not isinstance(outcome := ledger.resolve(notification(name, status), now), str):
                outcomes.append(outcome)
    outcomes.extend(ledger.expire(math.inf))
    return ledger, outcomes


@settings(max_examples=300)
@given(scripts())
def test_any_interleaving_gives_exactly_one_outcome_per_tracked_id(
    script: tuple[list[Event], dict[str, Literal["track", "forget"]], int],
) -> None:
    events, fates, remember = script
    ledger, outcomes = run(events, remember)
    counts = Counter(o.inference_id for o in outcomes)
    tracked = {name for name, fate in fates.items() if fate == "track"}
    assert set(counts) == tracked
    assert all(n == 1 for n in counts.values())
    for outcome in outcomes:
        # The first notification after expect decides, whether it was held or not.
        first = next((s for k, n, s in events if k == "resolve" and n == outcome.inference_id), None)
        assert outcome.status == ("expired" if first is None else STATUS_OF[first])
        assert outcome.id == f"req-{outcome.inference_id}"
    stats = ledger.statistics()
    assert (stats.pending, stats.held, stats.expected) == (0, 0, 0)
    assert len(ledger) == 0


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from(["resolve", "expire"]), st.integers(0, 30)), max_size=40
    ),
    st.lists(st.integers(1, 30), min_size=6, max_size=6),
)
def test_expiry_and_notifications_race(steps: list[tuple[int, str, int]], deadlines: list[int]) -> None:
    ledger = Ledger()
    for index, deadline in enumerate(deadlines):
        ledger.expect(f"i{index}", float(deadline))
        ledger.track(submission(f"i{index}", deadline=float(deadline)), 0.0)
    outcomes: list[Resolution] = []
    for index, kind, now in steps:
        if kind == "resolve":
            if not isinstance(outcome := ledger.resolve(notification(f"i{index}"), float(now)), str):
                outcomes.append(outcome)
        else:
            expired = ledger.expire(float(now))
            assert all(e.deadline <= now for e in expired)
            outcomes.extend(expired)
    outcomes.extend(ledger.expire(math.inf))
    assert sorted(o.inference_id for o in outcomes) == sorted(f"i{i}" for i in range(6))
    for outcome in outcomes:
        if isinstance(outcome, Expired):
            assert outcome.deadline == deadlines[int(outcome.inference_id[1:])]


def test_memory_follows_pending_ids_not_every_id_ever_sent() -> None:
    # Deadlines are hours away, so resolved ids must not leave their heap entries behind for good.
    ledger = Ledger(remember=100)
    for n in range(20_000):
        inference_id = f"id-{n}"
        ledger.expect(inference_id, 1e9)
        ledger.track(submission(inference_id), now=1.0)
        assert isinstance(ledger.resolve(notification(inference_id), now=2.0), Succeeded)
    assert len(ledger._deadlines) <= 1024
    assert len(ledger) == 0
    ledger.expect("late", 5.0)
    ledger.track(submission("late", deadline=5.0), now=1.0)
    assert [expired.inference_id for expired in ledger.expire(10.0)] == ["late"]


# -- the SQS receive pacer (pure, like the ledger) ---------------------------------------------------


def test_the_pacer_polls_back_to_back_when_idle_or_behind() -> None:
    from fanout._tracking._sqs import ReceivePacer

    pacer = ReceivePacer(4)
    assert pacer.active(0.0) == 1
    assert pacer.received(0, 1.0, 20.0) == 0.0  # an empty long poll: poll again at once
    assert pacer.received(10, 2.0, 0.002) == 0.0  # a full batch: a backlog, poll again at once


def test_the_pacer_waits_for_a_batch_to_fill_at_high_rates_and_briefly_at_low_ones() -> None:
    from fanout._tracking._sqs import LINGER_MAX, ReceivePacer

    pacer = ReceivePacer(4)
    now = 0.0
    for _ in range(100):  # 500 messages a second, two at a time
        now += 0.004
        linger = pacer.received(2, now, 0.002)
    assert 0.012 <= linger <= 0.016  # about 8 messages apart at 500/s, less the round trip
    slow = ReceivePacer(4)
    now = 0.0
    for _ in range(10):  # one message every 100 ms
        now += 0.1
        linger = slow.received(1, now, 0.002)
    assert linger == LINGER_MAX - 0.002


def test_the_pacer_adds_receivers_only_when_one_cannot_keep_up() -> None:
    from fanout._tracking._sqs import ReceivePacer

    pacer = ReceivePacer(4)
    now = 0.0
    for _ in range(200):  # 2,000 messages a second with a 20 ms round trip
        now += 0.005
        pacer.received(10, now, 0.02)
    assert pacer.active(now) == 4  # 2 x 2,000/s x 20 ms / 10 = 8, capped at the 4 receivers
    assert pacer.active(now + 5.0) == 1  # the rate is gone
