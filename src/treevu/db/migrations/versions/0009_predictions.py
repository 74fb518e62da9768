"""Risk predictions (SPEC §10): trained models, each profile's risks and their reasons, the
risks kept in the monthly snapshots, birth years (never a model input: per-age checks), and
campaigns that take only the members whose risk is rising.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

Risk = sa.Numeric(5, 4, asdecimal=False)


def upgrade() -> None:
    op.create_table(
        "prediction_models",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("target", sa.String(50), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("trainedAt", sa.DateTime(), nullable=False),
        sa.Column("model", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prediction_models")),
    )
    op.create_index("idx_prediction_models_target", "prediction_models", ["target", "version"])
    with op.batch_alter_table("employee_segments") as t:
        t.add_column(sa.Column("crisisRisk30d", Risk, nullable=True))
        t.add_column(sa.Column("disengagementRisk30d", Risk, nullable=True))
        t.add_column(sa.Column("crisisRiskReasons", sa.String(255), nullable=True))
        t.add_column(sa.Column("disengagementRiskReasons", sa.String(255), nullable=True))
    with op.batch_alter_table("profile_snapshots") as t:
        t.add_column(sa.Column("crisisRisk30d", Risk, nullable=True))
        t.add_column(sa.Column("disengagementRisk30d", Risk, nullable=True))
    with op.batch_alter_table("users") as t:
        t.add_column(sa.Column("birthYear", sa.Integer(), nullable=True))
    with op.batch_alter_table("campaigns") as t:
        t.add_column(
            sa.Column("risingRisk", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as t:
        t.drop_column("risingRisk")
    with op.batch_alter_table("users") as t:
        t.drop_column("birthYear")
    with op.batch_alter_table("profile_snapshots") as t:
        t.drop_column("disengagementRisk30d")
        t.drop_column("crisisRisk30d")
    with op.batch_alter_table("employee_segments") as t:
        t.drop_column("disengagementRiskReasons")
        t.drop_column("crisisRiskReasons")
        t.drop_column("disengagementRisk30d")
        t.drop_column("crisisRisk30d")
    op.drop_index("idx_prediction_models_target", table_name="prediction_models")
    op.drop_table("prediction_models")
