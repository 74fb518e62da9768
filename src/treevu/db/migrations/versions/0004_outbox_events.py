"""Transactional outbox for domain events.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("userId", sa.Integer(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("createdAt", sa.DateTime(), nullable=False),
        sa.Column("processedAt", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["userId"],
            ["users.id"],
            name=op.f("fk_outbox_events_userId_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_events")),
    )
    op.create_index("idx_outbox_events_pending", "outbox_events", ["processedAt", "id"])


def downgrade() -> None:
    op.drop_index("idx_outbox_events_pending", table_name="outbox_events")
    op.drop_table("outbox_events")
