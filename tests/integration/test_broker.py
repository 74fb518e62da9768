"""One contract for every broker backend (in-process and Redis pub/sub), like Litestar's channels.

Each test names what any broker must do: hand every published envelope to the receiver, in
order, exactly once; close cleanly; answer ``ping``. The Redis backend is also checked as several
processes see it — two subscribers on one channel — and against junk on its channel. Every Redis
test uses a channel of its own (pub/sub channels are shared by every database number).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
import redis
import redis.asyncio as aioredis

from tests.conftest import REDIS_URL, unavailable
from treevu.notifications.broker import (
    Broker,
    Envelope,
    InProcessBroker,
    RedisBroker,
    make_broker,
)

BACKENDS = ("in_process", "redis")
BrokerFactory = Callable[[], Broker]


def _redis_answers() -> bool:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@pytest.fixture
def channel() -> str:
    return f"treevu:test:{uuid.uuid4().hex}"


@pytest.fixture
async def redis_brokers(channel: str) -> AsyncIterator[BrokerFactory]:
    """Makes Redis brokers on this test's channel (each one a process's view); closes them all."""
    if not _redis_answers():
        unavailable("redis")
    made: list[RedisBroker] = []

    def make() -> Broker:
        broker = RedisBroker(REDIS_URL, channel=channel)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        await broker.close()


@pytest.fixture(params=BACKENDS)
async def broker(request: pytest.FixtureRequest, channel: str) -> AsyncIterator[Broker]:
    """A fresh, not yet started broker of each backend."""
    if request.param == "in_process":
        backend: Broker = InProcessBroker()
    else:
        if not _redis_answers():
            unavailable("redis")
        backend = RedisBroker(REDIS_URL, channel=channel)
    yield backend
    await backend.close()


class Collector:
    """A receiver that keeps what it is handed, batch by batch; sync or async."""

    def __init__(self) -> None:
        self.batches: list[list[Envelope]] = []
        self._changed = asyncio.Event()

    @property
    def envelopes(self) -> list[Envelope]:
        return [e for batch in self.batches for e in batch]

    def __call__(self, envelopes: Sequence[Envelope]) -> None:
        self.batches.append(list(envelopes))
        self._changed.set()

    async def receive_async(self, envelopes: Sequence[Envelope]) -> None:
        await asyncio.sleep(0)  # a receiver that awaits must be awaited, not dropped
        self(envelopes)

    async def wait_for(self, count: int, timeout: float = 5) -> list[Envelope]:
        """Every envelope once ``count`` have arrived; fails after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while len(self.envelopes) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.envelopes

    async def settle(self, seconds: float = 0.2) -> list[Envelope]:
        """What arrived after a short quiet period (to see that nothing extra comes)."""
        await asyncio.sleep(seconds)
        return self.envelopes


def notify(nid: int, user_id: int = 7) -> Envelope:
    text = json.dumps(
        {"type": "notification", "notification": {"id": nid, "title": "Ahorro · 💰"}},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return Envelope("notify", user_id, nid, text, created_at=time.time())


def unread(count: int, user_id: int = 7) -> Envelope:
    return Envelope("unread", user_id, count=count)


def batches(n_batches: int, size: int) -> list[list[Envelope]]:
    """Batches of notify envelopes, each followed by the matching unread count."""
    out: list[list[Envelope]] = []
    nid = 0
    for b in range(n_batches):
        batch: list[Envelope] = []
        for _ in range(size):
            nid += 1
            batch.append(notify(nid, user_id=b % 3 + 1))
        batch.append(unread(nid, user_id=b % 3 + 1))
        out.append(batch)
    return out


# -- the contract, on every backend ---------------------------------------------------------


async def test_envelope_round_trips_through_its_wire_list() -> None:
    for env in (notify(41), unread(3), Envelope("notify", 1)):
        assert Envelope.from_list(json.loads(json.dumps(env.to_list()))) == env
    with pytest.raises(ValueError, match="unknown envelope kind"):
        Envelope.from_list(["shout", 1, 0, "", 0.0, 0])


async def test_receiver_gets_every_envelope_in_order_exactly_once(broker: Broker) -> None:
    received = Collector()
    await broker.start(received)
    sent = batches(20, 25)
    for batch in sent:
        await broker.publish(batch)
    expected = [e for batch in sent for e in batch]
    assert await received.wait_for(len(expected)) == expected
    assert await received.settle() == expected  # and nothing twice


async def test_batches_keep_their_boundaries_and_fields(broker: Broker) -> None:
    received = Collector()
    await broker.start(received)
    sent = batches(3, 4)
    for batch in sent:
        await broker.publish(batch)
    await received.wait_for(sum(map(len, sent)))
    assert received.batches == sent
    first = received.batches[0][0]
    assert first.kind == "notify" and first.notification_id == 1 and "💰" in first.text


async def test_an_async_receiver_is_awaited(broker: Broker) -> None:
    received = Collector()
    await broker.start(received.receive_async)
    sent = batches(5, 3)
    for batch in sent:
        await broker.publish(batch)
    expected = [e for batch in sent for e in batch]
    assert await received.wait_for(len(expected)) == expected


async def test_publishing_nothing_sends_nothing(broker: Broker) -> None:
    received = Collector()
    await broker.start(received)
    await broker.publish([])
    await broker.publish([unread(1)])
    assert await received.wait_for(1) == [unread(1)]
    assert received.batches == [[unread(1)]]


async def test_concurrent_publishers_lose_nothing(broker: Broker) -> None:
    received = Collector()
    await broker.start(received)

    async def publisher(user_id: int) -> None:
        for nid in range(1, 51):
            await broker.publish([notify(nid, user_id)])

    await asyncio.gather(*(publisher(uid) for uid in (1, 2, 3, 4)))
    got = await received.wait_for(200)
    assert len(got) == 200
    for uid in (1, 2, 3, 4):  # each publisher's own envelopes stay in its order
        assert [e.notification_id for e in got if e.user_id == uid] == list(range(1, 51))


async def test_ping_answers_true_while_running(broker: Broker) -> None:
    await broker.start(Collector())
    assert await broker.ping() is True


async def test_close_is_clean_and_idempotent(broker: Broker) -> None:
    received = Collector()
    await broker.start(received)
    await broker.publish([unread(1)])
    await received.wait_for(1)
    await broker.close()
    await broker.close()  # the fixture closes it a third time
    await broker.publish([unread(2)])  # after close: nothing reaches the old receiver
    assert await received.settle() == [unread(1)]


async def test_close_before_start_is_harmless(broker: Broker) -> None:
    await broker.close()


async def test_make_broker_picks_the_backend() -> None:
    assert isinstance(make_broker(None), InProcessBroker)
    redis_broker = make_broker(REDIS_URL)
    try:
        assert isinstance(redis_broker, RedisBroker)
    finally:
        await redis_broker.close()


# -- Redis as several processes see it ------------------------------------------------------


async def test_every_subscriber_gets_every_envelope_once(redis_brokers: BrokerFactory) -> None:
    """Two processes subscribed, a third publishing: each subscriber sees the same stream."""
    first, second, publisher = redis_brokers(), redis_brokers(), redis_brokers()
    got_first, got_second = Collector(), Collector()
    await first.start(got_first)
    await second.start(got_second)
    await publisher.start(Collector())
    sent = batches(10, 10)
    for batch in sent:
        await publisher.publish(batch)
    expected = [e for batch in sent for e in batch]
    assert await got_first.wait_for(len(expected)) == expected
    assert await got_second.wait_for(len(expected)) == expected
    assert await got_first.settle() == expected
    assert got_second.envelopes == expected


async def test_a_publisher_hears_its_own_envelopes(redis_brokers: BrokerFactory) -> None:
    """A node delivers to its own sockets through Redis too (no second local path)."""
    one, other = redis_brokers(), redis_brokers()
    got_one, got_other = Collector(), Collector()
    await one.start(got_one)
    await other.start(got_other)
    await one.publish([notify(1)])
    await other.publish([notify(2)])
    assert sorted(e.notification_id for e in await got_one.wait_for(2)) == [1, 2]
    assert sorted(e.notification_id for e in await got_other.wait_for(2)) == [1, 2]


async def test_channels_are_isolated(redis_brokers: BrokerFactory) -> None:
    mine = redis_brokers()
    received = Collector()
    await mine.start(received)
    elsewhere = RedisBroker(REDIS_URL, channel=f"treevu:test:{uuid.uuid4().hex}")
    try:
        await elsewhere.publish([notify(99)])
    finally:
        await elsewhere.close()
    await mine.publish([notify(1)])
    assert [e.notification_id for e in await received.wait_for(1)] == [1]
    assert [e.notification_id for e in await received.settle()] == [1]


async def test_a_closed_subscriber_stops_while_others_go_on(redis_brokers: BrokerFactory) -> None:
    leaving, staying = redis_brokers(), redis_brokers()
    got_leaving, got_staying = Collector(), Collector()
    await leaving.start(got_leaving)
    await staying.start(got_staying)
    await staying.publish([notify(1)])
    await got_leaving.wait_for(1)
    await leaving.close()
    await staying.publish([notify(2)])
    assert [e.notification_id for e in await got_staying.wait_for(2)] == [1, 2]
    assert [e.notification_id for e in await got_leaving.settle()] == [1]


async def test_ping_is_false_when_redis_is_unreachable() -> None:
    dead = RedisBroker("redis://127.0.0.1:1/0")
    try:
        assert await dead.ping() is False
    finally:
        await dead.close()


MALFORMED = [
    pytest.param(b"not json", id="not-json"),
    pytest.param(b"\xff\xfe", id="not-utf8"),
    pytest.param(b"42", id="not-a-list"),
    pytest.param(b'"notify"', id="a-string"),
    pytest.param(b'{"kind": "notify"}', id="an-object"),
    pytest.param(b"[null]", id="null-item"),
    pytest.param(b'[["notify", 1, 2, "x", 0.0]]', id="too-short"),
    pytest.param(b'[["notify", 1, 2, "x", 0.0, 0, 9]]', id="too-long"),
    pytest.param(b'[["shout", 1, 2, "x", 0.0, 0]]', id="unknown-kind"),
    pytest.param(b'[["notify", "abc", 2, "x", 0.0, 0]]', id="text-for-user"),
    pytest.param(b'[["notify", 1, {}, "x", 0.0, 0]]', id="object-for-id"),
    pytest.param(b'[["notify", 1, NaN, "x", 0.0, 0]]', id="nan-for-id"),
    pytest.param(b'[["notify", 1, 1e400, "x", 0.0, 0]]', id="infinity-for-id"),
]


@pytest.mark.parametrize("junk", MALFORMED)
async def test_malformed_message_is_dropped_and_the_listener_lives(
    redis_brokers: BrokerFactory, channel: str, junk: bytes
) -> None:
    broker = redis_brokers()
    received = Collector()
    await broker.start(received)
    raw = aioredis.Redis.from_url(REDIS_URL)
    try:
        await broker.publish([notify(1)])
        await raw.publish(channel, junk)
        # No pause: what comes right after the junk must not fall into a resubscription gap.
        await broker.publish([notify(2), unread(2)])
        await broker.publish([notify(3)])
    finally:
        await raw.aclose()
    expected = [notify_id(1), notify_id(2), unread(2), notify_id(3)]
    got = await received.wait_for(4, timeout=2)
    assert [_key(e) for e in got] == [_key(e) for e in expected]
    assert await broker.ping() is True


def notify_id(nid: int) -> Envelope:
    return Envelope("notify", 7, nid)


def _key(env: Envelope) -> tuple[str, int, int, int]:
    return (env.kind, env.user_id, env.notification_id, env.count)


async def test_a_slow_receiver_still_gets_everything_in_order(broker: Broker) -> None:
    """Pub/sub buffers while the receiver awaits; nothing is skipped or reordered."""
    got: list[int] = []

    async def slow(envelopes: Sequence[Envelope]) -> None:
        await asyncio.sleep(0.01)
        got.extend(e.notification_id for e in envelopes)

    await broker.start(slow)
    for nid in range(1, 31):
        await broker.publish([notify(nid)])
    await _until(lambda: len(got) >= 30)
    assert got == list(range(1, 31))


async def _until(done: Callable[[], bool], timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not done():
            await asyncio.sleep(0.02)


async def test_deployments_on_different_redis_databases_do_not_hear_each_other() -> None:
    if not _redis_answers():
        unavailable("redis")
    other_db = REDIS_URL.rsplit("/", 1)[0] + "/14"
    here, there = make_broker(REDIS_URL), make_broker(other_db)
    marker = uuid.uuid4().hex
    heard: list[Envelope] = []
    try:
        await there.start(lambda envs: heard.extend(e for e in envs if e.text == marker))
        await here.start(Collector())
        await here.publish([Envelope("notify", 7, 1, marker)])
        await asyncio.sleep(0.3)
    finally:
        await here.close()
        await there.close()
    assert heard == []
