"""Training and evaluating the risk models (scikit-learn), split by time.

The model is a logistic regression on standardised features, calibrated with Platt scaling
(``CalibratedClassifierCV(method="sigmoid")``) on months after the ones it was fitted on, and
evaluated on months after those. Platt scaling is a logistic function of the model's logit, so
the calibrated model is still one logistic model, ``logit(p) = intercept + coef · x``, and it is
kept as plain numbers (:class:`LinearRisk`, JSON: nothing is executed to load it). A person's
reasons are ``coef_i · (x_i − reference_i)``: they add up exactly to their logit minus the logit
of the reference person (the training average).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from treevu.services.analytics.cube import Cube, month_label
from treevu.services.models.features import BASELINE, FEATURES, Examples, Target, examples

Floats = npt.NDArray[np.float64]
#: Held-out months at the end (test) and the months before them that calibrate.
TEST_MONTHS: Final = 3
CALIBRATION_MONTHS: Final = 2
CALIBRATION_BINS: Final = 10
#: Groups smaller than this get counts but no AUC.
MIN_GROUP: Final = 50


@dataclass(frozen=True)
class LinearRisk:
    """A calibrated logistic model as numbers: ``logit(p) = intercept + coef · x``."""

    target: str
    features: list[str]
    intercept: float
    coef: list[float]
    reference: list[float]  # the training average: the person whose reasons are all zero

    def logit(self, x: Floats) -> Floats:
        result: Floats = self.intercept + x @ np.asarray(self.coef)
        return result

    def probability(self, x: Floats) -> Floats:
        result: Floats = 1.0 / (1.0 + np.exp(-self.logit(x)))
        return result

    def contributions(self, x: Floats) -> Floats:
        """Per feature, in logit units; each row sums to ``logit(x) − logit(reference)``."""
        result: Floats = (x - np.asarray(self.reference)) * np.asarray(self.coef)
        return result

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LinearRisk:
        return cls(
            target=str(data["target"]),
            features=[str(f) for f in data["features"]],
            intercept=float(data["intercept"]),
            coef=[float(c) for c in data["coef"]],
            reference=[float(r) for r in data["reference"]],
        )


@dataclass(frozen=True)
class Split:
    train: range
    calibrate: range
    test: range


def split(n_months: int) -> Split:
    """Months with a known next month, in time order: fit on the earliest, calibrate on the
    next ``CALIBRATION_MONTHS``, test on the last ``TEST_MONTHS`` (never shuffled)."""
    known = n_months - 1  # the last month has no next month yet
    if known < TEST_MONTHS + CALIBRATION_MONTHS + 1:
        raise ValueError(
            f"the history holds {n_months} months; training needs at least "
            f"{TEST_MONTHS + CALIBRATION_MONTHS + 2} (seed one with --history-months)"
        )
    test = range(known - TEST_MONTHS, known)
    calibrate = range(test.start - CALIBRATION_MONTHS, test.start)
    return Split(range(0, calibrate.start), calibrate, test)


def _labelled(e: Examples) -> tuple[Floats, npt.NDArray[np.int8], Examples]:
    keep = e.y >= 0
    kept = Examples(e.rows[keep], e.month[keep], e.x[keep], e.y[keep], e.rule[keep])
    return kept.x, kept.y, kept


def fit_calibrated(cube: Cube, target: Target, parts: Split) -> tuple[Any, Floats]:
    """The scikit-learn model: fitted on ``parts.train``, Platt-calibrated on
    ``parts.calibrate``; and the training features."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, _ = _labelled(examples(cube, target, parts.train))
    x_cal, y_cal, _ = _labelled(examples(cube, target, parts.calibrate))
    if len(set(y.tolist())) < 2 or len(set(y_cal.tolist())) < 2:
        raise ValueError(f"{target}: the training months hold only one outcome")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    model.fit(x, y)
    calibrated = CalibratedClassifierCV(FrozenEstimator(model), method="sigmoid")
    calibrated.fit(x_cal, y_cal)
    return calibrated, x


def fit(cube: Cube, target: Target, parts: Split) -> LinearRisk:
    """:func:`fit_calibrated`, collapsed into one logistic model."""
    calibrated, x = fit_calibrated(cube, target, parts)
    one = calibrated.calibrated_classifiers_[0]
    model, sigmoid = one.estimator, one.calibrators[0]
    if hasattr(model, "estimator"):  # the FrozenEstimator around the pipeline
        model = model.estimator
    scaler, logistic = model[0], model[1]
    a, b = float(sigmoid.a_), float(sigmoid.b_)
    w = logistic.coef_[0] / scaler.scale_
    b0 = float(logistic.intercept_[0] - w @ scaler.mean_)
    # Platt: p = 1 / (1 + exp(a·f + b)) with f = w·x + b0, so logit(p) = −a·f − b.
    return LinearRisk(
        target=target,
        features=list(FEATURES),
        intercept=-a * b0 - b,
        coef=[float(c) for c in -a * w],
        reference=[float(m) for m in x.mean(axis=0)],
    )


def _auc(y: npt.NDArray[np.int8], p: Floats) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(y) < 2 or y.min() == y.max():
        return None
    return round(float(roc_auc_score(y, p)), 4)


def _brier(y: npt.NDArray[np.int8], p: Floats) -> float | None:
    return round(float(np.mean((p - y) ** 2)), 5) if len(y) else None


def calibration_table(y: npt.NDArray[np.int8], p: Floats) -> list[dict[str, Any]]:
    """Predictions in ``CALIBRATION_BINS`` bins of equal size: mean predicted vs observed."""
    if not len(y):
        return []
    order = np.argsort(p, kind="stable")
    table = []
    for chunk in np.array_split(order, min(CALIBRATION_BINS, len(order))):
        if len(chunk):
            table.append(
                {
                    "predicted": round(float(p[chunk].mean()), 4),
                    "observed": round(float(y[chunk].mean()), 4),
                    "n": int(len(chunk)),
                }
            )
    return table


def _scores(y: npt.NDArray[np.int8], p: Floats) -> dict[str, Any]:
    return {"n": int(len(y)), "positives": int(y.sum()), "auc": _auc(y, p), "brier": _brier(y, p)}


def evaluate(
    cube: Cube,
    model: LinearRisk,
    parts: Split,
    groups: dict[str, tuple[list[str], npt.NDArray[np.int64]]],
) -> dict[str, Any]:
    """Metrics on the test months, beside the baseline rule; the same for each group (AUC,
    Brier and the calibration table; no AUC and no table under ``MIN_GROUP`` examples).

    ``groups``: name → (labels, label index per cube row, -1 for unknown). The rule's
    probability for each of its two verdicts is the rate seen in the training months.
    """
    target: Target = model.target  # type: ignore[assignment]
    _, y_tr, train = _labelled(examples(cube, target, parts.train))
    _, y, test = _labelled(examples(cube, target, parts.test))
    p = model.probability(test.x)
    rates = [
        float(y_tr[train.rule == v].mean()) if (train.rule == v).any() else 0.0 for v in (0, 1)
    ]
    p_rule = np.where(test.rule == 1, rates[1], rates[0])
    result: dict[str, Any] = {
        "testMonths": [month_label(cube.months[t]) for t in parts.test],
        "trainMonths": [month_label(cube.months[t]) for t in parts.train],
        "calibrationMonths": [month_label(cube.months[t]) for t in parts.calibrate],
        "model": {**_scores(y, p), "calibration": calibration_table(y, p)},
        "baseline": {
            "rule": BASELINE[target],
            **_scores(y, p_rule),
            "calibration": calibration_table(y, p_rule),
        },
        "groups": {},
    }
    for name, (labels, index) in groups.items():
        of = index[test.rows]
        rows: list[dict[str, Any]] = []
        for k, label in enumerate(labels):
            here = of == k
            if not here.any():
                continue
            model_scores = {
                **_scores(y[here], p[here]),
                "calibration": calibration_table(y[here], p[here]),
            }
            rule_scores = _scores(y[here], p_rule[here])
            if model_scores["n"] < MIN_GROUP:
                model_scores["auc"] = rule_scores["auc"] = None
                model_scores["calibration"] = []
            rows.append({"group": label, "model": model_scores, "baseline": rule_scores})
        aucs = [r["model"]["auc"] for r in rows if r["model"]["auc"] is not None]
        result["groups"][name] = {
            "rows": rows,
            "aucGap": round(max(aucs) - min(aucs), 4) if len(aucs) >= 2 else None,
        }
    return result
