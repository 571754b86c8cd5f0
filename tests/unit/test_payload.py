"""Routing and local validation: everything the service would reject is caught before a call."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from fanout._exceptions import ConfigError
from fanout._models import MAX_INLINE_BODY_BYTES, InferenceRequest, encode_json
from fanout._payload import (
    Invalid,
    choose_route,
    invoke_arguments,
    validate_endpoint_name,
    validate_inference_id,
    validate_request,
)


def reason(request: InferenceRequest) -> str:
    invalid = validate_request(request)
    assert invalid is not None, request
    return invalid.reason


def test_the_routing_boundary_under_auto() -> None:
    assert choose_route("auto", 128_000, staging=True) == "inline"
    assert choose_route("auto", 128_001, staging=True) == "s3"
    assert choose_route("auto", 1, staging=False) == "inline"


@given(st.integers(min_value=1, max_value=10 * MAX_INLINE_BODY_BYTES))
def test_auto_routes_by_size(size: int) -> None:
    expected = "inline" if size <= MAX_INLINE_BODY_BYTES else "s3"
    assert choose_route("auto", size, staging=True) == expected
    assert choose_route("s3", size, staging=True) == "s3"


def test_oversized_inline_names_the_size() -> None:
    route = choose_route("inline", 128_001, staging=True)
    assert isinstance(route, Invalid)
    assert "128,001 bytes" in route.reason and "128,000" in route.reason


def test_oversized_without_staging_is_invalid() -> None:
    route = choose_route("auto", 500_000, staging=False)
    assert isinstance(route, Invalid) and "no S3 staging location" in route.reason


def test_empty_inline_is_invalid() -> None:
    assert isinstance(choose_route("auto", 0, staging=False), Invalid)


@given(st.text(min_size=1, max_size=200_000 // 4))
def test_non_ascii_is_counted_in_bytes(text: str) -> None:
    body = encode_json(text)
    route = choose_route("auto", len(body), staging=True)
    assert route == ("inline" if len(body) <= MAX_INLINE_BODY_BYTES else "s3")


def test_multibyte_characters_push_a_payload_over_the_limit() -> None:
    body = encode_json("é" * 64_000)  # 64,000 characters, 128,002 bytes with the quotes
    assert len(body) == 128_002
    assert choose_route("auto", len(body), staging=True) == "s3"
    assert isinstance(choose_route("inline", len(body), staging=True), Invalid)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"body": b"x", "input_location": "s3://b/k"},
        {"body": b"x", "body_path": "/tmp/x"},
        {"body_path": "/tmp/x", "input_location": "s3://b/k"},
    ],
)
def test_exactly_one_payload(kwargs: dict[str, object]) -> None:
    assert "exactly one of body, body_path or input_location" in reason(InferenceRequest(**kwargs))  # type: ignore[arg-type]


def test_a_valid_request_passes() -> None:
    request = InferenceRequest(
        body=b"{}",
        inference_id="abc-123 x",
        content_type="application/json",
        accept="application/json",
        custom_attributes="trace=1",
        request_ttl_seconds=60,
        invocation_timeout_seconds=3600,
        s3_output_path_extension="a/b_c",
        filename="out.json",
    )
    assert validate_request(request) is None
    assert validate_request(InferenceRequest(input_location="s3://bucket/key.json")) is None
    assert validate_request(InferenceRequest(input_location="https://bucket.s3.amazonaws.com/k")) is None


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("request_ttl_seconds", 59, "between 60 and 21600"),
        ("request_ttl_seconds", 21_601, "between 60 and 21600"),
        ("request_ttl_seconds", True, "integer"),
        ("invocation_timeout_seconds", 0, "between 1 and 3600"),
        ("invocation_timeout_seconds", 3_601, "between 1 and 3600"),
        ("custom_attributes", "a" * 1025, "limit is 1024"),
        ("custom_attributes", "café", "ASCII"),
        ("custom_attributes", "a\nb", "control"),
        ("content_type", "x" * 1025, "limit is 1024"),
        ("content_type", "tëxt/plain", "ASCII"),
        ("accept", "x" * 1025, "limit is 1024"),
        ("filename", "a" * 33, "filename"),
        ("filename", "a.b.c", "filename"),
        ("filename", ".hidden", "filename"),
        ("filename", "", "filename"),
        ("s3_output_path_extension", "s3:foo", "s3_output_path_extension"),
        ("s3_output_path_extension", "https:foo", "s3_output_path_extension"),
        ("s3_output_path_extension", "a b", "s3_output_path_extension"),
        ("s3_output_path_extension", "a" * 513, "s3_output_path_extension"),
        ("inference_id", "", "1-64"),
        ("inference_id", "x" * 65, "1-64"),
        ("inference_id", " leading", "printable"),
        ("inference_id", "tab\there", "printable"),
        ("inference_id", "ünïcode", "printable"),
    ],
)
def test_each_header_rule(field: str, value: object, fragment: str) -> None:
    assert fragment in reason(InferenceRequest(body=b"x", **{field: value}))  # type: ignore[arg-type]


def test_boundaries_that_pass() -> None:
    for kwargs in (
        {"request_ttl_seconds": 21_600},
        {"invocation_timeout_seconds": 1},
        {"custom_attributes": "a" * 1024},
        {"content_type": "x" * 1024},
        {"filename": "a" * 32},
        {"s3_output_path_extension": "a" * 512},
        {"inference_id": "x" * 64},
    ):
        assert validate_request(InferenceRequest(body=b"x", **kwargs)) is None, kwargs


@pytest.mark.parametrize("location", ["ftp://b/k", "s3:/b/k", "b/k", "s3://", "s3://" + "b" * 1025])
def test_input_location_pattern(location: str) -> None:
    assert "input_location" in reason(InferenceRequest(input_location=location))


def test_all_problems_are_named_together() -> None:
    text = reason(InferenceRequest(body=b"x", request_ttl_seconds=1, filename="a.b.c"))
    assert "request_ttl_seconds" in text and "filename" in text


def test_body_must_be_bytes() -> None:
    assert "body must be bytes" in reason(InferenceRequest(body="text"))  # type: ignore[arg-type]


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64))
def test_printable_inference_ids_pass(inference_id: str) -> None:
    assert validate_inference_id(inference_id) is None


@pytest.mark.parametrize("name", ["a", "my-endpoint", "a--b", "A1", "x" * 63])
def test_good_endpoint_names(name: str) -> None:
    validate_endpoint_name(name)


@pytest.mark.parametrize("name", ["", "-a", "a-", "a_b", "a.b", "x" * 64, "ä"])
def test_bad_endpoint_names(name: str) -> None:
    with pytest.raises(ConfigError, match="endpoint_name"):
        validate_endpoint_name(name)


def test_invoke_arguments_map_to_aws_members() -> None:
    request = InferenceRequest(
        body=b"x",
        accept="text/csv",
        custom_attributes="c",
        request_ttl_seconds=60,
        invocation_timeout_seconds=5,
        s3_output_path_extension="ext",
        filename="f.out",
    )
    assert invoke_arguments("ep", request, inference_id="iid", body=b"x") == {
        "EndpointName": "ep",
        "InferenceId": "iid",
        "Body": b"x",
        "ContentType": "application/json",
        "Accept": "text/csv",
        "CustomAttributes": "c",
        "RequestTTLSeconds": 60,
        "InvocationTimeoutSeconds": 5,
        "S3OutputPathExtension": "ext",
        "Filename": "f.out",
    }
    staged = invoke_arguments(
        "ep", InferenceRequest(input_location="s3://b/k"), inference_id="i", input_location="s3://b/k"
    )
    assert staged["InputLocation"] == "s3://b/k" and "Body" not in staged
