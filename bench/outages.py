"""Outages: Redis, then the database, down for 10 s under a running ``treevu serve`` with
connected clients; what the clients and the admin saw, and how long delivery took to come back.

Every server here is the benchmark's own (``tests/own_servers.py``): a redis-server, a
PostgreSQL and a MariaDB started on free loopback ports under temporary folders, killed with
SIGKILL and started again on the same port and data — never the machine's services.

Each scenario: ``treevu serve`` (a subprocess, default settings: sweep every 2 s) on a seeded
database, ``--clients`` sockets (``websockets``, one user each) that send a ``pong`` every
second and ``mark_read`` for every second notification, and an open-loop HTTP load of 20
requests a second cycling through admin create, admin broadcast (10 users), unread count, read
and clear. After 3 s the server (Redis or the database) is SIGKILLed, started again 10 s later;
from its return a probe creates a notification for one client every 100 ms, until 5 s after the
first delivery; then 10 s for stragglers, and every notification answered 201 is looked for in
what the clients received.

- ``redis`` (SQLite + the own Redis): answers by status while Redis was down (every request
  committed or read something: any non-2xx is an error answered to a committed request), sockets
  dropped; from Redis's return (its first PING) to the node's resubscription (``PUBSUB NUMSUB``
  polled every 10 ms, beside a watcher of the benchmark's own) and to the first notification a
  client received that had gone through Redis (its id heard by the watcher); how the
  notifications created while Redis was down arrived (the sweep), and lost ones.
- ``postgresql`` / ``mariadb`` (the own database server, no Redis): answers by status while it
  was down (503 with ``Retry-After`` wanted), sockets kept open, socket ``error`` codes; from
  the database's return (its port accepts) to the first 201 and to the first notification a
  client received (target ≤ 5 s), and lost ones.

Prints a table and writes ``bench/results/outages.json``:

    .venv/bin/python bench/outages.py                               # redis, postgresql, mariadb
    .venv/bin/python bench/outages.py --scenarios redis --clients 500
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import redis.asyncio as aioredis
import websockets
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.own_servers

from tests.own_servers import MariaDBProcess, PostgresProcess, RedisProcess

import ws_common as common
from treevu.notifications.broker import channel_for

RESULTS: Final = Path(__file__).parent / "results" / "outages.json"
SCENARIOS: Final = ("redis", "postgresql", "mariadb")
BASELINE: Final = 3.0
OUTAGE: Final = 10.0
LOAD_INTERVAL: Final = 0.05
PROBE_INTERVAL: Final = 0.1
#: After the first delivery following the return: how long the load and the probe go on.
AFTER_FIRST: Final = 5.0
#: Then how long to wait for what the sweep still has to deliver.
STRAGGLERS: Final = 10.0
TARGET_DB_RESUME_S: Final = 5.0
OPS: Final = ("create", "broadcast", "unread", "read", "clear")
#: The probed client acks ten notifications a second: above the default socket message limit.
LIMITS: Final = {"TREEVU_WS_MESSAGES_PER_MINUTE": "100000"}
console = Console(width=150)


@dataclass
class Clients:
    """One socket per user: what each received (id → monotonic time) and how sessions ended."""

    url: str
    tokens: dict[int, str]
    received: dict[int, dict[int, float]] = field(default_factory=dict)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    closed: list[tuple[int, float, str]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    sockets: list[Any] = field(default_factory=list)

    async def connect(self) -> None:
        welcomed = [asyncio.Event() for _ in self.tokens]
        for (uid, token), event in zip(self.tokens.items(), welcomed, strict=True):
            self.received[uid] = {}
            self.tasks.append(asyncio.create_task(self._session(uid, token, event)))
        async with asyncio.timeout(60):
            await asyncio.gather(*(e.wait() for e in welcomed))

    async def _session(self, uid: int, token: str, welcomed: asyncio.Event) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        async with websockets.connect(self.url, additional_headers=headers) as ws:
            self.sockets.append(ws)
            pong = asyncio.create_task(self._pong(ws))
            try:
                async for raw in ws:
                    message = json.loads(raw)
                    kind = message.get("type")
                    if kind == "welcome":
                        welcomed.set()
                    elif kind == "notification":
                        nid = int(message["notification"]["id"])
                        self.received[uid].setdefault(nid, time.monotonic())
                        if nid % 2:
                            await ws.send(json.dumps({"type": "mark_read", "id": nid}))
                    elif kind == "error":
                        self.errors[str(message.get("code"))] += 1
            except websockets.ConnectionClosed:
                pass
            finally:
                pong.cancel()
                if not self._closing:
                    self.closed.append((uid, time.monotonic(), f"{ws.close_code}"))

    _closing = False

    async def _pong(self, ws: Any) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await asyncio.sleep(1.0)
                await ws.send('{"type":"pong"}')

    async def close(self) -> None:
        self._closing = True
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def first_receipt(self, ids: set[int], since: float) -> float | None:
        times = [t for got in self.received.values() for nid, t in got.items() if nid in ids]
        later = [t for t in times if t >= since]
        return min(later) if later else None


#: One HTTP answer: issued (monotonic), operation, status (0: no answer), Retry-After or "",
#: the notification ids it created.
Answer = tuple[float, str, int, str, list[int]]


class Load:
    """The open-loop HTTP load, and the probe's creates, with every answer kept."""

    def __init__(self, base_url: str, admin: str, clients: Clients) -> None:
        self.base_url, self.clients = base_url, clients
        self.admin = {"Authorization": f"Bearer {admin}"}
        self.answers: list[Answer] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._http = httpx.AsyncClient(base_url=base_url, timeout=15)
        self._rng = random.Random(7)

    def created_after(self, since: float) -> set[int]:
        return {nid for a in self.answers if a[0] >= since for nid in a[4]}

    async def run(self, stop: asyncio.Event) -> None:
        k = 0
        while not stop.is_set():
            self._spawn(self._op(OPS[k % len(OPS)]))
            k += 1
            await asyncio.sleep(LOAD_INTERVAL)

    async def probe(self, uid: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._spawn(self._create("probe", [uid]))
            await asyncio.sleep(PROBE_INTERVAL)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.aclose()

    async def _op(self, op: str) -> None:
        # The last user only clears (a clear deletes what it has: a read or a delivery of it
        # would find nothing); the others are sent notifications and read them.
        *users, clearing = list(self.clients.tokens)
        uid = self._rng.choice(users)
        got = self.clients.received[uid]
        if op == "read" and not got:
            op = "unread"
        if op == "create":
            await self._create(op, [uid])
        elif op == "broadcast":
            await self._create(op, self._rng.sample(users, min(10, len(users))))
        elif op == "clear":
            own = {"Authorization": f"Bearer {self.clients.tokens[clearing]}"}
            await self._send(op, "POST", "/api/v1/notifications/clear", own)
        else:
            own = {"Authorization": f"Bearer {self.clients.tokens[uid]}"}
            if op == "unread":
                await self._send(op, "GET", "/api/v1/notifications/unread-count", own)
            else:
                await self._send(op, "POST", f"/api/v1/notifications/{max(got)}/read", own)

    async def _create(self, op: str, users: list[int]) -> None:
        body: dict[str, Any] = {"type": "milestone", "title": op, "message": "Outage benchmark."}
        if op == "broadcast":
            path, body["userIds"] = "/api/v1/admin/notifications/broadcast", users
        else:
            path, body["userId"] = "/api/v1/admin/notifications", users[0]
        await self._send(op, "POST", path, self.admin, body)

    async def _send(
        self, op: str, method: str, path: str, headers: dict[str, str], body: Any = None
    ) -> None:
        issued = time.monotonic()
        ids: list[int] = []
        try:
            response = await self._http.request(method, path, headers=headers, json=body)
            status, retry = response.status_code, response.headers.get("Retry-After", "")
            if status == 201:
                payload = response.json()
                ids = [int(payload["id"])] if "id" in payload else list(payload.get("ids", []))
        except httpx.HTTPError:
            status, retry = 0, ""
        self.answers.append((issued, op, status, retry, ids))


def by_status(answers: list[Answer]) -> dict[str, dict[str, int]]:
    out: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for _, op, status, retry, _ in answers:
        out[op][f"{status}{' +Retry-After' if retry else ''}"] += 1
    return {op: dict(c) for op, c in sorted(out.items())}


def seconds(t: float | None, since: float) -> float | None:
    return None if t is None else round(t - since, 3)


@dataclass
class Watch:
    """Redis seen from the benchmark's own subscriber, from Redis's return on: when the node
    had subscribed again, and when each notification id went through the channel."""

    url: str
    resubscribed: float | None = None
    heard: dict[int, float] = field(default_factory=dict)

    async def run(self, stop: asyncio.Event) -> None:
        channel = channel_for(self.url)
        watcher = aioredis.Redis.from_url(self.url)
        async with watcher, watcher.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(channel)
            while not stop.is_set():
                if self.resubscribed is None:
                    if (await watcher.pubsub_numsub(channel))[0][1] >= 2:  # the node and us
                        self.resubscribed = time.monotonic()
                message = await pubsub.get_message(timeout=0.01)
                if message is not None:
                    for envelope in json.loads(message["data"]):
                        if envelope[0] == "notify":
                            self.heard.setdefault(int(envelope[2]), time.monotonic())


async def _outage(
    base_url: str,
    ws_url: str,
    users: list[int],
    kill: Callable[[], None],
    start: Callable[[], None],
    redis_url: str | None,
) -> dict[str, Any]:
    """Connect, load, kill, start again, probe; what was answered and received."""
    tokens = dict(zip(users, common._mint_tokens(users, 3600), strict=True))
    clients = Clients(ws_url, tokens)
    await clients.connect()
    load = Load(base_url, common.admin_token(), clients)
    stop_load, stop_probe, stop_watch = asyncio.Event(), asyncio.Event(), asyncio.Event()
    loader = asyncio.create_task(load.run(stop_load))
    await asyncio.sleep(BASELINE)
    killed = time.monotonic()
    await asyncio.to_thread(kill)
    await asyncio.sleep(OUTAGE - (time.monotonic() - killed))
    restart_began = time.monotonic()
    await asyncio.to_thread(start)
    returned = time.monotonic()
    watch = Watch(redis_url) if redis_url is not None else None
    watcher = asyncio.create_task(watch.run(stop_watch)) if watch is not None else None
    prober = asyncio.create_task(load.probe(users[0], stop_probe))
    first: float | None = None
    async with asyncio.timeout(60):
        while first is None:
            await asyncio.sleep(0.01)
            first = clients.first_receipt(load.created_after(returned), returned)
    await asyncio.sleep(AFTER_FIRST)
    stop_probe.set()
    stop_load.set()
    await asyncio.gather(loader, prober)
    await load.drain()
    await asyncio.sleep(STRAGGLERS)
    stop_watch.set()
    if watcher is not None:
        await watcher
    await clients.close()

    during = [a for a in load.answers if killed <= a[0] < returned]
    first_201 = min((a[0] for a in load.answers if a[0] >= returned and a[2] == 201), default=None)
    closed_during = [c for c in clients.closed if killed <= c[1] < returned]
    created_at = {nid: a[0] for a in load.answers for nid in a[4]}
    made_during = {nid for a in during for nid in a[4]}
    late = [t - created_at[nid] for r in clients.received.values()
            for nid, t in r.items() if nid in made_during]  # fmt: skip
    received = {nid for r in clients.received.values() for nid in r}
    out: dict[str, Any] = {
        "clients": len(users),
        "outageSeconds": round(returned - killed, 3),
        "restartSeconds": round(returned - restart_began, 3),
        "answersBefore": by_status([a for a in load.answers if a[0] < killed]),
        "answersDuring": by_status(during),
        "answersAfter": by_status([a for a in load.answers if a[0] >= returned]),
        "requestsDuring": len(during),
        "errorsDuring": sum(1 for a in during if not 200 <= a[2] < 300),
        "socketsClosed": len(closed_during),
        "socketsClosedAfterReturn": sum(1 for c in clients.closed if c[1] >= returned),
        "socketCloseCodes": dict(collections.Counter(c[2] for c in closed_during)),
        "socketErrors": dict(clients.errors),
        "returnToFirst201Seconds": seconds(first_201, returned),
        "returnToFirstDeliverySeconds": seconds(first, returned),
        "createdDuring": {
            "notifications": len(made_during),
            "received": len(late),
            "creationToReceiptMaxSeconds": round(max(late), 3) if late else None,
        },
        "notificationsCreated": len(created_at),
        "notificationsLost": len(set(created_at) - received),
    }
    if watch is not None:
        through = clients.first_receipt(set(watch.heard), returned)
        out.update(
            returnToResubscribedSeconds=seconds(watch.resubscribed, returned),
            returnToFirstBrokerDeliverySeconds=seconds(through, returned),
            publishedAfterReturn=len(watch.heard),
        )
    return out


async def _serve_through(
    workdir: Path,
    env: dict[str, str],
    n: int,
    kill: Callable[[], None],
    start: Callable[[], None],
    redis_url: str | None = None,
) -> dict[str, Any]:
    port = common.free_port()
    argv = [str(common.BIN / "treevu"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = common.ServerProcess(argv, env, port, workdir / "serve.log")
    await asyncio.to_thread(server.__enter__)
    try:
        ws_url = f"ws://127.0.0.1:{port}/ws"
        users = list(range(2, n + 2))
        return await _outage(server.url, ws_url, users, kill, start, redis_url)
    finally:
        await asyncio.to_thread(server.__exit__, None, None, None)


def redis_scenario(workdir: Path, n: int) -> dict[str, Any]:
    (workdir / "redis").mkdir(parents=True, exist_ok=True)
    own = RedisProcess(workdir / "redis")
    own.start()
    try:
        env = common.prepare_database(workdir, n + 1, TREEVU_REDIS_URL=own.url, **LIMITS)
        return {
            "database": "sqlite",
            **asyncio.run(_serve_through(workdir, env, n, own.kill, own.start, own.url)),
        }
    finally:
        own.kill()


def database_scenario(workdir: Path, backend: str, n: int) -> dict[str, Any]:
    own: PostgresProcess | MariaDBProcess = (
        PostgresProcess() if backend == "postgresql" else MariaDBProcess()
    )
    own.start()
    try:
        url = own.url
        if backend == "mariadb":
            admin = create_engine(url.replace("+asyncmy", "+pymysql"))
            with admin.begin() as conn:
                conn.execute(text("CREATE DATABASE treevu CHARACTER SET utf8mb4"))
            admin.dispose()
            url = url.rsplit("/", 1)[0] + "/treevu"
        env = common.prepare_database(workdir, n + 1, database_url=url, **LIMITS)
        return {
            "database": backend,
            **asyncio.run(_serve_through(workdir, env, n, own.kill, own.start)),
        }
    finally:
        own.remove()


def _statuses(answers: dict[str, dict[str, int]]) -> str:
    total: collections.Counter[str] = collections.Counter()
    for counts in answers.values():
        total.update(counts)
    return ", ".join(f"{k}: {v:,}" for k, v in sorted(total.items()))


def print_table(results: dict[str, dict[str, Any]]) -> None:
    table = Table(title=f"Outages of {OUTAGE:.0f} s under treevu serve with connected clients")
    table.add_column("figure")
    for name in results:
        table.add_column(name, justify="right")

    def row(label: str, value: Callable[[dict[str, Any]], Any]) -> None:
        cells = []
        for r in results.values():
            try:
                cells.append(str(value(r)))
            except KeyError:
                cells.append("—")
        table.add_row(label, *cells)

    row("clients (sockets)", lambda r: f"{r['clients']:,}")
    row("requests while down", lambda r: f"{r['requestsDuring']:,}")
    row("answers while down", lambda r: _statuses(r["answersDuring"]))
    row("answers other than 2xx while down", lambda r: r["errorsDuring"])
    row("sockets closed", lambda r: f"{r['socketsClosed']} {r['socketCloseCodes'] or ''}")
    row("socket error replies", lambda r: r["socketErrors"] or 0)
    row("restart (kill → port/PING back)", lambda r: f"{r['outageSeconds']:.1f} s")
    row("return → node resubscribed", lambda r: f"{r['returnToResubscribedSeconds']} s")
    row("return → first 201", lambda r: f"{r['returnToFirst201Seconds']} s")
    row("return → first delivery", lambda r: f"{r['returnToFirstDeliverySeconds']} s")
    row("return → first via the broker", lambda r: f"{r['returnToFirstBrokerDeliverySeconds']} s")
    row(
        "created while down: received",
        lambda r: (
            f"{r['createdDuring']['received']}/{r['createdDuring']['notifications']}"
            f" (max {r['createdDuring']['creationToReceiptMaxSeconds']} s after creation)"
        ),
    )
    row(
        "notifications lost", lambda r: f"{r['notificationsLost']} of {r['notificationsCreated']:,}"
    )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    scenarios = args.scenarios.split(",")
    for name in scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}; use {', '.join(SCENARIOS)}")
    common.raise_fd_limit()
    results: dict[str, dict[str, Any]] = {}
    for name in scenarios:
        console.print(f"[bold]{name}[/bold] down for {OUTAGE:.0f} s; load {common.load_average()}")
        with tempfile.TemporaryDirectory(prefix=f"treevu-outage-{name}-") as tmp:
            if name == "redis":
                results[name] = redis_scenario(Path(tmp), args.clients)
            else:
                results[name] = database_scenario(Path(tmp), name, args.clients)
        results[name]["loadAfter"] = common.load_average()
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        **common.machine_facts(),
        "command": " ".join(sys.argv),
        "code": common.git_state(),
        "settings": {
            "outageSeconds": OUTAGE,
            "loadPerSecond": round(1 / LOAD_INTERVAL),
            "probeEverySeconds": PROBE_INTERVAL,
            "clients": args.clients,
            "targetDatabaseResumeSeconds": TARGET_DB_RESUME_S,
        },  # fmt: skip
        "results": results,
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
