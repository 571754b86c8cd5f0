"""The emulator's configuration: defaults, strict loading, and clear messages for bad input."""

from __future__ import annotations

import hashlib
import json
import random
import re
import tomllib
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, strategies as st

from fanout import ConfigError
from fanout.testing import (
    ContainerModel,
    Distribution,
    EmulatorConfig,
    EndpointConfig,
    FaultConfig,
    ModelResult,
    NotificationFaults,
    QueueConfig,
    SubscriptionConfig,
    ThrottleConfig,
    TopicConfig,
    config_from_dict,
    default_config,
    default_model,
    faults_from_dict,
    load_config,
)
from fanout.testing._emu_config import config_to_data, model_error_reason
from fanout.testing._emu_toml import config_to_toml, dumps
from fanout.testing._faults import FaultInjector, NotificationFaultInjector, TokenBucket
from fanout.testing._server import with_model_url


def test_public_names_are_sorted_and_importable() -> None:
    import fanout.testing

    assert fanout.testing.__all__ == sorted(fanout.testing.__all__)
    assert all(hasattr(fanout.testing, name) for name in fanout.testing.__all__)


def test_default_config_declares_what_the_contract_names() -> None:
    config = default_config()
    (endpoint,) = config.endpoints
    assert endpoint.name == "fanout-demo"
    assert endpoint.s3_output_path == "s3://fanout-output/results"
    assert endpoint.s3_failure_path == "s3://fanout-output/failures"
    # AWS's default: IncludeInferenceResponseIn unset, results only at the output location
    assert endpoint.include_inference_response_in == ()
    assert endpoint.workers >= 64
    assert config.staging == "s3://fanout-staging/inputs"
    assert {"fanout-output", "fanout-staging"} <= set(config.buckets)
    assert [q.name for q in config.queues] == ["fanout-notifications"]
    topics = {t.name: t for t in config.topics}
    for name in (endpoint.success_topic, endpoint.error_topic):
        assert name is not None
        assert topics[name].subscriptions == (SubscriptionConfig("fanout-notifications", raw=False),)
    assert config.account_id == "123456789012"
    assert config.time_scale == 1.0


def _minimal(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "buckets": ["out"],
        "queues": ["q"],
        "topics": [{"name": "done", "subscriptions": [{"queue": "q", "raw": True}]}],
        "endpoints": [
            {
                "name": "ep",
                "s3_output_path": "s3://out/results",
                "success_topic": "done",
                "service_time": {"kind": "uniform", "low_ms": 1, "high_ms": 2},
            }
        ],
    }
    data.update(extra)
    return data


def test_a_dict_loads_into_dataclasses() -> None:
    config = config_from_dict(
        _minimal(
            seed=7,
            time_scale=0.01,
            faults={
                "throttle": {"rate": 5, "burst": 2, "per_endpoint": True},
                "error_rate": 0.1,
                "error_statuses": [503],
                "targets": ["sagemaker", "sqs.ReceiveMessage"],
                "latency": {"sqs": 3, "s3.GetObject": {"kind": "exponential", "mean_ms": 2}},
                "notifications": {"duplicate_rate": 0.1, "delay": {"kind": "constant", "ms": 5}},
            },
        )
    )
    assert config.seed == 7
    assert config.topics == (TopicConfig("done", (SubscriptionConfig("q", raw=True),)),)
    assert config.queues == (QueueConfig("q"),)
    assert config.endpoints[0].service_time == Distribution("uniform", low_ms=1, high_ms=2)
    assert config.endpoints[0].model is default_model
    assert config.faults.throttle == ThrottleConfig(rate=5, burst=2, per_endpoint=True)
    assert config.faults.error_statuses == (503,)
    assert config.faults.latency["sqs"] == Distribution("constant", ms=3)
    assert config.faults.latency["s3.GetObject"] == Distribution("exponential", mean_ms=2)
    assert config.faults.notifications.delay == Distribution("constant", ms=5)


def test_json_and_toml_files_load(tmp_path: Path) -> None:
    as_json = tmp_path / "emu.json"
    as_json.write_text(json.dumps(_minimal(seed=3)))
    as_toml = tmp_path / "emu.toml"
    as_toml.write_text(
        'seed = 3\nbuckets = ["out"]\nqueues = ["q"]\n'
        '[[topics]]\nname = "done"\nsubscriptions = [{queue = "q", raw = true}]\n'
        '[[endpoints]]\nname = "ep"\ns3_output_path = "s3://out/results"\nsuccess_topic = "done"\n'
        'service_time = {kind = "uniform", low_ms = 1, high_ms = 2}\n'
    )
    # a file applies on top of the defaults
    on_defaults = config_from_dict(_minimal(seed=3), base=default_config())
    assert load_config(as_json) == load_config(as_toml) == on_defaults
    # ... unless it says otherwise
    as_json.write_text(json.dumps(_minimal(seed=3, extends="none")))
    as_toml.write_text('extends = "none"\n' + as_toml.read_text())
    assert load_config(as_json) == load_config(as_toml) == config_from_dict(_minimal(seed=3))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"faults": {"notifications": {"loss_rate": -0.1}}},
            "faults.notifications.loss_rate: must be between 0 and 1, got -0.1",
        ),
        ({"faults": {"error_rate": 1.5}}, "faults.error_rate: must be between 0 and 1, got 1.5"),
        (
            {"faults": {"notifications": {"early_rate": 1.2}}},
            "faults.notifications.early_rate: must be between 0 and 1, got 1.2",
        ),
        (
            {"faults": {"notifications": {"early_rate": "half"}}},
            "faults.notifications.early_rate: must be between 0 and 1, got 'half'",
        ),
        (
            {"faults": {"drop_response_rate": -0.5}},
            "faults.drop_response_rate: must be between 0 and 1, got -0.5",
        ),
        (
            {"faults": {"drop_response_rate": True}},
            "faults.drop_response_rate: must be between 0 and 1, got True",
        ),
        ({"faults": {"throttle": {"rate": -5}}}, "faults.throttle.rate: must be a number > 0, got -5"),
        ({"faults": {"throttle": {"rate": 5, "burst": 0.5}}}, "faults.throttle.burst: must be a number >= 1"),
        ({"faults": {"error_statuses": [502]}}, "faults.error_statuses: must be a non-empty list of 500"),
        ({"faults": {"targets": ["dynamodb"]}}, "faults.targets: must be a service"),
        ({"faults": {"latency": {"sqs": -3}}}, "faults.latency.sqs.ms: must be a number >= 0, got -3"),
        ({"faults": {"bogus": 1}}, "faults.bogus: unknown key (allowed: throttle, error_rate"),
        ({"colour": "red"}, "colour: unknown key (allowed: region,"),
        ({"colour": "red"}, "staging, faults, extends)"),
        ({"extends": "defaults"}, "extends: must be 'default' (apply on top of the defaults) or 'none'"),
        (
            {"endpoints": [{"name": "ep", "s3_output_path": "s3://out/r", "model": "ftp://host"}]},
            "endpoints[0].model: must be a model server URL such as http://127.0.0.1:8080, got 'ftp://host'",
        ),
        (
            {"endpoints": [{"name": "ep", "s3_output_path": "s3://out/r", "model": "http://"}]},
            "endpoints[0].model: must be a model server URL such as http://127.0.0.1:8080, got 'http://'",
        ),
        (
            {
                "endpoints": [
                    {"name": "ep", "s3_output_path": "s3://out/r", "model": {"url": "http://h:1", "x": 1}}
                ]
            },
            "endpoints[0].model.x: unknown key (allowed: url, startup_timeout)",
        ),
        (
            {"endpoints": [{"name": "ep", "s3_output_path": "s3://out/r", "model": {"startup_timeout": 5}}]},
            "endpoints[0].model.url: is required",
        ),
        (
            {
                "endpoints": [
                    {
                        "name": "ep",
                        "s3_output_path": "s3://out/r",
                        "model": {"url": "http://h:1", "startup_timeout": 0},
                    }
                ]
            },
            "endpoints[0].model.startup_timeout: must be a number > 0, got 0",
        ),
        ({"time_scale": 0}, "time_scale: must be a number > 0, got 0"),
        ({"region": "mars"}, "region: must be an AWS region"),
        (
            {"endpoints": [{"name": "ep", "s3_output_path": "s3://out/r", "instances": 2}]},
            "endpoints[0].instances",
        ),
        (
            {"endpoints": [{"name": "ep", "s3_output_path": "s3://out/r", "instance_count": 0}]},
            "endpoints[0].instance_count: must be an integer between 1 and 1000, got 0",
        ),
        (
            {"endpoints": [{"name": "-bad", "s3_output_path": "s3://out/r"}]},
            "endpoints[0].name: must be an endpoint name",
        ),
        (
            {"endpoints": [{"name": "ep", "s3_output_path": "s3://missing/r"}]},
            "endpoints[0].s3_output_path: names an undeclared bucket (declared: out), got 'missing'",
        ),
        (
            {"endpoints": [{"name": "ep", "s3_output_path": "s3://out/r", "error_topic": "nope"}]},
            "endpoints[0].error_topic: names an undeclared topic",
        ),
        (
            {"endpoints": [{"name": "ep", "s3_output_path": "s3://out/r", "model": "no_such_module:f"}]},
            "endpoints[0].model: cannot import 'no_such_module:f'",
        ),
        (
            {
                "endpoints": [
                    {"name": "ep", "s3_output_path": "s3://out/r", "service_time": {"kind": "gamma"}}
                ]
            },
            "endpoints[0].service_time.kind: must be one of constant, uniform",
        ),
        (
            {
                "endpoints": [
                    {
                        "name": "ep",
                        "s3_output_path": "s3://out/r",
                        "service_time": {"kind": "uniform", "ms": 3},
                    }
                ]
            },
            "endpoints[0].service_time.ms: unknown key for a uniform distribution "
            "(allowed: kind, low_ms, high_ms)",
        ),
        (
            {"topics": [{"name": "t", "subscriptions": [{"queue": "nope"}]}]},
            "topics[0].subscriptions[0].queue: names an undeclared queue (declared: none)",
        ),
        ({"queues": ["q", "q"]}, "queues[1].name: is declared twice"),
        ({"staging": "http://x"}, "staging: must be an S3 URI"),
        ({"buckets": "out"}, "buckets: must be a list"),
    ],
)
def test_bad_config_names_the_key_path_and_value(data: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"buckets": ["out"]}
    base.update(data)
    with pytest.raises(ConfigError) as info:
        config_from_dict(base)
    assert message in str(info.value)


def test_bad_files_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read emulator config"):
        load_config(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="is not valid json"):
        load_config(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    with pytest.raises(ConfigError, match="must hold an object"):
        load_config(listed)


def test_dataclasses_validate_when_built_directly() -> None:
    with pytest.raises(ConfigError, match=r"loss_rate: must be between 0 and 1, got -0\.1"):
        NotificationFaults(loss_rate=-0.1)
    with pytest.raises(ConfigError, match="drop_connection_rate"):
        FaultConfig(drop_connection_rate=2)
    with pytest.raises(ConfigError, match=r"drop_response_rate: must be between 0 and 1, got 2"):
        FaultConfig(drop_response_rate=2)
    with pytest.raises(ConfigError, match=r"early_rate: must be between 0 and 1, got nan"):
        NotificationFaults(early_rate=float("nan"))
    with pytest.raises(ConfigError, match="high_ms: must be >= low_ms"):
        Distribution("uniform", low_ms=5, high_ms=1)
    with pytest.raises(ConfigError, match="include_inference_response_in"):
        EndpointConfig(name="ep", s3_output_path="s3://out/r", include_inference_response_in=("BOTH",))
    with pytest.raises(ConfigError, match="s3_output_path: must be an S3 URI"):
        EndpointConfig(name="ep", s3_output_path="out/r")
    with pytest.raises(ConfigError, match="account_id: must be 12 digits"):
        EmulatorConfig(account_id="42")


def test_faults_from_dict_matches_the_put_endpoint_shape() -> None:
    faults = faults_from_dict({"drop_connection_rate": 0.5, "notifications": {"reorder_window_ms": 10}})
    assert faults.drop_connection_rate == 0.5
    assert faults.notifications.active
    assert not FaultConfig().notifications.active


def test_the_new_knobs_load_from_dicts_and_files_and_are_off_by_default(tmp_path: Path) -> None:
    assert FaultConfig().drop_response_rate == 0.0
    assert FaultConfig().notifications.early_rate == 0.0
    faults = faults_from_dict({"drop_response_rate": 0.25, "notifications": {"early_rate": 0.5}})
    assert faults.drop_response_rate == 0.25
    assert faults.notifications.early_rate == 0.5
    # early_rate acts on when the 202 is written, not on each delivery
    assert not faults.notifications.active
    as_toml = tmp_path / "emu.toml"
    as_toml.write_text(
        'buckets = ["out"]\n[faults]\ndrop_response_rate = 0.1\n'
        "drop_connection_rate = 0.2\n[faults.notifications]\nearly_rate = 0.3\n"
    )
    loaded = load_config(as_toml).faults
    assert (loaded.drop_response_rate, loaded.drop_connection_rate) == (0.1, 0.2)
    assert loaded.notifications.early_rate == 0.3


def test_model_import_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_emu_model.py").write_text(
        "from fanout.testing import ModelResult\n"
        "async def echo(body, content_type, custom_attributes):\n"
        "    return ModelResult.ok(body, content_type or 'application/octet-stream')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = config_from_dict(
        _minimal() | {"endpoints": [{**_minimal()["endpoints"][0], "model": "my_emu_model:echo"}]}
    )
    result = anyio.run(config.endpoints[0].model, b"abc", "text/plain", None)
    assert result == ModelResult.ok(b"abc", "text/plain")


@pytest.mark.parametrize(
    "dist",
    [
        Distribution("constant", ms=3),
        Distribution("uniform", low_ms=1, high_ms=4),
        Distribution("normal", mean_ms=2, stddev_ms=5),
        Distribution("lognormal", median_ms=2, sigma=1),
        Distribution("exponential", mean_ms=2),
    ],
)
@given(seed=st.integers(0, 2**32))
def test_every_distribution_samples_non_negative_seconds(dist: Distribution, seed: int) -> None:
    rng = random.Random(seed)
    samples = [dist.sample(rng) for _ in range(20)]
    assert all(s >= 0 for s in samples)
    assert all(s <= 1.0 for s in samples) or dist.kind in ("lognormal", "exponential", "normal")


def test_default_model_hashes_or_fails() -> None:
    body = b'{"x": 1}'
    result = anyio.run(default_model, body, "application/json", None)
    assert not result.failed
    assert json.loads(result.body) == {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}
    failed = anyio.run(default_model, b'{"fail": true, "reason": "row 7"}', None, None)
    assert failed.failed
    assert failed.failure_reason is not None and "row 7" in failed.failure_reason
    assert failed.body == failed.failure_reason.encode()
    # "fail" must be exactly true, and only in an object
    assert not anyio.run(default_model, b'{"fail": "yes"}', None, None).failed
    assert not anyio.run(default_model, b"[true]", None, None).failed


def test_token_bucket_allows_burst_then_rate() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.1)  # one token refilled after 1/rate seconds
    assert not bucket.take(0.1)


def test_request_faults_are_reproducible_with_the_seed() -> None:
    faults = FaultConfig(error_rate=0.3, drop_connection_rate=0.1)

    def decisions(seed: int) -> list[tuple[str, int]]:
        injector = FaultInjector(faults, seed=seed)
        return [injector.decide("sagemaker", "InvokeEndpointAsync", "ep") for _ in range(200)]

    assert decisions(1) == decisions(1)
    assert decisions(1) != decisions(2)
    outcomes = {action for action, _ in decisions(1)}
    assert outcomes == {"pass", "error", "drop"}
    injector = FaultInjector(faults, seed=1)
    assert injector.decide("sqs", "ReceiveMessage", "sqs") == ("pass", 0)  # not a target


def test_dropped_connections_and_dropped_responses_are_drawn_together() -> None:
    injector = FaultInjector(FaultConfig(drop_connection_rate=0.3, drop_response_rate=0.5), seed=3)
    actions = [injector.decide("sagemaker", "InvokeEndpointAsync", "ep")[0] for _ in range(400)]
    assert set(actions) == {"pass", "drop", "drop_response"}
    stats = injector.statistics()
    assert stats["dropped_connections"] == actions.count("drop")
    assert stats["dropped_responses"] == actions.count("drop_response")
    # turning the new knob on leaves the draws of a config without it as they were
    plain = FaultInjector(FaultConfig(error_rate=0.3, drop_connection_rate=0.1), seed=1)
    with_zero = FaultInjector(
        FaultConfig(error_rate=0.3, drop_connection_rate=0.1, drop_response_rate=0.0), seed=1
    )
    for _ in range(100):
        assert plain.decide("sagemaker", "X", "ep") == with_zero.decide("sagemaker", "X", "ep")


def test_notification_faults_lose_malform_and_duplicate_without_a_loop() -> None:
    delivered: list[str] = []
    faults = NotificationFaults(loss_rate=0.2, malformed_rate=0.2, duplicate_rate=0.2)
    injector = NotificationFaultInjector(faults, lambda q, body, attrs: delivered.append(body), seed=5)
    for i in range(500):
        injector("q", json.dumps({"n": i}), None)
    stats = injector.statistics()
    assert stats["lost"] > 0 and stats["malformed"] > 0 and stats["duplicated"] > 0
    assert stats["delivered"] == len(delivered) == 500 - stats["lost"] + stats["duplicated"]
    unparseable = 0
    for body in delivered:
        try:
            json.loads(body)
        except ValueError:
            unparseable += 1
    assert unparseable >= stats["malformed"]


# ---------------------------------------------------------------------------------------------------
# a file on top of the defaults


def test_a_faults_only_file_applies_on_top_of_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    path.write_text(json.dumps({"faults": {"error_rate": 0.1, "notifications": {"early_rate": 0.5}}}))
    config = load_config(path)
    assert config.endpoints == default_config().endpoints
    assert config.buckets == default_config().buckets
    assert config.faults == FaultConfig(error_rate=0.1, notifications=NotificationFaults(early_rate=0.5))
    # an empty file is the default configuration
    path.write_text("{}")
    assert load_config(path) == default_config()


def test_a_file_that_adds_an_endpoint_keeps_the_defaults_and_comes_first(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        '[[endpoints]]\nname = "my-model"\ns3_output_path = "s3://fanout-output/my-model"\n'
        'error_topic = "fanout-errors"\nmodel = "http://127.0.0.1:8080"\n'
    )
    config = load_config(path)
    assert [e.name for e in config.endpoints] == ["my-model", "fanout-demo"]  # the exports name the first
    mine = config.endpoints[0]
    assert mine.model == ContainerModel("http://127.0.0.1:8080")
    assert mine.success_topic is None and mine.instance_count == 1  # the dataclass's defaults
    assert config.endpoints[1] == default_config().endpoints[0]
    assert config.staging == default_config().staging


def test_named_entries_merge_key_by_key_and_lists_keep_the_files_order() -> None:
    config = load_config(
        {
            "seed": 5,
            "buckets": ["mine", "fanout-output"],
            "queues": ["fanout-notifications", {"name": "extra", "attributes": {"VisibilityTimeout": "5"}}],
            "topics": [{"name": "fanout-errors", "subscriptions": [{"queue": "extra", "raw": True}]}],
            "endpoints": [{"name": "fanout-demo", "instance_count": 1, "model": "http://127.0.0.1:9000/"}],
        }
    )
    default = default_config()
    assert config.seed == 5
    assert config.buckets == ("mine", "fanout-output", "fanout-staging")
    assert config.queues == (
        QueueConfig("fanout-notifications"),
        QueueConfig("extra", {"VisibilityTimeout": "5"}),
    )
    topics = {t.name: t for t in config.topics}
    assert [t.name for t in config.topics] == ["fanout-errors", "fanout-success"]
    assert topics["fanout-errors"].subscriptions == (SubscriptionConfig("extra", raw=True),)  # replaced
    assert topics["fanout-success"] == next(t for t in default.topics if t.name == "fanout-success")
    (endpoint,) = config.endpoints
    assert endpoint.instance_count == 1
    assert endpoint.model == ContainerModel("http://127.0.0.1:9000")
    # every key the file did not give keeps the default's value
    assert endpoint.max_concurrent_invocations_per_instance == 64
    assert endpoint.s3_failure_path == "s3://fanout-output/failures"
    assert endpoint.service_time == default.endpoints[0].service_time


def test_errors_in_a_partial_file_name_the_files_own_key_paths() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"endpoints": [{"name": "x", "s3_output_path": "s3://nope/r"}]})
    assert str(info.value) == (
        "endpoints[0].s3_output_path: names an undeclared bucket (declared: fanout-output, fanout-staging), "
        "got 'nope'"
    )
    with pytest.raises(ConfigError, match=r"^endpoints\[0\]\.instances: unknown key"):
        load_config({"endpoints": [{"name": "fanout-demo", "instances": 2}]})
    with pytest.raises(ConfigError, match=r"^endpoints\[1\]\.name: is declared twice"):
        load_config({"endpoints": [{"name": "fanout-demo"}, {"name": "fanout-demo"}]})
    with pytest.raises(ConfigError, match=r"^faults\.bogus: unknown key"):
        load_config({"faults": {"bogus": 1}})
    with pytest.raises(ConfigError, match=r"^queues: must be a list"):
        load_config({"queues": "fanout-notifications"})


def test_extends_none_starts_from_empty_and_config_from_dict_stays_exact() -> None:
    assert load_config({"extends": "none"}) == EmulatorConfig()
    assert config_from_dict({}) == EmulatorConfig()  # as before: the data is the whole configuration
    assert config_from_dict({"extends": "default"}) == default_config()
    base = EmulatorConfig(buckets=("bbb",))
    assert config_from_dict({"buckets": ["aaa"]}, base=base).buckets == ("aaa", "bbb")


# ---------------------------------------------------------------------------------------------------
# model servers in the config


def test_a_model_server_url_or_table_loads_as_a_container_model() -> None:
    endpoint = {"name": "ep", "s3_output_path": "s3://out/r"}
    config = config_from_dict(
        {
            "buckets": ["out"],
            "endpoints": [
                {**endpoint, "model": "https://models.internal:8443/v1/"},
                {
                    **endpoint,
                    "name": "slow",
                    "model": {"url": "http://127.0.0.1:8080", "startup_timeout": 600},
                },
            ],
        }
    )
    assert config.endpoints[0].model == ContainerModel("https://models.internal:8443/v1")
    assert config.endpoints[1].model == ContainerModel("http://127.0.0.1:8080", startup_timeout=600)
    assert ContainerModel("http://h:1") != ContainerModel("http://h:1", startup_timeout=5)
    assert len({ContainerModel("http://h:1/"), ContainerModel("http://h:1")}) == 1


def test_with_model_url_replaces_the_default_model_only() -> None:
    config = with_model_url(default_config(), "http://127.0.0.1:8080", 5)
    (endpoint,) = config.endpoints
    assert endpoint.model == ContainerModel("http://127.0.0.1:8080", startup_timeout=5)
    assert endpoint.service_time == Distribution()  # the server's own time is the service time
    assert with_model_url(default_config(), None) == default_config()
    with pytest.raises(ConfigError, match=r"^--model-url: must be a model server URL"):
        with_model_url(default_config(), "localhost:8080")
    with pytest.raises(ConfigError, match=r"^--model-startup-timeout: must be a number > 0, got -1"):
        with_model_url(default_config(), "http://127.0.0.1:8080", -1)
    with pytest.raises(ConfigError, match=r"^--model-url: no endpoint uses the default model"):
        with_model_url(config, "http://127.0.0.1:9000")
    # the timeout alone applies to the model servers the config names
    longer = with_model_url(config, None, 90)
    assert longer.endpoints[0].model == ContainerModel("http://127.0.0.1:8080", startup_timeout=90)


def test_the_failure_wording_is_sagemakers() -> None:
    assert model_error_reason(500, 'out of "memory"') == (
        'ClientError: Received server error (500) from model with message "out of \\"memory\\"". '
        "See the SageMaker Endpoint logs in your account for more information."
    )
    assert model_error_reason(404, "x").startswith("ClientError: Received client error (404) from model")


# ---------------------------------------------------------------------------------------------------
# --print-config: the TOML writer


def test_the_default_config_round_trips_through_toml(tmp_path: Path) -> None:
    text = config_to_toml(default_config())
    assert text.startswith("# The fanout emulator's configuration")
    assert 'extends = "none"' in text
    assert config_from_dict(tomllib.loads(text)) == default_config()
    path = tmp_path / "printed.toml"
    path.write_text(text)
    assert load_config(path) == default_config()
    # unset values are said, not dropped silently
    assert "# seed is not set: a random seed at each start" in text
    assert "# throttle is not set: no throttling" in text


def test_every_key_round_trips_through_toml() -> None:
    config = config_from_dict(
        {
            "region": "eu-west-1",
            "account_id": "000000000042",
            "seed": 9,
            "time_scale": 0.01,
            "buckets": ["out", "inputs"],
            "queues": [
                {"name": "q", "attributes": {"VisibilityTimeout": "30", "Policy": '{"a": "\\n"}'}},
                "r",
            ],
            "topics": [
                {"name": "done", "subscriptions": [{"queue": "q", "raw": True}, "r"]},
                {"name": "silent"},
            ],
            "endpoints": [
                {
                    "name": "ep",
                    "s3_output_path": "s3://out/results",
                    "s3_failure_path": "s3://out/failures",
                    "success_topic": "done",
                    "error_topic": "done",
                    "include_inference_response_in": [
                        "SUCCESS_NOTIFICATION_TOPIC",
                        "ERROR_NOTIFICATION_TOPIC",
                    ],
                    "instance_count": 3,
                    "max_concurrent_invocations_per_instance": 7,
                    "service_time": {"kind": "lognormal", "median_ms": 20, "sigma": 0.5},
                    "model": {"url": "http://127.0.0.1:8080", "startup_timeout": 120},
                },
                {
                    "name": "plain",
                    "s3_output_path": "s3://out/plain",
                    "service_time": {"kind": "normal", "mean_ms": 3, "stddev_ms": 1},
                    "model": "fanout.testing._emu_config:default_model",
                },
                {"name": "url", "s3_output_path": "s3://out/u", "model": "http://127.0.0.1:9"},
            ],
            "staging": "s3://inputs/staged",
            "faults": {
                "throttle": {"rate": 5, "burst": 2, "per_endpoint": True},
                "error_rate": 0.1,
                "error_statuses": [503],
                "drop_connection_rate": 0.01,
                "drop_response_rate": 0.02,
                "targets": ["sagemaker", "sqs.ReceiveMessage"],
                "latency": {"sqs": 3, "s3.GetObject": {"kind": "exponential", "mean_ms": 2}},
                "notifications": {
                    "duplicate_rate": 0.1,
                    "loss_rate": 0.2,
                    "malformed_rate": 0.3,
                    "delay": {"kind": "uniform", "low_ms": 1, "high_ms": 9},
                    "reorder_window_ms": 4,
                    "early_rate": 0.5,
                },
            },
        }
    )
    text = config_to_toml(config)
    assert config_from_dict(tomllib.loads(text)) == config
    assert load_config(tomllib.loads(text)) == config  # extends = "none": the defaults stay out
    assert '"s3.GetObject" = {kind = "exponential", mean_ms = 2}' in text  # a dotted key is quoted


def test_a_model_without_a_name_cannot_be_printed() -> None:
    async def closure(body: bytes, content_type: str | None, custom_attributes: str | None) -> ModelResult:
        return ModelResult.ok(body)

    config = EmulatorConfig(
        buckets=("out",), endpoints=(EndpointConfig(name="ep", s3_output_path="s3://out/r", model=closure),)
    )
    with pytest.raises(ConfigError, match=r"^endpoints\[0\]\.model: has no name a file can hold"):
        config_to_toml(config)
    assert config_to_data(config, named_models=False)["endpoints"][0]["model"] is closure


_SCALARS = st.text() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.booleans()
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(data=st.dictionaries(st.text(max_size=8), _VALUES, max_size=6))
def test_dumps_writes_toml_that_loads_back(data: dict[str, Any]) -> None:
    assert tomllib.loads(dumps(data)) == data


def test_dumps_refuses_what_toml_cannot_hold() -> None:
    with pytest.raises(TypeError, match="TOML cannot hold bytes"):
        dumps({"a": b"x"})
    assert dumps({"a": None, "b": 1}) == "# a is not set\nb = 1\n"


# ---------------------------------------------------------------------------------------------------
# docs/emulator.md


DOC = Path(__file__).resolve().parents[2] / "docs" / "emulator.md"


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"^```{kind}\n(.*?)^```$", DOC.read_text(encoding="utf-8"), flags=re.M | re.S)


def test_the_docs_show_the_default_config_as_print_config_prints_it() -> None:
    assert config_to_toml(default_config()) in _blocks("toml")


def test_every_config_example_in_the_docs_loads(tmp_path: Path) -> None:
    examples = [("toml", text) for text in _blocks("toml")] + [("json", text) for text in _blocks("json")]
    assert len(examples) >= 5
    loaded: dict[str, list[EmulatorConfig]] = {}
    for index, (kind, text) in enumerate(examples):
        path = tmp_path / f"example-{index}.{kind}"
        path.write_text(text)
        # raises ConfigError, with the key path, for a wrong example
        loaded.setdefault("small" if "scorer" in text else "other", []).append(load_config(path))
    small_toml, small_json = loaded["small"]  # the one example written both ways
    assert small_toml == small_json
