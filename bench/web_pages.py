"""Dashboards in Chromium: time to content of each role's page on a large company.

On a SQLite database seeded with ``treevu seed --users N`` (100,000 by default) and segmented
once, ``treevu serve`` runs as a subprocess; Debian's Chromium (Playwright, headless) opens
each role's sign-in link and waits until the page's content is on screen (the employee's
profile, the manager's team table, the counselor's case list, the admin's charts and jobs
table). Time to content = navigation start → that element visible, measured by the page's own
clock (``performance.now()``); ``--repeat`` times each, the median is reported. Beside it, the
floor measured in the same run: the same page's HTML, scripts and styles with no data (the
sign-in page without a token, which renders at once). Target: ≤ 1 s for each page. Prints a
table, writes ``bench/results/web_pages.json``; never fails on a figure.

    .venv/bin/python bench/web_pages.py --quick     # 10,000 people
    .venv/bin/python bench/web_pages.py             # 100,000 people
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import httpx
from playwright.sync_api import Page, sync_playwright
from rich.console import Console
from rich.table import Table

import ws_common as common

RESULTS: Final = Path(__file__).parent / "results" / "web_pages.json"
TARGET_MS: Final = 1000.0
#: What each page shows once its data is there.
CONTENT: Final = {
    "employee": '[data-testid="profile"]',
    "manager": '[data-testid="team-overview"]',
    "counselor": '[data-testid="interventions"] li',
    "admin": '[data-testid="jobs"] tbody tr',
}
console = Console(width=140)


def _people(db: Path) -> dict[str, int]:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        found = {
            role: conn.execute(
                "SELECT id FROM users WHERE role = ? ORDER BY id LIMIT 1", (role,)
            ).fetchone()[0]
            for role in CONTENT
        }
    finally:
        conn.close()
    return {k: int(v) for k, v in found.items()}


def _time_to(page: Page, url: str, selector: str) -> float:
    """Milliseconds from navigation start to ``selector`` visible, by the page's clock."""
    page.goto("about:blank")
    page.goto(url)
    page.locator(selector).first.wait_for(state="visible", timeout=60_000)
    elapsed: float = page.evaluate("performance.now()")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="10,000 people, 3 times")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.users, args.repeat = 10_000, 3
    chromium = "/usr/bin/chromium"
    if not (Path(__file__).parents[1] / "src" / "treevu" / "webui" / "index.html").is_file():
        sys.exit("the web app is not built: make web")
    work = Path(tempfile.mkdtemp(prefix="treevu-web-bench-"))
    env = common.prepare_database(work, args.users)
    common.treevu(env, work, "segment", "recompute", "--all")
    people = _people(work / "bench.db")
    # One crisis case, so that the counselor's page has something to show.
    port = common.free_port()
    results: dict[str, Any] = {}
    with common.ServerProcess(
        [str(common.BIN / "treevu"), "serve", "--port", str(port)], env, port, work / "serve.log"
    ) as server:
        from treevu.config import Settings
        from treevu.services.auth import mint_token

        settings = Settings(jwt_secret=common.JWT_SECRET, encryption_key=common.ENCRYPTION_KEY)
        tokens = {role: mint_token(settings, uid, 3600) for role, uid in people.items()}
        poor = {
            "monthlyIncome": 3000, "monthlySpending": 3600, "savingsBalance": 0,
            "monthlyDebtPayments": 1500, "ewaAdvances30d": 4, "alerts30d": 5,
            "surveyScore": None, "activeDays30d": 2, "goalsCompleted90d": 0,
            "lessonsCompleted90d": 0, "treePoints": 0,
        }  # fmt: skip
        for uid in range(people["employee"], people["employee"] + 200):
            httpx.put(f"{server.url}/api/v1/employees/{uid}/inputs", json=poor, timeout=30,
                      headers={"Authorization": f"Bearer {tokens['admin']}"})  # fmt: skip
        time.sleep(3)
        import sqlite3

        conn = sqlite3.connect(work / "bench.db")
        counselor = conn.execute(
            "SELECT counselorId FROM interventions WHERE counselorId IS NOT NULL LIMIT 1"
        ).fetchone()
        conn.close()
        if counselor:
            tokens["counselor"] = mint_token(settings, int(counselor[0]), 3600)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page()
            floor = [
                _time_to(page, f"{server.url}/app/", "text=Sign in with your link")
                for _ in range(args.repeat)
            ]
            for role, selector in CONTENT.items():
                url = f"{server.url}/app/#token={tokens[role]}"
                times = [_time_to(page, url, selector) for _ in range(args.repeat)]
                results[role] = {
                    "medianMs": round(statistics.median(times), 1),
                    "maxMs": round(max(times), 1),
                    "runsMs": [round(t, 1) for t in times],
                }
            browser.close()
    floor_ms = statistics.median(floor)
    table = Table(title=f"Time to content in Chromium, {args.users:,} people (target ≤ 1 s)")
    for col in ("page", "median ms", "max ms", "floor: the app without data, ms", "target"):
        table.add_column(col, justify="right")
    for role, r in results.items():
        table.add_row(role, str(r["medianMs"]), str(r["maxMs"]), f"{floor_ms:.1f}",
                      "met" if r["maxMs"] <= TARGET_MS else "NOT met")  # fmt: skip
    console.print(table)
    out = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "command": " ".join(sys.argv),
        "loadAtEnd": common.load_average(),
        "code": common.git_state(),
        "settings": {"users": args.users, "repeat": args.repeat},
        "floorMs": round(floor_ms, 1),
        "floorRunsMs": [round(t, 1) for t in floor],
        "pages": results,
        "targetMs": TARGET_MS,
        "targetMet": all(r["maxMs"] <= TARGET_MS for r in results.values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
