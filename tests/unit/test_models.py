"""The risk models' contract (SPEC §10 predictions): split by time, nothing from after the
prediction date, reasons that add up exactly, calibration that rises with the prediction."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import numpy as np
import pytest

from treevu.history import as_cube, generate_history
from treevu.population import DEPARTMENTS, generate_population
from treevu.segmentation.policy import default_policy
from treevu.services.analytics.cube import Cube
from treevu.services.models import features as F
from treevu.services.models import training as T

POPULATION = generate_population(6000, 5)


@pytest.fixture(scope="module")
def cube() -> Cube:
    history = generate_history(POPULATION, default_policy(), 12, 5, date(2026, 12, 1))
    result: Cube = as_cube(history, POPULATION.user_id)
    return result


def test_the_split_is_by_time_and_needs_enough_months() -> None:
    parts = T.split(12)
    assert parts.train.stop == parts.calibrate.start and parts.calibrate.stop == parts.test.start
    assert parts.test.stop == 11  # the last month has no next month to check against
    assert len(parts.test) == T.TEST_MONTHS and len(parts.train) >= 1
    with pytest.raises(ValueError, match="--history-months"):
        T.split(5)


def test_a_feature_never_looks_past_the_prediction_month(cube: Cube) -> None:
    t = 6
    rows, x = F.features_at(cube, t)
    rng = np.random.default_rng(0)
    later = np.s_[:, t + 1 :]
    scrambled = replace(
        cube,
        segment=cube.segment.copy(),
        fwi=cube.fwi.copy(),
        engagement=cube.engagement.copy(),
        wellness=cube.wellness.copy(),
        risk=cube.risk.copy(),
        spending=cube.spending.copy(),
    )
    for name in ("fwi", "engagement", "wellness"):
        getattr(scrambled, name)[later] = rng.uniform(0, 100, getattr(scrambled, name)[later].shape)
    scrambled.segment[later] = rng.integers(-1, 5, scrambled.segment[later].shape)
    rows2, x2 = F.features_at(scrambled, t)
    assert np.array_equal(rows, rows2) and np.array_equal(x, x2)
    # ...while the outcome is read from the month after.
    assert not np.array_equal(
        F.outcome(cube, rows, t, "crisis"), F.outcome(scrambled, rows, t, "crisis")
    )


def test_no_protected_attribute_is_an_input() -> None:
    assert not {"department", "age", "ageBand", "birthYear", "gender"} & set(F.FEATURES)


@pytest.mark.parametrize("target", F.TARGETS)
def test_the_stored_model_is_the_calibrated_one_and_its_reasons_add_up(
    cube: Cube, target: F.Target
) -> None:
    parts = T.split(len(cube.months))
    model = T.fit(cube, target, parts)
    calibrated, _ = T.fit_calibrated(cube, target, parts)
    _, x = F.features_at(cube, parts.test.start)
    assert np.allclose(model.probability(x), calibrated.predict_proba(x)[:, 1], atol=1e-9)
    reference = model.logit(np.asarray([model.reference]))[0]
    assert np.allclose(model.contributions(x).sum(axis=1) + reference, model.logit(x))
    again = T.LinearRisk.from_json(model.to_json())
    assert np.array_equal(again.probability(x), model.probability(x))


@pytest.mark.parametrize("target", F.TARGETS)
def test_held_out_metrics_calibration_rises_and_the_rule_is_beaten(
    cube: Cube, target: F.Target
) -> None:
    parts = T.split(len(cube.months))
    model = T.fit(cube, target, parts)
    department = POPULATION.department[np.searchsorted(POPULATION.user_id, cube.user_ids)]
    report = T.evaluate(
        cube, model, parts, {"department": (list(DEPARTMENTS), department.astype(np.int64))}
    )
    table = report["model"]["calibration"]
    predicted = [b["predicted"] for b in table]
    observed = [b["observed"] for b in table]
    assert predicted == sorted(predicted)
    assert all(b >= a - 0.02 for a, b in zip(observed, observed[1:], strict=False)), observed
    assert report["model"]["auc"] > report["baseline"]["auc"]
    assert report["testMonths"] == [f"{cube.months[t]:%Y-%m}" for t in parts.test]
    groups = report["groups"]["department"]
    assert {r["group"] for r in groups["rows"]} <= set(DEPARTMENTS) and groups["aucGap"] is not None
