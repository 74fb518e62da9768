"""Analytics on known data (SPEC §10): the measures on a hand-made history, the intervention
effect against the truth of a synthetic one, and the experiment analysis."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest
from scipy.stats import chi2_contingency, norm

from treevu.history import as_cube, generate_history, treated_of
from treevu.population import generate_population
from treevu.segmentation.policy import SEGMENTS, default_policy
from treevu.services.analytics import cube as C
from treevu.services.analytics.effect import Treated, estimate
from treevu.services.analytics.experiments import analyse, planned_per_arm

CRISIS, AT_RISK, STEADY = (
    SEGMENTS.index(s) for s in ("crisis_intervention", "at_risk", "steady_performers")
)
MONTHS = [date(2026, m, 1) for m in (1, 2, 3)]


def _cube(segments: list[list[int]], engagement: list[list[float]]) -> C.Cube:
    seg = np.array(segments, dtype=np.int8)
    eng = np.array(engagement, dtype=np.float32)
    eng[seg == C.ABSENT] = np.nan
    n, m = seg.shape
    return C.Cube(
        user_ids=np.arange(1, n + 1, dtype=np.int64),
        months=MONTHS[:m],
        segment=seg,
        fwi=np.where(seg == C.ABSENT, np.nan, 50.0).astype(np.float32),
        engagement=eng,
        wellness=np.where(seg == C.ABSENT, np.nan, 50.0).astype(np.float32),
        risk=np.where(seg == C.ABSENT, C.ABSENT, 2).astype(np.int8),
        spending=np.where(seg == C.ABSENT, C.ABSENT, 1).astype(np.int8),
    )


def test_transitions_count_moves_joins_and_leaves_and_hide_small_cells() -> None:
    # 7 stay steady, 6 move at_risk → crisis, 2 crisis → steady, 5 join, 5 leave.
    rows = (
        [[STEADY, STEADY]] * 7 + [[AT_RISK, CRISIS]] * 6 + [[CRISIS, STEADY]] * 2
        + [[C.ABSENT, AT_RISK]] * 5 + [[STEADY, C.ABSENT]] * 5
    )  # fmt: skip
    cube = _cube(rows, [[50.0, 50.0]] * len(rows))
    t = C.transitions(cube, 0, 1)
    assert t["from"] == "2026-01" and t["to"] == "2026-02"
    assert t["counts"][STEADY][STEADY] == 7 and t["counts"][AT_RISK][CRISIS] == 6
    assert t["counts"][CRISIS][STEADY] == "<5"  # 2 people: not shown
    assert t["counts"][CRISIS][CRISIS] == "<5"  # 0 is not shown either
    assert t["stayed"] == 7 and t["moved"] == 8
    assert t["joined"]["at_risk"] == 5 and t["left"]["steady_performers"] == 5


def test_cohorts_follow_each_entry_month_and_churn_counts_leavers_as_disengaged() -> None:
    rows = [[STEADY, STEADY, STEADY]] * 10 + [[C.ABSENT, AT_RISK, STEADY]] * 6
    engagement = [[50.0, 50.0, 50.0]] * 5 + [[50.0, 10.0, 50.0]] * 5 + [[0.0, 50.0, 50.0]] * 6
    cube = _cube(rows, engagement)
    cohorts = {c["entryMonth"]: c for c in C.cohorts(cube)["cohorts"]}
    first, joined = cohorts["2026-01"], cohorts["2026-02"]
    assert first["leftCensored"] and first["size"] == 10
    assert [m["engagedRate"] for m in first["months"]] == [1.0, 0.5, 1.0]
    assert joined["size"] == 6 and [m["sameSegmentRate"] for m in joined["months"]] == [1.0, 0.0]
    churn = {(r["month"], r["segment"]): r for r in C.churn(cube)["rows"]}
    feb = churn[("2026-02", "steady_performers")]
    assert feb["engaged"] == 10 and feb["disengaged"] == 5 and feb["rate"] == 0.5
    assert churn[("2026-03", "at_risk")]["rate"] == 0.0
    assert churn[("2026-02", "crisis_intervention")]["rate"] is None  # nobody there


@pytest.fixture(scope="module")
def synthetic() -> tuple[C.Cube, Treated, dict[int, float]]:
    population = generate_population(5000, 3)
    history = generate_history(population, default_policy(), 12, 3, date(2026, 12, 1))
    return (
        as_cube(history, population.user_id),
        treated_of(history, population.user_id),
        history.true_effect,
    )


def test_the_effect_interval_contains_the_true_effect_and_matching_balances(
    synthetic: tuple[C.Cube, Treated, dict[int, float]],
) -> None:
    cube, treated, truth = synthetic
    for horizon in (1, 3):
        result = estimate(cube, treated, horizon)
        lo, hi = result["ci95"]
        assert lo <= truth[horizon] <= hi, (result["effect"], result["ci95"], truth[horizon])
        assert hi - lo < 3.0  # an interval that says something
        before, after = result["balance"]["before"], result["balance"]["after"]
        # Treated people had lower FWI than the average crisis entrant; matched ones do not.
        assert abs(before[0]) > 0.2 and all(abs(d) < 0.1 for d in after)


def test_without_interventions_there_is_no_effect_only_a_warning(
    synthetic: tuple[C.Cube, Treated, dict[int, float]],
) -> None:
    cube, _, _ = synthetic
    result = estimate(cube, Treated(np.zeros(0, np.int64), np.zeros(0, np.int64)), 3)
    assert result["effect"] is None and result["ci95"] is None
    assert "too few people" in result["warnings"][0] and result["treated"] == "<5"


def _power(n: int, p1: float, p2: float, alpha: float) -> float:
    """Power of the two-sided two-proportion z-test with ``n`` per arm."""
    p_bar = (p1 + p2) / 2
    z_a = norm.ppf(1 - alpha / 2)
    spread = math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return float(
        norm.cdf((abs(p2 - p1) * math.sqrt(n) - z_a * math.sqrt(2 * p_bar * (1 - p_bar))) / spread)
    )


@pytest.mark.parametrize(("base", "mde"), [(0.10, 0.05), (0.30, 0.02), (0.98, 0.05)])
def test_the_planned_size_is_the_smallest_with_the_asked_power(base: float, mde: float) -> None:
    n = planned_per_arm(base, mde, 0.05, 0.8)
    p1, p2 = (base, base + mde) if base + mde <= 1 else (base - mde, base)
    assert _power(n, p1, p2, 0.05) >= 0.8 > _power(n - 1, p1, p2, 0.05)


def test_no_p_value_before_the_planned_size_then_the_chi_square_one() -> None:
    early = analyse([("A", 100, 10), ("B", 100, 20)], mde=0.05)
    assert not early["reached"] and early["comparisons"][0]["pValue"] is None
    assert early["comparisons"][0]["difference"] == 0.1
    assert "no peeking" in early["warning"] and str(early["plannedPerVariant"]) in early["warning"]
    done = analyse([("A", 2000, 200), ("B", 2000, 300)], mde=0.05)
    row = done["comparisons"][0]
    expected = chi2_contingency([[200, 1800], [300, 1700]], correction=False).pvalue
    assert done["reached"] and done["warning"] is None
    assert row["pValue"] == pytest.approx(expected, rel=1e-3) and row["significant"]
    lo, hi = row["ci95"]
    assert lo < 0.05 < hi
    assert [v["rate"] for v in done["variants"]] == [0.1, 0.15]


def test_small_arms_are_suppressed_and_one_arm_has_nothing_to_compare() -> None:
    one = analyse([("only", 3, 1)])
    assert one["variants"][0]["sent"] == "<5" and one["variants"][0]["rate"] is None
    assert one["comparisons"] == [] and "nothing to compare" in one["warning"]
