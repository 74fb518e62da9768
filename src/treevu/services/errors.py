"""Errors a use case raises; both transports map them to their own wire shapes."""

from __future__ import annotations

from typing import Literal

ErrorCode = Literal[
    "BAD_REQUEST",
    "UNAUTHORIZED",
    "FORBIDDEN",
    "NOT_FOUND",
    "CONFLICT",
    "TOO_MANY_REQUESTS",
]
HTTP_STATUS: dict[str, int] = {
    "BAD_REQUEST": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "CONFLICT": 409,
    "TOO_MANY_REQUESTS": 429,
}


class ServiceError(Exception):
    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        field: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]


def bad_request(field: str, message: str) -> ServiceError:
    return ServiceError("BAD_REQUEST", f"{field}: {message}", field=field)


def forbidden(message: str = "not allowed") -> ServiceError:
    return ServiceError("FORBIDDEN", message)


def not_found(message: str) -> ServiceError:
    return ServiceError("NOT_FOUND", message)
