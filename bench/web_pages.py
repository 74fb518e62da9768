"""Dashboards in Chromium: time to content of each role's page on a large company.

On a SQLite database seeded with ``treevu seed --users N --history-months 12`` (100,000 people
by default; a year of history, so that the admin's analytics have data) and segmented once,
``treevu serve`` runs as a subprocess; 200 people are put in crisis through the API so that a
counselor has real cases (and a manager alerts). Debian's Chromium (Playwright, headless) opens
each role's sign-in link and waits until the page's content is on screen (the employee's
profile; the manager's team table; the counselor's first case; the admin's two distribution
charts, segment statistics, jobs table and the analytics section's cohort, churn, balance and
experiment charts, painted).
Time to content = navigation start → the last of those shown, by the page's own clock
(``performance.now()``, polled each animation frame); ``--repeat`` times each, the median is
reported. Beside it, the floor measured in the same run: the same page's HTML, scripts and
styles with no data (the sign-in page without a token, which renders at once).
Target: ≤ 1 s for each page. Prints a table, writes ``bench/results/web_pages.json``; never
fails on a figure.

    .venv/bin/python bench/web_pages.py --quick     # 10,000 people
    .venv/bin/python bench/web_pages.py             # 100,000 people
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx
from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from rich.console import Console
from rich.table import Table

import ws_common as common

RESULTS: Final = Path(__file__).parent / "results" / "web_pages.json"
TARGET_MS: Final = 1000.0
#: What each page shows once its data is there: every one of these visible (and each canvas
#: painted) is "content". The counselor's is a real case (the list's "No cases assigned." is
#: not one); the admin's are its two distribution charts, the segment statistics, the jobs
#: table and every chart of the analytics section.
CORE_ADMIN: Final = [
    '[data-page="admin"] > section > figure > canvas',  # the two distributions
    '[data-testid="segment-stats"]',
    '[data-testid="jobs"] tbody tr',
]
#: Every chart of the analytics section (the effect's balance, the latest campaign's experiment).
ANALYTICS_CHARTS: Final = ("cohorts", "churn", "balance", "experiment")
CONTENT: Final = {
    "employee": ['[data-testid="profile"]'],
    "manager": ['[data-testid="team-overview"] tbody tr'],
    "counselor": ['[data-testid="case"]'],
    "admin": [*CORE_ADMIN, *(f'[data-testid="{c}-chart"]' for c in ANALYTICS_CHARTS)],
    # The same page (its analytics section loads too), the rest awaited: where the time goes.
    "admin, analytics not awaited": CORE_ADMIN,
}
#: The calls the admin page makes for its content (transitions: last month to this one),
#: each timed alone over HTTP as well.
ADMIN_CALLS: Final = [
    "/segments/distribution",
    "/segments/risk-distribution",
    "/segments/at_risk/stats",
    "/segments/at_risk/employees?limit=10",
    "/jobs",
    "/audit?limit=15",
    "/campaigns?limit=50",
    "/analytics/cohorts",
    "/analytics/churn",
    "/analytics/transitions?from={last}&to={this}",
    "/analytics/intervention-effect?horizonMonths=3",
    "/campaigns/{campaign}/experiment?minDetectableEffect=0.05",
]
#: True (the page's clock) once every selector matches a visible element and every matching
#: canvas has a pixel drawn; polled on each animation frame.
ALL_SHOWN: Final = """selectors => {
    const found = selectors.map(s => [...document.querySelectorAll(s)]);
    const shown = e => e.getClientRects().length > 0;
    if (!found.every(els => els.length && els.every(shown))) return false;
    // Read pixels back only once everything is there (it is not free).
    const painted = c => c.width > 0 && c.height > 0 && c.getContext('2d')
        .getImageData(0, 0, c.width, c.height).data.some(v => v !== 0);
    if (!found.flat().every(e => e.tagName !== 'CANVAS' || painted(e))) return false;
    return performance.now();
}"""
console = Console(width=140)


def _people(db: Path) -> dict[str, int]:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        found = {
            role: conn.execute(
                "SELECT id FROM users WHERE role = ? AND isActive ORDER BY id LIMIT 1", (role,)
            ).fetchone()[0]
            for role in ("employee", "manager", "counselor", "admin")
        }
    finally:
        conn.close()
    return {k: int(v) for k, v in found.items()}


def _time_to(page: Page, url: str, selectors: list[str]) -> float:
    """Milliseconds from navigation start to all of ``selectors`` shown, by the page's clock."""
    page.goto("about:blank")
    page.goto(url)
    try:
        done = page.wait_for_function(ALL_SHOWN, arg=selectors, polling="raf", timeout=60_000)
    except PlaywrightTimeout:
        missing = [s for s in selectors if page.evaluate(ALL_SHOWN, [s]) is False]
        raise SystemExit(f"{url.split('#')[0]}: not shown within 60 s: {missing}") from None
    elapsed = float(done.json_value())
    done.dispose()
    return elapsed


def _measure(
    args: argparse.Namespace, work: Path
) -> tuple[list[float], dict[str, Any], dict[str, Any]]:
    """Seed, serve, put 200 people in crisis, then time the floor, each page and the admin
    page's calls one by one."""
    chromium = "/usr/bin/chromium"
    env = common.bench_env(work)
    common.treevu(env, work, "db", "upgrade")
    # A year of history, as a company that has run for one: the analytics charts have data.
    common.treevu(env, work, "seed", "--users", str(args.users), "--seed", "1",
                  "--history-months", str(args.history_months))  # fmt: skip
    common.treevu(env, work, "segment", "recompute", "--all")
    people = _people(work / "bench.db")
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
        time.sleep(3)  # the relay opens their interventions
        import sqlite3

        conn = sqlite3.connect(work / "bench.db")
        counselor = conn.execute(
            "SELECT i.counselorId FROM interventions i JOIN users u ON u.id = i.counselorId"
            " WHERE u.isActive AND i.status IN ('open', 'contacted', 'in_progress')"
            " ORDER BY i.id DESC LIMIT 1"
        ).fetchone()
        conn.close()
        if not counselor:
            sys.exit("no intervention was opened: the counselor's page would have no case")
        tokens["counselor"] = mint_token(settings, int(counselor[0]), 3600)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page()
            floor = [
                _time_to(page, f"{server.url}/app/", [".error"])  # "Sign in with your link."
                for _ in range(args.repeat)
            ]
            for name, selectors in CONTENT.items():
                url = f"{server.url}/app/#token={tokens[name.split(',')[0]]}"
                times = [_time_to(page, url, selectors) for _ in range(args.repeat)]
                results[name] = _summary(times)
            browser.close()
        calls = _time_calls(server.url, tokens["admin"], args.repeat)
    return floor, results, calls


def _summary(times: list[float]) -> dict[str, Any]:
    return {
        "medianMs": round(statistics.median(times), 1),
        "maxMs": round(max(times), 1),
        "runsMs": [round(t, 1) for t in times],
    }


def _time_calls(base: str, token: str, repeat: int) -> dict[str, Any]:
    """Each of the admin page's calls alone, ``repeat`` times: wall time of the HTTP answer."""
    this = datetime.now(UTC).date().replace(day=1)
    last = (this - timedelta(days=1)).replace(day=1)
    out: dict[str, Any] = {}
    with httpx.Client(base_url=f"{base}/api/v1", timeout=120,
                      headers={"Authorization": f"Bearer {token}"}) as http:  # fmt: skip
        campaign = http.get("/campaigns?limit=1").json()["items"][0]["id"]
        for call in ADMIN_CALLS:
            path = call.format(last=last, this=this, campaign=campaign)
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                r = http.get(path)
                times.append((time.perf_counter() - start) * 1000)
                assert r.status_code == 200, (path, r.status_code, r.text[:200])
            out[call] = _summary(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--history-months", type=int, default=12)
    parser.add_argument("--quick", action="store_true", help="10,000 people, 3 times")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.users, args.repeat = 10_000, 3
    if not (Path(__file__).parents[1] / "src" / "treevu" / "webui" / "index.html").is_file():
        sys.exit("the web app is not built: make web")
    work = Path(tempfile.mkdtemp(prefix="treevu-web-bench-"))
    load_at_start = common.load_average()
    try:
        floor, results, calls = _measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    floor_ms = statistics.median(floor)
    table = Table(title=f"Time to content in Chromium, {args.users:,} people (target ≤ 1 s)")
    for col in ("page", "median ms", "max ms", "floor: the app without data, ms", "target"):
        table.add_column(col, justify="right")
    for role, r in results.items():
        table.add_row(role, str(r["medianMs"]), str(r["maxMs"]), f"{floor_ms:.1f}",
                      "met" if r["maxMs"] <= TARGET_MS else "NOT met")  # fmt: skip
    console.print(table)
    calls_table = Table(title="The admin page's calls, each alone over HTTP")
    for col in ("call", "median ms", "max ms"):
        calls_table.add_column(col, justify="right")
    for call, r in calls.items():
        calls_table.add_row(call, str(r["medianMs"]), str(r["maxMs"]))
    console.print(calls_table)
    out = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "command": " ".join(sys.argv),
        "loadAtStart": load_at_start,
        "loadAtEnd": common.load_average(),
        "code": common.git_state(),
        "settings": {
            "users": args.users,
            "repeat": args.repeat,
            "historyMonths": args.history_months,
        },
        "floorMs": round(floor_ms, 1),
        "floorRunsMs": [round(t, 1) for t in floor],
        "pages": results,
        "adminCalls": calls,
        "targetMs": TARGET_MS,
        "targetMet": all(r["maxMs"] <= TARGET_MS for r in results.values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
