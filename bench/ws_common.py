"""Shared helpers for the WebSocket benchmarks: a seeded database, a server subprocess, clients.

- :func:`prepare_database` migrates and seeds a fresh SQLite file with ``treevu db upgrade`` and
  ``treevu seed`` (the real commands) and returns the environment that ``treevu serve`` reads.
- :class:`ServerProcess` runs a server command (``treevu serve`` or a plain ``uvicorn``) as a
  subprocess with a raised open-files limit, waits for ``/healthz`` and reads its RSS.
- :class:`ClientPool` spreads N authenticated connections (``Authorization: Bearer``) over
  several client processes, each an asyncio loop of ``websockets`` clients that offer
  permessage-deflate like a browser does, and waits for ``welcome`` and for notifications.
- :class:`ReceiverPool` does the same with lean receivers for the throughput and scale
  benchmarks (``websockets``' sans-I/O client protocol under an asyncio protocol: no task or
  queue per socket, so 20k messages a second cost the clients little CPU), and records the
  receive time of every notification.
- :func:`run_producer` posts admin broadcasts from its own process, paced to a rate.
- :func:`mariadb_database` creates and drops a throwaway MariaDB database.

Run as a script it is the server wrapper that takes tracemalloc snapshots on SIGUSR1:

    python bench/ws_common.py SNAPSHOT_DIR serve --port 8123
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final, Self, cast

import httpx
from sqlalchemy.engine import make_url
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.uri import WebSocketURI, parse_uri

from treevu.config import SYNC_DRIVERS, Settings
from treevu.services.auth import mint_token

FD_LIMIT_WANTED: Final = 20_000
JWT_SECRET: Final = "bench-secret-0123456789abcdef0123456789abcdef"
#: A fixed Fernet key (32 bytes, url-safe base64): the benchmark's data is throwaway.
ENCRYPTION_KEY: Final = "YmVuY2gta2V5LTAxMjM0NTY3ODlhYmNkZWYwMTIzNDU="
BIN: Final = Path(sys.executable).parent
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def raise_fd_limit(wanted: int = FD_LIMIT_WANTED) -> int:
    """Raise this process's soft open-files limit towards ``wanted`` (capped by the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kb(pid: int) -> int:
    """Resident set size of a process, in KiB (``VmRSS`` of ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def bench_env(workdir: Path, **overrides: str) -> dict[str, str]:
    """The environment of the benchmark's server and CLI calls (no ``.env`` is read)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREEVU_")}
    env.update(
        TREEVU_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
        TREEVU_JWT_SECRET=JWT_SECRET,
        TREEVU_ENCRYPTION_KEY=ENCRYPTION_KEY,
        TREEVU_DATA_DIR=str(workdir / "data"),
        # Nothing periodic per connection during a measurement.
        TREEVU_HEARTBEAT_INTERVAL="3600",
        TREEVU_ADMIN_NOTIFICATIONS_PER_MINUTE="10000000",
    )
    env.update(overrides)
    return env


def treevu(env: dict[str, str], cwd: Path, *args: str) -> None:
    """Run a ``treevu`` command of this virtual environment."""
    subprocess.run([str(BIN / "treevu"), *args], env=env, check=True, cwd=cwd)


def prepare_database(
    workdir: Path, users: int, *, database_url: str | None = None, **overrides: str
) -> dict[str, str]:
    """``treevu db upgrade`` and ``treevu seed --users N`` on a fresh SQLite file (or on the
    empty database at ``database_url``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    if database_url is not None:
        overrides["TREEVU_DATABASE_URL"] = database_url
    env = bench_env(workdir, **overrides)
    treevu(env, workdir, "db", "upgrade")
    treevu(env, workdir, "seed", "--users", str(users), "--seed", "1")
    return env


def _limit_fds_in_child() -> None:
    raise_fd_limit()


class ServerProcess:
    """A server subprocess on ``port``; ``rss_kb`` reads its memory."""

    def __init__(
        self,
        argv: Sequence[str],
        env: dict[str, str],
        port: int,
        log: Path,
        *,
        start_timeout: float = 60,
    ) -> None:
        self.argv = list(argv)
        self.start_timeout = start_timeout
        self.env = env
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_kb(self) -> int:
        return rss_kb(self.pid)

    def __enter__(self) -> ServerProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_limit_fds_in_child,
                cwd=self.log.parent,
            )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"server did not start; see {self.log}")
            time.sleep(0.1)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_settled(server: ServerProcess, seconds: float = 1.0, rounds: int = 10) -> int:
    """RSS once it stops moving (two reads ``seconds`` apart within 0.5%), or the last read."""
    last = server.rss_kb()
    for _ in range(rounds):
        time.sleep(seconds)
        now = server.rss_kb()
        if abs(now - last) <= last * 0.005:
            return now
        last = now
    return last


# -- clients ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientJob:
    ws_url: str
    user_ids: list[int]
    compression: bool
    concurrency: int
    token_ttl: int = 24 * 3600


def _mint_tokens(user_ids: list[int], ttl: int) -> list[str]:
    settings = Settings.model_validate(
        {"jwt_secret": JWT_SECRET, "encryption_key": ENCRYPTION_KEY, "data_dir": "/nonexistent"}
    )
    return [mint_token(settings, uid, ttl) for uid in user_ids]


async def _client_main(job: ClientJob, pipe: Connection) -> None:
    tokens = _mint_tokens(job.user_ids, job.token_ttl)
    welcomed = 0
    notified = 0
    failures: list[str] = []
    sockets: list[ClientConnection] = []
    gate = asyncio.Semaphore(job.concurrency)
    all_notified = asyncio.Event()

    async def reader(ws: ClientConnection) -> None:
        nonlocal notified
        got = False
        with contextlib.suppress(Exception):
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("type") == "notification" and not got:
                    got = True
                    notified += 1
                    if notified == len(job.user_ids):
                        all_notified.set()

    async def one(token: str) -> asyncio.Task[None] | None:
        nonlocal welcomed
        async with gate:
            for attempt in range(5):
                try:
                    ws = await connect(
                        job.ws_url,
                        additional_headers={"Authorization": f"Bearer {token}"},
                        compression="deflate" if job.compression else None,
                        ping_interval=None,
                        open_timeout=60,
                        max_queue=4,
                    )
                    first = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    if first.get("type") != "welcome":
                        raise RuntimeError(f"expected welcome, got {first}")
                except Exception as exc:
                    if attempt == 4:
                        failures.append(repr(exc))
                        return None
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                welcomed += 1
                sockets.append(ws)
                return asyncio.create_task(reader(ws))
        return None

    loop = asyncio.get_running_loop()
    readers: list[asyncio.Task[None]] = []
    while True:
        command = await loop.run_in_executor(None, pipe.recv)
        if command == "connect":
            started = time.perf_counter()
            done = await asyncio.gather(*(one(t) for t in tokens))
            readers = [t for t in done if t is not None]
            negotiated = sum(1 for ws in sockets if ws.protocol.extensions)
            pipe.send(
                {
                    "welcomed": welcomed,
                    "failures": failures[:5],
                    "failed": len(failures),
                    "deflate": negotiated,
                    "seconds": time.perf_counter() - started,
                }
            )
        elif command == "await_notifications":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_notified.wait(), 120)
            pipe.send({"notified": notified})
        elif command == "close":
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            pipe.send({"closed": len(sockets)})
            return


def _client_process(job: ClientJob, pipe: Connection) -> None:
    raise_fd_limit()
    asyncio.run(_client_main(job, pipe))


class ClientPool:
    """``processes`` client processes sharing ``user_ids``; commands go to all at once."""

    def __init__(
        self,
        ws_url: str,
        user_ids: Sequence[int],
        *,
        processes: int,
        compression: bool,
        concurrency: int = 64,
    ) -> None:
        ctx = mp.get_context("spawn")
        self._pipes: list[Connection] = []
        self._procs: list[Any] = []
        for i in range(processes):
            ours, theirs = ctx.Pipe()
            job = ClientJob(ws_url, list(user_ids[i::processes]), compression, concurrency)
            proc = ctx.Process(target=_client_process, args=(job, theirs), daemon=True)
            self._pipes.append(ours)
            self._procs.append(proc)

    def __enter__(self) -> ClientPool:
        for proc in self._procs:
            proc.start()
        return self

    def _all(self, command: str, timeout: float = 600) -> list[dict[str, Any]]:
        for pipe in self._pipes:
            pipe.send(command)
        answers = []
        for pipe in self._pipes:
            if not pipe.poll(timeout):
                raise TimeoutError(f"a client process did not answer {command!r}")
            answers.append(pipe.recv())
        return answers

    def connect(self) -> dict[str, Any]:
        answers = self._all("connect")
        return {
            "welcomed": sum(a["welcomed"] for a in answers),
            "failed": sum(a["failed"] for a in answers),
            "deflate": sum(a["deflate"] for a in answers),
            "failures": [f for a in answers for f in a["failures"]][:5],
            "seconds": max(a["seconds"] for a in answers),
        }

    def await_notifications(self) -> int:
        return sum(a["notified"] for a in self._all("await_notifications"))

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self._all("close", timeout=120)
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()


def broadcast(
    base_url: str,
    admin_token: str,
    user_ids: Sequence[int],
    *,
    title: str,
    message: str,
    data: dict[str, Any] | None = None,
    chunk: int = 1000,
) -> int:
    """``POST /api/v1/admin/notifications/broadcast`` in chunks; returns how many were created."""
    created = 0
    headers = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=120) as http:
        for start in range(0, len(user_ids), chunk):
            body = {
                "userIds": list(user_ids[start : start + chunk]),
                "type": "milestone",
                "title": title,
                "message": message,
                "data": data,
            }
            response = http.post("/api/v1/admin/notifications/broadcast", json=body)
            response.raise_for_status()
            created += int(response.json()["created"])
    return created


def admin_token() -> str:
    return _mint_tokens([1], 24 * 3600)[0]


# -- lean receivers and a paced producer (throughput and scale benchmarks) ---------------------

#: One received notification: id, receive time (epoch s), ``data.sentAt`` (epoch s, 0 if
#: absent) and the notification's ``timestamp`` (ISO 8601, the commit batch's clock).
Record = tuple[int, float, float, str]


class _Receiver(asyncio.Protocol):
    """One client socket: ``websockets``' sans-I/O ``ClientProtocol`` under an asyncio protocol.

    No task, queue or assembler per socket (``websockets.asyncio`` keeps all three): a frame is
    parsed in ``data_received`` and handed to the process's record list right there. Pings are
    answered by the protocol object itself (``data_to_send`` after every read).
    """

    def __init__(
        self,
        uri: WebSocketURI,
        token: str,
        compression: bool,
        records: list[Record] | None,
        ack: bool = False,
    ) -> None:
        extensions = enable_client_permessage_deflate(None) if compression else None
        self.ws = ClientProtocol(uri, extensions=extensions, max_size=None)
        self.token = token
        self.records = records
        self.ack = ack
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.received = 0
        self.deflate = False
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        request = self.ws.connect()
        request.headers["Authorization"] = f"Bearer {self.token}"
        self.ws.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.TEXT:
                    self._on_text(event.data, now)
            elif self.ws.handshake_exc is not None and not self.opened.done():
                self.opened.set_exception(self.ws.handshake_exc)
            else:
                self.deflate = bool(self.ws.extensions)
        self._flush()

    def _on_text(self, data: bytes | bytearray | memoryview, now: float) -> None:
        msg = json.loads(bytes(data) if isinstance(data, memoryview) else data)
        kind = msg.get("type")
        if kind == "notification":
            self.received += 1
            n = msg["notification"]
            if self.records is not None:
                sent_at = n["data"].get("sentAt", 0.0)
                self.records.append((n["id"], now, sent_at, n["timestamp"]))
            if self.ack:  # what the browser client does: sent → delivered
                self.ws.send_text(b'{"type":"ack","id":%d}' % n["id"])
        elif kind == "welcome" and not self.opened.done():
            self.opened.set_result(None)

    def _flush(self) -> None:
        out = self.ws.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            for chunk in out:
                if chunk:
                    self.transport.write(chunk)
                else:  # end of stream
                    self.transport.close()
                    return

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed before welcome"))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(Exception):
                self.ws.send_close(1000)
                self._flush()
            self.transport.close()


@dataclass(frozen=True)
class ReceiverJob:
    ws_url: str
    user_ids: list[int]
    compression: bool
    concurrency: int = 64
    record: bool = True
    #: Source address of this process's sockets: one local address holds at most ~28k
    #: connections to one server port (the ephemeral port range), so many need several.
    local_addr: str | None = None
    ack: bool = False
    token_ttl: int = 24 * 3600


async def _receiver_main(job: ReceiverJob, pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    tokens = _mint_tokens(job.user_ids, job.token_ttl)
    uri = parse_uri(job.ws_url)
    records: list[Record] | None = [] if job.record else None
    receivers: list[_Receiver] = []
    failures: list[str] = []
    gate = asyncio.Semaphore(job.concurrency)
    local = (job.local_addr, 0) if job.local_addr else None

    async def one(token: str) -> None:
        async with gate:
            for attempt in range(5):
                receiver = _Receiver(uri, token, job.compression, records, job.ack)
                try:
                    await loop.create_connection(
                        lambda r=receiver: r,
                        uri.host,
                        uri.port,
                        local_addr=local,
                    )
                    await asyncio.wait_for(receiver.opened, 60)
                except Exception as exc:
                    receiver.close()
                    if attempt == 4:
                        failures.append(repr(exc))
                        return
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                receivers.append(receiver)
                return

    while True:
        command = await loop.run_in_executor(None, pipe.recv)
        if command == "connect":
            started = time.perf_counter()
            await asyncio.gather(*(one(t) for t in tokens))
            pipe.send(
                {
                    "welcomed": len(receivers),
                    "failed": len(failures),
                    "failures": failures[:5],
                    "deflate": sum(1 for r in receivers if r.deflate),
                    "seconds": time.perf_counter() - started,
                }
            )
        elif command == "count":
            pipe.send(
                {
                    "received": sum(r.received for r in receivers),
                    "connectionsNotified": sum(1 for r in receivers if r.received),
                    "open": sum(1 for r in receivers if not r.lost),
                }
            )
        elif isinstance(command, tuple) and command[0] == "ack":
            for r in receivers:
                r.ack = bool(command[1])
            pipe.send({"ack": bool(command[1])})
        elif command == "records":
            taken: list[Record] = []
            if records is not None:
                taken, records[:] = list(records), []
            pipe.send(taken)
        elif command == "close":
            for r in receivers:
                r.close()
            await asyncio.sleep(0.5)
            pipe.send({"closed": len(receivers)})
            return


def _receiver_process(job: ReceiverJob, pipe: Connection) -> None:
    raise_fd_limit()
    import uvloop

    uvloop.run(_receiver_main(job, pipe))


class ReceiverPool:
    """``processes`` receiver processes sharing ``user_ids`` (one connection per user)."""

    def __init__(
        self,
        ws_url: str,
        user_ids: Sequence[int],
        *,
        processes: int,
        compression: bool,
        record: bool = True,
        local_addrs: Sequence[str | None] = (None,),
        concurrency: int = 64,
        ack: bool = False,
    ) -> None:
        ctx = mp.get_context("spawn")
        self._pipes: list[Connection] = []
        self._procs: list[Any] = []
        for i in range(processes):
            ours, theirs = ctx.Pipe()
            job = ReceiverJob(
                ws_url,
                list(user_ids[i::processes]),
                compression,
                concurrency,
                record,
                local_addrs[i % len(local_addrs)],
                ack,
            )
            proc = ctx.Process(target=_receiver_process, args=(job, theirs), daemon=True)
            self._pipes.append(ours)
            self._procs.append(proc)

    @property
    def pids(self) -> list[int]:
        return [int(p.pid) for p in self._procs]

    def __enter__(self) -> ReceiverPool:
        for proc in self._procs:
            proc.start()
        return self

    def _all(self, command: str | tuple[str, Any], timeout: float = 900) -> list[Any]:
        for pipe in self._pipes:
            pipe.send(command)
        answers = []
        for pipe in self._pipes:
            if not pipe.poll(timeout):
                raise TimeoutError(f"a receiver process did not answer {command!r}")
            answers.append(pipe.recv())
        return answers

    def set_ack(self, ack: bool) -> None:
        """Whether the clients acknowledge what they receive from now on."""
        self._all(("ack", ack))

    def connect(self) -> dict[str, Any]:
        answers = self._all("connect")
        return {
            "welcomed": sum(a["welcomed"] for a in answers),
            "failed": sum(a["failed"] for a in answers),
            "deflate": sum(a["deflate"] for a in answers),
            "failures": [f for a in answers for f in a["failures"]][:5],
            "seconds": max(a["seconds"] for a in answers),
        }

    def count(self) -> dict[str, int]:
        answers = self._all("count")
        return {k: sum(a[k] for a in answers) for k in ("received", "connectionsNotified", "open")}

    def records(self) -> list[Record]:
        return [r for batch in self._all("records") for r in batch]

    def wait_for(self, expected: int, *, idle_timeout: float = 5.0, poll: float = 0.05) -> int:
        """Poll until ``expected`` notifications arrived or none came for ``idle_timeout`` s."""
        last, last_change = -1, time.monotonic()
        while True:
            received = self.count()["received"]
            if received >= expected:
                return received
            if received != last:
                last, last_change = received, time.monotonic()
            elif time.monotonic() - last_change > idle_timeout:
                return received
            time.sleep(poll)

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self._all("close", timeout=120)
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()


@dataclass(frozen=True)
class ProducerJob:
    """Broadcasts of ``chunks`` (one request each) to ``base_url``, ``rate`` notifications a
    second (0: as fast as ``in_flight`` concurrent requests allow)."""

    base_url: str
    token: str
    chunks: list[list[int]]
    rate: float
    in_flight: int
    title: str
    message: str
    data: dict[str, Any]
    start_at: float  # epoch seconds


#: One request: sequence number, sent and answered (epoch s), HTTP status, created ids.
Request = tuple[int, float, float, int, list[int]]


async def _produce(job: ProducerJob) -> list[Request]:
    import httpx

    done: list[Request] = []
    errors: list[str] = []
    gate = asyncio.Semaphore(job.in_flight)
    limits = httpx.Limits(max_connections=job.in_flight, max_keepalive_connections=job.in_flight)
    headers = {"Authorization": f"Bearer {job.token}"}
    async with httpx.AsyncClient(
        base_url=job.base_url, headers=headers, timeout=300, limits=limits
    ) as http:

        async def one(seq: int, user_ids: list[int]) -> None:
            try:
                sent = time.time()
                body = {
                    "userIds": user_ids,
                    "type": "milestone",
                    "title": job.title,
                    "message": job.message,
                    "data": {**job.data, "sentAt": sent, "seq": seq},
                }
                try:
                    response = await http.post("/api/v1/admin/notifications/broadcast", json=body)
                    status = response.status_code
                    ids = list(response.json()["ids"]) if status == 201 else []
                except httpx.HTTPError as exc:
                    status, ids = 0, []
                    errors.append(repr(exc))
                done.append((seq, sent, time.time(), status, ids))
            finally:
                gate.release()

        await asyncio.sleep(max(0.0, job.start_at - time.time()))
        tasks = []
        for seq, user_ids in enumerate(job.chunks):
            if job.rate > 0:
                due = job.start_at + sum(len(c) for c in job.chunks[:seq]) / job.rate
                await asyncio.sleep(max(0.0, due - time.time()))
            await gate.acquire()
            tasks.append(asyncio.create_task(one(seq, user_ids)))
        await asyncio.gather(*tasks)
    if errors:
        print(f"producer: {len(errors)} failed requests, first: {errors[0]}", file=sys.stderr)
    return done


def _producer_process(job: ProducerJob, pipe: Connection) -> None:
    import uvloop

    pipe.send(uvloop.run(_produce(job)))


class Producer:
    """:class:`ProducerJob` in its own process; :meth:`result` waits for its requests."""

    def __init__(self, job: ProducerJob) -> None:
        ctx = mp.get_context("spawn")
        self._pipe, theirs = ctx.Pipe()
        self._proc = ctx.Process(target=_producer_process, args=(job, theirs), daemon=True)
        self._proc.start()

    def result(self, timeout: float = 900) -> list[Request]:
        if not self._pipe.poll(timeout):
            self._proc.kill()
            raise TimeoutError("the producer did not finish")
        requests: list[Request] = self._pipe.recv()
        self._proc.join(timeout=10)
        return requests


def chunked(user_ids: Sequence[int], total: int, chunk: int, offset: int = 0) -> list[list[int]]:
    """``total`` recipients in requests of ``chunk``, cycling through ``user_ids`` (each request
    names distinct users)."""
    n = len(user_ids)
    chunk = min(chunk, n)
    out = []
    cursor = offset
    remaining = total
    while remaining > 0:
        size = min(chunk, remaining)
        out.append([user_ids[(cursor + k) % n] for k in range(size)])
        cursor += size
        remaining -= size
    return out


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 95, 99, 100)) -> list[float]:
    """Nearest-rank percentiles (``100`` is the maximum); empty input gives NaNs."""
    if not values:
        return [float("nan")] * len(qs)
    ordered = sorted(values)
    n = len(ordered)
    return [ordered[min(n - 1, max(0, math.ceil(q / 100 * n) - 1))] for q in qs]


def epoch(ts: str) -> float:
    """A notification ``timestamp`` (``…Z``) as epoch seconds."""
    return datetime.fromisoformat(ts).timestamp()


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of ``pids`` and their descendants, in seconds."""
    ticks = 0
    for pid in (p for root in pids for p in process_tree_rss_kb(root)):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


def sync_url(async_url: str) -> str:
    """The synchronous twin of a ``TREEVU_DATABASE_URL`` (for the benchmark's own reads)."""
    url = make_url(async_url)
    return url.set(drivername=SYNC_DRIVERS[url.drivername]).render_as_string(hide_password=False)


def process_tree_rss_kb(pid: int) -> dict[int, int]:
    """RSS of ``pid`` and of all its descendants, by pid (KiB)."""
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError, ValueError):
            fields = dict(
                line.split(":", 1) for line in status.read_text().splitlines() if ":" in line
            )
            children.setdefault(int(fields["PPid"]), []).append(int(fields["Pid"]))
    out: dict[int, int] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError, RuntimeError):
            out[p] = rss_kb(p)
        todo.extend(children.get(p, []))
    return out


def load_average() -> str:
    """``uptime``'s load averages (1, 5, 15 min), to print beside a figure."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@contextlib.contextmanager
def mariadb_database(
    server: str = "mysql+asyncmy://root@127.0.0.1:3306", name: str | None = None
) -> Iterator[str]:
    """A throwaway MariaDB database (created, then dropped); yields its async URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(server)
    name = name or f"treevu_wsbench_{os.getpid()}"
    admin = create_engine(url.set(drivername="mysql+pymysql", database=None))
    try:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


# -- the tracemalloc server wrapper ------------------------------------------------------------


def snapshot_on_sigusr1(directory: Path) -> None:
    """Write ``snapshot-<n>.bin`` (then ``.done``) to ``directory`` at the n-th SIGUSR1."""
    import tracemalloc

    directory.mkdir(parents=True, exist_ok=True)
    count = 0

    def dump(signum: int, frame: object) -> None:
        nonlocal count
        count += 1
        tracemalloc.take_snapshot().dump(str(directory / f"snapshot-{count}.bin"))
        (directory / f"snapshot-{count}.done").touch()

    signal.signal(signal.SIGUSR1, dump)


def gc_stats_on_sigusr2(out: Path) -> None:
    """Time the garbage collector; at each SIGUSR2 append the totals since the last one (per
    generation: collections and seconds) as a JSON line to ``out``."""
    import gc

    totals = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}
    started = [0.0]

    def timer(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            entry = totals[info["generation"]]
            entry[0] += 1
            entry[1] += time.perf_counter() - started[0]

    def dump(signum: int, frame: object) -> None:
        line = {
            "collections": {g: int(v[0]) for g, v in totals.items()},
            "seconds": {g: round(v[1], 4) for g, v in totals.items()},
            "tracked": len(gc.get_objects()),
        }
        with out.open("a") as f:
            f.write(json.dumps(line) + "\n")
        for v in totals.values():
            v[0], v[1] = 0, 0.0

    gc.callbacks.append(timer)
    signal.signal(signal.SIGUSR2, dump)


def gc_stats(server: ServerProcess, out: Path) -> dict[str, Any] | None:
    """Ask a server started through ``ws_common.py --gc-stats OUT`` for its GC totals."""
    before = out.read_text().count("\n") if out.exists() else 0
    server.signal(signal.SIGUSR2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = out.read_text().splitlines() if out.exists() else []
        if len(lines) > before:
            stats: dict[str, Any] = json.loads(lines[-1])
            return stats
        time.sleep(0.05)
    return None


def gc_freeze_on_sigusr1() -> None:
    """A what-if, not the app's behaviour: at SIGUSR1, collect, then move every object to the
    permanent generation (``gc.freeze()``), so that full collections no longer walk the
    objects of the connections open at that moment."""
    import gc

    def freeze(signum: int, frame: object) -> None:
        gc.collect()
        gc.freeze()

    signal.signal(signal.SIGUSR1, freeze)


if __name__ == "__main__":
    from treevu.cli import main

    if sys.argv[1].startswith("--gc-"):
        # python bench/ws_common.py [--gc-stats OUT] [--gc-freeze] serve [options]: `treevu
        # serve`, appending its garbage-collector totals to OUT on every SIGUSR2, and (what-if)
        # freezing the heap on SIGUSR1.
        args = sys.argv[1:]
        while args[0].startswith("--gc-"):
            if args[0] == "--gc-stats":
                gc_stats_on_sigusr2(Path(args[1]))
                args = args[2:]
            elif args[0] == "--gc-freeze":
                gc_freeze_on_sigusr1()
                args = args[1:]
            else:
                raise SystemExit(f"unknown option {args[0]}")
        sys.argv = ["treevu", *args]
    else:
        # python -X tracemalloc=N bench/ws_common.py SNAPSHOT_DIR serve [options]: `treevu
        # serve`, with a tracemalloc snapshot written to SNAPSHOT_DIR on every SIGUSR1.
        snapshot_on_sigusr1(Path(sys.argv[1]))
        sys.argv = ["treevu", *sys.argv[2:]]
    main()


def machine_facts() -> dict[str, Any]:
    """What a results file says about where it was measured."""
    return {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memoryMb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20,
    }


def git_state() -> dict[str, Any]:
    """The commit measured and the files changed on top of it (no index refresh)."""
    env, cwd = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}, Path(__file__).resolve().parents[1]

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=cwd, env=env, capture_output=True, text=True).stdout

    return {"commit": git("rev-parse", "HEAD").strip(), "dirty": git("status", "-s").splitlines()}


class PipedProcesses:
    """Client processes (``spawn``), each running ``target(*job, pipe)``, told commands all at
    once over their pipes. Each says "ready" once it has started; ``close`` is the last
    command, answered with how many sockets it closed."""

    def __init__(self, target: Any, jobs: list[tuple[Any, ...]], timeout: float = 900) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[Any] = []
        self.procs: list[Any] = []
        self.timeout = timeout
        for job in jobs:
            ours, theirs = ctx.Pipe()
            self.procs.append(ctx.Process(target=target, args=(*job, theirs), daemon=True))
            self.pipes.append(ours)
        self.closed = 0  # sockets closed at the end

    @property
    def pids(self) -> list[int]:
        return [int(p.pid) for p in self.procs]

    def __enter__(self) -> Self:
        for proc in self.procs:
            proc.start()
        self.ask(None)
        return self

    def ask(self, command: str | None, timeout: float | None = None) -> list[Any]:
        for pipe in self.pipes if command is not None else []:
            pipe.send(command)
        if not all(pipe.poll(timeout or self.timeout) for pipe in self.pipes):
            raise TimeoutError(f"a client process did not answer {command!r}")
        return [pipe.recv() for pipe in self.pipes]

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.closed = sum(self.ask("close", timeout=60))
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
