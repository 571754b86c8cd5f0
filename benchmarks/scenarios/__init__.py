"""The scenarios, one module each, and the context they run in.

Each scenario module exposes ``NAME``, ``TITLE``, ``SIZES`` (keyed ``tiny``,
``quick`` and ``full``) and ``run(ctx) -> ScenarioResult``. The private modules
are the parts they share with the standalone benchmarks: where calls go
(``_target``), workloads and runs (``_workload``), and each side's code
(``_fanout``, ``_usual``, ``_dispatcher``, ``_tracker``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, TypeAlias

__all__ = ["DEFAULT_LATENCY", "DEFAULT_REPEAT", "SCENARIOS", "Context", "Size", "load"]

Size: TypeAlias = Literal["tiny", "quick", "full"]

SCENARIOS = ("inline_vs_s3", "mixed_sizes", "usual_ways", "throttled", "tracking_cost", "pipeline")

DEFAULT_REPEAT: dict[Size, int] = {"tiny": 1, "quick": 3, "full": 5}

DEFAULT_LATENCY: dict[str, Any] = {
    "sagemaker.InvokeEndpointAsync": {"kind": "uniform", "low_ms": 20, "high_ms": 40},
    "s3.PutObject": {"kind": "uniform", "low_ms": 20, "high_ms": 40},
    "s3.GetObject": {"kind": "uniform", "low_ms": 10, "high_ms": 20},
    "s3.HeadObject": {"kind": "uniform", "low_ms": 5, "high_ms": 15},
    "s3.ListObjectsV2": {"kind": "uniform", "low_ms": 10, "high_ms": 30},
    "s3": {"kind": "uniform", "low_ms": 10, "high_ms": 20},
    "sqs": {"kind": "uniform", "low_ms": 5, "high_ms": 10},
}
"""Added before the emulator handles each request (the most specific key wins), in the
emulator's distribution format. Loopback alone is well under a millisecond, so this is
what makes the two paths differ as they do against AWS from inside its region."""


@dataclass(frozen=True, slots=True)
class Context:
    size: Size
    repeat: int
    results: Path
    real: bool = False
    latency: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_LATENCY))
    emulator_cpu: int | None = None
    """The core the emulator process is pinned to (the benchmark itself is pinned elsewhere)."""
    plots: bool = True
    uvloop: bool = True
    progress: Callable[[str], None] = lambda message: None


def load(name: str) -> ModuleType:
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")
    return importlib.import_module(f"{__name__}.{name}")
