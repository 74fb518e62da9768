"""The ASGI app: ``create_app(settings)``; its lifespan owns the engines and services."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from treevu import __version__
from treevu.api.errors import install_error_handlers
from treevu.api.http_protocol import TreevuHttpProtocol
from treevu.api.ws import WS_PATH, websocket_endpoint
from treevu.config import Settings
from treevu.db import ACHIEVEMENTS_CHECK, COMPLIANCE_BATCH, SEGMENT_CHANGED
from treevu.db.migrate import newest_revision, stored_revision
from treevu.notifications.broker import make_broker
from treevu.notifications.crypto import DataCipher
from treevu.notifications.metrics import Metrics
from treevu.notifications.ws_protocol import uvicorn_ws_options
from treevu.segmentation.policy import default_policy
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


def relay_handlers(settings: Settings) -> dict[str, Handler]:
    """What the outbox relay does with each event kind (imported here: the engine behind
    them is not loaded by a socket-only node, which runs no relay)."""
    from treevu.services.notifications import compliance, notices
    from treevu.services.rewards import achievements

    return {
        SEGMENT_CHANGED: notices.segment_changed(default_policy(), settings.survey_valid_days),
        ACHIEVEMENTS_CHECK: achievements.check,
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
    handlers = relay_handlers(settings) if relay else {}
    return Services(
        settings=settings,
        sessions=sessions,
        bulk_engine=bulk_engine,
        policy=default_policy(),
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


class TreevuApp(FastAPI):
    """FastAPI, with ``/ws`` upgrades handed straight to the WebSocket endpoint.

    Routing and middleware cost ~12 KB per open socket (exit stacks, copied scopes, frames
    kept alive for the socket's lifetime); at ten thousand sockets that is 120 MB. HTTP
    requests take the normal path.
    """

    #: False on an ``api`` node: ``/ws`` is refused like any unknown path.
    serves_sockets = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == WS_PATH and self.serves_sockets:
            scope["app"] = self
            await websocket_endpoint(WebSocket(scope, receive, send))
            return
        await super().__call__(scope, receive, send)


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


def mount_web(app: FastAPI) -> None:
    """The dashboards and the bell under ``/app/`` (a short page when they were not built),
    and the API reference at ``/docs`` and ``/redoc`` with their scripts from ``/app/vendor``
    (copied there by the web build), so that they work without internet access."""

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} — API",
            swagger_js_url="/app/vendor/swagger-ui-bundle.js",
            swagger_css_url="/app/vendor/swagger-ui.css",
            swagger_favicon_url="data:,",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} — API",
            redoc_js_url="/app/vendor/redoc.standalone.js",
            redoc_favicon_url="data:,",
            with_google_fonts=False,
        )

    if (WEB_DIST / "index.html").is_file():
        app.mount("/app", StaticFiles(directory=WEB_DIST, html=True), name="web")
        return

    @app.get("/app/", include_in_schema=False)
    async def not_built() -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html><title>Treevü Engage</title><p>The web app is not built: run "
            "<code>make web</code> (Node.js 20 and npm).</p>",
            status_code=503,
        )


def create_app(settings: Settings) -> FastAPI:
    """The app for ``settings.role``: ``all``; ``api`` (no ``/ws``); ``ws`` — the sockets
    with the health and metrics routes, and none of the admin API, the jobs, the outbox relay
    or the engine (numpy, scikit-learn), which it never imports."""
    settings = settings.with_local_secrets()
    verifier = TokenVerifier(settings)
    metrics = Metrics()
    sockets_only = settings.role == "ws"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
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

    app = TreevuApp(
        docs_url=None,  # served below from the app's own copy of the assets (no CDN)
        redoc_url=None,
        title="Treevü Engage",
        version=__version__,
        lifespan=lifespan,
        description="Real-time notifications and financial-wellness segmentation.",
        # Bodies over the limit are refused with 413 while they are read, not after.
        max_body_size=settings.max_body_bytes,
    )
    app.serves_sockets = settings.role != "api"
    install_error_handlers(app)
    if not sockets_only:
        from treevu.api.rest import router as rest_router
        from treevu.api.trpc import router as trpc_router

        app.include_router(rest_router)
        app.include_router(trpc_router)
        mount_web(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        services: Services = app.state.services
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

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        realtime: Realtime = app.state.realtime
        metrics.queue_depth.set(realtime.hub.queue_depth())
        await realtime.refresh_gauges()
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return app
