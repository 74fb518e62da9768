"""The hub's per-socket queues: order, no duplicates, slow clients dropped, not waited for."""

from __future__ import annotations

import asyncio

from treevu.notifications.hub import CLOSE_TRY_AGAIN_LATER, Hub, Outgoing


class FakeSocket:
    """A socket double recording frames; ``gate`` lets a test stall the writer (slow client)."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.gate = asyncio.Event()
        self.gate.set()

    async def send_text(self, text: str) -> None:
        await self.gate.wait()
        self.frames.append(text)

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def frame(nid: int) -> Outgoing:
    return Outgoing(f"n{nid}", nid, 0.0)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_replay_buffer_keeps_id_order_and_drops_duplicates() -> None:
    hub = Hub(queue_size=100)
    sock = FakeSocket()
    conn = hub.connect(1, float("inf"), sock)
    hub.deliver(1, frame(5))  # live, arrives while replaying
    hub.deliver(1, frame(3))
    conn.replay([frame(2), frame(3)])
    conn.end_replay()
    hub.deliver(1, frame(5))
    await settle()
    assert sock.frames == ["n2", "n3", "n5"]
    hub.disconnect(conn)


async def test_each_id_once_from_none_to_one_to_many_and_claims_prove_nothing() -> None:
    hub = Hub(queue_size=100)
    sock = FakeSocket()
    conn = hub.connect(1, float("inf"), sock)
    conn.end_replay()
    assert not conn.already_sent(7) and not conn.sent_here(7)
    for nid in (7, 7, 9, 7, 9, 11):  # none → one id → a set of them
        hub.deliver(1, frame(nid))
    conn.client_has(12)  # the client resumed from 12: never sent, but not proven its own
    hub.deliver(1, frame(12))
    await settle()
    assert sock.frames == ["n7", "n9", "n11"]
    assert all(conn.sent_here(n) for n in (7, 9, 11))
    assert conn.already_sent(12) and not conn.sent_here(12)
    assert hub.offered_everywhere(1, 9) and not hub.offered_everywhere(1, 13)
    hub.disconnect(conn)


async def test_every_device_of_the_user_gets_it_and_no_one_else() -> None:
    hub = Hub(queue_size=100)
    a, b, other = FakeSocket(), FakeSocket(), FakeSocket()
    for uid, sock in ((1, a), (1, b), (2, other)):
        hub.connect(uid, float("inf"), sock).end_replay()
    assert hub.deliver(1, frame(9)) == 2
    await settle()
    assert a.frames == b.frames == ["n9"] and other.frames == []
    assert hub.connection_count == 3


async def test_slow_client_is_closed_without_slowing_others() -> None:
    hub = Hub(queue_size=8)
    slow, fast = FakeSocket(), FakeSocket()
    slow.gate.clear()
    slow_conn = hub.connect(1, float("inf"), slow)
    slow_conn.end_replay()
    hub.connect(2, float("inf"), fast).end_replay()
    for nid in range(1, 30):
        hub.deliver(1, frame(nid))
        hub.deliver(2, frame(nid))
        await settle()  # the fast client's writer keeps up; the stalled one cannot
    assert len(fast.frames) == 29
    assert slow_conn.closed
    slow.gate.set()
    await settle()
    assert slow.closed is not None and slow.closed[0] == CLOSE_TRY_AGAIN_LATER


async def test_heartbeat_closes_expired_tokens() -> None:
    hub = Hub(queue_size=8)
    live, old = FakeSocket(), FakeSocket()
    hub.connect(1, 2000.0, live).end_replay()
    hub.connect(2, 500.0, old).end_replay()
    expired = hub.heartbeat(now=1000.0)
    await settle()
    assert [c.user_id for c in expired] == [2]
    assert old.closed is not None and old.closed[0] == 4403
    assert live.frames and '"heartbeat"' in live.frames[0]


async def test_shutdown_closes_everyone_going_away() -> None:
    hub = Hub(queue_size=8)
    socks = [FakeSocket() for _ in range(3)]
    for uid, sock in enumerate(socks):
        hub.connect(uid, float("inf"), sock).end_replay()
    await hub.shutdown(grace_seconds=1)
    assert all(s.closed is not None and s.closed[0] == 1001 for s in socks)
    assert hub.connection_count == 0
