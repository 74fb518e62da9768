"""Rate limits (SPEC §7) with the ``limits`` library: in memory, or in Redis when configured.

When Redis does not answer, each limit is counted in this process instead (so with several
nodes a user may get up to one allowance per node until Redis is back): an outage of the
limiter's store never turns a request into an error.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)


class RateLimits:
    def __init__(
        self,
        redis_url: str | None,
        *,
        ws_per_minute: int,
        admin_per_minute: int,
        recompute_per_day: int = 1,
    ):
        storage: Storage
        if redis_url:
            # redis-py, which the broker uses too: limits' default async client (coredis)
            # brought beartype and numpy into every process, ~29 MB.
            storage = RedisStorage(
                "async+" + redis_url, key_prefix="treevu-limits", implementation="redispy"
            )
        else:
            storage = MemoryStorage()
        self._limiter = MovingWindowRateLimiter(storage)
        self._local = MovingWindowRateLimiter(MemoryStorage()) if redis_url else self._limiter
        self.ws_messages = RateLimitItemPerMinute(ws_per_minute)
        self.admin_notifications = RateLimitItemPerMinute(admin_per_minute)
        self.recomputes = RateLimitItemPerDay(recompute_per_day)

    async def _hit(self, item: RateLimitItem, *keys: str, cost: int = 1) -> bool:
        try:
            return await self._limiter.hit(item, *keys, cost=cost)
        except Exception as exc:
            if self._local is self._limiter:
                raise
            log.warning("rate limiter store unavailable (%s); counting in this process", exc)
            return await self._local.hit(item, *keys, cost=cost)

    async def _reset_in(self, item: RateLimitItem, *keys: str) -> int:
        try:
            stats = await self._limiter.get_window_stats(item, *keys)
        except Exception:
            stats = await self._local.get_window_stats(item, *keys)
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def ws_message(self, user_id: int) -> bool:
        """Count one socket message of ``user_id``; False when over the limit."""
        return await self._hit(self.ws_messages, "ws", str(user_id))

    async def admin_send(self, admin_id: int, count: int) -> int | None:
        """Take ``count`` notifications from the admin's minute; seconds to wait if refused."""
        if count > self.admin_notifications.amount:
            return 60
        if await self._hit(self.admin_notifications, "admin", str(admin_id), cost=count):
            return None
        return await self._reset_in(self.admin_notifications, "admin", str(admin_id))

    async def user_recompute(self, user_id: int) -> int | None:
        """One requested recompute; seconds to wait when the day's allowance is used."""
        if await self._hit(self.recomputes, "recompute", str(user_id)):
            return None
        return await self._reset_in(self.recomputes, "recompute", str(user_id))
