"""Segmentation use cases: profiles, recommendations, admin statistics, recompute."""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from treevu.db import (
    AuditLog,
    EmployeeInputs,
    EmployeeSegment,
    Intervention,
    RecommendationEvent,
    User,
)
from treevu.segmentation.engine import Inputs, score
from treevu.segmentation.policy import RISK_LEVELS, SEGMENTS, SPENDING_LEVELS, Policy, SegmentName
from treevu.segmentation.recommendations import CATALOG, rank_recommendations
from treevu.services.bounds import MAX_INT
from treevu.services.campaigns.sending import CampaignType, target_filter
from treevu.services.context import Actor, Services
from treevu.services.errors import ServiceError, bad_request, forbidden, not_found
from treevu.services.segmentation.recompute import RecomputeResult, recompute

log = logging.getLogger(__name__)


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Empty(Model):
    pass


class UserRef(Model):
    user_id: int | None = Field(default=None, alias="userId", ge=1, le=MAX_INT)


class WellnessProfile(Model):
    user_id: int = Field(alias="userId")
    wellness_score: float = Field(alias="wellnessScore")
    fwi_score: float = Field(alias="fwiScore")
    spending_level: str = Field(alias="spendingLevel")
    risk_level: str = Field(alias="riskLevel")
    engagement_score: float = Field(alias="engagementScore")
    segment: str
    intervention_type: str = Field(alias="interventionType")
    recommendation_count: int = Field(alias="recommendationCount")
    rule: str | None
    reasons: list[str]
    last_updated: datetime = Field(alias="lastUpdated")
    crisis_risk_30d: float | None = Field(
        default=None, alias="crisisRisk30d",
        description="probability of being in crisis at next month's snapshot (null: no model)",
    )  # fmt: skip
    crisis_risk_reasons: list[str] = Field(default=[], alias="crisisRiskReasons")
    disengagement_risk_30d: float | None = Field(
        default=None, alias="disengagementRisk30d",
        description="probability of being disengaged at next month's snapshot (null: no model)",
    )  # fmt: skip
    disengagement_risk_reasons: list[str] = Field(default=[], alias="disengagementRiskReasons")


class CurrentSegment(Model):
    user_id: int = Field(alias="userId")
    segment: str
    intervention_type: str = Field(alias="interventionType")
    rule: str | None
    reasons: list[str]
    last_updated: datetime = Field(alias="lastUpdated")


class RecommendationsInput(Model):
    user_id: int | None = Field(default=None, alias="userId", ge=1, le=MAX_INT)
    limit: int = Field(default=5, ge=1, le=50)


class RecommendationOut(Model):
    id: str
    rank: int
    title: str
    description: str
    category: str
    reason: str


class SegmentInput(Model):
    segment: SegmentName


class SegmentStats(Model):
    segment: str
    count: int
    percentage: float
    avg_wellness_score: float | None = Field(alias="avgWellnessScore")
    avg_fwi_score: float | None = Field(alias="avgFwiScore")
    avg_engagement_score: float | None = Field(alias="avgEngagementScore")
    risk_distribution: dict[str, int] = Field(alias="riskDistribution")
    spending_distribution: dict[str, int] = Field(alias="spendingDistribution")
    intervention_type: str = Field(alias="interventionType")


class SegmentEmployeesInput(Model):
    segment: SegmentName
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = None


class SegmentEmployee(Model):
    user_id: int = Field(alias="userId")
    name: str
    email: str
    department: str | None
    wellness_score: float = Field(alias="wellnessScore")
    fwi_score: float = Field(alias="fwiScore")
    engagement_score: float = Field(alias="engagementScore")
    risk_level: str = Field(alias="riskLevel")
    spending_level: str = Field(alias="spendingLevel")


class SegmentEmployeesPage(Model):
    items: list[SegmentEmployee]
    next_cursor: str | None = Field(alias="nextCursor")


class Bucket(Model):
    name: str
    count: int
    percentage: float


class Distribution(Model):
    total: int
    buckets: list[Bucket]


class InterventionRecommendations(Model):
    segment: str
    intervention_type: str = Field(alias="interventionType")
    employee_count: int = Field(alias="employeeCount")
    actions: list[str]
    recommendations: list[RecommendationOut]


class CampaignTargetsInput(Model):
    segment: SegmentName
    campaign_type: CampaignType = Field(alias="campaignType")
    rising_risk: bool = Field(
        default=False, alias="risingRisk",
        description="only members whose crisis risk rose by 0.05 or more since last month",
    )  # fmt: skip
    limit: int = Field(default=1000, ge=1, le=10000)
    cursor: str | None = None


class CampaignTargets(Model):
    segment: str
    campaign_type: str = Field(alias="campaignType")
    total: int
    items: list[int]
    next_cursor: str | None = Field(alias="nextCursor")


class RecomputeOut(Model):
    scored: int
    written: int
    segment_changes: int = Field(alias="segmentChanges")
    seconds: float


#: What each segment's intervention consists of, for admins planning outreach.
INTERVENTION_ACTIONS: dict[str, list[str]] = {
    "crisis_intervention": [
        "Assign a counselor within one business day",
        "Offer emergency hardship support and a debt-management plan",
        "Alert the manager without financial details",
    ],
    "at_risk": [
        "Invite to a financial-counseling session",
        "Enrol in budget optimisation lessons",
        "Check in again after the next recompute",
    ],
    "financial_champions": [
        "Invite to the peer-advocacy program",
        "Offer exclusive benefits",
    ],
    "rising_stars": [
        "Pair with a mentor",
        "Offer advanced wealth-planning content",
    ],
    "steady_performers": [
        "Suggest investment and savings optimisation",
        "Encourage a new goal",
    ],
}


def _encode_cursor(value: int) -> str:
    return base64.urlsafe_b64encode(str(value).encode()).decode()


def decode_cursor(cursor: str | None) -> int | None:
    """Opaque cursors carry the last id seen; a malformed one is a clear 400."""
    if cursor is None:
        return None
    try:
        value = int(base64.urlsafe_b64decode(cursor.encode()).decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request("cursor", "not a cursor returned by this API") from exc
    if not 0 <= value <= MAX_INT:
        raise bad_request("cursor", "not a cursor returned by this API")
    return value


def newest_first(stmt: Any, id_column: Any, cursor: str | None, limit: int) -> Any:
    """``stmt`` newest first by ``id_column``: the page after ``cursor`` (see page_cursor)."""
    stmt = stmt.order_by(id_column.desc()).limit(limit)
    before = decode_cursor(cursor)
    return stmt if before is None else stmt.where(id_column < before)


def page_cursor(ids: list[int], limit: int) -> str | None:
    return _encode_cursor(ids[-1]) if len(ids) == limit and ids else None


async def can_view_employee(svc: Services, actor: Actor, user_id: int) -> bool:
    """The employee themself, an admin, or a counselor with an intervention for them."""
    if actor.user_id == user_id or actor.is_admin:
        return True
    if actor.role == "counselor":
        async with svc.sessions() as session:
            found = await session.scalar(
                select(Intervention.id)
                .where(Intervention.user_id == user_id, Intervention.counselor_id == actor.user_id)
                .limit(1)
            )
        return found is not None
    return False


async def _target(svc: Services, actor: Actor, user_id: int | None) -> int:
    target = actor.user_id if user_id is None else user_id
    if not await can_view_employee(svc, actor, target):
        raise forbidden("you may only see your own profile")
    return target


async def _stored_profile(svc: Services, user_id: int) -> EmployeeSegment:
    async with svc.sessions() as session:
        row = await session.scalar(
            select(EmployeeSegment).where(EmployeeSegment.user_id == user_id)
        )
    if row is None:
        raise not_found(f"no profile for user {user_id}: no inputs yet, or not recomputed")
    return row


def _profile_out(row: EmployeeSegment) -> WellnessProfile:
    return WellnessProfile(
        user_id=row.user_id,
        wellness_score=float(row.wellness_score or 0),
        fwi_score=float(row.fwi_score or 0),
        spending_level=row.spending_level or "",
        risk_level=row.risk_level or "",
        engagement_score=float(row.engagement_score or 0),
        segment=row.segment,
        intervention_type=row.intervention_type or "",
        recommendation_count=row.recommendation_count,
        rule=row.rule,
        reasons=row.reasons.split(",") if row.reasons else [],
        last_updated=row.last_updated,
        crisis_risk_30d=row.crisis_risk_30d,
        crisis_risk_reasons=row.crisis_reasons.split(",") if row.crisis_reasons else [],
        disengagement_risk_30d=row.disengagement_risk_30d,
        disengagement_risk_reasons=(
            row.disengagement_reasons.split(",") if row.disengagement_reasons else []
        ),
    )


async def get_wellness_profile(svc: Services, actor: Actor, inp: UserRef) -> WellnessProfile:
    return _profile_out(await _stored_profile(svc, await _target(svc, actor, inp.user_id)))


async def get_current_segment(svc: Services, actor: Actor, inp: UserRef) -> CurrentSegment:
    p = _profile_out(await _stored_profile(svc, await _target(svc, actor, inp.user_id)))
    return CurrentSegment(
        user_id=p.user_id,
        segment=p.segment,
        intervention_type=p.intervention_type,
        rule=p.rule,
        reasons=p.reasons,
        last_updated=p.last_updated,
    )


async def get_personalized_recommendations(
    svc: Services, actor: Actor, inp: RecommendationsInput
) -> list[RecommendationOut]:
    """The ranking; what a person is shown of their own is recorded as impressions (for the
    click-through rate, and so that they may still complete an item that left the ranking)."""
    user_id = await _target(svc, actor, inp.user_id)
    async with svc.sessions() as session:
        now = svc.clock()
        ranked = await ranked_for(
            session, svc.policy, user_id, now, svc.settings.survey_valid_days, inp.limit
        )
        if ranked is None:
            raise not_found(f"no inputs for user {user_id}")
        if ranked and user_id == actor.user_id:
            await session.execute(
                insert(RecommendationEvent),
                [
                    {"user_id": user_id, "recommendation_id": r.id, "kind": "impression",
                     "created_at": now}
                    for r in ranked
                ],
            )  # fmt: skip
            await session.commit()
    return ranked


async def ranked_for(
    session: AsyncSession,
    policy: Policy,
    user_id: int,
    now: datetime,
    survey_valid_days: int,
    limit: int,
) -> list[RecommendationOut] | None:
    """The user's ranking now (without what they dismissed or completed); None without
    inputs. The one ranking the API shows and a change of segment announces."""
    row = await session.get(EmployeeInputs, user_id)
    if row is None:
        return None
    excluded = set(
        await session.scalars(
            select(RecommendationEvent.recommendation_id).where(
                RecommendationEvent.user_id == user_id,
                RecommendationEvent.kind.in_(("dismissed", "completed")),
            )
        )
    )
    inputs = Inputs.from_records([input_record(row, now, survey_valid_days)])
    profiles = score(inputs, policy)
    ranked = rank_recommendations(inputs, profiles, 0, excluded=excluded, limit=limit)
    return [
        RecommendationOut(
            id=r.item.id,
            rank=r.rank,
            title=r.item.title,
            description=r.item.description,
            category=r.item.category,
            reason=r.reason,
        )
        for r in ranked
    ]


def input_record(row: EmployeeInputs, now: datetime, survey_valid_days: int) -> dict[str, Any]:
    """A stored input row as the engine's camelCase record (stale surveys dropped)."""
    survey_recent = row.survey_at is not None and (now - row.survey_at).days < survey_valid_days
    return {
        "monthlyIncome": row.monthly_income,
        "monthlySpending": row.monthly_spending,
        "savingsBalance": row.savings_balance,
        "monthlyDebtPayments": row.monthly_debt_payments,
        "ewaAdvances30d": row.ewa_advances_30d,
        "alerts30d": row.alerts_30d,
        "surveyScore": row.survey_score if survey_recent else None,
        "activeDays30d": row.active_days_30d,
        "goalsCompleted90d": row.goals_completed_90d,
        "lessonsCompleted90d": row.lessons_completed_90d,
        "treePoints": row.tree_points,
    }


async def _data_version(svc: Services) -> Any:
    """What cached statistics depend on: the newest profile write and who is inactive.

    Both are one index probe: ``MAX(lastUpdated)`` moves with any recompute that writes a row
    (from any process), the inactive count with any (de)activation.
    """
    async with svc.sessions() as session:
        newest = await session.scalar(select(func.max(EmployeeSegment.last_updated)))
        inactive = await session.scalar(
            select(func.count()).select_from(User).where(User.is_active.is_(False))
        )
    return (newest, inactive)


async def _grouped(svc: Services, column: Any, where: Any = None) -> dict[str, int]:
    stmt = select(column, func.count()).group_by(column)
    if where is not None:
        stmt = stmt.where(where)
    async with svc.sessions() as session:
        return {str(k): int(v) for k, v in (await session.execute(stmt)).all()}


def _distribution(counts: dict[str, int], names: tuple[str, ...]) -> Distribution:
    total = sum(counts.values())
    return Distribution(
        total=total,
        buckets=[
            Bucket(
                name=name,
                count=counts.get(name, 0),
                percentage=round(100 * counts.get(name, 0) / total, 2) if total else 0.0,
            )
            for name in names
        ],
    )


async def get_segment_distribution(svc: Services, actor: Actor, inp: Empty) -> Distribution:
    actor.require_admin()
    return await _cached(svc, "segments")  # type: ignore[no-any-return]


async def get_risk_distribution(svc: Services, actor: Actor, inp: Empty) -> Distribution:
    actor.require_admin()
    return await _cached(svc, "risk")  # type: ignore[no-any-return]


async def get_segment_stats(svc: Services, actor: Actor, inp: SegmentInput) -> SegmentStats:
    actor.require_admin()
    return await _cached(svc, ("stats", inp.segment))  # type: ignore[no-any-return]


StatsKey = str | tuple[Any, ...]


async def _cached(svc: Services, key: StatsKey) -> Any:
    return await svc.stats_cache.get(key, await _data_version(svc), _statistic(svc, key))


def _statistic(svc: Services, key: StatsKey) -> Callable[[], Awaitable[Any]]:
    """How the cached statistic ``key`` is computed: ``"segments"``, ``"risk"``,
    ``("stats", segment)`` or ``("targets", segment, campaign type, rising-risk day)``."""
    match key:
        case "segments":
            return lambda: _segment_distribution(svc)
        case "risk":
            return lambda: _risk_distribution(svc)
        case ("stats", segment):
            return lambda: _segment_stats(svc, segment)
        case ("targets", segment, campaign_type, rising):
            return lambda: _target_count(svc, segment, campaign_type, rising)
    raise ValueError(f"no statistic {key!r}")


async def _segment_distribution(svc: Services) -> Distribution:
    return _distribution(await _grouped(svc, EmployeeSegment.segment), SEGMENTS)


async def _risk_distribution(svc: Services) -> Distribution:
    counts = await _grouped(svc, EmployeeSegment.risk_level)
    return _distribution(counts, tuple(reversed(RISK_LEVELS)))


async def _segment_stats(svc: Services, segment: str) -> SegmentStats:
    where = EmployeeSegment.segment == segment
    async with svc.sessions() as session:
        count, wellness, fwi, engagement = (
            await session.execute(
                select(
                    func.count(),
                    func.avg(EmployeeSegment.wellness_score),
                    func.avg(EmployeeSegment.fwi_score),
                    func.avg(EmployeeSegment.engagement_score),
                ).where(where)
            )
        ).one()
        total = await session.scalar(select(func.count()).select_from(EmployeeSegment))
    risk = await _grouped(svc, EmployeeSegment.risk_level, where)
    spending = await _grouped(svc, EmployeeSegment.spending_level, where)
    rule = next(r for r in svc.policy.rules if r.segment == segment)
    return SegmentStats(
        segment=segment,
        count=int(count),
        percentage=round(100 * count / total, 2) if total else 0.0,
        avg_wellness_score=None if wellness is None else round(float(wellness), 2),
        avg_fwi_score=None if fwi is None else round(float(fwi), 2),
        avg_engagement_score=None if engagement is None else round(float(engagement), 2),
        risk_distribution={r: risk.get(r, 0) for r in RISK_LEVELS},
        spending_distribution={s: spending.get(s, 0) for s in SPENDING_LEVELS},
        intervention_type=rule.intervention_type,
    )


async def _target_count(
    svc: Services, segment: str, campaign_type: CampaignType, rising: date | None
) -> int:
    async with svc.sessions() as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(EmployeeSegment)
                .join(User, User.id == EmployeeSegment.user_id)
                .where(*target_filter(segment, campaign_type, rising))
            )
            or 0
        )


async def warm_statistics(svc: Services) -> int:
    """Compute the admin statistics into this process's cache now: both distributions, every
    segment's stats and the campaign-target totals asked for before. Concurrent calls share
    one run that starts after the last call; returns how many statistics were computed."""
    return await svc.stats_cache.warm(lambda: _warm(svc))


async def _warm(svc: Services) -> int:
    version = await _data_version(svc)
    keys: list[StatsKey] = ["segments", "risk", *(("stats", s) for s in SEGMENTS)]
    keys += [k for k in svc.stats_cache.keys() if isinstance(k, tuple) and k[0] == "targets"]
    for key in keys:
        await svc.stats_cache.refresh(key, version, _statistic(svc, key))
    return len(keys)


async def get_segment_employees(
    svc: Services, actor: Actor, inp: SegmentEmployeesInput
) -> SegmentEmployeesPage:
    actor.require_admin()
    after = decode_cursor(inp.cursor)
    stmt = (
        select(EmployeeSegment, User)
        .join(User, User.id == EmployeeSegment.user_id)
        .where(EmployeeSegment.segment == inp.segment)
        .order_by(EmployeeSegment.user_id)
        .limit(inp.limit)
    )
    if after is not None:
        stmt = stmt.where(EmployeeSegment.user_id > after)
    async with svc.sessions() as session:
        rows = (await session.execute(stmt)).all()
    items = [
        SegmentEmployee(
            user_id=seg.user_id,
            name=user.name,
            email=user.email,
            department=user.department,
            wellness_score=float(seg.wellness_score or 0),
            fwi_score=float(seg.fwi_score or 0),
            engagement_score=float(seg.engagement_score or 0),
            risk_level=seg.risk_level or "",
            spending_level=seg.spending_level or "",
        )
        for seg, user in rows
    ]
    return SegmentEmployeesPage(
        items=items, next_cursor=page_cursor([i.user_id for i in items], inp.limit)
    )


async def get_intervention_recommendations(
    svc: Services, actor: Actor, inp: SegmentInput
) -> InterventionRecommendations:
    actor.require_admin()
    counts = await _grouped(svc, EmployeeSegment.segment)
    rule = next(r for r in svc.policy.rules if r.segment == inp.segment)
    themed = sorted(
        (item for item in CATALOG if inp.segment in item.segments),
        key=lambda item: (-item.priority, item.id),
    )
    return InterventionRecommendations(
        segment=inp.segment,
        intervention_type=rule.intervention_type,
        employee_count=counts.get(inp.segment, 0),
        actions=INTERVENTION_ACTIONS[inp.segment],
        recommendations=[
            RecommendationOut(
                id=item.id,
                rank=k,
                title=item.title,
                description=item.description,
                category=item.category,
                reason=f"segment:{inp.segment}",
            )
            for k, item in enumerate(themed, start=1)
        ],
    )


async def get_campaign_targets(
    svc: Services, actor: Actor, inp: CampaignTargetsInput
) -> CampaignTargets:
    """The active members of the segment that ``campaignType`` takes (its rule in
    ``services/campaigns/sending.py``: who, and in which order a campaign sends), paged by user
    id."""
    actor.require_admin()
    after = decode_cursor(inp.cursor)
    rising = svc.clock().date() if inp.rising_risk else None
    where = target_filter(inp.segment, inp.campaign_type, rising)
    stmt = (
        select(EmployeeSegment.user_id)
        .join(User, User.id == EmployeeSegment.user_id)
        .where(*where)
        .order_by(EmployeeSegment.user_id)
        .limit(inp.limit)
    )
    if after is not None:
        stmt = stmt.where(EmployeeSegment.user_id > after)
    async with svc.sessions() as session:
        ids = list(await session.scalars(stmt))

    count = await _cached(svc, ("targets", inp.segment, inp.campaign_type, rising))
    return CampaignTargets(
        segment=inp.segment,
        campaign_type=inp.campaign_type,
        total=count,
        items=ids,
        next_cursor=page_cursor(ids, inp.limit),
    )


async def run_recompute(svc: Services, user_ids: list[int] | None) -> RecomputeResult:
    """Recompute off the event loop; the segment changes it committed to the outbox are
    relayed at once. The admin statistics are computed again: before this returns after a
    recompute of everyone (so the next request is served fresh from memory), in the background
    after one of some people."""
    result = await anyio.to_thread.run_sync(
        lambda: recompute(
            svc.bulk_engine,
            svc.policy,
            now=svc.clock(),
            survey_valid_days=svc.settings.survey_valid_days,
            user_ids=user_ids,
        )
    )
    if len(result.moves.user_id):
        svc.relay.wake()
    if result.written and user_ids is not None:
        # A few people (an input update, a survey): their caller does not wait for every
        # statistic to be computed again (3 s at 1M people); requests meanwhile get the old
        # values.
        svc.stats_cache.warm_in_background(lambda: _warm(svc))
    elif result.written:
        try:
            await warm_statistics(svc)
        except Exception:  # the recompute is committed; requests refresh what is stale
            log.exception("warming the admin statistics after a recompute failed")
    return result


async def bulk_update_segments(svc: Services, actor: Actor, inp: Empty) -> RecomputeOut:
    """Admin: recompute everyone's profile (``recompute --all``), audited with what it did."""
    actor.require_admin()
    result = await run_recompute(svc, None)
    out = RecomputeOut(
        scored=result.scored,
        written=result.written,
        segment_changes=len(result.segment_changes),
        seconds=round(result.timings.get("total", 0.0), 3),
    )
    async with svc.sessions() as session:
        session.add(
            AuditLog(
                actor_id=actor.user_id,
                action="segmentation.bulkUpdateSegments",
                target="segments",
                detail=out.model_dump(by_alias=True, exclude={"seconds"}),
                created_at=svc.clock(),
            )
        )
        await session.commit()
    return out


async def recompute_my_profile(svc: Services, actor: Actor, inp: Empty) -> WellnessProfile:
    """An employee asks for a fresh profile: at most ``TREEVU_RECOMPUTE_PER_DAY`` a day."""
    retry_after = await svc.limits.user_recompute(actor.user_id)
    if retry_after is not None:
        raise ServiceError(
            "TOO_MANY_REQUESTS",
            f"your profile can be recomputed {svc.settings.recompute_per_day} time(s) a day; "
            f"retry in {retry_after}s",
            retry_after=retry_after,
        )
    result = await run_recompute(svc, [actor.user_id])
    if result.scored == 0:
        raise not_found(f"no inputs for user {actor.user_id}")
    return await get_wellness_profile(svc, actor, UserRef())


async def get_policy(svc: Services, actor: Actor, inp: Empty) -> dict[str, Any]:
    actor.require_admin()
    return svc.policy.public()
