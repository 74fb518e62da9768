"""``treevu.client`` against the real server (uvicorn on loopback, seeded SQLite).

Reconnection is driven without real waiting: the client takes its sleep and its random source as
parameters, so a test holds the client in backoff (to create notifications while it is away) and
checks each delay against the same seeded ``random.Random``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol

import httpx
import pytest
from sqlalchemy import create_engine, pool, select, update

from tests.conftest import Database, LiveServer, free_port, token_for
from treevu.client import (
    AuthenticationError,
    Backoff,
    ClientClosedError,
    NotConnectedError,
    Notification,
    NotificationClient,
)
from treevu.db import NotificationQueue
from treevu.population import ROLES, generate_population

ADMIN = 1
_POPULATION = generate_population(300, 7)
#: An active employee of the seeded company; every notification here goes to them.
USER = next(
    int(u)
    for u, r in zip(_POPULATION.user_id, _POPULATION.role, strict=True)
    if ROLES[r] == "employee"
)
#: Quick reconnects for the tests that do not hold the client in backoff themselves.
BASE, CAP = 0.01, 0.05
TIMEOUT = 10.0


def ws_url(server: LiveServer) -> str:
    return ws_url_port(server.port)


def ws_url_port(port: int) -> str:
    return f"ws://127.0.0.1:{port}/ws"


class Served(Protocol):
    """A running server (in this process or another): where it answers."""

    @property
    def url(self) -> str: ...


class Admin:
    """Creates notifications through the REST API, as an operator would."""

    def __init__(self, db: Database, server: Served) -> None:
        self.http = httpx.AsyncClient(
            base_url=f"{server.url}/api/v1",
            headers={"Authorization": f"Bearer {token_for(db, ADMIN)}"},
            timeout=TIMEOUT,
        )

    async def notify(self, title: str, user_id: int = USER) -> int:
        resp = await self.http.post(
            "/admin/notifications",
            json={
                "userId": user_id,
                "type": "compliance_alert",
                "title": title,
                "message": f"message of {title}",
                "data": {"title": title},
            },
        )
        assert resp.status_code == 201, resp.text
        nid: int = resp.json()["id"]
        return nid


@asynccontextmanager
async def admin_for(db: Database, server: Served) -> AsyncIterator[Admin]:
    admin = Admin(db, server)
    try:
        yield admin
    finally:
        await admin.http.aclose()


async def take(client: NotificationClient, n: int) -> list[Notification]:
    async with asyncio.timeout(TIMEOUT):
        return [await client.next_notification() for _ in range(n)]


async def until(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not condition():
            await asyncio.sleep(0.01)
    assert condition(), what


class GatedSleep:
    """A backoff sleep that records each delay and waits until the test opens the gate."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.gate = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await self.gate.wait()
        self.gate.clear()


# -- connecting and receiving ------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["header", "message"])
async def test_connects_and_receives_a_notification_created_after_connect(
    live_sqlite: tuple[Database, LiveServer], auth: str
) -> None:
    db, server = live_sqlite
    events: list[str] = []
    async with (
        admin_for(db, server) as admin,
        NotificationClient(
            ws_url(server),
            token_for(db, USER),
            auth="header" if auth == "header" else "message",
            on_event=lambda m: events.append(m["type"]),
        ) as client,
    ):
        assert client.connected and client.connection_id
        assert client.heartbeat_interval == 30
        assert events == ["welcome"]
        assert client.recovered == []  # a first connection does not resume
        nid = await admin.notify("after connect")
        (got,) = await take(client, 1)
        assert (got.id, got.type, got.title) == (nid, "compliance_alert", "after connect")
        assert got.data == {"title": "after connect"} and got.read is False
        assert got.timestamp.endswith("Z")
        assert client.last_id == nid
        # Compression is on by default and negotiated with the server.
        assert client.connection is not None
        assert [e.name for e in client.connection.protocol.extensions] == ["permessage-deflate"]
    assert not client.connected and client.stats.disconnects == 0
    with pytest.raises(ClientClosedError):
        await client.next_notification()


async def test_compression_can_be_turned_off(live_sqlite: tuple[Database, LiveServer]) -> None:
    db, server = live_sqlite
    async with NotificationClient(ws_url(server), token_for(db, USER), compression=None) as c:
        assert c.connection is not None and c.connection.protocol.extensions == []


async def test_offline_notifications_arrive_on_connect_and_are_acknowledged(
    live_sqlite: tuple[Database, LiveServer],
) -> None:
    db, server = live_sqlite
    async with admin_for(db, server) as admin:
        offline = [await admin.notify(f"offline {i}") for i in range(3)]
        async with NotificationClient(ws_url(server), token_for(db, USER), auth="message") as c:
            assert [n.id for n in await take(c, 3)] == offline
            assert c.unread_count is not None and c.unread_count >= 3
            assert c.last_id == offline[-1]

        # auto_ack told the server: the rows move from pending/sent to delivered …
        engine = create_engine(db.settings().sync_database_url, poolclass=pool.NullPool)
        try:

            def statuses() -> set[str]:
                with engine.connect() as conn:
                    rows = conn.execute(
                        select(NotificationQueue.status).where(NotificationQueue.id.in_(offline))
                    )
                    return {r[0] for r in rows}

            await until(lambda: statuses() == {"delivered"}, "acks reached the database")
        finally:
            engine.dispose()

        # … so a new session without lastId gets only what came after.
        async with NotificationClient(ws_url(server), token_for(db, USER)) as again:
            fresh = await admin.notify("fresh")
            assert [n.id for n in await take(again, 1)] == [fresh]


async def test_mark_read_answers_with_the_unread_count(
    live_sqlite: tuple[Database, LiveServer],
) -> None:
    db, server = live_sqlite
    async with (
        admin_for(db, server) as admin,
        NotificationClient(ws_url(server), token_for(db, USER)) as client,
    ):
        at_welcome = client.unread_count
        assert at_welcome is not None
        nid = await admin.notify("to read")
        await take(client, 1)
        await client.mark_read(nid)
        async with asyncio.timeout(TIMEOUT):
            answer = await client.next_event("unread_count")
        # One created after the welcome, then read: back to the welcome's count.
        assert answer == {"type": "unread_count", "count": at_welcome}
        assert client.unread_count == at_welcome


async def test_sending_needs_a_session() -> None:
    client = NotificationClient("ws://127.0.0.1:9/ws", "token")
    with pytest.raises(NotConnectedError):
        await client.ack(1)
    await client.close()
    with pytest.raises(ClientClosedError):
        client.start()


# -- reconnecting ------------------------------------------------------------------------------


def set_status(db: Database, notification_id: int, status: str) -> None:
    engine = create_engine(db.settings().sync_database_url, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(
                update(NotificationQueue)
                .where(NotificationQueue.id == notification_id)
                .values(status=status)
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("auth", ["header", "message"])
async def test_reconnects_after_abort_and_resumes_without_loss_or_duplicates(
    live_sqlite: tuple[Database, LiveServer], auth: str
) -> None:
    db, server = live_sqlite
    sleep = GatedSleep()
    issued: list[str] = []

    async def fresh_token() -> str:
        issued.append(token_for(db, USER))
        return issued[-1]

    async with (
        admin_for(db, server) as admin,
        NotificationClient(
            ws_url(server),
            fresh_token,
            auth="header" if auth == "header" else "message",
            rng=random.Random(7),
            sleep=sleep,
            backoff_base=BASE,
            backoff_cap=CAP,
        ) as client,
    ):
        first = await admin.notify("before the drop")
        await take(client, 1)
        welcome_1 = client.connection_id

        # Drop the TCP connection without a close frame, as a dead network would.
        assert client.connection is not None
        client.connection.transport.abort()
        await until(lambda: len(sleep.delays) == 1, "the client is waiting to reconnect")
        assert not client.connected
        missed = [await admin.notify(f"while away {i}") for i in range(3)]

        sleep.gate.set()
        await client.wait_connected()
        assert client.connection_id != welcome_1
        assert [n.id for n in await take(client, 3)] == missed  # in order, nothing lost
        resumed = await client.next_event("resumed")
        assert resumed == {"type": "resumed", "recovered": True, "count": 3}
        assert client.recovered == [True]

        live = await admin.notify("after the reconnect")
        assert [n.id for n in await take(client, 1)] == [live]

        # A resume from 0 in this session sends nothing: the server never sends one id twice
        # in a session, nor the lastId the client resumed from.
        await client.resume(0)
        assert await client.next_event("resumed") == {
            "type": "resumed",
            "recovered": True,
            "count": 0,
        }
        # An ack lost in a crash: missed[0] is unacknowledged again. The next session resumes
        # from `live` and is sent missed[0] as an older unacknowledged one; the client, which
        # has it already, drops it.
        set_status(db, missed[0], "sent")
        assert client.connection is not None
        client.connection.transport.abort()
        await until(lambda: len(sleep.delays) == 2, "the client is waiting to reconnect")
        sleep.gate.set()
        await until(lambda: client.stats.duplicates_dropped == 1, "the replay was deduplicated")
        assert client.last_id == live

    with pytest.raises(ClientClosedError):  # nothing else was queued for the consumer
        await client.next_notification()
    assert client.stats.reconnects == 2 and client.stats.connections == 3
    assert client.stats.notifications == 5 and client.stats.duplicates_dropped == 1
    assert len(issued) == 3  # a fresh token for each connection
    assert 0 <= sleep.delays[0] <= Backoff(BASE, CAP).ceiling(0)
    assert first < missed[0]


@asynccontextmanager
async def serving(server: LiveServer) -> AsyncIterator[LiveServer]:
    """Run ``server`` while this event loop keeps running (the clients live on it)."""
    await asyncio.to_thread(server.__enter__)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.__exit__, None, None, None)


async def test_unrecoverable_resume_calls_on_reload_and_continues_from_the_newest_id(
    seeded_sqlite: Database,
) -> None:
    db = seeded_sqlite
    token = token_for(db, USER)
    reloads: list[int | None] = []

    async def reload_inbox(client: NotificationClient) -> int | None:
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            resp = await http.get(
                f"{server.url}/api/v1/notifications",
                headers={"Authorization": f"Bearer {token}"},
            )
        resp.raise_for_status()
        reloads.append(client.last_id)
        newest: int = max(item["id"] for item in resp.json()["items"])
        return newest

    # The replay bound is 2: an absence of 3 is not recovered.
    async with (
        serving(LiveServer(db.settings(replay_bound=2))) as server,
        admin_for(db, server) as admin,
    ):
        missed = [await admin.notify(f"missed {i}") for i in range(3)]
        async with NotificationClient(
            ws_url(server), token, last_id=0, on_reload=reload_inbox
        ) as client:
            assert await client.next_event("resumed") == {"type": "resumed", "recovered": False}
            assert reloads == [0] and client.recovered == [False]
            assert client.last_id == missed[-1] and client.stats.reloads == 1
            live = await admin.notify("live")
            assert [n.id for n in await take(client, 1)] == [live]  # nothing of the gap


async def test_reconnects_when_the_server_restarts(seeded_sqlite: Database) -> None:
    db = seeded_sqlite
    first = LiveServer(db.settings())
    client = NotificationClient(
        ws_url(first), token_for(db, USER), backoff_base=BASE, backoff_cap=CAP
    )
    try:
        async with serving(first), admin_for(db, first) as admin:
            client.start()
            async with asyncio.timeout(TIMEOUT):
                await client.wait_connected()
            before = await admin.notify("before restart")
            await take(client, 1)
        # uvicorn closed every socket with 1012 (service restart) on its way down.
        await until(lambda: client.close_code == 1012, "the client saw the shutdown")
        second = LiveServer(db.settings())
        second.port = second.server.config.port = first.port
        async with serving(second), admin_for(db, second) as admin:
            async with asyncio.timeout(TIMEOUT):
                await client.wait_connected()
            after = await admin.notify("after restart")
            assert [n.id for n in await take(client, 1)] == [after]
        assert client.recovered == [True] and client.stats.reconnects == 1
        assert client.last_id == after > before
    finally:
        await client.close()


async def test_rate_limited_client_is_closed_4429_and_resumes_without_loss(
    seeded_sqlite: Database,
) -> None:
    """Acks of what the session was sent are free; other messages over the limit trip 4429."""
    db = seeded_sqlite
    base, cap, seed = 0.01, 1.0, 3
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)

    async with (
        serving(LiveServer(db.settings(ws_messages_per_minute=3))) as server,
        admin_for(db, server) as admin,
    ):
        backlog = [await admin.notify(f"backlog {i}") for i in range(6)]
        async with NotificationClient(
            ws_url(server),
            token_for(db, USER),
            backoff_base=base,
            backoff_cap=cap,
            rng=random.Random(seed),
            sleep=record,
        ) as client:
            assert [n.id for n in await take(client, 6)] == backlog  # six acks, no 4429
            assert client.stats.rate_limited == 0
            for _ in range(4):
                await client.pong()
            await until(lambda: client.recovered == [True], "the client came back and resumed")
            assert client.stats.rate_limited == 1 and client.stats.reconnects == 1
            later = await admin.notify("after the limit")
            assert [n.id for n in await take(client, 1)] == [later]
            assert client.stats.duplicates_dropped == 0
    # The delay after a 4429 is not reset to the base window by the earlier welcome.
    assert delays == [random.Random(seed).uniform(0, Backoff(base, cap).ceiling(1))]


# -- backoff -----------------------------------------------------------------------------------


def test_backoff_ceiling_doubles_up_to_the_cap() -> None:
    backoff = Backoff(base=1.0, cap=30.0)
    assert [backoff.ceiling(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.ceiling(10_000) == 30.0
    rng = random.Random(1)
    assert all(0 <= backoff.delay(n, rng) <= backoff.ceiling(n) for n in range(50))
    with pytest.raises(ValueError):
        Backoff(base=0)


async def test_backoff_delays_follow_the_injected_random_with_full_jitter() -> None:
    """Against a closed port every attempt fails: delay n is uniform(0, min(cap, base*2**n))."""
    base, cap, attempts = 0.5, 4.0, 8
    delays: list[float] = []
    done = asyncio.Event()

    async def record(delay: float) -> None:
        delays.append(delay)
        if len(delays) == attempts:
            done.set()
        await asyncio.sleep(0)

    client = NotificationClient(
        ws_url_port(free_port()),
        "token",
        backoff_base=base,
        backoff_cap=cap,
        rng=random.Random(42),
        sleep=record,
    )
    client.start()
    try:
        async with asyncio.timeout(TIMEOUT):
            await done.wait()
    finally:
        await client.close()

    expected_rng = random.Random(42)
    ceilings = [min(cap, base * 2**n) for n in range(attempts)]
    assert ceilings == [0.5, 1, 2, 4, 4, 4, 4, 4]
    assert delays[:attempts] == [expected_rng.uniform(0, c) for c in ceilings]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=False))
    assert client.stats.connections == 0 and client.stats.attempts >= attempts


# -- refusals ----------------------------------------------------------------------------------


async def test_bad_token_in_auth_message_is_4401_and_not_retried(
    live_sqlite: tuple[Database, LiveServer],
) -> None:
    _, server = live_sqlite
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    client = NotificationClient(
        ws_url(server), "not-a-jwt", auth="message", sleep=sleep, backoff_base=BASE, backoff_cap=CAP
    )
    with pytest.raises(AuthenticationError) as refused:
        async with asyncio.timeout(TIMEOUT):
            await client.__aenter__()
    assert refused.value.code == 4401 and "4401" in str(refused.value)
    assert client.stats.attempts == 1 and slept == []
    with pytest.raises(AuthenticationError):
        await client.wait_closed()
    with pytest.raises(AuthenticationError):
        await client.next_notification()


async def test_bad_token_in_header_is_refused_at_the_upgrade(
    live_sqlite: tuple[Database, LiveServer],
) -> None:
    _, server = live_sqlite
    client = NotificationClient(ws_url(server), "not-a-jwt", backoff_base=BASE, backoff_cap=CAP)
    with pytest.raises(AuthenticationError) as refused:
        async with asyncio.timeout(TIMEOUT), client:
            pass
    assert refused.value.code == 401 and client.stats.attempts == 1


async def test_expired_token_is_4403_and_not_retried(
    live_sqlite: tuple[Database, LiveServer],
) -> None:
    db, server = live_sqlite
    client = NotificationClient(
        ws_url(server),
        token_for(db, USER, ttl=-3600),
        auth="message",
        backoff_base=BASE,
        backoff_cap=CAP,
    )
    with pytest.raises(AuthenticationError) as refused:
        async with asyncio.timeout(TIMEOUT), client:
            pass
    assert refused.value.code == 4403 and "expired" in str(refused.value)
    assert client.stats.attempts == 1
