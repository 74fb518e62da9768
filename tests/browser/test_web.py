"""The dashboards and the notification bell in a real browser: Debian's Chromium driven by
Playwright, against a live server over a seeded SQLite database. Screenshots of every page go
to ``test-artifacts/`` (one per role)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import insert, select

from tests.browser.conftest import (
    ARTIFACTS,
    admin_notify,
    api_get,
    axe_serious,
    bell,
    js,
    open_as,
    put_in_crisis,
    screenshot,
    two_connected_tabs,
)
from tests.conftest import Database, LiveServer, seed_and_score
from tests.integration.workflow import ADMIN, EMPLOYEES, execute, scalar
from treevu.app import make_engines
from treevu.db import EmployeeSegment, NotificationQueue, User
from treevu.db.migrate import upgrade
from treevu.population import generate_population
from treevu.services.people.seed import seed_history, write_population


def test_every_page_renders_with_data_and_has_no_serious_accessibility_issue(
    browser: Browser, site: tuple[Database, LiveServer]
) -> None:
    """Each page shows figures and rows of the seeded company (the API's own answers, read as
    that person), loads nothing from anywhere but this server (no CDN), and axe-core finds no
    serious or critical issue."""
    db, server = site
    # A crisis case, so that the counselor and the manager have something to show.
    _person, name, counselor, manager = put_in_crisis(server, db)
    employee = EMPLOYEES[0]
    profile = api_get(server, db, employee, "/me/profile")
    team = api_get(server, db, manager, "/team/overview")
    at_risk = api_get(server, db, ADMIN, "/segments/at_risk/stats")
    jobs = api_get(server, db, ADMIN, "/jobs")
    people = api_get(server, db, ADMIN, "/segments/at_risk/employees?limit=10")["items"]
    pages = {"employee": employee, "manager": manager, "counselor": counselor, "admin": ADMIN}
    headings = {"employee": "Your financial wellness", "manager": "Your team",
                "counselor": "Cases assigned to", "admin": "Segments"}  # fmt: skip
    for role, uid in pages.items():
        requests: list[str] = []
        tab = open_as(browser, server, db, uid, requests=requests)
        expect(tab.get_by_role("heading", name=headings[role])).to_be_visible(timeout=15_000)
        expect(bell(tab)).to_have_attribute("data-state", "connected", timeout=15_000)
        if role == "employee":
            expect(tab.get_by_test_id("wellness-score")).to_have_text(
                js(profile["wellnessScore"]), timeout=15_000
            )
            expect(tab.get_by_test_id("fwi")).to_have_text(js(profile["fwiScore"]))
            expect(tab.get_by_test_id("segment")).to_have_text(profile["segment"])
            expect(tab.get_by_test_id("recommendation").first).to_be_visible()
        elif role == "manager":
            rows = tab.get_by_test_id("team-overview").locator("tbody tr")
            expect(rows).to_have_count(len(team["segments"]), timeout=15_000)
            for row, (segment, count) in zip(rows.all(), team["segments"].items(), strict=True):
                shown = "hidden" if count == "suppressed" else str(count)
                expect(row.locator("td")).to_have_text([segment.replace("_", " "), shown])
            expect(tab.get_by_test_id("team-alerts")).to_contain_text(name)
        elif role == "counselor":
            case = tab.get_by_test_id("case").filter(has_text=name)
            expect(case).to_have_count(1, timeout=15_000)
            expect(case.get_by_test_id("status")).to_have_text("open")
        else:
            expect(tab.get_by_test_id("segment-stats")).to_contain_text(
                f"{at_risk['count']:,} people ({js(at_risk['percentage'])}%)", timeout=15_000
            )
            expect(tab.get_by_test_id("jobs").locator("tbody tr")).to_have_count(len(jobs))
            expect(
                tab.get_by_test_id("segment-employees").locator("tbody tr td:first-child")
            ).to_have_text([p["name"] for p in people])
            charts = tab.locator('[data-page="admin"] figure canvas')
            expect(charts).to_have_count(2)
            expect(charts.first).to_have_attribute(
                "aria-label", re.compile(rf"at_risk {at_risk['count']}\b")
            )
            # This very page's bell is one open connection at least.
            expect(tab.get_by_test_id("live-connections")).to_have_text(re.compile(r"^[1-9]"))
        screenshot(tab, f"{role}.png")
        assert axe_serious(tab) == [], role
        assert "token=" not in tab.url  # the fragment is cleared once kept
        # Nothing from a CDN: every request (scripts, styles, fonts, API, the socket) is ours.
        tab.close()
        origins = {f"{u.scheme}://{u.netloc}" for u in map(urlsplit, requests)}
        assert origins <= {server.url, server.url.replace("http", "ws")}, (role, origins)
        assert any(u.endswith(".js") for u in requests) and any("/ws" in u for u in requests)


def test_a_toast_the_counter_and_mark_read_across_two_tabs(
    browser: Browser, site: tuple[Database, LiveServer]
) -> None:
    db, server = site
    uid = EMPLOYEES[1]
    one, two = two_connected_tabs(browser, server, db, uid)
    before = int(bell(one).get_attribute("data-unread") or 0)
    admin_notify(server, db, uid, "Saved three months")
    for tab in (one, two):
        expect(tab.get_by_role("status").filter(has_text="Saved three months")).to_be_visible()
        expect(bell(tab)).to_have_attribute("data-unread", str(before + 1))
    button = one.get_by_role("button", name=f"Notifications, {before + 1} unread")
    expect(button).to_be_visible()
    button.click()
    item = one.get_by_role("listitem").filter(has_text="Saved three months")
    item.get_by_role("button", name="Mark as read").click()
    for tab in (one, two):
        expect(bell(tab)).to_have_attribute("data-unread", str(before))
    one.keyboard.press("Escape")
    one.close()
    two.close()


def test_reconnecting_then_what_was_missed_shows_once(
    browser: Browser, sqlite_database: Database
) -> None:
    seed_and_score(sqlite_database)
    settings = sqlite_database.settings(heartbeat_interval=5)
    uid = EMPLOYEES[2]
    first = LiveServer(settings)
    port = first.port
    with first:
        tab = open_as(browser, first, sqlite_database, uid)
        expect(bell(tab)).to_have_attribute("data-state", "connected", timeout=15_000)
    expect(bell(tab)).to_have_attribute("data-state", "reconnecting", timeout=15_000)
    # Stored while no server runs (the durable inbox), found by the next one.
    execute(
        sqlite_database,
        insert(NotificationQueue).values(
            user_id=uid,
            type="milestone",
            title="While you were away",
            message="Missed it",
            data=None,
            status="pending",
            created_at=datetime.now(UTC),
        ),  # fmt: skip
    )
    second = LiveServer(settings, port=port)
    with second:
        expect(bell(tab)).to_have_attribute("data-state", "connected", timeout=40_000)
        bell(tab).get_by_role("button", name="Notifications").first.click()
        expect(tab.get_by_role("listitem").filter(has_text="While you were away")).to_have_count(1)
        time.sleep(1)
        expect(tab.get_by_role("listitem").filter(has_text="While you were away")).to_have_count(1)
    tab.close()


def test_the_survey_form_submits_and_the_profile_changes(
    browser: Browser, site: tuple[Database, LiveServer]
) -> None:
    db, server = site
    uid = EMPLOYEES[3]
    tab = open_as(browser, server, db, uid)
    fwi = tab.get_by_test_id("fwi")
    expect(fwi).to_be_visible(timeout=15_000)
    before = fwi.inner_text()
    form = tab.get_by_test_id("survey")
    statements = form.locator("fieldset")
    expect(statements).to_have_count(10)
    expect(form).to_contain_text("I could handle a major unexpected expense")
    expect(form).to_contain_text("My finances control my life")
    for k in range(10):
        # The most favourable answer each time (reverse-scored items take the other end).
        labels = statements.nth(k).locator("label")
        reverse = k + 1 in (3, 5, 6, 7, 9, 10)
        labels.nth(labels.count() - 1 if reverse else 0).click()
    form.get_by_role("button", name="Submit survey").click()
    expect(tab.get_by_role("status").filter(has_text="Your score")).to_be_visible()
    expect(fwi).not_to_have_text(before, timeout=10_000)
    tab.close()


def test_a_campaign_created_on_the_admin_page_reaches_an_employee_page(
    browser: Browser, site: tuple[Database, LiveServer]
) -> None:
    db, server = site
    uid = EMPLOYEES[4]
    segment = scalar(db, select(EmployeeSegment.segment).where(EmployeeSegment.user_id == uid))
    employee = open_as(browser, server, db, uid)
    expect(bell(employee)).to_have_attribute("data-state", "connected", timeout=15_000)
    admin = open_as(browser, server, db, ADMIN)
    form = admin.get_by_test_id("campaign-form")
    expect(form).to_be_visible(timeout=15_000)
    form.get_by_label("Name", exact=True).fill("Spring check-in")
    form.get_by_label("Segment", exact=True).select_option(segment)
    form.get_by_label("Title", exact=False).fill("Hello {firstName}")
    form.get_by_label("Message", exact=True).fill("A new plan for our {segmentName}")
    form.get_by_role("button", name="Create campaign").click()
    name = scalar(db, select(User.name).where(User.id == uid)).split()[0]
    expect(employee.get_by_role("status").filter(has_text=f"Hello {name}")).to_be_visible(
        timeout=20_000
    )
    expect(admin.get_by_test_id("campaigns")).to_contain_text("Spring check-in")
    expect(admin.get_by_test_id("campaign-performance").first).to_contain_text("delivered")
    employee.close()
    admin.close()


def test_an_employee_cannot_open_another_roles_page_or_data(
    browser: Browser, site: tuple[Database, LiveServer]
) -> None:
    db, server = site
    tab = open_as(browser, server, db, EMPLOYEES[5], page="admin")
    expect(tab.get_by_test_id("forbidden")).to_be_visible(timeout=15_000)
    statuses = tab.evaluate(
        """async () => {
            const token = sessionStorage.getItem('treevu.token');
            const get = (p) => fetch(p, {headers: {Authorization: `Bearer ${token}`}})
                .then(r => r.status);
            return [await get('/api/v1/segments/distribution'), await get('/api/v1/audit'),
                    await get('/api/v1/team/overview'), await get('/api/v1/interventions')];
        }"""
    )
    assert statuses == [403, 403, 403, 403]
    tab.evaluate("location.hash = '#/manager'")
    expect(tab.get_by_test_id("forbidden")).to_contain_text("manager")
    assert json.dumps(tab.evaluate("Object.keys(sessionStorage)")) == '["treevu.token"]'
    tab.close()


# -- the admin's analytics (SPEC §10), over a company with a year of history ----------------------


@pytest.fixture(scope="module")
def history_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Database, LiveServer]]:
    """2,000 people with 12 past months, as ``treevu seed --history-months 12`` writes them: the
    snapshots, interventions and two campaign experiments (1: a true uplift, 2: A/A), with the
    analytics answers stored."""
    path = tmp_path_factory.mktemp("history") / "treevu.db"
    db = Database("sqlite", f"sqlite+aiosqlite:///{path}")
    settings = db.settings()
    upgrade(settings.sync_database_url)
    async_engine, bulk = make_engines(settings)
    async_engine.sync_engine.dispose()
    now = datetime.now(UTC)
    population = generate_population(2000, 3)
    write_population(bulk, population, now=now)
    seed_history(
        bulk, population, 12, seed=3, now=now, survey_valid_days=settings.survey_valid_days
    )
    bulk.dispose()
    with LiveServer(settings) as server:
        yield db, server


def admin_get(server: LiveServer, db: Database, path: str) -> Any:
    return api_get(server, db, ADMIN, path)


def shown(count: int | str) -> str:
    """A count as the page writes it ("<5" stays as it is)."""
    return count if isinstance(count, str) else f"{count:,}"


def painted(tab: Page, test_id: str) -> bool:
    """Whether the canvas has any pixel drawn on it."""
    return bool(
        tab.get_by_test_id(test_id).evaluate(
            """c => c.width > 0 && c.height > 0 && c.getContext('2d')
                .getImageData(0, 0, c.width, c.height).data.some(v => v !== 0)"""
        )
    )


def test_the_analytics_section_shows_transitions_cohorts_churn_and_the_effect(
    browser: Browser, history_site: tuple[Database, LiveServer]
) -> None:
    db, server = history_site
    cohorts = admin_get(server, db, "/analytics/cohorts")
    months = sorted({m["month"] for c in cohorts["cohorts"] for m in c["months"]})
    assert len(months) == 13
    tab = open_as(browser, server, db, ADMIN)
    tab.set_viewport_size({"width": 1400, "height": 900})
    section = tab.get_by_test_id("analytics")
    expect(section.get_by_role("heading", name="Analytics")).to_be_visible(timeout=15_000)
    # Only the months the history holds can be picked.
    pick_from, pick_to = section.get_by_label("From month"), section.get_by_label("To month")
    expect(pick_from.locator("option")).to_have_text(months, timeout=15_000)
    first, second = months[3], months[7]
    pick_from.select_option(first)
    pick_to.select_option(second)
    answer = admin_get(server, db, f"/analytics/transitions?from={first}-01&to={second}-01")
    cells = tab.get_by_test_id("transition-cell")
    expect(tab.get_by_test_id("transitions")).to_contain_text(f"were in {second}")
    expect(cells).to_have_count(25)
    expected = [shown(c) for row in answer["counts"] for c in row]
    assert "<5" in expected  # small cells are hidden, and shown hidden
    expect(cells).to_have_text(expected)
    assert cells.nth(6).get_attribute("data-from") == answer["segments"][1]
    assert cells.nth(6).get_attribute("data-to") == answer["segments"][1]
    expect(tab.get_by_test_id("transitions-summary")).to_contain_text(
        f"Stayed in their segment: {shown(answer['stayed'])} · moved: {shown(answer['moved'])}"
    )
    # The effect with its 95% interval, for the horizon picked.
    section.get_by_label("Months after the intervention opened").select_option("2")
    effect = admin_get(server, db, "/analytics/intervention-effect?horizonMonths=2")
    low, high = effect["ci95"]
    expect(tab.get_by_test_id("effect")).to_contain_text("Effect after 2 months:")
    expect(tab.get_by_test_id("effect")).to_contain_text(f"(95% interval {low:.2f} to {high:.2f})")
    expect(tab.get_by_test_id("effect-counts")).to_contain_text(
        f"Treated {shown(effect['treated'])}, matched {shown(effect['matched'])}"
    )
    expect(tab.get_by_test_id("balance").locator("tbody tr")).to_have_count(
        len(effect["balance"]["features"])
    )
    for chart in ("cohorts-chart", "churn-chart", "balance-chart"):
        expect(tab.get_by_test_id(chart)).to_be_visible()
        assert painted(tab, chart), chart
    section.get_by_label("Measure").select_option("retainedRate")
    expect(tab.get_by_test_id("cohorts-chart")).to_have_attribute(
        "aria-label", re.compile(r"^Still here by months since joining")
    )
    assert painted(tab, "cohorts-chart")
    ARTIFACTS.mkdir(exist_ok=True)
    section.screenshot(path=str(ARTIFACTS / "admin-analytics.png"))
    assert axe_serious(tab) == []
    tab.close()


def test_the_experiment_shows_both_variants_and_warns_until_the_planned_size(
    browser: Browser, history_site: tuple[Database, LiveServer]
) -> None:
    db, server = history_site
    tab = open_as(browser, server, db, ADMIN)
    section = tab.get_by_test_id("analytics")
    campaign = section.get_by_label("Campaign", exact=True)
    expect(campaign.locator("option[value='1']")).to_have_count(1, timeout=15_000)
    campaign.select_option("1")
    answer = admin_get(server, db, "/campaigns/1/experiment")
    rows = tab.get_by_test_id("experiment-variant")
    expect(rows).to_have_count(2)
    for row, variant in zip(rows.all(), answer["variants"], strict=True):
        expect(row.locator("td")).to_have_text(
            [str(variant["variant"]), variant["title"], shown(variant["sent"]),
             shown(variant["converted"]), f"{variant['rate'] * 100:.1f}%"]
        )  # fmt: skip
    assert painted(tab, "experiment-chart")
    # A tiny minimum detectable effect needs far more people than were sent: a warning, and
    # no p-value until then.
    section.get_by_label("Minimum detectable effect", exact=False).fill("0.001")
    small = admin_get(server, db, "/campaigns/1/experiment?minDetectableEffect=0.001")
    assert small["reached"] is False and small["warning"]
    warning = tab.get_by_test_id("experiment-warning")
    expect(warning).to_be_visible()
    expect(warning).to_contain_text(small["warning"])
    expect(tab.get_by_test_id("experiment-plan")).to_contain_text(
        f"Planned: {small['plannedPerVariant']:,} people per variant"
    )
    expect(tab.get_by_test_id("experiment-comparisons")).to_contain_text("p-value —")
    # Out of the range the server takes: its answer names the field.
    section.get_by_label("Minimum detectable effect", exact=False).fill("1.5")
    expect(section.get_by_role("alert")).to_contain_text("minDetectableEffect")
    section.get_by_label("Minimum detectable effect", exact=False).fill("0.001")
    expect(warning).to_be_visible()
    assert axe_serious(tab) == []
    tab.close()
