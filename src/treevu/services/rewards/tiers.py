"""Reward tiers: the TreePoints → tier table of SPEC §3, kept as data (``reward_tiers``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from treevu.db import AuditLog, EmployeeInputs, RewardTier
from treevu.services.bounds import MAX_INT
from treevu.services.context import Actor, Services
from treevu.services.errors import bad_request


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    min_points: int
    discount_percentage: int
    benefits: tuple[str, ...]
    description: str


async def load_tiers(session: AsyncSession) -> list[Tier]:
    """The tier table, lowest first."""
    rows = await session.scalars(select(RewardTier).order_by(RewardTier.min_points))
    return [
        Tier(r.name, r.min_points, r.discount_percentage, tuple(r.benefits), r.description)
        for r in rows
    ]


def tier_of(tiers: Sequence[Tier], points: int) -> Tier:
    """The highest tier whose threshold ``points`` reaches (the first tier starts at 0)."""
    reached = [t for t in tiers if t.min_points <= points]
    return reached[-1] if reached else tiers[0]


def tier_upgrade(tier: Tier) -> tuple[str, str, dict[str, Any]]:
    """Title, message and data of a ``tier_upgrade``, in the shape of SPEC §4's example."""
    return (
        f"Congratulations! You reached {tier.name} Tier",
        f"You've earned new benefits: {tier.description or ', '.join(tier.benefits)}",
        {
            "tierName": tier.name,
            "benefits": list(tier.benefits),
            "discountPercentage": tier.discount_percentage,
        },
    )


class Empty(Model):
    pass


class TierOut(Model):
    name: str
    min_points: int = Field(alias="minPoints")
    discount_percentage: int = Field(alias="discountPercentage")
    benefits: list[str]
    description: str


class TierIn(Model):
    name: str = Field(min_length=1, max_length=50)
    min_points: int = Field(alias="minPoints", ge=0, le=MAX_INT)
    discount_percentage: int = Field(default=0, alias="discountPercentage", ge=0, le=100)
    benefits: list[str] = Field(default_factory=list, max_length=20)
    description: str = Field(default="", max_length=500)

    @field_validator("benefits")
    @classmethod
    def _short(cls, value: list[str]) -> list[str]:
        for b in value:
            if not 1 <= len(b) <= 100:
                raise ValueError("each benefit must be 1 to 100 characters")
        return value


class TiersUpdate(Model):
    tiers: list[TierIn] = Field(min_length=1, max_length=20)


class MyTier(Model):
    tier: str
    points: int
    next_tier: str | None = Field(alias="nextTier")
    points_to_next: int | None = Field(alias="pointsToNext")
    benefits: list[str]
    discount_percentage: int = Field(alias="discountPercentage")


def _out(t: Tier) -> TierOut:
    return TierOut(
        name=t.name,
        min_points=t.min_points,
        discount_percentage=t.discount_percentage,
        benefits=list(t.benefits),
        description=t.description,
    )


async def get_tiers(svc: Services, actor: Actor, inp: Empty) -> list[TierOut]:
    async with svc.sessions() as session:
        return [_out(t) for t in await load_tiers(session)]


async def get_my_tier(svc: Services, actor: Actor, inp: Empty) -> MyTier:
    """The caller's tier from their balance (0 before any inputs are stored)."""
    async with svc.sessions() as session:
        tiers = await load_tiers(session)
        points = await session.scalar(
            select(EmployeeInputs.tree_points).where(EmployeeInputs.user_id == actor.user_id)
        )
    points = int(points or 0)
    tier = tier_of(tiers, points)
    above = [t for t in tiers if t.min_points > points]
    return MyTier(
        tier=tier.name,
        points=points,
        next_tier=above[0].name if above else None,
        points_to_next=above[0].min_points - points if above else None,
        benefits=list(tier.benefits),
        discount_percentage=tier.discount_percentage,
    )


def _check_table(tiers: Sequence[TierIn]) -> None:
    """Refuse a table with no tier at 0 points, or a threshold or name used twice, naming the
    field at fault by its place in the request (``tiers[2].minPoints``)."""
    lowest = min(range(len(tiers)), key=lambda k: tiers[k].min_points)
    if tiers[lowest].min_points != 0:
        raise bad_request(
            f"tiers[{lowest}].minPoints",
            f"the lowest tier must start at 0 points, not {tiers[lowest].min_points}",
        )
    for field, attr in (("minPoints", "min_points"), ("name", "name")):
        first: dict[object, int] = {}
        for k, tier in enumerate(tiers):
            value = getattr(tier, attr)
            if value in first:
                raise bad_request(
                    f"tiers[{k}].{field}", f"{value!r} is also tiers[{first[value]}]'s"
                )
            first[value] = k


async def set_tiers(svc: Services, actor: Actor, inp: TiersUpdate) -> list[TierOut]:
    """Admin: replace the tier table. The lowest tier starts at 0 points; thresholds and names
    are unique. Tiers already announced to someone are not announced again (the achievements
    keep their names)."""
    actor.require_admin()
    _check_table(inp.tiers)
    tiers = sorted(inp.tiers, key=lambda t: t.min_points)
    async with svc.sessions() as session:
        await session.execute(delete(RewardTier))
        await session.execute(
            insert(RewardTier),
            [
                {
                    "name": t.name,
                    "min_points": t.min_points,
                    "discount_percentage": t.discount_percentage,
                    "benefits": t.benefits,
                    "description": t.description,
                }
                for t in tiers
            ],
        )
        session.add(
            AuditLog(
                actor_id=actor.user_id,
                action="rewards.setTiers",
                target="reward_tiers",
                detail={"tiers": [[t.name, t.min_points] for t in tiers]},
                created_at=svc.clock(),
            )
        )
        await session.commit()
        return [_out(t) for t in await load_tiers(session)]
