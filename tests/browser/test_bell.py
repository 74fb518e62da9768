"""The notification bell: used by keyboard alone, "Mark all as read" in two tabs, the `offline`
state when the sign-in expires, and the bell package's own checks (the protocol self-check in
Node, and its end-to-end run of the built element in Chromium) run from here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import (
    ARTIFACTS,
    BELL,
    ROOT,
    admin_notify,
    api_get,
    bell,
    deep_focus,
    missing,
    two_connected_tabs,
)
from tests.conftest import Database, LiveServer, seed_and_score, token_for
from tests.integration.workflow import EMPLOYEES

BELL_PACKAGE = ROOT / "web" / "bell"


def tab_until(tab: Page, wanted: str, *, back: bool = False) -> dict[str, object]:
    """Press Tab (Shift+Tab when ``back``) until the focus is on a button named ``wanted``."""
    for _ in range(12):
        tab.keyboard.press("Shift+Tab" if back else "Tab")
        focus = deep_focus(tab)
        if focus["tag"] == "button" and focus["text"] == wanted:
            return focus
    raise AssertionError(f"Tab never reached {wanted!r}; last focus {focus}")


def test_the_bell_by_keyboard_mark_one_then_all_read_in_two_tabs(
    browser: Browser, site: tuple[Database, LiveServer]
) -> None:
    db, server = site
    uid = EMPLOYEES[6]
    one, two = two_connected_tabs(browser, server, db, uid)
    before = int(bell(one).get_attribute("data-unread") or 0)
    admin_notify(server, db, uid, "First of two")
    admin_notify(server, db, uid, "Second of two")
    for tab in (one, two):
        expect(bell(tab)).to_have_attribute("data-unread", str(before + 2))

    # Tab from the top of the page: the bell's button is the first stop.
    one.evaluate("document.activeElement && document.activeElement.blur()")
    one.keyboard.press("Tab")
    focus = deep_focus(one)
    assert (focus["host"], focus["cls"]) == ("treevu-notification-bell", "bell"), focus
    assert focus["label"] == f"Notifications, {before + 2} unread"
    one.keyboard.press("Enter")
    dialog = one.get_by_role("dialog", name="Notifications")
    expect(dialog).to_be_visible()
    expect(bell(one).locator("button.bell")).to_have_attribute("aria-expanded", "true")

    # Tab to the newest notification's "Mark as read"; Enter marks it, in both tabs.
    focus = tab_until(one, "Mark as read")
    assert focus["item"] == "Second of two", focus
    one.keyboard.press("Enter")
    for tab in (one, two):
        expect(bell(tab)).to_have_attribute("data-unread", str(before + 1), timeout=10_000)
    item = one.get_by_role("listitem").filter(has_text="Second of two")
    expect(item.get_by_role("button", name="Mark as read")).to_have_count(0)
    expect(dialog).to_be_visible()  # the focus stayed in the list

    # Back to "Mark all as read": the count is 0 in both tabs and on the server.
    tab_until(one, "Mark all as read", back=True)
    one.keyboard.press("Enter")
    for tab in (one, two):
        expect(bell(tab)).to_have_attribute("data-unread", "0", timeout=10_000)
        expect(tab.get_by_role("button", name="Notifications, 0 unread")).to_be_visible()
    expect(one.get_by_role("button", name="Mark as read")).to_have_count(0)
    assert api_get(server, db, uid, "/notifications/unread-count")["count"] == 0
    ARTIFACTS.mkdir(exist_ok=True)
    one.screenshot(path=str(ARTIFACTS / "bell-panel.png"))

    # Escape closes the list and gives the focus back to the bell.
    one.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    focus = deep_focus(one)
    assert (focus["host"], focus["cls"]) == ("treevu-notification-bell", "bell"), focus
    one.close()
    two.close()


def test_the_bell_is_offline_when_the_sign_in_expires_and_waits_for_a_new_one(
    browser: Browser, sqlite_database: Database
) -> None:
    """The server closes an expired token's socket (4403 at the heartbeat re-check): with no
    way to get a fresh token, the bell says Offline and does not retry — however long it
    waits — until it is given a new token."""
    seed_and_score(sqlite_database)
    uid = EMPLOYEES[7]
    with LiveServer(sqlite_database.settings(heartbeat_interval=1)) as server:
        sockets: list[str] = []
        tab = browser.new_page()
        tab.clock.install()
        tab.on("websocket", lambda ws: sockets.append(ws.url))
        tab.goto(f"{server.url}/app/#token={token_for(sqlite_database, uid, ttl=12)}")
        expect(bell(tab)).to_have_attribute("data-state", "connected", timeout=10_000)
        expect(bell(tab)).to_have_attribute("data-state", "offline", timeout=30_000)
        expect(bell(tab).get_by_text("Offline", exact=True)).to_be_visible()
        # Two minutes on the page's clock: any reconnect timer (at most 30 s) would have fired.
        tab.clock.fast_forward(120_000)
        tab.evaluate("fetch('/healthz').then(r => r.status)")
        assert len(sockets) == 1, sockets
        expect(bell(tab)).to_have_attribute("data-state", "offline")
        ARTIFACTS.mkdir(exist_ok=True)
        tab.locator("header").screenshot(path=str(ARTIFACTS / "bell-offline.png"))
        # A new token (the React wrapper's `token` prop) connects again.
        tab.evaluate(
            f"t => document.querySelector('{BELL}').token = t",
            token_for(sqlite_database, uid),
        )
        expect(bell(tab)).to_have_attribute("data-state", "connected", timeout=15_000)
        assert len(sockets) == 2, sockets
        tab.close()


# -- the bell package's own checks ----------------------------------------------------------------


def _run(args: list[str], cwd: Path, timeout: int) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def bell_dist() -> Path:
    """The package built as `npm pack` builds it (`tsc` into web/bell/dist)."""
    npm = shutil.which("npm")
    if npm is None:
        missing("npm")
    assert npm is not None
    _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], BELL_PACKAGE, 600)
    _run([npm, "run", "build"], BELL_PACKAGE, 600)
    return BELL_PACKAGE / "dist"


def test_the_bell_package_self_check_backoff_with_full_jitter_parsing_and_react(
    bell_dist: Path,
) -> None:
    node = shutil.which("node")
    assert node is not None and (bell_dist / "index.js").is_file()
    out = _run([node, "scripts/self-check.mjs"], BELL_PACKAGE, 120)
    assert "skip -" not in out, out  # the React wrapper check ran too
    for line in (
        "ok - backoff ceiling doubles from 1 s and is capped at 30 s",
        "ok - full jitter: delay = random(0, ceiling)",
        "ok - a hint is honoured: never sooner, spread over [hint, 2 x hint]",
        "ok - the React wrapper renders the element with its attributes, never the token",
    ):
        assert line in out.splitlines(), out
    assert re.search(r"^8 checks passed$", out, re.M), out


def test_the_built_bell_end_to_end_in_chromium_against_a_real_server(bell_dist: Path) -> None:
    """web/bell/scripts/e2e_check.py: the packaged element (dist/bell.js) on a plain page of
    its own, against `treevu demo` — auth in the first message, acks, toasts, the panel by
    keyboard, axe, mark read in two tabs, a restart resumed with lastId, 4401 offline."""
    assert (bell_dist / "bell.js").is_file()
    if not (ROOT / ".venv" / "bin" / "treevu").is_file():
        missing("the treevu command in .venv")
    script = BELL_PACKAGE / "scripts" / "e2e_check.py"
    out = _run([sys.executable, str(script)], ROOT, 600)
    steps = [line for line in out.splitlines() if line.startswith("ok - ")]
    assert "skip -" not in out, out
    assert len(steps) == 8, out
    assert steps[-1] == "ok - 4401: offline without retrying; a new token connects"
    assert out.rstrip().endswith("all end-to-end checks passed")
