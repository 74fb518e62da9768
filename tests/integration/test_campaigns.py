"""Campaigns (SPEC §6.3, §9 Campaigns): create → frozen targets → paced sending → stats, on
SQLite, MariaDB and PostgreSQL; bad input refused with nothing stored."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update

from tests.conftest import Database, LiveServer
from tests.integration.test_api import GOOD_SURVEY
from tests.integration.workflow import (
    ADMIN,
    EMPLOYEES,
    As,
    execute,
    notifications,
    rows,
    scalar,
    sync_engine,
    wait_until,
)
from treevu.app import build_services, make_engines
from treevu.db import (
    AuditLog,
    Campaign,
    CampaignDelivery,
    EmployeeInputs,
    EmployeeSegment,
    NotificationQueue,
    RecommendationEvent,
    RewardTier,
    SurveyResponse,
    User,
)
from treevu.segmentation.policy import SEGMENTS
from treevu.services.campaigns import ops as C
from treevu.services.campaigns.sending import send_due, start_due, variant_of
from treevu.services.context import Actor, Services
from treevu.services.errors import ServiceError
from treevu.services.people.users import SubmitSurvey, submit_survey
from treevu.services.segmentation.queries import CampaignTargetsInput, get_campaign_targets

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


def segment_of(db: Database, uid: int) -> str:
    return str(scalar(db, select(EmployeeSegment.segment).where(EmployeeSegment.user_id == uid)))


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
    segment, size = biggest_segment(seeded)
    me, other = [uid for uid in EMPLOYEES if segment_of(seeded, uid) == segment][:2]
    # A tier above the first, so that {tierName} cannot pass by rendering a default.
    tiers = rows(
        seeded, select(RewardTier.name, RewardTier.min_points).order_by(RewardTier.min_points)
    )
    tier, points = tiers[1]
    execute(
        seeded,
        update(EmployeeInputs).where(EmployeeInputs.user_id == me).values(tree_points=points),
    )
    first_name = str(scalar(seeded, select(User.name).where(User.id == me))).split()[0]
    with LiveServer(settings) as server:
        admin, mine = As(server, seeded, ADMIN), As(server, seeded, me)
        my_ws, other_ws = await mine.socket(), await As(server, seeded, other).socket()
        r = admin.post(
            "/api/v1/campaigns",
            {"name": "n", "segment": segment, "campaignType": "retention",
             "title": "Hello {firstName}", "message": "Tier {tierName} for {segmentName}",
             "pacePerMinute": 100_000, "conversionEvent": "recommendation_completed"},
        )  # fmt: skip
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        # Received (and acknowledged, as ``notifications`` does) by both; rendered for `me`.
        (got,) = await notifications(my_ws, 1)
        (theirs,) = await notifications(other_ws, 1)
        assert got["data"] == theirs["data"] == {"campaignId": cid, "variant": 0}
        assert got["title"] == f"Hello {first_name}"
        assert got["message"] == f"Tier {tier} for {segment.replace('_', ' ').title()}"
        mine.post(f"/api/v1/notifications/{got['id']}/click")
        mine.post(f"/api/v1/notifications/{got['id']}/read")
        first = mine.get(f"/api/v1/employees/{me}/recommendations?limit=1").json()[0]["id"]
        assert mine.post(f"/api/v1/me/recommendations/{first}/complete").status_code == 200

        def settled() -> bool:  # completed, and both acknowledgements recorded
            done = admin.get(f"/api/v1/campaigns/{cid}").json()["status"] == "completed"
            stats = admin.get(f"/api/v1/campaigns/{cid}/stats").json()
            return done and int(stats["delivered"]) >= 2

        await asyncio.to_thread(wait_until, settled, 30)
        stats = admin.get(f"/api/v1/campaigns/{cid}/stats").json()
        assert stats["targeted"] == stats["sent"] == size  # nobody in the seed muted them
        # delivered: the two who acknowledged it (one of them also read it); nobody else.
        assert stats["delivered"] == stats["bySegment"][segment]["delivered"] == 2, stats
        for key in ("opened", "clicked", "converted"):
            assert stats[key] == 1 and stats["bySegment"][segment][key] == 1, (key, stats)
        assert stats["byVariant"]["0"]["targeted"] == stats["byVariant"]["0"]["sent"] == size
        trpc = admin.request("GET", f'/trpc/campaigns.getStats?input={{"campaignId": {cid}}}')
        assert trpc.json()["result"]["data"] == stats
        listed = admin.get("/api/v1/campaigns").json()
        assert listed["items"][0]["id"] == cid and listed["items"][0]["status"] == "completed"
        assert listed["items"][0]["targeted"] == listed["items"][0]["sent"] == size
        again = admin.post(f"/api/v1/campaigns/{cid}/pause")
        assert again.status_code == 409 and "completed" in again.json()["error"]["message"]
        await my_ws.close()
        await other_ws.close()


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


def test_every_operation_over_rest_and_trpc_answers_and_is_audited(
    live: LiveServer, seeded: Database
) -> None:
    admin = As(live, seeded, ADMIN)
    later = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0).isoformat()
    body = {"name": "later", "segment": "at_risk", "campaignType": "education", "title": "t",
            "message": "m", "startAt": later, "pacePerMinute": 1}  # fmt: skip

    def audited(cid: int) -> list[tuple[str, int]]:
        found = rows(
            seeded,
            select(AuditLog.action, AuditLog.actor_id)
            .where(AuditLog.target == f"campaign:{cid}")
            .order_by(AuditLog.id),
        )
        return [(str(a), int(u)) for a, u in found]

    # REST: a campaign that has started (1 a minute: running, nothing sent for a minute) is
    # paused, resumed to running, cancelled; its frozen targets become cancelled.
    r = admin.post("/api/v1/campaigns", {**body, "name": "now", "startAt": None})
    assert r.status_code == 201, r.text
    now_id = r.json()["id"]
    wait_until(lambda: admin.get(f"/api/v1/campaigns/{now_id}").json()["status"] == "running")
    for action, status in (("pause", "paused"), ("resume", "running"), ("cancel", "cancelled")):
        r = admin.post(f"/api/v1/campaigns/{now_id}/{action}")
        assert r.status_code == 200, (action, r.text)
        assert (r.json()["id"], r.json()["status"]) == (now_id, status)
    targeted = r.json()["targeted"]
    assert targeted > 0 and _statuses(seeded, now_id) == {"cancelled": targeted}
    for action in ("resume", "cancel", "pause"):  # refused: 409 naming the status, no audit
        r = admin.post(f"/api/v1/campaigns/{now_id}/{action}")
        assert r.status_code == 409 and "cancelled" in r.json()["error"]["message"], r.text
    assert (
        As(live, seeded, EMPLOYEES[0]).post(f"/api/v1/campaigns/{now_id}/resume").status_code == 403
    )
    assert audited(now_id) == [
        (f"campaign.{a}", ADMIN) for a in ("create", "pause", "resume", "cancel")
    ]

    # tRPC: each procedure's envelope and result; a scheduled campaign resumes to scheduled.
    def query(procedure: str, value: Any) -> Any:
        r = admin.request("GET", f"/trpc/campaigns.{procedure}?input={json.dumps(value)}")
        assert r.status_code == 200 and set(r.json()) == {"result"}, r.text
        return r.json()["result"]["data"]

    def mutate(procedure: str, value: Any) -> Any:
        r = admin.trpc(f"campaigns.{procedure}", value)
        assert r.status_code == 200 and set(r.json()) == {"result"}, r.text
        return r.json()["result"]["data"]

    created = mutate("create", body)
    cid = created["id"]
    assert (created["name"], created["status"], created["pacePerMinute"]) == (
        "later",
        "scheduled",
        1,
    )
    assert datetime.fromisoformat(created["startAt"]) == datetime.fromisoformat(later)
    listed = query("list", {"status": "scheduled"})
    assert [c["id"] for c in listed["items"]] == [cid] and listed["nextCursor"] is None
    assert query("get", {"campaignId": cid}) == created
    ref = {"campaignId": cid}
    assert mutate("pause", ref)["status"] == "paused"
    assert mutate("resume", ref)["status"] == "scheduled"  # it had not started
    assert query("getStats", ref) == {
        **dict.fromkeys(("targeted", "sent", "delivered", "opened", "clicked", "converted"), 0),
        "bySegment": {}, "byVariant": {"0": dict.fromkeys(
            ("targeted", "sent", "delivered", "opened", "clicked", "converted"), 0)},
    }  # fmt: skip
    cancelled = mutate("cancel", ref)
    assert (cancelled["id"], cancelled["status"], cancelled["targeted"]) == (cid, "cancelled", 0)
    refused = admin.trpc("campaigns.pause", ref)
    assert refused.status_code == 409
    assert refused.json()["error"]["data"] == {
        "code": "CONFLICT", "httpStatus": 409, "path": "campaigns.pause",
    }  # fmt: skip
    assert As(live, seeded, EMPLOYEES[0]).trpc("campaigns.cancel", ref).status_code == 403
    assert audited(cid) == [
        (f"campaign.{a}", ADMIN) for a in ("create", "pause", "resume", "cancel")
    ]
    detail = scalar(
        seeded,
        select(AuditLog.detail).where(
            AuditLog.target == f"campaign:{cid}", AuditLog.action == "campaign.create"
        ),
    )
    assert detail == {"name": "later", "segment": "at_risk"}


@dataclasses.dataclass(frozen=True)
class Member:
    uid: int
    engagement: float
    fwi: float
    wellness: float
    risk: str


#: What docs/workflows.md (Campaigns) says each type does: who of the segment, in which order.
DOCUMENTED: dict[str, tuple[Callable[[Member], bool], Callable[[Member], tuple[float, int]]]] = {
    "retention": (lambda m: True, lambda m: (m.engagement, m.uid)),
    "engagement": (lambda m: m.engagement < 50, lambda m: (m.engagement, m.uid)),
    "education": (lambda m: m.risk in ("medium", "high", "critical"), lambda m: (m.fwi, m.uid)),
    "intervention": (lambda m: m.risk in ("high", "critical"), lambda m: (m.fwi, m.uid)),
    "promotion": (lambda m: True, lambda m: (-m.wellness, m.uid)),
}


#: A value that fails each filtering type's rule (set on one member when all of a segment pass).
DROPPED: dict[str, dict[str, Any]] = {
    "engagement": {"engagement_score": 75.0},
    "education": {"risk_level": "low"},
    "intervention": {"risk_level": "medium"},
}
DROP_FIELD = {"engagement_score": "engagement", "risk_level": "risk"}


async def test_each_campaign_type_freezes_the_documented_targets_in_the_documented_order(
    services: tuple[Services, Clock], seeded: Database
) -> None:
    svc, _ = services
    s = EmployeeSegment
    found = rows(
        seeded,
        select(
            s.segment, s.user_id, s.engagement_score, s.fwi_score, s.wellness_score, s.risk_level
        )
        .join(User, User.id == s.user_id)
        .where(User.is_active.is_(True)),
    )
    members: dict[str, list[Member]] = {}
    for segment, *values in found:
        assert None not in values, values  # an order over missing scores would be undocumented
        uid, engagement, fwi, wellness, risk = values
        members.setdefault(str(segment), []).append(
            Member(int(uid), float(engagement), float(fwi), float(wellness), str(risk))
        )
    for kind, (keeps, order) in DOCUMENTED.items():
        # The segment where the rule keeps and drops the most people (for all-member types:
        # the biggest), so that a missing filter or order shows.
        def split(segment: str, keeps: Callable[[Member], bool] = keeps) -> tuple[int, int]:
            kept = sum(keeps(m) for m in members[segment])
            return min(kept, len(members[segment]) - kept), kept

        segment = max(members, key=split)
        if kind in DROPPED and split(segment)[0] == 0:  # everyone passes: make one fail
            one = members[segment][-1]
            execute(seeded, update(s).where(s.user_id == one.uid).values(**DROPPED[kind]))
            changed = {DROP_FIELD[k]: v for k, v in DROPPED[kind].items()}
            members[segment][-1] = dataclasses.replace(one, **changed)
        expected = sorted((m for m in members[segment] if keeps(m)), key=order)
        assert len(expected) >= 2, kind
        if kind in DROPPED:
            assert len(expected) < len(members[segment]), kind  # the filter drops someone
        assert [m.uid for m in expected] != sorted(m.uid for m in expected), kind
        campaign = await C.create_campaign(
            svc,
            ADMIN_ACTOR,
            C.CampaignCreate.model_validate(
                {
                    "name": kind,
                    "segment": segment,
                    "campaignType": kind,
                    "title": "t",
                    "message": "m",
                }  # fmt: skip
            ),
        )
        assert await start_due(svc) == 1
        frozen = [
            int(u)
            for (u,) in rows(
                seeded,
                select(CampaignDelivery.user_id)
                .where(CampaignDelivery.campaign_id == campaign.id)
                .order_by(CampaignDelivery.position),
            )
        ]
        assert frozen == [m.uid for m in expected], kind
        listed = await get_campaign_targets(
            svc,
            ADMIN_ACTOR,
            CampaignTargetsInput.model_validate(
                {"segment": segment, "campaignType": kind, "limit": 10_000}
            ),
        )
        assert listed.items == sorted(frozen) and listed.total == len(frozen), kind


async def test_a_survey_conversion_counts_within_conversion_days_only(
    services: tuple[Services, Clock], seeded: Database
) -> None:
    svc, clock = services
    segment, size = biggest_segment(seeded)
    before, inside, outside, wrong_event = [
        uid for uid in EMPLOYEES if segment_of(seeded, uid) == segment
    ][:4]
    campaign = await C.create_campaign(
        svc,
        ADMIN_ACTOR,
        C.CampaignCreate.model_validate(
            {
                "name": "survey",
                "segment": segment,
                "campaignType": "retention",
                "title": "t",
                "message": "m",
                "conversionEvent": "survey_answered",
                "conversionDays": 2,
            }
        ),  # fmt: skip
    )
    ref = C.CampaignRef(campaign_id=campaign.id)

    async def answer(uid: int) -> None:
        await submit_survey(
            svc,
            ADMIN_ACTOR,
            SubmitSurvey.model_validate(
                {
                    "userId": uid,
                    "survey": {"answers": GOOD_SURVEY, "ageBand": "18-61", "mode": "self"},
                }  # fmt: skip
            ),
        )

    await answer(before)  # before it was sent: not a conversion
    clock.advance(1)
    await start_due(svc)
    clock.advance(60)
    assert await send_due(svc, campaign.id) == size
    clock.advance(1)
    await send_due(svc, campaign.id)
    assert (await C.get_stats(svc, ADMIN_ACTOR, ref)).sent == size
    clock.advance(86_400)  # one day later: within the 2 days
    await answer(inside)
    execute(  # the other event (a recommendation completed) is not this campaign's conversion
        seeded,
        insert(RecommendationEvent).values(
            user_id=wrong_event, recommendation_id="emergency-fund", kind="completed",
            created_at=clock.now,
        ),
    )  # fmt: skip
    clock.advance(2 * 86_400)  # three days after sending: outside (the default, 7, would count)
    await answer(outside)
    stats = await C.get_stats(svc, ADMIN_ACTOR, ref)
    assert stats.converted == 1 and stats.by_segment[segment].converted == 1, stats
    assert stats.by_variant["0"].converted == 1
    assert await C.variant_counts(svc, campaign.id) == {0: (size, 1)}
    # Who converted: `inside`, by the raw rows (the only answer between sending and 2 days on).
    sent_at = scalar(
        seeded,
        select(CampaignDelivery.sent_at).where(
            CampaignDelivery.campaign_id == campaign.id, CampaignDelivery.user_id == inside
        ),
    )
    answered = rows(seeded, select(SurveyResponse.user_id, SurveyResponse.created_at))
    window = [
        int(u)
        for u, at in answered
        if sent_at <= at <= sent_at + timedelta(days=2) and int(u) in (before, inside, outside)
    ]
    assert window == [inside]
