"""The notification store (write side) on SQLite, MariaDB and PostgreSQL.

Group commit, ``Idempotency-Key`` decided by the unique constraint (also between two stores,
as two processes would have), a failing request isolated from the ones it shared a batch with,
cancellation, closing, and limits refused before a database sees them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import event, func, select

from tests.conftest import Database, seed_and_score
from treevu.app import build_services, make_engines
from treevu.db import AuditLog, IdempotencyKey, NotificationQueue
from treevu.notifications.broker import Envelope, InProcessBroker
from treevu.services.context import Services
from treevu.services.notifications.inbox import Broadcast, CreateNotification
from treevu.services.notifications.store import (
    AuditEntry,
    CreateRequest,
    NewNotification,
    NotificationStore,
)

ADMIN = 1  # the seeded admin
USER = 2


class Heard:
    """A real in-process broker whose receiver keeps every envelope published to it."""

    def __init__(self) -> None:
        self.broker = InProcessBroker()
        self.envelopes: list[Envelope] = []

    async def start(self) -> None:
        await self.broker.start(self._receive)

    def _receive(self, envelopes: Sequence[Envelope]) -> None:
        self.envelopes.extend(envelopes)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


async def _services(db: Database, heard: Heard, clock: Clock) -> Services:
    async_engine, bulk = make_engines(db.settings())
    svc = build_services(db.settings(), async_engine, bulk)
    svc.store = NotificationStore(svc.sessions, svc.cipher, clock, heard.broker)
    await svc.open()
    return svc


async def _close(svc: Services) -> None:
    await svc.close()
    engine = svc.sessions.kw["bind"]
    await engine.dispose()
    svc.bulk_engine.dispose()


@pytest.fixture
async def two(database: Database) -> AsyncIterator[tuple[Services, Services, Heard, Clock]]:
    """Two independent stores (engines, pools, group-commit loops) over one database."""
    seed_and_score(database, n_users=60)
    heard, clock = Heard(), Clock()
    await heard.start()
    first = await _services(database, heard, clock)
    second = await _services(database, heard, clock)
    yield first, second, heard, clock
    await _close(first)
    await _close(second)


def item(title: str, user_id: int = USER, data: dict[str, Any] | None = None) -> NewNotification:
    return NewNotification(user_id, "compliance_alert", title, f"about {title}", data)


class Commits:
    """Counts the transactions an engine commits while inside the ``with`` block."""

    def __init__(self, svc: Services) -> None:
        self.engine = svc.sessions.kw["bind"].sync_engine
        self.count = 0

    def _seen(self, _conn: Any) -> None:
        self.count += 1

    def __enter__(self) -> Commits:
        event.listen(self.engine, "commit", self._seen)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "commit", self._seen)


async def count(svc: Services, model: Any, *where: Any) -> int:
    async with svc.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def test_one_key_from_twenty_concurrent_requests_on_two_stores_gives_one_set_of_rows(
    two: tuple[Services, Services, Heard, Clock],
) -> None:
    first, second, heard, _ = two

    def request(k: int) -> CreateRequest:
        return CreateRequest(
            [item(f"try {k}")],
            actor_id=ADMIN,
            idempotency_key="once",
            audit=AuditEntry(ADMIN, "notification.create", {"userId": USER}),
        )

    results = await asyncio.gather(
        *((first if k % 2 else second).store.create(request(k)) for k in range(20))
    )
    ids = {tuple(r.ids) for r in results}
    assert len(ids) == 1 and len(next(iter(ids))) == 1
    assert sum(not r.replayed for r in results) == 1
    assert await count(first, NotificationQueue, NotificationQueue.user_id == USER) == 1
    assert await count(first, IdempotencyKey) == 1
    assert await count(first, AuditLog, AuditLog.action == "notification.create") == 1
    assert [e.notification_id for e in heard.envelopes] == list(next(iter(ids)))


async def test_a_key_older_than_a_day_may_be_used_again(
    two: tuple[Services, Services, Heard, Clock],
) -> None:
    first, _, _, clock = two
    request = CreateRequest([item("weekly")], actor_id=ADMIN, idempotency_key="weekly")
    once = await first.store.create(request)
    again = await first.store.create(request)
    assert again.replayed and again.ids == once.ids
    clock.now += timedelta(hours=25)
    later = await first.store.create(request)
    assert not later.replayed and later.ids != once.ids
    assert await count(first, IdempotencyKey) == 1


async def test_a_request_the_database_refuses_fails_alone_in_its_batch(
    two: tuple[Services, Services, Heard, Clock],
) -> None:
    first, _, heard, _ = two
    good = [first.store.create(CreateRequest([item(f"good {k}")])) for k in range(40)]
    missing_user = first.store.create(CreateRequest([item("to nobody", user_id=10**6)]))
    results = await asyncio.gather(*good[:20], missing_user, *good[20:], return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1 and results.index(failed[0]) == 20
    created = [r.ids[0] for r in results if not isinstance(r, BaseException)]
    assert len(set(created)) == 40
    assert await count(first, NotificationQueue, NotificationQueue.id.in_(created)) == 40
    assert sorted(e.notification_id for e in heard.envelopes) == sorted(created)


async def test_requests_waiting_together_share_a_transaction(
    two: tuple[Services, Services, Heard, Clock],
) -> None:
    first, _, _, _ = two
    with Commits(first) as commits:
        results = await asyncio.gather(
            *(first.store.create(CreateRequest([item(f"n{k}")])) for k in range(100))
        )
    assert len({r.ids[0] for r in results}) == 100
    assert commits.count < 100


async def test_a_cancelled_request_is_not_written_and_the_others_are(
    two: tuple[Services, Services, Heard, Clock],
) -> None:
    first, _, _, _ = two
    cancelled = asyncio.create_task(first.store.create(CreateRequest([item("never")])))
    kept = asyncio.create_task(first.store.create(CreateRequest([item("kept")])))
    await asyncio.sleep(0)  # both queued, neither committed
    cancelled.cancel()
    result = await kept
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert await count(first, NotificationQueue, NotificationQueue.title == "never") == 0
    assert await count(first, NotificationQueue, NotificationQueue.id == result.ids[0]) == 1


async def test_closing_commits_what_is_waiting(
    two: tuple[Services, Services, Heard, Clock],
) -> None:
    first, _, _, _ = two
    waiting = [
        asyncio.create_task(first.store.create(CreateRequest([item(f"last {k}")])))
        for k in range(5)
    ]
    await asyncio.sleep(0)
    await first.store.close()
    assert all(len(t.result().ids) == 1 for t in waiting)
    assert await count(first, NotificationQueue, NotificationQueue.title.like("last %")) == 5
    with pytest.raises(RuntimeError, match="not started"):
        await first.store.create(CreateRequest([item("after close")]))
    await first.store.start()  # for the fixture's close


def nested(depth: int) -> dict[str, Any]:
    data: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        data = {"next": data}
    return data


def test_data_a_database_would_refuse_is_refused_at_the_boundary() -> None:
    base = {"userId": USER, "type": "milestone", "title": "t", "message": "m"}
    CreateNotification.model_validate({**base, "data": nested(16)})
    cases: list[tuple[dict[str, Any], str]] = [
        ({"data": nested(32)}, "nested deeper than 16"),
        ({"data": {"blob": "x" * 40_000}}, "bytes of JSON"),
        ({"data": {"n": float("nan")}}, "finite"),
        ({"title": "a\x00b"}, "NUL"),
    ]
    for bad, words in cases:
        with pytest.raises(ValidationError, match=words):
            CreateNotification.model_validate({**base, **bad})
    with pytest.raises(ValidationError, match="nested deeper"):
        Broadcast.model_validate({**base, "userIds": [USER], "data": nested(40)})


async def test_the_store_itself_refuses_what_a_database_would(
    two: tuple[Services, Services, Heard, Clock],
) -> None:
    """Every way in (the CLI, the relay, jobs) meets the same limits as the API."""
    first, _, _, _ = two
    shared = nested(20)
    with pytest.raises(ValueError, match="nested deeper than 16"):
        await first.store.create(CreateRequest([item(f"deep {k}", data=shared) for k in range(3)]))
    with pytest.raises(ValueError, match="message: must not contain a NUL"):
        await first.store.create(
            CreateRequest([NewNotification(USER, "milestone", "ok", "bad\x00message")])
        )
    assert await count(first, NotificationQueue, NotificationQueue.title.like("deep %")) == 0
