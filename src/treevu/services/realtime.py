"""The WebSocket protocol of SPEC §4 over any socket, and the jobs that keep delivery honest.

:func:`Realtime.serve` runs one authenticated session: welcome, replay or resume, then the
client's messages (ack, mark_read, resume, pong). Transport adapters (``api/ws.py``) only turn
their socket into :class:`Socket`. The periodic jobs — heartbeats with the token re-check, the
pending sweep, presence heartbeats and dead-node clean-up — run once per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import func, select

from treevu.db import EmployeeSegment, NotificationQueue, User
from treevu.notifications.hub import (
    CLOSE_EXPIRED,
    CLOSE_RATE_LIMITED,
    CLOSE_UNAUTHENTICATED,
    Connection,
    Hub,
)
from treevu.notifications.metrics import Metrics
from treevu.segmentation.policy import SEGMENTS
from treevu.services import notifications as inbox_ops
from treevu.services.auth import AuthError, Claims, TokenVerifier
from treevu.services.context import Actor, Services
from treevu.services.errors import ServiceError
from treevu.services.inbox import Inbox, NewNotification
from treevu.services.presence import Presence
from treevu.services.recompute import SegmentChange

log = logging.getLogger(__name__)


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


class Realtime:
    """Hub, inbox and presence of this process, and the jobs over them."""

    def __init__(
        self,
        svc: Services,
        verifier: TokenVerifier,
        hub: Hub,
        inbox: Inbox,
        presence: Presence,
        metrics: Metrics,
    ) -> None:
        self.svc = svc
        self.verifier = verifier
        self.hub = hub
        self.inbox = inbox
        self.presence = presence
        self.metrics = metrics
        self.settings = svc.settings
        self._jobs: list[asyncio.Task[None]] = []
        self._gauges_at = float("-inf")

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.inbox.broker.start(self.inbox.receive)
        await self.inbox.start()
        await self.presence.start()
        s = self.settings
        self._jobs = [
            asyncio.create_task(self._every(s.heartbeat_interval, self.heartbeat), name="hb"),
            asyncio.create_task(self._every(s.sweep_interval, self.sweep), name="sweep"),
            asyncio.create_task(
                self._every(s.heartbeat_interval, self.presence_heartbeat), name="presence"
            ),
        ]
        self.svc.events.on_segment_changed(self.notify_segment_changes)

    async def stop(self) -> None:
        for job in self._jobs:
            job.cancel()
        for job in self._jobs:
            with contextlib.suppress(asyncio.CancelledError):
                await job
        await self.hub.shutdown()
        await self.inbox.close()
        await self.presence.close()
        await self.inbox.broker.close()

    async def _every(self, seconds: float, job: Callable[[], Awaitable[Any]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception:
                log.exception("job %s failed", getattr(job, "__name__", job))

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

    async def sweep(self) -> None:
        await self.inbox.sweep_pending(timedelta(seconds=self.settings.sweep_interval / 2))

    async def presence_heartbeat(self) -> None:
        await self.presence.heartbeat()
        await self.presence.remove_dead_nodes(
            timedelta(seconds=3 * self.settings.heartbeat_interval)
        )

    async def refresh_gauges(self, max_age_seconds: float = 30.0) -> None:
        """Segment sizes and read/click rates for ``/metrics``, recounted at most every 30 s."""
        now = time.monotonic()
        if now - self._gauges_at < max_age_seconds:
            return
        self._gauges_at = now
        segment_sql = select(EmployeeSegment.segment, func.count()).group_by(
            EmployeeSegment.segment
        )
        status_sql = select(NotificationQueue.status, func.count()).group_by(
            NotificationQueue.status
        )
        async with self.svc.sessions() as session:
            sizes = {str(k): int(v) for k, v in (await session.execute(segment_sql)).all()}
            by_status = {str(k): int(v) for k, v in (await session.execute(status_sql)).all()}
            clicked = await session.scalar(
                select(func.count())
                .select_from(NotificationQueue)
                .where(NotificationQueue.clicked_at.is_not(None))
            )
        for segment in SEGMENTS:
            self.metrics.segment_size.labels(segment).set(sizes.get(segment, 0))
        reached = sum(by_status.get(s, 0) for s in ("sent", "delivered", "read"))
        self.metrics.read_rate.set(by_status.get("read", 0) / reached if reached else 0.0)
        self.metrics.click_rate.set((clicked or 0) / reached if reached else 0.0)

    # -- events from the segmentation engine -------------------------------------------------

    async def notify_segment_changes(self, changes: Sequence[SegmentChange]) -> None:
        """A changed segment is told to its user; entering crisis is an unmutable update."""
        items = [
            NewNotification(
                c.user_id,
                "intervention_update"
                if c.to_segment == "crisis_intervention"
                else "recommendation",
                *_segment_message(c),
                data={
                    "fromSegment": c.from_segment,
                    "toSegment": c.to_segment,
                    **({"crisis": True} if c.to_segment == "crisis_intervention" else {}),
                },
            )
            for c in changes
        ]
        await inbox_ops.send(self.svc, items)

    # -- one session --------------------------------------------------------------------------

    async def authenticate(self, token: str) -> tuple[Actor, Claims]:
        """Raises :class:`Closed` with 4401 (bad token, unknown or inactive user) or 4403."""
        try:
            claims = self.verifier.verify(token)
        except AuthError as exc:
            code = CLOSE_EXPIRED if exc.reason == "expired" else CLOSE_UNAUTHENTICATED
            raise Closed(code, exc.message) from exc
        async with self.svc.sessions() as session:
            user = await session.get(User, claims.user_id)
        if user is None or not user.is_active:
            raise Closed(CLOSE_UNAUTHENTICATED, "unknown or inactive user")
        return Actor(user.id, user.role, user.manager_id), claims

    async def first_message_auth(self, socket: Socket) -> tuple[Actor, Claims, int | None]:
        """The browser path: ``{"type": "auth", "token": …, "lastId"?}`` within the timeout."""
        try:
            async with asyncio.timeout(self.settings.ws_auth_timeout):
                raw = await socket.receive()
        except TimeoutError:
            raise Closed(CLOSE_UNAUTHENTICATED, "no auth message in time") from None
        if raw is None:
            raise Closed(CLOSE_UNAUTHENTICATED, "closed before auth")
        try:
            msg = json.loads(raw)
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
        actor, claims = await self.authenticate(token)
        return actor, claims, last_id

    async def serve(
        self,
        socket: Socket,
        *,
        header_auth: tuple[Actor, Claims] | None,
        last_id: int | None,
    ) -> None:
        """Run a session until the socket closes; closes it with SPEC §4's codes on errors."""
        conn: Connection | None = None
        try:
            if header_auth is None:
                actor, claims, last_id = await self.first_message_auth(socket)
            else:
                actor, claims = header_auth
            expires_at = claims.expires_at + self.settings.jwt_leeway_seconds
            conn = self.hub.connect(actor.user_id, expires_at, _SocketTransport(socket))
            self.metrics.active_connections.inc()
            self.presence.connected(conn.connection_id, actor.user_id)
            conn.send_control(
                {
                    "type": "welcome",
                    "connectionId": conn.connection_id,
                    "heartbeatInterval": _number(self.settings.heartbeat_interval),
                    "unreadCount": await self.inbox.unread_count(actor.user_id),
                }
            )
            if last_id is None:
                conn.replay(await self.inbox.unacknowledged(actor.user_id))
            else:
                self.metrics.reconnections.inc()
                await self._resume(conn, last_id)
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

    async def _resume(self, conn: Connection, last_id: int) -> None:
        frames = await self.inbox.after(conn.user_id, last_id, self.settings.replay_bound)
        if frames is None:
            conn.skip_through(await self.inbox.newest_id(conn.user_id))
            conn.send_control({"type": "resumed", "recovered": False})
            return
        fresh = [f for f in frames if not conn.already_sent(f.notification_id or 0)]
        conn.send_control({"type": "resumed", "recovered": True, "count": len(fresh)})
        conn.replay(fresh)

    async def _receive_loop(self, socket: Socket, conn: Connection, actor: Actor) -> None:
        while True:
            raw = await socket.receive()
            if raw is None or conn.closed:
                return
            msg: Any = None
            if isinstance(raw, str):
                with contextlib.suppress(ValueError):
                    msg = json.loads(raw)
            # Acknowledging what this session was sent is not charged: a replay of up to
            # replay_bound (500) notifications must not trip the 100-a-minute limit.
            if not _acks_sent(conn, msg) and not await self.svc.limits.ws_message(actor.user_id):
                raise Closed(CLOSE_RATE_LIMITED, "too many messages")
            if isinstance(raw, bytes):
                conn.send_control(_error("binary_not_supported", "send JSON text frames"))
                continue
            if msg is None and raw.strip() != "null":
                conn.send_control(_error("invalid_json", "message is not JSON"))
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

    async def _handle(self, conn: Connection, actor: Actor, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "pong":
            return
        if kind == "ack":
            await self.inbox.acknowledge(actor.user_id, _int_field(msg, "id"))
        elif kind == "mark_read":
            await inbox_ops.mark_as_read(
                self.svc, actor, inbox_ops.MarkAsRead(notification_id=_int_field(msg, "id"))
            )
        elif kind == "resume":
            last_id = _int_field(msg, "lastId")
            conn.begin_replay()
            try:
                await self._resume(conn, last_id)
            finally:
                conn.end_replay()
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


SEGMENT_MESSAGES = {
    "crisis_intervention": (
        "We're here to help",
        "A counselor will reach out to you shortly with emergency support options.",
    ),
    "at_risk": (
        "New support for your finances",
        "We've prepared counseling and budgeting resources that fit your situation.",
    ),
    "financial_champions": (
        "You're a Financial Champion!",
        "Your financial wellness is outstanding. Exclusive benefits are now open to you.",
    ),
    "rising_stars": (
        "You're a Rising Star!",
        "Your progress unlocked mentorship and advanced wealth-planning tracks.",
    ),
    "steady_performers": (
        "Your wellness plan was updated",
        "New savings and investment ideas are waiting in your recommendations.",
    ),
}


def _segment_message(change: SegmentChange) -> tuple[str, str]:
    return SEGMENT_MESSAGES[change.to_segment]


def _number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x
