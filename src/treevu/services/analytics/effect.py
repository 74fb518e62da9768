"""The effect of a crisis intervention on FWI, against matched people who had none.

Estimand: the average effect on the treated (ATT) of an intervention opened in month ``t0`` on
the change of FWI from ``t0`` to ``t0 + horizon``.

Estimator (pure numpy and scikit-learn; ``docs/analytics.md`` says why):

1. **Who is compared.** Treated: people whose first intervention opened in ``t0``, with
   snapshots in ``t0`` and ``t0 + horizon``. Candidates for control: people who *entered*
   ``crisis_intervention`` in some month ``t`` (in it at ``t``, not at ``t − 1``), with
   snapshots in ``t`` and ``t + horizon``, and no intervention opened up to ``t + horizon``.
2. **Propensity.** A logistic regression of "treated" on the month-``t0`` profile — the risk
   models' features (``models.features.FEATURES``): FWI, engagement, wellness, risk and
   spending levels, the changes since last month — and the calendar month; its logit is the
   matching distance.
3. **Matching.** Each treated person gets the nearest candidate of the same calendar month
   (with replacement) within a caliper of 0.2 standard deviations of the logit (Austin 2011);
   treated people without one are left out and counted.
4. **Interval.** 95% percentile interval from 2,000 bootstrap resamples of the matched sets
   — a control with every treated person matched to it — so that pairs sharing a control (it
   is matching with replacement) are resampled together (a cluster bootstrap; resampling the
   pairs one by one gave intervals about 9% too narrow, covering the truth 91.7% of the time
   over 300 synthetic histories). Balance before and after matching is reported as
   standardized mean differences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from treevu.segmentation.policy import CRISIS
from treevu.services.analytics.cube import ABSENT, Cube, cell, month_label
from treevu.services.models.features import FEATURES, feature_matrix

DEFAULT_HORIZON: Final = 3
CALIPER_SD: Final = 0.2
BOOTSTRAP: Final = 2000
#: Fewer matched pairs than this give no estimate (an interval over a handful means little).
MIN_PAIRS: Final = 20


@dataclass(frozen=True)
class Treated:
    """People with an intervention: cube row and month index of their first one."""

    rows: npt.NDArray[np.int64]
    months: npt.NDArray[np.int64]


def _features(cube: Cube, rows: npt.NDArray[np.int64], t: npt.NDArray[np.int64]) -> Any:
    """The month-``t`` profile as the risk models see it (one definition of the features)."""
    nothing = np.full(len(rows), np.nan)
    before = np.maximum(t - 1, 0)
    return feature_matrix(
        cube.fwi[rows, t].astype(np.float64),
        cube.engagement[rows, t].astype(np.float64),
        cube.wellness[rows, t].astype(np.float64),
        cube.risk[rows, t],
        cube.spending[rows, t],
        cube.segment[rows, t],
        np.where(t > 0, cube.fwi[rows, before], nothing),
        np.where(t > 0, cube.engagement[rows, before], nothing),
    )


def _smd(x_t: Any, x_c: Any) -> list[float]:
    spread = np.sqrt((x_t.var(axis=0) + x_c.var(axis=0)) / 2.0)
    spread[spread == 0] = 1.0
    return [round(float(v), 4) for v in (x_t.mean(axis=0) - x_c.mean(axis=0)) / spread]


def estimate(
    cube: Cube, treated: Treated, horizon: int = DEFAULT_HORIZON, seed: int = 0
) -> dict[str, Any]:
    """The ATT with its interval, counts and balance (see the module)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n_months = len(cube.months)
    out: dict[str, Any] = {
        "horizonMonths": horizon,
        "outcome": "fwiScore change from the month the intervention opened",
        "estimator": "propensity-score matching (1:1, same month, caliper 0.2 SD of the logit, "
        "with replacement); 95% interval from a bootstrap of matched sets (clustered on the "
        "control)",
        "features": list(FEATURES),
        "effect": None,
        "ci95": None,
        "treated": 0,
        "matched": 0,
        "unmatched": 0,
        "controls": 0,
        "balance": None,
        "warnings": [],
    }
    # Treated people whose outcome month is in the history.
    keep = (treated.months + horizon < n_months) & (treated.months >= 0)
    t_rows, t_months = treated.rows[keep], treated.months[keep]
    ok = (cube.segment[t_rows, t_months] != ABSENT) & (
        cube.segment[t_rows, t_months + horizon] != ABSENT
    )
    t_rows, t_months = t_rows[ok], t_months[ok]
    out["treated"] = len(t_rows)
    # Candidates: crisis entries with no intervention up to the outcome month.
    first_treated = np.full(len(cube.user_ids), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_treated, treated.rows, treated.months)
    c_rows_list, c_months_list = [], []
    for t in range(n_months - horizon):
        seg = cube.segment[:, t]
        entered = seg == CRISIS
        if t > 0:
            entered &= cube.segment[:, t - 1] != CRISIS
        entered &= cube.segment[:, t + horizon] != ABSENT
        entered &= first_treated > t + horizon
        rows = np.flatnonzero(entered)
        c_rows_list.append(rows)
        c_months_list.append(np.full(len(rows), t, dtype=np.int64))
    c_rows = np.concatenate(c_rows_list) if c_rows_list else np.zeros(0, np.int64)
    c_months = np.concatenate(c_months_list) if c_months_list else np.zeros(0, np.int64)
    out["controls"] = len(c_rows)
    if len(t_rows) < MIN_PAIRS or len(c_rows) < MIN_PAIRS:
        out["warnings"].append(
            f"too few people for an estimate: {cell(len(t_rows))} treated and "
            f"{cell(len(c_rows))} candidates with {horizon} months of history after "
            f"(at least {MIN_PAIRS} of each needed)"
        )
        return _shown(out)

    x_t, x_c = _features(cube, t_rows, t_months), _features(cube, c_rows, c_months)
    months_onehot = np.eye(n_months)[np.concatenate([t_months, c_months])]
    x = np.column_stack([np.vstack([x_t, x_c]), months_onehot])
    y = np.concatenate([np.ones(len(t_rows)), np.zeros(len(c_rows))])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    model.fit(x, y)
    p = np.clip(model.predict_proba(x)[:, 1], 1e-9, 1 - 1e-9)
    logit = np.log(p / (1 - p))
    l_t, l_c = logit[: len(t_rows)], logit[len(t_rows) :]
    caliper = CALIPER_SD * float(logit.std())

    match = np.full(len(t_rows), -1, dtype=np.int64)
    for t in np.unique(t_months):
        ti = np.flatnonzero(t_months == t)
        ci = np.flatnonzero(c_months == t)
        if len(ci) == 0:
            continue
        order = ci[np.argsort(l_c[ci], kind="stable")]
        sorted_l = l_c[order]
        pos = np.searchsorted(sorted_l, l_t[ti])
        left = np.clip(pos - 1, 0, len(order) - 1)
        right = np.clip(pos, 0, len(order) - 1)
        pick = np.where(
            np.abs(sorted_l[left] - l_t[ti]) <= np.abs(sorted_l[right] - l_t[ti]), left, right
        )
        close = np.abs(sorted_l[pick] - l_t[ti]) <= caliper
        match[ti[close]] = order[pick[close]]

    matched = match >= 0
    out["matched"] = int(matched.sum())
    out["unmatched"] = int((~matched).sum())
    if out["matched"] < MIN_PAIRS:
        out["warnings"].append(
            f"only {cell(out['matched'])} treated people have a close match "
            f"(at least {MIN_PAIRS} needed)"
        )
        return _shown(out)
    mt, mc = np.flatnonzero(matched), match[matched]
    d_t = cube.fwi[t_rows[mt], t_months[mt] + horizon] - cube.fwi[t_rows[mt], t_months[mt]]
    d_c = cube.fwi[c_rows[mc], c_months[mc] + horizon] - cube.fwi[c_rows[mc], c_months[mc]]
    diff = (d_t - d_c).astype(np.float64)
    # Pairs that share a control move together: resample the matched sets (a control and every
    # treated person matched to it), not the pairs one by one.
    controls, cluster = np.unique(mc, return_inverse=True)
    sums = np.bincount(cluster, weights=diff)
    sizes = np.bincount(cluster).astype(np.float64)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(controls), size=(BOOTSTRAP, len(controls)))
    draws = sums[picks].sum(axis=1) / sizes[picks].sum(axis=1)
    lo, hi = np.percentile(draws, [2.5, 97.5])
    out.update(
        effect=round(float(diff.mean()), 3),
        ci95=[round(float(lo), 3), round(float(hi), 3)],
        treatedMeanChange=round(float(d_t.mean()), 3),
        controlMeanChange=round(float(d_c.mean()), 3),
        distinctControls=len(controls),
        balance={
            "features": list(FEATURES),
            "before": _smd(x_t, x_c),
            "after": _smd(x_t[mt], x_c[mc]),
        },
        months=[month_label(cube.months[int(t)]) for t in np.unique(t_months[mt])],
    )
    if out["unmatched"]:
        out["warnings"].append(
            f"{cell(out['unmatched'])} treated people had no close match and are left out"
        )
    return _shown(out)


def _shown(out: dict[str, Any]) -> dict[str, Any]:
    """Counts of people as shown (``"<5"`` under five)."""
    for name in ("treated", "matched", "unmatched", "controls", "distinctControls"):
        if isinstance(out.get(name), int):
            out[name] = cell(out[name])
    return out
