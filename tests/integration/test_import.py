"""CSV import of users and employee inputs on every backend (SPEC §1 ``treevu import``).

A bad row is reported with its line number and field, and then nothing of the file is applied;
with ``skip_invalid`` the good rows are applied and the bad ones reported.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, pool, select
from sqlalchemy.orm import Session

from tests.conftest import Database
from treevu.db import EmployeeInputs, User
from treevu.population import ROLES, generate_population
from treevu.segmentation.engine import INPUT_NAMES
from treevu.services.people.importer import ImportRejected, import_inputs, import_users
from treevu.services.people.seed import write_population

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
POPULATION = generate_population(30, 2)
EMPLOYEES = [
    int(uid)
    for uid, role in zip(POPULATION.user_id, POPULATION.role, strict=True)
    if ROLES[int(role)] == "employee"
]
USER_HEADER = "id,email,name,role,managerId,department"
INPUT_HEADER = ",".join(("userId", *INPUT_NAMES))


@pytest.fixture
def engine(database: Database) -> Iterator[Engine]:
    eng = create_engine(database.settings().sync_database_url, poolclass=pool.NullPool)
    yield eng
    eng.dispose()


@pytest.fixture
def company(engine: Engine) -> Engine:
    """The engine over a small synthetic company, with inputs for its employees."""
    write_population(engine, POPULATION, now=NOW)
    return engine


def lines(text: str) -> io.StringIO:
    return io.StringIO(text.lstrip("\n"), newline="")


def users_table(engine: Engine) -> list[tuple[Any, ...]]:
    with Session(engine) as s:
        return [tuple(r) for r in s.execute(select(User.__table__).order_by(User.id))]


def inputs_table(engine: Engine) -> list[tuple[Any, ...]]:
    with Session(engine) as s:
        return [
            tuple(r)
            for r in s.execute(select(EmployeeInputs.__table__).order_by(EmployeeInputs.user_id))
        ]


def keep_only(engine: Engine, emails: set[str]) -> None:
    with Session(engine) as s:
        for user in s.scalars(select(User).where(User.email.not_in(emails))):
            s.delete(user)
        s.commit()


def input_row(user_id: int | str, **changes: Any) -> str:
    values: dict[str, Any] = {
        "monthlyIncome": 4200,
        "monthlySpending": 3100.5,
        "savingsBalance": 2500,
        "monthlyDebtPayments": 400,
        "ewaAdvances30d": 1,
        "alerts30d": 0,
        "surveyScore": 61,
        "activeDays30d": 12,
        "goalsCompleted90d": 2,
        "lessonsCompleted90d": 3,
        "treePoints": 1800,
    }
    values.update(changes)
    return ",".join(
        [str(user_id), *("" if values[n] is None else str(values[n]) for n in INPUT_NAMES)]
    )


# --- users ------------------------------------------------------------------------------------

GOOD_USERS = f"""
{USER_HEADER}
101,ana.lopez@example.com,Ana Lopez,manager,,Finance
102,ben.okafor@example.com,Ben Okafor,employee,101,Finance
103,cy.tanaka@example.com,"Tanaka, Cy",counselor,,Human Resources
,dee.novak@example.com,Dee Novak,employee,101,
"""


def test_good_users_file_is_applied(engine: Engine) -> None:
    report = import_users(engine, lines(GOOD_USERS), skip_invalid=False, now=NOW)
    assert (report.applied, report.errors) == (4, [])
    with Session(engine) as s:
        users = {u.email: u for u in s.scalars(select(User))}
    assert set(users) == {
        "ana.lopez@example.com",
        "ben.okafor@example.com",
        "cy.tanaka@example.com",
        "dee.novak@example.com",
    }
    ana, ben, cy, dee = (users[e] for e in sorted(users))
    assert (ana.id, ana.role, ana.manager_id, ana.department) == (101, "manager", None, "Finance")
    assert (ben.id, ben.role, ben.manager_id) == (102, "employee", 101)
    assert (cy.name, cy.role, cy.department) == ("Tanaka, Cy", "counselor", "Human Resources")
    assert (dee.manager_id, dee.department, dee.is_active) == (101, None, True)

    # Importing again updates by e-mail instead of duplicating.
    renamed = GOOD_USERS.replace("Ben Okafor,employee", "Benjamin Okafor,manager")
    report = import_users(engine, lines(renamed), skip_invalid=False, now=NOW)
    assert report.applied == 4
    with Session(engine) as s:
        assert len(s.scalars(select(User)).all()) == 4
        ben = s.scalars(select(User).where(User.email == "ben.okafor@example.com")).one()
        assert (ben.id, ben.name, ben.role) == (102, "Benjamin Okafor", "manager")


def test_imported_ids_leave_room_for_new_users(engine: Engine) -> None:
    """Users imported with their ids, then users without one (and POST /users) still insert."""
    with_ids = (
        f"{USER_HEADER}\n1,first@example.com,First,admin,,\n"
        "2,second@example.com,Second,manager,,Ops\n"
    )
    import_users(engine, lines(with_ids), skip_invalid=False, now=NOW)
    without_ids = f"{USER_HEADER}\n,third@example.com,Third,employee,2,Ops\n"
    report = import_users(engine, lines(without_ids), skip_invalid=False, now=NOW)
    assert report.applied == 1
    with Session(engine) as s:
        s.add(User(email="fourth@example.com", name="Fourth", role="employee", is_active=True))
        s.commit()
        ids = {u.email: u.id for u in s.scalars(select(User))}
    assert ids["first@example.com"] == 1 and ids["second@example.com"] == 2
    assert len(set(ids.values())) == 4


BAD_USER_ROWS: list[tuple[str, str, str]] = [
    ("unknown role", "104,eve@example.com,Eve,overlord,,Sales", "role"),
    ("no @", "104,eve.example.com,Eve,employee,,Sales", "email"),
    ("nothing after @", "104,eve@,Eve,employee,,Sales", "email"),
    ("nothing before @", "104,@example.com,Eve,employee,,Sales", "email"),
    ("two @", "104,eve@@example.com,Eve,employee,,Sales", "email"),
    ("space in address", "104,eve smith@example.com,Eve,employee,,Sales", "email"),
    ("empty email", "104,,Eve,employee,,Sales", "email"),
    ("e-mail twice in the file", "104,ana.lopez@example.com,Ana Again,employee,,Sales", "email"),
    ("empty name", "104,eve@example.com,,employee,,Sales", "name"),
    ("text id", "abc,eve@example.com,Eve,employee,,Sales", "id"),
    ("text managerId", "104,eve@example.com,Eve,employee,boss,Sales", "managerId"),
    ("unknown managerId", "104,eve@example.com,Eve,employee,999,Sales", "managerId"),
    ("too many fields", "104,eve@example.com,Eve,employee,,Sales,extra", "row"),
    ("too few fields", "104,eve@example.com,Eve,employee", "row"),
]


def test_one_bad_user_row_rejects_the_whole_file(engine: Engine) -> None:
    """Each bad row in turn, as line 4 of an otherwise good file; every case is reported."""
    good_emails = {"ana.lopez@example.com", "ben.okafor@example.com", "fay@example.com"}
    problems: list[str] = []
    for label, row, field in BAD_USER_ROWS:
        text = (
            f"{USER_HEADER}\n101,ana.lopez@example.com,Ana Lopez,manager,,Finance\n"
            f"102,ben.okafor@example.com,Ben Okafor,employee,101,Finance\n{row}\n"
            "105,fay@example.com,Fay,employee,101,Finance\n"
        )
        keep_only(engine, good_emails)  # whatever an earlier case let through goes
        before = users_table(engine)
        try:
            import_users(engine, lines(text), skip_invalid=False, now=NOW)
        except ImportRejected as exc:
            found = [(e.line, e.field) for e in exc.errors]
            if found != [(4, field)] or f"line 4: {field}" not in str(exc):
                problems.append(f"{label}: reported {found}, expected [(4, {field!r})]")
        else:
            problems.append(f"{label}: the file was accepted")
        if users_table(engine) != before:
            problems.append(f"{label}: the rejected file changed the users table")
            continue
        # With skip_invalid the three good rows go in (again: importing updates by e-mail).
        report = import_users(engine, lines(text), skip_invalid=True, now=NOW)
        if report.applied != 3 or [(e.line, e.field) for e in report.errors] != [(4, field)]:
            errors = [(e.line, e.field) for e in report.errors]
            problems.append(f"{label}: skip_invalid applied {report.applied}, reported {errors}")
        with Session(engine) as s:
            emails = set(s.scalars(select(User.email)))
        if emails != good_emails:
            problems.append(f"{label}: skip_invalid left {sorted(emails - good_emails)}")
    assert not problems, "\n".join(problems)


def test_user_id_taken_by_someone_else_is_a_row_error(company: Engine) -> None:
    """Id 5 already belongs to another e-mail: a clear row error, not a database crash."""
    text = f"{USER_HEADER}\n5,someone.new@example.com,Someone New,employee,,Sales\n"
    before = users_table(company)
    with pytest.raises(ImportRejected) as caught:
        import_users(company, lines(text), skip_invalid=False, now=NOW)
    assert [(e.line, e.field) for e in caught.value.errors] == [(2, "id")]
    assert users_table(company) == before


def test_every_bad_user_row_is_reported_in_line_order(engine: Engine) -> None:
    text = (
        f"{USER_HEADER}\n104,eve@example.com,Eve,employee,999,Sales\n"
        "105,fay@example.com,Fay,employee,,Sales\n106,gus.example.com,Gus,employee,,Sales\n"
        "107,hal@example.com,Hal,wizard,,Sales\n"
    )
    with pytest.raises(ImportRejected) as caught:
        import_users(engine, lines(text), skip_invalid=False, now=NOW)
    assert [(e.line, e.field) for e in caught.value.errors] == [
        (2, "managerId"),
        (4, "email"),
        (5, "role"),
    ]
    assert users_table(engine) == []


def test_users_header_without_a_required_column_is_rejected(engine: Engine) -> None:
    with pytest.raises(ImportRejected) as caught:
        import_users(engine, lines("id,name,role\n1,Ann,employee\n"), skip_invalid=True, now=NOW)
    assert [(e.line, e.field) for e in caught.value.errors] == [(1, "email")]
    assert users_table(engine) == []


# --- inputs -----------------------------------------------------------------------------------


def test_good_inputs_file_is_applied(company: Engine) -> None:
    a, b, c = EMPLOYEES[:3]
    with Session(company) as s:
        had = s.get(EmployeeInputs, b)
        assert had is not None
        kept_survey = (had.survey_score, had.survey_at)
    text = "\n".join(
        [
            INPUT_HEADER,
            input_row(a),
            input_row(b, surveyScore=None, treePoints=0, monthlyIncome=0),
            input_row(c, alerts30d=7, ewaAdvances30d=4.0),
        ]
    )
    report = import_inputs(company, lines(text + "\n"), skip_invalid=False, now=NOW)
    assert (report.applied, report.errors) == (3, [])
    with Session(company) as s:
        ra, rb, rc = (s.get(EmployeeInputs, uid) for uid in (a, b, c))
        assert ra is not None and rb is not None and rc is not None
        assert (ra.monthly_income, ra.monthly_spending, ra.survey_score) == (4200, 3100.5, 61)
        assert ra.survey_at is not None and ra.survey_at.replace(tzinfo=UTC) == NOW
        assert (rb.monthly_income, rb.tree_points) == (0, 0)
        # No survey in the file: the stored one is kept.
        assert (rb.survey_score, rb.survey_at) == kept_survey
        assert (rc.alerts_30d, rc.ewa_advances_30d) == (7, 4)
        untouched = s.get(EmployeeInputs, EMPLOYEES[3])
        assert untouched is not None and untouched.monthly_income != 4200


BAD_INPUT_ROWS: list[tuple[str, str, set[str]]] = [
    ("negative amount", input_row("{uid}", monthlySpending=-5), {"monthlySpending"}),
    ("negative count", input_row("{uid}", alerts30d=-1), {"alerts30d"}),
    ("text in a number", input_row("{uid}", savingsBalance="lots"), {"savingsBalance"}),
    ("NaN", input_row("{uid}", monthlyIncome="nan"), {"monthlyIncome"}),
    ("infinity", input_row("{uid}", monthlyDebtPayments="inf"), {"monthlyDebtPayments"}),
    ("fractional count", input_row("{uid}", ewaAdvances30d=1.5), {"ewaAdvances30d"}),
    ("survey over 100", input_row("{uid}", surveyScore=101), {"surveyScore"}),
    ("31 active days", input_row("{uid}", activeDays30d=31), {"activeDays30d"}),
    ("missing value", input_row("{uid}", treePoints=None), {"treePoints"}),
    ("unknown userId", input_row(99999), {"userId"}),
    ("text userId", input_row("abc"), {"userId"}),
    ("empty userId", input_row(""), {"userId"}),
    ("too many fields", input_row("{uid}") + ",7", {"row"}),
    (
        "too few fields",
        ",".join(input_row("{uid}").split(",")[:-2]),
        {"row", "lessonsCompleted90d"},
    ),
]


def test_one_bad_inputs_row_rejects_the_whole_file(company: Engine) -> None:
    """Each bad row in turn, as line 4 of an otherwise good file; every case is reported."""
    a, b, c, d = EMPLOYEES[:4]
    with Session(company) as s:
        income_c = s.get(EmployeeInputs, c).monthly_income  # type: ignore[union-attr]
    problems: list[str] = []
    for label, row, fields in BAD_INPUT_ROWS:
        text = "\n".join(
            [INPUT_HEADER, input_row(a), input_row(b), row.replace("{uid}", str(c)), input_row(d)]
        )
        before = inputs_table(company)
        reported = ""
        try:
            import_inputs(company, lines(text + "\n"), skip_invalid=False, now=NOW)
        except ImportRejected as exc:
            found = [(e.line, e.field) for e in exc.errors]
            if len(found) != 1 or found[0][0] != 4 or found[0][1] not in fields:
                problems.append(f"{label}: reported {found}, expected line 4 and one of {fields}")
            elif f"line 4: {found[0][1]}" not in str(exc):
                problems.append(f"{label}: the message does not say line 4: {exc}")
            else:
                reported = found[0][1]
        else:
            problems.append(f"{label}: the file was accepted")
        if inputs_table(company) != before:
            problems.append(f"{label}: the rejected file changed employee_inputs")
        if not reported:
            continue
        report = import_inputs(company, lines(text + "\n"), skip_invalid=True, now=NOW)
        errors = [(e.line, e.field) for e in report.errors]
        if report.applied != 3 or errors != [(4, reported)]:
            problems.append(f"{label}: skip_invalid applied {report.applied}, reported {errors}")
        with Session(company) as s:
            incomes = [
                s.get(EmployeeInputs, uid).monthly_income  # type: ignore[union-attr]
                for uid in (a, b, c, d)
            ]
        if incomes != [4200, 4200, income_c, 4200]:
            problems.append(f"{label}: after skip_invalid the incomes are {incomes}")
    assert not problems, "\n".join(problems)


def test_every_bad_inputs_row_is_reported(company: Engine) -> None:
    a, b, c = EMPLOYEES[:3]
    text = "\n".join(
        [
            INPUT_HEADER,
            input_row(a, monthlyIncome=-1),
            input_row(b),
            input_row(99999),
            input_row(c, goalsCompleted90d="two"),
        ]
    )
    before = inputs_table(company)
    with pytest.raises(ImportRejected) as caught:
        import_inputs(company, lines(text + "\n"), skip_invalid=False, now=NOW)
    assert [(e.line, e.field) for e in caught.value.errors] == [
        (2, "monthlyIncome"),
        (4, "userId"),
        (5, "goalsCompleted90d"),
    ]
    assert inputs_table(company) == before
    report = import_inputs(company, lines(text + "\n"), skip_invalid=True, now=NOW)
    assert report.applied == 1 and len(report.errors) == 3


def test_inputs_header_without_a_required_column_is_rejected(company: Engine) -> None:
    header = INPUT_HEADER.replace(",monthlyIncome", "")
    names = INPUT_HEADER.split(",")
    values = input_row(EMPLOYEES[0]).split(",")
    row = ",".join(v for k, v in zip(names, values, strict=True) if k != "monthlyIncome")
    before = inputs_table(company)
    with pytest.raises(ImportRejected) as caught:
        import_inputs(company, lines(f"{header}\n{row}\n"), skip_invalid=True, now=NOW)
    assert [(e.line, e.field) for e in caught.value.errors] == [(1, "monthlyIncome")]
    assert inputs_table(company) == before


def test_count_too_large_for_the_column_is_rejected_or_kept(company: Engine) -> None:
    """A count no INTEGER column holds is a row error naming it, or stored exactly; no crash."""
    uid = EMPLOYEES[0]
    text = f"{INPUT_HEADER}\n{input_row(uid, treePoints=2**31)}\n"
    before = inputs_table(company)
    try:
        report = import_inputs(company, lines(text), skip_invalid=False, now=NOW)
    except ImportRejected as exc:
        assert [(e.line, e.field) for e in exc.errors] == [(2, "treePoints")]
        assert inputs_table(company) == before
    else:
        assert report.applied == 1
        with Session(company) as s:
            row = s.get(EmployeeInputs, uid)
            assert row is not None and row.tree_points == 2**31
