"""Starting and pacing campaigns: the ``campaigns.pace`` job's work.

**Start.** A scheduled campaign whose time has come turns ``running`` and its targets are
frozen — one ``campaign_deliveries`` row per person, in sending order, with their variant —
in one transaction guarded by ``status = 'scheduled'``: whatever crashes, a campaign's targets
are frozen once.

**Pace.** Each running campaign has a budget: ``pacedUntil`` is the time sending is paid up
to, and every notification sent moves it on by 60 / pace seconds, so at most ``pace`` go out a
minute (the campaign's ``pacePerMinute`` within the admin limit), and a paused or idle campaign
does not save up a burst (at most one minute's worth). A batch is one transaction: claim
the next queued rows in order (``queued`` → ``sending``, the row count proving the claim, so
two nodes never take the same row), store their notifications through the durable write path
(``NotificationStore.write``), mark the rows ``sent`` with their notification id — or
``muted`` — and move ``pacedUntil``. A process killed mid-batch leaves the batch whole or
absent: no target is skipped and none gets two notifications.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final, Literal, cast

from sqlalchemy import (
    ColumnElement,
    Integer,
    Table,
    bindparam,
    case,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from treevu.db import (
    Campaign,
    CampaignDelivery,
    EmployeeInputs,
    EmployeeSegment,
    ProfileSnapshot,
    User,
)
from treevu.services.analytics.cube import add_months, month_of
from treevu.services.campaigns.templates import placeholders_of, render, segment_name
from treevu.services.context import Services
from treevu.services.notifications.preferences import unmuted
from treevu.services.notifications.store import NewNotification
from treevu.services.rewards.tiers import load_tiers, tier_of

log = logging.getLogger(__name__)

CampaignType = Literal["retention", "engagement", "education", "intervention", "promotion"]
#: Targets claimed and sent per transaction.
BATCH: Final = 2000
_S = EmployeeSegment
_D = CampaignDelivery
_DELIVERIES: Final = cast(Table, CampaignDelivery.__table__)


@dataclass(frozen=True, slots=True)
class TargetRule:
    """Which members of the segment a campaign type takes, and in which order they are sent."""

    description: str
    where: ColumnElement[bool] | None
    order: tuple[Any, ...]


#: What each ``campaignType`` does (also what ``segmentation.getCampaignTargets`` lists).
TARGET_RULES: Final[dict[CampaignType, TargetRule]] = {
    "retention": TargetRule(
        "every member, least engaged first", None, (_S.engagement_score.asc(), _S.user_id)
    ),
    "engagement": TargetRule(
        "members with an engagement score under 50, least engaged first",
        _S.engagement_score < 50,
        (_S.engagement_score.asc(), _S.user_id),
    ),
    "education": TargetRule(
        "members at medium risk or worse, lowest FWI first",
        _S.risk_level.in_(("medium", "high", "critical")),
        (_S.fwi_score.asc(), _S.user_id),
    ),
    "intervention": TargetRule(
        "members at high or critical risk, lowest FWI first",
        _S.risk_level.in_(("high", "critical")),
        (_S.fwi_score.asc(), _S.user_id),
    ),
    "promotion": TargetRule(
        "every member, highest wellness first", None, (_S.wellness_score.desc(), _S.user_id)
    ),
}


#: "Rising risk": the crisis risk rose by at least this since last month's snapshot.
RISING_BY: Final = 0.05


def rising_risk(today: date) -> ColumnElement[bool]:
    """Members whose ``crisisRisk30d`` rose by :data:`RISING_BY` or more since the snapshot of
    the month before ``today``'s (people without one, or without a model, are not rising)."""
    last = add_months(month_of(today), -1)
    p = ProfileSnapshot
    return exists().where(
        p.user_id == _S.user_id,
        p.month == last,
        p.crisis_risk_30d.is_not(None),
        # Risks are stored to 4 decimals; half a unit of the last keeps 0.25 − 0.20 rising
        # where floating point makes it 0.04999….
        _S.crisis_risk_30d - p.crisis_risk_30d >= RISING_BY - 0.00005,
    )


def target_filter(
    segment: str, campaign_type: CampaignType, rising: date | None = None
) -> list[ColumnElement[bool]]:
    """The conditions on ``employee_segments`` (joined to active users) of these targets;
    ``rising``: only those whose risk rose since the month before this day's."""
    rule = TARGET_RULES[campaign_type]
    where = [_S.segment == segment, User.is_active.is_(True)]
    if rule.where is not None:
        where.append(rule.where)
    if rising is not None:
        where.append(rising_risk(rising))
    return where


def arms(campaign: Campaign) -> list[tuple[str, str]]:
    """The (title, message) pairs people are split among: the variants, or the one message."""
    if campaign.variants:
        return [(str(v["title"]), str(v["message"])) for v in campaign.variants]
    return [(campaign.title, campaign.message)]


def variant_of(campaign_id: int, user_id: int, arms_count: int) -> int:
    """A person's variant: fixed for the campaign, independent of id order and of other
    campaigns (a hash, not ``userId % n``)."""
    if arms_count <= 1:
        return 0
    digest = hashlib.blake2b(f"{campaign_id}:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % arms_count


async def freeze(session: AsyncSession, campaign: Campaign, today: date) -> int:
    """Write the campaign's targets in sending order; their count."""
    rule = TARGET_RULES[campaign.campaign_type]  # type: ignore[index]
    rising = today if campaign.rising_risk else None
    found = (
        await session.execute(
            select(_S.user_id, _S.segment)
            .join(User, User.id == _S.user_id)
            .where(*target_filter(campaign.segment, campaign.campaign_type, rising))  # type: ignore[arg-type]
            .order_by(*rule.order)
        )
    ).all()
    n = len(arms(campaign))
    rows = [
        {
            "campaignId": campaign.id,
            "userId": int(uid),
            "segment": str(segment),
            "status": "queued",
            "position": k,
            "variant": variant_of(campaign.id, int(uid), n),
        }
        for k, (uid, segment) in enumerate(found)
    ]
    connection = await session.connection()  # Core executemany: no ORM work per row
    for start in range(0, len(rows), 5000):
        await connection.execute(insert(_DELIVERIES), rows[start : start + 5000])
    return len(rows)


async def start_due(svc: Services) -> int:
    """Start every scheduled campaign whose time has come; how many started."""
    now = svc.clock()
    async with svc.sessions() as session:
        due = list(
            await session.scalars(
                select(Campaign.id).where(
                    Campaign.status == "scheduled",
                    (Campaign.start_at.is_(None)) | (Campaign.start_at <= now),
                )
            )
        )
    started = 0
    for cid in due:
        async with svc.sessions() as session:
            moved = await session.execute(
                update(Campaign)
                .where(Campaign.id == cid, Campaign.status == "scheduled")
                .values(status="running", started_at=now, paced_until_ms=epoch_ms(now))
                .execution_options(synchronize_session=False)
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                continue  # another node started it
            campaign = await session.get(Campaign, cid)
            assert campaign is not None
            targets = await freeze(session, campaign, now.date())
            await session.commit()
        log.info("campaign %d started: %d targets", cid, targets)
        started += 1
    return started


async def send_due(svc: Services, campaign_id: int) -> int:
    """Send what ``campaign_id``'s budget allows now, batch by batch; how many were sent."""
    total = 0
    while True:
        sent = await _send_batch(svc, campaign_id)
        if sent <= 0:
            return total
        total += sent


async def _send_batch(svc: Services, campaign_id: int) -> int:
    """One batch in one transaction: > 0 sent (or muted); 0 nothing due; -1 finished."""
    store = svc.store
    async with svc.sessions() as session:
        # Lock the campaign first (a row lock; SQLite's write lock): batches of one campaign
        # run one at a time on any number of nodes, each reading the budget the last one left.
        locked = await session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.status == "running")
            .values(paced_until_ms=Campaign.paced_until_ms)
            .execution_options(synchronize_session=False)
        )
        if locked.rowcount != 1:  # type: ignore[attr-defined]
            return 0
        campaign = await session.get(Campaign, campaign_id, populate_existing=True)
        assert campaign is not None
        now = svc.clock()
        pace = min(campaign.pace_per_minute, svc.settings.admin_notifications_per_minute)
        now_ms = epoch_ms(now)
        # At most one minute's worth saved up (an idle or slow job never causes a burst).
        paid = max(campaign.paced_until_ms or now_ms, now_ms - 60_000)
        budget = (now_ms - paid) * pace // 60_000
        if budget <= 0:
            return 0
        picked = (
            await session.execute(
                select(_D.id, _D.user_id, _D.segment, _D.variant)
                .where(_D.campaign_id == campaign_id, _D.status == "queued")
                .order_by(_D.position)
                .limit(min(budget, BATCH))
                .with_for_update(skip_locked=True)
            )
        ).all()
        if not picked:
            left = await session.scalar(
                select(func.count())
                .select_from(_D)
                .where(_D.campaign_id == campaign_id, _D.status.in_(("queued", "sending")))
            )
            if not left:
                await session.execute(
                    update(Campaign)
                    .where(Campaign.id == campaign_id, Campaign.status == "running")
                    .values(status="completed", completed_at=now)
                )
                await session.commit()
                return -1
            return 0
        ids = [int(r[0]) for r in picked]
        claimed = await session.execute(
            update(_D)
            .where(_D.id.in_(ids), _D.status == "queued")
            .values(status="sending")
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != len(ids):  # type: ignore[attr-defined]
            await session.rollback()  # another node took some of them: try again
            return 1
        items = await _notifications(session, campaign, picked)
        wanted = await unmuted(session, items)
        kept = {id(n) for n in wanted}
        async with store.committing(session, wanted, now) as stored:
            by_item = dict(zip((id(n) for n in wanted), stored, strict=True))
            marks: list[tuple[int, int]] = []
            muted: list[int] = []
            for (did, *_), item in zip(picked, items, strict=True):
                if id(item) in kept:
                    marks.append((int(did), by_item[id(item)]))
                else:
                    muted.append(int(did))
            if marks:
                # One statement for the batch (a row each would be 2,000 round trips), built
                # once per size: making a 2,000-branch CASE cost more than the rest of a batch.
                size = _padded(len(marks))
                padded = marks + [marks[-1]] * (size - len(marks))
                params: dict[str, Any] = {"at": now}
                for k, (did, nid) in enumerate(padded):
                    params[f"d{k}"], params[f"n{k}"] = did, nid
                await session.execute(_mark_sent(size), params)
            if muted:
                await session.execute(
                    update(_D).where(_D.id.in_(muted)).values(status="muted", sent_at=now)
                )
            paid_now = min(now_ms, paid + -(-len(picked) * 60_000 // pace))
            await session.execute(
                update(Campaign).where(Campaign.id == campaign_id).values(paced_until_ms=paid_now)
            )
    return len(picked)


def _padded(n: int) -> int:
    """Batch sizes rounded up to a power of two (at most ``BATCH``): few statement shapes."""
    size = 1
    while size < n:
        size *= 2
    return min(max(size, n), max(BATCH, n))


@functools.lru_cache(maxsize=16)
def _mark_sent(size: int) -> Any:
    """``UPDATE … SET status = 'sent', notificationId = CASE id WHEN :d0 THEN :n0 … END,
    sentAt = :at WHERE id IN (:d0, …)`` for ``size`` rows (compiled once, then cached)."""
    t = _DELIVERIES
    ids = [bindparam(f"d{k}", type_=Integer) for k in range(size)]
    notices = [bindparam(f"n{k}", type_=Integer) for k in range(size)]
    return (
        update(t)
        .where(t.c.id.in_(ids))
        .values(
            status="sent",
            notificationId=case(*[(t.c.id == d, n) for d, n in zip(ids, notices, strict=True)]),
            sentAt=bindparam("at", type_=t.c.sentAt.type),
        )
    )


def epoch_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


async def _notifications(
    session: AsyncSession, campaign: Campaign, picked: Sequence[Any]
) -> list[NewNotification]:
    """Each target's notification: their variant with the placeholders filled in (names and
    balances are read only when a template asks for them)."""
    pairs = arms(campaign)
    used = placeholders_of([text for pair in pairs for text in pair])
    users = [int(r[1]) for r in picked]
    names: dict[int, str] = {}
    if "firstName" in used:
        names = dict(
            (await session.execute(select(User.id, User.name).where(User.id.in_(users)))).all()
        )
    points: dict[int, int] = {}
    tiers = await load_tiers(session) if "tierName" in used else []
    if tiers:
        points = dict(
            (
                await session.execute(
                    select(EmployeeInputs.user_id, EmployeeInputs.tree_points).where(
                        EmployeeInputs.user_id.in_(users)
                    )
                )
            ).all()
        )
    data = [{"campaignId": campaign.id, "variant": v} for v in range(len(pairs))]
    items = []
    for _, uid, segment, variant in picked:
        arm = variant if variant < len(pairs) else 0
        title, message = pairs[arm]
        if used:
            name = str(names.get(uid) or "").split()
            values = {
                "firstName": name[0] if name else "there",
                "tierName": tier_of(tiers, int(points.get(uid) or 0)).name if tiers else "",
                "segmentName": segment_name(str(segment)),
            }
            title, message = render(title, values), render(message, values)
        items.append(
            NewNotification(
                int(uid),
                "recommendation",
                title,
                message,
                data[arm],
                created_by=campaign.created_by,
            )  # fmt: skip
        )
    return items


async def pace_all(svc: Services) -> dict[str, Any]:
    """The ``campaigns.pace`` job: start what is due, then send what each budget allows."""
    started = await start_due(svc)
    async with svc.sessions() as session:
        running = list(
            await session.scalars(
                select(Campaign.id).where(Campaign.status == "running").order_by(Campaign.id)
            )
        )
    sent = 0
    for cid in running:
        sent += await send_due(svc, cid)
    result: dict[str, Any] = {"started": started, "running": len(running), "sent": sent}
    return result if started or running else {**result, "idle": True}
