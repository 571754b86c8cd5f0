"""An in-memory SQS (standard queues) and its JSON-protocol handler.

Every operation costs O(1) per message touched, whatever the queue depth: visible
messages wait in a deque, in-flight and delayed ones in a heap keyed by the time
they become visible, and both structures are cleaned lazily (an entry is valid
only while it matches its message's current state and generation). Long polls
sleep on an event that is set when a message becomes visible, and wake early
for the next in-flight message whose visibility timeout runs out.

Receipt handles name one delivery: deleting with the handle of an older delivery
succeeds without deleting anything, as SQS documents.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import itertools
import json
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final

import anyio
from aiohttp import web

__all__ = ["SqsError", "SqsStore", "message_attributes_md5", "sqs_operation"]

_JSON: Final = "application/x-amz-json-1.0"
_VISIBLE: Final = 0
_IN_FLIGHT: Final = 1
_DELAYED: Final = 2
_MAX_VISIBILITY: Final = 43_200
_MAX_DELAY: Final = 900
_MAX_WAIT: Final = 20
_MAX_BODY: Final = 262_144
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}(\.fifo)?")
_BATCH_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")
_HANDLE_PREFIX: Final = "fanout-rh"

# Short code -> the legacy query code that SQS sends in x-amzn-query-error (and botocore reports).
_QUERY_CODES: Final = {
    "QueueDoesNotExist": "AWS.SimpleQueueService.NonExistentQueue",
    "MessageNotInflight": "AWS.SimpleQueueService.MessageNotInflight",
    "EmptyBatchRequest": "AWS.SimpleQueueService.EmptyBatchRequest",
    "TooManyEntriesInBatchRequest": "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
    "BatchEntryIdsNotDistinct": "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
    "InvalidBatchEntryId": "AWS.SimpleQueueService.InvalidBatchEntryId",
    "UnsupportedOperation": "AWS.SimpleQueueService.UnsupportedOperation",
    "QueueNameExists": "QueueAlreadyExists",
}

_DEFAULT_ATTRIBUTES: Final = {
    "VisibilityTimeout": "30",
    "DelaySeconds": "0",
    "ReceiveMessageWaitTimeSeconds": "0",
    "MaximumMessageSize": str(_MAX_BODY),
    "MessageRetentionPeriod": "345600",
    "SqsManagedSseEnabled": "true",
}
_COUNT_ATTRIBUTES: Final = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)
_SYSTEM_ATTRIBUTES: Final = (
    "SenderId",
    "SentTimestamp",
    "ApproximateReceiveCount",
    "ApproximateFirstReceiveTimestamp",
)


class SqsError(Exception):
    """An SQS error: ``code`` is the modelled name, ``query_code`` what botocore reports as the code."""

    def __init__(self, code: str, message: str, *, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.query_code = _QUERY_CODES.get(code, code)
        self.message = message
        self.status = status


def sqs_operation(request: web.BaseRequest) -> str:
    """The operation named by ``X-Amz-Target: AmazonSQS.<Operation>``, or ``"Unknown"``."""
    target = request.headers.get("X-Amz-Target", "")
    _, _, operation = target.rpartition(".")
    return operation or "Unknown"


def message_attributes_md5(attributes: dict[str, Any]) -> str:
    """The MD5 that SQS reports for message attributes (names sorted, lengths big-endian)."""
    digest = hashlib.md5(usedforsecurity=False)
    for name in sorted(attributes):
        value = attributes[name]
        for part in (name, value["DataType"]):
            encoded = part.encode()
            digest.update(len(encoded).to_bytes(4, "big") + encoded)
        if "StringValue" in value:
            data = str(value["StringValue"]).encode()
            digest.update(b"\x01" + len(data).to_bytes(4, "big") + data)
        else:
            data = base64.b64decode(value.get("BinaryValue", ""))
            digest.update(b"\x02" + len(data).to_bytes(4, "big") + data)
    return digest.hexdigest()


class _Message:
    __slots__ = (
        "attributes",
        "attributes_md5",
        "body",
        "body_md5",
        "first_receive_ms",
        "generation",
        "id",
        "receive_count",
        "sent_ms",
        "state",
    )

    def __init__(self, body: str, attributes: dict[str, Any] | None, state: int) -> None:
        self.id = str(uuid.uuid4())
        self.body = body
        self.body_md5 = hashlib.md5(body.encode(), usedforsecurity=False).hexdigest()
        self.attributes = attributes
        self.attributes_md5 = message_attributes_md5(attributes) if attributes else None
        self.sent_ms = int(time.time() * 1000)
        self.state = state
        self.generation = 0
        self.receive_count = 0
        self.first_receive_ms = 0


class _Queue:
    """One queue's messages; times come from ``clock`` (monotonic seconds)."""

    def __init__(self, name: str, attributes: dict[str, str], clock: Callable[[], float]) -> None:
        self.name = name
        self.clock = clock
        self.attributes = attributes
        self.created = str(int(time.time()))
        self.messages: dict[str, _Message] = {}
        self.visible: deque[str] = deque()
        # (visible_at, tie-breaker, message id, generation); stale entries are skipped when popped.
        self.pending: list[tuple[float, int, str, int]] = []
        self.counts = [0, 0, 0]  # indexed by state
        self.sent = self.received = self.deleted = 0
        self.deleted_queue = False
        self._event: anyio.Event | None = None
        self._tie = itertools.count()

    def int_attribute(self, name: str) -> int:
        return int(self.attributes[name])

    def wake(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    def arrival(self) -> anyio.Event:
        if self._event is None:
            self._event = anyio.Event()
        return self._event

    def add(self, body: str, attributes: dict[str, Any] | None, delay: float) -> _Message:
        message = _Message(body, attributes, _DELAYED if delay > 0 else _VISIBLE)
        self.messages[message.id] = message
        self.counts[message.state] += 1
        self.sent += 1
        if delay > 0:
            self._schedule(message, self.clock() + delay)
        else:
            self.visible.append(message.id)
            self.wake()
        return message

    def _schedule(self, message: _Message, visible_at: float) -> None:
        message.generation += 1
        heapq.heappush(self.pending, (visible_at, next(self._tie), message.id, message.generation))
        live = self.counts[_IN_FLIGHT] + self.counts[_DELAYED]
        if len(self.pending) > 2 * live + 1024:
            self._compact()

    def _compact(self) -> None:
        messages = self.messages
        self.pending = [
            entry
            for entry in self.pending
            if (m := messages.get(entry[2])) is not None and m.generation == entry[3] and m.state != _VISIBLE
        ]
        heapq.heapify(self.pending)

    def promote(self, now: float) -> None:
        """Make every in-flight or delayed message whose time has come visible again."""
        pending = self.pending
        woke = False
        while pending and pending[0][0] <= now:
            _, _, message_id, generation = heapq.heappop(pending)
            message = self.messages.get(message_id)
            if message is None or message.generation != generation or message.state == _VISIBLE:
                continue
            self.counts[message.state] -= 1
            self.counts[_VISIBLE] += 1
            message.state = _VISIBLE
            self.visible.append(message_id)
            woke = True
        if woke:
            self.wake()

    def next_due(self, now: float) -> float:
        """Seconds until the next pending message may become visible (inf when none)."""
        return self.pending[0][0] - now if self.pending else float("inf")

    def take(self, limit: int, visibility: int) -> list[_Message]:
        now = self.clock()
        self.promote(now)
        taken: list[_Message] = []
        visible, messages = self.visible, self.messages
        now_ms = int(time.time() * 1000)
        while visible and len(taken) < limit:
            message = messages.get(visible.popleft())
            if message is None or message.state != _VISIBLE:
                continue
            message.state = _IN_FLIGHT
            message.receive_count += 1
            if message.receive_count == 1:
                message.first_receive_ms = now_ms
            self._schedule(message, now + visibility)
            taken.append(message)
        self.counts[_VISIBLE] -= len(taken)
        self.counts[_IN_FLIGHT] += len(taken)
        self.received += len(taken)
        return taken

    def delete(self, message: _Message) -> None:
        del self.messages[message.id]
        self.counts[message.state] -= 1
        self.deleted += 1

    def change_visibility(self, message: _Message, timeout: int) -> None:
        self.promote(self.clock())
        if message.state != _IN_FLIGHT:
            raise SqsError("MessageNotInflight", "The message referred to isn't in flight.")
        if timeout == 0:
            message.generation += 1
            self.counts[_IN_FLIGHT] -= 1
            self.counts[_VISIBLE] += 1
            message.state = _VISIBLE
            self.visible.append(message.id)
            self.wake()
        else:
            self._schedule(message, self.clock() + timeout)

    def purge(self) -> None:
        self.messages.clear()
        self.visible.clear()
        self.pending.clear()
        self.counts = [0, 0, 0]

    def statistics(self) -> dict[str, int]:
        self.promote(self.clock())
        return {
            "visible": self.counts[_VISIBLE],
            "in_flight": self.counts[_IN_FLIGHT],
            "delayed": self.counts[_DELAYED],
            "sent": self.sent,
            "received": self.received,
            "deleted": self.deleted,
        }


def _int_param(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SqsError(
            "InvalidParameterValue",
            f"Value {value} for parameter {name} is invalid. Reason: must be between {low} and {high}.",
        )
    return value


def _batch_entries(body: dict[str, Any], action: str) -> list[dict[str, Any]]:
    entries = body.get("Entries") or []
    if not entries:
        raise SqsError(
            "EmptyBatchRequest", f"There should be at least one {action}RequestEntry in the request."
        )
    if len(entries) > 10:
        raise SqsError(
            "TooManyEntriesInBatchRequest",
            f"Maximum number of entries per request are 10. You have sent {len(entries)}.",
        )
    seen: set[str] = set()
    for entry in entries:
        entry_id = entry.get("Id", "")
        if not isinstance(entry_id, str) or not _BATCH_ID.fullmatch(entry_id):
            raise SqsError(
                "InvalidBatchEntryId",
                "A batch entry id can only contain alphanumeric characters, hyphens and underscores. "
                "It can be at most 80 letters long.",
            )
        if entry_id in seen:
            raise SqsError("BatchEntryIdsNotDistinct", f"Id {entry_id} repeated.")
        seen.add(entry_id)
    return list(entries)


def _check_attributes(attributes: dict[str, Any] | None) -> dict[str, Any] | None:
    if not attributes:
        return None
    checked: dict[str, Any] = {}
    for name, value in attributes.items():
        data_type = value.get("DataType") if isinstance(value, dict) else None
        if not isinstance(data_type, str) or data_type.split(".", 1)[0] not in ("String", "Number", "Binary"):
            raise SqsError(
                "InvalidParameterValue", f"The message attribute '{name}' has an invalid DataType."
            )
        if data_type.startswith("Binary"):
            raw = value.get("BinaryValue")
            if raw is None:
                raise SqsError(
                    "InvalidParameterValue", f"The message attribute '{name}' must contain a BinaryValue."
                )
            encoded = base64.b64encode(raw).decode() if isinstance(raw, bytes | bytearray) else str(raw)
            checked[name] = {"DataType": data_type, "BinaryValue": encoded}
        else:
            text = value.get("StringValue")
            if text is None or text == "":
                raise SqsError(
                    "InvalidParameterValue", f"The message attribute '{name}' must contain a StringValue."
                )
            checked[name] = {"DataType": data_type, "StringValue": str(text)}
    return checked


def _wants(names: Iterable[str]) -> Callable[[str], bool] | None:
    """A predicate for requested message attribute names (``All``, ``.*``, ``prefix.*``, exact names)."""
    exact: set[str] = set()
    prefixes: list[str] = []
    for name in names:
        if name in ("All", ".*"):
            return lambda _name: True
        if name.endswith(".*"):
            prefixes.append(name[:-1])
        else:
            exact.add(name)
    if not exact and not prefixes:
        return None
    return lambda name: name in exact or name.startswith(tuple(prefixes))


class SqsStore:
    """In-memory standard SQS queues with an aiohttp handler for the JSON protocol."""

    def __init__(
        self,
        *,
        region: str,
        account_id: str,
        base_url: Callable[[], str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.region = region
        self._clock = clock
        self.account_id = account_id
        self.base_url = base_url
        self._queues: dict[str, _Queue] = {}
        self._operations: dict[str, Callable[[dict[str, Any]], Any]] = {
            "CreateQueue": self._create_queue,
            "GetQueueUrl": self._get_queue_url,
            "ListQueues": self._list_queues,
            "DeleteQueue": self._delete_queue,
            "GetQueueAttributes": self._get_queue_attributes,
            "SetQueueAttributes": self._set_queue_attributes,
            "SendMessage": self._send_message,
            "SendMessageBatch": self._send_message_batch,
            "DeleteMessage": self._delete_message,
            "DeleteMessageBatch": self._delete_message_batch,
            "ChangeMessageVisibility": self._change_message_visibility,
            "ChangeMessageVisibilityBatch": self._change_message_visibility_batch,
            "PurgeQueue": self._purge_queue,
        }
        self._request_ids = itertools.count(1)

    # -- Python API ---------------------------------------------------------------------------------

    def create_queue(self, name: str, attributes: dict[str, str] | None = None) -> str:
        """Create the queue (idempotent when attributes agree) and return its URL."""
        if not _QUEUE_NAME.fullmatch(name):
            raise SqsError(
                "InvalidParameterValue",
                "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length",
            )
        given = _queue_attributes(attributes)
        queue = self._queues.get(name)
        if queue is not None:
            if any(queue.attributes.get(k) != v for k, v in given.items()):
                raise SqsError("QueueNameExists", f"A queue already exists with the same name: {name}")
            return self.queue_url(name)
        self._queues[name] = _Queue(name, {**_DEFAULT_ATTRIBUTES, **given}, self._clock)
        return self.queue_url(name)

    def queue_url(self, name: str) -> str:
        return f"{self.base_url()}/{self.account_id}/{name}"

    def queue_arn(self, name: str) -> str:
        return f"arn:aws:sqs:{self.region}:{self.account_id}:{name}"

    def queue_exists(self, name: str) -> bool:
        return name in self._queues

    def send_message(
        self,
        queue_name: str,
        body: str,
        *,
        message_attributes: dict[str, Any] | None = None,
        delay_seconds: float = 0,
    ) -> str:
        """Enqueue one message and return its MessageId.

        ``message_attributes`` use SQS's JSON form, ``{"k": {"DataType": "String", "StringValue": "v"}}``;
        a ``BinaryValue`` may be bytes or base64 text. Raises ``SqsError`` when the queue is missing.
        """
        queue = self._queue_named(queue_name)
        return queue.add(body, _check_attributes(message_attributes), delay_seconds).id

    def statistics(self) -> dict[str, dict[str, int]]:
        """Per queue: visible, in_flight, delayed, sent, received, deleted."""
        return {name: queue.statistics() for name, queue in self._queues.items()}

    # -- wire protocol ------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        operation = sqs_operation(request)
        try:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                raise SqsError("InvalidParameterValue", "The request body is not valid JSON.") from None
            if not isinstance(body, dict):
                raise SqsError("InvalidParameterValue", "The request body must be a JSON object.")
            if operation == "ReceiveMessage":
                result = await self._receive_message(body)
            else:
                method = self._operations.get(operation)
                if method is None:
                    raise SqsError("UnsupportedOperation", f"The emulator does not support {operation}.")
                result = method(body)
        except SqsError as error:
            return self._error(error)
        return web.Response(
            body=json.dumps(result).encode(),
            content_type=_JSON,
            headers={"x-amzn-RequestId": self._request_id()},
        )

    def _request_id(self) -> str:
        return f"00000000-0000-4000-8000-{next(self._request_ids):012x}"

    def _error(self, error: SqsError) -> web.Response:
        return web.Response(
            status=error.status,
            body=json.dumps({"__type": f"com.amazonaws.sqs#{error.code}", "message": error.message}).encode(),
            content_type=_JSON,
            headers={
                "x-amzn-query-error": f"{error.query_code};Sender",
                "x-amzn-RequestId": self._request_id(),
            },
        )

    def _queue_named(self, name: str) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            raise SqsError("QueueDoesNotExist", "The specified queue does not exist.")
        return queue

    def _queue(self, body: dict[str, Any]) -> _Queue:
        url = body.get("QueueUrl")
        if not isinstance(url, str) or not url:
            raise SqsError("MissingParameter", "The request must contain the parameter QueueUrl.")
        # Any host will do: the emulator may be reached under several names.
        parts = url.rstrip("/").rsplit("/", 2)
        if len(parts) == 3 and parts[1] != self.account_id:
            raise SqsError("QueueDoesNotExist", "The specified queue does not exist.")
        return self._queue_named(parts[-1])

    def _create_queue(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("QueueName")
        if not isinstance(name, str):
            raise SqsError("MissingParameter", "The request must contain the parameter QueueName.")
        return {"QueueUrl": self.create_queue(name, body.get("Attributes"))}

    def _get_queue_url(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("QueueName")
        owner = body.get("QueueOwnerAWSAccountId")
        if not isinstance(name, str) or name not in self._queues or owner not in (None, self.account_id):
            raise SqsError("QueueDoesNotExist", "The specified queue does not exist.")
        return {"QueueUrl": self.queue_url(name)}

    def _list_queues(self, body: dict[str, Any]) -> dict[str, Any]:
        prefix = body.get("QueueNamePrefix") or ""
        urls = [self.queue_url(name) for name in sorted(self._queues) if name.startswith(prefix)]
        return {"QueueUrls": urls[: _int_param(body, "MaxResults", 1000, 1, 1000)]} if urls else {}

    def _delete_queue(self, body: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(body)
        del self._queues[queue.name]
        queue.deleted_queue = True
        queue.wake()
        return {}

    def _get_queue_attributes(self, body: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(body)
        names = body.get("AttributeNames") or []
        if not names:
            return {}
        queue.promote(self._clock())
        everything = {
            **queue.attributes,
            "QueueArn": self.queue_arn(queue.name),
            "ApproximateNumberOfMessages": str(queue.counts[_VISIBLE]),
            "ApproximateNumberOfMessagesNotVisible": str(queue.counts[_IN_FLIGHT]),
            "ApproximateNumberOfMessagesDelayed": str(queue.counts[_DELAYED]),
            "CreatedTimestamp": queue.created,
            "LastModifiedTimestamp": queue.created,
        }
        if "All" in names:
            return {"Attributes": everything}
        unknown = [name for name in names if name not in everything and name not in _KNOWN_QUEUE_ATTRIBUTES]
        if unknown:
            raise SqsError("InvalidAttributeName", f"Unknown Attribute {unknown[0]}.")
        return {"Attributes": {name: everything[name] for name in names if name in everything}}

    def _set_queue_attributes(self, body: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(body)
        queue.attributes.update(_queue_attributes(body.get("Attributes")))
        return {}

    def _send_one(self, queue: _Queue, entry: dict[str, Any]) -> dict[str, Any]:
        text = entry.get("MessageBody")
        if not isinstance(text, str) or not text:
            raise SqsError("MissingParameter", "The request must contain the parameter MessageBody.")
        if len(text.encode()) > queue.int_attribute("MaximumMessageSize"):
            raise SqsError(
                "InvalidParameterValue", "One or more parameters are invalid. Reason: Message too long."
            )
        delay = _int_param(entry, "DelaySeconds", queue.int_attribute("DelaySeconds"), 0, _MAX_DELAY)
        message = queue.add(text, _check_attributes(entry.get("MessageAttributes")), delay)
        result = {"MessageId": message.id, "MD5OfMessageBody": message.body_md5}
        if message.attributes_md5 is not None:
            result["MD5OfMessageAttributes"] = message.attributes_md5
        return result

    def _send_message(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._send_one(self._queue(body), body)

    def _send_message_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._batch(body, "SendMessageBatch", self._send_one)

    async def _receive_message(self, body: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(body)
        limit = _int_param(body, "MaxNumberOfMessages", 1, 1, 10)
        visibility = _int_param(
            body, "VisibilityTimeout", queue.int_attribute("VisibilityTimeout"), 0, _MAX_VISIBILITY
        )
        wait = _int_param(
            body, "WaitTimeSeconds", queue.int_attribute("ReceiveMessageWaitTimeSeconds"), 0, _MAX_WAIT
        )
        taken = queue.take(limit, visibility)
        if not taken and wait > 0:
            deadline = self._clock() + wait
            while not taken and not queue.deleted_queue:
                now = self._clock()
                if now >= deadline:
                    break
                with anyio.move_on_after(min(deadline - now, queue.next_due(now) + 0.001)):
                    await queue.arrival().wait()
                taken = queue.take(limit, visibility)
        if not taken:
            return {}
        system_names = [*(body.get("MessageSystemAttributeNames") or ()), *(body.get("AttributeNames") or ())]
        system = (
            _SYSTEM_ATTRIBUTES
            if "All" in system_names
            else [n for n in _SYSTEM_ATTRIBUTES if n in system_names]
        )
        wanted = _wants(body.get("MessageAttributeNames") or ())
        out = []
        for message in taken:
            handle = base64.urlsafe_b64encode(
                f"{_HANDLE_PREFIX}:{queue.name}:{message.id}:{message.receive_count}".encode()
            ).decode()
            item: dict[str, Any] = {
                "MessageId": message.id,
                "ReceiptHandle": handle,
                "MD5OfBody": message.body_md5,
                "Body": message.body,
            }
            if system:
                item["Attributes"] = {
                    name: _system_attribute(self.account_id, message, name) for name in system
                }
            if wanted is not None and message.attributes:
                chosen = {k: v for k, v in message.attributes.items() if wanted(k)}
                if chosen:
                    item["MD5OfMessageAttributes"] = (
                        message.attributes_md5
                        if len(chosen) == len(message.attributes)
                        else message_attributes_md5(chosen)
                    )
                    item["MessageAttributes"] = chosen
            out.append(item)
        return {"Messages": out}

    def _message_for(self, queue: _Queue, handle: Any) -> _Message | None:
        """The message whose *current* delivery ``handle`` names, or None for an outdated handle."""
        try:
            prefix, queue_name, message_id, count = (
                base64.urlsafe_b64decode(str(handle).encode()).decode().split(":")
            )
            receive_count = int(count)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise SqsError(
                "ReceiptHandleIsInvalid", f'The input receipt handle "{handle}" is not valid.'
            ) from None
        if prefix != _HANDLE_PREFIX or queue_name != queue.name:
            raise SqsError("ReceiptHandleIsInvalid", f'The input receipt handle "{handle}" is not valid.')
        message = queue.messages.get(message_id)
        if message is None or message.receive_count != receive_count:
            return None
        return message

    def _delete_one(self, queue: _Queue, handle: Any) -> None:
        message = self._message_for(queue, handle)
        if message is not None:
            queue.delete(message)

    def _delete_message(self, body: dict[str, Any]) -> dict[str, Any]:
        self._delete_one(self._queue(body), body.get("ReceiptHandle"))
        return {}

    def _delete_message_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._batch(
            body,
            "DeleteMessageBatch",
            lambda queue, entry: self._delete_one(queue, entry.get("ReceiptHandle")),
        )

    def _change_one(self, queue: _Queue, entry: dict[str, Any]) -> None:
        timeout = _int_param(entry, "VisibilityTimeout", -1, 0, _MAX_VISIBILITY)
        if timeout < 0:
            raise SqsError("MissingParameter", "The request must contain the parameter VisibilityTimeout.")
        message = self._message_for(queue, entry.get("ReceiptHandle"))
        if message is None:
            raise SqsError(
                "InvalidParameterValue",
                "Value for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired.",
            )
        queue.change_visibility(message, timeout)

    def _change_message_visibility(self, body: dict[str, Any]) -> dict[str, Any]:
        self._change_one(self._queue(body), body)
        return {}

    def _change_message_visibility_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._batch(body, "ChangeMessageVisibilityBatch", self._change_one)

    def _batch(
        self,
        body: dict[str, Any],
        action: str,
        one: Callable[[_Queue, dict[str, Any]], dict[str, Any] | None],
    ) -> dict[str, Any]:
        """Apply ``one`` to every entry; each succeeds (with what ``one`` returns) or fails alone."""
        queue = self._queue(body)
        successful: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for entry in _batch_entries(body, action):
            try:
                successful.append({"Id": entry["Id"], **(one(queue, entry) or {})})
            except SqsError as error:
                failed.append(_failure(entry["Id"], error))
        return {"Successful": successful, "Failed": failed}

    def _purge_queue(self, body: dict[str, Any]) -> dict[str, Any]:
        self._queue(body).purge()
        return {}


_KNOWN_QUEUE_ATTRIBUTES: Final = frozenset(
    {
        *_COUNT_ATTRIBUTES,
        *_DEFAULT_ATTRIBUTES,
        "All",
        "Policy",
        "QueueArn",
        "CreatedTimestamp",
        "LastModifiedTimestamp",
        "KmsMasterKeyId",
        "KmsDataKeyReusePeriodSeconds",
        "RedrivePolicy",
        "RedriveAllowPolicy",
        "FifoQueue",
        "ContentBasedDeduplication",
        "DeduplicationScope",
        "FifoThroughputLimit",
    }
)
_READ_ONLY_ATTRIBUTES: Final = frozenset(
    {*_COUNT_ATTRIBUTES, "All", "QueueArn", "CreatedTimestamp", "LastModifiedTimestamp"}
)


def _queue_attributes(attributes: dict[str, Any] | None) -> dict[str, str]:
    given = {str(k): str(v) for k, v in (attributes or {}).items()}
    for key, low, high in (
        ("VisibilityTimeout", 0, _MAX_VISIBILITY),
        ("DelaySeconds", 0, _MAX_DELAY),
        ("ReceiveMessageWaitTimeSeconds", 0, _MAX_WAIT),
    ):
        if key in given and not (given[key].isdigit() and low <= int(given[key]) <= high):
            raise SqsError("InvalidAttributeValue", f"Invalid value for the parameter {key}.")
    unknown = [key for key in given if key not in _KNOWN_QUEUE_ATTRIBUTES or key in _READ_ONLY_ATTRIBUTES]
    if unknown:
        raise SqsError("InvalidAttributeName", f"Unknown Attribute {unknown[0]}.")
    return given


def _failure(entry_id: str, error: SqsError) -> dict[str, Any]:
    return {"Id": entry_id, "SenderFault": True, "Code": error.code, "Message": error.message}


def _system_attribute(account_id: str, message: _Message, name: str) -> str:
    if name == "SenderId":
        return account_id
    if name == "SentTimestamp":
        return str(message.sent_ms)
    if name == "ApproximateReceiveCount":
        return str(message.receive_count)
    return str(message.first_receive_ms)
