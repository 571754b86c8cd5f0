"""The cost of a run: the shipped price table, its validation, and the arithmetic of ``cost_of``."""

from __future__ import annotations

import copy
import io
import json
import math
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, strategies as st

from fanout._cost import (
    COMPUTE_NOTE,
    CostReport,
    PriceTable,
    Tier,
    cost_of,
    format_money,
    load_prices,
)
from fanout._exceptions import ConfigError

SHIPPED = Path(__file__).resolve().parents[2] / "fanout" / "data" / "prices.json"


def _shipped() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(SHIPPED.read_text(encoding="utf-8"))
    return document


def _table(*, put: float, get: float, sqs: float, publish: float = 0.0, invoke: float = 0.0) -> PriceTable:
    """A table with the given per-request prices (dollars per single request)."""

    def tier(name: str, price: float) -> Tier:
        return Tier(name=name, price=price, per=1, what=name, source="https://example.com/" + name)

    tiers = {
        "put": tier("put", put),
        "get": tier("get", get),
        "sqs": tier("sqs", sqs),
        "publish": tier("publish", publish),
        "invoke": tier("invoke", invoke),
        "free": tier("free", 0.0),
    }
    operations = {
        "s3.PutObject": "put",
        "s3.ListObjectsV2": "put",
        "s3.GetObject": "get",
        "s3.HeadObject": "get",
        "s3.DeleteObject": "free",
        "sqs.*": "sqs",
        "sns.Publish": "publish",
        "sagemaker-runtime.InvokeEndpointAsync": "invoke",
    }
    return PriceTable(region="test-1", currency="USD", taken="2026-01-01", tiers=tiers, operations=operations)


# -- the shipped table ------------------------------------------------------------------------------


def test_the_shipped_table_says_where_and_when_its_prices_come_from() -> None:
    prices = load_prices()
    assert prices.region == "us-east-1"
    assert prices.currency == "USD"
    assert prices.path is None
    assert date.fromisoformat(prices.taken) <= date.today()
    for tier in prices.tiers.values():
        assert tier.source.startswith("https://aws.amazon.com/"), tier
        assert tier.what
    document = _shipped()
    assert set(document["sources"]) >= {"sagemaker", "s3", "sqs", "sns"}


def test_the_shipped_us_east_1_list_prices() -> None:
    prices = load_prices()
    assert prices.unit_price("s3.PutObject") == pytest.approx(0.005 / 1000)
    assert prices.unit_price("s3.ListObjectsV2") == pytest.approx(0.005 / 1000)
    assert prices.unit_price("s3.GetObject") == pytest.approx(0.0004 / 1000)
    assert prices.unit_price("s3.HeadObject") == pytest.approx(0.0004 / 1000)
    assert prices.unit_price("s3.HeadBucket") == pytest.approx(0.0004 / 1000)
    assert prices.unit_price("s3.DeleteObject") == 0.0
    # Every SQS action is a request at one price, through the service's wildcard.
    for operation in (
        "sqs.ReceiveMessage",
        "sqs.DeleteMessageBatch",
        "sqs.ChangeMessageVisibilityBatch",
        "sqs.GetQueueAttributes",
    ):
        assert prices.unit_price(operation) == pytest.approx(0.40 / 1_000_000)
    assert prices.unit_price("sns.Publish") == pytest.approx(0.50 / 1_000_000)
    assert prices.unit_price("sns.DeliveryToSQS") == 0.0
    # No per-request charge for async invocations was found: they are billed by instance hour.
    assert prices.unit_price("sagemaker-runtime.InvokeEndpointAsync") == 0.0
    assert prices.unit_price("sts.GetCallerIdentity") is None


# -- cost_of ----------------------------------------------------------------------------------------


def test_a_run_priced_line_by_line() -> None:
    report = cost_of(
        {
            "sagemaker-runtime.InvokeEndpointAsync": 5_000,
            "s3.PutObject": 1_000,
            "s3.DeleteObject": 1_000,
            "sqs.ReceiveMessage": 1_000_000,
            "sqs.DeleteMessageBatch": 500,
        },
        inferences=5_000,
        inline=4_000,
        prices=load_prices(),
    )
    assert report.by_call == pytest.approx(
        {
            "s3.DeleteObject": 0.0,
            "s3.PutObject": 0.005,
            "sagemaker-runtime.InvokeEndpointAsync": 0.0,
            "sqs.DeleteMessageBatch": 500 * 0.4e-6,
            "sqs.ReceiveMessage": 0.40,
        }
    )
    endpoint = {line.operation: line for line in report.lines if line.made_by == "endpoint"}
    # The endpoint reads the 1,000 inputs that went through S3 and writes 5,000 outputs.
    assert endpoint["s3.GetObject"].calls == 1_000
    assert endpoint["s3.GetObject"].dollars == pytest.approx(0.0004)
    assert endpoint["s3.PutObject"].calls == 5_000
    assert endpoint["s3.PutObject"].dollars == pytest.approx(0.025)
    assert "sns.Publish" not in endpoint  # no notifications given
    expected_total = 0.005 + 500 * 0.4e-6 + 0.40 + 0.0004 + 0.025
    assert report.total == pytest.approx(expected_total)
    assert report.per_1000_inferences == pytest.approx(expected_total / 5)
    # Through S3, each of the 4,000 inline requests costs a PUT by fanout and a GET by the endpoint.
    assert report.inline_saved == pytest.approx(4_000 * (0.005 + 0.0004) / 1000)
    assert report.all_via_s3 == pytest.approx(expected_total + report.inline_saved)
    assert report.unpriced == {}


def test_notifications_are_priced_as_sns_publishes_by_the_endpoint() -> None:
    report = cost_of(
        {}, inferences=2_000_000, inline=2_000_000, prices=load_prices(), notifications=2_000_000
    )
    publish = [line for line in report.lines if line.operation == "sns.Publish"]
    assert len(publish) == 1 and publish[0].made_by == "endpoint"
    assert publish[0].dollars == pytest.approx(1.00)


def test_operations_without_a_price_are_listed_not_guessed() -> None:
    report = cost_of(
        {"sts.GetCallerIdentity": 3, "s3.PutObject": 2, "s3.GetObject": 0},
        inferences=0,
        inline=0,
        prices=load_prices(),
    )
    assert report.unpriced == {"sts.GetCallerIdentity": 3}
    assert [line.operation for line in report.lines] == ["s3.PutObject"]  # zero counts leave no line
    assert report.per_1000_inferences is None
    assert any("sts.GetCallerIdentity (3)" in note for note in report.notes)
    assert ("sts.GetCallerIdentity (no price)", "3", "-") in report.rows()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"inferences": 1, "inline": 2}, "cannot exceed"),
        ({"inferences": -1, "inline": 0}, "inferences must not be negative"),
        ({"inferences": 1, "inline": 0, "notifications": -1}, "notifications must not be negative"),
    ],
)
def test_impossible_counts_are_a_programming_error(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cost_of({}, prices=load_prices(), **kwargs)


def test_a_negative_call_count_is_refused() -> None:
    with pytest.raises(ValueError, match=r"api_calls\['s3.PutObject'\]"):
        cost_of({"s3.PutObject": -1}, inferences=0, inline=0, prices=load_prices())


def test_the_report_says_compute_is_not_counted_and_serialises() -> None:
    report = cost_of(
        {"s3.PutObject": 10, "sqs.ReceiveMessage": 7},
        inferences=100,
        inline=90,
        prices=load_prices(),
        notifications=100,
    )
    assert COMPUTE_NOTE in report.notes
    assert "instance hour" in COMPUTE_NOTE
    document = json.loads(json.dumps(report.to_dict()))
    assert document["compute_counted"] is False
    assert document["currency"] == "USD"
    assert document["total"] == pytest.approx(report.total)
    assert document["counterfactual"]["inline_saved"] == pytest.approx(report.inline_saved)
    assert document["counterfactual"]["all_via_s3"] == pytest.approx(report.all_via_s3)
    assert {line["made_by"] for line in document["lines"]} == {"fanout", "endpoint"}
    assert document["prices_file"] is None


def test_rows_and_the_rich_table() -> None:
    from rich.console import Console

    report = cost_of({"s3.PutObject": 1_000}, inferences=1_000, inline=800, prices=load_prices())
    rows = report.rows()
    assert ("s3.PutObject", "1,000", "$0.005") in rows
    assert ("s3.PutObject (endpoint)", "1,000", "$0.005") in rows
    labels = [row[0] for row in rows]
    assert labels[-4:] == ["total", "per 1,000 inferences", "all through S3 instead", "saved by 800 inline"]
    stream = io.StringIO()
    Console(file=stream, width=120).print(report.table())
    text = stream.getvalue()
    assert "us-east-1" in text and "saved by 800 inline" in text and "$0.00432" in text


@pytest.mark.parametrize(
    ("amount", "text"),
    [(0, "$0"), (4e-7, "$0.0000004"), (0.0117308, "$0.0117"), (0.01, "$0.01"), (1234.5, "$1,234.50")],
)
def test_money_shows_three_significant_digits_below_a_dollar(amount: float, text: str) -> None:
    assert format_money(amount) == text


def test_money_in_another_currency() -> None:
    assert format_money(2.5, "EUR") == "2.50 EUR"


# -- properties -------------------------------------------------------------------------------------

_prices = st.floats(min_value=0, max_value=1e-3, allow_nan=False, allow_infinity=False)
_operations = st.sampled_from(
    [
        "s3.PutObject",
        "s3.GetObject",
        "s3.HeadObject",
        "s3.ListObjectsV2",
        "s3.DeleteObject",
        "sqs.ReceiveMessage",
        "sqs.DeleteMessageBatch",
        "sqs.GetQueueAttributes",
        "sagemaker-runtime.InvokeEndpointAsync",
    ]
)
_calls = st.dictionaries(_operations, st.integers(min_value=0, max_value=10**9), max_size=9)


@st.composite
def _runs(draw: st.DrawFn) -> tuple[dict[str, int], int, int, int, PriceTable]:
    calls = draw(_calls)
    inferences = draw(st.integers(min_value=0, max_value=10**8))
    inline = draw(st.integers(min_value=0, max_value=inferences))
    notifications = draw(st.integers(min_value=0, max_value=inferences))
    table = _table(
        put=draw(_prices), get=draw(_prices), sqs=draw(_prices), publish=draw(_prices), invoke=draw(_prices)
    )
    return calls, inferences, inline, notifications, table


def _cost(run: tuple[dict[str, int], int, int, int, PriceTable], scale: int = 1) -> CostReport:
    calls, inferences, inline, notifications, table = run
    return cost_of(
        {operation: count * scale for operation, count in calls.items()},
        inferences=inferences * scale,
        inline=inline * scale,
        notifications=notifications * scale,
        prices=table,
    )


@given(_runs())
def test_inline_never_costs_more_and_the_total_adds_up(
    run: tuple[dict[str, int], int, int, int, PriceTable],
) -> None:
    report = _cost(run)
    table = run[4]
    inline = run[2]
    assert report.inline_saved >= 0
    assert report.all_via_s3 >= report.total >= 0
    expected_saving = inline * (table.tiers["put"].unit_price + table.tiers["get"].unit_price)
    assert math.isclose(report.inline_saved, expected_saving, rel_tol=1e-12, abs_tol=1e-18)
    assert math.isclose(report.total, math.fsum(line.dollars for line in report.lines), rel_tol=1e-12)


@given(_runs(), st.integers(min_value=2, max_value=1_000))
def test_cost_is_linear_in_the_counts(
    run: tuple[dict[str, int], int, int, int, PriceTable], scale: int
) -> None:
    once, scaled = _cost(run), _cost(run, scale)
    assert math.isclose(scaled.total, scale * once.total, rel_tol=1e-9, abs_tol=1e-15)
    assert math.isclose(scaled.inline_saved, scale * once.inline_saved, rel_tol=1e-9, abs_tol=1e-15)
    if once.per_1000_inferences is not None:
        assert scaled.per_1000_inferences is not None
        # The cost per inference does not change when everything scales together.
        assert math.isclose(scaled.per_1000_inferences, once.per_1000_inferences, rel_tol=1e-9, abs_tol=1e-15)


# -- the price file ---------------------------------------------------------------------------------


def _write(tmp_path: Path, document: Any) -> str:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return str(path)


def test_a_user_file_replaces_the_table_and_can_add_regions(tmp_path: Path) -> None:
    document = _shipped()
    region = copy.deepcopy(document["regions"]["us-east-1"])
    region["tiers"]["s3.tier1"]["price"] = 0.0054
    document["regions"]["eu-west-1"] = region
    path = _write(tmp_path, document)
    prices = load_prices(path, "eu-west-1")
    assert (prices.region, prices.path) == ("eu-west-1", path)
    assert prices.unit_price("s3.PutObject") == pytest.approx(0.0054 / 1000)
    report = cost_of({"s3.PutObject": 1000}, inferences=0, inline=0, prices=prices)
    assert report.total == pytest.approx(0.0054)
    assert report.to_dict()["prices_file"] == path


def _break(change: str) -> dict[str, Any]:
    document = _shipped()
    tiers = document["regions"]["us-east-1"]["tiers"]
    if change == "no taken":
        del document["taken"]
    elif change == "negative price":
        tiers["s3.tier1"]["price"] = -0.005
    elif change == "string price":
        tiers["s3.tier2"]["price"] = "0.0004"
    elif change == "boolean price":
        tiers["sqs.standard"]["price"] = True
    elif change == "zero per":
        tiers["sqs.standard"]["per"] = 0
    elif change == "unknown source":
        tiers["sns.publish"]["source"] = "nowhere"
    elif change == "unknown tier":
        document["operations"]["s3.PutObject"] = "s3.tier9"
    elif change == "no GET":
        del document["operations"]["s3.GetObject"]
    elif change == "bad operation name":
        document["operations"]["PutObject"] = "s3.tier1"
    elif change == "no tiers":
        del document["regions"]["us-east-1"]["tiers"]
    return document


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ("no taken", "taken is missing"),
        ("negative price", "regions['us-east-1'].tiers['s3.tier1'].price must not be negative"),
        ("string price", "regions['us-east-1'].tiers['s3.tier2'].price must be a number"),
        ("boolean price", "regions['us-east-1'].tiers['sqs.standard'].price must be a number"),
        ("zero per", "regions['us-east-1'].tiers['sqs.standard'].per"),
        ("unknown source", "tiers['sns.publish'].source names 'nowhere'"),
        ("unknown tier", "operations['s3.PutObject'] names the tier 's3.tier9'"),
        ("no GET", "operations['s3.GetObject'] is missing"),
        ("bad operation name", "operations['PutObject'] must be named service.Operation"),
        ("no tiers", "regions['us-east-1'].tiers is missing"),
    ],
)
def test_a_bad_price_file_names_the_key(tmp_path: Path, change: str, names: str) -> None:
    path = _write(tmp_path, _break(change))
    with pytest.raises(ConfigError) as caught:
        load_prices(path)
    assert names in str(caught.value)
    assert path in str(caught.value)


def test_a_region_without_prices_lists_the_ones_there_are() -> None:
    with pytest.raises(ConfigError, match=r"no prices for ap-south-2 \(it has: us-east-1\)"):
        load_prices(region="ap-south-2")


def test_a_missing_unreadable_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the price file"):
        load_prices(str(tmp_path / "absent.json"))
    with pytest.raises(ConfigError, match="cannot read the price file"):
        load_prices(str(tmp_path))
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        load_prices(str(tmp_path / "bad.json"))
    (tmp_path / "latin.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_prices(str(tmp_path / "latin.json"))
    with pytest.raises(ConfigError, match="the top level must be a JSON object, got an array"):
        load_prices(_write(tmp_path, []))
