"""TreePoints, tiers and milestones, end to end (SPEC §9 Rewards, Milestones): from a change of
data to the notification a real WebSocket client receives, on SQLite, MariaDB and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import delete, func, select, update

from tests.conftest import Database, LiveServer
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
from treevu.db import Achievement, EmployeeInputs, PointRule, PointsEntry
from treevu.services.jobs import run_now

#: Inputs that put anyone deep in crisis (FWI ~0), and well above 80.
POOR = {
    "monthlyIncome": 3000, "monthlySpending": 3600, "savingsBalance": 0,
    "monthlyDebtPayments": 1500, "ewaAdvances30d": 4, "alerts30d": 5, "surveyScore": None,
    "activeDays30d": 20, "goalsCompleted90d": 0, "lessonsCompleted90d": 6, "treePoints": 0,
}  # fmt: skip
RICH = {**POOR, "monthlySpending": 1500, "savingsBalance": 60000, "monthlyDebtPayments": 0,
        "ewaAdvances30d": 0, "alerts30d": 0}  # fmt: skip


#: Tier tables refused, the status, and the field the error names (by its place in the body).
BAD_TIER_TABLES: list[tuple[dict[str, Any], int, str]] = [
    ({"tiers": [{"name": "A", "minPoints": 10}]}, 400, "tiers[0].minPoints"),
    ({"tiers": [{"name": "B", "minPoints": 500}, {"name": "C", "minPoints": 500},
                {"name": "A", "minPoints": 0}]}, 400, "tiers[1].minPoints"),
    ({"tiers": [{"name": "A", "minPoints": 0}, {"name": "A", "minPoints": 9}]}, 400,
     "tiers[1].name"),
    ({"tiers": [{"name": "A", "minPoints": -1}]}, 422, "body.tiers.0.minPoints"),
    ({"tiers": [{"name": "A", "minPoints": 0, "discountPercentage": 101}]}, 422,
     "body.tiers.0.discountPercentage"),
    ({"tiers": [{"name": "A", "minPoints": 0, "perks": ["x"]}]}, 422, "body.tiers.0.perks"),
    ({"tiers": []}, 422, "body.tiers"),
]  # fmt: skip
SURVEY = {
    "answers": ["very_well", "somewhat", "very_little", "completely", "not_at_all",
                "very_little", "rarely", "often", "never", "sometimes"],
    "ageBand": "18-61",
    "mode": "self",
}  # fmt: skip


def _best_item(me: As) -> dict[str, str]:
    """The first item of ``me``'s ranking now, as a tier upgrade names it."""
    (best,) = me.get(f"/api/v1/employees/{me.user_id}/recommendations?limit=1").json()
    return {"recommendationId": best["id"], "category": best["category"]}


def balance(db: Database, uid: int) -> int:
    return int(scalar(db, select(EmployeeInputs.tree_points).where(EmployeeInputs.user_id == uid)))


def ledger_count(db: Database, uid: int) -> int:
    return int(
        scalar(db, select(func.count()).select_from(PointsEntry).where(PointsEntry.user_id == uid))
    )


def an_employee_below(db: Database, points: int) -> int:
    return next(uid for uid in EMPLOYEES if balance(db, uid) < points - 100)


async def test_points_crossing_a_tier_announce_it_once_in_the_shape_of_the_spec(
    live: LiveServer, seeded: Database
) -> None:
    uid = an_employee_below(seeded, 1000)
    admin, me = As(live, seeded, ADMIN), As(live, seeded, uid)
    ws = await me.socket()
    start = balance(seeded, uid)

    r = admin.post(
        f"/api/v1/employees/{uid}/points",
        {"points": 1000 - start, "reason": "onboarding bonus"},
        **{"Idempotency-Key": "bonus-1"},
    )
    assert r.status_code == 201, r.text
    award = r.json()
    assert award["balance"] == 1000 and award["tier"] == "Sprout" and not award["replayed"]
    got = {n["type"]: n for n in await notifications(ws, 2)}
    tier = got["tier_upgrade"]
    assert set(tier) == {"id", "type", "title", "message", "data", "timestamp", "read"}
    assert tier["title"] == "Congratulations! You reached Sprout Tier"
    assert tier["message"] == "You've earned new benefits: Goal tracking, Savings challenges"
    assert tier["data"] == {
        "tierName": "Sprout",
        "benefits": ["Goal tracking", "Savings challenges"],
        "discountPercentage": 0,
        **_best_item(me),
    }
    assert tier["read"] is False
    assert got["milestone"]["data"] == {"milestone": "points", "threshold": 1000}

    # The same key: the first entry, nothing added. Another amount under it: a conflict.
    again = admin.post(
        f"/api/v1/employees/{uid}/points",
        {"points": 1000 - start, "reason": "onboarding bonus"},
        **{"Idempotency-Key": "bonus-1"},
    )
    assert again.json() == {**award, "replayed": True}
    other = admin.post(
        f"/api/v1/employees/{uid}/points",
        {"points": 5, "reason": "x"},
        **{"Idempotency-Key": "bonus-1"},
    )
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["error"]["message"]
    assert ledger_count(seeded, uid) == 1

    # Down below the threshold and up again: never the same tier twice.
    assert admin.post(f"/api/v1/employees/{uid}/points", {"points": -600, "reason": "shop"})
    up = admin.post(f"/api/v1/employees/{uid}/points", {"points": 700, "reason": "quiz"})
    assert up.json()["balance"] == 1100
    await nothing_more(ws)
    assert len(stored(seeded, uid, "tier_upgrade")) == 1

    mine = me.get("/api/v1/me/tier").json()
    assert mine == {
        "tier": "Sprout",
        "points": 1100,
        "nextTier": "Rising Stars",
        "pointsToNext": 1400,
        "benefits": ["Goal tracking", "Savings challenges"],
        "discountPercentage": 0,
    }
    await ws.close()


async def test_bad_awards_are_refused_by_name_and_change_nothing(
    live: LiveServer, seeded: Database
) -> None:
    uid = EMPLOYEES[0]
    admin, me = As(live, seeded, ADMIN), As(live, seeded, uid)
    before, entries = balance(seeded, uid), ledger_count(seeded, uid)
    overdraw = admin.post(
        f"/api/v1/employees/{uid}/points", {"points": -(before + 1), "reason": "x"}
    )
    assert overdraw.status_code == 400
    assert overdraw.json()["error"]["message"].startswith(f"points: the balance is {before}")
    zero = admin.post(f"/api/v1/employees/{uid}/points", {"points": 0, "reason": "x"})
    assert zero.status_code == 422 and "points" in zero.text
    no_reason = admin.post(f"/api/v1/employees/{uid}/points", {"points": 5})
    assert no_reason.status_code == 422 and "reason" in no_reason.text
    assert (
        me.post(f"/api/v1/employees/{uid}/points", {"points": 5, "reason": "x"}).status_code == 403
    )
    no_inputs = admin.post(f"/api/v1/employees/{ADMIN}/points", {"points": 5, "reason": "x"})
    assert no_inputs.status_code == 409 and "userId" in no_inputs.json()["error"]["message"]
    trpc = admin.trpc(
        "rewards.awardPoints", {"userId": uid, "points": -(before + 1), "reason": "x"}
    )
    assert trpc.status_code == 400 and "points" in trpc.json()["error"]["message"]
    assert (balance(seeded, uid), ledger_count(seeded, uid)) == (before, entries)
    tiers = me.get("/api/v1/rewards/tiers").json()
    assert [t["name"] for t in tiers] == [
        "Seedling",
        "Sprout",
        "Rising Stars",
        "Financial Champions",
    ]
    assert tiers[2]["discountPercentage"] == 10
    for body, status, field in BAD_TIER_TABLES:
        bad = admin.put("/api/v1/rewards/tiers", body)
        assert bad.status_code == status, (body, bad.text)
        if status == 400:
            assert bad.json()["error"]["message"].startswith(f"{field}: "), bad.text
        else:
            assert field in {".".join(map(str, e["loc"])) for e in bad.json()["detail"]}, bad.text
    trpc_tiers = admin.trpc("rewards.setTiers", BAD_TIER_TABLES[1][0])
    assert trpc_tiers.status_code == 400
    assert trpc_tiers.json()["error"]["message"].startswith("tiers[1].minPoints: ")
    assert me.get("/api/v1/rewards/tiers").json() == tiers


async def test_the_daily_job_announces_what_an_event_missed_and_only_once(
    live: LiveServer, seeded: Database
) -> None:
    uid = an_employee_below(seeded, 1000)
    me = As(live, seeded, uid)
    ws = await me.socket()
    # The person dismisses their best item: the upgrade's refreshed ranking leaves it out.
    dismissed = _best_item(me)["recommendationId"]
    assert me.post(f"/api/v1/me/recommendations/{dismissed}/dismiss").status_code == 200
    # Points written behind the product's back (no event): only the reconciliation sees them.
    execute(
        seeded,
        update(EmployeeInputs).where(EmployeeInputs.user_id == uid).values(tree_points=2600),
    )
    svc = live.app_state().services
    run = live.run(run_now(svc, "tiers.reconcile")).result(timeout=30)
    assert run.ok and (run.result or {})["checks"] >= 1
    got = {(n["type"], n["data"].get("threshold")): n for n in await notifications(ws, 3)}
    tier = got[("tier_upgrade", None)]
    # SPEC §4's example, word for word.
    assert tier["title"] == "Congratulations! You reached Rising Stars Tier"
    assert tier["message"] == (
        "You've earned new benefits: Mentorship programs, Acceleration tracks, "
        "Leadership development"
    )
    assert tier["data"] == {
        "tierName": "Rising Stars",
        "benefits": ["Mentorship", "Acceleration", "Leadership"],
        "discountPercentage": 10,
        **_best_item(me),
    }
    assert tier["data"]["recommendationId"] != dismissed
    assert set(got) == {("tier_upgrade", None), ("milestone", 1000), ("milestone", 2500)}
    # Sprout was passed on the way: recorded, not announced.
    kinds = scalar(
        seeded,
        select(func.count())
        .select_from(Achievement)
        .where(Achievement.user_id == uid, Achievement.kind == "tier"),
    )
    assert kinds == 2
    again = live.run(run_now(svc, "tiers.reconcile")).result(timeout=30)
    assert again.ok
    await nothing_more(ws)
    await ws.close()


async def test_fwi_crossings_goals_and_a_segment_change_reach_the_socket_once(
    live: LiveServer, seeded: Database
) -> None:
    uid = EMPLOYEES[3]
    admin, me = As(live, seeded, ADMIN), As(live, seeded, uid)
    assert admin.put(f"/api/v1/employees/{uid}/inputs", POOR).json()["segment"] == (
        "crisis_intervention"
    )
    ws = await me.socket()
    await asyncio.sleep(1.5)  # whatever entering crisis sent
    while True:
        try:
            await notifications(ws, 1, timeout=0.5)
        except TimeoutError:
            break
    profile = admin.put(f"/api/v1/employees/{uid}/inputs", RICH).json()
    assert profile["fwiScore"] >= 80
    # Three FWI milestones, the move out of crisis (one recommendation), and the intervention
    # that entering crisis opened, now resolved.
    got = await notifications(ws, 5)
    assert [n["data"]["status"] for n in got if n["type"] == "intervention_update"] == ["resolved"]
    fwi = sorted(n["data"]["threshold"] for n in got if n["data"].get("milestone") == "fwi")
    assert fwi == [50, 65, 80]
    moved = [n for n in got if n["type"] == "recommendation"]
    assert len(moved) == 1
    best = me.get(f"/api/v1/employees/{uid}/recommendations?limit=1").json()[0]
    assert moved[0]["data"]["recommendationId"] == best["id"]
    assert moved[0]["data"]["toSegment"] == profile["segment"]
    assert best["title"] in moved[0]["message"]

    # Down and up again: no FWI milestone twice.
    admin.put(f"/api/v1/employees/{uid}/inputs", POOR)
    admin.put(f"/api/v1/employees/{uid}/inputs", RICH)
    await asyncio.sleep(1.5)
    milestones = stored(seeded, uid, "milestone")
    assert sorted(d["threshold"] for d in milestones if d["milestone"] == "fwi") == [50, 65, 80]

    # Goals: none completed so far; the first one is a milestone (and 100 points).
    assert not [d for d in _milestones(seeded, uid) if d["milestone"] == "goals"]
    done = admin.post(f"/api/v1/employees/{uid}/activity", {"kind": "goal_completed"})
    assert done.status_code == 201, done.text
    assert done.json()["goalsCompleted90d"] == 1 and done.json()["pointsEarned"] == 100
    wait_until(lambda: any(d.get("milestone") == "goals" for d in _milestones(seeded, uid)))
    goals = [d["threshold"] for d in _milestones(seeded, uid) if d["milestone"] == "goals"]
    assert goals == [1]
    bad = admin.post(f"/api/v1/employees/{uid}/activity", {"kind": "nap"})
    assert bad.status_code == 422 and "kind" in bad.text
    await ws.close()


def _milestones(db: Database, uid: int) -> list[dict[str, Any]]:
    return stored(db, uid, "milestone")


async def test_two_nodes_racing_on_one_crossing_announce_it_once(seeded: Database) -> None:
    uid = an_employee_below(seeded, 1000)
    with LiveServer(seeded.settings()) as a, LiveServer(seeded.settings()) as b:
        start = balance(seeded, uid)
        admin_a, admin_b = As(a, seeded, ADMIN), As(b, seeded, ADMIN)
        loop = asyncio.get_running_loop()

        def award(n: int) -> Any:
            return (admin_a if n % 2 else admin_b).post(
                f"/api/v1/employees/{uid}/points", {"points": 300, "reason": f"r{n}"}
            )

        calls: list[asyncio.Future[Any]] = [loop.run_in_executor(None, award, n) for n in range(8)]
        calls.append(
            loop.run_in_executor(
                None, lambda: b.run(run_now(b.app_state().services, "tiers.reconcile")).result()
            )
        )
        answers = await asyncio.gather(*calls)
        assert [r.status_code for r in answers[:8]] == [201] * 8, [r.text for r in answers[:8]]
        assert balance(seeded, uid) == start + 2400
        wait_until(
            lambda: "Rising Stars" in {n["tierName"] for n in stored(seeded, uid, "tier_upgrade")}
        )
        a.run(run_now(a.app_state().services, "tiers.reconcile")).result(timeout=30)
        await asyncio.sleep(1.5)
    # Sprout and Rising Stars were both crossed (one batch may see both at once: then only
    # the higher is announced); none twice.
    announced = [n["tierName"] for n in stored(seeded, uid, "tier_upgrade")]
    assert len(announced) == len(set(announced))
    assert "Rising Stars" in announced and set(announced) <= {"Sprout", "Rising Stars"}
    points = [d["threshold"] for d in _milestones(seeded, uid) if d["milestone"] == "points"]
    assert sorted(points) == sorted(set(points)) and 1000 in points


def _ledger(db: Database, uid: int) -> list[tuple[str, int]]:
    return [
        (str(reason), int(points))
        for reason, points in rows(
            db,
            select(PointsEntry.reason, PointsEntry.points)
            .where(PointsEntry.user_id == uid)
            .order_by(PointsEntry.id),
        )
    ]


async def test_the_app_s_own_events_earn_the_rates_kept_in_point_rules(
    live: LiveServer, seeded: Database
) -> None:
    uid = EMPLOYEES[6]
    admin, me = As(live, seeded, ADMIN), As(live, seeded, uid)
    start, entries = balance(seeded, uid), len(_ledger(seeded, uid))
    lesson = admin.post(f"/api/v1/employees/{uid}/activity", {"kind": "lesson_completed"})
    assert lesson.status_code == 201, lesson.text
    assert (lesson.json()["pointsEarned"], lesson.json()["balance"]) == (50, start + 50)
    survey = me.post(f"/api/v1/employees/{uid}/survey", SURVEY)
    assert survey.status_code == 200, survey.text
    assert balance(seeded, uid) == start + 250
    assert _ledger(seeded, uid)[entries:] == [("lesson_completed", 50), ("survey_answered", 200)]

    # The rates are data: a changed rate is what the next event earns; no rule, no points.
    lessons = PointRule.event == "lesson_completed"
    execute(seeded, update(PointRule).where(lessons).values(points=75))
    execute(seeded, delete(PointRule).where(PointRule.event == "survey_answered"))
    again = admin.post(f"/api/v1/employees/{uid}/activity", {"kind": "lesson_completed"})
    assert (again.json()["pointsEarned"], again.json()["balance"]) == (75, start + 325)
    assert me.post(f"/api/v1/employees/{uid}/survey", SURVEY).status_code == 200
    assert balance(seeded, uid) == start + 325
    assert _ledger(seeded, uid)[entries + 2 :] == [("lesson_completed", 75)]


async def _kept(ws: Any, count: int, keep: Any, timeout: float = 20) -> list[dict[str, Any]]:
    """The next ``count`` notifications on ``ws`` that ``keep`` accepts (others skipped: a goal
    also moves the engagement score, and so maybe the segment)."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            got += [n for n in await notifications(ws, 1, timeout) if keep(n)]
    return got


async def test_goal_and_points_milestones_reach_the_socket_once_at_each_threshold(
    live: LiveServer, seeded: Database
) -> None:
    uid = next(
        u
        for u in EMPLOYEES
        if balance(seeded, u) < 900
        and scalar(
            seeded,
            select(EmployeeInputs.goals_completed_90d).where(EmployeeInputs.user_id == u),
        )
        == 0
    )
    admin, me = As(live, seeded, ADMIN), As(live, seeded, uid)
    # Goals earn nothing here, so that only the goal count moves.
    execute(seeded, update(PointRule).where(PointRule.event == "goal_completed").values(points=0))
    ws = await me.socket()
    for n in range(1, 11):
        done = admin.post(f"/api/v1/employees/{uid}/activity", {"kind": "goal_completed"})
        assert done.status_code == 201, done.text
        assert (done.json()["goalsCompleted90d"], done.json()["pointsEarned"]) == (n, 0)
    goals = await _kept(ws, 3, lambda n: n["type"] == "milestone")
    assert [(n["title"], n["data"]) for n in goals] == [
        ("1 goal completed", {"milestone": "goals", "threshold": 1}),
        ("5 goals completed", {"milestone": "goals", "threshold": 5}),
        ("10 goals completed", {"milestone": "goals", "threshold": 10}),
    ]

    # 5,000 points in one award: the top tier and the three points milestones, each once.
    start = balance(seeded, uid)
    award = admin.post(f"/api/v1/employees/{uid}/points", {"points": 5000 - start, "reason": "x"})
    assert award.status_code == 201 and award.json()["tier"] == "Financial Champions"
    got = await _kept(ws, 4, lambda n: n["type"] in ("milestone", "tier_upgrade"))
    assert {n["data"].get("tierName") or n["data"]["threshold"] for n in got} == {
        "Financial Champions", 1000, 2500, 5000,
    }  # fmt: skip
    (top,) = [n for n in got if n["type"] == "tier_upgrade"]
    assert top["title"] == "Congratulations! You reached Financial Champions Tier"
    # Once each, whatever comes after: one more goal, more points, the daily job.
    admin.post(f"/api/v1/employees/{uid}/activity", {"kind": "goal_completed"})
    admin.post(f"/api/v1/employees/{uid}/points", {"points": 100, "reason": "y"})
    live.run(run_now(live.app_state().services, "tiers.reconcile")).result(timeout=30)
    await asyncio.sleep(1.5)
    kept = [(d["milestone"], d["threshold"]) for d in _milestones(seeded, uid)]
    assert sorted(kept) == sorted(set(kept)) and {
        ("goals", 1), ("goals", 5), ("goals", 10), ("points", 1000), ("points", 2500),
        ("points", 5000),
    } <= set(kept)  # fmt: skip
    assert [d["tierName"] for d in stored(seeded, uid, "tier_upgrade")] == ["Financial Champions"]
    await ws.close()
