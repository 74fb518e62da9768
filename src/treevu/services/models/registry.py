"""Trained models in the database: training on the stored history, the active model of each
target, and ``models.list``. Synchronous (the bulk engine): training runs off the loop."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

import numpy as np
from sqlalchemy import Connection, Engine, Table, func, insert, select

from treevu.db import PredictionModel, User
from treevu.population import DEPARTMENTS
from treevu.services.analytics.cube import Cube
from treevu.services.analytics.store import load_cube
from treevu.services.models import training as T
from treevu.services.models.features import FEATURES, TARGETS, Target

#: Age bands the models are checked on (age in the year of training).
AGE_BANDS: Final = ((18, 29, "18–29"), (30, 44, "30–44"), (45, 59, "45–59"), (60, 200, "60+"))
NAMES: Final = {"crisis": "crisis-risk-30d", "disengagement": "disengagement-risk-30d"}


@dataclass(frozen=True)
class Trained:
    name: str
    target: str
    version: int
    trained_at: datetime
    model: T.LinearRisk
    metrics: dict[str, Any]


def groups_of(conn: Connection, cube: Cube, year: int) -> dict[str, tuple[list[str], Any]]:
    """Department and age band per cube row (-1: unknown), for the per-group metrics only."""
    dept_index = {d: k for k, d in enumerate(DEPARTMENTS)}
    known: dict[int, tuple[int, int]] = {}
    for uid, department, birth_year in conn.execute(
        select(User.id, User.department, User.birth_year)
    ):
        age = year - birth_year if birth_year is not None else -1
        band = next((k for k, (lo, hi, _) in enumerate(AGE_BANDS) if lo <= age <= hi), -1)
        known[int(uid)] = (dept_index.get(department or "", -1), band)
    pairs = np.array([known.get(int(u), (-1, -1)) for u in cube.user_ids], dtype=np.int64)
    pairs = pairs.reshape(len(cube.user_ids), 2)
    return {
        "department": (list(DEPARTMENTS), pairs[:, 0]),
        "ageBand": ([label for *_, label in AGE_BANDS], pairs[:, 1]),
    }


def train(engine: Engine, now: datetime) -> list[Trained]:
    """Fit, calibrate and evaluate both models on the stored history; store them as the new
    active versions."""
    with engine.connect() as conn:
        cube = load_cube(conn)
        groups = groups_of(conn, cube, now.year)
    parts = T.split(len(cube.months))
    fitted = []
    for target in TARGETS:
        model = T.fit(cube, target, parts)
        fitted.append((target, model, T.evaluate(cube, model, parts, groups)))
    trained = []
    with engine.begin() as conn:
        for target, model, metrics in fitted:
            version = 1 + int(
                conn.execute(
                    select(func.coalesce(func.max(PredictionModel.version), 0)).where(
                        PredictionModel.target == target
                    )
                ).scalar_one()
            )
            conn.execute(
                insert(cast(Table, PredictionModel.__table__)).values(
                    name=NAMES[target], target=target, version=version, trainedAt=now,
                    model=model.to_json(), metrics=metrics,
                )
            )  # fmt: skip
            trained.append(Trained(NAMES[target], target, version, now, model, metrics))
    return trained


def active(conn: Connection) -> dict[Target, T.LinearRisk]:
    """The newest model of each target (none before the first training)."""
    found: dict[Target, T.LinearRisk] = {}
    for target in TARGETS:
        row = conn.execute(
            select(PredictionModel.model)
            .where(PredictionModel.target == target)
            .order_by(PredictionModel.version.desc())
            .limit(1)
        ).first()
        if row is not None:
            model = T.LinearRisk.from_json(row[0])
            if model.features == list(FEATURES):
                found[target] = model
    return found


def listed(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(
            PredictionModel.name,
            PredictionModel.target,
            PredictionModel.version,
            PredictionModel.trained_at,
            PredictionModel.model,
            PredictionModel.metrics,
        ).order_by(PredictionModel.target, PredictionModel.version.desc())
    ).all()
    newest: set[str] = set()
    out = []
    for name, target, version, trained_at, model, metrics in rows:
        out.append(
            {
                "name": name,
                "target": target,
                "version": version,
                "trainedAt": trained_at,
                "active": target not in newest,
                "features": model["features"],
                "metrics": metrics,
            }
        )
        newest.add(target)
    return out
