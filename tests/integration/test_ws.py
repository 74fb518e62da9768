"""The /ws protocol of SPEC §4 against a real server on a real database (SQLite here; the
broker and two-node suites cover MariaDB, PostgreSQL and Redis)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest
import websockets
from sqlalchemy import create_engine, pool, select, update
from sqlalchemy.orm import Session
from websockets.asyncio.client import ClientConnection

from tests.conftest import SECRET, Database, LiveServer, seed_and_score, token_for
from treevu.db import AuditLog, NotificationQueue, User
from treevu.population import EMPLOYEE, generate_population

POP = generate_population(300, 7)
EMPLOYEES = [int(u) for u, r in zip(POP.user_id, POP.role, strict=True) if r == EMPLOYEE]
ALICE, BOB = EMPLOYEES[0], EMPLOYEES[1]
ADMIN = 1


@contextmanager
def serving(db: Database, **overrides: Any) -> Iterator[LiveServer]:
    settings = db.settings(heartbeat_interval=30, sweep_interval=0.3, **overrides)
    with LiveServer(settings) as server:
        yield server


@pytest.fixture
def db(sqlite_database: Database) -> Database:
    seed_and_score(sqlite_database)
    return sqlite_database


def ws_url(server: LiveServer, query: str = "") -> str:
    return server.url.replace("http", "ws", 1) + "/ws" + query


async def connect(
    server: LiveServer, token: str | None = None, query: str = "", **kw: Any
) -> ClientConnection:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return await websockets.connect(ws_url(server, query), additional_headers=headers, **kw)


async def recv(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return data


async def recv_type(ws: ClientConnection, kind: str, timeout: float = 5) -> dict[str, Any]:
    """Next message of ``kind``, skipping heartbeats and unread counts."""
    while True:
        msg = await recv(ws, timeout)
        if msg["type"] == kind:
            return msg
        assert msg["type"] in ("heartbeat", "unread_count"), msg


async def closed_with(ws: ClientConnection, timeout: float = 5) -> int:
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except websockets.ConnectionClosed as exc:
        assert exc.rcvd is not None
        return exc.rcvd.code
    raise AssertionError("not closed")


def admin_post(
    server: LiveServer,
    db: Database,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return httpx.post(
        server.url + path,
        json=body,
        headers={"Authorization": f"Bearer {token_for(db, ADMIN)}", **(headers or {})},
        timeout=10,
    )


def notify(server: LiveServer, db: Database, user_id: int, **fields: Any) -> dict[str, Any]:
    body = {
        "userId": user_id,
        "type": "milestone",
        "title": "Goal reached",
        "message": "You saved for 3 months",
        **fields,
    }
    r = admin_post(server, db, "/api/v1/admin/notifications", body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def rows(db: Database, *where: Any) -> list[NotificationQueue]:
    engine = create_engine(db.settings().sync_database_url, poolclass=pool.NullPool)
    with Session(engine) as s:
        found = list(
            s.scalars(select(NotificationQueue).where(*where).order_by(NotificationQueue.id))
        )
    engine.dispose()
    return found


async def wait_for(predicate: Any, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


# -- authentication and close codes ----------------------------------------------------------


async def test_header_auth_welcome_then_live_notification(db: Database) -> None:
    with serving(db) as server:
        ws = await connect(server, token_for(db, ALICE))
        welcome = await recv(ws)
        assert welcome["type"] == "welcome" and welcome["heartbeatInterval"] == 30
        assert welcome["unreadCount"] == 0 and welcome["connectionId"]
        created = notify(server, db, ALICE, data={"tierName": "Rising Stars"})
        got = await recv_type(ws, "notification")
        assert got["notification"] == created
        assert set(created) == {"id", "type", "title", "message", "data", "timestamp", "read"}
        await ws.close()


async def test_bad_header_token_refused_at_upgrade_with_401(db: Database) -> None:
    with serving(db) as server:
        with pytest.raises(websockets.InvalidStatus) as info:
            await connect(server, "not-a-token")
        assert info.value.response.status_code == 401
        expired = jwt.encode(
            {"sub": str(ALICE), "aud": "treevu", "exp": int(time.time()) - 100}, SECRET, "HS256"
        )
        with pytest.raises(websockets.InvalidStatus) as info:
            await connect(server, expired)
        assert info.value.response.status_code == 401


async def test_first_message_auth_and_its_close_codes(db: Database) -> None:
    with serving(db, ws_auth_timeout=0.5) as server:
        ws = await connect(server)
        await ws.send(json.dumps({"type": "auth", "token": token_for(db, ALICE)}))
        assert (await recv(ws))["type"] == "welcome"
        await ws.close()

        ws = await connect(server)
        await ws.send(json.dumps({"type": "auth", "token": "garbage"}))
        assert await closed_with(ws) == 4401

        ws = await connect(server)  # says nothing
        assert await closed_with(ws) == 4401

        ws = await connect(server)
        await ws.send(json.dumps({"type": "ack", "id": 1}))  # not auth first
        assert await closed_with(ws) == 4401

        expired = jwt.encode(
            {"sub": str(ALICE), "aud": "treevu", "exp": int(time.time()) - 100}, SECRET, "HS256"
        )
        ws = await connect(server)
        await ws.send(json.dumps({"type": "auth", "token": expired}))
        assert await closed_with(ws) == 4403


async def test_inactive_user_refused(db: Database) -> None:
    engine = create_engine(db.settings().sync_database_url, poolclass=pool.NullPool)
    with Session(engine) as s:
        s.execute(update(User).where(User.id == BOB).values(is_active=False))
        s.commit()
    engine.dispose()
    with serving(db) as server:
        ws = await connect(server)
        await ws.send(json.dumps({"type": "auth", "token": token_for(db, BOB)}))
        assert await closed_with(ws) == 4401


async def test_token_expiry_closes_at_heartbeat_with_4403(db: Database) -> None:
    with serving(db, jwt_leeway_seconds=0) as server:
        realtime = server.app_state().realtime
        ws = await connect(server, token_for(db, ALICE, ttl=2))
        assert (await recv(ws))["type"] == "welcome"
        # The heartbeat job runs every 30 s here; drive it directly like the scheduler would.
        await asyncio.sleep(2.2)
        await asyncio.wrap_future(server.run(realtime.heartbeat()))
        assert await closed_with(ws) == 4403


async def test_heartbeat_message(db: Database) -> None:
    with serving(db) as server:
        ws = await connect(server, token_for(db, ALICE))
        await recv(ws)
        await asyncio.wrap_future(server.run(server.app_state().realtime.heartbeat()))
        beat = await recv(ws)
        assert beat["type"] == "heartbeat" and beat["ts"].endswith("Z")
        await ws.close()


async def test_oversized_message_closes_1009_and_others_unaffected(db: Database) -> None:
    with serving(db, max_message_bytes=4096) as server:
        other = await connect(server, token_for(db, BOB))
        await recv(other)
        ws = await connect(server, token_for(db, ALICE), max_size=None)
        await recv(ws)
        await ws.send(json.dumps({"type": "pong", "pad": "x" * 10_000}))
        assert await closed_with(ws) == 1009
        created = notify(server, db, BOB)
        assert (await recv_type(other, "notification"))["notification"]["id"] == created["id"]
        await other.close()


async def test_rate_limit_closes_4429(db: Database) -> None:
    with serving(db, ws_messages_per_minute=5) as server:
        ws = await connect(server, token_for(db, ALICE))
        await recv(ws)
        for _ in range(6):
            await ws.send(json.dumps({"type": "pong"}))
        assert await closed_with(ws) == 4429


async def test_origin_allow_list(db: Database) -> None:
    with serving(db, allowed_origins=["https://app.treevu.example"]) as server:
        with pytest.raises(websockets.InvalidStatus) as info:
            await connect(server, token_for(db, ALICE), origin="https://evil.example")
        assert info.value.response.status_code == 403
        ws = await connect(server, token_for(db, ALICE), origin="https://app.treevu.example")
        assert (await recv(ws))["type"] == "welcome"
        await ws.close()


async def test_bad_frames_get_errors_and_the_connection_stays(db: Database) -> None:
    with serving(db) as server:
        ws = await connect(server, token_for(db, ALICE))
        await recv(ws)
        cases: list[tuple[str | bytes, str]] = [
            ("not json", "invalid_json"),
            (b"\x00\x01", "binary_not_supported"),
            ("[1, 2]", "invalid_message"),
            (json.dumps({"type": "launch_rockets"}), "unknown_type"),
            (json.dumps({"type": "ack", "id": "seven"}), "invalid_field"),
            (json.dumps({"type": "mark_read"}), "invalid_field"),
            (json.dumps({"type": "resume", "lastId": -1}), "invalid_field"),
            (json.dumps({"type": "auth", "token": "x"}), "already_authenticated"),
        ]
        for frame, code in cases:
            await ws.send(frame)
            error = await recv_type(ws, "error")
            assert error["code"] == code, (frame, error)
            assert error["message"]
        created = notify(server, db, ALICE)
        assert (await recv_type(ws, "notification"))["notification"]["id"] == created["id"]
        await ws.close()


# -- delivery, resume, devices -----------------------------------------------------------------


async def test_offline_delivery_then_ack_moves_status(db: Database) -> None:
    with serving(db) as server:
        first = notify(server, db, ALICE, title="one")
        second = notify(server, db, ALICE, title="two")
        assert [r.status for r in rows(db, NotificationQueue.user_id == ALICE)] == [
            "pending",
            "pending",
        ]
        ws = await connect(server, token_for(db, ALICE))
        assert (await recv(ws))["unreadCount"] == 2
        got = [await recv_type(ws, "notification") for _ in range(2)]
        assert [g["notification"]["id"] for g in got] == [first["id"], second["id"]]
        await wait_for(
            lambda: (
                [r.status for r in rows(db, NotificationQueue.user_id == ALICE)] == ["sent", "sent"]
            )
        )
        await ws.send(json.dumps({"type": "ack", "id": first["id"]}))
        await ws.send(json.dumps({"type": "mark_read", "id": second["id"]}))
        assert (await recv_type(ws, "unread_count"))["count"] == 1
        await wait_for(
            lambda: (
                [r.status for r in rows(db, NotificationQueue.user_id == ALICE)]
                == ["delivered", "read"]
            )
        )
        await ws.close()
        # Reconnecting without lastId sends only what is not yet acknowledged: nothing.
        ws = await connect(server, token_for(db, ALICE))
        await recv(ws)
        third = notify(server, db, ALICE, title="three")
        assert (await recv_type(ws, "notification"))["notification"]["id"] == third["id"]
        await ws.close()
        audited = _audit_targets(db)
        assert f"notification:{first['id']}" in audited


def _audit_targets(db: Database) -> set[str]:
    engine = create_engine(db.settings().sync_database_url, poolclass=pool.NullPool)
    with Session(engine) as s:
        found = set(
            s.scalars(select(AuditLog.target).where(AuditLog.action == "notification.delivered"))
        )
    engine.dispose()
    return {t for t in found if t}


async def test_resume_recovered_true_in_order_and_false_past_the_bound(db: Database) -> None:
    with serving(db, replay_bound=3) as server:
        ids = [notify(server, db, ALICE, title=f"n{i}")["id"] for i in range(5)]
        token = token_for(db, ALICE)
        read = httpx.post(
            f"{server.url}/api/v1/notifications/{ids[0]}/read",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert read.status_code == 200  # so that no older one waits unacknowledged
        ws = await connect(server, token, query=f"?lastId={ids[1]}")
        assert (await recv(ws))["type"] == "welcome"
        resumed = await recv(ws)
        assert resumed == {"type": "resumed", "recovered": True, "count": 3}
        got = [(await recv_type(ws, "notification"))["notification"]["id"] for _ in range(3)]
        assert got == ids[2:]
        await ws.close()

        ws = await connect(server)
        await ws.send(json.dumps({"type": "auth", "token": token, "lastId": ids[0] - 1}))
        assert (await recv(ws))["type"] == "welcome"
        assert await recv(ws) == {"type": "resumed", "recovered": False}
        with pytest.raises(TimeoutError):
            await recv_type(ws, "notification", timeout=0.7)  # never a partial replay
        await ws.close()


async def test_resume_sends_older_unacknowledged_ones_but_never_the_last_id(
    db: Database,
) -> None:
    """A client that got n2 but never n0 (ids out of order across nodes) and resumes from n2
    is sent n0 and n3 — and never n1 (its lastId), even though n1 is still pending."""
    with serving(db) as server:
        n0, n1, n2, n3 = (notify(server, db, ALICE, title=f"n{i}")["id"] for i in range(4))
        token = token_for(db, ALICE)
        ws = await connect(server, token, query=f"?lastId={n1}")
        assert (await recv(ws))["type"] == "welcome"
        assert await recv(ws) == {"type": "resumed", "recovered": True, "count": 3}
        got = [(await recv_type(ws, "notification"))["notification"]["id"] for _ in range(3)]
        assert got == [n0, n2, n3]
        await asyncio.sleep(1)  # several pending sweeps pass; n1 is still pending
        last = notify(server, db, ALICE, title="sentinel")["id"]
        assert (await recv_type(ws, "notification"))["notification"]["id"] == last
        await ws.close()


async def test_resume_message_mid_session_skips_what_was_sent(db: Database) -> None:
    with serving(db) as server:
        ws = await connect(server, token_for(db, ALICE))
        await recv(ws)
        a = notify(server, db, ALICE)
        await recv_type(ws, "notification")
        b = notify(server, db, ALICE)
        await recv_type(ws, "notification")
        await ws.send(json.dumps({"type": "resume", "lastId": a["id"] - 1}))
        assert await recv_type(ws, "resumed") == {"type": "resumed", "recovered": True, "count": 0}
        c = notify(server, db, ALICE)
        assert (await recv_type(ws, "notification"))["notification"]["id"] == c["id"] > b["id"]
        await ws.close()


async def test_several_devices_all_receive_and_read_syncs(db: Database) -> None:
    with serving(db) as server:
        token = token_for(db, ALICE)
        phone, laptop = await connect(server, token), await connect(server)
        await laptop.send(json.dumps({"type": "auth", "token": token}))
        await recv(phone)
        await recv(laptop)
        created = notify(server, db, ALICE)
        for ws in (phone, laptop):
            assert (await recv_type(ws, "notification"))["notification"]["id"] == created["id"]
        await phone.send(json.dumps({"type": "mark_read", "id": created["id"]}))
        for ws in (phone, laptop):
            assert (await recv_type(ws, "unread_count"))["count"] == 0
        await phone.close()
        await laptop.close()


async def test_pending_sweep_delivers_rows_nobody_published(db: Database) -> None:
    """A row committed without a publish (a lost broker message) still reaches the socket."""
    with serving(db) as server:
        ws = await connect(server, token_for(db, ALICE))
        await recv(ws)
        engine = create_engine(db.settings().sync_database_url, poolclass=pool.NullPool)
        with Session(engine) as s:
            row = NotificationQueue(
                user_id=ALICE,
                type="milestone",
                title="quiet",
                message="no publish",
                data={},
                status="pending",
                created_at=datetime.now(UTC),
            )
            s.add(row)
            s.commit()
            nid = row.id
        engine.dispose()
        assert (await recv_type(ws, "notification"))["notification"]["id"] == nid
        await ws.close()


# -- preferences, limits, idempotency, access --------------------------------------------------


def _put_prefs(server: LiveServer, db: Database, user: int, body: dict[str, Any]) -> httpx.Response:
    return httpx.put(
        server.url + "/api/v1/notifications/preferences",
        json=body,
        headers={"Authorization": f"Bearer {token_for(db, user)}"},
    )


async def test_muting_and_unmutable_types(db: Database) -> None:
    with serving(db) as server:
        r = _put_prefs(
            server, db, ALICE, {"enableMilestones": False, "mutedTypes": ["intervention_update"]}
        )
        assert r.status_code == 200 and r.json()["enableMilestones"] is False
        for forbidden in (["compliance_alert"], ["nonsense"]):
            bad = _put_prefs(server, db, ALICE, {"mutedTypes": forbidden})
            assert bad.status_code == 422 and "mutedTypes" in bad.text
        assert r.json() == _put_prefs(server, db, ALICE, {}).json()  # bad requests changed nothing

        body = {"userIds": [ALICE, BOB], "type": "milestone", "title": "t", "message": "m"}
        result = admin_post(server, db, "/api/v1/admin/notifications/broadcast", body).json()
        assert (result["created"], result["muted"]) == (1, 1)
        assert [r.user_id for r in rows(db, NotificationQueue.id.in_(result["ids"]))] == [BOB]

        ws = await connect(server, token_for(db, ALICE))
        await recv(ws)
        compliance = notify(server, db, ALICE, type="compliance_alert")
        assert (await recv_type(ws, "notification"))["notification"]["id"] == compliance["id"]
        muted_update = admin_post(
            server,
            db,
            "/api/v1/admin/notifications",
            {"userId": ALICE, "type": "intervention_update", "title": "t", "message": "m"},
        )
        assert muted_update.status_code == 409
        crisis = notify(server, db, ALICE, type="intervention_update", data={"crisis": True})
        assert (await recv_type(ws, "notification"))["notification"]["id"] == crisis["id"]
        await ws.close()


async def test_admin_send_limit_429_with_retry_after(db: Database) -> None:
    with serving(db, admin_notifications_per_minute=3) as server:
        body = {"userIds": [ALICE, BOB], "type": "milestone", "title": "t", "message": "m"}
        assert (
            admin_post(server, db, "/api/v1/admin/notifications/broadcast", body).status_code == 201
        )
        before = len(rows(db))
        r = admin_post(server, db, "/api/v1/admin/notifications/broadcast", body)
        assert r.status_code == 429
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert r.json()["error"]["code"] == "TOO_MANY_REQUESTS"
        assert len(rows(db)) == before  # nothing stored by the refused request


async def test_idempotency_key_returns_the_first_notification(db: Database) -> None:
    with serving(db) as server:
        body = {"userId": ALICE, "type": "milestone", "title": "t", "message": "m"}
        key = {"Idempotency-Key": "payroll-2026-11-26-alice"}
        first = admin_post(server, db, "/api/v1/admin/notifications", body, key)
        again = admin_post(server, db, "/api/v1/admin/notifications", {**body, "title": "x"}, key)
        assert first.status_code == again.status_code == 201
        assert first.json() == again.json()
        assert len(rows(db, NotificationQueue.user_id == ALICE)) == 1
        other = admin_post(
            server, db, "/api/v1/admin/notifications", body, {"Idempotency-Key": "another"}
        )
        assert other.json()["id"] != first.json()["id"]


async def test_cross_user_access_refused(db: Database) -> None:
    with serving(db) as server:
        mine = notify(server, db, ALICE)
        bob = {"Authorization": f"Bearer {token_for(db, BOB)}"}
        r = httpx.post(f"{server.url}/api/v1/notifications/{mine['id']}/read", headers=bob)
        assert r.status_code == 404
        history = httpx.get(f"{server.url}/api/v1/notifications", headers=bob).json()
        assert mine["id"] not in [n["id"] for n in history["items"]]
        forbidden = httpx.post(
            f"{server.url}/api/v1/admin/notifications",
            json={"userId": ALICE, "type": "milestone", "title": "t", "message": "m"},
            headers=bob,
        )
        assert forbidden.status_code == 403
        ws = await connect(server, token_for(db, BOB))
        await recv(ws)
        await ws.send(json.dumps({"type": "mark_read", "id": mine["id"]}))
        assert (await recv_type(ws, "error"))["code"] == "not_found"
        await ws.close()
        assert [r.status for r in rows(db, NotificationQueue.id == mine["id"])] == ["pending"]


async def test_sensitive_data_encrypted_at_rest(db: Database) -> None:
    with serving(db) as server:
        created = notify(server, db, ALICE, data={"amount": 125.5, "tierName": "Sprout"})
        assert created["data"] == {"amount": 125.5, "tierName": "Sprout"}
        stored = rows(db, NotificationQueue.id == created["id"])[0].data
        assert stored is not None and stored["tierName"] == "Sprout"
        assert set(stored["amount"]) == {"$enc"} and "125.5" not in json.dumps(stored)


async def test_inbox_operations_over_rest(db: Database) -> None:
    with serving(db) as server:
        ids = [
            notify(server, db, ALICE, type=t)["id"]
            for t in ("milestone", "tier_upgrade", "milestone")
        ]
        auth = {"Authorization": f"Bearer {token_for(db, ALICE)}"}
        page = httpx.get(f"{server.url}/api/v1/notifications?limit=2", headers=auth).json()
        assert [n["id"] for n in page["items"]] == ids[::-1][:2]
        rest = httpx.get(
            f"{server.url}/api/v1/notifications?limit=2&cursor={page['nextCursor']}", headers=auth
        ).json()
        assert [n["id"] for n in rest["items"]] == [ids[0]]
        typed = httpx.get(f"{server.url}/api/v1/notifications?type=tier_upgrade", headers=auth)
        assert [n["id"] for n in typed.json()["items"]] == [ids[1]]
        assert httpx.get(
            f"{server.url}/api/v1/notifications/unread-count", headers=auth
        ).json() == {"count": 3}
        r = httpx.post(f"{server.url}/api/v1/notifications/read-all", headers=auth).json()
        assert r == {"updated": 3, "unreadCount": 0}
        stats = httpx.get(f"{server.url}/api/v1/notifications/stats", headers=auth).json()
        assert stats["total"] == 3 and stats["read"] == 3 and stats["byType"]["milestone"] == 2
        assert httpx.post(f"{server.url}/api/v1/notifications/clear", headers=auth).json() == {
            "cleared": 3
        }
        assert httpx.get(f"{server.url}/api/v1/notifications", headers=auth).json()["items"] == []
        bad = httpx.get(f"{server.url}/api/v1/notifications?cursor=@@@", headers=auth)
        assert bad.status_code == 400 and "cursor" in bad.text


async def test_metrics_health_and_readiness(db: Database) -> None:
    with serving(db) as server:
        ws = await connect(server, token_for(db, ALICE))
        await recv(ws)
        notify(server, db, ALICE)
        await recv_type(ws, "notification")
        await asyncio.sleep(0.1)
        text = httpx.get(server.url + "/metrics").text
        for name in (
            "treevu_ws_active_connections 1.0",
            "treevu_notifications_delivered_total",
            "treevu_notification_delivery_seconds_bucket",
            "treevu_ws_queue_depth",
            "treevu_ws_reconnections_total",
        ):
            assert name in text, name
        assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
        assert httpx.get(server.url + "/readyz").json() == {"ready": True, "database": True}
        await ws.close()


async def test_acks_of_sent_notifications_are_not_charged_to_the_rate_limit(
    db: Database,
) -> None:
    with serving(db, ws_messages_per_minute=5) as server:
        ids = [notify(server, db, ALICE, title=f"n{i}")["id"] for i in range(12)]
        ws = await connect(server, token_for(db, ALICE))
        await recv(ws)
        for _ in ids:
            got = await recv_type(ws, "notification")
            await ws.send(json.dumps({"type": "ack", "id": got["notification"]["id"]}))
        await wait_for(
            lambda: (
                {r.status for r in rows(db, NotificationQueue.user_id == ALICE)} == {"delivered"}
            )
        )
        # Acks of ids this session was never sent are charged like any other message.
        for _ in range(6):
            await ws.send(json.dumps({"type": "ack", "id": 10**9}))
        assert await closed_with(ws) == 4429


async def test_user_requested_recompute_once_a_day(db: Database) -> None:
    with serving(db) as server:
        auth = {"Authorization": f"Bearer {token_for(db, ALICE)}"}
        first = httpx.post(f"{server.url}/api/v1/me/recompute", headers=auth)
        assert first.status_code == 200 and first.json()["userId"] == ALICE
        second = httpx.post(f"{server.url}/api/v1/me/recompute", headers=auth)
        assert second.status_code == 429
        assert int(second.headers["Retry-After"]) > 3600
        other = httpx.post(
            f"{server.url}/api/v1/me/recompute",
            headers={"Authorization": f"Bearer {token_for(db, BOB)}"},
        )
        assert other.status_code == 200  # the limit is per user


async def test_click_is_recorded_and_metrics_report_rates_and_segments(db: Database) -> None:
    with serving(db) as server:
        ws = await connect(server, token_for(db, ALICE))
        await recv(ws)
        created = notify(server, db, ALICE)
        await recv_type(ws, "notification")
        auth = {"Authorization": f"Bearer {token_for(db, ALICE)}"}
        r = httpx.post(f"{server.url}/api/v1/notifications/{created['id']}/click", headers=auth)
        assert r.json() == {"updated": 1, "unreadCount": 0}
        row = rows(db, NotificationQueue.id == created["id"])[0]
        assert row.status == "read" and row.clicked_at is not None
        other = httpx.post(
            f"{server.url}/api/v1/notifications/{created['id']}/click",
            headers={"Authorization": f"Bearer {token_for(db, BOB)}"},
        )
        assert other.status_code == 404
        text = httpx.get(server.url + "/metrics").text
        assert "treevu_notification_read_rate 1.0" in text
        assert "treevu_notification_click_rate 1.0" in text
        assert 'treevu_segment_size{segment="at_risk"}' in text
        await ws.close()
