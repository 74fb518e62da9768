from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from treevu.db.base import Base, utcnow

NOTIFICATION_STATUSES = ("pending", "sent", "delivered", "read", "cleared")


class NotificationQueue(Base):
    """The durable inbox and offline queue (original table, exact names)."""

    __tablename__ = "notification_queue"
    __table_args__ = (
        Index("idx_user_id", "userId"),
        Index("idx_status", "status"),
        Index("idx_created_at", "createdAt"),
        Index("idx_notification_queue_user_status", "userId", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(
        "userId", Integer, ForeignKey("users.id", ondelete="CASCADE")
    )
    type: Mapped[str | None] = mapped_column(String(50))
    title: Mapped[str | None] = mapped_column(String(255))
    message: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    created_at: Mapped[datetime] = mapped_column("createdAt", default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column("sentAt", nullable=True)
    read_at: Mapped[datetime | None] = mapped_column("readAt", nullable=True)
    # Added columns:
    delivered_at: Mapped[datetime | None] = mapped_column("deliveredAt", nullable=True)
    created_by: Mapped[int | None] = mapped_column("createdBy", Integer, nullable=True)
    clicked_at: Mapped[datetime | None] = mapped_column("clickedAt", nullable=True)


class WebsocketConnection(Base):
    """One row per live connection (original table, exact names) plus the serving node."""

    __tablename__ = "websocket_connections"
    __table_args__ = (
        # MySQL scopes index names per table, SQLite and PostgreSQL per schema: the original
        # name idx_user_id is taken by notification_queue, so this one is prefixed.
        Index("idx_websocket_connections_user_id", "userId"),
        Index("idx_connected_at", "connectedAt"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(
        "userId", Integer, ForeignKey("users.id", ondelete="CASCADE")
    )
    connection_id: Mapped[str | None] = mapped_column("connectionId", String(255), unique=True)
    connected_at: Mapped[datetime] = mapped_column("connectedAt", default=utcnow)
    last_heartbeat: Mapped[datetime | None] = mapped_column("lastHeartbeat", nullable=True)
    node_id: Mapped[str | None] = mapped_column("nodeId", String(64), nullable=True)


class NotificationPreferences(Base):
    __tablename__ = "notification_preferences"

    user_id: Mapped[int] = mapped_column(
        "userId", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    enable_tier_upgrades: Mapped[bool] = mapped_column("enableTierUpgrades", Boolean, default=True)
    enable_milestones: Mapped[bool] = mapped_column("enableMilestones", Boolean, default=True)
    enable_recommendations: Mapped[bool] = mapped_column(
        "enableRecommendations", Boolean, default=True
    )
    #: Per-type switches beyond the original three: {"milestone": false, ...}.
    muted_types: Mapped[list[str] | None] = mapped_column("mutedTypes", JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column("updatedAt", default=utcnow)


class IdempotencyKey(Base):
    """An ``Idempotency-Key``: the same key within 24 h returns the first result."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("actorId", "key", name="uq_idempotency_keys_actor_key"),
        Index("idx_idempotency_keys_created_at", "createdAt"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    actor_id: Mapped[int] = mapped_column("actorId", Integer)
    key: Mapped[str] = mapped_column(String(255))
    notification_ids: Mapped[list[int]] = mapped_column("notificationIds", JSON)
    created_at: Mapped[datetime] = mapped_column("createdAt", default=utcnow)
