"""A small stand-in for a SageMaker async endpoint, written for the conformance suite only.

It is deliberately independent of ``fanout.testing``: it was written from the protocol notes
(``reference/aws-async-protocol.md`` §1-§4) and stores everything in moto, so the suite tests
fanout against behaviour that fanout's authors did not write.

What it does:

* ``POST /endpoints/{name}/async-invocations`` on 127.0.0.1 (a threaded ``http.server``). The SigV4
  signature is not checked, but an ``Authorization`` header scoped to the service ``sagemaker`` is
  required (403 otherwise). The ``X-Amzn-SageMaker-*`` headers are read and validated like the
  service does (400 ``ValidationError``, rest-json: ``x-amzn-ErrorType`` header and a
  ``{"message": ...}`` body), then the answer is **202** ``{"InferenceId": ...}`` with the
  ``X-Amzn-SageMaker-OutputLocation`` / ``-FailureLocation`` headers, whose uuid is not the
  inference id.
* Later (a random service time, on a bounded worker pool) the "model" runs: the input comes from
  the body or, for ``InputLocation``, from moto's S3. Its output is ``{"sha256": <hex of the input
  bytes>, "bytes": <count>}`` (application/json); an input that is a JSON object with
  ``"fail": true`` fails with a reason that contains its ``"reason"``. The output (or the failure
  object) is written to moto's S3 first, then the notification JSON (no ``responseBody``, as AWS
  does by default) is published through moto's SNS to the endpoint's success or error topic.
* Faults, each a share of the accepted requests, decided by a seeded RNG: ``early`` (the model runs
  and the notification is published before the 202 is written; the 202 is then held
  ``early_hold`` seconds, so the notification really wins the race), ``duplicate`` (published
  twice), ``lost`` (never published; the S3 object is still written). ``announce()`` publishes the
  ``TestNotification`` that creating an endpoint sends, and can put one garbage message on a queue.
* ``accepted`` records, per inference id, every 202 given (its locations and faults), so a test can
  join each output line to what the endpoint really did.

Everything the stand-in could not do (a moto call failed, an exception in a worker) lands in
``errors``, which the tests assert is empty, so a stand-in bug is never mistaken for a client bug.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import random
import re
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config

__all__ = ["ACCOUNT", "MAX_BODY", "Acceptance", "EndpointSpec", "Faults", "StandIn", "run_standin"]

ACCOUNT = "123456789012"
MAX_BODY = 128_000

_PATH = re.compile(r"^/endpoints/(?P<name>[^/]+)/async-invocations$")
_ENDPOINT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
# \A\S[\p{Print}]*\z from the model: Java's \p{Print} is printable ASCII, \S excludes ASCII whitespace.
_INFERENCE_ID = re.compile(r"[^ \t\n\x0b\f\r][\x20-\x7e]*")
_INPUT_LOCATION = re.compile(r"^(https|s3)://([^/]+)/?(.*)$")
_CREDENTIAL = re.compile(r"Credential=[^/,\s]+/\d{8}/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request")
_HEADER_PREFIX = "X-Amzn-SageMaker-"


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointSpec:
    """What ``CreateEndpointConfig``'s ``AsyncInferenceConfig`` would say for one endpoint."""

    name: str
    output_path: str
    """``S3OutputPath``: ``s3://bucket/prefix``."""
    failure_path: str
    """``S3FailurePath``."""
    success_topic: str
    """``SuccessTopic`` ARN."""
    error_topic: str
    """``ErrorTopic`` ARN."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    """Each a share (0..1) of the accepted requests."""

    early: float = 0.0
    duplicate: float = 0.0
    lost: float = 0.0
    early_hold: float = 0.5
    """How long an early request's 202 is held after its notification was published, so that the
    client's long polls really receive the notification before the 202."""


@dataclass(slots=True, kw_only=True)
class Acceptance:
    """One accepted invoke, as the stand-in answered it."""

    output_location: str
    failure_location: str
    faults: tuple[str, ...]
    """The faults applied to it: "early", "duplicated", "lost"."""
    inline: bool
    """Sent with a Body (else with an InputLocation)."""
    input_location: str | None
    content_type: str | None
    request_ttl_seconds: int | None
    invocation_timeout_seconds: int | None
    status: str | None = None
    """"Completed" or "Failed" once its object is in S3."""


@dataclass(slots=True, kw_only=True)
class _Job:
    endpoint: EndpointSpec
    inference_id: str
    body: bytes | None
    input_location: str | None
    content_type: str | None
    accept: str | None
    output_location: str
    failure_location: str
    received: datetime
    service_time: float
    duplicate: bool
    lost: bool


class _ValidationError(Exception):
    def __init__(self, message: str, *, status: int = 400, code: str = "ValidationError") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


def _iso(moment: datetime) -> str:
    """``2022-01-25T22:58:17.235Z``, as SageMaker writes it."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _split_s3(uri: str) -> tuple[str, str]:
    match = _INPUT_LOCATION.match(uri)
    if match is None:
        raise ValueError(f"not an S3 URI: {uri!r}")
    if match.group(1) == "s3":
        return match.group(2), match.group(3)
    # https://bucket.s3.region.amazonaws.com/key or https://s3.region.amazonaws.com/bucket/key
    host, rest = match.group(2), match.group(3)
    if host.startswith(("s3.", "s3-")):
        bucket, _, key = rest.partition("/")
        return bucket, key
    return host.split(".s3.", 1)[0], rest


class StandIn:
    """The endpoint stand-in; use :func:`run_standin` to start and stop it."""

    def __init__(
        self,
        *,
        moto_url: str,
        endpoints: Sequence[EndpointSpec],
        faults: Faults = Faults(),
        service_time: tuple[float, float] = (0.0, 0.03),
        workers: int = 8,
        seed: int = 0,
        region: str = "us-east-1",
    ) -> None:
        self.endpoints = {spec.name: spec for spec in endpoints}
        self.faults = faults
        self.region = region
        self._service_time = service_time
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.counters: Counter[str] = Counter()
        self.errors: list[str] = []
        self.accepted: dict[str, list[Acceptance]] = {}
        """Every accepted invoke, by inference id (a request sent again has two)."""
        config = Config(
            retries={"total_max_attempts": 3, "mode": "standard"},
            max_pool_connections=workers + 16,
            connect_timeout=5,
            read_timeout=20,
            s3={"addressing_style": "path"},
        )
        options: dict[str, Any] = {
            "endpoint_url": moto_url,
            "region_name": region,
            "aws_access_key_id": "standin",
            "aws_secret_access_key": "standin",
            "config": config,
        }
        session = boto3.session.Session()
        self._s3 = session.client("s3", **options)
        self._sns = session.client("sns", **options)
        self._sqs = session.client("sqs", **options)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="standin-model")
        self._futures: set[Future[None]] = set()
        self._early_running = 0
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.standin = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking requests, then wait (bounded) for the models that are still running."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        for future in list(self._futures):
            future.result(timeout=max(deadline - time.monotonic(), 0.1))
        self._pool.shutdown(wait=True, cancel_futures=True)

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until every accepted request has its object in S3 and its notification published."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._futures and not self._early_running:
                    return
            time.sleep(0.02)
        raise TimeoutError(f"the stand-in still runs {len(self._futures)} models after {timeout} s")

    def announce(self, garbage_queue_url: str | None = None) -> None:
        """What creating the endpoint does: a ``TestNotification`` to each of its topics. And, if
        asked, one message that is not JSON straight onto a queue."""
        test = json.dumps(
            {"eventVersion": "1.0", "eventSource": "aws:sagemaker", "eventName": "TestNotification"},
            separators=(",", ":"),
        )
        topics = {arn for spec in self.endpoints.values() for arn in (spec.success_topic, spec.error_topic)}
        for arn in sorted(topics):
            self._sns.publish(TopicArn=arn, Message=test)
            self._count("test_notifications")
        if garbage_queue_url is not None:
            self._sqs.send_message(QueueUrl=garbage_queue_url, MessageBody="this is <not> JSON {")
            self._count("garbage_messages")

    # -- the HTTP side (handler threads) ---------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def _error(self, text: str) -> None:
        with self._lock:
            self.errors.append(text)

    def invoke(self, name: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Handle one InvokeEndpointAsync; returns status, headers and body of the answer."""
        request_id = str(uuid.uuid4())
        base = {"x-amzn-RequestId": request_id, "Content-Type": "application/json"}
        try:
            job, early = self._accept(name, headers, body)
        except _ValidationError as exc:
            self._count(f"rejected.{exc.code}")
            return (
                exc.status,
                {**base, "x-amzn-ErrorType": exc.code},
                json.dumps({"message": exc.message}).encode(),
            )
        if early:
            # SNS outran the HTTP response: the notification is out before the 202 is written.
            with self._lock:
                self.counters["early"] += 1
                self._early_running += 1
            try:
                self._complete(job)
            finally:
                with self._lock:
                    self._early_running -= 1
            time.sleep(self.faults.early_hold)
        else:
            with self._lock:
                future = self._pool.submit(self._run_later, job)
                self._futures.add(future)
            future.add_done_callback(self._forget)
        answer = {
            **base,
            "X-Amzn-SageMaker-OutputLocation": job.output_location,
            "X-Amzn-SageMaker-FailureLocation": job.failure_location,
        }
        return 202, answer, json.dumps({"InferenceId": job.inference_id}).encode()

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    def _accept(self, name: str, headers: Any, body: bytes) -> tuple[_Job, bool]:
        authorization = headers.get("Authorization")
        if not authorization:
            raise _ValidationError(
                "Missing Authentication Token", status=403, code="MissingAuthenticationTokenException"
            )
        scope = _CREDENTIAL.search(authorization)
        if scope is None or scope.group("service") != "sagemaker":
            raise _ValidationError(
                "Credential should be scoped to correct service: 'sagemaker'.",
                status=403,
                code="InvalidSignatureException",
            )

        def header(member: str) -> str | None:
            value: str | None = headers.get(_HEADER_PREFIX + member)
            return value

        content_type = header("Content-Type")
        accept = header("Accept")
        custom_attributes = header("Custom-Attributes")
        inference_id = header("Inference-Id")
        input_location = header("InputLocation")
        ttl = header("RequestTTLSeconds")
        timeout = header("InvocationTimeoutSeconds")
        for member in ("S3OutputPathExtension", "Filename"):
            if header(member) is not None:
                # Where AWS then puts the output is not documented precisely enough to emulate:
                # fail loudly rather than accept it and write somewhere else.
                self._error(f"the stand-in does not emulate {member}")

        problems: list[str] = []
        if len(name) > 63 or not _ENDPOINT_NAME.match(name):
            problems.append(
                f"Value '{name}' at 'endpointName' failed to satisfy constraint: Member must satisfy "
                "regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9])*"
            )
        for member, value in (("contentType", content_type), ("accept", accept)):
            if value is not None and (len(value) > 1024 or not value.isascii()):
                problems.append(f"Value at '{member}' failed to satisfy constraint: Member must be ASCII")
        if custom_attributes is not None and (
            len(custom_attributes) > 1024 or not custom_attributes.isascii()
        ):
            problems.append("Value at 'customAttributes' failed to satisfy constraint: Member must be ASCII")
        if inference_id is not None:
            if not 1 <= len(inference_id) <= 64:
                problems.append(
                    f"Value '{inference_id}' at 'inferenceId' failed to satisfy constraint: Member must "
                    "have length less than or equal to 64"
                )
            elif not _INFERENCE_ID.fullmatch(inference_id):
                problems.append(
                    f"Value '{inference_id}' at 'inferenceId' failed to satisfy constraint: Member must "
                    "satisfy regular expression pattern: \\A\\S[\\p{Print}]*\\z"
                )
        if input_location is not None and (
            not 1 <= len(input_location) <= 1024 or not _INPUT_LOCATION.match(input_location)
        ):
            problems.append(
                f"Value '{input_location}' at 'inputLocation' failed to satisfy constraint: Member must "
                "satisfy regular expression pattern: ^(https|s3)://([^/]+)/?(.*)$"
            )
        for member, text, low, high in (
            ("requestTTLSeconds", ttl, 60, 21_600),
            ("invocationTimeoutSeconds", timeout, 1, 3_600),
        ):
            if text is None:
                continue
            try:
                number = int(text)
            except ValueError:
                raise _ValidationError(
                    f"Value '{text}' at '{member}' is not a valid integer", code="SerializationException"
                ) from None
            if number < low:
                problems.append(
                    f"Value '{number}' at '{member}' failed to satisfy constraint: Member must have value "
                    f"greater than or equal to {low}"
                )
            elif number > high:
                problems.append(
                    f"Value '{number}' at '{member}' failed to satisfy constraint: Member must have value "
                    f"less than or equal to {high}"
                )
        if len(body) > MAX_BODY:
            problems.append(
                "Value at 'body' failed to satisfy constraint: Member must have length less than or "
                f"equal to {MAX_BODY}"
            )
        if problems:
            count = len(problems)
            raise _ValidationError(
                f"{count} validation error{'s' if count > 1 else ''} detected: " + "; ".join(problems)
            )
        if body and input_location is not None:
            raise _ValidationError("Provide exactly one of Body or InputLocation, not both.")
        if not body and input_location is None:
            raise _ValidationError("Provide exactly one of Body or InputLocation.")
        spec = self.endpoints.get(name)
        if spec is None:
            raise _ValidationError(f"Endpoint {name} of account {ACCOUNT} not found.")

        inference_id = inference_id or str(uuid.uuid4())
        key = str(uuid.uuid4())
        output_location = f"{spec.output_path.rstrip('/')}/{key}.out"
        failure_location = f"{spec.failure_path.rstrip('/')}/{key}-error.out"
        with self._lock:
            self.counters["accepted"] += 1
            self.counters["accepted.inline" if body else "accepted.s3"] += 1
            early = self._random.random() < self.faults.early
            duplicate = self._random.random() < self.faults.duplicate
            lost = self._random.random() < self.faults.lost
            service_time = self._random.uniform(*self._service_time)
            faults = tuple(
                name for name, on in (("early", early), ("duplicated", duplicate), ("lost", lost)) if on
            )
            self.accepted.setdefault(inference_id, []).append(
                Acceptance(
                    output_location=output_location,
                    failure_location=failure_location,
                    faults=faults,
                    inline=bool(body),
                    input_location=input_location,
                    content_type=content_type,
                    request_ttl_seconds=None if ttl is None else int(ttl),
                    invocation_timeout_seconds=None if timeout is None else int(timeout),
                )
            )
        job = _Job(
            endpoint=spec,
            inference_id=inference_id,
            body=body or None,
            input_location=input_location,
            content_type=content_type,
            accept=accept,
            output_location=output_location,
            failure_location=failure_location,
            received=datetime.now(UTC),
            service_time=service_time,
            duplicate=duplicate,
            lost=lost,
        )
        return job, early

    # -- the model side (worker threads) ---------------------------------------------------------

    def _run_later(self, job: _Job) -> None:
        time.sleep(job.service_time)
        self._complete(job)

    def _complete(self, job: _Job) -> None:
        try:
            self._process(job)
        except Exception as exc:
            self._error(f"{job.inference_id}: {type(exc).__name__}: {exc}")

    def _process(self, job: _Job) -> None:
        data: bytes | None = job.body
        failure: str | None = None
        if data is None:
            assert job.input_location is not None
            try:
                bucket, key = _split_s3(job.input_location)
                data = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except Exception as exc:
                failure = (
                    f"ClientError: Failed to download the input data from {job.input_location}: "
                    f"{type(exc).__name__}"
                )
        if data is not None:
            failure = _model_failure(data)
        parameters: dict[str, str] = {}
        if job.content_type is not None:
            parameters["contentType"] = job.content_type
        if job.accept is not None:
            parameters["accept"] = job.accept
        parameters["endpointName"] = job.endpoint.name
        if job.input_location is not None:
            parameters["inputLocation"] = job.input_location
        message: dict[str, Any] = {
            "awsRegion": self.region,
            "eventTime": "",
            "receivedTime": _iso(job.received),
        }
        if failure is None:
            assert data is not None
            output = json.dumps(
                {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}, separators=(",", ":")
            ).encode()
            bucket, key = _split_s3(job.output_location)
            self._s3.put_object(Bucket=bucket, Key=key, Body=output, ContentType="application/json")
            message["invocationStatus"] = "Completed"
            message["requestParameters"] = parameters
            message["responseParameters"] = {
                "contentType": "application/json",
                "outputLocation": job.output_location,
            }
            topic = job.endpoint.success_topic
            status = "Completed"
        else:
            bucket, key = _split_s3(job.failure_location)
            self._s3.put_object(
                Bucket=bucket, Key=key, Body=failure.encode(), ContentType="text/plain; charset=utf-8"
            )
            message["invocationStatus"] = "Failed"
            message["failureReason"] = failure
            message["requestParameters"] = parameters
            message["responseParameters"] = {
                "contentType": "text/plain; charset=utf-8",
                "failureLocation": job.failure_location,
            }
            topic = job.endpoint.error_topic
            status = "Failed"
        message["eventTime"] = _iso(datetime.now(UTC))
        message["inferenceId"] = job.inference_id
        message["eventVersion"] = "1.0"
        message["eventSource"] = "aws:sagemaker"
        message["eventName"] = "InferenceResult"
        with self._lock:
            for acceptance in self.accepted[job.inference_id]:
                if acceptance.output_location == job.output_location:
                    acceptance.status = status
            self.counters[status.lower()] += 1
        if job.lost:
            self._count("lost")
            return
        text = json.dumps(message, separators=(",", ":"))
        for _ in range(2 if job.duplicate else 1):
            self._sns.publish(TopicArn=topic, Message=text)
            self._count("published")
        if job.duplicate:
            self._count("duplicated")


def _model_failure(data: bytes) -> str | None:
    """The model: fails (returns the reason) for a JSON object with ``"fail": true``."""
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(value, dict) or value.get("fail") is not True:
        return None
    reason = str(value.get("reason", ""))
    return (
        'ClientError: Received client error (400) from primary with message "model failed: '
        f'{reason}". See the SageMaker Endpoint logs in your account for more information.'
    )


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    standin: StandIn

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-request resets its connection: counted, not printed. The tests allow
        # it only where they kill the client.
        self.standin._count("connection_errors")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "standin"
    sys_version = ""
    timeout = 30.0

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            for _ in range(1_000_000):
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        assert isinstance(self.server, _Server)
        standin = self.server.standin
        body = self._read_body()
        path = urllib.parse.urlsplit(self.path).path
        match = _PATH.match(path)
        if match is None:
            self._unknown()
            return
        name = urllib.parse.unquote(match.group("name"))
        try:
            status, headers, answer = standin.invoke(name, self.headers, body)
        except Exception as exc:  # a bug of the stand-in: say so loudly, as a 500
            standin._error(f"invoke: {type(exc).__name__}: {exc}")
            status, headers = 500, {"x-amzn-ErrorType": "InternalFailure", "Content-Type": "application/json"}
            answer = json.dumps({"message": "stand-in bug"}).encode()
        self._answer(status, headers, answer)

    def _unknown(self) -> None:
        self._answer(
            404,
            {"x-amzn-ErrorType": "UnknownOperationException", "Content-Type": "application/json"},
            b'{"message": null}',
        )

    def do_GET(self) -> None:
        self._read_body()
        self._unknown()

    do_PUT = do_GET
    do_DELETE = do_GET


@contextmanager
def run_standin(**options: Any) -> Iterator[StandIn]:
    """Start a :class:`StandIn` (the keyword arguments are its own) and stop it on exit."""
    standin = StandIn(**options)
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()
