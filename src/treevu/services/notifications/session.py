"""The WebSocket protocol of SPEC §4 over any socket: one session from auth to close.

:meth:`SessionServer.serve` runs one authenticated session: welcome, replay or resume, then the
client's messages (ack, mark_read, resume, pong). Transport adapters (``api/ws.py``) only turn
their socket into :class:`Socket`. :meth:`SessionServer.heartbeat` re-checks every session's
token and user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, Protocol, TypeVar

from sqlalchemy import bindparam, select

from treevu import jsonbound
from treevu.db import User
from treevu.jsonbound import TooDeep
from treevu.notifications.hub import (
    CLOSE_EXPIRED,
    CLOSE_RATE_LIMITED,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_UNAUTHENTICATED,
    Connection,
    Hub,
)
from treevu.notifications.metrics import Metrics
from treevu.services.auth import AuthError, Claims, TokenVerifier
from treevu.services.context import Actor, Services
from treevu.services.errors import ServiceError, database_unavailable
from treevu.services.notifications.delivery import UNREAD_COUNT, Delivery, Opening
from treevu.services.notifications.presence import Presence

log = logging.getLogger(__name__)
_A = TypeVar("_A")
_B = TypeVar("_B")
_T = TypeVar("_T")


class Socket(Protocol):
    """What the protocol needs from a socket; ``receive`` gives None once it has closed."""

    async def receive(self) -> str | bytes | None: ...

    async def send_text(self, text: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class Closed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _error(code: str, message: str) -> dict[str, object]:
    return {"type": "error", "code": code, "message": message}


def _int_field(msg: dict[str, Any], name: str) -> int:
    value = msg.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}: must be a non-negative integer")
    return value


#: A socket's user and their unread count, read by id in one statement (built once, like the
#: opening reads in ``delivery.py``).
_USER = select(
    User.id, User.role, User.manager_id, User.is_active, UNREAD_COUNT.scalar_subquery()
).where(User.id == bindparam("uid"))


class Opened(NamedTuple):
    """An authenticated socket's opening: who, their token's claims, where they resume from,
    and what to send after ``welcome``."""

    actor: Actor
    claims: Claims
    last_id: int | None
    opening: Opening


class Busy(Exception):
    """Too many sockets are opening at once; this one should come back later."""


class Admission:
    """Bounds the sockets opening at once (their database reads), so that a reconnect storm
    waits in a short queue or is refused at once with a retry hint — and never holds the
    connection pool the HTTP API needs.

    ``concurrency`` opening reads run together; ``queue`` more may wait; beyond that,
    :class:`Busy`.
    """

    def __init__(self, concurrency: int, queue: int) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._queue = queue
        self._waiting = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots.locked() and self._waiting >= self._queue:
            raise Busy
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()


class SessionServer:
    """Runs the sessions of this process over its hub, delivery and presence."""

    def __init__(
        self,
        svc: Services,
        verifier: TokenVerifier,
        hub: Hub,
        delivery: Delivery,
        presence: Presence,
        metrics: Metrics,
    ) -> None:
        self.svc = svc
        self.verifier = verifier
        self.hub = hub
        self.delivery = delivery
        self.presence = presence
        self.metrics = metrics
        self.settings = svc.settings
        self.admission = Admission(
            svc.settings.ws_opening_concurrency, svc.settings.ws_opening_queue
        )
        #: Threads for the openings' reads: as many as may run at once (plus resumes).
        self._readers = ThreadPoolExecutor(
            svc.settings.ws_opening_concurrency + 1, thread_name_prefix="ws-opening"
        )
        #: On SQLite the reads run on the event loop itself: they are local-file reads that
        #: never wait for a writer (WAL), ~0.1 ms a handshake, where the hop to a thread and
        #: back costs ~0.3 ms of CPU (bench/ws_handshake.py). Over a network they would stall
        #: the loop for a round trip each, so PostgreSQL and MariaDB use the threads.
        self._on_loop = svc.settings.is_sqlite

    async def heartbeat(self) -> None:
        """Heartbeat every socket; close expired tokens (4403) and deactivated users (4401)."""
        now = time.time()
        for conn in self.hub.heartbeat(now):
            self.metrics.closed.labels(str(CLOSE_EXPIRED)).inc()
            log.info("closed connection %s: token expired", conn.connection_id)
        users = self.hub.user_ids
        inactive: set[int] = set()
        async with self.svc.sessions() as session:
            for start in range(0, len(users), 1000):
                inactive.update(
                    await session.scalars(
                        select(User.id).where(
                            User.id.in_(users[start : start + 1000]), User.is_active.is_(False)
                        )
                    )
                )
        for uid in inactive:
            for conn in self.hub.connections(uid):
                conn.close(CLOSE_UNAUTHENTICATED, "user is no longer active")

    # -- one session --------------------------------------------------------------------------

    def close(self) -> None:
        self._readers.shutdown(wait=False, cancel_futures=True)

    def busy(self) -> Closed:
        """1013 with the retry hint ``treevu.client`` (and the bell) honour."""
        seconds = _number(self.settings.ws_busy_retry_after)
        return Closed(CLOSE_TRY_AGAIN_LATER, f"server busy; retry after {seconds}s")

    async def open(self, token: str, last_id: int | None) -> Opened:
        """Verify the token, read the user and what to send after ``welcome`` — as one call
        (in a worker thread, but for SQLite: see ``_on_loop``) on one pooled connection, within
        an admission slot.

        Raises :class:`Closed`: 4401 (bad token, unknown or inactive user), 4403 (expired),
        1013 (busy: with a retry hint; or the database is away).
        """
        try:
            async with self.admission.slot():
                return await self._read(self._open, token, last_id)
        except Busy:
            raise self.busy() from None
        except Closed:
            raise
        except Exception as exc:
            raise _unavailable_or(exc) from exc

    async def _read(self, reads: Callable[[_A, _B], _T], a: _A, b: _B) -> _T:
        if self._on_loop:
            return reads(a, b)
        return await asyncio.get_running_loop().run_in_executor(self._readers, reads, a, b)

    def _open(self, token: str, last_id: int | None) -> Opened:
        try:
            claims = self.verifier.verify(token)
        except AuthError as exc:
            code = CLOSE_EXPIRED if exc.reason == "expired" else CLOSE_UNAUTHENTICATED
            raise Closed(code, exc.message) from exc
        with self.svc.bulk_engine.connect() as conn:
            user = conn.execute(_USER, {"uid": claims.user_id}).first()
            if user is None or not user[3]:
                raise Closed(CLOSE_UNAUTHENTICATED, "unknown or inactive user")
            uid, role, manager_id, _, unread = user
            opening = self.delivery.opening(
                conn, uid, last_id, self.settings.replay_bound, int(unread or 0)
            )
        return Opened(Actor(uid, role, manager_id), claims, last_id, opening)

    def _reopen(self, user_id: int, last_id: int) -> Opening:
        """A ``resume`` message's reads (in a worker thread)."""
        with self.svc.bulk_engine.connect() as conn:
            return self.delivery.opening(conn, user_id, last_id, self.settings.replay_bound)

    async def first_message_auth(self, socket: Socket) -> Opened:
        """The browser path: ``{"type": "auth", "token": …, "lastId"?}`` within the timeout."""
        try:
            async with asyncio.timeout(self.settings.ws_auth_timeout):
                raw = await socket.receive()
        except TimeoutError:
            raise Closed(CLOSE_UNAUTHENTICATED, "no auth message in time") from None
        if raw is None:
            raise Closed(CLOSE_UNAUTHENTICATED, "closed before auth")
        try:
            msg = jsonbound.loads(raw)
        except TooDeep as exc:
            raise Closed(CLOSE_UNAUTHENTICATED, f"first message: {exc}") from None
        except (ValueError, TypeError):
            raise Closed(CLOSE_UNAUTHENTICATED, "first message must be auth JSON") from None
        if not isinstance(msg, dict) or msg.get("type") != "auth":
            raise Closed(CLOSE_UNAUTHENTICATED, "first message must be {type: auth}")
        token = msg.get("token")
        if not isinstance(token, str) or not token:
            raise Closed(CLOSE_UNAUTHENTICATED, "auth.token must be a string")
        last_id = None
        if msg.get("lastId") is not None:
            try:
                last_id = _int_field(msg, "lastId")
            except ValueError as exc:
                raise Closed(CLOSE_UNAUTHENTICATED, f"auth.{exc}") from None
        return await self.open(token, last_id)

    async def serve(self, socket: Socket, *, opened: Opened | None) -> None:
        """Run a session until the socket closes; closes it with SPEC §4's codes on errors.

        ``opened``: what :meth:`open` read for a socket authenticated at the upgrade; None
        for the browser path (the first message authenticates).
        """
        conn: Connection | None = None
        try:
            if opened is None:
                opened = await self.first_message_auth(socket)
            actor, claims, last_id, opening = opened
            expires_at = claims.expires_at + self.settings.jwt_leeway_seconds
            conn = self.hub.connect(actor.user_id, expires_at, _SocketTransport(socket))
            self.metrics.active_connections.inc()
            self.presence.connected(conn.connection_id, actor.user_id)
            for nid in self.delivery.waiting_acks(actor.user_id):
                conn.client_has(nid)  # acked on an earlier socket, not yet committed
            conn.send_control(
                {
                    "type": "welcome",
                    "connectionId": conn.connection_id,
                    "heartbeatInterval": _number(self.settings.heartbeat_interval),
                    "unreadCount": opening.unread,
                }
            )
            if last_id is None:
                conn.replay(opening.frames or [])
            else:
                self.metrics.reconnections.inc()
                self._resumed(conn, last_id, opening)
            conn.end_replay()
            await self._receive_loop(socket, conn, actor)
        except Closed as closed:
            self.metrics.closed.labels(str(closed.code)).inc()
            if conn is None:
                with contextlib.suppress(Exception):
                    await socket.close(closed.code, closed.reason)
            else:
                conn.close(closed.code, closed.reason)
                await conn.wait_closed()
        finally:
            if conn is not None:
                self.hub.disconnect(conn)
                self.metrics.active_connections.dec()
                self.presence.disconnected(conn.connection_id)

    def _resumed(self, conn: Connection, last_id: int, opening: Opening) -> None:
        """``resumed``, then every notification after ``last_id`` and every older one not yet
        acknowledged, in id order — never ``last_id`` itself, never one this session was sent.

        The older unacknowledged ones are what a client can miss when ids reach it out of
        order (two nodes, a broker outage healed by the sweep): it resumes from a newer id
        than one it never got. More than the replay bound: ``recovered: false``.
        """
        conn.client_has(last_id)
        if opening.frames is None:
            conn.skip_through(opening.newest or 0)
            conn.send_control({"type": "resumed", "recovered": False})
            return
        fresh = [f for f in opening.frames if not conn.already_sent(f.notification_id or 0)]
        conn.send_control({"type": "resumed", "recovered": True, "count": len(fresh)})
        conn.replay(fresh)

    async def _receive_loop(self, socket: Socket, conn: Connection, actor: Actor) -> None:
        while True:
            raw = await socket.receive()
            if raw is None or conn.closed:
                return
            msg: Any = None
            not_json = "message is not JSON"
            if isinstance(raw, str):
                try:
                    msg = jsonbound.loads(raw)
                except TooDeep as exc:
                    not_json = str(exc)
                except ValueError:
                    pass
            # Acknowledging what this session was sent is not charged: a replay of up to
            # replay_bound (500) notifications must not trip the 100-a-minute limit.
            if not _acks_sent(conn, msg) and not await self.svc.limits.ws_message(actor.user_id):
                raise Closed(CLOSE_RATE_LIMITED, "too many messages")
            if isinstance(raw, bytes):
                conn.send_control(_error("binary_not_supported", "send JSON text frames"))
                continue
            if msg is None and raw.strip() != "null":
                conn.send_control(_error("invalid_json", not_json))
                continue
            if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                conn.send_control(_error("invalid_message", "expected an object with a type"))
                continue
            try:
                await self._handle(conn, actor, msg)
            except ValueError as exc:
                conn.send_control(_error("invalid_field", str(exc)))
            except ServiceError as exc:
                conn.send_control(_error(exc.code.lower(), exc.message))
            except Exception as exc:
                # The database is away: this message fails, the socket stays.
                unavailable = database_unavailable(exc)
                if unavailable is None:
                    raise
                conn.send_control(_error("unavailable", unavailable.message))

    async def _handle(self, conn: Connection, actor: Actor, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "pong":
            return
        if kind == "ack":
            nid = _int_field(msg, "id")
            self.delivery.acknowledge(actor.user_id, nid, owned=conn.sent_here(nid))
        elif kind == "mark_read":
            # Imported here: a socket node (``treevu serve --role ws``) loads the inbox and
            # feedback use cases only when a client sends one of these.
            from treevu.services.notifications import inbox as inbox_ops

            await inbox_ops.mark_as_read(
                self.svc, actor, inbox_ops.MarkAsRead(notification_id=_int_field(msg, "id"))
            )
        elif kind == "resume":
            last_id = _int_field(msg, "lastId")
            conn.begin_replay()
            try:
                opening = await self._read(self._reopen, conn.user_id, last_id)
                self._resumed(conn, last_id, opening)
            finally:
                conn.end_replay()
        elif kind == "recommendation":
            # {"type": "recommendation", "action": "click"|"dismiss"|"complete",
            #  "recommendationId": "…"}: the same as POST /api/v1/me/recommendations/…
            from treevu.services.segmentation import feedback

            action = msg.get("action")
            if action not in feedback.ACTIONS:
                raise ValueError("action: must be click, dismiss or complete")
            rid = msg.get("recommendationId")
            if not isinstance(rid, str) or not 1 <= len(rid) <= 64:
                raise ValueError("recommendationId: must be a string of 1 to 64 characters")
            ref = feedback.RecommendationRef(recommendation_id=rid)
            await feedback.ACTIONS[action](self.svc, actor, ref)
        elif kind == "auth":
            conn.send_control(_error("already_authenticated", "this session is authenticated"))
        else:
            conn.send_control(_error("unknown_type", f"unknown message type {kind!r}"))


def _acks_sent(conn: Connection, msg: Any) -> bool:
    if not isinstance(msg, dict) or msg.get("type") != "ack":
        return False
    nid = msg.get("id")
    return isinstance(nid, int) and not isinstance(nid, bool) and conn.already_sent(nid)


class _SocketTransport:
    __slots__ = ("_socket",)

    def __init__(self, socket: Socket) -> None:
        self._socket = socket

    async def send_text(self, text: str) -> None:
        await self._socket.send_text(text)

    async def close(self, code: int, reason: str) -> None:
        await self._socket.close(code, reason)


def _number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


def _unavailable_or(exc: Exception) -> Exception:
    """Closed with 1013 (reconnect later) when the database is away; else ``exc`` itself."""
    unavailable = database_unavailable(exc)
    if unavailable is None:
        return exc
    return Closed(CLOSE_TRY_AGAIN_LATER, unavailable.message)
