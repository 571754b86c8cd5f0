"""Shared by the fast-path wire tests: loopback servers that record requests or misbehave, and the
comparison of an aiobotocore outcome with a fast-path one.

Every server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from fanout._exceptions import FanoutError
from fanout._retry import classify, delivery_of

FROZEN = datetime.datetime(2026, 3, 4, 5, 6, 7)
INVOCATION_ID = uuid.UUID("00000000-0000-4000-8000-000000000007")
ACCESS_KEY, SECRET_KEY = "AKIDFASTPATHTEST", "fast-path-secret"


def freeze(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sign at ``FROZEN`` and name every call ``INVOCATION_ID``, on both paths alike."""
    import botocore.auth

    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *_, **__: FROZEN)
    monkeypatch.setattr(uuid, "uuid4", lambda: INVOCATION_ID)


# ------------------------------------------------------------------------------------------------
# loopback servers


@dataclass
class Recorded:
    method: str
    target: str
    """The request target as sent: the path and query, or an absolute URL through a proxy."""
    headers: list[tuple[bytes, bytes]]
    """Every header, in order, as bytes on the wire."""
    body: bytes


Answer = tuple[int, dict[str, str], bytes]
OK: Answer = (200, {"x-amzn-RequestId": "req-0"}, b"{}")


@dataclass
class Server:
    """Records each request and answers with ``answer``."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    answer: Answer = OK

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(Recorded(request.method, request.raw_path, list(request.raw_headers), body))
        status, headers, content = self.answer
        # No Date header: it changes from one second to the next, and nothing here reads it.
        response = web.Response(status=status, body=content, headers=headers)
        response.headers["Date"] = "Wed, 04 Mar 2026 05:06:07 GMT"
        return response


@asynccontextmanager
async def serve(server: Server, *, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    app = web.Application(client_max_size=1 << 22)
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


@asynccontextmanager
async def raw_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A TCP server on 127.0.0.1 that misbehaves as ``handle`` says; yields its URL."""
    tasks: set[asyncio.Task[None]] = set()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handle(reader, writer)
        finally:
            writer.close()
            tasks.discard(task)

    listener = await asyncio.start_server(connected, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        listener.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await listener.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":", 1)[1]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ------------------------------------------------------------------------------------------------
# misbehaving servers (for raw_server)


async def _close_after_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)


async def _never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    await reader.read()  # until the client gives up and closes the connection


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"this is not HTTP\r\n\r\n")
    await writer.drain()


async def _short_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(
        b'HTTP/1.1 202 Accepted\r\nContent-Length: 100\r\nContent-Type: application/json\r\n\r\n{"Inf'
    )
    await writer.drain()


async def _reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER 0: close with a RST instead of a FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()


FAILURES = {
    "closed without an answer": _close_after_request,
    "read timeout": _never_answer,
    "not HTTP": _garbage,
    "body cut short": _short_body,
    "connection reset": _reset,
}


# ------------------------------------------------------------------------------------------------
# outcomes


def comparable(response: Any) -> Any:
    return json.loads(json.dumps(response, default=str))


async def outcome(call: Callable[..., Awaitable[dict[str, Any]]], kwargs: dict[str, Any]) -> Any:
    try:
        return await call(**kwargs)
    except Exception as exc:
        return exc


Mapping = Callable[[BaseException], BaseException]
"""What fanout makes of an error (``map_aws_errors`` for one resource)."""


def assert_same_outcome(expected: Any, actual: Any, mapped: Mapping) -> None:
    """The same result, or the same exception: type, text, response, and what fanout reads from it."""
    if not isinstance(expected, BaseException):
        assert comparable(actual) == comparable(expected)
        return
    assert type(actual) is type(expected), (actual, expected)
    assert str(actual) == str(expected)
    assert comparable(getattr(actual, "response", None)) == comparable(getattr(expected, "response", None))
    assert getattr(actual, "operation_name", None) == getattr(expected, "operation_name", None)
    assert classify(actual) == classify(expected)
    assert delivery_of(actual) == delivery_of(expected)
    from botocore.exceptions import BotoCoreError

    if isinstance(expected, BotoCoreError):
        assert isinstance(actual, BotoCoreError)
        assert set(actual.kwargs) == set(expected.kwargs)
        assert type(actual.kwargs.get("error")) is type(expected.kwargs.get("error"))
        assert actual.kwargs.get("endpoint_url") == expected.kwargs.get("endpoint_url")
    assert type(mapped(actual)) is type(mapped(expected))


def mapper(**resource: str) -> Mapping:
    """``map_aws_errors(**resource)`` as a function: the run-level error, or the error itself."""
    from fanout._exceptions import map_aws_errors

    def mapped(exc: BaseException) -> BaseException:
        try:
            with map_aws_errors(**resource):
                raise exc
        except FanoutError as run_level:
            return run_level
        except BaseException as passed:
            return passed

    return mapped


@dataclass
class ScriptedServer(Server):
    """Records each request and answers with the next answer of ``script``, then with ``answer``."""

    script: list[Answer] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(Recorded(request.method, request.raw_path, list(request.raw_headers), body))
        status, headers, content = self.script.pop(0) if self.script else self.answer
        response = web.Response(status=status, body=content, headers=headers)
        response.headers["Date"] = "Wed, 04 Mar 2026 05:06:07 GMT"
        return response
