"""Several nodes serving one population: presence bookkeeping and two real ``treevu serve``.

``websocket_connections`` is checked on every database backend (rows per node, heartbeats, the
clean-up of a dead node's rows). Then two server processes share MariaDB and Redis: a
notification created on one node reaches a client of the other; a client whose node is killed
with SIGKILL resumes on the survivor with nothing lost and nothing twice; and the survivor
removes the dead node's rows.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import Engine, String, create_engine, insert, pool, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from tests.conftest import (
    MYSQL_URL,
    REDIS_URL,
    SECRET,
    Database,
    _server_database,
    free_port,
    seed_and_score,
    token_for,
    unavailable,
)
from treevu.app import make_engines
from treevu.client import Notification, NotificationClient
from treevu.db import NotificationQueue, User, WebsocketConnection
from treevu.db.migrate import upgrade
from treevu.notifications.broker import RedisBroker, channel_for
from treevu.population import ADMIN, EMPLOYEE, generate_population
from treevu.services.notifications.presence import Presence, new_node_id

# -- presence, on every database --------------------------------------------------------------

T0 = datetime(2025, 12, 12, 19, 40, tzinfo=UTC)  # whole seconds: MariaDB DATETIME keeps no more


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def sync_engine(db: Database) -> Engine:
    return create_engine(db.settings().sync_database_url, poolclass=pool.NullPool)


def presence_rows(db: Database) -> dict[str, tuple[int, str | None, datetime, datetime | None]]:
    """connectionId → (userId, nodeId, connectedAt, lastHeartbeat)."""
    engine = sync_engine(db)
    try:
        with engine.connect() as conn:
            found = conn.execute(
                select(
                    WebsocketConnection.connection_id,
                    WebsocketConnection.user_id,
                    WebsocketConnection.node_id,
                    WebsocketConnection.connected_at,
                    WebsocketConnection.last_heartbeat,
                )
            ).all()
    finally:
        engine.dispose()
    return {str(cid): (uid, node, at, hb) for cid, uid, node, at, hb in found}


@pytest.fixture
def two_users(database: Database) -> tuple[int, int]:
    engine = sync_engine(database)
    try:
        with engine.begin() as conn:
            ids = conn.execute(
                insert(User).returning(User.id, sort_by_parameter_order=True),
                [
                    {"email": f"p{i}@example.test", "name": f"Person {i}", "role": "employee"}
                    for i in (1, 2)
                ],
            ).scalars()
            first, second = (int(i) for i in ids)
    finally:
        engine.dispose()
    return first, second


@pytest.fixture
async def sessions(database: Database) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    async_engine, bulk = make_engines(database.settings())
    bulk.dispose()
    yield async_sessionmaker(async_engine, expire_on_commit=False)
    await async_engine.dispose()


async def test_presence_rows_follow_connects_and_disconnects(
    database: Database, sessions: async_sessionmaker[AsyncSession], two_users: tuple[int, int]
) -> None:
    alice, bob = two_users
    clock = Clock()
    node = Presence(sessions, clock, "node-a")
    node.connected("c1", alice)
    node.connected("c2", alice)  # a second tab
    node.connected("c3", bob)
    node.connected("gone", bob)
    node.disconnected("gone")  # left before the flush: never written
    assert presence_rows(database) == {}
    await node.flush()
    assert presence_rows(database) == {
        "c1": (alice, "node-a", T0, T0),
        "c2": (alice, "node-a", T0, T0),
        "c3": (bob, "node-a", T0, T0),
    }

    clock.advance(5)
    node.disconnected("c2")
    node.connected("c4", bob)
    await node.flush()
    rows = presence_rows(database)
    assert sorted(rows) == ["c1", "c3", "c4"]
    assert rows["c4"] == (bob, "node-a", clock.now, clock.now)
    await node.flush()  # nothing to do
    assert sorted(presence_rows(database)) == ["c1", "c3", "c4"]


async def test_heartbeat_refreshes_only_this_nodes_rows(
    database: Database, sessions: async_sessionmaker[AsyncSession], two_users: tuple[int, int]
) -> None:
    alice, bob = two_users
    clock = Clock()
    mine, other = Presence(sessions, clock, "node-a"), Presence(sessions, clock, "node-b")
    mine.connected("a1", alice)
    other.connected("b1", bob)
    await mine.flush()
    await other.flush()
    clock.advance(30)
    await mine.heartbeat()
    rows = presence_rows(database)
    assert rows["a1"] == (alice, "node-a", T0, T0 + timedelta(seconds=30))
    assert rows["b1"] == (bob, "node-b", T0, T0)


async def test_dead_nodes_rows_are_removed_but_not_fresh_ones_nor_our_own(
    database: Database, sessions: async_sessionmaker[AsyncSession], two_users: tuple[int, int]
) -> None:
    alice, bob = two_users
    clock = Clock()
    mine = Presence(sessions, clock, "node-a")
    dead = Presence(sessions, clock, "node-dead")
    alive = Presence(sessions, clock, "node-alive")
    mine.connected("a1", alice)
    dead.connected("d1", alice)
    dead.connected("d2", bob)
    alive.connected("l1", bob)
    for node in (mine, dead, alive):
        await node.flush()

    clock.advance(60)
    await alive.heartbeat()
    clock.advance(40)
    # cutoff = T0 + 40 s: node-dead (T0) is stale, node-alive (T0 + 60 s) is fresh, and our own
    # rows (T0) stay whatever their age — only their node deletes them.
    assert await mine.remove_dead_nodes(timedelta(seconds=60)) == 2
    assert sorted(presence_rows(database)) == ["a1", "l1"]
    assert await mine.remove_dead_nodes(timedelta(seconds=60)) == 0

    clock.advance(100)  # now node-alive has gone quiet too, from our point of view
    assert await mine.remove_dead_nodes(timedelta(seconds=60)) == 1
    assert sorted(presence_rows(database)) == ["a1"]


async def test_a_node_that_stops_removes_its_own_rows(
    database: Database, sessions: async_sessionmaker[AsyncSession], two_users: tuple[int, int]
) -> None:
    alice, bob = two_users
    clock = Clock()
    leaving = Presence(sessions, clock, "node-a", flush_seconds=0.05)
    staying = Presence(sessions, clock, "node-b")
    staying.connected("b1", bob)
    await staying.flush()
    await leaving.start()
    try:
        leaving.connected("a1", alice)
        await wait_until(lambda: "a1" in presence_rows(database))
    finally:
        await leaving.close()
    assert sorted(presence_rows(database)) == ["b1"]


async def test_stale_rows_without_a_node_are_removed(
    database: Database, sessions: async_sessionmaker[AsyncSession], two_users: tuple[int, int]
) -> None:
    alice, _ = two_users
    engine = sync_engine(database)
    try:
        with Session(engine) as session:
            session.add(WebsocketConnection(user_id=alice, connection_id="legacy", connected_at=T0))
            session.commit()
    finally:
        engine.dispose()
    clock = Clock(T0 + timedelta(hours=1))
    assert await Presence(sessions, clock, "node-a").remove_dead_nodes(timedelta(minutes=1)) == 1
    assert presence_rows(database) == {}


def test_node_ids_fit_their_column(monkeypatch: pytest.MonkeyPatch) -> None:
    pod = "treevu-engage-notifications-server-7d9f8c6b5d-x2k4p.cluster-a"[:63]
    monkeypatch.setattr(socket, "gethostname", lambda: pod)
    column = WebsocketConnection.__table__.c.nodeId.type
    assert isinstance(column, String) and column.length is not None
    assert len(new_node_id()) <= column.length


# -- two real server processes on MariaDB and Redis ------------------------------------------

POP = generate_population(60, 7)
EMPLOYEES = [int(u) for u, r in zip(POP.user_id, POP.role, strict=True) if r == EMPLOYEE]
ADMIN_ID = next(int(u) for u, r in zip(POP.user_id, POP.role, strict=True) if r == ADMIN)
HEARTBEAT_SECONDS = 1.0  # rows of a node are stale after 3 heartbeats without one
FERNET_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


async def wait_until(done: Callable[[], bool], timeout: float = 10, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s: {what or done}")
        await asyncio.sleep(0.05)


def _redis_answers() -> bool:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class Node:
    """One ``treevu serve`` process on a free loopback port, its output in a log file."""

    def __init__(
        self, name: str, env: dict[str, str], workdir: Path, args: Sequence[str] = ()
    ) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = workdir / f"{name}.log"
        node_env = {**env, "TREEVU_DATA_DIR": str(workdir / name)}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "treevu", "serve", "--port", str(self.port), *args],
                env=node_env,
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"node {self.name} exited:\n{self.output()}")
            try:
                r = httpx.get(self.url + "/readyz", timeout=1)
                if r.status_code == 200 and r.json() == {
                    "ready": True,
                    "database": True,
                    "redis": True,
                }:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"node {self.name} not ready:\n{self.output()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no lifespan shutdown, no clean-up of its rows."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class Cluster:
    def __init__(self, db: Database, a: Node, b: Node, workdir: Path) -> None:
        self.db = db
        self.workdir = workdir
        self.a = a
        self.b = b
        self.admin_token = token_for(db, ADMIN_ID)

    async def notify(self, node: Node, user_id: int, title: str) -> int:
        """Create one notification through ``node``'s admin REST API; returns its id."""
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
            r = await http.post(
                "/api/v1/admin/notifications",
                json={"userId": user_id, "type": "milestone", "title": title, "message": "…"},
                headers={"Authorization": f"Bearer {self.admin_token}"},
            )
        assert r.status_code == 201, r.text
        nid: int = r.json()["id"]
        return nid

    def stored_ids(self, user_id: int) -> list[int]:
        engine = sync_engine(self.db)
        try:
            with engine.connect() as conn:
                found = conn.scalars(
                    select(NotificationQueue.id)
                    .where(NotificationQueue.user_id == user_id)
                    .order_by(NotificationQueue.id)
                ).all()
        finally:
            engine.dispose()
        return [int(i) for i in found]

    def connection_rows(self) -> dict[str, str | None]:
        """connectionId → nodeId of every row in websocket_connections."""
        engine = sync_engine(self.db)
        try:
            with engine.connect() as conn:
                found = conn.execute(
                    select(WebsocketConnection.connection_id, WebsocketConnection.node_id)
                ).all()
        finally:
            engine.dispose()
        return {str(cid): node for cid, node in found}


@pytest.fixture
def mariadb_seeded() -> Iterator[Database]:
    if not _redis_answers():
        unavailable("redis")
    for url in _server_database(MYSQL_URL, "mariadb"):
        db = Database("mariadb", url)
        upgrade(db.settings().sync_database_url)
        seed_and_score(db, n_users=len(POP.user_id), seed=7)
        yield db


@pytest.fixture
def cluster(mariadb_seeded: Database, tmp_path: Path) -> Iterator[Cluster]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREEVU_")}
    env.update(
        TREEVU_DATABASE_URL=mariadb_seeded.url,
        TREEVU_REDIS_URL=REDIS_URL,
        TREEVU_JWT_SECRET=SECRET,
        TREEVU_ENCRYPTION_KEY=FERNET_KEY,
        TREEVU_SWEEP_INTERVAL="0.5",
        TREEVU_HEARTBEAT_INTERVAL=str(HEARTBEAT_SECONDS),
    )
    nodes: list[Node] = []
    try:
        nodes.append(Node("a", env, tmp_path))
        nodes.append(Node("b", env, tmp_path))
        for node in nodes:
            node.wait_ready()
        yield Cluster(mariadb_seeded, nodes[0], nodes[1], tmp_path)
    finally:
        for node in nodes:
            node.stop()


async def take(client: NotificationClient, n: int, timeout: float = 10) -> list[Notification]:
    async with asyncio.timeout(timeout):
        return [await client.next_notification() for _ in range(n)]


def fast_client(url: str, token: str, **kw: Any) -> NotificationClient:
    return NotificationClient(url, token, backoff_base=0.05, backoff_cap=0.2, **kw)


async def test_a_notification_created_on_a_reaches_the_users_client_on_b(
    cluster: Cluster,
) -> None:
    user = EMPLOYEES[0]
    token = token_for(cluster.db, user)
    published: set[int] = set()
    # Listens where the nodes publish: delivery must go through Redis, not only the sweep.
    observer = RedisBroker(REDIS_URL, channel_for(REDIS_URL))
    await observer.start(
        lambda envs: published.update(e.notification_id for e in envs if e.user_id == user)
    )
    try:
        async with (
            fast_client(cluster.b.ws_url, token) as on_b,
            fast_client(cluster.a.ws_url, token) as on_a,  # another tab, on the other node
        ):
            # Live order holds per node; across nodes two publishes may race, so each node's
            # batch is received before the other node creates.
            created = [await cluster.notify(cluster.a, user, f"from A #{i}") for i in range(3)]
            got = {client: await take(client, 3) for client in (on_b, on_a)}
            created.append(await cluster.notify(cluster.b, user, "from B"))
            for client in (on_b, on_a):
                got[client] += await take(client, 1)
                assert [n.id for n in got[client]] == created
                titles = [n.title for n in got[client]]
                assert titles == ["from A #0", "from A #1", "from A #2", "from B"]
                assert client.stats.duplicates_dropped == 0
            await wait_until(lambda: published >= set(created), what="published on Redis")

            other = token_for(cluster.db, EMPLOYEES[1])
            async with fast_client(cluster.b.ws_url, other) as someone_else:
                mine = await cluster.notify(cluster.a, user, "only for the first user")
                assert [n.id for n in await take(on_b, 1)] == [mine]
                theirs = await cluster.notify(cluster.a, EMPLOYEES[1], "for the second user")
                assert [n.id for n in await take(someone_else, 1)] == [theirs]
    finally:
        await observer.close()
    # One shared MariaDB holds them all (ids from both nodes share its sequence), no SQLite.
    assert cluster.stored_ids(user) == [*created, mine]
    assert not list(cluster.workdir.rglob("*.db")), "a node fell back to SQLite"


async def test_a_client_of_a_killed_node_resumes_on_the_other_and_rows_are_cleaned(
    cluster: Cluster,
) -> None:
    user = EMPLOYEES[2]
    reconnect = asyncio.Event()

    async def held_sleep(delay: float) -> None:
        """Backoff that waits for the test: notifications are created while disconnected."""
        await reconnect.wait()
        await asyncio.sleep(min(delay, 0.05))

    client = fast_client(cluster.a.ws_url, token_for(cluster.db, user), sleep=held_sleep)
    async with client:
        created = [await cluster.notify(cluster.a, user, f"A{i}") for i in range(3)]
        got = await take(client, 3)
        created += [await cluster.notify(cluster.b, user, f"B{i}") for i in range(2)]
        got += await take(client, 2)

        # Before the kill: A keeps a row for this connection, under A's node id.
        first_connection = client.connection_id
        assert first_connection is not None
        await wait_until(
            lambda: first_connection in cluster.connection_rows(), what="A's presence row"
        )
        node_a = cluster.connection_rows()[first_connection]
        assert node_a is not None

        client.url = cluster.b.ws_url  # where the next reconnection goes
        cluster.a.kill()
        await wait_until(lambda: not client.connected, what="the client sees A die")

        while_away = [await cluster.notify(cluster.b, user, f"away{i}") for i in range(4)]
        created += while_away
        reconnect.set()
        await client.wait_connected()
        got += await take(client, len(while_away))
        assert client.recovered == [True]  # resumed from its last id, not reloaded

        live = [await cluster.notify(cluster.b, user, f"live{i}") for i in range(3)]
        created += live
        got += await take(client, len(live))

        ids = [n.id for n in got]
        assert ids == created  # every id, in order
        assert len(set(ids)) == len(ids)
        assert client.stats.duplicates_dropped == 0  # the server resent nothing either
        assert client.stats.reconnects == 1

        # After the kill: B removes A's rows (stale after 3 heartbeats), keeps its own.
        second_connection = client.connection_id
        assert second_connection is not None and second_connection != first_connection
        await wait_until(
            lambda: node_a not in cluster.connection_rows().values(),
            timeout=20,
            what="B removes the dead node's rows",
        )
        await wait_until(
            lambda: second_connection in cluster.connection_rows(), what="B's presence row"
        )
        assert cluster.connection_rows()[second_connection] != node_a
