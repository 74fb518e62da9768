from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import JSON, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from treevu.db.base import Base, utcnow

#: Kinds of domain event; each has a handler in the relay (``services/outbox.py``).
SEGMENT_CHANGED: Final = "segment.changed"


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
