"""The Prometheus collector against fake client statistics: families, values, several clients on
one registry, the histograms' hooks, and the message when the extra is missing."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fanout import ConfigError, DispatcherStatistics, TrackerStatistics
from fanout._client import ClientStatistics, _observe_all
from fanout._metrics import (
    INSTALL_HINT,
    NOTIFICATION_KINDS,
    TIME_BUCKETS,
    default_registry,
    metrics_for,
    notification_kinds,
)
from fanout._models import Expired, Failed, Outcome, Rejected, Submission, Succeeded

DISPATCHER = DispatcherStatistics(
    in_flight=5,
    submitting=2,
    pending=40,
    accepted=30,
    rejected=3,
    resends=1,
    in_doubt=1,
    retries_by_class={"throttle": 7, "transient": 2},
    throttles=9,
    current_limit=12,
    current_rate=None,
    inline=25,
    s3=6,
)

TRACKER = TrackerStatistics(
    received=40,
    receive_calls=10,
    parsed=35,
    duplicates=4,
    unknown=2,
    malformed=3,
    test_notifications=2,
    resolved={"succeeded": 26, "failed": 2, "expired": 0},
    s3_calls={"head": 0, "list": 0, "get": 5},
    pending=3,
    held=0,
    expected=0,
    buffered=6,
    unacknowledged=0,
    fetched=5,
    fetch_failures=0,
    deleted=37,
    left_on_queue=2,
)

STATISTICS = ClientStatistics(
    dispatcher=DISPATCHER,
    tracker=TRACKER,
    outstanding=4,
    completed={"succeeded": 20, "failed": 2, "rejected": 3},
    api_calls={"sagemaker-runtime.InvokeEndpointAsync": 40, "sqs.ReceiveMessage": 10, "s3.GetObject": 5},
)


class FakeClient:
    def __init__(self, statistics: ClientStatistics) -> None:
        self.snapshot = statistics

    def statistics(self) -> ClientStatistics:
        return self.snapshot


def scrape(registry: CollectorRegistry) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of the exposition, by name and sorted labels (as Prometheus would parse it)."""
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def by(samples: Mapping[tuple[tuple[str, str], ...], float], label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for labels, value in samples.items()}


def one(samples: Mapping[tuple[tuple[str, str], ...], float]) -> float:
    assert list(samples) == [()]
    return samples[()]


def test_every_family_carries_the_clients_statistics() -> None:
    registry = CollectorRegistry()
    metrics = metrics_for(registry)
    metrics.attach(FakeClient(STATISTICS))
    samples = scrape(registry)
    assert by(samples["fanout_outcomes_total"], "status") == {
        "succeeded": 20,
        "failed": 2,
        "expired": 0,
        "rejected": 3,
    }
    assert by(samples["fanout_submissions_total"], "route") == {"inline": 25, "s3": 6}
    assert one(samples["fanout_throttles_total"]) == 9
    assert by(samples["fanout_retries_total"], "class") == {"throttle": 7, "transient": 2}
    assert one(samples["fanout_resends_total"]) == 1
    assert {
        (dict(labels)["service"], dict(labels)["operation"]): value
        for labels, value in samples["fanout_api_calls_total"].items()
    } == {
        ("sagemaker-runtime", "InvokeEndpointAsync"): 40,
        ("sqs", "ReceiveMessage"): 10,
        ("s3", "GetObject"): 5,
    }
    assert by(samples["fanout_notifications_total"], "kind") == {
        "outcome": 29,
        "duplicate": 4,
        "test": 2,
        "malformed": 3,
        "unknown": 2,
    }
    assert one(samples["fanout_in_flight"]) == 5
    assert one(samples["fanout_pending"]) == 40
    assert one(samples["fanout_outstanding"]) == 4
    assert one(samples["fanout_concurrency_limit"]) == 12
    assert one(samples["fanout_buffered_outcomes"]) == 6
    # Unpaced: no sample at all, rather than NaN or +Inf.
    assert "fanout_rate_limit_per_second" not in samples
    families = {
        family.name: family.type
        for family in text_string_to_metric_families(generate_latest(registry).decode())
    }
    assert families["fanout_rate_limit_per_second"] == "gauge"
    assert families["fanout_outcomes"] == "counter"
    assert families["fanout_time_to_accept_seconds"] == "histogram"
    assert families["fanout_time_to_outcome_seconds"] == "histogram"


def test_the_notification_kinds_add_up_to_the_messages_received() -> None:
    kinds = notification_kinds(TRACKER)
    assert tuple(kinds) == NOTIFICATION_KINDS
    assert sum(kinds.values()) == TRACKER.received
    # Duplicates and unknown ids are parsed notifications that carried no new outcome.
    assert kinds["outcome"] == TRACKER.parsed - TRACKER.duplicates - TRACKER.unknown
    # S3 polling alone: no message was parsed; a lost race is never a negative count.
    s3_only = replace(
        TRACKER, received=0, parsed=0, malformed=0, test_notifications=0, duplicates=1, unknown=0
    )
    assert notification_kinds(s3_only)["outcome"] == 0


def test_a_paced_controller_exposes_its_rate() -> None:
    registry = CollectorRegistry()
    metrics_for(registry).attach(
        FakeClient(replace(STATISTICS, dispatcher=replace(DISPATCHER, current_rate=150.0)))
    )
    assert one(scrape(registry)["fanout_rate_limit_per_second"]) == 150.0


def test_two_clients_on_one_registry_are_summed_and_a_closed_one_keeps_its_counts() -> None:
    registry = CollectorRegistry()
    first = metrics_for(registry)
    assert metrics_for(registry) is first  # one set of metrics per registry: no duplicate names
    paced = replace(STATISTICS, dispatcher=replace(DISPATCHER, current_rate=100.0))
    a, b = FakeClient(paced), FakeClient(paced)
    first.attach(a)
    first.attach(b)
    first.attach(a)  # attaching twice counts once
    samples = scrape(registry)
    assert by(samples["fanout_outcomes_total"], "status")["succeeded"] == 40
    assert one(samples["fanout_throttles_total"]) == 18
    assert one(samples["fanout_in_flight"]) == 10
    assert one(samples["fanout_concurrency_limit"]) == 24
    assert one(samples["fanout_rate_limit_per_second"]) == 200.0
    # One of them unpaced: so is the total.
    b.snapshot = STATISTICS
    assert "fanout_rate_limit_per_second" not in scrape(registry)
    # b's block ends with more done: its final counts stay, its gauges go.
    b.snapshot = replace(
        STATISTICS, completed={"succeeded": 25}, dispatcher=replace(DISPATCHER, throttles=11)
    )
    first.detach(b)
    first.detach(b)  # detaching twice retires once
    b.snapshot = replace(STATISTICS, completed={"succeeded": 1000})  # no longer read
    samples = scrape(registry)
    assert by(samples["fanout_outcomes_total"], "status")["succeeded"] == 45
    assert one(samples["fanout_throttles_total"]) == 20
    assert one(samples["fanout_in_flight"]) == 5
    assert one(samples["fanout_rate_limit_per_second"]) == 100.0
    first.detach(a)
    samples = scrape(registry)
    assert by(samples["fanout_outcomes_total"], "status")["succeeded"] == 45  # 20 + 25, both retired
    assert one(samples["fanout_in_flight"]) == 0
    assert "fanout_rate_limit_per_second" not in samples
    # Another registry has metrics of its own.
    other = CollectorRegistry()
    assert metrics_for(other) is not first
    assert by(scrape(other)["fanout_outcomes_total"], "status")["succeeded"] == 0


def _submission(route: str, *, took: float, in_doubt: bool = False) -> Submission:
    return Submission(
        inference_id=f"{route}-{took}",
        id=None,
        route=route,  # type: ignore[arg-type]
        input_location=None,
        output_location=None,
        failure_location=None,
        attempts=1,
        submitted_at=1000.0,
        accepted_at=1000.0 + took,
        deadline=5000.0,
        in_doubt=in_doubt,
    )


def test_the_histograms_observe_accepted_requests_and_their_outcomes() -> None:
    registry = CollectorRegistry()
    observer = metrics_for(registry).observer
    observer.accepted(_submission("inline", took=0.02))
    observer.accepted(_submission("inline", took=0.3))
    observer.accepted(_submission("s3", took=4.0))
    observer.accepted(_submission("s3", took=9.0, in_doubt=True))  # no 202: not a time to accept
    outcomes: list[Outcome] = [
        Succeeded(inference_id="a", route="inline", submitted_at=1000.0, completed_at=1012.0),
        Failed(inference_id="b", route="s3", submitted_at=1000.0, completed_at=1700.0),
        Expired(inference_id="c", route="s3", submitted_at=1000.0, completed_at=4700.0),
        Rejected(reason="too big", route="inline", submitted_at=1000.0, completed_at=1001.0),
        Succeeded(inference_id="d", route=None, submitted_at=1000.0, completed_at=1001.0),
    ]
    for outcome in outcomes:
        observer.handed_over(outcome)
    samples = scrape(registry)
    assert by(samples["fanout_time_to_accept_seconds_count"], "route") == {"inline": 2, "s3": 1}
    assert by(samples["fanout_time_to_accept_seconds_sum"], "route") == pytest.approx(
        {"inline": 0.32, "s3": 4.0}
    )
    assert by(samples["fanout_time_to_outcome_seconds_count"], "route") == {"inline": 1, "s3": 2}
    assert by(samples["fanout_time_to_outcome_seconds_sum"], "route") == {"inline": 12.0, "s3": 4400.0}
    buckets = {
        float(dict(labels)["le"]): value
        for labels, value in samples["fanout_time_to_outcome_seconds_bucket"].items()
        if dict(labels)["route"] == "s3"
    }
    assert sorted(buckets) == sorted(TIME_BUCKETS)
    assert (
        buckets[600.0] == 0 and buckets[1200.0] == 1 and buckets[3600.0] == 1 and buckets[float("inf")] == 2
    )


async def _nothing() -> None:
    return None


class Recorder:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def sending(self, inference_id: str, deadline: float) -> None:
        await _nothing()
        self.log.append(f"{self.name}.sending")

    def unsent(self, inference_id: str) -> None:
        self.log.append(f"{self.name}.unsent")

    def accepted(self, submission: Submission) -> None:
        self.log.append(f"{self.name}.accepted")

    def handed_over(self, outcome: Outcome) -> None:
        self.log.append(f"{self.name}.handed_over")


@pytest.mark.anyio
async def test_the_callers_observer_and_the_metrics_hear_every_hook_in_turn() -> None:
    log: list[str] = []
    user, metrics = Recorder("user", log), Recorder("metrics", log)
    assert _observe_all(None, None) is None
    assert _observe_all(user, None) is user
    assert _observe_all(None, metrics) is metrics
    both = _observe_all(user, metrics)
    assert both is not None
    await both.sending("x", 1.0)
    both.unsent("x")
    both.accepted(_submission("inline", took=0.1))
    both.handed_over(Succeeded(inference_id="x"))
    assert log == [
        "user.sending",
        "metrics.sending",
        "user.unsent",
        "metrics.unsent",
        "user.accepted",
        "metrics.accepted",
        "user.handed_over",
        "metrics.handed_over",
    ]


def test_a_registry_that_is_not_one_or_that_has_fanouts_names_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="registry must be a prometheus_client CollectorRegistry") as caught:
        metrics_for("default")
    assert caught.value.field == "registry"
    registry = CollectorRegistry()
    Counter("fanout_outcomes", "someone else's", registry=registry)
    with pytest.raises(ConfigError, match="fanout_outcomes"):
        metrics_for(registry)
    assert default_registry() is prometheus_client.REGISTRY


def test_without_the_extra_asking_for_metrics_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # what an absent package looks like
    for ask in (lambda: metrics_for(object()), default_registry):
        with pytest.raises(ConfigError) as caught:
            ask()
        assert INSTALL_HINT in str(caught.value)
        assert INSTALL_HINT == "pip install 'fanout[metrics]'"


@pytest.mark.anyio
async def test_open_client_checks_the_registry_before_it_opens_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fanout import SqsTracking, open_client

    options: dict[str, Any] = {
        "endpoint_name": "fanout-demo",
        "tracking": SqsTracking(queue_url="https://sqs.us-east-1.amazonaws.com/123456789012/q"),
        "fetch": False,
    }
    with pytest.raises(ConfigError, match="registry must be"):
        async with open_client(**options, registry="default"):  # type: ignore[arg-type]
            pytest.fail("opened")
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigError, match=r"pip install 'fanout\[metrics\]'"):
        async with open_client(**options, registry=CollectorRegistry()):
            pytest.fail("opened")


def test_importing_fanout_does_not_import_prometheus_client() -> None:
    code = "import sys, fanout, fanout._client, fanout._metrics; print('prometheus_client' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
