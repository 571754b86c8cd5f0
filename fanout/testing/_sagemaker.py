"""sagemaker-runtime ``InvokeEndpointAsync``: validation, the endpoint queues, workers and notifications;
and the control plane's ``DescribeEndpoint``.

``handle`` validates a request exactly as the service model constrains it and answers 202, or a
400 ``ValidationError`` in the rest-json error shape. An accepted request joins its endpoint's queue.
``run`` owns a task group with ``instance_count * max_concurrent_invocations_per_instance`` workers
per endpoint and a reaper that expires requests still queued after ``RequestTTLSeconds``. A worker
draws the service time, fetches an ``InputLocation`` from the S3 store, runs the model under
``InvocationTimeoutSeconds``, writes the output (or the failure body) to S3 and publishes the
notification JSON to the endpoint's success (or error) topic through the SNS hub.

Early notifications (``NotificationFaults.early_rate``, applied with ``set_early_rate``): for that
share of accepted requests to an endpoint with a topic, ``handle`` enqueues the job as usual and
then holds its 202 until a worker (or the TTL reaper) has finished it, so the notification is
published before the client learns the request was accepted, as SNS can outrun the HTTP response
on AWS. The hold is bounded by ``EARLY_HOLD_SECONDS`` of real time, after which the 202 goes out
anyway (counted as ``early_capped``).

The control plane signs with the same service name (``sagemaker``), so both arrive at ``handle``:
a request with ``X-Amz-Target: SageMaker.<Operation>`` (JSON 1.1) is the control plane's.
``DescribeEndpoint`` answers from the endpoint's configuration in AWS's shape (an async endpoint,
InService since it was declared, one ``AllTraffic`` variant), or a ``ValidationException`` ``Could not
find endpoint "<arn>".``; any other control-plane operation is an ``UnknownOperationException``.
"""

from __future__ import annotations

import base64
import contextlib
import heapq
import json
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import anyio
from aiohttp import web
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._container import ContainerModel
from ._emu_config import EndpointConfig, ModelResult

if TYPE_CHECKING:
    from ._s3 import S3Store
    from ._sns import SnsHub

__all__ = [
    "CONTROL_PLANE_TARGET",
    "EARLY_HOLD_SECONDS",
    "MAX_BODY_BYTES",
    "SageMakerRuntime",
    "json_error",
    "topic_arn",
]

MAX_BODY_BYTES: Final = 128_000
MAX_RESPONSE_IN_NOTIFICATION: Final = 128_000
DEFAULT_REQUEST_TTL_SECONDS: Final = 21_600
DEFAULT_INVOCATION_TIMEOUT_SECONDS: Final = 900
# a held 202 must not outlast a client's read timeout, even behind a deep backlog
EARLY_HOLD_SECONDS: Final = 5.0
# duplicate InferenceIds are counted among this many most recent ones, so memory stays bounded
SEEN_IDS_WINDOW: Final = 1 << 18
RESPONSE_BODY_MESSAGE: Final = "Check S3 path location(if configured) or Cloudwatch for additional details."
TEST_NOTIFICATION: Final = (
    '{"eventVersion":"1.0","eventSource":"aws:sagemaker","eventName":"TestNotification"}'
)

_PATH = re.compile(r"/endpoints/([^/]*)/async-invocations")
CONTROL_PLANE_TARGET: Final = "SageMaker."
"""The ``X-Amz-Target`` prefix of the control plane's operations."""
_JSON_11: Final = "application/x-amz-json-1.1"
_ENDPOINT_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")
_INFERENCE_ID = re.compile(r"\S[\x20-\x7e]*")
_INPUT_LOCATION = re.compile(r"(https|s3)://([^/\n]+)/?([^\n]*)")
_EXTENSION = re.compile(r"(?!s3:|https:)[a-zA-Z0-9!_.*'()/-]+")
_FILENAME = re.compile(r"(?!.*\..*\.)[a-zA-Z0-9][a-zA-Z0-9_.-]*")

_QUEUED, _RUNNING, _DONE, _EXPIRED = range(4)


def topic_arn(region: str, account_id: str, name: str) -> str:
    return f"arn:aws:sns:{region}:{account_id}:{name}"


def json_error(status: int, code: str, message: str | None) -> web.Response:
    """The rest-json error shape botocore parses: ``x-amzn-ErrorType`` and ``{"message": ...}``."""
    return web.Response(
        status=status,
        body=json.dumps({"message": message}).encode(),
        content_type="application/json",
        headers={"x-amzn-ErrorType": code, "x-amzn-RequestId": str(uuid.uuid4())},
    )


def _json11_error(code: str, message: str) -> web.Response:
    """The JSON 1.1 error shape: ``__type`` and ``message`` in the body (and the code in a header)."""
    return web.Response(
        status=400,
        body=json.dumps({"__type": code, "message": message}).encode(),
        content_type=_JSON_11,
        headers={"x-amzn-ErrorType": code, "x-amzn-RequestId": str(uuid.uuid4())},
    )


def _timestamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True, eq=False)
class _Job:
    endpoint_name: str
    inference_id: str
    body: bytes | None
    input_location: str | None
    content_type: str | None
    accept: str | None
    custom_attributes: str | None
    output_location: str
    failure_location: str | None
    ttl_seconds: int
    timeout_seconds: int
    received_at: float
    deadline: float
    state: int = _QUEUED
    # set once the job has finished (and published, if it has a topic); only early jobs have one
    finished: anyio.Event | None = None

    def finish(self) -> None:
        if self.finished is not None:
            self.finished.set()


class _Endpoint:
    def __init__(self, config: EndpointConfig, success_arn: str | None, error_arn: str | None) -> None:
        self.config = config
        self.success_arn = success_arn
        self.error_arn = error_arn
        self.output_path = config.s3_output_path.rstrip("/")
        self.failure_path = config.s3_failure_path.rstrip("/") if config.s3_failure_path else None
        self.created_at = time.time()
        self.send: MemoryObjectSendStream[_Job]
        self.receive: MemoryObjectReceiveStream[_Job]
        self.send, self.receive = anyio.create_memory_object_stream[_Job](float("inf"))
        self.queued = 0
        self.in_flight = 0


class _Validator:
    """Collects constraint violations in the AWS wording."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def add(self, member: str, value: str | None, constraint: str) -> None:
        where = f"Value at '{member}'" if value is None else f"Value '{value}' at '{member}'"
        self.errors.append(f"{where} failed to satisfy constraint: Member must {constraint}")

    def string(
        self,
        member: str,
        value: str | None,
        *,
        max_len: int,
        min_len: int = 0,
        pattern: re.Pattern[str] | None = None,
        pattern_text: str = "",
        ascii_only: bool = False,
        sensitive: bool = False,
    ) -> None:
        if value is None:
            return
        shown = None if sensitive else value
        if len(value) > max_len:
            self.add(member, shown, f"have length less than or equal to {max_len}")
        elif len(value) < min_len:
            self.add(member, shown, f"have length greater than or equal to {min_len}")
        if ascii_only and not value.isascii():
            self.add(member, shown, "satisfy regular expression pattern: \\p{ASCII}*")
        if pattern is not None and not pattern.fullmatch(value):
            self.add(member, shown, f"satisfy regular expression pattern: {pattern_text}")

    def integer(self, member: str, value: str | None, low: int, high: int, default: int) -> int:
        if value is None:
            return default
        try:
            number = int(value.strip())
        except ValueError:
            self.add(member, value, "be an integer")
            return default
        if number < low:
            self.add(member, str(number), f"have value greater than or equal to {low}")
        elif number > high:
            self.add(member, str(number), f"have value less than or equal to {high}")
        return number

    def message(self) -> str:
        count = len(self.errors)
        noun = "error" if count == 1 else "errors"
        return f"{count} validation {noun} detected: " + "; ".join(self.errors)


class SageMakerRuntime:
    """The emulated sagemaker-runtime service for one account and region."""

    def __init__(
        self,
        *,
        region: str,
        account_id: str,
        s3: S3Store,
        sns: SnsHub,
        seed: int,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.region = region
        self.account_id = account_id
        self._s3 = s3
        self._sns = sns
        self._rng = random.Random(f"{seed}/service-time")
        # its own stream, so turning early notifications on leaves the service times as they were
        self._early_rng = random.Random(f"{seed}/early")
        self._early_rate = 0.0
        self._time_scale = time_scale
        self._clock = clock
        self._endpoints: dict[str, _Endpoint] = {}
        self._tg: TaskGroup | None = None
        self._expiry: list[tuple[float, int, _Job, _Endpoint]] = []
        self._expiry_seq = 0
        self._wakeup = anyio.Event()
        self._seen_ids: set[int] = set()
        self._seen_order: deque[int] = deque()
        self.counters = dict.fromkeys(
            ("accepted", "processed", "succeeded", "failed", "expired", "timed_out", "rejected"), 0
        )
        self.duplicate_inference_ids = 0
        self.published = 0
        self.early = 0
        self.early_capped = 0

    # ----------------------------------------------------------------------------------------------
    # endpoints and workers

    def create_endpoint(self, config: EndpointConfig) -> None:
        """Declare (or replace) an endpoint; publishes a TestNotification to its topics."""
        if config.name in self._endpoints:
            raise ValueError(f"endpoint {config.name!r} already exists")
        success, error = config.success_topic, config.error_topic
        endpoint = _Endpoint(
            config,
            topic_arn(self.region, self.account_id, success) if success else None,
            topic_arn(self.region, self.account_id, error) if error else None,
        )
        self._endpoints[config.name] = endpoint
        for topic in dict.fromkeys(a for a in (endpoint.success_arn, endpoint.error_arn) if a):
            self._publish(topic, TEST_NOTIFICATION)
        if self._tg is not None:
            self._start_workers(self._tg, endpoint)

    def endpoint_names(self) -> list[str]:
        return list(self._endpoints)

    def set_early_rate(self, rate: float) -> None:
        """The share of accepted requests whose notification is published before their 202."""
        self._early_rate = rate

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the workers and the TTL reaper until cancelled."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                for endpoint in self._endpoints.values():
                    self._start_workers(tg, endpoint)
                tg.start_soon(self._reap)
                task_status.started()
        finally:
            self._tg = None
            for endpoint in self._endpoints.values():
                endpoint.send.close()
                endpoint.receive.close()

    def _start_workers(self, tg: TaskGroup, endpoint: _Endpoint) -> None:
        for _ in range(endpoint.config.workers):
            tg.start_soon(self._worker, endpoint)

    async def _worker(self, endpoint: _Endpoint) -> None:
        receive = endpoint.receive
        async for job in receive:
            if job.state != _QUEUED:
                continue  # expired while queued
            job.state = _RUNNING
            endpoint.queued -= 1
            endpoint.in_flight += 1
            try:
                await self._invoke(endpoint, job)
            except Exception:  # one broken job must not stop the worker
                self.counters["failed"] += 1
            finally:
                endpoint.in_flight -= 1
                job.state = _DONE
                job.body = None
                job.finish()

    async def _reap(self) -> None:
        heap = self._expiry
        while True:
            now = time.monotonic()
            while heap and heap[0][0] <= now:
                _, _, job, endpoint = heapq.heappop(heap)
                if job.state == _QUEUED:
                    job.state = _EXPIRED
                    endpoint.queued -= 1
                    job.body = None
                    # e.g. its topic was deleted: the reaper must go on
                    with contextlib.suppress(Exception):
                        self._expire(endpoint, job)
                    job.finish()
            self._wakeup = anyio.Event()
            with anyio.move_on_after(heap[0][0] - now if heap else 3600.0):
                await self._wakeup.wait()

    def _schedule_expiry(self, endpoint: _Endpoint, job: _Job) -> None:
        heap = self._expiry
        # entries of jobs that already left the queue linger until their deadline; compact them
        # away when they outnumber the queued ones, so memory follows the backlog, not the TTL
        if len(heap) > 1024 and len(heap) > 4 * sum(e.queued for e in self._endpoints.values()):
            heap[:] = [entry for entry in heap if entry[2].state == _QUEUED]
            heapq.heapify(heap)
        self._expiry_seq += 1
        earliest = heap[0][0] if heap else None
        heapq.heappush(heap, (job.deadline, self._expiry_seq, job, endpoint))
        if earliest is None or job.deadline < earliest:
            self._wakeup.set()

    # ----------------------------------------------------------------------------------------------
    # one invocation

    async def _invoke(self, endpoint: _Endpoint, job: _Job) -> None:
        config = endpoint.config
        try:
            with anyio.fail_after(job.timeout_seconds * self._time_scale):
                service_time = config.service_time.sample(self._rng)
                if service_time > 0:
                    await anyio.sleep(service_time)
                body = job.body if job.body is not None else self._fetch(job.input_location or "")
                if body is None:
                    result = ModelResult.fail(
                        f"ClientError: Failed to download the input from {job.input_location}: "
                        "the object does not exist."
                    )
                else:
                    model = config.model
                    returned: Any
                    if isinstance(model, ContainerModel):
                        # a model server gets the Accept header too; the Model signature has no room
                        returned = await model(body, job.content_type, job.custom_attributes, job.accept)
                    else:
                        returned = await model(body, job.content_type, job.custom_attributes)
                    if isinstance(returned, ModelResult):
                        result = returned
                    else:
                        result = ModelResult.fail(
                            f"ClientError: the model returned {type(returned).__name__}"
                        )
        except TimeoutError:
            self.counters["timed_out"] += 1
            result = ModelResult.fail(
                "ClientError: Invocation timed out: the model did not respond within "
                f"InvocationTimeoutSeconds ({job.timeout_seconds} s)."
            )
        except Exception as exc:
            result = ModelResult.fail(f"ClientError: the model raised {type(exc).__name__}: {exc}")
        self.counters["processed"] += 1
        if result.failure_reason is None:
            self._succeed(endpoint, job, result)
        else:
            self._fail(endpoint, job, result, result.failure_reason)

    def _fetch(self, location: str) -> bytes | None:
        parsed = _parse_input_location(location)
        if parsed is None:
            return None
        obj = self._s3.get_object(*parsed) if self._s3.bucket_exists(parsed[0]) else None
        return obj.body if obj is not None else None

    def _succeed(self, endpoint: _Endpoint, job: _Job, result: ModelResult) -> None:
        bucket, key = _split_s3(job.output_location)
        try:
            self._s3.put_object(bucket, key, result.body, content_type=result.content_type)
        except Exception as exc:
            self._fail(endpoint, job, result, f"ClientError: Failed to upload the output: {exc}")
            return
        self.counters["succeeded"] += 1
        if endpoint.success_arn is None:
            return
        params = {"contentType": result.content_type, "outputLocation": job.output_location}
        include = endpoint.config.includes_response("SUCCESS_NOTIFICATION_TOPIC")
        message = self._message(job, "Completed", params, result.body if include else None, None)
        self._publish(endpoint.success_arn, message)

    def _fail(self, endpoint: _Endpoint, job: _Job, result: ModelResult, reason: str) -> None:
        self.counters["failed"] += 1
        params: dict[str, str] = {"contentType": result.content_type}
        if job.failure_location is not None:
            bucket, key = _split_s3(job.failure_location)
            try:
                self._s3.put_object(bucket, key, result.body, content_type=result.content_type)
            except Exception:
                pass  # the notification still reports the failure, without a location
            else:
                params["failureLocation"] = job.failure_location
        if endpoint.error_arn is None:
            return
        include = endpoint.config.includes_response("ERROR_NOTIFICATION_TOPIC")
        message = self._message(job, "Failed", params, result.body if include else None, reason)
        self._publish(endpoint.error_arn, message)

    def _expire(self, endpoint: _Endpoint, job: _Job) -> None:
        self.counters["expired"] += 1
        reason = (
            f"Request expired: it was not processed within RequestTTLSeconds ({job.ttl_seconds} s) "
            "of being received."
        )
        params: dict[str, str] = {}
        if job.failure_location is not None:
            bucket, key = _split_s3(job.failure_location)
            try:
                self._s3.put_object(bucket, key, reason.encode(), content_type="text/plain")
            except Exception:
                pass  # the notification still reports the expiry, without a location
            else:
                params["failureLocation"] = job.failure_location
        if endpoint.error_arn is not None:
            self._publish(endpoint.error_arn, self._message(job, "Expired", params, None, reason))

    def _message(
        self,
        job: _Job,
        status: str,
        response_parameters: dict[str, str],
        response_body: bytes | None,
        failure_reason: str | None,
    ) -> str:
        request_parameters: dict[str, str] = {}
        if job.content_type is not None:
            request_parameters["contentType"] = job.content_type
        if job.accept is not None:
            request_parameters["accept"] = job.accept
        request_parameters["endpointName"] = job.endpoint_name
        if job.input_location is not None:
            request_parameters["inputLocation"] = job.input_location
        message: dict[str, Any] = {
            "awsRegion": self.region,
            "eventTime": _timestamp(self._clock()),
            "receivedTime": _timestamp(job.received_at),
            "invocationStatus": status,
        }
        if failure_reason is not None:
            message["failureReason"] = failure_reason
        message["requestParameters"] = request_parameters
        message["responseParameters"] = response_parameters
        if response_body is not None and len(response_body) <= MAX_RESPONSE_IN_NOTIFICATION:
            message["responseBody"] = {
                "content": base64.b64encode(response_body).decode("ascii"),
                "message": RESPONSE_BODY_MESSAGE,
                "encoding": "BASE64",
            }
        message["inferenceId"] = job.inference_id
        message["eventVersion"] = "1.0"
        message["eventSource"] = "aws:sagemaker"
        message["eventName"] = "InferenceResult"
        return json.dumps(message, separators=(",", ":"))

    def _publish(self, arn: str, message: str) -> None:
        self.published += 1
        self._sns.publish(arn, message)

    # ----------------------------------------------------------------------------------------------
    # the HTTP operation

    async def handle(self, request: web.Request) -> web.StreamResponse:
        target = request.headers.get("X-Amz-Target")
        if target is not None:
            return await self._control_plane(request, target)
        match = _PATH.fullmatch(request.path)
        if match is None or request.method != "POST":
            return json_error(
                404, "UnknownOperationException", f"No operation for {request.method} {request.path}"
            )
        name = match.group(1)
        headers = request.headers
        get = headers.get
        check = _Validator()
        if len(name) > 63:
            check.add("endpointName", name, "have length less than or equal to 63")
        elif not _ENDPOINT_NAME.fullmatch(name):
            check.add(
                "endpointName", name, "satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9])*"
            )
        content_type = get("X-Amzn-SageMaker-Content-Type")
        accept = get("X-Amzn-SageMaker-Accept")
        custom_attributes = get("X-Amzn-SageMaker-Custom-Attributes")
        inference_id = get("X-Amzn-SageMaker-Inference-Id")
        input_location = get("X-Amzn-SageMaker-InputLocation")
        extension = get("X-Amzn-SageMaker-S3OutputPathExtension")
        filename = get("X-Amzn-SageMaker-Filename")
        check.string("contentType", content_type, max_len=1024, ascii_only=True)
        check.string("accept", accept, max_len=1024, ascii_only=True)
        check.string("customAttributes", custom_attributes, max_len=1024, ascii_only=True, sensitive=True)
        check.string(
            "inferenceId",
            inference_id,
            min_len=1,
            max_len=64,
            pattern=_INFERENCE_ID,
            pattern_text=r"\A\S[\p{Print}]*\z",
        )
        check.string(
            "inputLocation",
            input_location,
            min_len=1,
            max_len=1024,
            pattern=_INPUT_LOCATION,
            pattern_text="^(https|s3)://([^/]+)/?(.*)$",
        )
        check.string(
            "s3OutputPathExtension",
            extension,
            min_len=1,
            max_len=512,
            pattern=_EXTENSION,
            pattern_text="^(?!s3:|https:)[a-zA-Z0-9!_.*'()/-]+$",
        )
        check.string(
            "filename",
            filename,
            min_len=1,
            max_len=32,
            pattern=_FILENAME,
            pattern_text=r"^(?!.*\..*\.)[a-zA-Z0-9][a-zA-Z0-9-_\.]*$",
        )
        ttl = check.integer(
            "requestTTLSeconds",
            get("X-Amzn-SageMaker-RequestTTLSeconds"),
            60,
            21600,
            DEFAULT_REQUEST_TTL_SECONDS,
        )
        timeout = check.integer(
            "invocationTimeoutSeconds",
            get("X-Amzn-SageMaker-InvocationTimeoutSeconds"),
            1,
            3600,
            DEFAULT_INVOCATION_TIMEOUT_SECONDS,
        )
        body = await request.read()
        if len(body) > MAX_BODY_BYTES:
            check.add("body", None, f"have length less than or equal to {MAX_BODY_BYTES}")
        if check.errors:
            return self._reject(check.message())
        if body and input_location is not None:
            return self._reject("Provide exactly one of Body or InputLocation: the request has both.")
        if not body and input_location is None:
            return self._reject("Provide exactly one of Body or InputLocation: the request has neither.")
        endpoint = self._endpoints.get(name)
        if endpoint is None:
            return self._reject(f"Endpoint {name} of account {self.account_id} not found.")
        if input_location is not None and self._fetch(input_location) is None:
            return self._reject(
                f"Could not access the input location {input_location}: the object does not exist."
            )
        if inference_id is None:
            inference_id = str(uuid.uuid4())
        else:
            key = hash(inference_id)
            if key in self._seen_ids:
                self.duplicate_inference_ids += 1
            else:
                self._remember(key)
        name_uuid = str(uuid.uuid4())
        output = endpoint.output_path
        if extension is not None:
            output = f"{output}/{extension.strip('/')}"
        output_location = f"{output}/{filename or name_uuid + '.out'}"
        failure_location = f"{endpoint.failure_path}/{name_uuid}-error.out" if endpoint.failure_path else None
        now = self._clock()
        job = _Job(
            endpoint_name=name,
            inference_id=inference_id,
            body=body or None,
            input_location=input_location,
            content_type=content_type,
            accept=accept,
            custom_attributes=custom_attributes,
            output_location=output_location,
            failure_location=failure_location,
            ttl_seconds=ttl,
            timeout_seconds=timeout,
            received_at=now,
            deadline=time.monotonic() + ttl * self._time_scale,
        )
        # an endpoint without topics publishes nothing, so holding its 202 would only slow it down
        if (
            self._early_rate > 0
            and (endpoint.success_arn is not None or endpoint.error_arn is not None)
            and self._early_rng.random() < self._early_rate
        ):
            finished = job.finished = anyio.Event()
        else:
            finished = None
        endpoint.queued += 1
        self.counters["accepted"] += 1
        self._schedule_expiry(endpoint, job)
        endpoint.send.send_nowait(job)
        if finished is not None:
            self.early += 1
            with anyio.move_on_after(EARLY_HOLD_SECONDS):
                await finished.wait()
            if not finished.is_set():
                self.early_capped += 1
        response_headers = {
            "x-amzn-RequestId": str(uuid.uuid4()),
            "X-Amzn-SageMaker-OutputLocation": output_location,
        }
        if failure_location is not None:
            response_headers["X-Amzn-SageMaker-FailureLocation"] = failure_location
        return web.Response(
            status=202,
            body=json.dumps({"InferenceId": inference_id}).encode(),
            content_type="application/json",
            headers=response_headers,
        )

    async def _control_plane(self, request: web.Request, target: str) -> web.Response:
        operation = target.removeprefix(CONTROL_PLANE_TARGET)
        if request.method != "POST" or operation != "DescribeEndpoint":
            return _json11_error("UnknownOperationException", f"The emulator does not implement {target}.")
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            return _json11_error("SerializationException", "The request body is not valid JSON.")
        name = body.get("EndpointName") if isinstance(body, dict) else None
        check = _Validator()
        if not isinstance(name, str):
            check.add("endpointName", None, "not be null")
        elif len(name) > 63:
            check.add("endpointName", name, "have length less than or equal to 63")
        elif not _ENDPOINT_NAME.fullmatch(name):
            check.add(
                "endpointName", name, "satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9])*"
            )
        if check.errors or not isinstance(name, str):
            return _json11_error("ValidationException", check.message())
        # AWS lowercases the name in an endpoint's ARN.
        arn = f"arn:aws:sagemaker:{self.region}:{self.account_id}:endpoint/{name.lower()}"
        endpoint = self._endpoints.get(name)
        if endpoint is None:
            return _json11_error("ValidationException", f'Could not find endpoint "{arn}".')
        return web.Response(
            status=200,
            body=json.dumps(self._description(endpoint, arn)).encode(),
            content_type=_JSON_11,
            headers={"x-amzn-RequestId": str(uuid.uuid4())},
        )

    @staticmethod
    def _description(endpoint: _Endpoint, arn: str) -> dict[str, Any]:
        config = endpoint.config
        output: dict[str, Any] = {"S3OutputPath": config.s3_output_path}
        if config.s3_failure_path is not None:
            output["S3FailurePath"] = config.s3_failure_path
        notification: dict[str, Any] = {}
        if endpoint.success_arn is not None:
            notification["SuccessTopic"] = endpoint.success_arn
        if endpoint.error_arn is not None:
            notification["ErrorTopic"] = endpoint.error_arn
        if config.include_inference_response_in:
            notification["IncludeInferenceResponseIn"] = list(config.include_inference_response_in)
        if notification:
            output["NotificationConfig"] = notification
        instances = config.instance_count
        return {
            "EndpointName": config.name,
            "EndpointArn": arn,
            "EndpointConfigName": config.name,
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "CurrentWeight": 1.0,
                    "DesiredWeight": 1.0,
                    "CurrentInstanceCount": instances,
                    "DesiredInstanceCount": instances,
                }
            ],
            "EndpointStatus": "InService",
            "CreationTime": endpoint.created_at,
            "LastModifiedTime": endpoint.created_at,
            "AsyncInferenceConfig": {
                "ClientConfig": {
                    "MaxConcurrentInvocationsPerInstance": config.max_concurrent_invocations_per_instance
                },
                "OutputConfig": output,
            },
        }

    def _remember(self, key: int) -> None:
        self._seen_ids.add(key)
        self._seen_order.append(key)
        if len(self._seen_order) > SEEN_IDS_WINDOW:
            self._seen_ids.discard(self._seen_order.popleft())

    def _reject(self, message: str) -> web.Response:
        self.counters["rejected"] += 1
        return json_error(400, "ValidationError", message)

    def statistics(self) -> dict[str, Any]:
        return {
            "invocations": dict(self.counters),
            "duplicate_inference_ids": self.duplicate_inference_ids,
            "early": self.early,
            "early_capped": self.early_capped,
            "endpoints": {
                name: {"backlog": e.queued, "in_flight": e.in_flight, "workers": e.config.workers}
                for name, e in self._endpoints.items()
            },
        }


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _parse_input_location(location: str) -> tuple[str, str] | None:
    """(bucket, key) of an ``s3://`` URI or an S3 ``https://`` URL (virtual-hosted or path style)."""
    if location.startswith("s3://"):
        bucket, key = _split_s3(location)
        return (bucket, key) if bucket and key else None
    parts = urlsplit(location)
    host, path = parts.hostname or "", parts.path.lstrip("/")
    if host.startswith(("s3.", "s3-")) or ".s3." not in f".{host}":
        bucket, _, key = path.partition("/")
    else:
        bucket, key = host.split(".s3", 1)[0], path
    return (bucket, key) if bucket and key else None
