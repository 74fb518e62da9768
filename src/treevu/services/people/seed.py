"""Write a synthetic population (``treevu.population``) into the database, fast.

Rows go through the DBAPI cursor in chunks (``executemany``; ``COPY`` on PostgreSQL): a million
users and their inputs take seconds, not minutes. Timestamps are bound as the bulk recompute
binds them (:func:`~treevu.db.bulk.db_timestamp`), converted once per distinct value
rather than once per row. Re-seeding replaces users with the same ids.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Engine

from treevu.db.bulk import after_explicit_ids, copy_rows, db_timestamp, placeholder
from treevu.population import DEPARTMENTS, ROLES, Population
from treevu.segmentation.engine import INPUT_NAMES
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
