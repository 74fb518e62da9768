"""The synthetic population: determinism, org chart, valid inputs, segment and tier coverage."""

from __future__ import annotations

import re
from dataclasses import fields

import numpy as np
import pytest

from treevu.population import (
    ADMIN,
    ADMIN_EMAIL,
    COUNSELOR,
    COUNSELOR_CAPACITY,
    DEPARTMENTS,
    EMPLOYEE,
    MANAGER,
    MIN_USERS,
    ROLES,
    Population,
    generate_population,
    role_counts,
)
from treevu.segmentation.engine import INPUT_NAMES, Inputs, score, validate_record
from treevu.segmentation.policy import SEGMENTS, default_policy

TIER_BANDS = {
    "Seedling": (0, 1000),
    "Sprout": (1000, 2500),
    "Rising Stars": (2500, 5000),
    "Financial Champions": (5000, float("inf")),
}


@pytest.fixture(scope="module")
def company() -> Population:
    return generate_population(2000, seed=0)


def rows_with_inputs(population: Population) -> Inputs:
    mask = population.has_inputs
    return Inputs.from_columns([getattr(population.inputs, f.name)[mask] for f in fields(Inputs)])


def assert_same(a: Population, b: Population) -> None:
    for f in fields(Population):
        left, right = getattr(a, f.name), getattr(b, f.name)
        if isinstance(left, Inputs):
            for column in fields(Inputs):
                np.testing.assert_array_equal(
                    getattr(left, column.name), getattr(right, column.name)
                )
        elif isinstance(left, list):
            assert left == right
        else:
            np.testing.assert_array_equal(left, right)


def test_same_seed_gives_identical_population() -> None:
    assert_same(generate_population(3000, seed=7), generate_population(3000, seed=7))


def test_different_seed_gives_different_population() -> None:
    a, b = generate_population(3000, seed=7), generate_population(3000, seed=8)
    assert a.name != b.name
    assert not np.array_equal(a.inputs.monthly_income, b.inputs.monthly_income)
    assert not np.array_equal(a.manager_id, b.manager_id)


@pytest.mark.parametrize("n_users", [MIN_USERS, 10, 151, 2000, 12_345])
def test_role_counts_and_the_admin(n_users: int) -> None:
    population = generate_population(n_users, seed=1)
    assert len(population) == n_users
    np.testing.assert_array_equal(population.user_id, np.arange(1, n_users + 1))
    counts = np.bincount(population.role, minlength=len(ROLES))
    assert dict(zip(ROLES, counts.tolist(), strict=True)) == role_counts(n_users)
    assert counts[ADMIN] == 1
    assert population.role[0] == ADMIN
    assert population.email[0] == ADMIN_EMAIL
    assert counts[COUNSELOR] >= 2
    assert counts[MANAGER] >= 1
    assert counts[EMPLOYEE] >= 1


def test_tiny_company() -> None:
    assert role_counts(10) == {"employee": 6, "manager": 1, "counselor": 2, "admin": 1}


def test_counselors_scale_with_the_company() -> None:
    assert role_counts(15_000)["counselor"] == 100


def test_too_small_a_company_is_refused() -> None:
    with pytest.raises(ValueError, match="n_users"):
        generate_population(MIN_USERS - 1, seed=0)


def test_about_one_manager_per_eight_employees() -> None:
    counts = np.bincount(generate_population(20_000, seed=3).role, minlength=len(ROLES))
    assert 7.5 <= counts[EMPLOYEE] / counts[MANAGER] <= 8.5


def test_every_employee_reports_to_a_manager_of_their_department(company: Population) -> None:
    role, boss, department = company.role, company.manager_id, company.department
    employees = np.flatnonzero(role == EMPLOYEE)
    boss_rows = boss[employees] - 1
    assert (boss[employees] > 0).all()
    assert (role[boss_rows] == MANAGER).all()
    np.testing.assert_array_equal(department[boss_rows], department[employees])
    # Every manager has a team.
    assert set(boss[employees].tolist()) == set((np.flatnonzero(role == MANAGER) + 1).tolist())


def test_managers_report_to_senior_managers_of_their_department(company: Population) -> None:
    role, boss, department = company.role, company.manager_id, company.department
    managers = np.flatnonzero(role == MANAGER)
    senior = managers[boss[managers] == 0]
    line = managers[boss[managers] > 0]
    assert 1 <= len(senior) < len(line)
    senior_ids = set((senior + 1).tolist())
    assert set(boss[line].tolist()) <= senior_ids
    np.testing.assert_array_equal(department[boss[line] - 1], department[line])
    staff = np.flatnonzero((role == ADMIN) | (role == COUNSELOR))
    assert (boss[staff] == 0).all()


def test_departments_are_all_used(company: Population) -> None:
    assert company.department.min() >= 0
    assert set(company.department.tolist()) == set(range(len(DEPARTMENTS)))


def test_counselor_capacities(company: Population) -> None:
    is_counselor = company.role == COUNSELOR
    low, high = COUNSELOR_CAPACITY
    capacity = company.counselor_capacity
    assert ((capacity[is_counselor] >= low) & (capacity[is_counselor] <= high)).all()
    assert (capacity[~is_counselor] == 0).all()


def test_inputs_belong_to_employees_and_managers(company: Population) -> None:
    expected = (company.role == EMPLOYEE) | (company.role == MANAGER)
    np.testing.assert_array_equal(company.has_inputs, expected)
    assert len(company.inputs) == len(company)
    absent = ~company.has_inputs
    assert (company.inputs.monthly_income[absent] == 0).all()
    assert np.isnan(company.inputs.survey_score[absent]).all()


def test_managers_earn_more(company: Population) -> None:
    income = company.inputs.monthly_income
    managers = np.median(income[company.role == MANAGER])
    employees = np.median(income[company.role == EMPLOYEE])
    assert managers > 1.2 * employees


@pytest.mark.parametrize("seed", [0, 11])
def test_every_input_row_is_valid(seed: int) -> None:
    population = generate_population(2000, seed=seed)
    sample = np.random.default_rng(seed).choice(len(population), size=400, replace=False)
    for i in [0, 1, *sample.tolist()]:
        record = {k: v for k, v in population.inputs.row(i).items() if v is not None}
        validate_record(record)


def test_columns_respect_the_input_rules() -> None:
    inputs = generate_population(20_000, seed=5).inputs
    for name, f in zip(INPUT_NAMES, fields(Inputs), strict=True):
        column = getattr(inputs, f.name)
        present = column[~np.isnan(column)]
        assert (present >= 0).all(), name
        if name in {"monthlyIncome", "monthlySpending", "savingsBalance", "monthlyDebtPayments"}:
            np.testing.assert_allclose(present, np.round(present, 2), rtol=0, atol=1e-9)
        else:  # counts, CFPB scale scores and TreePoints are whole numbers
            np.testing.assert_array_equal(present, np.round(present), err_msg=name)
    assert inputs.active_days_30d.max() <= 30
    survey = inputs.survey_score[~np.isnan(inputs.survey_score)]
    assert survey.min() >= 14
    assert survey.max() <= 95


def test_about_a_third_have_a_recent_survey() -> None:
    population = generate_population(20_000, seed=2)
    survey = population.inputs.survey_score[population.has_inputs]
    assert 0.30 <= np.mean(~np.isnan(survey)) <= 0.40


@pytest.mark.parametrize("seed", range(5))
def test_every_segment_is_populated_with_a_plausible_share(seed: int) -> None:
    profiles = score(rows_with_inputs(generate_population(2000, seed=seed)), default_policy())
    counts = np.bincount(profiles.segment, minlength=len(SEGMENTS))
    share = dict(zip(SEGMENTS, (counts / len(profiles)).tolist(), strict=True))
    assert 0.04 <= share["crisis_intervention"] <= 0.14
    assert 0.14 <= share["at_risk"] <= 0.32
    assert 0.03 <= share["financial_champions"] <= 0.14
    assert 0.08 <= share["rising_stars"] <= 0.24
    assert 0.35 <= share["steady_performers"] <= 0.65


def test_every_reward_tier_is_populated(company: Population) -> None:
    points = company.inputs.tree_points[company.has_inputs]
    for tier, (low, high) in TIER_BANDS.items():
        assert ((points >= low) & (points < high)).sum() >= 50, tier
    assert points.max() <= 8000


def test_emails_are_unique_and_names_realistic(company: Population) -> None:
    assert len(set(company.email)) == len(company)
    pattern = re.compile(r"[a-z]+\.[a-z]+\.(\d+)@demo\.treevu")
    for user_id, email in zip(company.user_id[1:].tolist(), company.email[1:], strict=True):
        match = pattern.fullmatch(email)
        assert match is not None, email
        assert int(match.group(1)) == user_id
    assert all(re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", name) for name in company.name)
    first, last = company.name[5].lower().split()
    assert company.email[5].startswith(f"{first}.{last}.")
