"""Campaigns (SPEC §6.3, §9 Campaigns): create → frozen targets → paced sending → stats, on
SQLite, MariaDB and PostgreSQL; bad input refused with nothing stored."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.conftest import Database, LiveServer
from tests.integration.workflow import ADMIN, EMPLOYEES, As, notifications, scalar, sync_engine
from treevu.app import build_services, make_engines
from treevu.db import Campaign, CampaignDelivery, EmployeeSegment, NotificationQueue, User
from treevu.segmentation.policy import SEGMENTS
from treevu.services.campaigns import ops as C
from treevu.services.campaigns.sending import send_due, start_due, variant_of
from treevu.services.context import Actor, Services
from treevu.services.errors import ServiceError

ADMIN_ACTOR = Actor(ADMIN, "admin")


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def services(seeded: Database) -> AsyncIterator[tuple[Services, Clock]]:
    settings = seeded.settings(admin_notifications_per_minute=1_000_000)
    async_engine, bulk = make_engines(settings)
    clock = Clock()
    svc = dataclasses.replace(build_services(settings, async_engine, bulk), clock=clock)
    await svc.open()
    try:
        yield svc, clock
    finally:
        await svc.close()
        await async_engine.dispose()
        bulk.dispose()


def biggest_segment(db: Database) -> tuple[str, int]:
    counts = {
        s: int(
            scalar(
                db,
                select(func.count())
                .select_from(EmployeeSegment)
                .join(User, User.id == EmployeeSegment.user_id)
                .where(EmployeeSegment.segment == s, User.is_active.is_(True)),
            )
        )
        for s in SEGMENTS
    }
    segment = max(counts, key=lambda s: counts[s])
    return segment, counts[segment]


def _statuses(db: Database, cid: int) -> dict[str, int]:
    engine = sync_engine(db)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(CampaignDelivery.status, func.count())
                .where(CampaignDelivery.campaign_id == cid)
                .group_by(CampaignDelivery.status)
            ).all()
    finally:
        engine.dispose()
    return {str(s): int(n) for s, n in rows}


async def test_sending_keeps_the_pace_and_sends_each_target_once(
    services: tuple[Services, Clock], seeded: Database
) -> None:
    svc, clock = services
    segment, size = biggest_segment(seeded)
    campaign = await C.create_campaign(
        svc,
        ADMIN_ACTOR,
        C.CampaignCreate.model_validate(
            {
                "name": "spring savings",
                "segment": segment,
                "campaignType": "retention",
                "title": "Hi {firstName}",
                "message": "As one of our {segmentName}, at tier {tierName}: save more.",
                "pacePerMinute": 600,
            }
        ),
    )
    assert campaign.status == "scheduled" and campaign.targeted == 0
    assert await start_due(svc) == 1
    assert await start_due(svc) == 0  # frozen once
    assert _statuses(seeded, campaign.id) == {"queued": size}

    assert await send_due(svc, campaign.id) == 0  # no time has passed: no budget
    clock.advance(1)
    assert await send_due(svc, campaign.id) == 10  # 600 a minute
    clock.advance(0.5)
    assert await send_due(svc, campaign.id) == 5
    clock.advance(3600)  # an hour idle saves up one minute's worth, not sixty
    assert await send_due(svc, campaign.id) == min(600, size - 15)
    while _statuses(seeded, campaign.id).get("queued"):
        clock.advance(60)
        await send_due(svc, campaign.id)
    clock.advance(1)
    await send_due(svc, campaign.id)
    got = await C.get_campaign(svc, ADMIN_ACTOR, C.CampaignRef(campaign_id=campaign.id))
    assert got.status == "completed" and got.targeted == size
    assert _statuses(seeded, campaign.id).get("queued", 0) == 0
    # One notification per target, each rendered for its person, in the targets' order.
    async with svc.sessions() as session:
        rows = (
            await session.execute(
                select(CampaignDelivery.user_id, NotificationQueue.title, CampaignDelivery.position)
                .join(NotificationQueue, NotificationQueue.id == CampaignDelivery.notification_id)
                .where(CampaignDelivery.campaign_id == campaign.id)
                .order_by(NotificationQueue.id)
            )
        ).all()
        names = dict((await session.execute(select(User.id, User.name))).all())
    sent = _statuses(seeded, campaign.id)
    assert len(rows) == sent.get("sent", 0) and sent.get("sent", 0) + sent.get("muted", 0) == size
    assert len({uid for uid, _, _ in rows}) == len(rows)
    assert all(title == f"Hi {names[uid].split()[0]}" for uid, title, _ in rows)
    assert [p for _, _, p in rows] == sorted(p for _, _, p in rows)


async def test_variants_pause_resume_cancel_and_stats(
    services: tuple[Services, Clock], seeded: Database
) -> None:
    svc, clock = services
    segment, size = biggest_segment(seeded)
    body = {
        "name": "ab", "segment": segment, "campaignType": "promotion", "title": "T",
        "message": "M", "pacePerMinute": 60_000,
        "variants": [{"title": "A", "message": "a"}, {"title": "B", "message": "b"}],
    }  # fmt: skip
    campaign = await C.create_campaign(svc, ADMIN_ACTOR, C.CampaignCreate.model_validate(body))
    ref = C.CampaignRef(campaign_id=campaign.id)
    await start_due(svc)
    paused = await C.pause_campaign(svc, ADMIN_ACTOR, ref)
    assert paused.status == "paused"
    clock.advance(60)
    assert await send_due(svc, campaign.id) == 0  # paused: nothing goes out
    resumed = await C.resume_campaign(svc, ADMIN_ACTOR, ref)
    assert resumed.status == "running"
    assert await send_due(svc, campaign.id) == 0  # the pause saved up nothing
    clock.advance(60)
    await send_due(svc, campaign.id)
    clock.advance(1)
    await send_due(svc, campaign.id)
    stats = await C.get_stats(svc, ADMIN_ACTOR, ref)
    assert stats.targeted == size and stats.by_segment[segment].targeted == size
    assert set(stats.by_variant) == {"0", "1"}
    assert stats.by_variant["0"].targeted + stats.by_variant["1"].targeted == size
    assert min(stats.by_variant["0"].targeted, stats.by_variant["1"].targeted) > size // 4
    async with svc.sessions() as session:
        given = (
            await session.execute(
                select(CampaignDelivery.user_id, CampaignDelivery.variant, NotificationQueue.title)
                .join(NotificationQueue, NotificationQueue.id == CampaignDelivery.notification_id)
                .where(CampaignDelivery.campaign_id == campaign.id)
            )
        ).all()
    assert all(v == variant_of(campaign.id, uid, 2) for uid, v, _ in given)
    assert all(title == "AB"[v] for _, v, title in given)

    with pytest.raises(ServiceError) as done:
        await C.pause_campaign(svc, ADMIN_ACTOR, ref)
    assert done.value.code == "CONFLICT" and "completed" in done.value.message
    with pytest.raises(ServiceError):
        await C.cancel_campaign(svc, ADMIN_ACTOR, ref)

    later = await C.create_campaign(
        svc, ADMIN_ACTOR, C.CampaignCreate.model_validate({**body, "name": "later"})
    )
    await start_due(svc)
    cancelled = await C.cancel_campaign(svc, ADMIN_ACTOR, C.CampaignRef(campaign_id=later.id))
    assert cancelled.status == "cancelled"
    clock.advance(60)
    assert await send_due(svc, later.id) == 0
    assert _statuses(seeded, later.id) == {"cancelled": size}


async def test_over_http_a_target_receives_it_and_stats_count_what_people_did(
    seeded: Database,
) -> None:
    settings = seeded.settings(
        job_intervals={"campaigns.pace": 0.3}, admin_notifications_per_minute=1_000_000
    )
    with LiveServer(settings) as server:
        admin = As(server, seeded, ADMIN)
        segment, size = biggest_segment(seeded)
        target = next(
            uid
            for uid in EMPLOYEES
            if scalar(seeded, select(EmployeeSegment.segment).where(EmployeeSegment.user_id == uid))
            == segment
        )
        me = As(server, seeded, target)
        ws = await me.socket()
        r = admin.post(
            "/api/v1/campaigns",
            {"name": "n", "segment": segment, "campaignType": "retention",
             "title": "Hello {firstName}", "message": "Tier {tierName}",
             "pacePerMinute": 100_000, "conversionEvent": "recommendation_completed"},
        )  # fmt: skip
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        (got,) = await notifications(ws, 1)
        assert got["data"] == {"campaignId": cid, "variant": 0}
        assert got["title"].startswith("Hello ")
        me.post(f"/api/v1/notifications/{got['id']}/click")
        me.post(f"/api/v1/notifications/{got['id']}/read")
        first = me.get(f"/api/v1/employees/{target}/recommendations?limit=1").json()[0]["id"]
        assert me.post(f"/api/v1/me/recommendations/{first}/complete").status_code == 200
        for _ in range(100):
            stats = admin.get(f"/api/v1/campaigns/{cid}/stats").json()
            if (
                stats["sent"] + 0 >= 1
                and admin.get(f"/api/v1/campaigns/{cid}").json()["status"] == "completed"
            ):
                break
            await asyncio.sleep(0.1)
        assert stats["targeted"] == size
        for key in ("opened", "clicked", "converted"):
            assert stats[key] == 1 and stats["bySegment"][segment][key] == 1, (key, stats)
        assert stats["byVariant"]["0"]["targeted"] == size
        trpc = admin.request("GET", f'/trpc/campaigns.getStats?input={{"campaignId": {cid}}}')
        assert trpc.json()["result"]["data"]["targeted"] == size
        listed = admin.get("/api/v1/campaigns").json()
        assert listed["items"][0]["id"] == cid and listed["items"][0]["status"] == "completed"
        again = admin.post(f"/api/v1/campaigns/{cid}/pause")
        assert again.status_code == 409 and "completed" in again.json()["error"]["message"]
        await ws.close()


def test_bad_campaigns_are_refused_by_name_and_store_nothing(
    live: LiveServer, seeded: Database
) -> None:
    admin = As(live, seeded, ADMIN)
    base = {"name": "n", "segment": "at_risk", "campaignType": "education", "title": "t",
            "message": "m"}  # fmt: skip
    before = scalar(seeded, select(func.count()).select_from(Campaign))
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({**base, "segment": "nobody"}, 422, "segment"),
        ({**base, "pacePerMinute": 0}, 422, "pacePerMinute"),
        ({**base, "pacePerMinute": -5}, 422, "pacePerMinute"),
        ({**base, "startAt": "2020-01-01T00:00:00Z"}, 400, "startAt"),
        ({**base, "title": "Hi {name}"}, 422, "{name}"),
        ({**base, "message": "Hi {firstName!r}"}, 422, "firstName"),
        ({**base, "campaignType": "spam"}, 422, "campaignType"),
        ({**base, "variants": [{"title": "a", "message": "b"}] * 5}, 422, "variants"),
        ({**base, "pacePerMinute": 10**9}, 400, "pacePerMinute"),
    ]
    for body, status, names in cases:
        r = admin.post("/api/v1/campaigns", body)
        assert r.status_code == status, (body, r.text)
        assert names in r.text, (names, r.text)
    assert As(live, seeded, EMPLOYEES[0]).post("/api/v1/campaigns", base).status_code == 403
    assert admin.get("/api/v1/campaigns/999999").status_code == 404
    assert admin.post("/api/v1/campaigns/999999/pause").status_code == 404
    assert scalar(seeded, select(func.count()).select_from(Campaign)) == before

    # campaignType really filters: intervention takes the high and critical risks only,
    # engagement those with an engagement score under 50.
    def targets(segment: str, kind: str) -> list[int]:
        r = admin.get(f"/api/v1/segments/{segment}/campaign-targets?campaignType={kind}&limit=1000")
        assert r.status_code == 200 and r.json()["campaignType"] == kind
        return [int(i) for i in r.json()["items"]]

    def column(uid: int, col: Any) -> Any:
        return scalar(seeded, select(col).where(EmployeeSegment.user_id == uid))

    critical = targets("at_risk", "intervention")
    assert critical and {column(i, EmployeeSegment.risk_level) for i in critical} <= {
        "high", "critical",
    }  # fmt: skip
    segment, _ = biggest_segment(seeded)
    everyone, engaged_less = targets(segment, "retention"), targets(segment, "engagement")
    assert engaged_less and len(engaged_less) < len(everyone)
    assert all(column(i, EmployeeSegment.engagement_score) < 50 for i in engaged_less)
