"""The one place where fanout makes AWS clients: sessions, the region rule, client configs, call counts.

**The region.** An explicit ``region_name`` wins; then ``AWS_REGION``, which the AWS CLI v2 and the
other SDKs read before ``AWS_DEFAULT_REGION`` and the profile's ``region``; then botocore's own chain
(``AWS_DEFAULT_REGION``, then the profile). botocore alone does not read ``AWS_REGION``.

**sagemaker-runtime** clients get botocore's retries off (``total_max_attempts=1``): fanout retries
itself and the two would multiply. Their pool is as large as ``max_in_flight``, so no call waits for
a connection invisibly. The inline ``Body`` model patch is applied to the session first, so this
works on an aioboto3 whose botocore predates inline payloads.

A session is an aiobotocore session, an aioboto3 ``Session`` or ``None`` (a new aiobotocore session
reading the standard AWS configuration).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from ._body_patch import ensure_body_member
from ._config import DEFAULT_LIMITS, Limits
from ._exceptions import ConfigError
from ._fastpath import FastInvoker

__all__ = [
    "count_calls",
    "ensure_session",
    "open_aws_client",
    "open_runtime_client",
    "runtime_client_config",
]


def ensure_session(session: Any = None) -> Any:
    """``session``, or a new aiobotocore session; the ``Body`` patch is applied either way."""
    if session is None:
        from aiobotocore.session import get_session

        session = get_session()
    if not hasattr(session, "create_client") and not hasattr(session, "client"):
        raise ConfigError(
            f"must be an aiobotocore session or an aioboto3 Session, got {session!r}", field="session"
        )
    ensure_body_member(session)
    return session


def runtime_client_config(limits: Limits = DEFAULT_LIMITS, **overrides: Any) -> Any:
    """The ``AioConfig`` a sagemaker-runtime client for fanout needs (see the module docstring)."""
    from aiobotocore.config import AioConfig

    options: dict[str, Any] = {
        "retries": {"total_max_attempts": 1, "mode": "standard"},
        "max_pool_connections": limits.max_in_flight,
    }
    options.update(overrides)
    return AioConfig(**options)


@asynccontextmanager
async def open_aws_client(
    session: Any,
    service: str,
    *,
    config: Any = None,
    region_name: str | None = None,
    endpoint_url: str | None = None,
) -> AsyncIterator[Any]:
    """A client for ``service`` from ``session`` (see ``ensure_session``), following the region rule."""
    from botocore.exceptions import NoRegionError

    session = ensure_session(session)
    kwargs: dict[str, Any] = {"config": config}
    region = region_name or os.environ.get("AWS_REGION") or None
    if region is not None:
        kwargs["region_name"] = region
    if endpoint_url is not None:
        kwargs["endpoint_url"] = endpoint_url
    # aiobotocore sessions have create_client; aioboto3 Sessions have client. Both are async CMs.
    factory = session.create_client if hasattr(session, "create_client") else session.client
    async with AsyncExitStack() as stack:
        try:
            client = await stack.enter_async_context(factory(service, **kwargs))
        except NoRegionError as exc:
            raise ConfigError(
                "no AWS region is configured: set AWS_REGION (or AWS_DEFAULT_REGION, or a profile's region)"
            ) from exc
        yield client


@asynccontextmanager
async def open_runtime_client(
    session: Any = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
    region_name: str | None = None,
    endpoint_url: str | None = None,
    fast_path: bool = False,
    counter: Counter[str] | None = None,
) -> AsyncIterator[Any]:
    """A sagemaker-runtime client configured for fanout (no botocore retries, a pool of ``max_in_flight``).

    With ``fast_path``, what it yields sends ``invoke_endpoint_async`` through fanout's own request
    template and botocore's signer (``_fastpath``), and every other call through the client;
    ``counter`` then counts the fast path's calls by ``service.Operation``.
    """
    async with open_aws_client(
        session,
        "sagemaker-runtime",
        config=runtime_client_config(limits),
        region_name=region_name,
        endpoint_url=endpoint_url,
    ) as client:
        if not fast_path:
            yield client
            return
        async with FastInvoker(client, counter=counter) as fast:
            yield fast


def count_calls(client: Any, counter: Counter[str]) -> None:
    """Count every API call ``client`` makes in ``counter``, by ``service.Operation``."""

    def before_call(event_name: str, **_: Any) -> None:
        # event_name is "before-call.<service>.<Operation>"
        counter[event_name.partition(".")[2]] += 1

    client.meta.events.register("before-call", before_call)
