"""Starting an event loop: the one place that chooses uvloop when it is installed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, TypeVarTuple

import anyio

__all__ = ["run"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


def run(function: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
    """``anyio.run`` on asyncio, with uvloop's event loop when it is installed (it is on POSIX)."""
    return anyio.run(function, *args, backend="asyncio", backend_options=_backend_options())


def _backend_options() -> dict[str, Any]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}
