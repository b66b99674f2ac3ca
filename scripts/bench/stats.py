"""Statistics and number formatting: medians and ranges over rounds, paired ratios."""

from __future__ import annotations

import math
import statistics
from typing import Any


def stats(values: list[float]) -> dict[str, Any]:
    """Median and range of a list of numbers (NaNs dropped)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0, "values": []}
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
        "values": [round(v, 4) for v in vals],
    }


def paired_ratios(a: list[float], b: list[float]) -> dict[str, Any]:
    """Stats of a[i] / b[i] over the rounds in which both ran."""
    ratios = [x / y for x, y in zip(a, b, strict=False) if x and y]
    return stats(ratios)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def fmt(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def fmt_stats(s: dict[str, Any] | None, digits: int = 1) -> str:
    """'median (min-max)', or '-' when nothing was measured."""
    if not s or s.get("median") is None:
        return "-"
    if s["n"] == 1:
        return fmt(s["median"], digits)
    return (
        f"{fmt(s['median'], digits)} ({fmt(s['min'], digits)}-{fmt(s['max'], digits)})"
    )
