"""REST error bodies: ``{"error": {"code", "message", "field"}}`` with the matching status."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from treevu.services.errors import ServiceError


def service_error_response(exc: ServiceError) -> JSONResponse:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if exc.code == "UNAUTHORIZED":
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(
        status_code=exc.http_status,
        content={"error": {"code": exc.code, "message": exc.message, "field": exc.field}},
        headers=headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    async def on_service_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        return service_error_response(exc)

    app.add_exception_handler(ServiceError, on_service_error)
