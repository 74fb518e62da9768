"""``TreevuWebSocketProtocol`` under uvicorn, with the options ``treevu serve`` passes.

A real uvicorn in a thread serves ``create_app`` over SQLite; the ``websockets`` client checks
what goes over the wire: the deflate parameters, which frames are compressed (RSV1), the 1009
close on an oversized message, and round trips with compression on and off.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn
import websockets
from sqlalchemy import create_engine, pool
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.asyncio.client import ClientConnection
from websockets.extensions import Extension
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)
from websockets.frames import Frame, Opcode
from websockets.typing import ExtensionParameter

from tests.conftest import Database, free_port, token_for
from treevu.app import create_app
from treevu.config import Settings
from treevu.notifications.ws_protocol import (
    COMPRESS_MIN_BYTES,
    WINDOW_BITS,
    LeanPerMessageDeflate,
    ReceiveQueue,
    TreevuWebSocketProtocol,
    WritableFlag,
    uvicorn_ws_options,
)
from treevu.population import EMPLOYEE, generate_population
from treevu.services.people.seed import write_population

POP = generate_population(12, 3)
EMPLOYEE_ID = next(int(u) for u, r in zip(POP.user_id, POP.role, strict=True) if r == EMPLOYEE)
ADMIN = 1


class Server:
    """uvicorn with ``uvicorn_ws_options(settings)`` in a thread, on a free loopback port."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        options = uvicorn_ws_options(
            max_message_bytes=settings.max_message_bytes,
            compression=settings.ws_compression,
            heartbeat_interval=settings.heartbeat_interval,
        )
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=self.port,
            log_config=None,  # leave logging to pytest, which captures uvicorn.error
            **options,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


class RecordingDeflate(PerMessageDeflate):
    """The client's deflate, noting the RSV1 bit of every data frame it receives."""

    def __init__(self, *args: Any, seen: list[tuple[bool, int]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen = seen

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self.seen.append((frame.rsv1, len(frame.data)))
        return super().decode(frame, max_size=max_size)


class RecordingDeflateFactory(ClientPerMessageDeflateFactory):
    def __init__(self) -> None:
        super().__init__(client_max_window_bits=True)
        self.seen: list[tuple[bool, int]] = []

    def process_response_params(
        self, params: Sequence[ExtensionParameter], accepted_extensions: Sequence[Extension]
    ) -> PerMessageDeflate:
        ext = super().process_response_params(params, accepted_extensions)
        return RecordingDeflate(
            ext.remote_no_context_takeover,
            ext.local_no_context_takeover,
            ext.remote_max_window_bits,
            ext.local_max_window_bits,
            seen=self.seen,
        )


@pytest.fixture
def db(sqlite_database: Database) -> Database:
    settings = sqlite_database.settings()
    engine = create_engine(settings.sync_database_url, poolclass=pool.NullPool)
    write_population(engine, POP, now=datetime.now(UTC))
    engine.dispose()
    return sqlite_database


@contextmanager
def serving(db: Database, *, compression: bool) -> Iterator[Server]:
    with Server(db.settings(ws_compression=compression, heartbeat_interval=30)) as server:
        yield server


async def connect(server: Server, db: Database, **kw: Any) -> ClientConnection:
    headers = {"Authorization": f"Bearer {token_for(db, EMPLOYEE_ID)}"}
    return await websockets.connect(server.ws_url, additional_headers=headers, **kw)


async def recv(ws: ClientConnection) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
    return data


async def closed_with(ws: ClientConnection) -> int:
    try:
        async with asyncio.timeout(5):
            while True:
                await ws.recv()
    except websockets.ConnectionClosed as exc:
        assert exc.rcvd is not None
        return exc.rcvd.code
    raise AssertionError("not closed")


def notify(server: Server, db: Database, message: str) -> None:
    response = httpx.post(
        server.url + "/api/v1/admin/notifications",
        headers={"Authorization": f"Bearer {token_for(db, ADMIN)}"},
        json={"userId": EMPLOYEE_ID, "type": "milestone", "title": "Milestone", "message": message},
    )
    assert response.status_code == 201, response.text


async def test_deflate_is_negotiated_without_context_takeover(db: Database) -> None:
    with serving(db, compression=True) as server:
        # What browsers offer: permessage-deflate; client_max_window_bits.
        async with await connect(server, db) as ws:
            assert ws.response is not None
            offer = ws.response.headers["Sec-WebSocket-Extensions"]
            assert offer == (
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                f"server_max_window_bits={WINDOW_BITS}; client_max_window_bits={WINDOW_BITS}"
            )
            [ext] = ws.protocol.extensions
            assert isinstance(ext, PerMessageDeflate)
            assert ext.local_no_context_takeover and ext.remote_no_context_takeover
            assert (await recv(ws))["type"] == "welcome"


def test_the_server_side_extension_frees_zlib_state_between_messages() -> None:
    ext = LeanPerMessageDeflate(True, True, WINDOW_BITS, WINDOW_BITS, {"memLevel": 5})
    small = Frame(Opcode.TEXT, b'{"type":"heartbeat"}')
    assert ext.encode(small) == small  # sent as is, RSV1 unset
    big = Frame(Opcode.TEXT, json.dumps({"message": "saving " * 200}).encode())
    encoded = ext.encode(big)
    assert encoded.rsv1 and len(encoded.data) < len(big.data)
    assert not hasattr(ext, "encoder") and not hasattr(ext, "decoder")
    peer = PerMessageDeflate(True, True, WINDOW_BITS, WINDOW_BITS)
    assert peer.decode(encoded).data == big.data


async def test_the_receive_queue_hands_a_wake_up_on_when_its_reader_is_cancelled() -> None:
    queue = ReceiveQueue()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait({"type": "websocket.connect"})
    first.cancel()  # woken, but cancelled before it ran: the item goes to the other reader
    assert await second == {"type": "websocket.connect"}
    assert first.cancelled() and queue.empty()
    queue.put_nowait({"type": "websocket.receive", "text": "a"})
    queue.put_nowait({"type": "websocket.disconnect", "code": 1000})
    assert [await queue.get(), await queue.get()] == [
        {"type": "websocket.receive", "text": "a"},
        {"type": "websocket.disconnect", "code": 1000},
    ]


async def test_the_writable_flag_holds_writers_until_set() -> None:
    flag = WritableFlag()
    assert await flag.wait()
    flag.clear()
    writer = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    assert not writer.done()
    flag.set()
    assert await writer


async def test_large_notifications_arrive_compressed_small_messages_as_is(db: Database) -> None:
    factory = RecordingDeflateFactory()
    with serving(db, compression=True) as server:
        async with await connect(server, db, extensions=[factory], compression=None) as ws:
            welcome = await recv(ws)
            assert welcome["type"] == "welcome"
            text = "Three months of steady saving. " * 40
            notify(server, db, text)
            msg = await recv(ws)
            assert msg["type"] == "notification"
            assert msg["notification"]["message"] == text
            short = "Three months of steady saving. " * 10
            notify(server, db, short)
            assert (await recv(ws))["notification"]["message"] == short
            await ws.send(json.dumps({"type": "nope"}))
            error = await recv(ws)
            assert error["code"] == "unknown_type"
    seen = factory.seen
    (welcome_rsv1, welcome_len), (note_rsv1, note_len) = seen[0], seen[1]
    (short_rsv1, short_len), (error_rsv1, error_len) = seen[2], seen[3]
    assert not welcome_rsv1 and welcome_len < COMPRESS_MIN_BYTES
    assert note_rsv1 and note_len < len(text) // 4
    assert not short_rsv1 and len(short) < short_len < COMPRESS_MIN_BYTES
    assert not error_rsv1 and error_len < COMPRESS_MIN_BYTES


@pytest.mark.parametrize("compression", [True, False], ids=["deflate", "plain"])
async def test_a_message_over_the_limit_closes_with_1009(db: Database, compression: bool) -> None:
    with serving(db, compression=compression) as server:
        async with await connect(server, db, max_size=None) as ws:
            assert (await recv(ws))["type"] == "welcome"
            # 70 KiB of JSON; deflate would shrink it to little, the limit is on the message.
            await ws.send(json.dumps({"type": "pong", "pad": "x" * (70 * 1024)}))
            assert await closed_with(ws) == 1009
        metrics = httpx.get(server.url + "/metrics").text
        assert 'treevu_ws_closed_total{code="1009"} 1.0' in metrics


@pytest.mark.parametrize("compression", [True, False], ids=["deflate", "plain"])
async def test_messages_round_trip(db: Database, compression: bool) -> None:
    with serving(db, compression=compression) as server:
        async with await connect(server, db) as ws:
            assert bool(ws.protocol.extensions) is compression
            assert (await recv(ws))["type"] == "welcome"
            for kind in ("short", "long-" + "y" * 5000):
                await ws.send(json.dumps({"type": kind}))
                reply = await recv(ws)
                assert reply == {
                    "type": "error",
                    "code": "unknown_type",
                    "message": f"unknown message type {kind!r}",
                }


async def test_a_refused_upgrade_is_not_logged_as_an_error(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    with serving(db, compression=True) as server:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(
                server.ws_url, additional_headers={"Authorization": "Bearer not-a-token"}
            )
        assert refused.value.response.status_code == 401
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


def test_the_protocol_sets_up_everything_uvicorns_does() -> None:
    """``TreevuWebSocketProtocol.__init__`` stands in for uvicorn's (which would build a
    ServerProtocol, queue and event per socket to be thrown away): a uvicorn upgrade that adds
    an attribute must not leave this class without it."""
    config = uvicorn.Config(
        lambda: None,
        **uvicorn_ws_options(max_message_bytes=1024, compression=True, heartbeat_interval=5),
    )
    state = ServerState()
    loop = asyncio.new_event_loop()
    try:
        theirs = WebSocketsSansIOProtocol(config, state, {}, _loop=loop)
        ours = TreevuWebSocketProtocol(config, state, {}, _loop=loop)
    finally:
        loop.close()
    assert set(vars(ours)) == set(vars(theirs))
    assert isinstance(ours.queue, ReceiveQueue)
    assert isinstance(ours.writable, WritableFlag)
    assert ours.conn.max_message_size == 1024
    same = {
        "config", "app", "loop", "root_path", "asgi_version", "app_state", "connections",
        "tasks", "default_headers", "handshake_initiated", "handshake_complete", "close_sent",
        "disconnected", "close_timeout", "read_paused", "ping_interval", "ping_timeout",
        "ping_sent_at", "last_ping_rtt", "frames", "curr_msg_data_type",
    }  # fmt: skip
    assert {name: getattr(ours, name) for name in same} == {
        name: getattr(theirs, name) for name in same
    }


async def test_accepted_sockets_are_logged_at_debug_errors_as_before(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    async def one_socket() -> list[logging.LogRecord]:
        caplog.clear()
        with serving(db, compression=True) as server:
            async with websockets.connect(
                server.ws_url,
                additional_headers={"Authorization": f"Bearer {token_for(db, EMPLOYEE_ID)}"},
            ) as ws:
                assert (await recv(ws))["type"] == "welcome"
        return [
            r
            for r in caplog.records
            if "[accepted]" in r.getMessage() or r.getMessage() == "connection open"
        ]

    caplog.set_level(logging.INFO, logger="uvicorn.error")
    assert await one_socket() == []
    caplog.set_level(logging.DEBUG, logger="uvicorn.error")
    per_socket = await one_socket()
    assert sorted(r.getMessage() for r in per_socket)[-1] == "connection open"
    assert len(per_socket) == 2
    assert {r.levelno for r in per_socket} == {logging.DEBUG}
