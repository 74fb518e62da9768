"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26 05:06:20.334754
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("actorId", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("createdAt", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("idx_audit_log_actor", "audit_log", ["actorId"], unique=False)
    op.create_index("idx_audit_log_created_at", "audit_log", ["createdAt"], unique=False)
    op.create_table(
        "reward_tiers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("minPoints", sa.Integer(), nullable=False),
        sa.Column("discountPercentage", sa.Integer(), nullable=False),
        sa.Column("benefits", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reward_tiers")),
        sa.UniqueConstraint("minPoints", name=op.f("uq_reward_tiers_minPoints")),
        sa.UniqueConstraint("name", name=op.f("uq_reward_tiers_name")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("managerId", sa.Integer(), nullable=True),
        sa.Column("department", sa.String(length=100), nullable=True),
        sa.Column("isActive", sa.Boolean(), nullable=False),
        sa.Column("counselorCapacity", sa.Integer(), nullable=False),
        sa.Column("createdAt", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["managerId"], ["users.id"], name=op.f("fk_users_managerId_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_index("idx_users_department", "users", ["department"], unique=False)
    op.create_index("idx_users_manager_id", "users", ["managerId"], unique=False)
    op.create_index("idx_users_role", "users", ["role"], unique=False)
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("segment", sa.String(length=50), nullable=False),
        sa.Column("campaignType", sa.String(length=50), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False, server_default="draft"),
        sa.Column("pacePerMinute", sa.Integer(), nullable=False),
        sa.Column("createdBy", sa.Integer(), nullable=True),
        sa.Column("createdAt", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["createdBy"],
            ["users.id"],
            name=op.f("fk_campaigns_createdBy_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    op.create_table(
        "employee_inputs",
        sa.Column("userId", sa.Integer(), nullable=False),
        sa.Column("monthlyIncome", sa.Double(), nullable=False),
        sa.Column("monthlySpending", sa.Double(), nullable=False),
        sa.Column("savingsBalance", sa.Double(), nullable=False),
        sa.Column("monthlyDebtPayments", sa.Double(), nullable=False),
        sa.Column("ewaAdvances30d", sa.Integer(), nullable=False),
        sa.Column("alerts30d", sa.Integer(), nullable=False),
        sa.Column("surveyScore", sa.Double(), nullable=True),
        sa.Column("surveyAt", sa.DateTime(), nullable=True),
        sa.Column("activeDays30d", sa.Integer(), nullable=False),
        sa.Column("goalsCompleted90d", sa.Integer(), nullable=False),
        sa.Column("lessonsCompleted90d", sa.Integer(), nullable=False),
        sa.Column("treePoints", sa.Integer(), nullable=False),
        sa.Column("updatedAt", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["userId"],
            ["users.id"],
            name=op.f("fk_employee_inputs_userId_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("userId", name=op.f("pk_employee_inputs")),
    )
    op.create_table(
        "employee_segments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("userId", sa.Integer(), nullable=False),
        sa.Column("segment", sa.String(length=50), nullable=False),
        sa.Column(
            "wellnessScore", sa.Numeric(precision=5, scale=2, asdecimal=False), nullable=True
        ),
        sa.Column("fwiScore", sa.Numeric(precision=5, scale=2, asdecimal=False), nullable=True),
        sa.Column("spendingLevel", sa.String(length=20), nullable=True),
        sa.Column("riskLevel", sa.String(length=20), nullable=True),
        sa.Column(
            "engagementScore", sa.Numeric(precision=5, scale=2, asdecimal=False), nullable=True
        ),
        sa.Column("interventionType", sa.String(length=50), nullable=True),
        sa.Column("recommendationCount", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("lastUpdated", sa.DateTime(), nullable=False),
        sa.Column("rule", sa.String(length=50), nullable=True),
        sa.Column("reasons", sa.String(length=255), nullable=True),
        sa.Column("policyVersion", sa.String(length=32), nullable=True),
        sa.Column("profileHash", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["userId"],
            ["users.id"],
            name=op.f("fk_employee_segments_userId_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_employee_segments")),
        sa.UniqueConstraint("userId", name=op.f("uq_employee_segments_userId")),
    )
    op.create_index("idx_last_updated", "employee_segments", ["lastUpdated"], unique=False)
    op.create_index("idx_risk_level", "employee_segments", ["riskLevel"], unique=False)
    op.create_index("idx_segment", "employee_segments", ["segment"], unique=False)
    op.create_table(
        "interventions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("userId", sa.Integer(), nullable=False),
        sa.Column("counselorId", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False, server_default="open"),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("createdAt", sa.DateTime(), nullable=False),
        sa.Column("updatedAt", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["counselorId"],
            ["users.id"],
            name=op.f("fk_interventions_counselorId_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["userId"], ["users.id"], name=op.f("fk_interventions_userId_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_interventions")),
    )
    op.create_index(
        "idx_interventions_counselor", "interventions", ["counselorId", "status"], unique=False
    )
    op.create_index("idx_interventions_user", "interventions", ["userId"], unique=False)
    op.create_table(
        "notification_preferences",
        sa.Column("userId", sa.Integer(), nullable=False),
        sa.Column("enableTierUpgrades", sa.Boolean(), nullable=False),
        sa.Column("enableMilestones", sa.Boolean(), nullable=False),
        sa.Column("enableRecommendations", sa.Boolean(), nullable=False),
        sa.Column("updatedAt", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["userId"],
            ["users.id"],
            name=op.f("fk_notification_preferences_userId_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("userId", name=op.f("pk_notification_preferences")),
    )
    op.create_table(
        "notification_queue",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("userId", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=50), nullable=True),
        sa.Column("title", sa.String(length=255), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False, server_default="pending"),
        sa.Column("createdAt", sa.DateTime(), nullable=False),
        sa.Column("sentAt", sa.DateTime(), nullable=True),
        sa.Column("readAt", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["userId"],
            ["users.id"],
            name=op.f("fk_notification_queue_userId_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_queue")),
    )
    op.create_index("idx_created_at", "notification_queue", ["createdAt"], unique=False)
    op.create_index("idx_status", "notification_queue", ["status"], unique=False)
    op.create_index("idx_user_id", "notification_queue", ["userId"], unique=False)
    op.create_table(
        "recommendation_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("userId", sa.Integer(), nullable=False),
        sa.Column("recommendationId", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("createdAt", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["userId"],
            ["users.id"],
            name=op.f("fk_recommendation_events_userId_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recommendation_events")),
    )
    op.create_index(
        "idx_recommendation_events_user_kind",
        "recommendation_events",
        ["userId", "kind"],
        unique=False,
    )
    op.create_table(
        "segment_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("userId", sa.Integer(), nullable=False),
        sa.Column("fromSegment", sa.String(length=50), nullable=True),
        sa.Column("toSegment", sa.String(length=50), nullable=False),
        sa.Column("fwiScore", sa.Numeric(precision=5, scale=2, asdecimal=False), nullable=True),
        sa.Column("policyVersion", sa.String(length=32), nullable=True),
        sa.Column("changedAt", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["userId"],
            ["users.id"],
            name=op.f("fk_segment_history_userId_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_history")),
    )
    op.create_index(
        "idx_segment_history_changed_at", "segment_history", ["changedAt"], unique=False
    )
    op.create_index("idx_segment_history_user_id", "segment_history", ["userId"], unique=False)
    op.create_table(
        "survey_responses",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("userId", sa.Integer(), nullable=False),
        sa.Column("answers", sa.JSON(), nullable=False),
        sa.Column("ageBand", sa.String(length=8), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("raw", sa.Integer(), nullable=False),
        sa.Column("scaleScore", sa.Integer(), nullable=False),
        sa.Column("createdAt", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["userId"],
            ["users.id"],
            name=op.f("fk_survey_responses_userId_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_survey_responses")),
    )
    op.create_index("idx_survey_responses_user_id", "survey_responses", ["userId"], unique=False)
    op.create_table(
        "user_tiers",
        sa.Column("userId", sa.Integer(), nullable=False),
        sa.Column("tier", sa.String(length=50), nullable=False),
        sa.Column("reachedAt", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["userId"], ["users.id"], name=op.f("fk_user_tiers_userId_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("userId", name=op.f("pk_user_tiers")),
    )
    op.create_table(
        "websocket_connections",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("userId", sa.Integer(), nullable=False),
        sa.Column("connectionId", sa.String(length=255), nullable=True),
        sa.Column("connectedAt", sa.DateTime(), nullable=False),
        sa.Column("lastHeartbeat", sa.DateTime(), nullable=True),
        sa.Column("nodeId", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["userId"],
            ["users.id"],
            name=op.f("fk_websocket_connections_userId_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_websocket_connections")),
        sa.UniqueConstraint("connectionId", name=op.f("uq_websocket_connections_connectionId")),
    )
    op.create_index("idx_connected_at", "websocket_connections", ["connectedAt"], unique=False)
    op.create_index(
        "idx_websocket_connections_user_id", "websocket_connections", ["userId"], unique=False
    )
    op.create_table(
        "campaign_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("campaignId", sa.Integer(), nullable=False),
        sa.Column("userId", sa.Integer(), nullable=False),
        sa.Column("segment", sa.String(length=50), nullable=False),
        sa.Column("notificationId", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False, server_default="queued"),
        sa.Column("clickedAt", sa.DateTime(), nullable=True),
        sa.Column("convertedAt", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaignId"],
            ["campaigns.id"],
            name=op.f("fk_campaign_deliveries_campaignId_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["userId"],
            ["users.id"],
            name=op.f("fk_campaign_deliveries_userId_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_deliveries")),
    )
    op.create_index(
        "idx_campaign_deliveries_campaign",
        "campaign_deliveries",
        ["campaignId", "status"],
        unique=False,
    )
    op.create_index("idx_campaign_deliveries_user", "campaign_deliveries", ["userId"], unique=False)

    reward_tiers = sa.table(
        "reward_tiers",
        sa.column("name", sa.String),
        sa.column("minPoints", sa.Integer),
        sa.column("discountPercentage", sa.Integer),
        sa.column("benefits", sa.JSON),
    )
    op.bulk_insert(reward_tiers, DEFAULT_TIERS)


def downgrade() -> None:
    # Dropping a table drops its indexes; MySQL refuses to drop an index an FK needs first.
    op.drop_table("campaign_deliveries")
    op.drop_table("websocket_connections")
    op.drop_table("user_tiers")
    op.drop_table("survey_responses")
    op.drop_table("segment_history")
    op.drop_table("recommendation_events")
    op.drop_table("notification_queue")
    op.drop_table("notification_preferences")
    op.drop_table("interventions")
    op.drop_table("employee_segments")
    op.drop_table("employee_inputs")
    op.drop_table("campaigns")
    op.drop_table("users")
    op.drop_table("reward_tiers")
    op.drop_table("audit_log")


DEFAULT_TIERS = [
    {"name": "Seedling", "minPoints": 0, "discountPercentage": 0, "benefits": ["Welcome lessons"]},
    {
        "name": "Sprout",
        "minPoints": 1000,
        "discountPercentage": 0,
        "benefits": ["Goal tracking", "Savings challenges"],
    },
    {
        "name": "Rising Stars",
        "minPoints": 2500,
        "discountPercentage": 10,
        "benefits": ["Mentorship", "Acceleration", "Leadership"],
    },
    {
        "name": "Financial Champions",
        "minPoints": 5000,
        "discountPercentage": 0,
        "benefits": ["Exclusive benefits", "Advocacy program"],
    },
]
