"""``--check``: what a DescribeEndpoint answer means for a run (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from fanout._check import CheckReport, Finding, judge_endpoint
from fanout._config import HybridTracking, S3Tracking, SqsTracking, Tracking

SQS = SqsTracking(queue_url="https://sqs.us-east-1.amazonaws.com/123456789012/q")
HYBRID = HybridTracking(queue_url=SQS.queue_url)
SUCCESS = "arn:aws:sns:us-east-1:123456789012:ok"
ERROR = "arn:aws:sns:us-east-1:123456789012:errors"


def _description(
    status: str = "InService", *, topics: tuple[str | None, str | None] = (SUCCESS, ERROR)
) -> Any:
    notification = {
        key: value
        for key, value in (("SuccessTopic", topics[0]), ("ErrorTopic", topics[1]))
        if value is not None
    }
    output: dict[str, Any] = {"S3OutputPath": "s3://out/results"}
    if notification:
        output["NotificationConfig"] = notification
    return {"EndpointName": "ep", "EndpointStatus": status, "AsyncInferenceConfig": {"OutputConfig": output}}


def _by_subject(findings: list[Finding]) -> dict[str, tuple[str, str]]:
    return {finding.subject: (finding.status, finding.detail) for finding in findings}


def test_an_async_endpoint_in_service_with_both_topics_is_ok() -> None:
    found = _by_subject(judge_endpoint("ep", _description(), SQS))
    assert found == {
        "endpoint": ("ok", "ep: InService, async, outputs to s3://out/results"),
        "notifications": ("ok", f"success to {SUCCESS}, errors to {ERROR}"),
    }


def test_s3_tracking_needs_no_topics() -> None:
    found = _by_subject(judge_endpoint("ep", _description(topics=(None, None)), S3Tracking()))
    assert set(found) == {"endpoint"}


@pytest.mark.parametrize(
    ("status", "verdict", "fragment"),
    [
        ("Creating", "problem", "endpoint 'ep' is Creating, not InService: it would refuse every request"),
        ("Failed", "problem", "is Failed, not InService"),
        ("Updating", "warning", "is Updating, not InService: it takes requests meanwhile"),
    ],
)
def test_an_endpoint_not_in_service(status: str, verdict: str, fragment: str) -> None:
    status_found, detail = _by_subject(judge_endpoint("ep", _description(status), SQS))["endpoint"]
    assert status_found == verdict
    assert fragment in detail


def test_a_real_time_endpoint_is_a_problem() -> None:
    description = {"EndpointName": "ep", "EndpointStatus": "InService"}
    found = _by_subject(judge_endpoint("ep", description, SQS))
    assert found == {
        "endpoint": (
            "problem",
            "endpoint 'ep' has no AsyncInferenceConfig: it is a real-time endpoint, and refuses "
            "InvokeEndpointAsync",
        )
    }


@pytest.mark.parametrize(
    ("tracking", "topics", "fragment"),
    [
        (SQS, (None, None), "with --tracker sqs every request would expire; --tracker s3 polls S3 instead"),
        (HYBRID, (None, None), "with --tracker hybrid outcomes would be found only by polling S3"),
        (SQS, (SUCCESS, None), "no ErrorTopic: failures are not notified, and with --tracker sqs would be "
         "reported expired"),
        (HYBRID, (None, ERROR), "no SuccessTopic: successes are not notified, and with --tracker hybrid "
         "would be found only by polling S3"),
    ],
)  # fmt: skip
def test_missing_topics_are_a_warning_for_the_sqs_trackers(
    tracking: Tracking, topics: tuple[str | None, str | None], fragment: str
) -> None:
    status, detail = _by_subject(judge_endpoint("ep", _description(topics=topics), tracking))["notifications"]
    assert status == "warning"
    assert fragment in detail


def test_only_problems_fail_the_check() -> None:
    warned = CheckReport(findings=(Finding("a", "ok", ""), Finding("b", "warning", "")), input=None)
    unchecked = CheckReport(findings=(Finding("endpoint", "not checked", ""),), input=None)
    failed = CheckReport(findings=(Finding("a", "problem", ""), Finding("b", "problem", "")), input=None)
    assert (warned.ok, unchecked.ok, failed.ok) == (True, True, False)
    assert (failed.problems, warned.warnings) == (2, 1)
    assert failed.to_dict()["checks"][0] == {"subject": "a", "status": "problem", "detail": ""}


def test_only_check_runs_without_an_output(capsys: pytest.CaptureFixture[str]) -> None:
    from fanout._cli import main

    assert main(["run", "in.jsonl", "--endpoint", "ep"]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("usage: fanout run ")
    assert stderr.strip().endswith("fanout run: error: the following arguments are required: -o/--output")
