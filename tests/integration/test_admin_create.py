"""Admin creation through the real server on SQLite, MariaDB and PostgreSQL, with a connected
client counting what it receives: one key → one row and one delivery; one bad request among
forty good ones fails alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import create_engine, func, pool, select

from tests.conftest import Database, LiveServer, token_for
from treevu.client import Notification, NotificationClient
from treevu.db import NotificationQueue

ADMIN = 1
USER = 2


def stored(db: Database, *where: Any) -> int:
    engine = create_engine(db.settings().sync_database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return int(
                conn.scalar(select(func.count()).select_from(NotificationQueue).where(*where)) or 0
            )
    finally:
        engine.dispose()


def body(title: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "userId": USER,
        "type": "compliance_alert",
        "title": title,
        "message": f"about {title}",
        "data": data or {"title": title},
    }


async def received_until(client: NotificationClient, title: str) -> list[Notification]:
    """Every notification the client gets, up to and including the one titled ``title``."""
    got: list[Notification] = []
    async with asyncio.timeout(15):
        while not got or got[-1].title != title:
            got.append(await client.next_notification())
    return got


def deep(levels: int) -> dict[str, Any]:
    data: dict[str, Any] = {"leaf": True}
    for _ in range(levels - 1):
        data = {"next": data}
    return data


async def test_twenty_requests_with_one_key_make_one_row_and_one_delivery(
    live: LiveServer, seeded: Database
) -> None:
    headers = {"Authorization": f"Bearer {token_for(seeded, ADMIN)}"}
    async with (
        httpx.AsyncClient(base_url=live.url + "/api/v1", headers=headers, timeout=30) as http,
        NotificationClient(f"ws://127.0.0.1:{live.port}/ws", token_for(seeded, USER)) as client,
    ):
        answers = await asyncio.gather(
            *(
                http.post(
                    "/admin/notifications",
                    json=body("Once only"),
                    headers={"Idempotency-Key": "once-only"},
                )
                for _ in range(20)
            )
        )
        assert {a.status_code for a in answers} == {201}, [a.text for a in answers]
        ids = {a.json()["id"] for a in answers}
        assert len(ids) == 1
        (sentinel := await http.post("/admin/notifications", json=body("After"))).raise_for_status()
        got = await received_until(client, "After")
    assert [n.title for n in got] == ["Once only", "After"]
    assert got[0].id in ids
    assert stored(seeded, NotificationQueue.title == "Once only") == 1
    assert sentinel.json()["id"] == got[1].id


async def test_one_bad_request_among_forty_good_fails_alone(
    live: LiveServer, seeded: Database
) -> None:
    headers = {"Authorization": f"Bearer {token_for(seeded, ADMIN)}"}
    async with httpx.AsyncClient(
        base_url=live.url + "/api/v1", headers=headers, timeout=30
    ) as http:
        requests = [http.post("/admin/notifications", json=body(f"good {k}")) for k in range(40)]
        bad = http.post("/admin/notifications", json=body("too deep", deep(32)))
        answers = await asyncio.gather(*requests[:20], bad, *requests[20:])
    statuses = [a.status_code for a in answers]
    assert statuses[20] == 422 and "nested deeper than 16" in answers[20].text
    assert statuses[:20] + statuses[21:] == [201] * 40
    assert stored(seeded, NotificationQueue.title.like("good %")) == 40
    assert stored(seeded, NotificationQueue.title == "too deep") == 0
