"""From a ``Workers`` setting to how many workers there are and what starts them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .._config import Workers
from ._pool import Launcher
from ._process import open_processes

__all__ = ["cores", "open_launcher"]


def cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and ``taskset`` set)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@asynccontextmanager
async def open_launcher(workers: Workers) -> AsyncIterator[tuple[int, Launcher]]:
    """The number of workers and their launcher; with Ray, connected to the cluster meanwhile."""
    if workers.ray is None:
        yield workers.count or cores(), open_processes
        return
    from ._ray import connect  # Ray is an optional extra: imported only when asked for

    async with connect(workers) as (count, launch):
        yield count, launch
