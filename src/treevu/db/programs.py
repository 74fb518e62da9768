from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from treevu.db.base import Base, utcnow


class Campaign(Base):
    """A message for a segment, sent at a pace (``services/campaigns``). Status: scheduled →
    running ⇄ paused → completed, or cancelled."""

    __tablename__ = "campaigns"
    __table_args__ = (Index("idx_campaigns_status", "status"),)

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
    #: [{title, message}, …]: the arms people are split among (None: title and message).
    variants: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    start_at: Mapped[datetime | None] = mapped_column("startAt", nullable=True)
    started_at: Mapped[datetime | None] = mapped_column("startedAt", nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column("completedAt", nullable=True)
    #: Sending is paid for up to here (milliseconds since the epoch: exact on every database,
    #: where MariaDB's DATETIME drops fractions): each notification moves it 60 / pace s on.
    paced_until_ms: Mapped[int | None] = mapped_column("pacedUntilMs", BigInteger, nullable=True)
    conversion_event: Mapped[str] = mapped_column(
        "conversionEvent", String(50), default="recommendation_completed"
    )
    conversion_days: Mapped[int] = mapped_column("conversionDays", Integer, default=7)
    #: Only members whose crisis risk rose since last month (``services/campaigns/sending``).
    rising_risk: Mapped[bool] = mapped_column("risingRisk", Boolean, default=False)


class CampaignDelivery(Base):
    """One target of a campaign, frozen when it starts: ``queued`` → ``sent`` (its
    notification stored), ``muted`` or ``cancelled``. At most one per campaign and person."""

    __tablename__ = "campaign_deliveries"
    __table_args__ = (
        Index("idx_campaign_deliveries_campaign", "campaignId", "status"),
        Index("idx_campaign_deliveries_user", "userId"),
        Index("idx_campaign_deliveries_order", "campaignId", "status", "position"),
        UniqueConstraint("campaignId", "userId", name="uq_campaign_deliveries_user"),
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
    #: Sending order (by the campaign type's rule) and the person's variant.
    position: Mapped[int] = mapped_column(Integer, default=0)
    variant: Mapped[int] = mapped_column(SmallInteger, default=0)
    sent_at: Mapped[datetime | None] = mapped_column("sentAt", nullable=True)


class Intervention(Base):
    """A crisis intervention (``services/interventions.py``): open → contacted → in_progress →
    resolved | closed; ``counselorId`` None while it waits for a free counselor."""

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
    #: [{at, by, status, note}]: each change and what the counselor wrote.
    notes: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column("endedAt", nullable=True)
