"""The HTTP node's app (FastAPI): the REST and tRPC routers, the web app, the API reference, and
``/ws`` around the router. ``create_app`` imports it for the ``all`` and ``api`` roles only; a
socket node (``--role ws``) is a plain Starlette app (FastAPI costs a process ~10 MB)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from treevu import __version__
from treevu.api.errors import install_error_handlers
from treevu.api.rest import router as rest_router
from treevu.api.trpc import router as trpc_router
from treevu.api.ws import route_socket
from treevu.app import WEB_DIST
from treevu.config import Settings


class TreevuApp(FastAPI):
    """FastAPI, with ``/ws`` upgrades handed straight to the WebSocket endpoint
    (:func:`treevu.api.ws.route_socket`); HTTP requests take the normal path."""

    #: False on an ``api`` node: ``/ws`` is refused like any unknown path.
    serves_sockets = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.serves_sockets and await route_socket(self, scope, receive, send):
            return
        await super().__call__(scope, receive, send)


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


def http_app(
    settings: Settings,
    lifespan: Callable[[Any], AbstractAsyncContextManager[None]],
    routes: Sequence[BaseRoute],
    *,
    serves_sockets: bool,
) -> TreevuApp:
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
    app.serves_sockets = serves_sockets
    install_error_handlers(app)
    app.router.routes.extend(routes)
    app.include_router(rest_router)
    app.include_router(trpc_router)
    mount_web(app)
    return app
