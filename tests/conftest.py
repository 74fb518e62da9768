"""Shared fixtures: real SQLite, MariaDB and PostgreSQL databases, and a live server.

Suites that need MariaDB, PostgreSQL or Redis skip when the server does not answer — unless
``TREEVU_TEST_REQUIRE_SERVERS=1`` (set by ``.ci/run``), which turns every such skip into a failure.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn
from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import make_url

from treevu.app import create_app, make_engines, ws_options
from treevu.config import Settings
from treevu.db.migrate import upgrade
from treevu.population import generate_population
from treevu.segmentation.policy import default_policy
from treevu.services.auth import mint_token
from treevu.services.people.seed import write_population
from treevu.services.segmentation.recompute import recompute

MYSQL_URL = os.environ.get("TREEVU_TEST_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306/test")
POSTGRES_URL = os.environ.get(
    "TREEVU_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TREEVU_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_SERVERS = os.environ.get("TREEVU_TEST_REQUIRE_SERVERS") == "1"
BACKENDS = ("sqlite", "mariadb", "postgresql")
T = TypeVar("T")
SECRET = "test-secret-0123456789abcdef0123456789abcdef"


def unavailable(what: str) -> None:
    """Skip, or fail when CI demands that every real server be tested."""
    if REQUIRE_SERVERS:
        pytest.fail(f"{what} is not reachable and TREEVU_TEST_REQUIRE_SERVERS=1")
    pytest.skip(f"{what} is not reachable")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Database:
    backend: str
    url: str  # async URL, as TREEVU_DATABASE_URL takes it

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": self.url,
            "jwt_secret": SECRET,
            "encryption_key": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            "stats_cache_seconds": 60,
        }
        values.update(overrides)
        return Settings.model_validate(values)


def _server_database(base: str, backend: str) -> Iterator[str]:
    url = make_url(base)
    if not _reachable(url.host or "127.0.0.1", url.port or 0):
        unavailable(backend)
    name = f"treevu_t_{uuid.uuid4().hex[:10]}"
    sync = Settings(database_url=base).sync_database_url
    admin = create_engine(sync, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if backend == "postgresql":
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A fresh, empty database on each backend."""
    backend: str = request.param
    if backend == "sqlite":
        yield Database(backend, f"sqlite+aiosqlite:///{tmp_path / 'treevu.db'}")
        return
    base = MYSQL_URL if backend == "mariadb" else POSTGRES_URL
    for url in _server_database(base, backend):
        yield Database(backend, url)


@pytest.fixture
def database(empty_database: Database) -> Database:
    """A fresh database on each backend, migrated to the newest revision."""
    upgrade(empty_database.settings().sync_database_url)
    return empty_database


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Database:
    db = Database("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'treevu.db'}")
    upgrade(db.settings().sync_database_url)
    return db


def seed_and_score(db: Database, n_users: int = 300, seed: int = 7) -> None:
    """Write a synthetic company and compute every profile once."""
    settings = db.settings()
    async_engine, bulk = make_engines(settings)
    async_engine.sync_engine.dispose()
    now = datetime.now(UTC)
    write_population(bulk, generate_population(n_users, seed), now=now)
    recompute(bulk, default_policy(), now=now)
    bulk.dispose()


def token_for(db: Database, user_id: int, ttl: int = 3600) -> str:
    return mint_token(db.settings(), user_id, ttl)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LiveServer:
    """uvicorn serving ``create_app(settings)`` in a thread, on a free loopback port."""

    def __init__(self, settings: Settings, port: int | None = None) -> None:
        self.port = port or free_port()
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", **ws_options(settings)
        )
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.serve())
        finally:
            self.loop.close()

    def app_state(self) -> Any:
        """The app's state (services, realtime) once the lifespan has started."""
        return self.app.state

    def run(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run a coroutine on the server's own event loop (e.g. a scheduled job, now)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture
def seeded_sqlite(sqlite_database: Database) -> Database:
    """A seeded database for tests that run servers of their own (other settings, restarts)."""
    seed_and_score(sqlite_database)
    return sqlite_database


@pytest.fixture
def seeded(database: Database) -> Database:
    seed_and_score(database)
    return database


@pytest.fixture
def live(seeded: Database) -> Iterator[LiveServer]:
    with LiveServer(seeded.settings()) as server:
        yield server


@pytest.fixture
def live_sqlite(sqlite_database: Database) -> Iterator[tuple[Database, LiveServer]]:
    seed_and_score(sqlite_database)
    with LiveServer(sqlite_database.settings()) as server:
        yield sqlite_database, server
