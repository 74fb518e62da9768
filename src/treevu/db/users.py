from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from treevu.db.base import Base, utcnow

ROLES = ("employee", "manager", "counselor", "admin")


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        Index("idx_users_role", "role"),
        Index("idx_users_manager_id", "managerId"),
        Index("idx_users_department", "department"),
        Index("idx_users_active", "isActive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20), default="employee")
    manager_id: Mapped[int | None] = mapped_column(
        "managerId", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    department: Mapped[str | None] = mapped_column(String(100), nullable=True)
    is_active: Mapped[bool] = mapped_column("isActive", Boolean, default=True)
    counselor_capacity: Mapped[int] = mapped_column("counselorCapacity", Integer, default=0)
    created_at: Mapped[datetime] = mapped_column("createdAt", default=utcnow)
    #: Never an input of any model: only to check that predictions are as good for every age.
    birth_year: Mapped[int | None] = mapped_column("birthYear", Integer, nullable=True)
