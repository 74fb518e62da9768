"""``campaigns.*`` operations (SPEC §9 Campaigns), for both transports; admins only, audited."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import ColumnElement, and_, case, exists, func, or_, select, update

from treevu.db import (
    AuditLog,
    Campaign,
    CampaignDelivery,
    NotificationQueue,
    RecommendationEvent,
    SurveyResponse,
)
from treevu.db.base import add_days
from treevu.notifications.wire import check_text
from treevu.segmentation.policy import SegmentName
from treevu.services.bounds import MAX_INT, RowId
from treevu.services.campaigns.sending import CampaignType, arms, epoch_ms
from treevu.services.campaigns.templates import check_template
from treevu.services.context import Actor, Services
from treevu.services.errors import ServiceError, bad_request, not_found
from treevu.services.segmentation.queries import newest_first, page_cursor

Status = Literal["scheduled", "running", "paused", "completed", "cancelled"]
ConversionEvent = Literal["recommendation_completed", "survey_answered"]
#: How far in the past ``startAt`` may be (clock skew between the admin and the server).
START_SKEW: Final = timedelta(seconds=60)


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _template(name: str, value: str) -> str:
    check_text(name, value)
    try:
        return check_template(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


class Variant(Model):
    title: str = Field(min_length=1, max_length=255)
    message: str = Field(min_length=1, max_length=10_000)

    @field_validator("title", "message")
    @classmethod
    def _known_placeholders(cls, value: str, info: Any) -> str:
        return _template(str(info.field_name), value)


class CampaignCreate(Variant):
    name: str = Field(min_length=1, max_length=255)
    segment: SegmentName
    campaign_type: CampaignType = Field(alias="campaignType")
    start_at: datetime | None = Field(default=None, alias="startAt")
    pace_per_minute: int | None = Field(default=None, alias="pacePerMinute", gt=0, le=MAX_INT)
    variants: list[Variant] | None = Field(default=None, min_length=1, max_length=4)
    conversion_event: ConversionEvent = Field(
        default="recommendation_completed", alias="conversionEvent"
    )
    conversion_days: int = Field(default=7, alias="conversionDays", ge=1, le=365)
    rising_risk: bool = Field(
        default=False, alias="risingRisk",
        description="only members whose crisis risk rose by 0.05 or more since last month",
    )  # fmt: skip


class CampaignRef(Model):
    campaign_id: RowId = Field(alias="campaignId")


class CampaignListInput(Model):
    status: Status | None = None
    cursor: str | None = None
    limit: int = Field(default=50, ge=1, le=200)


class CampaignOut(Model):
    id: int
    name: str
    segment: str
    campaign_type: str = Field(alias="campaignType")
    title: str
    message: str
    variants: list[Variant] | None
    status: str
    pace_per_minute: int = Field(alias="pacePerMinute")
    start_at: datetime | None = Field(alias="startAt")
    started_at: datetime | None = Field(alias="startedAt")
    completed_at: datetime | None = Field(alias="completedAt")
    conversion_event: str = Field(alias="conversionEvent")
    conversion_days: int = Field(alias="conversionDays")
    created_by: int | None = Field(alias="createdBy")
    created_at: datetime = Field(alias="createdAt")
    rising_risk: bool = Field(alias="risingRisk")
    targeted: int
    sent: int


class CampaignPage(Model):
    items: list[CampaignOut]
    next_cursor: str | None = Field(alias="nextCursor")


class Counts(Model):
    targeted: int = 0
    sent: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    converted: int = 0


class CampaignStats(Counts):
    by_segment: dict[str, Counts] = Field(alias="bySegment")
    by_variant: dict[str, Counts] = Field(alias="byVariant")


async def _progress(svc: Services, ids: list[int]) -> dict[int, tuple[int, int]]:
    """campaign id → (targets frozen, notifications sent)."""
    if not ids:
        return {}
    d = CampaignDelivery
    async with svc.sessions() as session:
        rows = (
            await session.execute(
                select(d.campaign_id, d.status, func.count())
                .where(d.campaign_id.in_(ids))
                .group_by(d.campaign_id, d.status)
            )
        ).all()
    out: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for cid, status, n in rows:
        out[int(cid)][0] += int(n)
        if status == "sent":
            out[int(cid)][1] += int(n)
    return {cid: (v[0], v[1]) for cid, v in out.items()}


def _out(c: Campaign, progress: dict[int, tuple[int, int]]) -> CampaignOut:
    targeted, sent = progress.get(c.id, (0, 0))
    return CampaignOut(
        id=c.id,
        name=c.name,
        segment=c.segment,
        campaign_type=c.campaign_type,
        title=c.title,
        message=c.message,
        variants=[Variant.model_validate(v) for v in c.variants] if c.variants else None,
        status=c.status,
        pace_per_minute=c.pace_per_minute,
        start_at=c.start_at,
        started_at=c.started_at,
        completed_at=c.completed_at,
        conversion_event=c.conversion_event,
        conversion_days=c.conversion_days,
        created_by=c.created_by,
        created_at=c.created_at,
        rising_risk=bool(c.rising_risk),
        targeted=targeted,
        sent=sent,
    )


def _audit(actor: Actor, action: str, campaign_id: int, now: datetime, **detail: Any) -> AuditLog:
    return AuditLog(
        actor_id=actor.user_id,
        action=f"campaign.{action}",
        target=f"campaign:{campaign_id}",
        detail=detail,
        created_at=now,
    )


async def create_campaign(svc: Services, actor: Actor, inp: CampaignCreate) -> CampaignOut:
    """Schedule a campaign: it starts at ``startAt`` (now when absent), when the pacing job
    freezes its targets; it sends ``pacePerMinute`` a minute (default and ceiling: the admin
    limit)."""
    actor.require_admin()
    now = svc.clock()
    if inp.start_at is not None:
        start = inp.start_at if inp.start_at.tzinfo else inp.start_at.replace(tzinfo=now.tzinfo)
        if start < now - START_SKEW:
            raise bad_request("startAt", f"{start.isoformat()} is in the past")
    else:
        start = None
    limit = svc.settings.admin_notifications_per_minute
    if inp.pace_per_minute is not None and inp.pace_per_minute > limit:
        raise bad_request("pacePerMinute", f"at most the admin limit, {limit} a minute")
    async with svc.sessions() as session:
        campaign = Campaign(
            name=inp.name,
            segment=inp.segment,
            campaign_type=inp.campaign_type,
            title=inp.title,
            message=inp.message,
            variants=[v.model_dump() for v in inp.variants] if inp.variants else None,
            status="scheduled",
            pace_per_minute=inp.pace_per_minute or limit,
            start_at=start,
            conversion_event=inp.conversion_event,
            conversion_days=inp.conversion_days,
            rising_risk=inp.rising_risk,
            created_by=actor.user_id,
            created_at=now,
        )
        session.add(campaign)
        await session.flush()
        session.add(_audit(actor, "create", campaign.id, now, name=inp.name, segment=inp.segment))
        await session.commit()
        await session.refresh(campaign)  # as stored (MariaDB keeps whole seconds), as `get` reads
        return _out(campaign, {})


async def list_campaigns(svc: Services, actor: Actor, inp: CampaignListInput) -> CampaignPage:
    """Newest first."""
    actor.require_admin()
    stmt = newest_first(select(Campaign), Campaign.id, inp.cursor, inp.limit)
    if inp.status is not None:
        stmt = stmt.where(Campaign.status == inp.status)
    async with svc.sessions() as session:
        rows = list(await session.scalars(stmt))
    progress = await _progress(svc, [c.id for c in rows])
    return CampaignPage(
        items=[_out(c, progress) for c in rows],
        next_cursor=page_cursor([c.id for c in rows], inp.limit),
    )


async def get_campaign(svc: Services, actor: Actor, inp: CampaignRef) -> CampaignOut:
    actor.require_admin()
    async with svc.sessions() as session:
        campaign = await session.get(Campaign, inp.campaign_id)
    if campaign is None:
        raise not_found(f"campaignId: no campaign {inp.campaign_id}")
    return _out(campaign, await _progress(svc, [campaign.id]))


#: action → (statuses it applies to, the status it leaves).
TRANSITIONS: Final[dict[str, tuple[tuple[str, ...], str]]] = {
    "pause": (("scheduled", "running"), "paused"),
    "resume": (("paused",), "running"),
    "cancel": (("scheduled", "running", "paused"), "cancelled"),
}


async def _transition(svc: Services, actor: Actor, inp: CampaignRef, action: str) -> CampaignOut:
    actor.require_admin()
    allowed, to = TRANSITIONS[action]
    async with svc.sessions() as session:
        campaign = await session.get(Campaign, inp.campaign_id)
        if campaign is None:
            raise not_found(f"campaignId: no campaign {inp.campaign_id}")
        now = svc.clock()
        target = to
        if action == "resume" and campaign.started_at is None:
            target = "scheduled"  # paused before it started: it starts when due
        values: dict[str, Any] = {"status": target}
        if target == "running":
            values["paced_until_ms"] = epoch_ms(now)  # a pause does not save up a burst
        moved = await session.execute(
            update(Campaign)
            .where(Campaign.id == campaign.id, Campaign.status.in_(allowed))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            await session.refresh(campaign)
            raise ServiceError(
                "CONFLICT",
                f"campaignId: a {campaign.status} campaign cannot be {action}d"
                if action != "cancel"
                else f"campaignId: a {campaign.status} campaign cannot be cancelled",
                field="campaignId",
            )
        if action == "cancel":
            await session.execute(
                update(CampaignDelivery)
                .where(
                    CampaignDelivery.campaign_id == campaign.id,
                    CampaignDelivery.status == "queued",
                )
                .values(status="cancelled")
            )
        session.add(_audit(actor, action, campaign.id, now))
        await session.commit()
        await session.refresh(campaign)
    return _out(campaign, await _progress(svc, [campaign.id]))


async def pause_campaign(svc: Services, actor: Actor, inp: CampaignRef) -> CampaignOut:
    return await _transition(svc, actor, inp, "pause")


async def resume_campaign(svc: Services, actor: Actor, inp: CampaignRef) -> CampaignOut:
    return await _transition(svc, actor, inp, "resume")


async def cancel_campaign(svc: Services, actor: Actor, inp: CampaignRef) -> CampaignOut:
    return await _transition(svc, actor, inp, "cancel")


def converted_within(campaign: Campaign) -> ColumnElement[bool]:
    """A delivery whose person did the campaign's conversion event within ``conversionDays``
    after it was sent."""
    d = CampaignDelivery
    end = add_days(d.sent_at, campaign.conversion_days)
    if campaign.conversion_event == "survey_answered":
        r = SurveyResponse
        happened = exists().where(
            r.user_id == d.user_id, r.created_at >= d.sent_at, r.created_at <= end
        )
    else:
        e = RecommendationEvent
        happened = exists().where(
            e.user_id == d.user_id,
            e.kind == "completed",
            e.created_at >= d.sent_at,
            e.created_at <= end,
        )
    return and_(d.status == "sent", d.sent_at.is_not(None), happened)


async def variant_counts(svc: Services, campaign_id: int) -> dict[int, tuple[int, int]]:
    """variant → (sent, converted), counted as ``get_stats`` counts them (no join to the
    inbox: what an experiment needs, cheaper)."""
    d = CampaignDelivery
    async with svc.sessions() as session:
        campaign = await session.get(Campaign, campaign_id)
        if campaign is None:
            raise not_found(f"campaignId: no campaign {campaign_id}")
        found = await session.execute(
            select(
                d.variant,
                func.sum(case((d.status == "sent", 1), else_=0)),
                func.sum(case((converted_within(campaign), 1), else_=0)),
            )
            .where(d.campaign_id == campaign_id)
            .group_by(d.variant)
        )
        return {int(v): (int(sent or 0), int(conv or 0)) for v, sent, conv in found.all()}


async def get_stats(svc: Services, actor: Actor, inp: CampaignRef) -> CampaignStats:
    """targeted, sent, delivered (acknowledged by a client, or read), opened (read), clicked,
    converted (the campaign's conversion event within ``conversionDays`` after it was sent),
    overall, by segment (at the time of targeting) and by variant — counted by the database,
    one row per (segment, variant)."""
    actor.require_admin()
    d, q = CampaignDelivery, NotificationQueue
    async with svc.sessions() as session:
        campaign = await session.get(Campaign, inp.campaign_id)
        if campaign is None:
            raise not_found(f"campaignId: no campaign {inp.campaign_id}")
        sent = d.status == "sent"
        flags = {
            "sent": sent,
            "delivered": and_(
                sent, or_(q.status.in_(("delivered", "read")), q.read_at.is_not(None))
            ),
            "opened": and_(sent, q.read_at.is_not(None)),
            "clicked": and_(sent, q.clicked_at.is_not(None)),
            "converted": converted_within(campaign),
        }
        rows = (
            await session.execute(
                select(
                    d.segment,
                    d.variant,
                    func.count(),
                    *(func.sum(case((flag, 1), else_=0)) for flag in flags.values()),
                )
                .outerjoin(q, q.id == d.notification_id)
                .where(d.campaign_id == campaign.id)
                .group_by(d.segment, d.variant)
            )
        ).all()
    overall = Counts()
    by_segment: dict[str, Counts] = defaultdict(Counts)
    by_variant: dict[str, Counts] = {str(k): Counts() for k in range(len(arms(campaign)))}
    for segment, variant, targeted, *counted in rows:
        values = {
            "targeted": int(targeted),
            **{k: int(v or 0) for k, v in zip(flags, counted, strict=True)},
        }
        for c in (overall, by_segment[str(segment)], by_variant.setdefault(str(variant), Counts())):
            for name, n in values.items():
                setattr(c, name, getattr(c, name) + n)
    return CampaignStats(**overall.model_dump(), by_segment=dict(by_segment), by_variant=by_variant)
