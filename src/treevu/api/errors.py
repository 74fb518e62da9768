"""REST error bodies: ``{"error": {"code", "message", "field"}}`` with the matching status."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from treevu.services.errors import ServiceError, database_unavailable

log = logging.getLogger(__name__)


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


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


#: The most of a refused input a 422 repeats back (a 10 MB body is not echoed).
EXCERPT_CHARS = 200


def _excerpt(value: Any) -> Any:
    """``value``, or the start of its JSON text when that is longer than ``EXCERPT_CHARS``."""
    text = json.dumps(value, default=str)
    if len(text) <= EXCERPT_CHARS:
        return value
    return text[:EXCERPT_CHARS] + f"… ({len(text):,} characters)"


def validation_error_response(exc: RequestValidationError) -> JSONResponse:
    """FastAPI's standard 422, with the refused input cut to an excerpt and non-finite
    numbers spelled as text.

    Python's JSON parser accepts ``NaN`` and ``Infinity``; echoed back as they are, they cannot
    be rendered as JSON and the 422 would become a 500.
    """
    errors = _json_safe(jsonable_encoder(exc.errors()))
    for error in errors:
        if isinstance(error, dict) and "input" in error:
            error["input"] = _excerpt(error["input"])
    return JSONResponse(status_code=422, content={"detail": errors})


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's answer, but a body nested too deep to parse is a 422 naming the limit."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
        detail = [{"type": "json_invalid", "loc": ["body"], "msg": "JSON nested too deeply"}]
        return JSONResponse(status_code=422, content={"detail": detail})
    return await http_exception_handler(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    async def on_service_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        return service_error_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return validation_error_response(exc)

    async def on_database_error(request: Request, exc: Exception) -> Response:
        unavailable = database_unavailable(exc)
        if unavailable is None:
            log.error("unexpected database error", exc_info=exc)
            return JSONResponse(
                status_code=500,
                content={"error": {"code": "INTERNAL", "message": "internal error", "field": None}},
            )
        return service_error_response(unavailable)

    app.add_exception_handler(DBAPIError, on_database_error)
    app.add_exception_handler(PoolTimeout, on_database_error)
    app.add_exception_handler(ConnectionError, on_database_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
