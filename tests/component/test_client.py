"""The public client against the in-process emulator: handles, wait, map, run, limits, errors."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import anyio
import pytest

from fanout import (
    Client,
    EndpointNotFound,
    InferenceRequest,
    Limits,
    Observer,
    Outcome,
    QueueNotFound,
    Rejected,
    RunReport,
    SqsTracking,
    Staging,
    Submission,
    Succeeded,
    open_client,
)
from fanout.testing import (
    Distribution,
    Emulator,
    FaultConfig,
    NotificationFaults,
    default_config,
    open_emulator,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def emulator(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Emulator]:
    early = FaultConfig(notifications=NotificationFaults(early_rate=0.2))
    async with open_emulator(replace(default_config(), faults=early)) as emu:
        for name, value in emu.env.items():
            monkeypatch.setenv(name, value)
        yield emu


def _options(emu: Emulator, **overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "endpoint_name": emu.env["FANOUT_ENDPOINT"],
        "tracking": SqsTracking(queue_url=emu.env["FANOUT_QUEUE_URL"], wait_time_seconds=1),
        "staging": Staging(location=emu.env["FANOUT_STAGING"]),
        "limits": Limits(max_in_flight=8, max_pending=16),
    }
    options.update(overrides)
    return options


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, separators=(",", ":")).encode()).hexdigest()


def _result(outcome: object) -> dict[str, Any]:
    assert isinstance(outcome, Succeeded), outcome
    assert outcome.result is not None
    parsed: dict[str, Any] = json.loads(outcome.result)
    return parsed


async def test_submit_returns_an_awaitable_handle_once_accepted(emulator: Emulator) -> None:
    async with open_client(**_options(emulator)) as client:
        handle = await client.submit(InferenceRequest.from_json({"a": 1}, id="one"))
        assert handle.submission is not None
        assert handle.submission.id == "one"
        outcome = await handle
        assert handle.done()
        assert handle.outcome() is outcome
        assert _result(outcome)["sha256"] == _digest({"a": 1})
        assert outcome.id == "one"
        assert outcome.route == "inline"
        assert handle.inference_id is not None
        assert await handle is outcome  # awaiting again gives the same outcome


async def test_a_request_the_service_would_refuse_comes_back_as_a_done_handle(emulator: Emulator) -> None:
    async with open_client(**_options(emulator, payload="inline", staging=None)) as client:
        handle = await client.submit(InferenceRequest(body=b"x" * 128_001, id="big"))
        assert handle.done()
        outcome = await handle
        assert isinstance(outcome, Rejected)
        assert "128,000" in outcome.reason
        assert client.statistics().dispatcher.pending == 0
    assert emulator.stats()["invocations"]["accepted"] == 0


async def test_as_completed_and_track_an_earlier_submission(emulator: Emulator) -> None:
    async with open_client(**_options(emulator)) as client:
        handles = [
            await client.submit(InferenceRequest.from_json([n], inference_id=f"mine-{n}")) for n in range(5)
        ]
        assert [handle.inference_id for handle in handles] == [f"mine-{n}" for n in range(5)]
        with anyio.fail_after(30):
            outcomes = [outcome async for outcome in client.as_completed(handles)]
        assert sorted(o.inference_id or "" for o in outcomes) == [f"mine-{n}" for n in range(5)]
        assert all(_result(o)["sha256"] == _digest([int((o.inference_id or "")[5:])]) for o in outcomes)
    # Another client re-attaches to an inference accepted by one that stopped (say, for a restart)
    # before the notification came: it is delayed beyond the sender's last long poll.
    emulator.set_faults(
        FaultConfig(notifications=NotificationFaults(delay=Distribution("constant", ms=2_000)))
    )
    async with open_client(**_options(emulator)) as sender:
        handle = await sender.submit(InferenceRequest.from_json({"late": True}))
        submission = handle.submission
        assert submission is not None
    async with open_client(**_options(emulator)) as follower:
        tracked = follower.track(submission)
        with anyio.fail_after(30):
            outcome = await tracked
        assert _result(outcome)["sha256"] == _digest({"late": True})


def _requests(count: int, read: list[int]) -> Iterator[InferenceRequest]:
    for index in range(count):
        read.append(index)
        yield InferenceRequest.from_json({"i": index}, id=str(index))


async def test_map_streams_every_outcome_within_the_limits(emulator: Emulator) -> None:
    read: list[int] = []
    seen: dict[str, Any] = {}
    peak = 0
    async with open_client(**_options(emulator)) as client, client.map(_requests(300, read)) as outcomes:
        async for outcome in outcomes:
            seen[outcome.id or ""] = outcome
            stats = client.statistics()
            peak = max(peak, stats.outstanding, stats.dispatcher.pending)
            # Lazy input: never more read than limits allow beyond what came out.
            assert len(read) - len(seen) <= 16 + 8 + 2
        assert client.statistics().dispatcher.pending == 0
    assert len(seen) == 300
    assert all(_result(seen[str(i)])["sha256"] == _digest({"i": i}) for i in range(300))
    assert peak <= 16


async def test_leaving_map_early_gives_every_token_back(emulator: Emulator) -> None:
    async with open_client(**_options(emulator)) as client:
        async with client.map(_requests(200, [])) as outcomes:
            async for _ in outcomes:
                break
        with anyio.fail_after(30):
            while client.statistics().dispatcher.pending or client.statistics().dispatcher.in_flight:
                await anyio.sleep(0.05)
        # The client still works afterwards.
        report = await client.run(_requests(10, []))
        assert report.succeeded == 10


async def test_run_reports_counts_routes_latencies_and_api_calls(emulator: Emulator) -> None:
    requests = [InferenceRequest.from_json({"i": i}) for i in range(40)]
    requests.append(InferenceRequest.from_json({"fail": True, "reason": "on purpose"}))
    requests.append(InferenceRequest.from_json({"pad": "p" * 130_000}))
    requests.append(InferenceRequest(body=b"", id="empty"))
    async with open_client(**_options(emulator)) as client:
        report = await client.run(requests)
    assert isinstance(report, RunReport)
    assert report.by_status == {"succeeded": 41, "failed": 1, "expired": 0, "rejected": 1}
    assert (report.total, report.ok) == (43, False)
    assert (report.inline, report.s3) == (41, 1)
    assert report.p50 is not None and report.p99 is not None and report.p50 <= report.p99
    assert report.api_calls["sagemaker-runtime.InvokeEndpointAsync"] == 42
    assert report.api_calls["s3.PutObject"] == 1
    assert report.throughput > 0
    assert json.loads(json.dumps(report.to_dict()))["succeeded"] == 41


async def test_an_unknown_endpoint_is_a_run_level_error(emulator: Emulator) -> None:
    async with open_client(**_options(emulator, endpoint_name="no-such-endpoint")) as client:
        with pytest.raises(EndpointNotFound, match="no-such-endpoint"):
            await client.run(_requests(5, []))


async def test_an_unknown_queue_fails_before_anything_is_sent(emulator: Emulator) -> None:
    tracking = SqsTracking(queue_url=emulator.queue_url("fanout-notifications") + "-missing")
    with pytest.raises(QueueNotFound):
        async with open_client(**_options(emulator, tracking=tracking)):
            pytest.fail("unreachable")
    assert emulator.stats()["invocations"]["accepted"] == 0


async def test_an_error_in_the_block_comes_out_unwrapped(emulator: Emulator) -> None:
    with pytest.raises(ValueError, match="mine"):
        async with open_client(**_options(emulator)) as client:
            assert isinstance(client, Client)
            raise ValueError("mine")


class _Recorder:
    """An ``Observer`` that records every call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def sending(self, inference_id: str, deadline: float) -> None:
        self.calls.append(("sending", inference_id))

    def unsent(self, inference_id: str) -> None:
        self.calls.append(("unsent", inference_id))

    def accepted(self, submission: Submission) -> None:
        self.calls.append(("accepted", submission.inference_id))

    def handed_over(self, outcome: Outcome) -> None:
        self.calls.append(("handed_over", outcome.inference_id or ""))


async def test_an_observer_hears_each_request_in_order(emulator: Emulator) -> None:
    recorder = _Recorder()
    observer: Observer = recorder
    requests = [InferenceRequest.from_json({"i": i}, inference_id=f"o-{i}") for i in range(20)]
    async with open_client(**_options(emulator), observer=observer) as client:
        report = await client.run(requests)
    assert report.succeeded == 20
    for i in range(20):
        mine = [kind for kind, inference_id in recorder.calls if inference_id == f"o-{i}"]
        assert mine == ["sending", "accepted", "handed_over"]


async def test_manual_acknowledgement_keeps_notifications_on_the_queue_until_told(emulator: Emulator) -> None:
    def queued() -> int:
        queue = emulator.stats()["queues"]["fanout-notifications"]
        return int(queue["visible"] + queue["in_flight"])

    async with open_client(**_options(emulator), acknowledge="manual") as client:
        outcomes: list[Outcome] = []
        async with client.map(_requests(10, [])) as stream:
            outcomes = [outcome async for outcome in stream]
        await anyio.sleep(0.3)
        assert queued() >= 10  # taken, not acknowledged: still on the queue (hidden)
        client.acknowledge(*outcomes)
        with anyio.fail_after(10):
            while queued():
                await anyio.sleep(0.05)
