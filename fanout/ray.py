"""Score a Ray Data dataset through fanout: one long-lived client per actor.

::

    import ray
    from fanout.ray import Scorer

    ds = ray.data.read_json("requests.jsonl")
    out = ds.map_batches(
        Scorer,
        fn_constructor_kwargs={"endpoint_name": "my-async-endpoint"},
        batch_format="pyarrow",
        batch_size=1_000,
        compute=ray.data.ActorPoolStrategy(size=4),
        num_cpus=0.5,  # the actors mostly wait on the network
    )
    out.write_parquet("results/")

**Rows.** An input row has the fields of an input line of ``fanout run`` (``id``, exactly one of
``body``, ``body_base64`` or ``input_location``, and optionally ``content_type``, ``accept``,
``custom_attributes``, ``inference_id``); a null column counts as absent. Each row is checked by
the same code that checks a line of ``fanout run`` (``fanout._jsonl.parse_line``). With
``line_column``, a string column holds whole JSONL lines instead (``ray.data.read_text``), parsed
byte for byte as ``fanout run`` parses them: the way to send bodies that a table cannot hold
exactly (a struct column gives every row the same keys). A row without ``id`` gets its inference
id as its ``id``: Ray Data has no line numbers.

An output row has the fields of an output line of ``fanout run`` (``outcome_record``), one per
input row (the rows of a batch in completion order; a bad row comes back ``rejected`` with the
reason, it never raises). The schema is fixed (``OUTPUT_SCHEMA``), so every batch writes the same
Parquet columns: strings, ``attempts`` an int64, the times ISO 8601 strings, and the result in two
string columns: ``result`` holds the output as compact JSON text when it is JSON, and
``result_base64`` the bytes of any other output. Run-level problems (no such endpoint, bucket or
queue, no credentials) raise, and fail the dataset.

**Tracking.** Each actor adds ``<s3_output_path_extension>/<actor uuid>/<block>`` to the output
path of its requests (``S3OutputPathExtension``; a new block every 1,000 requests) and, by default,
tracks them with ``S3Tracking(mode="list")``: one ListObjectsV2 of its own directory finds up to
1,000 of its own outputs, and no actor ever sees another's. Failures go to the endpoint's
``S3FailurePath`` (whether the extension applies there is not documented; the tracker follows the
``FailureLocation`` each 202 returns, so it is right either way). ``SqsTracking`` is accepted too,
for one actor, or when paying for every actor receiving every notification is acceptable:
``docs/scale-out.md`` has the figures.

**The client.** The first batch opens the actor's client on the event loop Ray runs the async
``__call__`` on, in a task the ``Scorer`` owns; every batch of the actor shares it. Ray calls
``__del__`` when an actor exits gracefully, which closes it; ``aclose()`` does the same on the
loop. AWS configuration comes from the actor's environment (the standard chain): pass it with
``runtime_env={"env_vars": {...}}`` in ``map_batches`` or ``ray.init``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any, Final

try:
    import pyarrow as pa  # type: ignore[import-untyped]
    import ray  # noqa: F401  (the extra installs both; fail here, not on an actor)
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        f"fanout.ray needs Ray Data ({exc}); install it with: pip install 'fanout[ray]'"
    ) from exc

import anyio

from . import (
    DEFAULT_LIMITS,
    DEFAULT_RETRY,
    Client,
    ClientStatistics,
    ConfigError,
    FanoutError,
    InferenceRequest,
    Limits,
    Outcome,
    Rejected,
    RetryPolicy,
    S3Tracking,
    Staging,
    open_client,
)
from ._config import PayloadMode, Tracking, check_payload_mode
from ._exceptions import unwrap_task_errors
from ._jsonl import OUTPUT_FIELDS, LineDefaults, outcome_record, parse_line
from ._models import encode_json
from ._payload import validate_endpoint_name, validate_request

__all__ = ["DIRECTORY_SIZE", "OUTPUT_SCHEMA", "Scorer"]

DIRECTORY_SIZE: Final = 1_000
"""Requests per output directory of an actor: what one ListObjectsV2 page returns."""

_COLUMN_TYPES: Final[Mapping[str, Any]] = {"attempts": pa.int64(), "line": pa.int64()}
_RESULT_COLUMNS: Final = ("result", "result_base64")
OUTPUT_SCHEMA: Final = pa.schema(
    [(name, _COLUMN_TYPES.get(name, pa.string())) for name in (*OUTPUT_FIELDS, *_RESULT_COLUMNS)]
)
"""The columns of every output batch: the output contract of ``fanout run``, the result as text."""

_CLOSE_TIMEOUT: Final = 30.0


class _Closed(FanoutError):
    """The actor's client is closed (by ``aclose`` or at the actor's exit)."""


class Scorer:
    """A callable class for ``Dataset.map_batches(Scorer, batch_format="pyarrow", ...)``.

    Every argument is a keyword, given through ``fn_constructor_kwargs``. ``endpoint_name``,
    ``tracking``, ``limits``, ``retry``, ``payload``, ``staging`` and ``fetch`` are those of
    ``fanout.open_client``, except that ``tracking`` defaults to ``S3Tracking(mode="list")``
    with a per-actor output directory. ``content_type``, ``request_ttl_seconds`` and
    ``invocation_timeout_seconds`` are what ``fanout run``'s flags of those names set for every
    row that does not say otherwise. ``s3_output_path_extension`` is the start of each actor's
    ``S3OutputPathExtension`` (``None``: add none, and every actor's outputs share one directory).
    ``line_column`` names a string column holding whole JSONL lines.
    """

    def __init__(
        self,
        *,
        endpoint_name: str,
        tracking: Tracking | None = None,
        limits: Limits = DEFAULT_LIMITS,
        retry: RetryPolicy = DEFAULT_RETRY,
        payload: PayloadMode = "auto",
        staging: Staging | None = None,
        fetch: bool = True,
        content_type: str | None = "application/json",
        request_ttl_seconds: int | None = None,
        invocation_timeout_seconds: int | None = None,
        s3_output_path_extension: str | None = "fanout",
        line_column: str | None = None,
    ) -> None:
        validate_endpoint_name(endpoint_name)
        check_payload_mode(payload, staging)
        self._actor = uuid.uuid4().hex
        if s3_output_path_extension is not None and not isinstance(s3_output_path_extension, str):
            raise ConfigError(
                f"must be a string or None, got {s3_output_path_extension!r}",
                field="s3_output_path_extension",
            )
        self._base = s3_output_path_extension.strip("/") if s3_output_path_extension is not None else None
        self._defaults = LineDefaults(
            content_type=content_type,
            request_ttl_seconds=request_ttl_seconds,
            invocation_timeout_seconds=invocation_timeout_seconds,
        )
        probe = InferenceRequest(
            body=b"{}",
            content_type=content_type,
            request_ttl_seconds=request_ttl_seconds,
            invocation_timeout_seconds=invocation_timeout_seconds,
            s3_output_path_extension=self._extension(10**9 * DIRECTORY_SIZE),
        )
        invalid = validate_request(probe)
        if invalid is not None:
            raise ConfigError(invalid.reason)
        if line_column is not None and not (isinstance(line_column, str) and line_column):
            raise ConfigError(f"must be a column name, got {line_column!r}", field="line_column")
        self._line_column = line_column
        options: dict[str, Any] = {
            "endpoint_name": endpoint_name,
            "tracking": S3Tracking(mode="list") if tracking is None else tracking,
            "limits": limits,
            "retry": retry,
            "payload": payload,
            "staging": staging,
            "fetch": fetch,
        }
        self._submitted = 0
        self._in_flight: set[str] = set()
        """Inference ids that rows gave and whose outcome has not come back yet."""
        self._holder = _Holder(options)

    # -- what Ray calls ------------------------------------------------------------------------------

    async def __call__(self, batch: Any) -> AsyncIterator[Any]:
        """Score one batch (a ``pyarrow.Table``); yields one table of outcome rows (``OUTPUT_SCHEMA``)."""
        if not isinstance(batch, pa.Table):
            raise TypeError(
                f"fanout.ray.Scorer takes pyarrow batches, got {type(batch).__name__}: pass "
                "batch_format='pyarrow' to map_batches (the numpy and pandas formats turn an integer "
                "beside a null into a float, which would change the body sent)"
            )
        items = self._items(batch)
        requests = [item for item in items if isinstance(item, InferenceRequest)]
        rows = [self._row(item) for item in items if isinstance(item, Rejected)]
        if requests:
            given = {r.inference_id for r in requests if r.inference_id is not None}
            try:
                client = await self._holder.open()
                with unwrap_task_errors():
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._holder.watch)
                        async with client.map(requests) as outcomes:
                            rows += [self._row(outcome) async for outcome in outcomes]
                        tg.cancel_scope.cancel()
            finally:
                self._in_flight -= given
        yield pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA)

    def __del__(self) -> None:
        """Ray deletes the instance when its actor exits gracefully: close the client on its loop."""
        holder: _Holder | None = getattr(self, "_holder", None)
        if holder is not None:
            holder.close_from_anywhere()

    # -- public ----------------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the actor's client (on the loop it was opened on); scoring again opens a new one."""
        await self._holder.aclose()

    def statistics(self) -> ClientStatistics | None:
        """The actor's client's statistics (``api_calls`` among them); ``None`` while it is closed."""
        client = self._holder.client
        return client.statistics() if client is not None else None

    # -- rows --------------------------------------------------------------------------------------------

    def _extension(self, number: int) -> str | None:
        if self._base is None:
            return None
        block = f"{self._actor}/{number // DIRECTORY_SIZE:06d}"
        return f"{self._base}/{block}" if self._base else block

    def _items(self, batch: Any) -> list[InferenceRequest | Rejected]:
        column = self._line_column
        if column is not None:
            if column not in batch.column_names:
                raise ConfigError(
                    f"the batch has no column {column!r} (it has {', '.join(batch.column_names)})",
                    field="line_column",
                )
            lines = batch.column(column).to_pylist()
            return [self._line(line, n) for n, line in enumerate(lines, 1) if line and not line.isspace()]
        return [self._record(row, n) for n, row in enumerate(batch.to_pylist(), 1)]

    def _record(self, row: Mapping[str, Any], number: int) -> InferenceRequest | Rejected:
        """One table row: its non-null columns become a JSONL line, checked by ``parse_line``."""
        given = {name: value for name, value in row.items() if value is not None}
        row_id = given.get("id")
        row_id = row_id if isinstance(row_id, str) and row_id else None
        try:
            text = json.dumps(given, ensure_ascii=False, allow_nan=True)
        except (TypeError, ValueError) as exc:
            return Rejected(reason=f"a column holds a value that is not JSON: {exc}", id=row_id)
        return self._adopt(parse_line(text, number, self._defaults), number, row_id, "id" in given)

    def _line(self, line: str | bytes, number: int) -> InferenceRequest | Rejected:
        parsed = parse_line(line, number, self._defaults)
        if parsed.id != str(number):
            return self._adopt(parsed, number, parsed.id, True)
        # parse_line defaults the id to the line number: was it given, or defaulted?
        row_id = _given_id(line)
        return self._adopt(parsed, number, row_id, row_id is not None)

    def _adopt(
        self, parsed: InferenceRequest | Rejected, number: int, row_id: str | None, has_id: bool
    ) -> InferenceRequest | Rejected:
        """Word a row's request or rejection for a dataset: no line numbers, an extension per actor."""
        if isinstance(parsed, Rejected):
            reason = parsed.reason.removeprefix(f"line {number}: ")
            return replace(parsed, reason=reason, id=row_id, line=None)
        inference_id = parsed.inference_id
        if inference_id is not None:
            if inference_id in self._in_flight:
                return Rejected(
                    reason=f"inference_id {inference_id!r} is already in flight on this worker",
                    id=row_id if has_id else None,
                    inference_id=inference_id,
                )
            self._in_flight.add(inference_id)
        else:
            inference_id = str(uuid.uuid4())
        extension = self._extension(self._submitted)
        self._submitted += 1
        return replace(
            parsed,
            id=parsed.id if has_id else inference_id,
            inference_id=inference_id,
            s3_output_path_extension=extension,
        )

    @staticmethod
    def _row(outcome: Outcome) -> dict[str, Any]:
        """The output row of an outcome: ``outcome_record``, its result as JSON text."""
        record = outcome_record(outcome)
        if "line" in record:
            record["line"] = None  # a dataset has no line numbers
        result = record.get("result")
        record["result"] = None if result is None else encode_json(result).decode("utf-8")
        record.setdefault("result_base64", None)
        return record


class _Holder:
    """The actor's client, held open by a task of its own on the loop of the first batch.

    The task refers to this holder only, never to the ``Scorer``, so that the ``Scorer`` can be
    deleted (and close the client) while the client is open.
    """

    def __init__(self, options: Mapping[str, Any]) -> None:
        self._options = dict(options)
        self.client: Client | None = None
        self._opening: asyncio.Future[Client] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop: anyio.Event | None = None
        self._stopped: anyio.Event | None = None
        self._error: BaseException | None = None

    async def open(self) -> Client:
        """The open client: opened by the first caller, awaited by the others."""
        if self._opening is None:
            loop = asyncio.get_running_loop()
            self._opening = loop.create_future()
            self._stop = anyio.Event()
            self._stopped = anyio.Event()
            self._task = loop.create_task(self._hold(self._opening, self._stop, self._stopped))
        elif self._error is not None:
            raise self._error
        return await asyncio.shield(self._opening)

    async def _hold(self, opening: asyncio.Future[Client], stop: anyio.Event, stopped: anyio.Event) -> None:
        """Hold the client open until ``stop``; a run-level error is kept for every batch to raise."""
        try:
            async with open_client(**self._options) as client:
                self.client = client
                opening.set_result(client)
                await stop.wait()
        except Exception as exc:
            self._error = exc
            if not opening.done():
                opening.set_exception(exc)
        finally:
            self.client = None
            stopped.set()
            if not opening.done():
                opening.set_exception(_Closed("the fanout client of this actor was closed"))

    async def watch(self) -> None:
        """Raise once the client stops, so that a batch never waits for outcomes forever."""
        assert self._stopped is not None
        await self._stopped.wait()
        raise self._error or _Closed("the fanout client of this actor was closed")

    async def aclose(self) -> None:
        task, stop = self._task, self._stop
        if task is None or stop is None:
            return
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.shield(task)
        self._opening = self._task = None
        self._stop = self._stopped = None
        self._error = None

    def close_from_anywhere(self) -> None:
        """Close from any thread: wait for it when called off the client's loop, else ask for it."""
        task = self._task
        if task is None or task.done():
            return
        loop = task.get_loop()
        if loop.is_closed() or not loop.is_running():
            return
        if _running_loop() is loop:
            if self._stop is not None:
                loop.call_soon(self._stop.set)  # on the loop itself: nothing may block it
            return
        future = asyncio.run_coroutine_threadsafe(self.aclose(), loop)
        with contextlib.suppress(Exception):
            future.result(timeout=_CLOSE_TIMEOUT)


def _given_id(line: str | bytes) -> str | None:
    """The ``id`` a JSONL line gives, if it is a non-empty string (``None`` when it cannot be read)."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    row_id = value.get("id") if isinstance(value, dict) else None
    return row_id if isinstance(row_id, str) and row_id else None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
