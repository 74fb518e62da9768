"""Recommendation feedback (REST, tRPC, socket), compliance alerts paced by the admin limit,
and the audit log's read API (SPEC §9 Recommendations, Admins)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from tests.conftest import Database, LiveServer, seed_and_score
from tests.integration.workflow import (
    ADMIN,
    EMPLOYEES,
    As,
    execute,
    notifications,
    scalar,
    stored,
)
from treevu.db import COMPLIANCE_BATCH, OutboxEvent, PointsEntry, RecommendationEvent
from treevu.segmentation.recommendations import CATALOG


@pytest.fixture
def small(sqlite_database: Database) -> Iterator[tuple[Database, LiveServer]]:
    seed_and_score(sqlite_database)
    with LiveServer(sqlite_database.settings(admin_notifications_per_minute=2)) as server:
        yield sqlite_database, server


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
    assert starts == ends + timedelta(minutes=1)

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
