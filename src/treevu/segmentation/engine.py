"""The pure scoring engine (SPEC §3): inputs in columns, profiles out in columns.

One vectorised function, :func:`score`, serves both the one-user path (arrays of length 1) and
the bulk path (a million rows). It does no I/O and takes the policy as data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from treevu.segmentation.policy import (
    RISK_LEVELS,
    SEGMENTS,
    SPENDING_LEVELS,
    Condition,
    LinearRange,
    Policy,
)

FloatArray = npt.NDArray[np.float64]
CodeArray = npt.NDArray[np.int8]
MaskArray = npt.NDArray[np.int64]

#: The input names of SPEC §2, in the order the columns are kept.
INPUT_NAMES: Final = (
    "monthlyIncome",
    "monthlySpending",
    "savingsBalance",
    "monthlyDebtPayments",
    "ewaAdvances30d",
    "alerts30d",
    "surveyScore",
    "activeDays30d",
    "goalsCompleted90d",
    "lessonsCompleted90d",
    "treePoints",
)
#: Inputs that may be absent (NaN in the columns).
OPTIONAL_INPUTS: Final = frozenset({"surveyScore"})
#: Inputs that are counts and must be whole numbers.
COUNT_INPUTS: Final = frozenset(
    {"ewaAdvances30d", "alerts30d", "activeDays30d", "goalsCompleted90d", "lessonsCompleted90d"}
)
#: Inputs bounded above (besides >= 0).
UPPER_BOUNDS: Final[Mapping[str, float]] = {"surveyScore": 100.0, "activeDays30d": 30.0}


class InputError(ValueError):
    """An input that must not reach the formulas; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Inputs:
    """Employee inputs as float64 columns of equal length; ``survey_score`` is NaN when absent."""

    monthly_income: FloatArray
    monthly_spending: FloatArray
    savings_balance: FloatArray
    monthly_debt_payments: FloatArray
    ewa_advances_30d: FloatArray
    alerts_30d: FloatArray
    survey_score: FloatArray
    active_days_30d: FloatArray
    goals_completed_90d: FloatArray
    lessons_completed_90d: FloatArray
    tree_points: FloatArray

    def __len__(self) -> int:
        return len(self.monthly_income)

    @classmethod
    def from_columns(cls, columns: Sequence[FloatArray]) -> Inputs:
        """Build from columns in :data:`INPUT_NAMES` order (no validation; see ``validate``)."""
        return cls(*(np.asarray(c, dtype=np.float64) for c in columns))

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]]) -> Inputs:
        """Validate camelCase records (API / CLI shape) and turn them into columns."""
        rows = [validate_record(r) for r in records]
        cols = [
            np.fromiter((row[name] for row in rows), dtype=np.float64, count=len(rows))
            for name in INPUT_NAMES
        ]
        return cls.from_columns(cols)

    def row(self, i: int) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, f in zip(INPUT_NAMES, fields(self), strict=True):
            v = float(getattr(self, f.name)[i])
            out[name] = None if math.isnan(v) else v
        return out


def validate_record(record: Mapping[str, Any]) -> dict[str, float]:
    """Check one camelCase input record; absent optional inputs become NaN.

    Rejects unknown names, missing required inputs, text, booleans, NaN/inf, negative amounts,
    fractional counts and out-of-range scores, raising :class:`InputError` naming the field.
    """
    unknown = sorted(set(record) - set(INPUT_NAMES))
    if unknown:
        raise InputError(unknown[0], "unknown input")
    out: dict[str, float] = {}
    for name in INPUT_NAMES:
        value = record.get(name)
        if value is None:
            if name in OPTIONAL_INPUTS:
                out[name] = math.nan
                continue
            raise InputError(name, "is required")
        out[name] = check_number(name, value)
    return out


def check_number(name: str, value: object) -> float:
    """One input value: a finite, non-negative number within its bounds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(name, f"must be a number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise InputError(name, f"must be a finite number, got {value!r}")
    if number < 0:
        raise InputError(name, f"must not be negative, got {value!r}")
    upper = UPPER_BOUNDS.get(name)
    if upper is not None and number > upper:
        raise InputError(name, f"must be at most {upper:g}, got {value!r}")
    if name in COUNT_INPUTS and not number.is_integer():
        raise InputError(name, f"must be a whole number, got {value!r}")
    return number


@dataclass(frozen=True, slots=True)
class Profiles:
    """Scored profiles as columns; categorical fields are int8 codes into the policy tuples."""

    fwi_score: FloatArray
    engagement_score: FloatArray
    wellness_score: FloatArray
    spending_level: CodeArray  # index into SPENDING_LEVELS
    risk_level: CodeArray  # index into RISK_LEVELS
    segment: CodeArray  # index into SEGMENTS
    rule: CodeArray  # index into policy.rules
    reason_mask: MaskArray  # bit i set: reason_codes(policy)[i] applies
    spend_ratio: FloatArray  # NaN when income <= 0
    debt_ratio: FloatArray  # NaN when income <= 0
    buffer_months: FloatArray

    def __len__(self) -> int:
        return len(self.fwi_score)


def lin(x: FloatArray, r: LinearRange) -> FloatArray:
    """1 at ``x = a``, 0 at ``x = b``, clamped to [0, 1]; works for a < b and a > b."""
    with np.errstate(over="ignore"):  # huge x overflows to ±inf, which clips correctly
        return np.clip((x - r.b) / (r.a - r.b), 0.0, 1.0)


RISE_SPENDING: Final = "risk_raised:spending"
RISE_ALERTS: Final = "risk_raised:alerts"
SURVEY_USED: Final = "survey"


def reason_codes(policy: Policy) -> tuple[str, ...]:
    """Every reason code the policy can record, in bit order of ``Profiles.reason_mask``."""
    codes: list[str] = []
    for rule in policy.rules:
        codes.extend(c.code for c in rule.conditions)
        if rule.match == "always":
            codes.append(rule.name)
    codes.extend((RISE_SPENDING, RISE_ALERTS, SURVEY_USED))
    seen: dict[str, None] = dict.fromkeys(codes)
    if len(seen) > 63:
        raise ValueError("a policy may define at most 63 reason codes")
    return tuple(seen)


def reasons_of(mask: int, codes: Sequence[str]) -> list[str]:
    return [code for i, code in enumerate(codes) if mask >> i & 1]


def score(inputs: Inputs, policy: Policy) -> Profiles:
    """Score every row of ``inputs`` under ``policy`` (SPEC §3, exactly)."""
    n = len(inputs)
    income = inputs.monthly_income
    spending = inputs.monthly_spending
    has_income = income > 0
    safe_income = np.where(has_income, income, 1.0)

    # A tiny positive income gives an infinite ratio: lin() maps it to 0, as it should.
    with np.errstate(over="ignore"):
        spend_ratio = np.where(has_income, spending / safe_income, np.nan)
        debt_ratio = np.where(has_income, inputs.monthly_debt_payments / safe_income, np.nan)
    spend = np.where(
        has_income, lin(np.nan_to_num(spend_ratio, posinf=np.inf), policy.spend_ratio), 0.0
    )
    debt = np.where(
        has_income, lin(np.nan_to_num(debt_ratio, posinf=np.inf), policy.debt_ratio), 0.0
    )
    buffer_months = inputs.savings_balance / np.maximum(spending, 1.0)
    buffer = np.clip(buffer_months / policy.buffer_months_full, 0.0, 1.0)
    ewa = lin(inputs.ewa_advances_30d, policy.ewa_advances)
    alerts = lin(inputs.alerts_30d, policy.alerts)

    w = policy.behaviour_weights
    behaviour = (
        w["spend"] * spend
        + w["buffer"] * buffer
        + w["debt"] * debt
        + w["ewa"] * ewa
        + w["alerts"] * alerts
    )
    has_survey = ~np.isnan(inputs.survey_score)
    sw = policy.survey_weight
    fwi = 100.0 * np.where(
        has_survey,
        (1.0 - sw) * behaviour + sw * np.nan_to_num(inputs.survey_score) / 100.0,
        behaviour,
    )

    engagement_inputs = {
        "activeDays30d": inputs.active_days_30d,
        "goalsCompleted90d": inputs.goals_completed_90d,
        "lessonsCompleted90d": inputs.lessons_completed_90d,
    }
    engagement = np.zeros(n)
    for name, (cap, weight) in policy.engagement.items():
        engagement += weight * np.minimum(engagement_inputs[name], cap) / cap
    engagement *= 100.0
    ww = policy.wellness_weights
    wellness = ww["fwi"] * fwi + ww["engagement"] * engagement

    spending_level = _banded(
        np.where(has_income, spend_ratio, np.inf),
        policy.spending_bounds,
        policy.spending_otherwise,
        SPENDING_LEVELS,
    )
    base_risk = _banded(fwi, policy.risk.fwi_bounds, policy.risk.otherwise, RISK_LEVELS)
    raised_by_spending = spending_level == SPENDING_LEVELS.index(
        policy.risk.raise_on_spending_level
    )
    raised_by_alerts = inputs.alerts_30d >= policy.risk.raise_on_alerts_at_least
    raise_risk = raised_by_spending | raised_by_alerts
    risk_level = np.minimum(base_risk + raise_risk, len(RISK_LEVELS) - 1).astype(np.int8)

    values: dict[str, FloatArray | CodeArray] = {
        "fwiScore": fwi,
        "wellnessScore": wellness,
        "engagementScore": engagement,
        "riskLevel": risk_level,
    }
    codes = reason_codes(policy)
    bit = {code: np.int64(1) << np.int64(i) for i, code in enumerate(codes)}
    segment = np.full(n, -1, dtype=np.int8)
    rule_index = np.full(n, -1, dtype=np.int8)
    reason_mask = np.zeros(n, dtype=np.int64)
    undecided = np.ones(n, dtype=bool)
    for index, rule in enumerate(policy.rules):
        held = [(c, _holds(c, values)) for c in rule.conditions]
        if rule.match == "always":
            matched = undecided.copy()
            rule_bits = np.full(n, bit[rule.name], dtype=np.int64)
        else:
            combine = np.logical_or if rule.match == "any" else np.logical_and
            matched = undecided & combine.reduce([h for _, h in held])
            rule_bits = np.zeros(n, dtype=np.int64)
            for c, h in held:
                rule_bits |= np.where(h, bit[c.code], np.int64(0))
        segment[matched] = SEGMENTS.index(rule.segment)
        rule_index[matched] = index
        reason_mask[matched] |= rule_bits[matched]
        undecided &= ~matched
    if undecided.any():
        raise ValueError("the policy's rules must end with a rule that always matches")
    reason_mask |= np.where(raised_by_spending, bit[RISE_SPENDING], np.int64(0))
    reason_mask |= np.where(raised_by_alerts, bit[RISE_ALERTS], np.int64(0))
    reason_mask |= np.where(has_survey, bit[SURVEY_USED], np.int64(0))

    return Profiles(
        fwi_score=fwi,
        engagement_score=engagement,
        wellness_score=wellness,
        spending_level=spending_level,
        risk_level=risk_level,
        segment=segment,
        rule=rule_index,
        reason_mask=reason_mask,
        spend_ratio=spend_ratio,
        debt_ratio=debt_ratio,
        buffer_months=buffer_months,
    )


def _banded(
    x: FloatArray, bounds: Sequence[tuple[float, str]], otherwise: str, levels: Sequence[str]
) -> CodeArray:
    """Code of the first band whose upper bound ``x`` is below, else ``otherwise``."""
    out = np.full(len(x), levels.index(otherwise), dtype=np.int8)
    decided = np.zeros(len(x), dtype=bool)
    for bound, level in bounds:
        hit = ~decided & (x < bound)
        out[hit] = levels.index(level)
        decided |= hit
    return out


def _holds(c: Condition, values: Mapping[str, FloatArray | CodeArray]) -> npt.NDArray[np.bool_]:
    x = values[c.field]
    if c.field == "riskLevel":
        wanted = [c.value] if isinstance(c.value, str) else c.value
        if not isinstance(wanted, list):
            raise ValueError(f"rule condition {c.code}: riskLevel takes level names")
        codes = [RISK_LEVELS.index(str(v)) for v in wanted]
        if c.op == "==" or c.op == "in":
            return np.isin(x, codes)
        raise ValueError(f"rule condition {c.code}: riskLevel supports == and in")
    if isinstance(c.value, str | list):
        raise ValueError(f"rule condition {c.code}: {c.field} takes a number")
    v = float(c.value)
    match c.op:
        case "<":
            return np.asarray(x < v)
        case "<=":
            return np.asarray(x <= v)
        case ">":
            return np.asarray(x > v)
        case ">=":
            return np.asarray(x >= v)
        case "==":
            return np.asarray(x == v)
    raise ValueError(f"rule condition {c.code}: unsupported operator {c.op}")


@dataclass(frozen=True, slots=True)
class Profile:
    """One user's profile, ready for the API (unrounded scores)."""

    fwi_score: float
    engagement_score: float
    wellness_score: float
    spending_level: str
    risk_level: str
    segment: str
    intervention_type: str
    rule: str
    reasons: list[str]
    spend_ratio: float | None
    debt_ratio: float | None
    buffer_months: float


def profile_at(profiles: Profiles, i: int, policy: Policy) -> Profile:
    """Row ``i`` of ``profiles`` as named values."""
    rule = policy.rules[int(profiles.rule[i])]
    spend_ratio = float(profiles.spend_ratio[i])
    debt_ratio = float(profiles.debt_ratio[i])
    return Profile(
        fwi_score=float(profiles.fwi_score[i]),
        engagement_score=float(profiles.engagement_score[i]),
        wellness_score=float(profiles.wellness_score[i]),
        spending_level=SPENDING_LEVELS[int(profiles.spending_level[i])],
        risk_level=RISK_LEVELS[int(profiles.risk_level[i])],
        segment=SEGMENTS[int(profiles.segment[i])],
        intervention_type=rule.intervention_type,
        rule=rule.name,
        reasons=reasons_of(int(profiles.reason_mask[i]), reason_codes(policy)),
        spend_ratio=None if math.isnan(spend_ratio) else spend_ratio,
        debt_ratio=None if math.isnan(debt_ratio) else debt_ratio,
        buffer_months=float(profiles.buffer_months[i]),
    )
