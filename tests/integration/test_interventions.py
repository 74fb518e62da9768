"""Crisis interventions and what managers and counselors may see (SPEC §5, §6.4, §9), end to end
from a change of data to what real WebSocket clients receive."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from tests.conftest import Database, LiveServer
from tests.integration.test_rewards import POOR, RICH
from tests.integration.workflow import (
    ADMIN,
    EMPLOYEES,
    POPULATION,
    As,
    execute,
    nothing_more,
    notifications,
    scalar,
    sync_engine,
)
from treevu.db import EmployeeInputs, EmployeeSegment, Intervention, User
from treevu.population import ROLES
from treevu.segmentation.engine import INPUT_NAMES
from treevu.segmentation.policy import RISK_LEVELS, SEGMENTS, SPENDING_LEVELS
from treevu.services.jobs import run_now
from treevu.services.team import suppress

COUNSELORS = [int(u) for u, r in zip(POPULATION.user_id, POPULATION.role, strict=True)
              if r == ROLES.index("counselor")]  # fmt: skip
MANAGERS = [int(u) for u, r in zip(POPULATION.user_id, POPULATION.role, strict=True)
            if r == ROLES.index("manager")]  # fmt: skip


def manager_of(uid: int) -> int:
    return int(POPULATION.manager_id[uid - 1])


def reports_of(manager: int) -> list[int]:
    return [u for u in EMPLOYEES if manager_of(u) == manager]


def calm(db: Database, skip: int = 0) -> int:
    """An employee with a manager who is not in crisis now (so that POOR inputs move them)."""
    found = [
        uid
        for uid in EMPLOYEES
        if manager_of(uid) > 0
        and scalar(db, select(EmployeeSegment.segment).where(EmployeeSegment.user_id == uid))
        != "crisis_intervention"
    ]
    return found[skip]


def _capacity(db: Database, counselor: int, capacity: int) -> None:
    execute(db, update(User).where(User.id == counselor).values(counselor_capacity=capacity))


def _intervention_of(db: Database, uid: int) -> tuple[int, int | None, str]:
    engine_row = scalar(
        db,
        select(Intervention.id).where(Intervention.user_id == uid).order_by(Intervention.id.desc()),
    )
    counselor = scalar(db, select(Intervention.counselor_id).where(Intervention.id == engine_row))
    status = scalar(db, select(Intervention.status).where(Intervention.id == engine_row))
    return int(engine_row), counselor, str(status)


async def _drain(ws: Any) -> None:
    while True:
        try:
            await notifications(ws, 1, timeout=0.7)
        except TimeoutError:
            return


FORBIDDEN_WORDS = {
    *INPUT_NAMES, "fwiScore", "wellnessScore", "engagementScore", "riskLevel", "spendingLevel",
    "segment", "fromSegment", "toSegment", *SEGMENTS, *RISK_LEVELS, *SPENDING_LEVELS,
}  # fmt: skip


def assert_nothing_financial(payload: Any, employee: int, db: Database) -> None:
    """No input name or value, score, level or segment name in what a manager can see."""
    text = json.dumps(payload)
    words = set(re.findall(r"[A-Za-z_<>=]+", text))
    assert not words & FORBIDDEN_WORDS, words & FORBIDDEN_WORDS
    engine = sync_engine(db)
    try:
        with Session(engine) as session:
            profile = session.scalars(
                select(EmployeeSegment).where(EmployeeSegment.user_id == employee)
            ).one()
            inputs = session.get(EmployeeInputs, employee)
            assert inputs is not None
            values = [profile.fwi_score, profile.wellness_score, profile.engagement_score]
            amounts = [inputs.monthly_income, inputs.monthly_spending, inputs.savings_balance]
    finally:
        engine.dispose()
    figures = {f"{v:.2f}" for v in values if v is not None}
    figures |= {str(int(a)) for a in amounts if a}
    numbers = set(re.findall(r"\d+(?:\.\d+)?", text))
    assert not numbers & figures, numbers & figures


async def test_entering_crisis_opens_one_intervention_and_tells_each_once(
    live: LiveServer, seeded: Database
) -> None:
    employee = calm(seeded, 7)
    manager = manager_of(employee)
    counselor = min(COUNSELORS)
    admin = As(live, seeded, ADMIN)
    me, boss, helper = (
        As(live, seeded, employee),
        As(live, seeded, manager),
        As(live, seeded, counselor),
    )
    sockets = {who: await who.socket() for who in (me, boss, helper)}
    for ws in sockets.values():
        await _drain(ws)

    assert admin.put(f"/api/v1/employees/{employee}/inputs", POOR).json()["segment"] == (
        "crisis_intervention"
    )
    (mine,) = await notifications(sockets[me], 1)
    (bosses,) = await notifications(sockets[boss], 1)
    (helpers,) = await notifications(sockets[helper], 1)
    iid, assigned, status = _intervention_of(seeded, employee)
    assert (assigned, status) == (counselor, "open")
    assert mine["type"] == "intervention_update" and mine["data"]["crisis"] is True
    assert mine["data"]["interventionId"] == iid and mine["data"]["status"] == "open"
    name = scalar(seeded, select(User.name).where(User.id == employee))
    assert bosses["type"] == "intervention_update"
    assert bosses["data"] == {
        "interventionId": iid, "employeeId": employee, "employeeName": name,
        "support": "Emergency Counseling",
    }  # fmt: skip
    assert name in bosses["title"]
    assert_nothing_financial(bosses, employee, seeded)
    assert helpers["data"] == {"interventionId": iid, "employeeId": employee}

    # Again through every other path into the same state: nobody is told twice.
    admin.put(f"/api/v1/employees/{employee}/inputs", POOR)
    live.run(run_now(live.app_state().services, "profiles.refresh")).result(timeout=60)
    for ws in sockets.values():
        await nothing_more(ws)

    own = me.get("/api/v1/me/intervention").json()
    assert own["status"] == "open" and own["counselorId"] == counselor
    assert own["plan"]["steps"][0] == "Meet your counselor within one business day"
    assert "notes" not in own
    listed = helper.get("/api/v1/interventions").json()["items"]
    assert [i["id"] for i in listed] == [iid]

    alerts = boss.get("/api/v1/team/alerts").json()
    assert alerts == {"items": [{"employeeId": employee, "employeeName": name,
                                 "support": "Emergency Counseling",
                                 "since": alerts["items"][0]["since"]}]}  # fmt: skip
    assert_nothing_financial(alerts, employee, seeded)
    inbox = boss.get("/api/v1/notifications").json()
    assert_nothing_financial(inbox, employee, seeded)
    overview = boss.get("/api/v1/team/overview").json()
    assert overview["teamSize"] == len(reports_of(manager)) + sum(
        1 for u, m in zip(POPULATION.user_id, POPULATION.manager_id, strict=True)
        if m == manager and int(u) not in EMPLOYEES
    )  # fmt: skip
    assert all(v in ("<5", "suppressed") or (isinstance(v, int) and v >= 5)
               for v in overview["segments"].values())  # fmt: skip

    # The flow, each step told to the employee; never backwards.
    r = helper.request("PATCH", f"/api/v1/interventions/{iid}",
                       {"status": "contacted", "note": "Called, meeting Monday"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["notes"][-1]["note"] == "Called, meeting Monday"
    (told,) = await notifications(sockets[me], 1)
    assert told["data"] == {"interventionId": iid, "status": "contacted", "crisis": True}
    back = helper.request("PATCH", f"/api/v1/interventions/{iid}", {"status": "open"})
    assert back.status_code == 409 and "status" in back.json()["error"]["message"]
    bad = helper.request("PATCH", f"/api/v1/interventions/{iid}", {"status": "done"})
    assert bad.status_code == 422

    # Leaving crisis resolves what was only contacted; the manager's alert goes away.
    admin.put(f"/api/v1/employees/{employee}/inputs", RICH)
    got = await notifications(sockets[me], 2)
    resolved = [n for n in got if n["type"] == "intervention_update"]
    assert resolved and resolved[0]["data"]["status"] == "resolved"
    assert _intervention_of(seeded, employee)[2] == "resolved"
    assert boss.get("/api/v1/team/alerts").json() == {"items": []}
    await nothing_more(sockets[boss])
    for ws in sockets.values():
        await ws.close()


async def test_no_free_counselor_alerts_admins_and_the_next_free_slot_takes_the_queue(
    live_sqlite: tuple[Database, LiveServer],
) -> None:
    db, server = live_sqlite
    first, second = calm(db, 10), calm(db, 11)
    lead, other = sorted(COUNSELORS)[:2]
    _capacity(db, lead, 1)
    _capacity(db, other, 0)
    admin, helper = As(server, db, ADMIN), As(server, db, lead)
    admin_ws, helper_ws = await admin.socket(), await helper.socket()
    await _drain(admin_ws)
    await _drain(helper_ws)

    admin.put(f"/api/v1/employees/{first}/inputs", POOR)
    (assigned,) = await notifications(helper_ws, 1)
    first_id = _intervention_of(db, first)[0]
    assert assigned["data"]["interventionId"] == first_id

    admin.put(f"/api/v1/employees/{second}/inputs", POOR)
    (alert,) = [n for n in await notifications(admin_ws, 1)]
    second_id, counselor, status = _intervention_of(db, second)
    assert (counselor, status) == (None, "open")
    assert alert["data"] == {"interventionId": second_id, "employeeId": second, "queued": True}

    r = helper.request("PATCH", f"/api/v1/interventions/{first_id}", {"status": "closed"})
    assert r.status_code == 200, r.text
    (taken,) = await notifications(helper_ws, 1)
    assert taken["data"] == {"interventionId": second_id, "employeeId": second}
    assert _intervention_of(db, second)[1] == lead
    closed_again = helper.request("PATCH", f"/api/v1/interventions/{first_id}",
                                  {"status": "resolved"})  # fmt: skip
    assert closed_again.status_code == 409
    await admin_ws.close()
    await helper_ws.close()


def test_small_counts_are_suppressed_so_that_subtraction_reveals_no_one() -> None:
    # A team of 6, 5 of them in one segment: showing 5 and "<5" would give the sixth away.
    six = suppress({"steady_performers": 5, "at_risk": 1, "rising_stars": 0,
                    "financial_champions": 0, "crisis_intervention": 0})  # fmt: skip
    assert six["at_risk"] == "<5" and six["steady_performers"] == "suppressed"
    assert not [v for v in six.values() if isinstance(v, int)]
    twelve = suppress({"steady_performers": 7, "at_risk": 5, "rising_stars": 0,
                       "financial_champions": 0, "crisis_intervention": 0})  # fmt: skip
    # The zeros are hidden (<5), and together with the next smallest count they hide 5 people.
    assert twelve["steady_performers"] == 7 and twelve["at_risk"] == "suppressed"
    big = suppress({"a": 10, "b": 7, "c": 3, "d": 4})
    assert big == {"a": 10, "b": 7, "c": "<5", "d": "<5"}


async def test_a_team_of_six_over_the_api(live_sqlite: tuple[Database, LiveServer]) -> None:
    db, server = live_sqlite
    now = datetime.now(UTC)
    ids = list(range(9001, 9008))
    rows = [{"id": ids[0], "email": "m6@x.test", "name": "Mia Six", "role": "manager",
             "manager_id": None, "department": "Ops", "is_active": True,
             "counselor_capacity": 0, "created_at": now}]  # fmt: skip
    rows += [{"id": i, "email": f"e{i}@x.test", "name": f"E {i}", "role": "employee",
              "manager_id": ids[0], "department": "Ops", "is_active": True,
              "counselor_capacity": 0, "created_at": now} for i in ids[1:]]  # fmt: skip
    execute(db, insert(User).values(rows))
    segments = ["steady_performers"] * 5 + ["at_risk"]
    execute(
        db,
        insert(EmployeeSegment).values(
            [
                {"user_id": i, "segment": s, "last_updated": now}
                for i, s in zip(ids[1:], segments, strict=True)
            ]
        ),
    )
    boss = As(server, db, ids[0])
    overview = boss.get("/api/v1/team/overview").json()
    assert overview["teamSize"] == 6
    assert overview["segments"]["at_risk"] == "<5"
    assert overview["segments"]["steady_performers"] == "suppressed"


async def test_who_may_see_what(live_sqlite: tuple[Database, LiveServer]) -> None:
    db, server = live_sqlite
    employee = calm(db, 20)
    manager = manager_of(employee)
    stranger_manager = next(m for m in MANAGERS if m != manager and reports_of(m))
    admin = As(server, db, ADMIN)
    admin.put(f"/api/v1/employees/{employee}/inputs", POOR)
    await asyncio.sleep(1.5)
    iid, assigned, _ = _intervention_of(db, employee)
    assert assigned is not None
    unassigned = next(c for c in COUNSELORS if c != assigned)
    who = {
        "employee": As(server, db, employee),
        "other employee": As(server, db, EMPLOYEES[21]),
        "other manager": As(server, db, stranger_manager),
        "unassigned counselor": As(server, db, unassigned),
        "assigned counselor": As(server, db, assigned),
        "admin": admin,
    }
    expected: dict[tuple[str, str], int] = {}
    checks = {
        "list": ("GET", "/api/v1/interventions", None),
        "get": ("GET", f"/api/v1/interventions/{iid}", None),
        "update": ("PATCH", f"/api/v1/interventions/{iid}", {"status": "contacted"}),
        "mine": ("GET", "/api/v1/me/intervention", None),
        "overview": ("GET", f"/api/v1/team/overview?managerId={manager}", None),
        "alerts": ("GET", f"/api/v1/team/alerts?managerId={manager}", None),
        "profile": ("GET", f"/api/v1/employees/{employee}/profile", None),
    }
    for name in who:
        for check in checks:
            expected[(name, check)] = 403
    expected |= {
        ("employee", "mine"): 200, ("employee", "profile"): 200,
        ("other employee", "mine"): 404,
        ("other manager", "mine"): 404,
        ("unassigned counselor", "list"): 200, ("unassigned counselor", "mine"): 404,
        ("assigned counselor", "list"): 200, ("assigned counselor", "get"): 200,
        ("assigned counselor", "update"): 200, ("assigned counselor", "mine"): 404,
        ("assigned counselor", "profile"): 200,
        ("admin", "list"): 200, ("admin", "get"): 200, ("admin", "update"): 409,
        ("admin", "mine"): 404, ("admin", "overview"): 200, ("admin", "alerts"): 200,
        ("admin", "profile"): 200,
    }  # fmt: skip
    got = {
        (name, check): client.request(method, path, body).status_code
        for name, client in who.items()
        for check, (method, path, body) in checks.items()
    }
    assert got == expected
    # Without naming another team, a manager sees their own (which this employee is not in).
    own = who["other manager"].get("/api/v1/team/alerts").json()
    assert all(a["employeeId"] != employee for a in own["items"])
    listed = who["unassigned counselor"].get("/api/v1/interventions").json()["items"]
    assert iid not in [i["id"] for i in listed]
    assert all(i["counselorId"] == unassigned for i in listed)
    assert admin.get("/api/v1/team/overview").status_code == 400
