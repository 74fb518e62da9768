"""What every use case receives: who is asking, and the resources the app's lifespan owns."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from treevu.config import Settings
from treevu.notifications.broker import Broker
from treevu.notifications.crypto import DataCipher
from treevu.segmentation.policy import Policy
from treevu.services.errors import forbidden
from treevu.services.limits import RateLimits
from treevu.services.notifications.store import Clock, NotificationStore
from treevu.services.outbox import OutboxRelay

T = TypeVar("T")
log = logging.getLogger(__name__)
#: Cached statistics kept at most (the least recently stored go first).
STATS_CACHE_ENTRIES: Final = 4096
__all__ = ["Actor", "Clock", "Services", "StatsCache"]


@dataclass(frozen=True, slots=True)
class Actor:
    user_id: int
    role: str
    manager_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def require_admin(self) -> None:
        if not self.is_admin:
            raise forbidden("admins only")


class StatsCache:
    """Admin statistics kept in memory and refreshed off the request path.

    Each entry remembers the data version it was computed at (the caller's cheap probe: newest
    ``employee_segments.lastUpdated`` and the inactive count), so a write from any process —
    the CLI, another node — is noticed. A request whose version matches a fresh entry gets it.
    When the version moved (or the entry is older than the TTL) the old value is served at
    once and one background refresh of that key starts (stale-while-revalidate: concurrent
    requests share it; its errors are logged, never raised into a request). Background
    refreshes run one at a time: one write moves every statistic's version, and a dozen scans
    side by side slowed the requests served meanwhile. Only a key with nothing cached is
    computed in the request, once for all who ask meanwhile. ``refresh`` computes and stores at
    once; ``warm`` runs a refresh of everything for any number of callers (after an in-process
    recompute, and the hourly job), ``warm_in_background`` without waiting for it. A
    later-started computation of a key is never overwritten by an earlier one.
    """

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = max(ttl_seconds, 1)
        self._enabled = ttl_seconds > 0
        self._clock = clock
        self._entries: OrderedDict[Hashable, _StatsEntry] = OrderedDict()
        self._running: dict[Hashable, asyncio.Task[Any]] = {}
        self._tickets = itertools.count(1)
        self._cleared = 0  # tickets up to this one were taken before the last clear()
        self._warming: asyncio.Task[Any] | None = None
        self._queue: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._warm_ticket = 0  # when the newest warm started

    async def get(self, key: Hashable, version: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        if not self._enabled:
            return await compute()
        entry = self._entries.get(key)
        if entry is None:
            task = self._start(key, version, compute, queued=False)
            value: T = await asyncio.shield(task)
            return value
        if entry.version != version or self._clock() - entry.stored_at > self._ttl:
            self._start(key, version, compute, queued=True)
        stale: T = entry.value
        return stale

    async def refresh(
        self, key: Hashable, version: Hashable, compute: Callable[[], Awaitable[T]]
    ) -> T:
        """Compute now and store (a later-started computation of the key is never overwritten)."""
        ticket = next(self._tickets)
        value = await compute()
        self._store(key, version, value, ticket)
        return value

    async def warm(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``work`` (a refresh of every statistic) once for any number of callers: whoever
        calls while a warm runs waits for it to end, then shares one more that starts after
        their call (so it sees their write)."""
        asked = next(self._tickets)
        loop = asyncio.get_running_loop()
        while True:
            task = self._warming
            if task is None or task.done() or task.get_loop() is not loop:
                self._warm_ticket = next(self._tickets)
                task = self._warming = loop.create_task(work())
                task.add_done_callback(_retrieved)
            started = self._warm_ticket
            value: T = await asyncio.shield(task)
            if started > asked:
                return value

    def warm_in_background(self, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """``warm`` without waiting for it (its errors are logged): after a recompute of a few
        people, whose caller should not wait for every statistic to be computed again."""
        task = asyncio.get_running_loop().create_task(self.warm(work))
        self._background.add(task)
        task.add_done_callback(self._warmed)

    async def settle(self) -> None:
        """Wait for the warms started in the background (tests, shutdown)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def close(self) -> None:
        """Stop the warms under way (shutdown: their answers would be for nobody)."""
        tasks = [*self._background, *self._running.values()]
        tasks += [self._warming] if self._warming else []
        tasks = [t for t in tasks if not t.done() and t.get_loop() is asyncio.get_running_loop()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _warmed(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("warming the statistics failed", exc_info=error)

    def refreshing(self, key: Hashable) -> asyncio.Task[Any] | None:
        """The background computation of ``key`` running on this event loop, if any."""
        task = self._running.get(key)
        if task is None or task.done() or task.get_loop() is not _running_loop():
            return None
        return task

    def keys(self) -> list[Hashable]:
        return list(self._entries)

    def clear(self) -> None:
        """Forget every entry; computations already running store nothing."""
        self._entries.clear()
        self._running.clear()
        self._cleared = next(self._tickets)

    def _start(
        self,
        key: Hashable,
        version: Hashable,
        compute: Callable[[], Awaitable[T]],
        *,
        queued: bool,
    ) -> asyncio.Task[Any]:
        """The computation of ``key`` running on this loop, or a new one. ``queued``
        (a background refresh): it waits for the one before it to end, so that a write
        seen by many statistics at once does not start as many scans side by side."""
        task = self.refreshing(key)
        if task is not None:
            return task
        loop = asyncio.get_running_loop()
        work = (
            self._queued(key, version, compute) if queued else self.refresh(key, version, compute)
        )
        task = loop.create_task(work)
        self._running[key] = task
        task.add_done_callback(functools.partial(self._refreshed, key))
        return task

    async def _queued(
        self, key: Hashable, version: Hashable, compute: Callable[[], Awaitable[T]]
    ) -> T:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._queue[0] is not loop:
            self._queue = (loop, asyncio.Lock())
        async with self._queue[1]:
            return await self.refresh(key, version, compute)

    def _refreshed(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("refreshing the statistics %r failed", key, exc_info=error)

    def _store(self, key: Hashable, version: Hashable, value: Any, ticket: int) -> None:
        entry = self._entries.get(key)
        if ticket <= self._cleared or (entry is not None and entry.ticket > ticket):
            return
        self._entries[key] = _StatsEntry(version, value, self._clock(), ticket)
        self._entries.move_to_end(key)
        while len(self._entries) > STATS_CACHE_ENTRIES:
            self._entries.popitem(last=False)


@dataclass(frozen=True, slots=True)
class _StatsEntry:
    version: Hashable
    value: Any
    stored_at: float
    ticket: int  # the order its computation started in: a later start saw newer data


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Mark a shared task's error as seen: its callers get it, even if all of them left."""
    if not task.cancelled():
        task.exception()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


@dataclass(slots=True)
class Services:
    """Resources shared by all use cases; created and closed by the app's lifespan or the CLI.

    Everything here works without a socket hub: the store writes notifications, the relay
    turns outbox events into them, the broker (publish-only outside the server) tells the
    servers after each commit.
    """

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    bulk_engine: Engine
    policy: Policy
    clock: Clock
    cipher: DataCipher
    broker: Broker
    store: NotificationStore
    relay: OutboxRelay
    stats_cache: StatsCache = field(default_factory=lambda: StatsCache(3600))
    limits: RateLimits = field(
        default_factory=lambda: RateLimits(None, ws_per_minute=100, admin_per_minute=1000)
    )

    async def open(self) -> None:
        await self.store.start()

    async def close(self) -> None:
        """Stop the statistics' warms, commit what is waiting, then let go of the broker's
        connection."""
        await self.stats_cache.close()
        await self.store.close()
        await self.broker.close()
