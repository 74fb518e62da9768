"""Crisis interventions and what managers and counselors may see (SPEC §5, §6.4, §9), end to end
from a change of data to what real WebSocket clients receive."""

from __future__ import annotations

import itertools
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from tests.conftest import Database, LiveServer
from tests.integration.commands import treevu
from tests.integration.test_rewards import POOR, RICH
from tests.integration.workflow import (
    ADMIN,
    EMPLOYEES,
    POPULATION,
    As,
    execute,
    nothing_more,
    notifications,
    rows,
    scalar,
    stored,
    sync_engine,
)
from treevu.db import EmployeeInputs, EmployeeSegment, Intervention, User
from treevu.population import ROLES
from treevu.segmentation.engine import INPUT_NAMES
from treevu.segmentation.policy import RISK_LEVELS, SEGMENTS, SPENDING_LEVELS
from treevu.services.interventions import PLAN_STEPS
from treevu.services.jobs import run_now
from treevu.services.team import suppress

COUNSELORS = [int(u) for u, r in zip(POPULATION.user_id, POPULATION.role, strict=True)
              if r == ROLES.index("counselor")]  # fmt: skip
MANAGERS = [int(u) for u, r in zip(POPULATION.user_id, POPULATION.role, strict=True)
            if r == ROLES.index("manager")]  # fmt: skip
FIRST = "Meet your counselor within one business day"
#: Into crisis by risk alone (FWI 45): excessive spending raises a high risk to critical.
SPENDS = {**POOR, "monthlySpending": 3300, "monthlyDebtPayments": 0, "ewaAdvances30d": 0,
          "alerts30d": 0}  # fmt: skip
#: Into crisis by risk alone (FWI 34): three alerts raise a high risk to critical.
ALERTED = {**POOR, "monthlySpending": 1500, "alerts30d": 3}
#: At risk (FWI 36, risk high); the lowest survey score (14) takes the FWI to 29.4: crisis.
EDGE = {**POOR, "monthlySpending": 1500, "alerts30d": 2}
WORST_SURVEY = {"answers": ["not_at_all", "not_at_all", "completely", "not_at_all", "completely",
                            "completely", "always", "never", "always", "always"],
                "ageBand": "18-61", "mode": "self"}  # fmt: skip
#: The plan each kind of crisis gets: the first step, then one per reason of the profile.
PLANS = {
    "poor": [FIRST, PLAN_STEPS["fwi<30"], PLAN_STEPS["risk=critical"],
             PLAN_STEPS["risk_raised:spending"], PLAN_STEPS["risk_raised:alerts"]],
    "spends": [FIRST, PLAN_STEPS["risk=critical"], PLAN_STEPS["risk_raised:spending"]],
    "alerted": [FIRST, PLAN_STEPS["risk=critical"], PLAN_STEPS["risk_raised:alerts"]],
    "survey": [FIRST, PLAN_STEPS["fwi<30"], PLAN_STEPS["risk=critical"]],
}  # fmt: skip


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


def _roomy(db: Database) -> None:
    """Room for new cases with every counselor, whatever the seed has opened."""
    for counselor in COUNSELORS:
        _capacity(db, counselor, 10_000)


def _cases(db: Database, uid: int) -> list[dict[str, Any]]:
    """Every intervention of ``uid``, oldest first."""
    found = rows(
        db,
        select(Intervention.id, Intervention.counselor_id, Intervention.status,
               Intervention.plan, Intervention.notes)
        .where(Intervention.user_id == uid).order_by(Intervention.id),
    )  # fmt: skip
    keys = ("id", "counselorId", "status", "plan", "notes")
    return [dict(zip(keys, r, strict=True)) for r in found]


def _relay(server: LiveServer) -> None:
    """Relay every committed event now (on SQLite this waits for a relay pass under way)."""
    server.run(server.app_state().services.relay.drain()).result(timeout=60)


def assert_opened_once(db: Database, uid: int, plan: list[str]) -> dict[str, Any]:
    """``uid`` has exactly one intervention, open, with ``plan``, assigned to a counselor; the
    employee, their manager and that counselor were each told of it once."""
    (case,) = _cases(db, uid)
    assert case["status"] == "open" and case["counselorId"] in COUNSELORS, case
    assert case["plan"] == {"steps": plan}
    told = [d for d in stored(db, uid, "intervention_update") if d["interventionId"] == case["id"]]
    assert [(d["status"], d["crisis"], d["toSegment"]) for d in told] == [
        ("open", True, "crisis_intervention")
    ]
    for who, data in (
        (manager_of(uid), {"employeeId": uid, "support": "Emergency Counseling"}),
        (case["counselorId"], {"employeeId": uid}),
    ):
        got = [
            d for d in stored(db, who, "intervention_update") if d["interventionId"] == case["id"]
        ]
        assert len(got) == 1 and data.items() <= got[0].items(), (who, got)
    return case


async def _drain(ws: Any) -> None:
    while True:
        try:
            await notifications(ws, 1, timeout=0.7)
        except TimeoutError:
            return


def trpc(client: As, procedure: str, body: Any = None, mutation: bool = False) -> httpx.Response:
    """A tRPC call as ``client``: queries by GET with ``?input=``, mutations by POST."""
    if mutation:
        return client.trpc(procedure, body)
    query = {} if body is None else {"input": json.dumps(body)}
    return httpx.get(
        f"{client.server.url}/trpc/{procedure}", params=query, headers=client.headers, timeout=30
    )


def data(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["result"]["data"]


FORBIDDEN_WORDS = {
    *INPUT_NAMES, "fwiScore", "wellnessScore", "engagementScore", "riskLevel", "spendingLevel",
    "segment", "fromSegment", "toSegment", *SEGMENTS, *RISK_LEVELS, *SPENDING_LEVELS,
}  # fmt: skip


def _figures(db: Database, people: list[int]) -> set[str]:
    """Every score (as stored, 2 decimals) and non-zero amount of ``people``, as text."""
    engine = sync_engine(db)
    try:
        with Session(engine) as session:
            profiles = session.scalars(
                select(EmployeeSegment).where(EmployeeSegment.user_id.in_(people))
            ).all()
            inputs = session.scalars(
                select(EmployeeInputs).where(EmployeeInputs.user_id.in_(people))
            ).all()
            values = [(p.fwi_score, p.wellness_score, p.engagement_score) for p in profiles]
            amounts = [(i.monthly_income, i.monthly_spending, i.savings_balance) for i in inputs]
    finally:
        engine.dispose()
    scores = {f"{v:.2f}" for v in itertools.chain(*values) if v is not None}
    return scores | {str(int(a)) for a in itertools.chain(*amounts) if a}


def assert_nothing_financial(payload: Any, employee: int, db: Database) -> None:
    """No input name or value, score, level or segment name in what a manager can see about a
    person: in a payload that names someone, nothing may be tied to them but who and the
    kind of support."""
    text = json.dumps(payload)
    words = set(re.findall(r"[A-Za-z_<>=]+", text))
    assert not words & FORBIDDEN_WORDS, words & FORBIDDEN_WORDS
    numbers = set(re.findall(r"\d+(?:\.\d+)?", text))
    assert not numbers & _figures(db, [employee]), numbers & _figures(db, [employee])


def assert_overview_names_no_one(overview: dict[str, Any], manager: int, db: Database) -> None:
    """The overview is the one manager-visible payload with segment names, and only as the
    five fixed keys of ``segments`` (the same for every team): it names no one, and its only
    numbers are the manager's id, the team's size and counts of 5 or more — no figure of
    anyone."""
    assert set(overview) == {"managerId", "teamSize", "segments"}
    assert overview["managerId"] == manager
    assert list(overview["segments"]) == list(SEGMENTS)
    assert all(v in ("<5", "suppressed") or (isinstance(v, int) and v >= 5)
               for v in overview["segments"].values())  # fmt: skip
    team = [int(u) for u in POPULATION.user_id if manager_of(int(u)) == manager]
    names = set(rows(db, select(User.name).where(User.id.in_(team))))
    text = json.dumps(overview)
    assert not [n for (n,) in names if n in text]
    rest = json.dumps({**overview, "segments": list(overview["segments"].values())})
    assert not set(re.findall(r"[A-Za-z_<>=]+", rest)) & FORBIDDEN_WORDS


async def test_entering_crisis_opens_one_intervention_and_tells_each_once(
    live: LiveServer, seeded: Database
) -> None:
    employee = calm(seeded, 7)
    manager = manager_of(employee)
    admin = As(live, seeded, ADMIN)
    me, boss = As(live, seeded, employee), As(live, seeded, manager)
    helpers = {c: As(live, seeded, c) for c in COUNSELORS}
    sockets = {who: await who.socket() for who in (me, boss, *helpers.values())}
    for ws in sockets.values():
        await _drain(ws)

    assert admin.put(f"/api/v1/employees/{employee}/inputs", POOR).json()["segment"] == (
        "crisis_intervention"
    )
    (mine,) = await notifications(sockets[me], 1)
    (bosses,) = await notifications(sockets[boss], 1)
    iid, counselor, status = _intervention_of(seeded, employee)
    assert counselor in helpers and status == "open"
    helper = helpers[counselor]
    (assigned,) = await notifications(sockets[helper], 1)
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
    assert assigned["data"] == {"interventionId": iid, "employeeId": employee}

    # Again through every other path into the same state: nobody is told twice.
    admin.put(f"/api/v1/employees/{employee}/inputs", POOR)
    live.run(run_now(live.app_state().services, "profiles.refresh")).result(timeout=60)
    for ws in sockets.values():
        await nothing_more(ws)

    own = me.get("/api/v1/me/intervention").json()
    assert own["status"] == "open" and own["counselorId"] == counselor
    assert own["plan"] == {"steps": PLANS["poor"]}
    assert "notes" not in own
    assert data(trpc(me, "me.getIntervention")) == own
    listed = helper.get("/api/v1/interventions").json()["items"]
    assert [i["id"] for i in listed if i["userId"] == employee] == [iid]

    # Every payload a manager can get, over both transports.
    alerts = boss.get("/api/v1/team/alerts").json()
    (alert,) = [a for a in alerts["items"] if a["employeeId"] == employee]
    assert alert == {"employeeId": employee, "employeeName": name,
                     "support": "Emergency Counseling", "since": alert["since"]}  # fmt: skip
    assert data(trpc(boss, "team.getAlerts")) == alerts
    inbox = boss.get("/api/v1/notifications").json()
    history = data(trpc(boss, "websocket.getHistory"))
    for payload in (alerts, inbox, history):
        assert_nothing_financial(payload, employee, seeded)
    overview = boss.get("/api/v1/team/overview").json()
    assert data(trpc(boss, "team.getOverview")) == overview
    assert_overview_names_no_one(overview, manager, seeded)
    assert overview["teamSize"] == len(
        [u for u in POPULATION.user_id if manager_of(int(u)) == manager]
    )

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
    assert employee not in [
        a["employeeId"] for a in boss.get("/api/v1/team/alerts").json()["items"]
    ]
    await nothing_more(sockets[boss])
    for ws in sockets.values():
        await ws.close()


async def test_entering_crisis_through_a_survey_opens_one_intervention(
    live_sqlite: tuple[Database, LiveServer],
) -> None:
    db, server = live_sqlite
    employee = calm(db, 30)
    _roomy(db)
    admin, me = As(server, db, ADMIN), As(server, db, employee)
    assert admin.put(f"/api/v1/employees/{employee}/inputs", EDGE).json()["segment"] == "at_risk"
    _relay(server)
    assert _cases(db, employee) == []

    r = me.post(f"/api/v1/employees/{employee}/survey", WORST_SURVEY)
    assert r.status_code == 200, r.text
    assert me.get("/api/v1/me/profile").json()["segment"] == "crisis_intervention"
    _relay(server)
    case = assert_opened_once(db, employee, PLANS["survey"])
    assert data(trpc(me, "me.getIntervention"))["id"] == case["id"]


async def test_the_nightly_refresh_opens_one_intervention_with_a_plan_for_the_reasons(
    live_sqlite: tuple[Database, LiveServer],
) -> None:
    """Inputs changed behind the product's back (no recompute), then the nightly job runs:
    each person gets the steps of the catalog for their own reasons."""
    db, server = live_sqlite
    people = {"poor": calm(db, 40), "spends": calm(db, 41), "alerted": calm(db, 42)}
    _roomy(db)
    table = EmployeeInputs.metadata.tables[EmployeeInputs.__tablename__]  # columns: the inputs
    for kind, values in (("poor", POOR), ("spends", SPENDS), ("alerted", ALERTED)):
        execute(db, update(table).where(table.c.userId == people[kind]).values(values))
    _relay(server)
    assert [_cases(db, uid) for uid in people.values()] == [[], [], []]

    server.run(run_now(server.app_state().services, "profiles.refresh")).result(timeout=60)
    _relay(server)
    for kind, uid in people.items():
        assert_opened_once(db, uid, PLANS[kind])


def test_importing_inputs_opens_one_intervention(seeded_sqlite: Database, tmp_path: Path) -> None:
    employee = calm(seeded_sqlite, 50)
    _roomy(seeded_sqlite)
    path = tmp_path / "inputs.csv"
    record = {**POOR, "userId": employee, "surveyScore": ""}
    header = ["userId", *INPUT_NAMES]
    path.write_text(
        ",".join(header) + "\n" + ",".join(str(record[h]) for h in header) + "\n", "utf-8"
    )
    out = treevu(seeded_sqlite, "import", "inputs", str(path))
    assert "recomputed 1 profiles" in out
    assert_opened_once(seeded_sqlite, employee, PLANS["poor"])
    # Importing the same again is no new way into crisis: nothing more is opened.
    treevu(seeded_sqlite, "import", "inputs", str(path))
    assert len(_cases(seeded_sqlite, employee)) == 1


def _case_row(uid: int, counselor: int | None, status: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    ended = now if status in ("resolved", "closed") else None
    return {
        "user_id": uid, "counselor_id": counselor, "kind": "crisis", "status": status,
        "plan": {}, "notes": [], "created_at": now, "updated_at": now, "ended_at": ended,
    }  # fmt: skip


def _open_cases(db: Database, loads: dict[int, int], ended: dict[int, int]) -> None:
    """Give each counselor ``loads[c]`` active cases and ``ended[c]`` ended ones, of people
    who are not in this test otherwise."""
    others = iter(EMPLOYEES[-60:])
    active = itertools.cycle(("open", "contacted", "in_progress"))
    done = itertools.cycle(("resolved", "closed"))
    values = [_case_row(next(others), c, s) for c, n in loads.items()
              for s in itertools.islice(active, n)]  # fmt: skip
    values += [_case_row(next(others), c, s) for c, n in ended.items()
               for s in itertools.islice(done, n)]  # fmt: skip
    execute(db, insert(Intervention).values(values))


async def test_the_least_loaded_counselor_is_assigned_ties_to_the_lowest_id(
    live_sqlite: tuple[Database, LiveServer],
) -> None:
    db, server = live_sqlite
    _relay(server)
    execute(db, delete(Intervention))
    low, high = sorted(COUNSELORS)[:2]
    now = datetime.now(UTC)
    # An inactive counselor and one without capacity, both idle: never chosen.
    execute(db, insert(User).values([
        {"id": 9050 + i, "email": f"c{i}@x.test", "name": f"C {i}", "role": "counselor",
         "manager_id": None, "department": "Care", "is_active": active,
         "counselor_capacity": cap, "created_at": now}
        for i, (active, cap) in enumerate(((False, 10), (True, 0)))
    ]))  # fmt: skip
    # The lowest id has more open cases (2) than the other (1, and 3 that ended).
    _open_cases(db, {low: 2, high: 1}, {high: 3})
    admin = As(server, db, ADMIN)
    chosen = []
    for skip in (60, 61, 62):
        employee = calm(db, skip)
        admin.put(f"/api/v1/employees/{employee}/inputs", POOR)
        _relay(server)
        chosen.append(_intervention_of(db, employee)[1])
    # 2 against 1: the less loaded; then 2 against 2: the lowest id; then 3 against 2.
    assert chosen == [high, low, high]


@pytest.mark.parametrize("ending", ["closed", "resolved"])
async def test_no_free_counselor_alerts_admins_and_the_next_free_slot_takes_the_queue(
    live_sqlite: tuple[Database, LiveServer], ending: str
) -> None:
    db, server = live_sqlite
    _relay(server)
    first, second = calm(db, 10), calm(db, 11)
    lead, other = sorted(COUNSELORS)[:2]
    execute(db, delete(Intervention))
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

    # Either end frees the slot; the queued case takes it.
    r = helper.request("PATCH", f"/api/v1/interventions/{first_id}", {"status": ending})
    assert r.status_code == 200, r.text
    (taken,) = await notifications(helper_ws, 1)
    assert taken["data"] == {"interventionId": second_id, "employeeId": second}
    assert _intervention_of(db, second)[1] == lead
    other_end = "closed" if ending == "resolved" else "resolved"
    ended_again = helper.request(
        "PATCH", f"/api/v1/interventions/{first_id}", {"status": other_end}
    )
    assert ended_again.status_code == 409
    await admin_ws.close()
    await helper_ws.close()


async def test_leaving_crisis_while_in_progress_adds_a_note_and_keeps_the_case(
    live_sqlite: tuple[Database, LiveServer],
) -> None:
    """SPEC §9: leaving crisis "resolves or updates" the intervention: one already in progress
    stays with its counselor, noted, and the employee is told; it still takes their slot."""
    db, server = live_sqlite
    employee = calm(db, 70)
    _roomy(db)
    admin, boss = As(server, db, ADMIN), As(server, db, manager_of(employee))
    admin.put(f"/api/v1/employees/{employee}/inputs", POOR)
    _relay(server)
    (case,) = _cases(db, employee)
    helper = As(server, db, case["counselorId"])
    r = helper.request("PATCH", f"/api/v1/interventions/{case['id']}", {"status": "in_progress"})
    assert r.status_code == 200, r.text

    assert admin.put(f"/api/v1/employees/{employee}/inputs", RICH).json()["segment"] != (
        "crisis_intervention"
    )
    _relay(server)
    (kept,) = _cases(db, employee)
    assert kept["status"] == "in_progress" and kept["counselorId"] == case["counselorId"]
    assert kept["notes"][-1] | {"at": None} == {
        "at": None, "by": None, "status": None, "note": "left crisis_intervention on a recompute"
    }  # fmt: skip
    updates = stored(db, employee, "intervention_update")
    assert updates[-1] == {"interventionId": case["id"], "status": "in_progress", "crisis": True}
    assert employee in [a["employeeId"] for a in boss.get("/api/v1/team/alerts").json()["items"]]
    listed = helper.get("/api/v1/interventions?status=in_progress").json()["items"]
    assert case["id"] in [i["id"] for i in listed]

    # Back into crisis while it is still in progress: no second intervention.
    admin.put(f"/api/v1/employees/{employee}/inputs", POOR)
    _relay(server)
    assert [c["id"] for c in _cases(db, employee)] == [case["id"]]


SEGMENT_CELLS = ("steady_performers", "at_risk", "rising_stars", "financial_champions",
                 "crisis_intervention")  # fmt: skip


def test_small_counts_are_suppressed_so_that_subtraction_reveals_no_one() -> None:
    # A team of 6, 5 of them in one segment: showing 5 and "<5" would give the sixth away.
    six = suppress(dict(zip(SEGMENT_CELLS, (5, 1, 0, 0, 0), strict=True)))
    assert six["at_risk"] == "<5" and six["steady_performers"] == "suppressed"
    assert not [v for v in six.values() if isinstance(v, int)]
    # What is hidden adds up to 0: the manager may work out that those segments are empty,
    # which reveals no one, so 7 and 5 are shown.
    twelve = suppress(dict(zip(SEGMENT_CELLS, (7, 5, 0, 0, 0), strict=True)))
    assert twelve == dict(zip(SEGMENT_CELLS, (7, 5, "<5", "<5", "<5"), strict=True))
    # A report without a profile counts in the team's size: 1 hidden person, so 5 goes too.
    assert suppress(dict(zip(SEGMENT_CELLS, (7, 5, 0, 0, 0), strict=True)), unplaced=1) == dict(
        zip(SEGMENT_CELLS, (7, "suppressed", "<5", "<5", "<5"), strict=True)
    )
    assert suppress({"a": 10, "b": 7, "c": 3, "d": 4}) == {"a": 10, "b": 7, "c": "<5", "d": "<5"}
    # The alerts name the 4 in crisis: the one other hidden person would be worked out from
    # the size, 5 shown and the 4 named, so the 5 are hidden too.
    ten = suppress(
        dict(zip(SEGMENT_CELLS, (5, 1, 0, 0, 4), strict=True)), {"crisis_intervention": 4}
    )
    assert not [v for v in ten.values() if isinstance(v, int)]
    # 6 in crisis, 4 of them named: the 2 others would be worked out: not shown.
    assert suppress({"s": 7, "c": 6, "a": 5}, {"c": 4})["c"] == "suppressed"
    assert suppress({"s": 7, "c": 6, "a": 5}, {"c": 6}) == {"s": 7, "c": 6, "a": 5}


def test_no_breakdown_lets_anyone_work_out_a_count_under_5() -> None:
    """Every team of up to 14 over three segments, with 0-3 of the crisis segment named by the
    alerts and 0-1 reports without a profile: whatever the manager adds or subtracts (the
    cells shown, the team's size, the people named) gives 0 or at least 5 unnamed people
    in a set of segments."""
    checked = 0
    for n in itertools.product(range(10), range(8), range(7)):
        for named in range(min(n[2], 3) + 1):
            for unplaced in (0, 1):
                counts = {"s": n[0], "a": n[1], "c": n[2]}
                cells = suppress(counts, {"c": named}, unplaced)
                unnamed = {**counts, "c": n[2] - named}
                for k, cell in cells.items():
                    assert (
                        cell == counts[k] if isinstance(cell, int) else cell in ("<5", "suppressed")
                    )
                    assert cell != "<5" or counts[k] < 5
                    assert cell != "suppressed" or counts[k] >= 5
                shown = [k for k, c in cells.items() if isinstance(c, int)]
                assert all(unnamed[k] == 0 or unnamed[k] >= 5 for k in shown), (counts, cells)
                hidden = unplaced + sum(unnamed[k] for k in counts if k not in shown)
                # (With nothing shown, the manager learns only the size, which they know.)
                assert not shown or hidden == 0 or hidden >= 5, (counts, named, unplaced, cells)
                checked += 1
    assert checked > 1000


def _team(db: Database, segments: list[str], first_id: int = 9001) -> list[int]:
    """A manager (the first id) and one report in each of ``segments``."""
    now = datetime.now(UTC)
    ids = list(range(first_id, first_id + len(segments) + 1))
    people = [{"id": ids[0], "email": f"m{ids[0]}@x.test", "name": f"Mia {ids[0]}",
               "role": "manager", "manager_id": None, "department": "Ops", "is_active": True,
               "counselor_capacity": 0, "created_at": now}]  # fmt: skip
    people += [{"id": i, "email": f"e{i}@x.test", "name": f"E {i}", "role": "employee",
                "manager_id": ids[0], "department": "Ops", "is_active": True,
                "counselor_capacity": 0, "created_at": now} for i in ids[1:]]  # fmt: skip
    execute(db, insert(User).values(people))
    execute(
        db,
        insert(EmployeeSegment).values(
            [
                {"user_id": i, "segment": s, "last_updated": now}
                for i, s in zip(ids[1:], segments, strict=True)
            ]
        ),
    )
    return ids


def _supported(db: Database, people: list[int], status: str = "open") -> None:
    execute(db, insert(Intervention).values([_case_row(uid, None, status) for uid in people]))


def _overview(boss: As) -> dict[str, Any]:
    """The overview over REST, the same over tRPC, asked again: a second query of the same
    state always answers the same."""
    first = boss.get("/api/v1/team/overview").json()
    assert data(trpc(boss, "team.getOverview")) == first == boss.get("/api/v1/team/overview").json()
    return dict(first)


async def test_a_team_of_six_over_the_api(live_sqlite: tuple[Database, LiveServer]) -> None:
    db, server = live_sqlite
    ids = _team(db, ["steady_performers"] * 5 + ["at_risk"])
    overview = _overview(As(server, db, ids[0]))
    assert overview["teamSize"] == 6
    assert overview["segments"]["at_risk"] == "<5"
    assert overview["segments"]["steady_performers"] == "suppressed"


async def test_the_overview_and_the_alerts_together_single_no_one_out(
    live_sqlite: tuple[Database, LiveServer],
) -> None:
    """The second query a manager has at the same moment is team.getAlerts: the people it
    names are known, so the overview hides what they would let the manager work out."""
    db, server = live_sqlite
    # 10 reports: 5 steady, 4 in crisis (each named by an alert), 1 at risk. Showing the
    # 5 would leave one person, unnamed, in the rest: the at-risk one.
    ids = _team(db, ["steady_performers"] * 5 + ["crisis_intervention"] * 4 + ["at_risk"])
    _supported(db, ids[6:10])
    boss = As(server, db, ids[0])
    alerts = boss.get("/api/v1/team/alerts").json()["items"]
    assert sorted(a["employeeId"] for a in alerts) == ids[6:10]
    overview = _overview(boss)
    assert overview["segments"]["steady_performers"] == "suppressed"
    assert not [v for v in overview["segments"].values() if isinstance(v, int)]

    # 11 reports: 6 steady — one of them (named by an alert) has left crisis while their
    # counselor works on — and 5 at risk. They are counted under crisis, so the overview does
    # not tell the manager that the person they were told of is no longer in crisis.
    ids = _team(db, ["steady_performers"] * 6 + ["at_risk"] * 5, first_id=9101)
    _supported(db, [ids[1]], "in_progress")
    overview = _overview(As(server, db, ids[0]))
    assert overview["segments"] == {
        "crisis_intervention": "<5", "at_risk": 5, "financial_champions": "<5",
        "rising_stars": "<5", "steady_performers": 5,
    }  # fmt: skip


async def test_who_may_see_what(live_sqlite: tuple[Database, LiveServer]) -> None:
    """Each caller, each endpoint, over REST and over tRPC: the same status, and where it is
    200, the same answer."""
    db, server = live_sqlite
    employee = calm(db, 20)
    _roomy(db)
    manager = manager_of(employee)
    stranger_manager = next(m for m in MANAGERS if m != manager and reports_of(m))
    admin = As(server, db, ADMIN)
    admin.put(f"/api/v1/employees/{employee}/inputs", POOR)
    _relay(server)
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
    ref, team = {"interventionId": iid}, {"managerId": manager}
    # (REST method, path, body), (tRPC procedure, input, is a mutation). The update moves
    # on a step over each transport, so the assigned counselor may make it both times.
    checks: dict[str, Any] = {
        "list": (("GET", "/api/v1/interventions", None), ("interventions.list", None, False)),
        "get": (("GET", f"/api/v1/interventions/{iid}", None), ("interventions.get", ref, False)),
        "update": (
            ("PATCH", f"/api/v1/interventions/{iid}", {"status": "contacted"}),
            ("interventions.update", {**ref, "status": "in_progress"}, True),
        ),
        "mine": (("GET", "/api/v1/me/intervention", None), ("me.getIntervention", None, False)),
        "overview": (
            ("GET", f"/api/v1/team/overview?managerId={manager}", None),
            ("team.getOverview", team, False),
        ),
        "alerts": (
            ("GET", f"/api/v1/team/alerts?managerId={manager}", None),
            ("team.getAlerts", team, False),
        ),
        "profile": (
            ("GET", f"/api/v1/employees/{employee}/profile", None),
            ("segmentation.getWellnessProfile", {"userId": employee}, False),
        ),
    }
    expected = dict.fromkeys(itertools.product(who, checks), 403)
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
    rest: dict[tuple[str, str], int] = {}
    over_trpc: dict[tuple[str, str], int] = {}
    for (name, check), client in ((k, who[k[0]]) for k in expected):
        (method, path, body), (procedure, inp, mutation) = checks[check]
        by_rest = client.request(method, path, body)
        by_trpc = trpc(client, procedure, inp, mutation)
        rest[(name, check)], over_trpc[(name, check)] = by_rest.status_code, by_trpc.status_code
        if by_rest.status_code == 200 and by_trpc.status_code == 200 and check != "update":
            assert by_trpc.json()["result"]["data"] == by_rest.json(), (name, check)
        if by_trpc.status_code != 200:
            error = by_trpc.json()["error"]["data"]
            assert error["httpStatus"] == by_trpc.status_code, (name, check, error)
    assert rest == expected
    assert over_trpc == expected
    assert _intervention_of(db, employee)[2] == "in_progress"
    # Without naming another team, a manager sees their own (which this employee is not in).
    own = who["other manager"].get("/api/v1/team/alerts").json()
    assert all(a["employeeId"] != employee for a in own["items"])
    assert data(trpc(who["other manager"], "team.getAlerts")) == own
    listed = who["unassigned counselor"].get("/api/v1/interventions").json()["items"]
    assert iid not in [i["id"] for i in listed]
    assert all(i["counselorId"] == unassigned for i in listed)
    assert admin.get("/api/v1/team/overview").status_code == 400
    assert trpc(admin, "team.getOverview").status_code == 400
