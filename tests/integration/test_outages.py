"""Outages of Redis and of the database: a redis-server, a PostgreSQL and a MariaDB of the test's
own (never the machine's; ``tests/own_servers.py``), killed with SIGKILL while a server and a
client are up, then started again.

Nothing that committed answers an error: creates, reads and clears succeed (rate limits count
in the process, delivery falls back to the sweep), the socket stays open, and after Redis
returns the node resubscribes and delivery goes through it again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import redis.asyncio as aioredis
import websockets

from tests.conftest import Database, LiveServer, seed_and_score, token_for, unavailable
from tests.own_servers import MariaDBProcess, PostgresProcess, RedisProcess, ServerMissing
from treevu.db.migrate import upgrade
from treevu.notifications.broker import channel_for

ADMIN = 1
USER = 2


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    try:
        process = RedisProcess(tmp_path)
    except ServerMissing as exc:
        unavailable(str(exc))
    process.start()
    yield process
    process.kill()


def create(live: LiveServer, db: Database, title: str) -> httpx.Response:
    return httpx.post(
        live.url + "/api/v1/admin/notifications",
        json={"userId": USER, "type": "milestone", "title": title, "message": "…"},
        headers={"Authorization": f"Bearer {token_for(db, ADMIN)}"},
        timeout=10,
    )


async def next_of(ws: Any, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if message["type"] == kind:
                return message


async def until_ready(live: LiveServer) -> None:
    async with asyncio.timeout(15), httpx.AsyncClient() as http:
        while (await http.get(live.url + "/readyz")).status_code != 200:
            await asyncio.sleep(0.1)


async def test_a_redis_outage_turns_nothing_committed_into_an_error(
    sqlite_database: Database, own_redis: RedisProcess
) -> None:
    db = sqlite_database
    seed_and_score(db, n_users=20)
    settings = db.settings(redis_url=own_redis.url, sweep_interval=0.3)
    user = {"Authorization": f"Bearer {token_for(db, USER)}"}
    with LiveServer(settings) as live:
        url = f"ws://127.0.0.1:{live.port}/ws"
        async with websockets.connect(url, additional_headers=user) as ws:
            await next_of(ws, "welcome")
            before = create(live, db, "before").json()["id"]
            assert (await next_of(ws, "notification"))["notification"]["id"] == before

            own_redis.kill()
            during = create(live, db, "during")
            assert during.status_code == 201, during.text  # limits count in the process
            got = await next_of(ws, "notification")  # through the sweep
            assert got["notification"]["id"] == during.json()["id"]
            read = httpx.post(f"{live.url}/api/v1/notifications/{before}/read", headers=user)
            assert read.status_code == 200, read.text
            await ws.send(json.dumps({"type": "pong"}))
            await ws.send(json.dumps({"type": "mark_read", "id": got["notification"]["id"]}))
            await ws.send(json.dumps({"type": "resume", "lastId": 0}))
            assert (await next_of(ws, "resumed"))["recovered"] is True  # still open
            cleared = httpx.post(f"{live.url}/api/v1/notifications/clear", headers=user)
            assert cleared.status_code == 200, cleared.text
            assert httpx.get(live.url + "/readyz").status_code == 503

            own_redis.start()  # same port
            await until_ready(live)
            after = create(live, db, "after")
            assert after.status_code == 201
            assert (await next_of(ws, "notification"))["notification"]["id"] == after.json()["id"]


@pytest.fixture(params=["postgresql", "mariadb"])
def own_database(request: pytest.FixtureRequest) -> Iterator[PostgresProcess | MariaDBProcess]:
    try:
        server = PostgresProcess() if request.param == "postgresql" else MariaDBProcess()
    except ServerMissing as exc:
        unavailable(str(exc))
    server.start()
    yield server
    server.remove()


async def test_with_the_database_down_requests_get_503_and_sockets_stay(
    own_database: PostgresProcess | MariaDBProcess,
) -> None:
    backend = "postgresql" if isinstance(own_database, PostgresProcess) else "mariadb"
    db = Database(backend, own_database.url)
    upgrade(db.settings().sync_database_url)
    seed_and_score(db, n_users=20)
    user = {"Authorization": f"Bearer {token_for(db, USER)}"}
    with LiveServer(db.settings(sweep_interval=0.3)) as live:
        url = f"ws://127.0.0.1:{live.port}/ws"
        async with websockets.connect(url, additional_headers=user) as ws:
            await next_of(ws, "welcome")
            first = create(live, db, "first").json()["id"]
            assert (await next_of(ws, "notification"))["notification"]["id"] == first

            own_database.kill()
            refused = create(live, db, "while down")
            assert refused.status_code == 503, refused.text
            assert refused.headers["Retry-After"] == "5"
            unread = httpx.get(live.url + "/trpc/websocket.getUnreadCount", headers=user)
            assert unread.status_code == 503
            assert unread.json()["error"]["data"]["code"] == "SERVICE_UNAVAILABLE"
            await ws.send(json.dumps({"type": "mark_read", "id": first}))
            error = await next_of(ws, "error")
            assert error["code"] == "unavailable"

            own_database.start()
            await until_ready(live)
            back = create(live, db, "back")
            assert back.status_code == 201, back.text
            # The same socket, still open, gets it.
            assert (await next_of(ws, "notification"))["notification"]["id"] == back.json()["id"]


async def test_two_nodes_and_a_redis_outage_hide_nothing_from_a_resuming_client(
    sqlite_database: Database, own_redis: RedisProcess
) -> None:
    """Node A creates n1 while Redis is down and n2 after it is back; node B (whose sweep is an
    hour away) passes n2 to its client but never heard of n1. The client drops and resumes
    from n2 — the newest it has — and is sent n1, and not n2 again."""
    db = sqlite_database
    seed_and_score(db, n_users=20)
    settings = db.settings(redis_url=own_redis.url, sweep_interval=3600.0)
    user = {"Authorization": f"Bearer {token_for(db, USER)}"}
    probe_user = USER + 1
    probe = {"Authorization": f"Bearer {token_for(db, probe_user)}"}
    with LiveServer(settings) as node_a, LiveServer(settings) as node_b:
        url_b = f"ws://127.0.0.1:{node_b.port}/ws"
        async with (
            websockets.connect(url_b, additional_headers=user) as ws,
            websockets.connect(url_b, additional_headers=probe) as prober,
        ):
            await next_of(ws, "welcome")
            await next_of(prober, "welcome")
            n0 = create(node_a, db, "n0").json()["id"]
            assert (await next_of(ws, "notification"))["notification"]["id"] == n0

            own_redis.kill()
            n1 = create(node_a, db, "n1")
            assert n1.status_code == 201
            own_redis.start()
            await until_ready(node_a)
            await until_ready(node_b)
            # Both nodes subscribed again: a probe from A reaches B's other client.
            async with asyncio.timeout(15):
                while True:
                    answer = httpx.post(
                        node_a.url + "/api/v1/admin/notifications",
                        json={
                            "userId": probe_user,
                            "type": "milestone",
                            "title": "p",
                            "message": "…",
                        },
                        headers={"Authorization": f"Bearer {token_for(db, ADMIN)}"},
                    )
                    assert answer.status_code == 201
                    try:
                        async with asyncio.timeout(0.5):
                            await next_of(prober, "notification")
                        break
                    except TimeoutError:
                        continue
            n2 = create(node_a, db, "n2").json()["id"]
            assert (await next_of(ws, "notification"))["notification"]["id"] == n2

        async with websockets.connect(f"{url_b}?lastId={n2}", additional_headers=user) as again:
            await next_of(again, "welcome")
            resumed = await next_of(again, "resumed")
            # This client never acks: n0 is unacknowledged too, and comes again in order.
            assert resumed["recovered"] is True and resumed["count"] == 2
            got = [(await next_of(again, "notification"))["notification"]["id"] for _ in range(2)]
            assert got == [n0, n1.json()["id"]]  # n1 found; n2, its lastId, not sent again


#: The Redis of the test below: ``default`` (the node's user) and ``watcher``, the test's.
USERS: Final = ("--user", "default", "on", "nopass", "~*", "&*", "+@all",
                "--user", "watcher", "on", ">watcher", "~*", "&*", "+@all")  # fmt: skip


async def may_subscribe(watcher: aioredis.Redis, allowed: bool) -> None:
    """Grant or take back the node's user's right to subscribe (nothing else changes)."""
    sign = "+" if allowed else "-"
    commands = [f"{sign}{c}" for c in ("subscribe", "psubscribe", "ssubscribe")]
    await watcher.acl_setuser("default", enabled=True, nopass=True, commands=commands)


async def test_after_a_broker_outage_a_node_resubscribes_before_it_publishes_again(
    sqlite_database: Database, own_redis: RedisProcess
) -> None:
    """The node's subscription is cut and Redis refuses it again (an ACL) while it still
    answers the node's PING and PUBLISH on its other connections: the node is up but deaf.
    What it creates then is not published (its own clients would not hear it, and the next
    one would overtake it): the publish is refused at once and the row waits for the sweep or
    a resume. Once the node may subscribe it is subscribed before anything is published again.
    The sweep is an hour away: it cannot deliver, or hide, a publish that went out too early."""
    db = sqlite_database
    seed_and_score(db, n_users=20)
    own_redis.kill()
    own_redis.start(*USERS)
    settings = db.settings(redis_url=own_redis.url, sweep_interval=3600.0)
    channel = channel_for(own_redis.url)
    user = {"Authorization": f"Bearer {token_for(db, USER)}"}
    watcher = aioredis.Redis(port=own_redis.port, username="watcher", password="watcher")
    with LiveServer(settings) as live:
        url = f"ws://127.0.0.1:{live.port}/ws"
        async with (
            watcher,
            watcher.pubsub(ignore_subscribe_messages=True) as heard,
            websockets.connect(url, additional_headers=user) as ws,
        ):
            await next_of(ws, "welcome")
            before = create(live, db, "before").json()["id"]
            assert (await next_of(ws, "notification"))["notification"]["id"] == before

            await may_subscribe(watcher, False)
            await watcher.client_kill_filter(_type="pubsub")
            async with asyncio.timeout(15):  # until the node has tried again and been refused
                while not await watcher.acl_log(count=1):
                    await asyncio.sleep(0.05)
            await heard.subscribe(channel)
            held = create(live, db, "held")
            assert held.status_code == 201, held.text

            await may_subscribe(watcher, True)
            async with asyncio.timeout(15):
                while (await watcher.pubsub_numsub(channel))[0][1] < 2:  # watcher + node
                    await asyncio.sleep(0.05)
            after = create(live, db, "after").json()["id"]
            async with asyncio.timeout(10):
                published = None
                while published is None:
                    published = await heard.get_message(timeout=None)
            # The first publish heard is the one made once the node was subscribed again.
            assert [e[2] for e in json.loads(published["data"])] == [after]
            assert (await next_of(ws, "notification"))["notification"]["id"] == after

        # The held one is not lost: a resume from the newest id sends it (and the unacknowledged
        # ``before``), in id order.
        async with websockets.connect(f"{url}?lastId={after}", additional_headers=user) as again:
            await next_of(again, "welcome")
            assert (await next_of(again, "resumed"))["count"] == 2
            got = [(await next_of(again, "notification"))["notification"]["id"] for _ in range(2)]
            assert got == [before, held.json()["id"]]
