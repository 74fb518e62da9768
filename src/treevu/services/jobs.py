"""Scheduled jobs (SPEC §9 Jobs) on APScheduler, owned by the app's lifespan.

Why APScheduler (3.x, ``AsyncIOScheduler``): the jobs are few, short and already async, and
run inside ``treevu serve``; APScheduler gives triggers, coalescing and misfire handling in
process with no extra service. arq or saq would add a Redis-backed worker that the embedded
SQLite setup (no Redis) could not run. Exactly-once across nodes does not come from the
scheduler but from the database, which every node shares whatever the setup:

- **cluster** jobs run once per *slot* — the scheduled time, the same on every node because
  every trigger is an interval aligned to a fixed epoch (a daily job at 03:00 UTC is every
  24 h from 2000-01-01 03:00 UTC). Before running, a node inserts ``(job, slot)`` into
  ``job_runs``; the unique key lets exactly one insert win, and the others skip that slot.
  The winner records when it finished, whether it succeeded and what it did, and audits it.
- **node** jobs serve the node itself and run on every node: the pending sweep delivers to this
  node's sockets, the statistics refresh warms this process's cache.

``treevu jobs run NAME`` runs a cluster job at once under a ``manual:…`` slot.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

import anyio
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from treevu.db import AuditLog, JobRun
from treevu.services.campaigns.sending import pace_all
from treevu.services.context import Actor, Services
from treevu.services.errors import ServiceError, retry_deadlocks
from treevu.services.notifications.presence import Presence, new_node_id
from treevu.services.rewards.achievements import checks_due
from treevu.services.segmentation import queries

if TYPE_CHECKING:
    from treevu.services.notifications.node import Realtime

log = logging.getLogger(__name__)

Scope = Literal["cluster", "node"]
#: Every trigger counts from here, so that all nodes agree on each slot.
EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)
DAY: Final = 86_400.0


@dataclass(frozen=True, slots=True)
class JobContext:
    svc: Services
    #: The server's realtime side; None in the CLI.
    realtime: Realtime | None
    node: str


JobFn = Callable[[JobContext], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    description: str
    scope: Scope
    every: float  # seconds
    offset: float  # seconds after the epoch of the first slot
    run: JobFn

    @property
    def schedule(self) -> str:
        if self.every % DAY == 0 and self.every >= DAY:
            hours, rest = divmod(int(self.offset % DAY), 3600)
            return f"daily at {hours:02d}:{rest // 60:02d} UTC"
        if self.every % 3600 == 0:
            return f"every {int(self.every // 3600)} h"
        return f"every {self.every:g} s"

    def trigger(self) -> IntervalTrigger:
        return IntervalTrigger(
            seconds=self.every, start_date=EPOCH + timedelta(seconds=self.offset), timezone=UTC
        )

    def slot(self, now: datetime) -> datetime:
        """The scheduled time of the run due at ``now`` (the latest slot not after it)."""
        first = EPOCH + timedelta(seconds=self.offset)
        done = (now - first).total_seconds() // self.every
        return first + timedelta(seconds=done * self.every)

    def next_run(self, now: datetime) -> datetime:
        return self.slot(now) + timedelta(seconds=self.every)


# -- the jobs -----------------------------------------------------------------------------------


async def _reconcile_tiers(ctx: JobContext) -> dict[str, Any]:
    """Tiers and level milestones an event missed (points changed by an import, say)."""

    async def transaction() -> int:
        async with ctx.svc.sessions() as session:
            written = await session.execute(checks_due(ctx.svc.clock()))
            await session.commit()
        return int(written.rowcount or 0)  # type: ignore[attr-defined]

    checks = await retry_deadlocks(transaction)
    ctx.svc.relay.wake()
    return {"checks": checks}


async def _refresh_profiles(ctx: JobContext) -> dict[str, Any]:
    """``recompute --all``: segment changes and FWI milestones go out through the outbox."""
    result = await queries.run_recompute(ctx.svc, None)
    return {
        "scored": result.scored,
        "written": result.written,
        "segmentChanges": len(result.segment_changes),
    }


async def _refresh_statistics(ctx: JobContext) -> dict[str, Any]:
    """Recompute the admin statistics into this process's cache (the old values are served
    until the new ones are in)."""
    return {"warmed": await queries.warm_statistics(ctx.svc)}


async def _clean_presence(ctx: JobContext) -> dict[str, Any]:
    """Connection rows of nodes that stopped heartbeating (died, or were killed)."""
    svc = ctx.svc
    presence = ctx.realtime.presence if ctx.realtime else Presence(svc.sessions, svc.clock, "")
    stale = timedelta(seconds=3 * svc.settings.heartbeat_interval)
    removed = await presence.remove_dead_nodes(stale)
    return {"removed": removed} if removed else {"removed": 0, "idle": True}


async def _pace_campaigns(ctx: JobContext) -> dict[str, Any]:
    """Start scheduled campaigns that are due and send what each one's pace allows."""
    return await pace_all(ctx.svc)


async def _snapshot_history(ctx: JobContext) -> dict[str, Any]:
    """This month's profile snapshots, then every analytics answer computed afresh."""
    from treevu.services.analytics import store

    svc = ctx.svc

    def work() -> int:
        now = svc.clock()
        written = store.take_snapshot(svc.bulk_engine, date(now.year, now.month, 1), now)
        store.refresh_in_process(svc.settings)
        return written

    return {"snapshots": await anyio.to_thread.run_sync(work)}


async def _prune_runs(ctx: JobContext) -> dict[str, Any]:
    """Forget job runs older than 30 days (the audit log keeps what was audited)."""
    cutoff = ctx.svc.clock() - timedelta(days=30)
    async with ctx.svc.sessions() as session:
        gone = await session.execute(delete(JobRun).where(JobRun.started_at < cutoff))
        await session.commit()
    return {"removed": int(gone.rowcount or 0)}  # type: ignore[attr-defined]


async def _sweep(ctx: JobContext) -> dict[str, Any]:
    """Deliver rows still ``pending`` (their publish was lost) to this node's sockets."""
    assert ctx.realtime is not None
    await ctx.realtime.sweep()
    return {}


def job_table(settings: Any) -> dict[str, Job]:
    """Every job, with its schedule; ``TREEVU_JOB_INTERVALS`` overrides intervals by name."""
    jobs = [
        Job("tiers.reconcile", _reconcile_tiers.__doc__ or "", "cluster", DAY, 3 * 3600,
            _reconcile_tiers),
        Job("profiles.refresh", _refresh_profiles.__doc__ or "", "cluster", DAY, 2 * 3600,
            _refresh_profiles),
        Job("presence.cleanup", _clean_presence.__doc__ or "", "cluster",
            settings.heartbeat_interval, 0, _clean_presence),
        Job("campaigns.pace", _pace_campaigns.__doc__ or "", "cluster", 1, 0, _pace_campaigns),
        Job("history.snapshot", _snapshot_history.__doc__ or "", "cluster", DAY, 2 * 3600 + 1800,
            _snapshot_history),
        Job("jobs.prune", _prune_runs.__doc__ or "", "cluster", DAY, 4 * 3600, _prune_runs),
        Job("stats.refresh", _refresh_statistics.__doc__ or "", "node", 3600, 0,
            _refresh_statistics),
        Job("pending.sweep", _sweep.__doc__ or "", "node", settings.sweep_interval, 0, _sweep),
    ]  # fmt: skip
    table = {job.name: job for job in jobs}
    overrides: Mapping[str, float] = settings.job_intervals
    for name, seconds in overrides.items():
        if name not in table:
            raise ValueError(f"TREEVU_JOB_INTERVALS: no job {name!r} (jobs: {', '.join(table)})")
        old = table[name]
        table[name] = Job(old.name, old.description, old.scope, seconds, 0, old.run)
    return table


# -- running ------------------------------------------------------------------------------------


async def run_cluster_job(
    ctx: JobContext, job: Job, slot: str, actor_id: int | None = None
) -> JobRun | None:
    """Run ``job`` for ``slot`` unless another node has it; the finished run, or None."""
    svc = ctx.svc
    async with svc.sessions() as session:
        run = JobRun(job=job.name, slot=slot, node=ctx.node, started_at=svc.clock())
        session.add(run)
        try:
            await session.commit()
        except IntegrityError:
            return None  # another node won this slot
        run_id = run.id
    ok, result = True, {}
    try:
        result = await job.run(ctx)
    except Exception as exc:
        log.exception("job %s (%s) failed", job.name, slot)
        ok, result = False, {"error": f"{type(exc).__name__}: {exc}"[:500]}
    async with svc.sessions() as session:
        now = svc.clock()
        await session.execute(
            update(JobRun).where(JobRun.id == run_id).values(finished_at=now, ok=ok, result=result)
        )
        # A run that found nothing to do (``idle``) is in job_runs only: a job every second
        # would otherwise fill the audit log with nothing.
        if not (ok and result.get("idle")):
            session.add(
                AuditLog(
                    actor_id=actor_id,
                    action="job.run",
                    target=f"job:{job.name}",
                    detail={"slot": slot, "node": ctx.node, "ok": ok, "result": result},
                    created_at=now,
                )
            )
        await session.commit()
        return await session.get(JobRun, run_id)


def slot_name(slot: datetime) -> str:
    """``2026-12-01T03:00:00.000Z``: milliseconds, so that sub-second intervals get a slot each."""
    return slot.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Scheduler:
    """The jobs of one ``treevu serve`` process on an ``AsyncIOScheduler``."""

    def __init__(self, svc: Services, realtime: Realtime | None) -> None:
        self.ctx = JobContext(svc, realtime, realtime.presence.node_id if realtime else "")
        self.jobs = job_table(svc.settings)
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._running: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        for job in self.jobs.values():
            self._scheduler.add_job(
                self._fire,
                job.trigger(),
                args=[job],
                id=job.name,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=max(1, int(job.every // 2)),
            )
        self._scheduler.start()

    async def stop(self, grace: float = 10.0) -> None:
        """Fire nothing new, then let runs in flight finish (up to ``grace`` seconds).

        A cluster run holds its slot from the start: stopped half-way it would stay unfinished
        and unaudited (the next slot catches up on what it missed).
        """
        # Pause first: APScheduler's shutdown cancels the runs in flight.
        self._scheduler.pause()
        if self._running:
            await asyncio.wait(set(self._running), timeout=grace)
        self._scheduler.shutdown(wait=False)

    async def _fire(self, job: Job) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            await self._run(job)
        finally:
            self._running.discard(task)

    async def _run(self, job: Job) -> None:
        if job.scope == "node":
            try:
                await job.run(self.ctx)
            except Exception:
                log.exception("job %s failed", job.name)
            return
        slot = job.slot(self.ctx.svc.clock() + timedelta(seconds=min(1.0, job.every / 2)))
        try:
            await run_cluster_job(self.ctx, job, slot_name(slot))
        except Exception:
            log.exception("job %s could not run", job.name)


# -- operations (jobs.list, treevu jobs …) -------------------------------------------------------


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Empty(Model):
    pass


class JobRunOut(Model):
    slot: str
    node: str
    started_at: datetime = Field(alias="startedAt")
    finished_at: datetime | None = Field(alias="finishedAt")
    ok: bool | None
    result: dict[str, Any] | None


class JobOut(Model):
    name: str
    description: str
    scope: Scope
    schedule: str
    last_run: JobRunOut | None = Field(alias="lastRun")
    next_run: datetime = Field(alias="nextRun")


async def list_jobs(svc: Services, actor: Actor, inp: Empty) -> list[JobOut]:
    """Admin: every job, its schedule, its last run (cluster jobs) and its next run."""
    actor.require_admin()
    out = []
    now = svc.clock()
    async with svc.sessions() as session:
        for job in job_table(svc.settings).values():
            last = await session.scalar(
                select(JobRun)
                .where(JobRun.job == job.name)
                .order_by(JobRun.started_at.desc(), JobRun.id.desc())
                .limit(1)
            )
            out.append(
                JobOut(
                    name=job.name,
                    description=job.description.strip(),
                    scope=job.scope,
                    schedule=job.schedule,
                    last_run=None if last is None else _run_out(last),
                    next_run=job.next_run(now),
                )
            )
    return out


def _run_out(run: JobRun) -> JobRunOut:
    return JobRunOut(
        slot=run.slot,
        node=run.node,
        started_at=run.started_at,
        finished_at=run.finished_at,
        ok=run.ok,
        result=run.result,
    )


async def run_now(svc: Services, name: str, actor_id: int | None = None) -> JobRunOut:
    """Run a cluster job at once (``treevu jobs run``), under a slot of its own."""
    table = job_table(svc.settings)
    job = table.get(name)
    if job is None:
        raise ServiceError(
            "NOT_FOUND", f"NAME: no job {name!r} (jobs: {', '.join(table)})", field="name"
        )
    if job.scope == "node":
        raise ServiceError(
            "BAD_REQUEST",
            f"NAME: {name} runs in every treevu serve process for that process; "
            "it cannot run on its own",
            field="name",
        )
    ctx = JobContext(svc, None, f"cli-{new_node_id()}")
    run = await run_cluster_job(ctx, job, f"manual:{uuid.uuid4().hex[:16]}", actor_id)
    assert run is not None  # a fresh slot is never taken
    return _run_out(run)
