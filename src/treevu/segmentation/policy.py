"""The segmentation policy as versioned data (SPEC §3).

Weights, ranges, thresholds and the ordered segment rules live here as plain data so that the
one-user path and the bulk path share them, an admin can read the active policy over the API,
and every stored profile records which rule placed it (``rule``) and why (``reasons``).
"""

from __future__ import annotations

from typing import Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

#: The five segments of SPEC §3 — the one place they are spelled.
SegmentName = Literal[
    "crisis_intervention", "at_risk", "financial_champions", "rising_stars", "steady_performers"
]
SEGMENTS: Final[tuple[SegmentName, ...]] = get_args(SegmentName)
#: The code of ``crisis_intervention`` in SEGMENTS (stored and staged segments are codes).
CRISIS: Final = SEGMENTS.index("crisis_intervention")
SPENDING_LEVELS: Final = ("low", "moderate", "high", "excessive")
#: Ordered from the least to the most risky; a risk "raise" moves one step right.
RISK_LEVELS: Final = ("minimal", "low", "medium", "high", "critical")

Field_ = Literal["fwiScore", "wellnessScore", "engagementScore", "riskLevel"]
Op = Literal["<", "<=", ">", ">=", "==", "in"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LinearRange(_Frozen):
    """``lin(x, a, b)``: 1 at ``x = a``, 0 at ``x = b``, clamped to [0, 1]."""

    a: float
    b: float


class Condition(_Frozen):
    """One test on a profile field; ``code`` is the reason code recorded when it holds."""

    field: Field_
    op: Op
    value: float | str | list[str]
    code: str


class Rule(_Frozen):
    name: str
    segment: str
    intervention_type: str = Field(alias="interventionType")
    match: Literal["any", "all", "always"]
    conditions: list[Condition] = []


class RiskPolicy(_Frozen):
    #: fwiScore below each bound gives that level, checked in order; else the last level.
    fwi_bounds: list[tuple[float, str]] = Field(alias="fwiBounds")
    otherwise: str
    raise_on_spending_level: str = Field(alias="raiseOnSpendingLevel")
    raise_on_alerts_at_least: float = Field(alias="raiseOnAlertsAtLeast")


class Policy(_Frozen):
    """A complete, versioned segmentation policy."""

    version: str
    behaviour_weights: dict[str, float] = Field(alias="behaviourWeights")
    spend_ratio: LinearRange = Field(alias="spendRatio")
    debt_ratio: LinearRange = Field(alias="debtRatio")
    ewa_advances: LinearRange = Field(alias="ewaAdvances")
    alerts: LinearRange
    buffer_months_full: float = Field(alias="bufferMonthsFull")
    survey_weight: float = Field(alias="surveyWeight")
    engagement: dict[str, tuple[float, float]]
    wellness_weights: dict[str, float] = Field(alias="wellnessWeights")
    spending_bounds: list[tuple[float, str]] = Field(alias="spendingBounds")
    spending_otherwise: str = Field(alias="spendingOtherwise")
    risk: RiskPolicy
    rules: list[Rule]

    def public(self) -> dict[str, Any]:
        """The policy as the API shows it (camelCase, JSON-ready)."""
        return self.model_dump(by_alias=True, mode="json")


DEFAULT_POLICY_DATA: Final[dict[str, Any]] = {
    "version": "2026-11-v1",
    "behaviourWeights": {"spend": 0.30, "buffer": 0.25, "debt": 0.20, "ewa": 0.15, "alerts": 0.10},
    "spendRatio": {"a": 0.6, "b": 1.1},
    "debtRatio": {"a": 0.1, "b": 0.5},
    "ewaAdvances": {"a": 0, "b": 4},
    "alerts": {"a": 0, "b": 5},
    "bufferMonthsFull": 6,
    "surveyWeight": 0.3,
    # input -> (cap, weight): engagement = 100 * sum(weight * min(x, cap) / cap)
    "engagement": {
        "activeDays30d": (20, 0.5),
        "goalsCompleted90d": (3, 0.3),
        "lessonsCompleted90d": (6, 0.2),
    },
    "wellnessWeights": {"fwi": 0.7, "engagement": 0.3},
    "spendingBounds": [(0.7, "low"), (0.9, "moderate"), (1.0, "high")],
    "spendingOtherwise": "excessive",
    "risk": {
        "fwiBounds": [(30, "critical"), (50, "high"), (65, "medium"), (80, "low")],
        "otherwise": "minimal",
        "raiseOnSpendingLevel": "excessive",
        "raiseOnAlertsAtLeast": 3,
    },
    "rules": [
        {
            "name": "crisis",
            "segment": "crisis_intervention",
            "interventionType": "Emergency Counseling",
            "match": "any",
            "conditions": [
                {"field": "fwiScore", "op": "<", "value": 30, "code": "fwi<30"},
                {"field": "riskLevel", "op": "==", "value": "critical", "code": "risk=critical"},
            ],
        },
        {
            "name": "at_risk",
            "segment": "at_risk",
            "interventionType": "Support & Education",
            "match": "any",
            "conditions": [
                {"field": "fwiScore", "op": "<", "value": 50, "code": "fwi<50"},
                {"field": "riskLevel", "op": "==", "value": "high", "code": "risk=high"},
            ],
        },
        {
            "name": "champions",
            "segment": "financial_champions",
            "interventionType": "Retention & Advocacy",
            "match": "all",
            "conditions": [
                {"field": "wellnessScore", "op": ">=", "value": 80, "code": "wellness>=80"},
                {"field": "fwiScore", "op": ">=", "value": 80, "code": "fwi>=80"},
                {"field": "engagementScore", "op": ">=", "value": 80, "code": "engagement>=80"},
            ],
        },
        {
            "name": "rising_stars",
            "segment": "rising_stars",
            "interventionType": "Acceleration & Mentoring",
            "match": "all",
            "conditions": [
                {"field": "wellnessScore", "op": ">=", "value": 70, "code": "wellness>=70"},
                {"field": "engagementScore", "op": ">=", "value": 70, "code": "engagement>=70"},
            ],
        },
        {
            "name": "steady",
            "segment": "steady_performers",
            "interventionType": "Maintenance & Optimization",
            "match": "all",
            "conditions": [
                {"field": "wellnessScore", "op": ">=", "value": 60, "code": "wellness>=60"},
                {
                    "field": "riskLevel",
                    "op": "in",
                    "value": ["low", "minimal"],
                    "code": "risk<=low",
                },
            ],
        },
        {
            "name": "fallback",
            "segment": "steady_performers",
            "interventionType": "Maintenance & Optimization",
            "match": "always",
            "conditions": [],
        },
    ],
}


def default_policy() -> Policy:
    """The active policy shipped with this version."""
    return Policy.model_validate(DEFAULT_POLICY_DATA)
