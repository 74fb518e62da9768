"""Indexes for paging a segment by user id and for counting inactive users.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # idx_segment (the original) stays; this one serves "segment = ? ORDER BY userId LIMIT n".
    op.create_index("idx_segment_user", "employee_segments", ["segment", "userId"])
    op.create_index("idx_users_active", "users", ["isActive"])


def downgrade() -> None:
    op.drop_index("idx_users_active", table_name="users")
    op.drop_index("idx_segment_user", table_name="employee_segments")
