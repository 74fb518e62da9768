"""Many connections on one machine: ``treevu serve --workers N`` with Redis, then one
notification to every connected user.

On a database seeded with ``treevu seed`` (C + 1 users; user 1 is the admin), start
``treevu serve --workers N`` (TREEVU_REDIS_URL set: the workers fan notifications out through
Redis pub/sub) as a subprocess whose open-files limit is raised to the hard limit (children
inherit it). One process holds at most ~19,900 sockets here, so 50,000 connections need at
least three workers, and at least three client processes: each client process binds its
sockets to its own loopback address (127.0.0.2, 127.0.0.3, …) because one source address has
only ~28,000 ephemeral ports towards one server port.

Then: connect C users (one socket each, ``Authorization: Bearer``, permessage-deflate offered
like a browser) and wait for every ``welcome``; read the RSS of the server's process tree
(master + workers); broadcast one ``milestone`` to every user through the admin REST API
(requests of 1,000 ids, ``--in-flight`` at a time, admin limit raised for the benchmark); wait
until every socket received its notification; check ``notification_queue`` (every row
``sent``) and ``websocket_connections`` (connections per worker). Prints a table, writes
``bench/results/ws_scale.json``; never fails on a figure.

With ``--role ws`` (the default) the workers are socket nodes (``treevu serve --role ws
--workers N``) and the broadcast goes to a ``treevu serve --role api`` process of its own, as a
deployment would run them; the RSS figures are the socket nodes' (master + workers), the API
node's is reported beside them. ``--role all``: every worker serves everything (the earlier
setup).

    .venv/bin/python bench/ws_scale.py --quick
    .venv/bin/python bench/ws_scale.py                           # 50k, 4 workers, SQLite
    .venv/bin/python bench/ws_scale.py --database mariadb --workers 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from treevu.config import SYNC_DRIVERS
from ws_common import (
    BIN,
    Producer,
    ProducerJob,
    ReceiverPool,
    ServerProcess,
    admin_token,
    chunked,
    epoch,
    free_port,
    load_average,
    mariadb_database,
    percentiles,
    prepare_database,
    process_tree_rss_kb,
    raise_fd_limit,
    wait_settled,
)

RESULTS: Final = Path(__file__).parent / "results" / "ws_scale.json"
TITLE: Final = "You reached a savings milestone"
MESSAGE: Final = (
    "Three months of steady saving: your emergency fund now covers one month of expenses. "
    "Keep going to unlock the next reward tier."
)
DATA: Final = {"milestone": "emergency_fund_1m", "points": 250, "nextTier": "Rising Stars"}
#: Not the tests' database (15): the rate limiter's keys live there too.
REDIS_URL: Final = "redis://127.0.0.1:6379/12"

console = Console(width=140)


def sync_url(async_url: str) -> str:
    url = make_url(async_url)
    return url.set(drivername=SYNC_DRIVERS[url.drivername]).render_as_string(hide_password=False)


@contextlib.contextmanager
def database(kind: str, workdir: Path, users: int) -> Iterator[dict[str, str]]:
    console.print(f"[bold]{kind}[/bold]: seeding {users:,} users …")
    if kind == "sqlite":
        yield prepare_database(workdir, users)
    elif kind == "mariadb":
        with mariadb_database() as url:
            yield prepare_database(workdir, users, database_url=url)
    else:
        raise SystemExit(f"unknown database {kind!r}: use sqlite or mariadb")


def rss_mb(pid: int) -> dict[str, Any]:
    by_pid = process_tree_rss_kb(pid)
    return {
        "totalMb": round(sum(by_pid.values()) / 1024, 1),
        "byPidMb": {str(p): round(kb / 1024, 1) for p, kb in sorted(by_pid.items())},
    }


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    n: int = args.connections
    user_ids = list(range(2, n + 2))
    with database(args.database, workdir, n + 1) as env:
        env = {
            **env,
            "TREEVU_REDIS_URL": args.redis_url,
            # A channel of our own: nothing else listening on this Redis hears our fan-out.
            "TREEVU_REDIS_CHANNEL": f"treevu:wsbench:{os.getpid()}",
        }
        engine = create_engine(sync_url(env["TREEVU_DATABASE_URL"]))
        port = free_port()
        argv = [str(BIN / "treevu"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--workers", str(args.workers), "--role", args.role]
        local_addrs = [f"127.0.0.{2 + i}" for i in range(args.client_processes)]
        load_start = load_average()
        api_port = free_port()
        api_argv = [str(BIN / "treevu"), "serve", "--host", "127.0.0.1", "--port", str(api_port),
                    "--role", "api"]  # fmt: skip
        with contextlib.ExitStack() as running:
            server = running.enter_context(
                ServerProcess(argv, env, port, workdir / "server.log", start_timeout=120)
            )
            api = server
            if args.role == "ws":  # the admin API (and the broadcast) on a node of its own
                api = running.enter_context(
                    ServerProcess(api_argv, env, api_port, workdir / "api.log", start_timeout=120)
                )
            time.sleep(3)  # the workers start after the master answers /healthz
            baseline = rss_mb(server.pid)
            with ReceiverPool(
                f"ws://127.0.0.1:{port}/ws",
                user_ids,
                processes=args.client_processes,
                compression=args.compression == "on",
                local_addrs=local_addrs,
                concurrency=args.concurrency,
            ) as pool:
                connected = pool.connect()
                console.print(
                    f"  {connected['welcomed']:,} welcomed in {connected['seconds']:.1f}s "
                    f"({connected['deflate']:,} with deflate, {connected['failed']} failed "
                    f"{connected['failures']}); load {load_average()}"
                )
                wait_settled(server, seconds=1.0, rounds=5)
                idle = rss_mb(server.pid)
                time.sleep(1)  # presence rows are written in batches
                with engine.connect() as conn:
                    per_node = {
                        str(node): int(count)
                        for node, count in conn.execute(
                            text(
                                'SELECT "nodeId", count(*) FROM websocket_connections '
                                'GROUP BY "nodeId"'
                                if args.database == "sqlite"
                                else "SELECT nodeId, count(*) FROM websocket_connections "
                                "GROUP BY nodeId"
                            )
                        )
                    }
                console.print(f"  connections per worker: {sorted(per_node.values())}")
                load_before = load_average()
                chunks = chunked(user_ids, n, 1000)
                job = ProducerJob(
                    api.url,
                    admin_token(),
                    chunks,
                    0,
                    args.in_flight,
                    TITLE,
                    MESSAGE,
                    DATA,
                    start_at=time.time() + 0.3,
                )
                requests = Producer(job).result()
                created = [i for _, _, _, status, ids in requests if status == 201 for i in ids]
                pool.wait_for(len(created), idle_timeout=10)
                counts = pool.count()
                records = pool.records()
                after = rss_mb(server.pid)
                api_mb = rss_mb(api.pid)["totalMb"] if api is not server else None
                time.sleep(1)
                with engine.connect() as conn:
                    by_status = {
                        str(status): int(count)
                        for status, count in conn.execute(
                            text("SELECT status, count(*) FROM notification_queue GROUP BY status")
                        )
                    }
        engine.dispose()
    got = {r[0] for r in records}
    expected = set(created)
    first_sent = min(r[1] for r in requests)
    last_receipt = max((r[1] for r in records), default=first_sent)
    lat = percentiles([r[1] - r[2] for r in records if r[2]])
    from_commit = percentiles([r[1] - epoch(r[3]) for r in records])
    return {
        "database": args.database,
        "role": args.role,
        "apiNodeMb": api_mb,
        "workers": args.workers,
        "clientProcesses": args.client_processes,
        "connectionsWanted": n,
        "welcomed": connected["welcomed"],
        "failed": connected["failed"],
        "failures": connected["failures"],
        "deflate": connected["deflate"],
        "connectSeconds": round(float(connected["seconds"]), 1),
        "handshakesPerSecond": round(connected["welcomed"] / max(connected["seconds"], 1e-9)),
        "connectionsPerWorker": sorted(per_node.values()),
        "created": len(created),
        "httpErrors": sum(1 for r in requests if r[3] != 201),
        "received": len(records),
        "distinct": len(got & expected),
        "lost": len(expected - got),
        "duplicates": len(records) - len(got),
        "connectionsNotified": counts["connectionsNotified"],
        "openAtEnd": counts["open"],
        "broadcastSeconds": round(last_receipt - first_sent, 3),
        "latencyFromRequestMs": [round(v * 1000, 1) for v in lat],
        "latencyFromCommitMs": [round(v * 1000, 1) for v in from_commit],
        "storeByStatus": by_status,
        "rss": {"baseline": baseline, "idle": idle, "afterMessage": after},
        "kbPerConnection": round(
            (after["totalMb"] - baseline["totalMb"]) * 1024 / max(connected["welcomed"], 1), 1
        ),
        "load": {"start": load_start, "beforeBroadcast": load_before, "end": load_average()},
    }


def print_table(r: dict[str, Any]) -> None:
    table = Table(title=f"{r['welcomed']:,} connections, {r['workers']} workers + Redis")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("database", r["database"]),
        ("role of the socket workers", r["role"]),
        ("API node RSS MB", str(r["apiNodeMb"])),
        ("authenticated (welcome) / wanted", f"{r['welcomed']:,} / {r['connectionsWanted']:,}"),
        ("failed to connect", f"{r['failed']:,}"),
        ("connect time (handshakes/s)", f"{r['connectSeconds']}s ({r['handshakesPerSecond']:,}/s)"),
        ("connections per worker", ", ".join(f"{c:,}" for c in r["connectionsPerWorker"])),
        ("notifications created / distinct received", f"{r['created']:,} / {r['distinct']:,}"),
        ("sockets that got their notification", f"{r['connectionsNotified']:,}"),
        ("lost / duplicates", f"{r['lost']} / {r['duplicates']}"),
        ("first request → last receipt", f"{r['broadcastSeconds']}s"),
        ("latency p50/p95/p99/max ms", " / ".join(str(v) for v in r["latencyFromRequestMs"])),
        ("notification_queue by status", str(r["storeByStatus"])),
        ("server RSS baseline / idle / after MB", " / ".join(
            str(r["rss"][k]["totalMb"]) for k in ("baseline", "idle", "afterMessage")
        )),
        ("KB per connection (after message)", str(r["kbPerConnection"])),
        ("load (start, before broadcast, end)", " | ".join(r["load"].values())),
    ]  # fmt: skip
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--role", choices=("ws", "all"), default="ws",
        help="ws: socket workers, and the admin API on a --role api node of its own",
    )  # fmt: skip
    parser.add_argument("--client-processes", type=int, default=4, help="≤ ~19k sockets each")
    parser.add_argument("--database", choices=("sqlite", "mariadb"), default="sqlite")
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--compression", choices=("on", "off"), default="on")
    parser.add_argument("--in-flight", type=int, default=4, help="concurrent broadcast requests")
    parser.add_argument("--concurrency", type=int, default=64, help="handshakes per client")
    parser.add_argument("--quick", action="store_true", help="3,000 connections, 3 workers")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here")
    args = parser.parse_args()
    if args.quick:
        args.connections, args.workers, args.client_processes = 3000, 3, 3
    if args.connections / args.client_processes > 19_000:
        raise SystemExit("more than ~19,000 sockets per client process: add --client-processes")
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="treevu-ws-scale-") as tmp:
        result = run(args, args.workdir or Path(tmp))
    print_table(result)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "python": sys.version.split()[0],
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "command": " ".join(sys.argv),
                "result": result,
            },
            indent=2,
        )
        + "\n"
    )
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
