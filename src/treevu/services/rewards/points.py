"""The TreePoints ledger: awards and spending (``rewards.awardPoints``) and points the app
gives for its own events, at the rates of ``point_rules``.

A change is one conditional ``UPDATE`` of the balance (``treePoints + n >= 0``: concurrent
spends can never take it below zero), a ledger entry with the balance it left, and — when
points were earned — an ``achievements.check`` outbox event, all in the caller's transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from treevu.db import (
    ACHIEVEMENTS_CHECK,
    AuditLog,
    EmployeeInputs,
    OutboxEvent,
    PointRule,
    PointsEntry,
)
from treevu.services.bounds import MAX_INT, check_idempotency_key
from treevu.services.context import Actor, Services
from treevu.services.errors import ServiceError, bad_request, no_inputs, retry_deadlocks
from treevu.services.rewards.tiers import Tier, load_tiers, tier_of
from treevu.services.segmentation.queries import run_recompute

AppEvent = Literal[
    "goal_completed", "lesson_completed", "recommendation_completed", "survey_answered"
]
#: The most points one award may move.
MAX_AWARD: Final = 1_000_000


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PointsIn(Model):
    """An award's body over REST (the user is in the path)."""

    points: int = Field(ge=-MAX_AWARD, le=MAX_AWARD, description="negative: spend")
    reason: str = Field(min_length=1, max_length=255)

    @field_validator("points")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must not be 0")
        return value


class AwardPoints(PointsIn):
    user_id: int = Field(alias="userId", ge=1, le=MAX_INT)


class PointsAwarded(Model):
    entry_id: int = Field(alias="entryId")
    user_id: int = Field(alias="userId")
    points: int
    balance: int
    tier: str
    replayed: bool = False


async def change_points(
    session: AsyncSession,
    user_id: int,
    points: int,
    reason: str,
    now: datetime,
    *,
    actor_id: int | None = None,
    idempotency_key: str | None = None,
) -> PointsEntry:
    """Move ``user_id``'s balance by ``points`` in ``session``'s transaction (not committed)."""
    balance_now = EmployeeInputs.tree_points + points
    moved = await session.execute(
        update(EmployeeInputs)
        .where(EmployeeInputs.user_id == user_id, balance_now >= 0, balance_now <= MAX_INT)
        .values(tree_points=balance_now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        balance = await session.scalar(
            select(EmployeeInputs.tree_points).where(EmployeeInputs.user_id == user_id)
        )
        if balance is None:
            raise no_inputs(user_id)
        if points < 0:
            raise bad_request(
                "points", f"the balance is {balance}; spending {-points} would take it below 0"
            )
        raise bad_request("points", f"the balance is {balance}; {points} more would overflow")
    balance_after = await session.scalar(
        select(EmployeeInputs.tree_points).where(EmployeeInputs.user_id == user_id)
    )
    entry = PointsEntry(
        user_id=user_id,
        points=points,
        reason=reason,
        balance_after=int(balance_after or 0),
        actor_id=actor_id,
        idempotency_key=idempotency_key,
        created_at=now,
    )
    session.add(entry)
    if points > 0:
        session.add(_check(user_id, now))
    await session.flush()
    return entry


def _check(user_id: int, now: datetime) -> OutboxEvent:
    return OutboxEvent(kind=ACHIEVEMENTS_CHECK, user_id=user_id, payload={}, created_at=now)


async def earn(session: AsyncSession, user_id: int, event: AppEvent, now: datetime) -> int:
    """The points ``point_rules`` gives for ``event`` (0 without a rule, or without inputs)."""
    points = await session.scalar(select(PointRule.points).where(PointRule.event == event))
    if not points:
        return 0
    has_inputs = await session.scalar(
        select(EmployeeInputs.user_id).where(EmployeeInputs.user_id == user_id)
    )
    if has_inputs is None:
        return 0
    await change_points(session, user_id, int(points), event, now)
    return int(points)


async def award_points(
    svc: Services, actor: Actor, inp: AwardPoints, idempotency_key: str | None = None
) -> PointsAwarded:
    """Admin or integration token: earn (points > 0) or spend (< 0) with a reason.

    The same ``Idempotency-Key`` from the same caller returns the first entry (for ever: a
    ledger entry is permanent); with a different user or amount it is a conflict.
    """
    actor.require_admin()
    check_idempotency_key(idempotency_key)
    if idempotency_key is not None:
        first = await _keyed(svc, actor, inp, idempotency_key)
        if first is not None:
            return first

    async def transaction() -> tuple[PointsEntry | PointsAwarded, list[Tier]]:
        async with svc.sessions() as session:
            now = svc.clock()
            entry = await change_points(
                session, inp.user_id, inp.points, inp.reason, now,
                actor_id=actor.user_id, idempotency_key=idempotency_key,
            )  # fmt: skip
            session.add(
                AuditLog(
                    actor_id=actor.user_id,
                    action="points.award",
                    target=f"user:{inp.user_id}",
                    detail={"points": inp.points, "reason": inp.reason, "entryId": entry.id},
                    created_at=now,
                )
            )
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                first = await _keyed(svc, actor, inp, idempotency_key) if idempotency_key else None
                if first is None:
                    raise
                return first, []
            return entry, await load_tiers(session)

    entry, tiers = await retry_deadlocks(transaction)
    if isinstance(entry, PointsAwarded):
        return entry
    # No recompute: no score, segment rule or recommendation trigger reads the balance. The
    # relay announces what it reached (and ranks the recommendations again for a new tier).
    svc.relay.wake()
    return PointsAwarded(
        entry_id=entry.id,
        user_id=inp.user_id,
        points=inp.points,
        balance=entry.balance_after,
        tier=tier_of(tiers, entry.balance_after).name,
    )


async def _keyed(svc: Services, actor: Actor, inp: AwardPoints, key: str) -> PointsAwarded | None:
    async with svc.sessions() as session:
        entry = await session.scalar(
            select(PointsEntry).where(
                PointsEntry.actor_id == actor.user_id, PointsEntry.idempotency_key == key
            )
        )
        if entry is None:
            return None
        tiers = await load_tiers(session)
    if entry.user_id != inp.user_id or entry.points != inp.points:
        raise ServiceError(
            "CONFLICT",
            "Idempotency-Key: already used for a different award "
            f"({entry.points} points to user {entry.user_id})",
            field="Idempotency-Key",
        )
    return PointsAwarded(
        entry_id=entry.id,
        user_id=entry.user_id,
        points=entry.points,
        balance=entry.balance_after,
        tier=tier_of(tiers, entry.balance_after).name,
        replayed=True,
    )


class ActivityBody(Model):
    kind: Literal["goal_completed", "lesson_completed"]


class ActivityIn(ActivityBody):
    user_id: int = Field(alias="userId", ge=1, le=MAX_INT)


class ActivityOut(Model):
    user_id: int = Field(alias="userId")
    kind: str
    goals_completed: int = Field(alias="goalsCompleted90d")
    lessons_completed: int = Field(alias="lessonsCompleted90d")
    points_earned: int = Field(alias="pointsEarned")
    balance: int


async def record_activity(svc: Services, actor: Actor, inp: ActivityIn) -> ActivityOut:
    """Admin or integration token: the app saw a goal or a lesson completed. The count goes up
    by one (imports set the true 90-day counts), the points of ``point_rules`` are earned, and
    goal milestones are checked."""
    actor.require_admin()
    column = (
        EmployeeInputs.goals_completed_90d
        if inp.kind == "goal_completed"
        else EmployeeInputs.lessons_completed_90d
    )

    async def transaction() -> tuple[EmployeeInputs, int]:
        async with svc.sessions() as session:
            now = svc.clock()
            counted = await session.execute(
                update(EmployeeInputs)
                .where(EmployeeInputs.user_id == inp.user_id, column < MAX_INT)
                .values({column: column + 1, EmployeeInputs.updated_at: now})
                .execution_options(synchronize_session=False)
            )
            if counted.rowcount != 1:  # type: ignore[attr-defined]
                raise no_inputs(inp.user_id)
            points = await earn(session, inp.user_id, inp.kind, now)
            if points == 0 and inp.kind == "goal_completed":
                session.add(_check(inp.user_id, now))
            session.add(
                AuditLog(
                    actor_id=actor.user_id,
                    action="activity.record",
                    target=f"user:{inp.user_id}",
                    detail={"kind": inp.kind, "points": points},
                    created_at=now,
                )
            )
            await session.commit()
            row = await session.get(EmployeeInputs, inp.user_id, populate_existing=True)
            assert row is not None
            return row, points

    row, points = await retry_deadlocks(transaction)
    svc.relay.wake()
    await run_recompute(svc, [inp.user_id])
    return ActivityOut(
        user_id=inp.user_id,
        kind=inp.kind,
        goals_completed=row.goals_completed_90d,
        lessons_completed=row.lessons_completed_90d,
        points_earned=points,
        balance=row.tree_points,
    )
