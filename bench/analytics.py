"""Analytics at scale: N people × 12 months of history, the nightly job's work and each
analytics call as a client makes it, through the real HTTP app.

For each case (backend, N): a fresh database (a SQLite file in a temporary directory, or a
throwaway PostgreSQL database on 127.0.0.1:5432, dropped at the end), migrated, then seeded as
``treevu seed --history-months 12`` does (``cli._seed_history``), each phase timed:
``generate_population`` → ``write_population`` → ``generate_history`` → ``write_history`` →
``recompute`` → ``store.take_snapshot`` (set-up, not a target). Then:

- **nightly job's work**: ``store.refresh`` (the people × months cube read, every answer
  computed and stored), beside two floors in the same run: ``store.load_cube`` alone, and a bare
  ``SELECT COUNT(*) FROM profile_snapshots``.
- **calls**: the app (``create_app``) served by uvicorn in a thread of this process on
  127.0.0.1, an admin token (user 1), one ``httpx`` client with keep-alive; ``--calls`` rounds,
  each round calling every endpoint once in turn (noise spreads evenly over them): transitions
  first → last month, cohorts, churn, intervention effect (3 months), campaign 1's experiment,
  and two floors — ``GET /api/v1/me`` (authenticated, one user read) and ``/healthz``.
- **after a change**: the first call after the data changed, which now returns the stored
  answer marked ``stale`` and starts one background refresh (its time and ``stale`` flag are
  recorded, nothing asserted), then the same call every 0.5 s until it says ``stale: false``:
  the seconds until the answer is fresh again, and the calls' latencies while the refresh runs.
  *Effect*: one intervention row inserted, then the intervention-effect call; also the same
  with 3 callers at once, each polling. *History*: one person deactivated and this month's
  snapshot taken again (what the nightly job does before its refresh), then transitions.

Prints tables, writes ``bench/results/analytics.json``; reports against the target (each call
≤ 500 ms, p99) and never fails on a figure. The daily jobs are pushed out of the run
(``job_intervals``), so no scheduled refresh lands in a measurement.

    .venv/bin/python bench/analytics.py --quick                   # 20,000 people, 10 calls
    .venv/bin/python bench/analytics.py                           # 1,000,000 people, 50 calls
    .venv/bin/python bench/analytics.py --cases postgresql:200000 --calls 20
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import httpx
import numpy as np
import uvicorn
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, insert, select, text, update

from segmentation import throwaway_database
from treevu.app import create_app, make_engines, ws_options
from treevu.config import Settings
from treevu.db import Intervention, ProfileSnapshot, User
from treevu.db.migrate import upgrade
from treevu.history import generate_history
from treevu.population import generate_population
from treevu.segmentation.policy import default_policy
from treevu.services.analytics import store
from treevu.services.auth import mint_token
from treevu.services.people.seed import write_history, write_population
from treevu.services.segmentation.recompute import recompute
from ws_common import ENCRYPTION_KEY, JWT_SECRET, free_port, git_state, load_average

RESULTS: Final = Path(__file__).parent / "results" / "analytics.json"
POSTGRES_URL: Final = os.environ.get(
    "TREEVU_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432"
)
FULL_CASES: Final = "sqlite:1000000,postgresql:1000000"
QUICK_CASES: Final = "sqlite:20000,postgresql:20000"
MONTHS: Final = 12
SEED: Final = 1
ADMIN_ID: Final = 1
TARGET_MS: Final = 500.0
EFFECT_HORIZON: Final = 3
COLD_CONCURRENT: Final = 3
#: After a change, the same call again every POLL_SECONDS until it is fresh, FRESH_TIMEOUT at most.
POLL_SECONDS: Final = 0.5
FRESH_TIMEOUT: Final = 1800.0
MIN_CALLS: Final = 5
#: Daily jobs moved ~31 years away: no nightly refresh lands in a measurement.
FAR: Final = 1e9
DAILY_JOBS: Final = ("tiers.reconcile", "profiles.refresh", "history.snapshot", "jobs.prune")

console = Console(width=None if sys.stdout.isatty() else 140)
T = TypeVar("T")


@dataclass(slots=True)
class Latency:
    """Milliseconds over ``calls`` calls."""

    calls: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    bytes: int = 0

    @classmethod
    def of(cls, seconds: list[float], size: int = 0) -> Latency:
        ms = np.asarray(seconds) * 1000.0
        return cls(
            calls=len(seconds),
            p50_ms=round(float(np.percentile(ms, 50)), 2),
            p99_ms=round(float(np.percentile(ms, 99)), 2),
            max_ms=round(float(ms.max()), 2),
            bytes=size,
        )


@dataclass(slots=True)
class Timed:
    """Wall and CPU seconds (CPU: this process, every thread; a server's own work is not in it)."""

    seconds: float
    cpu_seconds: float


@dataclass(slots=True)
class Case:
    backend: str
    users: int
    status: str = "ok"
    people_in_history: int = 0
    snapshots: int = 0
    months: list[str] = field(default_factory=list)
    interventions: int = 0
    load: dict[str, str] = field(default_factory=dict)
    setup: dict[str, Timed] = field(default_factory=dict)
    nightly: dict[str, Timed] = field(default_factory=dict)
    first_calls_ms: dict[str, float] = field(default_factory=dict)
    calls: dict[str, Latency] = field(default_factory=dict)
    cold: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def timed(run: Callable[[], T]) -> tuple[T, Timed]:
    gc.collect()
    cpu, start = time.process_time(), time.perf_counter()
    value = run()
    return value, Timed(round(time.perf_counter() - start, 3), round(time.process_time() - cpu, 3))


# -- databases and the server ------------------------------------------------------------------


class LiveServer:
    """uvicorn serving ``create_app(settings)`` in a thread, on a free loopback port (as
    ``tests/conftest.py`` does)."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            **ws_options(settings),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


# -- set-up and the nightly job ----------------------------------------------------------------


def seed(case: Case, bulk: Engine, settings: Settings, now: datetime) -> None:
    """What ``treevu seed --users N --history-months 12`` does, phase by phase."""
    population, case.setup["generate_population"] = timed(
        lambda: generate_population(case.users, SEED)
    )
    _, case.setup["write_population"] = timed(lambda: write_population(bulk, population, now=now))
    history, case.setup["generate_history"] = timed(
        lambda: generate_history(population, default_policy(), MONTHS, SEED, now.date())
    )
    case.people_in_history = len(history.rows)
    truth, case.setup["write_history"] = timed(
        lambda: write_history(bulk, population, history, now=now, seed=SEED)
    )
    case.interventions = int(truth["interventions"])
    this_month = history.months[-1]
    _, case.setup["recompute"] = timed(
        lambda: recompute(
            bulk, default_policy(), now=now, survey_valid_days=settings.survey_valid_days
        )
    )

    def snapshot() -> int:
        return store.take_snapshot(bulk, this_month, now)

    _, case.setup["take_snapshot"] = timed(snapshot)
    if bulk.dialect.name == "postgresql":
        # What autovacuum would do soon after a bulk load; the nightly job finds it done.
        def analyze() -> None:
            with bulk.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE"))

        _, case.setup["vacuum_analyze"] = timed(analyze)


def nightly(case: Case, bulk: Engine) -> None:
    """``store.refresh`` beside its floors: the cube read alone, and a bare count."""

    def count() -> int:
        with bulk.connect() as conn:
            return int(conn.execute(text("SELECT COUNT(*) FROM profile_snapshots")).scalar_one())

    def load() -> Any:
        with bulk.connect() as conn:
            return store.load_cube(conn)

    case.snapshots, case.nightly["count"] = timed(count)
    cube, case.nightly["load_cube"] = timed(load)
    case.months = [m.strftime("%Y-%m") for m in cube.months]
    del cube
    _, case.nightly["refresh"] = timed(lambda: store.refresh(bulk, lambda: datetime.now(UTC)))
    case.nightly.update(refresh_steps(bulk))


def refresh_steps(bulk: Engine) -> dict[str, Timed]:
    """What ``refresh`` runs, again, step by step and nothing stored: where its time goes."""
    steps: dict[str, Timed] = {}
    with bulk.connect() as conn:
        _, steps["versions"] = timed(lambda: store.versions(conn))
        cube, steps["step: load_cube"] = timed(lambda: store.load_cube(conn))
        _, steps["step: compute_history"] = timed(lambda: store.compute_history(cube))
        treated, steps["step: load_treated"] = timed(lambda: store.load_treated(conn, cube))
        _, steps["step: compute_effects"] = timed(lambda: store.compute_effects(cube, treated))
    return steps


# -- the calls ---------------------------------------------------------------------------------


def endpoints(months: list[str]) -> dict[str, str]:
    first, last = months[0], months[-1]
    return {
        "transitions": f"/api/v1/analytics/transitions?from={first}-01&to={last}-01",
        "cohorts": "/api/v1/analytics/cohorts",
        "churn": "/api/v1/analytics/churn",
        "intervention-effect": (
            f"/api/v1/analytics/intervention-effect?horizonMonths={EFFECT_HORIZON}"
        ),
        "experiment": "/api/v1/campaigns/1/experiment",
        "floor: /me": "/api/v1/me",
        "floor: /healthz": "/healthz",
    }


def call(http: httpx.Client, path: str) -> tuple[float, int]:
    start = time.perf_counter()
    response = http.get(path)
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:300]}")
    return elapsed, len(response.content)


def bench_calls(case: Case, http: httpx.Client, calls: int, budget: float) -> None:
    paths = endpoints(case.months)
    sizes: dict[str, int] = {}
    for name, path in paths.items():  # the first call of each after the refresh
        seconds, sizes[name] = call(http, path)
        case.first_calls_ms[name] = round(seconds * 1000, 2)
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(calls):
        for name, path in paths.items():
            spent = sum(times[name])
            if len(times[name]) >= MIN_CALLS and spent > budget:
                continue  # a slow call stops at its time budget, after MIN_CALLS calls
            times[name].append(call(http, path)[0])
    case.calls = {name: Latency.of(times[name], sizes[name]) for name in paths}


@dataclass(slots=True)
class Answer:
    """One analytics call: its time and how fresh its answer said it was."""

    seconds: float
    stale: bool | None
    computed_at: str | None


def ask(http: httpx.Client, path: str) -> Answer:
    start = time.perf_counter()
    response = http.get(path)
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:300]}")
    body = response.json()
    return Answer(elapsed, body.get("stale"), body.get("computedAt"))


def after_change(http: httpx.Client, path: str) -> dict[str, Any]:
    """The first call after a change, then the same call every ``POLL_SECONDS`` until its
    answer is no longer stale: seconds from the first call's start to the first fresh answer."""
    start = time.perf_counter()
    first = ask(http, path)
    polls: list[float] = []
    last = first
    while last.stale is not False and time.perf_counter() - start < FRESH_TIMEOUT:
        time.sleep(POLL_SECONDS)
        last = ask(http, path)
        polls.append(last.seconds)
    fresh = last.stale is False
    ms = np.asarray(polls or [0.0]) * 1000.0
    return {
        "firstMs": round(first.seconds * 1000, 2),
        "firstStale": first.stale,
        "firstComputedAt": first.computed_at,
        "freshAfterS": round(time.perf_counter() - start, 2) if fresh else None,
        "freshComputedAt": last.computed_at if fresh else None,
        "polls": len(polls),
        "pollP50Ms": round(float(np.percentile(ms, 50)), 2),
        "pollMaxMs": round(float(ms.max()), 2),
    }


def add_intervention(bulk: Engine, user_id: int) -> None:
    now = datetime.now(UTC)
    with bulk.begin() as conn:
        conn.execute(
            insert(Intervention).values(
                user_id=user_id, kind="crisis", status="open", plan={"steps": []},
                created_at=now, updated_at=now,
            )
        )  # fmt: skip


def bench_cold(case: Case, http: httpx.Client, url: str, token: str, bulk: Engine) -> None:
    """After the data changed: the first call (served stale, a refresh started in the
    background), and how long until the same call answers fresh again."""
    paths = endpoints(case.months)
    this_month = date.fromisoformat(case.months[-1] + "-01")
    with bulk.connect() as conn:  # people in this month's snapshot, the newest rows first
        uids = list(
            conn.scalars(
                select(ProfileSnapshot.user_id)
                .where(ProfileSnapshot.month == this_month)
                .order_by(ProfileSnapshot.user_id.desc())
                .limit(3)
            )
        )

    add_intervention(bulk, uids[0])
    effect = after_change(http, paths["intervention-effect"])

    # The same with several callers at once (a dashboard's charts, or several admins).
    add_intervention(bulk, uids[1])
    callers: list[dict[str, Any]] = []

    def one() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=3600) as own:
            callers.append(after_change(own, paths["intervention-effect"]))

    start = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(COLD_CONCURRENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    all_fresh = time.perf_counter() - start

    def resnapshot() -> None:
        # One person left, and this month's snapshot is taken again (a new history version).
        now = datetime.now(UTC)
        with bulk.begin() as conn:
            conn.execute(update(User).where(User.id == uids[2]).values(is_active=False))
        store.take_snapshot(bulk, this_month, now)

    _, snap = timed(resnapshot)
    history = after_change(http, paths["transitions"])
    callers.sort(key=lambda c: float(c["firstMs"]))
    case.cold = {
        "effect": {"after": "one intervention row inserted", **effect},
        "effectConcurrent": {
            "after": "one intervention row inserted",
            "callers": COLD_CONCURRENT,
            "firstMs": [c["firstMs"] for c in callers],
            "firstStale": [c["firstStale"] for c in callers],
            "freshAfterS": [c["freshAfterS"] for c in callers],
            "pollMaxMs": max(float(c["pollMaxMs"]) for c in callers),
            "allFreshS": round(all_fresh, 2),
            #: one background refresh in the process: every caller's fresh answer is the same
            "freshComputedAt": sorted({str(c["freshComputedAt"]) for c in callers}),
        },
        "history": {
            "after": f"one person left, this month's snapshot taken again ({snap.seconds:.2f} s, "
            "not counted)",
            **history,
        },
    }


# -- one case ----------------------------------------------------------------------------------


def run_case(backend: str, users: int, calls: int, budget: float) -> Case:
    case = Case(backend, users, load={"before": load_average()})
    console.print(f"[bold]{backend}[/bold], {users:,} people × {MONTHS} months …")
    with throwaway_database(backend) as url, tempfile.TemporaryDirectory() as data_dir:
        settings = Settings.model_validate(
            {
                "database_url": url,
                "jwt_secret": JWT_SECRET,
                "encryption_key": ENCRYPTION_KEY,
                "data_dir": data_dir,
                "job_intervals": dict.fromkeys(DAILY_JOBS, FAR),
            }
        )
        _, case.setup["migrate"] = timed(lambda: upgrade(settings.sync_database_url))
        async_engine, bulk = make_engines(settings)
        async_engine.sync_engine.dispose()
        try:
            seed(case, bulk, settings, datetime.now(UTC))
            console.print("  set-up: " + phases(case.setup))
            nightly(case, bulk)
            console.print("  nightly: " + phases(case.nightly))
            token = mint_token(settings, ADMIN_ID, 24 * 3600)
            with LiveServer(settings) as server:
                headers = {"Authorization": f"Bearer {token}"}
                with httpx.Client(base_url=server.url, headers=headers, timeout=3600) as http:
                    bench_calls(case, http, calls, budget)
                    bench_cold(case, http, server.url, token, bulk)
        finally:
            bulk.dispose()
    case.load["after"] = load_average()
    return case


def phases(timings: dict[str, Timed]) -> str:
    return ", ".join(f"{k} {t.seconds:.2f} s" for k, t in timings.items())


# -- report ------------------------------------------------------------------------------------


def print_tables(cases: list[Case]) -> None:
    for case in cases:
        if case.status != "ok":
            console.print(f"{case.backend}, {case.users:,}: {case.status} {case.error or ''}")
    done = [c for c in cases if c.status == "ok"]

    setup = Table(title="Set-up (wall s; not a target)")
    names = list(done[0].setup) if done else []
    for column in ("backend", "people", "in history", "snapshots", *names):
        setup.add_column(column, justify="right")
    for c in done:
        setup.add_row(
            c.backend, f"{c.users:,}", f"{c.people_in_history:,}", f"{c.snapshots:,}",
            *(f"{t.seconds:.2f}" for t in c.setup.values()),
        )  # fmt: skip
    console.print(setup)

    night = Table(title="The nightly job's work beside its floors (wall s, CPU s)")
    for column in ("backend", "people", "refresh", "floor: load_cube", "ratio",
                   "floor: COUNT(*)", "versions()", "steps: cube / history / treated / effects",
                   "load avg"):  # fmt: skip
        night.add_column(column, justify="right")
    for c in done:
        n = c.nightly
        night.add_row(
            c.backend, f"{c.users:,}",
            f"{n['refresh'].seconds:.2f} ({n['refresh'].cpu_seconds:.2f})",
            f"{n['load_cube'].seconds:.2f} ({n['load_cube'].cpu_seconds:.2f})",
            f"{n['refresh'].seconds / max(n['load_cube'].seconds, 1e-9):.1f}×",
            f"{n['count'].seconds:.3f}",
            f"{n['versions'].seconds:.3f}",
            " / ".join(f"{n['step: ' + k].seconds:.2f}" for k in
                       ("load_cube", "compute_history", "load_treated", "compute_effects")),
            f"{c.load['before']} → {c.load['after']}",
        )  # fmt: skip
    console.print(night)

    table = Table(title=f"Calls through HTTP (ms; target p99 ≤ {TARGET_MS:.0f})")
    for column in ("backend", "people", "call", "calls", "first", "p50", "p99", "max", "bytes",
                   "p50 / floor /me", "target"):  # fmt: skip
        table.add_column(column, justify="right")
    for c in done:
        floor = c.calls["floor: /me"].p50_ms
        for name, lat in c.calls.items():
            met = "" if name.startswith("floor") else (
                "met" if lat.p99_ms <= TARGET_MS else "[red]NOT met[/red]"
            )  # fmt: skip
            table.add_row(
                c.backend, f"{c.users:,}", name, str(lat.calls), f"{c.first_calls_ms[name]:.1f}",
                f"{lat.p50_ms:.1f}", f"{lat.p99_ms:.1f}", f"{lat.max_ms:.1f}", f"{lat.bytes:,}",
                f"{lat.p50_ms / max(floor, 1e-9):.1f}×", met,
            )  # fmt: skip
        table.add_section()
    console.print(table)
    print_after_change(done)


def print_after_change(done: list[Case]) -> None:
    table = Table(
        title=f"After a change: the first call, and until it is fresh (polled every "
        f"{POLL_SECONDS} s; target ≤ {TARGET_MS:.0f} ms a call)"
    )
    for column in ("backend", "people", "change → call", "first ms", "stale", "fresh after s",
                   "polls", "poll p50 ms", "poll max ms", "target"):  # fmt: skip
        table.add_column(column, justify="right")

    def verdict(*ms: float) -> str:
        return "met" if max(ms) <= TARGET_MS else "[red]NOT met[/red]"

    def seconds(value: Any) -> str:
        return "never" if value is None else f"{value:.1f}"

    for c in done:
        effect, many, history = c.cold["effect"], c.cold["effectConcurrent"], c.cold["history"]
        rows = [("intervention → effect", effect), ("", many), ("snapshot → transitions", history)]
        for label, r in rows:
            if r is many:
                table.add_row(
                    c.backend, f"{c.users:,}", f"… {COLD_CONCURRENT} callers at once",
                    " / ".join(f"{ms:.1f}" for ms in many["firstMs"]),
                    " / ".join(str(x) for x in many["firstStale"]),
                    " / ".join(seconds(x) for x in many["freshAfterS"]), "", "",
                    f"{many['pollMaxMs']:.1f}", verdict(*many["firstMs"], many["pollMaxMs"]),
                )  # fmt: skip
                continue
            table.add_row(
                c.backend, f"{c.users:,}", label, f"{r['firstMs']:.1f}", str(r["firstStale"]),
                seconds(r["freshAfterS"]), str(r["polls"]), f"{r['pollP50Ms']:.1f}",
                f"{r['pollMaxMs']:.1f}", verdict(r["firstMs"], r["pollMaxMs"]),
            )  # fmt: skip
        table.add_section()
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--cases", default=None, help=f"backend:people,… (default {FULL_CASES})")
    parser.add_argument("--calls", type=int, default=None, help="calls of each (default 50)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CASES}, 10 calls")
    parser.add_argument(
        "--budget", type=float, default=120.0,
        help=f"seconds per call kind; a slower one stops there (after {MIN_CALLS} calls)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    cases_arg = args.cases or (QUICK_CASES if args.quick else FULL_CASES)
    calls = args.calls or (10 if args.quick else 50)
    started = load_average()
    cases: list[Case] = []
    for spec in cases_arg.split(","):
        backend, _, users = spec.partition(":")
        try:
            case = run_case(backend, int(users), calls, args.budget)
        except Exception as exc:  # a server that does not answer, or a failure to report
            console.print_exception()
            case = Case(backend, int(users), status="failed", error=repr(exc)[:500])
        cases.append(case)
        write(args, cases, started, calls)
    print_tables(cases)
    console.print(f"wrote {args.out}")


def write(args: argparse.Namespace, cases: list[Case], started: str, calls: int) -> None:
    from dataclasses import asdict

    document = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "command": " ".join(sys.argv),
        "loadAtStart": started,
        "loadAtEnd": load_average(),
        "code": git_state(),
        "settings": {
            "months": MONTHS,
            "seed": SEED,
            "calls": calls,
            "budgetSecondsPerCall": args.budget,
            "minCalls": MIN_CALLS,
            "effectHorizonMonths": EFFECT_HORIZON,
            "pollSeconds": POLL_SECONDS,
            "freshTimeoutSeconds": FRESH_TIMEOUT,
            "postgresUrl": POSTGRES_URL,
            "dailyJobsDeferred": list(DAILY_JOBS),
        },
        "targetMs": TARGET_MS,
        "results": [asdict(c) for c in cases],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
