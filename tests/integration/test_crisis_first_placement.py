"""A person whose first placement is crisis — a new hire, someone's first inputs — enters crisis
like anyone else (SPEC §9 Crisis interventions), on SQLite, MariaDB and PostgreSQL; the
company's own first placement tells no one (docs/decisions.md).
"""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import func, select

from tests.conftest import Database, LiveServer, token_for
from tests.integration.test_any_process import CRISIS_INPUTS
from tests.integration.workflow import rows
from treevu.client import NotificationClient
from treevu.db import Intervention, NotificationQueue, OutboxEvent, User
from treevu.db.outbox import SEGMENT_CHANGED


def _one(db: Database, role: str) -> int:
    return min(int(uid) for (uid,) in rows(db, select(User.id).where(User.role == role)))


async def test_a_new_hire_placed_in_crisis_gets_an_intervention(seeded: Database) -> None:
    # The company's first placement (the seed's recompute over an empty table) wrote no
    # segment.changed event, though about 8% of the seeded people are in crisis.
    assert rows(seeded, select(func.count()).where(OutboxEvent.kind == SEGMENT_CHANGED)) == [(0,)]
    admin = {"Authorization": f"Bearer {token_for(seeded, _one(seeded, 'admin'))}"}
    manager = _one(seeded, "manager")
    with LiveServer(seeded.settings()) as server:
        hired = httpx.post(
            f"{server.url}/api/v1/users",
            json={"email": "new.hire@demo.treevu", "name": "New Hire", "managerId": manager},
            headers=admin,
            timeout=30,
        )
        assert hired.status_code == 201, hired.text
        uid = hired.json()["id"]
        async with NotificationClient(
            f"ws://127.0.0.1:{server.port}/ws", token_for(seeded, uid)
        ) as client:
            put = httpx.put(
                f"{server.url}/api/v1/employees/{uid}/inputs",
                json=CRISIS_INPUTS,
                headers=admin,
                timeout=30,
            )
            assert put.status_code == 200 and put.json()["segment"] == "crisis_intervention"
            async with asyncio.timeout(10):
                got = await client.next_notification()
    assert got.type == "intervention_update"
    assert got.data["toSegment"] == "crisis_intervention" and got.data["fromSegment"] is None
    ((case_id, counselor, status),) = rows(
        seeded,
        select(Intervention.id, Intervention.counselor_id, Intervention.status).where(
            Intervention.user_id == uid
        ),
    )
    assert status == "open" and got.data["interventionId"] == case_id
    told = {
        who: [t for (t,) in rows(seeded, select(NotificationQueue.type).where(
            NotificationQueue.user_id == who, NotificationQueue.type == "intervention_update"
        ))]
        for who in (uid, manager, counselor)
    }  # fmt: skip
    assert told[uid] == ["intervention_update"] and told[manager] == ["intervention_update"]
    assert counselor is not None and told[counselor] == ["intervention_update"]
