"""Numbers over measurements: spreads, percentiles, paired ratios.

Two spreads, because two kinds of series are summarised: `spread` over the
samples of one run (min, median, max), and `rounds_spread` over per-round
figures, which also counts the rounds (a min-max span means something only
with more than one).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

# One dict per round: cell label -> its measurement, or None if it failed.
Rounds = list[dict[str, Any]]


def spread(values: Sequence[float]) -> dict[str, float] | None:
    """Min, median and max of a run's samples; None without any."""
    if not values:
        return None
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
    }


def rounds_spread(values: Sequence[float]) -> dict[str, float] | None:
    """Median, min, max and count of per-round figures; None without any."""
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The *q* quantile (0..1) of already sorted values, nearest rank."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def paired_ratios(
    rounds: Rounds, variant: str, reference: str, metric: Callable[[Any], float]
) -> dict[str, float] | None:
    """Per-round `metric(variant) / metric(reference)`, summarised across rounds.

    Pairing within a round cancels the slow drift of a shared machine, which a
    ratio of two cross-round medians would not."""
    ratios = [
        metric(r[variant]) / metric(r[reference])
        for r in rounds
        if r.get(variant) is not None
        and r.get(reference) is not None
        and metric(r[reference])
    ]
    return rounds_spread(ratios)
