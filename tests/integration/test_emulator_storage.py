"""The emulator's S3, SQS and SNS through real aiobotocore clients, cross-checked against moto.

Every test in the ``aws`` group runs the same calls against the emulator's stores and
against moto's ``ThreadedMotoServer`` and asserts the same things, so the response
fields a client reads have the same shape (keys, types, error codes) on both.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import anyio
import pytest
from aiobotocore.session import get_session
from aiohttp import web
from botocore.exceptions import ClientError

from fanout._exceptions import error_code, http_status
from fanout.testing._s3 import S3Store, s3_operation
from fanout.testing._sns import SnsHub, sns_operation
from fanout.testing._sqs import SqsStore, sqs_operation

pytestmark = pytest.mark.anyio

ACCOUNT = "123456789012"  # moto's default account, so ARNs and URLs look alike on both sides
REGION = "us-east-1"
QUEUE_MISSING = {"QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _scope_service(request: web.BaseRequest) -> str:
    """The service of the SigV4 credential scope: ``Credential=AKID/date/region/<service>/aws4_request``."""
    credential = request.headers.get("Authorization", "").partition("Credential=")[2]
    parts = credential.split(",", 1)[0].split("/")
    return parts[3] if len(parts) == 5 else ""


class Emulator:
    """The three stores behind one loopback port, routed as the real emulator routes them."""

    def __init__(self) -> None:
        self.url = ""
        self.s3 = S3Store(region=REGION, account_id=ACCOUNT)
        self.sqs = SqsStore(region=REGION, account_id=ACCOUNT, base_url=lambda: self.url)
        self.sns = SnsHub(region=REGION, account_id=ACCOUNT, sqs=self.sqs)
        self.handlers: dict[str, tuple[Handler, Callable[[web.BaseRequest], str]]] = {
            "s3": (self.s3.handle, s3_operation),
            "sqs": (self.sqs.handle, sqs_operation),
            "sns": (self.sns.handle, sns_operation),
        }
        self.operations: list[str] = []

    async def route(self, request: web.Request) -> web.StreamResponse:
        service = _scope_service(request)
        if service not in self.handlers:
            return web.Response(status=400, text="unknown service")
        handler, operation = self.handlers[service]
        await request.read()  # cached by aiohttp; sns_operation needs the form body
        self.operations.append(f"{service}.{operation(request)}")
        return await handler(request)


@asynccontextmanager
async def running_emulator() -> AsyncIterator[Emulator]:
    emu = Emulator()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", emu.route)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        emu.url = f"http://127.0.0.1:{port}"
        yield emu
    finally:
        await runner.cleanup()


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with running_emulator() as emu:
        yield emu


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(params=["emulator", "moto"])
async def endpoint_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    if request.param == "emulator":
        async with running_emulator() as emu:
            yield emu.url
        return
    url: str = request.getfixturevalue("moto_url")
    async with aiohttp.ClientSession() as session, session.post(f"{url}/moto-api/reset") as response:
        assert response.status == 200
    yield url


_SESSION = get_session()  # one session: its loader caches the service models across tests


def _client(service: str, url: str) -> Any:
    return _SESSION.create_client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
async def clients(endpoint_url: str) -> AsyncIterator[dict[str, Any]]:
    async with AsyncExitStack() as stack:
        yield {
            name: await stack.enter_async_context(_client(name, endpoint_url))
            for name in ("s3", "sqs", "sns")
        }


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


# -- S3 -------------------------------------------------------------------------------------------


async def test_s3_object_round_trip(clients: dict[str, Any]) -> None:
    s3 = clients["s3"]
    await s3.create_bucket(Bucket="conf-bucket")
    await s3.head_bucket(Bucket="conf-bucket")
    body = b'{"hello": "world"}' * 100
    put = await s3.put_object(
        Bucket="conf-bucket",
        Key="dir/a b+c.json",
        Body=body,
        ContentType="application/json",
        Metadata={"run": "7"},
    )
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'

    got = await s3.get_object(Bucket="conf-bucket", Key="dir/a b+c.json")
    async with got["Body"] as stream:
        assert await stream.read() == body
    assert got["ContentType"] == "application/json"
    assert got["ContentLength"] == len(body)
    assert got["ETag"] == put["ETag"]
    assert got["Metadata"] == {"run": "7"}
    assert got["LastModified"].tzinfo is not None

    head = await s3.head_object(Bucket="conf-bucket", Key="dir/a b+c.json")
    assert (head["ContentLength"], head["ETag"], head["ContentType"]) == (
        len(body),
        put["ETag"],
        "application/json",
    )

    with pytest.raises(ClientError) as missing_key:
        await s3.get_object(Bucket="conf-bucket", Key="nope")
    assert (error_code(missing_key.value), http_status(missing_key.value)) == ("NoSuchKey", 404)
    assert isinstance(missing_key.value, s3.exceptions.NoSuchKey)

    with pytest.raises(ClientError) as head_missing:
        await s3.head_object(Bucket="conf-bucket", Key="nope")
    assert (error_code(head_missing.value), http_status(head_missing.value)) == ("404", 404)

    await s3.delete_object(Bucket="conf-bucket", Key="dir/a b+c.json")
    await s3.delete_object(Bucket="conf-bucket", Key="dir/a b+c.json")  # deleting twice is fine
    with pytest.raises(ClientError):
        await s3.head_object(Bucket="conf-bucket", Key="dir/a b+c.json")


async def test_s3_missing_bucket(clients: dict[str, Any]) -> None:
    s3 = clients["s3"]
    with pytest.raises(ClientError) as head:
        await s3.head_bucket(Bucket="no-such-bucket")
    assert (error_code(head.value), http_status(head.value)) == ("404", 404)
    for call in (
        s3.put_object(Bucket="no-such-bucket", Key="k", Body=b"x"),
        s3.get_object(Bucket="no-such-bucket", Key="k"),
        s3.list_objects_v2(Bucket="no-such-bucket"),
    ):
        with pytest.raises(ClientError) as caught:
            await call
        assert (error_code(caught.value), http_status(caught.value)) == ("NoSuchBucket", 404)


async def test_s3_list_objects_v2_paging(clients: dict[str, Any]) -> None:
    s3 = clients["s3"]
    await s3.create_bucket(Bucket="list-bucket")
    keys = ["in/c", "in/a", "in/b b", "in/sub/x", "in/sub/y", "in/z+1", "out/q", "inn"]
    for key in keys:
        await s3.put_object(Bucket="list-bucket", Key=key, Body=key.encode())
    expected = sorted(k for k in keys if k.startswith("in/"))

    seen: list[str] = []
    kwargs: dict[str, Any] = {"Bucket": "list-bucket", "Prefix": "in/", "MaxKeys": 3}
    pages = 0
    while True:
        page = await s3.list_objects_v2(**kwargs)
        pages += 1
        assert page["KeyCount"] == len(page.get("Contents", []))
        assert page["MaxKeys"] == 3
        assert page["Prefix"] == "in/"
        for item in page["Contents"]:
            assert isinstance(item["Size"], int) and item["ETag"].startswith('"')
            assert item["LastModified"].tzinfo is not None
        seen += [item["Key"] for item in page["Contents"]]
        if not page["IsTruncated"]:
            assert "NextContinuationToken" not in page
            break
        kwargs["ContinuationToken"] = page["NextContinuationToken"]
    assert seen == expected
    assert pages == 2

    after = await s3.list_objects_v2(Bucket="list-bucket", Prefix="in/", StartAfter="in/c")
    assert [item["Key"] for item in after["Contents"]] == [k for k in expected if k > "in/c"]
    assert after["StartAfter"] == "in/c"

    grouped = await s3.list_objects_v2(Bucket="list-bucket", Prefix="in/", Delimiter="/")
    assert [p["Prefix"] for p in grouped["CommonPrefixes"]] == ["in/sub/"]
    assert [item["Key"] for item in grouped["Contents"]] == ["in/a", "in/b b", "in/c", "in/z+1"]
    assert grouped["KeyCount"] == 5

    paginator = s3.get_paginator("list_objects_v2")
    everything = [
        item["Key"]
        async for page in paginator.paginate(Bucket="list-bucket", PaginationConfig={"PageSize": 2})
        for item in page.get("Contents", [])
    ]
    assert everything == sorted(keys)

    empty = await s3.list_objects_v2(Bucket="list-bucket", Prefix="none/")
    assert (empty["KeyCount"], empty["IsTruncated"], "Contents" in empty) == (0, False, False)


async def test_s3_delete_objects(clients: dict[str, Any]) -> None:
    s3 = clients["s3"]
    await s3.create_bucket(Bucket="del-bucket")
    for key in ("a", "b", "c"):
        await s3.put_object(Bucket="del-bucket", Key=key, Body=b"1")
    result = await s3.delete_objects(
        Bucket="del-bucket", Delete={"Objects": [{"Key": "a"}, {"Key": "b"}, {"Key": "missing"}]}
    )
    assert sorted(d["Key"] for d in result["Deleted"]) == ["a", "b", "missing"]
    assert not result.get("Errors")
    quiet = await s3.delete_objects(Bucket="del-bucket", Delete={"Objects": [{"Key": "c"}], "Quiet": True})
    assert not quiet.get("Errors")  # S3 leaves out Deleted when quiet; moto lists it anyway
    listing = await s3.list_objects_v2(Bucket="del-bucket")
    assert listing["KeyCount"] == 0


async def test_s3_server_side_encryption(clients: dict[str, Any]) -> None:
    s3 = clients["s3"]
    await s3.create_bucket(Bucket="sse-bucket")
    put = await s3.put_object(
        Bucket="sse-bucket",
        Key="k",
        Body=b"secret",
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId="alias/fanout",
    )
    assert put["ServerSideEncryption"] == "aws:kms"
    got = await s3.get_object(Bucket="sse-bucket", Key="k")
    async with got["Body"] as stream:
        assert await stream.read() == b"secret"
    assert got["ServerSideEncryption"] == "aws:kms"
    assert isinstance(got["SSEKMSKeyId"], str)


# -- SQS ------------------------------------------------------------------------------------------


async def _queue(sqs: Any, name: str, **attributes: str) -> str:
    created = await sqs.create_queue(QueueName=name, Attributes=attributes)
    url: str = created["QueueUrl"]
    assert (await sqs.get_queue_url(QueueName=name))["QueueUrl"] == url
    assert url.endswith(f"/{ACCOUNT}/{name}")
    return url


async def _counts(sqs: Any, url: str) -> tuple[int, int, int]:
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    attributes = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names))["Attributes"]
    return (int(attributes[names[0]]), int(attributes[names[1]]), int(attributes[names[2]]))


async def test_sqs_send_receive_delete(clients: dict[str, Any]) -> None:
    sqs = clients["sqs"]
    url = await _queue(sqs, "conf-queue")
    assert (await sqs.create_queue(QueueName="conf-queue"))["QueueUrl"] == url  # idempotent
    sent = await sqs.send_message(
        QueueUrl=url,
        MessageBody="hello",
        MessageAttributes={
            "kind": {"DataType": "String", "StringValue": "test"},
            "n": {"DataType": "Number", "StringValue": "3"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    )
    assert sent["MD5OfMessageBody"] == _md5("hello")
    assert isinstance(sent["MessageId"], str)
    assert len(sent["MD5OfMessageAttributes"]) == 32
    assert await _counts(sqs, url) == (1, 0, 0)

    received = await sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
    )
    [message] = received["Messages"]
    assert message["MessageId"] == sent["MessageId"]
    assert message["Body"] == "hello"
    assert message["MD5OfBody"] == _md5("hello")
    assert isinstance(message["ReceiptHandle"], str)
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"
    assert int(message["Attributes"]["SentTimestamp"]) > 1_600_000_000_000
    assert "ApproximateFirstReceiveTimestamp" in message["Attributes"]
    assert message["MessageAttributes"] == {
        "kind": {"DataType": "String", "StringValue": "test"},
        "n": {"DataType": "Number", "StringValue": "3"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
    }
    assert message["MD5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    assert await _counts(sqs, url) == (0, 1, 0)

    only_kind = await sqs.send_message(
        QueueUrl=url,
        MessageBody="second",
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "x"}},
    )
    plain = await sqs.receive_message(QueueUrl=url)
    [bare] = plain["Messages"]
    assert bare["MessageId"] == only_kind["MessageId"]
    assert "MessageAttributes" not in bare and "Attributes" not in bare

    await sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    await sqs.delete_message(QueueUrl=url, ReceiptHandle=bare["ReceiptHandle"])
    assert await _counts(sqs, url) == (0, 0, 0)
    assert "Messages" not in await sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)


async def test_sqs_batches(clients: dict[str, Any]) -> None:
    sqs = clients["sqs"]
    url = await _queue(sqs, "batch-queue")
    sent = await sqs.send_message_batch(
        QueueUrl=url, Entries=[{"Id": f"m{i}", "MessageBody": f"body-{i}"} for i in range(10)]
    )
    assert sorted(entry["Id"] for entry in sent["Successful"]) == sorted(f"m{i}" for i in range(10))
    assert all(entry["MD5OfMessageBody"] == _md5(f"body-{entry['Id'][1:]}") for entry in sent["Successful"])
    assert not sent.get("Failed")

    messages: list[dict[str, Any]] = []
    for _ in range(10):
        page = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
        messages += page.get("Messages", [])
        if len(messages) == 10:
            break
    assert sorted(m["Body"] for m in messages) == sorted(f"body-{i}" for i in range(10))
    assert await _counts(sqs, url) == (0, 10, 0)

    changed = await sqs.change_message_visibility_batch(
        QueueUrl=url,
        Entries=[{"Id": "v0", "ReceiptHandle": messages[0]["ReceiptHandle"], "VisibilityTimeout": 0}],
    )
    assert [entry["Id"] for entry in changed["Successful"]] == ["v0"]
    assert await _counts(sqs, url) == (1, 9, 0)

    entries = [{"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages[1:])]
    entries.append({"Id": "bogus", "ReceiptHandle": "bogus"})
    deleted = await sqs.delete_message_batch(QueueUrl=url, Entries=entries)
    assert len(deleted["Successful"]) == 9
    [failure] = deleted["Failed"]
    assert failure["Id"] == "bogus"
    assert failure["Code"] == "ReceiptHandleIsInvalid"
    assert failure["SenderFault"] is True
    assert await _counts(sqs, url) == (1, 0, 0)

    with pytest.raises(ClientError) as empty:
        await sqs.delete_message_batch(QueueUrl=url, Entries=[])
    assert error_code(empty.value) in {"EmptyBatchRequest", "AWS.SimpleQueueService.EmptyBatchRequest"}

    await sqs.purge_queue(QueueUrl=url)
    assert await _counts(sqs, url) == (0, 0, 0)


async def test_sqs_errors(clients: dict[str, Any]) -> None:
    sqs = clients["sqs"]
    with pytest.raises(ClientError) as by_name:
        await sqs.get_queue_url(QueueName="no-such-queue")
    assert isinstance(by_name.value, sqs.exceptions.QueueDoesNotExist)
    assert error_code(by_name.value) in QUEUE_MISSING
    assert http_status(by_name.value) == 400

    url = await _queue(sqs, "real-queue")
    missing_url = url.replace("real-queue", "no-such-queue")
    for call in (
        sqs.receive_message(QueueUrl=missing_url),
        sqs.send_message(QueueUrl=missing_url, MessageBody="x"),
        sqs.get_queue_attributes(QueueUrl=missing_url, AttributeNames=["All"]),
    ):
        with pytest.raises(ClientError) as caught:
            await call
        assert isinstance(caught.value, sqs.exceptions.QueueDoesNotExist)
        assert error_code(caught.value) in QUEUE_MISSING

    with pytest.raises(ClientError) as bad_handle:
        await sqs.delete_message(QueueUrl=url, ReceiptHandle="bogus")
    assert error_code(bad_handle.value) == "ReceiptHandleIsInvalid"

    with pytest.raises(ClientError) as too_many:
        await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=11)
    assert error_code(too_many.value) == "InvalidParameterValue"


async def test_sqs_queue_attributes(clients: dict[str, Any]) -> None:
    sqs = clients["sqs"]
    url = await _queue(sqs, "attr-queue", VisibilityTimeout="45")
    attributes = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))["Attributes"]
    assert attributes["QueueArn"] == f"arn:aws:sqs:{REGION}:{ACCOUNT}:attr-queue"
    assert attributes["VisibilityTimeout"] == "45"
    for name in (
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
        "CreatedTimestamp",
        "DelaySeconds",
        "MaximumMessageSize",
        "MessageRetentionPeriod",
        "ReceiveMessageWaitTimeSeconds",
    ):
        assert float(attributes[name]) >= 0, name  # moto's timestamps carry a fraction
    await sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=30)
    assert await _counts(sqs, url) == (0, 0, 1)
    only = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    assert set(only["Attributes"]) == {"QueueArn"}

    await sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "60"})
    changed = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
    assert changed["Attributes"] == {"VisibilityTimeout": "60"}
    assert (await sqs.list_queues(QueueNamePrefix="attr-"))["QueueUrls"] == [url]
    assert "QueueUrls" not in await sqs.list_queues(QueueNamePrefix="zzz")
    await sqs.delete_queue(QueueUrl=url)
    with pytest.raises(ClientError) as gone:
        await sqs.get_queue_url(QueueName="attr-queue")
    assert error_code(gone.value) in QUEUE_MISSING


async def test_sqs_redelivery_after_visibility_change(clients: dict[str, Any]) -> None:
    sqs = clients["sqs"]
    url = await _queue(sqs, "redelivery-queue")
    await sqs.send_message(QueueUrl=url, MessageBody="again")
    first = (
        await sqs.receive_message(QueueUrl=url, MessageSystemAttributeNames=["ApproximateReceiveCount"])
    )["Messages"][0]
    assert "Messages" not in await sqs.receive_message(QueueUrl=url)  # in flight: invisible
    await sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=0
    )
    second = (
        await sqs.receive_message(QueueUrl=url, MessageSystemAttributeNames=["ApproximateReceiveCount"])
    )["Messages"][0]
    assert second["MessageId"] == first["MessageId"]
    assert second["Attributes"]["ApproximateReceiveCount"] == "2"
    assert second["ReceiptHandle"] != first["ReceiptHandle"]
    await sqs.delete_message(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"])
    assert await _counts(sqs, url) == (0, 0, 0)


async def test_sqs_long_poll_returns_when_a_message_arrives(clients: dict[str, Any]) -> None:
    sqs = clients["sqs"]
    url = await _queue(sqs, "poll-queue")
    result: dict[str, Any] = {}

    async def poll() -> None:
        result.update(await sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10, MaxNumberOfMessages=10))

    with anyio.fail_after(8):  # far below the 10 s wait: only an early return gets here
        async with anyio.create_task_group() as tg:
            tg.start_soon(poll)
            await anyio.sleep(0.3)
            await sqs.send_message(QueueUrl=url, MessageBody="wake up")
    assert [m["Body"] for m in result["Messages"]] == ["wake up"]


# -- SNS -> SQS -----------------------------------------------------------------------------------


async def _topic_to_queue(clients: dict[str, Any], name: str, *, raw: bool) -> tuple[str, str]:
    sns, sqs = clients["sns"], clients["sqs"]
    topic_arn = (await sns.create_topic(Name=f"{name}-topic"))["TopicArn"]
    assert topic_arn == f"arn:aws:sns:{REGION}:{ACCOUNT}:{name}-topic"
    assert (await sns.create_topic(Name=f"{name}-topic"))["TopicArn"] == topic_arn
    url = await _queue(sqs, f"{name}-queue")
    queue_arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"][
        "QueueArn"
    ]
    attributes = {"RawMessageDelivery": "true"} if raw else {}
    subscription = await sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes=attributes,
        ReturnSubscriptionArn=True,
    )
    assert subscription["SubscriptionArn"].startswith(f"{topic_arn}:")
    return topic_arn, url


async def test_sns_enveloped_delivery(clients: dict[str, Any]) -> None:
    sns, sqs = clients["sns"], clients["sqs"]
    topic_arn, url = await _topic_to_queue(clients, "env", raw=False)
    notification = json.dumps({"invocationStatus": "Completed", "inferenceId": "abc"})
    published = await sns.publish(
        TopicArn=topic_arn,
        Message=notification,
        Subject="done",
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "success"}},
    )
    plain = await sns.publish(TopicArn=topic_arn, Message="second")
    bodies: list[dict[str, Any]] = []
    for _ in range(5):
        page = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
        for message in page.get("Messages", []):
            assert "MessageAttributes" not in message  # envelope delivery keeps attributes inside the body
            bodies.append(json.loads(message["Body"]))
        if len(bodies) == 2:
            break
    envelope = next(b for b in bodies if b["MessageId"] == published["MessageId"])
    assert set(envelope) == {
        "Type",
        "MessageId",
        "TopicArn",
        "Subject",
        "Message",
        "Timestamp",
        "SignatureVersion",
        "Signature",
        "SigningCertURL",
        "UnsubscribeURL",
        "MessageAttributes",
    }
    assert envelope["Type"] == "Notification"
    assert envelope["TopicArn"] == topic_arn
    assert envelope["Subject"] == "done"
    assert json.loads(envelope["Message"]) == {"invocationStatus": "Completed", "inferenceId": "abc"}
    assert envelope["MessageAttributes"] == {"kind": {"Type": "String", "Value": "success"}}
    assert envelope["Timestamp"].endswith("Z") and "T" in envelope["Timestamp"]
    second = next(b for b in bodies if b["MessageId"] == plain["MessageId"])
    assert "Subject" not in second and "MessageAttributes" not in second
    assert second["Message"] == "second"


async def test_sns_raw_delivery(clients: dict[str, Any]) -> None:
    sns, sqs = clients["sns"], clients["sqs"]
    topic_arn, url = await _topic_to_queue(clients, "raw", raw=True)
    await sns.publish(
        TopicArn=topic_arn,
        Message='{"inferenceId": "raw-1"}',
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "success"}},
    )
    page = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
    [message] = page["Messages"]
    assert message["Body"] == '{"inferenceId": "raw-1"}'
    assert message["MessageAttributes"] == {"kind": {"StringValue": "success", "DataType": "String"}}


async def test_sns_errors(clients: dict[str, Any]) -> None:
    sns = clients["sns"]
    with pytest.raises(ClientError) as missing:
        await sns.publish(TopicArn=f"arn:aws:sns:{REGION}:{ACCOUNT}:no-such-topic", Message="x")
    assert (error_code(missing.value), http_status(missing.value)) == ("NotFound", 404)
    arn = (await sns.create_topic(Name="listed"))["TopicArn"]
    assert arn in [t["TopicArn"] for t in (await sns.list_topics())["Topics"]]


# -- the same sequence on both, compared field by field ---------------------------------------------


def _shape(value: Any) -> Any:
    """Keys and value types, recursively (a list by its first item); ResponseMetadata left out."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


async def _sequence(url: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with _client("s3", url) as s3, _client("sqs", url) as sqs:
        out["CreateBucket"] = await s3.create_bucket(Bucket="shape-bucket")
        out["PutObject"] = await s3.put_object(
            Bucket="shape-bucket", Key="k", Body=b"x", ContentType="text/plain", Metadata={"a": "b"}
        )
        got = await s3.get_object(Bucket="shape-bucket", Key="k")
        async with got.pop("Body") as stream:
            await stream.read()
        out["GetObject"] = got
        out["HeadObject"] = await s3.head_object(Bucket="shape-bucket", Key="k")
        await s3.put_object(Bucket="shape-bucket", Key="k2", Body=b"y")
        out["ListObjectsV2"] = await s3.list_objects_v2(Bucket="shape-bucket", MaxKeys=1)
        out["HeadBucket"] = await s3.head_bucket(Bucket="shape-bucket")
        out["DeleteObject"] = await s3.delete_object(Bucket="shape-bucket", Key="k")
        out["DeleteObjects"] = await s3.delete_objects(
            Bucket="shape-bucket", Delete={"Objects": [{"Key": "k2"}]}
        )
        url = (await sqs.create_queue(QueueName="shape-queue"))["QueueUrl"]
        attributes = {"a": {"DataType": "String", "StringValue": "b"}}
        out["SendMessage"] = await sqs.send_message(
            QueueUrl=url, MessageBody="m", MessageAttributes=attributes
        )
        out["SendMessageBatch"] = await sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": "x", "MessageBody": "y", "MessageAttributes": attributes}]
        )
        out["ReceiveMessage"] = await sqs.receive_message(
            QueueUrl=url, MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"]
        )
        out["GetQueueAttributes"] = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
        bogus = [{"Id": "a", "ReceiptHandle": "bogus"}]
        out["DeleteMessageBatch"] = await sqs.delete_message_batch(QueueUrl=url, Entries=bogus)
        out["ChangeMessageVisibilityBatch"] = await sqs.change_message_visibility_batch(
            QueueUrl=url, Entries=[{**bogus[0], "VisibilityTimeout": 3}]
        )
        out["PurgeQueue"] = await sqs.purge_queue(QueueUrl=url)
        out["ReceiveMessage(empty)"] = await sqs.receive_message(QueueUrl=url)
        for name, call in [
            ("GetQueueUrl(missing)", sqs.get_queue_url(QueueName="no-such-queue")),
            ("DeleteMessage(bogus)", sqs.delete_message(QueueUrl=url, ReceiptHandle="bogus")),
            ("GetObject(missing key)", s3.get_object(Bucket="shape-bucket", Key="no-such-key")),
            ("GetObject(missing bucket)", s3.get_object(Bucket="no-such-bucket", Key="k")),
            ("HeadBucket(missing)", s3.head_bucket(Bucket="no-such-bucket")),
        ]:
            with pytest.raises(ClientError) as caught:
                await call
            error = caught.value.response["Error"]
            out[name] = {k: error.get(k) for k in ("Code", "QueryErrorCode", "Type")} | {
                "status": http_status(caught.value)
            }
    return out


async def test_response_shapes_match_moto(moto_url: str) -> None:
    async with aiohttp.ClientSession() as session, session.post(f"{moto_url}/moto-api/reset") as response:
        assert response.status == 200
    async with running_emulator() as emu:
        ours = await _sequence(emu.url)
    theirs = await _sequence(moto_url)
    assert set(ours) == set(theirs)
    for operation in theirs:
        assert _shape(ours[operation]) == _shape(theirs[operation]), operation


# -- emulator-only behaviour ----------------------------------------------------------------------


@pytest.fixture
async def emu_clients(emulator: Emulator) -> AsyncIterator[dict[str, Any]]:
    async with AsyncExitStack() as stack:
        yield {
            name: await stack.enter_async_context(_client(name, emulator.url))
            for name in ("s3", "sqs", "sns")
        }


async def test_stale_receipt_handle_does_not_delete_a_newer_delivery(
    emulator: Emulator, emu_clients: dict[str, Any]
) -> None:
    sqs = emu_clients["sqs"]
    url = await _queue(sqs, "stale-queue")
    await sqs.send_message(QueueUrl=url, MessageBody="twice")
    first = (await sqs.receive_message(QueueUrl=url))["Messages"][0]
    await sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=0
    )
    second = (await sqs.receive_message(QueueUrl=url))["Messages"][0]
    await sqs.delete_message(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"])  # succeeds, deletes nothing
    assert emulator.sqs.statistics()["stale-queue"]["in_flight"] == 1
    with pytest.raises(ClientError) as expired:
        await sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=5
        )
    assert error_code(expired.value) == "InvalidParameterValue"
    await sqs.delete_message(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"])
    assert emulator.sqs.statistics()["stale-queue"] == {
        "visible": 0,
        "in_flight": 0,
        "delayed": 0,
        "sent": 1,
        "received": 2,
        "deleted": 1,
    }


async def test_visibility_timeout_expiry_wakes_a_long_poll(emu_clients: dict[str, Any]) -> None:
    sqs = emu_clients["sqs"]
    url = await _queue(sqs, "expiry-queue")
    await sqs.send_message(QueueUrl=url, MessageBody="comes back")
    first = (await sqs.receive_message(QueueUrl=url, VisibilityTimeout=1))["Messages"][0]
    with anyio.fail_after(8):
        again = await sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10)
    assert again["Messages"][0]["MessageId"] == first["MessageId"]


async def test_expected_bucket_owner(emu_clients: dict[str, Any]) -> None:
    s3 = emu_clients["s3"]
    await s3.create_bucket(Bucket="owned")
    await s3.put_object(Bucket="owned", Key="k", Body=b"1", ExpectedBucketOwner=ACCOUNT)
    with pytest.raises(ClientError) as denied:
        await s3.get_object(Bucket="owned", Key="k", ExpectedBucketOwner="999999999999")
    assert (error_code(denied.value), http_status(denied.value)) == ("AccessDenied", 403)


async def test_python_api_and_statistics(emulator: Emulator, emu_clients: dict[str, Any]) -> None:
    emulator.s3.create_bucket("py-bucket")
    emulator.s3.create_bucket("py-bucket")
    etag = emulator.s3.put_object("py-bucket", "k", b"abc", content_type="text/plain", metadata={"m": "1"})
    got = await emu_clients["s3"].get_object(Bucket="py-bucket", Key="k")
    assert (got["ETag"], got["ContentType"], got["Metadata"]) == (etag, "text/plain", {"m": "1"})
    assert emulator.s3.statistics() == {"buckets": 1, "objects": 1, "bytes": 3}
    stored = emulator.s3.get_object("py-bucket", "k")
    assert stored is not None and stored.body == b"abc"
    assert emulator.s3.get_object("py-bucket", "missing") is None

    url = emulator.sqs.create_queue("py-queue")
    assert url == emulator.sqs.create_queue("py-queue") == emulator.sqs.queue_url("py-queue")
    topic = emulator.sns.create_topic("py-topic")
    emulator.sns.subscribe(topic, f"arn:aws:sqs:{REGION}:{ACCOUNT}:py-queue", raw=True)
    delivered: list[tuple[str, str, dict[str, Any] | None]] = []
    emulator.sns.deliver = lambda queue, body, attributes: delivered.append((queue, body, attributes))
    emulator.sns.publish(topic, "hi", message_attributes={"a": {"DataType": "String", "StringValue": "b"}})
    assert delivered == [("py-queue", "hi", {"a": {"DataType": "String", "StringValue": "b"}})]
    assert emulator.sns.statistics()["published"] == 1
    assert emulator.sqs.statistics()["py-queue"]["sent"] == 0


async def test_aws_chunked_upload(emulator: Emulator) -> None:
    emulator.s3.create_bucket("chunked")
    payload = b"hello world, " * 1000
    chunks = b"".join(
        f"{len(part):x};chunk-signature={'0' * 64}\r\n".encode() + part + b"\r\n"
        for part in (payload[:8192], payload[8192:])
    )
    crc32 = base64.b64encode(zlib.crc32(payload).to_bytes(4, "big")).decode()
    body = chunks + f"0\r\nx-amz-checksum-crc32:{crc32}\r\n\r\n".encode()
    headers = {
        "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request",
        "Content-Encoding": "aws-chunked",
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "x-amz-decoded-content-length": str(len(payload)),
        "x-amz-trailer": "x-amz-checksum-crc32",
    }
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{emulator.url}/chunked/obj", data=body, headers=headers) as response:
            assert response.status == 200
        headers["x-amz-decoded-content-length"] = str(len(payload) + 1)
        async with session.put(f"{emulator.url}/chunked/bad", data=body, headers=headers) as response:
            assert response.status == 400
            assert "<Code>IncompleteBody</Code>" in await response.text()
    stored = emulator.s3.get_object("chunked", "obj")
    assert stored is not None and stored.body == payload
    assert stored.checksums == {"CRC32": crc32}
    assert emulator.s3.get_object("chunked", "bad") is None


async def test_many_messages_through_batches(emulator: Emulator, emu_clients: dict[str, Any]) -> None:
    sqs = emu_clients["sqs"]
    url = await _queue(sqs, "bulk-queue")
    for start in range(0, 500, 10):
        await sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": f"m{i}", "MessageBody": str(i)} for i in range(start, start + 10)]
        )
    seen: set[str] = set()
    started = time.monotonic()
    while len(seen) < 500 and time.monotonic() - started < 10:
        page = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
        messages = page.get("Messages", [])
        assert len(messages) == 10
        seen.update(m["Body"] for m in messages)
        await sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[{"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
        )
    assert seen == {str(i) for i in range(500)}
    assert emulator.sqs.statistics()["bulk-queue"] == {
        "visible": 0,
        "in_flight": 0,
        "delayed": 0,
        "sent": 500,
        "received": 500,
        "deleted": 500,
    }


async def test_operation_names(emulator: Emulator, emu_clients: dict[str, Any]) -> None:
    s3, sqs, sns = emu_clients["s3"], emu_clients["sqs"], emu_clients["sns"]
    await s3.create_bucket(Bucket="ops-bucket")
    await s3.put_object(Bucket="ops-bucket", Key="a/b", Body=b"1")
    await s3.list_objects_v2(Bucket="ops-bucket")
    await s3.delete_objects(Bucket="ops-bucket", Delete={"Objects": [{"Key": "a/b"}]})
    url = await _queue(sqs, "ops-queue")
    await sqs.receive_message(QueueUrl=url)
    topic = (await sns.create_topic(Name="ops-topic"))["TopicArn"]
    await sns.publish(TopicArn=topic, Message="m")
    assert emulator.operations == [
        "s3.CreateBucket",
        "s3.PutObject",
        "s3.ListObjectsV2",
        "s3.DeleteObjects",
        "sqs.CreateQueue",
        "sqs.GetQueueUrl",
        "sqs.ReceiveMessage",
        "sns.CreateTopic",
        "sns.Publish",
    ]


async def test_virtual_host_addressing(emulator: Emulator) -> None:
    emulator.s3.create_bucket("vhost")
    emulator.s3.put_object("vhost", "dir/key", b"payload")
    port = emulator.url.rsplit(":", 1)[1]
    headers = {
        "Host": f"vhost.localhost:{port}",
        "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{emulator.url}/dir/key", headers=headers) as response,
    ):
        assert (response.status, await response.read()) == (200, b"payload")
