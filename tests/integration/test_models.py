"""Risk models on every backend (SPEC §10): trained on the stored history, stored as numbers,
listed with their metrics to admins only, and scored into every profile by the recompute —
with the same features training saw."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Engine, func, insert, select, update

from tests.conftest import Database, LiveServer
from tests.integration.commands import treevu
from tests.integration.workflow import As, rows, sync_engine
from treevu.db import (
    CampaignDelivery,
    EmployeeSegment,
    OutboxEvent,
    PredictionModel,
    ProfileSnapshot,
)
from treevu.population import EMPLOYEE, generate_population
from treevu.segmentation.policy import RISK_LEVELS, SEGMENTS, SPENDING_LEVELS, default_policy
from treevu.services.models import card, registry
from treevu.services.models.features import FEATURES, feature_matrix
from treevu.services.models.training import CALIBRATION_BINS, MIN_GROUP, LinearRisk
from treevu.services.people.seed import seed_history, write_population
from treevu.services.segmentation.recompute import recompute

POPULATION = generate_population(1500, 13)


def test_train_list_and_score_on_each_backend(database: Database) -> None:
    engine = sync_engine(database)
    now = datetime.now(UTC)
    try:
        write_population(engine, POPULATION, now=now)
        history, _ = seed_history(engine, POPULATION, 7, seed=13, now=now)
        trained = registry.train(engine, now)
        assert {t.target for t in trained} == {"crisis", "disengagement"}
        assert all(t.version == 1 for t in trained)
        recompute(engine, default_policy(), now=now)
        last = history.months[-2]
        with engine.connect() as conn:
            models = registry.active(conn)
        rows = _scored(engine, last)
        # When only last month's snapshot moves (as at the turn of a month), only risks change:
        # those profiles get their risk columns rewritten, nothing else, and no event.
        some = [int(r[0]) for r in rows[:60]]
        with engine.begin() as conn:
            conn.execute(
                update(ProfileSnapshot)
                .where(ProfileSnapshot.month == last, ProfileSnapshot.user_id.in_(some))
                .values(fwi_score=ProfileSnapshot.fwi_score - 30)
            )
            events = conn.execute(select(func.count()).select_from(OutboxEvent)).scalar_one()
        again = recompute(engine, default_policy(), now=now)
        after = _scored(engine, last)
        with engine.connect() as conn:
            events_after = conn.execute(select(func.count()).select_from(OutboxEvent)).scalar_one()
    finally:
        engine.dispose()
    assert not again.segment_changes and 0 < again.written <= len(some) and events_after == events
    moved = [k for k, (a, b) in enumerate(zip(rows, after, strict=True)) if a[9:] != b[9:]]
    assert len(moved) == again.written and {int(rows[k][0]) for k in moved} <= set(some)
    assert all(a[:7] == b[:7] for a, b in zip(rows, after, strict=True))  # the profile itself
    assert np.allclose(_expected(models, after), [[r[9], r[10]] for r in after], atol=0.01)
    assert len(rows) > 1000
    risk = np.array([r[9] for r in rows], dtype=np.float64)
    assert np.all((risk >= 0) & (risk <= 1))
    reasons = {name for r in rows if r[11] for name in r[11].split(",")}
    assert reasons and reasons <= set(FEATURES)
    # What the recompute stored is the model applied to the stored profile and last month's
    # snapshot: the features training read from the history.
    stored = np.array([[r[9], r[10]] for r in rows], dtype=np.float64)
    assert np.allclose(_expected(models, rows), stored, atol=0.01)

    employee = int(POPULATION.user_id[POPULATION.role == EMPLOYEE][0])
    with LiveServer(database.settings()) as server:
        admin = As(server, database, 1)
        listed = admin.get("/api/v1/models")
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert {m["name"] for m in body} == {"crisis-risk-30d", "disengagement-risk-30d"}
        for m in body:
            assert m["active"] and m["features"] == list(FEATURES)
            metrics = m["metrics"]
            assert metrics["model"]["auc"] is not None and metrics["baseline"]["auc"] is not None
            assert set(metrics["groups"]) == {"department", "ageBand"}
            for group in metrics["groups"].values():
                for row in group["rows"]:  # each group's own calibration table
                    table = row["model"]["calibration"]
                    assert sum(b["n"] for b in table) == (row["model"]["n"] if table else 0)
                    assert len(table) == (CALIBRATION_BINS if row["model"]["n"] >= MIN_GROUP else 0)
            assert metrics["trainMonths"][-1] < metrics["calibrationMonths"][0]
            assert metrics["calibrationMonths"][-1] < metrics["testMonths"][0]
        trpc = admin.request("GET", "/trpc/models.list")
        assert len(trpc.json()["result"]["data"]) == 2
        someone = As(server, database, employee)
        assert someone.get("/api/v1/models").status_code == 403
        profile = admin.get(f"/api/v1/employees/{employee}/profile").json()
        assert 0 <= profile["crisisRisk30d"] <= 1
        assert set(profile["crisisRiskReasons"]) <= set(FEATURES)


def test_a_campaign_can_take_only_the_members_whose_risk_is_rising(
    sqlite_database: Database,
) -> None:
    db = sqlite_database
    engine = sync_engine(db)
    now = datetime.now(UTC)
    try:
        write_population(engine, POPULATION, now=now)
        recompute(engine, default_policy(), now=now)
        month = date(now.year, now.month, 1)
        last = date(month.year - (month.month == 1), (month.month - 2) % 12 + 1, 1)
        with engine.begin() as conn:
            members = [
                int(u)
                for u in conn.execute(
                    select(EmployeeSegment.user_id)
                    .where(EmployeeSegment.segment == "steady_performers")
                    .order_by(EmployeeSegment.user_id)
                    .limit(6)
                ).scalars()
            ]
            # Risk now vs last month: rose by 0.10, 0.05 (rising); by 0.04, fell, stayed, no
            # snapshot last month (not rising).
            now_risk = [0.30, 0.25, 0.24, 0.10, 0.20, 0.90]
            then_risk = [0.20, 0.20, 0.20, 0.30, 0.20, None]
            for uid, r_now, r_then in zip(members, now_risk, then_risk, strict=True):
                conn.execute(
                    update(EmployeeSegment)
                    .where(EmployeeSegment.user_id == uid)
                    .values(crisis_risk_30d=r_now)
                )
                if r_then is not None:
                    conn.execute(
                        insert(ProfileSnapshot).values(
                            month=last, user_id=uid, segment="steady_performers",
                            crisis_risk_30d=r_then, taken_at=now,
                        )
                    )  # fmt: skip
    finally:
        engine.dispose()
    with LiveServer(db.settings()) as server:
        admin = As(server, db, 1)
        listed = admin.get(
            "/api/v1/segments/steady_performers/campaign-targets"
            "?campaignType=retention&risingRisk=true"
        )
        assert listed.status_code == 200, listed.text
        assert listed.json()["items"] == members[:2] and listed.json()["total"] == 2
        created = admin.post(
            "/api/v1/campaigns",
            {"name": "Rising", "segment": "steady_performers", "campaignType": "retention",
             "title": "Hello", "message": "Help is here", "risingRisk": True},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        assert created.json()["risingRisk"] is True
        cid = created.json()["id"]
        deadline = time.monotonic() + 20
        while admin.get(f"/api/v1/campaigns/{cid}").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        targets = rows(
            db, select(CampaignDelivery.user_id).where(CampaignDelivery.campaign_id == cid)
        )
        assert sorted(t for (t,) in targets) == members[:2]


def test_the_train_command_stores_both_models_and_writes_their_cards(
    sqlite_database: Database, tmp_path: Path
) -> None:
    """``treevu models train`` on a seeded history: two versioned models stored as numbers,
    a card per model that renders what was stored, every profile scored; again: version 2."""
    db, cards = sqlite_database, tmp_path / "cards"
    treevu(db, "seed", "--users", "600", "--seed", "13", "--history-months", "7")
    said = treevu(db, "models", "train", "--cards", str(cards))
    engine = sync_engine(db)
    try:
        with engine.connect() as conn:
            stored = {t.target: t for t in _stored(conn)}
            scored = conn.execute(
                select(EmployeeSegment.crisis_risk_30d, EmployeeSegment.disengagement_risk_30d)
            ).all()
    finally:
        engine.dispose()
    assert set(stored) == {"crisis", "disengagement"}
    assert len(scored) > 500 and all(c is not None and d is not None for c, d in scored)
    assert f"scored {len(scored):,} profiles with the new models" in said
    for trained in stored.values():
        assert trained.version == 1 and trained.model.features == list(FEATURES)
        metrics = trained.metrics
        assert len(metrics["testMonths"]) == 3
        path = cards / f"{trained.name}.md"
        assert f"{trained.name} v1: AUC {metrics['model']['auc']}" in said and str(path) in said
        text = path.read_text(encoding="utf-8")
        # The card is the stored model's, figures and all...
        assert text == card.render(trained)
        # ...and says what a model card must.
        for heading in ("Intended use", "Data", "Metrics on the held-out months", "Per group",
                        "Limits"):  # fmt: skip
            assert f"\n## {heading}\n" in text
        assert "**EU AI Act.**" in text and "high-risk (Annex III, point 4)" in text
        assert "a human reviews every flag" in text and "**a person decides**" in text
        assert f"| model | {metrics['model']['n']:,} |" in text
        assert "Calibration by department" in text and "Calibration by ageBand" in text
        assert "Risks are stored to two decimals" in text and "The change features" in text
    treevu(db, "models", "train", "--cards", str(cards))
    engine = sync_engine(db)
    try:
        with engine.connect() as conn:
            listed = registry.listed(conn)
        versions = sorted((m["target"], m["version"], m["active"]) for m in listed)
    finally:
        engine.dispose()
    assert versions == [("crisis", 1, False), ("crisis", 2, True),
                        ("disengagement", 1, False), ("disengagement", 2, True)]  # fmt: skip
    assert "(version 2)" in (cards / "crisis-risk-30d.md").read_text(encoding="utf-8")


def _scored(engine: Engine, last: date) -> list[tuple[Any, ...]]:
    """Every profile with last month's snapshot FWI and engagement, then its risks."""
    e, s = EmployeeSegment, ProfileSnapshot
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                select(
                    e.user_id, e.fwi_score, e.engagement_score, e.wellness_score, e.risk_level,
                    e.spending_level, e.segment, s.fwi_score, s.engagement_score,
                    e.crisis_risk_30d, e.disengagement_risk_30d, e.crisis_reasons,
                )
                .outerjoin(s, (s.user_id == e.user_id) & (s.month == last))
                .order_by(e.user_id)
            )
        ]  # fmt: skip


def _expected(
    models: dict[Any, LinearRisk], rows: list[tuple[Any, ...]]
) -> npt.NDArray[np.float64]:
    """Both models applied to the stored profiles and last month's snapshot (columns 1–8)."""
    x = feature_matrix(
        np.array([r[1] for r in rows], dtype=np.float64),
        np.array([r[2] for r in rows], dtype=np.float64),
        np.array([r[3] for r in rows], dtype=np.float64),
        np.array([RISK_LEVELS.index(r[4]) for r in rows]),
        np.array([SPENDING_LEVELS.index(r[5]) for r in rows]),
        np.array([SEGMENTS.index(r[6]) for r in rows]),
        np.array([np.nan if r[7] is None else r[7] for r in rows], dtype=np.float64),
        np.array([np.nan if r[8] is None else r[8] for r in rows], dtype=np.float64),
    )
    return np.column_stack([models[t].probability(x) for t in ("crisis", "disengagement")])


def _stored(conn: Connection) -> list[registry.Trained]:
    """The stored models, as training returned them."""
    m = PredictionModel
    return [
        registry.Trained(name, target, version, trained_at, LinearRisk.from_json(model), metrics)
        for name, target, version, trained_at, model, metrics in conn.execute(
            select(m.name, m.target, m.version, m.trained_at, m.model, m.metrics)
        )
    ]
