"""What the client and its workers say to each other, and how it is framed on a byte stream.

The client deals requests in batches (``Deal``) and may ask a worker to stop sending (``HALT``);
a worker answers once it is ready (``Ready``, or ``Stopped`` with the error that kept it from
starting), then with batches of results and its statistics (``Results``), and last with
``Stopped``: the requests it was dealt but will not answer for, and the run-level error that
stopped it, if any.

Messages are pickled: both ends are this package, in processes the client started (or Ray actors
it created), so nothing else can write to the stream. Each frame is a 4-byte big-endian length
and the pickle.
"""

from __future__ import annotations

import math
import pickle
import struct
from dataclasses import dataclass, field, replace
from typing import Final, Literal, TypeAlias

import anyio

from .._config import Limits, PayloadMode, RetryPolicy, Staging
from .._dispatch import DispatcherStatistics
from .._exceptions import FanoutError
from .._logging import LogFormat
from .._models import InferenceRequest, Rejected, Submission

__all__ = [
    "HALT",
    "LINGER",
    "Cadence",
    "Deal",
    "FromClient",
    "FromWorker",
    "Ready",
    "Results",
    "Stopped",
    "WorkerConfig",
    "decode",
    "encode",
    "frame_length",
    "portable",
]

LINGER: Final = 0.02
"""The least time between two batches from one end. A message costs tens of microseconds (pickling,
system calls, a wake-up of the other process) whatever its size, and each wake-up of a process
costs more again: sent one request at a time, that is most of what a request costs. So a busy end
sends at most fifty batches a second, and an idle one sends at once (see ``Cadence``); twenty
milliseconds are nothing next to an asynchronous inference."""


class Cadence:
    """When one end may send its next batch: at once if the last left ``LINGER`` ago, else when
    it has. Under load, batches grow; when idle, nothing waits."""

    def __init__(self) -> None:
        self._last = -math.inf

    async def turn(self) -> None:
        delay = self._last + LINGER - anyio.current_time()
        if delay > 0:
            await anyio.sleep(delay)
        self._last = anyio.current_time()


HEADER: Final = struct.Struct(">I")
MAX_FRAME: Final = 1 << 30
"""A frame longer than this is not one of ours: the stream is corrupt."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerConfig:
    """What a worker needs to send on the client's behalf."""

    endpoint_name: str
    limits: Limits
    """The worker's share (``share_limits``)."""
    retry: RetryPolicy
    payload: PayloadMode
    staging: Staging | None
    fast_path: bool
    grace_period: float
    index: int
    """Which worker this is, for messages: 1 to the number of workers."""
    logging: tuple[int, LogFormat] | None = None
    """The client's verbosity and log format (``_logging``), when it set them: the worker logs alike."""


@dataclass(frozen=True, slots=True)
class Deal:
    requests: list[InferenceRequest]


HALT: Final = "halt"
"""Stop sending: answer for what is on the wire, and give back what was never sent."""

FromClient: TypeAlias = WorkerConfig | Deal | Literal["halt"]
"""The first message is the worker's ``WorkerConfig``."""


@dataclass(frozen=True, slots=True)
class Ready:
    api_calls: dict[str, int]
    """The calls its start-up checks made, so that a report can leave them out as it does for the
    client's own."""


@dataclass(frozen=True, slots=True)
class Results:
    results: list[Submission | Rejected]
    statistics: DispatcherStatistics
    api_calls: dict[str, int]
    """AWS API calls the worker made so far, by ``service.Operation``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Stopped:
    unanswered: list[tuple[str, bool]] = field(default_factory=list)
    """The inference ids dealt to the worker that have no result, each with whether it may have
    reached the endpoint."""
    error: FanoutError | None = None
    statistics: DispatcherStatistics | None = None
    api_calls: dict[str, int] = field(default_factory=dict)


FromWorker: TypeAlias = Ready | Results | Stopped


def encode(message: FromClient | FromWorker) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def frame_length(header: bytes) -> int:
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ValueError(f"a frame of {length} bytes: the stream is corrupt")
    return int(length)


def decode(data: bytes) -> FromClient | FromWorker:
    message: FromClient | FromWorker = pickle.loads(data)
    return message


def portable(result: Submission | Rejected) -> Submission | Rejected:
    """``result`` without what cannot cross a process boundary: a rejection's ``error`` (any
    exception botocore or aiohttp raised) is kept only when it survives a pickle round trip; its
    reason says it all."""
    if isinstance(result, Rejected) and result.error is not None:
        try:
            pickle.loads(pickle.dumps(result.error))
        except Exception:
            return replace(result, error=None)
    return result
