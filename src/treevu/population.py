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
EMPLOYEE: Final = np.int8(ROLES.index("employee"))
MANAGER: Final = np.int8(ROLES.index("manager"))
COUNSELOR: Final = np.int8(ROLES.index("counselor"))
ADMIN: Final = np.int8(ROLES.index("admin"))
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
#: Ages are uniform over working life, counted in this year (birth year = year − age).
AGE_RANGE: Final = (18, 66)
AGE_REFERENCE_YEAR: Final = 2026
AGE_STREAM: Final = 1959

#: Net monthly income: lognormal around ``INCOME_BASE`` times department and role pay.
INCOME_BASE: Final = 3595.0
INCOME_SIGMA: Final = 0.40
MANAGER_PAY: Final = 1.45
SENIOR_MANAGER_PAY: Final = 1.90
#: Correlation of income (log, within department and role) with financial resilience.
INCOME_RESILIENCE: Final = 0.35
#: Correlation of the engagement trait with financial resilience.
ENGAGEMENT_RESILIENCE: Final = 0.5

#: Spending ratio (spending / income). Most people's ratio is a logistic curve below a soft cap
#: (they cannot spend much more than they earn without credit); overspenders add an
#: exponential excess on top, which makes the tail past 1.2.
SPENDING_RATIO_MEDIAN: Final = 0.85
SPENDING_RATIO_CAP: Final = 1.05
SPENDING_RATIO_RESILIENCE: Final = 0.60  # logit change per sd of resilience
SPENDING_RATIO_NOISE: Final = 0.40
OVERSPENDER_SHARE: Final = 0.05  # at average resilience; more likely when resilience is low
OVERSPENDER_RESILIENCE: Final = 0.8
OVERSPEND_SCALE: Final = 0.30  # mean extra log-ratio of overspenders
SPENDING_RATIO_RANGE: Final = (0.25, 2.5)  # clipped, so a freak draw stays believable

BUFFER_MONTHS_MEDIAN: Final = 0.65  # savings / spending, at median income and ratio
BUFFER_RESILIENCE: Final = 1.0
BUFFER_SPENDING_ELASTICITY: Final = 2.0  # log-buffer drop per unit of log spending ratio
BUFFER_INCOME_ELASTICITY: Final = 0.3
BUFFER_NOISE: Final = 0.90

DEBT_RATIO_MEAN: Final = 0.135
DEBT_RATIO_SHAPE: Final = 3.0  # Beta(a, b) with a fixed, b set by the person's mean
DEBT_RESILIENCE: Final = 0.5

#: EWA advances: zero-inflated Poisson. Whether someone uses EWA at all (a logistic in the
#: spending ratio's excess over the median and in resilience), then how often.
EWA_USER_SHARE: Final = 0.35  # at the median ratio and average resilience
EWA_USE_RATIO_SLOPE: Final = 5.0
EWA_USE_RESILIENCE: Final = 1.0
EWA_RATE: Final = 1.0
EWA_RATE_RATIO_SLOPE: Final = 3.0
#: Alerts: Poisson, rate rising exponentially with the spending ratio's excess.
ALERT_RATE: Final = 0.5
ALERT_RATIO_SLOPE: Final = 1.5
ALERT_RESILIENCE: Final = 0.35
ALERT_RATE_MAX: Final = 12.0

SURVEY_SHARE: Final = 0.35
SURVEY_RANGE: Final = (14, 95)  # CFPB scale scores, self-administered, age 18-61
SURVEY_MEAN: Final = 54.0
SURVEY_RESILIENCE: Final = 11.0
SURVEY_NOISE: Final = 7.0
SURVEY_ENGAGEMENT: Final = 0.3  # engaged people answer the survey more often (logit per sd)

#: Engagement, from the latent trait e: activeDays30d ~ Binomial(30, sigmoid(a + b*e));
#: goalsCompleted90d and lessonsCompleted90d ~ Poisson(exp(a + b*e)).
ACTIVE_DAYS_LOGIT: Final = (0.1, 1.5)
GOALS_LOG_RATE: Final = (0.1, 0.8)
LESSONS_LOG_RATE: Final = (0.9, 0.8)
#: TreePoints = TREE_POINTS_MAX * sigmoid(a + b*t), t = 0.8*e + 0.6*noise (so t is standard
#: normal); a and b put about 35/28/24/13% in the Seedling/Sprout/Rising Stars/Champions tiers.
TREE_POINTS_MAX: Final = 8000.0
TREE_POINTS_LOGIT: Final = (-1.33, 1.62)
TREE_POINTS_ENGAGEMENT: Final = 0.8

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
    birth_year: Int64Array  # never an input: only to check the models for every age band

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
    # A stream of its own, so that adding ages changed none of the draws above.
    ages = np.random.default_rng([seed, AGE_STREAM]).integers(
        AGE_RANGE[0], AGE_RANGE[1] + 1, n_users
    )
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
        birth_year=(AGE_REFERENCE_YEAR - ages).astype(np.int64),
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
    """Names from the small first/last lists, and unique ``first.last.<id>@…`` emails."""
    full = [f"{first} {last}" for first in FIRST_NAMES for last in LAST_NAMES]
    slug = [f"{first.lower()}.{last.lower()}." for first in FIRST_NAMES for last in LAST_NAMES]
    pick = rng.integers(0, len(full), size=n).tolist()
    names = [full[k] for k in pick]
    emails = [f"{slug[k]}{uid}@{EMAIL_DOMAIN}" for uid, k in enumerate(pick, start=1)]
    names[0] = ADMIN_NAME
    emails[0] = ADMIN_EMAIL
    return names, emails


def _correlated(rng: np.random.Generator, base: FloatArray, rho: float) -> FloatArray:
    """A standard normal column with correlation ``rho`` to the standard normal ``base``."""
    return rho * base + math.sqrt(1.0 - rho * rho) * rng.standard_normal(len(base))


def _line(coefficients: tuple[float, float], x: FloatArray) -> FloatArray:
    intercept, slope = coefficients
    return intercept + slope * x


def _sigmoid(x: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _draw_inputs(rng: np.random.Generator, org: _Org, has_inputs: NDArray[np.bool_]) -> Inputs:
    """Correlated financial and engagement inputs from two latent traits.

    ``resilience`` (financial) drives the spending ratio, savings, debt, EWA use, alerts and
    the survey; ``engagement`` (correlated with it) drives app activity and TreePoints.
    """
    n = len(org.role)
    income_noise = rng.standard_normal(n)
    resilience = _correlated(rng, income_noise, INCOME_RESILIENCE)
    engagement = _correlated(rng, resilience, ENGAGEMENT_RESILIENCE)

    pay = np.asarray(DEPARTMENT_PAY)[org.department]
    pay = pay * np.where(
        org.role == MANAGER, np.where(org.senior, SENIOR_MANAGER_PAY, MANAGER_PAY), 1.0
    )
    log_pay = np.log(pay)
    income = INCOME_BASE * np.exp(log_pay + INCOME_SIGMA * income_noise)

    core_ratio = SPENDING_RATIO_CAP * _sigmoid(
        _logit(SPENDING_RATIO_MEDIAN / SPENDING_RATIO_CAP)
        - SPENDING_RATIO_RESILIENCE * resilience
        + SPENDING_RATIO_NOISE * rng.standard_normal(n)
    )
    overspender = rng.random(n) < _sigmoid(
        _logit(OVERSPENDER_SHARE) - OVERSPENDER_RESILIENCE * resilience
    )
    excess = np.where(overspender, rng.exponential(OVERSPEND_SCALE, size=n), 0.0)
    ratio = np.clip(core_ratio * np.exp(excess), *SPENDING_RATIO_RANGE)
    log_ratio = np.log(ratio)
    spending = income * ratio

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

    # Zero-inflated Poisson: most people never use EWA; overspenders use it more, and more often.
    over = ratio - SPENDING_RATIO_MEDIAN
    uses_ewa = rng.random(n) < _sigmoid(
        _logit(EWA_USER_SHARE) + EWA_USE_RATIO_SLOPE * over - EWA_USE_RESILIENCE * resilience
    )
    ewa_rate = EWA_RATE + EWA_RATE_RATIO_SLOPE * np.maximum(over, 0.0)
    ewa = np.where(uses_ewa, rng.poisson(ewa_rate), 0)
    alert_rate = ALERT_RATE * np.exp(ALERT_RATIO_SLOPE * over - ALERT_RESILIENCE * resilience)
    alerts = rng.poisson(np.minimum(alert_rate, ALERT_RATE_MAX))

    low, high = SURVEY_RANGE
    answered = rng.random(n) < _sigmoid(_logit(SURVEY_SHARE) + SURVEY_ENGAGEMENT * engagement)
    survey_value = np.clip(
        np.rint(
            SURVEY_MEAN + SURVEY_RESILIENCE * resilience + SURVEY_NOISE * rng.standard_normal(n)
        ),
        low,
        high,
    )
    survey = np.where(answered, survey_value, np.nan)

    active_days = rng.binomial(30, _sigmoid(_line(ACTIVE_DAYS_LOGIT, engagement)))
    goals = rng.poisson(np.exp(_line(GOALS_LOG_RATE, engagement)))
    lessons = rng.poisson(np.exp(_line(LESSONS_LOG_RATE, engagement)))
    points_trait = _correlated(rng, engagement, TREE_POINTS_ENGAGEMENT)
    tree_points = np.rint(TREE_POINTS_MAX * _sigmoid(_line(TREE_POINTS_LOGIT, points_trait)))

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
