"""Recommendation feedback (REST, tRPC, socket), compliance alerts paced by the admin limit,
and the audit log's read API (SPEC §9 Recommendations, Admins)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import func, select, update

from tests.conftest import Database, LiveServer
from tests.integration.test_api import GOOD_SURVEY
from tests.integration.test_rewards import POOR
from tests.integration.workflow import (
    ADMIN,
    EMPLOYEES,
    As,
    execute,
    nothing_more,
    notifications,
    rows,
    scalar,
    stored,
    wait_until,
)
from treevu.api import rest
from treevu.db import (
    COMPLIANCE_BATCH,
    EmployeeSegment,
    NotificationQueue,
    OutboxEvent,
    PointsEntry,
    RecommendationEvent,
    User,
)
from treevu.segmentation.recommendations import CATALOG


@pytest.fixture
def small(seeded: Database) -> Iterator[tuple[Database, LiveServer]]:
    """A seeded database on each backend, served with an admin limit of 2 a minute."""
    with LiveServer(seeded.settings(admin_notifications_per_minute=2)) as server:
        yield seeded, server


def ranking(me: As, limit: int = 20) -> list[str]:
    r = me.get(f"/api/v1/employees/{me.user_id}/recommendations?limit={limit}")
    assert r.status_code == 200, r.text
    return [item["id"] for item in r.json()]


async def test_feedback_leaves_the_ranking_at_once_on_every_transport(
    small: tuple[Database, LiveServer],
) -> None:
    db, server = small
    uid = EMPLOYEES[5]
    me = As(server, db, uid)
    first, second, third, fourth, *_ = ranking(me)

    dismissed = me.post(f"/api/v1/me/recommendations/{first}/dismiss")
    assert dismissed.status_code == 200, dismissed.text
    assert dismissed.json()["recorded"] is True and dismissed.json()["pointsEarned"] == 0
    assert first not in ranking(me)
    assert first not in [r["id"] for r in dismissed.json()["recommendations"]]

    points_before = scalar(
        db, select(func.count()).select_from(PointsEntry).where(PointsEntry.user_id == uid)
    )
    done = me.post(f"/api/v1/me/recommendations/{second}/complete").json()
    assert done["recorded"] is True and done["pointsEarned"] == 150
    again = me.post(f"/api/v1/me/recommendations/{second}/complete").json()
    assert again["recorded"] is False and again["pointsEarned"] == 0
    assert (
        scalar(db, select(func.count()).select_from(PointsEntry).where(PointsEntry.user_id == uid))
        == points_before + 1
    )
    assert second not in ranking(me)

    clicked = me.trpc("recommendations.click", {"recommendationId": third})
    assert clicked.status_code == 200 and clicked.json()["result"]["data"]["action"] == "click"
    assert third in ranking(me)  # a click keeps it

    ws = await me.socket()
    await ws.send(
        json.dumps({"type": "recommendation", "action": "dismiss", "recommendationId": fourth})
    )
    await ws.send(json.dumps({"type": "recommendation", "action": "nap", "recommendationId": "x"}))
    error = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert error == {
        "type": "error",
        "code": "invalid_field",
        "message": "action: must be click, dismiss or complete",
    }
    assert fourth not in ranking(me)
    await ws.send(
        json.dumps({"type": "recommendation", "action": "click", "recommendationId": "nope"})
    )
    error = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert error["code"] == "not_found" and "recommendationId" in error["message"]
    await ws.close()

    # Not the caller's: unknown, or in the catalog but never theirs.
    assert me.post("/api/v1/me/recommendations/nope/click").status_code == 404
    shown = set(ranking(me, 50)) | {first, second, fourth}
    never = next(item.id for item in CATALOG if item.id not in shown)
    foreign = me.post(f"/api/v1/me/recommendations/{never}/complete")
    assert foreign.status_code == 404
    assert "recommendationId" in foreign.json()["error"]["message"]
    assert me.post(f"/api/v1/me/recommendations/{third}/eat").status_code == 422
    kinds = scalar(
        db,
        select(func.count())
        .select_from(RecommendationEvent)
        .where(RecommendationEvent.user_id == uid, RecommendationEvent.kind == "impression"),
    )
    assert kinds > 0  # what the person was shown feeds the click-through rate
    metrics = me.get("/metrics").text
    assert "treevu_recommendation_click_rate" in metrics


def _pending_batches(db: Database) -> int:
    return int(
        scalar(
            db,
            select(func.count())
            .select_from(OutboxEvent)
            .where(OutboxEvent.kind == COMPLIANCE_BATCH, OutboxEvent.processed_at.is_(None)),
        )
    )


async def test_compliance_alerts_are_unmutable_and_paced_by_the_admin_limit(
    small: tuple[Database, LiveServer],
) -> None:
    db, server = small
    admin = As(server, db, ADMIN)
    targets = EMPLOYEES[10:15]
    muted = As(server, db, targets[0])
    assert (
        muted.put(
            "/api/v1/notifications/preferences",
            {
                "enableTierUpgrades": False,
                "enableMilestones": False,
                "enableRecommendations": False,
            },
        ).status_code
        == 200
    )
    ws = await muted.socket()

    r = admin.post(
        "/api/v1/admin/compliance-alerts",
        {"userIds": targets, "title": "Policy update", "message": "Read the new policy."},
    )
    assert r.status_code == 202, r.text
    first = r.json()
    assert (first["targeted"], first["batches"], first["perMinute"]) == (5, 3, 2)
    (alert,) = await notifications(ws, 1)
    assert alert["type"] == "compliance_alert" and alert["title"] == "Policy update"
    assert _pending_batches(db) == 2  # the next two minutes' batches wait
    assert [len(stored(db, u, "compliance_alert")) for u in targets] == [1, 1, 0, 0, 0]

    # A second alert by the same admin queues behind the first one's last batch.
    second = admin.post(
        "/api/v1/admin/compliance-alerts",
        {"userIds": [targets[0]], "title": "Again", "message": "Second."},
    ).json()
    ends = datetime.fromisoformat(first["endsAt"].replace("Z", "+00:00"))
    starts = datetime.fromisoformat(second["startsAt"].replace("Z", "+00:00"))
    # To the second: MariaDB's DATETIME keeps no fraction (the stored minutes stay a minute
    # apart; the answer's endsAt still has the fraction it was computed with).
    assert starts.replace(microsecond=0) == (ends + timedelta(minutes=1)).replace(microsecond=0)

    # When their minute comes (moved here instead of waited for), the relay sends them.
    execute(
        db,
        update(OutboxEvent)
        .where(OutboxEvent.kind == COMPLIANCE_BATCH, OutboxEvent.processed_at.is_(None))
        .values(available_at=datetime.now(UTC) - timedelta(seconds=1)),
    )
    (again,) = await notifications(ws, 1)
    assert again["title"] == "Again"
    await asyncio.sleep(1.5)
    assert [len(stored(db, u, "compliance_alert")) for u in targets] == [2, 1, 1, 1, 1]
    assert _pending_batches(db) == 0
    await ws.close()

    before = _pending_batches(db)
    for body in (
        {"userIds": targets, "segment": "at_risk", "title": "t", "message": "m"},
        {"userIds": [999_999], "title": "t", "message": "m"},
        {"segment": "nobody", "title": "t", "message": "m"},
        {"userIds": targets, "title": "", "message": "m"},
    ):
        bad = admin.post("/api/v1/admin/compliance-alerts", body)
        assert bad.status_code in (400, 422), bad.text
    assert (
        "userIds"
        in admin.post(
            "/api/v1/admin/compliance-alerts", {"userIds": [999_999], "title": "t", "message": "m"}
        ).json()["error"]["message"]
    )
    assert (
        As(server, db, targets[1])
        .post("/api/v1/admin/compliance-alerts", {"userIds": targets, "title": "t", "message": "m"})
        .status_code
        == 403
    )
    assert _pending_batches(db) == before


async def test_a_compliance_alert_to_a_segment_reaches_its_members_and_nobody_else(
    small: tuple[Database, LiveServer],
) -> None:
    db, server = small
    admin = As(server, db, ADMIN)
    active = (EmployeeSegment.user_id == User.id, User.is_active.is_(True))
    sizes = dict(
        rows(
            db,
            select(EmployeeSegment.segment, func.count())
            .where(*active)
            .group_by(EmployeeSegment.segment),
        )
    )
    segment = min((n, s) for s, n in sizes.items() if n >= 3)[1]
    members = [
        int(u)
        for (u,) in rows(
            db,
            select(EmployeeSegment.user_id)
            .where(*active, EmployeeSegment.segment == segment)
            .order_by(EmployeeSegment.user_id),
        )
    ]
    first = As(server, db, members[0])  # in the first batch (the batches go by user id)
    everything_off = {"enableTierUpgrades": False, "enableMilestones": False,
                      "enableRecommendations": False}  # fmt: skip
    assert first.put("/api/v1/notifications/preferences", everything_off).status_code == 200
    ws = await first.socket()

    r = admin.post(
        "/api/v1/admin/compliance-alerts",
        {"segment": segment, "title": "Segment policy", "message": "Read the segment's policy."},
    )
    assert r.status_code == 202, r.text
    assert (r.json()["targeted"], r.json()["batches"]) == (len(members), -(-len(members) // 2))
    (alert,) = await notifications(ws, 1)
    assert {k: v for k, v in alert.items() if k not in ("id", "timestamp")} == {
        "type": "compliance_alert",
        "title": "Segment policy",
        "message": "Read the segment's policy.",
        "data": {"compliance": True},
        "read": False,
    }
    # The remaining batches' minutes, moved here instead of waited for.
    execute(
        db,
        update(OutboxEvent)
        .where(OutboxEvent.kind == COMPLIANCE_BATCH, OutboxEvent.processed_at.is_(None))
        .values(available_at=datetime.now(UTC) - timedelta(seconds=1)),
    )
    wait_until(lambda: _pending_batches(db) == 0)
    received = dict(
        rows(
            db,
            select(NotificationQueue.user_id, func.count())
            .where(NotificationQueue.type == "compliance_alert")
            .group_by(NotificationQueue.user_id),
        )
    )
    assert received == dict.fromkeys(members, 1)  # each member once, nobody outside it
    await nothing_more(ws)
    await ws.close()
    (entry,) = admin.get("/api/v1/audit?action=notification.complianceAlert").json()["items"]
    assert entry["target"] == f"segment:{segment}" and entry["detail"]["targeted"] == len(members)


def _audited(admin: As, action: str) -> list[dict[str, Any]]:
    page = admin.get(f"/api/v1/audit?action={action}&limit=500")
    assert page.status_code == 200, page.text
    items: list[dict[str, Any]] = page.json()["items"]
    return items


def _interventions_of(admin: As, uid: int) -> list[int]:
    listed = admin.get("/api/v1/interventions?limit=200").json()["items"]
    return [int(i["id"]) for i in listed if i["userId"] == uid]


#: Changes a person makes to their own things (no admin action): not in the audit log.
OWN_CHANGES = {
    ("POST", "/api/v1/me/recompute"),
    ("POST", "/api/v1/me/recommendations/{recommendationId}/{action}"),
    ("POST", "/api/v1/employees/{userId}/survey"),
    ("POST", "/api/v1/notifications/{notificationId}/read"),
    ("POST", "/api/v1/notifications/{notificationId}/click"),
    ("POST", "/api/v1/notifications/read-all"),
    ("POST", "/api/v1/notifications/clear"),
    ("PUT", "/api/v1/notifications/preferences"),
}


async def test_every_admin_change_writes_one_audit_row(live: LiveServer, seeded: Database) -> None:
    admin = As(live, seeded, ADMIN)
    uid, other = EMPLOYEES[7], EMPLOYEES[8]
    tiers = admin.get("/api/v1/rewards/tiers").json()
    text = {"title": "t", "message": "m"}
    in_a_day = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    # (method, route, path or a function of the ids made so far, body, audit action)
    steps: list[tuple[str, str, Any, Any, str]] = [
        ("PUT", "/employees/{userId}/inputs", f"/employees/{uid}/inputs", POOR, "inputs.put"),
        ("POST", "/users", "/users", {"email": "new.person@example.com", "name": "New Person"},
         "user.create"),
        ("POST", "/segments/recompute", "/segments/recompute", None,
         "segmentation.bulkUpdateSegments"),
        ("POST", "/admin/notifications", "/admin/notifications",
         {"userId": other, "type": "milestone", **text}, "notification.create"),
        ("POST", "/admin/notifications/broadcast", "/admin/notifications/broadcast",
         {"userIds": [other], "type": "recommendation", **text}, "notification.broadcast"),
        ("PUT", "/rewards/tiers", "/rewards/tiers", {"tiers": tiers}, "rewards.setTiers"),
        ("POST", "/employees/{userId}/points", f"/employees/{other}/points",
         {"points": 5, "reason": "audit"}, "points.award"),
        ("POST", "/employees/{userId}/activity", f"/employees/{other}/activity",
         {"kind": "lesson_completed"}, "activity.record"),
        ("POST", "/admin/compliance-alerts", "/admin/compliance-alerts",
         {"userIds": [other], **text}, "notification.complianceAlert"),
        ("POST", "/campaigns", "/campaigns",
         {"name": "audited", "segment": "at_risk", "campaignType": "retention",
          "startAt": in_a_day, **text}, "campaign.create"),
        ("POST", "/campaigns/{campaignId}/{action}", lambda ids: f"/campaigns/{ids['c']}/pause",
         None, "campaign.pause"),
        ("POST", "/campaigns/{campaignId}/{action}", lambda ids: f"/campaigns/{ids['c']}/resume",
         None, "campaign.resume"),
        ("POST", "/campaigns/{campaignId}/{action}", lambda ids: f"/campaigns/{ids['c']}/cancel",
         None, "campaign.cancel"),
        ("PATCH", "/interventions/{interventionId}", lambda ids: f"/interventions/{ids['i']}",
         {"status": "contacted", "note": "called"}, "intervention.update"),
    ]  # fmt: skip
    mutating = {
        (method, route.path)
        for route in rest.router.routes
        if isinstance(route, APIRoute)
        for method in (route.methods or set()) & {"POST", "PUT", "PATCH", "DELETE"}
    }
    covered = {(method, "/api/v1" + route) for method, route, *_ in steps}
    assert mutating - OWN_CHANGES == covered  # a new admin route must join this table

    ids: dict[str, int] = {}
    for method, _, path, body, action in steps:
        if action == "intervention.update":  # the crisis that the first step put uid in
            wait_until(lambda: bool(_interventions_of(admin, uid)))
            ids["i"] = _interventions_of(admin, uid)[0]
        before = _audited(admin, action)
        where = path(ids) if callable(path) else path
        r = admin.request(method, "/api/v1" + where, body)
        assert r.status_code < 300, (action, r.status_code, r.text)
        if action == "campaign.create":
            ids["c"] = r.json()["id"]
        after = _audited(admin, action)
        assert len(after) == len(before) + 1, action
        assert after[0]["actorId"] == ADMIN, after[0]
    bulk = _audited(admin, "segmentation.bulkUpdateSegments")[0]
    assert bulk["target"] == "segments" and bulk["detail"]["scored"] >= len(EMPLOYEES)
    assert As(live, seeded, uid).post("/api/v1/segments/recompute").status_code == 403
    assert len(_audited(admin, "segmentation.bulkUpdateSegments")) == 1


async def test_audit_list_filters_and_pages(live: LiveServer, seeded: Database) -> None:
    admin = As(live, seeded, ADMIN)
    uid = EMPLOYEES[2]
    for n in range(3):
        r = admin.post(f"/api/v1/employees/{uid}/points", {"points": 10, "reason": f"a{n}"})
        assert r.status_code == 201, r.text
    awards = admin.get("/api/v1/audit?action=points.award").json()
    assert [e["detail"]["reason"] for e in awards["items"]] == ["a2", "a1", "a0"]
    assert {e["target"] for e in awards["items"]} == {f"user:{uid}"}
    assert all(e["actorId"] == ADMIN for e in awards["items"])

    page1 = admin.get("/api/v1/audit?action=points.award&limit=2").json()
    assert len(page1["items"]) == 2 and page1["nextCursor"]
    page2 = admin.get(
        f"/api/v1/audit?action=points.award&limit=2&cursor={page1['nextCursor']}"
    ).json()
    assert [e["detail"]["reason"] for e in page2["items"]] == ["a0"]
    assert page2["nextCursor"] is None

    about = admin.get(f"/api/v1/audit?userId={uid}").json()["items"]
    assert {e["action"] for e in about} >= {"points.award"}
    trpc = admin.request(
        "GET", '/trpc/audit.list?input={"action": "points.award", "limit": 1}'
    ).json()
    assert trpc["result"]["data"]["items"][0]["detail"]["reason"] == "a2"

    assert admin.get("/api/v1/audit?cursor=%%%").status_code == 400
    assert admin.get("/api/v1/audit?limit=0").status_code == 422
    assert As(live, seeded, uid).get("/api/v1/audit").status_code == 403


async def test_a_survey_answered_by_an_admin_for_someone_is_audited(
    live: LiveServer, seeded: Database
) -> None:
    """The survey's route is a person's own change, except when an admin answers for them."""
    admin = As(live, seeded, ADMIN)
    body = {"answers": GOOD_SURVEY, "ageBand": "18-61", "mode": "self"}
    own, other = EMPLOYEES[3], EMPLOYEES[4]
    before = _audited(admin, "survey.submit")
    mine = As(live, seeded, own).request("POST", f"/api/v1/employees/{own}/survey", body)
    assert mine.status_code == 200, mine.text
    assert _audited(admin, "survey.submit") == before
    theirs = admin.request("POST", f"/api/v1/employees/{other}/survey", body)
    assert theirs.status_code == 200, theirs.text
    (row,) = [r for r in _audited(admin, "survey.submit") if r not in before]
    assert (row["actorId"], row["target"], row["detail"]) == (
        ADMIN,
        f"user:{other}",
        {"raw": theirs.json()["raw"]},
    )
