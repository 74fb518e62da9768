"""TreePoints ledger and rules, achievements (tiers and milestones), job runs, paced outbox
events; tier descriptions; ``user_tiers`` (never written) gives way to ``achievements``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

#: TreePoints per app event (SPEC §9 Rewards); a row each, editable like any data.
DEFAULT_POINT_RULES = [
    {"event": "goal_completed", "points": 100},
    {"event": "lesson_completed", "points": 50},
    {"event": "recommendation_completed", "points": 150},
    {"event": "survey_answered", "points": 200},
]
#: The benefits of the default tiers in a sentence (SPEC §4's example for Rising Stars).
TIER_DESCRIPTIONS = {
    "Seedling": "Welcome lessons",
    "Sprout": "Goal tracking, Savings challenges",
    "Rising Stars": "Mentorship programs, Acceleration tracks, Leadership development",
    "Financial Champions": "Exclusive benefits, Advocacy program",
}


def _user_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["userId"], ["users.id"], name=op.f(f"fk_{table}_userId_users"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "points_ledger",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("userId", sa.Integer(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("balanceAfter", sa.Integer(), nullable=False),
        sa.Column("actorId", sa.Integer(), nullable=True),
        sa.Column("idempotencyKey", sa.String(length=255), nullable=True),
        sa.Column("createdAt", sa.DateTime(), nullable=False),
        _user_fk("points_ledger"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_ledger")),
        sa.UniqueConstraint("actorId", "idempotencyKey", name="uq_points_ledger_actor_key"),
    )
    op.create_index("idx_points_ledger_user", "points_ledger", ["userId", "id"])
    rules = op.create_table(
        "point_rules",
        sa.Column("event", sa.String(length=50), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("event", name=op.f("pk_point_rules")),
    )
    op.bulk_insert(rules, DEFAULT_POINT_RULES)
    op.create_table(
        "achievements",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("userId", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("threshold", sa.String(length=50), nullable=False),
        sa.Column("reachedAt", sa.DateTime(), nullable=False),
        sa.Column("announced", sa.Boolean(), nullable=False),
        _user_fk("achievements"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_achievements")),
        sa.UniqueConstraint("userId", "kind", "threshold", name="uq_achievements_user_kind"),
    )
    op.create_table(
        "job_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job", sa.String(length=64), nullable=False),
        sa.Column("slot", sa.String(length=64), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("startedAt", sa.DateTime(), nullable=False),
        sa.Column("finishedAt", sa.DateTime(), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_runs")),
        sa.UniqueConstraint("job", "slot", name="uq_job_runs_job_slot"),
    )
    op.create_index("idx_job_runs_job_started", "job_runs", ["job", "startedAt"])
    op.add_column("outbox_events", sa.Column("availableAt", sa.DateTime(), nullable=True))
    op.add_column(
        "reward_tiers",
        sa.Column("description", sa.String(length=500), nullable=False, server_default=""),
    )
    tiers = sa.table("reward_tiers", sa.column("name"), sa.column("description"))
    for name, description in TIER_DESCRIPTIONS.items():
        op.execute(tiers.update().where(tiers.c.name == name).values(description=description))
    op.drop_table("user_tiers")


def downgrade() -> None:
    op.create_table(
        "user_tiers",
        sa.Column("userId", sa.Integer(), nullable=False),
        sa.Column("tier", sa.String(length=50), nullable=False),
        sa.Column("reachedAt", sa.DateTime(), nullable=False),
        _user_fk("user_tiers"),
        sa.PrimaryKeyConstraint("userId", name=op.f("pk_user_tiers")),
    )
    op.drop_column("reward_tiers", "description")
    op.drop_column("outbox_events", "availableAt")
    op.drop_index("idx_job_runs_job_started", table_name="job_runs")
    op.drop_table("job_runs")
    op.drop_table("achievements")
    op.drop_table("point_rules")
    op.drop_table("points_ledger")  # with its index (MariaDB's foreign key needs it till then)
