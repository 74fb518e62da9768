"""CSV import of users and employee inputs: every row checked before anything is written.

A bad row is reported with its line number and field. Without ``skip_invalid`` one bad row means
nothing of the file is applied; with it, the good rows are applied and the bad ones reported.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from pydantic import EmailStr, TypeAdapter, ValidationError
from sqlalchemy import Engine, Table, select
from sqlalchemy.orm import Session

from treevu.db import EmployeeInputs, User
from treevu.db.bulk import after_explicit_ids, upsert_row
from treevu.db.users import ROLES
from treevu.segmentation.engine import (
    COUNT_INPUTS,
    INPUT_NAMES,
    OPTIONAL_INPUTS,
    InputError,
    check_number,
)
from treevu.services.bounds import MAX_INT
from treevu.services.rewards.achievements import checks_due

USER_COLUMNS = ("id", "email", "name", "role", "managerId", "department")
_EMAIL: TypeAdapter[str] = TypeAdapter(EmailStr)


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}"


@dataclass(slots=True)
class ImportReport:
    applied: int = 0
    errors: list[RowError] = field(default_factory=list)
    #: The users whose rows were written (for ``import inputs``: whose profiles to recompute).
    user_ids: list[int] = field(default_factory=list)


class ImportRejected(Exception):
    def __init__(self, errors: list[RowError]) -> None:
        super().__init__("; ".join(str(e) for e in errors[:20]))
        self.errors = errors


def _reader(lines: Iterable[str], required: tuple[str, ...]) -> csv.DictReader[str]:
    reader = csv.DictReader(lines)
    header = reader.fieldnames or []
    missing = [c for c in required if c not in header]
    if missing:
        raise ImportRejected([RowError(1, missing[0], "missing column in the header")])
    return reader


def _int(line: int, name: str, text: str | None, *, optional: bool = False) -> int | None:
    if text is None or text.strip() == "":
        if optional:
            return None
        raise _RowProblem(RowError(line, name, "is required"))
    try:
        return int(text)
    except ValueError:
        raise _RowProblem(RowError(line, name, f"not a whole number: {text!r}")) from None


class _RowProblem(Exception):
    def __init__(self, error: RowError) -> None:
        self.error = error


def parse_users(lines: Iterable[str]) -> tuple[list[dict[str, Any]], list[RowError]]:
    """Every row's user, and every error of every row. A row with errors is returned too (a
    field that did not parse is None), for the checks that need the database."""
    reader = _reader(lines, ("email", "name"))
    rows: list[dict[str, Any]] = []
    errors: list[RowError] = []
    seen: set[str] = set()
    for record in reader:
        line = reader.line_num
        misshapen = _shape_error(record, line)
        if misshapen is not None:
            errors.append(misshapen)
            continue
        found: list[RowError] = []
        email = (record.get("email") or "").strip().lower()
        try:
            email = _EMAIL.validate_python(email).lower()
        except ValidationError:
            found.append(RowError(line, "email", f"not an e-mail address: {email!r}"))
        else:
            if email in seen:
                found.append(RowError(line, "email", f"{email} appears twice in the file"))
        name = (record.get("name") or "").strip()
        if not name:
            found.append(RowError(line, "name", "is required"))
        role = (record.get("role") or "employee").strip()
        if role not in ROLES:
            found.append(
                RowError(line, "role", f"unknown role {role!r}; one of {', '.join(ROLES)}")
            )
        ids: dict[str, int | None] = {}
        for column in ("id", "managerId"):
            try:
                ids[column] = _int(line, column, record.get(column), optional=True)
            except _RowProblem as problem:
                found.append(problem.error)
        rows.append(
            {
                "id": ids.get("id"),
                "email": email,
                "name": name,
                "role": role,
                "managerId": ids.get("managerId"),
                "department": (record.get("department") or "").strip() or None,
                "_line": line,
            }
        )
        errors.extend(found)
        if not found:
            seen.add(email)
    return rows, errors


def parse_inputs(lines: Iterable[str]) -> tuple[list[dict[str, Any]], list[RowError]]:
    """Every row's inputs, and every error of every row (each field is checked on its own). A
    row with errors is returned too (without the fields that failed), for the ``userId`` check
    that needs the database."""
    required = tuple(n for n in INPUT_NAMES if n != "surveyScore")
    reader = _reader(lines, ("userId", *required))
    rows: list[dict[str, Any]] = []
    errors: list[RowError] = []
    for record in reader:
        line = reader.line_num
        misshapen = _shape_error(record, line)
        if misshapen is not None:
            errors.append(misshapen)
            continue
        found: list[RowError] = []
        user_id = None
        try:
            user_id = _int(line, "userId", record.get("userId"))
        except _RowProblem as problem:
            found.append(problem.error)
        checked: dict[str, Any] = {}
        for name in INPUT_NAMES:
            text = (record.get(name) or "").strip()
            if text == "":
                if name in OPTIONAL_INPUTS:
                    checked[name] = math.nan
                else:
                    found.append(RowError(line, name, "is required"))
                continue
            try:
                number = float(text)
            except ValueError:
                found.append(RowError(line, name, f"must be a number, got {text!r}"))
                continue
            try:
                checked[name] = check_number(name, number)
            except InputError as exc:
                found.append(RowError(line, exc.field, exc.message))
                continue
            if name in (*COUNT_INPUTS, "treePoints") and checked[name] > MAX_INT:
                # 32-bit INTEGER columns on PostgreSQL and MariaDB
                found.append(RowError(line, name, f"must be at most {MAX_INT}"))
        errors.extend(found)
        rows.append({**checked, "userId": user_id, "_line": line})
    return rows, errors


def import_users(
    engine: Engine, lines: Iterable[str], *, skip_invalid: bool, now: datetime
) -> ImportReport:
    rows, errors = parse_users(lines)
    with Session(engine) as session, session.begin():
        email_of = {uid: email for uid, email in session.execute(select(User.id, User.email))}
        for row in rows:
            owner = email_of.get(row["id"])
            if owner is not None and owner != row["email"]:
                errors.append(RowError(row["_line"], "id", f"id {row['id']} belongs to {owner}"))
        errors += _manager_errors(rows, set(email_of), {e.line for e in errors})
        bad = {e.line for e in errors}
        good = [row for row in rows if row["_line"] not in bad]
        return _apply(errors, skip_invalid, len(good), lambda: _write_users(session, good, now))


def _manager_errors(rows: list[dict[str, Any]], known: set[int], bad: set[int]) -> list[RowError]:
    """Every row's ``managerId`` that is no stored user and no user of the file; and, for a row
    otherwise good, a manager whose own row of the file has errors (``skip_invalid`` would
    leave them out, and the report would point at no one)."""
    line_of = {row["id"]: row["_line"] for row in rows if row["id"] is not None}
    found: dict[int, RowError] = {}
    for row in rows:
        manager, line = row["managerId"], row["_line"]
        if manager is not None and manager not in known and manager not in line_of:
            found[line] = RowError(line, "managerId", f"no user {manager}")
    while True:  # a bad manager's row makes their reports' rows bad, down the chain
        blocked = bad | found.keys()
        cascaded = [
            row
            for row in rows
            if row["managerId"] in line_of
            and row["managerId"] not in known
            and line_of[row["managerId"]] in blocked
            and row["_line"] not in blocked
        ]
        if not cascaded:
            return list(found.values())
        for row in cascaded:
            manager = row["managerId"]
            found[row["_line"]] = RowError(
                row["_line"],
                "managerId",
                f"user {manager} is not imported: line {line_of[manager]} has errors",
            )


def import_inputs(
    engine: Engine, lines: Iterable[str], *, skip_invalid: bool, now: datetime
) -> ImportReport:
    rows, errors = parse_inputs(lines)
    with Session(engine) as session, session.begin():
        known = {u for u in session.scalars(select(User.id))}
        for row in rows:
            if row["userId"] is not None and row["userId"] not in known:
                errors.append(RowError(row["_line"], "userId", f"no user {row['userId']}"))
        bad = {e.line for e in errors}
        good = [row for row in rows if row["_line"] not in bad]

        def write() -> None:
            for row in good:
                values: dict[str, Any] = {
                    "userId": row["userId"],
                    "updatedAt": now,
                    **{n: row[n] for n in INPUT_NAMES if n != "surveyScore"},
                }
                if not math.isnan(row["surveyScore"]):
                    values["surveyScore"] = row["surveyScore"]
                    values["surveyAt"] = now
                table = cast(Table, EmployeeInputs.__table__)
                session.execute(upsert_row(table, values, "userId", engine.dialect))
            # New points or goals may reach a tier or a milestone: checked by the relay.
            ids = sorted({int(row["userId"]) for row in good})
            for start in range(0, len(ids), 1000):
                session.execute(checks_due(now, ids[start : start + 1000]))

        report = _apply(errors, skip_invalid, len(good), write)
        report.user_ids = sorted({int(row["userId"]) for row in good})
        return report


def _apply(errors: list[RowError], skip_invalid: bool, count: int, write: Any) -> ImportReport:
    errors.sort(key=lambda e: e.line)
    if errors and not skip_invalid:
        raise ImportRejected(errors)
    write()
    return ImportReport(applied=count, errors=errors)


def _write_users(session: Session, rows: list[dict[str, Any]], now: datetime) -> None:
    # Users with an id are written in id order so managers exist before their reports.
    for row in sorted(rows, key=lambda r: (r["id"] is None, r["id"] or 0)):
        existing = session.scalar(select(User).where(User.email == row["email"]))
        user = existing or User(email=row["email"], created_at=now, is_active=True)
        if row["id"] is not None and existing is None:
            user.id = row["id"]
        user.name = row["name"]
        user.role = row["role"]
        user.manager_id = row["managerId"]
        user.department = row["department"]
        session.add(user)
        session.flush()
        if row["id"] is not None:
            _sync_user_ids(session)


def _sync_user_ids(session: Session) -> None:
    after_explicit_ids(session.connection(), "users")


def _shape_error(record: dict[Any, Any], line: int) -> RowError | None:
    """A row with more or fewer fields than the header (``csv.DictReader`` keys the extras
    under None and fills the missing with None)."""
    if None in record:
        return RowError(line, "row", "more fields than the header")
    if None in record.values():
        return RowError(line, "row", "fewer fields than the header")
    return None
