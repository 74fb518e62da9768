"""What each dashboard lets its person do, in Chromium: the employee's recommendations and
notification preferences, the manager's alerts (and no money), the counselor's status buttons,
the admin's segment employees and audit log."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from tests.browser.conftest import api_get, bell, open_as, put_in_crisis, screenshot
from tests.conftest import Database, LiveServer
from tests.integration.test_rewards import POOR
from tests.integration.workflow import ADMIN, EMPLOYEES, rows, scalar
from treevu.db import Intervention, RecommendationEvent


def feedback(tab: Page, item: Any, button: str) -> dict[str, Any]:
    """Press one of a recommendation's buttons; the server's answer to it."""
    with tab.expect_response(re.compile(r"/api/v1/me/recommendations/[^/]+/\w+$")) as answer:
        item.get_by_role("button", name=button).click()
    assert answer.value.status == 200, answer.value.text()
    body: dict[str, Any] = answer.value.json()
    return body


def recommendation(tab: Page, rid: str | None) -> Any:
    return tab.locator(f'[data-testid="recommendation"][data-id="{rid}"]')


def events(db: Database, uid: int, rid: str | None) -> list[str]:
    """The kinds of feedback stored for the user's recommendation."""
    query = select(RecommendationEvent.kind).where(
        RecommendationEvent.user_id == uid, RecommendationEvent.recommendation_id == rid
    )
    return [r.kind for r in rows(db, query)]


def test_recommendations_open_done_and_not_for_me_change_the_list_and_the_points(
    browser: Browser, site: tuple[Database, LiveServer]
) -> None:
    db, server = site
    uid = EMPLOYEES[8]
    tab = open_as(browser, server, db, uid)
    items = tab.get_by_test_id("recommendation")
    expect(items.first).to_be_visible(timeout=15_000)
    first, second = (items.nth(k).get_attribute("data-id") for k in (0, 1))
    tier = api_get(server, db, uid, "/me/tier")
    assert tier["nextTier"] is not None, tier  # a tier to make progress towards
    points = tab.get_by_test_id("points")
    expect(points).to_have_text(f"{tier['points']:,} points")
    expect(tab.locator("#tier-progress")).to_have_attribute("value", str(tier["points"]))

    # Open: recorded, the list stays as it is.
    feedback(tab, recommendation(tab, first), "Open")
    assert "click" in events(db, uid, first)
    expect(recommendation(tab, first)).to_have_count(1)

    # Done: it leaves the list, and its points show in the tier and its progress bar.
    done = feedback(tab, recommendation(tab, first), "Done")
    assert done["pointsEarned"] > 0, done
    assert "completed" in events(db, uid, first)
    after = tier["points"] + done["pointsEarned"]
    expect(recommendation(tab, first)).to_have_count(0)
    expect(points).to_have_text(f"{after:,} points")
    if done["pointsEarned"] < tier["pointsToNext"]:
        expect(tab.locator("#tier-progress")).to_have_attribute("value", str(after))
        left = tier["pointsToNext"] - done["pointsEarned"]
        expect(tab.get_by_text(f"{left:,} points to {tier['nextTier']}")).to_be_visible()
    else:  # a step up
        expect(tab.get_by_test_id("tier").locator(".big")).to_have_text(tier["nextTier"])

    # Not for me: it leaves the list; no points.
    feedback(tab, recommendation(tab, second), "Not for me")
    assert "dismissed" in events(db, uid, second)
    expect(recommendation(tab, second)).to_have_count(0)
    expect(points).to_have_text(f"{after:,} points")
    # The server keeps both: a reload shows the same list.
    tab.reload()
    expect(items.first).to_be_visible(timeout=15_000)
    ids = [items.nth(k).get_attribute("data-id") for k in range(items.count())]
    assert first not in ids and second not in ids, ids
    tab.close()


def test_notification_preferences_are_saved_and_kept_after_a_reload(
    browser: Browser, site: tuple[Database, LiveServer]
) -> None:
    db, server = site
    uid = EMPLOYEES[9]
    tab = open_as(browser, server, db, uid)
    milestones = tab.get_by_role("checkbox", name="Milestones")
    expect(milestones).to_be_checked(timeout=15_000)
    expect(tab.get_by_role("checkbox", name="Tier upgrades")).to_be_checked()
    with tab.expect_response(lambda r: r.url.endswith("/notifications/preferences")
                             and r.request.method == "PUT"):  # fmt: skip
        milestones.click()
    expect(milestones).not_to_be_checked()
    assert api_get(server, db, uid, "/notifications/preferences")["enableMilestones"] is False
    tab.reload()
    expect(bell(tab)).to_have_attribute("data-state", "connected", timeout=15_000)
    expect(tab.get_by_role("checkbox", name="Milestones")).not_to_be_checked()
    expect(tab.get_by_role("checkbox", name="Tier upgrades")).to_be_checked()
    expect(tab.get_by_role("checkbox", name="Recommendations")).to_be_checked()
    tab.close()


def test_the_manager_sees_an_alert_about_a_direct_report_and_no_money(
    browser: Browser, site: tuple[Database, LiveServer]
) -> None:
    db, server = site
    _person, name, _counselor, manager = put_in_crisis(server, db)
    tab = open_as(browser, server, db, manager)
    alert = tab.get_by_test_id("team-alerts").get_by_role("listitem").filter(has_text=name)
    expect(alert).to_have_count(1, timeout=15_000)
    expect(alert).to_contain_text(re.compile(r"since \S+"))
    expect(tab.get_by_test_id("team-overview").locator("tbody tr").first).to_be_visible()
    text = tab.locator("body").inner_text()
    # The person's inputs were money: none of those figures, and no currency, is on the page.
    money = {v for k, v in POOR.items() if k.startswith(("monthly", "savings")) and v}
    for value in money:
        assert not re.search(rf"\b{value}\b|\b{value:,}\b", text), (value, text)
    assert not re.search(r"[$€£]|\bUSD\b|\bEUR\b|income|salary|debt|savings", text, re.I), text
    tab.close()


def test_the_counselor_moves_a_case_along_and_the_employee_is_told(
    browser: Browser, site: tuple[Database, LiveServer]
) -> None:
    db, server = site
    person, name, counselor, _manager = put_in_crisis(server, db)
    plan = scalar(db, select(Intervention.plan).where(Intervention.user_id == person))
    employee = open_as(browser, server, db, person)
    expect(bell(employee)).to_have_attribute("data-state", "connected", timeout=15_000)
    tab = open_as(browser, server, db, counselor)
    case = tab.get_by_test_id("case").filter(has_text=name)
    expect(case).to_have_count(1, timeout=15_000)
    assert plan["steps"], plan
    expect(case.get_by_role("list", name=f"Plan for {name}").locator("li")).to_have_text(
        plan["steps"]
    )
    expect(case.get_by_test_id("status")).to_have_text("open")
    screenshot(tab, "counselor-case.png")
    case.get_by_role("button", name="Mark contacted").click()
    expect(case.get_by_test_id("status")).to_have_text("contacted")
    expect(case.get_by_role("button", name="Mark contacted")).to_have_count(0)
    expect(case.get_by_role("button", name="Mark in progress")).to_be_visible()
    status = scalar(db, select(Intervention.status).where(Intervention.user_id == person))
    assert status == "contacted"
    toast = employee.get_by_role("status").filter(has_text="Your support case was updated")
    expect(toast).to_contain_text("Your counselor has reached out to you.", timeout=15_000)
    employee.close()
    tab.close()


def test_the_admin_sees_the_employees_of_a_segment_and_the_audit_log(
    browser: Browser, site: tuple[Database, LiveServer]
) -> None:
    db, server = site
    put_in_crisis(server, db)  # an audited change (the inputs written by the admin)
    audit = api_get(server, db, ADMIN, "/audit?limit=15")["items"]
    assert audit
    tab = open_as(browser, server, db, ADMIN)
    log = tab.get_by_test_id("audit").locator("tbody tr")
    expect(log).to_have_count(len(audit), timeout=15_000)
    expect(log.locator("td:nth-child(2)")).to_have_text([a["action"] for a in audit])
    expect(log.locator("td:nth-child(3)")).to_have_text([a["target"] or "—" for a in audit])
    names = tab.get_by_test_id("segment-employees").locator("tbody tr td:first-child")
    for segment in ("at_risk", "steady_performers"):
        tab.locator("#segment-pick").select_option(segment)
        people = api_get(server, db, ADMIN, f"/segments/{segment}/employees?limit=10")["items"]
        assert people, segment
        expect(names).to_have_text([p["name"] for p in people])
        risks = tab.get_by_test_id("segment-employees").locator("tbody tr td:nth-child(3)")
        expect(risks).to_have_text([p["riskLevel"] for p in people])
    tab.close()
