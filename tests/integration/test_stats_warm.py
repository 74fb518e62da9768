"""Admin statistics right after a write, on SQLite, MariaDB and PostgreSQL: a recompute in
this process warms them before it returns; a write from elsewhere is served stale at once and
refreshed in the background."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.conftest import Database
from tests.integration.test_outbox import (
    close_services,
    open_services,
    push_into_crisis,
)
from tests.integration.workflow import sync_engine
from treevu.db import EmployeeSegment
from treevu.segmentation.policy import SEGMENTS, default_policy
from treevu.services.context import Actor, Services
from treevu.services.segmentation import queries
from treevu.services.segmentation.queries import Empty, SegmentInput
from treevu.services.segmentation.recompute import recompute

ADMIN = Actor(1, "admin")
STANDARD_KEYS = {"segments", "risk", *(("stats", s) for s in SEGMENTS)}


@pytest.fixture
async def services(seeded: Database) -> AsyncIterator[Services]:
    svc = await open_services(seeded)
    yield svc
    await close_services(svc)


async def stored_counts(svc: Services) -> dict[str, int]:
    async with svc.sessions() as session:
        rows = await session.execute(
            select(EmployeeSegment.segment, func.count()).group_by(EmployeeSegment.segment)
        )
        return {str(segment): int(n) for segment, n in rows.all()}


def counts_of(distribution: queries.Distribution) -> dict[str, int]:
    return {b.name: b.count for b in distribution.buckets if b.count}


async def never(*_: Any) -> Any:
    raise AssertionError("computed in the request")


async def test_a_recompute_of_everyone_warms_the_statistics_before_it_returns(
    seeded: Database, services: Services
) -> None:
    svc = services
    assert svc.stats_cache.keys() == []
    push_into_crisis(seeded, 3)
    result = await queries.run_recompute(svc, None)
    assert len(result.segment_changes) == 3

    assert STANDARD_KEYS <= set(svc.stats_cache.keys())
    # Served from memory: an entry at the current version is returned without computing.
    version = await queries._data_version(svc)
    cached = await svc.stats_cache.get("segments", version, never)
    assert counts_of(cached) == await stored_counts(svc)
    stats = await svc.stats_cache.get(("stats", "crisis_intervention"), version, never)
    assert stats.count == (await stored_counts(svc))["crisis_intervention"]


async def test_a_recompute_of_some_people_warms_them_in_the_background(
    seeded: Database, services: Services
) -> None:
    svc = services
    before = counts_of(await queries.get_segment_distribution(svc, ADMIN, Empty()))
    moved = push_into_crisis(seeded, 2)
    await queries.run_recompute(svc, moved)
    await svc.stats_cache.settle()
    version = await queries._data_version(svc)
    after = counts_of(await svc.stats_cache.get("segments", version, never))
    assert after == await stored_counts(svc)
    assert after["crisis_intervention"] == before.get("crisis_intervention", 0) + 2
    assert STANDARD_KEYS <= set(svc.stats_cache.keys())


async def test_the_next_request_after_a_recompute_here_sees_it(
    seeded: Database, services: Services
) -> None:
    svc = services
    before = counts_of(await queries.get_segment_distribution(svc, ADMIN, Empty()))
    crisis = await queries.get_segment_stats(
        svc, ADMIN, SegmentInput(segment="crisis_intervention")
    )
    targets = await queries.get_campaign_targets(
        svc,
        ADMIN,
        queries.CampaignTargetsInput(segment="crisis_intervention", campaign_type="intervention"),
    )
    push_into_crisis(seeded, 2)
    await queries.run_recompute(svc, None)

    after = counts_of(await queries.get_segment_distribution(svc, ADMIN, Empty()))
    assert after["crisis_intervention"] == before.get("crisis_intervention", 0) + 2
    assert after == await stored_counts(svc)
    stats = await queries.get_segment_stats(svc, ADMIN, SegmentInput(segment="crisis_intervention"))
    assert stats.count == crisis.count + 2
    # The campaign-target total someone asked for was warmed too.
    new_targets = await queries.get_campaign_targets(
        svc,
        ADMIN,
        queries.CampaignTargetsInput(segment="crisis_intervention", campaign_type="intervention"),
    )
    assert new_targets.total == targets.total + 2


async def test_a_write_from_elsewhere_is_served_stale_then_refreshed(
    seeded: Database, services: Services
) -> None:
    svc = services
    before = counts_of(await queries.get_segment_distribution(svc, ADMIN, Empty()))
    # Another process (the CLI, another node) recomputes: this cache is not told.
    # (A second later: MariaDB keeps lastUpdated in whole seconds, and the version with it.)
    push_into_crisis(seeded, 4)
    engine = sync_engine(seeded)
    try:
        later = datetime.now(UTC) + timedelta(seconds=2)
        assert len(recompute(engine, default_policy(), now=later).segment_changes) == 4
    finally:
        engine.dispose()

    stale = counts_of(await queries.get_segment_distribution(svc, ADMIN, Empty()))
    assert stale == before
    refresh = svc.stats_cache.refreshing("segments")
    assert refresh is not None
    await refresh
    fresh = counts_of(await queries.get_segment_distribution(svc, ADMIN, Empty()))
    assert fresh == await stored_counts(svc)
    assert fresh["crisis_intervention"] == before.get("crisis_intervention", 0) + 4


async def test_the_statistics_job_warms_every_statistic(services: Services) -> None:
    svc = services
    warmed = await queries.warm_statistics(svc)
    assert warmed == len(STANDARD_KEYS)
    assert STANDARD_KEYS <= set(svc.stats_cache.keys())
    version = await queries._data_version(svc)
    stats = await asyncio.gather(
        *(svc.stats_cache.get(("stats", s), version, never) for s in SEGMENTS)
    )
    assert sum(s.count for s in stats) == sum((await stored_counts(svc)).values())
