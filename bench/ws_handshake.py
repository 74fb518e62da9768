"""WebSocket handshake cost: ``treevu serve`` beside a bare ``websockets`` server.

On a SQLite database seeded with ``treevu seed`` (N + 1 users), with tokens for users 2..N+1,
each server runs in turn as a subprocess: ``treevu serve`` (one worker: uvicorn, uvloop; it
verifies the JWT, reads the user and the unread count, registers the socket), then ``bare``,
this script with ``--serve-bare PORT``: ``websockets.asyncio.server.serve`` on uvloop
(permessage-deflate, backlog 2048 like uvicorn) that only ``jwt.decode``s the Bearer token
(same secret, HS256, ``aud`` treevu), sends the same ``welcome`` and holds the socket open.

After ``--warmup`` handshakes, ``--client-processes`` processes (uvloop, ``websockets``' sans-I/O
client, deflate offered) open N connections, at most ``--concurrency`` handshakes (connect +
upgrade + ``welcome``) in flight each, and close them once all are done. Handshakes/s = N /
(last welcome − first connect start, CLOCK_MONOTONIC across processes); latency = connect start
→ welcome of the attempt that succeeded; server CPU = utime + stime of the server's process
tree over the phase, per handshake. treevu's admission control (HTTP 503 + Retry-After, or close
1013 "server busy; retry after Ns") counts as "refused (busy)", retried after the hint (+ ≤ 25%
jitter); other errors are retried twice, then count as failed. Target: treevu's rate ≥ 50% of
bare's. Clients and server share 2 cores: CPU per handshake is the steadier figure. Prints a
table, writes ``bench/results/ws_handshake.json``; never fails on a figure.

    .venv/bin/python bench/ws_handshake.py --quick
    .venv/bin/python bench/ws_handshake.py                 # 3,000 handshakes, treevu then bare
    .venv/bin/python bench/ws_handshake.py --repeat        # … then bare, treevu again
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final, cast

from rich.console import Console
from rich.table import Table
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.uri import WebSocketURI, parse_uri

import ws_common as common

RESULTS: Final = Path(__file__).parent / "results" / "ws_handshake.json"
TARGET: Final = 0.5
KINDS: Final = ("treevu", "bare")
console = Console(width=160)

# -- the bare peer (python bench/ws_handshake.py --serve-bare PORT) ---------------------------


async def serve_bare(port: int) -> None:
    import signal
    from http import HTTPStatus
    from uuid import uuid4

    import jwt
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        token = ws.request.headers.get("Authorization", "").removeprefix("Bearer ")
        try:
            jwt.decode(token, common.JWT_SECRET, algorithms=["HS256"], audience="treevu")
        except jwt.PyJWTError as exc:
            await ws.close(4401, f"invalid token: {exc}")
            return
        welcome = {"type": "welcome", "connectionId": uuid4().hex, "heartbeatInterval": 30}
        await ws.send(json.dumps({**welcome, "unreadCount": 0}))
        await ws.wait_closed()

    def health(ws: ServerConnection, request: Request) -> Response | None:
        return ws.respond(HTTPStatus.OK, "ok\n") if request.path == "/healthz" else None

    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    # compression="deflate" is serve's default.
    async with serve(handler, "127.0.0.1", port, process_request=health, ping_interval=3600,
                     backlog=2048):  # fmt: skip
        await stop.wait()


# -- clients ----------------------------------------------------------------------------------

#: How a handshake attempt ended: "ok" | "busy" | "error", a detail, seconds to wait.
Outcome = tuple[str, str, float]


def retry_hint(text: str, default: float = 2.0) -> float:
    """Seconds from ``Retry-After: 2`` or a close reason ``… retry after 2s``."""
    match = re.search(r"(\d+(?:\.\d+)?)\s*s?\s*$", text.strip())
    return float(match.group(1)) if match else default


class Handshake(asyncio.Protocol):
    """One client socket: ``websockets``' sans-I/O ``ClientProtocol`` under an asyncio protocol."""

    def __init__(self, uri: WebSocketURI, token: str) -> None:
        extensions = enable_client_permessage_deflate(None)
        self.ws = ClientProtocol(uri, extensions=extensions, max_size=None)
        self.token = token
        self.outcome: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def __call__(self) -> Handshake:  # its own protocol factory
        return self

    def settle(self, kind: str, detail: str = "", delay: float = 0.2) -> None:
        """The first outcome wins."""
        if not self.outcome.done():
            self.outcome.set_result((kind, detail, delay))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        request = self.ws.connect()
        request.headers["Authorization"] = f"Bearer {self.token}"
        self.ws.send_request(request)
        self.flush()

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            exc = self.ws.handshake_exc
            if isinstance(event, Response) and isinstance(exc, InvalidStatus):
                if exc.response.status_code == 503:
                    hint = retry_hint(exc.response.headers.get("Retry-After", ""))
                    self.settle("busy", "HTTP 503", hint)
                self.settle("error", repr(exc))
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                if json.loads(bytes(event.data)).get("type") == "welcome":
                    self.settle("ok")
            elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                code, reason = (c.code, c.reason) if (c := self.ws.close_rcvd) else (1005, "")
                if code == 1013:  # CLOSE_TRY_AGAIN_LATER
                    self.settle("busy", f"close 1013 {reason}", retry_hint(reason))
                self.settle("error", f"close {code} {reason}")
        self.flush()

    def flush(self) -> None:
        for chunk in self.ws.data_to_send():
            if self.transport is None or self.transport.is_closing():
                return
            if not chunk:  # end of stream
                return self.transport.close()
            self.transport.write(chunk)

    def connection_lost(self, exc: Exception | None) -> None:
        self.settle("error", repr(exc or ConnectionError("closed before welcome")))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.ws.send_close(1000)
            self.flush()
            self.transport.close()


async def client_main(ws_url: str, user_ids: list[int], concurrency: int, pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    uri = parse_uri(ws_url)
    tokens = common._mint_tokens(user_ids, 3600)
    gate = asyncio.Semaphore(concurrency)
    opened: list[Handshake] = []
    done: list[tuple[float, float]] = []  # (attempt start, welcome) of each success
    counts = {"refused": 0, "errors": 0, "failed": 0}
    samples: list[str] = []

    async def one(token: str) -> None:
        errors = refused = 0
        while errors < 3 and refused < 50:
            async with gate:
                started = time.monotonic()
                h = Handshake(uri, token)
                try:
                    await loop.create_connection(h, uri.host, uri.port)
                    kind, detail, delay = await asyncio.wait_for(h.outcome, 60)
                except Exception as exc:
                    kind, detail, delay = "error", repr(exc), 0.2
            if kind == "ok":
                opened.append(h)
                done.append((started, time.monotonic()))
                return
            h.close()
            if kind == "busy":
                refused += 1
                counts["refused"] += 1
                delay *= random.uniform(1.0, 1.25)
            else:
                errors += 1
                counts["errors"] += 1
                samples.append(detail)
            await asyncio.sleep(delay)
        counts["failed"] += 1

    pipe.send("ready")
    await loop.run_in_executor(None, pipe.recv)  # "connect"
    first = time.monotonic()
    await asyncio.gather(*(one(t) for t in tokens))
    deflate = sum(1 for h in opened if h.ws.extensions)
    pipe.send({**counts, "samples": samples[:3], "done": done, "first": first, "deflate": deflate})
    await loop.run_in_executor(None, pipe.recv)  # "close"
    for h in opened:
        h.close()
    await asyncio.sleep(0.5)
    pipe.send(len(opened))


def client_process(ws_url: str, user_ids: list[int], concurrency: int, pipe: Connection) -> None:
    import uvloop

    common.raise_fd_limit()
    uvloop.run(client_main(ws_url, user_ids, concurrency, pipe))


class Clients(common.PipedProcesses):
    """``processes`` client processes sharing ``user_ids``; ``ask`` tells all at once."""

    def __init__(self, ws_url: str, user_ids: list[int], processes: int, concurrency: int):
        jobs = [(ws_url, user_ids[i::processes], concurrency) for i in range(processes)]
        super().__init__(client_process, jobs, timeout=900)


def run_server(
    kind: str, env: dict[str, str], args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    user_ids = list(range(2, args.handshakes + 2))
    port = common.free_port()
    ws_url = f"ws://127.0.0.1:{port}/ws"
    argv = [str(common.BIN / "treevu"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    if kind == "bare":
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve-bare", str(port)]
    with common.ServerProcess(argv, env, port, work / f"{kind}.log") as server:
        if args.warmup:
            with Clients(ws_url, user_ids[: args.warmup], 1, args.concurrency) as warm:
                warm.ask("connect")
        time.sleep(1)
        with Clients(ws_url, user_ids, args.client_processes, args.concurrency) as pool:
            client_pids = [p.pid or 0 for p in pool.procs]
            load_before = common.load_average()
            cpu_server, cpu_clients = (
                common.cpu_seconds([server.pid]),
                common.cpu_seconds(client_pids),
            )
            answers = pool.ask("connect")
            cpu_server = common.cpu_seconds([server.pid]) - cpu_server
            cpu_clients = common.cpu_seconds(client_pids) - cpu_clients
    done = [d for a in answers for d in a["done"]]
    wall = max((end for _, end in done), default=0) - min(a["first"] for a in answers)
    wall = max(wall, 1e-9)
    p50, p99 = common.percentiles([end - start for start, end in done], (50, 99))
    return {
        "server": kind,
        "handshakes": args.handshakes,
        "welcomed": len(done),
        "deflate": sum(a["deflate"] for a in answers),
        "refusedBusy": sum(a["refused"] for a in answers),
        "errors": sum(a["errors"] for a in answers),
        "failed": sum(a["failed"] for a in answers),
        "errorSamples": [s for a in answers for s in a["samples"]][:5],
        "closedAtEnd": pool.closed,
        "seconds": round(wall, 3),
        "handshakesPerSecond": round(len(done) / wall),
        "latencyMs": {"p50": round(p50 * 1000, 2), "p99": round(p99 * 1000, 2)},
        "serverCpuSeconds": round(cpu_server, 3),
        "serverCpuMsPerHandshake": round(1000 * cpu_server / max(len(done), 1), 3),
        "serverCpuPercent": round(100 * cpu_server / wall),
        "clientCpuPercent": round(100 * cpu_clients / wall),
        "load": {"before": load_before, "after": common.load_average()},
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def ratio(key: str) -> float:
        treevu, bare = (statistics.fmean(r[key] for r in runs if r["server"] == k) for k in KINDS)
        return round(treevu / max(bare, 1e-9), 3)

    rate = ratio("handshakesPerSecond")
    target = f"treevu rate ≥ {TARGET:.0%} of bare"
    cpu = ratio("serverCpuMsPerHandshake")
    return {"rateRatio": rate, "cpuPerHandshakeRatio": cpu, "target": target,
            "targetMet": rate >= TARGET}  # fmt: skip


def print_table(runs: list[dict[str, Any]], s: dict[str, Any]) -> None:
    table = Table(title=f"WebSocket handshakes: treevu serve vs bare websockets ({s['target']})")
    columns = ["server", "welcomed", "refused (busy)", "failed", "handshakes/s", "p50 ms"]
    columns += ["p99 ms", "wall s", "srv CPU ms/hs", "srv CPU", "clients CPU", "load"]
    for col in columns:
        table.add_column(col, justify="right")
    for r in runs:
        table.add_row(
            r["server"], f"{r['welcomed']:,}/{r['handshakes']:,}", f"{r['refusedBusy']:,}",
            f"{r['failed']:,}", f"{r['handshakesPerSecond']:,}", str(r["latencyMs"]["p50"]),
            str(r["latencyMs"]["p99"]), f"{r['seconds']:.2f}",
            f"{r['serverCpuMsPerHandshake']:.3f}", f"{r['serverCpuPercent']}%",
            f"{r['clientCpuPercent']}%", r["load"]["before"].split()[0],
        )  # fmt: skip
    met = "met" if s["targetMet"] else "NOT met"
    rate, cpu = f"{s['rateRatio']:.0%} ({met})", f"{s['cpuPerHandshakeRatio']:.2f}×"
    table.add_row("treevu/bare", "", "", "", rate, "", "", "", cpu, "", "", "")
    console.print(table)


def main() -> None:
    if sys.argv[1:2] == ["--serve-bare"]:
        import uvloop

        uvloop.run(serve_bare(int(sys.argv[2])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handshakes", type=int, default=3000, help="N connections per server")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=100, help="in flight per process")
    parser.add_argument("--warmup", type=int, default=200, help="handshakes before measuring")
    parser.add_argument("--repeat", action="store_true", help="then bare and treevu again")
    parser.add_argument("--quick", action="store_true", help="500 handshakes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here")
    args = parser.parse_args()
    if args.quick:
        args.handshakes, args.warmup = 500, 50
    common.raise_fd_limit()
    started = common.load_average()
    order = ["treevu", "bare"] + (["bare", "treevu"] if args.repeat else [])
    with tempfile.TemporaryDirectory(prefix="treevu-ws-handshake-") as tmp:
        workdir = args.workdir or Path(tmp)
        console.print(f"[bold]sqlite[/bold]: seeding {args.handshakes + 1:,} users …")
        env = common.prepare_database(workdir, args.handshakes + 1)
        runs = []
        for kind in order:
            runs.append(r := run_server(kind, env, args, workdir))
            console.print(f"  {kind}: {r['handshakesPerSecond']:,}/s, {r['refusedBusy']} refused"
                          f" (busy), {r['failed']} failed {r['errorSamples']}")  # fmt: skip
    s = summary(runs)
    print_table(runs, s)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "command": " ".join(sys.argv),
        "loadAtStart": started,
        "code": common.git_state(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "summary": s,
        "runs": runs,
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
