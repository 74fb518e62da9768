"""StatsCache: stale-while-revalidate, one refresh per key, warms that share a run.

No timing: computations are held on events, and what ran is counted.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from treevu.services.context import StatsCache


class Computation:
    """A statistic whose computations are counted, and held until ``release()``."""

    def __init__(self, value: int, *, held: bool = False) -> None:
        self.value = value
        self.calls = 0
        self.finished = 0
        self.gate = asyncio.Event()
        if not held:
            self.gate.set()

    async def __call__(self) -> int:
        self.calls += 1
        await self.gate.wait()
        self.finished += 1
        return self.value

    def release(self) -> None:
        self.gate.set()


async def settle() -> None:
    """Let every ready task run to its next wait."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_fresh_entry_is_served_without_computing() -> None:
    cache = StatsCache(60)
    first = Computation(1)
    assert await cache.get("k", "v1", first) == 1
    again = Computation(2)
    assert await cache.get("k", "v1", again) == 1
    assert again.calls == 0


async def test_after_a_write_the_old_value_is_served_and_one_refresh_runs() -> None:
    cache = StatsCache(60)
    assert await cache.get("k", "v1", Computation(1)) == 1

    refresh = Computation(2, held=True)
    # The version moved: 20 concurrent requests get the old value at once, none computes.
    answers = await asyncio.gather(*(cache.get("k", "v2", refresh) for _ in range(20)))
    assert answers == [1] * 20
    assert refresh.finished == 0
    await settle()
    assert refresh.calls == 1  # exactly one background refresh for the key
    assert cache.refreshing("k") is not None

    refresh.release()
    await settle()
    assert cache.refreshing("k") is None
    later = Computation(3)
    assert await cache.get("k", "v2", later) == 2  # the refreshed value, nothing recomputed
    assert later.calls == 0
    assert refresh.calls == 1


async def test_refreshes_of_different_keys_run_one_after_another() -> None:
    cache = StatsCache(60)
    await cache.get("a", "v1", Computation(1))
    await cache.get("b", "v1", Computation(10))
    a, b = Computation(2, held=True), Computation(20, held=True)
    # One write moved every statistic's version: both are served stale, one scan at a time.
    assert await cache.get("a", "v2", a) == 1
    assert await cache.get("b", "v2", b) == 10
    await settle()
    assert (a.calls, b.calls) == (1, 0)
    assert cache.refreshing("b") is not None  # queued: requests for b start nothing more
    assert await cache.get("b", "v2", b) == 10
    a.release()
    await settle()
    assert (a.calls, b.calls) == (1, 1)
    b.release()
    await settle()
    assert await cache.get("a", "v2", Computation(0)) == 2
    assert await cache.get("b", "v2", Computation(0)) == 20
    assert (a.calls, b.calls) == (1, 1)


async def test_a_key_never_cached_does_not_wait_for_background_refreshes() -> None:
    cache = StatsCache(60)
    await cache.get("a", "v1", Computation(1))
    held = Computation(2, held=True)
    assert await cache.get("a", "v2", held) == 1
    await settle()
    assert await cache.get("cold", "v2", Computation(5)) == 5
    held.release()
    await settle()


async def test_a_failed_refresh_is_logged_and_the_old_value_stays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = StatsCache(60)
    await cache.get("k", "v1", Computation(1))

    async def broken() -> int:
        raise RuntimeError("database went away")

    with caplog.at_level(logging.ERROR, logger="treevu.services.context"):
        assert await cache.get("k", "v2", broken) == 1
        await settle()
    assert "refreshing the statistics 'k' failed" in caplog.text
    # Still stale: the next request serves the old value and tries again.
    retry = Computation(2)
    assert await cache.get("k", "v2", retry) == 1
    await settle()
    assert retry.calls == 1
    assert await cache.get("k", "v2", Computation(0)) == 2


async def test_nothing_cached_is_computed_in_the_request_once_for_all() -> None:
    cache = StatsCache(60)
    cold = Computation(7, held=True)
    waiting = [asyncio.ensure_future(cache.get("k", "v1", cold)) for _ in range(10)]
    await settle()
    assert cold.calls == 1 and not any(w.done() for w in waiting)
    cold.release()
    assert await asyncio.gather(*waiting) == [7] * 10
    assert cold.calls == 1


async def test_a_cold_failure_reaches_the_request() -> None:
    cache = StatsCache(60)

    async def broken() -> int:
        raise RuntimeError("no table")

    with pytest.raises(RuntimeError, match="no table"):
        await cache.get("k", "v1", broken)
    assert await cache.get("k", "v1", Computation(1)) == 1


async def test_an_entry_past_its_ttl_is_served_stale_and_refreshed() -> None:
    now = [0.0]
    cache = StatsCache(60, clock=lambda: now[0])
    await cache.get("k", "v1", Computation(1))
    now[0] = 61.0
    refresh = Computation(2)
    assert await cache.get("k", "v1", refresh) == 1
    await settle()
    assert refresh.calls == 1
    assert await cache.get("k", "v1", Computation(0)) == 2


async def test_refresh_stores_at_once_and_wins_over_an_older_computation() -> None:
    cache = StatsCache(60)
    await cache.get("k", "v1", Computation(1))
    slow = Computation(2, held=True)
    assert await cache.get("k", "v2", slow) == 1  # a background refresh, started first
    await settle()
    assert await cache.refresh("k", "v3", Computation(3)) == 3
    assert await cache.get("k", "v3", Computation(0)) == 3
    slow.release()
    await settle()
    # The background refresh started before the warm: it saw older data and is dropped.
    assert await cache.get("k", "v3", Computation(0)) == 3


async def test_cleared_cache_ignores_computations_already_running() -> None:
    cache = StatsCache(60)
    await cache.get("k", "v1", Computation(1))
    slow = Computation(2, held=True)
    await cache.get("k", "v2", slow)
    await settle()
    cache.clear()
    slow.release()
    await settle()
    assert cache.keys() == []


async def test_concurrent_warms_share_runs_that_start_after_each_call() -> None:
    cache = StatsCache(60)
    runs: list[asyncio.Event] = []

    async def work() -> int:
        gate = asyncio.Event()
        runs.append(gate)
        await gate.wait()
        return len(runs)

    first = asyncio.ensure_future(cache.warm(work))
    await settle()
    assert len(runs) == 1
    # Five more callers while the first run is under way: they need a run that starts after
    # their call, and share one.
    later = [asyncio.ensure_future(cache.warm(work)) for _ in range(5)]
    await settle()
    assert len(runs) == 1
    runs[0].set()
    await settle()
    assert first.done() and first.result() == 1
    assert len(runs) == 2 and not any(w.done() for w in later)
    runs[1].set()
    assert await asyncio.gather(*later) == [2] * 5
    assert len(runs) == 2


async def test_disabled_cache_always_computes() -> None:
    cache = StatsCache(0)
    counted = Computation(1)
    await cache.get("k", "v1", counted)
    await cache.get("k", "v1", counted)
    assert counted.calls == 2


async def test_close_stops_the_refreshes_and_warms_under_way() -> None:
    """Shutdown leaves no computation pending on a loop that is about to close."""
    cache = StatsCache(60)
    assert await cache.get("k", "v1", Computation(1)) == 1
    refresh = Computation(2, held=True)
    assert await cache.get("k", "v2", refresh) == 1
    warm = Computation(3, held=True)
    cache.warm_in_background(warm)
    await settle()
    assert refresh.calls == 1 and warm.calls == 1
    await cache.close()
    assert cache.refreshing("k") is None
    await cache.settle()  # nothing left in the background
    assert refresh.finished == 0 and warm.finished == 0
