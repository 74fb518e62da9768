"""The ASGI app: ``create_app(settings)``; its lifespan owns the engines and services."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from treevu import __version__
from treevu.api.errors import install_error_handlers
from treevu.api.rest import router as rest_router
from treevu.api.trpc import router as trpc_router
from treevu.config import Settings
from treevu.db.migrate import current_revision, head_revision
from treevu.segmentation.policy import default_policy
from treevu.services.auth import TokenVerifier
from treevu.services.context import Services, StatsCache

log = logging.getLogger(__name__)


class NotMigrated(RuntimeError):
    pass


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engines(settings: Settings) -> tuple[AsyncEngine, Engine]:
    """The async engine for requests and its synchronous twin for bulk jobs and migrations."""
    settings.ensure_sqlite_dir()
    kwargs: dict[str, object] = {}
    if not settings.is_sqlite:
        kwargs = {"pool_pre_ping": True, "pool_recycle": 1800}
    async_engine = create_async_engine(settings.database_url, **kwargs)
    bulk_engine = create_engine(settings.sync_database_url, **kwargs)
    if settings.is_sqlite:
        event.listen(async_engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(bulk_engine, "connect", _sqlite_pragmas)
    return async_engine, bulk_engine


def check_migrated(settings: Settings) -> None:
    current, head = current_revision(settings.sync_database_url), head_revision()
    if current != head:
        raise NotMigrated(
            f"the database is at migration {current or 'none'}, the newest is {head}; "
            "run `treevu db upgrade` first"
        )


def build_services(settings: Settings, async_engine: AsyncEngine, bulk_engine: Engine) -> Services:
    return Services(
        settings=settings,
        sessions=async_sessionmaker(async_engine, expire_on_commit=False),
        bulk_engine=bulk_engine,
        policy=default_policy(),
        clock=lambda: datetime.now(UTC),
        stats_cache=StatsCache(settings.stats_cache_seconds),
    )


def create_app(settings: Settings) -> FastAPI:
    settings = settings.with_local_secrets()
    verifier = TokenVerifier(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        check_migrated(settings)
        async_engine, bulk_engine = make_engines(settings)
        app.state.services = build_services(settings, async_engine, bulk_engine)
        app.state.verifier = verifier
        try:
            yield
        finally:
            await async_engine.dispose()
            bulk_engine.dispose()

    app = FastAPI(
        title="Treevü Engage",
        version=__version__,
        lifespan=lifespan,
        description="Real-time notifications and financial-wellness segmentation.",
    )
    install_error_handlers(app)
    app.include_router(rest_router)
    app.include_router(trpc_router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
