"""Peak memory of ``fanout run`` on a long input: ``python -m benchmarks.memory [--lines N] [--journal]``.

The batch engine behind ``fanout run`` (the same code path: JSONL reader, journal,
dispatcher, tracker, writer) scores N generated lines against a zero-latency
in-process fake of sagemaker-runtime, SQS and S3, so that the client is the only
thing measured. Memory must stay O(limits), not O(N): the script fails when the
peak RSS of the process goes over ``--limit-mb`` (150 by default).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import resource
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import anyio

from fanout import Limits, SqsTracking
from fanout._batch import Batch, BatchOptions

QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/fanout-notifications"


class _Events:
    def register(self, *_: Any, **__: Any) -> None:
        return None


class _Meta:
    events = _Events()


class _Context:
    """``async with`` returning the client, as aiobotocore's create_client does."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def __aenter__(self) -> Any:
        return self._client

    async def __aexit__(self, *_: object) -> None:
        return None


class FakeAws:
    """Just enough sagemaker-runtime, SQS and S3 for the engine, with no latency at all."""

    meta = _Meta()

    def __init__(self) -> None:
        self._messages: deque[dict[str, str]] = deque()
        self._arrived = anyio.Event()
        self.invocations = 0

    # The session side.
    def get_component(self, name: str) -> Any:
        return self

    def load_service_model(self, *_: str) -> dict[str, Any]:
        # The installed botocore has Body; the patch then changes nothing.
        return {"shapes": {"InvokeEndpointAsyncInput": {"members": {"Body": {}}}}}

    def create_client(self, service: str, **_: Any) -> _Context:
        return _Context(self)

    # sagemaker-runtime
    async def invoke_endpoint_async(self, **arguments: Any) -> dict[str, Any]:
        self.invocations += 1
        inference_id = arguments["InferenceId"]
        output = f"s3://fanout-output/results/{inference_id}.out"
        digest = hashlib.sha256(arguments["Body"]).hexdigest()
        result = json.dumps({"sha256": digest}).encode()
        notification = {
            "invocationStatus": "Completed",
            "inferenceId": inference_id,
            "responseParameters": {"outputLocation": output, "contentType": "application/json"},
            "responseBody": {"content": base64.b64encode(result).decode(), "encoding": "BASE64"},
        }
        self._messages.append(
            {"MessageId": inference_id, "ReceiptHandle": inference_id, "Body": json.dumps(notification)}
        )
        self._arrived.set()
        return {"InferenceId": inference_id, "OutputLocation": output}

    # SQS
    async def get_queue_attributes(self, **_: Any) -> dict[str, Any]:
        return {"Attributes": {}}

    async def receive_message(self, **arguments: Any) -> dict[str, Any]:
        if not self._messages:
            with anyio.move_on_after(arguments.get("WaitTimeSeconds", 0)):
                await self._arrived.wait()
            self._arrived = anyio.Event()
        batch = [self._messages.popleft() for _ in range(min(10, len(self._messages)))]
        return {"Messages": batch}

    async def delete_message_batch(self, **arguments: Any) -> dict[str, Any]:
        return {"Successful": [{"Id": entry["Id"]} for entry in arguments["Entries"]]}

    async def change_message_visibility_batch(self, **arguments: Any) -> dict[str, Any]:
        return {"Successful": [{"Id": entry["Id"]} for entry in arguments["Entries"]]}

    # S3 (never called: results come inside the notifications)
    async def head_bucket(self, **_: Any) -> dict[str, Any]:
        return {}


def write_input(path: Path, lines: int) -> None:
    with path.open("w") as handle:
        for index in range(lines):
            handle.write(f'{{"id":"r{index}","body":{{"i":{index},"text":"a small JSON payload"}}}}\n')


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def measure(lines: int, journal: bool, folder: Path) -> dict[str, Any]:
    source = folder / "in.jsonl"
    write_input(source, lines)
    fake = FakeAws()
    options = BatchOptions(
        input=str(source),
        output=str(folder / "out.jsonl"),
        endpoint_name="fanout-demo",
        tracking=SqsTracking(queue_url=QUEUE_URL, wait_time_seconds=1),
        limits=Limits(max_in_flight=64, max_pending=1_000),
        journal=str(folder / "journal.db") if journal else None,
    )
    before = peak_rss_mb()
    started = time.monotonic()
    result = await Batch(options, session=fake).run()
    elapsed = time.monotonic() - started
    written = sum(1 for _ in (folder / "out.jsonl").open("rb"))
    return {
        "lines": lines,
        "journal": journal,
        "succeeded": result.report.succeeded,
        "output_lines": written,
        "invocations": fake.invocations,
        "elapsed_s": round(elapsed, 1),
        "lines_per_s": round(lines / elapsed),
        "peak_rss_mb_before_run": round(before, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--journal", action="store_true", help="with a durable --journal (default: without)")
    parser.add_argument("--limit-mb", type=float, default=150.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fanout-memory-") as folder:
        figures = anyio.run(measure, args.lines, args.journal, Path(folder))
    print(json.dumps(figures))
    ok = figures["output_lines"] == args.lines and figures["peak_rss_mb"] <= args.limit_mb
    if not ok:
        print(f"FAILED: expected {args.lines} lines under {args.limit_mb} MB", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
