"""A synthetic monthly history with known effects (``treevu seed --history-months N``).

Pure numpy, like ``population``: the company drawn there is today's; this draws the ``N``
months before it, scored month by month with the real engine, so that the analytics of SPEC §10
can be checked against effects that are known exactly. ``docs/analytics.md`` lists them:

- **Seasonal drift**: spending rises towards December and falls towards June (±5%).
- **Noise**: spending and savings wander month to month (AR(1), correlation 0.6).
- **Disengagement**: a fifth of the people drift away (their activity fades by a tenth a month).
- **Joining and leaving**: a quarter joined during the window; an eighth leave before today.
- **Interventions**: the first time someone enters ``crisis_intervention``, an intervention
  opens with a probability that depends only on what the snapshot shows (lower FWI and higher
  engagement: more likely), so matching on the snapshot can remove the selection. Counseling
  cuts their debt payments by a third and adds half a month of spending to their savings. Both
  worlds are scored — with and without counseling — so the true average effect on the treated
  of each horizon is known exactly (:attr:`History.true_effect`).
- **Campaigns**: :func:`campaign_outcomes` draws conversions with a known uplift of one variant
  over the other, and an A/A campaign where both convert alike.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from treevu.population import Population
from treevu.segmentation.engine import Inputs, Profiles, score
from treevu.segmentation.policy import CRISIS, Policy
from treevu.services.analytics.cube import add_months, month_of

ABSENT: Final = -1
SEASON_AMPLITUDE: Final = 0.05
NOISE_RHO: Final = 0.6
SPENDING_NOISE: Final = 0.08
SAVINGS_NOISE: Final = 0.15
DRIFTER_SHARE: Final = 0.20
DRIFT_PER_MONTH: Final = 0.10
JOINER_SHARE: Final = 0.25
LEAVER_SHARE: Final = 0.125
#: What counseling does to a person's inputs from the month after it opens.
DEBT_CUT: Final = 1 / 3
SAVINGS_ADDED_MONTHS: Final = 0.5
#: Treatment probability: sigmoid(a + b·(30 − FWI) + c·(engagement − 50)).
TREAT_LOGIT: Final = (-0.2, 0.06, 0.02)
HORIZONS: Final = range(1, 7)

#: Campaign experiments: conversion rates of the reference variant and the uplift of the other.
BASE_CONVERSION: Final = 0.10
TRUE_UPLIFT: Final = 0.05

Int64Array = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class History:
    """Months ``0 … N-1`` are the past, month ``N`` is today (its inputs are
    ``current_inputs``). Arrays are (people with inputs) × (N + 1)."""

    months: list[date]
    rows: Int64Array  # index into the population of each person here
    present: npt.NDArray[np.bool_]
    profiles: list[Profiles]  # the observed world, per month (every person, present or not)
    treated_month: Int64Array  # month the intervention opened, -1 for none
    current_inputs: Inputs  # today's inputs of these people, counseling included
    leavers: npt.NDArray[np.bool_]  # gone before today
    entry_month: Int64Array
    true_effect: dict[int, float]  # horizon → true mean effect on FWI of the treated


def _season(months: list[date]) -> FloatArray:
    """Spending factor per month, 1 today: highest in December, lowest in June."""
    phase = np.array([2 * np.pi * (m.month - 12) / 12 for m in months])
    factor: FloatArray = 1.0 + SEASON_AMPLITUDE * (np.cos(phase) - np.cos(phase[-1]))
    return factor


def _ar1(rng: np.random.Generator, n: int, steps: int) -> FloatArray:
    """AR(1) paths of unit variance ending at 0 today (today's inputs are the population's)."""
    eps = np.zeros((n, steps))
    eps[:, 0] = rng.standard_normal(n)
    for t in range(1, steps):
        eps[:, t] = NOISE_RHO * eps[:, t - 1] + np.sqrt(1 - NOISE_RHO**2) * rng.standard_normal(n)
    result: FloatArray = eps - eps[:, -1:]
    return result


def _counseled(inputs: Inputs, who: npt.NDArray[np.bool_]) -> Inputs:
    return replace(
        inputs,
        monthly_debt_payments=np.where(
            who, inputs.monthly_debt_payments * (1 - DEBT_CUT), inputs.monthly_debt_payments
        ),
        savings_balance=np.where(
            who,
            inputs.savings_balance + SAVINGS_ADDED_MONTHS * inputs.monthly_spending,
            inputs.savings_balance,
        ),
    )


def _take(inputs: Inputs, rows: Int64Array) -> Inputs:
    return Inputs(*(getattr(inputs, f)[rows] for f in Inputs.__dataclass_fields__))


def generate_history(
    population: Population, policy: Policy, n_months: int, seed: int, today: date
) -> History:
    """The ``n_months`` before ``today``'s month, for everyone with inputs (see the module)."""
    rng = np.random.default_rng([seed, 20261201])
    rows = np.flatnonzero(population.has_inputs).astype(np.int64)
    n, steps = len(rows), n_months + 1
    months = [add_months(month_of(today), k - n_months) for k in range(steps)]
    base = _take(population.inputs, rows)

    joiner = rng.random(n) < JOINER_SHARE
    entry = np.where(joiner, rng.integers(1, max(n_months, 1) + 1, n), 0).astype(np.int64)
    entry = np.minimum(entry, n_months)
    leaver = (rng.random(n) < LEAVER_SHARE) & (entry < n_months)
    exit_ = np.where(leaver, rng.integers(np.minimum(entry + 1, n_months), n_months + 1), steps)
    exit_ = exit_.astype(np.int64)
    t_idx = np.arange(steps)
    present = (t_idx >= entry[:, None]) & (t_idx < exit_[:, None])

    season = _season(months)
    spend_noise = np.exp(SPENDING_NOISE * _ar1(rng, n, steps))
    save_noise = np.exp(SAVINGS_NOISE * _ar1(rng, n, steps))
    drifter = rng.random(n) < DRIFTER_SHARE
    # Drifters were more active before: their activity fades towards today's.
    fade = np.where(drifter[:, None], 1.0 + DRIFT_PER_MONTH * (n_months - t_idx), 1.0)

    def world(t: int) -> Inputs:
        activity = fade[:, t]
        return replace(
            base,
            monthly_spending=base.monthly_spending * season[t] * spend_noise[:, t],
            savings_balance=base.savings_balance * save_noise[:, t],
            active_days_30d=np.minimum(np.round(base.active_days_30d * activity), 30.0),
            goals_completed_90d=np.round(base.goals_completed_90d * activity),
            lessons_completed_90d=np.round(base.lessons_completed_90d * activity),
        )

    a, b, c = TREAT_LOGIT
    treated_month = np.full(n, -1, dtype=np.int64)
    ever_crisis = np.zeros(n, dtype=bool)
    observed: list[Profiles] = []
    counterfactual_fwi: list[FloatArray] = []
    for t in range(steps):
        cf = world(t)
        counseled = (treated_month >= 0) & (treated_month < t)
        obs = score(_counseled(cf, counseled), policy)
        counterfactual_fwi.append(score(cf, policy).fwi_score if counseled.any() else obs.fwi_score)
        observed.append(obs)
        if t < n_months:  # interventions open in the past; today's are the live product's
            entered = present[:, t] & (obs.segment == CRISIS) & ~ever_crisis
            logit = a + b * (30.0 - obs.fwi_score) + c * (obs.engagement_score - 50.0)
            opened = entered & (rng.random(n) < 1.0 / (1.0 + np.exp(-logit)))
            treated_month[opened] = t
        ever_crisis |= present[:, t] & (obs.segment == CRISIS)

    true_effect: dict[int, float] = {}
    for h in HORIZONS:
        gains = []
        for t in range(steps - h):
            who = (treated_month == t) & present[:, t] & present[:, t + h]
            gains.append(observed[t + h].fwi_score[who] - counterfactual_fwi[t + h][who])
        joined = np.concatenate(gains) if gains else np.zeros(0)
        if len(joined):
            true_effect[h] = float(joined.mean())
    current = _counseled(world(n_months), treated_month >= 0)
    return History(
        months=months,
        rows=rows,
        present=present,
        profiles=observed,
        treated_month=treated_month,
        current_inputs=current,
        leavers=exit_ < steps,
        entry_month=entry,
        true_effect=true_effect,
    )


def campaign_outcomes(
    rng: np.random.Generator, variants: npt.NDArray[np.int64], uplift: float
) -> npt.NDArray[np.bool_]:
    """Who converts: ``BASE_CONVERSION``, plus ``uplift`` for variant 1."""
    p = BASE_CONVERSION + uplift * (variants == 1)
    converted: npt.NDArray[np.bool_] = rng.random(len(variants)) < p
    return converted


def as_cube(history: History, user_ids: Int64Array) -> Any:
    """The history as the analytics see it (``services.analytics.cube.Cube``), without a
    database: what ``store.load_cube`` reads back after ``write_history`` (scores rounded to
    the columns' two decimals), today included. ``user_ids``: the population's ids."""
    from treevu.services.analytics.cube import Cube

    uids = user_ids[history.rows]
    order = np.argsort(uids, kind="stable")
    present = history.present[order]

    def stack(pick: Any, fill: Any, dtype: Any) -> Any:
        values = np.column_stack([pick(p)[order] for p in history.profiles]).astype(dtype)
        return np.where(present, values, fill).astype(dtype)

    def score_of(pick: Any) -> Any:
        return stack(lambda p: np.round(pick(p), 2), np.nan, np.float32)

    return Cube(
        user_ids=uids[order],
        months=list(history.months),
        segment=stack(lambda p: p.segment, ABSENT, np.int8),
        fwi=score_of(lambda p: p.fwi_score),
        engagement=score_of(lambda p: p.engagement_score),
        wellness=score_of(lambda p: p.wellness_score),
        risk=stack(lambda p: p.risk_level, ABSENT, np.int8),
        spending=stack(lambda p: p.spending_level, ABSENT, np.int8),
    )


def treated_of(history: History, user_ids: Int64Array) -> Any:
    """The interventions of ``history`` as ``effect.Treated`` rows of :func:`as_cube`."""
    from treevu.services.analytics.effect import Treated

    uids = user_ids[history.rows]
    order = np.argsort(uids, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    who = np.flatnonzero(history.treated_month >= 0)
    return Treated(rank[who].astype(np.int64), history.treated_month[who].astype(np.int64))
