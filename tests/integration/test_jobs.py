"""Scheduled jobs (SPEC §9 Jobs): two real ``treevu serve`` processes share one database and
each run of a cluster job happens exactly once; ``jobs.list`` and ``treevu jobs``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from tests.conftest import Database, LiveServer, seed_and_score
from tests.integration.test_rewards import RICH
from tests.integration.workflow import (
    ADMIN,
    EMPLOYEES,
    As,
    nothing_more,
    notifications,
    rows,
    sync_engine,
)
from tests.serve import ServeProcess, serve_environment
from treevu.db import AuditLog, EmployeeSegment, JobRun

FAST = json.dumps({"presence.cleanup": 1, "tiers.reconcile": 1})


def _runs(db: Database) -> list[tuple[str, str, str, bool | None]]:
    engine = sync_engine(db)
    try:
        with engine.connect() as conn:
            return [
                (job, slot, node, ok)
                for job, slot, node, ok in conn.execute(
                    select(JobRun.job, JobRun.slot, JobRun.node, JobRun.ok)
                ).all()
            ]
    finally:
        engine.dispose()


def test_two_servers_run_each_slot_of_a_cluster_job_exactly_once(
    database: Database, tmp_path: Path
) -> None:
    seed_and_score(database, n_users=40)
    env = {"TREEVU_JOB_INTERVALS": FAST}
    a = ServeProcess(database, tmp_path, env=env)
    try:
        b = ServeProcess(database, tmp_path, env=env)
        try:
            time.sleep(6)
        finally:
            b.stop()
    finally:
        a.stop()
    runs = [r for r in _runs(database) if r[0] in ("presence.cleanup", "tiers.reconcile")]
    slots = Counter((job, slot) for job, slot, _, _ in runs)
    assert slots and max(slots.values()) == 1  # the unique key: never twice
    for job in ("presence.cleanup", "tiers.reconcile"):
        times = sorted(
            datetime.fromisoformat(slot.replace("Z", "+00:00")) for j, slot in slots if j == job
        )
        # Both servers were up for ~6 s: a run every second. A slot is missed when an event
        # loop stalls past the misfire grace (half the interval) on a loaded machine — by
        # design: the next slot catches up. Every run is on a slot of the epoch's grid.
        assert len(times) >= 4, times
        gaps = {b - a for a, b in zip(times, times[1:], strict=False)}
        assert all(g >= timedelta(seconds=1) and g % timedelta(seconds=1) == timedelta(0)
                   for g in gaps), (job, times)  # fmt: skip
    # A stopped server lets its runs in flight finish (SIGTERM): none is left half-done.
    assert all(ok for *_, ok in runs), [r for r in runs if not r[3]]
    engine = sync_engine(database)
    try:
        with engine.connect() as conn:
            audited = conn.execute(
                select(AuditLog.target, AuditLog.detail).where(AuditLog.action == "job.run")
            ).all()
    finally:
        engine.dispose()
    # Every run that did something is audited once (tiers.reconcile reports its count each
    # time); runs with nothing to do (presence.cleanup, usually) are in job_runs only.
    reconciled = Counter(s for j, s in slots if j == "tiers.reconcile")
    assert Counter(d["slot"] for t, d in audited if t == "job:tiers.reconcile") == reconciled
    assert not [d for t, d in audited if t == "job:campaigns.pace"]  # idle: no campaign


def test_jobs_list_over_rest_and_trpc(database: Database) -> None:
    seed_and_score(database, n_users=40)
    with LiveServer(database.settings()) as server:
        admin = As(server, database, ADMIN)
        jobs = admin.get("/api/v1/jobs").json()
        by_name = {j["name"]: j for j in jobs}
        assert set(by_name) == {
            "tiers.reconcile", "profiles.refresh", "presence.cleanup", "campaigns.pace",
            "jobs.prune", "stats.refresh", "pending.sweep", "history.snapshot",
        }  # fmt: skip
        assert by_name["tiers.reconcile"]["schedule"] == "daily at 03:00 UTC"
        assert by_name["profiles.refresh"]["schedule"] == "daily at 02:00 UTC"
        assert by_name["history.snapshot"]["schedule"] == "daily at 02:30 UTC"
        assert by_name["stats.refresh"]["scope"] == "node"
        assert by_name["tiers.reconcile"]["nextRun"].endswith("03:00:00Z")
        assert admin.trpc("jobs.list", {}).status_code == 405  # a query: GET
        trpc = admin.request("GET", "/trpc/jobs.list").json()["result"]["data"]
        assert [j["name"] for j in trpc] == [j["name"] for j in jobs]
        employee = As(server, database, EMPLOYEES[0])
        assert employee.get("/api/v1/jobs").status_code == 403


def _treevu(db: Database, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "treevu", *args],
        env=serve_environment(db, tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_treevu_jobs_run_and_list(database: Database, tmp_path: Path) -> None:
    seed_and_score(database, n_users=40)
    unknown = _treevu(database, tmp_path, "jobs", "run", "nope")
    assert unknown.returncode == 2
    assert "no job 'nope'" in unknown.stderr and "tiers.reconcile" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    node_only = _treevu(database, tmp_path, "jobs", "run", "pending.sweep")
    assert node_only.returncode == 2 and "every treevu serve process" in node_only.stderr
    assert _runs(database) == []
    ran = _treevu(database, tmp_path, "jobs", "run", "tiers.reconcile")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("tiers.reconcile: ok")
    (run,) = _runs(database)
    assert run[0] == "tiers.reconcile" and run[1].startswith("manual:") and run[3] is True
    listed = _treevu(database, tmp_path, "jobs", "list")
    assert listed.returncode == 0
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert "daily at 02:00 UTC" in lines["profiles.refresh"]
    assert "never run" in lines["profiles.refresh"]
    assert 'ok {"checks": 0}' in lines["tiers.reconcile"]


async def test_the_nightly_refresh_picks_up_inputs_imported_without_a_recompute(
    live: LiveServer, seeded: Database, tmp_path: Path
) -> None:
    """``treevu import inputs --no-recompute`` leaves the profile as it was; the
    ``profiles.refresh`` job (run by ``treevu jobs run``, another process) recomputes it, and
    the server's relay tells the person on their socket."""
    uid, fwi_before = next(
        (int(u), float(f))
        for u, f in rows(
            seeded,
            select(EmployeeSegment.user_id, EmployeeSegment.fwi_score)
            .where(EmployeeSegment.segment == "at_risk", EmployeeSegment.user_id.in_(EMPLOYEES))
            .order_by(EmployeeSegment.user_id),
        )
    )
    me = As(live, seeded, uid)
    ws = await me.socket()
    csv = tmp_path / "inputs.csv"
    csv.write_text(
        ",".join(["userId", *RICH]) + "\n"
        + ",".join([str(uid), *("" if v is None else str(v) for v in RICH.values())]) + "\n"
    )  # fmt: skip
    imported = _treevu(seeded, tmp_path, "import", "inputs", str(csv), "--no-recompute")
    assert imported.returncode == 0, imported.stderr
    assert "recomputed" not in imported.stdout
    assert me.get(f"/api/v1/employees/{uid}/profile").json()["segment"] == "at_risk"
    await nothing_more(ws)

    ran = _treevu(seeded, tmp_path, "jobs", "run", "profiles.refresh")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("profiles.refresh: ok"), ran.stdout
    profile = me.get(f"/api/v1/employees/{uid}/profile").json()
    assert profile["segment"] == "rising_stars"
    crossed = [t for t in (50, 65, 80) if fwi_before < t <= profile["fwiScore"]]
    got = await notifications(ws, 1 + len(crossed))
    (moved,) = [n for n in got if n["type"] == "recommendation"]
    best = me.get(f"/api/v1/employees/{uid}/recommendations?limit=1").json()[0]
    assert moved["title"] == "You're a Rising Star!"
    assert moved["data"] == {
        "fromSegment": "at_risk",
        "toSegment": "rising_stars",
        "recommendationId": best["id"],
        "category": best["category"],
    }
    assert sorted(n["data"]["threshold"] for n in got if n["type"] == "milestone") == crossed
    (run,) = [r for r in _runs(seeded) if r[0] == "profiles.refresh"]
    assert run[1].startswith("manual:") and run[3] is True

    # Nothing new: the next night changes nothing and tells nobody.
    again = _treevu(seeded, tmp_path, "jobs", "run", "profiles.refresh")
    assert again.returncode == 0, again.stderr
    assert '"segmentChanges": 0' in " ".join(again.stdout.split()), again.stdout
    await nothing_more(ws)
    await ws.close()
