"""The hub: live connections by user, each with a bounded queue and one writer task.

The per-client queue pattern (websockets' broadcast guide): fan-out never awaits a socket; it
puts a ready-made frame on each connection's queue. A connection whose queue is full has fallen
behind and is closed (it resumes from its last id later) instead of slowing everyone else.
Transport-agnostic: a connection talks to its socket through :class:`Transport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

log = logging.getLogger(__name__)

CLOSE_GOING_AWAY: Final = 1001
CLOSE_TOO_BIG: Final = 1009
CLOSE_TRY_AGAIN_LATER: Final = 1013  # the client fell behind; reconnect and resume
CLOSE_UNAUTHENTICATED: Final = 4401
CLOSE_EXPIRED: Final = 4403
CLOSE_RATE_LIMITED: Final = 4429


class Transport(Protocol):
    async def send_text(self, text: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A frame ready to write; ``notification_id`` set for notifications (status tracking)."""

    text: str
    notification_id: int | None = None
    created_at: float | None = None  # epoch seconds, for the delivery-latency histogram


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str


SentCallback = Callable[["Connection", Outgoing], None]


class Connection:
    """One authenticated socket: its queue, its writer task, and the ids it has been sent."""

    __slots__ = (
        "connection_id",
        "user_id",
        "expires_at",
        "_transport",
        "_queue_size",
        "_pending",
        "_writer",
        "_sent",
        "_claimed",
        "_replay_buffer",
        "_on_sent",
        "_floor",
        "closed",
    )

    def __init__(
        self,
        user_id: int,
        expires_at: float,
        transport: Transport,
        *,
        queue_size: int,
        on_sent: SentCallback,
    ) -> None:
        self.connection_id = uuid.uuid4().hex
        self.user_id = user_id
        self.expires_at = expires_at
        self._transport = transport
        self._queue_size = queue_size
        # The queue and its writer task exist only while there is something to write: ten
        # thousand idle sockets hold neither (memory per connection is the budget here).
        self._pending: deque[Outgoing | _Close] | None = None
        self._writer: asyncio.Task[None] | None = None
        #: The ids this session was sent: None, one id, or a set of them once there are two
        #: (an empty set is 216 bytes: ten thousand idle sockets, 2 MB).
        self._sent: int | set[int] | None = None
        #: Ids the client said it has (its resume ``lastId``s): among the sent so that they
        #: are never sent, but not proof that they are this user's. None until a resume.
        self._claimed: set[int] | None = None
        # While the connect-time replay runs, live notifications wait here so that the client
        # still sees ids in order and each id once.
        self._replay_buffer: list[Outgoing] | None = []
        self._on_sent = on_sent
        self._floor = 0  # ids at or below it are never sent (the client reloads them over HTTP)
        self.closed = False

    @property
    def queue_depth(self) -> int:
        return len(self._pending) if self._pending is not None else 0

    def send_control(self, payload: dict[str, object]) -> None:
        """Queue a non-notification message (welcome, heartbeat, unread_count, error, …)."""
        self._put(Outgoing(json.dumps(payload, separators=(",", ":"))))

    def offer(self, frame: Outgoing) -> None:
        """Queue a notification unless this session already had it (or buffer it mid-replay)."""
        if self._replay_buffer is not None:
            self._replay_buffer.append(frame)
            return
        self._offer_now(frame)

    def replay(self, frames: Iterable[Outgoing]) -> None:
        for frame in frames:
            self._offer_now(frame)

    def begin_replay(self) -> None:
        if self._replay_buffer is None:
            self._replay_buffer = []

    def end_replay(self) -> None:
        buffered, self._replay_buffer = self._replay_buffer or [], None
        for frame in sorted(buffered, key=lambda f: f.notification_id or 0):
            self._offer_now(frame)

    def skip_through(self, notification_id: int) -> None:
        """After ``resumed: recovered false``: the client reloads ids up to here itself."""
        self._floor = max(self._floor, notification_id)

    def already_sent(self, notification_id: int) -> bool:
        sent = self._sent
        if sent is None:
            return False
        if isinstance(sent, int):
            return sent == notification_id
        return notification_id in sent

    def _remember(self, notification_id: int) -> None:
        sent = self._sent
        if sent is None:
            self._sent = notification_id
        elif isinstance(sent, int):
            if sent != notification_id:
                self._sent = {sent, notification_id}
        else:
            sent.add(notification_id)

    def sent_here(self, notification_id: int) -> bool:
        """This session was offered this notification, so it is its user's (an id the client
        only claimed, by resuming from it, proves nothing)."""
        return self.already_sent(notification_id) and (
            self._claimed is None or notification_id not in self._claimed
        )

    def client_has(self, notification_id: int) -> None:
        """The client said it has this one (its resume ``lastId``): never send it again."""
        if not self.already_sent(notification_id):
            self._remember(notification_id)
            if self._claimed is None:
                self._claimed = set()
            self._claimed.add(notification_id)

    def _offer_now(self, frame: Outgoing) -> None:
        nid = frame.notification_id
        if nid is not None:
            if nid <= self._floor or self.already_sent(nid):
                return
            self._remember(nid)
        self._put(frame)

    def _put(self, item: Outgoing) -> None:
        if self.closed:
            return
        if self._pending is None:
            if self._writer is None:
                # Idle: write right away, with no queue and no task unless the socket blocks.
                self._write_eagerly(item)
                return
            self._pending = deque()
        elif len(self._pending) >= self._queue_size:
            log.info("connection %s of user %s fell behind", self.connection_id, self.user_id)
            self.close(CLOSE_TRY_AGAIN_LATER, "too slow: reconnect and resume")
            return
        self._pending.append(item)
        self._wake_writer()

    def _write_eagerly(self, item: Outgoing) -> None:
        """Write ``item`` now; if the socket makes the write wait, finish it in a writer task.

        A write to a socket that accepts it never waits, so fan-out to thousands of idle
        connections costs no task per frame (a task, its coroutine and its handle each time,
        all of which the garbage collector then has to track). What ``asyncio``'s eager tasks
        do from Python 3.12.
        """
        write = self._write(item)
        try:
            waiting = write.send(None)
        except StopIteration:
            return
        except Exception:  # the socket went away; the endpoint cleans up
            self.closed = True
            return
        # The socket is not writable: frames queue behind this one until it is.
        self._pending = deque()
        self._writer = asyncio.create_task(self._finish_then_drain(write, waiting))

    async def _write(self, item: Outgoing) -> None:
        await self._transport.send_text(item.text)
        if item.notification_id is not None:
            self._on_sent(self, item)

    async def _finish_then_drain(
        self, write: Coroutine[Any, Any, None], waiting: asyncio.Future[Any] | None
    ) -> None:
        try:
            await _resume(write, waiting)
        except Exception:
            self.closed = True
            self._writer = None
            return
        await self._write_loop()

    def close(self, code: int, reason: str) -> None:
        """Close after what is already queued (dropped when the client fell behind)."""
        if self.closed:
            return
        self.closed = True
        if self._pending is None or len(self._pending) >= self._queue_size:
            self._pending = deque()
        self._pending.append(_Close(code, reason))
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop())

    async def _write_loop(self) -> None:
        pending = self._pending
        try:
            while pending:
                item = pending.popleft()
                if isinstance(item, _Close):
                    pending.clear()
                    with contextlib.suppress(Exception):
                        await self._transport.close(item.code, item.reason)
                    return
                await self._write(item)
                pending = self._pending
        except Exception:  # the socket went away; the endpoint cleans up
            self.closed = True
        finally:
            # Drained (or done): drop the queue and this task until the next frame.
            self._writer = None
            if self._pending is not None and not self._pending:
                self._pending = None

    async def wait_closed(self) -> None:
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(writer)

    def cancel(self) -> None:
        self.closed = True
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()


async def _resume(coro: Coroutine[Any, Any, None], waiting: asyncio.Future[Any] | None) -> None:
    """Run ``coro`` to its end, from where it stopped to wait for ``waiting``: what a task
    does with a coroutine it stepped itself (None: it yielded to the loop once)."""
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                waiting._asyncio_future_blocking = False  # the flag a task clears on a wait
                await asyncio.wait((waiting,))
        except asyncio.CancelledError:
            coro.close()  # runs its finally blocks, as a cancelled task would
            raise
        try:
            waiting = coro.send(None)
        except StopIteration:
            return


class Hub:
    """Live connections of this process, by user."""

    def __init__(self, *, queue_size: int = 1000, on_sent: SentCallback | None = None) -> None:
        self._by_user: dict[int, set[Connection]] = {}
        self._queue_size = queue_size
        self._on_sent: SentCallback = on_sent or (lambda c, f: None)

    def connect(self, user_id: int, expires_at: float, transport: Transport) -> Connection:
        conn = Connection(
            user_id, expires_at, transport, queue_size=self._queue_size, on_sent=self._on_sent
        )
        self._by_user.setdefault(user_id, set()).add(conn)
        return conn

    def disconnect(self, conn: Connection) -> None:
        conns = self._by_user.get(conn.user_id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._by_user[conn.user_id]
        conn.cancel()

    def is_connected(self, user_id: int) -> bool:
        return user_id in self._by_user

    def connections(self, user_id: int) -> frozenset[Connection]:
        return frozenset(self._by_user.get(user_id, ()))

    def all_connections(self) -> list[Connection]:
        return [c for conns in self._by_user.values() for c in conns]

    @property
    def user_ids(self) -> list[int]:
        return list(self._by_user)

    @property
    def connection_count(self) -> int:
        return sum(len(c) for c in self._by_user.values())

    def queue_depth(self) -> int:
        return sum(c.queue_depth for conns in self._by_user.values() for c in conns)

    def deliver(self, user_id: int, frame: Outgoing) -> int:
        """Offer a notification to every live connection of its user; returns how many."""
        conns = self._by_user.get(user_id)
        if not conns:
            return 0
        for conn in conns:
            conn.offer(frame)
        return len(conns)

    def offered_everywhere(self, user_id: int, notification_id: int) -> bool:
        """Every live connection of ``user_id`` has had this notification (or none is here)."""
        return all(c.already_sent(notification_id) for c in self._by_user.get(user_id, ()))

    def send_control(self, user_id: int, payload: dict[str, object]) -> None:
        for conn in self._by_user.get(user_id, ()):
            conn.send_control(payload)

    def heartbeat(self, now: float | None = None) -> list[Connection]:
        """Heartbeat every connection; close those whose token expired. Returns the expired."""
        now = time.time() if now is None else now
        ts = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
        expired = []
        for conn in self.all_connections():
            if conn.expires_at <= now:
                conn.close(CLOSE_EXPIRED, "token expired")
                expired.append(conn)
            else:
                conn.send_control({"type": "heartbeat", "ts": ts})
        return expired

    async def shutdown(self, grace_seconds: float = 5.0) -> None:
        """Close every socket with 1001 (going away) and wait for the writers, bounded."""
        conns = self.all_connections()
        for conn in conns:
            conn.close(CLOSE_GOING_AWAY, "server shutting down")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_seconds):
                await asyncio.gather(*(c.wait_closed() for c in conns))
        for conn in conns:
            self.disconnect(conn)
