"""End-to-end check of the built bell (dist/) in Chromium against a real treevu server.

Not part of `npm run build`; `make test` runs it (tests/browser/test_bell.py, after `npm ci`
and `npm run build`), and by hand after `npm run build`, from the repository root:

    .venv/bin/python web/bell/scripts/e2e_check.py

It needs the repository's virtualenv (treevu and Playwright for Python), Debian's Chromium
(/usr/bin/chromium) and, for the accessibility check, web/app/node_modules/axe-core. It starts
`treevu demo` on a free port over a throw-away SQLite database, serves a plain HTML page at the
server's origin (Playwright request interception, so no CORS is involved) that loads
dist/bell.js, and drives the element: welcome, toasts, the counter, the panel by keyboard, mark
read across two tabs, axe, a server restart with a notification stored meanwhile (resume with
lastId, shown once, no toast), and a refused token (4401: offline, no retry).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, expect, sync_playwright

HERE = Path(__file__).resolve().parent
DIST = HERE.parent / "dist"
ROOT = HERE.parents[2]
TREEVU = ROOT / ".venv" / "bin" / "treevu"
AXE = ROOT / "web" / "app" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TAG = "treevu-notification-bell"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def user_of(jwt: str) -> int:
    payload = jwt.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return int(json.loads(base64.urlsafe_b64decode(payload))["sub"])


class Server:
    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir, self.port = workdir, port
        self.base = f"http://127.0.0.1:{port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TREEVU_")}
        self.env.update(
            TREEVU_DATA_DIR=str(workdir),
            TREEVU_DATABASE_URL=f"sqlite+aiosqlite:///{workdir}/treevu.db",
            TREEVU_HEARTBEAT_INTERVAL="5",
            TREEVU_ADMIN_NOTIFICATIONS_PER_MINUTE="100000",
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "server.log"

    def start(self, *args: str) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(TREEVU), *args, "--port", str(self.port)],
                env=self.env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def tokens(self) -> list[str]:
        return re.findall(r"#token=([\w.\-]+)", self.log.read_text())

    def notify(self, admin: str, user: int, title: str, message: str = "Well done") -> int:
        r = httpx.post(
            f"{self.base}/api/v1/admin/notifications",
            json={"userId": user, "type": "milestone", "title": title, "message": message},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    def unread(self, token: str) -> int:
        r = httpx.get(
            f"{self.base}/api/v1/notifications/unread-count",
            headers={"Authorization": f"Bearer {token}"},
        )
        return int(r.json()["count"])


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Bell check</title>
<style>body{{margin:0;font-family:system-ui}} header{{display:flex;gap:1rem;align-items:center;
padding:.6rem 1.2rem;background:#0b4f3c;color:#fff}} h1{{font-size:1.1rem;margin:0;flex:1}}</style>
</head><body>
<header><h1>Bell check</h1>
<treevu-notification-bell url="{ws}" api-base="{base}"></treevu-notification-bell></header>
<main><p>Content</p></main>
<script type="module">
  import {{ NotificationBellElement }} from "/__bell__/bell.js";
  window.events = [];
  const bell = document.querySelector("treevu-notification-bell");
  for (const t of ["treevu-notification", "treevu-state", "treevu-unread", "treevu-error"]) {{
    bell.addEventListener(t, (e) => window.events.push({{ type: t, detail: e.detail }}));
  }}
  bell.token = {token};
  window.bellReady = bell instanceof NotificationBellElement;
</script></body></html>"""


def open_page(context: Any, server: Server, token: str) -> tuple[Page, list[dict[str, Any]]]:
    page = context.new_page()
    frames: list[dict[str, Any]] = []

    def on_ws(ws: Any) -> None:
        entry: dict[str, Any] = {"url": ws.url, "sent": []}
        frames.append(entry)
        ws.on("framesent", lambda payload: entry["sent"].append(payload))

    page.on("websocket", on_ws)
    if os.environ.get("BELL_E2E_DEBUG"):
        page.on("console", lambda m: print("console:", m.type, m.text))
        page.on("websocket", lambda ws: ws.on("framereceived", lambda f: print("recv:", f[:200])))
        page.on("websocket", lambda ws: ws.on("close", lambda _: print("ws closed")))
    html = PAGE.format(ws=f"ws://127.0.0.1:{server.port}/ws", base=server.base, token=json.dumps(token))
    page.route(f"{server.base}/__bell__.html", lambda r: r.fulfill(body=html, content_type="text/html"))
    page.route(
        f"{server.base}/__bell__/*.js",
        lambda r: r.fulfill(
            body=(DIST / r.request.url.rsplit("/", 1)[1]).read_text(),
            content_type="text/javascript",
        ),
    )
    page.goto(f"{server.base}/__bell__.html")
    return page, frames


def bell(page: Page) -> Any:
    return page.locator(TAG)


def sent(frames: list[dict[str, Any]], index: int) -> list[dict[str, Any]]:
    return [json.loads(f) for f in frames[index]["sent"]]


def main() -> None:
    assert (DIST / "bell.js").is_file(), "run `npm run build` in web/bell first"
    workdir = Path(tempfile.mkdtemp(prefix="bell-e2e-"))
    server = Server(workdir, free_port())
    server.start("demo", "--users", "20")
    try:
        employee, _manager, _counselor, admin = server.tokens()[:4]
        uid = user_of(employee)
        with sync_playwright() as p:
            # The page is a fulfilled (intercepted) response: Chromium's local-network checks
            # would treat it as public and refuse its socket to 127.0.0.1.
            args = ["--no-sandbox", "--disable-features=LocalNetworkAccessChecks"]
            browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
            context = browser.new_context()
            run(context, server, employee, admin, uid)
            browser.close()
        print("\nall end-to-end checks passed")
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def step(name: str) -> None:
    print(f"ok - {name}", flush=True)


def run(context: Any, server: Server, employee: str, admin: str, uid: int) -> None:
    # Something already waiting before the page opens: listed and counted, never toasted.
    server.notify(admin, uid, "Waiting before you came")
    one, frames = open_page(context, server, employee)
    expect(bell(one)).to_have_attribute("data-state", "connected", timeout=15_000)
    unread = server.unread(employee)
    expect(bell(one)).to_have_attribute("data-unread", str(unread))
    expect(one.get_by_role("button", name=f"Notifications, {unread} unread")).to_be_visible()
    expect(bell(one).get_by_text("Live")).to_be_visible()
    assert "token" not in frames[0]["url"], frames[0]["url"]
    hello = sent(frames, 0)[0]
    assert hello == {"type": "auth", "token": employee}, hello
    time.sleep(0.5)
    assert one.locator(".toast").count() == 0  # nothing toasted for the replay
    acks = [m["id"] for m in sent(frames, 0) if m["type"] == "ack"]
    assert acks, "the replay is acknowledged"
    step("connects, auth first message without a token in the URL, count, replay acked, no toast")

    two, _frames_two = open_page(context, server, employee)
    expect(bell(two)).to_have_attribute("data-state", "connected", timeout=15_000)
    nid = server.notify(admin, uid, "Saved three months", "Keep going")
    for tab in (one, two):
        expect(tab.get_by_role("status").filter(has_text="Saved three months")).to_be_visible()
        expect(bell(tab)).to_have_attribute("data-unread", str(unread + 1))
    events = one.evaluate("window.events")
    got = [e["detail"] for e in events if e["type"] == "treevu-notification"]
    assert got and got[-1]["id"] == nid and got[-1]["title"] == "Saved three months", got
    assert any(e["type"] == "treevu-unread" and e["detail"] == unread + 1 for e in events)
    assert any(e["type"] == "treevu-state" and e["detail"] == "connected" for e in events)
    assert {"type": "ack", "id": nid} in sent(frames, 0)
    step("live notification: toast in both tabs, count +1, events, ack")

    # Keyboard: focus the bell, Enter opens the list, newest first.
    button = one.get_by_role("button", name=re.compile(r"^Notifications"))
    button.focus()
    one.keyboard.press("Enter")
    dialog = one.get_by_role("dialog", name="Notifications")
    expect(dialog).to_be_visible()
    items = one.get_by_role("list", name="Notifications list").get_by_role("listitem")
    expect(items.first).to_contain_text("Saved three months")
    assert one.evaluate("document.activeElement.tagName") == "TREEVU-NOTIFICATION-BELL"
    shots = os.environ.get("BELL_E2E_SHOTS")
    if shots:
        one.screenshot(path=str(Path(shots) / "panel-and-toast.png"))
    problems = axe(one)
    assert problems == [], problems
    step("panel opens by keyboard, newest first; axe: no serious/critical issue (panel + toast)")

    item = items.filter(has_text="Saved three months")
    item.get_by_role("button", name="Mark as read").click()
    expect(bell(one)).to_have_attribute("data-unread", str(unread))
    expect(bell(two)).to_have_attribute("data-unread", str(unread), timeout=5000)
    expect(item.get_by_role("button", name="Mark as read")).to_have_count(0)
    one.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    focused = one.evaluate("document.activeElement.shadowRoot.activeElement.className")
    assert focused == "bell", focused
    step("mark as read: count drops at once, the other tab follows (unread_count); Escape returns focus")

    server.notify(admin, uid, "Another one")
    expect(bell(one)).to_have_attribute("data-unread", str(unread + 1))
    one.get_by_role("button", name=re.compile(r"^Dismiss notification: Another one")).click()
    expect(one.get_by_role("status").filter(has_text="Another one")).to_have_count(0)
    button.click()
    one.get_by_role("button", name="Mark all as read").click()
    expect(bell(one)).to_have_attribute("data-unread", "0")
    expect(bell(one).locator("button.bell")).to_have_attribute("aria-label", "Notifications, 0 unread")
    expect(bell(two)).to_have_attribute("data-unread", "0", timeout=5000)
    expect(one.get_by_role("button", name="Mark all as read")).to_have_attribute("aria-disabled", "true")
    one.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    step("dismiss a toast; mark all as read (both tabs at 0)")

    # Toasts go by themselves after ~6 s.
    server.notify(admin, uid, "Goes by itself")
    toast = one.get_by_role("status").filter(has_text="Goes by itself")
    expect(toast).to_be_visible()
    expect(toast).to_have_count(0, timeout=9000)
    step("a toast hides itself after ~6 s")
    two.close()

    # The server goes away; a notification is stored meanwhile; the next server resumes us.
    before_ids = [e["detail"]["id"] for e in one.evaluate("window.events") if e["type"] == "treevu-notification"]
    server.stop()
    expect(bell(one)).to_have_attribute("data-state", "reconnecting", timeout=15_000)
    expect(bell(one).get_by_text("Reconnecting…")).to_be_visible()
    out = subprocess.run(
        [str(TREEVU), "notify", "--user", str(uid), "--type", "milestone",
         "--title", "While you were away", "--message", "Missed it"],
        env=server.env, cwd=server.workdir, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    server.start("serve")
    expect(bell(one)).to_have_attribute("data-state", "connected", timeout=45_000)
    resumed = sent(frames, len(frames) - 1)[0]
    assert resumed["type"] == "auth" and resumed.get("lastId") == max(before_ids), resumed
    expect(bell(one)).to_have_attribute("data-unread", str(server.unread(employee)))
    one.get_by_role("button", name="Notifications").first.click()
    away = one.get_by_role("listitem").filter(has_text="While you were away")
    expect(away).to_have_count(1)
    time.sleep(1)
    expect(away).to_have_count(1)
    assert one.locator(".toast").filter(has_text="While you were away").count() == 0
    after = [e["detail"]["id"] for e in one.evaluate("window.events") if e["type"] == "treevu-notification"]
    assert len(after) == len(set(after)), after
    one.keyboard.press("Escape")
    step("server restart: reconnecting, resume with lastId, the missed one listed once, no toast")

    # A refused token: offline, and no retry until the token changes.
    bad, bad_frames = open_page(context, server, "not-a-jwt")
    expect(bell(bad)).to_have_attribute("data-state", "offline", timeout=10_000)
    time.sleep(4)
    assert len(bad_frames) == 1, len(bad_frames)
    expect(bell(bad).get_by_text("Offline")).to_be_visible()
    errors = [e["detail"] for e in bad.evaluate("window.events") if e["type"] == "treevu-error"]
    assert any(e["code"] == 4401 for e in errors), errors
    bad.evaluate(f"document.querySelector('{TAG}').token = {json.dumps(employee)}")
    expect(bell(bad)).to_have_attribute("data-state", "connected", timeout=10_000)
    step("4401: offline without retrying; a new token connects")
    one.close()
    bad.close()


def axe(page: Page) -> list[str]:
    if not AXE.is_file():
        print("skip - axe-core not installed in web/app/node_modules")
        return []
    page.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = page.evaluate(
        "axe.run(document).then(r => r.violations.map(v => ({id: v.id, impact: v.impact,"
        " nodes: v.nodes.map(n => n.target.join(' ') + ': ' + n.failureSummary)})))"
    )
    return [f"{v['id']}: {v['nodes']}" for v in found if v["impact"] in ("serious", "critical")]


if __name__ == "__main__":
    sys.exit(main())
