"""Real processes killed with SIGKILL, on SQLite and MariaDB: nothing lost, nothing twice.

- A server dies right after committing a keyed broadcast (before it answers); restarted, the
  same request with the same key answers the first ids and no second set of rows exists. Then
  the same with kills at random moments of the request.
- ``treevu segment recompute`` dies right after committing profiles and their outbox events
  (before relaying); a server started afterwards notifies every moved person exactly once.

``TREEVU_CRASH_AT`` (``treevu/faults.py``) makes the process SIGKILL itself at the named point.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, create_engine, func, pool, select, update
from sqlalchemy.orm import Session

from tests.conftest import (
    MYSQL_URL,
    Database,
    _server_database,
    seed_and_score,
    token_for,
)
from tests.serve import ServeProcess, serve_environment
from treevu.db import AuditLog, EmployeeInputs, EmployeeSegment, NotificationQueue, OutboxEvent
from treevu.db.migrate import upgrade

USERS = 2000
ADMIN_ID = 1


@pytest.fixture(params=["sqlite", "mariadb"])
def crash_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        db = Database("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'treevu.db'}")
        upgrade(db.settings().sync_database_url)
        seed_and_score(db, n_users=USERS + 1, seed=11)
        yield db
        return
    for url in _server_database(MYSQL_URL, "mariadb"):
        db = Database("mariadb", url)
        upgrade(db.settings().sync_database_url)
        seed_and_score(db, n_users=USERS + 1, seed=11)
        yield db


def sync_engine(db: Database) -> Engine:
    return create_engine(db.settings().sync_database_url, poolclass=pool.NullPool)


def scalar(db: Database, stmt: Any) -> Any:
    engine = sync_engine(db)
    try:
        with engine.connect() as conn:
            return conn.scalar(stmt)
    finally:
        engine.dispose()


def environment(db: Database, workdir: Path, **extra: str) -> dict[str, str]:
    return serve_environment(db, workdir, TREEVU_OUTBOX_INTERVAL="0.2", **extra)


def Server(db: Database, workdir: Path, **extra: str) -> ServeProcess:  # noqa: N802
    return ServeProcess(db, workdir, env={"TREEVU_OUTBOX_INTERVAL": "0.2", **extra})


def broadcast(server: ServeProcess, db: Database, key: str, title: str) -> httpx.Response:
    return httpx.post(
        server.url + "/api/v1/admin/notifications/broadcast",
        json={
            "userIds": list(range(2, USERS + 2)),
            "type": "compliance_alert",
            "title": title,
            "message": "Please read the updated policy.",
        },
        headers={"Authorization": f"Bearer {token_for(db, ADMIN_ID)}", "Idempotency-Key": key},
        timeout=60,
    )


def rows_titled(db: Database, title: str) -> int:
    return int(
        scalar(
            db,
            select(func.count())
            .select_from(NotificationQueue)
            .where(NotificationQueue.title == title),
        )
    )


def audits(db: Database) -> int:
    return int(
        scalar(
            db,
            select(func.count())
            .select_from(AuditLog)
            .where(AuditLog.action == "notification.broadcast"),
        )
    )


def retry_gives_one_set(db: Database, tmp_path: Path, key: str, title: str) -> None:
    server = Server(db, tmp_path)
    try:
        answer = broadcast(server, db, key, title)
    finally:
        server.stop()
    assert answer.status_code == 201, answer.text
    ids = answer.json()["ids"]
    assert len(ids) == USERS and rows_titled(db, title) == USERS
    stored = scalar(
        db, select(func.min(NotificationQueue.id)).where(NotificationQueue.title == title)
    )
    assert min(ids) == stored


def test_killed_after_the_commit_a_retry_with_the_key_creates_nothing_more(
    crash_db: Database, tmp_path: Path
) -> None:
    server = Server(crash_db, tmp_path, TREEVU_CRASH_AT="store.committed")
    try:
        with pytest.raises(httpx.TransportError):
            broadcast(server, crash_db, "policy-2026-12", "Policy update")
        assert server.process.wait(timeout=10) == -signal.SIGKILL
    finally:
        server.kill()
    # Committed before the crash: the rows, the key and the audit row, together.
    assert rows_titled(crash_db, "Policy update") == USERS
    assert audits(crash_db) == 1
    retry_gives_one_set(crash_db, tmp_path, "policy-2026-12", "Policy update")
    assert audits(crash_db) == 1


def test_killed_at_random_moments_a_retry_with_the_key_gives_one_set_of_rows(
    crash_db: Database, tmp_path: Path
) -> None:
    chance = random.Random(2026)  # noqa: S311 - kill timing, not security
    for attempt in range(3):
        key, title = f"random-{attempt}", f"Notice {attempt}"
        server = Server(crash_db, tmp_path)
        sender = threading.Thread(
            target=_ignore_transport_errors, args=(server, crash_db, key, title)
        )
        try:
            sender.start()
            time.sleep(chance.uniform(0.02, 0.15))
            server.kill()
            sender.join(timeout=60)
        finally:
            server.kill()
        assert rows_titled(crash_db, title) in (0, USERS)  # all of a request, or nothing
        retry_gives_one_set(crash_db, tmp_path, key, title)


def _ignore_transport_errors(server: ServeProcess, db: Database, key: str, title: str) -> None:
    try:
        broadcast(server, db, key, title)
    except httpx.TransportError:
        pass


def test_recompute_killed_before_relaying_is_notified_once_after_restart(
    crash_db: Database, tmp_path: Path
) -> None:
    engine = sync_engine(crash_db)
    try:
        with Session(engine) as session, session.begin():
            moved = list(
                session.scalars(
                    select(EmployeeSegment.user_id)
                    .where(EmployeeSegment.segment != "crisis_intervention")
                    .order_by(EmployeeSegment.user_id)
                    .limit(150)
                )
            )
            session.execute(
                update(EmployeeInputs)
                .where(EmployeeInputs.user_id.in_(moved))
                .values(
                    monthly_spending=9000.0,
                    savings_balance=0.0,
                    alerts_30d=9,
                    ewa_advances_30d=6,
                    survey_score=None,
                )
            )
    finally:
        engine.dispose()
    done = subprocess.run(
        [sys.executable, "-m", "treevu", "segment", "recompute", "--all"],
        env=environment(crash_db, tmp_path, TREEVU_CRASH_AT="recompute.committed"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    pending = (
        select(func.count()).select_from(OutboxEvent).where(OutboxEvent.processed_at.is_(None))
    )
    events = int(scalar(crash_db, pending))
    # The 150 moved people, and anyone whose survey aged out of its window since seeding.
    assert len(moved) <= events <= len(moved) + 5
    told = select(func.count(func.distinct(NotificationQueue.user_id)))
    total = select(func.count()).select_from(NotificationQueue)
    assert scalar(crash_db, total) == 0

    first, second = Server(crash_db, tmp_path), Server(crash_db, tmp_path)  # two relays
    try:
        deadline = time.monotonic() + 30
        while scalar(crash_db, pending) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        first.stop()
        second.stop()
    assert scalar(crash_db, pending) == 0
    told_moved = select(func.count(func.distinct(NotificationQueue.user_id))).where(
        NotificationQueue.user_id.in_(moved)
    )
    assert scalar(crash_db, told_moved) == len(moved)
    # Once each: every moved person got exactly one notification of their own change of
    # segment (entering crisis also tells their manager and a counselor: other notifications).
    engine = create_engine(crash_db.settings().sync_database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            own = [
                uid
                for uid, data in conn.execute(
                    select(NotificationQueue.user_id, NotificationQueue.data).where(
                        NotificationQueue.user_id.in_(moved)
                    )
                ).all()
                if "toSegment" in (data or {})  # about their own change of segment
            ]
    finally:
        engine.dispose()
    assert sorted(own) == sorted(moved)
    assert scalar(crash_db, told) >= len(moved) and scalar(crash_db, total) >= events
