"""Migrations on SQLite, MariaDB and PostgreSQL: the original tables keep exact names."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, pool

from tests.conftest import Database
from treevu.db import Base
from treevu.db.migrate import (
    current_revision,
    downgrade,
    head_revision,
    newest_revision,
    stored_revision,
    upgrade,
)

ORIGINAL: dict[str, dict[str, Any]] = {
    "employee_segments": {
        "columns": {
            "id",
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
        },
        "indexed": [["segment"], ["riskLevel"], ["lastUpdated"]],
        "unique": ["userId"],
    },
    "websocket_connections": {
        "columns": {"id", "userId", "connectionId", "connectedAt", "lastHeartbeat"},
        "indexed": [["userId"], ["connectedAt"]],
        "unique": ["connectionId"],
    },
    "notification_queue": {
        "columns": {
            "id",
            "userId",
            "type",
            "title",
            "message",
            "data",
            "status",
            "createdAt",
            "sentAt",
            "readAt",
        },
        "indexed": [["userId"], ["status"], ["createdAt"]],
        "unique": [],
    },
}
ADDED = {
    "users",
    "employee_inputs",
    "survey_responses",
    "segment_history",
    "recommendation_events",
    "reward_tiers",
    "points_ledger",
    "point_rules",
    "achievements",
    "job_runs",
    "notification_preferences",
    "campaigns",
    "campaign_deliveries",
    "interventions",
    "audit_log",
    "idempotency_keys",
    "outbox_events",
}


def _inspect(db: Database) -> tuple[object, object]:
    engine = create_engine(db.settings().sync_database_url, poolclass=pool.NullPool)
    return engine, inspect(engine)


def test_upgrade_creates_every_table_with_original_names(database: Database) -> None:
    engine, insp = _inspect(database)
    try:
        tables = set(insp.get_table_names())  # type: ignore[attr-defined]
        assert set(ORIGINAL) | ADDED <= tables
        for table, spec in ORIGINAL.items():
            columns = {c["name"] for c in insp.get_columns(table)}  # type: ignore[attr-defined]
            assert spec["columns"] <= columns, table
            indexed = [i["column_names"] for i in insp.get_indexes(table)]  # type: ignore[attr-defined]
            for cols in spec["indexed"]:
                assert cols in indexed, (table, cols)
            unique = [u["column_names"] for u in insp.get_unique_constraints(table)]  # type: ignore[attr-defined]
            unique += [i["column_names"] for i in insp.get_indexes(table) if i.get("unique")]  # type: ignore[attr-defined]
            for col in spec["unique"]:
                assert [col] in unique, (table, col)
        segment_indexes = {i["name"] for i in insp.get_indexes("employee_segments")}  # type: ignore[attr-defined]
        assert {"idx_segment", "idx_risk_level", "idx_last_updated"} <= segment_indexes
    finally:
        engine.dispose()  # type: ignore[attr-defined]


def test_revision_is_head_and_downgrade_round_trips(database: Database) -> None:
    url = database.settings().sync_database_url
    assert current_revision(url) == head_revision()
    # The start-up check's own reading (no Alembic import) agrees with Alembic's.
    assert stored_revision(url) == current_revision(url) and newest_revision() == head_revision()
    downgrade(url, "0008")
    assert stored_revision(url) == current_revision(url) == "0008"
    downgrade(url, "base")
    assert stored_revision(url) is None
    engine, insp = _inspect(database)
    try:
        assert "employee_segments" not in insp.get_table_names()  # type: ignore[attr-defined]
    finally:
        engine.dispose()  # type: ignore[attr-defined]
    upgrade(url)
    assert current_revision(url) == head_revision()


def test_default_reward_tiers_are_seeded(database: Database) -> None:
    engine = create_engine(database.settings().sync_database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT name, "
                + ('"minPoints"' if database.backend == "postgresql" else "minPoints")
                + " FROM reward_tiers ORDER BY 2"
            ).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("Seedling", 0),
        ("Sprout", 1000),
        ("Rising Stars", 2500),
        ("Financial Champions", 5000),
    ]


def test_models_and_migrations_agree(database: Database) -> None:
    """Autogenerate against the migrated database finds nothing to add or drop."""
    engine = create_engine(database.settings().sync_database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    structural = [d for d in diff if isinstance(d, tuple) and d[0].startswith(("add_", "remove_"))]
    assert structural == []
