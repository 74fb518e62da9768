from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Double, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from treevu.db.base import Base, utcnow


class EmployeeInputs(Base):
    """The financial and engagement inputs of SPEC §2, one row per employee."""

    __tablename__ = "employee_inputs"

    user_id: Mapped[int] = mapped_column(
        "userId", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    monthly_income: Mapped[float] = mapped_column("monthlyIncome", Double)
    monthly_spending: Mapped[float] = mapped_column("monthlySpending", Double)
    savings_balance: Mapped[float] = mapped_column("savingsBalance", Double)
    monthly_debt_payments: Mapped[float] = mapped_column("monthlyDebtPayments", Double)
    ewa_advances_30d: Mapped[int] = mapped_column("ewaAdvances30d", Integer)
    alerts_30d: Mapped[int] = mapped_column("alerts30d", Integer)
    survey_score: Mapped[float | None] = mapped_column("surveyScore", Double, nullable=True)
    survey_at: Mapped[datetime | None] = mapped_column("surveyAt", nullable=True)
    active_days_30d: Mapped[int] = mapped_column("activeDays30d", Integer)
    goals_completed_90d: Mapped[int] = mapped_column("goalsCompleted90d", Integer)
    lessons_completed_90d: Mapped[int] = mapped_column("lessonsCompleted90d", Integer)
    tree_points: Mapped[int] = mapped_column("treePoints", Integer)
    updated_at: Mapped[datetime] = mapped_column("updatedAt", default=utcnow)


class SurveyResponse(Base):
    """Every CFPB Financial Well-Being survey a user submitted."""

    __tablename__ = "survey_responses"
    __table_args__ = (Index("idx_survey_responses_user_id", "userId"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(
        "userId", Integer, ForeignKey("users.id", ondelete="CASCADE")
    )
    answers: Mapped[list[Any]] = mapped_column(JSON)
    age_band: Mapped[str] = mapped_column("ageBand", String(8))
    mode: Mapped[str] = mapped_column(String(8))
    raw: Mapped[int] = mapped_column(Integer)
    scale_score: Mapped[int] = mapped_column("scaleScore", Integer)
    created_at: Mapped[datetime] = mapped_column("createdAt", default=utcnow)
