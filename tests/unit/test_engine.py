"""The pure engine against SPEC §3, worked by hand, and bulk == one-by-one."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from treevu.segmentation.engine import (
    InputError,
    Inputs,
    lin,
    profile_at,
    reason_codes,
    score,
    validate_record,
)
from treevu.segmentation.policy import LinearRange, default_policy

POLICY = default_policy()
BASE: dict[str, Any] = {
    "monthlyIncome": 4000,
    "monthlySpending": 3000,
    "savingsBalance": 9000,
    "monthlyDebtPayments": 800,
    "ewaAdvances30d": 1,
    "alerts30d": 1,
    "activeDays30d": 10,
    "goalsCompleted90d": 1,
    "lessonsCompleted90d": 3,
    "treePoints": 1200,
}


def one(**changes: Any) -> Any:
    record = {**BASE, **changes}
    return profile_at(score(Inputs.from_records([record]), POLICY), 0, POLICY)


def test_lin_both_directions_and_clamped() -> None:
    x = np.array([-1.0, 0.0, 0.5, 1.0, 2.0])
    assert lin(x, LinearRange(a=0, b=1)).tolist() == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert lin(x, LinearRange(a=1, b=0)).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_formulas_worked_by_hand() -> None:
    p = one()
    spend = (1.1 - 0.75) / 0.5  # ratio 0.75
    buffer = (9000 / 3000) / 6
    debt = (0.5 - 0.2) / 0.4  # ratio 0.2
    ewa = (4 - 1) / 4
    alerts = (5 - 1) / 5
    behaviour = 0.30 * spend + 0.25 * buffer + 0.20 * debt + 0.15 * ewa + 0.10 * alerts
    assert p.fwi_score == pytest.approx(100 * behaviour)
    engagement = 100 * (0.5 * 10 / 20 + 0.3 * 1 / 3 + 0.2 * 3 / 6)
    assert p.engagement_score == pytest.approx(engagement)
    assert p.wellness_score == pytest.approx(0.7 * 100 * behaviour + 0.3 * engagement)
    assert p.spending_level == "moderate"


def test_survey_blends_30_percent() -> None:
    without = one()
    with_survey = one(surveyScore=40)
    behaviour = without.fwi_score / 100
    assert with_survey.fwi_score == pytest.approx(100 * (0.7 * behaviour + 0.3 * 0.4))
    assert "survey" in with_survey.reasons and "survey" not in without.reasons


def test_caps_on_engagement_and_buffer() -> None:
    p = one(activeDays30d=30, goalsCompleted90d=9, lessonsCompleted90d=60, savingsBalance=10**7)
    assert p.engagement_score == pytest.approx(100)
    assert p.buffer_months == pytest.approx(10**7 / 3000)


@pytest.mark.parametrize(
    ("spending", "level"),
    [
        (2799, "low"),
        (2800, "moderate"),
        (3599, "moderate"),
        (3600, "high"),
        (3999, "high"),
        (4000, "excessive"),
    ],
)
def test_spending_levels(spending: float, level: str) -> None:
    assert one(monthlySpending=spending).spending_level == level


def test_zero_income_is_excessive_and_scores_no_spend_or_debt_credit() -> None:
    p = one(monthlyIncome=0)
    assert p.spending_level == "excessive"
    assert p.spend_ratio is None and p.debt_ratio is None
    buffer = (9000 / 3000) / 6
    assert p.fwi_score == pytest.approx(100 * (0.25 * buffer + 0.15 * 0.75 + 0.10 * 0.8))


def test_risk_raised_by_exactly_one_level() -> None:
    calm = one(
        monthlySpending=1000,
        savingsBalance=60000,
        monthlyDebtPayments=0,
        ewaAdvances30d=0,
        alerts30d=0,
    )
    assert calm.fwi_score >= 80 and calm.risk_level == "minimal"
    alarmed = one(
        monthlySpending=1000,
        savingsBalance=60000,
        monthlyDebtPayments=0,
        ewaAdvances30d=0,
        alerts30d=3,
    )
    assert alarmed.risk_level in ("low", "minimal")
    assert "risk_raised:alerts" in alarmed.reasons
    # fwi between 80 and 100 with alerts 3: base minimal or low, raised by one step.
    base_rank = ["minimal", "low", "medium", "high", "critical"]
    expected = "low" if alarmed.fwi_score >= 80 else "medium"
    assert alarmed.risk_level == expected
    assert base_rank.index(alarmed.risk_level) == base_rank.index(expected)


def test_risk_never_past_critical() -> None:
    p = one(
        monthlyIncome=100, monthlySpending=5000, savingsBalance=0, alerts30d=8, ewaAdvances30d=6
    )
    assert p.risk_level == "critical"
    assert p.segment == "crisis_intervention" and p.rule == "crisis"
    assert {"fwi<30", "risk=critical", "risk_raised:spending", "risk_raised:alerts"} <= set(
        p.reasons
    )


def test_each_segment_rule_with_reasons() -> None:
    champion = one(
        monthlySpending=1500,
        savingsBalance=60000,
        monthlyDebtPayments=0,
        ewaAdvances30d=0,
        alerts30d=0,
        activeDays30d=20,
        goalsCompleted90d=3,
        lessonsCompleted90d=6,
    )
    assert (champion.segment, champion.rule) == ("financial_champions", "champions")
    assert champion.intervention_type == "Retention & Advocacy"
    assert champion.reasons == ["wellness>=80", "fwi>=80", "engagement>=80"]

    rising = one(
        monthlySpending=2000,
        savingsBalance=20000,
        monthlyDebtPayments=200,
        ewaAdvances30d=0,
        alerts30d=0,
        activeDays30d=14,
        goalsCompleted90d=2,
        lessonsCompleted90d=6,
    )
    assert rising.segment == "rising_stars", rising
    assert rising.intervention_type == "Acceleration & Mentoring"

    steady = one(
        monthlySpending=2000,
        savingsBalance=20000,
        monthlyDebtPayments=200,
        ewaAdvances30d=0,
        alerts30d=0,
        activeDays30d=2,
        goalsCompleted90d=0,
        lessonsCompleted90d=0,
    )
    assert (steady.segment, steady.rule) == ("steady_performers", "steady"), steady

    at_risk = one(
        monthlySpending=3800,
        savingsBalance=500,
        monthlyDebtPayments=1200,
        ewaAdvances30d=2,
        alerts30d=2,
    )
    assert at_risk.segment == "at_risk" and at_risk.intervention_type == "Support & Education"

    fallback = one(
        monthlySpending=3300,
        savingsBalance=3000,
        monthlyDebtPayments=700,
        ewaAdvances30d=1,
        alerts30d=1,
        activeDays30d=0,
        goalsCompleted90d=0,
        lessonsCompleted90d=0,
    )
    assert 50 <= fallback.fwi_score and fallback.risk_level == "medium", fallback
    assert (fallback.segment, fallback.rule, fallback.reasons) == (
        "steady_performers",
        "fallback",
        ["fallback"],
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("monthlyIncome", -1, "negative"),
        ("monthlySpending", "12", "number"),
        ("savingsBalance", float("nan"), "finite"),
        ("monthlyDebtPayments", float("inf"), "finite"),
        ("alerts30d", 1.5, "whole"),
        ("activeDays30d", 31, "at most"),
        ("surveyScore", 101, "at most"),
        ("treePoints", True, "number"),
        ("ewaAdvances30d", None, "required"),
    ],
)
def test_bad_inputs_rejected_naming_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(InputError) as info:
        validate_record({**BASE, field: value})
    assert info.value.field == field
    assert message in str(info.value)


def test_unknown_input_rejected() -> None:
    with pytest.raises(InputError) as info:
        validate_record({**BASE, "salary": 1})
    assert info.value.field == "salary"


def test_policy_is_readable_data_with_version() -> None:
    public = POLICY.public()
    assert public["version"] == POLICY.version
    assert [r["segment"] for r in public["rules"]][:5] == [
        "crisis_intervention",
        "at_risk",
        "financial_champions",
        "rising_stars",
        "steady_performers",
    ]
    assert "fallback" in reason_codes(POLICY)


record = st.fixed_dictionaries(
    {
        "monthlyIncome": st.floats(0, 20000),
        "monthlySpending": st.floats(0, 30000),
        "savingsBalance": st.floats(0, 200000),
        "monthlyDebtPayments": st.floats(0, 10000),
        "ewaAdvances30d": st.integers(0, 10),
        "alerts30d": st.integers(0, 10),
        "surveyScore": st.one_of(st.none(), st.integers(14, 95)),
        "activeDays30d": st.integers(0, 30),
        "goalsCompleted90d": st.integers(0, 10),
        "lessonsCompleted90d": st.integers(0, 20),
        "treePoints": st.integers(0, 10000),
    }
)


@settings(max_examples=50, deadline=None)
@given(st.lists(record, min_size=1, max_size=40))
def test_bulk_equals_one_by_one(records: list[dict[str, Any]]) -> None:
    bulk = score(Inputs.from_records(records), POLICY)
    for i, r in enumerate(records):
        single = profile_at(score(Inputs.from_records([r]), POLICY), 0, POLICY)
        assert profile_at(bulk, i, POLICY) == single
        assert 0 <= single.fwi_score <= 100 and 0 <= single.wellness_score <= 100
        assert not math.isnan(single.engagement_score)
