"""The stock npm ``@trpc/client`` against the live ``/trpc`` adapter.

``tests/js/trpc_check.mjs`` calls procedures through ``httpLink`` and ``httpBatchLink`` and prints
every answer, every client error and every request the links sent; here those answers are held
against the REST API and the database, and the requests against tRPC's wire format.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, pool, select, text
from sqlalchemy.orm import Session

from tests.conftest import REQUIRE_SERVERS, Database, LiveServer, token_for
from treevu.db import EmployeeSegment, User

JS_DIR = Path(__file__).resolve().parents[1] / "js"
Json = dict[str, Any]


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` binary, with ``tests/js`` installed from its lock file (once a session)."""
    node_bin, npm_bin = shutil.which("node"), shutil.which("npm")
    if node_bin is None or npm_bin is None:
        if REQUIRE_SERVERS:
            pytest.fail("node and npm are required when TREEVU_TEST_REQUIRE_SERVERS=1")
        pytest.skip("node or npm is not installed")
    install = "ci" if (JS_DIR / "package-lock.json").exists() else "install"
    done = subprocess.run(
        [npm_bin, install, "--no-audit", "--no-fund"],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"npm {install} failed in {JS_DIR}:\n{done.stdout}\n{done.stderr}")
    return node_bin


def _run_check(node: str, db: Database, server: LiveServer, employee_id: int) -> Json:
    env = {
        **os.environ,
        "TREEVU_ADMIN_TOKEN": token_for(db, 1),
        "TREEVU_EMPLOYEE_TOKEN": token_for(db, employee_id),
        "TREEVU_EMPLOYEE_ID": str(employee_id),
    }
    done = subprocess.run(
        [node, "trpc_check.mjs", server.url],
        cwd=JS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"trpc_check.mjs failed:\n{done.stderr}"
    out: Json = json.loads(done.stdout)
    return out


@pytest.fixture
def db_session(live_sqlite: tuple[Database, LiveServer]) -> Iterator[Session]:
    engine = create_engine(live_sqlite[0].settings().sync_database_url, poolclass=pool.NullPool)
    with Session(engine) as session:
        yield session
    engine.dispose()


@pytest.fixture
def employee_id(db_session: Session) -> int:
    """The first employee with a computed profile."""
    found = db_session.scalar(
        select(User.id)
        .join(EmployeeSegment, EmployeeSegment.user_id == User.id)
        .where(User.role == "employee")
        .order_by(User.id)
        .limit(1)
    )
    assert found is not None
    return found


def _ok(answer: Json) -> Any:
    assert answer["ok"], answer
    return answer["data"]


def _failed(answer: Json, code: str, status: int, rpc_code: int, path: str) -> None:
    assert not answer["ok"], answer
    error = answer["error"]
    assert error["trpc"], error  # a TRPCClientError built from the server's envelope
    assert (error["code"], error["httpStatus"], error["jsonRpcCode"], error["path"]) == (
        code,
        status,
        rpc_code,
        path,
    ), error
    assert error["message"]


def test_stock_client_answers_match_rest_and_database(
    live_sqlite: tuple[Database, LiveServer], node: str, db_session: Session, employee_id: int
) -> None:
    db, server = live_sqlite
    admin_token, employee_token = token_for(db, 1), token_for(db, employee_id)

    out = _run_check(node, db, server, employee_id)

    admin = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin_token}"})
    employee = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {employee_token}"}
    )
    with admin, employee:

        def rest(client: httpx.Client, url: str) -> Any:
            response = client.get(url)
            assert response.status_code == 200, response.text
            return response.json()

        distribution = rest(admin, "/api/v1/segments/distribution")
        risk = rest(admin, "/api/v1/segments/risk-distribution")
        stats_at_risk = rest(admin, "/api/v1/segments/at_risk/stats")
        stats_champions = rest(admin, "/api/v1/segments/financial_champions/stats")
        employees_at_risk = rest(admin, "/api/v1/segments/at_risk/employees?limit=5")
        targets = rest(
            admin, "/api/v1/segments/at_risk/campaign-targets?campaignType=intervention&limit=10"
        )
        profile = rest(employee, "/api/v1/me/profile")
        recommendations = rest(employee, f"/api/v1/employees/{employee_id}/recommendations?limit=3")
        inbox = rest(employee, "/api/v1/notifications?limit=5")
        unread = rest(employee, "/api/v1/notifications/unread-count")
        preferences = rest(employee, "/api/v1/notifications/preferences")

    scored = db_session.scalar(select(func.count()).select_from(EmployeeSegment))
    per_segment = dict(
        db_session.execute(
            select(EmployeeSegment.segment, func.count()).group_by(EmployeeSegment.segment)
        ).all()
    )
    first_at_risk = list(
        db_session.scalars(
            select(EmployeeSegment.user_id)
            .where(EmployeeSegment.segment == "at_risk")
            .order_by(EmployeeSegment.user_id)
            .limit(5)
        )
    )
    own_segment = db_session.scalar(
        select(EmployeeSegment.segment).where(EmployeeSegment.user_id == employee_id)
    )

    # One request per call (httpLink) and one batch per tick (httpBatchLink) agree with REST.
    for answers in (out["http"], out["batch"]):
        assert _ok(answers["distribution"]) == distribution
        assert _ok(answers["risk"]) == risk
        assert _ok(answers["statsAtRisk"]) == stats_at_risk
        assert _ok(answers["employeesAtRisk"]) == employees_at_risk
        assert _ok(answers["campaignTargets"]) == targets
    assert _ok(out["batch"]["statsChampions"]) == stats_champions
    for answers in (out["http"], out["batchEmployee"]):
        assert _ok(answers["profile"]) == profile
        assert _ok(answers["recommendations"]) == recommendations
        current = _ok(answers["currentSegment"])
        assert (current["userId"], current["segment"]) == (employee_id, profile["segment"])

    # … and with the database.
    assert distribution["total"] == scored
    assert {b["name"]: b["count"] for b in distribution["buckets"]} == {
        name: per_segment.get(name, 0) for name in (b["name"] for b in distribution["buckets"])
    }
    assert stats_at_risk["count"] == per_segment["at_risk"]
    assert [e["userId"] for e in employees_at_risk["items"]] == first_at_risk
    assert targets["total"] == per_segment["at_risk"]
    assert (profile["userId"], profile["segment"]) == (employee_id, own_segment)
    assert [r["rank"] for r in recommendations] == list(range(1, len(recommendations) + 1))
    assert 1 <= len(recommendations) <= 3

    # Mutations: nothing changed since seeding, so a recompute scores everyone and writes nothing.
    for answers in (out["http"], out["batchMutation"]):
        recompute = _ok(answers["recompute"])
        assert (recompute["scored"], recompute["written"], recompute["segmentChanges"]) == (
            scored,
            0,
            0,
        )

    # The inbox: an admin's notification arrives, is read through a batched mutation, and the
    # counts and preferences the client saw are the ones REST reports afterwards.
    before = _ok(out["inbox"]["before"]["unread"])["count"]
    created = _ok(out["inbox"]["created"])
    assert (created["type"], created["read"]) == ("milestone", False)
    assert _ok(out["inbox"]["after"]["unread"])["count"] == before + 1
    assert _ok(out["inbox"]["after"]["history"])["items"][0]["id"] == created["id"]
    assert _ok(out["inbox"]["read"]["markAsRead"]) == {"updated": 1, "unreadCount": before}
    assert _ok(out["inbox"]["read"]["preferences"])["enableMilestones"] is False
    assert _ok(out["inbox"]["final"]["unread"]) == unread == {"count": before}
    assert _ok(out["inbox"]["final"]["preferences"]) == preferences
    assert (inbox["items"][0]["id"], inbox["items"][0]["read"]) == (created["id"], True)

    # Errors arrive as TRPCClientError with tRPC's codes, singly and inside a batch.
    seg = "segmentation"
    errors = out["errors"]
    _failed(
        out["batchEmployee"]["forbidden"], "FORBIDDEN", 403, -32003, f"{seg}.getSegmentDistribution"
    )
    _failed(errors["forbidden"], "FORBIDDEN", 403, -32003, f"{seg}.getSegmentDistribution")
    _failed(errors["forbiddenBatch"], "FORBIDDEN", 403, -32003, f"{seg}.getRiskDistribution")
    _failed(errors["forbiddenMutation"], "FORBIDDEN", 403, -32003, f"{seg}.bulkUpdateSegments")
    _failed(errors["badInput"], "BAD_REQUEST", 400, -32600, f"{seg}.getSegmentStats")
    _failed(errors["badInputBatch"], "BAD_REQUEST", 400, -32600, f"{seg}.getSegmentEmployees")
    _failed(errors["missingInput"], "BAD_REQUEST", 400, -32600, f"{seg}.getSegmentStats")
    _failed(errors["notFound"], "NOT_FOUND", 404, -32004, f"{seg}.noSuchProcedure")
    _failed(errors["notFoundBatch"], "NOT_FOUND", 404, -32004, "nowhere")
    _failed(errors["unauthorized"], "UNAUTHORIZED", 401, -32001, f"{seg}.getWellnessProfile")
    for name, path in (
        ("queryAsMutation", "getSegmentDistribution"),
        ("mutationAsQuery", "bulkUpdateSegments"),
        # Like a tRPC server without allowMethodOverride, queries sent by POST are refused.
        ("methodOverride", "getSegmentDistribution"),
    ):
        _failed(errors[name], "METHOD_NOT_SUPPORTED", 405, -32005, f"{seg}.{path}")


def test_stock_client_speaks_the_wire_format_the_adapter_reads(
    live_sqlite: tuple[Database, LiveServer], node: str, employee_id: int
) -> None:
    """What the links put on the wire, so a change in a new @trpc/client release shows here."""
    db, server = live_sqlite
    out = _run_check(node, db, server, employee_id)
    requests: list[Json] = out["requests"]
    assert all(r["responseContentType"] == "application/json" for r in requests)
    assert all(r["trpcAccept"] is None for r in requests)  # only the JSONL stream link sets it

    def sent(link: str, method: str, path: str) -> Json:
        matches = [
            r
            for r in requests
            if r["link"] == link and r["method"] == method and r["path"] == f"/trpc/{path}"
        ]
        assert matches, (link, method, path)
        return matches[0]

    seg = "segmentation"
    # httpLink: a query without input sends no ?input=; with input, JSON in ?input=.
    no_input = sent("http:auth", "GET", f"{seg}.getSegmentDistribution")
    assert (no_input["query"], no_input["body"], no_input["contentType"]) == ({}, None, None)
    assert no_input["authorization"] == "Bearer"
    with_input = sent("http:auth", "GET", f"{seg}.getSegmentStats")
    assert json.loads(with_input["query"]["input"]) == {"segment": "at_risk"}
    # httpLink: a mutation is a POST with a JSON content type and, without input, no body.
    mutation = sent("http:auth", "POST", f"{seg}.bulkUpdateSegments")
    assert (mutation["query"], mutation["body"]) == ({}, None)
    assert mutation["contentType"] == "application/json"
    assert mutation["status"] == 200

    # httpBatchLink: one GET for the calls of a tick, paths joined by commas, ?batch=1, and the
    # inputs keyed by position, calls without input left out ({} when none has any).
    batched = [r for r in requests if r["link"] == "batch:auth" and r["method"] == "GET"]
    first = batched[0]
    assert first["path"] == "/trpc/" + ",".join(
        f"{seg}.{name}"
        for name in (
            "getSegmentDistribution",
            "getRiskDistribution",
            "getSegmentStats",
            "getSegmentStats",
            "getSegmentEmployees",
            "getCampaignTargets",
        )
    )
    assert first["query"]["batch"] == "1"
    assert json.loads(first["query"]["input"]) == {
        "2": {"segment": "at_risk"},
        "3": {"segment": "financial_champions"},
        "4": {"segment": "at_risk", "limit": 5},
        "5": {"segment": "at_risk", "campaignType": "intervention", "limit": 10},
    }
    assert first["status"] == 200
    lone = sent("batch:auth", "GET", f"{seg}.getRiskDistribution")
    assert lone["query"] == {"batch": "1", "input": "{}"}
    # Mixed outcomes in one batch (an employee's own profile, then an admin statistic) answer
    # 207 Multi-Status, as tRPC v11 does.
    mixed = batched[1]
    assert mixed["path"].startswith(f"/trpc/{seg}.getWellnessProfile,")
    assert mixed["path"].endswith(f",{seg}.getSegmentDistribution")
    assert mixed["status"] == 207
    # httpBatchLink: mutations are a POST with the inputs object as the JSON body.
    batch_mutation = sent("batch:auth", "POST", f"{seg}.bulkUpdateSegments")
    assert batch_mutation["query"] == {"batch": "1"}
    assert (batch_mutation["body"], batch_mutation["contentType"]) == ("{}", "application/json")
    # … and with inputs, the body is keyed by position like ?input= is for queries.
    inbox_mutations = sent("batch:auth", "POST", "websocket.markAsRead,websocket.updatePreferences")
    body = json.loads(inbox_mutations["body"])
    assert set(body) == {"0", "1"}
    assert body["1"] == {"enableMilestones": False}
    # httpLink: a mutation with input sends it as the raw JSON body.
    create = sent("http:auth", "POST", "notifications.create")
    assert json.loads(create["body"])["type"] == "milestone"
    assert create["contentType"] == "application/json"


def test_unexpected_failure_answers_in_the_trpc_envelope(
    live_sqlite: tuple[Database, LiveServer],
) -> None:
    """A crash inside a procedure is INTERNAL_SERVER_ERROR JSON; the rest of its batch still runs.

    The shape is what ``@trpc/client`` needs to build a ``TRPCClientError`` (``error.code`` a
    number, ``error.message`` a string); a text/plain 500 would fail every call in the batch.
    """
    db, server = live_sqlite
    engine = create_engine(db.settings().sync_database_url, poolclass=pool.NullPool)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE employee_segments RENAME TO employee_segments_gone"))
    engine.dispose()
    seg = "segmentation"
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token_for(db, 1)}"}
    ) as client:
        single = client.get(f"/trpc/{seg}.getSegmentDistribution")
        batch = client.get(
            f"/trpc/{seg}.getSegmentDistribution,{seg}.getPolicy", params={"batch": "1"}
        )
    assert single.status_code == 500
    assert single.headers["content-type"] == "application/json"
    assert single.json() == {
        "error": {
            "message": "Internal server error",
            "code": -32603,
            "data": {
                "code": "INTERNAL_SERVER_ERROR",
                "httpStatus": 500,
                "path": f"{seg}.getSegmentDistribution",
            },
        }
    }
    assert batch.status_code == 207
    failed, policy = batch.json()
    assert failed["error"]["data"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "version" in policy["result"]["data"]
