"""Bulk recompute: read inputs in columns → score → write only the rows that changed.

Runs on a synchronous engine (off the event loop, in a worker thread when called from the
server): reading a million rows goes through the DBAPI cursor straight into numpy, without
building ORM objects or dicts. The same function recomputes one user (``user_ids=[id]``) and
everyone, so both paths share every formula and every statement. Each change of segment is
written to ``outbox_events`` in the same transaction (the relay notifies after the commit); the
changes are also returned, for counting.

Users go in batches by user id (:func:`plan_batches`), all in one transaction. Reading a batch
is separate ordered scans (inputs; stored segment and fingerprint; exclusions) aligned in numpy,
rather than a join that the database would carry row by row. Writing stages the changed rows in
a temporary table — ``executemany`` on SQLite, ``COPY`` on PostgreSQL, multi-row ``INSERT`` on
MariaDB — and applies them with four set-based statements: the ``segment_history`` rows of
those who moved, their ``segment.changed`` outbox events, ``achievements.check`` events for
FWI milestones crossed upward, and the upsert into ``employee_segments``. When nothing is
stored yet (the company's first placement) no one is told and nothing is updated: the history
and a plain insert, and on PostgreSQL without the secondary indexes and foreign keys until the
end of the transaction (:func:`_drop_for_load`). ``docs/benchmarks.md`` has the figures.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, cast

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Engine, Table, inspect
from sqlalchemy.schema import (
    AddConstraint,
    CreateIndex,
    DropConstraint,
    DropIndex,
    ExecutableDDLElement,
)

from treevu.db.bulk import (
    copy_rows,
    db_timestamp,
    dbapi_cursor,
    fetch_numbers,
    fetchall,
    json_object,
    placeholder,
    quote_camel,
    refresh_statistics,
    temp_table_statements,
    temp_tables_in_memory,
    upsert_select,
)
from treevu.db.outbox import ACHIEVEMENTS_CHECK, SEGMENT_CHANGED
from treevu.db.segments import EmployeeSegment, SegmentHistory
from treevu.segmentation.engine import (
    INPUT_NAMES,
    Inputs,
    Profiles,
    reason_codes,
    reasons_of,
    score,
)
from treevu.segmentation.policy import CRISIS, RISK_LEVELS, SEGMENTS, SPENDING_LEVELS, Policy
from treevu.segmentation.recommendations import CATALOG, recommendation_counts
from treevu.services.analytics.cube import add_months, month_of
from treevu.services.models.features import TARGETS, feature_matrix
from treevu.services.models.registry import active as active_models
from treevu.services.models.scoring import RISK_DECIMALS, Risks, score_risks
from treevu.services.rewards.achievements import MILESTONES

#: Users per batch: read, scored and written together (and one progress report each).
BATCH_USERS: Final = 50_000
#: Explicit user lists up to this long are read with ``IN (…)``; longer ones by id range.
ID_LIST_LIMIT: Final = 1000
#: On PostgreSQL, refresh planner statistics after writing at least this many profiles.
ANALYZE_AFTER_ROWS: Final = 10_000
#: Databases where a first placement of ``LOAD_WITHOUT_INDEXES_AFTER`` users or more writes the
#: profiles and their history without secondary indexes and foreign keys, then adds them
#: (:func:`_drop_for_load`). Not MariaDB (its DDL commits) nor SQLite (building the indexes
#: afterwards cost more than it saved, and it cannot drop a foreign key).
LOAD_WITHOUT_INDEXES: Final = frozenset({"postgresql"})
LOAD_WITHOUT_INDEXES_AFTER: Final = 10_000
LOADED_TABLES: Final = (
    cast(Table, EmployeeSegment.__table__),
    cast(Table, SegmentHistory.__table__),
)
STAGE: Final = "recompute_stage"
#: The staged columns of each changed row. Categories travel as small integer codes (cheaper to
#: send than text) and become names in the set-based statements: ``segment`` and
#: ``fromSegment`` (-1: none) index SEGMENTS, the levels index their tuples, ``rule`` indexes
#: ``policy.rules`` (which gives ``rule`` and ``interventionType``).
STAGE_COLUMNS: Final = (
    ("userId", "INTEGER"),
    ("segment", "SMALLINT"),
    ("wellnessScore", "NUMERIC(5, 2)"),
    ("fwiScore", "NUMERIC(5, 2)"),
    ("spendingLevel", "SMALLINT"),
    ("riskLevel", "SMALLINT"),
    ("engagementScore", "NUMERIC(5, 2)"),
    ("rule", "SMALLINT"),
    ("recommendationCount", "INTEGER"),
    ("reasons", "VARCHAR(255)"),
    ("profileHash", "BIGINT"),
    ("fromSegment", "SMALLINT"),
    ("crisisRisk30d", "NUMERIC(5, 4)"),  # -1: no model
    ("disengagementRisk30d", "NUMERIC(5, 4)"),
    ("crisisRiskReasons", "VARCHAR(255)"),
    ("disengagementRiskReasons", "VARCHAR(255)"),
)
ProgressFn = Callable[[str, int, int], None]
IdArray = npt.NDArray[np.int64]
#: The staged text columns (the rest are numbers).
RISK_TEXT: Final = ("reasons", "crisisRiskReasons", "disengagementRiskReasons")


@dataclass(frozen=True, slots=True)
class SegmentChange:
    """A user moved from one segment to another (``from_segment`` None: first placement)."""

    user_id: int
    from_segment: str | None
    to_segment: str
    fwi_score: float


@dataclass(frozen=True, slots=True)
class Moves:
    """Users whose segment changed, as columns (segment codes; -1: no segment before)."""

    user_id: IdArray
    from_code: IdArray
    to_code: IdArray
    fwi_score: npt.NDArray[np.float64]

    @classmethod
    def none(cls) -> Moves:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))

    @classmethod
    def concatenate(cls, parts: Sequence[Moves]) -> Moves:
        if not parts:
            return cls.none()
        return cls(
            np.concatenate([m.user_id for m in parts]),
            np.concatenate([m.from_code for m in parts]),
            np.concatenate([m.to_code for m in parts]),
            np.concatenate([m.fwi_score for m in parts]),
        )

    def changes(self, rows: npt.NDArray[np.intp] | None = None) -> list[SegmentChange]:
        picked = np.arange(len(self.user_id)) if rows is None else rows
        return [
            SegmentChange(
                user_id=uid,
                from_segment=SEGMENTS[before] if before >= 0 else None,
                to_segment=SEGMENTS[after],
                fwi_score=round(fwi, 2),
            )
            for uid, before, after, fwi in zip(
                self.user_id[picked].tolist(),
                self.from_code[picked].tolist(),
                self.to_code[picked].tolist(),
                self.fwi_score[picked].tolist(),
                strict=True,
            )
        ]


@dataclass(slots=True)
class RecomputeResult:
    scored: int = 0
    written: int = 0
    moves: Moves = field(default_factory=Moves.none)
    company_first: bool = False  # nothing was stored when the run began
    timings: dict[str, float] = field(default_factory=dict)
    _segment_changes: list[SegmentChange] | None = field(default=None, repr=False, compare=False)

    @property
    def changes(self) -> list[SegmentChange]:
        """Every change of segment stored by this run, first placements included.

        Built on demand: a first placement of a million users moves a million users.
        """
        return self.moves.changes()

    @property
    def segment_changes(self) -> list[SegmentChange]:
        """What users are told: changes of an existing segment, and a person's first placement
        in crisis unless the run was the company's first placement (:func:`_apply_statements`)."""
        if self._segment_changes is None:
            told = self.moves.from_code >= 0
            if not self.company_first:
                told |= self.moves.to_code == CRISIS
            self._segment_changes = self.moves.changes(np.flatnonzero(told))
        return self._segment_changes


@dataclass(frozen=True, slots=True)
class Batch:
    """Users scored and written together: a short explicit id list, or an id range.

    A range is ``lo..hi`` inclusive; ``wanted`` (sorted) keeps only those ids of it, for long
    explicit lists.
    """

    ids: tuple[int, ...] = ()
    lo: int = 0
    hi: int = -1
    wanted: IdArray | None = None

    def where(self, conn: Connection, column: str) -> tuple[str, list[int]]:
        """`` AND <column> …`` selecting the batch, and its parameters."""
        p = placeholder(conn)
        if self.ids:
            return f" AND {column} IN ({', '.join([p] * len(self.ids))})", list(self.ids)
        return f" AND {column} BETWEEN {p} AND {p}", [self.lo, self.hi]


@dataclass(frozen=True, slots=True)
class BatchRead:
    """What scoring a batch needs, aligned by user id (active users with inputs only)."""

    user_id: IdArray
    inputs: Inputs
    stored_segment: IdArray  # code into SEGMENTS, -1: none stored (or unknown)
    stored_hash: IdArray
    excluded_rows: IdArray  # (row, catalog item) pairs dismissed or completed
    excluded_items: IdArray


def plan_batches(conn: Connection, user_ids: Sequence[int] | None) -> tuple[list[Batch], int]:
    """Split the users to score into batches of about ``BATCH_USERS``; also their count."""
    if user_ids is not None and len(user_ids) <= ID_LIST_LIMIT:
        ids = tuple(sorted({int(u) for u in user_ids}))
        return ([Batch(ids=ids)] if ids else []), len(ids)
    first, last, count = fetchall(
        conn, "SELECT MIN(userId), MAX(userId), COUNT(*) FROM employee_inputs"
    )[0]
    if not count:
        return [], 0
    lo, hi, wanted = int(first), int(last), None
    if user_ids is not None:
        wanted = np.unique(np.asarray(user_ids, dtype=np.int64))
        lo, hi = max(lo, int(wanted[0])), min(hi, int(wanted[-1]))
        count = min(int(count), len(wanted))
    if lo > hi:
        return [], 0
    edges = np.unique(np.linspace(lo, hi + 1, -(-int(count) // BATCH_USERS) + 1).astype(np.int64))
    batches = [
        Batch(lo=int(a), hi=int(b) - 1, wanted=wanted)
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]
    return batches, int(count)


def read_batch(conn: Connection, survey_cutoff: datetime, batch: Batch) -> BatchRead:
    """Inputs, stored segment and fingerprint, and exclusions of the active users of ``batch``.

    Four scans and no join: inputs, inactive users (usually none), stored profiles and
    dismissed/completed recommendations, aligned by user id in numpy.
    """
    p = placeholder(conn)
    survey = f"CASE WHEN surveyAt >= {p} AND surveyScore IS NOT NULL THEN surveyScore ELSE -1 END"
    where, params = batch.where(conn, "userId")
    table = fetch_numbers(
        conn,
        ["userId", *(survey if c == "surveyScore" else c for c in INPUT_NAMES)],
        f"FROM employee_inputs WHERE 1 = 1{where} ORDER BY userId",
        [db_timestamp(conn, survey_cutoff), *params],
        np.float64,
    )
    user_id = table[:, 0].astype(np.int64)
    keep = np.ones(len(user_id), dtype=np.bool_)
    if batch.wanted is not None:
        keep &= np.isin(user_id, batch.wanted)
    if len(user_id):
        id_where, id_params = batch.where(conn, "id")
        inactive = fetchall(
            conn, f"SELECT id FROM users WHERE isActive = {p}{id_where}", [False, *id_params]
        )
        if inactive:
            keep &= ~np.isin(user_id, np.array([r[0] for r in inactive], dtype=np.int64))
    if not keep.all():
        table, user_id = table[keep], user_id[keep]
    columns = [table[:, 1 + k] for k in range(len(INPUT_NAMES))]
    survey_col = INPUT_NAMES.index("surveyScore")
    columns[survey_col] = np.where(columns[survey_col] < 0, np.nan, columns[survey_col])
    inputs = Inputs.from_columns(columns)
    del table, columns

    whens = " ".join(f"WHEN '{name}' THEN {code}" for code, name in enumerate(SEGMENTS))
    # Integers all the way: 64-bit hashes must not pass through float64.
    by_user = fetch_numbers(
        conn,
        ["userId", f"CASE segment {whens} ELSE -1 END", "COALESCE(profileHash, 0)"],
        f"FROM employee_segments WHERE 1 = 1{where}",
        params,
        np.int64,
    )
    stored_segment = np.full(len(user_id), -1, dtype=np.int64)
    stored_hash = np.zeros(len(user_id), dtype=np.int64)
    if len(by_user):
        pos = np.minimum(np.searchsorted(by_user[:, 0], user_id), len(by_user) - 1)
        found = by_user[pos, 0] == user_id
        stored_segment[found] = by_user[pos[found], 1]
        stored_hash[found] = by_user[pos[found], 2]
    rows, items = read_exclusions(conn, user_id, batch, [item.id for item in CATALOG])
    return BatchRead(user_id, inputs, stored_segment, stored_hash, rows, items)


def read_exclusions(
    conn: Connection, user_id: IdArray, batch: Batch, catalog_ids: Sequence[str]
) -> tuple[IdArray, IdArray]:
    """(row, item) pairs of recommendations the user dismissed or completed."""
    if len(user_id) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    where, params = batch.where(conn, "userId")
    pairs = fetchall(
        conn,
        "SELECT DISTINCT userId, recommendationId FROM recommendation_events "
        f"WHERE kind IN ('dismissed', 'completed'){where}",
        params,
    )
    item_index = {rid: k for k, rid in enumerate(catalog_ids)}
    # Items retired from the catalog (-1) and users not being scored are skipped.
    uids = np.fromiter((uid for uid, _ in pairs), dtype=np.int64, count=len(pairs))
    items = np.fromiter((item_index.get(r, -1) for _, r in pairs), dtype=np.int64, count=len(pairs))
    pos = np.searchsorted(user_id, uids)
    found = pos < len(user_id)
    found[found] = user_id[pos[found]] == uids[found]
    keep = found & (items >= 0)
    return pos[keep].astype(np.int64), items[keep]


def profile_hash(
    profiles: Profiles, rec_count: IdArray, policy: Policy, risks: Risks | None = None
) -> IdArray:
    """A 64-bit fingerprint of every stored value of a profile (scores and risks at 2 decimals:
    a new model rewrites the rows whose risk it changes)."""
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
    if risks is not None:
        parts += [
            np.rint(p * 10**RISK_DECIMALS).astype(np.uint64) for p in risks.probability.values()
        ]
    h = np.full(len(profiles), zlib.crc32(policy.version.encode()), dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    with np.errstate(over="ignore"):
        for part in parts:
            h = (h ^ part) * prime
            h ^= h >> np.uint64(29)
    return h.view(np.int64)


def recompute(
    engine: Engine,
    policy: Policy,
    *,
    now: datetime,
    survey_valid_days: int = 180,
    user_ids: Sequence[int] | None = None,
    progress: ProgressFn | None = None,
) -> RecomputeResult:
    """Score the given users (all active users with inputs when None) and store what changed.

    Users go in batches of about ``BATCH_USERS`` by user id (memory stays bounded, progress is
    real); everything is written in one transaction, committed before this returns.
    """
    result = RecomputeResult()
    clock = time.perf_counter
    t0 = clock()
    timings = dict.fromkeys(("read", "score", "stage", "apply"), 0.0)
    moves: list[Moves] = []
    cutoff = now - timedelta(days=survey_valid_days)
    with engine.begin() as conn:
        temp_tables_in_memory(conn)
        models = active_models(conn)
        batches, total = plan_batches(conn, user_ids)
        # Nothing stored at all (a new database, a first placement): plain inserts, and on
        # PostgreSQL a load without secondary indexes and foreign keys.
        first = bool(batches) and not fetchall(conn, "SELECT 1 FROM employee_segments LIMIT 1")
        result.company_first = first
        rebuild = _drop_for_load(conn) if first and total >= LOAD_WITHOUT_INDEXES_AFTER else []
        done = 0
        for batch in batches:
            start = clock()
            read = read_batch(conn, cutoff, batch)
            scoring = clock()
            timings["read"] += scoring - start
            n = len(read.user_id)
            profiles = score(read.inputs, policy)
            rec_count = recommendation_counts(
                read.inputs, profiles, excluded=(read.excluded_rows, read.excluded_items)
            )
            risks = None
            if models:
                before = read_month_before(conn, batch, read.user_id, now)
                risks = score_risks(models, risk_features(profiles, before))
            new_hash = profile_hash(profiles, rec_count, policy, risks)
            stored = read.stored_segment
            changed = np.flatnonzero((new_hash != read.stored_hash) | (stored < 0))
            moved = changed[profiles.segment[changed] != stored[changed]]
            timings["score"] += clock() - scoring
            if len(changed):
                rows = _profile_rows(policy, read, profiles, rec_count, new_hash, changed, risks)
                _write(conn, policy, now, rows, timings, reused=result.written > 0, first=first)
            result.scored += n
            result.written += len(changed)
            moves.append(
                Moves(
                    user_id=read.user_id[moved],
                    from_code=stored[moved],
                    to_code=profiles.segment[moved].astype(np.int64),
                    fwi_score=profiles.fwi_score[moved],
                )
            )
            done += n
            if progress:
                progress("recompute", done, max(total, done))
        if rebuild:
            start = clock()
            for ddl in rebuild:
                conn.execute(ddl)
            timings["rebuild"] = clock() - start
        committing = clock()
    timings["commit"] = clock() - committing
    if result.written >= ANALYZE_AFTER_ROWS:
        # On PostgreSQL, stale statistics slow a page of a segment at 100k users from 2.4 ms
        # to 35 ms.
        start = clock()
        if refresh_statistics(engine, ["employee_segments", "segment_history"]):
            timings["analyze"] = clock() - start
    result.moves = Moves.concatenate(moves)
    result.timings = {
        **timings,
        "write": timings["stage"] + timings["apply"],
        "total": clock() - t0,
    }
    return result


def _drop_for_load(conn: Connection) -> list[ExecutableDDLElement]:
    """Before a first placement on a database whose DDL is transactional (PostgreSQL): drop the
    secondary indexes and the foreign keys of ``employee_segments`` and ``segment_history`` in
    this transaction; returns the statements that create them again, to run before it commits.

    One sort per index and one join per foreign key instead of a B-tree insertion and a
    trigger (which also locks the user's row) per row: 2.3 s less for 100k people. An error or
    a crash rolls the drop back with everything else. What is dropped and created is what the
    models declare — what the migrations create — and only what this database has. Until the
    commit the two tables are locked against readers.
    """
    if conn.dialect.name not in LOAD_WITHOUT_INDEXES:
        return []
    inspector = inspect(conn)
    drop: list[ExecutableDDLElement] = []
    create: list[ExecutableDDLElement] = []
    for table in LOADED_TABLES:
        indexes = {ix["name"] for ix in inspector.get_indexes(table.name)}
        keys = {fk["name"] for fk in inspector.get_foreign_keys(table.name)}
        for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
            if index.name in indexes:
                drop.append(DropIndex(index))
                create.append(CreateIndex(index))
        for key in sorted(table.foreign_key_constraints, key=lambda fk: str(fk.name)):
            if key.name in keys:
                drop.append(DropConstraint(key))
                create.append(AddConstraint(key))
    for ddl in drop:
        conn.execute(ddl)
    return create


def _profile_rows(
    policy: Policy,
    batch: BatchRead,
    profiles: Profiles,
    rec_count: IdArray,
    new_hash: IdArray,
    changed: npt.NDArray[np.intp],
    risks: Risks | None = None,
) -> list[list[Any]]:
    """The staged columns (``STAGE_COLUMNS`` order) of the changed rows, as Python lists."""
    codes = reason_codes(policy)
    unique_masks, inverse = np.unique(profiles.reason_mask[changed], return_inverse=True)
    reason_text = np.array(
        [",".join(reasons_of(int(m), codes)) for m in unique_masks], dtype=object
    )[inverse.reshape(-1)]
    return [
        batch.user_id[changed].tolist(),
        profiles.segment[changed].tolist(),
        np.round(profiles.wellness_score[changed], 2).tolist(),
        np.round(profiles.fwi_score[changed], 2).tolist(),
        profiles.spending_level[changed].tolist(),
        profiles.risk_level[changed].tolist(),
        np.round(profiles.engagement_score[changed], 2).tolist(),
        profiles.rule[changed].tolist(),
        rec_count[changed].tolist(),
        reason_text.tolist(),
        new_hash[changed].tolist(),
        batch.stored_segment[changed].tolist(),
        *(
            risks.probability[t][changed].tolist()
            if risks is not None and t in risks.probability
            else [-1.0] * len(changed)
            for t in TARGETS
        ),
        *(
            risks.reasons(t, changed) if risks is not None else [None] * len(changed)
            for t in TARGETS
        ),
    ]


def _write(
    conn: Connection,
    policy: Policy,
    now: datetime,
    columns: list[list[Any]],
    timings: dict[str, float],
    *,
    reused: bool,
    first: bool = False,
) -> None:
    """Stage the changed rows, then append the history of the moved and upsert the profiles.

    ``reused``: an earlier batch of this transaction staged rows already. ``first``: no profile
    was stored when the run began (no events, no milestones, plain inserts).
    """
    dialect = conn.dialect.name
    start = time.perf_counter()
    cursor = dbapi_cursor(conn)
    try:
        prepare, clear = temp_table_statements(dialect, STAGE, STAGE_COLUMNS, reused)
        for sql in prepare:
            cursor.execute(quote_camel(sql, conn))
        names = [name for name, _ in STAGE_COLUMNS]
        copy_rows(conn, cursor, STAGE, names, columns, text_columns=RISK_TEXT)
        staged = time.perf_counter()
        timings["stage"] += staged - start
        for sql, params in _apply_statements(conn, policy, db_timestamp(conn, now), first=first):
            cursor.execute(quote_camel(sql, conn), params)
        for sql in clear:
            cursor.execute(sql)
        timings["apply"] += time.perf_counter() - staged
    finally:
        cursor.close()


def _apply_statements(
    conn: Connection, policy: Policy, stamp: datetime | str, *, first: bool = False
) -> list[tuple[str, tuple[Any, ...]]]:
    """The history rows of those who moved, their events, then the upsert of every staged
    profile. ``first`` (nothing was stored when the run began): every staged row is a first
    placement, which tells no one and crosses no milestone, and has no stored row to update —
    the history, then a plain insert (a row stored meanwhile by someone else fails it)."""
    p = placeholder(conn)
    Expr = tuple[str, tuple[Any, ...]]  # SQL and the values of its placeholders

    def column(name: str) -> Expr:
        return name, ()

    def constant(value: object) -> Expr:
        return p, (value,)

    def label(code_column: str, names: Sequence[str]) -> Expr:
        whens = " ".join(f"WHEN {code} THEN {p}" for code in range(len(names)))
        return f"CASE {code_column} {whens} END", tuple(names)

    def select(exprs: Sequence[Expr]) -> Expr:
        return ", ".join(sql for sql, _ in exprs), tuple(v for _, vs in exprs for v in vs)

    history_sql, history_params = select(
        [
            column("userId"),
            label("fromSegment", SEGMENTS),
            label("segment", SEGMENTS),
            column("fwiScore"),
            constant(policy.version),
            constant(stamp),
        ]
    )
    history = (
        "INSERT INTO segment_history "
        "(userId, fromSegment, toSegment, fwiScore, policyVersion, changedAt) "
        f"SELECT {history_sql} FROM {STAGE} WHERE segment <> fromSegment"
    )
    profile = {
        "userId": column("userId"),
        "segment": label("segment", SEGMENTS),
        "wellnessScore": column("wellnessScore"),
        "fwiScore": column("fwiScore"),
        "spendingLevel": label("spendingLevel", SPENDING_LEVELS),
        "riskLevel": label("riskLevel", RISK_LEVELS),
        "engagementScore": column("engagementScore"),
        "interventionType": label("rule", [r.intervention_type for r in policy.rules]),
        "recommendationCount": column("recommendationCount"),
        "lastUpdated": constant(stamp),
        "rule": label("rule", [r.name for r in policy.rules]),
        "reasons": column("reasons"),
        "policyVersion": constant(policy.version),
        "profileHash": column("profileHash"),
        "crisisRisk30d": ("NULLIF(crisisRisk30d, -1)", ()),
        "disengagementRisk30d": ("NULLIF(disengagementRisk30d, -1)", ()),
        "crisisRiskReasons": column("crisisRiskReasons"),
        "disengagementRiskReasons": column("disengagementRiskReasons"),
    }

    # One segment.changed event per change of an existing segment, and per person placed for
    # the first time in crisis (a new hire, someone's first inputs: they enter crisis and an
    # intervention opens; other first placements tell no one), in this transaction: the relay
    # notifies after the commit, whatever dies when. The company's own first placement
    # (``first``) writes no events at all: docs/decisions.md says why.
    def literal_label(code_column: str) -> str:
        whens = " ".join(f"WHEN {code} THEN '{name}'" for code, name in enumerate(SEGMENTS))
        return f"CASE {code_column} {whens} END"

    payload = json_object(
        conn,
        [
            ("fromSegment", literal_label("fromSegment")),
            ("toSegment", literal_label("segment")),
            ("fwiScore", "fwiScore"),
        ],
    )
    events = (
        "INSERT INTO outbox_events (kind, userId, payload, createdAt) "
        f"SELECT '{SEGMENT_CHANGED}', userId, {payload}, {p} FROM {STAGE} "
        f"WHERE segment <> fromSegment AND (fromSegment >= 0 OR segment = {CRISIS})"
    )
    # An FWI that crossed a milestone upward (SPEC §9): the stored profile still holds the
    # score before this recompute, so read both here, before the upsert below replaces it.
    crossing = " OR ".join(f"(e.fwiScore < {t} AND s.fwiScore >= {t})" for t in MILESTONES["fwi"])
    fwi = json_object(conn, [("fwiFrom", "e.fwiScore"), ("fwiTo", "s.fwiScore")])
    milestones = (
        "INSERT INTO outbox_events (kind, userId, payload, createdAt) "
        f"SELECT '{ACHIEVEMENTS_CHECK}', s.userId, {fwi}, {p} FROM {STAGE} s "
        f"JOIN employee_segments e ON e.userId = s.userId WHERE {crossing}"
    )
    profile_sql, profile_params = select(list(profile.values()))
    if first:
        insert = (
            f"INSERT INTO employee_segments ({', '.join(profile)}) "
            f"SELECT {profile_sql} FROM {STAGE}"
        )
        return [(history, history_params), (insert, profile_params)]
    upsert = upsert_select(
        conn, "employee_segments", list(profile), f"SELECT {profile_sql} FROM {STAGE}", "userId"
    )
    return [
        (history, history_params),
        (events, (stamp,)),
        (milestones, (stamp,)),
        (upsert, profile_params),
    ]


def read_month_before(
    conn: Connection, batch: Batch, user_id: IdArray, now: datetime
) -> npt.NDArray[np.float64]:
    """Last month's snapshot FWI and engagement of ``user_id`` (NaN without one): what the
    risk models compare this month's profile with."""
    last = add_months(month_of(now.date()), -1)
    where, params = batch.where(conn, "userId")
    value: Any = last.isoformat() if conn.dialect.name == "sqlite" else last
    table = fetch_numbers(
        conn,
        ["userId", "COALESCE(fwiScore, -1)", "COALESCE(engagementScore, -1)"],
        f"FROM profile_snapshots WHERE month = {placeholder(conn)}{where}",
        [value, *params],
        np.float64,
    )
    before = np.full((len(user_id), 2), np.nan)
    if len(table):
        pos = np.minimum(np.searchsorted(table[:, 0].astype(np.int64), user_id), len(table) - 1)
        found = table[pos, 0].astype(np.int64) == user_id
        before[found] = np.where(table[pos[found], 1:] < 0, np.nan, table[pos[found], 1:])
    return before


def risk_features(profiles: Profiles, before: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return feature_matrix(
        profiles.fwi_score,
        profiles.engagement_score,
        profiles.wellness_score,
        profiles.risk_level,
        profiles.spending_level,
        profiles.segment,
        before[:, 0],
        before[:, 1],
    )
