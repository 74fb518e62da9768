"""Fan-out between server processes: in-process (one worker) or Redis pub/sub (several).

A broker carries *envelopes* — already-committed notifications and unread-count changes — to
every process, each of which hands them to its own hub. It is not the truth: the database is.
A message lost here (Redis restart, a process that was not subscribed yet) is found again by the
pending sweep and by replay on connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

log = logging.getLogger(__name__)
CHANNEL = "treevu:notifications"


class BrokerUnavailable(ConnectionError):
    """The broker cannot carry this publish now; the database still has every row."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """``notify``: ``text`` is the wire frame of notification ``notification_id``;
    ``unread``: ``count`` is the user's new unread count."""

    kind: Literal["notify", "unread"]
    user_id: int
    notification_id: int = 0
    text: str = ""
    created_at: float = 0.0
    count: int = 0

    def to_list(self) -> list[Any]:
        return [
            self.kind,
            self.user_id,
            self.notification_id,
            self.text,
            self.created_at,
            self.count,
        ]

    @classmethod
    def from_list(cls, item: list[Any]) -> Envelope:
        kind, user_id, nid, text, created_at, count = item
        if kind not in ("notify", "unread"):
            raise ValueError(f"unknown envelope kind {kind!r}")
        return cls(kind, int(user_id), int(nid), str(text), float(created_at), int(count))


Receiver = Callable[[Sequence[Envelope]], Awaitable[None] | None]


class Broker(Protocol):
    async def start(self, receiver: Receiver) -> None: ...

    async def publish(self, envelopes: Sequence[Envelope]) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> bool: ...


async def _hand_over(receiver: Receiver, envelopes: Sequence[Envelope]) -> None:
    result = receiver(envelopes)
    if result is not None:
        await result


class InProcessBroker:
    """One process: publishing hands envelopes straight to the local hub."""

    def __init__(self) -> None:
        self._receiver: Receiver | None = None

    async def start(self, receiver: Receiver) -> None:
        self._receiver = receiver

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        if self._receiver is not None and envelopes:
            await _hand_over(self._receiver, envelopes)

    async def close(self) -> None:
        self._receiver = None

    async def ping(self) -> bool:
        return True


class RedisBroker:
    """Redis pub/sub on one channel; each message carries a batch of envelopes."""

    def __init__(self, url: str, channel: str = CHANNEL) -> None:
        import redis.asyncio as aioredis  # the ``redis`` extra: only a Redis setup needs it

        self._redis = aioredis.Redis.from_url(url)
        self._channel = channel
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self, receiver: Receiver) -> None:
        self._task = asyncio.create_task(self._listen(receiver), name="redis-broker")
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout=10)
        except TimeoutError:
            await self.close()
            raise

    async def _listen(self, receiver: Receiver) -> None:
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._channel)
                    # Subscribed once Redis confirms it — the first reply, read here (an
                    # error such as an ACL refusal raises): ``subscribe`` only sends.
                    await pubsub.get_message(timeout=None)
                    self._subscribed.set()
                    try:
                        await self._relay(pubsub, receiver)
                    finally:
                        self._subscribed.clear()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Lost messages are recovered by the pending sweep; keep listening.
                log.exception("redis broker connection lost; resubscribing")
                await asyncio.sleep(0.5)

    async def _relay(self, pubsub: Any, receiver: Receiver) -> None:
        async for message in pubsub.listen():
            if message.get("type") != "message":
                continue
            try:
                batch = [Envelope.from_list(x) for x in json.loads(message["data"])]
            except (ValueError, TypeError, KeyError, OverflowError) as exc:
                log.warning("dropping a malformed broker message: %s", exc)
                continue
            await _hand_over(receiver, batch)

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Publish — but not while this node's own subscription is down: after an outage a
        node resubscribes before it publishes again, and meanwhile it raises at once (the
        caller's rows are committed; the pending sweep delivers them) rather than wait. A
        publish-only broker (the CLI's) never subscribes and always publishes."""
        if not envelopes:
            return
        if self._task is not None and not self._subscribed.is_set():
            raise BrokerUnavailable("not subscribed to the broker; the sweep will deliver")
        payload = json.dumps([e.to_list() for e in envelopes], separators=(",", ":"))
        await self._redis.publish(self._channel, payload)

    async def close(self) -> None:
        task, self._task = self._task, None  # from here on, publish-only
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False


def channel_for(redis_url: str) -> str:
    """Pub/sub ignores database numbers: name the channel after the database so that two
    deployments sharing one Redis server (``…/14``, ``…/15``) never hear each other."""
    path = urlsplit(redis_url).path.strip("/") or "0"
    return f"{CHANNEL}:{path}"


def make_broker(redis_url: str | None, channel: str | None = None) -> Broker:
    if not redis_url:
        return InProcessBroker()
    return RedisBroker(redis_url, channel or channel_for(redis_url))
