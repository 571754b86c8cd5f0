"""``python -m fanout._workers FD``: one worker process, serving the client at the other end of the
Unix socket ``FD`` (see ``_process``)."""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import AsyncIterator

from anyio.abc import UNIXSocketStream

from .._loop import run
from ._messages import FromClient, FromWorker, WorkerConfig
from ._process import FrameStream
from ._worker import serve_worker


async def _serve(fd: int) -> None:
    frames = FrameStream(await UNIXSocketStream.from_socket(socket.socket(fileno=fd)))
    config = await frames.receive()
    if not isinstance(config, WorkerConfig):
        raise SystemExit(f"fanout worker: expected a WorkerConfig first, got {type(config).__name__}")

    async def inbox() -> AsyncIterator[FromClient]:
        while True:
            try:
                message = await frames.receive()
            except Exception:  # the client is gone (its end closed, or the stream broke)
                return
            yield message  # type: ignore[misc]

    async def send(message: FromWorker) -> None:
        await frames.send(message)

    try:
        await serve_worker(config, inbox(), send)
    finally:
        await frames.aclose()


def main() -> None:
    # The client decides when its workers stop (it halts them on Ctrl-C): a SIGINT sent to the
    # whole process group must not cut a worker short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    run(_serve, int(sys.argv[1]))


if __name__ == "__main__":
    main()
