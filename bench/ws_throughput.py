"""End-to-end notification throughput, delivery latency and fan-out through the real server.

For each database (SQLite, then a throwaway MariaDB database), on a database seeded with
``treevu seed`` (N + 1 users; user 1 is the admin): start ``treevu serve`` (one worker) as a
subprocess, connect N users (one socket each, ``Authorization: Bearer``, permessage-deflate
offered like a browser) from receiver processes, then run the scenarios. Every notification is
created through the admin REST API (``POST /api/v1/admin/notifications/broadcast``, at most
1,000 ids a request) by a producer process, committed to ``notification_queue`` by the inbox's
group commit, written to the sockets and received; receivers record each notification id and
its receive time.

- ``throughput``: unpaced — ``--in-flight`` concurrent requests of ``--chunk`` users each for
  ``--seconds`` worth of the target rate. Delivered/s = distinct ids received / (last receipt
  − first request sent). Target ≥ 20,000/s (the original design: 1,000/s).
- ``latency``: paced at ``--latency-rate`` (5,000/s) in requests of ``--latency-chunk``.
  Latency = receive time − ``data.sentAt`` (``time.time()`` when the producer sent the
  request; clients and server share the machine's clock), and receive time − the
  notification's ``timestamp`` (the commit batch's clock). Target p99 ≤ 50 ms.
- ``fanout``: one notification to each of the N connected users at once (N/1,000 concurrent
  requests); time from the first request to the last receipt. Target ≤ 1 s for 10k users.

Each scenario checks the store afterwards: rows in ``notification_queue`` for the created ids
and their status (``sent`` once written to a socket, ``delivered`` once acknowledged), and the
``notification.delivered`` audit rows. The server runs with
``TREEVU_ADMIN_NOTIFICATIONS_PER_MINUTE=10000000`` (the admin limit is 1,000 a minute by default)
and a one-hour heartbeat. Server CPU per notification is reported beside each rate: it does not
depend on what else the machine runs. Prints a table, writes ``bench/results/ws_throughput.json``
(variants: ``ws_throughput_with_acks.json``, …); never fails on a figure.

- ``--ack``: clients acknowledge every notification, as ``treevu.client`` and the browser
  client do (``sent`` → ``delivered``).
- ``--gc-stats``: the server runs through ``ws_common.py --gc-stats`` and reports the time its
  garbage collector took during each run.
- ``--profile DIR``: ``py-spy record`` of the server during each run (raw collapsed stacks;
  ``PYSPY_GIL=1`` samples only the thread holding the GIL, ``PYSPY_NATIVE=1`` adds C frames).
- ``--what-if-gc-freeze``: not the app's behaviour — ``gc.freeze()`` in the server once every
  client is connected, to measure what the collector's full passes cost.

    .venv/bin/python bench/ws_throughput.py --quick
    .venv/bin/python bench/ws_throughput.py                     # SQLite and MariaDB, 10k users
    .venv/bin/python bench/ws_throughput.py --scenarios throughput,latency --ack
    .venv/bin/python bench/ws_throughput.py --ack --scenarios throughput-noack,throughput,latency

A scenario named ``NAME-noack`` runs NAME with clients that do not acknowledge: with ``--ack``,
the same server and clients measure the peer of the acknowledged run in the same run.
    .venv/bin/python bench/ws_throughput.py --databases sqlite --gc-stats --profile /tmp/prof
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, create_engine, text

from ws_common import (
    BIN,
    Producer,
    ProducerJob,
    ReceiverPool,
    ServerProcess,
    admin_token,
    chunked,
    cpu_seconds,
    epoch,
    free_port,
    gc_stats,
    load_average,
    mariadb_database,
    percentiles,
    prepare_database,
    process_tree_rss_kb,
    raise_fd_limit,
    sync_url,
)

RESULTS: Final = Path(__file__).parent / "results" / "ws_throughput.json"
TITLE: Final = "You reached a savings milestone"
MESSAGE: Final = (
    "Three months of steady saving: your emergency fund now covers one month of expenses. "
    "Keep going to unlock the next reward tier."
)
DATA: Final = {"milestone": "emergency_fund_1m", "points": 250, "nextTier": "Rising Stars"}
TARGETS: Final = {
    "throughput": "≥ 20,000/s",
    "latency": "p99 ≤ 50 ms",
    "fanout": "≤ 1 s",
}

console = Console(width=160)


def store_check(engine: Engine, ids: list[int], audit_before: int) -> dict[str, Any]:
    """Rows of ``ids`` in notification_queue by status, and new delivered audit rows."""
    if not ids:
        return {"persisted": 0, "byStatus": {}, "auditDelivered": 0}
    wanted = set(ids)
    by_status: dict[str, int] = {}
    persisted = 0
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, status FROM notification_queue WHERE id BETWEEN :lo AND :hi"),
            {"lo": min(ids), "hi": max(ids)},
        )
        for nid, status in rows:
            if nid in wanted:
                persisted += 1
                by_status[status] = by_status.get(status, 0) + 1
    return {
        "persisted": persisted,
        "byStatus": by_status,
        "auditDelivered": audit_count(engine) - audit_before,
    }


def audit_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM audit_log WHERE action = 'notification.delivered'")
            ).scalar_one()
        )


def quantiles(seconds: list[float]) -> dict[str, float]:
    """p50, p95, p99 and max, in milliseconds."""
    values = [round(v * 1000, 2) for v in percentiles(seconds)]
    return dict(zip(("p50", "p95", "p99", "max"), values, strict=True))


@dataclass(frozen=True)
class Rig:
    """A running server, its connected receivers and a synchronous engine on its database."""

    database: str
    server: ServerProcess
    pool: ReceiverPool
    engine: Engine
    user_ids: list[int]
    profile_dir: Path | None = None
    gc_log: Path | None = None  # the server runs through ``ws_common.py --gc-stats``


@contextlib.contextmanager
def profiled(rig: Rig, label: str) -> Iterator[None]:
    """``py-spy record`` of the server while the block runs (with ``--profile DIR``)."""
    if rig.profile_dir is None:
        yield
        return
    rig.profile_dir.mkdir(parents=True, exist_ok=True)
    out = rig.profile_dir / f"{rig.database}-{label}.txt"
    # PYSPY_NATIVE=1 adds C frames (the GC, zlib, syscalls); it pauses the server per sample.
    how = ["--native"] if os.environ.get("PYSPY_NATIVE") else ["--nonblocking"]
    how += ["--gil"] if os.environ.get("PYSPY_GIL") else []
    spy = subprocess.Popen(
        [str(BIN / "py-spy"), "record", "--pid", str(rig.server.pid), "--rate", "250"]
        + ["--format", "raw", "--output", str(out), "--subprocesses", *how],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)  # attached before the first request
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)
        console.print(f"  profile: {out}")


def run_scenario(
    rig: Rig,
    name: str,
    *,
    total: int,
    chunk: int,
    rate: float,
    in_flight: int,
    offset: int = 0,
    label: str | None = None,
) -> dict[str, Any]:
    """One producer run; waits for every created id at the receivers, then checks the store."""
    server, pool, engine, user_ids = rig.server, rig.pool, rig.engine, rig.user_ids
    pool.records()  # drop anything left over
    before = pool.count()["received"]
    audit_before = audit_count(engine)
    load_before = load_average()
    cpu_server = cpu_seconds([server.pid])
    cpu_clients = cpu_seconds(pool.pids)
    chunks = chunked(user_ids, total, chunk, offset)
    job = ProducerJob(
        server.url,
        admin_token(),
        chunks,
        rate,
        in_flight,
        TITLE,
        MESSAGE,
        DATA,
        start_at=time.time() + 0.3,
    )
    if rig.gc_log is not None:
        gc_stats(server, rig.gc_log)  # reset the totals
    with profiled(rig, label or name):
        wall = time.perf_counter()
        producer = Producer(job)
        requests = producer.result()
        created = [nid for _, _, _, status, ids in requests if status == 201 for nid in ids]
        received_total = pool.wait_for(before + len(created)) - before
        wall = time.perf_counter() - wall
    cpu_server = cpu_seconds([server.pid]) - cpu_server
    cpu_clients = cpu_seconds(pool.pids) - cpu_clients
    gc = gc_stats(server, rig.gc_log) if rig.gc_log is not None else None
    records = pool.records()
    time.sleep(0.3)  # the sent marks are flushed every 50 ms
    store = store_check(engine, created, audit_before)

    expected = set(created)
    got = {r[0] for r in records}
    first_sent = min(r[1] for r in requests)
    last_answer = max(r[2] for r in requests)
    last_receipt = max((r[1] for r in records), default=first_sent)
    first_receipt = min((r[1] for r in records), default=first_sent)
    from_request = [r[1] - r[2] for r in records if r[2]]
    from_commit = [r[1] - epoch(r[3]) for r in records]
    http = [r[2] - r[1] for r in requests]
    span = max(last_receipt - first_sent, 1e-9)
    result: dict[str, Any] = {
        "scenario": name,
        "target": TARGETS[name.removesuffix("-noack")],
        "requests": len(requests),
        "chunk": chunk,
        "inFlight": in_flight,
        "rateAsked": rate or None,
        "httpErrors": sum(1 for r in requests if r[3] != 201),
        "created": len(created),
        "received": len(records),
        "receivedCounted": received_total,
        "distinct": len(got & expected),
        "lost": len(expected - got),
        "duplicates": len(records) - len(got),
        "unexpected": len(got - expected),
        "offeredPerSecond": round(len(created) / max(last_answer - first_sent, 1e-9)),
        "deliveredPerSecond": round(len(got & expected) / span),
        "firstToLastSeconds": round(span, 3),
        "firstReceiptSeconds": round(first_receipt - first_sent, 4),
        "latencyFromRequestMs": quantiles(from_request),
        "latencyFromCommitMs": quantiles(from_commit),
        "httpMs": quantiles(http),
        "store": store,
        "serverCpuPercent": round(100 * cpu_server / max(wall, 1e-9)),
        # CPU per notification does not depend on what else the machine runs; rates do.
        "serverCpuUsPerNotification": round(1e6 * cpu_server / max(len(created), 1), 1),
        "clientCpuPercent": round(100 * cpu_clients / max(wall, 1e-9)),
        "load": {"before": load_before, "after": load_average()},
        "serverGc": gc,
    }
    lat = result["latencyFromRequestMs"]
    console.print(
        f"  {name}: {result['created']:,} created, {result['distinct']:,} received "
        f"({result['lost']} lost, {result['duplicates']} dup) at "
        f"{result['deliveredPerSecond']:,}/s; p50/p99 {lat['p50']}/{lat['p99']} ms; "
        f"{span:.2f}s; store {store['byStatus']}; server CPU {result['serverCpuPercent']}% "
        f"({result['serverCpuUsPerNotification']} µs/notification), "
        f"clients {result['clientCpuPercent']}%; load {load_before} → {result['load']['after']}"
    )
    if gc is not None:
        console.print(
            f"  server GC: {sum(gc['seconds'].values()):.2f}s of {cpu_server:.2f}s CPU "
            f"{gc['collections']} collections, {gc['tracked']:,} objects tracked"
        )
    return result


@contextlib.contextmanager
def database(kind: str, workdir: Path, users: int) -> Iterator[dict[str, str]]:
    console.print(f"[bold]{kind}[/bold]: seeding {users + 1:,} users …")
    if kind == "sqlite":
        yield prepare_database(workdir, users + 1)
    elif kind == "mariadb":
        with mariadb_database() as url:
            yield prepare_database(workdir, users + 1, database_url=url)
    else:
        raise SystemExit(f"unknown database {kind!r}: use sqlite or mariadb")


def run_database(kind: str, args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    n: int = args.users
    user_ids = list(range(2, n + 2))
    results: list[dict[str, Any]] = []
    with database(kind, workdir / kind, n) as env:
        env = {**env, "TREEVU_WS_COMPRESSION": "true" if args.compression == "on" else "false"}
        engine = create_engine(sync_url(env["TREEVU_DATABASE_URL"]))
        port = free_port()
        argv = [str(BIN / "treevu"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        gc_log = workdir / kind / "gc.jsonl"
        if args.gc_stats or args.what_if_gc_freeze:
            wrapper = [str(BIN / "python"), str(Path(__file__).with_name("ws_common.py"))]
            if args.gc_stats:
                wrapper += ["--gc-stats", str(gc_log)]
            if args.what_if_gc_freeze:
                wrapper += ["--gc-freeze"]
            argv = [*wrapper, *argv[1:]]
        log = workdir / kind / "server.log"
        with (
            ServerProcess(argv, env, port, log) as server,
            ReceiverPool(
                f"ws://127.0.0.1:{port}/ws",
                user_ids,
                processes=args.client_processes,
                compression=args.compression == "on",
                ack=args.ack,
            ) as pool,
        ):
            connected = pool.connect()
            if args.what_if_gc_freeze:
                server.signal(signal.SIGUSR1)
                time.sleep(3)
            console.print(
                f"  {connected['welcomed']:,} connected in {connected['seconds']:.1f}s "
                f"({connected['deflate']:,} with deflate, {connected['failed']} failed "
                f"{connected['failures']})"
            )
            rig = Rig(
                kind,
                server,
                pool,
                engine,
                user_ids,
                args.profile,
                gc_log if args.gc_stats else None,
            )
            # Warm-up: imports, prepared statements, allocator pools.
            run_scenario(
                replace(rig, profile_dir=None),
                "throughput",
                total=min(n, 2000),
                chunk=args.chunk,
                rate=0,
                in_flight=2,
            )
            offset = 0
            for scenario in args.scenarios.split(","):
                for attempt in range(args.repeat):
                    # Let the last run's tail (sent marks, WAL checkpoint, GC) finish first.
                    time.sleep(args.settle)
                    # "NAME-noack": NAME with clients that do not ack (the peer of an --ack run,
                    # measured in the same run on the same server).
                    acked = args.ack and not scenario.endswith("-noack")
                    pool.set_ack(acked)
                    if scenario.removesuffix("-noack") == "throughput":
                        r = run_scenario(
                            rig,
                            scenario,
                            total=int(args.target * args.seconds),
                            chunk=args.chunk,
                            rate=0,
                            in_flight=args.in_flight,
                            offset=offset,
                        )
                    elif scenario.removesuffix("-noack") == "latency":
                        r = run_scenario(
                            rig,
                            scenario,
                            total=int(args.latency_rate * args.seconds),
                            chunk=args.latency_chunk,
                            rate=args.latency_rate,
                            in_flight=args.in_flight * 4,
                            offset=offset,
                        )
                    elif scenario == "fanout":
                        r = run_scenario(
                            rig,
                            "fanout",
                            total=n,
                            chunk=1000,
                            rate=0,
                            in_flight=max(1, n // 1000 + 1),
                            label=f"fanout-{attempt + 1}",
                        )
                    else:
                        raise SystemExit(f"unknown scenario {scenario!r}")
                    offset += 7919  # a different first user each run
                    r.update(
                        database=kind,
                        connections=connected["welcomed"],
                        deflate=connected["deflate"],
                        attempt=attempt + 1,
                        whatIfGcFreeze=args.what_if_gc_freeze,
                        acked=acked,
                        serverRssMb=round(sum(process_tree_rss_kb(server.pid).values()) / 1024),
                    )
                    results.append(r)
        engine.dispose()
    return results


def written(by_status: dict[str, int]) -> int:
    """Rows marked as written to a socket: ``sent``, or ``delivered`` once acknowledged."""
    return by_status.get("sent", 0) + by_status.get("delivered", 0)


def print_table(results: list[dict[str, Any]]) -> None:
    table = Table(title="End-to-end notification delivery (one node)")
    for col in (
        "db",
        "scenario",
        "target",
        "req×ids",
        "created",
        "lost",
        "dup",
        "delivered/s",
        "span s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "p99 commit",
        "stored/sent",
        "srv CPU",
        "load",
    ):
        table.add_column(col, justify="right")
    for r in results:
        lat = r["latencyFromRequestMs"]
        table.add_row(
            r["database"],
            r["scenario"],
            r["target"],
            f"{r['requests']}×{r['chunk']}",
            f"{r['created']:,}",
            str(r["lost"]),
            str(r["duplicates"]),
            f"{r['deliveredPerSecond']:,}",
            f"{r['firstToLastSeconds']:.2f}",
            f"{lat['p50']}",
            f"{lat['p95']}",
            f"{lat['p99']}",
            f"{r['latencyFromCommitMs']['p99']}",
            f"{r['store']['persisted']:,}/{written(r['store']['byStatus']):,}",
            f"{r['serverCpuPercent']}%",
            r["load"]["before"].split()[0],
        )
    console.print(table)


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repeats, per database and scenario."""
    out: dict[str, Any] = {}
    for r in results:
        key = f"{r['database']}/{r['scenario']}"
        out.setdefault(key, []).append(r)
    return {
        key: {
            "deliveredPerSecond": statistics.median(r["deliveredPerSecond"] for r in rs),
            "p99FromRequestMs": statistics.median(r["latencyFromRequestMs"]["p99"] for r in rs),
            "firstToLastSeconds": statistics.median(r["firstToLastSeconds"] for r in rs),
            "serverCpuUsPerNotification": statistics.median(
                r["serverCpuUsPerNotification"] for r in rs
            ),
            "acked": rs[0]["acked"],
            "lost": sum(r["lost"] for r in rs),
            "duplicates": sum(r["duplicates"] for r in rs),
        }
        for key, rs in out.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", default="sqlite,mariadb")
    parser.add_argument("--scenarios", default="throughput,latency,fanout")
    parser.add_argument("--users", type=int, default=10_000, help="connected users")
    parser.add_argument("--seconds", type=float, default=10, help="per scenario, at target")
    parser.add_argument("--target", type=float, default=20_000, help="throughput notifications")
    parser.add_argument("--chunk", type=int, default=1000, help="ids per broadcast request")
    parser.add_argument("--in-flight", type=int, default=4, help="concurrent requests")
    parser.add_argument("--latency-rate", type=float, default=5000)
    parser.add_argument("--latency-chunk", type=int, default=100)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--compression", choices=("on", "off"), default="on")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds between runs")
    parser.add_argument("--ack", action="store_true", help="clients ack every notification")
    parser.add_argument("--quick", action="store_true", help="small smoke run on SQLite")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy the server into DIR")
    parser.add_argument("--gc-stats", action="store_true", help="time the server's GC")
    parser.add_argument(
        "--what-if-gc-freeze",
        action="store_true",
        help="not the app's behaviour: gc.freeze() in the server once all are connected",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here")
    args = parser.parse_args()
    if args.quick:
        args.databases, args.users, args.seconds = "sqlite", 1000, 1.0
        args.target, args.latency_rate, args.settle = 5000, 1000, 0.5
    raise_fd_limit()
    started = load_average()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="treevu-ws-throughput-") as tmp:
        workdir = args.workdir or Path(tmp)
        for kind in args.databases.split(","):
            results.extend(run_database(kind, args, workdir))
    print_table(results)
    out: Path = args.out
    if out == RESULTS and (args.ack or args.what_if_gc_freeze or args.compression == "off"):
        # Variants keep the plain run's file: ws_throughput_with_acks.json, …
        suffix = "_".join(
            name
            for name, on in (
                ("with_acks", args.ack),
                ("whatif_gc_freeze", args.what_if_gc_freeze),
                ("deflate_off", args.compression == "off"),
            )
            if on
        )
        out = RESULTS.with_name(f"ws_throughput_{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "python": sys.version.split()[0],
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "command": " ".join(sys.argv),
                "loadAtStart": started,
                "settings": {
                    k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                },
                "summary": summary(results),
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
