"""Write a synthetic population (``treevu.population``) into the database, fast.

Rows go through the DBAPI cursor in chunks of ``executemany``: a million users and their inputs
take seconds, not minutes. Re-seeding replaces users with the same ids.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

import numpy as np
from sqlalchemy import Engine

from treevu.population import DEPARTMENTS, ROLES, Population

CHUNK: Final = 50_000
ProgressFn = Callable[[str, int, int], None]


def write_population(
    engine: Engine, population: Population, *, now: datetime, progress: ProgressFn | None = None
) -> int:
    """Insert (or replace) every user of ``population`` and the inputs of those who have them."""
    n = len(population.user_id)
    stamp = now.replace(tzinfo=None)
    departments = np.array((*DEPARTMENTS, None), dtype=object)
    roles = np.array(ROLES, dtype=object)
    has_dept = population.role != ROLES.index("admin")
    dept_codes = np.where(has_dept, population.department, len(DEPARTMENTS))
    manager = population.manager_id
    users = list(
        zip(
            population.user_id.tolist(),
            population.email,
            population.name,
            roles[population.role].tolist(),
            [None if m == 0 else m for m in manager.tolist()],
            departments[dept_codes].tolist(),
            [True] * n,
            population.counselor_capacity.tolist(),
            [stamp] * n,
            strict=True,
        )
    )
    rows = np.flatnonzero(population.has_inputs)
    inp = population.inputs
    survey = inp.survey_score[rows]
    has_survey = ~np.isnan(survey)
    # Survey dates spread over the last 200 days: some fall outside the 180-day window.
    rng = np.random.default_rng(int(n))
    age_days = rng.integers(0, 200, size=len(rows))
    survey_at = [
        stamp - timedelta(days=int(d)) if s else None
        for d, s in zip(age_days.tolist(), has_survey.tolist(), strict=True)
    ]
    inputs = list(
        zip(
            population.user_id[rows].tolist(),
            inp.monthly_income[rows].tolist(),
            inp.monthly_spending[rows].tolist(),
            inp.savings_balance[rows].tolist(),
            inp.monthly_debt_payments[rows].tolist(),
            inp.ewa_advances_30d[rows].astype(np.int64).tolist(),
            inp.alerts_30d[rows].astype(np.int64).tolist(),
            [None if not h else float(v) for v, h in zip(survey, has_survey, strict=True)],
            survey_at,
            inp.active_days_30d[rows].astype(np.int64).tolist(),
            inp.goals_completed_90d[rows].astype(np.int64).tolist(),
            inp.lessons_completed_90d[rows].astype(np.int64).tolist(),
            inp.tree_points[rows].astype(np.int64).tolist(),
            [stamp] * len(rows),
            strict=True,
        )
    )
    with engine.begin() as conn:
        p = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        q = '"' if conn.dialect.name == "postgresql" else ""
        ids = population.user_id
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        cur = dbapi.cursor()
        try:
            # Replace: drop what these ids had (cascades to their inputs and profiles).
            for start in range(0, n, CHUNK):
                lo, hi = int(ids[start]), int(ids[min(start + CHUNK, n) - 1])
                cur.execute(f"DELETE FROM users WHERE id BETWEEN {p} AND {p}", (lo, hi))
            _insert(
                cur,
                "users",
                (
                    "id",
                    "email",
                    "name",
                    "role",
                    "managerId",
                    "department",
                    "isActive",
                    "counselorCapacity",
                    "createdAt",
                ),
                users,
                p,
                q,
                progress,
            )
            _insert(
                cur,
                "employee_inputs",
                (
                    "userId",
                    "monthlyIncome",
                    "monthlySpending",
                    "savingsBalance",
                    "monthlyDebtPayments",
                    "ewaAdvances30d",
                    "alerts30d",
                    "surveyScore",
                    "surveyAt",
                    "activeDays30d",
                    "goalsCompleted90d",
                    "lessonsCompleted90d",
                    "treePoints",
                    "updatedAt",
                ),
                inputs,
                p,
                q,
                progress,
            )
            if conn.dialect.name == "postgresql":
                cur.execute(
                    "SELECT setval(pg_get_serial_sequence('users', 'id'), "
                    "(SELECT MAX(id) FROM users))"
                )
        finally:
            cur.close()
    return n


def _insert(
    cur: Any,
    table: str,
    cols: tuple[str, ...],
    rows: list[tuple[Any, ...]],
    p: str,
    q: str,
    progress: ProgressFn | None,
) -> None:
    names = ", ".join(f"{q}{c}{q}" for c in cols)
    sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join([p] * len(cols))})"
    for start in range(0, len(rows), CHUNK):
        cur.executemany(sql, rows[start : start + CHUNK])
        if progress:
            progress(table, min(start + CHUNK, len(rows)), len(rows))
