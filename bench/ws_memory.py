"""Server memory per WebSocket connection: idle, and after each connection got a notification.

For each stack and compression setting, on a fresh copy of a SQLite database seeded with
``treevu seed`` (N + 1 users; user 1 is the admin): start the server as a subprocess, read its
RSS (baseline), open N authenticated connections (``Authorization: Bearer``, users 2..N+1) from
several client processes that offer permessage-deflate like a browser, wait for every
``welcome`` (idle), broadcast one ``milestone`` notification to every user through the admin
REST API in chunks of 1,000 and wait until every connection has it (after message).
KB/connection = (RSS − baseline) / N. Stacks:

- ``stock``: plain ``uvicorn treevu.asgi:app`` with uvicorn's defaults (websockets-sansio,
  its 12-bit deflate with context takeover, its 20 s pings) — what ``treevu serve`` did before.
- ``treevu``: ``treevu serve`` (``treevu.notifications.ws_protocol.TreevuWebSocketProtocol``).
- ``treevu-ws``: ``treevu serve --role ws`` (a socket node: no admin API, jobs or engine); the
  broadcast goes through a second process, ``treevu serve --role api``, on the same database,
  and the socket node finds the rows by its tail of the table. RSS is the socket node's.
- ``bare``: the peer — this script with ``--serve-bare PORT on|off``: a bare ``websockets``
  server on uvloop that decodes the same JWT, sends the same ``welcome``, with deflate tuned
  like the product (no context takeover, 12-bit windows, memLevel 5), and on SIGUSR1 sends
  every connection the same notification frame.

Compression "off" switches it off on the server (``--ws-per-message-deflate false`` or
``TREEVU_WS_COMPRESSION=false``); the clients always offer it.

``--tracemalloc`` instead runs ``treevu serve`` under tracemalloc with fewer connections and
prints what the per-connection memory is made of, by allocating package and by line.

Fixed costs (first queries, caches) weigh on small runs: use thousands of connections for a
per-connection figure. Prints a table and writes JSON (``bench/results/ws_memory.json``);
never fails on a figure.

    .venv/bin/python bench/ws_memory.py                          # 10k, both stacks, on/off
    .venv/bin/python bench/ws_memory.py --connections 2000 --stacks treevu
    .venv/bin/python bench/ws_memory.py --tracemalloc --connections 2000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import signal
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from ws_common import (
    BIN,
    ClientPool,
    ServerProcess,
    admin_token,
    bench_env,
    broadcast,
    free_port,
    prepare_database,
    raise_fd_limit,
    wait_settled,
)

RESULTS: Final = Path(__file__).parent / "results" / "ws_memory.json"
TITLE: Final = "You reached a savings milestone"
MESSAGE: Final = (
    "Three months of steady saving: your emergency fund now covers one month of expenses. "
    "Keep going to unlock the next reward tier."
)
DATA: Final = {"milestone": "emergency_fund_1m", "points": 250, "nextTier": "Rising Stars"}
#: Packages an allocation is attributed to: the innermost frame of the traceback in one of them.
PACKAGES: Final = ("treevu", "fastapi", "starlette", "uvicorn", "websockets", "sqlalchemy")

console = Console(width=120)


def server_argv(stack: str, port: int, compression: bool) -> list[str]:
    if stack == "stock":
        return [
            str(BIN / "python"),
            "-m",
            "uvicorn",
            "treevu.asgi:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--ws",
            "websockets-sansio",
            "--ws-per-message-deflate",
            "true" if compression else "false",
            "--log-level",
            "warning",
        ]
    if stack == "bare":
        here = str(Path(__file__).resolve())
        return [
            str(BIN / "python"),
            here,
            "--serve-bare",
            str(port),
            "on" if compression else "off",
        ]
    role = ["--role", "ws"] if stack == "treevu-ws" else []
    return [str(BIN / "treevu"), "serve", "--host", "127.0.0.1", "--port", str(port), *role]


async def serve_bare(port: int, compression: bool) -> None:
    """The peer: what a WebSocket server must hold per socket, and nothing else."""
    import asyncio
    from datetime import UTC, datetime
    from http import HTTPStatus
    from uuid import uuid4

    import jwt
    from websockets.asyncio.server import ServerConnection, broadcast, serve
    from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
    from websockets.http11 import Request, Response

    from ws_common import JWT_SECRET

    connections: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        token = ws.request.headers.get("Authorization", "").removeprefix("Bearer ")
        try:
            jwt.decode(token, JWT_SECRET, algorithms=["HS256"], audience="treevu")
        except jwt.PyJWTError as exc:
            await ws.close(4401, f"invalid token: {exc}")
            return
        welcome = {"type": "welcome", "connectionId": uuid4().hex, "heartbeatInterval": 30}
        await ws.send(json.dumps({**welcome, "unreadCount": 0}))
        connections.add(ws)
        try:
            await ws.wait_closed()
        finally:
            connections.discard(ws)

    def health(ws: ServerConnection, request: Request) -> Response | None:
        return ws.respond(HTTPStatus.OK, "ok\n") if request.path == "/healthz" else None

    def notify_all() -> None:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        note = {"id": 1, "type": "milestone", "title": TITLE, "message": MESSAGE, "data": DATA,
                "timestamp": now, "read": False}  # fmt: skip
        broadcast(connections, json.dumps({"type": "notification", "notification": note}))

    deflate = ServerPerMessageDeflateFactory(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=12,
        client_max_window_bits=12,
        compress_settings={"memLevel": 5},
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, notify_all)
    async with serve(handler, "127.0.0.1", port, process_request=health, ping_interval=3600,
                     backlog=4096, compression=None,
                     extensions=[deflate] if compression else None):  # fmt: skip
        await stop.wait()


def fresh_copy(template: Path, target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for f in template.glob("bench.db*"):
        shutil.copy2(f, target / f.name)
    return target


def run_scenario(
    stack: str,
    compression: bool,
    n: int,
    processes: int,
    template: Path,
    workdir: Path,
    *,
    argv_prefix: list[str] | None = None,
    snapshot_dir: Path | None = None,
) -> dict[str, Any]:
    """One server, N connections: RSS at baseline, idle and after one notification each."""
    label = f"{stack}, deflate {'on' if compression else 'off'}"
    scenario_dir = fresh_copy(template, workdir / f"{stack}-{'on' if compression else 'off'}")
    env = bench_env(scenario_dir, TREEVU_WS_COMPRESSION="true" if compression else "false")
    port = free_port()
    if argv_prefix is None:
        argv = server_argv(stack, port, compression)
    else:
        argv = [*argv_prefix, "serve", "--host", "127.0.0.1", "--port", str(port)]
    user_ids = list(range(2, n + 2))
    snapshots: list[Path] = []

    def snapshot(server: ServerProcess) -> None:
        if snapshot_dir is None:
            return
        index = len(snapshots) + 1
        server.signal(signal.SIGUSR1)
        done = snapshot_dir / f"snapshot-{index}.done"
        deadline = time.monotonic() + 300
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        snapshots.append(snapshot_dir / f"snapshot-{index}.bin")

    console.print(f"[bold]{label}[/bold]: starting the server")
    log = scenario_dir / "server.log"
    start_timeout = 600 if snapshot_dir else 60  # tracemalloc slows imports a lot
    api_port = free_port()
    api_argv = [str(BIN / "treevu"), "serve", "--host", "127.0.0.1", "--port", str(api_port),
                "--role", "api"]  # fmt: skip
    with contextlib.ExitStack() as running:
        server = running.enter_context(
            ServerProcess(argv, env, port, log, start_timeout=start_timeout)
        )
        api = server
        if stack == "treevu-ws":
            api_log = scenario_dir / "api.log"
            api = running.enter_context(ServerProcess(api_argv, env, api_port, api_log))
        baseline = wait_settled(server)
        snapshot(server)
        with ClientPool(
            f"ws://127.0.0.1:{port}/ws", user_ids, processes=processes, compression=True
        ) as pool:
            connected = pool.connect()
            console.print(
                f"  {connected['welcomed']:,} welcomed in {connected['seconds']:.1f}s, "
                f"{connected['deflate']:,} with deflate, {connected['failed']} failed "
                f"{connected['failures']}"
            )
            idle = wait_settled(server)
            snapshot(server)
            started = time.perf_counter()
            if stack == "bare":
                server.signal(signal.SIGUSR1)
                created = len(user_ids)
            else:
                created = broadcast(
                    api.url, admin_token(), user_ids, title=TITLE, message=MESSAGE, data=DATA
                )
            notified = pool.await_notifications()
            delivered_s = time.perf_counter() - started
            console.print(f"  {created:,} created, {notified:,} delivered in {delivered_s:.1f}s")
            after = wait_settled(server)
            snapshot(server)
    welcomed = int(connected["welcomed"])
    per = max(welcomed, 1)
    return {
        "stack": stack,
        "compression": compression,
        "connections": welcomed,
        "deflateNegotiated": connected["deflate"],
        "failed": connected["failed"],
        "notified": notified,
        "rssKb": {"baseline": baseline, "idle": idle, "afterMessage": after},
        "kbPerConnection": {
            "idle": round((idle - baseline) / per, 1),
            "afterMessage": round((after - baseline) / per, 1),
        },
        "rssMbAt10k": {
            "idle": round((baseline + (idle - baseline) / per * 10_000) / 1024, 1),
            "afterMessage": round((baseline + (after - baseline) / per * 10_000) / 1024, 1),
        },
        "connectSeconds": round(float(connected["seconds"]), 2),
        "deliverSeconds": round(delivered_s, 2),
        "snapshots": [str(s) for s in snapshots],
    }


def print_table(results: list[dict[str, Any]]) -> None:
    table = Table(title="Server memory per WebSocket connection")
    for col in (
        "stack",
        "deflate",
        "conns",
        "base MB",
        "idle MB",
        "msg MB",
        "KB/c idle",
        "KB/c msg",
        "MB@10k",
    ):
        table.add_column(col, justify="right")
    for r in results:
        rss = r["rssKb"]
        table.add_row(
            r["stack"],
            "on" if r["compression"] else "off",
            f"{r['connections']:,}",
            f"{rss['baseline'] / 1024:.0f}",
            f"{rss['idle'] / 1024:.0f}",
            f"{rss['afterMessage'] / 1024:.0f}",
            f"{r['kbPerConnection']['idle']:.1f}",
            f"{r['kbPerConnection']['afterMessage']:.1f}",
            f"{r['rssMbAt10k']['afterMessage']:.0f}",
        )
    console.print(table)


def _package_of(trace: tracemalloc.Traceback) -> str:
    """The innermost frame in one of PACKAGES (asyncio's Task/Queue go to whoever made them)."""
    for frame in reversed(trace):  # most recent call last in tracemalloc's default order
        for package in PACKAGES:
            if f"/{package}/" in frame.filename:
                return package
    return "other"


def explain(snapshots: list[Path], connections: int, top: int = 25) -> dict[str, Any]:
    """Per-connection bytes by package and by allocating line, baseline → idle → after message."""
    base, idle, after = (tracemalloc.Snapshot.load(str(p)) for p in snapshots)
    report: dict[str, Any] = {}
    for name, snap in (("idle", idle), ("afterMessage", after)):
        by_package: dict[str, int] = defaultdict(int)
        for stat in snap.compare_to(base, "traceback"):
            by_package[_package_of(stat.traceback)] += stat.size_diff
        lines = snap.compare_to(base, "lineno")[:top]
        total = sum(by_package.values())
        report[name] = {
            "bytesPerConnection": round(total / connections),
            "byPackage": {
                k: round(v / connections)
                for k, v in sorted(by_package.items(), key=lambda x: -x[1])
            },
            "topLines": [
                {
                    "where": f"{s.traceback[0].filename.split('site-packages/')[-1]}:"
                    f"{s.traceback[0].lineno}",
                    "bytesPerConnection": round(s.size_diff / connections),
                    "blocksPerConnection": round(s.count_diff / connections, 2),
                }
                for s in lines
            ],
        }
        table = Table(title=f"tracemalloc, {name}: {total / connections:,.0f} B per connection")
        table.add_column("package (innermost frame)")
        table.add_column("B/conn", justify="right")
        for k, v in report[name]["byPackage"].items():
            table.add_row(k, f"{v:,}")
        console.print(table)
        lines_table = Table(title=f"top allocating lines, {name}")
        lines_table.add_column("where")
        lines_table.add_column("B/conn", justify="right")
        lines_table.add_column("blocks/conn", justify="right")
        for row in report[name]["topLines"]:
            lines_table.add_row(
                row["where"], f"{row['bytesPerConnection']:,}", f"{row['blocksPerConnection']}"
            )
        console.print(lines_table)
    return report


def main() -> None:
    if sys.argv[1:2] == ["--serve-bare"]:
        import uvloop

        uvloop.run(serve_bare(int(sys.argv[2]), sys.argv[3] == "on"))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=4, help="client processes")
    parser.add_argument("--stacks", default="bare,treevu,treevu-ws")
    parser.add_argument("--compression", default="on,off")
    parser.add_argument("--tracemalloc", action="store_true", help="explain treevu's memory")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here")
    args = parser.parse_args()
    raise_fd_limit()
    n: int = args.connections
    with tempfile.TemporaryDirectory(prefix="treevu-ws-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        template = workdir / "template"
        console.print(f"seeding {n + 1:,} users into {template} …")
        prepare_database(template, n + 1)
        results: list[dict[str, Any]] = []
        if args.tracemalloc:
            snap_dir = workdir / "snapshots"
            prefix = [
                str(BIN / "python"),
                "-X",
                "tracemalloc=25",
                str(Path(__file__).with_name("ws_common.py")),
                str(snap_dir),
            ]
            snap_dir.mkdir(parents=True, exist_ok=True)
            for compression in [c == "on" for c in args.compression.split(",")]:
                for old in snap_dir.glob("snapshot-*"):
                    old.unlink()
                r = run_scenario(
                    "treevu",
                    compression,
                    n,
                    args.processes,
                    template,
                    workdir,
                    argv_prefix=prefix,
                    snapshot_dir=snap_dir,
                )
                r["tracemalloc"] = explain([Path(s) for s in r.pop("snapshots")], n)
                results.append(r)
            console.print("RSS below includes tracemalloc's own bookkeeping: read the tables above")
        else:
            for stack in args.stacks.split(","):
                for compression in [c == "on" for c in args.compression.split(",")]:
                    r = run_scenario(stack, compression, n, args.processes, template, workdir)
                    r.pop("snapshots")
                    results.append(r)
    print_table(results)
    out: Path = args.out
    if args.tracemalloc and out == RESULTS:
        out = RESULTS.with_name("ws_memory_tracemalloc.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "python": sys.version.split()[0],
                "machine": platform.machine(),
                "connections": n,
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
