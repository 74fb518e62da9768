"""One server process's realtime side: hub, delivery, presence, sessions, and their jobs.

Created and stopped by the app's lifespan. Its loops — heartbeats with the token re-check,
the tail of rows other processes committed, presence heartbeats, and the outbox relay — run
once per process; the pending sweep and the dead-node clean-up are scheduled jobs
(``services/jobs.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from treevu.db import EmployeeSegment, NotificationQueue, RecommendationEvent
from treevu.notifications.hub import Hub
from treevu.notifications.metrics import Metrics
from treevu.segmentation.policy import SEGMENTS
from treevu.services.auth import TokenVerifier
from treevu.services.context import Services
from treevu.services.notifications.delivery import Delivery
from treevu.services.notifications.presence import Presence, new_node_id
from treevu.services.notifications.session import SessionServer
from treevu.services.notifications.store import NewNotification

log = logging.getLogger(__name__)


class Realtime:
    def __init__(self, svc: Services, verifier: TokenVerifier, metrics: Metrics) -> None:
        settings = svc.settings
        self.svc = svc
        self.settings = settings
        self.metrics = metrics
        self.hub = Hub(
            queue_size=settings.ws_queue_size, on_sent=lambda c, f: self.delivery.on_sent(c, f)
        )
        self.delivery = Delivery(svc.sessions, svc.cipher, self.hub, metrics, svc.clock)
        self.presence = Presence(svc.sessions, svc.clock, new_node_id())
        self.sessions = SessionServer(
            svc, verifier, self.hub, self.delivery, self.presence, metrics
        )
        self._jobs: list[asyncio.Task[None]] = []
        self._gauges_at = float("-inf")
        self._tail_wake = asyncio.Event()

    def _stored(self, items: Sequence[NewNotification], ids: Sequence[int]) -> None:
        for type_, count in Counter(n.type for n in items).items():
            self.metrics.created.labels(type_).inc(count)

    async def start(self, *, relay: bool = True, sweep: bool = False) -> None:
        """``relay``: run the outbox relay here (not on a socket-only node); ``sweep``: run
        the pending sweep here (where no scheduler runs it as a node job)."""
        svc, s = self.svc, self.settings
        await svc.broker.start(self.delivery.receive)
        await self.delivery.start()
        await self.presence.start()
        svc.store.listeners.append(self._stored)
        svc.store.id_watchers.append(self.delivery)
        self._jobs = [
            asyncio.create_task(self._every(s.heartbeat_interval, self.heartbeat), name="hb"),
            asyncio.create_task(
                self._every(s.heartbeat_interval, self.presence_heartbeat), name="presence"
            ),
        ]
        if relay:
            self._jobs.append(
                asyncio.create_task(svc.relay.run(s.outbox_interval), name="outbox-relay")
            )
        if sweep:
            self._jobs.append(
                asyncio.create_task(self._every(s.sweep_interval, self.sweep), name="sweep")
            )
        if not s.redis_url:
            # Nobody publishes another process's rows to this one: look for them, every
            # tail interval, and at once when PostgreSQL says some were committed.
            await self.delivery.tail()  # sets the starting point
            if s.pg_notify_channel is not None:
                await self._listen(s.pg_notify_channel)
            self._jobs.append(asyncio.create_task(self._tail_loop(), name="tail"))

    async def _listen(self, channel: str) -> None:
        """Start listening; return once ``LISTEN`` is in place (or after 10 s of trying)."""
        ready = asyncio.Event()
        self._jobs.append(asyncio.create_task(self._listen_loop(channel, ready), name="listen"))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await ready.wait()

    async def _listen_loop(self, channel: str, ready: asyncio.Event) -> None:
        """``LISTEN`` on a psycopg connection of its own and wake the tail on each ``NOTIFY``.
        A lost connection is opened again a second later; the tail, which also runs every
        ``tail_interval``, looks once more at once so that nothing waits for the gap."""
        import psycopg
        from psycopg import sql

        conninfo = (
            make_url(self.settings.database_url)
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    ready.set()
                    self._tail_wake.set()  # whatever was committed while not listening
                    async for _ in conn.notifies():
                        self._tail_wake.set()
            except psycopg.Error as exc:
                log.warning("LISTEN %s lost (%s); listening again in 1 s", channel, exc)
            await asyncio.sleep(1.0)

    async def _tail_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.tail_interval):
                    await self._tail_wake.wait()
            self._tail_wake.clear()
            try:
                await self.delivery.tail()
            except Exception:
                log.exception("tail failed; will retry")

    async def stop(self) -> None:
        for job in self._jobs:
            job.cancel()
        for job in self._jobs:
            with contextlib.suppress(asyncio.CancelledError):
                await job
        await self.hub.shutdown()
        self.sessions.close()
        await self.delivery.close()
        await self.presence.close()
        with contextlib.suppress(ValueError):
            self.svc.store.listeners.remove(self._stored)
        with contextlib.suppress(ValueError):
            self.svc.store.id_watchers.remove(self.delivery)

    async def _every(self, seconds: float, job: Callable[[], Awaitable[Any]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception:
                log.exception("job %s failed", getattr(job, "__name__", job))

    async def heartbeat(self) -> None:
        await self.sessions.heartbeat()

    async def sweep(self) -> None:
        await self.delivery.sweep_pending(timedelta(seconds=self.settings.sweep_interval / 2))

    async def presence_heartbeat(self) -> None:
        await self.presence.heartbeat()

    async def refresh_gauges(self, max_age_seconds: float = 30.0) -> None:
        """Segment sizes and read/click rates for ``/metrics``, recounted at most every 30 s."""
        now = time.monotonic()
        if now - self._gauges_at < max_age_seconds:
            return
        self._gauges_at = now
        segment_sql = select(EmployeeSegment.segment, func.count()).group_by(
            EmployeeSegment.segment
        )
        status_sql = select(NotificationQueue.status, func.count()).group_by(
            NotificationQueue.status
        )
        async with self.svc.sessions() as session:
            sizes = {str(k): int(v) for k, v in (await session.execute(segment_sql)).all()}
            by_status = {str(k): int(v) for k, v in (await session.execute(status_sql)).all()}
            clicked = await session.scalar(
                select(func.count())
                .select_from(NotificationQueue)
                .where(NotificationQueue.clicked_at.is_not(None))
            )
            feedback = {
                str(k): int(v)
                for k, v in (
                    await session.execute(
                        select(RecommendationEvent.kind, func.count())
                        .where(RecommendationEvent.kind.in_(("impression", "click")))
                        .group_by(RecommendationEvent.kind)
                    )
                ).all()
            }
        for segment in SEGMENTS:
            self.metrics.segment_size.labels(segment).set(sizes.get(segment, 0))
        reached = sum(by_status.get(s, 0) for s in ("sent", "delivered", "read"))
        self.metrics.read_rate.set(by_status.get("read", 0) / reached if reached else 0.0)
        self.metrics.click_rate.set((clicked or 0) / reached if reached else 0.0)
        shown = feedback.get("impression", 0)
        self.metrics.recommendation_click_rate.set(
            feedback.get("click", 0) / shown if shown else 0.0
        )
