"""A deterministic synthetic company: users, org chart and employee inputs (SPEC §1–3).

Pure and vectorised: :func:`generate_population` draws everything from one
``numpy.random.default_rng(seed)`` stream, does no I/O and returns columns, so ``treevu seed``
and ``treevu demo`` can write it wherever they like. The same ``(n_users, seed)`` always gives
the same population. The distributions and their parameters are described in
``docs/population.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from treevu.segmentation.engine import Inputs

ROLES: Final = ("employee", "manager", "counselor", "admin")
EMPLOYEE, MANAGER, COUNSELOR, ADMIN = (np.int8(i) for i in range(4))
ADMIN_EMAIL: Final = "admin@demo.treevu"
ADMIN_NAME: Final = "Demo Admin"
EMAIL_DOMAIN: Final = "demo.treevu"
#: The smallest population with every role: admin, two counselors, a manager, an employee.
MIN_USERS: Final = 5

DEPARTMENTS: Final = (
    "Engineering",
    "Operations",
    "Sales",
    "Customer Support",
    "Finance",
    "Marketing",
    "Human Resources",
    "Legal",
)
#: Share of managers (and so, roughly, of employees) in each department.
DEPARTMENT_SHARE: Final = (0.22, 0.20, 0.16, 0.15, 0.08, 0.08, 0.07, 0.04)
#: Pay relative to the company-wide base, by department.
DEPARTMENT_PAY: Final = (1.30, 0.85, 1.05, 0.75, 1.15, 1.05, 0.95, 1.35)
#: The admin and the counselors sit in this department.
STAFF_DEPARTMENT: Final = DEPARTMENTS.index("Human Resources")

COUNSELOR_EVERY: Final = 150  # users per counselor (at least 2 counselors)
TEAM_SIZE: Final = 8  # employees per manager, and line managers per senior manager
COUNSELOR_CAPACITY: Final = (15, 40)  # open cases, inclusive

#: Net monthly income: lognormal around ``INCOME_BASE`` times department and role pay.
INCOME_BASE: Final = 3300.0
INCOME_SIGMA: Final = 0.40
MANAGER_PAY: Final = 1.45
SENIOR_MANAGER_PAY: Final = 1.90
#: Correlation of income (log, within department and role) with financial resilience.
INCOME_RESILIENCE: Final = 0.35
#: Correlation of the engagement trait with financial resilience.
ENGAGEMENT_RESILIENCE: Final = 0.35

SPENDING_RATIO_MEDIAN: Final = 0.85
SPENDING_RATIO_RESILIENCE: Final = 0.17  # log-ratio change per sd of resilience (lower is better)
SPENDING_RATIO_NOISE: Final = 0.12

BUFFER_MONTHS_MEDIAN: Final = 1.3  # savings / spending, at median income and ratio
BUFFER_RESILIENCE: Final = 0.75
BUFFER_SPENDING_ELASTICITY: Final = 2.0  # log-buffer drop per unit of log spending ratio
BUFFER_INCOME_ELASTICITY: Final = 0.3
BUFFER_NOISE: Final = 0.70

DEBT_RATIO_MEAN: Final = 0.14
DEBT_RATIO_SHAPE: Final = 2.0  # Beta(a, b) with a fixed, b set by the person's mean
DEBT_RESILIENCE: Final = 0.40

SURVEY_SHARE: Final = 0.35
SURVEY_RANGE: Final = (14, 95)  # CFPB scale scores, self-administered, age 18-61
SURVEY_MEAN: Final = 54.0
SURVEY_RESILIENCE: Final = 11.0
SURVEY_NOISE: Final = 7.0

TREE_POINTS_MAX: Final = 8000.0

FIRST_NAMES: Final = (
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Mateo", "Sophia", "Lucas", "Isabella", "Ethan",
    "Mia", "Aiden", "Amara", "Kenji", "Priya", "Omar", "Chloe", "Diego", "Hannah", "Samuel",
    "Fatima", "Daniel", "Grace", "Javier", "Leila", "Marcus", "Nadia", "Oscar", "Ruth", "Tomas",
    "Valeria", "Wei", "Yara", "Zoe", "Andre", "Bianca", "Caleb", "Elena", "Felix", "Ines",
)  # fmt: skip
LAST_NAMES: Final = (
    "Smith", "Johnson", "Garcia", "Nguyen", "Patel", "Kim", "Brown", "Martinez", "Lopez",
    "Wilson", "Okafor", "Rossi", "Muller", "Tanaka", "Haddad", "Silva", "Chen", "Kowalski",
    "Anderson", "Torres", "Murphy", "Rivera", "Cohen", "Singh", "Novak", "Dubois", "Larsen",
    "Mendes", "Ibrahim", "Walker", "Reyes", "Park", "Schmidt", "Costa", "Hughes", "Moreau",
    "Ali", "Bennett", "Flores", "Sato",
)  # fmt: skip

Int64Array = NDArray[np.int64]
FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Population:
    """A synthetic company as columns, one row per user; row ``i`` is user ``i + 1``."""

    user_id: Int64Array  # 1..n
    email: list[str]  # unique; user 1 is ADMIN_EMAIL
    name: list[str]
    role: NDArray[np.int8]  # index into ROLES
    manager_id: Int64Array  # 0 = none
    department: NDArray[np.int8]  # index into DEPARTMENTS
    counselor_capacity: Int64Array  # open cases a counselor can hold; 0 for everyone else
    has_inputs: NDArray[np.bool_]  # employees and managers
    inputs: Inputs  # every row; rows without inputs hold zeros and no survey

    def __len__(self) -> int:
        return len(self.user_id)


@dataclass(frozen=True, slots=True)
class _Org:
    role: NDArray[np.int8]
    senior: NDArray[np.bool_]  # managers who report to no one
    manager_id: Int64Array
    department: NDArray[np.int8]


def role_counts(n_users: int) -> dict[str, int]:
    """How many users of each role a population of ``n_users`` has."""
    if n_users < MIN_USERS:
        raise ValueError(f"n_users must be at least {MIN_USERS}, got {n_users}")
    counselors = max(2, round(n_users / COUNSELOR_EVERY))
    staff = n_users - 1 - counselors
    managers = max(1, round(staff / (TEAM_SIZE + 1)))
    return {
        "employee": staff - managers,
        "manager": managers,
        "counselor": counselors,
        "admin": 1,
    }


def generate_population(n_users: int, seed: int) -> Population:
    """Draw a company of ``n_users`` people (admin, counselors, managers, employees).

    User 1 is the admin, then come the counselors, the managers and the employees, in blocks.
    """
    counts = role_counts(n_users)
    rng = np.random.default_rng(seed)
    org = _draw_org(rng, counts)
    names, emails = _draw_names(rng, n_users)
    capacity = np.zeros(n_users, dtype=np.int64)
    is_counselor = org.role == COUNSELOR
    low, high = COUNSELOR_CAPACITY
    capacity[is_counselor] = rng.integers(low, high + 1, size=int(is_counselor.sum()))
    has_inputs = (org.role == EMPLOYEE) | (org.role == MANAGER)
    inputs = _draw_inputs(rng, org, has_inputs)
    return Population(
        user_id=np.arange(1, n_users + 1, dtype=np.int64),
        email=emails,
        name=names,
        role=org.role,
        manager_id=org.manager_id,
        department=org.department,
        counselor_capacity=capacity,
        has_inputs=has_inputs,
        inputs=inputs,
    )


def _draw_org(rng: np.random.Generator, counts: dict[str, int]) -> _Org:
    """Roles in id blocks; departments; employees -> managers -> senior managers.

    In each department the first ceil(k / TEAM_SIZE) of its k managers are senior (no manager);
    the others report to them in turn. Every manager gets at least one employee; the rest are
    spread by a gamma-distributed team weight so team sizes vary.
    """
    n_counselors, n_managers, n_employees = (
        counts["counselor"],
        counts["manager"],
        counts["employee"],
    )
    n = 1 + n_counselors + n_managers + n_employees
    first_manager = 1 + n_counselors
    first_employee = first_manager + n_managers

    role = np.full(n, EMPLOYEE, dtype=np.int8)
    role[0] = ADMIN
    role[1:first_manager] = COUNSELOR
    role[first_manager:first_employee] = MANAGER
    department = np.full(n, STAFF_DEPARTMENT, dtype=np.int8)
    manager_id = np.zeros(n, dtype=np.int64)
    senior = np.zeros(n, dtype=np.bool_)

    share = np.asarray(DEPARTMENT_SHARE) / sum(DEPARTMENT_SHARE)
    manager_department = rng.choice(len(DEPARTMENTS), size=n_managers, p=share).astype(np.int8)
    department[first_manager:first_employee] = manager_department

    order = np.argsort(manager_department, kind="stable")
    per_department = np.bincount(manager_department, minlength=len(DEPARTMENTS))
    start = np.concatenate(([0], np.cumsum(per_department)[:-1]))
    n_senior = -(-per_department // TEAM_SIZE)  # ceil
    sorted_department = manager_department[order]
    rank = np.arange(n_managers) - start[sorted_department]
    is_senior = rank < n_senior[sorted_department]
    boss_rank = rank % np.maximum(n_senior[sorted_department], 1)
    boss_sorted = start[sorted_department] + boss_rank
    manager_rows = first_manager + order
    senior[manager_rows] = is_senior
    boss_user_id = first_manager + order[boss_sorted] + 1
    manager_id[manager_rows] = np.where(is_senior, 0, boss_user_id)

    team_weight = rng.gamma(4.0, size=n_managers)
    boss = np.empty(n_employees, dtype=np.int64)
    guaranteed = min(n_employees, n_managers)
    boss[:guaranteed] = np.arange(guaranteed)
    boss[guaranteed:] = rng.choice(
        n_managers, size=n_employees - guaranteed, p=team_weight / team_weight.sum()
    )
    boss = rng.permutation(boss)
    manager_id[first_employee:] = first_manager + boss + 1
    department[first_employee:] = manager_department[boss]
    return _Org(role=role, senior=senior, manager_id=manager_id, department=department)


def _draw_names(rng: np.random.Generator, n: int) -> tuple[list[str], list[str]]:
    """"First Last" names and unique ``first.last.<id>@demo.treevu`` emails."""
    full = [f"{first} {last}" for first in FIRST_NAMES for last in LAST_NAMES]
    slug = [f"{first.lower()}.{last.lower()}." for first in FIRST_NAMES for last in LAST_NAMES]
    pick = rng.integers(0, len(full), size=n).tolist()
    names = [full[k] for k in pick]
    emails = [f"{slug[k]}{uid}@{EMAIL_DOMAIN}" for uid, k in enumerate(pick, start=1)]
    names[0] = ADMIN_NAME
    emails[0] = ADMIN_EMAIL
    return names, emails


def _sigmoid(x: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


def _draw_inputs(rng: np.random.Generator, org: _Org, has_inputs: NDArray[np.bool_]) -> Inputs:
    """Correlated financial and engagement inputs from two latent traits.

    ``resilience`` (financial) drives the spending ratio, savings, debt, EWA use, alerts and
    the survey; ``engagement`` (correlated with it) drives app activity and TreePoints.
    """
    n = len(org.role)
    income_noise = rng.standard_normal(n)
    resilience = INCOME_RESILIENCE * income_noise + math.sqrt(
        1.0 - INCOME_RESILIENCE**2
    ) * rng.standard_normal(n)
    engagement = ENGAGEMENT_RESILIENCE * resilience + math.sqrt(
        1.0 - ENGAGEMENT_RESILIENCE**2
    ) * rng.standard_normal(n)

    pay = np.asarray(DEPARTMENT_PAY)[org.department]
    pay = pay * np.where(
        org.role == MANAGER, np.where(org.senior, SENIOR_MANAGER_PAY, MANAGER_PAY), 1.0
    )
    log_pay = np.log(pay)
    income = INCOME_BASE * np.exp(log_pay + INCOME_SIGMA * income_noise)

    log_ratio = (
        math.log(SPENDING_RATIO_MEDIAN)
        - SPENDING_RATIO_RESILIENCE * resilience
        + SPENDING_RATIO_NOISE * rng.standard_normal(n)
    )
    spending = income * np.exp(log_ratio)

    log_buffer = (
        math.log(BUFFER_MONTHS_MEDIAN)
        + BUFFER_RESILIENCE * resilience
        - BUFFER_SPENDING_ELASTICITY * (log_ratio - math.log(SPENDING_RATIO_MEDIAN))
        + BUFFER_INCOME_ELASTICITY * (log_pay + INCOME_SIGMA * income_noise)
        + BUFFER_NOISE * rng.standard_normal(n)
    )
    savings = spending * np.exp(log_buffer)

    debt_mean = np.clip(DEBT_RATIO_MEAN * np.exp(-DEBT_RESILIENCE * resilience), 0.02, 0.45)
    debt_ratio = rng.beta(DEBT_RATIO_SHAPE, DEBT_RATIO_SHAPE * (1.0 - debt_mean) / debt_mean)
    debt = income * debt_ratio

    ratio = np.exp(log_ratio)
    # Zero-inflated Poisson: most people never use EWA; overspenders use it more, and more often.
    uses_ewa = rng.random(n) < _sigmoid(-1.7 + 5.0 * (ratio - 0.9) - 0.5 * resilience)
    ewa = np.where(uses_ewa, rng.poisson(1.0 + 3.0 * np.maximum(ratio - 0.85, 0.0)), 0)
    alerts = rng.poisson(0.35 * np.exp(3.5 * (ratio - SPENDING_RATIO_MEDIAN) - 0.35 * resilience))

    low, high = SURVEY_RANGE
    answered = rng.random(n) < _sigmoid(math.log(SURVEY_SHARE / (1 - SURVEY_SHARE)) + 0.3 * engagement)
    survey_value = np.clip(
        np.rint(SURVEY_MEAN + SURVEY_RESILIENCE * resilience + SURVEY_NOISE * rng.standard_normal(n)),
        low,
        high,
    )
    survey = np.where(answered, survey_value, np.nan)

    active_days = rng.binomial(30, _sigmoid(0.1 + 1.5 * engagement))
    goals = rng.poisson(np.exp(0.1 + 0.8 * engagement))
    lessons = rng.poisson(np.exp(0.9 + 0.8 * engagement))
    points_latent = -1.33 + 1.62 * (0.8 * engagement + 0.6 * rng.standard_normal(n))
    tree_points = np.rint(TREE_POINTS_MAX * _sigmoid(points_latent))

    columns: list[FloatArray] = [
        np.round(income, 2),
        np.round(spending, 2),
        np.round(savings, 2),
        np.round(debt, 2),
        ewa.astype(np.float64),
        alerts.astype(np.float64),
        survey,
        active_days.astype(np.float64),
        goals.astype(np.float64),
        lessons.astype(np.float64),
        tree_points,
    ]
    absent = ~has_inputs
    for column in columns:
        column[absent] = 0.0
    columns[6][absent] = np.nan
    return Inputs.from_columns(columns)
