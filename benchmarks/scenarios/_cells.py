"""Table cells from repeated samples: a metric's median (min–max), and side-by-side ratios."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .._harness import Sample, Stat, ratio_stat, stat

__all__ = ["cell", "median", "pooled", "ratio", "ratio_cell", "values"]


def values(samples: Sequence[Sample], name: str) -> list[float]:
    return [s.metrics.get(name, math.nan) for s in samples]


def median(samples: Sequence[Sample], name: str) -> float:
    return stat(values(samples, name)).median


def cell(samples: Sequence[Sample], name: str, digits: int = 1, *, scale: float = 1.0) -> str:
    return stat(v * scale for v in values(samples, name)).format(digits)


def ratio(numerator: Sequence[Sample], denominator: Sequence[Sample], name: str) -> Stat:
    """``numerator / denominator`` for ``name``, repetition by repetition."""
    return ratio_stat(values(numerator, name), values(denominator, name))


def ratio_cell(numerator: Sequence[Sample], denominator: Sequence[Sample], name: str, digits: int = 2) -> str:
    text = ratio(numerator, denominator, name).format(digits)
    return text if text == "–" else f"{text}×"


def pooled(samples: Sequence[Sample], series: str, *, scale: float = 1.0) -> list[float]:
    """One series pooled over every repetition (for CDFs)."""
    return [v * scale for s in samples for v in s.series.get(series, [])]
