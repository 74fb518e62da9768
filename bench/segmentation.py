"""Segmentation benchmark: bulk recompute and admin queries, per database backend and size.

For each (backend, N): a fresh database (a SQLite file in a temporary directory, or a throwaway
database on the MariaDB / PostgreSQL server, dropped afterwards), migrated and seeded with N
synthetic users; then end-to-end :func:`treevu.services.segmentation.recompute.recompute`
timings for

- ``first``: first placement, every profile written (plus one segment_history row each);
- ``steady``: a re-run with nothing changed (read, score, compare, write nothing);
- ``changed``: a re-run after the inputs of ~10% of users changed;
- ``one user``: ``recompute(user_ids=[id])``, unchanged and after a change of that user's inputs;

and p50/p99 latencies of the admin queries through the real service functions, with the stats
cache cleared before every call (``uncached``) and warm (``cached``).

Beside the first placement it measures its floor in the same run, on the same backend
(:class:`Floor`: the recompute's own read and scoring of everyone, then a bare insert of the
rows it stages into an empty table without index, key or foreign key, committed) and prints
the ratio. And the admin queries right after a 10%-changed recompute (:func:`bench_after_write`):
made in this process (``run_recompute`` warms the statistics) or elsewhere (the cache sees the
data version move and serves the old value while it refreshes), beside the cached p99.

Prints tables and writes JSON (``bench/results/segmentation.json`` by default). It reports
against the targets and never fails on time. Wall-clock figures depend on what else runs on the
machine: the JSON keeps the load average around each case and the CPU time of each recompute.

    .venv/bin/python bench/segmentation.py                      # the default matrix
    .venv/bin/python bench/segmentation.py --quick              # 10k users, fewer calls
    .venv/bin/python bench/segmentation.py --sizes 1000000 --backends sqlite --repeat 5
    .venv/bin/python bench/segmentation.py --sizes 1000000 --backends postgresql,mariadb \
        --first-only --out bench/results/segmentation_servers_1m.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shutil
import socket
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import sqlalchemy
from cryptography.fernet import Fernet
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, create_engine, delete, pool, select, text, update
from sqlalchemy.engine import make_url

from treevu.app import build_services, make_engines
from treevu.config import Settings
from treevu.db import EmployeeInputs, EmployeeSegment, SegmentHistory
from treevu.db.bulk import copy_rows, dbapi_cursor, quote_camel, temp_tables_in_memory
from treevu.db.migrate import upgrade
from treevu.population import generate_population
from treevu.segmentation.engine import score
from treevu.segmentation.policy import SEGMENTS, default_policy
from treevu.segmentation.recommendations import recommendation_counts
from treevu.services.context import Actor, Services
from treevu.services.people.seed import write_population
from treevu.services.segmentation import queries as seg
from treevu.services.segmentation.recompute import (
    RISK_TEXT,
    STAGE_COLUMNS,
    RecomputeResult,
    _profile_rows,
    plan_batches,
    profile_hash,
    read_batch,
    recompute,
)

SERVER_URLS: Final = {
    "mariadb": os.environ.get("TREEVU_BENCH_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306"),
    "postgresql": os.environ.get(
        "TREEVU_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432"
    ),
}
BACKENDS: Final = ("sqlite", "mariadb", "postgresql")
DEFAULT_MATRIX: Final = (
    ("sqlite", 10_000),
    ("sqlite", 100_000),
    ("sqlite", 1_000_000),
    ("mariadb", 100_000),
    ("postgresql", 100_000),
)
#: What the benchmark reports against (never asserts).
TARGET_RECOMPUTE_S: Final = {1_000_000: 5.0, 10_000: 0.3}
TARGET_QUERY_P99_MS: Final = 10.0
SEED: Final = 42
ONE_USER_CALLS: Final = 50
ADMIN: Final = Actor(1, "admin")
RESULTS: Final = Path(__file__).parent / "results" / "segmentation.json"
KINDS: Final = {"first": "first", "steady": "steady", "changed": "10% changed"}
#: The floor's table: the staged columns, no index, no key, no foreign key.
FLOOR_TABLE: Final = "bench_floor"
#: Admin queries right after a write: how the recompute reached the database.
AFTER_WRITE: Final = {
    "in_process": "recompute in this process (run_recompute, which warms the cache)",
    "elsewhere": "recompute in another process (the cache finds out from the data version)",
}

console = Console(width=None if sys.stdout.isatty() else 132)


@dataclass(slots=True)
class Latency:
    """Milliseconds over ``calls`` calls."""

    calls: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> Latency:
        ms = np.asarray(seconds) * 1000.0
        return cls(
            calls=len(seconds),
            p50_ms=round(float(np.percentile(ms, 50)), 3),
            p99_ms=round(float(np.percentile(ms, 99)), 3),
            max_ms=round(float(ms.max()), 3),
        )


@dataclass(slots=True)
class RecomputeRun:
    """The median of ``runs`` recomputes (wall seconds), with the phases of the median run."""

    seconds: float
    cpu_seconds: float
    runs: list[float]
    scored: int
    written: int
    segment_changes: int
    phases: dict[str, float]


@dataclass(slots=True)
class Floor:
    """Read + score + a bare insert of the same rows, the median of ``runs`` (wall seconds).

    The honest floor of a first placement on this backend: the recompute's own reading and
    scoring of every user, then the rows it would stage written the backend's fastest way
    (``copy_rows``: executemany / COPY / multi-row INSERT) into an empty table with no index,
    key or foreign key, and committed. No history, no profile upsert, no index upkeep.
    """

    seconds: float
    cpu_seconds: float
    runs: list[float]
    phases: dict[str, float]
    #: first placement / floor, wall and CPU (of the medians)
    ratio: float = 0.0
    cpu_ratio: float = 0.0


@dataclass(slots=True)
class AfterWrite:
    """Admin queries right after a 10%-changed recompute (``rounds`` of them), per query."""

    rounds: int
    recompute_seconds: list[float]  # each round's recompute, the warm included in_process
    warm_seconds: list[float]  # of which the warm (in_process only)
    queries: dict[str, Latency]
    first_call_ms: dict[str, list[float]]  # each round's first call of each query


@dataclass(slots=True)
class Case:
    backend: str
    users: int
    status: str = "ok"
    seed_seconds: float = 0.0
    load_average: list[float] = field(default_factory=list)  # 1-minute, before and after
    recompute: dict[str, RecomputeRun] = field(default_factory=dict)
    floor: Floor | None = None
    one_user: dict[str, Latency] = field(default_factory=dict)
    queries: dict[str, dict[str, Latency]] = field(default_factory=dict)
    after_write: dict[str, AfterWrite] = field(default_factory=dict)


def _reachable(url: str) -> bool:
    parsed = make_url(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 0), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def throwaway_database(backend: str) -> Iterator[str]:
    """The async URL of a fresh, empty database that is removed on exit."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="treevu-bench-") as tmp:
            yield f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        return
    base = SERVER_URLS[backend]
    name = f"treevu_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(
        Settings(database_url=base).sync_database_url,
        poolclass=pool.NullPool,
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        force = " WITH (FORCE)" if backend == "postgresql" else ""
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
        admin.dispose()


def _timed_recompute(
    bulk: Engine, now: datetime, user_ids: list[int] | None = None
) -> tuple[float, float, RecomputeResult]:
    """Wall and CPU seconds of one recompute and what a caller does next (reads the changes)."""
    gc.collect()
    cpu, start = time.process_time(), time.perf_counter()
    result = recompute(bulk, default_policy(), now=now, user_ids=user_ids)
    result.segment_changes  # noqa: B018 — the services publish these, so they are part of it
    return time.perf_counter() - start, time.process_time() - cpu, result


def _median_run(runs: list[tuple[float, float, RecomputeResult]]) -> RecomputeRun:
    ordered = sorted(runs, key=lambda run: run[0])
    seconds, cpu, result = ordered[(len(ordered) - 1) // 2]
    return RecomputeRun(
        seconds=round(seconds, 3),
        cpu_seconds=round(cpu, 3),
        runs=[round(s, 3) for s, _, _ in runs],
        scored=result.scored,
        written=result.written,
        segment_changes=len(result.segment_changes),
        phases={k: round(v, 3) for k, v in result.timings.items()},
    )


def _change_inputs(bulk: Engine, where: Any) -> None:
    """Spend more and get one more alert: moves fwi, often the segment."""
    with bulk.begin() as conn:
        conn.execute(
            update(EmployeeInputs)
            .where(where)
            .values(
                monthly_spending=EmployeeInputs.monthly_spending * 1.25 + 40,
                alerts_30d=EmployeeInputs.alerts_30d + 1,
            )
        )


class SeededDatabase:
    """The seeded database, put back to "never placed" before each first placement.

    SQLite: a copy of the seeded file is restored, so every first placement starts from the same
    pages. Servers: the profiles and their history are deleted (and PostgreSQL vacuumed).
    """

    def __init__(self, settings: Settings, bulk: Engine) -> None:
        self.settings = settings
        self.bulk = bulk
        self._pristine: Path | None = None
        if bulk.dialect.name == "sqlite" and bulk.url.database:
            bulk.dispose()  # the last connection to close checkpoints the WAL into the file
            self._pristine = Path(f"{bulk.url.database}.seeded")
            shutil.copyfile(bulk.url.database, self._pristine)

    def reset(self) -> Engine:
        if self._pristine is not None:
            self.bulk.dispose()
            live = Path(str(self.bulk.url.database))
            for suffix in ("-wal", "-shm"):
                Path(f"{live}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(self._pristine, live)
            async_engine, self.bulk = make_engines(self.settings)
            async_engine.sync_engine.dispose()
            return self.bulk
        with self.bulk.begin() as conn:
            conn.execute(delete(SegmentHistory))
            conn.execute(delete(EmployeeSegment))
        if self.bulk.dialect.name == "postgresql":
            with self.bulk.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                conn.execute(text("VACUUM ANALYZE employee_segments, segment_history"))
        return self.bulk


def _floor_run(bulk: Engine, now: datetime) -> tuple[float, float, dict[str, float]]:
    """One run of the floor (see :class:`Floor`) on a never-placed database; the table is
    dropped afterwards."""
    policy = default_policy()
    names = [name for name, _ in STAGE_COLUMNS]
    ddl = ", ".join(f"{name} {kind}" for name, kind in STAGE_COLUMNS)
    phases = dict.fromkeys(("read", "score", "insert"), 0.0)
    cutoff = now - timedelta(days=180)
    gc.collect()
    cpu, start = time.process_time(), time.perf_counter()
    with bulk.begin() as conn:
        temp_tables_in_memory(conn)
        cursor = dbapi_cursor(conn)
        cursor.execute(quote_camel(f"CREATE TABLE {FLOOR_TABLE} ({ddl})", conn))
        batches, _ = plan_batches(conn, None)
        for batch in batches:
            t0 = time.perf_counter()
            read = read_batch(conn, cutoff, batch)
            t1 = time.perf_counter()
            profiles = score(read.inputs, policy)
            rec_count = recommendation_counts(
                read.inputs, profiles, excluded=(read.excluded_rows, read.excluded_items)
            )
            new_hash = profile_hash(profiles, rec_count, policy)
            every = np.arange(len(read.user_id))
            rows = _profile_rows(policy, read, profiles, rec_count, new_hash, every)
            t2 = time.perf_counter()
            copy_rows(conn, cursor, FLOOR_TABLE, names, rows, text_columns=RISK_TEXT)
            phases["read"] += t1 - t0
            phases["score"] += t2 - t1
            phases["insert"] += time.perf_counter() - t2
        cursor.close()
        committing = time.perf_counter()
    phases["commit"] = time.perf_counter() - committing
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    with bulk.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {FLOOR_TABLE}")
    return seconds, cpu_seconds, phases


def bench_floor(db: SeededDatabase, now: datetime, repeat: int) -> Floor:
    """The floor, each run on a never-placed database (then put back, so that the first
    placements do not reuse its freed pages)."""
    runs = [_floor_run(db.reset(), now) for _ in range(repeat)]
    seconds, cpu, phases = sorted(runs, key=lambda run: run[0])[(len(runs) - 1) // 2]
    return Floor(
        seconds=round(seconds, 3),
        cpu_seconds=round(cpu, 3),
        runs=[round(run[0], 3) for run in runs],
        phases={k: round(v, 3) for k, v in phases.items()},
    )


def bench_recompute(
    db: SeededDatabase, now: datetime, repeat: int, *, first_only: bool = False
) -> dict[str, RecomputeRun]:
    first = []
    for _ in range(repeat):
        bulk = db.reset()
        first.append(_timed_recompute(bulk, now))
    if first_only:
        return {"first": _median_run(first)}
    steady = [_timed_recompute(bulk, now) for _ in range(repeat)]
    changed = []
    for k in range(repeat):
        _change_inputs(bulk, EmployeeInputs.user_id % 10 == k % 10)
        changed.append(_timed_recompute(bulk, now))
    return {
        "first": _median_run(first),
        "steady": _median_run(steady),
        "changed": _median_run(changed),
    }


def bench_one_user(bulk: Engine, now: datetime, calls: int) -> dict[str, Latency]:
    """The one-user path (an input update, a survey): same function, ``user_ids=[id]``."""
    with bulk.connect() as conn:
        ids = list(conn.scalars(select(EmployeeInputs.user_id).order_by(EmployeeInputs.user_id)))
    picked = [ids[k * len(ids) // calls] for k in range(calls)]
    unchanged = [_timed_recompute(bulk, now, [uid])[0] for uid in picked]
    changed = []
    for uid in picked:
        _change_inputs(bulk, EmployeeInputs.user_id == uid)
        changed.append(_timed_recompute(bulk, now, [uid])[0])
    return {"unchanged": Latency.of(unchanged), "changed": Latency.of(changed)}


QueryCall = Callable[[Services, int], Awaitable[object]]


def _queries() -> dict[str, QueryCall]:
    """Each admin query as (services, call number) → awaitable; segments rotate per call."""

    def segment(k: int) -> Any:
        return SEGMENTS[k % len(SEGMENTS)]

    return {
        "segment_distribution": lambda svc, k: seg.get_segment_distribution(
            svc, ADMIN, seg.Empty()
        ),
        "risk_distribution": lambda svc, k: seg.get_risk_distribution(svc, ADMIN, seg.Empty()),
        "segment_stats": lambda svc, k: seg.get_segment_stats(
            svc, ADMIN, seg.SegmentInput(segment=segment(k))
        ),
        "segment_employees": lambda svc, k: seg.get_segment_employees(
            svc, ADMIN, seg.SegmentEmployeesInput(segment=segment(k))
        ),
        "campaign_targets": lambda svc, k: seg.get_campaign_targets(
            svc, ADMIN, seg.CampaignTargetsInput(segment=segment(k), campaign_type="retention")
        ),
    }


async def bench_queries(settings: Settings, calls: int) -> dict[str, dict[str, Latency]]:
    async_engine, bulk = make_engines(settings)
    svc = build_services(settings, async_engine, bulk)
    out: dict[str, dict[str, Latency]] = {}
    try:
        for name, call in _queries().items():
            for k in range(len(SEGMENTS)):  # warm connections, statement caches, the cache
                await call(svc, k)
            cached: list[float] = []
            for k in range(calls):
                start = time.perf_counter()
                await call(svc, k)
                cached.append(time.perf_counter() - start)
            uncached: list[float] = []
            for k in range(calls):
                svc.stats_cache.clear()
                start = time.perf_counter()
                await call(svc, k)
                uncached.append(time.perf_counter() - start)
            out[name] = {"uncached": Latency.of(uncached), "cached": Latency.of(cached)}
    finally:
        await async_engine.dispose()
        bulk.dispose()
    return out


async def bench_after_write(settings: Settings, calls: int, rounds: int) -> dict[str, AfterWrite]:
    """Admin queries right after a write: each round changes ~10% of the inputs, recomputes
    (in this process through ``run_recompute``, or straight through ``recompute`` as another
    process would), then calls each query ``calls // rounds`` times at once, in turn. Every
    statistic was asked for before (as on a live admin page)."""
    async_engine, bulk = make_engines(settings)
    svc = build_services(settings, async_engine, bulk)
    calls_per_round = max(1, calls // rounds)
    out: dict[str, AfterWrite] = {}
    try:
        for call in _queries().values():
            for k in range(len(SEGMENTS)):
                await call(svc, k)
        digit = 0
        for mode in AFTER_WRITE:
            seconds: dict[str, list[float]] = {name: [] for name in _queries()}
            firsts: dict[str, list[float]] = {name: [] for name in _queries()}
            recomputes: list[float] = []
            warms: list[float] = []
            for _ in range(rounds):
                _change_inputs(bulk, EmployeeInputs.user_id % 10 == digit)
                digit += 1
                start = time.perf_counter()
                if mode == "in_process":
                    result = await seg.run_recompute(svc, None)
                    warms.append(time.perf_counter() - start - result.timings["total"])
                else:
                    recompute(bulk, svc.policy, now=datetime.now(UTC))
                recomputes.append(time.perf_counter() - start)
                for k in range(calls_per_round):
                    for name, call in _queries().items():
                        began = time.perf_counter()
                        await call(svc, k)
                        seconds[name].append(time.perf_counter() - began)
                        if k == 0:
                            firsts[name].append(round(seconds[name][-1] * 1000, 3))
                # Let the background refreshes end before the next write.
                for key in svc.stats_cache.keys():
                    task = svc.stats_cache.refreshing(key)
                    if task is not None:
                        await task
            out[mode] = AfterWrite(
                rounds=rounds,
                recompute_seconds=[round(x, 3) for x in recomputes],
                warm_seconds=[round(x, 3) for x in warms],
                queries={name: Latency.of(values) for name, values in seconds.items()},
                first_call_ms=firsts,
            )
    finally:
        await async_engine.dispose()
        bulk.dispose()
    return out


def run_case(
    backend: str, users: int, *, calls: int, repeat: int, first_only: bool = False
) -> Case:
    case = Case(backend, users, load_average=[round(os.getloadavg()[0], 2)])
    if backend != "sqlite" and not _reachable(SERVER_URLS[backend]):
        case.status = "unavailable"
        return case
    with throwaway_database(backend) as url:
        # The services include the notification store, which needs a key (any will do here).
        key = Fernet.generate_key().decode()
        settings = Settings(database_url=url, stats_cache_seconds=3600, encryption_key=key)
        upgrade(settings.sync_database_url)
        async_engine, bulk = make_engines(settings)
        async_engine.sync_engine.dispose()
        now = datetime.now(UTC)
        population = generate_population(users, SEED)
        start = time.perf_counter()
        write_population(bulk, population, now=now)
        case.seed_seconds = round(time.perf_counter() - start, 3)
        del population
        db = SeededDatabase(settings, bulk)
        try:
            floor = bench_floor(db, now, repeat)
            case.recompute = bench_recompute(db, now, repeat, first_only=first_only)
            first = case.recompute["first"]
            floor.ratio = round(first.seconds / floor.seconds, 2)
            floor.cpu_ratio = round(first.cpu_seconds / floor.cpu_seconds, 2)
            case.floor = floor
            if not first_only:
                case.one_user = bench_one_user(db.bulk, now, min(ONE_USER_CALLS, calls))
        finally:
            db.bulk.dispose()
        if not first_only:
            case.queries = asyncio.run(bench_queries(settings, calls))
            case.after_write = asyncio.run(bench_after_write(settings, calls, repeat))
    case.load_average.append(round(os.getloadavg()[0], 2))
    return case


def _mark(value: float, target: float | None) -> str:
    if target is None:
        return ""
    return " [green]✓[/]" if value <= target else " [red]✗[/]"


def print_tables(cases: list[Case]) -> None:
    done = [case for case in cases if case.status == "ok"]
    for case in cases:
        if case.status != "ok":
            console.print(f"{case.backend}, {case.users:,} users: {case.status}")

    table = Table(title="Recompute, end to end (wall seconds, median of runs)")
    for column in ("backend", "users", "seed", *KINDS.values(), "target"):
        table.add_column(column, justify="right")
    table.add_column("1 user p50 ms\nunchanged / changed", justify="right")
    table.add_column("load avg", justify="right")
    for case in done:
        target = TARGET_RECOMPUTE_S.get(case.users)
        runs = [case.recompute.get(kind) for kind in KINDS]
        table.add_row(
            case.backend,
            f"{case.users:,}",
            f"{case.seed_seconds:.1f}",
            *("—" if r is None else f"{r.seconds:.2f}{_mark(r.seconds, target)}" for r in runs),
            "" if target is None else f"≤ {target:g}",
            " / ".join(f"{case.one_user[k].p50_ms:.1f}" for k in case.one_user) or "—",
            " → ".join(f"{x:.1f}" for x in case.load_average),
        )
    console.print(table)

    phases = Table(title="Where the time goes (seconds, of the median run)")
    for column in (
        "backend",
        "users",
        "run",
        "read",
        "score",
        "stage",
        "apply",
        "rebuild",
        "commit",
        "analyze",
    ):
        phases.add_column(column, justify="right")
    phases.add_column("total (cpu)", justify="right")
    for case in done:
        for kind, label in KINDS.items():
            if (run := case.recompute.get(kind)) is None:
                continue
            parts = ("read", "score", "stage", "apply", "rebuild", "commit", "analyze")
            cells = [f"{run.phases.get(p, 0.0):.2f}" for p in parts]
            phases.add_row(
                case.backend,
                f"{case.users:,}",
                f"{label} ({run.written:,} written)",
                *cells,
                f"{run.seconds:.2f} ({run.cpu_seconds:.2f})",
            )
    console.print(phases)

    queries = Table(title=f"Admin queries (ms; target p99 ≤ {TARGET_QUERY_P99_MS:g} at 1M users)")
    for column in ("backend", "users", "query"):
        queries.add_column(column)
    for column in ("uncached p50", "uncached p99", "cached p50", "cached p99"):
        queries.add_column(column, justify="right")
    for case in done:
        for name, modes in case.queries.items():
            cells = []
            for mode in ("uncached", "cached"):
                lat = modes[mode]
                mark = _mark(lat.p99_ms, TARGET_QUERY_P99_MS)
                cells += [f"{lat.p50_ms:.2f}", f"{lat.p99_ms:.2f}{mark}"]
            queries.add_row(case.backend, f"{case.users:,}", name, *cells)
    console.print(queries)

    floors = Table(title="First placement beside its floor (read + score + bare insert, same run)")
    for column in ("backend", "users", "first placement (cpu)", "floor (cpu)", "ratio (cpu)"):
        floors.add_column(column, justify="right")
    floors.add_column("floor: read / score / insert / commit", justify="right")
    for case in done:
        if case.floor is None:
            continue
        first, floor = case.recompute["first"], case.floor
        floors.add_row(
            case.backend,
            f"{case.users:,}",
            f"{first.seconds:.2f} ({first.cpu_seconds:.2f})",
            f"{floor.seconds:.2f} ({floor.cpu_seconds:.2f})",
            f"{floor.ratio:.2f} ({floor.cpu_ratio:.2f})",
            " / ".join(
                f"{floor.phases.get(p, 0.0):.2f}" for p in ("read", "score", "insert", "commit")
            ),
        )
    console.print(floors)

    after = Table(
        title="Admin queries right after a 10%-changed recompute (ms), beside the cached p99"
    )
    for column in ("backend", "users", "recompute", "query"):
        after.add_column(column)
    for column in ("p50", "p99", "first calls", "cached p99 (peer)"):
        after.add_column(column, justify="right")
    for case in done:
        for mode, after_run in case.after_write.items():
            for name, lat in after_run.queries.items():
                peer = case.queries[name]["cached"].p99_ms
                after.add_row(
                    case.backend,
                    f"{case.users:,}",
                    mode,
                    name,
                    f"{lat.p50_ms:.2f}",
                    f"{lat.p99_ms:.2f}{_mark(lat.p99_ms, TARGET_QUERY_P99_MS)}",
                    " / ".join(f"{ms:.1f}" for ms in after_run.first_call_ms[name]),
                    f"{peer:.2f}",
                )
    console.print(after)


def _matrix(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[tuple[str, int]]:
    backends = args.backends.split(",") if args.backends else None
    for backend in backends or ():
        if backend not in BACKENDS:
            parser.error(f"unknown backend {backend!r}; use {', '.join(BACKENDS)}")
    sizes = [int(n) for n in args.sizes.split(",")] if args.sizes else None
    if args.quick:
        sizes = sizes or [10_000]
    if sizes:
        return [(b, n) for b in backends or BACKENDS for n in sizes]
    return [(b, n) for b, n in DEFAULT_MATRIX if backends is None or b in backends]


def main() -> None:
    parser = argparse.ArgumentParser(description="Segmentation benchmark (see module docstring)")
    parser.add_argument("--sizes", help="comma-separated user counts, e.g. 10000,100000")
    parser.add_argument("--backends", help=f"comma-separated, from {', '.join(BACKENDS)}")
    parser.add_argument("--calls", type=int, default=200, help="calls per admin query and mode")
    parser.add_argument("--repeat", type=int, default=3, help="recomputes per kind (median)")
    parser.add_argument("--quick", action="store_true", help="10k users, 50 calls, 1 repeat")
    parser.add_argument(
        "--first-only",
        action="store_true",
        help="first placement and its floor only (no re-runs, one-user path or admin queries)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args()
    matrix = _matrix(args, parser)
    calls = 50 if args.quick else args.calls
    repeat = 1 if args.quick else max(1, args.repeat)

    cases: list[Case] = []
    for backend, users in matrix:
        with console.status(f"{backend}, {users:,} users …"):
            case = run_case(backend, users, calls=calls, repeat=repeat, first_only=args.first_only)
        cases.append(case)
        if case.status == "ok":
            r = case.recompute
            console.log(
                f"{backend} {users:,}: seed {case.seed_seconds:.1f}s; "
                + ", ".join(f"{KINDS[k]} {run.seconds:.2f}s" for k, run in r.items())
            )
        else:
            console.log(f"{backend} {users:,}: {case.status}")
    print_tables(cases)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "generatedAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "numpy": np.__version__,
            "sqlalchemy": sqlalchemy.__version__,
        },
        "targets": {
            "recompute_seconds_by_users": TARGET_RECOMPUTE_S,
            "admin_query_p99_ms_at_1m": TARGET_QUERY_P99_MS,
        },
        "calls": calls,
        "repeat": repeat,
        "first_only": args.first_only,
        "cases": [asdict(case) for case in cases],
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written {args.out}")


if __name__ == "__main__":
    main()
