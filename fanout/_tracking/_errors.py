"""Which AWS errors the tracking sources retry, and how.

A tracking call (receive, delete, head, list, get) is retried when the failure is transient:
throttling, a 5xx, or a connection that broke. Anything else is a real answer and goes to the
caller, which maps run-level ones (missing queue or bucket, bad credentials) to the error tree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from .._exceptions import error_code, http_status
from .._retry import classify

__all__ = ["NOT_FOUND_CODES", "is_not_found", "is_transient", "retrying"]

T = TypeVar("T")

NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


def is_transient(exc: BaseException) -> bool:
    """Throttling, server errors and broken connections: worth another try.

    The invoke classifier (``_retry.classify``) decides, widened for these read calls to any 5xx
    and any aiohttp client error.
    """
    if classify(exc) != "fatal":
        return True
    status = http_status(exc)
    if status is not None and status >= 500:
        return True
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - aiohttp comes with aiobotocore
        return False
    return isinstance(exc, aiohttp.ClientError)


def is_not_found(exc: BaseException) -> bool:
    return error_code(exc) in NOT_FOUND_CODES or http_status(exc) == 404


def retrying(*, attempts: int | None = None, within: float | None = None) -> AsyncRetrying:
    """A tenacity policy for transient errors: full-jitter exponential backoff, bounded."""
    stop: Any = stop_after_attempt(attempts or 5)
    if within is not None:
        stop = stop_after_delay(within)
    return AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=wait_random_exponential(multiplier=0.1, max=10.0),
        stop=stop,
        sleep=anyio.sleep,
        reraise=True,
    )


async def call_with_retry(
    policy: AsyncRetrying, function: Callable[..., Awaitable[T]], /, **kwargs: Any
) -> T:
    async for attempt in policy.copy():
        with attempt:
            return await function(**kwargs)
    raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover
