"""What each person has muted, and the rule that some notifications cannot be muted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from treevu.db import NotificationPreferences
from treevu.services.notifications.store import NewNotification

#: compliance_alert is never muted; neither is a crisis intervention_update (see is_muted).
MUTABLE: Final = frozenset({"tier_upgrade", "milestone", "recommendation", "intervention_update"})
TOGGLES: Final = {
    "tier_upgrade": "enable_tier_upgrades",
    "milestone": "enable_milestones",
    "recommendation": "enable_recommendations",
}


class Preferences(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    enable_tier_upgrades: bool = Field(alias="enableTierUpgrades")
    enable_milestones: bool = Field(alias="enableMilestones")
    enable_recommendations: bool = Field(alias="enableRecommendations")
    muted_types: list[str] = Field(alias="mutedTypes")


def preferences_out(row: NotificationPreferences | None) -> Preferences:
    if row is None:
        return Preferences(
            enable_tier_upgrades=True,
            enable_milestones=True,
            enable_recommendations=True,
            muted_types=[],
        )
    return Preferences(
        enable_tier_upgrades=row.enable_tier_upgrades,
        enable_milestones=row.enable_milestones,
        enable_recommendations=row.enable_recommendations,
        muted_types=list(row.muted_types or []),
    )


def is_muted(prefs: Preferences, type_: str, data: dict[str, Any] | None) -> bool:
    """compliance_alert and crisis intervention_update are never muted."""
    if type_ not in MUTABLE:
        return False
    if type_ == "intervention_update" and (data or {}).get("crisis") is True:
        return False
    toggle = TOGGLES.get(type_)
    if toggle is not None and not getattr(prefs, toggle):
        return True
    return type_ in prefs.muted_types


async def preferences_of(session: AsyncSession, user_ids: Sequence[int]) -> dict[int, Preferences]:
    found: dict[int, Preferences] = {}
    for start in range(0, len(user_ids), 1000):
        rows = await session.scalars(
            select(NotificationPreferences).where(
                NotificationPreferences.user_id.in_(user_ids[start : start + 1000])
            )
        )
        found.update({r.user_id: preferences_out(r) for r in rows})
    default = preferences_out(None)
    return {uid: found.get(uid, default) for uid in user_ids}


async def unmuted(session: AsyncSession, items: Sequence[NewNotification]) -> list[NewNotification]:
    """``items`` less those their recipients muted."""
    prefs = await preferences_of(session, sorted({n.user_id for n in items}))
    return [n for n in items if not is_muted(prefs[n.user_id], n.type, n.data)]
