"""Ray Data benchmark: API calls per completion of ``fanout.ray.Scorer`` with 1, 2 and 4 actors.

    python -m benchmarks.ray_data [--rows 2000] [--actors 1 2 4] [--repeat 1] [--no-sqs] [--no-pin]

Scores ``--rows`` rows (2 % of them fail in the model) through ``ds.map_batches(Scorer, ...)`` on a
local Ray, with each tracking pattern and number of actors, each run against a fresh emulator in
its own process (``emulator_config``: the usual per-API latency model, 50–100 ms service time,
notifications without the response, as on AWS):

- ``s3-list`` (the default of ``fanout.ray``): each actor writes under its own
  ``S3OutputPathExtension`` and lists only its own directory, ``S3Tracking(mode="list")``;
- ``sqs-shared``: every actor long-polls the one queue the endpoint notifies, ``SqsTracking``: each
  receives the others' notifications and hands them back.

API calls are counted twice: by the emulator (every call it served during the run, from
``/_fanout/stats``) and by each actor's client (``Scorer.statistics().api_calls``, written to a file
after each batch and summed). "Tracking" calls are all but InvokeEndpointAsync and GetObject (the
result fetch, and in S3 mode the failure reason). Writes ``results/ray_data.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import logging
import math
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # ``python benchmarks/ray_data.py``: import the checkout as ``-m`` does
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import (
    Sample,
    Table,
    cell,
    command_line,
    header,
    package_versions,
    percentile,
    publish,
    repeat_sides,
    standalone_parser,
)
from benchmarks.scenarios import DEFAULT_LATENCY
from benchmarks.scenarios._target import emulator_config, emulator_process
from fanout import S3Tracking, SqsTracking
from fanout.ray import Scorer

__all__ = ["CountingScorer", "main"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "ray_data.md"
PATTERNS = ("s3-list", "sqs-shared")
FAIL_EVERY = 50
BATCH_SIZE = 100
SQS_VISIBILITY_TIMEOUT = 5
"""Seconds. A notification an actor left once, and that comes back to it, stays hidden this long:
at the default 60 s, 400 rows on 2 actors took 544 s instead of 4 s."""
_FETCH = ("sagemaker.InvokeEndpointAsync", "s3.GetObject")


class CountingScorer(Scorer):
    """A ``Scorer`` that writes its client's API calls to ``<statistics_dir>/<uuid>.json`` after each
    batch (the last write has the latest counts: the counters only grow)."""

    def __init__(self, *, statistics_dir: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._statistics_path = Path(statistics_dir) / f"{uuid.uuid4().hex}.json"

    async def __call__(self, batch: Any) -> AsyncIterator[Any]:
        async for table in super().__call__(batch):
            yield table
        statistics = self.statistics()
        if statistics is not None:
            self._statistics_path.write_text(json.dumps(dict(statistics.api_calls)), encoding="utf-8")


def _rows(count: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Rows with a JSON body, one in ``FAIL_EVERY`` failing in the model; the sha256 each must get."""
    rows: list[dict[str, Any]] = []
    digests: dict[str, str] = {}
    for n in range(count):
        if n % FAIL_EVERY == FAIL_EVERY - 1:
            body = json.dumps({"fail": True, "reason": f"row {n}"}).encode()
        else:
            body = json.dumps({"n": n, "pad": "x" * 200}, separators=(",", ":")).encode()
            digests[f"r{n}"] = hashlib.sha256(body).hexdigest()
        rows.append({"id": f"r{n}", "body_base64": base64.b64encode(body).decode()})
    return rows, digests


def _served(stats: Mapping[str, Any]) -> Counter[str]:
    """The calls the emulator served, by ``service.Operation`` (its own control calls excluded)."""
    served: Counter[str] = Counter()
    for key, outcomes in stats["requests"].items():
        if not key.startswith("_fanout"):
            served[key] += sum(outcomes.values())
    return served


def _moment(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def _client_calls(directory: Path) -> Counter[str]:
    total: Counter[str] = Counter()
    for path in directory.glob("*.json"):
        total.update(json.loads(path.read_text(encoding="utf-8")))
    return total


def _run(ray: Any, args: argparse.Namespace, pattern: str, actors: int, server_cpu: int | None) -> Sample:
    rows, digests = _rows(args.rows)
    config = emulator_config(DEFAULT_LATENCY, include_response=False)
    with emulator_process(config, cpu=server_cpu) as target, tempfile.TemporaryDirectory() as scratch:
        env = {**target.env, "PYTHONPATH": str(ROOT)}
        tracking = (
            S3Tracking(mode="list")
            if pattern == "s3-list"
            else SqsTracking(queue_url=str(target.queue_url), visibility_timeout=SQS_VISIBILITY_TIMEOUT)
        )
        before = target.stats()
        assert before is not None
        started = time.perf_counter()
        out = ray.data.from_items(rows, override_num_blocks=max(8, 2 * actors)).map_batches(
            CountingScorer,
            fn_constructor_kwargs={
                "endpoint_name": target.endpoint_name,
                "tracking": tracking,
                "statistics_dir": scratch,
            },
            batch_format="pyarrow",
            batch_size=BATCH_SIZE,
            compute=ray.data.ActorPoolStrategy(size=actors),
            runtime_env={"env_vars": env},
        )
        records = out.take_all()
        wall = time.perf_counter() - started
        after = target.stats()
        assert after is not None
        client = _client_calls(Path(scratch))
    served = _served(after) - _served(before)
    by_id = Counter(record["id"] for record in records)
    if sorted(by_id) != sorted(row["id"] for row in rows) or set(by_id.values()) != {1}:
        raise AssertionError(f"{pattern} with {actors} actors: rows lost or repeated")
    wrong = [
        record["id"]
        for record in records
        if record["id"] in digests
        and (
            record["status"] != "succeeded" or json.loads(record["result"])["sha256"] != digests[record["id"]]
        )
    ]
    failed = sum(record["status"] == "failed" for record in records)
    if wrong or failed != len(rows) - len(digests):
        raise AssertionError(f"{pattern} with {actors} actors: wrong results for {wrong[:5]}")
    completions = len(records)
    latencies = sorted(
        (_moment(record["completed_at"]) - _moment(record["submitted_at"])) * 1000
        for record in records
        if record["submitted_at"] and record["completed_at"]
    )
    queue: dict[str, int] = next(iter(after["queues"].values()), {})
    tracking_calls = sum(count for key, count in served.items() if key not in _FETCH)
    metrics = {
        "completions": float(completions),
        "wall_s": wall,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "per_completion": sum(served.values()) / completions,
        "tracking_per_completion": tracking_calls / completions,
        "client_per_completion": sum(client.values()) / completions,
        "receives_per_notification": queue.get("received", 0) / max(queue.get("sent", 0), 1)
        if pattern == "sqs-shared"
        else math.nan,
        **{f"served:{key}": float(count) for key, count in served.items()},
        **{f"client:{key}": float(count) for key, count in client.items()},
    }
    print(
        f"{pattern}, {actors} actor(s): {metrics['per_completion']:.3f} calls per completion "
        f"(tracking {metrics['tracking_per_completion']:.3f}; client-side "
        f"{metrics['client_per_completion']:.3f}) in {wall:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    return Sample(metrics=metrics)


def _breakdown(samples: list[Sample], completions: float) -> str:
    keys = sorted({k for s in samples for k in s.metrics if k.startswith("served:")})
    parts = []
    for key in keys:
        name = key.removeprefix("served:").split(".", 1)[-1]
        per = cell(samples, key, 3, scale=1 / completions)
        parts.append(f"{name} {per}")
    return ", ".join(parts)


def report(
    args: argparse.Namespace, runs: dict[str, list[Sample]], *, command: str, setup: dict[str, str]
) -> str:
    table = Table(
        [
            "tracking",
            "actors",
            "calls per completion",
            "tracking calls per completion",
            "client-side count",
            "SQS receipts per notification",
            "submitted → completed, p50 / p99 ms",
            "wall s",
        ]
    )
    details = Table(["tracking", "actors", "calls per completion, by operation"], numeric=False)
    for name, samples in runs.items():
        pattern, actors = name.rsplit("/", 1)
        table.add(
            pattern,
            actors,
            cell(samples, "per_completion", 3),
            cell(samples, "tracking_per_completion", 3),
            cell(samples, "client_per_completion", 3),
            cell(samples, "receives_per_notification", 2),
            f"{cell(samples, 'p50_ms', 0)} / {cell(samples, 'p99_ms', 0)}",
            cell(samples, "wall_s", 1),
        )
        details.add(pattern, actors, _breakdown(samples, float(args.rows)))
    lines = header("Ray Data benchmark: calls per completion", command, setup)
    lines += [
        "## Results",
        "",
        f"{args.rows:,} rows per run ({args.rows // FAIL_EVERY} failing in the model), batches of "
        f"{BATCH_SIZE}, a fresh emulator per run; {args.repeat} repetition(s), cells are the median "
        "(min–max). Calls are those the emulator served during the run; the client-side count sums "
        "`Scorer.statistics().api_calls` over the actors. Tracking calls are every call but "
        "InvokeEndpointAsync and GetObject (result fetches, and failure reasons in S3 mode).",
        "",
        table.to_markdown(),
        "",
        details.to_markdown(),
        "",
        "With `s3-list` each actor lists only its own output directory (and the shared failure "
        "directory), so the tracking cost per completion does not grow with the number of actors. "
        "With `sqs-shared` every actor long-polls the same queue and hands back what is not its "
        "own, so each notification is received about once per actor; one that comes back to an "
        f"actor that already left it stays hidden for the visibility timeout ({SQS_VISIBILITY_TIMEOUT} s "
        "here, 60 s by default), which is where its time to completion goes. Wall time includes "
        "starting the actors (about 3 s).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = standalone_parser("python -m benchmarks.ray_data", __doc__, RESULTS)
    parser.add_argument("--rows", type=int, default=2_000)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeat", type=int, default=1, help="repetitions, each with a fresh emulator")
    parser.add_argument("--no-sqs", dest="sqs", action="store_false", help="skip the shared-queue runs")
    args = parser.parse_args(argv)
    if min(args.rows, args.repeat, *args.actors) < 1:
        parser.error("every size must be positive")
    import ray
    import ray.data

    command = command_line(parser.prog, argv)
    server_cpu = 0 if args.pin else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ray.init(num_cpus=max(args.actors), include_dashboard=False, logging_level=logging.WARNING)
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:
            patterns = PATTERNS if args.sqs else PATTERNS[:1]
            sides = {
                f"{pattern}/{actors}": (
                    lambda pattern=pattern, actors=actors: _run(ray, args, pattern, actors, server_cpu)
                )
                for pattern in patterns
                for actors in args.actors
            }
            runs = repeat_sides(sides, args.repeat)
        finally:
            ray.shutdown()
    setup = {
        "emulator": "`python -m fanout.testing` in its own process, `emulator_config` with the default "
        "latency model, 4 × 64 workers, 50–100 ms service time, notifications without the response",
        "pinning": f"emulator on core {server_cpu}, Ray unpinned" if server_cpu is not None else "not pinned",
        "ray": f"local, num_cpus={max(args.actors)} (one CPU per actor)",
        "ray version": package_versions(["ray"])["ray"],
    }
    text = report(args, runs, command=command, setup=setup)
    publish(args.out, text, {"command": command, "setup": setup, "arguments": vars(args), "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
