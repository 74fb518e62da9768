"""Risk models on every backend (SPEC §10): trained on the stored history, stored as numbers,
listed with their metrics to admins only, and scored into every profile by the recompute —
with the same features training saw."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime

import numpy as np
from sqlalchemy import insert, select, update

from tests.conftest import Database, LiveServer
from tests.integration.workflow import As, rows, sync_engine
from treevu.db import CampaignDelivery, EmployeeSegment, ProfileSnapshot
from treevu.population import EMPLOYEE, generate_population
from treevu.segmentation.policy import RISK_LEVELS, SEGMENTS, SPENDING_LEVELS, default_policy
from treevu.services.models import registry
from treevu.services.models.features import FEATURES, feature_matrix
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
            e, s = EmployeeSegment, ProfileSnapshot
            rows = conn.execute(
                select(
                    e.user_id, e.fwi_score, e.engagement_score, e.wellness_score, e.risk_level,
                    e.spending_level, e.segment, s.fwi_score, s.engagement_score,
                    e.crisis_risk_30d, e.disengagement_risk_30d, e.crisis_reasons,
                ).outerjoin(s, (s.user_id == e.user_id) & (s.month == last))
            ).all()  # fmt: skip
    finally:
        engine.dispose()
    assert len(rows) > 1000
    risk = np.array([r[9] for r in rows], dtype=float)
    assert np.all((risk >= 0) & (risk <= 1))
    reasons = {name for r in rows if r[11] for name in r[11].split(",")}
    assert reasons and reasons <= set(FEATURES)
    # What the recompute stored is the model applied to the stored profile and last month's
    # snapshot: the features training read from the history.
    x = feature_matrix(
        np.array([r[1] for r in rows], dtype=float),
        np.array([r[2] for r in rows], dtype=float),
        np.array([r[3] for r in rows], dtype=float),
        np.array([RISK_LEVELS.index(r[4]) for r in rows]),
        np.array([SPENDING_LEVELS.index(r[5]) for r in rows]),
        np.array([SEGMENTS.index(r[6]) for r in rows]),
        np.array([np.nan if r[7] is None else r[7] for r in rows], dtype=float),
        np.array([np.nan if r[8] is None else r[8] for r in rows], dtype=float),
    )
    assert np.allclose(models["crisis"].probability(x), risk, atol=0.01)
    disengagement = np.array([r[10] for r in rows], dtype=float)
    assert np.allclose(models["disengagement"].probability(x), disengagement, atol=0.01)

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
