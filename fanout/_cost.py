"""What a run's requests cost at list prices, and what sending payloads inline saved.

Pure: ``cost_of`` is arithmetic on counts, and the only I/O is ``load_prices``
reading the price file (``fanout/data/prices.json``, or a file of the same shape
that replaces it). The file keeps its sources (the AWS pricing pages) and the
date the prices were taken, because list prices change and a number without
its date cannot be checked.

What is counted, per request, at the region's list price:

* fanout's own calls, as counted by its aiobotocore clients (``RunReport.api_calls``);
* requests the endpoint makes for the run and bills to the same account
  (estimated from counts, since fanout cannot see them): one S3 GET for each
  input read from S3, one S3 PUT for each output or failure file it writes, and
  one SNS publish per notification when the caller says how many there were.

What is not: the endpoint's instance hours (billed per hour whatever fanout
does), storage, free tiers, and the extra requests SQS and SNS bill for each
64 KB chunk of a large message (call counts do not show sizes).

The counterfactual: a request sent inline would, through S3, have cost one
more S3 PUT (fanout staging the input) and one more S3 GET (the endpoint
reading it). Both are billed to the same account, so that is what inline saved.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, Literal

from ._exceptions import ConfigError

if TYPE_CHECKING:
    from rich.table import Table

__all__ = [
    "DEFAULT_REGION",
    "CostLine",
    "CostReport",
    "PriceTable",
    "Tier",
    "cost_of",
    "format_money",
    "load_prices",
]

DEFAULT_REGION: Final = "us-east-1"

_PUT: Final = "s3.PutObject"
_GET: Final = "s3.GetObject"
_PUBLISH: Final = "sns.Publish"
_REQUIRED_OPERATIONS: Final = (_PUT, _GET, _PUBLISH)
"""The counterfactual and the endpoint's own requests are priced through these."""

COMPUTE_NOTE: Final = (
    "Compute is not counted: the endpoint's instances are billed per instance hour whatever fanout does; "
    "these are the per-request charges of the run."
)


# -- the price table --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Tier:
    """One request class: ``price`` dollars per ``per`` requests."""

    name: str
    price: float
    per: int
    what: str
    source: str
    """The URL of the pricing page the price comes from."""
    note: str | None = None

    @property
    def unit_price(self) -> float:
        """Dollars per single request."""
        return self.price / self.per


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceTable:
    """The list prices of one region, with where and when they were taken."""

    region: str
    currency: str
    taken: str
    """The date the prices were read from their sources (ISO 8601)."""
    tiers: Mapping[str, Tier]
    operations: Mapping[str, str]
    """``service.Operation`` (or ``service.*``) to the name of its tier."""
    path: str | None = None
    """The price file, or ``None`` for the one shipped with fanout."""

    def tier_of(self, operation: str) -> Tier | None:
        """The tier ``operation`` is billed in: its own entry first, then its service's ``service.*``."""
        name = self.operations.get(operation)
        if name is None:
            service, _, _ = operation.partition(".")
            name = self.operations.get(f"{service}.*")
        return self.tiers[name] if name is not None else None

    def unit_price(self, operation: str) -> float | None:
        tier = self.tier_of(operation)
        return tier.unit_price if tier is not None else None


def load_prices(path: str | None = None, region: str = DEFAULT_REGION) -> PriceTable:
    """The price table for ``region``: from ``path`` (same shape as the shipped file), or the shipped one.

    Raises ``ConfigError`` naming the file and the offending key.
    """
    where = path if path is not None else "fanout/data/prices.json"
    try:
        if path is None:
            text = resources.files("fanout").joinpath("data", "prices.json").read_text(encoding="utf-8")
        else:
            with open(path, encoding="utf-8") as file:
                text = file.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the price file {where!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the price file {where!r} is not UTF-8 text: {exc.reason}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"the price file {where!r} is not valid JSON: {exc}") from None
    return _parse_table(document, region, where, path)


def _parse_table(document: Any, region: str, where: str, path: str | None) -> PriceTable:
    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"the price file {where!r}: {key} {problem}")

    def member(container: Mapping[str, Any], key: str, label: str) -> Any:
        if key not in container:
            raise fail(label, "is missing")
        return container[key]

    def text(value: Any, label: str) -> str:
        if not isinstance(value, str) or not value:
            raise fail(label, f"must be a non-empty string, got {_json_type(value)}")
        return value

    def obj(value: Any, label: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise fail(label, f"must be a JSON object, got {_json_type(value)}")
        return value

    top = obj(document, "the top level")
    currency = text(member(top, "currency", "currency"), "currency")
    taken = text(member(top, "taken", "taken"), "taken")
    sources = obj(member(top, "sources", "sources"), "sources")
    for name, url in sources.items():
        text(url, f"sources[{name!r}]")
    regions = obj(member(top, "regions", "regions"), "regions")
    if region not in regions:
        known = ", ".join(sorted(regions)) or "none"
        raise fail(f"regions[{region!r}]", f"is missing: there are no prices for {region} (it has: {known})")
    region_label = f"regions[{region!r}]"
    tiers_doc = obj(member(obj(regions[region], region_label), "tiers", f"{region_label}.tiers"), "tiers")
    tiers: dict[str, Tier] = {}
    for name, raw in tiers_doc.items():
        label = f"{region_label}.tiers[{name!r}]"
        entry = obj(raw, label)
        price = member(entry, "price", f"{label}.price")
        if isinstance(price, bool) or not isinstance(price, int | float) or not math.isfinite(price):
            raise fail(f"{label}.price", f"must be a number, got {_json_type(price)} {price!r}")
        if price < 0:
            raise fail(f"{label}.price", f"must not be negative, got {price}")
        per = member(entry, "per", f"{label}.per")
        if isinstance(per, bool) or not isinstance(per, int) or per < 1:
            raise fail(f"{label}.per", f"must be a whole number of requests (1 or more), got {per!r}")
        source = text(member(entry, "source", f"{label}.source"), f"{label}.source")
        if source not in sources:
            raise fail(f"{label}.source", f"names {source!r}, which is not in sources")
        note = entry.get("note")
        if note is not None:
            text(note, f"{label}.note")
        tiers[name] = Tier(
            name=name,
            price=float(price),
            per=per,
            what=text(member(entry, "what", f"{label}.what"), f"{label}.what"),
            source=sources[source],
            note=note,
        )
    operations_doc = obj(member(top, "operations", "operations"), "operations")
    operations: dict[str, str] = {}
    for operation, tier_name in operations_doc.items():
        label = f"operations[{operation!r}]"
        service, dot, name = operation.partition(".")
        if not (service and dot and name):
            raise fail(label, "must be named service.Operation or service.*")
        if text(tier_name, label) not in tiers:
            raise fail(label, f"names the tier {tier_name!r}, which {region_label}.tiers does not have")
        operations[operation] = tier_name
    for required in _REQUIRED_OPERATIONS:
        if required not in operations:
            raise fail(f"operations[{required!r}]", "is missing (the counterfactual needs it)")
    return PriceTable(
        region=region, currency=currency, taken=taken, tiers=tiers, operations=operations, path=path
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


# -- the cost of a run ------------------------------------------------------------------------------

MadeBy = Literal["fanout", "endpoint"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CostLine:
    """One kind of request: how many, at what price, and who made it."""

    operation: str
    made_by: MadeBy
    calls: int
    unit_price: float
    dollars: float
    what: str
    """What the calls were, in words (for the endpoint's rows, why they happened)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CostReport:
    """The per-request cost of one run at list prices; ``total`` excludes compute (see ``notes``)."""

    region: str
    currency: str
    prices_taken: str
    prices_file: str | None
    inferences: int
    inline: int
    lines: tuple[CostLine, ...]
    unpriced: Mapping[str, int] = field(default_factory=dict)
    """Operations the price table has no tier for, with their call counts (not in ``total``)."""
    inline_saved: float = 0.0
    """What the inline requests would have cost more through S3 (never negative)."""
    notes: tuple[str, ...] = ()

    @property
    def total(self) -> float:
        return math.fsum(line.dollars for line in self.lines)

    @property
    def by_call(self) -> dict[str, float]:
        """Dollars by ``service.Operation`` of fanout's own calls (the endpoint's rows are in ``lines``)."""
        return {line.operation: line.dollars for line in self.lines if line.made_by == "fanout"}

    @property
    def all_via_s3(self) -> float:
        """What the same requests would have cost had every inline one gone through S3."""
        return self.total + self.inline_saved

    @property
    def per_1000_inferences(self) -> float | None:
        return self.total * 1000 / self.inferences if self.inferences else None

    def to_dict(self) -> dict[str, Any]:
        """For ``--json-summary``: plain JSON values, dollars unrounded."""
        return {
            "currency": self.currency,
            "region": self.region,
            "prices_taken": self.prices_taken,
            "prices_file": self.prices_file,
            "inferences": self.inferences,
            "inline": self.inline,
            "total": self.total,
            "per_1000_inferences": self.per_1000_inferences,
            "lines": [
                {
                    "operation": line.operation,
                    "made_by": line.made_by,
                    "calls": line.calls,
                    "unit_price": line.unit_price,
                    "dollars": line.dollars,
                }
                for line in self.lines
            ],
            "unpriced": dict(self.unpriced),
            "counterfactual": {"all_via_s3": self.all_via_s3, "inline_saved": self.inline_saved},
            "compute_counted": False,
            "notes": list(self.notes),
        }

    def rows(self) -> list[tuple[str, str, str]]:
        """``(request, calls, cost)`` strings, one per line, then the totals and the counterfactual."""
        money = self._money
        rows = [
            (
                line.operation if line.made_by == "fanout" else f"{line.operation} (endpoint)",
                f"{line.calls:,}",
                money(line.dollars),
            )
            for line in self.lines
        ]
        rows.extend(
            (f"{operation} (no price)", f"{calls:,}", "-") for operation, calls in self.unpriced.items()
        )
        rows.append(("total", "", money(self.total)))
        per_1000 = self.per_1000_inferences
        rows.append(("per 1,000 inferences", "", money(per_1000) if per_1000 is not None else "-"))
        if self.inline:
            rows.append(("all through S3 instead", "", money(self.all_via_s3)))
            rows.append((f"saved by {self.inline:,} inline", "", money(self.inline_saved)))
        return rows

    def table(self, title: str | None = None) -> Table:
        """The rows as a rich table; print ``notes`` after it."""
        from rich.table import Table

        table = Table(
            title=title or f"cost at {self.region} list prices of {self.prices_taken} (requests only)",
            show_header=True,
            header_style="bold",
            title_justify="left",
        )
        table.add_column("request", style="bold")
        table.add_column("calls", justify="right")
        table.add_column(self.currency, justify="right")
        body = self.rows()
        totals = len(body) - (4 if self.inline else 2)
        for index, row in enumerate(body):
            if index == totals:
                table.add_section()
            table.add_row(*row)
        return table

    def _money(self, amount: float) -> str:
        return format_money(amount, self.currency)


def format_money(amount: float, currency: str = "USD") -> str:
    """Cents from one unit up (``$1,234.50``); below, three significant digits (``$0.00587``)."""
    if amount == 0:
        number = "0"
    elif abs(amount) >= 1:
        number = f"{amount:,.2f}"
    else:
        # Sub-cent amounts are the norm here (a request costs micro-dollars), so cents would show $0.00.
        digits = min(2 - math.floor(math.log10(abs(amount))), 12)
        number = f"{amount:.{digits}f}".rstrip("0").rstrip(".")
    return f"${number}" if currency == "USD" else f"{number} {currency}"


def cost_of(
    api_calls: Mapping[str, int],
    *,
    inferences: int,
    inline: int,
    prices: PriceTable,
    notifications: int = 0,
) -> CostReport:
    """Price a run's requests: ``calls × list price`` by call type, plus the endpoint's own requests.

    ``api_calls`` are fanout's calls by ``service.Operation`` (``RunReport.api_calls``);
    ``inferences`` the requests the endpoint accepted (``RunReport.inline + RunReport.s3``) and
    ``inline`` those sent inline; ``notifications`` the SNS notifications the endpoint published
    for them (pass ``inferences`` when the endpoint has topics, as with ``--tracker sqs`` or
    ``hybrid``; 0 leaves them out). Operations the table does not price are listed, not guessed.
    """
    for name, value in (("inferences", inferences), ("inline", inline), ("notifications", notifications)):
        if value < 0:
            raise ValueError(f"{name} must not be negative, got {value}")
    if inline > inferences:
        raise ValueError(f"inline ({inline}) cannot exceed inferences ({inferences})")
    lines: list[CostLine] = []
    unpriced: dict[str, int] = {}
    for operation, calls in sorted(api_calls.items()):
        if calls < 0:
            raise ValueError(f"api_calls[{operation!r}] must not be negative, got {calls}")
        if calls == 0:
            continue
        tier = prices.tier_of(operation)
        if tier is None:
            unpriced[operation] = calls
            continue
        lines.append(
            CostLine(
                operation=operation,
                made_by="fanout",
                calls=calls,
                unit_price=tier.unit_price,
                dollars=calls * tier.unit_price,
                what=tier.what,
            )
        )

    def endpoint_line(operation: str, calls: int, what: str) -> None:
        if calls:
            unit = _required_price(prices, operation)
            lines.append(
                CostLine(
                    operation=operation,
                    made_by="endpoint",
                    calls=calls,
                    unit_price=unit,
                    dollars=calls * unit,
                    what=what,
                )
            )

    # Requests fanout cannot count because the endpoint makes them, billed to the same account.
    endpoint_line(_GET, inferences - inline, "the endpoint reads each input sent through S3")
    endpoint_line(_PUT, inferences, "the endpoint writes each output or failure file")
    endpoint_line(_PUBLISH, notifications, "the endpoint publishes each notification")

    # Prices are never negative (load_prices checks), so neither is what inline saved.
    inline_saved = inline * (_required_price(prices, _PUT) + _required_price(prices, _GET))
    notes = [
        COMPUTE_NOTE,
        f"List prices for {prices.region} taken {prices.taken}; free tiers are ignored.",
        "Endpoint rows are estimated from counts: requests the endpoint makes itself, billed to the "
        "same account.",
        "SQS and SNS bill each 64 KB chunk of a message as one request, so large messages cost more "
        "than their call count shows.",
    ]
    if inline:
        notes.append(
            f"Inline saved {format_money(inline_saved, prices.currency)}: through S3, each of the "
            f"{inline:,} inline requests would have cost one more S3 PUT (fanout staging the input) "
            "and one more S3 GET (the endpoint reading it)."
        )
    if unpriced:
        names = ", ".join(f"{operation} ({calls:,})" for operation, calls in unpriced.items())
        notes.append(f"Not priced (no tier in the price table): {names}.")
    return CostReport(
        region=prices.region,
        currency=prices.currency,
        prices_taken=prices.taken,
        prices_file=prices.path,
        inferences=inferences,
        inline=inline,
        lines=tuple(lines),
        unpriced=unpriced,
        inline_saved=inline_saved,
        notes=tuple(notes),
    )


def _required_price(prices: PriceTable, operation: str) -> float:
    unit = prices.unit_price(operation)
    if unit is None:  # load_prices requires these; a hand-built table may not have them
        raise ConfigError(f"the price table has no price for {operation}, which the cost needs")
    return unit
