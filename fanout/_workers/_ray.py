"""Workers as Ray actors (``fanout run --ray [ADDRESS]``, ``Workers(ray=...)``).

``connect`` joins Ray and yields the number of workers and their launcher; leaving it disconnects,
and shuts down a Ray it started. ``ray.init`` takes seconds (a local Ray starts its own processes)
and blocks, so it runs in a daemon thread of its own, which stays until ``ray.shutdown`` (see
``_initialised`` for why), and is waited for at most a minute: the client's event loop keeps
serving its signal handlers meanwhile (a second Ctrl-C still aborts), Ray, outside the main
thread, leaves the client's SIGTERM handling alone, and an address where nothing answers (which
``ray.init`` would try for ever) is a ``ConfigError``.

- ``"local"`` starts a Ray of its own on this machine, without a dashboard, and shuts it down at
  the end. When this process already has Ray initialised (a Ray driver using fanout as a library,
  the test suite's session Ray) that Ray is used and left running, provided it is a single node
  on this machine.
- ``"auto"`` joins the cluster ``ray.init`` finds (``RAY_ADDRESS``, or one running here); any other
  value is a cluster address (``host:6379``, ``ray://host:10001``). An already initialised Ray is
  used as it is.

Without a count there is one worker per CPU of the cluster. Each actor asks for one CPU (a share
of the cluster's CPUs when there are more workers than CPUs), spread across the nodes.

**One worker is one async actor** (``FanoutWorker``): ``run`` serves the client (``serve_worker``) for
the actor's life on the event loop Ray gives async actors (plain asyncio); ``deliver`` puts a
message from the client in its inbox; ``collect`` long-polls for what the worker has said since
the last call and returns all of it at once. Every message crosses pickled by us (one ``bytes``
per call), so Ray moves an opaque buffer rather than pickling each request object by object.
``receive`` is cancel-safe: a ``collect`` cut short is awaited again by the next call, so no batch
is lost. Actors are created with ``max_restarts=0``: a restarted actor would have forgotten what
it was dealt. When Ray reports an actor gone (``RayActorError``: killed, its node lost, out of
memory; or any other ``RayError`` of a call), the link kills it for certain, ``receive`` raises
``anyio.EndOfStream``, ``send`` raises ``anyio.BrokenResourceError``, and ``death()`` quotes what
Ray said; the pool deals its unanswered requests to the other workers. Leaving the launcher kills
the actors (``ray.kill``, which returns at once); actors that outlive their driver are killed by
Ray, which ties an actor's life to its owner's.

**The AWS configuration of the actors** is the standard chain where they run. What this process
passes on, through the actors' ``runtime_env`` ``env_vars``, depends only on the setting:

- with ``"local"``, every ``AWS_*`` and ``FANOUT_*`` variable of this process, credentials
  included: the actors run on this machine, as the same user, so nothing leaves it (and this is
  what makes ``fanout run --ray`` work against ``fanout emulate``);
- with ``"auto"`` or an address, only settings that are not secrets and that the actors must share
  with the client to reach the same endpoint: ``AWS_REGION``, ``AWS_DEFAULT_REGION``,
  ``AWS_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL_*``, ``AWS_USE_FIPS_ENDPOINT``,
  ``AWS_USE_DUALSTACK_ENDPOINT``, ``AWS_STS_REGIONAL_ENDPOINTS`` and
  ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS``. Never keys or session tokens (a runtime environment is
  stored by the cluster and shown by its dashboard), nor ``AWS_PROFILE`` or file paths, which name
  things on this machine. The nodes' own chain (an instance role, their environment) provides
  the credentials; a job's ``runtime_env`` (``ray job submit --runtime-env-json``) reaches the
  actors too, since Ray merges its ``env_vars`` with these.

The actors import this package, so every node needs the same fanout installed (a local Ray uses
this Python, so it has it), or a job ``runtime_env`` that installs it (``pip``, ``working_dir``).
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
import uuid
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final

import anyio
import ray
from ray.exceptions import RayError, RayTaskError

from .._config import Workers
from .._exceptions import ConfigError, WorkerError
from ._messages import FromClient, FromWorker, WorkerConfig
from ._pool import Launcher
from ._worker import serve_worker

__all__ = ["actor_environment", "connect"]

log = logging.getLogger("fanout.workers")

_POLL: Final = 30.0
"""Seconds a ``collect`` waits for the worker to say something before it returns empty-handed."""
_ANSWER_TIMEOUT: Final = 60.0
"""An actor that takes longer than this to answer a call (beyond the long poll) is taken for lost:
its node is unreachable, or it is stuck."""
_INIT_TIMEOUT: Final = 60.0
"""How long starting a local Ray (seconds, usually), or joining a cluster, may take: ``ray.init``
keeps trying an address where nothing answers."""
_SHUTDOWN_TIMEOUT: Final = 30.0
"""How long ``ray.shutdown`` of a local Ray may take (a second or two, usually) before the client
leaves anyway; its processes die with this one."""
_PLACE_TIMEOUT: Final = 120.0
"""How long Ray may take to place the actors (and set up their runtime environment)."""
_SETTINGS: Final = frozenset(
    {
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_USE_FIPS_ENDPOINT",
        "AWS_USE_DUALSTACK_ENDPOINT",
        "AWS_STS_REGIONAL_ENDPOINTS",
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    }
)
"""The AWS settings passed to the actors of a cluster: none is a secret (see the module docstring)."""


def actor_environment(environ: Mapping[str, str], *, everything: bool) -> dict[str, str]:
    """The variables of ``environ`` the actors get: every ``AWS_*`` and ``FANOUT_*`` one with
    ``everything`` (a local Ray), else only the non-secret settings (a cluster)."""
    if everything:
        return {name: value for name, value in environ.items() if name.startswith(("AWS_", "FANOUT_"))}
    return {
        name: value
        for name, value in environ.items()
        if name in _SETTINGS or name.startswith("AWS_ENDPOINT_URL_")
    }


# -- the actor ----------------------------------------------------------------------------------------


class _Mailbox:
    """Messages one end has put and the other has not taken yet. Its event is made on the actor's
    event loop, when a taker first waits."""

    def __init__(self) -> None:
        self.items: deque[Any] = deque()
        self._arrived: anyio.Event | None = None

    def put(self, item: Any) -> None:
        self.items.append(item)
        self.wake()

    def wake(self) -> None:
        if self._arrived is not None:
            self._arrived.set()

    async def wait(self, timeout: float = float("inf")) -> None:
        """Until something is put or ``wake`` is called (or ``timeout`` seconds pass)."""
        if self.items:
            return
        if self._arrived is None or self._arrived.is_set():
            self._arrived = anyio.Event()
        with anyio.move_on_after(timeout):
            await self._arrived.wait()


class FanoutWorker:
    """One worker in a Ray actor (see the module docstring). Its methods take and return pickles."""

    def __init__(self) -> None:
        self._inbox = _Mailbox()
        self._outbox = _Mailbox()
        self._end: str | None = None
        """How the worker ended, once it has: said by ``collect`` after its last messages."""

    async def run(self, config: bytes) -> None:
        async def messages() -> AsyncIterator[FromClient]:
            while True:
                await self._inbox.wait()
                while self._inbox.items:
                    yield self._inbox.items.popleft()

        async def send(message: FromWorker) -> None:
            self._outbox.put(message)

        try:
            await serve_worker(pickle.loads(config), messages(), send)
        except Exception as exc:
            log.exception("the worker failed")
            self._end = f"failed: {exc!r}"
        else:
            self._end = "stopped serving"
        finally:
            self._outbox.wake()

    async def deliver(self, message: bytes) -> None:
        self._inbox.put(pickle.loads(message))

    async def collect(self, timeout: float) -> bytes:
        """Everything the worker said since the last call (waiting up to ``timeout`` seconds for
        something), and how it ended when it has and nothing more is to come."""
        if self._end is None:
            await self._outbox.wait(timeout)
        messages = list(self._outbox.items)
        self._outbox.items.clear()
        end = self._end if not messages else None
        return pickle.dumps((messages, end), protocol=pickle.HIGHEST_PROTOCOL)

    async def ping(self) -> None:
        """Answers once the actor is placed and running."""


_remote_worker: Any = None


def _actor_class() -> Any:
    global _remote_worker
    if _remote_worker is None:
        _remote_worker = ray.remote(FanoutWorker)
    return _remote_worker


# -- the client's side --------------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    """What Ray said, on one line: its message without the indented details (ids, pids, addresses)."""
    if isinstance(exc, RayTaskError):
        cause = exc.cause if isinstance(exc.cause, BaseException) else None
        return f"failed: {cause!r}" if cause is not None else f"failed: {type(exc).__name__}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line[:1].isspace()]
    text = " ".join(lines) or type(exc).__name__
    return f"died (Ray: {text[:500]})"


class _ActorLink:
    """A ``Link`` to one actor (see the module docstring)."""

    def __init__(self, index: int, actor: Any, actor_name: str) -> None:
        self.name = f"worker {index} (Ray actor {actor_name})"
        self._actor = actor
        self._running: Any = None
        """The ``run`` call, kept for as long as the actor lives."""
        self._collecting: Any = None
        """The ``collect`` call in progress: awaited again after a cancellation."""
        self._received: deque[FromWorker] = deque()
        self._gone: str | None = None

    def start(self, config: WorkerConfig) -> None:
        self._running = self._actor.run.remote(pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL))

    async def placed(self) -> bool:
        """Whether the actor is running (False: it is gone, and ``death`` says why)."""
        try:
            await self._actor.ping.remote()
        except RayError as exc:
            self._lost(_describe(exc))
            return False
        return True

    async def send(self, message: FromClient) -> None:
        if self._gone is not None:
            raise anyio.BrokenResourceError
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with anyio.move_on_after(_ANSWER_TIMEOUT):
            try:
                await self._actor.deliver.remote(data)
            except RayError as exc:
                self._lost(_describe(exc))
                raise anyio.BrokenResourceError from exc
            return
        self._lost(f"did not answer for {_ANSWER_TIMEOUT:.0f} s")
        raise anyio.BrokenResourceError

    async def receive(self) -> FromWorker:
        while not self._received:
            if self._gone is not None:
                raise anyio.EndOfStream
            if self._collecting is None:
                self._collecting = self._actor.collect.remote(_POLL)
            with anyio.move_on_after(_POLL + _ANSWER_TIMEOUT) as waiting:
                try:
                    data = await self._collecting
                except RayError as exc:
                    self._collecting = None
                    self._lost(_describe(exc))
                    raise anyio.EndOfStream from exc
            self._collecting = None
            if waiting.cancelled_caught:
                self._lost(f"did not answer for {_POLL + _ANSWER_TIMEOUT:.0f} s")
                raise anyio.EndOfStream
            messages, end = pickle.loads(data)
            self._received.extend(messages)
            if end is not None:
                self._gone = end
        return self._received.popleft()

    async def death(self) -> str:
        return self._gone or "stopped answering"

    def _lost(self, how: str) -> None:
        if self._gone is None:
            self._gone = how
        self.stop()  # whatever Ray said, it is gone for certain: its requests are dealt again

    def stop(self) -> None:
        try:
            ray.kill(self._actor, no_restart=True)
        except Exception:  # already gone, or Ray is shutting down
            log.debug("%s: ray.kill failed", self.name, exc_info=True)


@asynccontextmanager
async def _launch(
    configs: Sequence[WorkerConfig], *, environment: dict[str, str], cpus: float
) -> AsyncIterator[Sequence[_ActorLink]]:
    """One actor per config, placed and serving; leaving kills them."""
    actor_class = _actor_class()
    token = uuid.uuid4().hex[:8]
    links: list[_ActorLink] = []
    try:
        for config in configs:
            actor_name = f"fanout-worker-{config.index}-{token}"
            actor = actor_class.options(
                name=actor_name,
                num_cpus=cpus,
                max_restarts=0,
                scheduling_strategy="SPREAD",
                runtime_env={"env_vars": environment},
            ).remote()
            link = _ActorLink(config.index, actor, actor_name)
            links.append(link)
            link.start(config)
        placed = 0
        with anyio.move_on_after(_PLACE_TIMEOUT):
            for link in links:
                await link.placed()  # one that is gone already says so when the pool hears from it
                placed += 1
        if placed < len(links):
            free = ray.available_resources().get("CPU", 0.0)  # type: ignore[no-untyped-call]
            raise WorkerError(
                f"Ray placed {placed} of the {len(links)} workers within {_PLACE_TIMEOUT:.0f} s: each "
                f"asks for {cpus:g} CPU, and the cluster has {free:g} CPUs free "
                f"of {_cluster_cpus():g} (fewer workers: --workers N)"
            )
        yield links
    finally:
        for link in links:
            link.stop()


def _cluster_cpus() -> float:
    return float(ray.cluster_resources().get("CPU", 0.0))  # type: ignore[no-untyped-call]


class _QuietThreadInit(logging.Filter):
    """Ray warns that it sets no SIGTERM handler outside the main thread: that is the point."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


def _init(address: str) -> bool:
    """Initialise Ray for ``address`` unless it already is; whether this call did."""
    if ray.is_initialized():
        return False
    quiet = _QuietThreadInit()
    worker_log = logging.getLogger("ray._private.worker")
    worker_log.addFilter(quiet)
    try:
        if address == "local":
            ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    except Exception as exc:
        raise ConfigError(f"{address!r}: {_failed(address)} ({exc})", field="ray") from exc
    finally:
        worker_log.removeFilter(quiet)
    return True


def _failed(address: str) -> str:
    return "could not start a local Ray" if address == "local" else "could not join a Ray cluster"


@asynccontextmanager
async def _initialised(address: str) -> AsyncIterator[bool]:
    """Ray initialised for ``address`` while inside (and whether this call initialised it).

    ``ray.init`` and ``ray.shutdown`` run in one daemon thread that lives in between: Ray ties
    the processes of a local Ray to the thread that started them (Linux's ``PR_SET_PDEATHSIG``),
    so that thread must outlive the run, and an ``anyio.to_thread`` worker, which ends after ten
    idle seconds, would take Ray down with it. The wait for ``ray.init`` is bounded; a daemon
    thread still inside it does not keep the process from exiting.
    """
    outcome: list[bool | BaseException] = []
    initialised = threading.Event()
    leave = threading.Event()
    left = threading.Event()

    def serve() -> None:
        try:
            outcome.append(_init(address))
        except BaseException as exc:
            outcome.append(exc)
        initialised.set()
        if outcome[0] is True:
            leave.wait()
            try:
                ray.shutdown()
            except Exception:
                log.warning("ray.shutdown failed", exc_info=True)
        left.set()

    threading.Thread(target=serve, name="fanout ray", daemon=True).start()
    try:
        with anyio.move_on_after(_INIT_TIMEOUT):
            await _wait_for(initialised)
        if not outcome:
            raise ConfigError(f"{address!r}: {_failed(address)} within {_INIT_TIMEOUT:.0f} s", field="ray")
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        yield outcome[0]
    finally:
        leave.set()
        if outcome and outcome[0] is True:
            with anyio.CancelScope(shield=True), anyio.move_on_after(_SHUTDOWN_TIMEOUT):
                await _wait_for(left)


async def _wait_for(event: threading.Event) -> None:
    """Until another thread sets ``event``: polled, which costs nothing next to Ray's seconds."""
    while not event.is_set():
        await anyio.sleep(0.02)


def _single_local_node() -> bool:
    """Whether the Ray this process uses is one node, this one."""
    try:
        listed: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
        nodes = [node for node in listed if node.get("Alive")]
        here = ray.get_runtime_context().get_node_id()
    except Exception:  # a Ray Client driver has no node of its own
        return False
    return len(nodes) == 1 and nodes[0].get("NodeID") == here


@asynccontextmanager
async def connect(workers: Workers) -> AsyncIterator[tuple[int, Launcher]]:
    """Join Ray as ``workers.ray`` says; yield the number of workers and their launcher."""
    address = workers.ray or "local"
    async with _initialised(address) as started:
        local = address == "local"
        if local and not started and not _single_local_node():
            raise ConfigError(
                "'local': this process already uses a Ray cluster of several nodes (or a remote "
                "one); join it with 'auto', which passes it no AWS credentials",
                field="ray",
            )
        environment = actor_environment(os.environ, everything=local)
        total = _cluster_cpus()
        count = workers.count or max(1, int(total))
        cpus = 1.0 if total == 0 or count <= total else total / count

        def launch(configs: Sequence[WorkerConfig]) -> AbstractAsyncContextManager[Sequence[_ActorLink]]:
            return _launch(configs, environment=environment, cpus=cpus)

        yield count, launch
