"""Bulk recompute: read inputs in columns → score → write only the rows that changed.

Runs on a synchronous engine (off the event loop, in a worker thread when called from the
server): reading a million rows goes through the DBAPI cursor straight into numpy, without
building ORM objects or dicts. The same function recomputes one user (``user_ids=[id]``) and
everyone, so both paths share every formula. It commits, and returns the segment changes for the
caller to publish — after the commit, never before.
"""

from __future__ import annotations

import itertools
import re
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Engine

from treevu.segmentation.engine import Inputs, Profiles, reason_codes, reasons_of, score
from treevu.segmentation.policy import RISK_LEVELS, SEGMENTS, SPENDING_LEVELS, Policy
from treevu.segmentation.recommendations import CATALOG, eligibility

INPUT_COLUMNS: Final = (
    "monthlyIncome",
    "monthlySpending",
    "savingsBalance",
    "monthlyDebtPayments",
    "ewaAdvances30d",
    "alerts30d",
    "surveyScore",
    "activeDays30d",
    "goalsCompleted90d",
    "lessonsCompleted90d",
    "treePoints",
)
WRITE_CHUNK: Final = 50_000
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class SegmentChange:
    """A user moved from one segment to another (``from_segment`` None: first placement)."""

    user_id: int
    from_segment: str | None
    to_segment: str
    fwi_score: float


@dataclass(slots=True)
class RecomputeResult:
    scored: int = 0
    written: int = 0
    changes: list[SegmentChange] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def segment_changes(self) -> list[SegmentChange]:
        """Changes of an existing segment (first placements excluded): what users are told."""
        return [c for c in self.changes if c.from_segment is not None]


def _placeholder(conn: Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def _segment_code_sql() -> str:
    whens = " ".join(f"WHEN '{name}' THEN {i}" for i, name in enumerate(SEGMENTS))
    return f"CASE s.segment {whens} ELSE -1 END"


def read_columns(
    conn: Connection, survey_cutoff: datetime, user_ids: Sequence[int] | None
) -> tuple[npt.NDArray[np.int64], Inputs, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """User ids, inputs, stored segment code (-1 none) and stored profile hash, by user id."""
    p = _placeholder(conn)
    survey = (
        f"CASE WHEN i.surveyAt >= {p} AND i.surveyScore IS NOT NULL THEN i.surveyScore ELSE -1 END"
    )
    cols = ", ".join(survey if c == "surveyScore" else f"i.{c}" for c in INPUT_COLUMNS)
    sql = (
        f"SELECT i.userId, {cols}, {_segment_code_sql()}, COALESCE(s.profileHash, 0) "
        "FROM employee_inputs i JOIN users u ON u.id = i.userId "
        "LEFT JOIN employee_segments s ON s.userId = i.userId "
        "WHERE u.isActive = " + ("1" if conn.dialect.name != "postgresql" else "true")
    )
    params: list[Any] = [survey_cutoff.replace(tzinfo=None)]
    if user_ids is not None:
        sql += f" AND i.userId IN ({', '.join([p] * len(user_ids))})"
        params.extend(int(u) for u in user_ids)
    sql = _quote_camel(sql + " ORDER BY i.userId", conn)
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        cursor.execute(sql, tuple(params))
        rows = cursor.fetchall()
    finally:
        cursor.close()
    width = len(INPUT_COLUMNS) + 3
    n = len(rows)
    flat = np.fromiter(
        itertools.chain.from_iterable(rows), dtype=np.float64, count=n * width
    ).reshape(n, width)
    user_id = flat[:, 0].astype(np.int64)
    columns = [flat[:, 1 + k] for k in range(len(INPUT_COLUMNS))]
    survey_col = INPUT_COLUMNS.index("surveyScore")
    columns[survey_col] = np.where(columns[survey_col] < 0, np.nan, columns[survey_col])
    stored_segment = flat[:, width - 2].astype(np.int64)
    # Hashes are 64-bit; re-read them exactly rather than through float64.
    stored_hash = np.fromiter((r[width - 1] for r in rows), dtype=np.int64, count=n)
    return user_id, Inputs.from_columns(columns), stored_segment, stored_hash


def read_exclusions(
    conn: Connection, user_id: npt.NDArray[np.int64], catalog_ids: Sequence[str]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(row, item) pairs of recommendations the user dismissed or completed."""
    if len(user_id) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    sql = (
        "SELECT DISTINCT userId, recommendationId FROM recommendation_events "
        "WHERE kind IN ('dismissed', 'completed')"
    )
    params: tuple[Any, ...] = ()
    if len(user_id) <= 1000:
        p = _placeholder(conn)
        sql += f" AND userId IN ({', '.join([p] * len(user_id))})"
        params = tuple(int(u) for u in user_id)
    sql = _quote_camel(sql, conn)
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        cursor.execute(sql, params)
        pairs = cursor.fetchall()
    finally:
        cursor.close()
    item_index = {rid: k for k, rid in enumerate(catalog_ids)}
    rows: list[int] = []
    items: list[int] = []
    for uid, rid in pairs:
        pos = int(np.searchsorted(user_id, uid))
        if pos < len(user_id) and user_id[pos] == uid and rid in item_index:
            rows.append(pos)
            items.append(item_index[rid])
    return np.asarray(rows, dtype=np.int64), np.asarray(items, dtype=np.int64)


def recommendation_counts(
    conn: Connection, user_id: npt.NDArray[np.int64], inputs: Inputs, profiles: Profiles
) -> npt.NDArray[np.int64]:
    eligible = eligibility(inputs, profiles, CATALOG)
    counts: npt.NDArray[np.int64] = eligible.sum(axis=1).astype(np.int64)
    rows, items = read_exclusions(conn, user_id, [item.id for item in CATALOG])
    if len(rows):
        np.subtract.at(counts, rows, eligible[rows, items].astype(np.int64))
    return counts


def profile_hash(
    profiles: Profiles, rec_count: npt.NDArray[np.int64], policy: Policy
) -> npt.NDArray[np.int64]:
    """A 64-bit fingerprint of every stored value of a profile (scores at 2 decimals)."""
    parts = [
        profiles.segment.astype(np.uint64),
        profiles.rule.astype(np.uint64),
        profiles.spending_level.astype(np.uint64),
        profiles.risk_level.astype(np.uint64),
        profiles.reason_mask.astype(np.uint64),
        np.rint(profiles.fwi_score * 100).astype(np.uint64),
        np.rint(profiles.engagement_score * 100).astype(np.uint64),
        np.rint(profiles.wellness_score * 100).astype(np.uint64),
        rec_count.astype(np.uint64),
    ]
    h = np.full(len(profiles), zlib.crc32(policy.version.encode()), dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    with np.errstate(over="ignore"):
        for part in parts:
            h = (h ^ part) * prime
            h ^= h >> np.uint64(29)
    return h.view(np.int64)


def _upsert_sql(conn: Connection) -> str:
    cols = (
        "userId",
        "segment",
        "wellnessScore",
        "fwiScore",
        "spendingLevel",
        "riskLevel",
        "engagementScore",
        "interventionType",
        "recommendationCount",
        "lastUpdated",
        "rule",
        "reasons",
        "policyVersion",
        "profileHash",
    )
    p = _placeholder(conn)
    head = (
        f"INSERT INTO employee_segments ({', '.join(cols)}) VALUES ({', '.join([p] * len(cols))})"
    )
    if conn.dialect.name == "mysql":
        sets = ", ".join(f"{c} = VALUES({c})" for c in cols[1:])
        return f"{head} ON DUPLICATE KEY UPDATE {sets}"
    sets = ", ".join(f"{c} = excluded.{c}" for c in cols[1:])
    return f"{head} ON CONFLICT (userId) DO UPDATE SET {sets}"


def _quote_camel(sql: str, conn: Connection) -> str:
    """PostgreSQL folds unquoted names to lower case; quote the camelCase ones."""
    if conn.dialect.name != "postgresql":
        return sql
    return re.sub(r"(?<![\"'\w])([a-z]+[A-Z]\w*)(?![\"'\w])", r'"\1"', sql)


def recompute(
    engine: Engine,
    policy: Policy,
    *,
    now: datetime,
    survey_valid_days: int = 180,
    user_ids: Sequence[int] | None = None,
    progress: ProgressFn | None = None,
) -> RecomputeResult:
    """Score the given users (all active users with inputs when None) and store what changed."""
    result = RecomputeResult()
    clock = time.perf_counter
    t0 = clock()
    with engine.begin() as conn:
        cutoff = now - timedelta(days=survey_valid_days)
        user_id, inputs, stored_segment, stored_hash = _read(conn, cutoff, user_ids)
        n = len(user_id)
        result.timings["read"] = clock() - t0
        if progress:
            progress("read", n, n)
        t1 = clock()
        profiles = score(inputs, policy)
        rec_count = recommendation_counts(conn, user_id, inputs, profiles)
        new_hash = profile_hash(profiles, rec_count, policy)
        changed = np.flatnonzero((new_hash != stored_hash) | (stored_segment < 0))
        result.scored = n
        result.timings["score"] = clock() - t1
        if progress:
            progress("score", n, n)
        t2 = clock()
        _write(conn, policy, now, user_id, profiles, rec_count, new_hash, changed, progress)
        moved = changed[profiles.segment[changed] != stored_segment[changed]]
        _append_history(conn, policy, now, user_id, profiles, stored_segment, moved)
        result.written = len(changed)
        result.timings["write"] = clock() - t2
    result.changes = [
        SegmentChange(
            user_id=int(user_id[i]),
            from_segment=SEGMENTS[int(stored_segment[i])] if stored_segment[i] >= 0 else None,
            to_segment=SEGMENTS[int(profiles.segment[i])],
            fwi_score=round(float(profiles.fwi_score[i]), 2),
        )
        for i in moved.tolist()
    ]
    result.timings["total"] = clock() - t0
    return result


def _read(
    conn: Connection, cutoff: datetime, user_ids: Sequence[int] | None
) -> tuple[npt.NDArray[np.int64], Inputs, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    if user_ids is not None and len(user_ids) > 1000:
        # Large explicit lists: read everyone and keep the wanted rows.
        uid, inputs, seg, hashes = read_columns(conn, cutoff, None)
        keep = np.isin(uid, np.asarray(user_ids, dtype=np.int64))
        cols = [getattr(inputs, f)[keep] for f in inputs.__slots__]
        return uid[keep], Inputs.from_columns(cols), seg[keep], hashes[keep]
    return read_columns(conn, cutoff, user_ids)


def _write(
    conn: Connection,
    policy: Policy,
    now: datetime,
    user_id: npt.NDArray[np.int64],
    profiles: Profiles,
    rec_count: npt.NDArray[np.int64],
    new_hash: npt.NDArray[np.int64],
    changed: npt.NDArray[np.intp],
    progress: ProgressFn | None,
) -> None:
    if len(changed) == 0:
        return
    codes = reason_codes(policy)
    masks = profiles.reason_mask[changed]
    unique_masks, inverse = np.unique(masks, return_inverse=True)
    reason_text = np.array(
        [",".join(reasons_of(int(m), codes)) for m in unique_masks], dtype=object
    )[inverse]
    segment_names = np.array(SEGMENTS, dtype=object)
    rules = policy.rules
    rule_names = np.array([r.name for r in rules], dtype=object)
    intervention = np.array([r.intervention_type for r in rules], dtype=object)
    stamp = now.replace(tzinfo=None)
    rule_idx = profiles.rule[changed]
    columns: list[list[Any]] = [
        user_id[changed].tolist(),
        segment_names[profiles.segment[changed]].tolist(),
        np.round(profiles.wellness_score[changed], 2).tolist(),
        np.round(profiles.fwi_score[changed], 2).tolist(),
        np.array(SPENDING_LEVELS, dtype=object)[profiles.spending_level[changed]].tolist(),
        np.array(RISK_LEVELS, dtype=object)[profiles.risk_level[changed]].tolist(),
        np.round(profiles.engagement_score[changed], 2).tolist(),
        intervention[rule_idx].tolist(),
        rec_count[changed].tolist(),
        [stamp] * len(changed),
        rule_names[rule_idx].tolist(),
        reason_text.tolist(),
        [policy.version] * len(changed),
        new_hash[changed].tolist(),
    ]
    rows = list(zip(*columns, strict=True))
    sql = _quote_camel(_upsert_sql(conn), conn)
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        for start in range(0, len(rows), WRITE_CHUNK):
            cursor.executemany(sql, rows[start : start + WRITE_CHUNK])
            if progress:
                progress("write", min(start + WRITE_CHUNK, len(rows)), len(rows))
    finally:
        cursor.close()


def _append_history(
    conn: Connection,
    policy: Policy,
    now: datetime,
    user_id: npt.NDArray[np.int64],
    profiles: Profiles,
    stored_segment: npt.NDArray[np.int64],
    moved: npt.NDArray[np.intp],
) -> None:
    if len(moved) == 0:
        return
    segment_names = np.array((*SEGMENTS, None), dtype=object)
    rows = list(
        zip(
            user_id[moved].tolist(),
            segment_names[stored_segment[moved]].tolist(),  # -1 → None
            segment_names[profiles.segment[moved]].tolist(),
            np.round(profiles.fwi_score[moved], 2).tolist(),
            [policy.version] * len(moved),
            [now.replace(tzinfo=None)] * len(moved),
            strict=True,
        )
    )
    p = _placeholder(conn)
    sql = _quote_camel(
        "INSERT INTO segment_history (userId, fromSegment, toSegment, fwiScore, policyVersion, "
        f"changedAt) VALUES ({p}, {p}, {p}, {p}, {p}, {p})",
        conn,
    )
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        for start in range(0, len(rows), WRITE_CHUNK):
            cursor.executemany(sql, rows[start : start + WRITE_CHUNK])
    finally:
        cursor.close()
