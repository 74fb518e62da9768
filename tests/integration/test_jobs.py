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
from tests.integration.workflow import ADMIN, EMPLOYEES, As, sync_engine
from tests.serve import ServeProcess, serve_environment
from treevu.db import AuditLog, JobRun

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
        # Both servers were up for ~6 s: a run every second. A slot may be missed on a loaded
        # machine (the misfire grace is half the interval: the next slot catches up), never
        # two in a row.
        assert len(times) >= 4, times
        gaps = {b - a for a, b in zip(times, times[1:], strict=False)}
        assert gaps <= {timedelta(seconds=1), timedelta(seconds=2)}, (job, times)
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


def test_jobs_list_over_rest_and_trpc(sqlite_database: Database) -> None:
    seed_and_score(sqlite_database, n_users=40)
    with LiveServer(sqlite_database.settings()) as server:
        admin = As(server, sqlite_database, ADMIN)
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
        employee = As(server, sqlite_database, EMPLOYEES[0])
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


def test_treevu_jobs_run_and_list(sqlite_database: Database, tmp_path: Path) -> None:
    seed_and_score(sqlite_database, n_users=40)
    unknown = _treevu(sqlite_database, tmp_path, "jobs", "run", "nope")
    assert unknown.returncode == 2
    assert "no job 'nope'" in unknown.stderr and "tiers.reconcile" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    node_only = _treevu(sqlite_database, tmp_path, "jobs", "run", "pending.sweep")
    assert node_only.returncode == 2 and "every treevu serve process" in node_only.stderr
    assert _runs(sqlite_database) == []
    ran = _treevu(sqlite_database, tmp_path, "jobs", "run", "tiers.reconcile")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("tiers.reconcile: ok")
    (run,) = _runs(sqlite_database)
    assert run[0] == "tiers.reconcile" and run[1].startswith("manual:") and run[3] is True
    listed = _treevu(sqlite_database, tmp_path, "jobs", "list")
    assert listed.returncode == 0
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert "daily at 02:00 UTC" in lines["profiles.refresh"]
    assert "never run" in lines["profiles.refresh"]
    assert 'ok {"checks": 0}' in lines["tiers.reconcile"]
