"""The database side of analytics: this month's snapshots (set-based), the history read as a
:class:`~treevu.services.analytics.cube.Cube`, and answers stored with the version of the data
they were computed from. Synchronous: it runs on the bulk engine, off the event loop."""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final

import numpy as np
from sqlalchemy import Connection, Engine, case, delete, func, insert, literal, select

from treevu.db import AnalyticsResult, EmployeeSegment, Intervention, ProfileSnapshot, User
from treevu.db.bulk import fetch_numbers, placeholder
from treevu.segmentation.policy import RISK_LEVELS, SEGMENTS, SPENDING_LEVELS
from treevu.services.analytics import cube as C
from treevu.services.analytics import effect as E

#: Horizons (months) of the intervention effect kept ready; a call may ask for any of them.
HORIZONS: Final = range(1, 7)
_S = ProfileSnapshot


#: Users a snapshot transaction covers: SQLite writers wait for each one, not for the whole.
SNAPSHOT_BATCH: Final = 50_000


def take_snapshot(engine: Engine, month: date, now: datetime) -> int:
    """This month's snapshot of every active person's profile, replacing one taken earlier in
    the month (the nightly job runs daily; the month keeps its last day's profile). One
    transaction per ``SNAPSHOT_BATCH`` user ids — in one, at a million people, SQLite's other
    writers waited a minute — and the history is marked changed at the end."""
    es = EmployeeSegment
    with engine.connect() as conn:
        lo, hi = conn.execute(select(func.min(es.user_id), func.max(es.user_id))).one()
    names = ["month", "userId", "segment", "fwiScore", "wellnessScore", "engagementScore"]
    names += ["riskLevel", "spendingLevel", "takenAt", "crisisRisk30d", "disengagementRisk30d"]
    written = 0
    for start in range(int(lo or 0), int(hi or -1) + 1, SNAPSHOT_BATCH):
        ids = (start, start + SNAPSHOT_BATCH - 1)
        chosen = (
            select(
                literal(month),
                es.user_id,
                es.segment,
                es.fwi_score,
                es.wellness_score,
                es.engagement_score,
                es.risk_level,
                es.spending_level,
                literal(now),
                es.crisis_risk_30d,
                es.disengagement_risk_30d,
            )
            .join(User, User.id == es.user_id)
            .where(User.is_active.is_(True), es.user_id.between(*ids))
        )
        with engine.begin() as conn:
            conn.execute(delete(_S).where(_S.month == month, _S.user_id.between(*ids)))
            done = conn.execute(
                insert(_S).from_select(names, chosen).execution_options(preserve_rowcount=True)
            )
            written += int(done.rowcount or 0)
    with engine.begin() as conn:
        history_written(conn, now)
    return written


def _code(column: Any, names: Iterable[str]) -> Any:
    return case({name: i for i, name in enumerate(names)}, value=column, else_=C.ABSENT)


def months_held(conn: Connection) -> list[date]:
    found = conn.execute(select(_S.month).distinct().order_by(_S.month)).scalars().all()
    if not found:
        return []
    first, last = C.month_of(_as_date(found[0])), C.month_of(_as_date(found[-1]))
    months, m = [], first
    while m <= last:
        months.append(m)
        m = C.add_months(m, 1)
    return months


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def load_cube(conn: Connection) -> C.Cube:
    """Every snapshot as arrays: one query a month, numbers only (codes for the levels)."""
    months = months_held(conn)
    compiled = {
        name: str(expr.compile(conn, compile_kwargs={"literal_binds": True}))
        for name, expr in (
            ("segment", _code(_S.segment, SEGMENTS)),
            ("risk", _code(_S.risk_level, RISK_LEVELS)),
            ("spending", _code(_S.spending_level, SPENDING_LEVELS)),
        )
    }
    exprs = [
        "userId",
        compiled["segment"],
        compiled["risk"],
        compiled["spending"],
        "COALESCE(fwiScore, -1)",
        "COALESCE(engagementScore, -1)",
        "COALESCE(wellnessScore, -1)",
    ]
    per_month = []
    for month in months:
        value: Any = month.isoformat() if conn.dialect.name == "sqlite" else month
        per_month.append(
            fetch_numbers(
                conn,
                exprs,
                f"FROM profile_snapshots WHERE month = {placeholder(conn)}",
                [value],
                float,
            )
        )
    ids = np.unique(np.concatenate([t[:, 0] for t in per_month])) if per_month else np.zeros(0)
    user_ids = ids.astype(np.int64)
    n, m = len(user_ids), len(months)
    segment = np.full((n, m), C.ABSENT, dtype=np.int8)
    risk = np.full((n, m), C.ABSENT, dtype=np.int8)
    spending = np.full((n, m), C.ABSENT, dtype=np.int8)
    fwi = np.full((n, m), np.nan, dtype=np.float32)
    engagement = np.full((n, m), np.nan, dtype=np.float32)
    wellness = np.full((n, m), np.nan, dtype=np.float32)
    for t, table in enumerate(per_month):
        rows = np.searchsorted(user_ids, table[:, 0].astype(np.int64))
        segment[rows, t] = table[:, 1]
        risk[rows, t] = table[:, 2]
        spending[rows, t] = table[:, 3]
        for target, k in ((fwi, 4), (engagement, 5), (wellness, 6)):
            values = table[:, k].astype(np.float32)
            target[rows, t] = np.where(values < 0, np.nan, values)
    return C.Cube(user_ids, months, segment, fwi, engagement, wellness, risk, spending)


def load_treated(conn: Connection, cube: C.Cube) -> E.Treated:
    """Each person's first intervention, as (cube row, month index)."""
    rows = conn.execute(
        select(Intervention.user_id, func.min(Intervention.created_at)).group_by(
            Intervention.user_id
        )
    ).all()
    index = {m: t for t, m in enumerate(cube.months)}
    uids = np.array([int(uid) for uid, _ in rows], dtype=np.int64)
    months = np.array([index.get(C.month_of(at), -1) for _, at in rows], dtype=np.int64)
    pos = np.searchsorted(cube.user_ids, uids)
    known = pos < len(cube.user_ids)
    known[known] = cube.user_ids[pos[known]] == uids[known]
    keep = known & (months >= 0)
    return E.Treated(pos[keep].astype(np.int64), months[keep])


#: The key under which the snapshots' version is kept: a new one whenever snapshots are written.
HISTORY_VERSION: Final = "history-version"


def history_written(conn: Connection, now: datetime) -> None:
    """Mark the snapshots as changed (in the transaction that changed them): every answer
    computed before is stale from its commit on."""
    write_results(conn, {HISTORY_VERSION: uuid.uuid4().hex}, "", now)


def versions(conn: Connection) -> dict[str, str]:
    """What each kind of answer was computed from: the snapshots' version, and for the
    intervention effect also the newest intervention. Two primary-key lookups, at any size."""
    row = conn.execute(
        select(AnalyticsResult.payload).where(AnalyticsResult.key == HISTORY_VERSION)
    ).first()
    snap = f"h{row[0] if row else 0}"
    interventions = conn.execute(select(func.max(Intervention.id))).scalar()
    return {"history": snap, "effect": f"{snap}.i{interventions or 0}"}


@dataclass(frozen=True)
class Stored:
    payload: Any
    version: str
    computed_at: datetime


def read_result(conn: Connection, key: str) -> Stored | None:
    r = AnalyticsResult
    row = conn.execute(select(r.payload, r.version, r.computed_at).where(r.key == key)).first()
    return None if row is None else Stored(row[0], row[1], row[2])


def write_results(conn: Connection, results: dict[str, Any], version: str, now: datetime) -> None:
    keys = list(results)
    for start in range(0, len(keys), 500):
        conn.execute(
            delete(AnalyticsResult).where(AnalyticsResult.key.in_(keys[start : start + 500]))
        )
    if keys:
        conn.execute(
            insert(AnalyticsResult),
            [
                {"key": k, "version": version, "computed_at": now, "payload": v}
                for k, v in results.items()
            ],
        )


def transitions_key(a: date, b: date) -> str:
    return f"transitions:{C.month_label(a)}:{C.month_label(b)}"


def effect_key(horizon: int) -> str:
    return f"intervention-effect:{horizon}"


def compute_history(cube: C.Cube) -> dict[str, Any]:
    """Every transitions pair, the cohorts and the churn table (none without a history)."""
    if not cube.months:
        return {"history-months": []}
    results: dict[str, Any] = {"cohorts": C.cohorts(cube), "churn": C.churn(cube)}
    for a in range(len(cube.months)):
        for b in range(a + 1, len(cube.months)):
            results[transitions_key(cube.months[a], cube.months[b])] = C.transitions(cube, a, b)
    results["history-months"] = [C.month_label(m) for m in cube.months]
    return results


def compute_effects(cube: C.Cube, treated: E.Treated) -> dict[str, Any]:
    return {effect_key(h): E.estimate(cube, treated, h) for h in HORIZONS}


_refreshing = threading.Lock()
#: A stored answer of each kind, whose version tells whether that kind is current.
PROBE: Final = {"history": "history-months", "effect": effect_key(E.DEFAULT_HORIZON)}


def refresh(
    engine: Engine, now: Callable[[], datetime], only: str | None = None, *, if_stale: bool = False
) -> dict[str, str]:
    """Compute and store the answers (``only``: "history" or "effect"); one refresh at a time
    in a process. ``if_stale``: do nothing for a kind whose stored answers are current (a
    caller that waited for another's refresh finds its work done). Everything is computed
    before anything is written, so the write is one short transaction."""
    kinds = ["history", "effect"] if only is None else [only]
    with _refreshing:
        with engine.connect() as conn:
            version = versions(conn)
            if if_stale:
                kinds = [k for k in kinds if not _current(conn, k, version[k])]
            if not kinds:
                return version
            cube = load_cube(conn)
            treated = load_treated(conn, cube) if "effect" in kinds else None
        results: list[tuple[dict[str, Any], str]] = []
        if "history" in kinds:
            results.append((compute_history(cube), version["history"]))
        if treated is not None:
            results.append((compute_effects(cube, treated), version["effect"]))
        with engine.begin() as conn:
            for answers, stamp in results:
                write_results(conn, answers, stamp, now())
    return version


def _current(conn: Connection, kind: str, version: str) -> bool:
    stored = read_result(conn, PROBE[kind])
    return stored is not None and stored.version == version


_pool: ProcessPoolExecutor | None = None


def refresh_in_process(settings: Any, only: str | None = None, *, if_stale: bool = False) -> None:
    """:func:`refresh` in a worker process of its own (one, started on first use): a server's
    requests and per-second jobs do not wait for the interpreter lock while it loads and
    computes a million people's history."""
    global _pool
    if _pool is None:
        _pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    _pool.submit(_refresh_with, settings, only, if_stale).result()


def _refresh_with(settings: Any, only: str | None, if_stale: bool) -> None:
    from treevu.app import make_engines

    async_engine, engine = make_engines(settings)
    async_engine.sync_engine.dispose()
    try:
        refresh(engine, lambda: datetime.now(UTC), only, if_stale=if_stale)
    finally:
        engine.dispose()
