"""The snapshot history as arrays (people × months) and the measures read off it: transitions
between two months, cohorts by entry month, and disengagement by month and segment.

Pure numpy, no database: ``store.load_cube`` fills a :class:`Cube`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from treevu.segmentation.policy import SEGMENTS
from treevu.services.bounds import MIN_CELL

#: Engagement below this is "disengaged" (SPEC §3's engagement score, 0–100): about the lowest
#: eighth of a typical company. Leaving the company counts as disengaging too.
DISENGAGED_BELOW: Final = 20.0
ABSENT: Final = -1

Codes = npt.NDArray[np.int8]
Floats = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Cube:
    """``segment[i, t]``: person ``user_ids[i]``'s segment code (index into SEGMENTS) in
    ``months[t]``, ``ABSENT`` without a snapshot; scores are NaN there."""

    user_ids: npt.NDArray[np.int64]
    months: list[date]
    segment: Codes
    fwi: Floats
    engagement: Floats
    wellness: Floats
    risk: Codes  # index into RISK_LEVELS, ABSENT without a snapshot
    spending: Codes  # index into SPENDING_LEVELS

    @property
    def present(self) -> npt.NDArray[np.bool_]:
        present: npt.NDArray[np.bool_] = self.segment != ABSENT
        return present

    def month_index(self, month: date) -> int | None:
        try:
            return self.months.index(month)
        except ValueError:
            return None


def month_of(day: date) -> date:
    return date(day.year, day.month, 1)


def month_label(month: date) -> str:
    return month.strftime("%Y-%m")


def add_months(month: date, n: int) -> date:
    k = month.year * 12 + month.month - 1 + n
    return date(k // 12, k % 12 + 1, 1)


def cell(n: int) -> int | str:
    """A count as shown: ``"<5"`` under ``MIN_CELL``."""
    return n if n >= MIN_CELL else f"<{MIN_CELL}"


def rate(part: int, whole: int) -> float | None:
    """``part / whole`` to 4 places, or None for a group under ``MIN_CELL`` (its rate would
    tell too much about too few)."""
    return round(part / whole, 4) if whole >= MIN_CELL else None


def transitions(cube: Cube, a: int, b: int) -> dict[str, Any]:
    """Segment → segment counts between months ``a`` and ``b``, plus who joined and left."""
    sa, sb = cube.segment[:, a], cube.segment[:, b]
    both = (sa != ABSENT) & (sb != ABSENT)
    k = len(SEGMENTS)
    counts = np.bincount(sa[both].astype(np.int64) * k + sb[both], minlength=k * k).reshape(k, k)
    joined = np.bincount(sb[(sa == ABSENT) & (sb != ABSENT)].astype(np.int64), minlength=k)
    left = np.bincount(sa[(sa != ABSENT) & (sb == ABSENT)].astype(np.int64), minlength=k)
    return {
        "from": month_label(cube.months[a]),
        "to": month_label(cube.months[b]),
        "segments": list(SEGMENTS),
        "counts": [[cell(int(n)) for n in row] for row in counts],
        "stayed": cell(int(np.trace(counts))),
        "moved": cell(int(counts.sum() - np.trace(counts))),
        "joined": {s: cell(int(joined[i])) for i, s in enumerate(SEGMENTS)},
        "left": {s: cell(int(left[i])) for i, s in enumerate(SEGMENTS)},
    }


def entry_months(cube: Cube) -> npt.NDArray[np.int64]:
    """Each person's first month with a snapshot (-1: none)."""
    present = cube.present
    first: npt.NDArray[np.int64] = present.argmax(axis=1).astype(np.int64)
    first[~present.any(axis=1)] = -1
    return first


def cohorts(cube: Cube) -> dict[str, Any]:
    """People grouped by the month of their first snapshot; for each month since: how many are
    still here, the share engaged, and the share in the segment they entered in (people gone
    count as neither). The first month's cohort holds everyone already there when the history
    starts (``leftCensored``)."""
    first = entry_months(cube)
    engaged = cube.present & (np.nan_to_num(cube.engagement, nan=-1.0) >= DISENGAGED_BELOW)
    out = []
    for c in range(len(cube.months)):
        members = np.flatnonzero(first == c)
        size = len(members)
        if size == 0:
            continue
        entered = cube.segment[members, c]
        curve = []
        for t in range(c, len(cube.months)):
            here = cube.present[members, t]
            curve.append(
                {
                    "month": month_label(cube.months[t]),
                    "offset": t - c,
                    "present": cell(int(here.sum())),
                    "retainedRate": rate(int(here.sum()), size),
                    "engagedRate": rate(int(engaged[members, t].sum()), size),
                    "sameSegmentRate": rate(int((cube.segment[members, t] == entered).sum()), size),
                }
            )
        out.append(
            {
                "entryMonth": month_label(cube.months[c]),
                "leftCensored": c == 0,
                "size": cell(size),
                "months": curve,
            }
        )
    return {"disengagedBelow": DISENGAGED_BELOW, "cohorts": out}


def churn(cube: Cube) -> dict[str, Any]:
    """Disengagement by month and segment: of the people engaged in the month before, in each
    segment, the share disengaged (engagement under :data:`DISENGAGED_BELOW`) or gone."""
    engagement = np.nan_to_num(cube.engagement, nan=-1.0)
    engaged = cube.present & (engagement >= DISENGAGED_BELOW)
    rows = []
    for t in range(1, len(cube.months)):
        base = engaged[:, t - 1]
        lost = base & ~engaged[:, t]
        gone = base & ~cube.present[:, t]
        seg = cube.segment[:, t - 1]
        for i, name in enumerate(SEGMENTS):
            at = base & (seg == i)
            n, k = int(at.sum()), int((lost & (seg == i)).sum())
            rows.append(
                {
                    "month": month_label(cube.months[t]),
                    "segment": name,
                    "engaged": cell(n),
                    "disengaged": cell(k),
                    "left": cell(int((gone & (seg == i)).sum())),
                    "rate": rate(k, n),
                }
            )
    return {"disengagedBelow": DISENGAGED_BELOW, "rows": rows}
