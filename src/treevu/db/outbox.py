from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import JSON, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from treevu.db.base import Base, utcnow

#: Kinds of domain event; each has a handler in the relay (``services/outbox.py``).
SEGMENT_CHANGED: Final = "segment.changed"
#: A user's points, goals or FWI moved up: check their tiers and milestones (payload: the FWI
#: before and after, when it was a recompute that moved it).
ACHIEVEMENTS_CHECK: Final = "achievements.check"
#: One paced batch of a compliance alert (payload: title, message, userIds, actorId).
COMPLIANCE_BATCH: Final = "compliance.batch"


class OutboxEvent(Base):
    """A domain event, written in the same transaction as the change that caused it.

    The relay turns it into notifications and sets ``processedAt`` in the transaction that
    stores them, so each event is acted on exactly once whatever process dies when.
    """

    __tablename__ = "outbox_events"
    __table_args__ = (Index("idx_outbox_events_pending", "processedAt", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(50))
    user_id: Mapped[int | None] = mapped_column(
        "userId", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=True
    )
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column("createdAt", default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column("processedAt", nullable=True)
    #: Not relayed before this time (paced sending); None: at once.
    available_at: Mapped[datetime | None] = mapped_column("availableAt", nullable=True)
