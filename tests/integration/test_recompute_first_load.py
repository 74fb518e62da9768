"""A first placement (nothing stored yet) on every backend: plain inserts, and on PostgreSQL a
load without secondary indexes and foreign keys — the same rows as the ordinary path, the
schema as the migrations left it, and nothing half-done when it fails."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, delete, inspect, select, text
from sqlalchemy.orm import Session

from tests.conftest import Database
from treevu.app import make_engines
from treevu.db import EmployeeSegment, SegmentHistory, User
from treevu.population import generate_population
from treevu.segmentation.policy import default_policy
from treevu.services.people.seed import write_population
from treevu.services.segmentation import recompute as recompute_module
from treevu.services.segmentation.recompute import recompute

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
TABLES = ("employee_segments", "segment_history")


def schema(engine: Engine) -> dict[str, Any]:
    """The indexes and foreign keys of the two tables a first placement fills."""
    inspector = inspect(engine)
    return {
        table: (
            sorted(
                (ix["name"], tuple(ix["column_names"]), bool(ix["unique"]))
                for ix in inspector.get_indexes(table)
            ),
            sorted(
                (fk["name"], tuple(fk["constrained_columns"]), fk["referred_table"])
                + tuple(sorted(fk.get("options", {}).items()))
                for fk in inspector.get_foreign_keys(table)
            ),
        )
        for table in TABLES
    }


def stored(engine: Engine) -> tuple[list[Any], list[Any]]:
    with Session(engine) as s:
        profiles = [
            (r.user_id, r.segment, r.fwi_score, r.wellness_score, r.engagement_score,
             r.risk_level, r.spending_level, r.intervention_type, r.recommendation_count,
             r.rule, r.reasons, r.profile_hash, r.last_updated)
            for r in s.scalars(select(EmployeeSegment).order_by(EmployeeSegment.id))
        ]  # fmt: skip
        history = [
            (h.user_id, h.from_segment, h.to_segment, h.fwi_score, h.policy_version, h.changed_at)
            for h in s.scalars(select(SegmentHistory).order_by(SegmentHistory.id))
        ]
    return profiles, history


def forget_profiles(engine: Engine) -> None:
    with Session(engine) as s:
        s.execute(delete(SegmentHistory))
        s.execute(delete(EmployeeSegment))
        s.commit()


@pytest.fixture
def engine(database: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """400 people, never placed, written in several batches (the app's engine: on SQLite its
    connections enforce foreign keys)."""
    async_engine, engine = make_engines(database.settings())
    async_engine.sync_engine.dispose()
    write_population(engine, generate_population(400, 5), now=NOW)
    monkeypatch.setattr(recompute_module, "BATCH_USERS", 97)
    yield engine
    engine.dispose()


def test_a_load_without_indexes_stores_the_same_rows_and_keeps_the_schema(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = default_policy()
    migrated = schema(engine)
    monkeypatch.setattr(recompute_module, "LOAD_WITHOUT_INDEXES_AFTER", 10**9)
    ordinary = recompute(engine, policy, now=NOW)
    reference = stored(engine)
    assert len(reference[0]) == len(reference[1]) == ordinary.written > 300

    forget_profiles(engine)
    monkeypatch.setattr(recompute_module, "LOAD_WITHOUT_INDEXES_AFTER", 0)
    loaded = recompute(engine, policy, now=NOW)
    assert (loaded.scored, loaded.written) == (ordinary.scored, ordinary.written)
    assert ("rebuild" in loaded.timings) == (engine.dialect.name == "postgresql")
    assert stored(engine) == reference
    assert schema(engine) == migrated

    # The foreign keys are back, cascade included; the next run is the ordinary one.
    uid = reference[0][0][0]
    with Session(engine) as s:
        s.execute(delete(User).where(User.id == uid))
        s.commit()
        assert s.scalar(select(EmployeeSegment).where(EmployeeSegment.user_id == uid)) is None
        assert s.scalar(select(SegmentHistory).where(SegmentHistory.user_id == uid)) is None
    again = recompute(engine, policy, now=NOW)
    assert (again.written, "rebuild" in again.timings) == (0, False)


def test_a_first_placement_that_fails_midway_leaves_nothing_behind(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrated = schema(engine)
    monkeypatch.setattr(recompute_module, "LOAD_WITHOUT_INDEXES_AFTER", 0)

    def fail_after_the_first_batch(_what: str, done: int, _total: int) -> None:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        recompute(engine, default_policy(), now=NOW, progress=fail_after_the_first_batch)
    assert schema(engine) == migrated
    with engine.connect() as conn:
        for table in TABLES:
            assert conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one() == 0
    assert recompute(engine, default_policy(), now=NOW).written > 300
    assert schema(engine) == migrated
