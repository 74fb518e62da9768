"""A small reconnect storm: 300 ``treevu.client`` clients on a real ``treevu serve``, the server
killed with SIGKILL and started again on the same port. Everyone is welcomed again, and every
client hands its consumer both the notification sent before the crash and the one sent after,
each once. (``bench/ws_storm.py`` is the same with 10,000 clients, timed.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.conftest import Database, free_port, seed_and_score, token_for
from tests.serve import ServeProcess
from treevu.client import Notification, NotificationClient

CLIENTS = 300
ADMIN = 1


def start_server(db: Database, port: int, workdir: Path) -> ServeProcess:
    return ServeProcess(db, workdir, port=port, env={"TREEVU_SWEEP_INTERVAL": "0.5"})


def broadcast(port: int, db: Database, title: str, users: list[int]) -> None:
    answer = httpx.post(
        f"http://127.0.0.1:{port}/api/v1/admin/notifications/broadcast",
        json={"userIds": users, "type": "compliance_alert", "title": title, "message": "…"},
        headers={"Authorization": f"Bearer {token_for(db, ADMIN)}"},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text


async def take(client: NotificationClient, n: int) -> list[Notification]:
    async with asyncio.timeout(60):
        return [await client.next_notification() for _ in range(n)]


async def test_everyone_is_back_after_a_kill_and_nothing_is_lost_or_doubled(
    sqlite_database: Database, tmp_path: Path
) -> None:
    db = sqlite_database
    seed_and_score(db, n_users=CLIENTS + 1)
    users = list(range(2, CLIENTS + 2))
    port = free_port()
    server = start_server(db, port, tmp_path)
    clients = [
        NotificationClient(
            f"ws://127.0.0.1:{port}/ws", token_for(db, user), backoff_base=0.2, backoff_cap=2.0
        )
        for user in users
    ]
    try:
        for client in clients:
            client.start()
        async with asyncio.timeout(60):
            await asyncio.gather(*(c.wait_connected() for c in clients))
        broadcast(port, db, "before the crash", users)
        firsts = await asyncio.gather(*(take(c, 1) for c in clients))
        assert all(got[0].title == "before the crash" for got in firsts)

        server.kill()
        server = start_server(db, port, tmp_path)
        async with asyncio.timeout(90):
            while any(c.stats.reconnects < 1 or not c.connected for c in clients):
                await asyncio.sleep(0.1)
        broadcast(port, db, "after the restart", users)
        seconds = await asyncio.gather(*(take(c, 1) for c in clients))
        assert all(got[0].title == "after the restart" for got in seconds)
        # Nothing more: no client hands out the first one again.
        extra = [c for c in clients if c.stats.notifications != 2]
        assert extra == []
    finally:
        await asyncio.gather(*(c.close() for c in clients))
        server.stop()
