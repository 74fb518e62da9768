"""Helpers for the workflow suites: a live server's API as one user, its sockets, the data."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import websockets
from sqlalchemy import Engine, create_engine, pool, select
from websockets.asyncio.client import ClientConnection

from tests.conftest import Database, LiveServer, token_for
from treevu.db import NotificationQueue
from treevu.population import EMPLOYEE, generate_population

#: The population ``seed_and_score`` writes (300 users, seed 7).
POPULATION = generate_population(300, 7)
ADMIN = 1
EMPLOYEES = [
    int(u)
    for u, role, has in zip(POPULATION.user_id, POPULATION.role, POPULATION.has_inputs, strict=True)
    if role == EMPLOYEE and has
]


def sync_engine(db: Database) -> Engine:
    return create_engine(db.settings().sync_database_url, poolclass=pool.NullPool)


def scalar(db: Database, stmt: Any) -> Any:
    engine = sync_engine(db)
    try:
        with engine.connect() as conn:
            return conn.execute(stmt).scalar()
    finally:
        engine.dispose()


def rows(db: Database, stmt: Any) -> list[Any]:
    engine = sync_engine(db)
    try:
        with engine.connect() as conn:
            return list(conn.execute(stmt).all())
    finally:
        engine.dispose()


def execute(db: Database, stmt: Any) -> None:
    engine = sync_engine(db)
    try:
        with engine.begin() as conn:
            conn.execute(stmt)
    finally:
        engine.dispose()


class As:
    """The HTTP API of ``server`` as ``user_id``."""

    def __init__(self, server: LiveServer, db: Database, user_id: int) -> None:
        self.server, self.db, self.user_id = server, db, user_id
        self.headers = {"Authorization": f"Bearer {token_for(db, user_id)}"}

    def request(self, method: str, path: str, body: Any = None, **headers: str) -> httpx.Response:
        return httpx.request(
            method,
            self.server.url + path,
            json=body,
            headers={**self.headers, **headers},
            timeout=30,
        )

    def get(self, path: str) -> httpx.Response:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None, **headers: str) -> httpx.Response:
        return self.request("POST", path, body, **headers)

    def put(self, path: str, body: Any = None) -> httpx.Response:
        return self.request("PUT", path, body)

    def trpc(self, procedure: str, body: Any) -> httpx.Response:
        return self.request("POST", f"/trpc/{procedure}", body)

    async def socket(self) -> ClientConnection:
        """A socket of this user, past its ``welcome`` (and any replay)."""
        url = self.server.url.replace("http", "ws", 1) + "/ws"
        ws = await websockets.connect(url, additional_headers=self.headers)
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert welcome["type"] == "welcome", welcome
        return ws


async def notifications(ws: ClientConnection, count: int, timeout: float = 10) -> list[Any]:
    """The next ``count`` notifications on ``ws`` (acknowledged), skipping other messages."""
    got: list[Any] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            msg = json.loads(await ws.recv())
            if msg["type"] == "notification":
                got.append(msg["notification"])
                await ws.send(json.dumps({"type": "ack", "id": msg["notification"]["id"]}))
    return got


async def nothing_more(ws: ClientConnection, seconds: float = 1.5) -> None:
    """No notification arrives on ``ws`` for ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            while True:
                msg = json.loads(await ws.recv())
                assert msg["type"] != "notification", msg
    except TimeoutError:
        return


def stored(db: Database, user_id: int, type_: str) -> list[dict[str, Any]]:
    """The ``data`` of each stored notification of ``type_`` to ``user_id``, oldest first."""
    engine = sync_engine(db)
    try:
        with engine.connect() as conn:
            found = conn.execute(
                select(NotificationQueue.data)
                .where(NotificationQueue.user_id == user_id, NotificationQueue.type == type_)
                .order_by(NotificationQueue.id)
            ).all()
    finally:
        engine.dispose()
    return [dict(data or {}) for (data,) in found]


def wait_until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)
