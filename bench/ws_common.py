"""Shared helpers for the WebSocket benchmarks: a seeded database, a server subprocess, clients.

- :func:`prepare_database` migrates and seeds a fresh SQLite file with ``treevu db upgrade`` and
  ``treevu seed`` (the real commands) and returns the environment that ``treevu serve`` reads.
- :class:`ServerProcess` runs a server command (``treevu serve`` or a plain ``uvicorn``) as a
  subprocess with a raised open-files limit, waits for ``/healthz`` and reads its RSS.
- :class:`ClientPool` spreads N authenticated connections (``Authorization: Bearer``) over
  several client processes, each an asyncio loop of ``websockets`` clients that offer
  permessage-deflate like a browser does, and waits for ``welcome`` and for notifications.

Run as a script it is the server wrapper that takes tracemalloc snapshots on SIGUSR1:

    python bench/ws_common.py SNAPSHOT_DIR serve --port 8123
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import httpx
from websockets.asyncio.client import ClientConnection, connect

from treevu.config import Settings
from treevu.services.auth import mint_token

FD_LIMIT_WANTED: Final = 20_000
JWT_SECRET: Final = "bench-secret-0123456789abcdef0123456789abcdef"
#: A fixed Fernet key (32 bytes, url-safe base64): the benchmark's data is throwaway.
ENCRYPTION_KEY: Final = "YmVuY2gta2V5LTAxMjM0NTY3ODlhYmNkZWYwMTIzNDU="
BIN: Final = Path(sys.executable).parent


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


def prepare_database(workdir: Path, users: int) -> dict[str, str]:
    """``treevu db upgrade`` and ``treevu seed --users N`` on a fresh SQLite file."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = bench_env(workdir)
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


if __name__ == "__main__":
    # python -X tracemalloc=N bench/ws_common.py SNAPSHOT_DIR serve [options]: `treevu serve`,
    # with a tracemalloc snapshot written to SNAPSHOT_DIR on every SIGUSR1.
    from treevu.cli import main

    snapshot_on_sigusr1(Path(sys.argv[1]))
    sys.argv = ["treevu", *sys.argv[2:]]
    main()
