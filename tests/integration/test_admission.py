"""Admission control of socket openings: when every opening slot is taken and the queue is
full, a socket is refused at once — close 1013 with a retry hint (or 503 with Retry-After at
an upgrade with ``Authorization``) — and ``treevu.client`` waits at least that long."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
import websockets

from tests.conftest import Database, LiveServer, seed_and_score, token_for
from treevu.client import NotificationClient

USER = 2


@pytest.fixture
def server(sqlite_database: Database) -> Iterator[tuple[Database, LiveServer]]:
    seed_and_score(sqlite_database, n_users=20)
    settings = sqlite_database.settings(
        ws_opening_concurrency=1, ws_opening_queue=0, ws_busy_retry_after=0.3
    )
    with LiveServer(settings) as live:
        yield sqlite_database, live


class Hold:
    """Takes the server's only opening slot until released (on the server's own loop)."""

    def __init__(self, live: LiveServer) -> None:
        self.live = live
        self.taken = False
        self.release: asyncio.Event | None = None
        self.future = live.run(self._hold())

    async def _hold(self) -> None:
        self.release = asyncio.Event()
        async with self.live.app_state().realtime.sessions.admission.slot():
            self.taken = True
            await self.release.wait()

    async def wait_taken(self) -> None:
        async with asyncio.timeout(5):
            while not self.taken:
                if self.future.done():
                    self.future.result()  # raises what went wrong
                await asyncio.sleep(0.01)

    def let_go(self) -> None:
        assert self.release is not None
        self.live.loop.call_soon_threadsafe(self.release.set)


async def test_a_full_server_refuses_fast_with_a_hint_and_the_client_honours_it(
    server: tuple[Database, LiveServer],
) -> None:
    db, live = server
    url = f"ws://127.0.0.1:{live.port}/ws"
    token = token_for(db, USER)
    hold = Hold(live)
    await hold.wait_taken()

    async with websockets.connect(url) as ws:  # the browser path: 1013 and a hint
        await ws.send(json.dumps({"type": "auth", "token": token}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(5):
                await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    assert "retry after 0.3s" in closed.value.rcvd.reason

    with pytest.raises(websockets.InvalidStatus) as refused:  # the header path: 503
        await websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"})
    assert refused.value.response.status_code == 503
    assert refused.value.response.headers["Retry-After"] == "1"

    client = NotificationClient(url, token, auth="message", backoff_base=0.01, backoff_cap=0.02)
    client.start()
    try:
        async with asyncio.timeout(10):
            while client.stats.disconnects == 0:
                await asyncio.sleep(0.01)
        # Its own backoff would be under 0.02 s: it waited for the server's hint instead.
        assert client.stats.last_backoff is not None and client.stats.last_backoff >= 0.3
        hold.let_go()
        await asyncio.wrap_future(hold.future)
        async with asyncio.timeout(10):
            await client.wait_connected()
    finally:
        await client.close()
