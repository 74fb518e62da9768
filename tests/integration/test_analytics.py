"""History and analytics over the API on every backend (SPEC §10): snapshots written and read
back exactly, each analytics operation over REST and tRPC, admins only, stale answers
recomputed, and the nightly job."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, insert, select

from tests.conftest import Database, LiveServer
from tests.integration.commands import treevu
from tests.integration.workflow import As, execute, rows, scalar, sync_engine
from treevu.db import (
    AnalyticsResult,
    CampaignDelivery,
    EmployeeSegment,
    Intervention,
    ProfileSnapshot,
    RecommendationEvent,
    User,
)
from treevu.history import History, as_cube, generate_history, treated_of
from treevu.population import COUNSELOR, EMPLOYEE, MANAGER, generate_population
from treevu.segmentation.policy import default_policy
from treevu.services.analytics import cube as C
from treevu.services.analytics import store
from treevu.services.analytics.effect import estimate
from treevu.services.jobs import run_now
from treevu.services.people.seed import seed_history, write_population

USERS, MONTHS, SEED = 1500, 6, 11
POPULATION = generate_population(USERS, SEED)


def _seed(db: Database) -> tuple[History, dict[str, Any]]:
    engine = sync_engine(db)
    now = datetime.now(UTC)
    try:
        write_population(engine, POPULATION, now=now)
        return seed_history(engine, POPULATION, MONTHS, seed=SEED, now=now)
    finally:
        engine.dispose()


def _first(role: Any) -> int:
    return int(POPULATION.user_id[POPULATION.role == role][0])


def test_history_and_every_analytics_call_on_each_backend(database: Database) -> None:
    history, truth = _seed(database)
    expected = as_cube(history, POPULATION.user_id)
    engine = sync_engine(database)
    try:
        with engine.connect() as conn:
            stored = store.load_cube(conn)
    finally:
        engine.dispose()
    # What was written is what is read back (today's month comes from the live engine).
    past = slice(0, MONTHS)
    assert stored.months == expected.months
    assert np.array_equal(stored.user_ids, expected.user_ids)
    assert np.array_equal(stored.segment[:, past], expected.segment[:, past])
    assert np.allclose(stored.fwi[:, past], expected.fwi[:, past], equal_nan=True, atol=0.006)
    assert np.array_equal(stored.present[:, -1], expected.present[:, -1])

    first, last = history.months[0], history.months[MONTHS - 1]
    with LiveServer(database.settings()) as server:
        admin = As(server, database, 1)
        query = f"from={first.isoformat()}&to={(last + timedelta(days=9)).isoformat()}"
        moves = admin.get(f"/api/v1/analytics/transitions?{query}")
        assert moves.status_code == 200, moves.text
        body = moves.json()
        assert body["counts"] == C.transitions(expected, 0, MONTHS - 1)["counts"]
        assert body["from"] == f"{first:%Y-%m}" and body["to"] == f"{last:%Y-%m}"
        arg = json.dumps({"from": first.isoformat(), "to": last.isoformat()})
        same = admin.request("GET", f"/trpc/analytics.getTransitions?input={arg}")
        assert same.json()["result"]["data"]["counts"] == body["counts"]

        cohorts = admin.get("/api/v1/analytics/cohorts").json()["cohorts"]
        assert cohorts[0]["entryMonth"] == f"{first:%Y-%m}" and cohorts[0]["leftCensored"]
        assert len(cohorts) == MONTHS + 1  # people joined in every month since
        churn = admin.get("/api/v1/analytics/churn").json()
        assert {r["month"] for r in churn["rows"]} == {f"{m:%Y-%m}" for m in history.months[1:]}

        effect = admin.get("/api/v1/analytics/intervention-effect?horizonMonths=2").json()
        # The estimate from the database is the one from the history itself (the interval's
        # coverage of the truth is the unit tests' and bench/analytics_eval.py's business).
        direct = estimate(expected, treated_of(history, POPULATION.user_id), 2)
        assert effect["effect"] == pytest.approx(direct["effect"], abs=0.25), (effect, direct)
        assert effect["matched"] == pytest.approx(direct["matched"], rel=0.05)
        before = effect["computedAt"]
        version_of = select(AnalyticsResult.version).where(
            AnalyticsResult.key == "intervention-effect:2"
        )
        version_before = rows(database, version_of)

        uplift, aa = (e["campaignId"] for e in truth["experiments"])
        early = admin.get(f"/api/v1/campaigns/{uplift}/experiment").json()
        # Conversions as the database counts them = as counted here from the raw rows.
        deliveries = rows(database, select(CampaignDelivery.user_id, CampaignDelivery.variant,
                                            CampaignDelivery.sent_at).where(
            CampaignDelivery.campaign_id == uplift))  # fmt: skip
        events: dict[int, list[datetime]] = {}
        for uid, at in rows(
            database,
            select(RecommendationEvent.user_id, RecommendationEvent.created_at).where(
                RecommendationEvent.kind == "completed"
            ),
        ):
            events.setdefault(uid, []).append(at)
        converted = [0, 0]
        for uid, variant, sent_at in deliveries:
            window = sent_at + timedelta(days=7)
            converted[variant] += any(sent_at <= at <= window for at in events.get(uid, ()))
        assert [v["converted"] for v in early["variants"]] == converted
        # The campaign is over and its window closed: its counts were stored, once.
        kept = rows(
            database,
            select(AnalyticsResult.version).where(AnalyticsResult.key == f"experiment:{uplift}"),
        )
        assert kept == [("final",)]
        again = admin.get(f"/api/v1/campaigns/{uplift}/experiment").json()
        assert again["variants"] == early["variants"]
        assert not early["reached"] and early["comparisons"][0]["pValue"] is None
        assert "no peeking" in early["warning"]
        coarse = admin.get(f"/api/v1/campaigns/{aa}/experiment?minDetectableEffect=0.3").json()
        assert coarse["reached"] and coarse["comparisons"][0]["pValue"] is not None
        assert coarse["variants"][0]["sent"] >= coarse["plannedPerVariant"]

        # A new intervention makes the effect stale (recomputed), not the history's answers.
        cohorts_at = admin.get("/api/v1/analytics/cohorts").json()["computedAt"]
        now = datetime.now(UTC)
        execute(
            database,
            insert(Intervention).values(
                user_id=int(expected.user_ids[0]), kind="crisis", status="open", plan={},
                created_at=now, updated_at=now,
            ),
        )  # fmt: skip
        # The next call is served the stored answer, marked stale, while a refresh runs.
        again = admin.get("/api/v1/analytics/intervention-effect?horizonMonths=2").json()
        assert again["stale"] and again["computedAt"] == before
        deadline = time.monotonic() + 60
        while again["stale"]:
            assert time.monotonic() < deadline, "the refresh did not finish"
            time.sleep(0.2)
            again = admin.get("/api/v1/analytics/intervention-effect?horizonMonths=2").json()
        # Recomputed from the new data (MariaDB keeps whole seconds: computedAt may not move).
        assert rows(database, version_of) != version_before
        cohorts = admin.get("/api/v1/analytics/cohorts").json()
        assert cohorts["computedAt"] == cohorts_at and not cohorts["stale"]

        # The nightly job: this month's snapshot again, every answer afresh.
        run = server.run(run_now(server.app_state().services, "history.snapshot")).result()
        assert run.ok and run.result is not None
        profiled = scalar(
            database,
            select(func.count())
            .select_from(EmployeeSegment)
            .join(User, User.id == EmployeeSegment.user_id)
            .where(User.is_active.is_(True)),
        )
        this_month = history.months[-1]
        taken = scalar(
            database,
            select(func.count())
            .select_from(ProfileSnapshot)
            .where(ProfileSnapshot.month == this_month),
        )
        # Every active person's profile, once: the month's earlier snapshot was replaced.
        assert run.result["snapshots"] == profiled == taken > 0


@pytest.fixture
def sqlite_history(sqlite_database: Database) -> Database:
    _seed(sqlite_database)
    return sqlite_database


def test_only_admins_and_bad_months_are_named(sqlite_history: Database) -> None:
    db = sqlite_history
    paths = [
        "/api/v1/analytics/transitions?from=2026-01-01&to=2026-02-01",
        "/api/v1/analytics/cohorts",
        "/api/v1/analytics/churn",
        "/api/v1/analytics/intervention-effect",
        "/api/v1/campaigns/1/experiment",
    ]
    with LiveServer(db.settings()) as server:
        for role in (EMPLOYEE, MANAGER, COUNSELOR):
            someone = As(server, db, _first(role))
            for path in paths:
                assert someone.get(path).status_code == 403, (role, path)
            assert someone.request("GET", "/trpc/analytics.getCohorts").status_code == 403
        admin = As(server, db, 1)
        backwards = admin.get("/api/v1/analytics/transitions?from=2026-05-01&to=2026-02-01")
        assert backwards.status_code in (400, 422) and "to" in backwards.text
        old = admin.get("/api/v1/analytics/transitions?from=1990-01-01&to=1990-03-01")
        assert old.status_code == 400 and "from: no history for 1990-01" in old.text
        assert admin.get("/api/v1/analytics/intervention-effect?horizonMonths=9").status_code in (
            400,
            422,
        )
        assert admin.get("/api/v1/campaigns/999/experiment").status_code == 404


def test_no_history_yet_is_a_clear_404(sqlite_database: Database) -> None:
    with LiveServer(sqlite_database.settings()) as server:
        answer = As(server, sqlite_database, 1)
        # No users at all: the admin's token is for user 1, who does not exist yet.
        engine = sync_engine(sqlite_database)
        try:
            write_population(engine, POPULATION, now=datetime.now(UTC))
        finally:
            engine.dispose()
        missing = answer.get("/api/v1/analytics/cohorts")
        assert missing.status_code == 404 and "history.snapshot" in missing.text
        effect = answer.get("/api/v1/analytics/intervention-effect")
        assert effect.status_code == 200 and effect.json()["effect"] is None
        assert "too few people" in effect.json()["warnings"][0]


def test_the_seed_command_writes_a_history_of_n_months_and_says_what_is_true(
    sqlite_database: Database,
) -> None:
    """``treevu seed --history-months 2``: the people, 2 past months of snapshots as the
    synthetic history draws them and this month's, the analytics answers, and its truth."""
    said = treevu(sqlite_database, "seed", "--users", "80", "--seed", "4", "--history-months", "2")
    today = datetime.now(UTC)
    population = generate_population(80, 4)
    history = generate_history(population, default_policy(), 2, 4, today.date())
    assert "seeded 80 users (seed 4)" in said
    assert f"history: 2 months before {today:%Y-%m} and this month's snapshot" in said
    truth = json.loads(said.split("what is true of it (docs/analytics.md):", 1)[1])
    assert truth["interventionEffect"] == {
        str(h): round(v, 4) for h, v in history.true_effect.items()
    }
    assert truth["interventions"] == int((history.treated_month >= 0).sum())
    assert [e["name"] for e in truth["experiments"]] == ["A/A check (experiment)"]
    assert f"{truth['interventions']:,} interventions" in said
    engine = sync_engine(sqlite_database)
    try:
        with engine.connect() as conn:
            cube = store.load_cube(conn)
            answers = set(conn.execute(select(AnalyticsResult.key)).scalars())
            people = conn.execute(select(func.count()).select_from(User)).scalar_one()
    finally:
        engine.dispose()
    assert people == 80
    assert cube.months == history.months  # two past months and this one
    expected = as_cube(history, population.user_id)
    assert np.array_equal(cube.user_ids, expected.user_ids)
    assert np.array_equal(cube.segment[:, :2], expected.segment[:, :2])
    assert {"cohorts", "churn"} <= answers


#: Big enough that both experiments reach the planned size at the default plan (0.05 at alpha
#: 0.05, power 0.8); the seed and the day are fixed, so the counts are always the same.
EXPERIMENT_USERS, EXPERIMENT_SEED = 5000, 2
EXPERIMENT_DAY = datetime(2026, 1, 15, 12, tzinfo=UTC)


def test_the_experiment_finds_the_true_uplift_and_nothing_in_the_a_a_split(
    sqlite_database: Database,
) -> None:
    """On the synthetic history: the campaign whose variant 1 truly converts 0.05 more is
    found (significant, its interval holding 0.05), the A/A one is not (interval holding 0)."""
    population = generate_population(EXPERIMENT_USERS, EXPERIMENT_SEED)
    engine = sync_engine(sqlite_database)
    try:
        write_population(engine, population, now=EXPERIMENT_DAY)
        _, truth = seed_history(engine, population, 4, seed=EXPERIMENT_SEED, now=EXPERIMENT_DAY)
    finally:
        engine.dispose()
    (ab, true_uplift), (aa, no_uplift) = (
        (e["campaignId"], e["uplift"]) for e in truth["experiments"]
    )
    assert true_uplift == 0.05 and no_uplift == 0.0
    with LiveServer(sqlite_database.settings()) as server:
        admin = As(server, sqlite_database, 1)
        found, nothing = (admin.get(f"/api/v1/campaigns/{c}/experiment").json() for c in (ab, aa))
    for result in (found, nothing):
        assert result["reached"] and result["warning"] is None
        assert min(v["sent"] for v in result["variants"]) >= result["plannedPerVariant"]
    uplift, same = found["comparisons"][0], nothing["comparisons"][0]
    assert uplift["significant"] is True and uplift["pValue"] < 0.05, uplift
    assert uplift["ci95"][0] <= true_uplift <= uplift["ci95"][1] and uplift["ci95"][0] > 0
    assert same["significant"] is False and same["pValue"] >= 0.05, same
    assert same["ci95"][0] <= 0.0 <= same["ci95"][1]
