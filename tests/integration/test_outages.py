"""Outages of Redis and of the database: a redis-server, a PostgreSQL and a MariaDB of the test's
own (never the machine's), killed with SIGKILL while a server and a client are up, then started
again.

Nothing that committed answers an error: creates, reads and clears succeed (rate limits count
in the process, delivery falls back to the sweep), the socket stays open, and after Redis
returns the node resubscribes and delivery goes through it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websockets

from tests.conftest import Database, LiveServer, free_port, seed_and_score, token_for, unavailable
from treevu.db.migrate import upgrade

ADMIN = 1
USER = 2


class RedisProcess:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server (the binary)")
        self.binary = str(binary)
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        while True:
            try:
                if client.ping():
                    client.close()
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("redis-server did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    process = RedisProcess(tmp_path)
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


class _OwnServer:
    """A database server process of the test's own, in its own process group under a
    temporary folder: killed with SIGKILL (with its children), then removed."""

    root: Path
    process: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


class PostgresProcess(_OwnServer):
    """A PostgreSQL server of the test's own: initdb into a temporary folder, then start,
    SIGKILL (with its whole process group) and start again on the same port and data."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
        if not found:
            unavailable("PostgreSQL's server binaries")
        self.bin = Path(found[-1]).parent
        self.root = Path(tempfile.mkdtemp(prefix="treevu-pg-"))
        self.user = "postgres" if os.geteuid() == 0 else None  # it refuses to run as root
        if self.user:
            shutil.chown(self.root, self.user)
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.port = free_port()
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
             "--no-sync"],
            user=self.user, check=True, capture_output=True,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            self.process = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-k", str(self.root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                user=self.user, start_new_session=True,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            while self.process.poll() is None and time.monotonic() < deadline:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                        return
                except OSError:
                    time.sleep(0.05)
            if time.monotonic() > deadline:
                raise AssertionError("postgres did not start")
            time.sleep(0.2)  # the killed server's children are still leaving: try again


class MariaDBProcess(_OwnServer):
    """A MariaDB server of the test's own, like :class:`PostgresProcess`."""

    def __init__(self) -> None:
        self.bin = shutil.which("mariadbd", path="/usr/sbin:/usr/bin")
        install = shutil.which("mariadb-install-db")
        if self.bin is None or install is None:
            unavailable("MariaDB's server binaries")
        self.root = Path(tempfile.mkdtemp(prefix="treevu-mariadb-"))
        self.data = self.root / "data"
        self.port = free_port()
        subprocess.run(
            [str(install), "--no-defaults", f"--datadir={self.data}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, capture_output=True,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"mysql+asyncmy://root@127.0.0.1:{self.port}/mysql"

    def start(self) -> None:
        assert self.bin is not None
        self.process = subprocess.Popen(
            [self.bin, "--no-defaults", f"--datadir={self.data}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.root / 'sock'}", "--user=root",
             "--innodb-buffer-pool-size=32M", "--skip-log-bin"],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, "mariadbd exited"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                assert time.monotonic() < deadline, "mariadbd did not start"
                time.sleep(0.05)


@pytest.fixture(params=["postgresql", "mariadb"])
def own_database(request: pytest.FixtureRequest) -> Iterator[PostgresProcess | MariaDBProcess]:
    server = PostgresProcess() if request.param == "postgresql" else MariaDBProcess()
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
