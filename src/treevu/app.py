"""The ASGI app: ``create_app(settings)``; its lifespan owns the engines and services."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from treevu.api.http_protocol import TreevuHttpProtocol
from treevu.api.ws import route_socket
from treevu.config import Settings
from treevu.db import ACHIEVEMENTS_CHECK, COMPLIANCE_BATCH, SEGMENT_CHANGED
from treevu.db.migrate import newest_revision, stored_revision
from treevu.notifications.broker import make_broker
from treevu.notifications.crypto import DataCipher
from treevu.notifications.metrics import Metrics
from treevu.notifications.ws_protocol import uvicorn_ws_options
from treevu.segmentation.policy import Policy, default_policy
from treevu.services.auth import TokenVerifier
from treevu.services.context import Services, StatsCache
from treevu.services.limits import RateLimits
from treevu.services.notifications.node import Realtime
from treevu.services.notifications.store import NotificationStore
from treevu.services.outbox import Handler, OutboxRelay

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
    if make_url(settings.database_url).get_backend_name() == "postgresql":
        # JIT compilation cost 360–460 ms of a 600 ms campaign-stats query at 200k deliveries
        # (its per-row EXISTS pushes the planner's cost over the default threshold); the
        # product's queries are short, JIT never pays here.
        kwargs["connect_args"] = {"options": "-c jit=off"}
    async_engine = create_async_engine(settings.database_url, **kwargs)
    bulk_engine = create_engine(settings.sync_database_url, **kwargs)
    if settings.is_sqlite:
        event.listen(async_engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(bulk_engine, "connect", _sqlite_pragmas)
    return async_engine, bulk_engine


def check_migrated(settings: Settings) -> None:
    current, head = stored_revision(settings.sync_database_url), newest_revision()
    if current != head:
        raise NotMigrated(
            f"the database is at migration {current or 'none'}, the newest is {head}; "
            "run `treevu db upgrade` first"
        )


def relay_handlers(settings: Settings, policy: Policy) -> dict[str, Handler]:
    """What the outbox relay does with each event kind (imported here: the engine behind
    them is not loaded by a socket-only node, which runs no relay)."""
    from treevu.services.notifications import compliance, notices
    from treevu.services.rewards import achievements

    return {
        SEGMENT_CHANGED: notices.segment_changed(policy, settings.survey_valid_days),
        ACHIEVEMENTS_CHECK: achievements.checker(policy, settings.survey_valid_days),
        COMPLIANCE_BATCH: compliance.send_batch,
    }


def build_services(
    settings: Settings, async_engine: AsyncEngine, bulk_engine: Engine, *, relay: bool = True
) -> Services:
    """Everything a use case needs, for the server and the CLI alike (no socket hub).
    ``relay``: False on a socket-only node, whose relay has no handlers and never runs."""
    assert settings.encryption_key is not None
    sessions = async_sessionmaker(async_engine, expire_on_commit=False)
    clock = lambda: datetime.now(UTC)  # noqa: E731
    cipher = DataCipher(settings.encryption_key)
    broker = make_broker(settings.redis_url, settings.redis_channel)
    store = NotificationStore(
        sessions, cipher, clock, broker, notify_channel=settings.pg_notify_channel
    )
    policy = default_policy()
    handlers = relay_handlers(settings, policy) if relay else {}
    return Services(
        settings=settings,
        sessions=sessions,
        bulk_engine=bulk_engine,
        policy=policy,
        clock=clock,
        cipher=cipher,
        broker=broker,
        store=store,
        relay=OutboxRelay(sessions, store, clock, handlers),
        stats_cache=StatsCache(settings.stats_cache_seconds),
        limits=RateLimits(
            settings.redis_url,
            ws_per_minute=settings.ws_messages_per_minute,
            admin_per_minute=settings.admin_notifications_per_minute,
            recompute_per_day=settings.recompute_per_day,
        ),
    )


#: Allocations (less deallocations) between two young-generation collections: CPython's 700
#: collected ten thousand sockets' traffic so often that short-lived objects (queued frames,
#: waiting acks, a broadcast's rows) outlived two collections, reached the old generation and
#: set off full collections over every socket's objects — 28% of the server's CPU with every
#: client acking (bench/ws_throughput.py --gc-stats). At this threshold they die young.
GC_YOUNG_THRESHOLD: Final = 50_000


def tune_collector() -> None:
    """For a server process, once its start-up objects exist: those are moved out of the
    collector's generations for good (``gc.freeze``), and young collections run at
    :data:`GC_YOUNG_THRESHOLD` allocations (the older generations' thresholds unchanged)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


#: The listen queue asked for (the kernel caps it at net.core.somaxconn: 4096 here).
LISTEN_BACKLOG = 16384


def ws_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's protocol options for this app (``treevu serve`` and the tests use them): the
    tuned WebSocket protocol, and HTTP with a header timeout."""
    TreevuHttpProtocol.header_timeout = settings.header_timeout
    return {
        **uvicorn_ws_options(
            max_message_bytes=settings.max_message_bytes,
            compression=settings.ws_compression,
            heartbeat_interval=settings.heartbeat_interval,
        ),
        "http": TreevuHttpProtocol,
        # A reconnect storm arrives all at once: a short listen queue drops SYNs, and a client
        # whose SYN is dropped waits 1, 3, 7, 15 s before trying again.
        "backlog": LISTEN_BACKLOG,
    }


#: The built web app (``web/app``, ``npm run build``): not committed, shipped in the wheel.
WEB_DIST: Final = Path(__file__).parent / "webui"


def create_app(settings: Settings) -> Starlette:
    """The app for ``settings.role``: ``all``; ``api`` (no ``/ws``); ``ws`` — the sockets
    with the health and metrics routes, a plain Starlette app: none of FastAPI, the admin API,
    the jobs, the outbox relay or the engine (numpy) is imported by a socket node."""
    settings = settings.with_local_secrets()
    verifier = TokenVerifier(settings)
    metrics = Metrics()
    sockets_only = settings.role == "ws"

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        check_migrated(settings)
        async_engine, bulk_engine = make_engines(settings)
        services = build_services(settings, async_engine, bulk_engine, relay=not sockets_only)
        realtime = Realtime(services, verifier, metrics)
        app.state.services = services
        app.state.verifier = verifier
        app.state.realtime = realtime
        await services.open()
        await realtime.start(relay=not sockets_only, sweep=sockets_only)
        scheduler = None
        if not sockets_only:
            from treevu.services.jobs import Scheduler

            scheduler = Scheduler(services, realtime)
            scheduler.start()
        try:
            yield
        finally:
            if scheduler is not None:
                await scheduler.stop()
            await realtime.stop()
            await services.close()
            await async_engine.dispose()
            bulk_engine.dispose()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        services: Services = request.app.state.services
        checks: dict[str, bool] = {}
        try:
            async with services.sessions() as session:
                await session.execute(text("SELECT 1"))
            checks["database"] = True
        except Exception:
            checks["database"] = False
        if settings.redis_url:
            checks["redis"] = await services.broker.ping()
        ready = all(checks.values())
        return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)

    async def metrics_endpoint(request: Request) -> Response:
        realtime: Realtime = request.app.state.realtime
        metrics.queue_depth.set(realtime.hub.queue_depth())
        await realtime.refresh_gauges()
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    routes = [
        Route("/healthz", healthz, include_in_schema=False),
        Route("/readyz", readyz, include_in_schema=False),
        Route("/metrics", metrics_endpoint, include_in_schema=False),
    ]
    if sockets_only:
        return SocketNode(routes=routes, lifespan=lifespan)
    from treevu.api.http_app import http_app

    return http_app(settings, lifespan, routes, serves_sockets=settings.role == "all")


class SocketNode(Starlette):
    """A socket node's app: ``/ws`` and the routes it is given."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await route_socket(self, scope, receive, send):
            await super().__call__(scope, receive, send)


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The HTTP API's OpenAPI document: what ``/openapi.json`` serves."""
    from fastapi import FastAPI

    app = create_app(settings.model_copy(update={"role": "all"}))
    assert isinstance(app, FastAPI)
    return app.openapi()
