"""The real ``treevu`` command in a subprocess, over a temporary SQLite file (SPEC §1).

Every test runs the installed entry point with a clean ``TREEVU_*`` environment in its own
directory, and reads the database back with the standard library's ``sqlite3``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_URL, SECRET, _reachable, free_port, unavailable
from treevu.config import Settings
from treevu.population import ADMIN_EMAIL, generate_population
from treevu.segmentation.engine import INPUT_NAMES, Inputs, Profile, profile_at, score
from treevu.segmentation.policy import default_policy
from treevu.segmentation.survey import score_survey
from treevu.services.auth import TokenVerifier

_SCRIPT = shutil.which("treevu", path=str(Path(sys.executable).parent))
TREEVU = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "treevu"]
POPULATION = generate_population(200, 3)
EMPLOYEE = int(POPULATION.user_id[POPULATION.has_inputs][-1])
SURVEY = [
    "somewhat",
    "very_well",
    "somewhat",
    "very_little",
    "very_little",
    "not_at_all",
    "rarely",
    "often",
    "never",
    "sometimes",
]
RECORD: dict[str, Any] = {
    "monthlyIncome": 4100,
    "monthlySpending": 3500,
    "savingsBalance": 1200,
    "monthlyDebtPayments": 900,
    "ewaAdvances30d": 2,
    "alerts30d": 1,
    "activeDays30d": 9,
    "goalsCompleted90d": 1,
    "lessonsCompleted90d": 2,
    "treePoints": 900,
}
PROFILE_FIELDS = {
    "wellnessScore",
    "fwiScore",
    "spendingLevel",
    "riskLevel",
    "engagementScore",
    "segment",
    "interventionType",
    "rule",
    "reasons",
}


@dataclass
class Cli:
    """Runs ``treevu`` in ``cwd`` against the SQLite file ``db``."""

    cwd: Path
    db: Path
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cwd.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith("TREEVU_")}
        self.env = {
            **base,
            "TREEVU_DATABASE_URL": f"sqlite+aiosqlite:///{self.db}",
            "TREEVU_JWT_SECRET": SECRET,
            "TREEVU_ENCRYPTION_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            "COLUMNS": "200",  # rich wraps its messages at the terminal width
            "NO_COLOR": "1",
            **self.env,
        }

    def __call__(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TREEVU, *args],
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def many(self, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
        """Run several commands at once (each start-up costs a second of imports)."""
        procs = [
            (
                args,
                subprocess.Popen(
                    [*TREEVU, *args],
                    cwd=self.cwd,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
            for args in commands
        ]
        done = []
        for args, proc in procs:
            try:
                out, err = proc.communicate(timeout=180)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            done.append(subprocess.CompletedProcess(list(args), proc.returncode, out, err))
        return done

    def ok(self, *args: str, stdin: str | None = None) -> str:
        done = self(*args, stdin=stdin)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(self.db)) as con:
            return con.execute(sql, params).fetchall()

    def execute(self, sql: str, *params: Any) -> None:
        with closing(sqlite3.connect(self.db)) as con, con:
            con.execute(sql, params)


def flat(text: str) -> str:
    """Whitespace-normalised text, so that a wrapped message still matches."""
    return " ".join(text.split())


def checksum(cli: Cli) -> str:
    """Users and their inputs, without the time stamps a seed writes."""
    users = cli.query(
        "SELECT id, email, name, role, managerId, department, isActive, counselorCapacity "
        "FROM users ORDER BY id"
    )
    columns = ", ".join(('"userId"', *(f'"{n}"' for n in INPUT_NAMES)))
    inputs = cli.query(f"SELECT {columns} FROM employee_inputs ORDER BY userId")
    return hashlib.sha256(repr((users, inputs)).encode()).hexdigest()


def database_state(cli: Cli) -> tuple[str, list[tuple[Any, ...]]]:
    profiles = cli.query(
        "SELECT userId, segment, wellnessScore, fwiScore, riskLevel, reasons "
        "FROM employee_segments ORDER BY userId"
    )
    return checksum(cli), profiles


def expected_profile(record: dict[str, Any]) -> Profile:
    policy = default_policy()
    return profile_at(score(Inputs.from_records([record]), policy), 0, policy)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """A fresh directory whose database does not exist yet."""
    return Cli(tmp_path / "work", tmp_path / "work" / "treevu.db")


@pytest.fixture
def migrated(cli: Cli) -> Cli:
    assert "newest migration" in cli.ok("db", "upgrade")
    return cli


@pytest.fixture
def seeded(migrated: Cli) -> Cli:
    migrated.ok("seed", "--users", "200", "--seed", "3")
    return migrated


# --- db upgrade, seed -------------------------------------------------------------------------


def test_seed_needs_a_migrated_database(cli: Cli) -> None:
    """A database file that does not exist yet: one line naming the setting and the fix, exit
    2, and the file is not created by looking for it."""
    done = cli("seed", "--users", "50")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"TREEVU_DATABASE_URL=sqlite+aiosqlite:///{cli.db}" in lines[0]
    assert "does not exist" in lines[0] and "`treevu db upgrade`" in lines[0]
    assert not cli.db.exists()


def test_db_upgrade_is_idempotent_and_seed_is_deterministic(migrated: Cli, tmp_path: Path) -> None:
    assert "newest migration" in migrated.ok("db", "upgrade")

    out = migrated.ok("seed", "--users", "200", "--seed", "3")
    assert "200" in out and ADMIN_EMAIL in out
    first = checksum(migrated)
    assert migrated.query("SELECT COUNT(*) FROM users") == [(200,)]
    assert migrated.query("SELECT id, role FROM users WHERE email = ?", ADMIN_EMAIL) == [
        (1, "admin")
    ]
    assert migrated.query("SELECT COUNT(*) FROM employee_inputs") == [
        (int(POPULATION.has_inputs.sum()),)
    ]
    assert set(r[0] for r in migrated.query("SELECT DISTINCT role FROM users")) == {
        "admin",
        "counselor",
        "manager",
        "employee",
    }

    migrated.ok("seed", "--users", "200", "--seed", "3")
    assert checksum(migrated) == first
    assert migrated.query("SELECT COUNT(*) FROM users") == [(200,)]

    other = Cli(tmp_path / "other", tmp_path / "other" / "treevu.db")
    other.ok("db", "upgrade")
    other.ok("seed", "--users", "200", "--seed", "3")
    assert checksum(other) == first
    other.ok("seed", "--users", "200", "--seed", "4")
    assert checksum(other) != first


# --- segment recompute ------------------------------------------------------------------------


def test_segment_recompute_all_and_one_user(seeded: Cli) -> None:
    with_inputs = int(POPULATION.has_inputs.sum())
    out = seeded.ok("segment", "recompute", "--all")
    assert f"scored {with_inputs}" in out.replace(",", "")
    assert seeded.query("SELECT COUNT(*) FROM employee_segments") == [(with_inputs,)]
    assert "wrote 0" in seeded.ok("segment", "recompute", "--all")

    before = dict(
        (r[0], r[1:])
        for r in seeded.query("SELECT userId, segment, fwiScore FROM employee_segments")
    )
    assert before[EMPLOYEE][0] != "crisis_intervention"
    seeded.execute(
        "UPDATE employee_inputs SET monthlySpending = 9000, savingsBalance = 0, alerts30d = 9, "
        "ewaAdvances30d = 6, surveyScore = NULL, surveyAt = NULL WHERE userId = ?",
        EMPLOYEE,
    )
    out = seeded.ok("segment", "recompute", "--user", str(EMPLOYEE))
    assert "scored 1" in out and "relayed 1 events" in out
    # The change was told to the person, once, through the outbox.
    assert seeded.query("SELECT type FROM notification_queue WHERE userId = ?", EMPLOYEE) == [
        ("intervention_update",)
    ]
    assert seeded.query("SELECT COUNT(*) FROM outbox_events WHERE processedAt IS NULL") == [(0,)]
    after = dict(
        (r[0], r[1:])
        for r in seeded.query("SELECT userId, segment, fwiScore FROM employee_segments")
    )
    assert after[EMPLOYEE][0] == "crisis_intervention"
    assert {k: v for k, v in after.items() if k != EMPLOYEE} == {
        k: v for k, v in before.items() if k != EMPLOYEE
    }
    history = seeded.query(
        "SELECT toSegment FROM segment_history WHERE userId = ? ORDER BY id", EMPLOYEE
    )
    assert history[-1] == ("crisis_intervention",)

    # The admin has no inputs; 99999 does not exist: a clear message, not a traceback.
    users = ("1", "99999")
    for user, done in zip(
        users, seeded.many(*(("segment", "recompute", "--user", u) for u in users)), strict=True
    ):
        assert done.returncode == 1, done.stdout
        assert "Traceback" not in done.stderr, done.stderr[-300:]
        assert f"user {user}" in flat(done.stderr)


def test_recompute_on_a_database_without_inputs(migrated: Cli) -> None:
    done = migrated("segment", "recompute", "--all")
    assert done.returncode == 0, done.stderr[-300:]
    assert "scored 0" in done.stdout


# --- token ------------------------------------------------------------------------------------


def test_token_is_accepted_by_the_verifier(seeded: Cli) -> None:
    verifier = TokenVerifier(Settings(database_url="sqlite+aiosqlite:///x.db", jwt_secret=SECRET))
    token = seeded.ok("token", "--email", ADMIN_EMAIL).strip()
    assert verifier.verify(token).user_id == 1

    token = seeded.ok("token", "--user", str(EMPLOYEE), "--ttl", "120").strip()
    assert verifier.verify(token).user_id == EMPLOYEE
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == str(EMPLOYEE) and claims["aud"] == "treevu"
    assert claims["exp"] - claims["iat"] == 120

    unknown = (("--email", "nobody@example.com"), ("--user", "99999"))
    for args, done in zip(unknown, seeded.many(*(("token", *a) for a in unknown)), strict=True):
        assert done.returncode == 1 and done.stdout == ""
        assert args[1] in flat(done.stderr)

    seeded.execute("UPDATE users SET isActive = 0 WHERE id = ?", EMPLOYEE)
    done = seeded("token", "--user", str(EMPLOYEE))
    assert done.returncode == 1 and done.stdout == ""
    assert "inactive" in done.stderr


# --- profile ----------------------------------------------------------------------------------


def test_profile_prints_one_profile_a_line_and_stores_nothing(cli: Cli) -> None:
    survey = score_survey(SURVEY, "62+", "read")
    with_score = {**RECORD, "surveyScore": survey.scale_score}
    with_answers = {**RECORD, "surveyAnswers": SURVEY, "surveyAgeBand": "62+", "surveyMode": "read"}
    crisis = {**RECORD, "monthlySpending": 9000, "savingsBalance": 0, "alerts30d": 7}
    stdin = "\n".join(json.dumps(r) for r in (with_score, with_answers, RECORD, crisis)) + "\n"
    out = cli.ok("profile", stdin=stdin)
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 4
    for printed, record in zip(lines, (with_score, with_score, RECORD, crisis), strict=True):
        assert PROFILE_FIELDS <= set(printed)
        expected = expected_profile(record)
        assert printed["segment"] == expected.segment
        assert printed["interventionType"] == expected.intervention_type
        assert printed["rule"] == expected.rule
        assert printed["reasons"] == expected.reasons
        assert (printed["spendingLevel"], printed["riskLevel"]) == (
            expected.spending_level,
            expected.risk_level,
        )
        assert printed["fwiScore"] == round(expected.fwi_score, 2)
        assert printed["wellnessScore"] == round(expected.wellness_score, 2)
        assert printed["engagementScore"] == round(expected.engagement_score, 2)
    assert lines[0] == lines[1]  # the answers are scored to the same surveyScore
    assert "survey" in lines[0]["reasons"] and "survey" not in lines[2]["reasons"]
    assert lines[3]["segment"] == "crisis_intervention"
    assert not cli.db.exists(), "a what-if calculator must not touch the database"


def test_profile_prints_every_profile_field(cli: Cli) -> None:
    """SPEC §1: "one profile a line (all profile fields …)" — recommendationCount included."""
    printed = json.loads(cli.ok("profile", stdin=json.dumps(RECORD) + "\n"))
    assert "recommendationCount" in printed, sorted(printed)
    assert isinstance(printed["recommendationCount"], int) and printed["recommendationCount"] > 0


def test_profile_bad_lines_name_the_field_and_exit_1(cli: Cli) -> None:
    def line(**changes: Any) -> str:
        return json.dumps({**RECORD, **changes})

    without_debt = {k: v for k, v in RECORD.items() if k != "monthlyDebtPayments"}
    rows: list[tuple[str, str | None]] = [
        (line(), None),
        (line(monthlyIncome=-1), "monthlyIncome"),
        (line(savingsBalance="lots"), "savingsBalance"),
        # Python's json reads NaN; the last occurrence of a key wins.
        (line()[:-1] + ', "monthlySpending": NaN}', "monthlySpending"),
        (json.dumps(without_debt), "monthlyDebtPayments"),
        (line(ewaAdvances30d=1.5), "ewaAdvances30d"),
        (line(alerts30d=True), "alerts30d"),
        (line(monthlyIncome="3000"), "monthlyIncome"),
        (line(activeDays30d=31), "activeDays30d"),
        (
            line(surveyScore=50, surveyAnswers=SURVEY, surveyAgeBand="18-61", surveyMode="self"),
            "surveyScore",
        ),
        (line(surveyAnswers=SURVEY, surveyAgeBand="18-61"), "surveyMode"),
        (line(bonus=5), "bonus"),
        ("{not json", "JSON"),
        ("[1, 2]", "object"),
        ("", None),  # blank lines are skipped, but still counted
        (line(treePoints=10), None),
    ]
    stdin = "\n".join(r for r, _ in rows) + "\n"
    done = cli("profile", stdin=stdin)
    assert done.returncode == 1
    printed = [json.loads(x) for x in done.stdout.splitlines()]
    assert len(printed) == 2, done.stdout
    errors = flat(done.stderr)
    for number, (_, name) in enumerate(rows, start=1):
        if name is None:
            assert f"line {number}:" not in errors
        else:
            assert f"line {number}:" in errors, (number, name, done.stderr)
    for number, (_, name) in enumerate(rows, start=1):
        if name is not None and name not in ("JSON", "object"):
            assert f"line {number}: {name}" in errors, (number, name, done.stderr)
    assert "line 13: not JSON" in errors


def test_profile_survey_errors_name_the_profile_fields(cli: Cli) -> None:
    """An incomplete survey is refused; the error names the field as `treevu profile` takes it."""
    cases = [
        (
            {"surveyAnswers": SURVEY[:9], "surveyAgeBand": "18-61", "surveyMode": "self"},
            "surveyAnswers",
        ),
        ({"surveyAnswers": SURVEY, "surveyAgeBand": "40", "surveyMode": "self"}, "surveyAgeBand"),
        ({"surveyAnswers": SURVEY, "surveyAgeBand": "18-61", "surveyMode": "phone"}, "surveyMode"),
    ]
    stdin = "\n".join(json.dumps({**RECORD, **extra}) for extra, _ in cases) + "\n"
    done = cli("profile", stdin=stdin)
    assert done.returncode == 1 and done.stdout == ""
    errors = flat(done.stderr)
    for number, (_, name) in enumerate(cases, start=1):
        assert f"line {number}:" in errors
        assert f"line {number}: {name}" in errors, (name, done.stderr)


# --- import -----------------------------------------------------------------------------------


def _inputs_csv(rows: list[dict[str, Any]]) -> str:
    header = ["userId", *INPUT_NAMES]
    body = [",".join(str(r.get(h, "")) for h in header) for r in rows]
    return "\n".join([",".join(header), *body]) + "\n"


def test_import_with_a_broken_row_changes_nothing(seeded: Cli) -> None:
    employees = [int(u) for u in POPULATION.user_id[POPULATION.has_inputs][-3:]]
    good = [{**RECORD, "userId": uid, "monthlyIncome": 7777} for uid in employees]
    broken = [good[0], {**good[1], "monthlySpending": -20}, good[2]]
    path = seeded.cwd / "inputs.csv"
    path.write_text(_inputs_csv(broken), encoding="utf-8")
    before = database_state(seeded)
    [(income_before,)] = seeded.query(
        "SELECT monthlyIncome FROM employee_inputs WHERE userId = ?", employees[1]
    )

    done = seeded("import", "inputs", str(path))
    assert done.returncode == 1, done.stdout
    errors = flat(done.stderr)
    assert "line 3" in errors and "monthlySpending" in errors, done.stderr
    assert database_state(seeded) == before

    done = seeded("import", "inputs", str(path), "--skip-invalid")
    assert done.returncode == 0, done.stderr
    assert "line 3" in flat(done.stderr)
    incomes = dict(seeded.query("SELECT userId, monthlyIncome FROM employee_inputs"))
    assert [incomes[u] for u in employees] == [7777, income_before, 7777]

    users = seeded.cwd / "users.csv"
    users.write_text(
        "id,email,name,role,managerId,department\n"
        ",new.one@example.com,New One,employee,,Sales\n"
        ",new.two@example.com,New Two,emperor,,Sales\n",
        encoding="utf-8",
    )
    before = database_state(seeded)
    done = seeded("import", "users", str(users))
    assert done.returncode == 1
    assert "line 3" in flat(done.stderr) and "role" in flat(done.stderr)
    assert database_state(seeded) == before

    done = seeded("import", "users", str(seeded.cwd / "missing.csv"))
    assert done.returncode != 0 and "missing.csv" in flat(done.stderr)
    assert database_state(seeded) == before


def test_import_inputs_recomputes_those_people_and_tells_them(seeded: Cli) -> None:
    seeded.ok("segment", "recompute", "--all")
    crisis = {
        **RECORD,
        "userId": EMPLOYEE,
        "monthlySpending": 9000,
        "savingsBalance": 0,
        "alerts30d": 9,
        "ewaAdvances30d": 6,
    }
    path = seeded.cwd / "inputs.csv"
    path.write_text(_inputs_csv([crisis]), encoding="utf-8")

    out = seeded.ok("import", "inputs", str(path), "--no-recompute")
    assert "recomputed" not in out
    assert seeded.query("SELECT segment FROM employee_segments WHERE userId = ?", EMPLOYEE) != [
        ("crisis_intervention",)
    ]

    out = seeded.ok("import", "inputs", str(path))
    assert "recomputed 1 profiles" in out and "1 segment changes" in out
    assert seeded.query("SELECT segment FROM employee_segments WHERE userId = ?", EMPLOYEE) == [
        ("crisis_intervention",)
    ]
    told = seeded.query("SELECT type FROM notification_queue WHERE userId = ?", EMPLOYEE)
    # Entering crisis, and any goal or points milestone the imported record reached.
    assert [t for t in told if t != ("milestone",)] == [("intervention_update",)]
    # A later recompute finds nothing new and tells no one again (entering crisis also told
    # the manager and a counselor: counted once too).
    everyone = seeded.query("SELECT COUNT(*) FROM notification_queue")
    seeded.ok("segment", "recompute", "--all")
    assert seeded.query("SELECT COUNT(*) FROM notification_queue") == everyone


# --- argument errors --------------------------------------------------------------------------


BAD_ARGS: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (("seed", "--users", "-3"), ("--users",)),
    (("seed", "--users", "3"), ("--users",)),
    (("seed", "--users", "many"), ("--users",)),
    (("seed", "--users", "50", "--seed", "-1"), ("--seed",)),
    (("segment", "recompute"), ("--all", "--user")),
    (("segment", "recompute", "--all", "--user", "5"), ("--all", "--user")),
    (("segment", "recompute", "--user", "0"), ("--user",)),
    (("segment", "recompute", "--user", "five"), ("--user",)),
    (("token",), ("--user", "--email")),
    (("token", "--user", "1", "--email", ADMIN_EMAIL), ("--user", "--email")),
    (("token", "--user", "1", "--ttl", "0"), ("--ttl",)),
    (("import", "inputs"), ("FILE",)),
    (("import", "spreadsheets", "x.csv"), ("spreadsheets",)),
    (("frobnicate",), ("frobnicate",)),
]


def test_bad_arguments_fail_clearly_and_change_nothing(seeded: Cli) -> None:
    before = database_state(seeded)
    results = seeded.many(*(args for args, _ in BAD_ARGS))
    for (args, words), done in zip(BAD_ARGS, results, strict=True):
        assert done.returncode != 0, args
        assert done.stdout.strip() == "" or "Usage" in done.stdout, (args, done.stdout)
        message = flat(done.stderr + done.stdout).lower()
        for word in words:
            assert word.lower() in message, (args, word, done.stderr)
        assert "Traceback" not in done.stderr, (args, done.stderr)
    assert database_state(seeded) == before


# --- keys rotate ------------------------------------------------------------------------------


def test_keys_rotate_re_encrypts_stored_data_under_the_first_key(seeded: Cli) -> None:
    from cryptography.fernet import Fernet

    from treevu.notifications.crypto import DataCipher

    old, new = seeded.env["TREEVU_ENCRYPTION_KEY"], Fernet.generate_key().decode()
    data = {"amount": 120, "note": "kept as it is"}
    seeded.ok("notify", "--user", str(EMPLOYEE), "--type", "milestone", "--title", "T",
              "--message", "M", "--data", json.dumps(data))  # fmt: skip
    query = "SELECT data FROM notification_queue WHERE userId = ?"
    [(sealed,)] = [(json.loads(d),) for (d,) in seeded.query(query, EMPLOYEE)]
    assert set(sealed["amount"]) == {"$enc"} and sealed["note"] == data["note"]

    done = seeded("keys", "rotate", env={"TREEVU_ENCRYPTION_KEY": f"{new},{old}"})
    assert done.returncode == 0, done.stderr
    assert "re-encrypted 1 notifications under the first key" in done.stdout
    [(rotated,)] = [(json.loads(d),) for (d,) in seeded.query(query, EMPLOYEE)]
    assert rotated != sealed and rotated["note"] == data["note"]
    assert DataCipher(new).open(rotated) == data
    assert DataCipher(old).open(rotated) == {**data, "amount": None}  # the old key is retired


# --- serve ------------------------------------------------------------------------------------


def test_serve_refuses_an_unmigrated_database(cli: Cli) -> None:
    cli.db.parent.mkdir(parents=True, exist_ok=True)
    cli.db.touch()
    done = cli("serve", "--port", str(free_port()))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"TREEVU_DATABASE_URL=sqlite+aiosqlite:///{cli.db}" in lines[0]
    assert "migration none" in lines[0] and "`treevu db upgrade`" in lines[0]
    assert "Traceback" not in done.stderr
    assert cli.query("SELECT name FROM sqlite_master") == [], "serve must not create tables"


def test_serve_refuses_invalid_settings(cli: Cli) -> None:
    for env, name in (
        ({"TREEVU_DATABASE_URL": "oracle://scott@db/orcl"}, "TREEVU_DATABASE_URL"),
        ({"TREEVU_PORT": "70000"}, "TREEVU_PORT"),
        ({"TREEVU_ROLE": "sockets"}, "TREEVU_ROLE"),
    ):
        done = cli("serve", env=env)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert lines and all(line.startswith(f"invalid setting {name}: ") for line in lines), (
            done.stderr
        )
        assert "Traceback" not in done.stderr
    done = cli("serve", "--role", "sockets")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--role" in flat(done.stderr) and "all, api, ws" in flat(done.stderr), done.stderr
    assert not cli.db.exists()


def test_import_reads_utf8_with_a_bom_and_refuses_latin1_naming_the_line(seeded: Cli) -> None:
    uid = int(POPULATION.user_id[POPULATION.has_inputs][-1])
    csv_text = _inputs_csv([{**RECORD, "userId": uid, "monthlyIncome": 6543}])
    bom = seeded.cwd / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + csv_text.encode("utf-8"))
    done = seeded("import", "inputs", str(bom), "--no-recompute")
    assert done.returncode == 0, done.stderr
    assert seeded.query("SELECT monthlyIncome FROM employee_inputs WHERE userId = ?", uid) == [
        (6543,)
    ]
    before = database_state(seeded)
    latin = seeded.cwd / "latin1.csv"
    users = "id,email,name,role,managerId,department\n,a@example.com,Ana,employee,,Ops\n"
    latin.write_bytes((users + ",b@example.com,José,employee,,Ops\n").encode("latin-1"))
    done = seeded("import", "users", str(latin))
    assert done.returncode == 1
    assert "line 3" in flat(done.stderr) and "not UTF-8" in flat(done.stderr)
    assert "Traceback" not in done.stderr
    assert database_state(seeded) == before


def test_demo_refuses_a_port_in_use_before_announcing_anything(cli: Cli) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli("demo", "--port", str(port))
    assert done.returncode == 2
    assert f"port {port}" in flat(done.stderr) and "--port" in flat(done.stderr)
    assert "token" not in done.stdout and "running" not in done.stdout


def test_serve_refuses_a_port_in_use_naming_port(migrated: Cli) -> None:
    """Refused before anything is announced; ``--debug`` shows the traceback of the bind."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done, debug = migrated.many(
            ("serve", "--port", str(port)), ("serve", "--port", str(port), "--debug")
        )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"port {port} on 127.0.0.1 is in use" in lines[0]
    assert f"treevu serve --port {port + 1}" in lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert debug.returncode == 2, debug.stderr
    assert "Traceback" in debug.stderr and "OSError" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == lines[0]


def test_debug_shows_the_traceback_of_every_start_up_failure(migrated: Cli) -> None:
    """A bad setting, a bad key, an unmigrated database: the same lines, after the traceback."""
    empty = migrated.cwd / "empty.db"
    empty.touch()
    failures = (
        ({"TREEVU_PORT": "70000"}, "ValidationError", "invalid setting TREEVU_PORT: "),
        (
            {"TREEVU_ENCRYPTION_KEY": "not-a-key"},
            "ValueError",
            "invalid setting TREEVU_ENCRYPTION_KEY: ",
        ),
        (
            {"TREEVU_DATABASE_URL": f"sqlite+aiosqlite:///{empty}"},
            "NotMigrated",
            f"cannot use the database TREEVU_DATABASE_URL=sqlite+aiosqlite:///{empty}: ",
        ),
    )
    for env, raised, line in failures:
        done = migrated("jobs", "list", "--debug", env=env)
        assert done.returncode == 2, (env, done.stderr)
        assert done.stderr.startswith("Traceback (most recent call last):"), done.stderr
        assert raised in done.stderr, (raised, done.stderr)
        assert done.stderr.strip().splitlines()[-1].startswith(line), done.stderr


def test_an_unreachable_mariadb_is_two_lines_naming_the_setting(cli: Cli) -> None:
    url = f"mysql+asyncmy://root:secret@127.0.0.1:{free_port()}/treevu"  # nobody listens
    done = cli("jobs", "list", env={"TREEVU_DATABASE_URL": url})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2, done.stderr
    shown = url.replace(":secret@", ":***@")
    assert f"cannot use the database TREEVU_DATABASE_URL={shown}: " in lines[0]
    assert "Can't connect" in lines[0] and "treevu db upgrade" in lines[1]
    assert "secret" not in done.stderr and "Traceback" not in done.stderr


def test_a_missing_postgresql_database_is_two_lines_naming_the_setting(cli: Cli) -> None:
    server = make_url(POSTGRES_URL)
    if not _reachable(server.host or "127.0.0.1", server.port or 5432):
        unavailable("postgresql")
    url = server.set(database=f"treevu_missing_{uuid.uuid4().hex[:10]}")
    text = url.render_as_string(hide_password=False)
    done = cli("segment", "recompute", "--all", env={"TREEVU_DATABASE_URL": text})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2, done.stderr
    assert f"cannot use the database TREEVU_DATABASE_URL={url.render_as_string()}: " in lines[0]
    assert f'database "{url.database}" does not exist' in lines[0]
    assert "the database exists" in lines[1] and "treevu db upgrade" in lines[1]
    assert "Traceback" not in done.stderr


def test_an_unreachable_database_is_two_lines_naming_the_setting(cli: Cli) -> None:
    url = "postgresql+psycopg://postgres:secret@127.0.0.1:9/nowhere"
    for command in (("serve",), ("segment", "recompute", "--all"), ("jobs", "list")):
        done = cli(*command, env={"TREEVU_DATABASE_URL": url})
        assert done.returncode == 2, (command, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 2, done.stderr
        assert "TREEVU_DATABASE_URL=postgresql+psycopg://postgres:***@127.0.0.1:9" in lines[0]
        assert "secret" not in done.stderr and "Traceback" not in done.stderr
    debug = cli("jobs", "list", "--debug", env={"TREEVU_DATABASE_URL": url})
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_import_reports_every_error_of_every_row_and_applies_nothing(seeded: Cli) -> None:
    uid = int(POPULATION.user_id[POPULATION.has_inputs][-2])
    rows = [
        {**RECORD, "userId": uid, "monthlySpending": -20, "alerts30d": "many"},
        {**RECORD, "userId": uid, "surveyScore": 140},
        {**RECORD, "userId": "x"},
    ]
    path = seeded.cwd / "bad.csv"
    path.write_text(_inputs_csv(rows), encoding="utf-8")
    before = database_state(seeded)
    done = seeded("import", "inputs", str(path))
    assert done.returncode == 1
    errors = flat(done.stderr)
    for expected in ("line 2: monthlySpending", "line 2: alerts30d", "line 3: surveyScore",
                     "line 4: userId"):  # fmt: skip
        assert expected in errors, (expected, done.stderr)
    assert "4 error(s) in 3 row(s)" in errors
    assert database_state(seeded) == before

    users = seeded.cwd / "users-bad.csv"
    users.write_text(
        "id,email,name,role,managerId,department\n,not-an-email,,emperor,boss,Ops\n",
        encoding="utf-8",
    )
    done = seeded("import", "users", str(users))
    assert done.returncode == 1
    errors = flat(done.stderr)
    for column in ("email", "name", "role", "managerId"):
        assert f"line 2: {column}" in errors, (column, done.stderr)
    assert database_state(seeded) == before


def test_import_checks_the_database_for_every_row_beside_its_field_errors(seeded: Cli) -> None:
    """A stolen id, an unknown manager or user is reported with the row's other errors and those
    of other rows; a manager whose own row is bad makes the report's row bad too."""
    email = dict(seeded.query("SELECT id, email FROM users WHERE id IN (5, 7, 8)"))
    users = seeded.cwd / "users.csv"
    users.write_text(
        "id,email,name,role,managerId,department\n"
        "5,not-an-email,,employee,999,Ops\n"  # line 2: two field errors, two database errors
        ",x@example.com,X,emperor,,Ops\n"
        "7,someone.new@example.com,New,employee,,Ops\n"
        "8,z@example.com,Z,employee,99999,Ops\n"
        "300,boss@example.com,Boss,wizard,,Ops\n"
        ",report@example.com,Report,employee,300,Ops\n"
        ",fresh@example.com,Fresh,employee,1,Ops\n",
        encoding="utf-8",
    )
    expected = [
        "line 2: email: not an e-mail address",
        "line 2: name: is required",
        f"line 2: id: id 5 belongs to {email[5]}",
        "line 2: managerId: no user 999",
        "line 3: role: unknown role 'emperor'",
        f"line 4: id: id 7 belongs to {email[7]}",
        f"line 5: id: id 8 belongs to {email[8]}",
        "line 5: managerId: no user 99999",
        "line 6: role: unknown role 'wizard'",
        "line 7: managerId: user 300 is not imported: line 6 has errors",
    ]
    before = database_state(seeded)
    done = seeded("import", "users", str(users))
    assert done.returncode == 1
    printed = [line.split(".csv:", 1)[1] for line in done.stderr.splitlines() if ".csv:" in line]
    assert [p[: len(e)] for p, e in zip(printed, expected, strict=True)] == expected, printed
    assert "nothing imported: 10 error(s) in 6 row(s)" in flat(done.stderr)
    assert database_state(seeded) == before

    done = seeded("import", "users", str(users), "--skip-invalid")
    assert done.returncode == 0, done.stderr
    assert "imported 1 users; skipped 6 rows" in done.stdout
    assert seeded.query("SELECT managerId FROM users WHERE email = 'fresh@example.com'") == [(1,)]
    assert seeded.query("SELECT COUNT(*) FROM users") == [(201,)]

    inputs = seeded.cwd / "inputs.csv"
    inputs.write_text(
        _inputs_csv([{**RECORD, "userId": 99999, "monthlySpending": -20}, {**RECORD, "userId": 1}]),
        encoding="utf-8",
    )
    done = seeded("import", "inputs", str(inputs))
    assert done.returncode == 1
    errors = flat(done.stderr)
    assert "line 2: monthlySpending" in errors and "line 2: userId: no user 99999" in errors
    assert "2 error(s) in 1 row(s)" in errors, done.stderr


def test_import_prints_the_first_200_errors_and_counts_the_rest(seeded: Cli) -> None:
    uid = int(POPULATION.user_id[POPULATION.has_inputs][-1])
    rows = [{**RECORD, "userId": uid, "monthlySpending": -1, "alerts30d": -1}] * 150
    path = seeded.cwd / "many.csv"
    path.write_text(_inputs_csv(rows), encoding="utf-8")
    for args, status, tail, summary in (
        ((), 1, "", "nothing imported: 300 error(s) in 150 row(s)"),
        (("--skip-invalid",), 0, " (skipped)", "imported 0 inputs; skipped 150 rows"),
    ):
        done = seeded("import", "inputs", str(path), "--no-recompute", *args)
        assert done.returncode == status, done.stderr[-500:]
        printed = [line for line in done.stderr.splitlines() if line.startswith(f"{path}:line")]
        assert len(printed) == 200, done.stderr[-500:]
        assert printed[0] == f"{path}:line 2: monthlySpending: must not be negative, got -1.0{tail}"
        assert printed[-1].startswith(f"{path}:line 101: alerts30d")
        assert "… and 100 more errors" in done.stderr
        assert summary in flat(done.stderr + done.stdout)


@pytest.mark.parametrize("columns", [60, 200])
def test_demo_prints_links_and_curl_commands_that_work_at_any_width(cli: Cli, columns: int) -> None:
    import shlex
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [*TREEVU, "demo", "--users", "60", "--port", str(port)],
        cwd=cli.cwd,
        env={**cli.env, "COLUMNS": str(columns)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        printed: list[str] = []
        for line in proc.stdout:
            printed.append(line.rstrip("\n"))
            if "Ctrl-C stops it" in line:
                break
        links = [line for line in printed if line.startswith("http")]
        commands = [line for line in printed if line.startswith("curl ")]
        assert len(links) == len(commands) == 4, printed
        for link in links:
            assert link.startswith(f"http://127.0.0.1:{port}/app/#token=")
            assert link.split("#token=")[1].count(".") == 2  # a whole JWT on one line
        deadline = time.monotonic() + 30
        while True:  # the server starts after the announcement
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "the demo server did not start"
            time.sleep(0.1)
        for command in commands:
            done = subprocess.run(
                [*shlex.split(command), "-s", "-o", "/dev/null", "-w", "%{http_code}"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert done.stdout == "200", (command, done.stdout, done.stderr)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_bad_key_is_one_line_naming_its_variable(migrated: Cli) -> None:
    for env, name in (
        ({"TREEVU_ENCRYPTION_KEY": "not-a-key"}, "TREEVU_ENCRYPTION_KEY"),
        ({"TREEVU_JWT_SECRET": "", "TREEVU_JWT_PUBLIC_KEY": "not a pem"}, "TREEVU_JWT_PUBLIC_KEY"),
    ):
        done = migrated("serve", env=env)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"invalid setting {name}:"), done.stderr


def test_postgres_and_mysql_urls_are_read_with_the_supported_drivers(cli: Cli) -> None:
    from treevu.config import Settings

    assert Settings(database_url="postgres://u@h/db").database_url == (
        "postgresql+psycopg://u@h/db"
    )
    assert Settings(database_url="mysql://u@h/db").sync_database_url == "mysql+pymysql://u@h/db"
    done = cli("jobs", "list", env={"TREEVU_DATABASE_URL": "postgres://postgres@127.0.0.1:9/x"})
    assert "note: TREEVU_DATABASE_URL postgres://… is read as postgresql+psycopg://…" in (
        done.stderr
    )
    assert done.returncode == 2
    url = "postgresql+asyncpg://postgres@127.0.0.1:9/x"  # SPEC §1's spelling: the one driver
    done = cli("jobs", "list", env={"TREEVU_DATABASE_URL": url})
    assert "is read as postgresql+psycopg://…" in done.stderr and done.returncode == 2
