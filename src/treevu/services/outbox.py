"""The outbox relay: domain events, written with the change that caused them, become
notifications — exactly once, with any number of relays running.

A relay claims a batch of unprocessed events (``SELECT … FOR UPDATE SKIP LOCKED`` where the
database has it, then ``UPDATE … SET processedAt WHERE processedAt IS NULL``, whose row count
proves the claim on every database), turns them into notifications through the handlers, and
stores those notifications in the same transaction as the claim. A relay killed at any point
leaves either the events unclaimed and no notifications, or both committed. An event with an
``availableAt`` waits until then (paced sending: each batch of a compliance alert has its
minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from sqlalchemy import or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from treevu.db import OutboxEvent
from treevu.services.notifications.store import Clock, NewNotification, NotificationStore

log = logging.getLogger(__name__)

Handler = Callable[[AsyncSession, Sequence[OutboxEvent]], Awaitable[list[NewNotification]]]


class _Contended(Exception):
    """Another relay claimed some of the events first."""


class OutboxRelay:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        store: NotificationStore,
        clock: Clock,
        handlers: Mapping[str, Handler],
        *,
        batch: int = 1000,
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._clock = clock
        self._handlers = dict(handlers)
        self._batch = batch
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Events were just committed: relay them now rather than at the next pass."""
        self._wake.set()

    async def run(self, interval: float) -> None:
        """Relay forever: every ``interval`` seconds, and whenever woken."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.drain()
            except Exception:
                log.exception("outbox relay failed; will retry")

    async def drain(self) -> int:
        """Relay until no unclaimed event is left; returns how many this relay processed."""
        total = 0
        contended = 0
        while True:
            try:
                done = await self.relay_once()
            except (_Contended, DBAPIError) as exc:
                # Lost a race (or a deadlock victim on MariaDB): the winner has those events.
                contended += 1
                if contended > 50:
                    raise
                log.debug("outbox claim contended: %s", exc)
                await asyncio.sleep(0.01 * contended)
                continue
            if done == 0:
                return total
            total += done

    async def relay_once(self) -> int:
        """Claim and process up to ``batch`` events in one transaction; 0 when none is left."""
        async with self._sessions() as session:
            pending = (
                OutboxEvent.processed_at.is_(None),
                or_(OutboxEvent.available_at.is_(None), OutboxEvent.available_at <= self._clock()),
            )
            ids = list(
                await session.scalars(
                    select(OutboxEvent.id)
                    .where(*pending)
                    .order_by(OutboxEvent.id)
                    .limit(self._batch)
                    .with_for_update(skip_locked=True)
                )
            )
            if not ids:
                return 0
            now = self._clock()
            claimed = await session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id.in_(ids), OutboxEvent.processed_at.is_(None))
                .values(processed_at=now)
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != len(ids):  # type: ignore[attr-defined]
                await session.rollback()
                raise _Contended(f"claimed {claimed.rowcount} of {len(ids)} events")  # type: ignore[attr-defined]
            events = list(
                await session.scalars(
                    select(OutboxEvent).where(OutboxEvent.id.in_(ids)).order_by(OutboxEvent.id)
                )
            )
            items: list[NewNotification] = []
            by_kind: dict[str, list[OutboxEvent]] = {}
            for event in events:
                by_kind.setdefault(event.kind, []).append(event)
            for kind, of_kind in by_kind.items():
                handler = self._handlers.get(kind)
                if handler is None:
                    log.warning("no handler for %d outbox event(s) of kind %r", len(of_kind), kind)
                    continue
                items.extend(await handler(session, of_kind))
            async with self._store.committing(session, items, now):
                pass
        return len(ids)
