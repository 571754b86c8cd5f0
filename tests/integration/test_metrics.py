"""``/metrics`` scraped during a real run against the in-process emulator, checked against the
run's own report and against what the emulator says it did.

The emulator throttles and duplicates notifications; the batch mixes inline and S3 payloads, model
failures and requests rejected before sending; and a few messages that are not outcomes (malformed,
test notifications, an unknown id) wait in the queue. A scraper reads ``/metrics`` every 50 ms
while the run goes on, so at least one scrape lands mid-run. The run takes two to three seconds.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import aiohttp
import anyio
import pytest
from aiobotocore.session import get_session
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from fanout import (
    InferenceRequest,
    Limits,
    Outcome,
    RetryPolicy,
    RunReport,
    SqsTracking,
    Staging,
    Submission,
    open_client,
)
from fanout._metrics import serve_metrics
from fanout.testing import (
    Distribution,
    Emulator,
    FaultConfig,
    NotificationFaults,
    ThrottleConfig,
    default_config,
    open_emulator,
)

pytestmark = pytest.mark.anyio

COUNT = 400
REJECTED = 4
MAX_IN_FLIGHT = 32
MAX_PENDING = 200
MALFORMED = ("not json {", '{"Type": "Notification", "Message": "{\\"half"}')
TESTS = (json.dumps({"eventName": "TestNotification"}),) * 2
UNKNOWN = json.dumps({"inferenceId": "nobody-sent-this", "invocationStatus": "Completed"})

TOPICS = len(default_config().topics)
"""SageMaker (and the emulator) publishes a TestNotification to each topic of a new endpoint."""

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


@pytest.fixture
async def emulator(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Emulator]:
    faults = FaultConfig(
        throttle=ThrottleConfig(rate=200.0, burst=5.0),
        notifications=NotificationFaults(
            duplicate_rate=0.1, early_rate=0.2, delay=Distribution("uniform", low_ms=0.0, high_ms=20.0)
        ),
    )
    async with open_emulator(replace(default_config(), faults=faults)) as emu:
        for name, value in emu.env.items():
            monkeypatch.setenv(name, value)
        yield emu


def requests() -> Iterator[InferenceRequest]:
    for index in range(COUNT):
        if index % 100 == 7:
            yield InferenceRequest(id=f"bad-{index}")  # no payload: rejected before sending
        elif index % 25 == 3:
            yield InferenceRequest.from_json({"fail": True, "reason": str(index)}, id=str(index))
        elif index % 10 == 5:
            yield InferenceRequest(body=b"x" * 200_000 + str(index).encode(), id=str(index))  # via S3
        else:
            yield InferenceRequest.from_json({"i": index}, id=str(index))


async def scrape(http: aiohttp.ClientSession, url: str) -> Samples:
    async with http.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def by(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for labels, value in samples.get(name, {}).items()}


def value(samples: Samples, name: str) -> float:
    return samples[name][()]


def api_calls(samples: Samples) -> dict[str, float]:
    return {
        f"{dict(labels)['service']}.{dict(labels)['operation']}": count
        for labels, count in samples.get("fanout_api_calls_total", {}).items()
    }


def duplicates(samples: Samples) -> float:
    """The copies the emulator's duplication made, as the metrics saw them: duplicate outcome
    notifications, and the test notifications beyond one per topic (those are duplicated too)."""
    kinds = by(samples, "fanout_notifications_total", "kind")
    return kinds["duplicate"] + kinds["test"] - len(TESTS) - TOPICS


def counters(samples: Samples) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample that must never go down: counters and histogram buckets, counts and sums."""
    return {
        (name, labels): count
        for name, series in samples.items()
        if name.endswith(("_total", "_bucket", "_count", "_sum"))
        for labels, count in series.items()
    }


class Tally:
    """The caller's own observer: it hears every hook beside the metrics' one."""

    def __init__(self) -> None:
        self.hooks: Counter[str] = Counter()

    async def sending(self, inference_id: str, deadline: float) -> None:
        self.hooks["sending"] += 1

    def unsent(self, inference_id: str) -> None:
        self.hooks["unsent"] += 1

    def accepted(self, submission: Submission) -> None:
        self.hooks["accepted" if not submission.in_doubt else "in_doubt"] += 1

    def handed_over(self, outcome: Outcome) -> None:
        self.hooks[f"handed_over.{outcome.status}"] += 1


async def seed_queue(emu: Emulator) -> None:
    """Messages that are not outcomes, waiting before the run starts."""
    env = emu.env
    async with get_session().create_client("sqs", region_name=env["AWS_REGION"]) as sqs:
        for body in (*MALFORMED, *TESTS, UNKNOWN):
            await sqs.send_message(QueueUrl=env["FANOUT_QUEUE_URL"], MessageBody=body)


async def test_metrics_scraped_during_a_run_match_its_report(emulator: Emulator) -> None:
    env = emulator.env
    await seed_queue(emulator)
    registry = CollectorRegistry()
    scrapes: list[Samples] = []
    tally = Tally()
    limits = Limits(max_in_flight=MAX_IN_FLIGHT, max_pending=MAX_PENDING)
    retry = RetryPolicy(attempts=50, timeout=60, wait_initial=0.01, wait_max=0.5)
    with anyio.fail_after(60):
        async with serve_metrics(registry, port=0) as server, aiohttp.ClientSession() as http:
            assert server.address == "127.0.0.1" and server.port > 0
            assert server.url == f"http://127.0.0.1:{server.port}/metrics"
            async with open_client(
                endpoint_name=env["FANOUT_ENDPOINT"],
                tracking=SqsTracking(queue_url=env["FANOUT_QUEUE_URL"], wait_time_seconds=1),
                staging=Staging(location=env["FANOUT_STAGING"]),
                limits=limits,
                retry=retry,
                registry=registry,
                observer=tally,
            ) as client:
                before = dict(client.statistics().api_calls)

                async def scraper() -> None:
                    while True:
                        scrapes.append(await scrape(http, server.url))
                        await anyio.sleep(0.05)

                report: RunReport | None = None
                async with anyio.create_task_group() as tg:
                    tg.start_soon(scraper)
                    report = await client.run(requests())
                    tg.cancel_scope.cancel()
                assert report is not None
                end = await scrape(http, server.url)
                # The duplicates of the last notifications may still be on their way.
                with anyio.fail_after(10):
                    while duplicates(end) < emulator.stats()["notifications"]["duplicated"]:
                        await anyio.sleep(0.05)
                        end = await scrape(http, server.url)
            closed = await scrape(http, server.url)

    # The batch did what it was built to do.
    failed = len([i for i in range(COUNT) if i % 25 == 3 and i % 100 != 7])
    assert report.by_status == {
        "succeeded": COUNT - REJECTED - failed,
        "failed": failed,
        "expired": 0,
        "rejected": REJECTED,
    }
    assert report.s3 > 0 and report.inline > 0 and report.throttles > 0

    # Mid-run: some outcomes out, not all; the gauges within the limits.
    middle = [
        samples
        for samples in scrapes
        if 0 < sum(by(samples, "fanout_outcomes_total", "status").values()) < COUNT
    ]
    assert middle, f"no scrape landed mid-run ({len(scrapes)} scrapes)"
    for samples in middle:
        assert 0 <= value(samples, "fanout_in_flight") <= MAX_IN_FLIGHT
        assert 0 <= value(samples, "fanout_pending") <= MAX_PENDING
        assert 1 <= value(samples, "fanout_concurrency_limit") <= MAX_IN_FLIGHT
        assert value(samples, "fanout_outstanding") <= MAX_PENDING
        assert value(samples, "fanout_buffered_outcomes") <= MAX_PENDING
        assert (
            "fanout_rate_limit_per_second" not in samples
            or value(samples, "fanout_rate_limit_per_second") > 0
        )
    assert any(value(samples, "fanout_in_flight") > 0 for samples in middle)
    assert any(value(samples, "fanout_pending") > 0 for samples in middle)
    # Counters (and histogram buckets) never go down, from the first scrape to the client's exit.
    series = [counters(samples) for samples in (*scrapes, end, closed)]
    for earlier, later in itertools.pairwise(series):
        assert all(later.get(key, 0) >= count for key, count in earlier.items())

    # At the end: the report's numbers.
    assert by(end, "fanout_outcomes_total", "status") == report.by_status
    assert by(end, "fanout_submissions_total", "route") == {"inline": report.inline, "s3": report.s3}
    assert value(end, "fanout_throttles_total") == report.throttles
    assert value(end, "fanout_resends_total") == report.resends
    retries = by(end, "fanout_retries_total", "class")
    assert retries["throttle"] > 0 and sum(retries.values()) == report.retries
    assert by(end, "fanout_time_to_outcome_seconds_count", "route") == {
        "inline": report.inline,
        "s3": report.s3,
    }
    accepted = by(end, "fanout_time_to_accept_seconds_count", "route")
    assert sum(accepted.values()) == report.inline + report.s3 - report.in_doubt == tally.hooks["accepted"]
    assert {status: tally.hooks[f"handed_over.{status}"] for status in report.by_status} == report.by_status
    assert tally.hooks["sending"] >= report.inline + report.s3  # the caller's observer still hears all
    assert accepted["s3"] > 0 and accepted["inline"] > 0
    # Everything here took less than a minute: the 60 s bucket holds every request already.
    for name in ("fanout_time_to_accept_seconds", "fanout_time_to_outcome_seconds"):
        buckets = end[f"{name}_bucket"]
        for labels, count in buckets.items():
            if dict(labels)["le"] in ("60.0", "+Inf"):
                assert count == end[f"{name}_count"][tuple(kv for kv in labels if kv[0] != "le")]
        assert all(math.isfinite(total) and total > 0 for total in end[f"{name}_sum"].values())
    invokes = "sagemaker-runtime.InvokeEndpointAsync"
    calls = api_calls(end)
    assert calls[invokes] == before.get(invokes, 0) + report.api_calls[invokes]
    for name, count in report.api_calls.items():
        assert calls[name] >= before.get(name, 0) + count, name  # the receivers poll on after the run

    # What the emulator says it did.
    stats = emulator.stats()
    assert value(end, "fanout_throttles_total") == stats["faults"]["throttled"]
    assert calls[invokes] == sum(stats["requests"].get("sagemaker.InvokeEndpointAsync", {}).values())
    kinds = by(end, "fanout_notifications_total", "kind")
    assert kinds["outcome"] == report.succeeded + report.failed  # SQS tracking, nothing lost: one each
    assert kinds["malformed"] == len(MALFORMED)
    assert len(TESTS) + TOPICS <= kinds["test"] <= len(TESTS) + 2 * TOPICS
    assert duplicates(end) == stats["notifications"]["duplicated"]
    assert kinds["unknown"] >= 1  # left on the queue for whoever sent it

    # Idle at the end; after the client's exit its counts stay, and its gauges are gone.
    for gauge in ("fanout_in_flight", "fanout_pending", "fanout_outstanding", "fanout_buffered_outcomes"):
        assert value(end, gauge) == 0, gauge
    assert value(end, "fanout_concurrency_limit") >= 1
    assert by(closed, "fanout_outcomes_total", "status") == report.by_status
    assert value(closed, "fanout_concurrency_limit") == 0
    assert api_calls(closed)[invokes] == calls[invokes]
