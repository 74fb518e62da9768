"""The dialect-specific bulk SQL kit: every statement that differs by database lives here.

Use cases say what to write; this module knows how each database writes it fastest — the
DBAPI cursor straight into numpy, ``COPY`` on PostgreSQL, multi-row ``INSERT`` on MariaDB,
``executemany`` on SQLite, and the notification inbox's pre-compiled hot statements.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, cast

from sqlalchemy import (
    Column,
    Connection,
    Dialect,
    Engine,
    MetaData,
    Table,
    bindparam,
    insert,
    update,
)
from sqlalchemy.types import NullType

if TYPE_CHECKING:
    import numpy.typing as npt

from treevu.db.engagement import AuditLog
from treevu.db.notifications import NotificationQueue

#: Rows per ``executemany`` or ``COPY`` slice.
WRITE_CHUNK: Final = 50_000
#: Rows per multi-row INSERT on MariaDB (about 1 MB of SQL, well under max_allowed_packet).
MYSQL_ROWS_PER_INSERT: Final = 10_000


def placeholder(conn: Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def quote_camel(sql: str, conn: Connection) -> str:
    """PostgreSQL folds unquoted names to lower case; quote the camelCase ones."""
    if conn.dialect.name != "postgresql":
        return sql
    return re.sub(r"(?<![\"'\w])([a-z]+[A-Z]\w*)(?![\"'\w])", r'"\1"', sql)


def db_timestamp(conn: Connection, value: datetime) -> datetime | str:
    """A UTC datetime as the DBAPI should bind it: naive, and on SQLite the text SQLAlchemy stores.

    Binding text on SQLite keeps bulk-written rows byte-identical to ORM-written ones (and
    avoids the sqlite3 module's deprecated default datetime adapter).
    """
    naive = value.replace(tzinfo=None)
    if conn.dialect.name == "sqlite":
        return naive.strftime("%Y-%m-%d %H:%M:%S.%f")
    return naive


def dbapi_cursor(conn: Connection) -> Any:
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    return dbapi.cursor()


def fetchall(conn: Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    cursor = dbapi_cursor(conn)
    try:
        cursor.execute(quote_camel(sql, conn), tuple(params))
        rows: list[Any] = cursor.fetchall()
    finally:
        cursor.close()
    return rows


def fetch_numbers(
    conn: Connection, exprs: Sequence[str], rest: str, params: Sequence[Any], dtype: type
) -> npt.NDArray[Any]:
    """``SELECT exprs rest`` as a (rows, len(exprs)) array, sorted by the first column.

    The expressions must not be NULL. On MariaDB each row comes back as one text column:
    pymysql parses every value in Python, so one value a row is several times faster, and
    MariaDB prints numbers exactly (doubles in their shortest round-trip form; checked bit for
    bit on MariaDB 10.11).
    """
    import numpy as np  # here: the inbox's hot statements below are used where numpy is not

    width = len(exprs)
    table: npt.NDArray[Any]
    if conn.dialect.name == "mysql":
        rows = fetchall(conn, f"SELECT CONCAT_WS(',', {', '.join(exprs)}) {rest}", params)
        text = ",".join(row[0] for row in rows).split(",") if rows else []
        table = np.array(text, dtype=dtype).reshape(len(rows), width)
    else:
        rows = fetchall(conn, f"SELECT {', '.join(exprs)} {rest}", params)
        table = np.array(rows, dtype=dtype).reshape(len(rows), width)
    del rows
    ids: npt.NDArray[Any] = table[:, 0]
    if len(ids) > 1 and not bool((ids[1:] > ids[:-1]).all()):
        table = table[np.argsort(ids, kind="stable")]
    return table


def temp_table_statements(
    dialect: str, table: str, columns: Sequence[tuple[str, str]], reused: bool
) -> tuple[list[str], list[str]]:
    """Statements that give an empty temporary ``table``, and those that clear it after use.

    PostgreSQL and SQLite keep one per connection: creating and dropping a table for every
    recompute (one user's too) would churn PostgreSQL's system catalogs. PostgreSQL empties it at
    every commit and truncates it only when ``reused`` by a later batch of the same transaction.
    MariaDB gets a fresh one each time (temporary DDL does not commit): an InnoDB temporary
    table emptied with DELETE after a bulk run slowed the one-user write tenfold (45 ms against
    4.5 ms), and TRUNCATE would commit. Leftovers of a failed run are cleared first.
    """
    ddl = ", ".join(f"{name} {kind}" for name, kind in columns)
    if dialect == "postgresql":
        if reused:
            return [f"TRUNCATE {table}"], []
        return [f"CREATE TEMP TABLE IF NOT EXISTS {table} ({ddl}) ON COMMIT DELETE ROWS"], []
    if dialect == "mysql":
        drop = f"DROP TEMPORARY TABLE IF EXISTS {table}"
        return [drop, f"CREATE TEMPORARY TABLE {table} ({ddl})"], [drop]
    clear = f"DELETE FROM {table}"
    return [f"CREATE TEMP TABLE IF NOT EXISTS {table} ({ddl})", clear], [clear]


def copy_rows(
    conn: Connection,
    cursor: Any,
    table: str,
    names: Sequence[str],
    columns: list[list[Any]],
    *,
    text_columns: Sequence[str] = (),
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Insert ``columns`` (one list per name) into ``table`` the fastest way this database has:
    ``COPY`` on PostgreSQL, multi-row ``INSERT`` on MariaDB, ``executemany`` on SQLite.

    On MariaDB the values are formatted here (pymysql would escape every value in Python, one
    at a time): numbers by ``str`` (they must not be None), and the ``text_columns`` — the only
    text, None allowed — escaped once per distinct value by the driver. Without
    ``text_columns`` the driver binds every row.
    """
    total = len(columns[0])
    dialect = conn.dialect.name
    if dialect == "postgresql":
        sql = quote_camel(f"COPY {table} ({', '.join(names)}) FROM STDIN", conn)
        with cursor.copy(sql) as copy:
            for start, rows in _chunks(columns, total, WRITE_CHUNK):
                for row in rows:
                    copy.write_row(row)
                if progress:
                    progress(min(start + WRITE_CHUNK, total), total)
        return
    if dialect == "mysql" and text_columns:
        columns = columns.copy()
        for name in text_columns:
            k = list(names).index(name)
            literal = {text: cursor.connection.escape(text) for text in set(columns[k])}
            columns[k] = [literal[text] for text in columns[k]]
        head = f"INSERT INTO {table} ({', '.join(names)}) VALUES "
        row_sql = f"({', '.join(['%s'] * len(names))})"
        for start, rows in _chunks(columns, total, MYSQL_ROWS_PER_INSERT):
            cursor.execute(head + ",".join([row_sql % row for row in rows]))
            if progress:
                progress(min(start + MYSQL_ROWS_PER_INSERT, total), total)
        return
    p = placeholder(conn)
    sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join([p] * len(names))})"
    for start, rows in _chunks(columns, total, WRITE_CHUNK):
        cursor.executemany(sql, rows)
        if progress:
            progress(min(start + WRITE_CHUNK, total), total)


def _chunks(
    columns: list[list[Any]], total: int, size: int
) -> Iterator[tuple[int, Iterator[tuple[Any, ...]]]]:
    """Rows of ``columns`` in slices of ``size``, each with its first row's index."""
    for start in range(0, total, size):
        yield start, zip(*(c[start : start + size] for c in columns), strict=True)


def upsert_select(
    conn: Connection, table: str, columns: Sequence[str], select_sql: str, key: str
) -> str:
    """``INSERT INTO table (columns) SELECT …`` that updates every column but ``key`` when a
    row with that key exists (the first column is the key)."""
    head = f"INSERT INTO {table} ({', '.join(columns)}) {select_sql}"
    updated = [c for c in columns if c != key]
    if conn.dialect.name == "mysql":
        sets = ", ".join(f"{c} = VALUES({c})" for c in updated)
        return f"{head} ON DUPLICATE KEY UPDATE {sets}"
    sets = ", ".join(f"{c} = excluded.{c}" for c in updated)
    # A WHERE clause tells SQLite's parser that ON CONFLICT belongs to the INSERT.
    return f"{head} WHERE 1 = 1 ON CONFLICT ({key}) DO UPDATE SET {sets}"


def upsert_row(table: Table, values: dict[str, Any], key: str, dialect: Dialect) -> Any:
    """An ``INSERT`` of one row that updates the row with the same ``key`` instead."""
    # The dialect's module, imported when used: a process on one database loads no other's.
    dialect_insert = importlib.import_module(f"sqlalchemy.dialects.{dialect.name}").insert
    statement: Any = dialect_insert(table).values(values)
    update = {k: v for k, v in values.items() if k != key}
    if dialect.name == "mysql":
        return statement.on_duplicate_key_update(**update)
    return statement.on_conflict_do_update(index_elements=[key], set_=update)


def after_explicit_ids(conn: Connection, table: str) -> None:
    """PostgreSQL's sequence does not move past ids written explicitly; move it."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))"
        )


def temp_tables_in_memory(conn: Connection) -> None:
    """SQLite: temporary (staging) tables never need to reach the disk."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA temp_store = MEMORY")


def refresh_statistics(engine: Engine, tables: Sequence[str]) -> bool:
    """PostgreSQL: ``ANALYZE`` after a bulk write (planner statistics from before it lead
    queries astray until autovacuum comes by). Other databases: nothing; returns whether it ran."""
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
            f"ANALYZE {', '.join(tables)}"
        )
    return True


def json_object(conn: Connection, pairs: Sequence[tuple[str, str]]) -> str:
    """SQL building a JSON object from ``(key, SQL expression)`` pairs, in this dialect."""
    function = "json_build_object" if conn.dialect.name == "postgresql" else "JSON_OBJECT"
    args = ", ".join(f"'{key}', {expr}" for key, expr in pairs)
    return f"{function}({args})"


_QUEUE: Final = cast(Table, NotificationQueue.__table__)
QUEUE_COLUMNS: Final = (
    "userId", "type", "title", "message", "data", "status", "createdAt", "createdBy"
)  # fmt: skip
AUDIT_COLUMNS: Final = ("actorId", "action", "target", "detail", "createdAt")
#: Rows per INSERT statement: 8,000 parameters, under SQLite's 32,766 and MySQL's 65,535.
ROWS_PER_INSERT: Final = 1000


def _untyped(table: Table, names: Sequence[str]) -> Table:
    """``names`` of ``table`` (and its key) with no type processing: the hot write paths bind
    values that were converted once per batch with the real column types."""
    return Table(
        table.name,
        MetaData(),
        *(
            Column(c.name, c.type if c.primary_key else NullType(), primary_key=c.primary_key)
            for c in table.columns
            if c.primary_key or c.name in names
        ),
    )


QUEUE_ROWS: Final = _untyped(_QUEUE, (*QUEUE_COLUMNS, "sentAt"))
AUDIT_ROWS: Final = _untyped(cast(Table, AuditLog.__table__), AUDIT_COLUMNS)


@dataclass(frozen=True, slots=True)
class QueueWrites:
    """The hot write statements as this database spells them, and its own conversions of a
    ``data`` dict and of a timestamp (JSON text, its DATETIME form) — applied once per
    distinct value instead of once per row.

    Values go to the driver as flat tuples, not through SQLAlchemy's per-row parameter
    processing: one multi-row ``INSERT … VALUES (…), (…) RETURNING id`` per 1,000
    notifications, one ``UPDATE … WHERE id IN (…)`` per 1,000 sent marks, one
    ``executemany`` of the audit rows. Their text is SQLAlchemy's, compiled once; only the
    repeated placeholders are added here. With a paramstyle other than ``?``, ``%s`` or
    ``$n`` a statement is left empty and goes through SQLAlchemy Core instead.
    """

    data: Callable[[Any], Any]
    timestamp: Callable[[Any], Any]
    paramstyle: str
    queue_head: str  # INSERT INTO notification_queue (…) VALUES
    queue_tail: str  # RETURNING id
    sent_head: str  # UPDATE notification_queue SET status=?, sentAt=? WHERE status = ? AND id IN (
    sent_tail: str  # )
    audit: str  # INSERT INTO audit_log (…) VALUES (one row)

    @classmethod
    @functools.cache
    def for_dialect(cls, dialect: Dialect) -> QueueWrites:
        """Built once per dialect (cached): the store and the delivery side share it."""
        return cls._build(dialect)

    @classmethod
    def _build(cls, dialect: Dialect) -> QueueWrites:
        def binder(column: Column[Any]) -> Callable[[Any], Any]:
            process = column.type.dialect_impl(dialect).bind_processor(dialect)
            return process if process is not None else (lambda value: value)

        style = dialect.paramstyle
        queue_head = queue_tail = sent_head = sent_tail = audit = ""
        if style in ("qmark", "format", "numeric_dollar"):
            queue = (
                insert(QUEUE_ROWS)
                .returning(QUEUE_ROWS.c.id)
                .compile(dialect=dialect, column_keys=list(QUEUE_COLUMNS))
            )
            head, values, rest = queue.string.partition(" VALUES (")
            if values and list(queue.positiontup or ()) == list(QUEUE_COLUMNS):
                queue_head = head + " VALUES "
                queue_tail = rest.partition(")")[2]
            q = QUEUE_ROWS.c
            sent = (
                update(QUEUE_ROWS)
                .where(q.status == bindparam("was"), q.id.in_(bindparam("ids", expanding=True)))
                .values(status=bindparam("status"), sentAt=bindparam("at"))
                .compile(dialect=dialect)
            )
            head, marker, tail = sent.string.partition("__[POSTCOMPILE_ids]")
            if marker and list(sent.positiontup or ()) == ["status", "at", "was", "ids"]:
                sent_head, sent_tail = head, tail
            audit_insert = insert(AUDIT_ROWS).compile(
                dialect=dialect, column_keys=list(AUDIT_COLUMNS)
            )
            if list(audit_insert.positiontup or ()) == list(AUDIT_COLUMNS):
                head = audit_insert.string.partition(" VALUES (")[0]
                # Rebuilt without the RETURNING that some dialects add to a plain insert.
                audit = f"{head} VALUES ({_marks(style, 1, len(AUDIT_COLUMNS))})"
        return cls(
            binder(_QUEUE.c.data),
            binder(_QUEUE.c.createdAt),
            style,
            queue_head,
            queue_tail,
            sent_head,
            sent_tail,
            audit,
        )

    def queue_insert(self, rows: int) -> str:
        return (
            self.queue_head
            + _rows_of_marks(self.paramstyle, len(QUEUE_COLUMNS), rows)
            + self.queue_tail
        )

    def mark_sent(self, ids: int) -> str:
        """Parameters: ``"sent"``, the time, ``"pending"``, then the ids."""
        return self.sent_head + _marks(self.paramstyle, 4, ids) + self.sent_tail


@functools.lru_cache(maxsize=32)
def _rows_of_marks(paramstyle: str, width: int, rows: int) -> str:
    """``(?, ?), (?, ?)``: ``rows`` groups of ``width`` placeholders (1,000 rows: 0.5 ms)."""
    return ", ".join(f"({_marks(paramstyle, row * width + 1, width)})" for row in range(rows))


def _marks(paramstyle: str, first: int, count: int) -> str:
    """``?, ?, ?`` (or ``%s``, or ``$first, $first+1, …``): ``count`` positional placeholders."""
    if paramstyle == "numeric_dollar":
        return ", ".join(f"${i}" for i in range(first, first + count))
    mark = "?" if paramstyle == "qmark" else "%s"
    return ", ".join([mark] * count)
