"""Summaries of repeated samples: median, min, max, nearest-rank percentiles.

Also the small helpers that pull samples out of the result record (`dig`,
`ratio`: None for a missing sample) and format them (`fmt`, `short`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable


def clean(values: Iterable[float | None]) -> list[float]:
    """The samples that exist (a failed repetition records None)."""
    return [float(v) for v in values if v is not None and not math.isnan(v)]


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest sample with >= p% of samples at or below it.

    With n samples, p99 is the maximum whenever n < 100; the README says so.
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(values: Iterable[float | None], unit: str, description: str, percentiles: bool = False) -> dict:
    got = clean(values)
    out: dict = {
        "unit": unit,
        "description": description,
        "n": len(got),
        "median": statistics.median(got) if got else None,
        "min": min(got) if got else None,
        "max": max(got) if got else None,
    }
    if percentiles:
        out["p50"] = percentile(got, 50)
        out["p99"] = percentile(got, 99)
    return out


def fmt(value: float | None) -> str:
    """Three significant figures, enough for run-to-run noise of a few percent."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    digits = max(0, 2 - magnitude)
    return f"{value:.{digits}f}"


def short(value: float | None) -> str:
    """Three significant figures in %g style, for progress lines and notes."""
    return "-" if value is None else f"{value:.3g}"


def dig(record: dict | None, *keys):
    """record[k1][k2]...; None where a level is missing (a failed or skipped sample)."""
    for k in keys:
        if not isinstance(record, dict):
            return None
        record = record.get(k)
    return record


def ratio(a, b):
    """a / b; None when a sample is missing or b is 0."""
    return a / b if a is not None and b else None
