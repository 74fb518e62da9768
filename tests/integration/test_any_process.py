"""Notifications from any process (SPEC §4, §6.2), on SQLite, MariaDB and PostgreSQL: a change of
inputs over either transport tells the person once through the outbox, and ``treevu notify`` —
another process, which builds no socket hub — stores a row that the running server delivers.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import SECRET, Database, LiveServer, token_for
from tests.integration.workflow import rows
from treevu.client import NotificationClient
from treevu.db import EmployeeSegment, NotificationQueue, User

#: Inputs that put anyone in crisis_intervention (SPEC §3: fwiScore well under 30).
CRISIS_INPUTS: dict[str, Any] = {
    "monthlyIncome": 1000,
    "monthlySpending": 5000,
    "savingsBalance": 0,
    "monthlyDebtPayments": 900,
    "ewaAdvances30d": 6,
    "alerts30d": 9,
    "activeDays30d": 1,
    "goalsCompleted90d": 0,
    "lessonsCompleted90d": 0,
    "treePoints": 0,
}


def _admin(db: Database) -> int:
    return min(int(uid) for (uid,) in rows(db, select(User.id).where(User.role == "admin")))


def _outside_crisis(db: Database, how_many: int) -> list[int]:
    """Employees placed in some segment other than crisis (each test moves them into it)."""
    placed = rows(
        db,
        select(EmployeeSegment.user_id)
        .join(User, User.id == EmployeeSegment.user_id)
        .where(EmployeeSegment.segment != "crisis_intervention", User.role == "employee")
        .order_by(EmployeeSegment.user_id)
        .limit(how_many),
    )
    return [uid for (uid,) in placed]


def _put_rest(server: LiveServer, token: str, user: int) -> dict[str, Any]:
    r = httpx.put(
        f"{server.url}/api/v1/employees/{user}/inputs",
        json=CRISIS_INPUTS,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _put_trpc(server: LiveServer, token: str, user: int) -> dict[str, Any]:
    r = httpx.post(
        f"{server.url}/trpc/segmentation.updateInputs",
        json={"userId": user, "inputs": CRISIS_INPUTS},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()["result"]["data"]
    return body


async def test_inputs_over_rest_and_trpc_tell_each_moved_person_once(seeded: Database) -> None:
    """One person moved into crisis per transport: each is told by one unmutable
    ``intervention_update`` on their open socket, and their inbox holds exactly one."""
    admin = token_for(seeded, _admin(seeded))
    by_rest, by_trpc = _outside_crisis(seeded, 2)
    with LiveServer(seeded.settings()) as server:
        for user, put in ((by_rest, _put_rest), (by_trpc, _put_trpc)):
            async with NotificationClient(
                f"ws://127.0.0.1:{server.port}/ws", token_for(seeded, user)
            ) as client:
                profile = put(server, admin, user)
                assert profile["segment"] == "crisis_intervention"
                async with asyncio.timeout(10):
                    got = await client.next_notification()
                assert got.type == "intervention_update"
                assert got.data["toSegment"] == "crisis_intervention"
                assert got.data["fromSegment"] not in (None, "crisis_intervention")
    for user in (by_rest, by_trpc):
        told = rows(
            seeded,
            select(NotificationQueue.id).where(
                NotificationQueue.user_id == user,
                NotificationQueue.type == "intervention_update",
            ),
        )
        assert len(told) == 1, (user, told)


def _cli_environment(db: Database) -> dict[str, str]:
    """The environment of a ``treevu`` process on ``db`` (no ``TREEVU_*`` but these)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREEVU_")}
    return env | {
        "TREEVU_DATABASE_URL": db.url,
        "TREEVU_JWT_SECRET": SECRET,
        "TREEVU_ENCRYPTION_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        "NO_COLOR": "1",
        "COLUMNS": "200",  # rich wraps its messages at the terminal width
    }


#: Runs the ``treevu`` command line in this interpreter and reports whether it built a socket
#: hub or a delivery side (importing their modules is allowed; building one is not).
_CLI = """
import sys
from treevu.notifications.hub import Hub
from treevu.services.notifications.delivery import Delivery
from treevu.cli import main

built = []
for cls in (Hub, Delivery):
    def init(self, *args, _cls=cls, _init=cls.__init__, **kwargs):
        built.append(_cls.__name__)
        _init(self, *args, **kwargs)
    cls.__init__ = init
sys.argv[0] = "treevu"
try:
    main()
finally:
    print("BUILT " + ",".join(built) if built else "NO HUB")
"""


async def test_treevu_notify_stores_a_row_the_running_server_delivers(seeded: Database) -> None:
    """``treevu notify`` in its own process (no Redis: nobody to publish to) imports no socket
    hub; the server's tail finds the committed row and sends it to the connected user."""
    user = _outside_crisis(seeded, 1)[0]
    env = _cli_environment(seeded)
    with LiveServer(seeded.settings()) as server:
        async with NotificationClient(
            f"ws://127.0.0.1:{server.port}/ws", token_for(seeded, user)
        ) as client:
            args = ["--user", str(user), "--type", "milestone", "--title", "From the CLI"]
            args += ["--message", "hello", "--data", json.dumps({"step": 3})]
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-c", _CLI, "notify", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            assert done.stdout.strip().splitlines()[-1] == "NO HUB"
            async with asyncio.timeout(10):
                got = await client.next_notification()
    assert (got.type, got.title, got.message, got.data) == (
        "milestone",
        "From the CLI",
        "hello",
        {"step": 3},
    )
    stored = rows(
        seeded,
        select(NotificationQueue.id).where(
            NotificationQueue.user_id == user, NotificationQueue.title == "From the CLI"
        ),
    )
    assert [got.id] == [sid for (sid,) in stored]


@pytest.mark.parametrize("bad", ['{"a": ' * 40 + "1" + "}" * 40, "[1]"])
def test_treevu_notify_refuses_bad_data_and_stores_nothing(seeded: Database, bad: str) -> None:
    env = _cli_environment(seeded)
    before = rows(seeded, select(NotificationQueue.id))
    args = ["notify", "--user", "2", "--type", "milestone", "--title", "t", "--message", "m"]
    done = subprocess.run(
        [sys.executable, "-c", _CLI, *args, "--data", bad],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "--data" in done.stderr and "Traceback" not in done.stderr
    assert rows(seeded, select(NotificationQueue.id)) == before
