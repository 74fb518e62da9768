"""Errors a use case raises; both transports map them to their own wire shapes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final, Literal, TypeVar

from sqlalchemy.exc import DBAPIError
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


def no_inputs(user_id: int) -> ServiceError:
    """The person has no inputs yet, so nothing that depends on them can change."""
    return ServiceError(
        "CONFLICT", f"userId: user {user_id} has no inputs yet; PUT their inputs first",
        field="userId",
    )  # fmt: skip


def forbidden(message: str = "not allowed") -> ServiceError:
    return ServiceError("FORBIDDEN", message)


def not_found(message: str) -> ServiceError:
    return ServiceError("NOT_FOUND", message)


#: MariaDB/MySQL client errors that mean "no server": can't connect (2002, 2003), gone away
#: (2006), lost (2013), shutting down (1053).
_MYSQL_UNREACHABLE: Final = frozenset({1053, 2002, 2003, 2006, 2013})
#: PostgreSQL SQLSTATEs that mean "no server": a connection exception (class 08), shutting
#: down or restarting (57P01-57P03).
_PG_UNREACHABLE: Final = frozenset({"57P01", "57P02", "57P03"})
#: Words of driver messages that mean the server was not reached or went away (psycopg reports
#: these without a SQLSTATE), or that SQLite is busy.
_UNREACHABLE_WORDS: Final = (
    "connection refused",
    "connect call failed",
    "connection failed",
    "server closed the connection",
    "the connection is closed",
    "the connection is lost",
    "database is locked",
)


def database_unavailable(exc: BaseException) -> ServiceError | None:
    """A 503 with ``Retry-After`` when ``exc`` means the database cannot be reached — refused,
    lost, timed out, pool exhausted, SQLite busy — rather than that a statement was wrong (a
    missing table stays a 500: retrying will not help).

    A refused connection can arrive as the driver's own ``ConnectionError`` (a reconnect under
    the pool's pre-ping is not always wrapped by SQLAlchemy).
    """
    if isinstance(exc, PoolTimeout | ConnectionError) or _unreachable(exc):
        return ServiceError(
            "SERVICE_UNAVAILABLE",
            "the database is not answering; retry shortly",
            retry_after=UNAVAILABLE_RETRY_AFTER,
        )
    return None


def _unreachable(exc: BaseException) -> bool:
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if isinstance(orig, OSError):
        return True
    code = orig.args[0] if orig is not None and orig.args else None
    if isinstance(code, int) and code in _MYSQL_UNREACHABLE:
        return True
    state = getattr(orig, "sqlstate", None)
    if isinstance(state, str) and (state.startswith("08") or state in _PG_UNREACHABLE):
        return True
    text = str(orig).lower()
    return any(words in text for words in _UNREACHABLE_WORDS)


T = TypeVar("T")
#: Times a transaction chosen as a deadlock victim is tried in all.
DEADLOCK_TRIES: Final = 5


def is_deadlock(exc: BaseException) -> bool:
    """MariaDB's 1213 and PostgreSQL's 40P01 both say "deadlock"."""
    return isinstance(exc, DBAPIError) and "deadlock" in str(exc.orig).lower()


async def retry_deadlocks(transaction: Callable[[], Awaitable[T]]) -> T:
    """Run ``transaction`` (which opens, does and commits its own), again when the database
    chose it as a deadlock victim (rolled back whole, so running it again is safe)."""
    for attempt in range(DEADLOCK_TRIES):
        try:
            return await transaction()
        except DBAPIError as exc:
            if not is_deadlock(exc) or attempt == DEADLOCK_TRIES - 1:
                raise
            await asyncio.sleep(0.005 * (attempt + 1))
    raise AssertionError("unreachable")
