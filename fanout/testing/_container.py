"""A model server under test as an emulated endpoint's model: the SageMaker hosting contract over HTTP.

``ContainerModel("http://127.0.0.1:8080")`` is a ``Model``: each invocation becomes
``POST /invocations`` with the request's bytes, ``Content-Type``, ``Accept`` and
``X-Amzn-SageMaker-Custom-Attributes``, as SageMaker calls a container. A 2xx answer is the output,
with the answer's ``Content-Type``. Any other status is a failure whose reason carries the status and
the start of the answer's body, worded as SageMaker words it; the whole body goes to the failure
location. A connection that fails or breaks is a failure too, never an exception out of the worker.

``GET /ping`` answering 200 is readiness: ``open_emulator`` (and so ``fanout emulate``) waits for it,
for at most ``startup_timeout`` seconds (AWS's ``ContainerStartupHealthCheckTimeoutInSeconds``), and
raises ``ContainerNotHealthy`` when it never comes.

One ``aiohttp.ClientSession`` serves every invocation. It belongs to the event loop of the emulator
that uses the model: ``open_emulator`` takes it with ``acquire`` and closes it with ``release``, so a
config that holds a ``ContainerModel`` can be used by one emulator after another (one loop at a time).
"""

from __future__ import annotations

import json
import math
from types import TracebackType
from typing import Final
from urllib.parse import urlsplit

import aiohttp
import anyio

from .._exceptions import ConfigError
from ._model import ModelResult, default_model, model_error_reason

__all__ = ["DEFAULT_STARTUP_TIMEOUT", "ContainerModel", "ContainerNotHealthy"]

# AWS's smallest ContainerStartupHealthCheckTimeoutInSeconds; a server on this machine starts quicker
DEFAULT_STARTUP_TIMEOUT: Final = 60.0
# SageMaker gives a ping 2 s to answer
PING_TIMEOUT: Final = 2.0
PING_INTERVAL: Final = 0.2
# the failure reason travels in the notification; the whole body is at the failure location
MAX_MESSAGE_CHARS: Final = 1000
# a server that accepts no connection at all is reported quickly instead of hanging a worker
CONNECT_TIMEOUT: Final = 10.0


def check_startup_timeout(value: object) -> float:
    """``value`` as seconds; ``ConfigError`` unless it is a number > 0."""
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"startup_timeout: must be a number > 0, got {value!r}")
    return float(value)


class ContainerNotHealthy(RuntimeError):
    """The model server did not answer ``GET /ping`` with 200 within its startup timeout."""


class ContainerModel:
    """An emulated endpoint's model that forwards each invocation to ``url`` (see the module doc).

    Equal (and hashable) by ``url`` and ``startup_timeout``, so configs holding one compare as values.
    """

    __slots__ = ("_session", "_users", "startup_timeout", "url")

    def __init__(self, url: str, *, startup_timeout: float = DEFAULT_STARTUP_TIMEOUT) -> None:
        parts = urlsplit(url) if isinstance(url, str) else None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.query
            or parts.fragment
        ):
            raise ConfigError(f"url: must be a model server URL such as http://127.0.0.1:8080, got {url!r}")
        self.url = url.rstrip("/")
        self.startup_timeout = check_startup_timeout(startup_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._users = 0

    def __repr__(self) -> str:
        return f"ContainerModel({self.url!r}, startup_timeout={self.startup_timeout:g})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ContainerModel):
            return NotImplemented
        return (self.url, self.startup_timeout) == (other.url, other.startup_timeout)

    def __hash__(self) -> int:
        return hash((ContainerModel, self.url, self.startup_timeout))

    # ----------------------------------------------------------------------------------------------
    # the session's life

    def acquire(self) -> None:
        """Count one more user (an emulator); the session opens at the first request."""
        self._users += 1

    async def release(self) -> None:
        """Count one user less; the last one closes the session."""
        self._users = max(0, self._users - 1)
        if self._users == 0 and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> ContainerModel:
        self.acquire()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.release()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                # no total timeout: the runtime bounds an invocation by InvocationTimeoutSeconds
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
                # the endpoint's worker pool bounds the connections; the connector must not queue them
                connector=aiohttp.TCPConnector(limit=0),
            )
        return self._session

    # ----------------------------------------------------------------------------------------------
    # the hosting contract

    async def __call__(
        self,
        body: bytes,
        content_type: str | None,
        custom_attributes: str | None,
        accept: str | None = None,
    ) -> ModelResult:
        """``POST /invocations``; the runtime passes ``accept`` (the ``Model`` signature has no room)."""
        # a request without ContentType reaches the container as raw bytes
        headers = {"Content-Type": content_type or "application/octet-stream"}
        if accept is not None:
            headers["Accept"] = accept
        if custom_attributes is not None:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = custom_attributes
        try:
            async with self._client().post(
                f"{self.url}/invocations", data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                answer = await response.read()
                answered_type = response.headers.get("Content-Type")
        except (aiohttp.ClientError, OSError) as exc:
            return ModelResult.fail(
                f"ClientError: Could not send the request to the model at {self.url}/invocations: "
                f"{type(exc).__name__}: {exc}"
            )
        if 200 <= status < 300:
            return ModelResult.ok(answer, answered_type or "application/octet-stream")
        message = answer.decode("utf-8", errors="replace")
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS] + "..."
        return ModelResult.fail(
            model_error_reason(status, message), body=answer, content_type=answered_type or "text/plain"
        )

    async def ping(self) -> str | None:
        """None when ``GET /ping`` answers 200, else what went wrong."""
        try:
            with anyio.fail_after(PING_TIMEOUT):
                async with self._client().get(f"{self.url}/ping", allow_redirects=False) as response:
                    await response.read()
                    status = response.status
        except TimeoutError:
            return f"GET {self.url}/ping did not answer within {PING_TIMEOUT:g} s"
        except (aiohttp.ClientError, OSError) as exc:
            return f"GET {self.url}/ping failed: {type(exc).__name__}: {exc}"
        return None if status == 200 else f"GET {self.url}/ping answered {status}"

    async def wait_until_healthy(self) -> None:
        """Ping until it answers 200, for at most ``startup_timeout`` s, else ``ContainerNotHealthy``."""
        problem: str | None = "no ping was answered"
        with anyio.move_on_after(self.startup_timeout):
            while (problem := await self.ping()) is not None:
                await anyio.sleep(PING_INTERVAL)
        if problem is not None:
            raise ContainerNotHealthy(
                f"the model server at {self.url} did not become healthy within "
                f"{self.startup_timeout:g} s (the last check: {problem})"
            )


def describe(model: object) -> str:
    """How ``fanout emulate`` names an endpoint's model at start."""
    if isinstance(model, ContainerModel):
        return f"model {model.url}"
    if model is default_model:
        return "default model"
    name = getattr(model, "__qualname__", None)
    module = getattr(model, "__module__", None)
    return f"model {module}:{name}" if name and module else f"model {json.dumps(repr(model))}"
