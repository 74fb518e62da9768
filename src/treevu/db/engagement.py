from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
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
    #: The benefits in a sentence, for the ``tier_upgrade`` message.
    description: Mapped[str] = mapped_column(String(500), default="")


class PointsEntry(Base):
    """One change of a TreePoints balance: earned (> 0) or spent (< 0), with why and by whom.

    ``balanceAfter`` is the balance this entry left; ``(actorId, idempotencyKey)`` is unique,
    so a retried award with the same key finds its first entry instead of adding a second.
    """

    __tablename__ = "points_ledger"
    __table_args__ = (
        UniqueConstraint("actorId", "idempotencyKey", name="uq_points_ledger_actor_key"),
        Index("idx_points_ledger_user", "userId", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(
        "userId", Integer, ForeignKey("users.id", ondelete="CASCADE")
    )
    points: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(255))
    balance_after: Mapped[int] = mapped_column("balanceAfter", Integer)
    actor_id: Mapped[int | None] = mapped_column("actorId", Integer, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(
        "idempotencyKey", String(255), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column("createdAt", default=utcnow)


class PointRule(Base):
    """TreePoints the app gives for one of its own events (goal completed, …): data, not code."""

    __tablename__ = "point_rules"

    event: Mapped[str] = mapped_column(String(50), primary_key=True)
    points: Mapped[int] = mapped_column(Integer)


class Achievement(Base):
    """A tier or milestone a person reached: one row per person, kind and threshold, ever —
    the unique key is what makes each announcement happen once, on any number of nodes."""

    __tablename__ = "achievements"
    __table_args__ = (
        UniqueConstraint("userId", "kind", "threshold", name="uq_achievements_user_kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(
        "userId", Integer, ForeignKey("users.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(20))
    threshold: Mapped[str] = mapped_column(String(50))
    reached_at: Mapped[datetime] = mapped_column("reachedAt", default=utcnow)
    #: False: recorded without a notification (what a seeded population had already reached).
    announced: Mapped[bool] = mapped_column(Boolean, default=True)


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
