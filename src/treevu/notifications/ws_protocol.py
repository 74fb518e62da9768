"""uvicorn's websockets-sansio protocol, fitted to many mostly idle notification sockets.

uvicorn's own protocol negotiates permessage-deflate with context takeover, so every socket
keeps a zlib compressor (and, after the first client message, a decompressor) for its whole
life: 35–40 KB each, idle or not. Here:

- permessage-deflate runs without context takeover in both directions (RFC 7692 §7.1.1.1 and
  §7.1.1.2 let the server impose both on any offer): zlib state exists only while one message
  is being compressed or decompressed, so an idle socket holds none;
- a message shorter than :attr:`LeanPerMessageDeflate.min_size` goes out uncompressed (RSV1
  unset, RFC 7692 §6): welcome, heartbeat and unread-count frames and most notifications gain too
  little from deflate to pay for a compressor each;
- the handshake request's headers and the response are dropped once the socket is open (the
  scope keeps its own copy of the headers; websockets' parser would hold the request forever);
- the receive queue and the "writable" flag are slim single-purpose versions of
  ``asyncio.Queue`` (~3.3 KB idle: three deques and an Event) and ``asyncio.Event`` (~0.9 KB);
- an app that refuses the upgrade with an HTTP response (``websocket.http.response``) is not
  logged as "ASGI callable returned without completing handshake."

Use it as ``uvicorn.Config(app, ws=TreevuWebSocketProtocol, ws_max_size=…)``; the limits
(``ws_max_size`` → close 1009, ``ws_per_message_deflate``, ping interval and timeout) come
from uvicorn's config as usual.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Final

from uvicorn._types import ASGIReceiveEvent, ASGISendEvent
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.extensions import Extension
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.typing import ExtensionParameter

#: LZ77 window of each side, in bits: 4 KiB. Without context takeover the window only spans
#: one message, and notifications are a few hundred bytes to a few KiB.
WINDOW_BITS: Final = 12
#: zlib memLevel of the compressor (hash table and buffers, ~32 KiB with the window above),
#: allocated per compressed message and freed right after it.
MEM_LEVEL: Final = 5
#: Messages shorter than this go out uncompressed: a typical notification (300–800 bytes of
#: JSON) saves a few hundred bytes compressed, for a zlib compressor set up and torn down per
#: message (~30% of the server's CPU per delivered notification, bench/ws_throughput.py).
COMPRESS_MIN_BYTES: Final = 1024


class LeanPerMessageDeflate(PerMessageDeflate):
    """permessage-deflate that leaves messages under ``min_size`` bytes uncompressed."""

    def __init__(
        self,
        remote_no_context_takeover: bool,
        local_no_context_takeover: bool,
        remote_max_window_bits: int,
        local_max_window_bits: int,
        compress_settings: dict[Any, Any] | None = None,
        *,
        min_size: int = COMPRESS_MIN_BYTES,
    ) -> None:
        super().__init__(
            remote_no_context_takeover,
            local_no_context_takeover,
            remote_max_window_bits,
            local_max_window_bits,
            compress_settings,
        )
        self.min_size = min_size

    def encode(self, frame: Frame) -> Frame:
        # Only a whole message can skip compression: RSV1 is set on the first frame of a
        # compressed message, and the continuation frames follow it.
        if (
            frame.fin
            and frame.opcode in (Opcode.TEXT, Opcode.BINARY)
            and len(frame.data) < self.min_size
        ):
            return frame
        return super().encode(frame)


class LeanDeflateFactory(ServerPerMessageDeflateFactory):
    """Negotiates permessage-deflate without context takeover on both sides."""

    def __init__(
        self,
        *,
        window_bits: int = WINDOW_BITS,
        mem_level: int = MEM_LEVEL,
        min_size: int = COMPRESS_MIN_BYTES,
    ) -> None:
        super().__init__(
            server_no_context_takeover=True,
            client_no_context_takeover=True,
            server_max_window_bits=window_bits,
            client_max_window_bits=window_bits,
            compress_settings={"memLevel": mem_level},
        )
        self.min_size = min_size

    def process_request_params(
        self,
        params: Sequence[ExtensionParameter],
        accepted_extensions: Sequence[Extension],
    ) -> tuple[list[ExtensionParameter], PerMessageDeflate]:
        response, negotiated = super().process_request_params(params, accepted_extensions)
        # Without context takeover the base class allocates no zlib object; swapping is free.
        lean = LeanPerMessageDeflate(
            negotiated.remote_no_context_takeover,
            negotiated.local_no_context_takeover,
            negotiated.remote_max_window_bits,
            negotiated.local_max_window_bits,
            negotiated.compress_settings,
            min_size=self.min_size,
        )
        return response, lean


class ReceiveQueue:
    """What uvicorn's protocol uses of ``asyncio.Queue``: ``put_nowait``, ``get``, ``empty``.

    Unbounded like uvicorn's queue; an idle one is two slots instead of three deques and an
    Event.
    """

    __slots__ = ("_items", "_waiters")

    def __init__(self) -> None:
        self._items: list[ASGIReceiveEvent] = []
        self._waiters: list[asyncio.Future[None]] | None = None

    def put_nowait(self, item: ASGIReceiveEvent) -> None:
        self._items.append(item)
        if self._waiters:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)
                    break

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    async def get(self) -> ASGIReceiveEvent:
        while not self._items:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # Pass a wake-up this reader can no longer use on to the next one.
                if waiter.done() and not waiter.cancelled() and self._items:
                    self._wake_next(waiter)
                raise
            finally:
                self._forget(waiter)
        return self._items.pop(0)

    def _wake_next(self, skip: asyncio.Future[None]) -> None:
        for waiter in self._waiters or ():
            if waiter is not skip and not waiter.done():
                waiter.set_result(None)
                return

    def _forget(self, waiter: asyncio.Future[None]) -> None:
        if self._waiters is not None:
            self._waiters.remove(waiter)
            if not self._waiters:
                self._waiters = None


class WritableFlag:
    """What uvicorn's protocol uses of ``asyncio.Event`` (set, clear, wait), without a deque.

    Starts set: the transport is writable until it says otherwise.
    """

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


#: Stateless, so one factory serves every connection.
_DEFLATE: Final = (LeanDeflateFactory(),)


class _PerSocketAtDebug(logging.LoggerAdapter[logging.Logger]):
    """``uvicorn.error`` for one socket, with the per-socket INFO lines of uvicorn and
    websockets (``"WebSocket /ws" [accepted]``, ``connection open``: two per handshake,
    thousands a second in a reconnect storm) at DEBUG; warnings and errors as they were."""

    @property
    def level(self) -> int:  # uvicorn reads it to decide on its TRACE lines
        return self.logger.level

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)


_SOCKET_LOG: Final = _PerSocketAtDebug(logging.getLogger("uvicorn.error"))


class TreevuWebSocketProtocol(WebSocketsSansIOProtocol):
    """``WebSocketsSansIOProtocol`` with :class:`LeanDeflateFactory` and a leaner handshake."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        # The parent's __init__, less what this class replaces: it would build a
        # ServerProtocol, an asyncio.Queue and an asyncio.Event per socket only for them to be
        # thrown away (a tenth of a handshake's CPU). ``test_ws_protocol_class`` checks that
        # this sets every attribute the parent's does.
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.logger = _SOCKET_LOG  # type: ignore[assignment]
        self.root_path = config.root_path
        self.asgi_version = config.asgi_version
        self.app_state = app_state
        self.connections = server_state.connections
        self.tasks = server_state.tasks
        self.default_headers = server_state.default_headers
        self.transport = None  # type: ignore[assignment]
        self.server = None
        self.client = None
        self.scheme = None  # type: ignore[assignment]
        # Same interface as asyncio's Queue and Event, a fraction of the memory.
        self.queue = ReceiveQueue()  # type: ignore[assignment]
        self.handshake_initiated = False
        self.handshake_complete = False
        self.close_sent = False
        self.disconnected = False
        self.close_timer = None
        self.close_timeout = 10.0
        self.initial_response = None
        self.conn = ServerProtocol(
            extensions=_DEFLATE if config.ws_per_message_deflate else None,
            max_size=config.ws_max_size,
            logger=_SOCKET_LOG,
        )
        self.read_paused = False
        self.writable = WritableFlag()  # type: ignore[assignment]
        self.ping_interval = config.ws_ping_interval
        self.ping_timeout = config.ws_ping_timeout
        self.ping_timer = None
        self.pong_timer = None
        self.pending_ping_payload = None
        self.ping_sent_at = 0.0
        self.last_ping_rtt = 0.0
        self.frames = []
        self.curr_msg_data_type = "bytes"

    def handle_parser_exception(self) -> None:
        """websockets closed the socket itself (1009: a message over the size limit; 1002: a
        protocol error): count it with the app's other closes, then as uvicorn does."""
        if self.conn.close_sent is not None:
            app = getattr(self, "scope", {}).get("app")
            realtime = getattr(getattr(app, "state", None), "realtime", None)
            if realtime is not None:
                realtime.metrics.closed.labels(str(self.conn.close_sent.code)).inc()
        super().handle_parser_exception()

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # The scope now holds the headers as bytes; websockets' parser generator keeps the
        # Request for the life of the socket, so empty it.
        event.headers.clear()

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        kind = message["type"]
        if kind == "websocket.accept" and self.handshake_complete:
            # Nothing reads the handshake response again.
            self.__dict__.pop("response", None)
        elif kind == "websocket.http.response.body" and self.close_sent:
            # The app answered the upgrade with an HTTP response: that completes the
            # handshake as far as uvicorn's "returned without completing handshake" check goes.
            self.handshake_complete = True


def uvicorn_ws_options(
    *, max_message_bytes: int, compression: bool, heartbeat_interval: float
) -> dict[str, Any]:
    """The ``uvicorn.Config`` options that serve ``/ws`` with :class:`TreevuWebSocketProtocol`.

    A client message over ``max_message_bytes`` closes the socket with 1009. Protocol pings
    (SPEC §4 keeps them beside the JSON heartbeat: browsers answer them, so a dead peer is
    found within two intervals) follow the heartbeat interval instead of uvicorn's 20 s.
    """
    return {
        "ws": f"{__name__}:{TreevuWebSocketProtocol.__name__}",
        "ws_max_size": max_message_bytes,
        "ws_per_message_deflate": compression,
        "ws_ping_interval": heartbeat_interval,
        "ws_ping_timeout": heartbeat_interval,
    }
