"""Write a synthetic population (``treevu.population``) into the database, fast.

Rows go through the DBAPI cursor in chunks (``executemany``; ``COPY`` on PostgreSQL): a million
users and their inputs take seconds, not minutes. Timestamps are bound as the bulk recompute
binds them (:func:`~treevu.db.bulk.db_timestamp`), converted once per distinct value
rather than once per row. Re-seeding replaces users with the same ids.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, cast

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Engine, Table, bindparam, delete, insert, update

from treevu.db import (
    Campaign,
    CampaignDelivery,
    EmployeeInputs,
    Intervention,
    ProfileSnapshot,
    RecommendationEvent,
    User,
)
from treevu.db.bulk import after_explicit_ids, copy_rows, db_timestamp, placeholder
from treevu.history import BASE_CONVERSION, TRUE_UPLIFT, History, campaign_outcomes
from treevu.population import DEPARTMENTS, ROLES, Population
from treevu.segmentation.engine import INPUT_NAMES
from treevu.segmentation.policy import RISK_LEVELS, SEGMENTS, SPENDING_LEVELS
from treevu.services.analytics.store import history_written
from treevu.services.campaigns.sending import variant_of
from treevu.services.rewards.achievements import baseline

CHUNK: Final = 50_000
#: Survey dates spread over this many days back: some fall outside the 180-day window.
SURVEY_AGE_DAYS: Final = 200
ProgressFn = Callable[[str, int, int], None]

USER_COLUMNS: Final = (
    "id",
    "email",
    "name",
    "role",
    "managerId",
    "department",
    "isActive",
    "counselorCapacity",
    "createdAt",
    "birthYear",
)
#: ``employee_inputs`` as seeded: the input names of SPEC §2 with the survey's date after its score.
INPUT_COLUMNS: Final = (
    "userId",
    *(
        c
        for name in INPUT_NAMES
        for c in ((name, "surveyAt") if name == "surveyScore" else (name,))
    ),
    "updatedAt",
)


def write_population(
    engine: Engine, population: Population, *, now: datetime, progress: ProgressFn | None = None
) -> int:
    """Insert (or replace) every user of ``population`` and the inputs of those who have them;
    the tiers and milestones they have reached are recorded as already announced."""
    n = len(population.user_id)
    with engine.begin() as conn:
        users = _user_columns(population, db_timestamp(conn, now))
        inputs = _input_columns(conn, population, now)
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        cur = dbapi.cursor()
        p = placeholder(conn)
        try:
            # Replace: drop what these ids had (cascades to their inputs and profiles).
            ids = population.user_id
            for start in range(0, n, CHUNK):
                lo, hi = int(ids[start]), int(ids[min(start + CHUNK, n) - 1])
                cur.execute(f"DELETE FROM users WHERE id BETWEEN {p} AND {p}", (lo, hi))
            _insert(conn, cur, "users", USER_COLUMNS, users, progress)
            _insert(conn, cur, "employee_inputs", INPUT_COLUMNS, inputs, progress)
            after_explicit_ids(conn, "users")
        finally:
            cur.close()
        # What this synthetic company had reached before the product watched: not news.
        for statement in baseline(now):
            conn.execute(statement)
    return n


def _user_columns(population: Population, stamp: datetime | str) -> list[list[Any]]:
    n = len(population.user_id)
    departments = np.array((*DEPARTMENTS, None), dtype=object)
    has_dept = population.role != ROLES.index("admin")
    dept_codes = np.where(has_dept, population.department, len(DEPARTMENTS))
    manager = population.manager_id
    return [
        population.user_id.tolist(),
        population.email,
        population.name,
        np.array(ROLES, dtype=object)[population.role].tolist(),
        [None if m == 0 else m for m in manager.tolist()],
        departments[dept_codes].tolist(),
        [True] * n,
        population.counselor_capacity.tolist(),
        [stamp] * n,
        population.birth_year.tolist(),
    ]


def _input_columns(conn: Connection, population: Population, now: datetime) -> list[list[Any]]:
    rows = np.flatnonzero(population.has_inputs)
    inp = population.inputs
    survey = inp.survey_score[rows]
    has_survey = ~np.isnan(survey)
    rng = np.random.default_rng(len(population.user_id))
    age_days = rng.integers(0, SURVEY_AGE_DAYS, size=len(rows))
    days_ago = np.array(
        [db_timestamp(conn, now - timedelta(days=d)) for d in range(SURVEY_AGE_DAYS)],
        dtype=object,
    )
    stamp = db_timestamp(conn, now)
    survey_score = survey.astype(object)
    survey_score[~has_survey] = None
    survey_at = days_ago[age_days]
    survey_at[~has_survey] = None

    def counts(column: npt.NDArray[np.float64]) -> list[int]:
        values: list[int] = column[rows].astype(np.int64).tolist()
        return values

    return [
        population.user_id[rows].tolist(),
        inp.monthly_income[rows].tolist(),
        inp.monthly_spending[rows].tolist(),
        inp.savings_balance[rows].tolist(),
        inp.monthly_debt_payments[rows].tolist(),
        counts(inp.ewa_advances_30d),
        counts(inp.alerts_30d),
        survey_score.tolist(),
        survey_at.tolist(),
        counts(inp.active_days_30d),
        counts(inp.goals_completed_90d),
        counts(inp.lessons_completed_90d),
        counts(inp.tree_points),
        [stamp] * len(rows),
    ]


def _insert(
    conn: Connection,
    cur: Any,
    table: str,
    names: tuple[str, ...],
    columns: list[list[Any]],
    progress: ProgressFn | None,
) -> None:
    def report(done: int, total: int) -> None:
        if progress:
            progress(table, done, total)

    copy_rows(conn, cur, table, names, columns, progress=report)


SNAPSHOT_COLUMNS: Final = (
    "month",
    "userId",
    "segment",
    "fwiScore",
    "wellnessScore",
    "engagementScore",
    "riskLevel",
    "spendingLevel",
    "takenAt",
)
#: The two seeded campaigns: one with a true uplift of variant 1, one A/A (no difference).
EXPERIMENTS: Final = (
    ("Savings nudge (experiment)", TRUE_UPLIFT, 3),
    ("A/A check (experiment)", 0.0, 2),
)


def write_history(
    engine: Engine,
    population: Population,
    history: History,
    *,
    now: datetime,
    seed: int,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """The past of ``history`` for a population written by :func:`write_population`: monthly
    snapshots, when people joined (``createdAt``) and who left (inactive), today's inputs of
    the people counseled, their interventions, and two campaign experiments with their
    conversions. Returns what is true of it (``history`` module)."""
    rng = np.random.default_rng([seed, 7])
    uids = population.user_id[history.rows]
    past = history.months[:-1]
    with engine.begin() as conn:
        conn.execute(delete(ProfileSnapshot).where(ProfileSnapshot.month.in_(past)))
        history_written(conn, now)
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        cur = dbapi.cursor()
        try:
            for t, month in enumerate(past):
                here = history.present[:, t]
                prof = history.profiles[t]
                columns: list[list[Any]] = [
                    [month.isoformat() if conn.dialect.name == "sqlite" else month]
                    * int(here.sum()),
                    uids[here].tolist(),
                    [SEGMENTS[k] for k in prof.segment[here]],
                    np.round(prof.fwi_score[here], 2).tolist(),
                    np.round(prof.wellness_score[here], 2).tolist(),
                    np.round(prof.engagement_score[here], 2).tolist(),
                    [RISK_LEVELS[k] for k in prof.risk_level[here]],
                    [SPENDING_LEVELS[k] for k in prof.spending_level[here]],
                    [db_timestamp(conn, _at(month, 28))] * int(here.sum()),
                ]
                copy_rows(conn, cur, "profile_snapshots", SNAPSHOT_COLUMNS, columns)
                if progress:
                    progress("profile_snapshots", t + 1, len(past))
        finally:
            cur.close()
        users = cast(Table, User.__table__)
        joined = history.entry_month > 0
        if joined.any():
            conn.execute(
                update(users)
                .where(users.c.id == bindparam("uid"))
                .values(createdAt=bindparam("at")),
                [
                    {"uid": int(u), "at": _at(history.months[int(t)], 1)}
                    for u, t in zip(uids[joined], history.entry_month[joined], strict=True)
                ],
            )
        left = uids[history.leavers].tolist()
        for start in range(0, len(left), 10_000):  # PostgreSQL binds at most 65,535 values
            conn.execute(
                update(users)
                .where(users.c.id.in_(left[start : start + 10_000]))
                .values(isActive=False)
            )
        treated = history.treated_month >= 0
        now_inputs = history.current_inputs
        inputs = cast(Table, EmployeeInputs.__table__)
        if treated.any():
            conn.execute(
                update(inputs)
                .where(inputs.c.userId == bindparam("uid"))
                .values(savingsBalance=bindparam("savings"), monthlyDebtPayments=bindparam("debt")),
                [
                    {
                        "uid": int(uids[i]),
                        "savings": float(now_inputs.savings_balance[i]),
                        "debt": float(now_inputs.monthly_debt_payments[i]),
                    }
                    for i in np.flatnonzero(treated)
                ],  # fmt: skip
            )
            counselors = population.user_id[population.role == ROLES.index("counselor")]
            rows: list[dict[str, Any]] = []
            for k, i in enumerate(np.flatnonzero(treated)):
                opened = _at(
                    history.months[int(history.treated_month[i])], int(rng.integers(1, 28))
                )
                rows.append(
                    {
                        "userId": int(uids[i]),
                        "counselorId": int(counselors[k % len(counselors)])
                        if len(counselors)
                        else None,
                        "kind": "crisis",
                        "status": "resolved",
                        "plan": {"steps": []},
                        "createdAt": opened,
                        "updatedAt": opened + timedelta(days=45),
                        "endedAt": opened + timedelta(days=45),
                    }
                )
            conn.execute(insert(cast(Table, Intervention.__table__)), rows)
        campaigns = {}
        for name, uplift, months_ago in EXPERIMENTS:
            if months_ago > len(past):
                continue
            t = len(past) - months_ago
            campaigns[name] = _seed_campaign(conn, rng, history, uids, t, name, uplift)
    return {
        "interventionEffect": {str(h): round(v, 4) for h, v in history.true_effect.items()},
        "interventions": int(treated.sum()),
        "experiments": [
            {"campaignId": cid, "name": name, "uplift": uplift, "baseRate": BASE_CONVERSION}
            for (name, uplift, _), cid in (
                (e, campaigns[e[0]]) for e in EXPERIMENTS if e[0] in campaigns
            )
        ],
    }


def _at(month: date, day: int) -> datetime:
    return datetime(month.year, month.month, day, 10, 0, tzinfo=UTC)


def _seed_campaign(
    conn: Connection,
    rng: np.random.Generator,
    history: History,
    uids: npt.NDArray[np.int64],
    t: int,
    name: str,
    uplift: float,
) -> int:
    """A completed two-variant campaign to the steady performers of month ``t``; conversions
    (a recommendation completed within its 7 days) drawn with ``uplift`` for variant 1."""
    sent_at = _at(history.months[t], 3)
    segment = "steady_performers"
    created = conn.execute(
        insert(cast(Table, Campaign.__table__)).values(
            name=name,
            segment=segment,
            campaignType="engagement",
            title="Build your buffer",
            message="A small automatic transfer each payday adds up.",
            status="completed",
            pacePerMinute=1000,
            createdAt=sent_at,
            variants=[
                {
                    "title": "Build your buffer",
                    "message": "A small automatic transfer each payday adds up.",
                },
                {"title": "Your future self says thanks", "message": "Start a savings goal today."},
            ],
            startedAt=sent_at,
            completedAt=sent_at,
            conversionEvent="recommendation_completed",
            conversionDays=7,
        )
    )
    key = created.inserted_primary_key
    assert key is not None
    cid = int(key[0])
    here = history.present[:, t] & (history.profiles[t].segment == SEGMENTS.index(segment))
    targets = uids[here]
    variants = np.array([variant_of(cid, int(u), 2) for u in targets], dtype=np.int64)
    converted = campaign_outcomes(rng, variants, uplift)
    if len(targets):
        conn.execute(
            insert(cast(Table, CampaignDelivery.__table__)),
            [
                {
                    "campaignId": cid,
                    "userId": int(u),
                    "segment": segment,
                    "status": "sent",
                    "position": k,
                    "variant": int(v),
                    "sentAt": sent_at,
                }
                for k, (u, v) in enumerate(zip(targets, variants, strict=True))
            ],  # fmt: skip
        )
    delays = rng.uniform(0.0, 5.0, int(converted.sum()))
    if converted.any():
        conn.execute(
            insert(cast(Table, RecommendationEvent.__table__)),
            [
                {
                    "userId": int(u),
                    "recommendationId": f"campaign-{cid}",
                    "kind": "completed",
                    "createdAt": sent_at + timedelta(days=float(d)),
                }
                for u, d in zip(targets[converted], delays, strict=True)
            ],  # fmt: skip
        )
    return cid


def seed_history(
    engine: Engine,
    population: Population,
    months: int,
    *,
    seed: int,
    now: datetime,
    survey_valid_days: int = 180,
    progress: ProgressFn | None = None,
) -> tuple[History, dict[str, Any]]:
    """For a population just written: ``months`` of synthetic past (:func:`write_history`),
    today's profiles placed, this month's snapshot taken and the analytics answers stored —
    what ``treevu seed --history-months`` does. Returns the history and what is true of it."""
    from treevu.history import generate_history
    from treevu.segmentation.policy import default_policy
    from treevu.services.analytics import store
    from treevu.services.segmentation.recompute import recompute

    policy = default_policy()
    history = generate_history(population, policy, months, seed, now.date())
    truth = write_history(engine, population, history, now=now, seed=seed, progress=progress)
    recompute(engine, policy, now=now, survey_valid_days=survey_valid_days, progress=progress)
    store.take_snapshot(engine, history.months[-1], now)
    store.refresh(engine, lambda: now)
    return history, truth
