"""The durable inbox: ``notification_queue`` is the truth; sockets are told after commit.

:class:`Inbox` owns the write paths that must be fast — creation with group commit (many
requests share one transaction), and the batched ``pending → sent`` marks with their audit
rows — and the reads the WebSocket session needs (replay, unread count).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, NamedTuple, cast

from sqlalchemy import (
    Column,
    Dialect,
    MetaData,
    Table,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker
from sqlalchemy.types import NullType

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


class NewNotification(NamedTuple):
    """A notification to create (a tuple: a broadcast builds thousands of them per request)."""

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


def _frame_tail(
    type_: str, title: str, message: str, data: dict[str, Any] | None, timestamp: str
) -> str:
    """Everything of :func:`frame_for`'s text after the id: ``,"type":…,"read":false}}``.

    A broadcast shares it between all its notifications, so it is encoded once per batch.
    """
    rest = json.dumps(
        {
            "type": type_,
            "title": title,
            "message": message,
            "data": data or {},
            "timestamp": timestamp,
            "read": False,
        },
        separators=(",", ":"),
    )
    return "," + rest[1:] + "}"


_FRAME_HEAD: Final = '{"type":"notification","notification":{"id":'


_QUEUE: Final = cast(Table, NotificationQueue.__table__)
_QUEUE_COLUMNS: Final = (
    "userId", "type", "title", "message", "data", "status", "createdAt", "createdBy"
)  # fmt: skip
_AUDIT_COLUMNS: Final = ("actorId", "action", "target", "detail", "createdAt")
#: Rows per INSERT statement: 8,000 parameters, under SQLite's 32,766 and MySQL's 65,535.
_ROWS_PER_INSERT: Final = 1000


def _untyped(table: Table, names: Sequence[str]) -> Table:
    """``names`` of ``table`` (and its key) with no type processing: the hot write paths bind
    values that were converted once per batch with the real column types."""
    return Table(
        table.name,
        MetaData(),
        *(
            Column(c.name, c.type if c.primary_key else NullType(), primary_key=c.primary_key)
            for c in table.columns
            if c.primary_key or c.name in names
        ),
    )


_QUEUE_ROWS: Final = _untyped(_QUEUE, (*_QUEUE_COLUMNS, "sentAt"))
_AUDIT_ROWS: Final = _untyped(cast(Table, AuditLog.__table__), _AUDIT_COLUMNS)


@dataclass(frozen=True, slots=True)
class _Writes:
    """The hot write statements as this database spells them, and its own conversions of a
    ``data`` dict and of a timestamp (JSON text, its DATETIME form) — applied once per
    distinct value instead of once per row.

    Values go to the driver as flat tuples, not through SQLAlchemy's per-row parameter
    processing: one multi-row ``INSERT … VALUES (…), (…) RETURNING id`` per 1,000
    notifications, one ``UPDATE … WHERE id IN (…)`` per 1,000 sent marks, one
    ``executemany`` of the audit rows. Their text is SQLAlchemy's, compiled once; only the
    repeated placeholders are added here. With a paramstyle other than ``?``, ``%s`` or
    ``$n`` a statement is left empty and goes through SQLAlchemy Core instead.
    """

    data: Callable[[Any], Any]
    timestamp: Callable[[Any], Any]
    paramstyle: str
    queue_head: str  # INSERT INTO notification_queue (…) VALUES
    queue_tail: str  # RETURNING id
    sent_head: str  # UPDATE notification_queue SET status=?, sentAt=? WHERE status = ? AND id IN (
    sent_tail: str  # )
    audit: str  # INSERT INTO audit_log (…) VALUES (one row)

    @classmethod
    def for_dialect(cls, dialect: Dialect) -> _Writes:
        def binder(column: Column[Any]) -> Callable[[Any], Any]:
            process = column.type.dialect_impl(dialect).bind_processor(dialect)
            return process if process is not None else (lambda value: value)

        style = dialect.paramstyle
        queue_head = queue_tail = sent_head = sent_tail = audit = ""
        if style in ("qmark", "format", "numeric_dollar"):
            queue = (
                insert(_QUEUE_ROWS)
                .returning(_QUEUE_ROWS.c.id)
                .compile(dialect=dialect, column_keys=list(_QUEUE_COLUMNS))
            )
            head, values, rest = queue.string.partition(" VALUES (")
            if values and list(queue.positiontup or ()) == list(_QUEUE_COLUMNS):
                queue_head = head + " VALUES "
                queue_tail = rest.partition(")")[2]
            q = _QUEUE_ROWS.c
            sent = (
                update(_QUEUE_ROWS)
                .where(q.status == bindparam("was"), q.id.in_(bindparam("ids", expanding=True)))
                .values(status=bindparam("status"), sentAt=bindparam("at"))
                .compile(dialect=dialect)
            )
            head, marker, tail = sent.string.partition("__[POSTCOMPILE_ids]")
            if marker and list(sent.positiontup or ()) == ["status", "at", "was", "ids"]:
                sent_head, sent_tail = head, tail
            audit_insert = insert(_AUDIT_ROWS).compile(
                dialect=dialect, column_keys=list(_AUDIT_COLUMNS)
            )
            if list(audit_insert.positiontup or ()) == list(_AUDIT_COLUMNS):
                head = audit_insert.string.partition(" VALUES (")[0]
                # Rebuilt without the RETURNING that some dialects add to a plain insert.
                audit = f"{head} VALUES ({_marks(style, 1, len(_AUDIT_COLUMNS))})"
        return cls(
            binder(_QUEUE.c.data),
            binder(_QUEUE.c.createdAt),
            style,
            queue_head,
            queue_tail,
            sent_head,
            sent_tail,
            audit,
        )

    def queue_insert(self, rows: int) -> str:
        return (
            self.queue_head
            + _rows_of_marks(self.paramstyle, len(_QUEUE_COLUMNS), rows)
            + self.queue_tail
        )

    def mark_sent(self, ids: int) -> str:
        """Parameters: ``"sent"``, the time, ``"pending"``, then the ids."""
        return self.sent_head + _marks(self.paramstyle, 4, ids) + self.sent_tail


@functools.lru_cache(maxsize=32)
def _rows_of_marks(paramstyle: str, width: int, rows: int) -> str:
    """``(?, ?), (?, ?)``: ``rows`` groups of ``width`` placeholders (1,000 rows: 0.5 ms)."""
    return ", ".join(f"({_marks(paramstyle, row * width + 1, width)})" for row in range(rows))


def _marks(paramstyle: str, first: int, count: int) -> str:
    """``?, ?, ?`` (or ``%s``, or ``$first, $first+1, …``): ``count`` positional placeholders."""
    if paramstyle == "numeric_dollar":
        return ", ".join(f"${i}" for i in range(first, first + count))
    mark = "?" if paramstyle == "qmark" else "%s"
    return ", ".join([mark] * count)


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
        self._acks: list[tuple[int, int, asyncio.Future[None]]] = []
        self._ack_wake = asyncio.Event()
        self._uncounted = 0  # frames written since the delivered counter was last moved
        self._tasks: list[asyncio.Task[None]] = []
        self._writes: _Writes | None = None

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._create_loop(), name="inbox-group-commit"),
            asyncio.create_task(self._sent_loop(), name="inbox-sent-marks"),
            asyncio.create_task(self._ack_loop(), name="inbox-acks"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._flush_sent()
        while self._acks:
            await self._commit_acks()

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
        items = [n for requests, _ in batch for n in requests]
        try:
            async with self._sessions() as session:
                ids = await self._insert(session, items, now)
                await session.commit()
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        offset = 0
        for requests, future in batch:
            if not future.done():
                future.set_result(ids[offset : offset + len(requests)])
            offset += len(requests)
        for type_, count in Counter(n.type for n in items).items():
            self.metrics.created.labels(type_).inc(count)
        # A broadcast's notifications differ only in id and user: encode the rest once.
        timestamp = iso(now)
        tails: dict[tuple[int, str, str, str], str] = {}
        created_at = now.timestamp()
        envelopes = []
        for nid, n in zip(ids, items, strict=True):
            key = (id(n.data), n.type, n.title, n.message)
            tail = tails.get(key)
            if tail is None:
                tail = tails[key] = _frame_tail(n.type, n.title, n.message, n.data, timestamp)
            text = f"{_FRAME_HEAD}{nid}{tail}"
            envelopes.append(Envelope("notify", n.user_id, nid, text, created_at))
        try:
            await self.broker.publish(envelopes)  # after the commit, never before
        except Exception:
            log.exception("publish failed; the pending sweep will deliver these")

    async def _writes_for(self, session: AsyncSession) -> tuple[_Writes, AsyncConnection]:
        connection = await session.connection()
        if self._writes is None:
            self._writes = _Writes.for_dialect(connection.dialect)
        return self._writes, connection

    async def _insert(
        self, session: AsyncSession, items: Sequence[NewNotification], now: datetime
    ) -> list[int]:
        """One multi-row ``INSERT … RETURNING id`` per 1,000 rows; ids in ``items`` order.

        ``data`` is sealed and converted to JSON once per distinct dict (a broadcast shares
        one). The ids are sorted rather than matched row by row (``sort_by_parameter_order``,
        which SQLite can only honour one row per statement, ten times slower): an
        autoincrement key grows in ``VALUES`` order within a statement — the rule SQLAlchemy
        itself relies on for MySQL and MariaDB — and the statements run in order.
        """
        writes, connection = await self._writes_for(session)
        created_at = writes.timestamp(now)
        stored: dict[int, Any] = {}
        rows: list[tuple[Any, ...]] = []
        for n in items:
            key = id(n.data)
            data = stored.get(key)
            if data is None:
                data = stored[key] = writes.data(self.cipher.seal(n.data))
            rows.append(
                (n.user_id, n.type, n.title, n.message, data, "pending", created_at, n.created_by)
            )
        ids: list[int] = []
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start : start + _ROWS_PER_INSERT]
            if writes.queue_head:
                flat = tuple(value for row in chunk for value in row)
                result = await connection.exec_driver_sql(writes.queue_insert(len(chunk)), flat)
            else:
                result = await connection.execute(
                    insert(_QUEUE_ROWS).returning(_QUEUE_ROWS.c.id),
                    [dict(zip(_QUEUE_COLUMNS, row, strict=True)) for row in chunk],
                )
            ids.extend(sorted(int(i) for i in result.scalars()))
        if len(ids) != len(rows):
            raise RuntimeError(f"inserted {len(rows)} notifications but got {len(ids)} ids")
        return ids

    # -- delivery -----------------------------------------------------------------------------

    def receive(self, envelopes: Sequence[Envelope]) -> None:
        """Broker → local hub (every process hears every envelope; most users are elsewhere)."""
        hub = self.hub
        for env in envelopes:
            if not hub.is_connected(env.user_id):
                continue
            if env.kind == "notify":
                hub.deliver(env.user_id, Outgoing(env.text, env.notification_id, env.created_at))
            else:
                hub.send_control(env.user_id, {"type": "unread_count", "count": env.count})

    def on_sent(self, conn: Connection, frame: Outgoing) -> None:
        """A notification was written to a socket: time it, mark it sent and count it (both
        batched, at the next flush)."""
        assert frame.notification_id is not None
        if frame.created_at:
            self.metrics.delivery_latency.observe(
                max(0.0, self._clock().timestamp() - frame.created_at)
            )
        self._sent.append((frame.notification_id, conn.user_id, conn.connection_id))
        self._uncounted += 1

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
        self.metrics.delivered.inc(self._uncounted)
        self._uncounted = 0
        now = self._clock()
        ids = sorted({nid for nid, _, _ in sent})
        try:
            async with self._sessions() as session:
                writes, connection = await self._writes_for(session)
                at = writes.timestamp(now)
                for start in range(0, len(ids), 1000):
                    chunk = ids[start : start + 1000]
                    if writes.sent_head:
                        params = ("sent", at, "pending", *chunk)
                        await connection.exec_driver_sql(writes.mark_sent(len(chunk)), params)
                    else:
                        await session.execute(
                            update(NotificationQueue)
                            .where(
                                NotificationQueue.id.in_(chunk),
                                NotificationQueue.status == "pending",
                            )
                            .values(status="sent", sent_at=now)
                        )
                audit = [
                    (
                        None,
                        "notification.delivered",
                        f"notification:{nid}",
                        _delivered_detail(uid, cid),
                        at,
                    )
                    for nid, uid, cid in sent
                ]
                if writes.audit:
                    await connection.exec_driver_sql(writes.audit, audit)
                else:
                    await connection.execute(
                        insert(_AUDIT_ROWS),
                        [dict(zip(_AUDIT_COLUMNS, row, strict=True)) for row in audit],
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

    async def acknowledge(self, user_id: int, nid: int) -> None:
        """``nid`` reached ``user_id``: ``pending``/``sent`` → ``delivered`` (another user's id,
        or one already acknowledged, changes nothing). Returns once committed.

        Acks waiting together share one transaction, like creation: a client acks every
        notification it gets, and a commit each would cap delivery at the database's commit
        rate (~800 a second on SQLite here, with everything else going on).
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks.append((user_id, nid, future))
        self._ack_wake.set()
        await future

    async def _ack_loop(self) -> None:
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            while self._acks:
                await self._commit_acks()

    async def _commit_acks(self) -> None:
        batch, self._acks = self._acks[: self._max_batch], self._acks[self._max_batch :]
        try:
            await self._mark_delivered([(uid, nid) for uid, nid, _ in batch])
        except asyncio.CancelledError:
            self._acks = batch + self._acks  # for close(); marking twice changes nothing
            raise
        except Exception as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for _, _, future in batch:
            if not future.done():
                future.set_result(None)

    async def _mark_delivered(self, acks: list[tuple[int, int]]) -> None:
        """Each id to ``delivered`` if the acking user owns it: owners read first (a row's user
        never changes), then one ``UPDATE … WHERE id IN (…)`` per 1,000 ids.

        Not one statement with ``(id, userId) IN (…)``: MariaDB turns a list of 1,000 pairs
        into a subquery and takes ~0.7 s over it.
        """
        ids = sorted({nid for _, nid in acks})
        owners: dict[int, int] = {}
        async with self._sessions() as session:
            for start in range(0, len(ids), 1000):
                rows = await session.execute(
                    select(NotificationQueue.id, NotificationQueue.user_id).where(
                        NotificationQueue.id.in_(ids[start : start + 1000])
                    )
                )
                owners.update((int(nid), int(uid)) for nid, uid in rows)
        owned = sorted({nid for uid, nid in acks if owners.get(nid) == uid})
        if not owned:
            return
        now = self._clock()
        async with self._sessions() as session:
            for start in range(0, len(owned), 1000):
                await session.execute(
                    update(NotificationQueue)
                    .where(
                        NotificationQueue.id.in_(owned[start : start + 1000]),
                        NotificationQueue.status.in_(UNACKED),
                    )
                    .values(status="delivered", delivered_at=now)
                )
            await session.commit()

    async def sweep_pending(self, older_than: timedelta, limit: int = 5000) -> int:
        """Offer pending notifications of locally connected users again (lost publishes).

        Looked up by user (the ``(userId, status)`` index), 1,000 local users a query: the
        pending rows of users connected elsewhere or offline — a backlog that only grows with
        them — are never read, and cannot crowd the local ones out of ``limit``.
        """
        local = sorted(self.hub.user_ids)
        if not local:
            return 0
        cutoff = self._clock() - older_than
        rows: list[NotificationQueue] = []
        async with self._sessions() as session:
            for start in range(0, len(local), 1000):
                rows.extend(
                    await session.scalars(
                        select(NotificationQueue)
                        .where(
                            NotificationQueue.user_id.in_(local[start : start + 1000]),
                            NotificationQueue.status == "pending",
                            NotificationQueue.created_at < cutoff,
                        )
                        .order_by(NotificationQueue.id)
                        .limit(limit)
                    )
                )
        rows.sort(key=lambda row: row.id)
        offered = 0
        for row in rows[:limit]:
            offered += self.hub.deliver(row.user_id, self.outgoing(row))
        return offered


def _delivered_detail(user_id: int, connection_id: str) -> str:
    """The JSON of ``{"userId": …, "connectionId": …}`` as the JSON column would write it."""
    return f'{{"userId": {user_id:d}, "connectionId": {json.dumps(connection_id)}}}'
