"""The durable inbox: ``notification_queue`` is the truth; sockets are told after commit.

:class:`Inbox` owns the write paths that must be fast — creation with group commit (many
requests share one transaction), and the batched ``pending → sent`` marks with their audit
rows — and the reads the WebSocket session needs (replay, unread count).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from treevu.db import AuditLog, NotificationQueue
from treevu.notifications.broker import Broker, Envelope
from treevu.notifications.crypto import DataCipher
from treevu.notifications.hub import Connection, Hub, Outgoing
from treevu.notifications.metrics import Metrics
from treevu.services.context import Clock

log = logging.getLogger(__name__)

NOTIFICATION_TYPES: Final = (
    "tier_upgrade",
    "milestone",
    "compliance_alert",
    "recommendation",
    "intervention_update",
)
UNREAD: Final = ("pending", "sent", "delivered")
UNACKED: Final = ("pending", "sent")


@dataclass(frozen=True, slots=True)
class NewNotification:
    user_id: int
    type: str
    title: str
    message: str
    data: dict[str, Any] | None = None
    created_by: int | None = None


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def wire(
    nid: int,
    type_: str,
    title: str,
    message: str,
    data: dict[str, Any] | None,
    created_at: datetime,
    read: bool,
) -> dict[str, Any]:
    """A notification exactly as SPEC §4 shows it."""
    return {
        "id": nid,
        "type": type_,
        "title": title,
        "message": message,
        "data": data or {},
        "timestamp": iso(created_at),
        "read": read,
    }


def frame_for(notification: dict[str, Any]) -> str:
    return json.dumps({"type": "notification", "notification": notification}, separators=(",", ":"))


class Inbox:
    """Create, replay, acknowledge; lives on the app state, started and closed by the lifespan."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        cipher: DataCipher,
        broker: Broker,
        hub: Hub,
        metrics: Metrics,
        clock: Clock,
        *,
        max_batch: int = 5000,
        sent_flush_seconds: float = 0.05,
    ) -> None:
        self._sessions = sessions
        self.cipher = cipher
        self.broker = broker
        self.hub = hub
        self.metrics = metrics
        self._clock = clock
        self._max_batch = max_batch
        self._sent_flush_seconds = sent_flush_seconds
        self._pending: list[tuple[Sequence[NewNotification], asyncio.Future[list[int]]]] = []
        self._wake = asyncio.Event()
        self._sent: list[tuple[int, int, str]] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._create_loop(), name="inbox-group-commit"),
            asyncio.create_task(self._sent_loop(), name="inbox-sent-marks"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._flush_sent()

    # -- creation (group commit, publish after commit) ---------------------------------------

    async def create(self, items: Sequence[NewNotification]) -> list[int]:
        """Store ``items`` and return their ids once committed; delivery follows the commit."""
        if not items:
            return []
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._pending.append((items, future))
        self._wake.set()
        return await future

    async def _create_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch: list[tuple[Sequence[NewNotification], asyncio.Future[list[int]]]] = []
                size = 0
                while self._pending and (
                    not batch or size + len(self._pending[0][0]) <= self._max_batch
                ):
                    request = self._pending.pop(0)
                    batch.append(request)
                    size += len(request[0])
                await self._commit_batch(batch)

    async def _commit_batch(
        self, batch: list[tuple[Sequence[NewNotification], asyncio.Future[list[int]]]]
    ) -> None:
        now = self._clock()
        rows = [
            {
                "user_id": n.user_id,
                "type": n.type,
                "title": n.title,
                "message": n.message,
                "data": self.cipher.seal(n.data),
                "status": "pending",
                "created_at": now,
                "created_by": n.created_by,
            }
            for items, _ in batch
            for n in items
        ]
        try:
            async with self._sessions() as session:
                result = await session.execute(
                    insert(NotificationQueue).returning(
                        NotificationQueue.id, sort_by_parameter_order=True
                    ),
                    rows,
                )
                ids = [int(i) for i in result.scalars()]
                await session.commit()
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        envelopes = []
        offset = 0
        created_at = now.timestamp()
        for items, future in batch:
            chunk = ids[offset : offset + len(items)]
            offset += len(items)
            if not future.done():
                future.set_result(chunk)
            for nid, n in zip(chunk, items, strict=True):
                self.metrics.created.labels(n.type).inc()
                text = frame_for(wire(nid, n.type, n.title, n.message, n.data, now, False))
                envelopes.append(Envelope("notify", n.user_id, nid, text, created_at))
        try:
            await self.broker.publish(envelopes)  # after the commit, never before
        except Exception:
            log.exception("publish failed; the pending sweep will deliver these")

    # -- delivery -----------------------------------------------------------------------------

    def receive(self, envelopes: Sequence[Envelope]) -> None:
        """Broker → local hub."""
        for env in envelopes:
            if env.kind == "notify":
                self.hub.deliver(
                    env.user_id, Outgoing(env.text, env.notification_id, env.created_at)
                )
            else:
                self.hub.send_control(env.user_id, {"type": "unread_count", "count": env.count})

    def on_sent(self, conn: Connection, frame: Outgoing) -> None:
        """Writer task wrote a notification: count it, time it, mark it sent (batched)."""
        assert frame.notification_id is not None
        self.metrics.delivered.inc()
        if frame.created_at:
            self.metrics.delivery_latency.observe(
                max(0.0, self._clock().timestamp() - frame.created_at)
            )
        self._sent.append((frame.notification_id, conn.user_id, conn.connection_id))

    async def _sent_loop(self) -> None:
        while True:
            await asyncio.sleep(self._sent_flush_seconds)
            try:
                await self._flush_sent()
            except Exception:
                log.exception("could not record sent notifications; will retry")

    async def _flush_sent(self) -> None:
        if not self._sent:
            return
        sent, self._sent = self._sent, []
        now = self._clock()
        ids = sorted({nid for nid, _, _ in sent})
        try:
            async with self._sessions() as session:
                for start in range(0, len(ids), 1000):
                    await session.execute(
                        update(NotificationQueue)
                        .where(
                            NotificationQueue.id.in_(ids[start : start + 1000]),
                            NotificationQueue.status == "pending",
                        )
                        .values(status="sent", sent_at=now)
                    )
                await session.execute(
                    insert(AuditLog),
                    [
                        {
                            "actor_id": None,
                            "action": "notification.delivered",
                            "target": f"notification:{nid}",
                            "detail": {"userId": uid, "connectionId": cid},
                            "created_at": now,
                        }
                        for nid, uid, cid in sent
                    ],
                )
                await session.commit()
        except Exception:
            self._sent = sent + self._sent
            raise

    # -- reads for the socket -----------------------------------------------------------------

    async def unread_count(self, user_id: int) -> int:
        async with self._sessions() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(NotificationQueue)
                .where(NotificationQueue.user_id == user_id, NotificationQueue.status.in_(UNREAD))
            )
        return int(count or 0)

    async def newest_id(self, user_id: int) -> int:
        async with self._sessions() as session:
            newest = await session.scalar(
                select(func.max(NotificationQueue.id)).where(NotificationQueue.user_id == user_id)
            )
        return int(newest or 0)

    async def unacknowledged(self, user_id: int) -> list[Outgoing]:
        return await self._frames(
            NotificationQueue.user_id == user_id, NotificationQueue.status.in_(UNACKED)
        )

    async def after(self, user_id: int, last_id: int, bound: int) -> list[Outgoing] | None:
        """Everything after ``last_id`` in id order, or None when more than ``bound`` missed."""
        frames = await self._frames(
            NotificationQueue.user_id == user_id,
            NotificationQueue.id > last_id,
            NotificationQueue.status != "cleared",
            limit=bound + 1,
        )
        return None if len(frames) > bound else frames

    async def _frames(self, *where: Any, limit: int | None = None) -> list[Outgoing]:
        stmt = select(NotificationQueue).where(*where).order_by(NotificationQueue.id)
        if limit is not None:
            stmt = stmt.limit(limit)
        async with self._sessions() as session:
            rows = list(await session.scalars(stmt))
        return [self.outgoing(r) for r in rows]

    def outgoing(self, row: NotificationQueue) -> Outgoing:
        return Outgoing(frame_for(self.public(row)), row.id, row.created_at.timestamp())

    def public(self, row: NotificationQueue) -> dict[str, Any]:
        return wire(
            row.id,
            row.type or "",
            row.title or "",
            row.message or "",
            self.cipher.open(row.data),
            row.created_at,
            row.status == "read",
        )

    async def acknowledge(self, user_id: int, nid: int) -> bool:
        async with self._sessions() as session:
            result = await session.execute(
                update(NotificationQueue)
                .where(
                    NotificationQueue.id == nid,
                    NotificationQueue.user_id == user_id,
                    NotificationQueue.status.in_(UNACKED),
                )
                .values(status="delivered", delivered_at=self._clock())
            )
            await session.commit()
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def sweep_pending(self, older_than: timedelta, limit: int = 5000) -> int:
        """Offer pending notifications of locally connected users again (lost publishes)."""
        local = set(self.hub.user_ids)
        if not local:
            return 0
        cutoff = self._clock() - older_than
        async with self._sessions() as session:
            rows = list(
                await session.scalars(
                    select(NotificationQueue)
                    .where(
                        NotificationQueue.status == "pending",
                        NotificationQueue.created_at < cutoff,
                    )
                    .order_by(NotificationQueue.id)
                    .limit(limit)
                )
            )
        offered = 0
        for row in rows:
            if row.user_id in local:
                offered += self.hub.deliver(row.user_id, self.outgoing(row))
        return offered
