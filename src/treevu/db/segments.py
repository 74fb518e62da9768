from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from treevu.db.base import Base, utcnow

Score = Numeric(5, 2, asdecimal=False)
Risk = Numeric(5, 4, asdecimal=False)


class EmployeeSegment(Base):
    """The original design's table, exact names kept; ``rule`` onwards are additions."""

    __tablename__ = "employee_segments"
    __table_args__ = (
        Index("idx_segment", "segment"),
        Index("idx_risk_level", "riskLevel"),
        Index("idx_last_updated", "lastUpdated"),
        Index("idx_segment_user", "segment", "userId"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(
        "userId", Integer, ForeignKey("users.id", ondelete="CASCADE"), unique=True
    )
    segment: Mapped[str] = mapped_column(String(50))
    wellness_score: Mapped[float | None] = mapped_column("wellnessScore", Score)
    fwi_score: Mapped[float | None] = mapped_column("fwiScore", Score)
    spending_level: Mapped[str | None] = mapped_column("spendingLevel", String(20))
    risk_level: Mapped[str | None] = mapped_column("riskLevel", String(20))
    engagement_score: Mapped[float | None] = mapped_column("engagementScore", Score)
    intervention_type: Mapped[str | None] = mapped_column("interventionType", String(50))
    recommendation_count: Mapped[int] = mapped_column("recommendationCount", Integer, default=0)
    last_updated: Mapped[datetime] = mapped_column("lastUpdated", default=utcnow)
    rule: Mapped[str | None] = mapped_column(String(50), nullable=True)
    reasons: Mapped[str | None] = mapped_column(String(255), nullable=True)
    policy_version: Mapped[str | None] = mapped_column("policyVersion", String(32), nullable=True)
    #: Fingerprint of the stored values, so a recompute writes only rows that changed.
    profile_hash: Mapped[int | None] = mapped_column("profileHash", BigInteger, nullable=True)
    #: The active risk models' predictions (SPEC §10) and their top reasons, comma-separated.
    crisis_risk_30d: Mapped[float | None] = mapped_column("crisisRisk30d", Risk, nullable=True)
    disengagement_risk_30d: Mapped[float | None] = mapped_column(
        "disengagementRisk30d", Risk, nullable=True
    )
    crisis_reasons: Mapped[str | None] = mapped_column("crisisRiskReasons", String(255))
    disengagement_reasons: Mapped[str | None] = mapped_column(
        "disengagementRiskReasons", String(255)
    )


class SegmentHistory(Base):
    """Every change of segment, for churn and cohorts."""

    __tablename__ = "segment_history"
    __table_args__ = (
        Index("idx_segment_history_user_id", "userId"),
        Index("idx_segment_history_changed_at", "changedAt"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(
        "userId", Integer, ForeignKey("users.id", ondelete="CASCADE")
    )
    from_segment: Mapped[str | None] = mapped_column("fromSegment", String(50), nullable=True)
    to_segment: Mapped[str] = mapped_column("toSegment", String(50))
    fwi_score: Mapped[float | None] = mapped_column("fwiScore", Score)
    policy_version: Mapped[str | None] = mapped_column("policyVersion", String(32))
    changed_at: Mapped[datetime] = mapped_column("changedAt", default=utcnow)


class ProfileSnapshot(Base):
    """Each person's profile once a month (SPEC §10): written by the nightly ``history.snapshot``
    job for the current month (and by ``treevu seed --history-months`` for past ones)."""

    __tablename__ = "profile_snapshots"
    __table_args__ = (
        UniqueConstraint("month", "userId", name="uq_profile_snapshots_month_user"),
        Index("idx_profile_snapshots_user", "userId"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: The first day of the month.
    month: Mapped[date] = mapped_column(Date)
    user_id: Mapped[int] = mapped_column(
        "userId", Integer, ForeignKey("users.id", ondelete="CASCADE")
    )
    segment: Mapped[str] = mapped_column(String(50))
    fwi_score: Mapped[float | None] = mapped_column("fwiScore", Score)
    wellness_score: Mapped[float | None] = mapped_column("wellnessScore", Score)
    engagement_score: Mapped[float | None] = mapped_column("engagementScore", Score)
    risk_level: Mapped[str | None] = mapped_column("riskLevel", String(20))
    spending_level: Mapped[str | None] = mapped_column("spendingLevel", String(20))
    taken_at: Mapped[datetime] = mapped_column("takenAt", default=utcnow)
    crisis_risk_30d: Mapped[float | None] = mapped_column("crisisRisk30d", Risk, nullable=True)
    disengagement_risk_30d: Mapped[float | None] = mapped_column(
        "disengagementRisk30d", Risk, nullable=True
    )


class AnalyticsResult(Base):
    """A computed analytics answer (``services/analytics``), kept with the version of the data
    it was computed from; a newer version makes it stale."""

    __tablename__ = "analytics_results"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[str] = mapped_column(String(100))
    computed_at: Mapped[datetime] = mapped_column("computedAt", default=utcnow)
    payload: Mapped[Any] = mapped_column(JSON)


class PredictionModel(Base):
    """A trained risk model (``services/models``): its numbers as JSON (nothing executes when
    it is loaded) and its held-out metrics; the newest of each target is the active one."""

    __tablename__ = "prediction_models"
    __table_args__ = (Index("idx_prediction_models_target", "target", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(50))
    version: Mapped[int] = mapped_column(Integer)
    trained_at: Mapped[datetime] = mapped_column("trainedAt", default=utcnow)
    model: Mapped[Any] = mapped_column(JSON)
    metrics: Mapped[Any] = mapped_column(JSON)
