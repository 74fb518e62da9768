from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest

from treevu.segmentation.engine import Inputs, Profiles, score
from treevu.segmentation.policy import SEGMENTS, default_policy
from treevu.segmentation.recommendations import (
    CATALOG,
    TRIGGERS,
    Recommendation,
    eligibility,
    rank_recommendations,
    ranked_indices,
    recommendation_counts,
)

# A financial champion with a recent survey: no trigger fires.
HEALTHY: dict[str, Any] = {
    "monthlyIncome": 5000,
    "monthlySpending": 2500,
    "savingsBalance": 30000,
    "monthlyDebtPayments": 0,
    "ewaAdvances30d": 0,
    "alerts30d": 0,
    "surveyScore": 90,
    "activeDays30d": 20,
    "goalsCompleted90d": 3,
    "lessonsCompleted90d": 6,
    "treePoints": 1200,
}


def scored(*records: dict[str, Any]) -> tuple[Inputs, Profiles]:
    inputs = Inputs.from_records(records)
    return inputs, score(inputs, default_policy())


def person(**overrides: Any) -> tuple[Inputs, Profiles]:
    return scored({**HEALTHY, **overrides})


def ids(ranked: list[Any]) -> list[str]:
    return [r.item.id for r in ranked]


def random_records(count: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(count):
        income = float(rng.choice([0.0, float(rng.integers(800, 9000))], p=[0.05, 0.95]))
        records.append(
            {
                "monthlyIncome": income,
                "monthlySpending": float(rng.integers(300, 9000)),
                "savingsBalance": float(rng.integers(0, 40000)),
                "monthlyDebtPayments": float(rng.integers(0, 3500)),
                "ewaAdvances30d": int(rng.integers(0, 6)),
                "alerts30d": int(rng.integers(0, 7)),
                "surveyScore": None if rng.random() < 0.3 else float(rng.integers(0, 101)),
                "activeDays30d": int(rng.integers(0, 31)),
                "goalsCompleted90d": int(rng.integers(0, 5)),
                "lessonsCompleted90d": int(rng.integers(0, 8)),
                "treePoints": int(rng.integers(0, 6000)),
            }
        )
    return records


def test_catalog_size_and_segment_floor() -> None:
    assert len(CATALOG) >= 24
    theme_counts = Counter(segment for item in CATALOG for segment in item.segments)
    for segment in SEGMENTS:
        assert theme_counts[segment] >= 3, segment


def test_catalog_ids_unique_and_references_known() -> None:
    catalog_ids = [item.id for item in CATALOG]
    assert len(set(catalog_ids)) == len(catalog_ids)
    for item in CATALOG:
        assert set(item.segments) <= set(SEGMENTS)
        assert set(item.triggers) <= set(TRIGGERS)
        assert item.title and item.description and item.category


def test_spec_themes_are_covered() -> None:
    themes = {
        "financial_champions": {"leadership", "benefits"},
        "rising_stars": {"wealth_planning", "mentorship"},
        "steady_performers": {"investing", "savings"},
        "at_risk": {"counseling", "budgeting"},
        "crisis_intervention": {"debt", "emergency"},
    }
    for segment, categories in themes.items():
        present = {item.category for item in CATALOG if segment in item.segments}
        assert categories <= present, segment


def test_recommendation_rejects_unknown_trigger_and_segment() -> None:
    with pytest.raises(ValueError, match="unknown trigger"):
        Recommendation("x", "X", "x", "budgeting", (), ("no_such_trigger",), 1)
    with pytest.raises(ValueError, match="unknown segment"):
        Recommendation("x", "X", "x", "budgeting", ("vip",), (), 1)
    with pytest.raises(ValueError, match="slug"):
        Recommendation("Not A Slug", "X", "x", "budgeting", ("at_risk",), (), 1)


def test_duplicate_catalog_ids_rejected() -> None:
    inputs, profiles = person()
    with pytest.raises(ValueError, match="unique"):
        eligibility(inputs, profiles, (CATALOG[0], CATALOG[0]))


def test_healthy_champion_gets_theme_items_only() -> None:
    inputs, profiles = person()
    assert SEGMENTS[int(profiles.segment[0])] == "financial_champions"
    ranked = rank_recommendations(inputs, profiles, 0, limit=len(CATALOG))
    assert ranked
    assert {r.reason for r in ranked} == {"segment:financial_champions"}
    assert ids(ranked)[:2] == ["wellness-ambassador-program", "exclusive-member-benefits"]


@pytest.mark.parametrize(
    ("overrides", "trigger", "item_id"),
    [
        ({"monthlySpending": 5000}, "excessive_spending", "budget-optimization"),
        ({"monthlyDebtPayments": 2100}, "high_debt", "debt-management-plan"),
        ({"savingsBalance": 2000}, "low_buffer", "starter-emergency-fund"),
        ({"ewaAdvances30d": 2}, "ewa_reliance", "ewa-reduction-plan"),
        ({"alerts30d": 3}, "frequent_alerts", "spending-alerts-review"),
        ({"surveyScore": None}, "no_recent_survey", "wellness-check-in-survey"),
        (
            {"activeDays30d": 2, "goalsCompleted90d": 0, "lessonsCompleted90d": 0},
            "low_engagement",
            "money-basics-course",
        ),
    ],
)
def test_trigger_adds_its_item(overrides: dict[str, Any], trigger: str, item_id: str) -> None:
    inputs, profiles = person(**overrides)
    assert bool(TRIGGERS[trigger](inputs, profiles)[0])
    segment = SEGMENTS[int(profiles.segment[0])]
    item = next(i for i in CATALOG if i.id == item_id)
    assert segment not in item.segments  # eligible through the trigger, not the theme
    ranked = rank_recommendations(inputs, profiles, 0, limit=len(CATALOG))
    reasons = {r.item.id: r.reason for r in ranked}
    assert reasons[item_id] == trigger
    # Triggered items come before theme items.
    assert ranked[0].reason in TRIGGERS


def test_triggers_do_not_fire_for_healthy_person() -> None:
    inputs, profiles = person()
    for name, trigger in TRIGGERS.items():
        assert not bool(trigger(inputs, profiles)[0]), name


def test_debt_without_income_is_high_debt() -> None:
    inputs, profiles = person(monthlyIncome=0, monthlyDebtPayments=100)
    assert bool(TRIGGERS["high_debt"](inputs, profiles)[0])
    inputs, profiles = person(monthlyIncome=0, monthlyDebtPayments=0)
    assert not bool(TRIGGERS["high_debt"](inputs, profiles)[0])


def test_triggered_items_ordered_by_severity() -> None:
    inputs, profiles = person(monthlyDebtPayments=2100, ewaAdvances30d=3, savingsBalance=1000)
    ranked = rank_recommendations(inputs, profiles, 0, limit=len(CATALOG))
    severity = list(TRIGGERS)
    triggered = [severity.index(r.reason) for r in ranked if r.reason in TRIGGERS]
    assert triggered == sorted(triggered)
    assert {"high_debt", "low_buffer", "ewa_reliance"} <= {r.reason for r in ranked}
    themed = [r for r in ranked if r.reason.startswith("segment:")]
    assert ranked[-len(themed) :] == themed
    keys = [(-r.item.priority, r.item.id) for r in themed]
    assert keys == sorted(keys)


def test_item_with_several_triggers_reports_the_most_severe() -> None:
    both = Recommendation("both", "Both", "x", "budgeting", (), ("low_buffer", "high_debt"), 1)
    inputs, profiles = person(monthlyDebtPayments=2100, savingsBalance=1000)
    (ranked,) = rank_recommendations(inputs, profiles, 0, catalog=(both,))
    assert ranked.reason == "high_debt"


def test_exclusion_skips_item_and_next_takes_its_place() -> None:
    inputs, profiles = person(monthlySpending=5000, ewaAdvances30d=2)
    full = rank_recommendations(inputs, profiles, 0, limit=len(CATALOG))
    top = rank_recommendations(inputs, profiles, 0, limit=3)
    assert ids(top) == ids(full)[:3]
    dismissed = {ids(top)[0], ids(top)[2], "retired-item"}
    after = rank_recommendations(inputs, profiles, 0, excluded=dismissed, limit=3)
    assert ids(after) == [i for i in ids(full) if i not in dismissed][:3]
    assert [r.rank for r in after] == [1, 2, 3]
    assert not dismissed & set(ids(after))


def test_ranking_is_deterministic() -> None:
    records = random_records(40, seed=7)
    inputs, profiles = scored(*records)
    again_inputs, again_profiles = scored(*records)
    for row in range(len(records)):
        first = rank_recommendations(inputs, profiles, row)
        assert first == rank_recommendations(inputs, profiles, row)
        assert first == rank_recommendations(again_inputs, again_profiles, row)
        reordered = rank_recommendations(inputs, profiles, row, catalog=CATALOG[::-1])
        assert [(r.item, r.rank, r.reason) for r in reordered] == [
            (r.item, r.rank, r.reason) for r in first
        ]


@pytest.mark.parametrize("limit", [0, 1, 3, 5, 100])
def test_limit_is_honoured(limit: int) -> None:
    inputs, profiles = person(monthlySpending=5000, ewaAdvances30d=2, surveyScore=None)
    available = int(recommendation_counts(inputs, profiles)[0])
    ranked = rank_recommendations(inputs, profiles, 0, limit=limit)
    assert len(ranked) == min(limit, available)
    assert [r.rank for r in ranked] == list(range(1, len(ranked) + 1))


def test_negative_limit_rejected() -> None:
    inputs, profiles = person()
    with pytest.raises(ValueError, match="limit"):
        rank_recommendations(inputs, profiles, 0, limit=-1)


def test_eligibility_row_matches_full_ranking() -> None:
    inputs, profiles = scored(*random_records(60, seed=11))
    matrix = eligibility(inputs, profiles)
    assert matrix.shape == (60, len(CATALOG))
    assert matrix.dtype == np.bool_
    for row in range(60):
        expected = {CATALOG[j].id for j in np.flatnonzero(matrix[row])}
        ranked = rank_recommendations(inputs, profiles, row, limit=len(CATALOG))
        assert set(ids(ranked)) == expected
        assert len(ranked) == len(expected)


def test_counts_match_eligibility_sums() -> None:
    inputs, profiles = scored(*random_records(60, seed=13))
    counts = recommendation_counts(inputs, profiles)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, eligibility(inputs, profiles).sum(axis=1))
    assert (counts >= 3).all()  # every segment has at least three theme items


def test_vectorised_path_equals_per_row() -> None:
    records = random_records(300, seed=3)
    inputs, profiles = scored(*records)
    assert set(profiles.segment.tolist()) == set(range(len(SEGMENTS)))
    matrix = eligibility(inputs, profiles)
    order = ranked_indices(inputs, profiles, limit=len(CATALOG))
    for row, record in enumerate(records):
        one_inputs, one_profiles = scored(record)
        np.testing.assert_array_equal(matrix[row], eligibility(one_inputs, one_profiles)[0])
        ranked = rank_recommendations(one_inputs, one_profiles, 0, limit=len(CATALOG))
        assert [CATALOG[j].id for j in order[row] if j >= 0] == ids(ranked)
        assert ranked == rank_recommendations(inputs, profiles, row, limit=len(CATALOG))


def test_ranked_indices_with_exclusion_mask() -> None:
    inputs, profiles = scored(*random_records(50, seed=5))
    rng = np.random.default_rng(5)
    excluded = rng.random((50, len(CATALOG))) < 0.2
    order = ranked_indices(inputs, profiles, excluded=excluded, limit=4)
    assert order.shape == (50, 4)
    for row in range(50):
        dismissed = {CATALOG[j].id for j in np.flatnonzero(excluded[row])}
        ranked = rank_recommendations(inputs, profiles, row, excluded=dismissed, limit=4)
        assert [CATALOG[j].id for j in order[row] if j >= 0] == ids(ranked)


def test_empty_inputs() -> None:
    inputs, profiles = scored()
    assert eligibility(inputs, profiles).shape == (0, len(CATALOG))
    assert recommendation_counts(inputs, profiles).shape == (0,)
    assert ranked_indices(inputs, profiles).shape == (0, 5)
