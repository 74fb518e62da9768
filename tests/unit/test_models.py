"""The risk models' contract (SPEC §10 predictions): split by time, nothing from after the
prediction date, reasons that add up exactly, calibration that rises with the prediction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from treevu.history import as_cube, generate_history
from treevu.population import DEPARTMENTS, generate_population
from treevu.segmentation.policy import default_policy
from treevu.services.analytics.cube import Cube
from treevu.services.models import card
from treevu.services.models import features as F
from treevu.services.models import training as T
from treevu.services.models.registry import NAMES, Trained

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


def _scrambled_after(cube: Cube, t: int, name: str, rng: np.random.Generator) -> Cube:
    """``cube`` with every cell of column ``name`` after month ``t`` changed (none kept)."""
    values = getattr(cube, name).copy()
    later = values[:, t + 1 :]
    if np.issubdtype(values.dtype, np.floating):
        later[...] = np.where(np.isnan(later), 0, later) + rng.uniform(1, 50, later.shape)
    else:  # codes: shift each by 1 … span-1 within their own span, so every one differs
        low, span = int(later.min()), int(later.max() - later.min()) + 1
        later[...] = low + (later - low + rng.integers(1, span, later.shape)) % span
    return replace(cube, **{name: values})


#: Every per-month column of the history (a feature that reads any of them later is a leak).
MONTHLY = tuple(f.name for f in fields(Cube) if f.name not in ("user_ids", "months"))
Featurize = Callable[[Cube, int], tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]


def columns_read_after(featurize: Featurize, cube: Cube, t: int) -> list[str]:
    """The columns whose later months change what ``featurize`` computes for month ``t``:
    each column's every cell after ``t`` changed alone, then all of them at once."""
    rng = np.random.default_rng(0)
    rows, x = featurize(cube, t)

    def differs(other: Cube) -> bool:
        rows2, x2 = featurize(other, t)
        return not (np.array_equal(rows, rows2) and np.array_equal(x, x2, equal_nan=True))

    leaks, everything = [], cube
    for name in MONTHLY:
        alone = _scrambled_after(cube, t, name, rng)
        assert np.all(getattr(alone, name)[:, t + 1 :] != getattr(cube, name)[:, t + 1 :])
        before = np.s_[:, : t + 1]
        assert np.array_equal(getattr(alone, name)[before], getattr(cube, name)[before], True)
        if differs(alone):
            leaks.append(name)
        everything = _scrambled_after(everything, t, name, rng)
    if differs(everything):
        leaks.append("all together")
    return leaks


def test_a_feature_never_looks_past_the_prediction_month(cube: Cube) -> None:
    assert set(MONTHLY) == {"segment", "fwi", "engagement", "wellness", "risk", "spending"}
    assert columns_read_after(F.features_at, cube, 6) == []
    # ...while the outcome is read from the month after.
    rows, _ = F.features_at(cube, 6)
    later = _scrambled_after(cube, 6, "segment", np.random.default_rng(1))
    outcome, scrambled = (F.outcome(c, rows, 6, "crisis") for c in (cube, later))
    assert not np.array_equal(outcome, scrambled)


@pytest.mark.parametrize("name", MONTHLY)
def test_the_leakage_check_catches_a_feature_that_reads_any_later_month(
    cube: Cube, name: str
) -> None:
    """The check above is not blind: a feature that also reads next month's value of any
    column — risk and spending included — is caught, and by that column."""

    def leaky(c: Cube, t: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        rows, x = F.features_at(c, t)
        return rows, np.column_stack([x, getattr(c, name)[rows, t + 1].astype(np.float64)])

    assert columns_read_after(leaky, cube, 6) == [name, "all together"]


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


def _evaluated(cube: Cube, target: F.Target) -> tuple[T.Split, T.LinearRisk, dict[str, Any]]:
    """The model fitted on ``cube`` and its held-out metrics, per department too."""
    parts = T.split(len(cube.months))
    model = T.fit(cube, target, parts)
    department = POPULATION.department[np.searchsorted(POPULATION.user_id, cube.user_ids)]
    report = T.evaluate(
        cube, model, parts, {"department": (list(DEPARTMENTS), department.astype(np.int64))}
    )
    return parts, model, report


@pytest.mark.parametrize("target", F.TARGETS)
def test_held_out_metrics_calibration_rises_and_the_rule_is_beaten(
    cube: Cube, target: F.Target
) -> None:
    parts, model, report = _evaluated(cube, target)
    table = report["model"]["calibration"]
    predicted = [b["predicted"] for b in table]
    observed = [b["observed"] for b in table]
    assert predicted == sorted(predicted)
    assert all(b >= a - 0.02 for a, b in zip(observed, observed[1:], strict=False)), observed
    assert report["model"]["auc"] > report["baseline"]["auc"]
    assert report["testMonths"] == [f"{cube.months[t]:%Y-%m}" for t in parts.test]
    groups = report["groups"]["department"]
    assert {r["group"] for r in groups["rows"]} <= set(DEPARTMENTS) and groups["aucGap"] is not None
    for row in groups["rows"]:  # each department's own calibration table, rising like the whole
        table = row["model"]["calibration"]
        assert len(table) == T.CALIBRATION_BINS and sum(b["n"] for b in table) == row["model"]["n"]
        assert [b["predicted"] for b in table] == sorted(b["predicted"] for b in table)
        assert table[-1]["observed"] > table[0]["observed"]


def test_a_group_too_small_for_an_auc_gets_no_calibration_table(cube: Cube) -> None:
    parts = T.split(len(cube.months))
    model = T.fit(cube, "crisis", parts)
    rows = F.examples(cube, "crisis", parts.test).rows
    tiny = np.full(len(cube.user_ids), 1, dtype=np.int64)
    tiny[np.unique(rows)[:10]] = 0  # 10 people, in at most the 3 test months each
    report = T.evaluate(cube, model, parts, {"g": (["small", "large"], tiny)})
    small, large = report["groups"]["g"]["rows"]
    assert 10 <= small["model"]["n"] < T.MIN_GROUP and small["model"]["calibration"] == []
    assert small["model"]["auc"] is None and len(large["model"]["calibration"]) == 10


@pytest.mark.parametrize("target", F.TARGETS)
def test_training_writes_a_model_card_with_what_a_card_must_say(
    cube: Cube, target: F.Target, tmp_path: Path
) -> None:
    parts, model, metrics = _evaluated(cube, target)
    at = datetime(2026, 12, 1, 4, tzinfo=UTC)
    trained = Trained(NAMES[target], target, 3, at, model, metrics)
    path = card.write(trained, tmp_path / "models")
    assert path == tmp_path / "models" / f"{NAMES[target]}.md"
    text = path.read_text(encoding="utf-8")
    sections = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert sections == ["Intended use", "Data", "Method", "Metrics on the held-out months",
                        "Per group", "Limits"]  # fmt: skip
    assert text.startswith(f"# Model card: {NAMES[target]} (version 3)\n")
    # Intended use: decision support, a human decides; the EU AI Act note.
    assert "**a person decides** every action" in text
    assert (
        "**EU AI Act.** Systems used to monitor and evaluate people in work relationships are "
        "high-risk (Annex III, point 4)" in text
    )
    assert "a human reviews every flag before anyone acts on it" in text
    # Data: the months of each part, in time order; no protected attribute.
    assert f"Fitted on {len(parts.train)} months" in text
    assert ", ".join(metrics["testMonths"]) in text and "No protected attribute is an input" in text
    # Metrics: the model and the rule, and the whole calibration table.
    m, rule = metrics["model"], metrics["baseline"]
    model_row = f"| model | {m['n']:,} | {m['positives']:,} | {m['auc']:.4f} | {m['brier']:.4f} |"
    assert model_row in text
    assert f"| baseline rule | {rule['n']:,} | {rule['positives']:,} | {rule['auc']:.4f} |" in text
    for b in m["calibration"]:
        assert f"| {b['predicted']:.4f} | {b['observed']:.4f} | {b['n']:,} |" in text
    # Per group: each department's scores and its calibration row.
    group = metrics["groups"]["department"]
    assert f"gap between the best and worst AUC: {group['aucGap']:.4f}" in text
    for row in group["rows"]:
        assert f"| {row['group']} | {row['model']['n']:,} | " in text
        cells = " | ".join(
            f"{b['predicted']:.3f} / {b['observed']:.3f}" for b in row["model"]["calibration"]
        )
        assert f"| {row['group']} | {cells} |" in text
    # Limits, the two about scoring included.
    limits = text.split("\n## Limits\n", 1)[1]
    assert limits.count("\n- ") == 7
    assert "near zero on the 1st" in limits and "Risks are stored to two decimals" in limits
