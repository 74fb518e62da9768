"""Interventions keep their counselors' notes and the time they were resolved or closed.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("interventions") as t:
        t.add_column(sa.Column("notes", sa.JSON(), nullable=True))
        t.add_column(sa.Column("endedAt", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("interventions") as t:
        t.drop_column("endedAt")
        t.drop_column("notes")
