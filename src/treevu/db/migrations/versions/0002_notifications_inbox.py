"""notifications inbox

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 05:13:55.889608
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("actorId", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("notificationIds", sa.JSON(), nullable=False),
        sa.Column("createdAt", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint("actorId", "key", name="uq_idempotency_keys_actor_key"),
    )
    op.create_index(
        "idx_idempotency_keys_created_at", "idempotency_keys", ["createdAt"], unique=False
    )
    op.add_column("notification_preferences", sa.Column("mutedTypes", sa.JSON(), nullable=True))
    op.add_column("notification_queue", sa.Column("deliveredAt", sa.DateTime(), nullable=True))
    op.add_column("notification_queue", sa.Column("createdBy", sa.Integer(), nullable=True))
    op.add_column("notification_queue", sa.Column("clickedAt", sa.DateTime(), nullable=True))
    op.create_index(
        "idx_notification_queue_user_status", "notification_queue", ["userId", "status"]
    )


def downgrade() -> None:
    op.drop_index("idx_notification_queue_user_status", table_name="notification_queue")

    op.drop_column("notification_queue", "clickedAt")
    op.drop_column("notification_queue", "createdBy")
    op.drop_column("notification_queue", "deliveredAt")
    op.drop_column("notification_preferences", "mutedTypes")
    op.drop_index("idx_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
