"""The tracker against scripted fake SQS and S3 clients: exactly once, batching, unknown ids, modes."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from botocore.exceptions import ClientError

from fanout._config import HybridTracking, S3Tracking, SqsTracking
from fanout._exceptions import ConfigError, QueueNotFound, error_code
from fanout._models import Expired, Failed, Submission, Succeeded
from fanout._tracking import Tracker, open_tracker
from fanout._tracking._ledger import Resolution

pytestmark = pytest.mark.anyio

QUEUE_URL = "http://127.0.0.1:1/123456789012/fanout-notifications"


def client_error(code: str, status: int, operation: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


class FakeSqs:
    """An in-memory queue with visibility timeouts and long polling; records every call."""

    def __init__(self, *, exists: bool = True, denied: bool = False) -> None:
        self.exists = exists
        self.denied = denied
        self.messages: dict[str, dict[str, Any]] = {}
        self.invisible_until: dict[str, float] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.receive_failures = 0
        self._serial = 0
        self._handles: dict[str, str] = {}

    def send(self, body: str) -> str:
        self._serial += 1
        message_id = f"m{self._serial}"
        self.messages[message_id] = {"MessageId": message_id, "Body": body}
        return message_id

    def _now(self) -> float:
        return anyio.current_time()

    async def get_queue_attributes(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("GetQueueAttributes", kwargs))
        if not self.exists:
            raise client_error("AWS.SimpleQueueService.NonExistentQueue", 400, "GetQueueAttributes")
        if self.denied:
            raise client_error("AccessDenied", 403, "GetQueueAttributes")
        return {"Attributes": {"VisibilityTimeout": "30"}}

    async def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("ReceiveMessage", kwargs))
        if self.receive_failures:
            self.receive_failures -= 1
            raise client_error("InternalError", 500, "ReceiveMessage")
        deadline = self._now() + kwargs["WaitTimeSeconds"]
        while True:
            now = self._now()
            visible = [m for m in self.messages if self.invisible_until.get(m, 0) <= now]
            if visible or now >= deadline:
                break
            await anyio.sleep(0.01)
        batch = visible[: kwargs["MaxNumberOfMessages"]]
        out = []
        for message_id in batch:
            self.invisible_until[message_id] = now + kwargs["VisibilityTimeout"]
            self._serial += 1
            handle = f"h{self._serial}-{message_id}"
            self._handles[handle] = message_id
            out.append({**self.messages[message_id], "ReceiptHandle": handle})
        return {"Messages": out} if out else {}

    async def delete_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("DeleteMessageBatch", kwargs))
        assert 1 <= len(kwargs["Entries"]) <= 10
        for entry in kwargs["Entries"]:
            self.messages.pop(self._handles[entry["ReceiptHandle"]], None)
        return {"Successful": [{"Id": e["Id"]} for e in kwargs["Entries"]]}

    async def change_message_visibility_batch(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("ChangeMessageVisibilityBatch", kwargs))
        assert 1 <= len(kwargs["Entries"]) <= 10
        for entry in kwargs["Entries"]:
            message_id = self._handles[entry["ReceiptHandle"]]
            self.invisible_until[message_id] = self._now() + entry["VisibilityTimeout"]
        return {"Successful": [{"Id": e["Id"]} for e in kwargs["Entries"]]}

    def called(self, operation: str) -> list[dict[str, Any]]:
        return [kwargs for name, kwargs in self.calls if name == operation]


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    async def __aenter__(self) -> _Body:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None

    async def read(self, limit: int = -1) -> bytes:
        return self._data if limit < 0 else self._data[:limit]


class FakeS3:
    """Objects in a dict; HEAD, GET and paged ListObjectsV2 with a delimiter; counts calls."""

    def __init__(self, *, page_size: int = 1000) -> None:
        self.objects: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.calls = {"head": 0, "get": 0, "list": 0}
        self.page_size = page_size
        self.get_gate: anyio.Event | None = None

    def put(self, uri: str, body: bytes, content_type: str = "application/json") -> None:
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        self.objects[bucket, key] = (body, content_type)

    async def head_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        self.calls["head"] += 1
        if (Bucket, Key) not in self.objects:
            raise client_error("404", 404, "HeadObject")
        body, content_type = self.objects[Bucket, Key]
        return {"ContentType": content_type, "ContentLength": len(body)}

    async def get_object(self, *, Bucket: str, Key: str, Range: str | None = None) -> dict[str, Any]:
        self.calls["get"] += 1
        if self.get_gate is not None:
            await self.get_gate.wait()
        if (Bucket, Key) not in self.objects:
            raise client_error("NoSuchKey", 404, "GetObject")
        body, content_type = self.objects[Bucket, Key]
        return {"Body": _Body(body), "ContentType": content_type}

    async def list_objects_v2(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["list"] += 1
        prefix = kwargs.get("Prefix", "")
        keys = sorted(
            k
            for b, k in self.objects
            if b == kwargs["Bucket"] and k.startswith(prefix) and "/" not in k[len(prefix) :]
        )
        start = int(kwargs.get("ContinuationToken", "0"))
        page = keys[start : start + min(self.page_size, kwargs.get("MaxKeys", 1000))]
        truncated = start + len(page) < len(keys)
        response: dict[str, Any] = {"Contents": [{"Key": k} for k in page], "IsTruncated": truncated}
        if truncated:
            response["NextContinuationToken"] = str(start + len(page))
        return response


def submission(inference_id: str, *, accepted_at: float = 0.0, deadline: float = 1e12) -> Submission:
    return Submission(
        inference_id=inference_id,
        id=f"req-{inference_id}",
        route="inline",
        input_location=None,
        output_location=f"s3://out/results/{inference_id}-x.out",
        failure_location=f"s3://out/failures/{inference_id}-x-error.out",
        attempts=1,
        submitted_at=accepted_at,
        accepted_at=accepted_at,
        deadline=deadline,
    )


def notice(
    inference_id: str, status: str = "Completed", *, body: bytes | None = None, raw: bool = False
) -> str:
    value: dict[str, Any] = {
        "invocationStatus": status,
        "inferenceId": inference_id,
        "eventName": "InferenceResult",
        "responseParameters": {"outputLocation": f"s3://out/results/{inference_id}-x.out"}
        if status == "Completed"
        else {"failureLocation": f"s3://out/failures/{inference_id}-x-error.out"},
    }
    if status == "Failed":
        value["failureReason"] = f"model said no to {inference_id}"
    if body is not None:
        value["responseBody"] = {"content": base64.b64encode(body).decode(), "encoding": "BASE64"}
    message = json.dumps(value)
    return message if raw else json.dumps({"Type": "Notification", "MessageId": "x", "Message": message})


@asynccontextmanager
async def tracker_for(
    tracking: Any, sqs: FakeSqs | None, s3: FakeS3 | None, **kwargs: Any
) -> AsyncIterator[Tracker]:
    async with open_tracker(tracking=tracking, sqs=sqs, s3=s3, **kwargs) as tracker:
        yield tracker


async def collect(
    tracker: Tracker, count: int, timeout: float = 5.0, *, acknowledge: bool = True
) -> list[Resolution]:
    outcomes: list[Resolution] = []
    with anyio.fail_after(timeout):
        async for outcome in tracker:
            assert isinstance(outcome, Succeeded | Failed | Expired)
            outcomes.append(outcome)
            if acknowledge:
                tracker.acknowledge(outcome.inference_id)
            if len(outcomes) == count:
                break
    return outcomes


def sqs_tracking(**kwargs: Any) -> SqsTracking:
    return SqsTracking(queue_url=QUEUE_URL, wait_time_seconds=1, **kwargs)


async def test_exactly_once_under_duplicates_and_early_notifications() -> None:
    sqs, s3 = FakeSqs(), FakeS3()
    rng = random.Random(7)
    ids = [f"i{n}" for n in range(60)]
    async with tracker_for(sqs_tracking(), sqs, s3) as tracker:
        bodies = []
        for index, inference_id in enumerate(ids):
            tracker.expect(inference_id, 1e12)
            status = "Failed" if index % 5 == 0 else "Completed"
            payload = json.dumps({"n": index}).encode()
            body = notice(inference_id, status, body=payload, raw=index % 2 == 0)
            bodies += [body] * rng.randint(1, 3)
        rng.shuffle(bodies)
        for body in bodies[: len(bodies) // 2]:
            sqs.send(body)
        await anyio.sleep(0.1)  # some notifications arrive before track(): they are held
        for inference_id in ids:
            tracker.track(submission(inference_id))
        for body in bodies[len(bodies) // 2 :]:
            sqs.send(body)
        outcomes = await collect(tracker, len(ids))
        with anyio.fail_after(5):
            while sqs.messages:
                await anyio.sleep(0.02)
        with anyio.move_on_after(0.3):
            extra = await tracker.__anext__()
            pytest.fail(f"an extra outcome: {extra}")
        stats = tracker.statistics()
    assert sorted(o.inference_id for o in outcomes) == sorted(ids)
    for outcome in outcomes:
        index = int(outcome.inference_id[1:])
        if index % 5 == 0:
            assert isinstance(outcome, Failed)
            assert outcome.failure_reason == f"model said no to {outcome.inference_id}"
        else:
            assert isinstance(outcome, Succeeded)
            assert outcome.result == json.dumps({"n": index}).encode()
        assert outcome.id == f"req-{outcome.inference_id}"
    assert s3.calls["get"] == 0  # every result came inline
    assert stats.duplicates == len(bodies) - len(ids)
    assert stats.resolved == {"succeeded": 48, "failed": 12, "expired": 0}
    assert stats.received >= len(bodies)
    assert (stats.pending, stats.held, stats.unknown) == (0, 0, 0)
    deletes = sqs.called("DeleteMessageBatch")
    assert sum(len(d["Entries"]) for d in deletes) >= len(bodies)
    assert len(deletes) < len(bodies)  # batched
    assert max(len(d["Entries"]) for d in deletes) > 1


async def test_results_are_fetched_from_s3_without_response_body() -> None:
    sqs, s3 = FakeSqs(), FakeS3()
    async with tracker_for(sqs_tracking(), sqs, s3) as tracker:
        for n in range(5):
            tracker.expect(f"i{n}", 1e12)
            tracker.track(submission(f"i{n}"))
            s3.put(f"s3://out/results/i{n}-x.out", f"result {n}".encode(), "text/plain")
            sqs.send(notice(f"i{n}"))
        outcomes = await collect(tracker, 5)
    assert {o.inference_id: o.result for o in outcomes if isinstance(o, Succeeded)} == {
        f"i{n}": f"result {n}".encode() for n in range(5)
    }
    assert all(isinstance(o, Succeeded) and o.content_type == "text/plain" for o in outcomes)
    assert s3.calls["get"] == 5


async def test_missing_output_becomes_failed_not_an_exception() -> None:
    sqs, s3 = FakeSqs(), FakeS3()
    async with tracker_for(sqs_tracking(), sqs, s3) as tracker:
        tracker.expect("gone", 1e12)
        tracker.track(submission("gone"))
        sqs.send(notice("gone"))
        [outcome] = await collect(tracker, 1)
        assert tracker.statistics().fetch_failures == 1
    assert isinstance(outcome, Failed)
    assert "could not be fetched" in (outcome.failure_reason or "")
    assert outcome.output_location == "s3://out/results/gone-x.out"


async def test_visibility_is_extended_while_a_result_is_fetched() -> None:
    sqs, s3 = FakeSqs(), FakeS3()
    s3.get_gate = anyio.Event()
    async with tracker_for(sqs_tracking(visibility_timeout=1), sqs, s3) as tracker:
        tracker.expect("slow", 1e12)
        tracker.track(submission("slow"))
        s3.put("s3://out/results/slow-x.out", b"late")
        sqs.send(notice("slow"))
        with anyio.fail_after(5):
            while not sqs.called("ChangeMessageVisibilityBatch"):
                await anyio.sleep(0.05)
        assert sqs.called("ChangeMessageVisibilityBatch")[0]["Entries"][0]["VisibilityTimeout"] == 1
        assert tracker.statistics().received == 1  # not redelivered meanwhile
        s3.get_gate.set()
        [outcome] = await collect(tracker, 1)
    assert isinstance(outcome, Succeeded) and outcome.result == b"late"


async def test_unknown_ids_are_left_on_the_queue() -> None:
    sqs = FakeSqs()
    async with tracker_for(sqs_tracking(), sqs, None, fetch=False) as tracker:
        sqs.send(notice("someone-else"))
        with anyio.fail_after(5):
            while tracker.statistics().unknown < 2:
                await anyio.sleep(0.02)
    assert "m1" in sqs.messages
    assert not sqs.called("DeleteMessageBatch")
    # Reset to visible once, for its owner; afterwards left hidden rather than bounced.
    releases = sqs.called("ChangeMessageVisibilityBatch")
    assert len(releases) == 1
    assert releases[0]["Entries"][0]["VisibilityTimeout"] == 0


async def test_unknown_ids_are_deleted_when_configured() -> None:
    sqs = FakeSqs()
    async with tracker_for(sqs_tracking(delete_unknown=True), sqs, None, fetch=False) as tracker:
        sqs.send(notice("someone-else"))
        with anyio.fail_after(5):
            while sqs.messages:
                await anyio.sleep(0.02)
        assert tracker.statistics().unknown == 1


async def test_malformed_and_test_notifications_are_counted_and_deleted() -> None:
    sqs = FakeSqs()
    test_notification = json.dumps(
        {"eventVersion": "1.0", "eventSource": "aws:sagemaker", "eventName": "TestNotification"}
    )
    async with tracker_for(sqs_tracking(), sqs, None, fetch=False) as tracker:
        for body in (
            "{not json",
            "[]",
            json.dumps({"Type": "Notification", "Message": "nope"}),
            test_notification,
        ):
            sqs.send(body)
        with anyio.fail_after(5):
            while sqs.messages:
                await anyio.sleep(0.02)
        stats = tracker.statistics()
    assert (stats.malformed, stats.test_notifications, stats.parsed) == (3, 1, 0)


async def test_missing_queue_is_queue_not_found() -> None:
    with pytest.raises(QueueNotFound) as caught:
        async with open_tracker(tracking=sqs_tracking(), sqs=FakeSqs(exists=False), fetch=False):
            pytest.fail("the tracker must not start")
    assert caught.value.queue_url == QUEUE_URL


async def test_a_queue_aws_refuses_is_a_configuration_error_that_names_it() -> None:
    # No sqs:GetQueueAttributes permission: nothing is sent yet, so it is exit 2, not a traceback.
    with pytest.raises(
        ConfigError, match=f"the queue '{QUEUE_URL}' cannot be used: .*AccessDenied"
    ) as caught:
        async with open_tracker(tracking=sqs_tracking(), sqs=FakeSqs(denied=True), fetch=False):
            pytest.fail("the tracker must not start")
    cause = caught.value.__cause__
    assert cause is not None and error_code(cause) == "AccessDenied"


async def test_transient_receive_errors_are_retried() -> None:
    sqs = FakeSqs()
    sqs.receive_failures = 3
    async with tracker_for(sqs_tracking(receivers=1), sqs, None, fetch=False) as tracker:
        tracker.expect("a", 1e12)
        tracker.track(submission("a"))
        sqs.send(notice("a"))
        [outcome] = await collect(tracker, 1)
    assert isinstance(outcome, Succeeded)


async def test_a_notification_before_track_still_gets_its_result_fetched() -> None:
    # SNS can beat the 202: the notification is held, and once tracked its result is fetched from
    # S3 like any other (AWS's default: no responseBody in the notification).
    sqs, s3 = FakeSqs(), FakeS3()
    async with tracker_for(sqs_tracking(), sqs, s3) as tracker:
        for n in range(5):
            tracker.expect(f"i{n}", 1e12)
            s3.put(f"s3://out/results/i{n}-x.out", f"result {n}".encode())
            sqs.send(notice(f"i{n}"))
        with anyio.fail_after(5):
            while tracker.statistics().held < 5:
                await anyio.sleep(0.02)
        for n in range(5):
            tracker.track(submission(f"i{n}"))
        outcomes = await collect(tracker, 5)
    assert {o.inference_id: o.result for o in outcomes if isinstance(o, Succeeded)} == {
        f"i{n}": f"result {n}".encode() for n in range(5)
    }
    assert s3.calls["get"] == 5


async def test_a_message_leaves_the_queue_only_once_its_outcome_is_acknowledged() -> None:
    sqs = FakeSqs()
    async with tracker_for(sqs_tracking(visibility_timeout=1), sqs, None, fetch=False) as tracker:
        tracker.expect("early", 1e12)
        sqs.send(notice("early"))  # held: it came before track()
        with anyio.fail_after(5):
            while not tracker.statistics().held:
                await anyio.sleep(0.02)
        tracker.expect("late", 1e12)
        tracker.track(submission("late"))
        sqs.send(notice("late"))
        tracker.track(submission("early"))
        outcomes = await collect(tracker, 2, acknowledge=False)
        await anyio.sleep(1.2)  # longer than the visibility timeout: the heartbeat keeps them hidden
        assert len(sqs.messages) == 2
        assert not sqs.called("DeleteMessageBatch")
        assert tracker.statistics().unacknowledged == 2
        assert tracker.statistics().received == 2  # not redelivered
        for outcome in outcomes:
            tracker.acknowledge(outcome.inference_id)
        with anyio.fail_after(5):
            while sqs.messages:
                await anyio.sleep(0.02)
        assert tracker.statistics().unacknowledged == 0


async def test_messages_never_acknowledged_are_made_visible_on_exit() -> None:
    sqs = FakeSqs()
    async with tracker_for(sqs_tracking(), sqs, None, fetch=False) as tracker:
        tracker.expect("a", 1e12)
        tracker.track(submission("a"))
        sqs.send(notice("a"))
        await collect(tracker, 1, acknowledge=False)
    assert list(sqs.messages) == ["m1"]
    [release] = sqs.called("ChangeMessageVisibilityBatch")
    assert release["Entries"][0]["VisibilityTimeout"] == 0
    assert sqs.invisible_until["m1"] <= anyio.current_time()


async def test_expired_when_the_deadline_passes() -> None:
    sqs = FakeSqs()
    clock = [1000.0]
    async with tracker_for(sqs_tracking(), sqs, None, fetch=False, clock=lambda: clock[0]) as tracker:
        tracker.expect("late", 1010.0)
        tracker.track(submission("late", accepted_at=1000.0, deadline=1010.0))
        clock[0] = 1011.0
        [outcome] = await collect(tracker, 1)
        sqs.send(notice("late"))  # arrives after the deadline: a duplicate
        with anyio.fail_after(5):
            while sqs.messages:
                await anyio.sleep(0.02)
        assert tracker.statistics().duplicates == 1
    assert isinstance(outcome, Expired)
    assert outcome.deadline == 1010.0


async def test_forget_drops_a_held_notification() -> None:
    sqs = FakeSqs()
    async with tracker_for(sqs_tracking(), sqs, None, fetch=False) as tracker:
        tracker.expect("rejected", 1e12)
        sqs.send(notice("rejected"))
        with anyio.fail_after(5):
            while not tracker.statistics().held:
                await anyio.sleep(0.02)
        tracker.forget("rejected")
        stats = tracker.statistics()
        assert (stats.held, stats.expected) == (0, 0)
        with anyio.move_on_after(0.2):
            await tracker.__anext__()
            pytest.fail("a forgotten id produced an outcome")


@pytest.mark.parametrize("mode", ["head", "list"])
async def test_s3_polling_resolves(mode: str) -> None:
    s3 = FakeS3(page_size=7)
    count = 40
    tracking = S3Tracking(mode=mode, interval=0.05, max_interval=0.2)  # type: ignore[arg-type]
    async with tracker_for(tracking, None, s3) as tracker:
        now = anyio.current_time()
        for n in range(count):
            tracker.expect(f"i{n}", 1e12)
            tracker.track(submission(f"i{n}", accepted_at=now))
        # Older outputs of another run share the directory.
        for n in range(10):
            s3.put(f"s3://out/results/old{n}.out", b"old")
        await anyio.sleep(0.15)
        for n in range(count):
            if n % 4 == 0:
                s3.put(f"s3://out/failures/i{n}-x-error.out", f"bad input {n}".encode())
            else:
                s3.put(f"s3://out/results/i{n}-x.out", f"out {n}".encode())
        outcomes = await collect(tracker, count)
        stats = tracker.statistics()
    assert sorted(o.inference_id for o in outcomes) == sorted(f"i{n}" for n in range(count))
    for outcome in outcomes:
        n = int(outcome.inference_id[1:])
        if n % 4 == 0:
            assert isinstance(outcome, Failed) and outcome.failure_reason == f"bad input {n}"
        else:
            assert isinstance(outcome, Succeeded) and outcome.result == f"out {n}".encode()
    assert stats.s3_calls["list" if mode == "list" else "head"] > 0
    if mode == "list":
        assert stats.s3_calls["head"] < count
    # The tracker's own S3 calls are counted as the fake saw them.
    assert sum(stats.s3_calls.values()) == sum(s3.calls.values())


async def test_hybrid_recovers_lost_notifications_through_s3() -> None:
    sqs, s3 = FakeSqs(), FakeS3()
    tracking = HybridTracking(
        queue_url=QUEUE_URL,
        reconcile_after=0.2,
        sqs=sqs_tracking(),
        s3=S3Tracking(mode="list", interval=0.05, max_interval=0.2),
    )
    async with tracker_for(tracking, sqs, s3, fetch=False, clock=anyio.current_time) as tracker:
        now = anyio.current_time()
        for n in range(10):
            tracker.expect(f"i{n}", 1e12)
            tracker.track(submission(f"i{n}", accepted_at=now))
            s3.put(f"s3://out/results/i{n}-x.out", b"x")
            if n % 3:
                sqs.send(notice(f"i{n}"))  # the others' notices are lost
        outcomes = await collect(tracker, 10)
        stats = tracker.statistics()
    assert sorted(o.inference_id for o in outcomes) == sorted(f"i{n}" for n in range(10))
    assert all(isinstance(o, Succeeded) for o in outcomes)
    assert stats.parsed >= 6
    assert stats.s3_calls["list"] >= 1


async def test_leaving_the_context_cancels_every_task() -> None:
    before = asyncio.all_tasks()
    sqs, s3 = FakeSqs(), FakeS3()
    s3.get_gate = anyio.Event()  # a fetch that never finishes
    tracking = HybridTracking(
        queue_url=QUEUE_URL,
        reconcile_after=0.05,
        sqs=sqs_tracking(),
        s3=S3Tracking(mode="head", interval=0.05),
    )
    async with tracker_for(tracking, sqs, s3) as tracker:
        for n in range(30):
            tracker.expect(f"i{n}", 1e12)
            tracker.track(submission(f"i{n}"))
            sqs.send(notice(f"i{n}"))
        await anyio.sleep(0.2)
        assert len(asyncio.all_tasks()) > len(before)
    await anyio.lowlevel.checkpoint()
    assert asyncio.all_tasks() == before
    with anyio.fail_after(1):
        assert [o async for o in tracker] == []  # the stream ends once the tracker is closed


async def test_configuration_errors() -> None:
    from fanout._exceptions import ConfigError

    with pytest.raises(ConfigError):
        async with open_tracker(tracking=sqs_tracking(), sqs=None, fetch=False):
            pass
    with pytest.raises(ConfigError):
        async with open_tracker(tracking=S3Tracking(), s3=None, fetch=False):
            pass
    with pytest.raises(ConfigError):
        async with open_tracker(tracking=sqs_tracking(), sqs=FakeSqs(), fetch=True, s3=None):
            pass
    with pytest.raises(ConfigError):
        async with open_tracker(tracking=sqs_tracking(), sqs=FakeSqs(), fetch=False, fetch_concurrency=0):
            pass
