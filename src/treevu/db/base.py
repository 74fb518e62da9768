"""Declarative base and shared column helpers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, MetaData, TypeDecorator, literal_column
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql.functions import FunctionElement

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A naive DATETIME column that always holds UTC and always returns aware datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; pass an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime(), dict: JSON(), list: JSON()}


class add_days(FunctionElement[datetime]):
    """``column + days`` as each database writes it (SQLAlchemy has no portable date
    arithmetic). On SQLite the text keeps milliseconds, compared as stored text."""

    type = DateTime()
    inherit_cache = True
    name = "add_days"

    def __init__(self, column: Any, days: int) -> None:
        super().__init__(column, literal_column(str(int(days))))


@compiles(add_days, "sqlite")
def _add_days_sqlite(element: add_days, compiler: Any, **kw: Any) -> str:
    column, days = list(element.clauses)
    return f"strftime('%Y-%m-%d %H:%M:%f', {compiler.process(column, **kw)}, '+{days} days')"


@compiles(add_days, "postgresql")
def _add_days_postgresql(element: add_days, compiler: Any, **kw: Any) -> str:
    column, days = list(element.clauses)
    return f"({compiler.process(column, **kw)} + INTERVAL '{days} days')"


@compiles(add_days, "mysql")
def _add_days_mysql(element: add_days, compiler: Any, **kw: Any) -> str:
    column, days = list(element.clauses)
    return f"DATE_ADD({compiler.process(column, **kw)}, INTERVAL {days} DAY)"
