"""The emulator is never the bottleneck: InvokeEndpointAsync/s and SQS messages/s on one server core.

The emulator runs as its own process (``python -m fanout.testing``, default configuration) pinned
to one CPU; this client runs on another CPU with raw aiohttp (no SigV4 signing: a fake
``Authorization`` header with the right credential scope routes each request). Every scenario is
bounded in count and in time, and repeated after one warm-up; the table shows the median and the
spread.

    python -m benchmarks.emulator [--repetitions 5] [--invokes 10000] [--messages 50000] [--no-pin]
    python benchmarks/emulator.py ...

Writes ``results/emulator.md`` and ``results/emulator.json``; exits 1 when a median is under the
target rate.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio

if __package__ in (None, ""):  # ``python benchmarks/emulator.py``: import the checkout as ``-m`` does
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import (
    Sample,
    Table,
    command_line,
    header,
    median,
    pin,
    publish,
    standalone_parser,
    stat,
    values,
)
from benchmarks.scenarios._target import Control, emulator_process, open_control
from benchmarks.scenarios._workload import loop_options

RESULTS = Path(__file__).resolve().parent / "results" / "emulator.md"
TARGET_PER_SECOND = 3_000
SCENARIO_TIMEOUT = 120.0
SQS_JSON = "application/x-amz-json-1.0"
SCENARIOS = {
    "invokes": ("InvokeEndpointAsync (inline, 202)", "invokes/s"),
    "receive_delete": ("SQS ReceiveMessage x10 + DeleteMessageBatch", "messages/s"),
    "receive_only": ("SQS ReceiveMessage x10 (no delete)", "messages/s"),
}
"""Metric name: (what is measured, its unit)."""


def authorization(service: str) -> str:
    return (
        f"AWS4-HMAC-SHA256 Credential=AKIDBENCH/20260101/us-east-1/{service}/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=0"
    )


async def run_workers(
    concurrency: int, total: int, step: Callable[[int], Awaitable[int]]
) -> tuple[int, float]:
    """Run ``step(i)`` for i in 0..total-1 on ``concurrency`` workers; (units counted, seconds)."""
    counter = itertools.count()
    done = 0

    async def worker() -> None:
        nonlocal done
        while (i := next(counter)) < total:
            units = await step(i)  # not `done += await ...`: that reads `done` before the await
            done += units

    start = time.perf_counter()
    with anyio.fail_after(SCENARIO_TIMEOUT):
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
    return done, time.perf_counter() - start


class RawClient:
    """Unsigned sagemaker-runtime and SQS calls over the control's aiohttp session."""

    def __init__(self, control: Control, env: dict[str, str]) -> None:
        self.control = control
        self.http = control.http
        self.base = env["AWS_ENDPOINT_URL"]
        self.endpoint = env["FANOUT_ENDPOINT"]
        self.queue_url = env["FANOUT_QUEUE_URL"]
        self.errors = 0

    async def invoke(self, i: int, run: int) -> int:
        headers = {
            "Authorization": authorization("sagemaker"),
            "X-Amzn-SageMaker-Content-Type": "application/json",
            "X-Amzn-SageMaker-Inference-Id": f"bench-{run}-{i}",
        }
        body = json.dumps({"row": i, "text": "a small inline payload of about a hundred bytes"}).encode()
        async with self.http.post(
            f"{self.base}/endpoints/{self.endpoint}/async-invocations", data=body, headers=headers
        ) as response:
            await response.read()
            if response.status != 202:
                self.errors += 1
                return 0
            return 1

    async def sqs(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        headers = {
            "Authorization": authorization("sqs"),
            "X-Amz-Target": f"AmazonSQS.{operation}",
            "Content-Type": SQS_JSON,
        }
        async with self.http.post(
            f"{self.base}/", data=json.dumps({"QueueUrl": self.queue_url, **payload}), headers=headers
        ) as response:
            body = await response.read()
            if response.status != 200:
                self.errors += 1
                return {}
            result: dict[str, Any] = json.loads(body)
            return result

    async def send_batch(self, i: int) -> int:
        entries = [
            {"Id": str(n), "MessageBody": json.dumps({"batch": i, "n": n, "pad": "x" * 400})}
            for n in range(10)
        ]
        await self.sqs("SendMessageBatch", {"Entries": entries})
        return 10

    async def receive_batch(self, i: int, *, delete: bool) -> int:
        reply = await self.sqs("ReceiveMessage", {"MaxNumberOfMessages": 10, "VisibilityTimeout": 600})
        messages = reply.get("Messages", [])
        if delete and messages:
            entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)]
            await self.sqs("DeleteMessageBatch", {"Entries": entries})
        return len(messages)

    async def wait_until_processed(self) -> None:
        with anyio.fail_after(SCENARIO_TIMEOUT):
            while True:
                invocations = (await self.control.stats())["invocations"]
                if invocations["processed"] + invocations["expired"] >= invocations["accepted"]:
                    return
                await anyio.sleep(0.05)


async def repetition(client: RawClient, args: argparse.Namespace, run: int) -> Sample:
    """One run of the three scenarios: invokes, then receive + delete, then receive only."""
    errors = client.errors
    rates: dict[str, float] = {}
    done, seconds = await run_workers(args.concurrency, args.invokes, partial(client.invoke, run=run))
    await client.wait_until_processed()
    await client.sqs("PurgeQueue", {})
    rates["invokes"] = done / seconds
    for name, delete in (("receive_delete", True), ("receive_only", False)):
        await client.sqs("PurgeQueue", {})
        await run_workers(args.concurrency, args.messages // 10, client.send_batch)
        batches = args.messages // 10 + args.concurrency  # a few empty receives at the end are fine
        received, seconds = await run_workers(
            args.concurrency, batches, partial(client.receive_batch, delete=delete)
        )
        rates[name] = received / seconds
    print(
        f"  run {run}: " + ", ".join(f"{SCENARIOS[k][0]} {v:,.0f}/s" for k, v in rates.items()),
        file=sys.stderr,
    )
    return Sample(metrics={**rates, "errors": float(client.errors - errors)})


async def measure(args: argparse.Namespace, env: dict[str, str]) -> list[Sample]:
    async with open_control(env, connections=args.concurrency) as control:
        client = RawClient(control, env)
        await repetition(client, args, 0)  # warms up, not counted
        return [await repetition(client, args, run) for run in range(1, args.repetitions + 1)]


def report(args: argparse.Namespace, runs: list[Sample], *, command: str, setup: dict[str, str]) -> str:
    table = Table(["scenario", "unit", "median", "min – max", "runs", "errors", f"≥ {TARGET_PER_SECOND:,}/s"])
    for key, (name, unit) in SCENARIOS.items():
        rates = stat(values(runs, key))
        errors = sum(values(runs, "errors")) if key == "invokes" else 0
        verdict = "yes" if rates.median >= TARGET_PER_SECOND else "NO"
        table.add(
            name,
            unit,
            f"{rates.median:,.0f}",
            f"{rates.minimum:,.0f} – {rates.maximum:,.0f}",
            rates.n,
            f"{errors:.0f}",
            verdict,
        )
    lines = header("Emulator throughput", command, setup)
    lines += [
        "## Results",
        "",
        f"Server: `python -m fanout.testing` (default configuration: endpoint fanout-demo, 2 x 64 workers, "
        f"service time uniform 0-5 ms), on its own core. Client: raw aiohttp, {args.concurrency} requests "
        f"in flight, uvloop. {args.repetitions} repetitions after one warm-up; {args.invokes:,} invokes and "
        f"{args.messages:,} messages (sent in batches of 10, not timed) per repetition. Invokes are timed "
        "until the last 202; the workers that then process them (S3 output, SNS, SQS) share the server "
        "core. The machine may be shared; a busy neighbour shows up as a wide spread. Errors: calls not "
        "answered 202 or 200, over every scenario.",
        "",
        table.to_markdown(),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = standalone_parser("python -m benchmarks.emulator", __doc__, RESULTS)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--invokes", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--server-cpu", type=int, default=None, help="the emulator's core (default: the first)"
    )
    parser.add_argument(
        "--client-cpu", type=int, default=None, help="this process's core (default: the last)"
    )
    parser.add_argument("--output", dest="out", type=Path, help=argparse.SUPPRESS)  # the old name of --out
    args = parser.parse_args(argv)
    if min(args.repetitions, args.invokes, args.messages, args.concurrency) < 1:
        parser.error("every size must be positive")
    command = command_line(parser.prog, argv)
    pinning = pin(args.pin, server=args.server_cpu, client=args.client_cpu)
    with emulator_process(cpu=pinning.server) as target:
        runs = anyio.run(
            measure, args, dict(target.env), backend="asyncio", backend_options=loop_options(True)
        )
    setup = {"pinning": pinning.description, "event loop": "uvloop"}
    text = report(args, runs, command=command, setup=setup)
    publish(args.out, text, {"command": command, "setup": setup, "arguments": vars(args), "runs": runs})
    return 0 if all(median(runs, key) >= TARGET_PER_SECOND for key in SCENARIOS) else 1


if __name__ == "__main__":
    sys.exit(main())
