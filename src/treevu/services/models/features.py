"""What the risk models see and what they predict, read off the snapshot history (pure numpy).

A prediction is made for a person present in month ``t`` from what their snapshots up to ``t``
show — never a later month — and is checked against month ``t + 1`` (the next monthly snapshot:
"within 30 days"):

- ``crisis``: in ``crisis_intervention`` next month;
- ``disengagement``: disengaged next month (engagement under 20, or gone).

No protected attribute is an input: department and age are used only to measure how well the
models do for each group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from treevu.segmentation.policy import CRISIS
from treevu.services.analytics.cube import ABSENT, DISENGAGED_BELOW, Cube

Target = Literal["crisis", "disengagement"]
TARGETS: Final[tuple[Target, ...]] = ("crisis", "disengagement")
#: The inputs of both models, in order.
FEATURES: Final = (
    "fwiScore",
    "engagementScore",
    "wellnessScore",
    "riskLevel",
    "spendingLevel",
    "fwiChange1m",
    "engagementChange1m",
    "inCrisis",
    "disengaged",
)
#: Today's rule, the baseline each model must beat: next month's state is this month's.
BASELINE: Final = {
    "crisis": "in crisis next month if in crisis this month (fwiScore < 30 or risk critical)",
    "disengagement": "disengaged next month if disengaged this month (engagementScore < 20)",
}

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Examples:
    """People present in a month with what they looked like then (``x``), and — where the
    next month is known — what happened (``y``); ``rule`` is the baseline's verdict."""

    rows: npt.NDArray[np.int64]  # cube rows
    month: npt.NDArray[np.int64]  # month index of the prediction
    x: Floats
    y: npt.NDArray[np.int8]  # 1 happened, 0 did not, -1 unknown (no next month yet)
    rule: npt.NDArray[np.int8]


def feature_matrix(
    fwi: Floats,
    engagement: Floats,
    wellness: Floats,
    risk: Any,
    spending: Any,
    segment: Any,
    fwi_before: Floats,
    engagement_before: Floats,
) -> Floats:
    """:data:`FEATURES` as columns, from a month's profile and the month before's (NaN: none).
    One function for training (the history) and scoring (``recompute``), so both see alike."""
    return np.column_stack(
        [
            fwi,
            engagement,
            wellness,
            risk,
            spending,
            np.nan_to_num(fwi - fwi_before, nan=0.0),
            np.nan_to_num(engagement - engagement_before, nan=0.0),
            segment == CRISIS,
            np.nan_to_num(engagement, nan=-1.0) < DISENGAGED_BELOW,
        ]
    ).astype(np.float64)


def features_at(cube: Cube, t: int) -> tuple[npt.NDArray[np.int64], Floats]:
    """The people present in month ``t`` and their features, from months ``≤ t`` only."""
    rows = np.flatnonzero(cube.segment[:, t] != ABSENT).astype(np.int64)
    nothing = np.full(len(rows), np.nan)
    x = feature_matrix(
        cube.fwi[rows, t].astype(np.float64),
        cube.engagement[rows, t].astype(np.float64),
        cube.wellness[rows, t].astype(np.float64),
        cube.risk[rows, t],
        cube.spending[rows, t],
        cube.segment[rows, t],
        cube.fwi[rows, t - 1].astype(np.float64) if t > 0 else nothing,
        cube.engagement[rows, t - 1].astype(np.float64) if t > 0 else nothing,
    )
    return rows, x


def outcome(
    cube: Cube, rows: npt.NDArray[np.int64], t: int, target: Target
) -> npt.NDArray[np.int8]:
    """What happened in month ``t + 1`` (-1 where that month is not in the cube)."""
    if t + 1 >= len(cube.months):
        return np.full(len(rows), -1, dtype=np.int8)
    nxt = cube.segment[rows, t + 1]
    if target == "crisis":
        y = np.where(nxt == ABSENT, -1, (nxt == CRISIS).astype(np.int8))
    else:
        gone = nxt == ABSENT
        low = np.nan_to_num(cube.engagement[rows, t + 1], nan=-1.0) < DISENGAGED_BELOW
        y = (gone | low).astype(np.int8)
    return y.astype(np.int8)


def rule(cube: Cube, rows: npt.NDArray[np.int64], t: int, target: Target) -> npt.NDArray[np.int8]:
    """The baseline's prediction: this month's state."""
    state: npt.NDArray[np.bool_] = (
        cube.segment[rows, t] == CRISIS
        if target == "crisis"
        else np.nan_to_num(cube.engagement[rows, t], nan=-1.0) < DISENGAGED_BELOW
    )
    return state.astype(np.int8)


def examples(cube: Cube, target: Target, months: range | None = None) -> Examples:
    """Every (person, month) of ``months`` (default: all) as a training or test example."""
    parts = []
    for t in months if months is not None else range(len(cube.months)):
        rows, x = features_at(cube, t)
        parts.append((rows, np.full(len(rows), t, np.int64), x, outcome(cube, rows, t, target),
                      rule(cube, rows, t, target)))  # fmt: skip
    if not parts:
        empty = np.zeros(0, np.int64)
        return Examples(empty, empty, np.zeros((0, len(FEATURES))), empty.astype(np.int8),
                        empty.astype(np.int8))  # fmt: skip
    rows, month, x, y, r = (np.concatenate(p) for p in zip(*parts, strict=True))
    return Examples(rows, month, x, y.astype(np.int8), r.astype(np.int8))
