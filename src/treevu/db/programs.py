from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from treevu.db.base import Base, utcnow


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    segment: Mapped[str] = mapped_column(String(50))
    campaign_type: Mapped[str] = mapped_column("campaignType", String(50))
    title: Mapped[str] = mapped_column(String(255))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="draft")
    pace_per_minute: Mapped[int] = mapped_column("pacePerMinute", Integer, default=1000)
    created_by: Mapped[int | None] = mapped_column(
        "createdBy", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column("createdAt", default=utcnow)


class CampaignDelivery(Base):
    __tablename__ = "campaign_deliveries"
    __table_args__ = (
        Index("idx_campaign_deliveries_campaign", "campaignId", "status"),
        Index("idx_campaign_deliveries_user", "userId"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(
        "campaignId", Integer, ForeignKey("campaigns.id", ondelete="CASCADE")
    )
    user_id: Mapped[int] = mapped_column(
        "userId", Integer, ForeignKey("users.id", ondelete="CASCADE")
    )
    segment: Mapped[str] = mapped_column(String(50))
    notification_id: Mapped[int | None] = mapped_column("notificationId", Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    clicked_at: Mapped[datetime | None] = mapped_column("clickedAt", nullable=True)
    converted_at: Mapped[datetime | None] = mapped_column("convertedAt", nullable=True)


class Intervention(Base):
    __tablename__ = "interventions"
    __table_args__ = (
        Index("idx_interventions_user", "userId"),
        Index("idx_interventions_counselor", "counselorId", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(
        "userId", Integer, ForeignKey("users.id", ondelete="CASCADE")
    )
    counselor_id: Mapped[int | None] = mapped_column(
        "counselorId", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    kind: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20), default="open")
    plan: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column("createdAt", default=utcnow)
    updated_at: Mapped[datetime] = mapped_column("updatedAt", default=utcnow)
