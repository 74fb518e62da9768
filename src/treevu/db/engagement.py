from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from treevu.db.base import Base, utcnow

RECOMMENDATION_EVENT_KINDS = ("impression", "click", "dismissed", "completed")


class RecommendationEvent(Base):
    """Impressions, clicks, dismissals and completions of catalog recommendations."""

    __tablename__ = "recommendation_events"
    __table_args__ = (Index("idx_recommendation_events_user_kind", "userId", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(
        "userId", Integer, ForeignKey("users.id", ondelete="CASCADE")
    )
    recommendation_id: Mapped[str] = mapped_column("recommendationId", String(64))
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column("createdAt", default=utcnow)


class RewardTier(Base):
    """The configurable TreePoints → tier table (SPEC §3)."""

    __tablename__ = "reward_tiers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    min_points: Mapped[int] = mapped_column("minPoints", Integer, unique=True)
    discount_percentage: Mapped[int] = mapped_column("discountPercentage", Integer, default=0)
    benefits: Mapped[list[Any]] = mapped_column(JSON, default=list)


class UserTier(Base):
    """The tier each user last reached, so an upgrade is noticed once."""

    __tablename__ = "user_tiers"

    user_id: Mapped[int] = mapped_column(
        "userId", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    tier: Mapped[str] = mapped_column(String(50))
    reached_at: Mapped[datetime] = mapped_column("reachedAt", default=utcnow)


class AuditLog(Base):
    """Every admin action and every notification delivery."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("idx_audit_log_actor", "actorId"),
        Index("idx_audit_log_created_at", "createdAt"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    actor_id: Mapped[int | None] = mapped_column("actorId", Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(255), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column("createdAt", default=utcnow)
