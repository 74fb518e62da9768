"""Reconnect storm: N clients on one ``treevu serve`` (SQLite), the server killed with SIGKILL
and started again on the same port; how long until every client is welcomed again.

On a database seeded with ``treevu seed`` (N + 1 users; user 1 is the admin), ``treevu serve``
runs as a subprocess. ``--client-processes`` processes (uvloop; ``websockets``' sans-I/O client
under an asyncio protocol, deflate offered, each bound to its own loopback address 127.0.0.2, …)
hold one socket per user (``Authorization: Bearer``). Each client follows ``treevu.client``'s
rules, using its :class:`~treevu.client.Backoff` and :func:`~treevu.client.retry_hint`: after a
drop or a failed attempt it waits ``uniform(0, min(30, 1 × 2^attempt))`` (full jitter; the
attempt count resets at a welcome), and at least 1–2 × the server's hint after a refusal for
load (HTTP 503 + Retry-After, or close 1013 "server busy; retry after Ns"); connect + welcome
time out after 30 s; it resumes with ``?lastId=<largest id seen>`` and acks every notification.
It records the ids of each session (an id twice in one session is an error) and of its life
(an id of the inbox never received is lost).

Sequence: connect everyone (at most ``--concurrency`` openings in flight per process, for the
set-up only); broadcast one ``compliance_alert`` (cannot be muted) to all through
``POST /api/v1/admin/notifications/broadcast`` (1,000 ids a request) and wait until everyone has
it; probe the idle admin API for 2 s (baseline); SIGKILL the server; start it again (same port,
same database; restart = spawn → first ``/healthz`` 200); from the spawn until everyone is back,
``GET /api/v1/notifications/unread-count`` with the admin token every 50 ms (open loop); then a
second broadcast, wait until everyone has it, 3 s more for late duplicates, and compare what
each client got with ``notification_queue``. Times are CLOCK_MONOTONIC across processes. Prints
a table, writes ``bench/results/ws_storm.json``; never fails on a figure (target: everyone back
≤ 15 s after the kill).

    .venv/bin/python bench/ws_storm.py --quick          # 1,000 clients
    .venv/bin/python bench/ws_storm.py                  # 10,000 clients, 2 client processes
    .venv/bin/python bench/ws_storm.py --split --out bench/results/ws_storm_split.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import random
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final, cast

import httpx
from rich.console import Console
from rich.table import Table
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import WebSocketURI, parse_uri

import ws_common as common
from treevu.client import Backoff, retry_hint

RESULTS: Final = Path(__file__).parent / "results" / "ws_storm.json"
TARGET_SECONDS: Final = 15.0
#: treevu.client's defaults: base 1 s, cap 30 s, connect + welcome within 30 s.
BACKOFF: Final = Backoff(1.0, 30.0)
OPEN_TIMEOUT: Final = 30.0
PROBE_PATH: Final = "/api/v1/notifications/unread-count"
PROBE_INTERVAL: Final = 0.05
#: After the second notification reached everyone: how long to wait for late duplicates.
GRACE: Final = 3.0
#: Kernel counters read before the kill and when everyone is back.
TCP_COUNTERS: Final = ("ListenOverflows", "ListenDrops", "TCPReqQFullDoCookies", "SyncookiesSent",
                       "SyncookiesFailed", "TCPTimeouts")  # fmt: skip
console = Console(width=140)

# -- one client process ----------------------------------------------------------------------

#: How an attempt ended before or at ``welcome``: "ok" | "busy" | "error", a detail, a hint (s).
Outcome = tuple[str, str, float | None]


class Client:
    """One user's state across sessions (what ``treevu.client.NotificationClient`` keeps)."""

    __slots__ = ("uid", "token", "last_id", "attempt", "ids", "session", "welcomes", "back_at",
                 "storm_attempts", "back_latency")  # fmt: skip

    def __init__(self, uid: int, token: str) -> None:
        self.uid = uid
        self.token = token
        self.last_id: int | None = None
        self.attempt = 0  # failed attempts since the last welcome (the backoff exponent)
        self.ids: set[int] = set()  # every id received, all sessions
        self.session: Session | None = None  # the welcomed session, while it lasts
        self.welcomes = 0
        self.back_at: float | None = None  # first welcome after "arm" (monotonic)
        self.storm_attempts = 0  # attempts after "arm" until back
        self.back_latency: float | None = None  # that welcomed attempt: its start → welcome


class Session(asyncio.Protocol):
    """One connection attempt and, once welcomed, its session."""

    def __init__(self, fleet: Fleet, client: Client, uri: WebSocketURI) -> None:
        self.fleet = fleet
        self.client = client
        self.ws = ClientProtocol(uri, extensions=fleet.extensions, max_size=None)
        loop = asyncio.get_running_loop()
        self.outcome: asyncio.Future[Outcome] = loop.create_future()
        self.ended: asyncio.Future[tuple[int | None, str]] = loop.create_future()
        self.ids: set[int] = set()  # ids of this session
        self.transport: asyncio.Transport | None = None
        self.started = time.monotonic()

    def __call__(self) -> Session:  # its own protocol factory
        return self

    def settle(self, kind: str, detail: str = "", hint: float | None = None) -> None:
        if not self.outcome.done():
            self.outcome.set_result((kind, detail, hint))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        request = self.ws.connect()
        request.headers["Authorization"] = f"Bearer {self.client.token}"
        self.ws.send_request(request)
        self.flush()

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Response):
                exc = self.ws.handshake_exc
                if isinstance(exc, InvalidStatus):
                    status = exc.response.status_code
                    if status == 503:
                        hint = retry_hint(exc.response.headers.get("Retry-After", ""))
                        self.settle("busy", "HTTP 503", hint)
                    self.settle("error", f"HTTP {status}")
                elif exc is not None:
                    self.settle("error", repr(exc))
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self.on_text(bytes(event.data))
            elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                code, reason = (c.code, c.reason) if (c := self.ws.close_rcvd) else (1005, "")
                if code == 1013:  # CLOSE_TRY_AGAIN_LATER
                    self.settle("busy", f"close 1013 {reason}", retry_hint(reason))
                self.settle("error", f"close {code} {reason}")
        self.flush()

    def on_text(self, raw: bytes) -> None:
        msg = json.loads(raw)
        kind = msg.get("type")
        fleet, client = self.fleet, self.client
        if kind == "notification":
            nid = int(msg["notification"]["id"])
            fleet.counts["notifications"] += 1
            if nid in self.ids:
                fleet.counts["twiceInSession"] += 1
            elif nid in client.ids:
                fleet.counts["againInLaterSession"] += 1  # allowed; the client drops it
            self.ids.add(nid)
            client.ids.add(nid)
            client.last_id = nid if client.last_id is None else max(client.last_id, nid)
            self.ws.send_text(b'{"type":"ack","id":%d}' % nid)
        elif kind == "welcome" and not self.outcome.done():
            now = time.monotonic()
            client.session = self
            client.welcomes += 1
            fleet.counts["welcomes"] += 1
            fleet.connected += 1
            if fleet.armed_at is not None and client.back_at is None:
                client.back_at = now
                client.back_latency = now - self.started
            if fleet.connected == len(fleet.clients):
                fleet.all_connected.set()
            self.settle("ok")
        elif kind == "resumed":
            fleet.counts["resumed"] += 1
            if msg.get("recovered") is False:
                fleet.counts["notRecovered"] += 1
        elif kind == "error":
            fleet.counts["errorMessages"] += 1

    def flush(self) -> None:
        for chunk in self.ws.data_to_send():
            if self.transport is None or self.transport.is_closing():
                return
            if not chunk:  # end of stream
                self.transport.close()
                return
            self.transport.write(chunk)

    def connection_lost(self, exc: Exception | None) -> None:
        self.settle("error", repr(exc or ConnectionError("closed before welcome")))
        if self.client.session is self:
            self.client.session = None
            self.fleet.connected -= 1
        close = self.ws.close_rcvd
        if not self.ended.done():
            self.ended.set_result((close.code, close.reason) if close else (None, ""))

    def close(self, code: int | None = None) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if code is not None:
                with contextlib.suppress(Exception):
                    self.ws.send_close(code)
                    self.flush()
            self.transport.close()


class Fleet:
    """The clients of one process and their counters."""

    def __init__(self, ws_url: str, user_ids: list[int], local_addr: str, concurrency: int):
        self.ws_url = ws_url
        self.uri = parse_uri(ws_url)
        self.local = (local_addr, 0)
        self.clients = [
            Client(uid, token)
            for uid, token in zip(user_ids, common._mint_tokens(user_ids, 24 * 3600), strict=True)
        ]
        self.extensions = enable_client_permessage_deflate(None)
        self.gate = asyncio.Semaphore(concurrency)  # first connections only (the set-up)
        self.rng = random.Random()  # noqa: S311 (jitter, not crypto)
        self.counts: collections.Counter[str] = collections.Counter()
        self.samples: list[str] = []
        self.close_codes: collections.Counter[str] = collections.Counter()
        self.connected = 0
        self.all_connected = asyncio.Event()
        self.armed_at: float | None = None
        self.closing = False
        self.tasks: list[asyncio.Task[None]] = []

    async def attempt(self, client: Client) -> tuple[Session, Outcome]:
        """One connection attempt, up to ``welcome`` (or its failure)."""
        uri = self.uri
        if client.last_id is not None:
            uri = parse_uri(f"{self.ws_url}?lastId={client.last_id}")
        session = Session(self, client, uri)
        self.counts["attempts"] += 1
        if self.armed_at is not None and client.back_at is None:
            client.storm_attempts += 1
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                await loop.create_connection(session, uri.host, uri.port, local_addr=self.local)
                return session, await session.outcome
        except ConnectionRefusedError:
            return session, ("down", "connection refused", None)
        except TimeoutError:
            return session, ("timeout", "no welcome within 30 s", None)
        except OSError as exc:
            return session, ("error", repr(exc), None)

    async def run(self, client: Client) -> None:
        """``treevu.client``'s loop: connect, read until the drop, back off, resume."""
        while not self.closing:
            first = client.welcomes == 0
            if first:
                await self.gate.acquire()
            try:
                session, (kind, detail, hint) = await self.attempt(client)
            finally:
                if first:
                    self.gate.release()
            if kind == "ok":
                client.attempt = 0
                code, reason = await session.ended
                if self.closing:
                    return
                self.close_codes[str(code)] += 1
                hint = retry_hint(reason) if code == 1013 else None
            else:
                session.close()
                self.counts[kind] += 1
                if kind == "error" and len(self.samples) < 5:
                    self.samples.append(detail)
            delay = BACKOFF.delay(client.attempt, self.rng)
            if hint is not None:  # a busy server said when to come back: [hint, 2 × hint]
                delay = max(delay, hint * (1.0 + self.rng.random()))
            client.attempt += 1
            await asyncio.sleep(delay)

    def progress(self) -> dict[str, Any]:
        have: collections.Counter[int] = collections.Counter(
            min(len(c.ids), 3) for c in self.clients
        )
        back = [c.back_at for c in self.clients if c.back_at is not None]
        return {
            "connected": self.connected,
            "back": len(back),
            "lastBack": max(back, default=None),
            "counts": dict(self.counts),
            "have": {str(k): v for k, v in have.items()},
        }

    def report(self) -> dict[str, Any]:
        return {
            **self.progress(),
            "ids": {c.uid: sorted(c.ids) for c in self.clients},
            "backAt": [c.back_at for c in self.clients],
            "stormAttempts": [c.storm_attempts for c in self.clients],
            "backLatency": [c.back_latency for c in self.clients if c.back_latency is not None],
            "closeCodes": dict(self.close_codes),
            "samples": self.samples,
        }

    async def close(self) -> int:
        self.closing = True
        open_sessions = [c.session for c in self.clients if c.session is not None]
        for session in open_sessions:
            session.close(1000)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.sleep(0.5)
        return len(open_sessions)


async def client_main(
    ws_url: str, user_ids: list[int], local_addr: str, concurrency: int, pipe: Connection
) -> None:
    loop = asyncio.get_running_loop()
    fleet = Fleet(ws_url, user_ids, local_addr, concurrency)
    pipe.send("ready")
    while True:
        command = await loop.run_in_executor(None, pipe.recv)
        if command == "connect":
            started = time.monotonic()
            fleet.tasks = [asyncio.create_task(fleet.run(c)) for c in fleet.clients]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fleet.all_connected.wait(), 900)
            pipe.send({**fleet.progress(), "seconds": time.monotonic() - started})
        elif command == "arm":
            fleet.armed_at = time.monotonic()
            pipe.send(fleet.progress())
        elif command == "progress":
            pipe.send(fleet.progress())
        elif command == "report":
            pipe.send(fleet.report())
        elif command == "close":
            pipe.send(await fleet.close())
            return


def client_process(
    ws_url: str, user_ids: list[int], local_addr: str, concurrency: int, pipe: Connection
) -> None:
    import uvloop

    common.raise_fd_limit()
    uvloop.run(client_main(ws_url, user_ids, local_addr, concurrency, pipe))


class Clients(common.PipedProcesses):
    """``processes`` client processes sharing ``user_ids``; ``ask`` tells all at once."""

    def __init__(self, ws_url: str, user_ids: list[int], processes: int, concurrency: int):
        jobs = [
            (ws_url, user_ids[i::processes], f"127.0.0.{2 + i}", concurrency)
            for i in range(processes)
        ]
        super().__init__(client_process, jobs, timeout=1200)

    def progress(self) -> dict[str, Any]:
        return merge(self.ask("progress"))


def merge(answers: list[dict[str, Any]]) -> dict[str, Any]:
    counts: collections.Counter[str] = collections.Counter()
    have: collections.Counter[str] = collections.Counter()
    for a in answers:
        counts.update(a["counts"])
        have.update(a["have"])
    last = [a["lastBack"] for a in answers if a["lastBack"] is not None]
    return {
        "connected": sum(a["connected"] for a in answers),
        "back": sum(a["back"] for a in answers),
        "lastBack": max(last, default=None),
        "counts": dict(counts),
        "have": dict(have),
    }


def having(progress: dict[str, Any], k: int) -> int:
    """Clients that received at least ``k`` distinct ids."""
    return sum(v for key, v in progress["have"].items() if int(key) >= k)


# -- the admin probe ---------------------------------------------------------------------------


#: issued (monotonic), seconds, HTTP status, seconds of a new TCP connect (0: reused).
Probe = tuple[float, float, int, float]


#: How a probe reaches the API: ``new``, every request on a new TCP connection (open loop: a
#: slow answer does not delay the next request); ``kept``, one kept-alive connection, each
#: request after the previous answer (closed loop: what an admin page in a browser does).
PROBE_KINDS: Final = ("new", "kept")
PROBE_NOTES: Final = {"new": "a new connection each", "kept": "one kept-alive connection"}


class AdminProbe(threading.Thread):
    """``GET PROBE_PATH`` with the admin token every ``interval`` s until :meth:`stop`, as
    ``kind`` says (:data:`PROBE_KINDS`). A sample: issued (monotonic), seconds, HTTP status
    (0: connection refused, -1: another transport error), seconds to open a new TCP
    connection (0: the request reused one; -1: it never opened)."""

    def __init__(
        self, base_url: str, token: str, kind: str = "new", interval: float = PROBE_INTERVAL
    ) -> None:
        super().__init__(daemon=True)
        self.base_url, self.token, self.kind, self.interval = base_url, token, kind, interval
        self.samples: list[Probe] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        asyncio.run(self._main())

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)

    async def _main(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        if self.kind == "new":
            headers["Connection"] = "close"
        limits = httpx.Limits(max_connections=1 if self.kind == "kept" else None)
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=10, limits=limits
        ) as http:
            tasks: set[asyncio.Task[None]] = set()
            due = time.monotonic()
            while not self._stop_event.is_set():
                if self.kind == "kept":
                    await self._one(http)
                else:
                    task = asyncio.create_task(self._one(http))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                due = max(due + self.interval, time.monotonic())
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            await asyncio.gather(*tasks)

    async def _one(self, http: httpx.AsyncClient) -> None:
        issued = time.monotonic()
        connect = [0.0, 0.0]  # a new TCP connection: its start and end (0: a kept-alive one)

        async def trace(event: str, info: dict[str, Any]) -> None:
            if event == "connection.connect_tcp.started":
                connect[0] = time.monotonic()
            elif event == "connection.connect_tcp.complete":
                connect[1] = time.monotonic()

        try:
            response = await http.get(PROBE_PATH, extensions={"trace": trace})
            status = response.status_code
        except httpx.ConnectError:
            status = 0
        except httpx.HTTPError:
            status = -1
        tcp = connect[1] - connect[0] if connect[1] else (-1.0 if connect[0] else 0.0)
        self.samples.append((issued, time.monotonic() - issued, status, tcp))


def probe_stats(samples: list[Probe], start: float, end: float) -> dict[str, Any]:
    """Latency of the probes issued in [start, end] that were answered 200; apart, of those
    that reused a kept-alive connection, and the TCP connects of those that opened one."""
    window = [s for s in samples if start <= s[0] <= end]
    ok = [s[1] * 1000 for s in window if s[2] == 200]
    p50, p99, top = common.percentiles(ok, (50, 99, 100))
    reused = [s[1] * 1000 for s in window if s[2] == 200 and s[3] == 0]
    r50, r99, rmax = common.percentiles(reused, (50, 99, 100))
    connects = [s[3] * 1000 for s in window if s[2] == 200 and s[3] > 0]
    return {
        "issued": len(window),
        "ok": len(ok),
        "refused": sum(1 for s in window if s[2] == 0),
        "failed": sum(1 for s in window if s[2] not in (0, 200)),
        "p50Ms": round(p50, 1) if ok else None,
        "p99Ms": round(p99, 1) if ok else None,
        "maxMs": round(top, 1) if ok else None,
        "keptAlive": {"n": len(reused), "p50Ms": round(r50, 1) if reused else None,
                      "p99Ms": round(r99, 1) if reused else None,
                      "maxMs": round(rmax, 1) if reused else None},
        "newConnections": {"n": len(connects),
                           "connectMaxMs": round(max(connects), 1) if connects else None},
    }  # fmt: skip


# -- the benchmark -----------------------------------------------------------------------------


def tcp_counters() -> dict[str, int]:
    """The kernel's listen-queue and SYN-cookie counters (``TcpExt`` of /proc/net/netstat;
    for the whole network namespace, not only this benchmark)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    out: dict[str, int] = {}
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            for k, v in zip(names.split()[1:], values.split()[1:], strict=False):
                if k in TCP_COUNTERS:
                    out[k] = int(v)
    return out


def broadcast(base_url: str, token: str, user_ids: list[int], title: str) -> dict[str, Any]:
    """A ``compliance_alert`` (it cannot be muted) to ``user_ids``, 1,000 per request."""
    created = muted = 0
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=120) as http:
        for i in range(0, len(user_ids), 1000):
            body = {"userIds": user_ids[i : i + 1000], "type": "compliance_alert",
                    "title": title, "message": "Reconnect storm benchmark."}  # fmt: skip
            response = http.post("/api/v1/admin/notifications/broadcast", json=body)
            response.raise_for_status()
            created += int(response.json()["created"])
            muted += int(response.json()["muted"])
    return {"created": created, "muted": muted, "started": started,
            "postSeconds": round(time.monotonic() - started, 3)}  # fmt: skip


def await_delivery(
    pool: Clients, k: int, n: int, since: float, idle_timeout: float = 60
) -> dict[str, Any]:
    """Poll until every client holds ``k`` distinct ids, or nothing moved for ``idle_timeout``;
    seconds since ``since`` (the first POST)."""
    last_change = time.monotonic()
    last = -1
    while True:
        progress = pool.progress()
        got = having(progress, k)
        if got >= n:
            break
        if got != last:
            last, last_change = got, time.monotonic()
        elif time.monotonic() - last_change > idle_timeout:
            break
        time.sleep(0.05)
    return {"clients": got, "seconds": round(time.monotonic() - since, 3)}


def inbox(env: dict[str, str]) -> tuple[dict[int, set[int]], dict[str, int]]:
    """Every notification id by user, and the count by status, from the SQLite file."""
    path = env["TREEVU_DATABASE_URL"].split(":///", 1)[1]
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        by_user: dict[int, set[int]] = collections.defaultdict(set)
        for uid, nid in db.execute('SELECT "userId", id FROM notification_queue'):
            by_user[int(uid)].add(int(nid))
        statuses = dict(db.execute("SELECT status, count(*) FROM notification_queue GROUP BY 1"))
    return by_user, {str(k): int(v) for k, v in statuses.items()}


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    n: int = args.clients
    user_ids = list(range(2, n + 2))
    console.print(f"[bold]sqlite[/bold]: seeding {n + 1:,} users …")
    env = common.prepare_database(workdir, n + 1)
    port = common.free_port()
    serve = [str(common.BIN / "treevu"), "serve", "--host", "127.0.0.1"]
    argv = [*serve, "--port", str(port), *(["--role", "ws"] if args.split else [])]
    # --split: the admin API on a process of its own (--role api), killed and started again
    # with the socket node; the probes and broadcasts go there.
    api_port = common.free_port() if args.split else port
    base_url = f"http://127.0.0.1:{api_port}"
    token = common.admin_token()
    out: dict[str, Any] = {
        "clients": n,
        "clientProcesses": args.client_processes,
        "deployment": "--role ws + --role api" if args.split else "--role all",
    }
    with contextlib.ExitStack() as stack:
        started = time.monotonic()
        first = stack.enter_context(common.ServerProcess(argv, env, port, workdir / "serve-1.log"))
        out["firstStartSeconds"] = round(time.monotonic() - started, 3)
        # The restarted servers stop after the clients have closed (the stack unwinds LIFO).
        # Restarted under the storm, its /healthz competes with 10,000 clients for the listen
        # queue: give it time.
        second = common.ServerProcess(argv, env, port, workdir / "serve-2.log", start_timeout=300)
        stack.callback(second.__exit__, None, None, None)
        apis: list[common.ServerProcess] = []
        if args.split:
            api_argv = [*serve, "--port", str(api_port), "--role", "api"]
            apis = [common.ServerProcess(api_argv, env, api_port, workdir / f"api-{k}.log",
                                         start_timeout=300) for k in (1, 2)]  # fmt: skip
            stack.enter_context(apis[0])
            stack.callback(apis[1].__exit__, None, None, None)
        pool = stack.enter_context(
            Clients(f"ws://127.0.0.1:{port}/ws", user_ids, args.client_processes, args.concurrency)
        )
        console.print(f"  connecting {n:,} clients from {args.client_processes} processes …")
        connected = merge(answers := pool.ask("connect"))
        out["connect"] = {
            "welcomed": connected["connected"],
            "seconds": round(max(a["seconds"] for a in answers), 3),
            "busy": connected["counts"].get("busy", 0),
            "errors": sum(connected["counts"].get(k, 0) for k in ("error", "timeout", "down")),
        }
        console.print(f"  {connected['connected']:,} welcomed in {out['connect']['seconds']:.1f}s"
                      f"; load {common.load_average()}")  # fmt: skip

        sent = broadcast(base_url, token, user_ids, "before the crash")
        first_post = sent.pop("started")
        out["before"] = {**sent, "delivery": await_delivery(pool, 1, n, first_post)}
        console.print(f"  notification 1: {out['before']['delivery']['clients']:,}/{n:,} have it")

        baseline = {kind: AdminProbe(base_url, token, kind) for kind in PROBE_KINDS}
        for p in baseline.values():
            p.start()
        time.sleep(2)
        for p in baseline.values():
            p.stop()
        out["adminIdle"] = {k: probe_stats(p.samples, 0, math.inf) for k, p in baseline.items()}

        armed = merge(pool.ask("arm"))
        client_cpu = common.cpu_seconds(pool.pids)
        out["firstServerCpuSeconds"] = round(common.cpu_seconds([first.pid]), 2)
        out["loadAtKill"] = common.load_average()
        tcp_before = tcp_counters()
        killed = time.monotonic()
        for server in (first, *apis[:1]):
            server.signal(signal.SIGKILL)
            assert server.proc is not None
            server.proc.wait()

        spawned = time.monotonic()
        probes = {kind: AdminProbe(base_url, token, kind) for kind in PROBE_KINDS}
        for p in probes.values():
            p.start()
        if apis:
            apis[1].__enter__()
        second.__enter__()
        ready = time.monotonic()
        cpu_at_ready = common.cpu_seconds([second.pid])
        console.print(f"  killed; restarted in {ready - spawned:.2f}s (spawn → /healthz 200)")

        deadline = ready + args.storm_timeout
        shown = time.monotonic()
        while True:
            progress = pool.progress()
            now = time.monotonic()
            if progress["back"] >= n and progress["connected"] >= n:
                break
            if now > deadline:
                console.print("  [red]storm timeout[/red]: not everyone came back")
                break
            if now - shown >= 2:
                shown = now
                c = progress["counts"]
                console.print(
                    f"  +{now - killed:5.1f}s: {progress['back']:,}/{n:,} back, "
                    f"{c.get('busy', 0) - armed['counts'].get('busy', 0):,} busy, "
                    f"{c.get('down', 0) - armed['counts'].get('down', 0):,} refused (down); "
                    f"load {common.load_average()}"
                )
            time.sleep(0.1)
        all_back = progress["lastBack"] if progress["back"] >= n else time.monotonic()
        server_cpu = common.cpu_seconds([second.pid]) - cpu_at_ready
        client_cpu = common.cpu_seconds(pool.pids) - client_cpu
        tcp_after = tcp_counters()
        for p in probes.values():
            p.stop()
        load_after_storm = common.load_average()
        storm = {
            k: progress["counts"].get(k, 0) - armed["counts"].get(k, 0)
            for k in ("attempts", "welcomes", "busy", "down", "timeout", "error", "resumed",
                      "notRecovered", "notifications")
        }  # fmt: skip

        sent = broadcast(base_url, token, user_ids, "after the restart")
        first_post = sent.pop("started")
        out["after"] = {**sent, "delivery": await_delivery(pool, 2, n, first_post)}
        console.print(f"  notification 2: {out['after']['delivery']['clients']:,}/{n:,} have it")
        time.sleep(GRACE)
        reports = pool.ask("report")
        expected, statuses = inbox(env)

    received: dict[int, set[int]] = {}
    for r in reports:
        received.update({int(uid): set(ids) for uid, ids in r["ids"].items()})
    lost = sum(len(expected.get(u, set()) - received.get(u, set())) for u in user_ids)
    unexpected = sum(len(received.get(u, set()) - expected.get(u, set())) for u in user_ids)
    counts = merge(reports)["counts"]
    back = [t - killed for r in reports for t in r["backAt"] if t is not None]
    per_client = [a for r in reports for a in r["stormAttempts"]]
    b50, b99 = common.percentiles(back, (50, 99))
    l50, l99, lmax = common.percentiles(
        [x for r in reports for x in r["backLatency"]], (50, 99, 100)
    )
    a50, a99, amax = common.percentiles([float(a) for a in per_client], (50, 99, 100))
    close_codes: collections.Counter[str] = collections.Counter()
    for r in reports:
        close_codes.update(r["closeCodes"])
    storm_wall = max(all_back - ready, 1e-9)
    out.update(
        restartSeconds=round(ready - spawned, 3),
        killToReadySeconds=round(ready - killed, 3),
        back=len(back),
        killToAllBackSeconds=round(all_back - killed, 3),
        readyToAllBackSeconds=round(all_back - ready, 3),
        backSinceKillSeconds={"p50": round(b50, 3), "p99": round(b99, 3)},
        welcomingAttemptSeconds={"p50": round(l50, 3), "p99": round(l99, 3), "max": round(lmax, 3)},
        storm={
            **storm,
            "attemptsPerClient": {"p50": a50, "p99": a99, "max": amax},
            "errorSamples": [s for r in reports for s in r["samples"]][:5],
        },
        adminDuringStorm={k: probe_stats(p.samples, spawned, all_back) for k, p in probes.items()},
        adminAfterReady={k: probe_stats(p.samples, ready, all_back) for k, p in probes.items()},
        serverCpuSeconds=round(server_cpu, 2),
        serverCpuPercent=round(100 * server_cpu / storm_wall),
        serverCpuMsPerWelcome=round(1000 * server_cpu / max(len(back), 1), 3),
        clientCpuPercent=round(100 * client_cpu / max(all_back - killed, 1e-9)),
        loadAfterStorm=load_after_storm,
        idsExpected=sum(len(expected.get(u, set())) for u in user_ids),
        idsLost=lost,
        idsUnexpected=unexpected,
        idsTwiceInSession=counts.get("twiceInSession", 0),
        idsAgainInLaterSession=counts.get("againInLaterSession", 0),
        sessionEndings=dict(close_codes),
        statuses=statuses,
        kernelTcpDuringStorm={k: tcp_after.get(k, 0) - tcp_before.get(k, 0) for k in TCP_COUNTERS},
        closedAtEnd=pool.closed,
        targetSeconds=TARGET_SECONDS,
        targetMet=len(back) >= n and all_back - killed <= TARGET_SECONDS,
    )
    return out


def print_table(r: dict[str, Any]) -> None:
    n = r["clients"]
    title = (f"Reconnect storm: {n:,} clients, treevu serve ({r['deployment']}) on SQLite, "
             "kill -9 and restart")  # fmt: skip
    table = Table(title=f"{title} (target: all back ≤ {TARGET_SECONDS:.0f} s after the kill)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("note")
    s, w = r["storm"], r["welcomingAttemptSeconds"]
    tcp = r["kernelTcpDuringStorm"]
    met = "met" if r["targetMet"] else "NOT met"

    def ms(p: dict[str, Any]) -> str:
        return f"{p['p50Ms']} / {p['p99Ms']} / {p['maxMs']} ms"

    rows = [
        ("initial connect", f"{r['connect']['welcomed']:,} in {r['connect']['seconds']:.1f} s",
         f"{r['clientProcesses']} client processes, {r['connect']['busy']} busy"),
        ("notification 1 (before the kill)",
         f"{r['before']['delivery']['clients']:,}/{n:,}",
         f"delivered to all in {r['before']['delivery']['seconds']:.2f} s after the first POST"),
        ("restart (spawn → /healthz 200)", f"{r['restartSeconds']:.2f} s",
         f"kill → ready {r['killToReadySeconds']:.2f} s"),
        ("kill → all re-welcomed", f"{r['killToAllBackSeconds']:.2f} s",
         f"target ≤ {TARGET_SECONDS:.0f} s: {met}; {r['back']:,}/{n:,} back"),
        ("ready → all re-welcomed", f"{r['readyToAllBackSeconds']:.2f} s",
         f"since kill p50 {r['backSinceKillSeconds']['p50']:.2f} s, "
         f"p99 {r['backSinceKillSeconds']['p99']:.2f} s"),
        ("welcoming attempt: connect → welcome",
         f"{w['p50']:.2f} / {w['p99']:.2f} / {w['max']:.2f} s",
         "p50 / p99 / max; the rest of the wait is backoff"),
        ("connect attempts (storm)", f"{s['attempts']:,}",
         f"per client p50 {s['attemptsPerClient']['p50']:.0f}, "
         f"p99 {s['attemptsPerClient']['p99']:.0f}, max {s['attemptsPerClient']['max']:.0f}"),
        ("refused: busy (503 / 1013)", f"{s['busy']:,}", "retried after 1–2 × the hint"),
        ("refused: server down", f"{s['down']:,}", "connection refused before it listened"),
        ("timeouts / other errors", f"{s['timeout']:,} / {s['error']:,}",
         f"{s['errorSamples'][0] if s['errorSamples'] else ''} (SYN cookies failed: "
         f"{tcp['SyncookiesFailed']:,})"),
        ("resumed (recovered: false)", f"{s['resumed']:,} ({s['notRecovered']})", ""),
        ("notification 2 (after the restart)",
         f"{r['after']['delivery']['clients']:,}/{n:,}",
         f"delivered to all in {r['after']['delivery']['seconds']:.2f} s after the first POST"),
        ("ids lost", f"{r['idsLost']:,}", f"of {r['idsExpected']:,} in notification_queue"),
        ("ids twice in one session", f"{r['idsTwiceInSession']:,}",
         f"again in a later session (allowed): {r['idsAgainInLaterSession']}"),
        *((f"admin GET p50 / p99 / max (storm, {PROBE_NOTES[k]})", ms(a),
           f"{a['ok']} answered from ready to all back, {a['failed']} failed, "
           f"{r['adminDuringStorm'][k]['refused']} refused before ready; "
           f"{a['newConnections']['n']} on a new connection "
           f"(TCP connect max {a['newConnections']['connectMaxMs']} ms)")
          for k, a in r["adminAfterReady"].items()),
        *((f"admin GET p50 / p99 / max (idle, {PROBE_NOTES[k]})", ms(a),
           f"{a['ok']} before the kill")
          for k, a in r["adminIdle"].items()),
        ("listen queue overflows (kernel)", f"{tcp['ListenOverflows']:,}",
         f"kill → all back; SYN cookies sent {tcp['SyncookiesSent']:,}, "
         f"TCP timeouts {tcp['TCPTimeouts']:,}"),
        ("server CPU (ready → all back)", f"{r['serverCpuSeconds']:.1f} s",
         f"{r['serverCpuPercent']}% of one core, {r['serverCpuMsPerWelcome']:.2f} ms per welcome"),
        ("clients CPU (kill → all back)", f"{r['clientCpuPercent']}%", "of one core"),
        ("load average", r["loadAfterStorm"], f"at the kill {r['loadAtKill']}"),
    ]  # fmt: skip
    for row in rows:
        table.add_row(*row)
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--client-processes", type=int, default=None,
                        help="default: one per 5,000 clients, 2 to 4")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=100,
                        help="openings in flight per process for the initial connect")  # fmt: skip
    parser.add_argument("--storm-timeout", type=float, default=600, help="give up after (s)")
    parser.add_argument("--quick", action="store_true", help="1,000 clients")
    parser.add_argument(
        "--split", action="store_true", help="the admin API on its own process (--role api)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here")
    args = parser.parse_args()
    if args.quick:
        args.clients = 1000
    if args.client_processes is None:
        args.client_processes = min(4, max(2, math.ceil(args.clients / 5000)))
    fds = common.raise_fd_limit()
    started = common.load_average()
    with tempfile.TemporaryDirectory(prefix="treevu-ws-storm-") as tmp:
        result = run(args, args.workdir or Path(tmp))
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        **common.machine_facts(),
        "fdLimit": fds,
        "command": " ".join(sys.argv),
        "loadAtStart": started,
        "code": common.git_state(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "result": result,
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
