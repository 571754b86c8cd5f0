"""In-memory SNS topics that deliver to SQS queues, with a query-protocol (XML) handler.

Delivery is synchronous inside ``publish``, as in moto, and goes through the
replaceable ``deliver`` attribute so that fault injection can duplicate, delay,
reorder, lose or corrupt notifications without knowing about SNS.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qsl, quote
from xml.sax.saxutils import escape

from aiohttp import web

from ._sqs import SqsError, SqsStore

__all__ = ["SnsError", "SnsHub", "sns_operation"]

_XMLNS: Final = "https://sns.amazonaws.com/doc/2010-03-31/"
_TOPIC_NAME = re.compile(r"[A-Za-z0-9_-]{1,256}")
_MAX_MESSAGE_BYTES: Final = 262_144
_PAGE: Final = 100
# A fixed, well-formed stand-in: subscribers cannot verify emulator messages anyway.
_FAKE_SIGNATURE: Final = base64.b64encode(b"fanout-emulator: this notification is not signed" * 4).decode()

Deliver = Callable[[str, str, dict[str, Any] | None], None]


class SnsError(Exception):
    """An SNS error with its code, message and HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class _Subscription:
    arn: str
    topic_arn: str
    queue_arn: str
    queue_name: str
    raw: bool


@dataclass(slots=True)
class _Topic:
    arn: str
    subscriptions: list[_Subscription] = field(default_factory=list)


def _read_bytes(request: web.BaseRequest) -> bytes | None:
    # aiohttp caches the body once read; the operation name is needed synchronously.
    cached = getattr(request, "_read_bytes", None)
    return cached if isinstance(cached, bytes) else None


def sns_operation(request: web.BaseRequest) -> str:
    """The ``Action`` of a query-protocol request, or ``"Unknown"``.

    The action travels in the form body, so this needs ``await request.read()`` to have run
    (aiohttp caches the body; ``SnsHub.handle`` reads it through the same cache).
    """
    action = request.query.get("Action")
    if action:
        return action
    cached = _read_bytes(request)
    if cached:
        for name, value in parse_qsl(cached.decode("utf-8", "replace")):
            if name == "Action":
                return value
    return "Unknown"


def _timestamp() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _normalise_attributes(attributes: dict[str, Any] | None) -> dict[str, dict[str, str]]:
    """SNS message attributes as ``{"k": {"DataType": ..., "StringValue"|"BinaryValue": str}}``."""
    result: dict[str, dict[str, str]] = {}
    for name, value in (attributes or {}).items():
        data_type = value.get("DataType") if isinstance(value, dict) else None
        if not isinstance(data_type, str) or data_type.split(".", 1)[0] not in ("String", "Number", "Binary"):
            raise SnsError(
                "ParameterValueInvalid", f"The message attribute '{name}' has an invalid message type."
            )
        if data_type.startswith("Binary"):
            raw = value.get("BinaryValue")
            if raw is None:
                raise SnsError(
                    "ParameterValueInvalid", f"The message attribute '{name}' must contain binary."
                )
            encoded = base64.b64encode(raw).decode() if isinstance(raw, bytes | bytearray) else str(raw)
            result[name] = {"DataType": data_type, "BinaryValue": encoded}
        else:
            text = value.get("StringValue")
            if text is None:
                raise SnsError(
                    "ParameterValueInvalid", f"The message attribute '{name}' must contain a value."
                )
            result[name] = {"DataType": data_type, "StringValue": str(text)}
    return result


class SnsHub:
    """SNS topics whose subscriptions are SQS queues of the given ``SqsStore``."""

    def __init__(self, *, region: str, account_id: str, sqs: SqsStore) -> None:
        self.region = region
        self.account_id = account_id
        self.sqs = sqs
        self.deliver: Deliver = self._deliver_to_sqs
        self._topics: dict[str, _Topic] = {}
        self._subscriptions: dict[str, _Subscription] = {}
        self._published = 0
        self._deliveries = 0
        self._undeliverable = 0
        self._request_ids = itertools.count(1)

    # -- Python API ---------------------------------------------------------------------------------

    def create_topic(self, name: str) -> str:
        """Create the topic (idempotent) and return its ARN."""
        if not _TOPIC_NAME.fullmatch(name):
            raise SnsError("InvalidParameter", "Invalid parameter: Topic Name")
        arn = f"arn:aws:sns:{self.region}:{self.account_id}:{name}"
        self._topics.setdefault(arn, _Topic(arn))
        return arn

    def subscribe(self, topic_arn: str, queue_arn: str, *, raw: bool = False) -> str:
        """Subscribe an SQS queue by ARN and return the subscription ARN (the same one when repeated)."""
        topic = self._topic(topic_arn)
        parts = queue_arn.split(":")
        if len(parts) != 6 or parts[:3] != ["arn", "aws", "sqs"] or not parts[5]:
            raise SnsError("InvalidParameter", "Invalid parameter: SQS endpoint ARN")
        for existing in topic.subscriptions:
            if existing.queue_arn == queue_arn:
                if existing.raw != raw:
                    raise SnsError(
                        "InvalidParameter",
                        "Invalid parameter: Attributes Reason: "
                        "Subscription already exists with different attributes",
                    )
                return existing.arn
        subscription = _Subscription(f"{topic_arn}:{uuid.uuid4()}", topic_arn, queue_arn, parts[5], raw)
        topic.subscriptions.append(subscription)
        self._subscriptions[subscription.arn] = subscription
        return subscription.arn

    def publish(
        self,
        topic_arn: str,
        message: str,
        *,
        subject: str | None = None,
        message_attributes: dict[str, Any] | None = None,
    ) -> str:
        """Deliver ``message`` to every subscription of the topic and return its MessageId.

        ``message_attributes`` use SNS's form, ``{"k": {"DataType": "String", "StringValue": "v"}}``.
        A subscription whose queue is missing is skipped, as SNS does.
        """
        topic = self._topic(topic_arn)
        if not message:
            raise SnsError("InvalidParameter", "Invalid parameter: Empty message")
        if len(message.encode()) > _MAX_MESSAGE_BYTES:
            raise SnsError("InvalidParameter", "Invalid parameter: Message too long")
        attributes = _normalise_attributes(message_attributes)
        message_id = str(uuid.uuid4())
        self._published += 1
        envelope_head: dict[str, Any] | None = None
        for subscription in topic.subscriptions:
            if subscription.raw:
                body = message
                sqs_attributes: dict[str, Any] | None = dict(attributes) if attributes else None
            else:
                if envelope_head is None:
                    envelope_head = self._envelope_head(topic_arn, message_id, message, subject)
                body = self._envelope(envelope_head, subscription, attributes)
                sqs_attributes = None
            self._deliveries += 1
            try:
                self.deliver(subscription.queue_name, body, sqs_attributes)
            except SqsError:
                self._undeliverable += 1
        return message_id

    def statistics(self) -> dict[str, int]:
        """``topics``, ``subscriptions``, ``published`` messages, ``deliveries`` handed to ``deliver``,
        and ``undeliverable`` ones (queue missing)."""
        return {
            "topics": len(self._topics),
            "subscriptions": len(self._subscriptions),
            "published": self._published,
            "deliveries": self._deliveries,
            "undeliverable": self._undeliverable,
        }

    def _deliver_to_sqs(self, queue_name: str, body: str, attributes: dict[str, Any] | None) -> None:
        self.sqs.send_message(queue_name, body, message_attributes=attributes)

    def _topic(self, topic_arn: str) -> _Topic:
        topic = self._topics.get(topic_arn)
        if topic is None:
            raise SnsError("NotFound", "Topic does not exist", 404)
        return topic

    def _envelope_head(
        self, topic_arn: str, message_id: str, message: str, subject: str | None
    ) -> dict[str, Any]:
        head: dict[str, Any] = {"Type": "Notification", "MessageId": message_id, "TopicArn": topic_arn}
        if subject is not None:
            head["Subject"] = subject
        head["Message"] = message
        head["Timestamp"] = _timestamp()
        head["SignatureVersion"] = "1"
        head["Signature"] = _FAKE_SIGNATURE
        head["SigningCertURL"] = (
            f"https://sns.{self.region}.amazonaws.com/SimpleNotificationService-fanoutemulator.pem"
        )
        return head

    def _envelope(
        self, head: dict[str, Any], subscription: _Subscription, attributes: dict[str, dict[str, str]]
    ) -> str:
        envelope = dict(head)
        envelope["UnsubscribeURL"] = (
            f"https://sns.{self.region}.amazonaws.com/?Action=Unsubscribe"
            f"&SubscriptionArn={quote(subscription.arn, safe=':')}"
        )
        if attributes:
            envelope["MessageAttributes"] = {
                name: {
                    "Type": value["DataType"],
                    "Value": value.get("StringValue", value.get("BinaryValue", "")),
                }
                for name, value in attributes.items()
            }
        return json.dumps(envelope)

    # -- wire protocol ------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        params = dict(request.query)
        raw = await request.read()
        if raw:
            params.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        action = params.get("Action", "")
        try:
            method = {
                "CreateTopic": self._create_topic,
                "Subscribe": self._subscribe,
                "Publish": self._publish,
                "ListTopics": self._list_topics,
            }.get(action)
            if method is None:
                raise SnsError(
                    "InvalidAction", f"The action {action or '(none)'} is not valid for this endpoint."
                )
            result = method(params)
        except SnsError as error:
            return self._error(error)
        request_id = self._request_id()
        body = (
            f'<{action}Response xmlns="{_XMLNS}"><{action}Result>{result}</{action}Result>'
            f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
        )
        return web.Response(
            body=body.encode(), content_type="text/xml", headers={"x-amzn-RequestId": request_id}
        )

    def _request_id(self) -> str:
        return f"00000000-0000-4000-9000-{next(self._request_ids):012x}"

    def _error(self, error: SnsError) -> web.Response:
        request_id = self._request_id()
        body = (
            f'<ErrorResponse xmlns="{_XMLNS}"><Error><Type>Sender</Type><Code>{error.code}</Code>'
            f"<Message>{escape(error.message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        return web.Response(
            status=error.status,
            body=body.encode(),
            content_type="text/xml",
            headers={"x-amzn-RequestId": request_id},
        )

    def _create_topic(self, params: dict[str, str]) -> str:
        return f"<TopicArn>{escape(self.create_topic(params.get('Name', '')))}</TopicArn>"

    def _subscribe(self, params: dict[str, str]) -> str:
        protocol = params.get("Protocol", "")
        if protocol != "sqs":
            raise SnsError(
                "InvalidParameter", f"Invalid parameter: Protocol {protocol!r} is not supported here"
            )
        attributes = _entries(params, "Attributes.entry", "key", "value")
        unknown = set(attributes) - {
            "RawMessageDelivery",
            "FilterPolicy",
            "FilterPolicyScope",
            "RedrivePolicy",
        }
        if unknown:
            raise SnsError(
                "InvalidParameter", f"Invalid parameter: Attributes Reason: Unknown {sorted(unknown)[0]}"
            )
        raw = attributes.get("RawMessageDelivery", "false").lower() == "true"
        arn = self.subscribe(params.get("TopicArn", ""), params.get("Endpoint", ""), raw=raw)
        return f"<SubscriptionArn>{escape(arn)}</SubscriptionArn>"

    def _publish(self, params: dict[str, str]) -> str:
        topic_arn = params.get("TopicArn") or params.get("TargetArn") or ""
        if not topic_arn:
            raise SnsError(
                "InvalidParameter",
                "Invalid parameter: TopicArn or TargetArn Reason: no value for required parameter",
            )
        message = params.get("Message", "")
        if params.get("MessageStructure") == "json":
            try:
                structured = json.loads(message)
                message = structured.get("sqs", structured["default"])
            except (ValueError, KeyError, TypeError, AttributeError):
                raise SnsError(
                    "InvalidParameter",
                    "Invalid parameter: Message Structure - No default entry in JSON message body",
                ) from None
        attributes: dict[str, Any] = {}
        index = 1
        while (name := params.get(f"MessageAttributes.entry.{index}.Name")) is not None:
            prefix = f"MessageAttributes.entry.{index}.Value."
            attributes[name] = {
                key: params[prefix + key]
                for key in ("DataType", "StringValue", "BinaryValue")
                if prefix + key in params
            }
            index += 1
        message_id = self.publish(
            topic_arn, message, subject=params.get("Subject"), message_attributes=attributes or None
        )
        return f"<MessageId>{message_id}</MessageId>"

    def _list_topics(self, params: dict[str, str]) -> str:
        arns = sorted(self._topics)
        start = int(params["NextToken"]) if params.get("NextToken", "").isdigit() else 0
        page = arns[start : start + _PAGE]
        members = "".join(f"<member><TopicArn>{escape(arn)}</TopicArn></member>" for arn in page)
        more = f"<NextToken>{start + _PAGE}</NextToken>" if start + _PAGE < len(arns) else ""
        return f"<Topics>{members}</Topics>{more}"


def _entries(params: dict[str, str], prefix: str, key_name: str, value_name: str) -> dict[str, str]:
    """Collect ``<prefix>.N.<key_name>`` / ``<prefix>.N.<value_name>`` pairs of a query request."""
    result: dict[str, str] = {}
    index = 1
    while (key := params.get(f"{prefix}.{index}.{key_name}")) is not None:
        result[key] = params.get(f"{prefix}.{index}.{value_name}", "")
        index += 1
    return result
