"""Campaign experiments: conversion by variant, each variant against the first, with the
sample size planned for the effect the admin wants to detect.

No peeking: until every variant has reached the planned size, the p-value, the interval and
the verdict are withheld (None) and a warning says how far along the experiment is. Looking at
significance as data comes in and stopping at the first p < 0.05 inflates false positives far
above 5%.
"""

from __future__ import annotations

import math
from typing import Any, Final

from treevu.services.analytics.cube import cell, rate

DEFAULT_MDE: Final = 0.05
DEFAULT_ALPHA: Final = 0.05
DEFAULT_POWER: Final = 0.8


def planned_per_arm(baseline: float, mde: float, alpha: float, power: float) -> int:
    """People per variant for a two-sided two-proportion test to detect ``baseline`` →
    ``baseline + mde`` (absolute) with the given power (the normal approximation)."""
    from scipy.stats import norm

    p1 = min(max(baseline, 0.0), 1.0)
    p2 = p1 + mde
    if p2 > 1.0:  # the baseline leaves no room above: detect a drop instead
        p1, p2 = max(p1 - mde, 0.0), p1
    p_bar = (p1 + p2) / 2.0
    z_a, z_b = norm.ppf(1.0 - alpha / 2.0), norm.ppf(power)
    spread = z_a * math.sqrt(2.0 * p_bar * (1.0 - p_bar)) + z_b * math.sqrt(
        p1 * (1.0 - p1) + p2 * (1.0 - p2)
    )
    return max(1, math.ceil(float(spread / (p2 - p1)) ** 2))


def _p_value(c0: int, n0: int, c1: int, n1: int) -> float:
    """Two-sided p of a 2×2 chi-square test without continuity correction (the pooled
    two-proportion z-test)."""
    from scipy.stats import chi2_contingency

    if c0 + c1 == 0 or c0 + c1 == n0 + n1:
        return 1.0  # nobody (or everybody) converted: no difference to see
    return float(chi2_contingency([[c0, n0 - c0], [c1, n1 - c1]], correction=False).pvalue)


def analyse(
    arms: list[tuple[str, int, int]],
    *,
    mde: float = DEFAULT_MDE,
    alpha: float = DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
    baseline: float | None = None,
) -> dict[str, Any]:
    """``arms``: (title, sent, converted) per variant, the first being the reference. The
    baseline defaults to the pooled rate of all variants (so that no variant's own result sets
    the plan). With more than two variants the p-values are Bonferroni-adjusted."""
    from scipy.stats import norm

    sent_all = sum(n for _, n, _ in arms)
    pooled = sum(c for _, _, c in arms) / sent_all if sent_all else 0.0
    base = pooled if baseline is None else baseline
    planned = planned_per_arm(base, mde, alpha, power)
    smallest = min((n for _, n, _ in arms), default=0)
    reached = len(arms) >= 2 and smallest >= planned
    comparisons = []
    _, n0, c0 = arms[0] if arms else ("", 0, 0)
    z = norm.ppf(1.0 - alpha / 2.0)
    tests = max(len(arms) - 1, 1)
    for k, (_, n, c) in enumerate(arms[1:], start=1):
        diff = c / n - c0 / n0 if n and n0 else None
        row: dict[str, Any] = {
            "variant": k,
            "against": 0,
            "difference": None if diff is None else round(diff, 4),
            "ci95": None,
            "pValue": None,
            "significant": None,
        }
        if reached and diff is not None:
            r0, r1 = c0 / n0, c / n
            se = math.sqrt(r0 * (1 - r0) / n0 + r1 * (1 - r1) / n)
            p = min(1.0, _p_value(c0, n0, c, n) * tests)
            row.update(
                ci95=[round(diff - z * se, 4), round(diff + z * se, 4)],
                pValue=float(f"{p:.4g}"),
                significant=p < alpha,
            )
        comparisons.append(row)
    warning = None
    if len(arms) < 2:
        warning = "the campaign has one message: there is nothing to compare"
    elif not reached:
        warning = (
            f"planned sample size not reached: {planned} people per variant are needed to detect "
            f"a difference of {mde:g} at alpha {alpha:g} with power {power:g}; the smallest "
            f"variant has {smallest}. Significance is withheld until then (no peeking)."
        )
    return {
        "metric": "converted",
        "variants": [
            {
                "variant": k,
                "title": title,
                "sent": cell(n),
                "converted": cell(c),
                "rate": rate(c, n),
            }
            for k, (title, n, c) in enumerate(arms)
        ],
        "comparisons": comparisons,
        "plannedPerVariant": planned,
        "minDetectableEffect": mde,
        "baselineRate": round(base, 4),
        "alpha": alpha,
        "power": power,
        "reached": reached,
        "warning": warning,
    }
