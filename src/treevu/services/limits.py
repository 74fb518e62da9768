"""Rate limits (SPEC §7) with the ``limits`` library: in memory, or in Redis when configured."""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerDay, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter


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
            storage = RedisStorage("async+" + redis_url, key_prefix="treevu-limits")
        else:
            storage = MemoryStorage()
        self._limiter = MovingWindowRateLimiter(storage)
        self.ws_messages = RateLimitItemPerMinute(ws_per_minute)
        self.admin_notifications = RateLimitItemPerMinute(admin_per_minute)
        self.recomputes = RateLimitItemPerDay(recompute_per_day)

    async def ws_message(self, user_id: int) -> bool:
        """Count one socket message of ``user_id``; False when over the limit."""
        return await self._limiter.hit(self.ws_messages, "ws", str(user_id))

    async def admin_send(self, admin_id: int, count: int) -> int | None:
        """Take ``count`` notifications from the admin's minute; seconds to wait if refused."""
        if count > self.admin_notifications.amount:
            return 60
        if await self._limiter.hit(self.admin_notifications, "admin", str(admin_id), cost=count):
            return None
        stats = await self._limiter.get_window_stats(
            self.admin_notifications, "admin", str(admin_id)
        )
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def user_recompute(self, user_id: int) -> int | None:
        """One requested recompute; seconds to wait when the day's allowance is used."""
        if await self._limiter.hit(self.recomputes, "recompute", str(user_id)):
            return None
        stats = await self._limiter.get_window_stats(self.recomputes, "recompute", str(user_id))
        return max(1, math.ceil(stats.reset_time - time.time()))
