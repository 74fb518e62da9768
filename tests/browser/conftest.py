"""What the browser tests share: Debian's Chromium driven by Playwright, a live server over a
seeded SQLite database, a page signed in as someone, and a few ways to look at it."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import select

from tests.conftest import REQUIRE_SERVERS, Database, LiveServer, seed_and_score, token_for
from tests.integration.test_rewards import POOR
from tests.integration.workflow import ADMIN, EMPLOYEES, POPULATION, scalar
from treevu.app import WEB_DIST
from treevu.db import Intervention, User

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
AXE = ROOT / "web" / "app" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BELL = "treevu-notification-bell"
#: The element that has the keyboard focus, through open shadow roots: its tag, class, text
#: and accessible name as the bell sets it.
DEEP_FOCUS = """() => {
    let el = document.activeElement;
    while (el && el.shadowRoot && el.shadowRoot.activeElement) el = el.shadowRoot.activeElement;
    const host = el && el.getRootNode() instanceof ShadowRoot ? el.getRootNode().host : null;
    return el && {tag: el.tagName.toLowerCase(), cls: el.className, text: el.textContent.trim(),
                  label: el.getAttribute('aria-label'), host: host && host.tagName.toLowerCase(),
                  item: el.closest('li') && el.closest('li').querySelector('.item-title')
                        ? el.closest('li').querySelector('.item-title').textContent : null};
}"""


def missing(what: str) -> None:
    if REQUIRE_SERVERS:
        pytest.fail(f"{what} is missing and TREEVU_TEST_REQUIRE_SERVERS=1")
    pytest.skip(f"{what} is missing")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        missing("chromium")
    if not (WEB_DIST / "index.html").is_file():
        missing("the web app (make web)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def site(sqlite_database: Database) -> Iterator[tuple[Database, LiveServer]]:
    seed_and_score(sqlite_database)
    settings = sqlite_database.settings(
        job_intervals={"campaigns.pace": 0.5},
        admin_notifications_per_minute=1_000_000,
        heartbeat_interval=5,
    )
    with LiveServer(settings) as server:
        yield sqlite_database, server


def open_as(
    browser: Browser,
    server: LiveServer,
    db: Database,
    user_id: int,
    page: str = "",
    *,
    requests: list[str] | None = None,
    token: str | None = None,
) -> Page:
    """A new tab (its own context) on the user's sign-in link; every URL it asks for (HTTP and
    WebSocket) is appended to ``requests`` when given."""
    tab = browser.new_page()
    if requests is not None:
        tab.on("request", lambda r: requests.append(r.url))
        tab.on("websocket", lambda ws: requests.append(ws.url))
    tab.goto(f"{server.url}/app/#token={token or token_for(db, user_id)}")
    if page:
        tab.evaluate(f"location.hash = '#/{page}'")
    return tab


def bell(tab: Page) -> Any:
    return tab.locator(BELL)


def two_connected_tabs(
    browser: Browser, server: LiveServer, db: Database, user_id: int
) -> tuple[Page, Page]:
    """Two tabs of one person, each with its bell connected."""
    tabs = open_as(browser, server, db, user_id), open_as(browser, server, db, user_id)
    for tab in tabs:
        expect(bell(tab)).to_have_attribute("data-state", "connected", timeout=15_000)
    return tabs


def deep_focus(tab: Page) -> dict[str, Any]:
    found: dict[str, Any] = tab.evaluate(DEEP_FOCUS)
    return found


def js(value: float) -> str:
    """A number as JavaScript writes it (``String(n)``): 42.0 is "42"."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def api_get(server: LiveServer, db: Database, user_id: int, path: str) -> Any:
    r = httpx.get(
        f"{server.url}/api/v1{path}", headers={"Authorization": f"Bearer {token_for(db, user_id)}"}
    )
    assert r.status_code == 200, r.text
    return r.json()


def admin_notify(server: LiveServer, db: Database, user_id: int, title: str) -> int:
    r = httpx.post(
        f"{server.url}/api/v1/admin/notifications",
        json={"userId": user_id, "type": "milestone", "title": title, "message": "Well done"},
        headers={"Authorization": f"Bearer {token_for(db, ADMIN)}"},
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


class Crisis(NamedTuple):
    person: int
    name: str
    counselor: int
    manager: int


def put_in_crisis(server: LiveServer, db: Database) -> Crisis:
    """An employee with a manager gets crisis-level inputs: returns them (id and name), the
    counselor their intervention was assigned to, and their manager."""
    person = next(u for u in EMPLOYEES if int(POPULATION.manager_id[u - 1]) > 0)
    r = httpx.put(f"{server.url}/api/v1/employees/{person}/inputs", json=POOR,
                  headers={"Authorization": f"Bearer {token_for(db, ADMIN)}"})  # fmt: skip
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 30
    while scalar(db, select(Intervention.id).where(Intervention.user_id == person)) is None:
        assert time.monotonic() < deadline, "no intervention was opened"
        time.sleep(0.1)
    counselor = scalar(db, select(Intervention.counselor_id).where(Intervention.user_id == person))
    assert counselor is not None, "the intervention has no counselor"
    name = scalar(db, select(User.name).where(User.id == person))
    return Crisis(person, name, int(counselor), int(POPULATION.manager_id[person - 1]))


def axe_serious(tab: Page) -> list[str]:
    tab.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = tab.evaluate(
        "axe.run(document).then(r => r.violations.map(v => ({id: v.id, impact: v.impact})))"
    )
    return [v["id"] for v in found if v["impact"] in ("serious", "critical")]


def screenshot(tab: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / name), full_page=True)
