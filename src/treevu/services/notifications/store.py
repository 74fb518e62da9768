"""The write side of notifications: durable, exactly once per ``Idempotency-Key``.

:class:`NotificationStore` needs only a database and a cipher — the server, the CLI, an import
or a job can all create notifications with it. Requests arriving together share one
transaction (group commit); each request's rows, its idempotency row and its audit row commit
together, so a crash leaves either all of them or none. A repeated key is decided by the
unique constraint on ``(actorId, key)``, not by a read before the write. A batch that fails is
retried request by request: one bad request never fails another.

After the commit, and never before, the new notifications are published to the broker when
one is given (Redis between processes, or the local hub); a server that did not hear the
publish finds the rows by itself (``delivery.Delivery.tail`` and the pending sweep).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, NamedTuple, Protocol

from sqlalchemy import delete, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from treevu.db import AuditLog, IdempotencyKey
from treevu.db.bulk import QUEUE_COLUMNS, QUEUE_ROWS, ROWS_PER_INSERT, QueueWrites
from treevu.faults import crash_point
from treevu.notifications.broker import Envelope
from treevu.notifications.crypto import DataCipher
from treevu.notifications.wire import FRAME_HEAD, check_data, check_text, frame_tail, iso
from treevu.services.errors import retry_deadlocks

log = logging.getLogger(__name__)

IDEMPOTENCY_WINDOW: Final = timedelta(hours=24)
#: Audit rows list the ids of a request up to this many; beyond, only their count and range.
AUDIT_IDS: Final = 100


class NewNotification(NamedTuple):
    """A notification to create (a tuple: a broadcast builds thousands of them per request)."""

    user_id: int
    type: str
    title: str
    message: str
    data: dict[str, Any] | None = None
    created_by: int | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """The audit row written with a request; the created ids are added to ``detail``."""

    actor_id: int | None
    action: str
    detail: dict[str, Any] = field(default_factory=dict)
    target: str | None = None


@dataclass(frozen=True, slots=True)
class CreateRequest:
    items: Sequence[NewNotification]
    actor_id: int | None = None
    idempotency_key: str | None = None
    audit: AuditEntry | None = None


@dataclass(frozen=True, slots=True)
class Created:
    """The ids of a request; ``replayed``: the key was used before, these are the first ids."""

    ids: list[int]
    replayed: bool = False


class Publisher(Protocol):
    async def publish(self, envelopes: Sequence[Envelope]) -> None: ...


Clock = Callable[[], datetime]
CommitListener = Callable[[Sequence[NewNotification], Sequence[int]], None]


class IdWatcher(Protocol):
    """Told of the ids this store is writing before their transaction commits (so that a
    reader of the table never takes them for another process's), and of those it gave up."""

    def writing(self, ids: Sequence[int]) -> None: ...

    def abandoned(self, ids: Sequence[int]) -> None: ...


@dataclass(slots=True)
class _Waiting:
    request: CreateRequest
    future: asyncio.Future[Created]

    @property
    def key(self) -> tuple[int | None, str] | None:
        r = self.request
        return None if r.idempotency_key is None else (r.actor_id, r.idempotency_key)


async def queue_writes(session: AsyncSession) -> tuple[QueueWrites, AsyncConnection]:
    """The inbox's hot statements for ``session``'s database, and its connection."""
    connection = await session.connection()
    return QueueWrites.for_dialect(connection.dialect), connection


def validate(items: Sequence[NewNotification]) -> None:
    """What the databases would refuse, refused first (ValueError naming the field).

    Each distinct text and ``data`` object is checked once: a broadcast shares them.
    """
    seen: set[int] = set()
    for n in items:
        for value in (n.title, n.message, n.data):
            if id(value) not in seen:
                seen.add(id(value))
                if isinstance(value, str):
                    check_text("title" if value is n.title else "message", value)
                else:
                    check_data(value)


class NotificationStore:
    """Creates notifications; started and closed by whoever owns it (lifespan, CLI)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        cipher: DataCipher,
        clock: Clock,
        publisher: Publisher | None = None,
        *,
        max_batch: int = 5000,
        notify_channel: str | None = None,
    ) -> None:
        self._sessions = sessions
        self._notify_channel = notify_channel
        self.cipher = cipher
        self._clock = clock
        self._publisher = publisher
        self._max_batch = max_batch
        self._pending: list[_Waiting] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        #: Called after each commit with what was stored (the server counts them).
        self.listeners: list[CommitListener] = []
        self.id_watchers: list[IdWatcher] = []

    async def start(self) -> None:
        self._closing = False
        self._task = asyncio.create_task(self._loop(), name="notification-group-commit")

    async def close(self) -> None:
        """Stop taking requests; those already waiting are committed first."""
        task, self._task = self._task, None
        if task is not None:
            self._closing = True
            self._wake.set()
            await task

    async def __aenter__(self) -> NotificationStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- group commit -------------------------------------------------------------------------

    async def create(self, request: CreateRequest) -> Created:
        """Store a request's notifications and return their ids once committed."""
        validate(request.items)
        if self._task is None:
            raise RuntimeError("the notification store is not started")
        future: asyncio.Future[Created] = asyncio.get_running_loop().create_future()
        self._pending.append(_Waiting(request, future))
        self._wake.set()
        return await future

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._commit_batch(self._take_batch())
            if self._closing:
                return

    def _take_batch(self) -> list[_Waiting]:
        """Requests in arrival order up to ``max_batch`` notifications; a second request with
        a key already in the batch waits for the next one (it will be answered as a replay)."""
        batch: list[_Waiting] = []
        keys: set[tuple[int | None, str]] = set()
        later: list[_Waiting] = []
        size = 0
        while self._pending:
            waiting = self._pending[0]
            n = len(waiting.request.items)
            if batch and size + n > self._max_batch:
                break
            self._pending.pop(0)
            key = waiting.key
            if key is not None and key in keys:
                later.append(waiting)
                continue
            if key is not None:
                keys.add(key)
            batch.append(waiting)
            size += n
        self._pending[:0] = later
        return batch

    async def _commit_batch(self, batch: list[_Waiting]) -> None:
        live = [w for w in batch if not w.future.done()]
        if not live:
            return
        try:
            if len(live) == 1:
                results = [await self._commit_one(live[0].request)]
            else:
                results = await self._commit([w.request for w in live])
        except Exception as exc:
            if len(live) == 1:
                live[0].future.set_exception(exc)
                return
            # Isolate: one request's failure must not fail the others.
            for waiting in live:
                try:
                    result = await self._commit_one(waiting.request)
                except Exception as one:
                    if not waiting.future.done():
                        waiting.future.set_exception(one)
                else:
                    if not waiting.future.done():
                        waiting.future.set_result(result)
            return
        for waiting, result in zip(live, results, strict=True):
            if not waiting.future.done():
                waiting.future.set_result(result)

    async def _commit_one(self, request: CreateRequest) -> Created:
        """One request in its own transaction, tried again when chosen as a deadlock victim
        (two requests with one key on MariaDB)."""

        async def commit() -> Created:
            (result,) = await self._commit([request])
            return result

        return await retry_deadlocks(commit)

    async def _commit(self, requests: list[CreateRequest]) -> list[Created]:
        """One transaction for ``requests``; publishes after it commits.

        A lone request whose key turns out to be taken is answered with the first ids.
        """
        now = self._clock()
        items = [n for r in requests for n in r.items]
        ids: list[int] = []
        try:
            async with self._sessions() as session:
                ids = await self.write(session, items, now)
                created: list[Created] = []
                offset = 0
                for r in requests:
                    mine = ids[offset : offset + len(r.items)]
                    offset += len(r.items)
                    created.append(Created(mine))
                    await self._remember(session, r, mine, now)
                await session.commit()
            crash_point("store.committed")
        except BaseException as exc:
            self.abandoned(ids)
            if not isinstance(exc, IntegrityError):
                raise
            if len(requests) != 1 or requests[0].idempotency_key is None:
                raise
            first = await self._first_ids(requests[0])
            if first is None:
                raise
            return [Created(first, replayed=True)]
        await self.published(items, ids, now)
        return created

    async def _remember(
        self, session: AsyncSession, r: CreateRequest, ids: list[int], now: datetime
    ) -> None:
        """The request's idempotency row and audit row, in its transaction."""
        if r.idempotency_key is not None:
            # A key older than the window may be used again: its old row goes first. Found
            # by a plain read, deleted by id: a DELETE by key that matches nothing would take
            # gap locks on MariaDB, and two requests holding them deadlock on the INSERT.
            stale = await session.scalar(
                select(IdempotencyKey.id).where(
                    IdempotencyKey.actor_id == r.actor_id,
                    IdempotencyKey.key == r.idempotency_key,
                    IdempotencyKey.created_at < now - IDEMPOTENCY_WINDOW,
                )
            )
            if stale is not None:
                await session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == stale))
            await session.execute(
                insert(IdempotencyKey).values(
                    actor_id=r.actor_id,
                    key=r.idempotency_key,
                    notification_ids=ids,
                    created_at=now,
                )
            )
        if r.audit is not None:
            if len(ids) <= AUDIT_IDS:
                listed: dict[str, Any] = {"ids": ids}
            else:
                listed = {"count": len(ids), "firstId": ids[0], "lastId": ids[-1]}
            await session.execute(
                insert(AuditLog).values(
                    actor_id=r.audit.actor_id,
                    action=r.audit.action,
                    target=r.audit.target,
                    detail={**r.audit.detail, **listed},
                    created_at=now,
                )
            )

    async def _first_ids(self, r: CreateRequest) -> list[int] | None:
        async with self._sessions() as session:
            stored = await session.scalar(
                select(IdempotencyKey.notification_ids).where(
                    IdempotencyKey.actor_id == r.actor_id, IdempotencyKey.key == r.idempotency_key
                )
            )
        return None if stored is None else [int(i) for i in stored]

    async def lookup(self, actor_id: int | None, key: str) -> list[int] | None:
        """The ids a key produced within the window, or None (a cheap check before work)."""
        async with self._sessions() as session:
            stored = await session.scalar(
                select(IdempotencyKey.notification_ids).where(
                    IdempotencyKey.actor_id == actor_id,
                    IdempotencyKey.key == key,
                    IdempotencyKey.created_at >= self._clock() - IDEMPOTENCY_WINDOW,
                )
            )
        return None if stored is None else [int(i) for i in stored]

    # -- inside a caller's transaction ----------------------------------------------------------

    async def write(
        self, session: AsyncSession, items: Sequence[NewNotification], now: datetime
    ) -> list[int]:
        """Insert ``items`` in ``session``'s transaction; ids in ``items`` order.

        The caller commits, then calls :meth:`published` — or, when its transaction does not
        commit, :meth:`abandoned`. One multi-row ``INSERT … RETURNING
        id`` per 1,000 rows; ``data`` is sealed and converted to JSON once per distinct dict
        (a broadcast shares one). The ids are sorted rather than matched row by row
        (``sort_by_parameter_order``, which SQLite can only honour one row per statement, ten
        times slower): an autoincrement key grows in ``VALUES`` order within a statement —
        the rule SQLAlchemy itself relies on for MySQL and MariaDB — and the statements run
        in order.
        """
        if not items:
            return []
        writes, connection = await queue_writes(session)
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
        for start in range(0, len(rows), ROWS_PER_INSERT):
            chunk = rows[start : start + ROWS_PER_INSERT]
            if writes.queue_head:
                flat = tuple(value for row in chunk for value in row)
                result = await connection.exec_driver_sql(writes.queue_insert(len(chunk)), flat)
            else:
                result = await connection.execute(
                    insert(QUEUE_ROWS).returning(QUEUE_ROWS.c.id),
                    [dict(zip(QUEUE_COLUMNS, row, strict=True)) for row in chunk],
                )
            ids.extend(sorted(int(i) for i in result.scalars()))
        if len(ids) != len(rows):
            raise RuntimeError(f"inserted {len(rows)} notifications but got {len(ids)} ids")
        for watcher in self.id_watchers:
            watcher.writing(ids)
        if self._notify_channel is not None:
            # PostgreSQL holds the NOTIFY until this transaction commits, and drops it on
            # rollback: listening servers hear of exactly the committed rows.
            await session.execute(
                text("SELECT pg_notify(:channel, '')"), {"channel": self._notify_channel}
            )
        return ids

    @contextlib.asynccontextmanager
    async def committing(
        self, session: AsyncSession, items: Sequence[NewNotification], now: datetime
    ) -> AsyncIterator[list[int]]:
        """Store ``items`` in ``session``'s transaction, let the caller add its own writes
        (the ids are yielded), commit, and then publish — or, when anything fails before the
        commit, tell the watchers the ids were abandoned. The one way a use case creates
        notifications inside its own transaction (outbox relay, campaigns, interventions)."""
        stored: list[int] = []
        try:
            stored = await self.write(session, items, now)
            yield stored
            await session.commit()
        except BaseException:
            self.abandoned(stored)
            raise
        await self.published(items, stored, now)

    def abandoned(self, ids: Sequence[int]) -> None:
        """``ids`` from :meth:`write` whose transaction did not commit."""
        if ids:
            for watcher in self.id_watchers:
                watcher.abandoned(ids)

    async def published(
        self, items: Sequence[NewNotification], ids: Sequence[int], now: datetime
    ) -> None:
        """After the commit of ``ids``: tell the listeners, then the broker."""
        if not ids:
            return
        for listener in self.listeners:
            listener(items, ids)
        if self._publisher is None:
            return
        # A broadcast's notifications differ only in id and user: encode the rest once.
        timestamp = iso(now)
        tails: dict[tuple[int, str, str, str], str] = {}
        created_at = now.timestamp()
        envelopes = []
        for nid, n in zip(ids, items, strict=True):
            key = (id(n.data), n.type, n.title, n.message)
            tail = tails.get(key)
            if tail is None:
                tail = tails[key] = frame_tail(n.type, n.title, n.message, n.data, timestamp)
            envelopes.append(
                Envelope("notify", n.user_id, nid, f"{FRAME_HEAD}{nid}{tail}", created_at)
            )
        try:
            await self._publisher.publish(envelopes)
        except Exception as exc:
            log.warning("publish failed (%s); the pending sweep will deliver these", exc)
