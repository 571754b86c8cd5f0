from __future__ import annotations

import math

import pytest
from hypothesis import given, strategies as st

from fanout import ConfigError, HybridTracking, Limits, RetryPolicy, S3Tracking, SqsTracking, Staging
from fanout._config import inference_deadline, parse_s3_uri


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_in_flight": True}, "max_in_flight"),
        ({"max_pending": -5}, "max_pending"),
        ({"max_pending": 1.5}, "max_pending"),
        ({"max_per_second": 0}, "max_per_second"),
        ({"max_per_second": math.inf}, "max_per_second"),
        ({"max_per_second": math.nan}, "max_per_second"),
    ],
)
def test_limits_reject_bad_values_and_name_them(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        Limits(**kwargs)  # type: ignore[arg-type]


def test_limits_defaults_are_valid() -> None:
    limits = Limits()
    assert limits.max_in_flight == 64
    assert limits.max_per_second is None


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"attempts": 0}, "attempts"),
        ({"timeout": -1}, "timeout"),
        ({"wait_initial": 0}, "wait_initial"),
        ({"wait_initial": 5.0, "wait_max": 1.0}, "wait_max"),
    ],
)
def test_retry_policy_rejects_bad_values(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "uri", ["", "s3:/bucket", "https://bucket/key", "s3://", "s3://UPPER/key", "s3://a/k"]
)
def test_parse_s3_uri_rejects_non_s3_uris_with_the_value(uri: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_s3_uri(uri, what="staging location")
    assert "staging location" in str(info.value)


def test_parse_s3_uri_and_join() -> None:
    location = parse_s3_uri("s3://fanout-staging/inputs/")
    assert (location.bucket, location.key) == ("fanout-staging", "inputs/")
    assert str(location.join("abc")) == "s3://fanout-staging/inputs/abc"
    assert str(parse_s3_uri("s3://fanout-staging").join("abc")) == "s3://fanout-staging/abc"


def test_staging_validates_location_and_owner() -> None:
    assert Staging(location="s3://fanout-staging/inputs").s3.bucket == "fanout-staging"
    with pytest.raises(ConfigError, match="staging must look like s3:"):
        Staging(location="/tmp/inputs")
    with pytest.raises(ConfigError, match="expected_bucket_owner"):
        Staging(location="s3://fanout-staging/inputs", expected_bucket_owner="me")


def test_tracking_configs_validate() -> None:
    with pytest.raises(ConfigError, match="queue_url"):
        SqsTracking(queue_url="fanout-notifications")
    with pytest.raises(ConfigError, match="wait_time_seconds"):
        SqsTracking(queue_url="http://127.0.0.1/1/q", wait_time_seconds=21)
    with pytest.raises(ConfigError, match="mode"):
        S3Tracking(mode="scan")  # type: ignore[arg-type]
    hybrid = HybridTracking(queue_url="http://127.0.0.1/1/q")
    assert hybrid.sqs is not None and hybrid.sqs.queue_url == "http://127.0.0.1/1/q"
    assert hybrid.s3 is not None


@given(
    accepted_at=st.floats(min_value=0, max_value=4e9),
    ttl=st.none() | st.integers(60, 21_600),
    timeout=st.none() | st.integers(1, 3_600),
    grace=st.floats(min_value=0, max_value=3_600),
)
def test_deadline_covers_queue_time_and_run_time(
    accepted_at: float, ttl: int | None, timeout: int | None, grace: float
) -> None:
    deadline = inference_deadline(
        accepted_at, request_ttl_seconds=ttl, invocation_timeout_seconds=timeout, grace_period=grace
    )
    expected = accepted_at + (21_600 if ttl is None else ttl) + (900 if timeout is None else timeout) + grace
    assert deadline == pytest.approx(expected)
    assert deadline >= accepted_at + 61
