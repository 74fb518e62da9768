"""Errors a use case raises; both transports map them to their own wire shapes."""

from __future__ import annotations

from typing import Final, Literal

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

ErrorCode = Literal[
    "BAD_REQUEST",
    "UNAUTHORIZED",
    "FORBIDDEN",
    "NOT_FOUND",
    "CONFLICT",
    "TOO_MANY_REQUESTS",
    "SERVICE_UNAVAILABLE",
]
HTTP_STATUS: dict[str, int] = {
    "BAD_REQUEST": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "CONFLICT": 409,
    "TOO_MANY_REQUESTS": 429,
    "SERVICE_UNAVAILABLE": 503,
}
#: Seconds a client is told to wait when the database does not answer.
UNAVAILABLE_RETRY_AFTER: Final = 5


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


def database_unavailable(exc: BaseException) -> ServiceError | None:
    """A 503 with ``Retry-After`` when ``exc`` means the database cannot be reached (refused,
    lost, timed out, pool exhausted, or locked) rather than that a statement was wrong.

    A refused connection can arrive as the driver's own ``ConnectionError`` (asyncpg's
    reconnect under the pool's pre-ping is not wrapped by SQLAlchemy).
    """
    reachable_but_wrong = isinstance(exc, DBAPIError) and not isinstance(
        exc, OperationalError | InterfaceError
    )
    if isinstance(exc, PoolTimeout | ConnectionError) or (
        isinstance(exc, DBAPIError) and (exc.connection_invalidated or not reachable_but_wrong)
    ):
        return ServiceError(
            "SERVICE_UNAVAILABLE",
            "the database is not answering; retry shortly",
            retry_after=UNAVAILABLE_RETRY_AFTER,
        )
    return None
