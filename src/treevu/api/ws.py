"""``/ws``: the WebSocket endpoint — upgrade-time checks, then the protocol in services."""

from __future__ import annotations

from typing import NamedTuple

from starlette.datastructures import Headers, QueryParams
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from treevu.notifications.hub import CLOSE_TRY_AGAIN_LATER
from treevu.services.notifications.node import Realtime
from treevu.services.notifications.session import Closed

WS_PATH = "/ws"


class StarletteSocket:
    """Adapts Starlette's WebSocket to ``realtime.Socket``."""

    __slots__ = ("_ws",)

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws

    async def receive(self) -> str | bytes | None:
        try:
            message = await self._ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            return None
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        if text is not None:
            return str(text)
        data = message.get("bytes")
        return bytes(data) if data is not None else None

    async def send_text(self, text: str) -> None:
        await self._ws.send_text(text)

    async def close(self, code: int, reason: str) -> None:
        if self._ws.application_state != WebSocketState.DISCONNECTED:
            await self._ws.close(code, reason)


async def _deny(
    ws: WebSocket, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    response = JSONResponse({"error": message}, status_code=status, headers=headers)
    await ws.send_denial_response(response)


async def route_socket(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> bool:
    """Serve an upgrade to ``/ws`` straight from the app's ``__call__`` (True), around routing
    and middleware: their exit stacks, copied scopes and frames would live as long as each
    socket (~12 KB; 120 MB at ten thousand sockets). Anything else: False."""
    if scope["type"] != "websocket" or scope["path"] != WS_PATH:
        return False
    scope["app"] = app
    upgrade = Upgrade.of(scope)
    # What the endpoint needs is read: the request's headers (~1.5 KB with a JWT) would
    # otherwise live in the scope as long as the socket.
    scope["headers"] = []
    await websocket_endpoint(WebSocket(scope, receive, send), upgrade)
    return True


class Upgrade(NamedTuple):
    """What ``/ws`` reads of the upgrade request."""

    origin: str | None
    authorization: str | None
    last_id: str | None

    @classmethod
    def of(cls, scope: Scope) -> Upgrade:
        headers = Headers(scope=scope)
        last_id = QueryParams(scope.get("query_string", b"")).get("lastId")
        return cls(headers.get("origin"), headers.get("authorization"), last_id)


async def websocket_endpoint(ws: WebSocket, upgrade: Upgrade) -> None:
    """``/ws`` (called by :func:`route_socket`, outside the router)."""
    realtime: Realtime = ws.app.state.realtime
    settings = realtime.settings
    origin = upgrade.origin
    if settings.allowed_origins and origin not in settings.allowed_origins:
        await _deny(ws, 403, "origin not allowed")
        return
    last_id: int | None = None
    raw_last_id = upgrade.last_id
    if raw_last_id is not None:
        if not raw_last_id.isdigit():
            await _deny(ws, 400, "lastId must be a non-negative integer")
            return
        last_id = int(raw_last_id)
    header = upgrade.authorization
    opened = None
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            await _deny(ws, 401, "Authorization must be 'Bearer <token>'")
            return
        try:
            opened = await realtime.sessions.open(token, last_id)
        except Closed as refused:
            if refused.code == CLOSE_TRY_AGAIN_LATER:
                retry = str(max(1, round(settings.ws_busy_retry_after)))
                await _deny(ws, 503, refused.reason, {"Retry-After": retry})
            else:
                await _deny(ws, 401, refused.reason)
            return
    await ws.accept()
    await realtime.sessions.serve(StarletteSocket(ws), opened=opened)
