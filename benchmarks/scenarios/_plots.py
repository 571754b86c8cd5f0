"""PNG plots with matplotlib (the ``bench`` extra); a scenario skips its plots when it is missing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["available", "cdf_plot", "rate_plot"]


def _pyplot() -> Any | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(
    plt: Any,
    fig: Any,
    ax: Any,
    path: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    legend_size: float | None = None,
) -> Path:
    """Label, lay out and write the figure to ``path`` (its folder made when missing), then close it."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=legend_size)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def available() -> bool:
    return _pyplot() is not None


def cdf_plot(
    series: Mapping[str, Sequence[float]],
    path: Path,
    *,
    title: str,
    xlabel: str,
    marks: Mapping[str, float] | None = None,
) -> Path | None:
    """Empirical CDFs, one line per series (values already in the unit of ``xlabel``)."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for label, values in series.items():
        ordered = sorted(values)
        if not ordered:
            continue
        n = len(ordered)
        ax.step(ordered, [(i + 1) / n for i in range(n)], where="post", label=f"{label} (n={n:,})")
    for label, x in (marks or {}).items():
        ax.axvline(x, linestyle=":", color="grey")
        ax.annotate(label, (x, 0.03), rotation=90, fontsize=8, color="grey", ha="right")
    ax.set_ylim(0, 1.02)
    return _save(plt, fig, ax, path, title=title, xlabel=xlabel, ylabel="fraction of requests")


def rate_plot(
    series: Mapping[str, Sequence[float]],
    path: Path,
    *,
    title: str,
    bucket: float,
    ylabel: str,
    dashed: Mapping[str, Sequence[float]] | None = None,
    hline: tuple[str, float] | None = None,
) -> Path | None:
    """Rates already binned in ``bucket``-second steps.

    A ``dashed`` series takes the colour of the solid series whose label has the same part before ": ".
    """
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    colours: dict[str, Any] = {}
    for label, values in series.items():
        (line,) = ax.step([i * bucket for i in range(len(values))], values, where="post", label=label)
        colours[label.rpartition(": ")[0] or label] = line.get_color()
    for label, values in (dashed or {}).items():
        twin = colours.get(label.rpartition(": ")[0] or label)
        ax.step(
            [i * bucket for i in range(len(values))],
            values,
            where="post",
            linestyle="--",
            alpha=0.6,
            color=twin,
            label=label,
        )
    if hline is not None:
        ax.axhline(hline[1], linestyle=":", color="grey", label=hline[0])
    ax.set_ylim(bottom=0)
    return _save(plt, fig, ax, path, title=title, xlabel="seconds since start", ylabel=ylabel, legend_size=8)
