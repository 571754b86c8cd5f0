"""The emulator is never the bottleneck: InvokeEndpointAsync/s and SQS messages/s on one server core.

The emulator runs as its own process (``python -m fanout.testing``, default configuration) pinned
to one CPU; this client runs on another CPU with raw aiohttp (no SigV4 signing: a fake
``Authorization`` header with the right credential scope routes each request). Every scenario is
bounded in count and in time, and repeated; the table shows the median and the spread.

    python benchmarks/emulator.py [--repetitions 5] [--invokes 10000] [--messages 50000]

Writes ``benchmarks/results/emulator.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from fanout.testing import run_emulator_process

RESULTS = Path(__file__).parent / "results" / "emulator.md"
TARGET_PER_SECOND = 3_000
SCENARIO_TIMEOUT = 120.0
SQS_JSON = "application/x-amz-json-1.0"


def authorization(service: str) -> str:
    return (
        f"AWS4-HMAC-SHA256 Credential=AKIDBENCH/20260101/us-east-1/{service}/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=0"
    )


@dataclass
class Scenario:
    name: str
    unit: str
    rates: list[float] = field(default_factory=list)
    errors: int = 0

    def row(self) -> str:
        median = statistics.median(self.rates)
        spread = f"{min(self.rates):,.0f} – {max(self.rates):,.0f}"
        verdict = "yes" if median >= TARGET_PER_SECOND else "NO"
        cells = [
            self.name,
            self.unit,
            f"{median:,.0f}",
            spread,
            str(len(self.rates)),
            str(self.errors),
            verdict,
        ]
        return "| " + " | ".join(cells) + " |"


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


class Client:
    def __init__(self, http: aiohttp.ClientSession, env: dict[str, str]) -> None:
        self.http = http
        self.base = env["AWS_ENDPOINT_URL"]
        self.endpoint = env["FANOUT_ENDPOINT"]
        self.queue_url = env["FANOUT_QUEUE_URL"]
        self.errors = 0

    async def stats(self) -> dict[str, Any]:
        async with self.http.get(f"{self.base}/_fanout/stats") as response:
            result: dict[str, Any] = await response.json()
            return result

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
                invocations = (await self.stats())["invocations"]
                if invocations["processed"] + invocations["expired"] >= invocations["accepted"]:
                    return
                await anyio.sleep(0.05)


async def measure(args: argparse.Namespace, env: dict[str, str]) -> list[Scenario]:
    invokes = Scenario("InvokeEndpointAsync (inline, 202)", "invokes/s")
    receive_delete = Scenario("SQS ReceiveMessage x10 + DeleteMessageBatch", "messages/s")
    receive_only = Scenario("SQS ReceiveMessage x10 (no delete)", "messages/s")
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        client = Client(http, env)
        for run in range(args.repetitions + 1):  # run 0 warms up and is not counted
            done, seconds = await run_workers(args.concurrency, args.invokes, partial(client.invoke, run=run))
            await client.wait_until_processed()
            await client.sqs("PurgeQueue", {})
            if run:
                invokes.rates.append(done / seconds)
            print(f"  invoke run {run}: {done / seconds:,.0f}/s", file=sys.stderr)

            for scenario, delete in ((receive_delete, True), (receive_only, False)):
                await client.sqs("PurgeQueue", {})
                await run_workers(args.concurrency, args.messages // 10, client.send_batch)
                batches = args.messages // 10 + args.concurrency  # a few empty receives at the end are fine
                received, seconds = await run_workers(
                    args.concurrency, batches, partial(client.receive_batch, delete=delete)
                )
                if run:
                    scenario.rates.append(received / seconds)
                print(f"  {scenario.name} run {run}: {received / seconds:,.0f}/s", file=sys.stderr)
        invokes.errors = client.errors
    return [invokes, receive_delete, receive_only]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def report(args: argparse.Namespace, scenarios: list[Scenario], command: str) -> str:
    lines = [
        "# Emulator throughput",
        "",
        f"Command: `{command}`",
        "",
        f"Server: `python -m fanout.testing` (default configuration: endpoint fanout-demo, 2 x 64 workers, "
        f"service time uniform 0-5 ms) pinned to CPU {args.server_cpu}. Client: raw aiohttp on CPU "
        f"{args.client_cpu}, {args.concurrency} requests in flight, uvloop. {args.repetitions} repetitions "
        f"after one warm-up; {args.invokes:,} invokes and {args.messages:,} messages (sent in batches of 10, "
        "not timed) per repetition. Invokes are timed until the last 202; the workers that then process "
        "them (S3 output, SNS, SQS) share the server core.",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"aiohttp {aiohttp.__version__}. Load average when the run started: {args.load:.2f} "
        "(the machine may be shared; a busy neighbour shows up as a wide spread).",
        "",
        f"| scenario | unit | median | min – max | runs | errors | ≥ {TARGET_PER_SECOND:,}/s |",
        "|---|---|---:|---:|---:|---:|:---:|",
        *(s.row() for s in scenarios),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--invokes", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    command = "python benchmarks/emulator.py " + " ".join(argv if argv is not None else sys.argv[1:])
    cpus = os.cpu_count() or 1
    pinned = hasattr(os, "sched_setaffinity") and cpus > max(args.server_cpu, args.client_cpu)
    with run_emulator_process(None, cpu=args.server_cpu if pinned else None) as env:
        if pinned:
            os.sched_setaffinity(0, {args.client_cpu})
        scenarios = anyio.run(measure, args, env, backend="asyncio", backend_options={"use_uvloop": True})
    text = report(args, scenarios, command.strip())
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    return 0 if all(statistics.median(s.rates) >= TARGET_PER_SECOND for s in scenarios) else 1


if __name__ == "__main__":
    sys.exit(main())
