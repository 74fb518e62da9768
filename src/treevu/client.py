"""The asyncio client of the ``/ws`` notification protocol (SPEC §4), for tests and benchmarks.

:class:`NotificationClient` keeps one session alive: it authenticates by header or by first
message, resumes from the largest notification id it has seen after any disconnect, waits between
attempts with exponential backoff and full jitter, and never hands the consumer the same id twice.
Notifications come out of :meth:`NotificationClient.notifications`; every other server message
(welcome, resumed, unread_count, heartbeat, error) comes out of :meth:`NotificationClient.events`
and the ``on_event`` callback.

The delays are pure (:class:`Backoff`), and the random source, the sleep and the clock are
parameters, so that tests drive reconnection without waiting on real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from treevu.notifications.hub import (
    CLOSE_EXPIRED,
    CLOSE_RATE_LIMITED,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_UNAUTHENTICATED,
)

__all__ = [
    "AuthenticationError",
    "Backoff",
    "ClientClosedError",
    "ClientError",
    "ClientStats",
    "Notification",
    "NotificationClient",
    "NotConnectedError",
]

log = logging.getLogger(__name__)

#: Close codes (and upgrade statuses) after which retrying with the same credentials is futile.
AUTH_CLOSE_CODES: Final = frozenset({CLOSE_UNAUTHENTICATED, CLOSE_EXPIRED})
AUTH_HTTP_STATUSES: Final = frozenset({401, 403})

ServerMessage = dict[str, Any]
TokenSource = str | Callable[[], str | Awaitable[str]]
ReloadHook = Callable[["NotificationClient"], Awaitable[int | None] | int | None]
EventCallback = Callable[[ServerMessage], None]
Sleep = Callable[[float], Awaitable[None]]


class ClientError(Exception):
    """Base class of the client's own errors."""


class AuthenticationError(ClientError):
    """The server refused the credentials; the client stops instead of retrying.

    ``code`` is the WebSocket close code (4401 bad token, 4403 expired token) or, when the upgrade
    itself was refused (header authentication, disallowed origin), the HTTP status (401, 403).
    """

    def __init__(self, code: int, reason: str) -> None:
        what = {
            CLOSE_UNAUTHENTICATED: "bad token, unknown or inactive user",
            CLOSE_EXPIRED: "token expired",
            401: "upgrade refused: bad token",
            403: "upgrade refused: forbidden (origin not allowed?)",
        }.get(code, "refused")
        super().__init__(f"authentication failed ({code}, {what}): {reason or 'no reason given'}")
        self.code = code
        self.reason = reason


class ClientClosedError(ClientError):
    """The client was closed: no more notifications or events will come."""


class NotConnectedError(ClientError):
    """A message was sent while no authenticated session was open."""


def retry_hint(text: str) -> float | None:
    """Seconds to wait from a 1013 close reason (``… retry after 2s``) or a ``Retry-After``
    header (``2``); None when there is none."""
    match = re.search(r"(?:retry after\s*)?(\d+(?:\.\d+)?)\s*s?\s*$", text.strip())
    if match is None:
        return None
    seconds = float(match.group(1))
    return seconds if 0 < seconds <= 3600 else None


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base * 2**attempt))``.

    ``attempt`` counts failed connections since the last welcome, from 0; full jitter spreads a
    crowd of clients dropped at once over the whole window instead of letting them retry together.
    """

    base: float = 1.0
    cap: float = 30.0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < 0:
            raise ValueError("backoff needs base > 0 and cap >= 0")

    def ceiling(self, attempt: int) -> float:
        """The largest delay of ``attempt``; the exponent is clamped so it never overflows."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        return min(self.cap, self.base * 2.0 ** min(attempt, 62))

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, self.ceiling(attempt))


@dataclass(frozen=True, slots=True)
class Notification:
    """A notification exactly as on the wire (SPEC §4), and when this client received it."""

    id: int
    type: str
    title: str
    message: str
    data: dict[str, Any]
    timestamp: str
    read: bool
    received_at: float  # from the client's clock (epoch seconds by default)

    @classmethod
    def from_wire(cls, payload: dict[str, Any], received_at: float) -> Notification:
        nid = payload.get("id")
        if isinstance(nid, bool) or not isinstance(nid, int):
            raise ValueError(f"notification id must be an integer, got {nid!r}")
        data = payload.get("data")
        return cls(
            id=nid,
            type=str(payload.get("type", "")),
            title=str(payload.get("title", "")),
            message=str(payload.get("message", "")),
            data=data if isinstance(data, dict) else {},
            timestamp=str(payload.get("timestamp", "")),
            read=bool(payload.get("read", False)),
            received_at=received_at,
        )


@dataclass(slots=True)
class ClientStats:
    """Counters over the client's life (all sessions)."""

    attempts: int = 0  # connection attempts, successful or not
    connections: int = 0  # sessions that reached ``welcome``
    reconnects: int = 0  # welcomes after the first
    disconnects: int = 0  # sessions (welcomed or not) that ended other than by close()
    notifications: int = 0  # handed to the consumer
    duplicates_dropped: int = 0
    reloads: int = 0  # ``resumed`` with ``recovered: false``
    errors: int = 0  # ``error`` messages from the server
    rate_limited: int = 0  # sessions the server closed with 4429
    malformed: int = 0  # server messages the client could not parse
    last_backoff: float | None = None  # the most recent delay before a reconnect, in seconds


_END: Final = None  # queue sentinel: the client stopped


def _with_query(url: str, **params: object) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query.extend((k, str(v)) for k, v in params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def _body_text(exc: InvalidStatus) -> str:
    body = exc.response.body or b""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:200]
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error if isinstance(error, str) else str(parsed)[:200]


class NotificationClient:
    """One user's live notification stream over ``/ws``, reconnecting and resuming by itself.

    Use as ``async with NotificationClient(url, token) as client:`` (which waits for the first
    ``welcome`` and raises :class:`AuthenticationError` if the token is refused), or call
    :meth:`start` / :meth:`close` and :meth:`wait_connected` yourself.

    ``token`` is a string or a (sync or async) callable asked for a fresh token before every
    connection attempt. With ``auth="header"`` the token travels as ``Authorization: Bearer`` on
    the upgrade and ``?lastId=N`` is added to the URL when resuming; with ``auth="message"`` the
    first message is ``{"type": "auth", "token": …, "lastId": N}``.

    After any disconnect — except a close the user asked for, and the authentication failures
    4401/4403 (or HTTP 401/403 at the upgrade), which stop the client — it waits
    ``Backoff.delay(attempt, rng)`` via ``sleep`` and reconnects with ``lastId`` = :attr:`last_id`.
    The attempt counter resets when a ``welcome`` arrives, except that consecutive 4429 closes
    (too many messages — acks count) keep doubling the delay instead of looping at the base.

    When the server answers a resume with ``{"type": "resumed", "recovered": false}`` (more were
    missed than its replay bound) it sends nothing of the gap; ``on_reload(client)`` is then
    called so the app can reload its inbox over HTTP. If the hook returns the newest id it loaded,
    that becomes :attr:`last_id`; either way the client continues from the newest id it learns —
    the hook's answer or the next notification that arrives live.

    Hooks run on the reading task: an exception from ``on_reload`` or ``on_event`` stops the
    client and is re-raised by :meth:`notifications`, :meth:`events` and :meth:`wait_closed`.
    """

    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        auth: Literal["header", "message"] = "header",
        compression: Literal["deflate"] | None = "deflate",
        auto_ack: bool = True,
        reply_to_heartbeat: bool = False,
        last_id: int | None = None,
        on_reload: ReloadHook | None = None,
        on_event: EventCallback | None = None,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        open_timeout: float = 30.0,
        ping_interval: float | None = 20.0,
        close_timeout: float = 5.0,
        max_size: int | None = 2**20,
        event_queue_size: int = 1000,
        proxy: str | Literal[True] | None = None,
    ) -> None:
        if auth not in ("header", "message"):
            raise ValueError(f"auth must be 'header' or 'message', not {auth!r}")
        if last_id is not None and last_id < 0:
            raise ValueError("last_id must be >= 0")
        self.url = url
        self.auth = auth
        self.compression = compression
        self.auto_ack = auto_ack
        self.reply_to_heartbeat = reply_to_heartbeat
        self.backoff = Backoff(backoff_base, backoff_cap)
        self.on_reload = on_reload
        self.on_event = on_event
        self._token_source = token
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 (jitter, not crypto)
        self._sleep = sleep
        self._clock = clock
        self._open_timeout = open_timeout
        self._ping_interval = ping_interval
        self._close_timeout = close_timeout
        self._max_size = max_size
        self._proxy = proxy

        #: The largest notification id seen (or given); the resume point of the next connection.
        self.last_id: int | None = last_id
        #: ``connectionId`` of the latest ``welcome``.
        self.connection_id: str | None = None
        #: ``heartbeatInterval`` of the latest ``welcome``, in seconds.
        self.heartbeat_interval: float | None = None
        #: The server's latest unread count (from ``welcome`` or ``unread_count``).
        self.unread_count: int | None = None
        #: The ``recovered`` flag of every ``resumed`` message, in order.
        self.recovered: list[bool] = []
        #: How the latest session ended (None: the TCP connection dropped without a close frame).
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.stats = ClientStats()

        self._seen: set[int] = set()
        self._inbox: asyncio.Queue[Notification | None] = asyncio.Queue()
        self._events: asyncio.Queue[ServerMessage | None] = asyncio.Queue(event_queue_size)
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._attempt = 0
        self._throttled = 0  # consecutive sessions closed with 4429
        self._closing = False
        self._finished = False
        self._failure: BaseException | None = None
        self._connected = asyncio.Event()
        self._stopped = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> NotificationClient:
        self.start()
        try:
            await self.wait_connected()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start connecting in the background; idempotent."""
        if self._task is not None:
            return
        if self._closing:
            raise ClientClosedError("this client was closed; make a new one")
        self._task = asyncio.create_task(self._run(), name=f"notification-client {self.url}")

    async def close(self) -> None:
        """Close the socket with 1000 and stop reconnecting; the iterators then end."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        task = self._task
        if task is not None and not task.done():
            task.cancel()  # it may be sleeping in backoff or mid-handshake
            await asyncio.wait({task})
        self._finish()

    async def wait_connected(self) -> None:
        """Return once a session is welcomed; raise the failure if the client stops first."""
        if self._connected.is_set():
            return
        if self._task is None:
            raise ClientError("call start() first")
        connected = asyncio.create_task(self._connected.wait())
        stopped = asyncio.create_task(self._stopped.wait())
        try:
            done, _ = await asyncio.wait({connected, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            connected.cancel()
            stopped.cancel()
        if connected not in done:  # (a session may already have ended again: that is fine)
            self._raise_stopped()

    async def wait_closed(self) -> None:
        """Wait until the client stops; raise its failure (e.g. :class:`AuthenticationError`)."""
        if self._task is None and not self._finished:
            raise ClientError("call start() first")
        await self._stopped.wait()
        if self._failure is not None:
            raise self._failure

    @property
    def connected(self) -> bool:
        """True between a ``welcome`` and the end of that session."""
        return self._connected.is_set()

    @property
    def connection(self) -> ClientConnection | None:
        """The current socket (None between sessions); for tests that break it on purpose."""
        return self._ws

    @property
    def failure(self) -> BaseException | None:
        """Why the client stopped by itself, if it did."""
        return self._failure

    # -- what the consumer reads --------------------------------------------------------------

    async def notifications(self) -> AsyncIterator[Notification]:
        """Each notification once, in arrival order; ends at close, raises the failure if any."""
        while True:
            try:
                notification = await self.next_notification()
            except ClientClosedError:
                return
            yield notification

    async def next_notification(self) -> Notification:
        """The next notification; raises :class:`ClientClosedError` or the failure at the end."""
        item = await self._inbox.get()
        if item is None:
            self._inbox.put_nowait(_END)  # so every other reader ends too
            self._raise_stopped()
        return item

    async def events(self) -> AsyncIterator[ServerMessage]:
        """Every other server message as parsed JSON (the queue keeps the newest when full)."""
        while True:
            try:
                event = await self.next_event()
            except ClientClosedError:
                return
            yield event

    async def next_event(self, kind: str | None = None) -> ServerMessage:
        """The next server message, or of type ``kind`` (skipping, and discarding, the others)."""
        while True:
            item = await self._events.get()
            if item is None:
                self._put_event(_END)
                self._raise_stopped()
            if kind is None or item.get("type") == kind:
                return item

    # -- what the consumer sends --------------------------------------------------------------

    async def ack(self, notification_id: int) -> None:
        """Acknowledge receipt (``auto_ack`` does this for every notification)."""
        await self._send({"type": "ack", "id": notification_id})

    async def mark_read(self, notification_id: int) -> None:
        """Mark as read; the server answers with ``unread_count``."""
        await self._send({"type": "mark_read", "id": notification_id})

    async def resume(self, last_id: int) -> None:
        """Ask for everything after ``last_id`` again in this session (duplicates are dropped).

        Does not move :attr:`last_id`; the server answers ``resumed`` and then the replay.
        """
        await self._send({"type": "resume", "lastId": last_id})

    async def pong(self) -> None:
        """Answer a JSON ``heartbeat`` (optional: protocol pings are answered automatically)."""
        await self._send({"type": "pong"})

    async def _send(self, payload: ServerMessage) -> None:
        ws = self._ws
        if ws is None or not self._connected.is_set():
            raise NotConnectedError(f"cannot send {payload['type']!r}: not connected")
        await ws.send(json.dumps(payload, separators=(",", ":")))

    # -- the connection loop ------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while not self._closing:
                self.stats.attempts += 1
                code: int | None = None
                hint: float | None = None
                try:
                    code = await self._session()
                    if code == CLOSE_TRY_AGAIN_LATER:
                        hint = retry_hint(self.close_reason or "")
                except AuthenticationError as exc:
                    log.warning("notification client stopped: %s", exc)
                    self._failure = exc
                    return
                except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
                    if isinstance(exc, InvalidURI):
                        raise
                    if isinstance(exc, InvalidStatus) and exc.response.status_code == 503:
                        hint = retry_hint(exc.response.headers.get("Retry-After", ""))
                    log.info("notification client disconnected: %r", exc)
                if self._closing:
                    return
                self.stats.disconnects += 1
                # A welcome resets the attempts, but a server that keeps closing us for our pace
                # (4429) must not see us back at the base delay every time: keep doubling.
                if code == CLOSE_RATE_LIMITED:
                    self.stats.rate_limited += 1
                    self._throttled += 1
                    self._attempt = max(self._attempt, self._throttled)
                elif self._attempt == 0:
                    self._throttled = 0
                delay = self.backoff.delay(self._attempt, self._rng)
                if hint is not None:
                    # A busy server said when to come back: spread over [hint, 2 × hint].
                    delay = max(delay, hint * (1.0 + self._rng.random()))
                self._attempt += 1
                self.stats.last_backoff = delay
                await self._sleep(delay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug, a bad URL or a hook that raised: stop loudly
            log.exception("notification client failed")
            self._failure = exc
        finally:
            self._finish()

    async def _session(self) -> int | None:
        """Connect, authenticate, read until the socket closes; returns the close code."""
        token = await self._token()
        url = self.url
        headers: dict[str, str] = {}
        if self.auth == "header":
            headers["Authorization"] = f"Bearer {token}"
            if self.last_id is not None:
                url = _with_query(url, lastId=self.last_id)
        try:
            ws = await connect(
                url,
                additional_headers=headers,
                compression=self.compression,
                open_timeout=self._open_timeout,
                ping_interval=self._ping_interval,
                close_timeout=self._close_timeout,
                max_size=self._max_size,
                proxy=self._proxy,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in AUTH_HTTP_STATUSES:
                raise AuthenticationError(status, _body_text(exc)) from exc
            raise
        self._ws = ws
        try:
            if self.auth == "message":
                hello: ServerMessage = {"type": "auth", "token": token}
                if self.last_id is not None:
                    hello["lastId"] = self.last_id
                await ws.send(json.dumps(hello, separators=(",", ":")))
            async with asyncio.timeout(self._open_timeout):
                while not self._connected.is_set():
                    await self._handle(ws, await ws.recv())
            async for raw in ws:
                await self._handle(ws, raw)
        except ConnectionClosed:
            pass  # the close code decides below
        finally:
            self._ws = None
            self._connected.clear()
            if not self._closing:
                with contextlib.suppress(Exception):
                    await ws.close()
        code = ws.close_code
        self.close_code, self.close_reason = code, ws.close_reason
        if self._closing:
            return code
        if code in AUTH_CLOSE_CODES:
            raise AuthenticationError(code, ws.close_reason or "")
        log.info("session closed (code %s: %s)", code, ws.close_reason or "no reason")
        return code

    async def _token(self) -> str:
        source = self._token_source
        if isinstance(source, str):
            return source
        result = source()
        if isinstance(result, str):
            return result
        return await result

    # -- messages -----------------------------------------------------------------------------

    async def _handle(self, ws: ClientConnection, raw: str | bytes) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            self.stats.malformed += 1
            log.warning("server sent a non-JSON message: %.100r", raw)
            return
        if not isinstance(msg, dict):
            self.stats.malformed += 1
            return
        kind = msg.get("type")
        if kind == "notification":
            await self._on_notification(ws, msg.get("notification"))
            return
        if kind == "welcome":
            self._on_welcome(msg)
        elif kind == "resumed":
            recovered = msg.get("recovered") is True
            self.recovered.append(recovered)
            if not recovered:
                self.stats.reloads += 1
                await self._reload()  # before the event, so its readers see the new last_id
        elif kind == "unread_count":
            count = msg.get("count")
            if isinstance(count, int):
                self.unread_count = count
        elif kind == "heartbeat":
            if self.reply_to_heartbeat:
                await ws.send('{"type":"pong"}')
        elif kind == "error":
            self.stats.errors += 1
            log.info("server error %s: %s", msg.get("code"), msg.get("message"))
        self._put_event(msg)
        if self.on_event is not None:
            self.on_event(msg)

    def _on_welcome(self, msg: ServerMessage) -> None:
        connection_id = msg.get("connectionId")
        self.connection_id = str(connection_id) if connection_id is not None else None
        interval = msg.get("heartbeatInterval")
        if isinstance(interval, int | float):
            self.heartbeat_interval = float(interval)
        unread = msg.get("unreadCount")
        if isinstance(unread, int):
            self.unread_count = unread
        self.stats.connections += 1
        if self.stats.connections > 1:
            self.stats.reconnects += 1
        self._attempt = 0
        self._connected.set()

    async def _on_notification(self, ws: ClientConnection, payload: object) -> None:
        try:
            if not isinstance(payload, dict):
                raise ValueError("notification must be an object")
            notification = Notification.from_wire(payload, self._clock())
        except ValueError as exc:
            self.stats.malformed += 1
            log.warning("server sent a malformed notification: %s", exc)
            return
        nid = notification.id
        if nid in self._seen:
            self.stats.duplicates_dropped += 1
        else:
            self._seen.add(nid)
            self.last_id = nid if self.last_id is None else max(self.last_id, nid)
            self.stats.notifications += 1
            self._inbox.put_nowait(notification)
        if self.auto_ack:  # duplicates too: the server re-sent it, so it may lack our ack
            await ws.send(json.dumps({"type": "ack", "id": nid}, separators=(",", ":")))

    async def _reload(self) -> None:
        if self.on_reload is None:
            return
        result = self.on_reload(self)
        newest = result if result is None or isinstance(result, int) else await result
        if newest is not None:
            self.last_id = newest if self.last_id is None else max(self.last_id, newest)

    # -- endings ------------------------------------------------------------------------------

    def _put_event(self, item: ServerMessage | None) -> None:
        while True:
            try:
                self._events.put_nowait(item)
                return
            except asyncio.QueueFull:
                self._events.get_nowait()  # drop the oldest: events are advisory

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._connected.clear()
        self._inbox.put_nowait(_END)
        self._put_event(_END)
        self._stopped.set()

    def _raise_stopped(self) -> NoReturn:
        if self._failure is not None:
            raise self._failure
        raise ClientClosedError("the client is closed")
