"""The S3 polling source: find output and failure objects without notifications.

Two modes (``S3Tracking.mode``):

- ``"head"``: each watched request gets its own schedule. Its first check is ``first_check_after``
  seconds after acceptance, then the interval doubles from ``interval`` up to ``max_interval``.
  A check HEADs the output location and, when that is missing, the failure location. This is what
  the SageMaker SDK does (every 15 s), and it costs at least one call per request per interval.
- ``"list"``: requests are grouped by the directory of their output and failure locations (SageMaker
  writes ``<S3OutputPath>/<uuid>.out`` and ``<S3FailurePath>/<uuid>-error.out``, so each endpoint has
  two directories). One ``ListObjectsV2`` page resolves up to 1,000 requests. A directory is listed
  every ``interval`` seconds while listings find something, and backs off up to ``max_interval``
  while they find nothing. A listing pages through the whole directory, which also holds older
  outputs, so when fewer requests are due than the last listing had pages, HEADing them is cheaper
  and is done instead.

A request is only looked up once it is due (``first_check_after`` after acceptance): in hybrid
mode that is ``reconcile_after``, so S3 only recovers what SQS did not deliver. A found failure
object is read (its first 64 KiB) for the failure reason. Transient errors count as "not found
yet"; the schedule is the retry.
"""

from __future__ import annotations

import heapq
import logging
import posixpath
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup, TaskStatus

from .._config import S3Location, S3Tracking, parse_s3_uri
from .._exceptions import ConfigError, FanoutError, map_aws_errors
from .._models import Notification, Submission
from .._retry import is_not_found, is_transient

__all__ = ["FAILURE_REASON_LIMIT", "S3Source", "read_body"]

log = logging.getLogger("fanout.tracking")

FAILURE_REASON_LIMIT = 64 * 1024
"""At most this many bytes of a failure object are read as its failure reason."""

_LIST_PAGE = 1000
_MAX_SLEEP = 0.5

Kind = Literal["output", "failure"]


async def read_body(response: dict[str, Any], limit: int | None = None) -> bytes:
    """Read (at most ``limit`` bytes of) a GetObject body and release the connection."""
    body = response["Body"]
    async with body as stream:
        data: bytes = await (stream.read() if limit is None else stream.read(limit))
    return data


@dataclass(slots=True)
class _Watch:
    inference_id: str
    output: S3Location | None
    failure: S3Location | None
    due: float
    interval: float


@dataclass(slots=True)
class _Group:
    """One directory of outputs or failures, in LIST mode."""

    bucket: str
    prefix: str
    kind: Kind
    interval: float
    next_list: float = 0.0
    pages: int = 1
    busy: bool = False
    keys: dict[str, str] = field(default_factory=dict)
    """Object key -> inference id, for the watched requests in this directory."""


def _location(uri: str | None) -> S3Location | None:
    if not uri:
        return None
    try:
        return parse_s3_uri(uri)
    except ConfigError:
        log.warning("cannot poll S3 for an unparsable location %r", uri)
        return None


class S3Source:
    """Polls S3 for the outcome of watched requests and hands what it finds to ``resolve``."""

    def __init__(
        self,
        client: Any,
        config: S3Tracking,
        resolve: Callable[[Notification], Awaitable[None]],
        *,
        first_check_after: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._client = client
        self._resolve = resolve
        self._clock = clock
        if first_check_after is None:
            first_check_after = config.interval if config.mode == "head" else 0.0
        self._first_check_after = first_check_after
        self._watches: dict[str, _Watch] = {}
        self._heap: list[tuple[float, str]] = []
        self._groups: dict[tuple[str, str, Kind], _Group] = {}
        self._slots = anyio.Semaphore(config.max_concurrency)
        self._wake = anyio.Event()
        self._next_wake = float("inf")
        self.calls = {"head": 0, "list": 0, "get": 0}
        self._found = 0
        self._errors = 0

    def watch(self, submission: Submission) -> None:
        output = _location(submission.output_location)
        failure = _location(submission.failure_location)
        if output is None and failure is None:
            return
        due = submission.accepted_at + self._first_check_after
        watch = _Watch(submission.inference_id, output, failure, due, self.config.interval)
        self._watches[watch.inference_id] = watch
        if self.config.mode == "head":
            heapq.heappush(self._heap, (due, watch.inference_id))
            if due < self._next_wake:
                self._wake.set()
            return
        for location, kind in _places(watch):
            self._group(location, kind).keys[location.key] = watch.inference_id

    def discard(self, inference_id: str) -> None:
        watch = self._watches.pop(inference_id, None)
        if watch is None or self.config.mode == "head":
            return
        for location, kind in _places(watch):
            group = self._groups.get(_group_key(location, kind))
            if group is not None:
                group.keys.pop(location.key, None)

    def statistics(self) -> dict[str, int]:
        return {**self.calls, "watching": len(self._watches), "found": self._found, "errors": self._errors}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            task_status.started()
            if self.config.mode == "head":
                await self._run_head(tg)
            else:
                await self._run_list(tg)

    def _group(self, location: S3Location, kind: Kind) -> _Group:
        ident = _group_key(location, kind)
        group = self._groups.get(ident)
        if group is None:
            group = self._groups[ident] = _Group(*ident, self.config.interval)
        return group

    async def _sleep(self, delay: float) -> None:
        delay = min(max(delay, 0.001), _MAX_SLEEP)
        self._next_wake = self._clock() + delay
        with anyio.move_on_after(delay):
            await self._wake.wait()
        self._wake = anyio.Event()
        self._next_wake = float("inf")

    # HEAD mode

    async def _run_head(self, tg: TaskGroup) -> None:
        heap = self._heap
        while True:
            now = self._clock()
            while heap and heap[0][0] <= now:
                due, inference_id = heapq.heappop(heap)
                watch = self._watches.get(inference_id)
                if watch is None or watch.due != due:
                    continue
                await self._slots.acquire()
                tg.start_soon(self._check_one, watch)
            await self._sleep(heap[0][0] - self._clock() if heap else _MAX_SLEEP)

    async def _check_one(self, watch: _Watch) -> None:
        try:
            found = await self._lookup(watch)
        finally:
            self._slots.release()
        if found or watch.inference_id not in self._watches:
            return
        watch.due = self._clock() + watch.interval
        watch.interval = min(watch.interval * 2, self.config.max_interval)
        heapq.heappush(self._heap, (watch.due, watch.inference_id))
        if watch.due < self._next_wake:
            self._wake.set()

    async def _lookup(self, watch: _Watch, only: Kind | None = None) -> bool:
        """HEAD the output, then the failure location; resolve and return True when one exists."""
        if watch.output is not None and only in (None, "output"):
            head = await self._head(watch.output)
            if head is not None:
                await self._found_output(watch, head.get("ContentType"))
                return True
        if watch.failure is not None and only in (None, "failure"):
            head = await self._head(watch.failure)
            if head is not None:
                await self._found_failure(watch, watch.failure)
                return True
        return False

    async def _head(self, location: S3Location) -> dict[str, Any] | None:
        self.calls["head"] += 1
        try:
            response: dict[str, Any] = await self._client.head_object(
                Bucket=location.bucket, Key=location.key
            )
        except Exception as exc:
            if is_not_found(exc):
                return None
            self._errors += 1
            if not is_transient(exc):
                log.warning("HEAD %s failed: %s", location, exc)
            return None
        return response

    async def _found_output(self, watch: _Watch, content_type: str | None) -> None:
        self._found += 1
        await self._resolve(
            Notification(
                inference_id=watch.inference_id,
                status="Completed",
                output_location=str(watch.output),
                response_content_type=content_type,
            )
        )

    async def _found_failure(self, watch: _Watch, location: S3Location) -> None:
        self._found += 1
        reason = await self._failure_reason(location)
        await self._resolve(
            Notification(
                inference_id=watch.inference_id,
                status="Failed",
                failure_location=str(location),
                failure_reason=reason,
            )
        )

    async def _failure_reason(self, location: S3Location) -> str | None:
        self.calls["get"] += 1
        try:
            with map_aws_errors(bucket=location.bucket):
                response = await self._client.get_object(
                    Bucket=location.bucket, Key=location.key, Range=f"bytes=0-{FAILURE_REASON_LIMIT - 1}"
                )
                data = await read_body(response, FAILURE_REASON_LIMIT)
        except FanoutError:
            raise
        except Exception as exc:
            self._errors += 1
            log.warning("could not read the failure object %s: %s", location, exc)
            return f"the failure object {location} could not be read"
        return data[:FAILURE_REASON_LIMIT].decode("utf-8", errors="replace").strip() or None

    # LIST mode

    async def _run_list(self, tg: TaskGroup) -> None:
        tick = min(self.config.interval / 2, _MAX_SLEEP)
        while True:
            now = self._clock()
            for ident, group in list(self._groups.items()):
                if not group.keys:
                    del self._groups[ident]
                    continue
                if group.busy or group.next_list > now:
                    continue
                due = [(key, iid) for key, iid in group.keys.items() if self._is_due(iid, now)]
                if not due:
                    continue
                group.busy = True
                await self._slots.acquire()
                if len(due) < group.pages:
                    tg.start_soon(self._head_group, group, due)
                else:
                    tg.start_soon(self._list_group, group, now)
            await anyio.sleep(tick)

    def _is_due(self, inference_id: str, now: float) -> bool:
        watch = self._watches.get(inference_id)
        return watch is not None and watch.due <= now

    def _after_pass(self, group: _Group, found: int) -> None:
        group.interval = self.config.interval if found else min(group.interval * 2, self.config.max_interval)
        group.next_list = self._clock() + group.interval
        group.busy = False

    async def _head_group(self, group: _Group, due: list[tuple[str, str]]) -> None:
        found = 0
        try:
            for _, inference_id in due:
                watch = self._watches.get(inference_id)
                if watch is not None and await self._lookup(watch, group.kind):
                    found += 1
        finally:
            self._slots.release()
            self._after_pass(group, found)

    async def _list_group(self, group: _Group, started: float) -> None:
        found = 0
        pages = 0
        try:
            token: str | None = None
            while True:
                arguments: dict[str, Any] = {
                    "Bucket": group.bucket,
                    "Prefix": group.prefix,
                    "Delimiter": "/",
                    "MaxKeys": _LIST_PAGE,
                }
                if token:
                    arguments["ContinuationToken"] = token
                self.calls["list"] += 1
                pages += 1
                try:
                    with map_aws_errors(bucket=group.bucket):
                        response = await self._client.list_objects_v2(**arguments)
                except FanoutError:
                    raise
                except Exception as exc:
                    self._errors += 1
                    log.warning("listing s3://%s/%s failed: %s", group.bucket, group.prefix, exc)
                    break
                for item in response.get("Contents") or ():
                    inference_id = group.keys.get(item.get("Key", ""))
                    if inference_id is None or not self._is_due(inference_id, started):
                        continue
                    watch = self._watches[inference_id]
                    found += 1
                    if group.kind == "output":
                        await self._found_output(watch, None)
                    else:
                        assert watch.failure is not None
                        await self._found_failure(watch, watch.failure)
                token = response.get("NextContinuationToken")
                if not response.get("IsTruncated") or not token:
                    break
            group.pages = max(pages, 1)
        finally:
            self._slots.release()
            self._after_pass(group, found)


def _places(watch: _Watch) -> Iterator[tuple[S3Location, Kind]]:
    """The locations a watch looks at, with their kind."""
    if watch.output is not None:
        yield watch.output, "output"
    if watch.failure is not None:
        yield watch.failure, "failure"


def _group_key(location: S3Location, kind: Kind) -> tuple[str, str, Kind]:
    """The LIST-mode group of a location: its bucket, its directory and its kind."""
    return location.bucket, _directory(location.key), kind


def _directory(key: str) -> str:
    directory = posixpath.dirname(key)
    return f"{directory}/" if directory else ""
