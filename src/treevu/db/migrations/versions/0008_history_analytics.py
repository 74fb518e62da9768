"""Monthly profile snapshots and stored analytics answers (SPEC §10).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Score = sa.Numeric(5, 2, asdecimal=False)


def upgrade() -> None:
    op.create_table(
        "profile_snapshots",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("userId", sa.Integer(), nullable=False),
        sa.Column("segment", sa.String(50), nullable=False),
        sa.Column("fwiScore", Score, nullable=True),
        sa.Column("wellnessScore", Score, nullable=True),
        sa.Column("engagementScore", Score, nullable=True),
        sa.Column("riskLevel", sa.String(20), nullable=True),
        sa.Column("spendingLevel", sa.String(20), nullable=True),
        sa.Column("takenAt", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["userId"],
            ["users.id"],
            name=op.f("fk_profile_snapshots_userId_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profile_snapshots")),
        sa.UniqueConstraint("month", "userId", name="uq_profile_snapshots_month_user"),
    )
    op.create_index("idx_profile_snapshots_user", "profile_snapshots", ["userId"])
    op.create_table(
        "analytics_results",
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("computedAt", sa.DateTime(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_analytics_results")),
    )


def downgrade() -> None:
    op.drop_table("analytics_results")
    op.drop_table("profile_snapshots")
