from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from treevu.db.base import Base, utcnow


class JobRun(Base):
    """One run of a scheduled job. ``(job, slot)`` is unique: the node whose insert wins a
    slot (the scheduled time, or ``manual:…``) runs it; every other node skips it."""

    __tablename__ = "job_runs"
    __table_args__ = (
        UniqueConstraint("job", "slot", name="uq_job_runs_job_slot"),
        Index("idx_job_runs_job_started", "job", "startedAt"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(String(64))
    slot: Mapped[str] = mapped_column(String(64))
    node: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column("startedAt", default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column("finishedAt", nullable=True)
    ok: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
