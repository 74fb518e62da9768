"""What people are told when a domain event happens: the outbox relay's handlers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession

from treevu.db import OutboxEvent
from treevu.segmentation.policy import Policy, SegmentName
from treevu.services import interventions
from treevu.services.notifications.preferences import unmuted
from treevu.services.notifications.store import NewNotification
from treevu.services.outbox import Handler
from treevu.services.segmentation.queries import ranked_for

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


def segment_changed(policy: Policy, survey_valid_days: int) -> Handler:
    """The relay's handler of ``segment.changed``: each change is told to its user, once.

    Entering crisis opens an intervention (``services/interventions.py``: the employee's
    unmutable ``intervention_update``, their manager's, the counselor's or the admins'); leaving
    it resolves or updates that intervention. Any other change is one ``recommendation``
    naming the best item of the person's new ranking (SPEC §9 Recommendations), with its id so
    that the client can open, click or dismiss it.
    """

    async def handle(session: AsyncSession, events: Sequence[OutboxEvent]) -> list[NewNotification]:
        items = []
        for event in events:
            to_segment = event.payload.get("toSegment")
            if event.user_id is None or to_segment not in SEGMENT_MESSAGES:
                continue
            title, message = SEGMENT_MESSAGES[to_segment]
            data: dict[str, Any] = {
                "fromSegment": event.payload.get("fromSegment"),
                "toSegment": to_segment,
            }
            now = event.processed_at or event.created_at
            if event.payload.get("fromSegment") == "crisis_intervention":
                items.extend(await interventions.left_crisis(session, event.user_id, now))
            if to_segment == "crisis_intervention":
                items.extend(await interventions.entered_crisis(session, event.user_id, now, data))
                continue
            best = await ranked_for(session, policy, event.user_id, now, survey_valid_days, 1)
            if best:
                message = f"{message} Start with: {best[0].title}."
                data |= {"recommendationId": best[0].id, "category": best[0].category}
            items.append(NewNotification(event.user_id, "recommendation", title, message, data))
        return await unmuted(session, items)

    return handle
