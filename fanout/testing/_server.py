"""The emulator's HTTP server: one aiohttp app on 127.0.0.1, one port for every service.

A request is routed by the service in its SigV4 credential scope (``Authorization`` header, or
``X-Amz-Credential`` in the query): ``sagemaker``, ``s3``, ``sqs`` or ``sns``. Before the service's
handler runs, the dispatcher applies the configured faults (latency, throttling, 5xx, a dropped
connection); after it, a dropped response (the request took effect, the connection is aborted
instead of answering). It counts the request by ``service.Operation`` and outcome (``ok``, the
error code, ``dropped``, ``dropped_response`` or ``exception``). ``/_fanout/`` paths are the
emulator's own: ``GET /_fanout/stats`` and ``PUT /_fanout/faults``.

``open_emulator`` runs it in-process; ``serve`` is ``fanout emulate``; ``run_emulator_process``
starts ``python -m fanout.testing`` in a subprocess (optionally pinned to one CPU) for benchmarks.
An endpoint whose model is a model server (``ContainerModel``, ``--model-url``) makes the emulator
ready only once that server answers ``GET /ping`` with 200, as an endpoint is InService only then.
"""

from __future__ import annotations

import json
import os
import random
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Final
from xml.sax.saxutils import escape

import anyio
from aiohttp import web

from .._exceptions import ConfigError
from .._loop import run
from ._container import (
    DEFAULT_STARTUP_TIMEOUT,
    ContainerModel,
    ContainerNotHealthy,
    check_startup_timeout,
    describe,
)
from ._emu_config import (
    ZERO,
    EmulatorConfig,
    EndpointConfig,
    FaultConfig,
    Model,
    default_config,
    default_model,
    faults_from_dict,
    load_config,
)
from ._emu_toml import config_to_toml
from ._faults import FaultInjector, NotificationFaultInjector
from ._s3 import S3Store, s3_operation
from ._sagemaker import CONTROL_PLANE_TARGET, SageMakerRuntime, json_error
from ._sns import SnsHub, sns_operation
from ._sqs import SqsStore, sqs_operation

__all__ = ["ENV_NAMES", "Emulator", "open_emulator", "run_emulator_process", "serve", "with_model_url"]

ACCESS_KEY_ID: Final = "AKIDFANOUTEMULATOR"
SECRET_ACCESS_KEY: Final = "fanout-emulator-secret"
# botocore reads the region only from AWS_DEFAULT_REGION (AWS_REGION is for the other SDKs), so both
# are exported: a plain aiobotocore script must work with nothing else set
ENV_NAMES: Final = (
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "FANOUT_ENDPOINT",
    "FANOUT_QUEUE_URL",
    "FANOUT_STAGING",
)
# S3 objects staged through the emulator may be large (the service allows 1 GB)
_MAX_REQUEST_BYTES: Final = 1 << 30
_SHUTDOWN_TIMEOUT: Final = 0.25
READY_LINE: Final = "# fanout emulator ready"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _service_of(request: web.Request) -> str | None:
    """The service of the SigV4 credential scope ``AKID/date/region/service/aws4_request``."""
    auth = request.headers.get("Authorization")
    if auth:
        start = auth.find("Credential=")
        if start >= 0:
            end = auth.find(",", start)
            scope = auth[start + 11 : end if end >= 0 else None].split("/")
            return scope[3] if len(scope) >= 5 else None
        return None
    credential = request.query.get("X-Amz-Credential")
    if credential:
        scope = credential.split("/")
        return scope[3] if len(scope) >= 5 else None
    return None


def _sagemaker_operation(request: web.Request) -> str:
    # The control plane shares the signing name: its JSON 1.1 target names the operation.
    target = request.headers.get("X-Amz-Target")
    if target is not None:
        return target.removeprefix(CONTROL_PLANE_TARGET)
    path = request.path
    if request.method == "POST" and path.startswith("/endpoints/") and path.endswith("/async-invocations"):
        return "InvokeEndpointAsync"
    return "Unknown"


def _fault_response(service: str, status: int, throttle: bool) -> web.Response:
    """A fault in the error shape of the service's protocol."""
    request_id = str(uuid.uuid4())
    if service == "sagemaker":
        if throttle:
            return json_error(400, "ThrottlingException", None)
        code = "InternalFailure" if status == 500 else "ServiceUnavailable"
        return json_error(
            status, code, "An internal error occurred." if status == 500 else "Service unavailable."
        )
    if service == "sqs":
        code = (
            "ThrottlingException"
            if throttle
            else ("InternalFailure" if status == 500 else "ServiceUnavailable")
        )
        return web.Response(
            status=status,
            body=json.dumps({"__type": f"com.amazonaws.sqs#{code}", "message": "Rate exceeded"}).encode(),
            content_type="application/x-amz-json-1.0",
            headers={
                "x-amzn-query-error": f"{code};{'Sender' if throttle else 'Receiver'}",
                "x-amzn-RequestId": request_id,
            },
        )
    if service == "s3":
        # S3 throttles with 503 SlowDown
        code = "SlowDown" if throttle else ("InternalError" if status == 500 else "ServiceUnavailable")
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{escape('Please reduce your request rate.')}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>"
        )
        return web.Response(
            status=503 if throttle else status,
            body=body.encode(),
            content_type="application/xml",
            headers={"x-amz-request-id": request_id},
        )
    code = "Throttling" if throttle else ("InternalError" if status == 500 else "ServiceUnavailable")
    body = (
        '<ErrorResponse xmlns="https://sns.amazonaws.com/doc/2010-03-31/"><Error>'
        f"<Type>{'Sender' if throttle else 'Receiver'}</Type><Code>{code}</Code>"
        "<Message>Rate exceeded</Message>"
        f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return web.Response(
        status=status, body=body.encode(), content_type="text/xml", headers={"x-amzn-RequestId": request_id}
    )


def _outcome(response: web.StreamResponse) -> str:
    if response.status < 400:
        return "ok"
    headers = response.headers
    code = headers.get("x-amzn-ErrorType")
    if code is None:
        query_error = headers.get("x-amzn-query-error")
        code = query_error.split(";", 1)[0] if query_error else None
    return code.split(":", 1)[0] if code else str(response.status)


class Emulator:
    """A running emulator: the stores, the SageMaker runtime, faults, counters and the env vars.

    Build it through ``open_emulator``; it is ready (and ``endpoint_url`` set) inside the block.
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.seed = config.seed if config.seed is not None else random.SystemRandom().randrange(1 << 32)
        region, account_id = config.region, config.account_id
        self.endpoint_url = ""
        self.s3 = S3Store(region=region, account_id=account_id)
        self.sqs = SqsStore(region=region, account_id=account_id, base_url=lambda: self.endpoint_url)
        self.sns = SnsHub(region=region, account_id=account_id, sqs=self.sqs)
        self._request_faults = FaultInjector(config.faults, seed=self.seed)
        self._notification_faults = NotificationFaultInjector(
            config.faults.notifications, self.sns.deliver, seed=self.seed
        )
        self.sns.deliver = self._notification_faults
        self.runtime = SageMakerRuntime(
            region=region,
            account_id=account_id,
            s3=self.s3,
            sns=self.sns,
            seed=self.seed,
            time_scale=config.time_scale,
        )
        self.runtime.set_early_rate(config.faults.notifications.early_rate)
        self._requests: dict[str, dict[str, int]] = {}
        # the model servers of the endpoints, each counted once: their sessions close with the emulator
        self._containers: list[ContainerModel] = []
        self._handlers: dict[str, Handler] = {
            "sagemaker": self.runtime.handle,
            "s3": self.s3.handle,
            "sqs": self.sqs.handle,
            "sns": self.sns.handle,
        }
        self._operations: dict[str, Callable[[web.Request], str]] = {
            "sagemaker": _sagemaker_operation,
            "s3": s3_operation,
            "sqs": sqs_operation,
            "sns": sns_operation,
        }
        self._declare(config)
        self.app = web.Application(client_max_size=_MAX_REQUEST_BYTES)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)

    def _declare(self, config: EmulatorConfig) -> None:
        for bucket in config.buckets:
            self.s3.create_bucket(bucket)
        for queue in config.queues:
            self.sqs.create_queue(queue.name, dict(queue.attributes))
        for topic in config.topics:
            arn = self.sns.create_topic(topic.name)
            for subscription in topic.subscriptions:
                self.sns.subscribe(arn, self.sqs.queue_arn(subscription.queue), raw=subscription.raw)
        for endpoint in config.endpoints:
            self._use_model(endpoint.model)
            self.runtime.create_endpoint(endpoint)

    def _use_model(self, model: Model) -> None:
        if isinstance(model, ContainerModel) and all(model is not m for m in self._containers):
            model.acquire()
            self._containers.append(model)

    async def _wait_for_models(self) -> None:
        """Wait until every model server answers its ping; ``ContainerNotHealthy`` if one never does."""
        problems: list[ContainerNotHealthy] = []

        async def wait(model: ContainerModel) -> None:
            try:
                await model.wait_until_healthy()
            except ContainerNotHealthy as exc:  # kept as itself, not wrapped in an exception group
                problems.append(exc)

        async with anyio.create_task_group() as tg:
            for model in self._containers:
                tg.start_soon(wait, model)
        if problems:
            raise problems[0]

    # ----------------------------------------------------------------------------------------------
    # public API

    def create_endpoint(self, endpoint: EndpointConfig) -> None:
        """Add an endpoint while running; sends its TestNotification. Its buckets must exist;
        its topics are created when missing (creating a topic is idempotent)."""
        for path in (endpoint.s3_output_path, endpoint.s3_failure_path):
            bucket = path.removeprefix("s3://").partition("/")[0] if path else None
            if bucket is not None and not self.s3.bucket_exists(bucket):
                raise ConfigError(f"endpoint {endpoint.name!r}: bucket {bucket!r} does not exist")
        for topic in (endpoint.success_topic, endpoint.error_topic):
            if topic is not None:
                self.sns.create_topic(topic)
        if endpoint.name in self.runtime.endpoint_names():
            raise ConfigError(f"endpoint {endpoint.name!r} already exists")
        self._use_model(endpoint.model)  # not pinged: a model server added at run time is the caller's
        self.runtime.create_endpoint(endpoint)

    def set_faults(self, faults: FaultConfig) -> None:
        """Replace the faults at run time (throttle buckets start full again)."""
        self._request_faults.set(faults)
        self._notification_faults.set(faults.notifications)
        self.runtime.set_early_rate(faults.notifications.early_rate)

    @property
    def faults(self) -> FaultConfig:
        return self._request_faults.faults

    def queue_url(self, name: str) -> str:
        return self.sqs.queue_url(name)

    @property
    def env(self) -> dict[str, str]:
        """The ``export`` variables: the AWS chain pointed here, and the default endpoint, queue, staging."""
        env = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.config.region,
            "AWS_DEFAULT_REGION": self.config.region,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        }
        if self.config.endpoints:
            endpoint = self.config.endpoints[0]
            env["FANOUT_ENDPOINT"] = endpoint.name
            queue = self._notification_queue(endpoint)
            if queue is not None:
                env["FANOUT_QUEUE_URL"] = self.sqs.queue_url(queue)
        if self.config.staging is not None:
            env["FANOUT_STAGING"] = self.config.staging
        return env

    def _notification_queue(self, endpoint: EndpointConfig) -> str | None:
        for topic in self.config.topics:
            if topic.name in (endpoint.success_topic, endpoint.error_topic) and topic.subscriptions:
                return topic.subscriptions[0].queue
        return self.config.queues[0].name if self.config.queues else None

    def stats(self) -> dict[str, Any]:
        """The counters, as ``GET /_fanout/stats`` returns them."""
        runtime = self.runtime.statistics()
        notifications = self._notification_faults.statistics()
        return {
            "seed": self.seed,
            "requests": {key: dict(outcomes) for key, outcomes in self._requests.items()},
            "invocations": runtime["invocations"],
            "duplicate_inference_ids": runtime["duplicate_inference_ids"],
            "endpoints": runtime["endpoints"],
            "notifications": {
                "published": self.runtime.published,
                "early": runtime["early"],
                "early_capped": runtime["early_capped"],
                **notifications,
            },
            "queues": self.sqs.statistics(),
            "s3": self.s3.statistics(),
            "sns": self.sns.statistics(),
            "faults": self._request_faults.statistics(),
        }

    # ----------------------------------------------------------------------------------------------
    # the dispatcher

    def _count(self, key: str, outcome: str) -> None:
        outcomes = self._requests.get(key)
        if outcomes is None:
            outcomes = self._requests[key] = {}
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/_fanout/"):
            return await self._control(request)
        service = _service_of(request)
        handler = self._handlers.get(service or "")
        if service is None or handler is None:
            return json_error(
                400,
                "IncompleteSignature",
                f"No SigV4 credential scope names a known service (got {service!r}).",
            )
        if service == "sns":
            await request.read()  # the SNS action is in the form body
        operation = self._operations[service](request)
        key = f"{service}.{operation}"
        faults = self._request_faults
        delay = faults.latency(service, operation)
        if delay > 0:
            await anyio.sleep(delay)
        scope = (
            request.path.split("/", 3)[2]
            if service == "sagemaker" and request.path.count("/") >= 2
            else service
        )
        action, status = faults.decide(service, operation, scope)
        if action == "drop":
            self._count(key, "dropped")
            return await self._drop(request)
        outcome: str | None = None
        if action in ("throttle", "error"):
            response: web.StreamResponse = _fault_response(service, status, action == "throttle")
        else:
            try:
                response = await handler(request)
            except web.HTTPException:
                raise
            except Exception as exc:
                outcome = "exception"
                response = (
                    _fault_response(service, 500, False)
                    if service != "sagemaker"
                    else json_error(
                        500, "InternalFailure", f"The emulator failed: {type(exc).__name__}: {exc}"
                    )
                )
        if action == "drop_response":
            self._count(key, "dropped_response")
            return await self._drop(request)
        self._count(key, outcome or _outcome(response))
        return response

    async def _drop(self, request: web.Request) -> web.StreamResponse:
        """Close the connection without answering; the client sees it reset (or closed)."""
        transport = request.transport
        if transport is not None:
            transport.abort()
        # aiohttp writes nothing to an aborted transport; this response never leaves
        raise web.HTTPInternalServerError()

    async def _control(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/_fanout/stats" and request.method == "GET":
            return web.json_response(self.stats())
        if request.path == "/_fanout/faults" and request.method in ("PUT", "POST"):
            try:
                data = await request.json()
                faults = faults_from_dict(data if isinstance(data, Mapping) else {"": data})
            except (ValueError, ConfigError) as exc:
                return web.json_response({"message": str(exc)}, status=400)
            self.set_faults(faults)
            return web.json_response({"message": "faults updated"})
        return web.json_response(
            {"message": f"unknown emulator path {request.method} {request.path}"}, status=404
        )

    async def _aclose(self) -> None:
        self._notification_faults.close()
        for model in self._containers:
            await model.release()
        self._containers.clear()


@asynccontextmanager
async def open_emulator(config: EmulatorConfig | None = None, *, port: int = 0) -> AsyncIterator[Emulator]:
    """Start the emulator on 127.0.0.1 (``port=0``: any free port); everything stops on exit.

    The workers run in a task group owned by this block. An exception raised in the block comes
    out as itself, not wrapped in an exception group. When an endpoint's model is a model server
    (``ContainerModel``), the block is entered only once it answers ``GET /ping`` with 200, or
    ``ContainerNotHealthy`` is raised after its ``startup_timeout``.
    """
    emu = Emulator(config if config is not None else default_config())
    # handler_cancellation: a long poll whose client hung up must not go on to take (and hide) messages.
    runner = web.AppRunner(
        emu.app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT, handler_cancellation=True
    )
    await runner.setup()
    raised: BaseException | None = None
    try:
        await emu._wait_for_models()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        emu.endpoint_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with anyio.create_task_group() as tg:
            await tg.start(emu.runtime.run)
            try:
                yield emu
            except BaseException as exc:
                raised = exc
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await emu._aclose()
            await runner.cleanup()
    if raised is not None:
        raise raised


# --------------------------------------------------------------------------------------------------
# `fanout emulate` and the subprocess helper


def _responses(endpoint: EndpointConfig) -> str:
    """Whether the notifications carry the response: clients must not take it for granted."""
    included = endpoint.include_inference_response_in
    if not included:
        return "IncludeInferenceResponseIn unset: results only at the output location"
    return f"IncludeInferenceResponseIn={','.join(t.split('_', 1)[0] for t in included)}"


def _describe(config: EmulatorConfig) -> list[str]:
    lines = [
        f"endpoint {e.name}: outputs {e.s3_output_path}, failures {e.s3_failure_path}, "
        f"success topic {e.success_topic}, error topic {e.error_topic}, "
        f"{e.instance_count} x {e.max_concurrent_invocations_per_instance} workers, {describe(e.model)}, "
        f"{_responses(e)}"
        for e in config.endpoints
    ]
    lines.extend(
        f"topic {topic.name} -> queue {sub.queue} ({'raw' if sub.raw else 'SNS envelope'})"
        for topic in config.topics
        for sub in topic.subscriptions
    )
    if config.staging:
        lines.append(f"staging {config.staging}")
    return lines


async def _serve(config: EmulatorConfig, port: int) -> int:
    for model in _model_servers(config):
        print(
            f"waiting for the model server at {model.url} to answer GET /ping with 200 "
            f"(at most {model.startup_timeout:g} s)",
            file=sys.stderr,
        )
    sys.stderr.flush()
    code = 0
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:
            # listening from the start, so Ctrl-C also stops the wait for a model server
            tg.start_soon(_cancel_on_signal, signals, tg.cancel_scope)
            try:
                async with open_emulator(config, port=port) as emu:
                    for name, value in emu.env.items():
                        print(f"export {name}={shlex.quote(value)}")
                    print(READY_LINE)
                    sys.stdout.flush()
                    print(
                        f"fanout emulator listening on {emu.endpoint_url} (seed {emu.seed})", file=sys.stderr
                    )
                    for line in _describe(config):
                        print(f"  {line}", file=sys.stderr)
                    print("press Ctrl-C to stop", file=sys.stderr)
                    sys.stderr.flush()
                    await anyio.sleep_forever()
            except ContainerNotHealthy as exc:
                print(f"fanout emulate: {exc}", file=sys.stderr)
                code = 2
            except OSError as exc:
                print(f"fanout emulate: cannot listen on 127.0.0.1:{port}: {exc}", file=sys.stderr)
                code = 2
            tg.cancel_scope.cancel()
    return code


async def _cancel_on_signal(signals: AsyncIterator[int], scope: anyio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


def _model_servers(config: EmulatorConfig) -> list[ContainerModel]:
    models: list[ContainerModel] = []
    for endpoint in config.endpoints:
        model = endpoint.model
        if isinstance(model, ContainerModel) and all(model is not m for m in models):
            models.append(model)
    return models


def with_model_url(
    config: EmulatorConfig, model_url: str | None, startup_timeout: float | None = None
) -> EmulatorConfig:
    """``--model-url`` and ``--model-startup-timeout`` applied to ``config``.

    ``model_url`` becomes the model of every endpoint that uses the default model, and their
    ``service_time`` becomes zero (the server's own time is the service time); ``ConfigError`` if
    no endpoint uses the default model. ``startup_timeout`` applies to every model server.
    """
    if model_url is None and startup_timeout is None:
        return config
    try:
        timeout = (
            DEFAULT_STARTUP_TIMEOUT if startup_timeout is None else check_startup_timeout(startup_timeout)
        )
    except ConfigError as exc:
        raise ConfigError(f"--model-startup-timeout: {str(exc).removeprefix('startup_timeout: ')}") from None
    try:
        server = None if model_url is None else ContainerModel(model_url, startup_timeout=timeout)
    except ConfigError as exc:
        raise ConfigError(f"--model-url: {str(exc).removeprefix('url: ')}") from None
    endpoints: list[EndpointConfig] = []
    for endpoint in config.endpoints:
        model = endpoint.model
        if server is not None and model is default_model:
            endpoint = replace(endpoint, model=server, service_time=ZERO)
        elif startup_timeout is not None and isinstance(model, ContainerModel):
            endpoint = replace(endpoint, model=ContainerModel(model.url, startup_timeout=timeout))
        endpoints.append(endpoint)
    if server is not None and all(e.model is not server for e in endpoints):
        raise ConfigError(
            "--model-url: no endpoint uses the default model, so none would use the model server "
            "(the config gives each endpoint its own model)"
        )
    return replace(config, endpoints=tuple(endpoints))


def serve(
    *,
    port: int = 0,
    config_path: str | None = None,
    print_config: bool = False,
    model_url: str | None = None,
    model_startup_timeout: float | None = None,
) -> int:
    """``fanout emulate``: print the export lines, serve until SIGINT/SIGTERM; 0, or 2 for a bad config.

    ``print_config``: print the configuration it would serve as TOML (``config_to_toml``) and
    return 0 at once. ``model_url``: forward the invocations of every endpoint that uses the default
    model to that model server (``with_model_url``); the export lines wait for its ping, for at most
    ``model_startup_timeout`` seconds (default 60), and it returns 2 if the ping never answers 200.
    """
    try:
        config = load_config(config_path) if config_path else default_config()
    except ConfigError as exc:
        print(f"fanout emulate: invalid emulator config: {exc}", file=sys.stderr)
        return 2
    try:
        config = with_model_url(config, model_url, model_startup_timeout)
        text = config_to_toml(config) if print_config else ""
    except ConfigError as exc:
        print(f"fanout emulate: {exc}", file=sys.stderr)
        return 2
    if print_config:
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    try:
        return run(_serve, config, port)
    except OSError as exc:
        print(f"fanout emulate: cannot listen on 127.0.0.1:{port}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


@contextmanager
def run_emulator_process(
    config_path: str | Path | None = None,
    *,
    cpu: int | None = None,
    port: int = 0,
    timeout: float = 30.0,
    faults: Mapping[str, Any] | None = None,
    model_url: str | None = None,
    model_startup_timeout: float | None = None,
) -> Iterator[dict[str, str]]:
    """Run ``python -m fanout.testing`` in a subprocess (pinned to ``cpu`` when given) and yield its env.

    The env dict holds the variables of its ``export`` lines. ``faults``, in the shape
    ``PUT /_fanout/faults`` takes (``ConfigError`` if bad), replace the config's faults before the
    env is yielded. ``model_url`` and ``model_startup_timeout`` are ``--model-url`` and
    ``--model-startup-timeout``; the wait for the export lines then also allows for the startup
    timeout. The process gets SIGINT on exit.
    """
    if faults is not None:
        faults_from_dict(faults)  # a bad value fails here, with its key path, not in the subprocess
    command = [sys.executable, "-m", "fanout.testing", "--port", str(port)]
    if config_path is not None:
        command += ["--config", str(config_path)]
    if model_url is not None:
        command += ["--model-url", model_url]
        timeout += DEFAULT_STARTUP_TIMEOUT if model_startup_timeout is None else model_startup_timeout
    if model_startup_timeout is not None:
        command += ["--model-startup-timeout", repr(float(model_startup_timeout))]
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr)
        try:
            if cpu is not None and hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(process.pid, {cpu})
            assert process.stdout is not None
            env = _read_exports(process, process.stdout.fileno(), timeout)
            if env is None:
                process.kill()
                process.wait()
                stderr.seek(0)
                detail = stderr.read().decode(errors="replace").strip()
                raise RuntimeError(f"the emulator did not start (exit code {process.returncode}): {detail}")
            if faults is not None:
                _put_faults(env["AWS_ENDPOINT_URL"], faults, timeout)
            yield env
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stdout is not None:
                process.stdout.close()


def _put_faults(endpoint_url: str, faults: Mapping[str, Any], timeout: float) -> None:
    request = urllib.request.Request(
        f"{endpoint_url}/_fanout/faults",
        data=json.dumps(faults).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


def _read_exports(process: subprocess.Popen[bytes], fd: int, timeout: float) -> dict[str, str] | None:
    """The variables of the export lines, once the ready line follows them; None if it never does."""
    deadline = time.monotonic() + timeout
    buffer = b""
    env: dict[str, str] = {}
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return None
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            text = line.decode().strip()
            if text == READY_LINE:
                return env
            if text.startswith("export ") and "=" in text:
                name, _, value = text.removeprefix("export ").partition("=")
                env[name] = shlex.split(value)[0] if value else ""
    return None
