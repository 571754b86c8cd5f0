"""A stand-in model container: a small aiohttp server that implements the SageMaker hosting contract.

``GET /ping`` answers 503 for the first ``unhealthy_pings`` pings (all of them with
``never_healthy``), then 200. ``POST /invocations`` records what it was sent and answers:
- a JSON object with ``"status": N`` (not 2xx): that status, with ``"message"`` as a text/plain body;
- a JSON object with ``"sleep": S``: the normal answer, S seconds later;
- anything else: 200 with ``{"sha256", "bytes", "content_type", "accept", "custom_attributes"}`` of
  the request, as ``application/vnd.standin+json`` (or as the JSON type the request accepts), or as
  ``text/csv`` ``sha256,bytes`` when the request accepts ``text/csv``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from aiohttp import web

__all__ = ["STANDIN_TYPE", "Seen", "StandIn", "expected_answer", "model_container"]

STANDIN_TYPE = "application/vnd.standin+json"


@dataclass(frozen=True)
class Seen:
    """One ``POST /invocations`` as the container received it."""

    body: bytes
    content_type: str | None
    accept: str | None
    custom_attributes: str | None
    peer_port: int | None


def expected_answer(
    body: bytes, content_type: str | None, accept: str | None = None, custom_attributes: str | None = None
) -> dict[str, Any]:
    """What the stand-in answers (as JSON) for a request it accepts."""
    return {
        "sha256": hashlib.sha256(body).hexdigest(),
        "bytes": len(body),
        "content_type": content_type,
        "accept": accept,
        "custom_attributes": custom_attributes,
    }


@dataclass
class StandIn:
    unhealthy_pings: int = 0
    never_healthy: bool = False
    url: str = ""
    pings: int = 0
    invocations: list[Seen] = field(default_factory=list)

    async def ping(self, request: web.Request) -> web.Response:
        self.pings += 1
        if self.never_healthy or self.pings <= self.unhealthy_pings:
            return web.Response(status=503, text="loading the model")
        return web.Response(status=200)

    async def invoke(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = request.headers
        peer = request.transport.get_extra_info("peername") if request.transport else None
        seen = Seen(
            body=body,
            content_type=headers.get("Content-Type"),
            accept=headers.get("Accept"),
            custom_attributes=headers.get("X-Amzn-SageMaker-Custom-Attributes"),
            peer_port=peer[1] if peer else None,
        )
        self.invocations.append(seen)
        try:
            value = json.loads(body)
        except ValueError:
            value = None
        if isinstance(value, dict):
            status = value.get("status")
            if isinstance(status, int) and not 200 <= status < 300:
                return web.Response(status=status, text=str(value.get("message", "")))
            sleep = value.get("sleep")
            if isinstance(sleep, int | float):
                await anyio.sleep(sleep)
        answer = expected_answer(body, seen.content_type, seen.accept, seen.custom_attributes)
        if seen.accept == "text/csv":
            return web.Response(
                body=f"{answer['sha256']},{answer['bytes']}\n".encode(),
                headers={"Content-Type": "text/csv"},
            )
        content_type = seen.accept if seen.accept and "json" in seen.accept else STANDIN_TYPE
        return web.Response(body=json.dumps(answer).encode(), headers={"Content-Type": content_type})


@asynccontextmanager
async def model_container(*, unhealthy_pings: int = 0, never_healthy: bool = False) -> AsyncIterator[StandIn]:
    """Serve a ``StandIn`` on 127.0.0.1 (any free port) for the block; ``url`` is set inside it."""
    standin = StandIn(unhealthy_pings=unhealthy_pings, never_healthy=never_healthy)
    app = web.Application()
    app.router.add_get("/ping", standin.ping)
    app.router.add_post("/invocations", standin.invoke)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        standin.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        yield standin
    finally:
        await runner.cleanup()
