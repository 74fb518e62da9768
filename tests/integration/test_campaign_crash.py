"""A campaign to more than 20,000 people survives ``kill -9`` of the server in the middle of
sending: every target is notified exactly once (rows counted, and what connected clients
received), none is skipped, and the campaign ends ``completed``. Once with one server on
SQLite; once with two on PostgreSQL, killing the one that is pacing at that moment."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import POSTGRES_URL, Database, _server_database, seed_and_score, token_for
from tests.integration.workflow import ADMIN, sync_engine
from tests.serve import ServeProcess
from treevu.client import NotificationClient
from treevu.db import CampaignDelivery, EmployeeSegment, JobRun, NotificationQueue, User
from treevu.db.migrate import upgrade

PEOPLE = 50_000  # the biggest segment then holds more than 20,000
ENV = {"TREEVU_JOB_INTERVALS": json.dumps({"campaigns.pace": 0.2})}
WATCHED = 60  # targets with a live client


def _one(db: Database, stmt: Any) -> Any:
    engine = sync_engine(db)
    try:
        with engine.connect() as conn:
            return conn.execute(stmt).scalar()
    finally:
        engine.dispose()


def _biggest_segment(db: Database) -> tuple[str, list[int]]:
    engine = sync_engine(db)
    try:
        with engine.connect() as conn:
            segment = conn.execute(
                select(EmployeeSegment.segment)
                .group_by(EmployeeSegment.segment)
                .order_by(func.count().desc())
                .limit(1)
            ).scalar_one()
            members = list(
                conn.execute(
                    select(EmployeeSegment.user_id)
                    .join(User, User.id == EmployeeSegment.user_id)
                    .where(EmployeeSegment.segment == segment, User.is_active.is_(True))
                ).scalars()
            )
    finally:
        engine.dispose()
    return str(segment), [int(u) for u in members]


def _sent(db: Database, cid: int) -> int:
    return int(
        _one(
            db,
            select(func.count())
            .select_from(CampaignDelivery)
            .where(CampaignDelivery.campaign_id == cid, CampaignDelivery.status == "sent"),
        )
    )


def _status(db: Database, cid: int) -> str:
    from treevu.db import Campaign

    return str(_one(db, select(Campaign.status).where(Campaign.id == cid)))


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


async def _crash_and_finish(db: Database, tmp_path: Path, servers: int) -> None:
    """Run the campaign, ``kill -9`` the pacing server mid-sending, restart it, check; the
    counts (targets, sent before the kill, rows after, received) are printed as one JSON line
    (``pytest -s``), also when a check fails."""
    seed_and_score(db, n_users=PEOPLE)
    segment, members = _biggest_segment(db)
    assert len(members) >= 20_000
    nodes: list[ServeProcess] = []
    try:
        for _ in range(servers):
            nodes.append(ServeProcess(db, tmp_path, env=ENV))
    except BaseException:  # one did not come up: stop those that did
        for node in nodes:
            node.stop()
        raise
    watched = members[:: len(members) // WATCHED][:WATCHED]
    clients = [
        NotificationClient(
            nodes[k % servers].url.replace("http", "ws", 1) + "/ws",
            token_for(db, uid),
            backoff_base=0.05,
            backoff_cap=0.5,
        )
        for k, uid in enumerate(watched)
    ]
    received: dict[int, list[Any]] = {uid: [] for uid in watched}

    async def listen(uid: int, client: NotificationClient) -> None:
        async for n in client.notifications():
            received[uid].append(n)

    listeners = []
    counts: dict[str, Any] = {"backend": db.backend, "servers": servers, "watched": WATCHED}
    try:
        for client in clients:
            client.start()
        for client in clients:
            await asyncio.wait_for(client.wait_connected(), 20)
        listeners = [
            asyncio.create_task(listen(uid, c)) for uid, c in zip(watched, clients, strict=True)
        ]
        r = httpx.post(
            nodes[0].url + "/api/v1/campaigns",
            json={"name": "crash", "segment": segment, "campaignType": "retention",
                  "title": "Hi {firstName}", "message": "For our {segmentName}",
                  "pacePerMinute": 240_000},
            headers={"Authorization": f"Bearer {token_for(db, ADMIN)}"},
            timeout=30,
        )  # fmt: skip
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        total = len(members)

        await asyncio.to_thread(_wait, lambda: _sent(db, cid) > 3000, 60, "sending")
        victim = _pacing_node(db, nodes)
        victim.kill()
        at_kill = _sent(db, cid)
        counts.update(targets=total, sentBeforeKill=at_kill, killedNode=nodes.index(victim))
        assert 0 < at_kill < total, at_kill
        restarted = ServeProcess(db, tmp_path, port=victim.port, env=ENV)
        nodes[nodes.index(victim)] = restarted
        await asyncio.to_thread(
            _wait, lambda: _status(db, cid) == "completed", 180, "the campaign to complete"
        )

        # Rows: every target exactly one notification, none skipped, nothing else sent.
        engine = sync_engine(db)
        try:
            with engine.connect() as conn:
                statuses = dict(
                    conn.execute(
                        select(CampaignDelivery.status, func.count())
                        .where(CampaignDelivery.campaign_id == cid)
                        .group_by(CampaignDelivery.status)
                    ).all()
                )
                pairs = conn.execute(
                    select(CampaignDelivery.user_id, NotificationQueue.user_id)
                    .join(
                        NotificationQueue, NotificationQueue.id == CampaignDelivery.notification_id
                    )
                    .where(CampaignDelivery.campaign_id == cid)
                ).all()
                stored = conn.execute(select(func.count()).select_from(NotificationQueue)).scalar()
        finally:
            engine.dispose()
        counts.update(deliveryRows=dict(statuses), notificationRows=stored, linked=len(pairs))
        assert statuses == {"sent": total}
        assert len(pairs) == total and all(a == b for a, b in pairs)
        assert sorted(a for a, _ in pairs) == sorted(members)
        assert stored == total

        # Clients: each watched target got it exactly once, across the restart.
        async def all_got() -> None:
            while any(not got for got in received.values()):
                await asyncio.sleep(0.05)

        await asyncio.wait_for(all_got(), 60)
        await asyncio.sleep(1)
        per_target = Counter(
            uid for uid, got in received.items() for n in got if n.data.get("campaignId") == cid
        )
        once = sum(n == 1 for n in per_target.values())
        counts.update(received=sum(per_target.values()), watchedWithOne=once)
        assert per_target == Counter(dict.fromkeys(watched, 1))
    finally:
        print(f"\ncampaign crash counts: {json.dumps(counts)}")
        for task in listeners:
            task.cancel()
        for client in clients:
            await client.close()
        for node in nodes:
            node.stop()


def _pacing_node(db: Database, nodes: list[ServeProcess]) -> ServeProcess:
    """The node pacing now: the one of the latest ``campaigns.pace`` run still running (else
    of the latest run). A node id is ``host:pid:random``; no match is a failure, never a guess."""
    runs = JobRun.job == "campaigns.pace"
    latest = _one(
        db,
        select(JobRun.node)
        .where(runs)
        .order_by(JobRun.finished_at.is_(None).desc(), JobRun.started_at.desc(), JobRun.id.desc())
        .limit(1),
    )
    assert latest is not None, "no campaigns.pace run recorded: no node is pacing"
    return nodes[_index_of(str(latest), [node.process.pid for node in nodes])]


def _index_of(node_id: str, pids: list[int]) -> int:
    """Which of the processes ``pids`` wrote ``node_id`` (``host:pid:random``)."""
    parts = node_id.rsplit(":", 2)
    pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
    if pid not in pids:
        raise AssertionError(f"the pacing node {node_id!r} is none of the servers (pids {pids})")
    return pids.index(pid)


def test_the_pacing_node_is_found_or_the_test_fails() -> None:
    assert _index_of("host:202:ab12cd", [101, 202]) == 1
    assert _index_of("my:host:101:ab12cd", [101, 202]) == 0  # a colon in the host name
    with pytest.raises(AssertionError, match="none of the servers"):
        _index_of("host:303:ab12cd", [101, 202])
    with pytest.raises(AssertionError, match="none of the servers"):
        _index_of("cli-host:abc:x", [101, 202])


async def test_kill_9_in_the_middle_of_a_campaign_one_server(
    sqlite_database: Database, tmp_path: Path
) -> None:
    await _crash_and_finish(sqlite_database, tmp_path, servers=1)


async def test_kill_9_of_the_pacing_server_of_two(tmp_path: Path) -> None:
    for url in _server_database(POSTGRES_URL, "postgresql"):
        db = Database("postgresql", url)
        upgrade(db.settings().sync_database_url)
        await _crash_and_finish(db, tmp_path, servers=2)
