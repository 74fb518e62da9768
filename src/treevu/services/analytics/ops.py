"""``analytics.*`` and ``campaigns.getExperiment`` (SPEC §10), for both transports; admins only.

Answers about the history are computed for every month pair, horizon and table at once and
stored with the version of the data they came from (``store``): the nightly
``history.snapshot`` job refreshes them. A call reads one stored row at any size: when newer
data exists it is served marked ``stale`` while one refresh runs in a worker process; only when
there is no answer at all is it computed first.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import date, datetime, timedelta
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.exc import IntegrityError

from treevu.services.analytics import cube as C
from treevu.services.analytics import experiments as X
from treevu.services.analytics import store
from treevu.services.bounds import RowId
from treevu.services.campaigns.ops import CampaignRef, get_campaign, variant_counts
from treevu.services.context import Actor, Services
from treevu.services.errors import bad_request, not_found

Cell = int | str
log = logging.getLogger(__name__)


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Empty(Model):
    pass


class TransitionsInput(Model):
    from_: date = Field(alias="from", description="a day in the first month compared")
    to: date = Field(description="a day in the second month compared")

    @model_validator(mode="after")
    def _ordered(self) -> TransitionsInput:
        if C.month_of(self.to) <= C.month_of(self.from_):
            raise ValueError("to: must be in a later month than from")
        return self


class EffectInput(Model):
    horizon_months: int = Field(
        default=3, ge=min(store.HORIZONS), le=max(store.HORIZONS), alias="horizonMonths"
    )


class ExperimentPlan(Model):
    min_detectable_effect: float = Field(
        default=X.DEFAULT_MDE, ge=0.001, le=0.5, alias="minDetectableEffect",
        description="the smallest absolute difference in conversion rate worth detecting",
    )  # fmt: skip
    baseline_rate: float | None = Field(
        default=None, ge=0, lt=1, alias="baselineRate",
        description="the expected conversion rate (default: the pooled rate so far)",
    )  # fmt: skip
    alpha: float = Field(default=X.DEFAULT_ALPHA, ge=0.001, le=0.2)
    power: float = Field(default=X.DEFAULT_POWER, ge=0.5, le=0.99)


class ExperimentInput(ExperimentPlan):
    campaign_id: RowId = Field(alias="campaignId")


class Stamped(Model):
    computed_at: datetime = Field(alias="computedAt")
    stale: bool = Field(
        description="newer data exists: this answer is from computedAt, a refresh is running"
    )


class TransitionsOut(Stamped):
    from_: str = Field(alias="from")
    to: str
    segments: list[str]
    counts: list[list[Cell]] = Field(description="counts[i][j]: from segments[i] to segments[j]")
    stayed: Cell
    moved: Cell
    joined: dict[str, Cell]
    left: dict[str, Cell]


class CohortMonth(Model):
    month: str
    offset: int
    present: Cell
    retained_rate: float | None = Field(alias="retainedRate")
    engaged_rate: float | None = Field(alias="engagedRate")
    same_segment_rate: float | None = Field(alias="sameSegmentRate")


class Cohort(Model):
    entry_month: str = Field(alias="entryMonth")
    left_censored: bool = Field(alias="leftCensored")
    size: Cell
    months: list[CohortMonth]


class CohortsOut(Stamped):
    disengaged_below: float = Field(alias="disengagedBelow")
    cohorts: list[Cohort]


class ChurnRow(Model):
    month: str
    segment: str
    engaged: Cell
    disengaged: Cell
    left: Cell
    rate: float | None


class ChurnOut(Stamped):
    disengaged_below: float = Field(alias="disengagedBelow")
    rows: list[ChurnRow]


class Balance(Model):
    features: list[str]
    before: list[float]
    after: list[float]


class EffectOut(Stamped):
    horizon_months: int = Field(alias="horizonMonths")
    outcome: str
    estimator: str
    features: list[str]
    effect: float | None
    ci95: list[float] | None
    treated: Cell
    matched: Cell
    unmatched: Cell
    controls: Cell
    distinct_controls: Cell | None = Field(default=None, alias="distinctControls")
    treated_mean_change: float | None = Field(default=None, alias="treatedMeanChange")
    control_mean_change: float | None = Field(default=None, alias="controlMeanChange")
    balance: Balance | None
    months: list[str] = []
    warnings: list[str]


class VariantResult(Model):
    variant: int
    title: str
    sent: Cell
    converted: Cell
    rate: float | None


class Comparison(Model):
    variant: int
    against: int
    difference: float | None
    ci95: list[float] | None
    p_value: float | None = Field(alias="pValue")
    significant: bool | None


class ExperimentOut(Model):
    campaign_id: int = Field(alias="campaignId")
    metric: Literal["converted"]
    conversion_event: str = Field(alias="conversionEvent")
    conversion_days: int = Field(alias="conversionDays")
    variants: list[VariantResult]
    comparisons: list[Comparison]
    planned_per_variant: int = Field(alias="plannedPerVariant")
    min_detectable_effect: float = Field(alias="minDetectableEffect")
    baseline_rate: float = Field(alias="baselineRate")
    alpha: float
    power: float
    reached: bool
    warning: str | None


#: One background refresh at a time in a process.
_background = threading.Lock()


def _refresh_soon(svc: Services, kind: str) -> None:
    """Bring the stored answers up to date in a thread of their own (at most one at a time)."""
    if not _background.acquire(blocking=False):
        return

    def run() -> None:
        try:
            store.refresh_in_process(svc.settings, kind, if_stale=True)
        except Exception:
            log.exception("analytics refresh failed; the next call tries again")
        finally:
            _background.release()

    threading.Thread(target=run, name=f"analytics-{kind}", daemon=True).start()


def _stored(svc: Services, key: str, kind: str) -> tuple[Any, datetime, bool] | None:
    """The stored answer under ``key``: (payload, computedAt, stale). Computed now only when
    there is none yet; when newer data exists the answer is served ``stale`` while a refresh
    runs in the background, so no call waits for the whole history to be recomputed."""
    with svc.bulk_engine.connect() as conn:
        version = store.versions(conn)[kind]
        row = store.read_result(conn, key)
    if row is None:
        with contextlib.suppress(IntegrityError):  # another node stored them meanwhile
            store.refresh(svc.bulk_engine, svc.clock, only=kind, if_stale=True)
        with svc.bulk_engine.connect() as conn:
            row = store.read_result(conn, key)
        return None if row is None else (row.payload, row.computed_at, False)
    if row.version != version:
        _refresh_soon(svc, kind)
        return row.payload, row.computed_at, True
    return row.payload, row.computed_at, False


async def _answer(svc: Services, key: str, kind: str) -> tuple[Any, datetime, bool] | None:
    return await anyio.to_thread.run_sync(lambda: _stored(svc, key, kind))


async def get_transitions(svc: Services, actor: Actor, inp: TransitionsInput) -> TransitionsOut:
    actor.require_admin()
    months = await _answer(svc, "history-months", "history")
    held: list[str] = months[0] if months else []
    a, b = C.month_label(C.month_of(inp.from_)), C.month_label(C.month_of(inp.to))
    for field, month in (("from", a), ("to", b)):
        if month not in held:
            span = f"{held[0]} to {held[-1]}" if held else "no months yet"
            raise bad_request(field, f"no history for {month} (the history holds {span})")
    found = await _answer(
        svc, store.transitions_key(C.month_of(inp.from_), C.month_of(inp.to)), "history"
    )
    assert found is not None
    return TransitionsOut.model_validate({**found[0], "computedAt": found[1], "stale": found[2]})


async def _table(svc: Services, key: str, kind: str) -> dict[str, Any]:
    found = await _answer(svc, key, kind)
    if found is None:
        raise not_found("there is no history yet: the nightly history.snapshot job keeps it")
    return {**found[0], "computedAt": found[1], "stale": found[2]}


async def get_cohorts(svc: Services, actor: Actor, inp: Empty) -> CohortsOut:
    actor.require_admin()
    return CohortsOut.model_validate(await _table(svc, "cohorts", "history"))


async def get_churn(svc: Services, actor: Actor, inp: Empty) -> ChurnOut:
    actor.require_admin()
    return ChurnOut.model_validate(await _table(svc, "churn", "history"))


async def get_intervention_effect(svc: Services, actor: Actor, inp: EffectInput) -> EffectOut:
    actor.require_admin()
    return EffectOut.model_validate(
        await _table(svc, store.effect_key(inp.horizon_months), "effect")
    )


async def get_experiment(svc: Services, actor: Actor, inp: ExperimentInput) -> ExperimentOut:
    """Sent and converted by variant as ``campaigns.getStats`` counts them (see
    ``experiments``). Once a campaign is over and its conversion window has closed, its counts
    can no longer change: they are counted once and stored."""
    ref = CampaignRef(campaign_id=inp.campaign_id)
    campaign = await get_campaign(svc, actor, ref)  # admins only; 404 for an unknown id
    ended = campaign.completed_at if campaign.status in ("completed", "cancelled") else None
    final = ended is not None and ended + timedelta(days=campaign.conversion_days) < svc.clock()
    key = f"experiment:{campaign.id}"
    counts: dict[int, tuple[int, int]] | None = None
    if final:
        counts = await anyio.to_thread.run_sync(lambda: _stored_counts(svc, key))
    if counts is None:
        counts = await variant_counts(svc, campaign.id)
        if final:
            await anyio.to_thread.run_sync(lambda: _store_counts(svc, key, counts or {}))
    titles = [v.title for v in campaign.variants] if campaign.variants else [campaign.title]
    arms = [(title, *counts.get(k, (0, 0))) for k, title in enumerate(titles)]
    result = X.analyse(
        arms,
        mde=inp.min_detectable_effect,
        alpha=inp.alpha,
        power=inp.power,
        baseline=inp.baseline_rate,
    )
    return ExperimentOut.model_validate(
        {
            **result,
            "campaignId": inp.campaign_id,
            "conversionEvent": campaign.conversion_event,
            "conversionDays": campaign.conversion_days,
        }
    )


def _stored_counts(svc: Services, key: str) -> dict[int, tuple[int, int]] | None:
    with svc.bulk_engine.connect() as conn:
        found = store.read_result(conn, key)
    return None if found is None else {int(k): (v[0], v[1]) for k, v in found.payload.items()}


def _store_counts(svc: Services, key: str, counts: dict[int, tuple[int, int]]) -> None:
    with contextlib.suppress(IntegrityError), svc.bulk_engine.begin() as conn:
        payload = {str(k): list(v) for k, v in counts.items()}
        store.write_results(conn, {key: payload}, "final", svc.clock())
