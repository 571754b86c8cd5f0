"""The emulator's SQS store against a plain model, driven through its JSON operations without HTTP."""

from __future__ import annotations

import base64
import zlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from fanout.testing._s3 import S3Error, _decode_aws_chunked
from fanout.testing._sqs import SqsError, SqsStore, message_attributes_md5


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _done(coroutine: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run a coroutine that never suspends (a receive with WaitTimeSeconds=0)."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        result: dict[str, Any] = stop.value
        return result
    raise AssertionError("the coroutine suspended")


def _store(clock: FakeClock) -> tuple[SqsStore, str]:
    store = SqsStore(
        region="us-east-1", account_id="123456789012", base_url=lambda: "http://emu", clock=clock
    )
    return store, store.create_queue("q", {"VisibilityTimeout": "10"})


@dataclass
class Model:
    """What should be in the queue: message id -> (visible_at or None when visible, receive count)."""

    messages: dict[str, tuple[float | None, int]] = field(default_factory=dict)
    handles: list[tuple[str, str, int]] = field(default_factory=list)  # (handle, message id, receive count)

    def visible(self, now: float) -> set[str]:
        return {m for m, (at, _) in self.messages.items() if at is None or at <= now}


operations = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(1, 4)),
        st.tuples(st.just("receive"), st.integers(1, 10), st.integers(0, 20)),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 5.0, 10.0, 30.0])),
        st.tuples(st.just("delete"), st.integers(0, 1000)),
        st.tuples(st.just("release"), st.integers(0, 1000)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_store_agrees_with_the_model(ops: list[tuple[Any, ...]]) -> None:
    clock = FakeClock()
    store, url = _store(clock)
    model = Model()
    for op in ops:
        if op[0] == "send":
            for i in range(op[1]):
                sent = store._send_message({"QueueUrl": url, "MessageBody": f"m{i}"})
                model.messages[sent["MessageId"]] = (None, 0)
        elif op[0] == "receive":
            visible_before = model.visible(clock.now)
            got = _done(
                store._receive_message(
                    {
                        "QueueUrl": url,
                        "MaxNumberOfMessages": op[1],
                        "VisibilityTimeout": op[2],
                        "AttributeNames": ["ApproximateReceiveCount"],
                    }
                )
            ).get("Messages", [])
            assert len(got) == min(op[1], len(visible_before))
            for message in got:
                assert message["MessageId"] in visible_before
                count = model.messages[message["MessageId"]][1] + 1
                assert message["Attributes"]["ApproximateReceiveCount"] == str(count)
                model.messages[message["MessageId"]] = (clock.now + op[2], count)
                model.handles.append((message["ReceiptHandle"], message["MessageId"], count))
        elif op[0] == "advance":
            clock.now += op[1]
        elif model.handles:
            handle, message_id, count = model.handles[op[1] % len(model.handles)]
            current = message_id in model.messages and model.messages[message_id][1] == count
            if op[0] == "delete":
                store._delete_message({"QueueUrl": url, "ReceiptHandle": handle})
                if current:
                    del model.messages[message_id]
            else:
                in_flight = current and message_id not in model.visible(clock.now)
                try:
                    store._change_message_visibility(
                        {"QueueUrl": url, "ReceiptHandle": handle, "VisibilityTimeout": 0}
                    )
                except SqsError as error:
                    assert not in_flight
                    assert error.code == ("MessageNotInflight" if current else "InvalidParameterValue")
                else:
                    assert in_flight
                    model.messages[message_id] = (None, count)
        stats = store.statistics()["q"]
        visible = len(model.visible(clock.now))
        assert (stats["visible"], stats["in_flight"], stats["delayed"]) == (
            visible,
            len(model.messages) - visible,
            0,
        )


def test_delayed_messages_become_visible() -> None:
    clock = FakeClock()
    store, url = _store(clock)
    store.send_message("q", "later", delay_seconds=5)
    store.send_message("q", "now")
    assert store.statistics()["q"]["delayed"] == 1
    first = _done(store._receive_message({"QueueUrl": url, "MaxNumberOfMessages": 10}))["Messages"]
    assert [m["Body"] for m in first] == ["now"]
    clock.now += 5
    second = _done(store._receive_message({"QueueUrl": url, "MaxNumberOfMessages": 10}))["Messages"]
    assert [m["Body"] for m in second] == ["later"]


def test_pending_heap_stays_bounded_under_churn() -> None:
    clock = FakeClock()
    store, url = _store(clock)
    store.send_message("q", "one")
    for _ in range(5000):
        [message] = _done(store._receive_message({"QueueUrl": url, "VisibilityTimeout": 600}))["Messages"]
        store._change_message_visibility(
            {"QueueUrl": url, "ReceiptHandle": message["ReceiptHandle"], "VisibilityTimeout": 0}
        )
    queue = store._queues["q"]
    assert len(queue.pending) <= 1025
    assert len(queue.visible) == 1


def test_batch_validation() -> None:
    store, url = _store(FakeClock())
    with pytest.raises(SqsError) as empty:
        store._send_message_batch({"QueueUrl": url, "Entries": []})
    assert empty.value.query_code == "AWS.SimpleQueueService.EmptyBatchRequest"
    with pytest.raises(SqsError) as repeated:
        store._send_message_batch({"QueueUrl": url, "Entries": [{"Id": "a", "MessageBody": "x"}] * 2})
    assert repeated.value.code == "BatchEntryIdsNotDistinct"
    with pytest.raises(SqsError) as too_many:
        store._send_message_batch(
            {"QueueUrl": url, "Entries": [{"Id": f"{i}", "MessageBody": "x"} for i in range(11)]}
        )
    assert too_many.value.code == "TooManyEntriesInBatchRequest"
    result = store._send_message_batch(
        {"QueueUrl": url, "Entries": [{"Id": "ok", "MessageBody": "x"}, {"Id": "bad", "MessageBody": ""}]}
    )
    assert [e["Id"] for e in result["Successful"]] == ["ok"]
    assert result["Failed"] == [
        {
            "Id": "bad",
            "SenderFault": True,
            "Code": "MissingParameter",
            "Message": result["Failed"][0]["Message"],
        }
    ]


def test_missing_queue_and_conflicting_attributes() -> None:
    store, _ = _store(FakeClock())
    with pytest.raises(SqsError) as missing:
        store.send_message("nope", "x")
    assert (missing.value.code, missing.value.query_code) == (
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
    )
    assert store.create_queue("q", {"VisibilityTimeout": "10"}) == "http://emu/123456789012/q"
    with pytest.raises(SqsError) as conflict:
        store.create_queue("q", {"VisibilityTimeout": "11"})
    assert conflict.value.code == "QueueNameExists"
    with pytest.raises(SqsError):
        store.create_queue("bad name")


def test_message_attributes_md5_is_order_independent() -> None:
    a = {"b": {"DataType": "String", "StringValue": "1"}, "a": {"DataType": "Binary", "BinaryValue": "AAE="}}
    assert message_attributes_md5(a) == message_attributes_md5(dict(reversed(list(a.items()))))
    assert len(message_attributes_md5(a)) == 32


@given(st.binary(max_size=3000), st.lists(st.integers(1, 700), min_size=1, max_size=8), st.booleans())
def test_aws_chunked_round_trip(payload: bytes, sizes: list[int], signed: bool) -> None:
    chunks, position, index = [], 0, 0
    while position < len(payload):
        size = sizes[index % len(sizes)]
        part = payload[position : position + size]
        extension = f";chunk-signature={'a' * 64}" if signed else ""
        chunks.append(f"{len(part):x}{extension}\r\n".encode() + part + b"\r\n")
        position += size
        index += 1
    crc = base64.b64encode(zlib.crc32(payload).to_bytes(4, "big")).decode()
    body = b"".join(chunks) + f"0\r\nx-amz-checksum-crc32:{crc}\r\n\r\n".encode()
    assert _decode_aws_chunked(body) == (payload, {"x-amz-checksum-crc32": crc})


def test_aws_chunked_truncated() -> None:
    with pytest.raises(S3Error) as caught:
        _decode_aws_chunked(b"10\r\nshort")
    assert caught.value.code == "IncompleteBody"
