"""Tiers and milestones reached, each announced once per person and threshold.

Every path that can raise a balance, a goal count or an FWI (points awarded or earned, inputs
put or imported, a recompute, the daily reconciliation) only writes an ``achievements.check``
outbox event in its own transaction. The relay runs :func:`check` in the transaction that
stores the notifications: it compares what the person has now with their ``achievements``
rows, inserts what is new and announces it. The unique key on ``(userId, kind, threshold)``
makes a second announcement impossible — two relays racing on one person fail one insert, and
that relay's transaction (notifications included) is retried and then finds the row.

Kinds: ``tier`` (threshold: the tier's name), and the milestones of SPEC §9 in
:data:`MILESTONES`. The balance and the goal count are levels (reached once they are at or
above the threshold); the FWI is a crossing (below before the recompute, at or above after).
What a seeded population has already reached is recorded unannounced (:func:`baseline`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, Literal

from sqlalchemy import (
    and_,
    exists,
    false,
    insert,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import Insert

from treevu.db import ACHIEVEMENTS_CHECK, Achievement, EmployeeInputs, OutboxEvent, RewardTier
from treevu.segmentation.policy import Policy
from treevu.services.notifications.preferences import unmuted
from treevu.services.notifications.store import NewNotification
from treevu.services.outbox import Handler
from treevu.services.rewards.tiers import Tier, load_tiers, tier_upgrade

MilestoneKind = Literal["fwi", "goals", "points"]
#: SPEC §9 Milestones: FWI crossing upward; goals completed; TreePoints balance.
MILESTONES: Final[dict[MilestoneKind, tuple[int, ...]]] = {
    "fwi": (50, 65, 80),
    "goals": (1, 5, 10),
    "points": (1000, 2500, 5000),
}
_A = Achievement
_I = EmployeeInputs


def fwi_crossed(before: float | None, after: float | None) -> list[int]:
    """The FWI milestones crossed upward from ``before`` to ``after``."""
    if before is None or after is None:
        return []
    return [t for t in MILESTONES["fwi"] if before < t <= after]


def _milestone(kind: MilestoneKind, threshold: int, user_id: int) -> NewNotification:
    title, message = {
        "fwi": (
            f"Your financial wellness passed {threshold}",
            f"Your financial well-being score is now {threshold} or more. Keep going!",
        ),
        "goals": (
            f"{threshold} goal{'s' if threshold > 1 else ''} completed",
            f"You've completed {threshold} financial goal{'s' if threshold > 1 else ''}.",
        ),
        "points": (
            f"{threshold:,} TreePoints",
            f"Your TreePoints balance reached {threshold:,}.",
        ),
    }[kind]
    return NewNotification(
        user_id, "milestone", title, message, {"milestone": kind, "threshold": threshold}
    )


def checker(policy: Policy, survey_valid_days: int) -> Handler:
    """The relay's handler of ``achievements.check``: record and announce what is new.

    A ``tier_upgrade`` refreshes the person's recommendations: their ranking is computed again
    in the relay's transaction (the one the API shows: inputs, segment, what they dismissed or
    completed) and its first item goes with the announcement — ``recommendationId`` and
    ``category`` beside SPEC §4's ``tierName``, ``benefits``, ``discountPercentage``.
    """

    async def handle(session: AsyncSession, events: Sequence[OutboxEvent]) -> list[NewNotification]:
        return await _check(session, events, policy, survey_valid_days)

    return handle


async def _check(
    session: AsyncSession, events: Sequence[OutboxEvent], policy: Policy, survey_valid_days: int
) -> list[NewNotification]:
    # Imported here: the recompute (imported by queries) reads MILESTONES from this module.
    from treevu.services.segmentation.queries import ranked_for

    crossed: dict[int, set[int]] = {}
    for event in events:
        if event.user_id is None:
            continue
        payload = event.payload or {}
        crossed.setdefault(event.user_id, set()).update(
            fwi_crossed(payload.get("fwiFrom"), payload.get("fwiTo"))
        )
    users = sorted(crossed)
    if not users:
        return []
    levels = {
        int(uid): (int(points), int(goals))
        for uid, points, goals in (
            await session.execute(
                select(_I.user_id, _I.tree_points, _I.goals_completed_90d).where(
                    _I.user_id.in_(users)
                )
            )
        ).all()
    }
    have = {
        (int(uid), kind, threshold)
        for uid, kind, threshold in (
            await session.execute(
                select(_A.user_id, _A.kind, _A.threshold).where(_A.user_id.in_(users))
            )
        ).all()
    }
    tiers = await load_tiers(session)
    now = events[0].processed_at or events[0].created_at
    rows: list[dict[str, Any]] = []
    items: list[NewNotification] = []

    def reached(uid: int, kind: str, threshold: str) -> bool:
        if (uid, kind, threshold) in have:
            return False
        rows.append({"user_id": uid, "kind": kind, "threshold": threshold, "reached_at": now})
        return True

    for uid in users:
        points, goals = levels.get(uid, (0, 0))
        new_tiers = [
            t for t in tiers if 0 < t.min_points <= points and reached(uid, "tier", t.name)
        ]
        if new_tiers:  # one announcement: the highest tier newly reached
            title, message, data = tier_upgrade(new_tiers[-1])
            best = await ranked_for(session, policy, uid, now, survey_valid_days, 1)
            if best:
                data |= {"recommendationId": best[0].id, "category": best[0].category}
            items.append(NewNotification(uid, "tier_upgrade", title, message, data))
        levelled: tuple[tuple[MilestoneKind, int], ...] = (("points", points), ("goals", goals))
        for kind, value in levelled:
            for t in MILESTONES[kind]:
                if t <= value and reached(uid, kind, str(t)):
                    items.append(_milestone(kind, t, uid))
        for t in sorted(crossed[uid]):
            if reached(uid, "fwi", str(t)):
                items.append(_milestone("fwi", t, uid))
    if rows:
        await session.execute(insert(Achievement), rows)
    return await unmuted(session, items)


def _unreached(kind: str, threshold: Any) -> Any:
    return ~exists().where(_A.user_id == _I.user_id, _A.kind == kind, _A.threshold == threshold)


def _tier_reached() -> Any:
    return and_(RewardTier.min_points > 0, RewardTier.min_points <= _I.tree_points)


def checks_due(now: datetime, user_ids: Sequence[int] | None = None) -> Insert:
    """``achievements.check`` events for the users (all when None) who have reached a tier or
    a level milestone not recorded yet: what the daily reconciliation (and an import) writes,
    set-based."""
    due = or_(
        exists().where(_tier_reached(), _unreached("tier", RewardTier.name)),
        *(
            and_(column >= t, _unreached(kind, str(t)))
            for kind, column in (("points", _I.tree_points), ("goals", _I.goals_completed_90d))
            for t in MILESTONES[kind]  # type: ignore[index]
        ),
    )
    chosen: Any = select(
        literal(ACHIEVEMENTS_CHECK), _I.user_id, literal_column("'{}'"), literal(now)
    ).where(due)
    if user_ids is not None:
        chosen = chosen.where(_I.user_id.in_(list(user_ids)))
    # An INSERT's rowcount is kept only when asked (SQLAlchemy keeps UPDATE's and DELETE's).
    return (
        insert(OutboxEvent)
        .from_select(["kind", "userId", "payload", "createdAt"], chosen)
        .execution_options(preserve_rowcount=True)
    )


def baseline(now: datetime) -> list[Insert]:
    """Record, unannounced, the tiers and level milestones everyone has reached already (what
    ``treevu seed`` writes: a synthetic company's history is not news to its people)."""

    def recorded(kind: str, threshold: Any, where: Any, *froms: Any) -> Insert:
        chosen: Any = select(_I.user_id, literal(kind), threshold, literal(now), false()).where(
            where, _unreached(kind, threshold)
        )
        if froms:
            chosen = chosen.select_from(_I, *froms)
        return insert(Achievement).from_select(
            ["userId", "kind", "threshold", "reachedAt", "announced"], chosen
        )

    statements = [recorded("tier", RewardTier.name, _tier_reached(), RewardTier)]
    for kind, column in (("points", _I.tree_points), ("goals", _I.goals_completed_90d)):
        for t in MILESTONES[kind]:  # type: ignore[index]
            statements.append(recorded(kind, literal(str(t)), column >= t))
    return statements


__all__ = ["MILESTONES", "Tier", "baseline", "checker", "checks_due", "fwi_crossed"]
