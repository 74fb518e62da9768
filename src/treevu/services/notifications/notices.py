"""What people are told when a domain event happens: the outbox relay's handlers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from treevu.db import OutboxEvent
from treevu.segmentation.policy import SegmentName
from treevu.services.notifications.preferences import unmuted
from treevu.services.notifications.store import NewNotification

SEGMENT_MESSAGES: Final[dict[SegmentName, tuple[str, str]]] = {
    "crisis_intervention": (
        "We're here to help",
        "A counselor will reach out to you shortly with emergency support options.",
    ),
    "at_risk": (
        "New support for your finances",
        "We've prepared counseling and budgeting resources that fit your situation.",
    ),
    "financial_champions": (
        "You're a Financial Champion!",
        "Your financial wellness is outstanding. Exclusive benefits are now open to you.",
    ),
    "rising_stars": (
        "You're a Rising Star!",
        "Your progress unlocked mentorship and advanced wealth-planning tracks.",
    ),
    "steady_performers": (
        "Your wellness plan was updated",
        "New savings and investment ideas are waiting in your recommendations.",
    ),
}


async def segment_changed(
    session: AsyncSession, events: Sequence[OutboxEvent]
) -> list[NewNotification]:
    """A changed segment is told to its user; entering crisis is an unmutable update."""
    items = []
    for event in events:
        to_segment = event.payload.get("toSegment")
        if event.user_id is None or to_segment not in SEGMENT_MESSAGES:
            continue
        crisis = to_segment == "crisis_intervention"
        title, message = SEGMENT_MESSAGES[to_segment]
        items.append(
            NewNotification(
                event.user_id,
                "intervention_update" if crisis else "recommendation",
                title,
                message,
                data={
                    "fromSegment": event.payload.get("fromSegment"),
                    "toSegment": to_segment,
                    **({"crisis": True} if crisis else {}),
                },
            )
        )
    return await unmuted(session, items)
