"""Hostile input against the real server: oversized bodies, deep nesting on every transport,
422s that do not echo megabytes, connections that never finish their headers."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import Database, LiveServer, seed_and_score, token_for

ADMIN = 1
USER = 2


@pytest.fixture
def server(sqlite_database: Database) -> Iterator[tuple[Database, LiveServer]]:
    seed_and_score(sqlite_database, n_users=20)
    settings = sqlite_database.settings(max_body_bytes=64 * 1024, header_timeout=0.5)
    with LiveServer(settings) as live:
        yield sqlite_database, live


def admin(db: Database) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(db, ADMIN)}"}


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_a_body_over_the_limit_is_refused_with_413(server: tuple[Database, LiveServer]) -> None:
    db, live = server
    big = {
        "userIds": list(range(2, 20)),
        "type": "milestone",
        "title": "t",
        "message": "m" * 70_000,
    }
    for path in ("/api/v1/admin/notifications/broadcast", "/trpc/notifications.broadcast"):
        answer = httpx.post(live.url + path, json=big, headers=admin(db), timeout=10)
        assert answer.status_code == 413, (path, answer.text[:200])


def test_a_422_quotes_only_an_excerpt_of_what_it_refuses(
    server: tuple[Database, LiveServer],
) -> None:
    db, live = server
    body = {"userId": USER, "type": "milestone", "title": "t", "message": "m" * 50_000}
    answer = httpx.post(
        live.url + "/api/v1/admin/notifications", json=body, headers=admin(db), timeout=10
    )
    assert answer.status_code == 422
    assert len(answer.content) < 2_000 and "characters)" in answer.text


def test_json_nested_beyond_the_limit_is_a_422_on_both_transports(
    server: tuple[Database, LiveServer],
) -> None:
    db, live = server
    headers = {**admin(db), "content-type": "application/json"}
    rest = httpx.post(
        live.url + "/api/v1/admin/notifications", content=nested(5_000), headers=headers
    )
    assert rest.status_code == 422 and "nested too deeply" in rest.text
    trpc = httpx.post(
        live.url + "/trpc/notifications.create", content=nested(5_000), headers=headers
    )
    assert trpc.status_code == 422
    error = trpc.json()["error"]
    assert error["data"]["code"] == "UNPROCESSABLE_CONTENT" and "nested deeper" in error["message"]
    batch = httpx.get(
        live.url + "/trpc/websocket.getStats?batch=1&input=" + nested(100), headers=admin(db)
    )
    assert batch.status_code == 422


async def _closed_code(ws: Any) -> int:
    try:
        async with asyncio.timeout(5):
            while True:
                await ws.recv()
    except websockets.ConnectionClosed as exc:
        assert exc.rcvd is not None
        return int(exc.rcvd.code)
    raise AssertionError("not closed")


async def test_a_deeply_nested_socket_message_gets_an_error_or_4401_first(
    server: tuple[Database, LiveServer],
) -> None:
    db, live = server
    url = f"ws://127.0.0.1:{live.port}/ws"
    async with websockets.connect(url) as first:
        await first.send(nested(30_000))  # 60 KB, under the 64 KiB message limit
        assert await _closed_code(first) == 4401
    headers = {"Authorization": f"Bearer {token_for(db, USER)}"}
    async with websockets.connect(url, additional_headers=headers) as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
        await ws.send(nested(30_000))
        while (reply := json.loads(await asyncio.wait_for(ws.recv(), 5)))["type"] != "error":
            pass
        assert reply["code"] == "invalid_json" and "nested deeper" in reply["message"]
        await ws.send(json.dumps({"type": "resume", "lastId": 0}))  # still up
        while (reply := json.loads(await asyncio.wait_for(ws.recv(), 5)))["type"] != "resumed":
            pass


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


def test_connections_that_never_finish_their_headers_are_closed(
    server: tuple[Database, LiveServer],
) -> None:
    _, live = server
    silent = socket.create_connection(("127.0.0.1", live.port))
    half = socket.create_connection(("127.0.0.1", live.port))
    half.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # no blank line: never complete
    try:
        assert _closed_by_server(silent)
        assert _closed_by_server(half)
    finally:
        silent.close()
        half.close()
    assert httpx.get(live.url + "/healthz").status_code == 200  # and the rest still works
