"""What every use case receives: who is asking, and the resources the app's lifespan owns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cachetools import TTLCache
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
    """Admin statistics, cached until the data changes or the TTL runs out.

    Each entry is keyed by the newest ``employee_segments.lastUpdated`` (an indexed MAX, cheap on
    every backend), so a recompute from any process — the CLI, another node — invalidates it.
    """

    def __init__(self, ttl_seconds: float) -> None:
        self._entries: TTLCache[Hashable, Any] = TTLCache(maxsize=4096, ttl=max(ttl_seconds, 1))
        self._enabled = ttl_seconds > 0

    async def get(self, key: Hashable, version: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        if not self._enabled:
            return await compute()
        full = (key, version)
        if full in self._entries:
            value: T = self._entries[full]
            return value
        value = await compute()
        self._entries[full] = value
        return value

    def clear(self) -> None:
        self._entries.clear()


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
        """Commit what is waiting, then let go of the broker's connection."""
        await self.store.close()
        await self.broker.close()
