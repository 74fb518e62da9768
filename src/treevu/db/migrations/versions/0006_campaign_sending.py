"""Campaigns that send themselves: schedule, variants, conversion, pacing state; deliveries in
sending order with their variant, at most one per campaign and person.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as t:
        t.add_column(sa.Column("variants", sa.JSON(), nullable=True))
        t.add_column(sa.Column("startAt", sa.DateTime(), nullable=True))
        t.add_column(sa.Column("startedAt", sa.DateTime(), nullable=True))
        t.add_column(sa.Column("completedAt", sa.DateTime(), nullable=True))
        t.add_column(sa.Column("pacedUntilMs", sa.BigInteger(), nullable=True))
        t.add_column(
            sa.Column(
                "conversionEvent",
                sa.String(length=50),
                nullable=False,
                server_default="recommendation_completed",
            )
        )
        t.add_column(sa.Column("conversionDays", sa.Integer(), nullable=False, server_default="7"))
    op.create_index("idx_campaigns_status", "campaigns", ["status"])
    with op.batch_alter_table("campaign_deliveries") as t:
        t.add_column(sa.Column("position", sa.Integer(), nullable=False, server_default="0"))
        t.add_column(sa.Column("variant", sa.SmallInteger(), nullable=False, server_default="0"))
        t.add_column(sa.Column("sentAt", sa.DateTime(), nullable=True))
        t.create_unique_constraint("uq_campaign_deliveries_user", ["campaignId", "userId"])
    op.create_index(
        "idx_campaign_deliveries_order",
        "campaign_deliveries",
        ["campaignId", "status", "position"],
    )


def downgrade() -> None:
    op.drop_index("idx_campaign_deliveries_order", table_name="campaign_deliveries")
    with op.batch_alter_table("campaign_deliveries") as t:
        t.drop_constraint("uq_campaign_deliveries_user", type_="unique")
        t.drop_column("sentAt")
        t.drop_column("variant")
        t.drop_column("position")
    op.drop_index("idx_campaigns_status", table_name="campaigns")
    with op.batch_alter_table("campaigns") as t:
        for name in (
            "conversionDays", "conversionEvent", "pacedUntilMs", "completedAt", "startedAt",
            "startAt", "variants",
        ):  # fmt: skip
            t.drop_column(name)
