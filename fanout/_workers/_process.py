"""Workers as processes on this machine (``fanout run --workers N``).

Each worker is ``python -m fanout._workers FD``: a new Python with the client's environment (so the
same AWS configuration), in a session of its own (so a Ctrl-C in the terminal reaches the client
only, which then halts the workers itself), talking to the client over one end of a Unix socket
pair. The socket carries length-prefixed frames (``_messages``); when the client dies, its end
closes and the worker stops.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
from anyio.abc import Process, SocketStream, UNIXSocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from ._messages import HEADER, FromClient, FromWorker, WorkerConfig, decode, encode, frame_length

__all__ = ["FrameStream", "open_processes"]

_EXIT_WAIT = 5.0
"""How long a worker may take to exit once its socket is closed, before it is killed."""


class FrameStream:
    """Messages over a byte stream, each a length-prefixed frame. ``receive`` is cancel-safe: a
    frame cut by a cancellation is finished by the next call."""

    def __init__(self, stream: SocketStream) -> None:
        self._stream = stream
        self._buffered = BufferedByteReceiveStream(stream)
        self._length: int | None = None

    async def send(self, message: FromClient | FromWorker) -> None:
        await self._stream.send(encode(message))

    async def receive(self) -> FromClient | FromWorker:
        try:
            if self._length is None:
                self._length = frame_length(await self._buffered.receive_exactly(HEADER.size))
            data = await self._buffered.receive_exactly(self._length)
        except anyio.IncompleteRead as exc:
            raise anyio.EndOfStream from exc
        self._length = None
        return decode(data)

    async def aclose(self) -> None:
        await self._stream.aclose()


class _ProcessLink:
    def __init__(self, index: int, process: Process, frames: FrameStream) -> None:
        self.name = f"worker {index} (pid {process.pid})"
        self._process = process
        self._frames = frames

    async def send(self, message: FromClient) -> None:
        await self._frames.send(message)

    async def receive(self) -> FromWorker:
        message = await self._frames.receive()
        assert not isinstance(message, str | WorkerConfig)
        return message  # type: ignore[return-value]

    async def death(self) -> str:
        # Its socket may close a moment before it can be reaped.
        with anyio.move_on_after(1.0):
            await self._process.wait()
        code = self._process.returncode
        if code is None:
            return "stopped answering"
        if code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with status {code}"

    async def stop(self) -> None:
        """Close its socket, wait for it to exit, and kill it if it does not."""
        with anyio.CancelScope(shield=True):
            await self._frames.aclose()
            with anyio.move_on_after(_EXIT_WAIT):
                await self._process.wait()
            if self._process.returncode is None:
                self._process.kill()
                await self._process.wait()


@asynccontextmanager
async def open_processes(configs: Sequence[WorkerConfig]) -> AsyncIterator[Sequence[_ProcessLink]]:
    """Start one worker process per config; leaving stops them (see ``_ProcessLink.stop``)."""
    async with AsyncExitStack() as stack:
        links: list[_ProcessLink] = []
        for config in configs:
            ours, theirs = socket.socketpair()
            try:
                process = await anyio.open_process(
                    [sys.executable, "-m", "fanout._workers", str(theirs.fileno())],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=None,
                    pass_fds=[theirs.fileno()],
                    start_new_session=True,
                    env=_child_environment(),
                )
            finally:
                theirs.close()
            frames = FrameStream(await UNIXSocketStream.from_socket(ours))
            link = _ProcessLink(config.index, process, frames)
            stack.push_async_callback(link.stop)
            await frames.send(config)
            links.append(link)
        yield links


def _child_environment() -> dict[str, str]:
    environment = dict(os.environ)
    # The child imports fanout the way this process did, from a source checkout too.
    paths = [path for path in sys.path if path]
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    return environment
