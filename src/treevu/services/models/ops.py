"""``models.list`` (SPEC §10): every trained version with its held-out metrics; admins only."""

from __future__ import annotations

from datetime import datetime

import anyio
from pydantic import BaseModel, ConfigDict, Field

from treevu.services.context import Actor, Services
from treevu.services.models import registry


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Empty(Model):
    pass


class Scores(Model):
    n: int
    positives: int
    auc: float | None
    brier: float | None


class CalibrationBin(Model):
    predicted: float
    observed: float
    n: int


class Calibrated(Scores):
    calibration: list[CalibrationBin]


class Baseline(Calibrated):
    rule: str


class GroupRow(Model):
    group: str
    model: Calibrated
    baseline: Scores


class GroupMetrics(Model):
    rows: list[GroupRow]
    auc_gap: float | None = Field(alias="aucGap")


class Metrics(Model):
    train_months: list[str] = Field(alias="trainMonths")
    calibration_months: list[str] = Field(alias="calibrationMonths")
    test_months: list[str] = Field(alias="testMonths")
    model: Calibrated
    baseline: Baseline
    groups: dict[str, GroupMetrics]


class ModelOut(Model):
    name: str
    target: str
    version: int
    trained_at: datetime = Field(alias="trainedAt")
    active: bool
    features: list[str]
    metrics: Metrics


async def list_models(svc: Services, actor: Actor, inp: Empty) -> list[ModelOut]:
    actor.require_admin()

    def read() -> list[ModelOut]:
        with svc.bulk_engine.connect() as conn:
            return [ModelOut.model_validate(m) for m in registry.listed(conn)]

    return await anyio.to_thread.run_sync(read)
