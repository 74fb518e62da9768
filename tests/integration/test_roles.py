"""``treevu serve --role``: a socket node (``ws``) beside an HTTP node (``api``) on one database.

The socket node answers ``/ws`` and the health routes only, and never imports the engine; the
API node refuses ``/ws``; a notification created on the API node reaches a client of the socket
node (SQLite without Redis: through the socket node's tail of the table), and its ack is stored.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import REDIS_URL, Database, LiveServer, token_for, unavailable
from tests.integration.test_client import (
    TIMEOUT,
    USER,
    admin_for,
    serving,
    take,
    ws_url,
)
from tests.integration.test_two_nodes import Node, _redis_answers
from treevu.client import NotificationClient
from treevu.db import NotificationQueue


def test_a_socket_node_never_imports_the_engine_the_admin_api_or_the_jobs(
    seeded_sqlite: Database, tmp_path: Path
) -> None:
    """Built and started (its lifespan runs, on a migrated database), then asked."""
    settings = seeded_sqlite.settings(role="ws", data_dir=tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREEVU_")}
    env |= {"TREEVU_SETTINGS_JSON": settings.model_dump_json()}
    probe = """
import asyncio, json, os, sys
from treevu.config import Settings
from treevu.app import create_app
app = create_app(Settings.model_validate(json.loads(os.environ["TREEVU_SETTINGS_JSON"])))
async def started():
    async with app.router.lifespan_context(app):
        pass
asyncio.run(started())
heavy = ("numpy", "sklearn", "scipy", "alembic", "fastapi", "treevu.api.rest", "treevu.api.trpc",
         "treevu.services.jobs", "treevu.segmentation.engine")
print(",".join(m for m in heavy if m in sys.modules) or "none")
"""
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "none", out.stdout + out.stderr


async def test_api_and_socket_nodes_share_the_work(seeded_sqlite: Database) -> None:
    db = seeded_sqlite
    api = LiveServer(db.settings(role="api", sweep_interval=0.3))
    ws = LiveServer(db.settings(role="ws", sweep_interval=0.3, tail_interval=0.05))
    async with serving(api), serving(ws), admin_for(db, api) as admin:
        async with httpx.AsyncClient(base_url=ws.url, timeout=TIMEOUT) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/metrics")).status_code == 200
            headers = {"Authorization": f"Bearer {token_for(db, USER)}"}
            assert (await http.get("/api/v1/me/notifications", headers=headers)).status_code == 404
        with pytest.raises(InvalidStatus):
            async with connect(ws_url(api)):
                pass
        async with NotificationClient(ws_url(ws), token_for(db, USER)) as client:
            nid = await admin.notify("from the api node")
            assert [n.id for n in await take(client, 1)] == [nid]
        # The client acked it; the socket node stores acks in batches, and on closing.
    engine = create_engine(db.settings().sync_database_url)
    try:
        with engine.connect() as conn:
            status = conn.scalar(
                select(NotificationQueue.status).where(NotificationQueue.id == nid)
            )
    finally:
        engine.dispose()
    assert status == "delivered"


async def test_socket_workers_behind_redis_get_what_an_api_node_creates(
    seeded_sqlite: Database, tmp_path: Path
) -> None:
    """``treevu serve --role ws --workers 2`` (uvicorn's workers, started from the light
    ``treevu.workers`` main module) beside ``treevu serve --role api``, through Redis."""
    if not _redis_answers():
        unavailable("redis")
    db = seeded_sqlite
    settings = db.settings()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREEVU_")}
    env.update(
        TREEVU_DATABASE_URL=db.url,
        TREEVU_REDIS_URL=REDIS_URL,
        TREEVU_REDIS_CHANNEL=f"treevu:test-roles:{os.getpid()}",
        TREEVU_JWT_SECRET=str(settings.jwt_secret),
        TREEVU_ENCRYPTION_KEY=str(settings.encryption_key),
    )
    sockets = Node("ws", env, tmp_path, ["--role", "ws", "--workers", "2"])
    api = Node("api", env, tmp_path, ["--role", "api"])
    try:
        for node in (sockets, api):
            node.wait_ready()
        async with (
            admin_for(db, api) as admin,
            NotificationClient(sockets.ws_url, token_for(db, USER)) as client,
        ):
            nid = await admin.notify("to a socket worker")
            assert [n.id for n in await take(client, 1)] == [nid]
    finally:
        for node in (sockets, api):
            node.stop()
