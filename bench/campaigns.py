"""Campaign sending: one campaign to 100,000 targets at unlimited pace, through the real server,
with 10,000 of them connected; the admin broadcast of the same message to the same people beside
it (the floor).

For each backend (SQLite file in a temporary directory; a throwaway PostgreSQL database on
127.0.0.1:5432, dropped at the end): ``treevu db upgrade``, ``treevu seed --users N`` and
``treevu segment recompute --all`` once into a template, then the largest segment (its active
members, the ``retention`` rule: every member) is the target list — made exactly ``--targets``
long (the seed gives 99,772 of 202,800 users): the missing members are moved into it from the
other segments (lowest ids first), or the surplus out to the next-largest (highest ids first),
before the template is copied. Each of the two runs gets a
fresh copy of that template (SQLite: a copy of the file; PostgreSQL: ``CREATE DATABASE …
TEMPLATE``) and its own ``treevu serve`` with the same settings, so both start equal:

- ``campaign``: connect the connected set (a seeded random sample of the targets, spread over
  the sending order) from 2 receiver processes, then ``POST /api/v1/campaigns`` (``retention``,
  ``pacePerMinute`` = ``TREEVU_ADMIN_NOTIFICATIONS_PER_MINUTE`` = 10⁹: unlimited). The
  ``campaigns.pace`` job (every 0.2 s here, ``TREEVU_JOB_INTERVALS``) starts it (freezes the
  targets into ``campaign_deliveries``) and sends batches of 2,000 through the notification
  store. *All persisted* = the campaign's ``completedAt`` (set right after the last batch
  commits) − the POST; *all received* = the last receipt at the clients − the POST.
- ``broadcast`` (the floor): the same connected set, then ``POST
  /api/v1/admin/notifications/broadcast`` with the same ids (≤ 100,000 per request, sent one
  after the other), type, title, message and data. *All persisted* = the last response − the
  first POST (the answer comes after the commit).

Checks, each run: every target has exactly one new ``notification_queue`` row; every connected
client received exactly one notification, its own, of this campaign (or broadcast); campaign
deliveries all ``sent``. Server CPU per notification (user + system, all threads) is reported
beside each rate: it does not depend on what else the machine runs. Prints a table (campaign,
floor, ratio), writes ``bench/results/campaigns.json``; never fails on a figure (target: all
persisted and all connected received ≤ 10 s on SQLite).

    .venv/bin/python bench/campaigns.py --quick          # 20,000 targets, 2,000 connected
    .venv/bin/python bench/campaigns.py                  # 100,000 targets, 10,000 connected
    .venv/bin/python bench/campaigns.py --backends sqlite --profile /tmp/prof
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, create_engine, func, pool, select, text, update
from sqlalchemy.engine import make_url

from treevu.db import Campaign, CampaignDelivery, EmployeeSegment, NotificationQueue, User
from treevu.services.campaigns.sending import target_filter
from ws_common import (
    BIN,
    ReceiverPool,
    ServerProcess,
    admin_token,
    cpu_seconds,
    free_port,
    git_state,
    load_average,
    prepare_database,
    process_tree_rss_kb,
    raise_fd_limit,
    sync_url,
    treevu,
)

RESULTS: Final = Path(__file__).parent / "results" / "campaigns.json"
POSTGRES_URL: Final = os.environ.get(
    "TREEVU_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432"
)
#: Unlimited pace: the admin limit and the campaign's pace (the pace is the smaller one).
UNLIMITED: Final = 1_000_000_000
PACE_INTERVAL: Final = 0.2
#: Users seeded for the full run: the largest segment holds ~49.3% of them (seed 1), then is
#: made exactly ``FULL_TARGETS`` long.
FULL_USERS: Final = 202_800
FULL_TARGETS: Final = 100_000
QUICK_USERS: Final = 40_600
QUICK_TARGETS: Final = 20_000
TARGET_SECONDS: Final = 10.0
BROADCAST_MAX: Final = 100_000
TITLE: Final = "A small step for your savings"
MESSAGE: Final = (
    "People who set aside a little every payday reach their first emergency-fund milestone "
    "three months sooner. Open the app to pick an amount that suits you."
)
POLL: Final = 0.05

console = Console(width=150)


def epoch_of(value: datetime | str | None) -> float | None:
    """A server timestamp as epoch seconds (naive ones are UTC, as the server writes them)."""
    if value is None:
        return None
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# -- databases ---------------------------------------------------------------------------------


class Template:
    """A seeded database and fresh copies of it, one per run."""

    def __init__(self, kind: str, workdir: Path, users: int, targets: int) -> None:
        self.kind = kind
        self.workdir = workdir / kind
        self.users = users
        self.targets = targets
        self.segment = ""
        self.moved = 0
        self.env: dict[str, str] = {}
        self.copies: list[str] = []  # PostgreSQL databases to drop
        self.name = f"treevu_campbench_{os.getpid()}"
        self.admin: Engine | None = None

    def __enter__(self) -> Template:
        overrides = {
            "TREEVU_ADMIN_NOTIFICATIONS_PER_MINUTE": str(UNLIMITED),
            "TREEVU_JOB_INTERVALS": json.dumps({"campaigns.pace": PACE_INTERVAL}),
        }
        seed_dir = self.workdir / "template"
        started = time.perf_counter()
        if self.kind == "sqlite":
            self.env = prepare_database(seed_dir, self.users, **overrides)
        elif self.kind == "postgresql":
            url = make_url(POSTGRES_URL)
            self.admin = create_engine(
                sync_url(POSTGRES_URL), poolclass=pool.NullPool, isolation_level="AUTOCOMMIT"
            )
            self._drop(self.name)
            with self.admin.connect() as conn:
                conn.execute(text(f"CREATE DATABASE {self.name}"))
            database_url = url.set(database=self.name).render_as_string(hide_password=False)
            self.env = prepare_database(
                seed_dir, self.users, database_url=database_url, **overrides
            )
        else:
            raise SystemExit(f"unknown backend {self.kind!r}: use sqlite or postgresql")
        treevu(self.env, seed_dir, "segment", "recompute", "--all")
        engine = self.engine(self.env)
        self.segment, self.moved = fit_largest_segment(engine, self.targets)
        engine.dispose()
        if self.kind == "postgresql":
            # Fresh statistics in the template, and nothing left for autovacuum to do in it
            # (an autovacuum worker connected to it would refuse CREATE DATABASE … TEMPLATE).
            engine = self.engine(self.env)
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE"))
            engine.dispose()
        self.seed_seconds = time.perf_counter() - started
        return self

    def engine(self, env: dict[str, str]) -> Engine:
        return create_engine(sync_url(env["TREEVU_DATABASE_URL"]), poolclass=pool.NullPool)

    def _drop(self, name: str) -> None:
        assert self.admin is not None
        with self.admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))

    def copy(self, label: str) -> dict[str, str]:
        """The environment of a fresh copy of the seeded database."""
        run_dir = self.workdir / label
        run_dir.mkdir(parents=True, exist_ok=True)
        if self.kind == "sqlite":
            source = self.env["TREEVU_DATABASE_URL"].split(":///", 1)[1]
            with contextlib.closing(sqlite3.connect(source)) as db:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            target = run_dir / "bench.db"
            shutil.copyfile(source, target)
            return {**self.env, "TREEVU_DATABASE_URL": f"sqlite+aiosqlite:///{target}"}
        assert self.admin is not None
        name = f"{self.name}_{label}"
        self._drop(name)
        self.copies.append(name)
        for attempt in range(30):
            try:
                with self.admin.connect() as conn:
                    conn.execute(text(f"CREATE DATABASE {name} TEMPLATE {self.name}"))
                break
            except Exception:  # the template is busy (autovacuum): try again
                if attempt == 29:
                    raise
                time.sleep(1)
        url = make_url(self.env["TREEVU_DATABASE_URL"]).set(database=name)
        return {**self.env, "TREEVU_DATABASE_URL": url.render_as_string(hide_password=False)}

    def __exit__(self, *exc: object) -> None:
        if self.admin is not None:
            for name in [*self.copies, self.name]:
                with contextlib.suppress(Exception):
                    self._drop(name)
            self.admin.dispose()


def fit_largest_segment(engine: Engine, targets: int) -> tuple[str, int]:
    """Make the largest segment hold exactly ``targets`` active members: move the missing ones
    in from the other segments (lowest ids first) or the surplus out to the next-largest
    segment (highest ids first); the segment, and how many were moved in (< 0: out)."""
    s = EmployeeSegment
    with engine.begin() as conn:
        counts = {
            str(seg): int(n)
            for seg, n in conn.execute(
                select(s.segment, func.count())
                .join(User, User.id == s.user_id)
                .where(User.is_active.is_(True))
                .group_by(s.segment)
            )
        }
        ranked = sorted(counts, key=lambda seg: counts[seg], reverse=True)
        segment, have = ranked[0], counts[ranked[0]]
        if have == targets:
            return segment, 0
        active = (s.user_id == User.id) & User.is_active.is_(True)
        if have > targets:
            ids = conn.scalars(
                select(s.user_id).join(User, active).where(s.segment == segment)
                .order_by(s.user_id.desc()).limit(have - targets)
            ).all()  # fmt: skip
            to = ranked[1]
        else:
            ids = conn.scalars(
                select(s.user_id).join(User, active).where(s.segment != segment)
                .order_by(s.user_id).limit(targets - have)
            ).all()  # fmt: skip
            to = segment
        if len(ids) != abs(have - targets):
            raise SystemExit(f"cannot make {segment} {targets:,} long: seed more users")
        for start in range(0, len(ids), 5000):
            conn.execute(
                update(s).where(s.user_id.in_(ids[start : start + 5000])).values(segment=to)
            )
    return segment, targets - have


def pick_targets(engine: Engine, segment: str) -> list[int]:
    """The members of ``segment`` as a ``retention`` campaign targets them."""
    with engine.connect() as conn:
        return [
            int(uid)
            for uid in conn.scalars(
                select(EmployeeSegment.user_id)
                .join(User, User.id == EmployeeSegment.user_id)
                .where(*target_filter(segment, "retention"))
            )
        ]


def max_notification_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.max(NotificationQueue.id))) or 0)


# -- one run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    kind: str
    segment: str
    targets: list[int]
    connected: list[int]
    client_processes: int
    timeout: float
    idle_timeout: float
    settle: float
    profile_dir: Path | None


@contextlib.contextmanager
def profiled(plan: Plan, server: ServerProcess, label: str) -> Iterator[None]:
    """``py-spy record`` of the server while the block runs (with ``--profile DIR``)."""
    if plan.profile_dir is None:
        yield
        return
    plan.profile_dir.mkdir(parents=True, exist_ok=True)
    out = plan.profile_dir / f"{plan.kind}-{label}.txt"
    spy = subprocess.Popen(
        [str(BIN / "py-spy"), "record", "--pid", str(server.pid), "--rate", "100"]
        + ["--format", "raw", "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)  # attached before the POST
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(timeout=60)
        console.print(f"  profile: {out}")


def wait_until(
    pool: ReceiverPool,
    expected: int,
    persisted: Callable[[], str | None],
    started: float,
    plan: Plan,
) -> dict[str, Any]:
    """Poll the receivers and ``persisted`` (a state; None once everything is persisted) until
    both are done, nothing moved for ``idle_timeout`` s, or ``timeout`` s passed. Epoch times."""
    persisted_at: float | None = None
    received_at: float | None = None
    seen: dict[str, float] = {}
    last: tuple[int, str | None] = (-1, "")
    last_change = time.monotonic()
    received = 0
    while True:
        if persisted_at is None:
            state = persisted()
            seen.setdefault(str(state), time.time())
            if state is None:
                persisted_at = time.time()
        else:
            state = None
        received = pool.count()["received"]
        if received_at is None and received >= expected:
            received_at = time.time()
        if persisted_at is not None and received_at is not None:
            break
        if (received, state) != last:
            last, last_change = (received, state), time.monotonic()
        elif time.monotonic() - last_change > plan.idle_timeout:
            console.print(f"  [red]no progress for {plan.idle_timeout:.0f} s[/red]: giving up")
            break
        if time.time() - started > plan.timeout:
            console.print(f"  [red]timeout after {plan.timeout:.0f} s[/red]")
            break
        time.sleep(POLL)
    return {"persistedSeen": persisted_at, "receivedSeen": received_at, "states": seen}


def run_campaign(
    plan: Plan, http: httpx.Client, engine: Engine, pool: ReceiverPool, expected: int
) -> dict[str, Any]:
    body = {
        "name": f"bench {plan.kind}",
        "segment": plan.segment,
        "campaignType": "retention",
        "title": TITLE,
        "message": MESSAGE,
        "pacePerMinute": UNLIMITED,
    }
    started = time.time()
    response = http.post("/api/v1/campaigns", json=body)
    answered = time.time()
    if response.status_code != 201:
        raise RuntimeError(f"POST /api/v1/campaigns: {response.status_code} {response.text}")
    cid = int(response.json()["id"])

    def status() -> str | None:
        with engine.connect() as conn:
            value = conn.scalar(select(Campaign.status).where(Campaign.id == cid))
        return None if value == "completed" else str(value)

    seen = wait_until(pool, expected, status, started, plan)
    got = http.get(f"/api/v1/campaigns/{cid}").json()
    d = CampaignDelivery
    with engine.connect() as conn:
        by_status = {
            str(s): int(n)
            for s, n in conn.execute(
                select(d.status, func.count()).where(d.campaign_id == cid).group_by(d.status)
            )
        }
        first_batch = conn.scalar(select(func.min(d.sent_at)).where(d.campaign_id == cid))
        last_batch = conn.scalar(select(func.max(d.sent_at)).where(d.campaign_id == cid))
        ids = {
            int(nid)
            for nid in conn.scalars(
                select(d.notification_id).where(d.campaign_id == cid, d.status == "sent")
            )
            if nid is not None
        }
    started_at = epoch_of(got.get("startedAt"))
    completed_at = epoch_of(got.get("completedAt"))
    first = epoch_of(first_batch)
    return {
        "campaignId": cid,
        "started": started,
        "postSeconds": round(answered - started, 4),
        "persistedAt": completed_at if completed_at is not None else seen["persistedSeen"],
        "persistedSeenSeconds": rounded(
            None if seen["persistedSeen"] is None else seen["persistedSeen"] - started
        ),
        "receivedSeen": seen["receivedSeen"],
        "campaign": {
            "status": got.get("status"),
            "targeted": got.get("targeted"),
            "sent": got.get("sent"),
            "deliveriesByStatus": by_status,
            "distinctNotificationIds": len(ids),
        },
        "phases": {
            "postToRunningSeconds": rounded(None if started_at is None else started_at - started),
            # The first batch's clock (its sentAt) minus the start: the targets' freeze.
            "freezeSeconds": rounded(
                None if first is None or started_at is None else first - started_at
            ),
            "sendingSeconds": rounded(
                None if first is None or completed_at is None else completed_at - first
            ),
            "lastBatchStartSeconds": rounded(
                None if last_batch is None else (epoch_of(last_batch) or 0.0) - started
            ),
            "batches": -(-len(ids) // 2000),
        },
        "ids": ids,
    }


def run_broadcast(
    plan: Plan, http: httpx.Client, pool: ReceiverPool, expected: int, data: dict[str, Any]
) -> dict[str, Any]:
    started = time.time()
    created: list[int] = []
    muted = 0
    requests = []
    for start in range(0, len(plan.targets), BROADCAST_MAX):
        body = {
            "userIds": plan.targets[start : start + BROADCAST_MAX],
            "type": "recommendation",
            "title": TITLE,
            "message": MESSAGE,
            "data": data,
        }
        sent = time.time()
        response = http.post("/api/v1/admin/notifications/broadcast", json=body)
        if response.status_code != 201:
            raise RuntimeError(f"broadcast: {response.status_code} {response.text[:300]}")
        created.extend(int(i) for i in response.json()["ids"])
        muted += int(response.json()["muted"])
        requests.append(round(time.time() - sent, 4))
    persisted_at = time.time()
    seen = wait_until(pool, expected, lambda: None, started, plan)
    return {
        "started": started,
        "persistedAt": persisted_at,
        "receivedSeen": seen["receivedSeen"],
        "requestSeconds": requests,
        "muted": muted,
        "ids": set(created),
    }


def run_one(mode: str, plan: Plan, env: dict[str, str], workdir: Path) -> dict[str, Any]:
    """A fresh server on ``env``'s database, the connected set, then ``mode``."""
    engine = create_engine(sync_url(env["TREEVU_DATABASE_URL"]), poolclass=pool.NullPool)
    before = max_notification_id(engine)
    port = free_port()
    argv = [str(BIN / "treevu"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    log = workdir / f"server-{mode}.log"
    result: dict[str, Any] = {"mode": mode}
    with (
        ServerProcess(argv, env, port, log) as server,
        ReceiverPool(
            f"ws://127.0.0.1:{port}/ws",
            plan.connected,
            processes=plan.client_processes,
            compression=True,
        ) as clients,
        httpx.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {admin_token()}"},
            timeout=600,
        ) as http,
    ):
        connected = clients.connect()
        console.print(
            f"  {mode}: {connected['welcomed']:,} connected in {connected['seconds']:.1f}s "
            f"({connected['failed']} failed {connected['failures']})"
        )
        time.sleep(plan.settle)  # the openings' tail (sent marks, presence) first
        clients.records()
        expected = int(connected["welcomed"])
        load_before = load_average()
        cpu_server = cpu_seconds([server.pid])
        cpu_clients = cpu_seconds(clients.pids)
        with profiled(plan, server, mode):
            if mode == "campaign":
                run = run_campaign(plan, http, engine, clients, expected)
            else:
                data = {"campaignId": 1, "variant": 0}  # what the campaign's frames carry
                run = run_broadcast(plan, http, clients, expected, data)
            done = time.time()
            cpu_server = cpu_seconds([server.pid]) - cpu_server
            cpu_clients = cpu_seconds(clients.pids) - cpu_clients
        load_after = load_average()
        time.sleep(1.0)  # late duplicates, and the sent marks (flushed every 50 ms)
        counts = clients.count()
        records = clients.records()
        rss_mb = round(sum(process_tree_rss_kb(server.pid).values()) / 1024)
    result.update(connectedSockets=connected)

    # -- the store and what the clients got
    with engine.connect() as conn:
        rows = conn.execute(
            select(NotificationQueue.id, NotificationQueue.user_id, NotificationQueue.status).where(
                NotificationQueue.id > before
            )
        ).all()
    engine.dispose()
    owner = {int(nid): int(uid) for nid, uid, _ in rows}
    by_status = collections.Counter(str(s) for _, _, s in rows)
    per_user = collections.Counter(owner.values())
    targets = set(plan.targets)
    ours: set[int] = run.pop("ids")
    received_ids = [r[0] for r in records]
    received_users = collections.Counter(owner.get(nid, -1) for nid in received_ids)
    connected_set = set(plan.connected)
    missing = sum(1 for u in connected_set if received_users.get(u, 0) == 0)
    twice = sum(1 for u in connected_set if received_users.get(u, 0) > 1)
    foreign = sum(1 for nid in received_ids if nid not in ours or owner.get(nid) not in targets)
    not_connected = sum(1 for u in received_users if u not in connected_set)
    rows_ok = (
        len(rows) == len(targets)
        and set(per_user) == targets
        and max(per_user.values(), default=0) == 1
    )
    exactly_once = len(records) == len(connected_set) and not (
        missing or twice or foreign or not_connected
    )
    started = float(run.pop("started"))
    persisted_at = run.pop("persistedAt")
    received_at = max((r[1] for r in records), default=None)
    first_receipt = min((r[1] for r in records), default=None)
    persisted = None if persisted_at is None else persisted_at - started
    received = None if received_at is None or missing else received_at - started
    all_done = None if persisted is None or received is None else max(persisted, received)
    result.update(
        run,
        targets=len(targets),
        connected=len(connected_set),
        persistedSeconds=rounded(persisted),
        receivedSeconds=rounded(received),
        allDoneSeconds=rounded(all_done),
        firstReceiptSeconds=rounded(None if first_receipt is None else first_receipt - started),
        persistedPerSecond=round(len(rows) / persisted) if persisted else None,
        serverCpuSeconds=round(cpu_server, 2),
        serverCpuPercent=round(100 * cpu_server / max(done - started, 1e-9)),
        serverCpuUsPerNotification=round(1e6 * cpu_server / max(len(rows), 1), 1),
        clientCpuPercent=round(100 * cpu_clients / max(done - started, 1e-9)),
        serverRssMb=rss_mb,
        load={"before": load_before, "after": load_after},
        check={
            "notificationRows": len(rows),
            "rowsByStatus": dict(by_status),
            "usersWithRows": len(per_user),
            "rowsEqualTargets": rows_ok,
            "received": len(records),
            "receivedCounted": counts["received"],
            "connectionsNotified": counts["connectionsNotified"],
            "connectedWithout": missing,
            "connectedTwice": twice,
            "foreign": foreign,
            "toUnconnected": not_connected,
            "exactlyOnePerConnected": exactly_once,
        },
    )
    console.print(
        f"  {mode}: {len(rows):,} rows for {len(targets):,} targets; persisted "
        f"{result['persistedSeconds']} s, received {result['receivedSeconds']} s "
        f"({len(records):,}/{len(connected_set):,}; exactly once: {exactly_once}); server CPU "
        f"{result['serverCpuPercent']}% ({result['serverCpuUsPerNotification']} µs/notification)"
        f"; load {load_before} → {load_after}"
    )
    return result


def run_backend(kind: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    console.print(f"[bold]{kind}[/bold]: seeding {args.users:,} users …")
    with Template(kind, workdir, args.users, args.targets) as template:
        engine = template.engine(template.env)
        segment = template.segment
        members = pick_targets(engine, segment)
        engine.dispose()
        if len(members) != args.targets:
            raise SystemExit(f"{len(members):,} targets, not {args.targets:,}")
        connected = sorted(random.Random(1).sample(members, min(args.connected, len(members))))
        console.print(
            f"  seeded in {template.seed_seconds:.1f}s; segment {segment}: "
            f"{len(members):,} targets ({template.moved:+,} moved in), "
            f"{len(connected):,} connected"
        )
        plan = Plan(
            kind,
            segment,
            sorted(members),
            connected,
            args.client_processes,
            args.timeout,
            args.idle_timeout,
            args.settle,
            args.profile,
        )
        out: dict[str, Any] = {
            "backend": kind,
            "users": args.users,
            "segment": segment,
            "targets": len(members),
            "membersMovedIn": template.moved,
            "connected": len(connected),
            "seedSeconds": round(template.seed_seconds, 1),
        }
        for mode in ("campaign", "broadcast"):
            env = template.copy(mode)
            out[mode] = run_one(mode, plan, env, template.workdir / mode)
            time.sleep(args.settle)
    campaign, floor = out["campaign"], out["broadcast"]
    out["ratios"] = {
        key: ratio(campaign.get(key), floor.get(key))
        for key in (
            "persistedSeconds",
            "receivedSeconds",
            "allDoneSeconds",
            "persistedPerSecond",
            "serverCpuUsPerNotification",
        )
    }
    done = campaign.get("allDoneSeconds")
    out["target"] = {
        "seconds": TARGET_SECONDS,
        "appliesTo": "sqlite",
        "met": done is not None and done <= TARGET_SECONDS and campaign["check"]["rowsEqualTargets"]
        and campaign["check"]["exactlyOnePerConnected"],
    }  # fmt: skip
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 2)


# -- report ------------------------------------------------------------------------------------


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.2f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value}{unit}"


def print_table(results: list[dict[str, Any]]) -> None:
    table = Table(
        title="Campaign to the largest segment, unlimited pace, vs. the same broadcast (the floor)"
    )
    for col in ("backend", "figure"):
        table.add_column(col)
    for col in ("campaign", "broadcast (floor)", "ratio"):
        table.add_column(col, justify="right")
    table.add_column("note")
    for r in results:
        c, f, q = r["campaign"], r["broadcast"], r["ratios"]
        target = r["target"]
        met = "met" if target["met"] else "NOT met"
        note = (
            f"target ≤ {TARGET_SECONDS:.0f} s on SQLite: {met}" if r["backend"] == "sqlite" else ""
        )
        ph = c["phases"]
        rows = [
            ("targets / connected", f"{c['targets']:,} / {c['connected']:,}",
             f"{f['targets']:,} / {f['connected']:,}", "", f"segment {r['segment']}"),
            ("POST → all persisted + all received", fmt(c["allDoneSeconds"], " s"),
             fmt(f["allDoneSeconds"], " s"), fmt(q["allDoneSeconds"], "×"), note),
            ("POST → all persisted", fmt(c["persistedSeconds"], " s"),
             fmt(f["persistedSeconds"], " s"), fmt(q["persistedSeconds"], "×"),
             "campaign: completedAt; floor: last response"),
            ("POST → all connected received", fmt(c["receivedSeconds"], " s"),
             fmt(f["receivedSeconds"], " s"), fmt(q["receivedSeconds"], "×"), ""),
            ("POST → first received", fmt(c["firstReceiptSeconds"], " s"),
             fmt(f["firstReceiptSeconds"], " s"), "", ""),
            ("persisted notifications/s", fmt(c["persistedPerSecond"]),
             fmt(f["persistedPerSecond"]), fmt(q["persistedPerSecond"], "×"), ""),
            ("server CPU per notification", fmt(c["serverCpuUsPerNotification"], " µs"),
             fmt(f["serverCpuUsPerNotification"], " µs"),
             fmt(q["serverCpuUsPerNotification"], "×"),
             f"server CPU {c['serverCpuPercent']}% / {f['serverCpuPercent']}% of a core"),
            ("  campaign: POST → running", fmt(ph["postToRunningSeconds"], " s"), "", "",
             f"job every {PACE_INTERVAL} s"),
            ("  campaign: freeze targets", fmt(ph["freezeSeconds"], " s"), "", "",
             "running → first batch"),
            ("  campaign: send batches", fmt(ph["sendingSeconds"], " s"), "", "",
             f"{ph['batches']} batches of ≤ 2,000"),
            ("rows = targets, one each", fmt(c["check"]["rowsEqualTargets"]),
             fmt(f["check"]["rowsEqualTargets"]), "",
             f"{c['check']['notificationRows']:,} / {f['check']['notificationRows']:,} rows"),
            ("each connected got exactly one", fmt(c["check"]["exactlyOnePerConnected"]),
             fmt(f["check"]["exactlyOnePerConnected"]), "",
             f"received {c['check']['received']:,} / {f['check']['received']:,}"),
            ("load average before", c["load"]["before"], f["load"]["before"], "", ""),
        ]  # fmt: skip
        for row in rows:
            table.add_row(r["backend"], *row)
        table.add_section()
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--users", type=int, default=None, help="seeded users (default: ~2× targets)"
    )
    parser.add_argument("--targets", type=int, default=None, help="targets (default 100,000)")
    parser.add_argument("--connected", type=int, default=None, help="connected targets")
    parser.add_argument("--quick", action="store_true", help="20,000 targets, 2,000 connected")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds before a run")
    parser.add_argument("--timeout", type=float, default=900, help="give up a run after (s)")
    parser.add_argument("--idle-timeout", type=float, default=120, help="… or after (s) idle")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy the server into DIR")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here")
    args = parser.parse_args()
    if args.users is None:
        args.users = QUICK_USERS if args.quick else FULL_USERS
    if args.targets is None:
        args.targets = QUICK_TARGETS if args.quick else FULL_TARGETS
    if args.connected is None:
        args.connected = 2_000 if args.quick else 10_000
    fds = raise_fd_limit()
    started = load_average()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="treevu-campaigns-") as tmp:
        workdir = args.workdir or Path(tmp)
        for kind in args.backends.split(","):
            results.append(run_backend(kind, args, workdir))
    print_table(results)
    document = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "fdLimit": fds,
        "command": " ".join(sys.argv),
        "loadAtStart": started,
        "loadAtEnd": load_average(),
        "code": git_state(),
        "settings": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "adminNotificationsPerMinute": UNLIMITED,
            "pacePerMinute": UNLIMITED,
            "paceJobIntervalSeconds": PACE_INTERVAL,
            "campaignType": "retention",
            "broadcastIdsPerRequest": BROADCAST_MAX,
            "seed": 1,
            "postgresUrl": POSTGRES_URL,
        },
        "targetSeconds": TARGET_SECONDS,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
