"""The delivery side on its own, over a real SQLite database and a real hub: the tail of rows
other processes stored, sent marks that survive a failed flush, acknowledgements that only
the owner can give, and closing that writes what is waiting.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from tests.conftest import Database, seed_and_score
from treevu.app import make_engines
from treevu.db import AuditLog, NotificationQueue
from treevu.notifications.crypto import DataCipher
from treevu.notifications.hub import Hub
from treevu.notifications.metrics import Metrics
from treevu.services.notifications.delivery import Delivery
from treevu.services.notifications.store import (
    CreateRequest,
    NewNotification,
    NotificationStore,
)

KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


class Socket:
    """The far end of a connection: keeps every frame written to it."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    async def send_text(self, text: str) -> None:
        self.frames.append(json.loads(text))

    async def close(self, code: int, reason: str) -> None:
        pass

    def ids(self) -> list[int]:
        return [f["notification"]["id"] for f in self.frames if f["type"] == "notification"]


class Side:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        cipher = DataCipher(KEY)
        clock = lambda: datetime.now(UTC)  # noqa: E731
        self.sessions = sessions
        self.hub = Hub(queue_size=100, on_sent=lambda c, f: self.delivery.on_sent(c, f))
        self.delivery = Delivery(sessions, cipher, self.hub, Metrics(), clock)
        self.store = NotificationStore(sessions, cipher, clock)  # publishes to no one
        self.other = NotificationStore(sessions, cipher, clock)  # "another process"
        self.store.id_watchers.append(self.delivery)


@pytest.fixture
async def side(sqlite_database: Database) -> AsyncIterator[Side]:
    seed_and_score(sqlite_database, n_users=20)
    engine, bulk = make_engines(sqlite_database.settings())
    bulk.dispose()
    side = Side(async_sessionmaker(engine, expire_on_commit=False))
    await side.store.start()
    await side.other.start()
    await side.delivery.start()
    yield side
    await side.delivery.close()
    await side.store.close()
    await side.other.close()
    await engine.dispose()


def note(user_id: int, title: str) -> CreateRequest:
    return CreateRequest([NewNotification(user_id, "milestone", title, "…")])


async def statuses(side: Side, ids: list[int]) -> list[str]:
    async with side.sessions() as session:
        rows = await session.execute(
            select(NotificationQueue.status)
            .where(NotificationQueue.id.in_(ids))
            .order_by(NotificationQueue.id)
        )
        return [str(s) for (s,) in rows]


async def test_tail_offers_what_other_processes_stored_and_skips_its_own(side: Side) -> None:
    alice, bob = Socket(), Socket()
    side.hub.connect(2, float("inf"), alice).end_replay()  # a session past its replay
    side.hub.connect(3, float("inf"), bob).end_replay()
    assert await side.delivery.tail() == 0  # the first look only sets the starting point
    mine = await side.store.create(note(2, "stored here"))
    assert await side.delivery.tail() == 0  # this process's own rows are not read again
    theirs = [(await side.other.create(note(u, f"from elsewhere {u}"))).ids[0] for u in (2, 3, 4)]
    assert await side.delivery.tail() == 2  # user 4 is not connected here
    assert await side.delivery.tail() == 0
    await asyncio.sleep(0.01)
    assert alice.ids() == [theirs[0]] and bob.ids() == [theirs[1]]
    assert mine.ids[0] not in alice.ids()


async def test_ids_of_a_rolled_back_write_are_not_taken_for_this_processs_own(side: Side) -> None:
    """SQLite gives a rolled-back rowid to the next insert, maybe another process's."""
    alice = Socket()
    side.hub.connect(2, float("inf"), alice).end_replay()
    keyed = CreateRequest([NewNotification(3, "milestone", "once", "…")], 1, "once")
    first = await side.store.create(keyed)
    await side.delivery.tail()
    # Written, then rolled back when the key turns out to be taken: a replay.
    assert (await side.store.create(keyed)).replayed
    (theirs,) = (await side.other.create(note(2, "from elsewhere"))).ids
    assert theirs == first.ids[0] + 1  # the rolled-back id, given to the other process
    assert await side.delivery.tail() == 1
    await asyncio.sleep(0.01)
    assert alice.ids() == [theirs]


async def test_sent_marks_survive_a_failed_flush(side: Side, tmp_path: Path) -> None:
    sock = Socket()
    conn = side.hub.connect(2, float("inf"), sock)
    ids = (
        await side.other.create(CreateRequest([NewNotification(2, "milestone", "a", "b")] * 3))
    ).ids
    async with side.sessions() as session:
        rows = list(
            await session.scalars(select(NotificationQueue).where(NotificationQueue.id.in_(ids)))
        )
    conn.replay([side.delivery.outgoing(r) for r in rows])
    conn.end_replay()
    await asyncio.sleep(0.01)
    assert sock.ids() == ids
    working = side.delivery._sessions
    broken = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'nowhere.db'}")
    side.delivery._sessions = async_sessionmaker(broken)
    with pytest.raises(Exception, match="unable to open database"):
        await side.delivery._flush_sent()
    await broken.dispose()
    side.delivery._sessions = working
    assert await statuses(side, ids) == ["pending"] * 3
    await side.delivery._flush_sent()  # the marks were kept, not lost
    assert await statuses(side, ids) == ["sent"] * 3
    async with side.sessions() as session:
        audited = list(
            await session.scalars(
                select(AuditLog.target).where(AuditLog.action == "notification.delivered")
            )
        )
    assert sorted(str(t) for t in audited) == [f"notification:{i}" for i in ids]


async def test_acks_survive_a_failed_commit_and_an_owned_one_needs_no_owner_read(
    side: Side, tmp_path: Path
) -> None:
    sock = Socket()
    conn = side.hub.connect(2, float("inf"), sock)
    (nid,) = (await side.other.create(note(2, "for 2"))).ids
    (other,) = (await side.other.create(note(3, "for 3"))).ids
    conn.client_has(other)  # a resume from another user's id is no proof of ownership
    assert not conn.sent_here(other) and not conn.sent_here(nid)
    async with side.sessions() as session:
        row = await session.get(NotificationQueue, nid)
    assert row is not None
    conn.replay([side.delivery.outgoing(row)])
    conn.end_replay()
    assert conn.sent_here(nid)
    working = side.delivery._sessions
    broken = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'nowhere.db'}")
    side.delivery._sessions = async_sessionmaker(broken)
    side.delivery.acknowledge(2, nid, owned=conn.sent_here(nid))
    side.delivery.acknowledge(2, other, owned=conn.sent_here(other))
    with pytest.raises(Exception, match="unable to open database"):
        await side.delivery.flush_acks()
    await broken.dispose()
    side.delivery._sessions = working
    first, second = await statuses(side, [nid, other])
    assert first in ("pending", "sent") and second == "pending"
    await side.delivery.flush_acks()  # kept, not lost; the claimed id was checked and refused
    assert await statuses(side, [nid, other]) == ["delivered", "pending"]


async def test_only_the_owner_acknowledges_and_closing_writes_what_waits(side: Side) -> None:
    (mine,) = (await side.other.create(note(2, "for 2"))).ids
    (theirs,) = (await side.other.create(note(3, "for 3"))).ids
    side.delivery.acknowledge(2, mine)
    side.delivery.acknowledge(2, theirs)
    await side.delivery.flush_acks()
    assert await statuses(side, [mine, theirs]) == ["delivered", "pending"]
    # Acks queued when the loop is stopped are written by close().
    await side.delivery.close()
    (later,) = (await side.other.create(note(3, "later"))).ids
    side.delivery.acknowledge(3, later)
    await side.delivery.close()
    assert await statuses(side, [later]) == ["delivered"]
    await side.delivery.start()  # for the fixture
