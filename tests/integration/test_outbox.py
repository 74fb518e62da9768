"""The transactional outbox on SQLite, MariaDB and PostgreSQL: a change of segment is an event
committed with the change; relays turn events into notifications exactly once, however many run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tests.conftest import Database, LiveServer, token_for
from tests.integration.workflow import rows, sync_engine
from treevu.app import build_services, make_engines
from treevu.client import NotificationClient
from treevu.db import (
    EmployeeInputs,
    EmployeeSegment,
    NotificationPreferences,
    NotificationQueue,
    OutboxEvent,
    SegmentHistory,
)
from treevu.segmentation.policy import default_policy
from treevu.services.context import Services
from treevu.services.notifications.store import CreateRequest, NewNotification
from treevu.services.segmentation.recompute import recompute

#: Inputs that place anyone in crisis_intervention (fwiScore well under 30).
CRISIS: dict[str, Any] = {
    "monthly_income": 2000.0,
    "monthly_spending": 2600.0,
    "savings_balance": 0.0,
    "monthly_debt_payments": 1200.0,
    "ewa_advances_30d": 5,
    "alerts_30d": 6,
    "survey_score": None,
}


def push_into_crisis(db: Database, how_many: int) -> list[int]:
    """Give ``how_many`` people outside crisis the inputs of someone in crisis."""
    engine = sync_engine(db)
    try:
        with Session(engine) as session, session.begin():
            users = list(
                session.scalars(
                    select(EmployeeSegment.user_id)
                    .where(EmployeeSegment.segment != "crisis_intervention")
                    .order_by(EmployeeSegment.user_id)
                    .limit(how_many)
                )
            )
            session.execute(
                update(EmployeeInputs).where(EmployeeInputs.user_id.in_(users)).values(**CRISIS)
            )
    finally:
        engine.dispose()
    return users


def recompute_all(db: Database) -> int:
    engine = sync_engine(db)
    try:
        result = recompute(engine, default_policy(), now=datetime.now(UTC))
    finally:
        engine.dispose()
    return len(result.segment_changes)


async def open_services(db: Database) -> Services:
    async_engine, bulk = make_engines(db.settings())
    svc = build_services(db.settings(), async_engine, bulk)
    await svc.open()
    return svc


async def close_services(svc: Services) -> None:
    await svc.close()
    await svc.sessions.kw["bind"].dispose()
    svc.bulk_engine.dispose()


@pytest.fixture
async def relays(seeded: Database) -> AsyncIterator[tuple[Services, Services]]:
    """Two independent relays (as two servers would have) over one database."""
    first, second = await open_services(seeded), await open_services(seeded)
    yield first, second
    await close_services(first)
    await close_services(second)


def notified_users(db: Database) -> list[int]:
    """Who was told they entered crisis (the employee's own intervention_update, with
    ``crisis: true``; managers and counselors get theirs too, without it)."""
    return [
        uid
        for (uid, data) in rows(
            db,
            select(NotificationQueue.user_id, NotificationQueue.data)
            .where(NotificationQueue.type == "intervention_update")
            .order_by(NotificationQueue.user_id),
        )
        if (data or {}).get("crisis") is True
    ]


async def test_a_change_of_segment_is_committed_with_its_event_and_relayed_once(
    seeded: Database, relays: tuple[Services, Services]
) -> None:
    first, _ = relays
    moved = push_into_crisis(seeded, 12)
    assert recompute_all(seeded) == 12
    events = rows(seeded, select(OutboxEvent.user_id, OutboxEvent.kind, OutboxEvent.payload))
    assert sorted(uid for uid, _, _ in events) == moved
    assert {kind for _, kind, _ in events} == {"segment.changed"}
    assert all(p["toSegment"] == "crisis_intervention" for _, _, p in events)
    history = rows(
        seeded,
        select(func.count())
        .select_from(SegmentHistory)
        .where(
            SegmentHistory.user_id.in_(moved), SegmentHistory.to_segment == "crisis_intervention"
        ),
    )
    assert history[0][0] == 12
    assert notified_users(seeded) == []  # nothing is told before a relay runs

    assert await first.relay.drain() == 12
    assert await first.relay.drain() == 0
    assert notified_users(seeded) == moved
    data = rows(seeded, select(NotificationQueue.data).where(NotificationQueue.user_id == moved[0]))
    assert data[0][0]["crisis"] is True and data[0][0]["toSegment"] == "crisis_intervention"
    pending = rows(seeded, select(OutboxEvent.id).where(OutboxEvent.processed_at.is_(None)))
    assert pending == []
    assert recompute_all(seeded) == 0  # nothing changed, no event


async def test_two_relays_racing_notify_each_event_exactly_once(
    seeded: Database, relays: tuple[Services, Services]
) -> None:
    first, second = relays
    first.relay._batch = second.relay._batch = 7  # many small claims: many chances to collide
    moved = push_into_crisis(seeded, 90)
    assert recompute_all(seeded) == 90
    done = await asyncio.gather(
        first.relay.drain(), second.relay.drain(), first.relay.drain(), second.relay.drain()
    )
    assert sum(done) == 90
    assert notified_users(seeded) == moved


async def test_muted_recommendations_are_skipped_but_crisis_is_never_muted(
    seeded: Database, relays: tuple[Services, Services]
) -> None:
    first, _ = relays
    (crisis_user,) = push_into_crisis(seeded, 1)
    engine = sync_engine(seeded)
    try:
        with Session(engine) as session, session.begin():
            session.add(
                NotificationPreferences(
                    user_id=crisis_user,
                    enable_tier_upgrades=False,
                    enable_milestones=False,
                    enable_recommendations=False,
                    muted_types=["intervention_update", "recommendation"],
                )
            )
    finally:
        engine.dispose()
    recompute_all(seeded)
    await first.relay.drain()
    assert notified_users(seeded) == [crisis_user]


async def test_a_server_delivers_rows_another_process_stored_without_a_broker(
    seeded: Database,
) -> None:
    """No Redis: the CLI's store publishes to nobody; the server's tail finds the row — on
    PostgreSQL woken by ``LISTEN``/``NOTIFY``: with the polls an hour apart, only the
    notification can bring it within the client's 10 s."""
    user = 2
    slow = {"tail_interval": 3600.0, "sweep_interval": 3600.0}
    settings = seeded.settings(**(slow if seeded.backend == "postgresql" else {}))
    with LiveServer(settings) as server:
        other = await open_services(seeded)  # its own engine and broker: another process
        try:
            async with NotificationClient(
                f"ws://127.0.0.1:{server.port}/ws", token_for(seeded, user)
            ) as client:
                created = await other.store.create(
                    CreateRequest([NewNotification(user, "milestone", "From the CLI", "hello")])
                )
                async with asyncio.timeout(10):
                    got = await client.next_notification()
                assert got.id == created.ids[0] and got.title == "From the CLI"
        finally:
            await close_services(other)
