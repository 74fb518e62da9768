"""Recommendation feedback (``recommendations.click | dismiss | complete``) and impressions.

Feedback is kept in ``recommendation_events``. The ranking reads it every time, so a dismissed
or completed item leaves the caller's list at once; a completion earns the points of
``point_rules`` (once per item). An item is the caller's when it is in their ranking now or
when they were shown it before (an impression: a completed item has left the ranking).
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from treevu.db import RecommendationEvent
from treevu.segmentation.recommendations import CATALOG
from treevu.services.context import Actor, Services
from treevu.services.errors import ServiceError
from treevu.services.rewards.points import earn
from treevu.services.segmentation.queries import RecommendationOut, ranked_for, run_recompute

Action = Literal["click", "dismiss", "complete"]
#: The event kind each action stores.
KIND: Final[dict[Action, str]] = {"click": "click", "dismiss": "dismissed", "complete": "completed"}


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RecommendationRef(Model):
    recommendation_id: str = Field(alias="recommendationId", min_length=1, max_length=64)


class FeedbackOut(Model):
    recommendation_id: str = Field(alias="recommendationId")
    action: Action
    #: False when the same feedback was given before (nothing changed).
    recorded: bool
    points_earned: int = Field(alias="pointsEarned")
    recommendations: list[RecommendationOut]


async def _feedback(
    svc: Services, actor: Actor, action: Action, ref: RecommendationRef
) -> FeedbackOut:
    rid, uid = ref.recommendation_id, actor.user_id
    settings = svc.settings
    async with svc.sessions() as session:
        now = svc.clock()
        ranked = await ranked_for(
            session, svc.policy, uid, now, settings.survey_valid_days, len(CATALOG)
        )
        given = set(
            await session.scalars(
                select(RecommendationEvent.kind).where(
                    RecommendationEvent.user_id == uid,
                    RecommendationEvent.recommendation_id == rid,
                )
            )
        )
        if rid not in {r.id for r in ranked or []} and "impression" not in given:
            raise ServiceError(
                "NOT_FOUND",
                f"recommendationId: {rid!r} is not one of your recommendations",
                field="recommendationId",
            )
        kind = KIND[action]
        recorded = action == "click" or kind not in given
        points = 0
        if recorded:
            session.add(
                RecommendationEvent(user_id=uid, recommendation_id=rid, kind=kind, created_at=now)
            )
            if action == "complete":
                points = await earn(session, uid, "recommendation_completed", now)
            await session.commit()
    if recorded and action != "click":
        svc.relay.wake()
        await run_recompute(svc, [uid])  # the stored recommendationCount
    async with svc.sessions() as session:
        top = await ranked_for(session, svc.policy, uid, svc.clock(), settings.survey_valid_days, 5)
    return FeedbackOut(
        recommendation_id=rid,
        action=action,
        recorded=recorded,
        points_earned=points,
        recommendations=top or [],
    )


async def click(svc: Services, actor: Actor, inp: RecommendationRef) -> FeedbackOut:
    return await _feedback(svc, actor, "click", inp)


async def dismiss(svc: Services, actor: Actor, inp: RecommendationRef) -> FeedbackOut:
    return await _feedback(svc, actor, "dismiss", inp)


async def complete(svc: Services, actor: Actor, inp: RecommendationRef) -> FeedbackOut:
    return await _feedback(svc, actor, "complete", inp)


ACTIONS: Final = {"click": click, "dismiss": dismiss, "complete": complete}
