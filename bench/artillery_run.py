"""The Artillery load scenario (``bench/artillery/notifications.yml``) against a real server.

On 127.0.0.1, in a temporary directory: migrate and seed a SQLite database (``treevu db
upgrade``, ``treevu seed --users N+1``; user 1 is the admin), mint one JWT per user 2..N+1 into
a CSV payload (``treevu.services.auth.mint_token``, what ``treevu token`` calls; the admin's
token comes from ``treevu token --user 1``), start ``treevu serve`` on a free port, then:

1. Controls, which must fail loudly. ``artillery run`` of the scenario with ``wsPath`` set to
   ``/wrong``: every VU is refused at the upgrade, and ``ensure`` makes the exit code 1. And
   the original design's ``artillery quick ws://127.0.0.1:PORT/ws``: ``quick`` keeps only
   scheme, host and port, so it opens ``/`` instead of ``/ws``; every VU fails, and it exits 0.
2. The load run: ``artillery run notifications.yml`` with N VUs arriving over ``--ramp``
   seconds. Each connects to ``/ws``, authenticates by first message, waits for ``welcome``,
   acks every notification until it has ``--notifications`` of them, and closes. Once the
   server's ``treevu_ws_active_connections`` reaches N (``/metrics``), this script posts
   ``--notifications`` rounds of ``POST /api/v1/admin/notifications/broadcast`` to all N users,
   ``--interval`` seconds apart, each with ``data.sentAt`` (the VUs report receive latency).

After the server has stopped (SIGINT: acks flushed), the store is read: the broadcast rows in
``notification_queue`` by status (``delivered`` = acknowledged by a client) and the
``notification.delivered`` audit rows. Prints a summary and writes
``bench/results/artillery.json``; never fails on a figure (docs/benchmarks-artillery.md).

    cd bench/artillery && npm ci && cd ../..
    .venv/bin/python bench/artillery_run.py                    # 1,000 VUs, 10 notifications each
    .venv/bin/python bench/artillery_run.py --users 200 --out /tmp/artillery.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
from sqlalchemy import create_engine, text

import ws_common as common
from treevu.config import Settings
from treevu.services.auth import mint_token

HERE: Final = Path(__file__).resolve().parent
ARTILLERY_DIR: Final = HERE / "artillery"
SCENARIO: Final = ARTILLERY_DIR / "notifications.yml"
ARTILLERY_BIN: Final = ARTILLERY_DIR / "node_modules" / ".bin" / "artillery"
RESULTS: Final = HERE / "results" / "artillery.json"
CONTROL_VUS: Final = 20
#: The summaries of the Artillery report worth keeping (ms).
SUMMARIES: Final = ("vusers.session_length", "treevu.welcome_ms", "treevu.latency_ms")


def artillery_env() -> dict[str, str]:
    """Artillery's environment: no telemetry (all traffic stays on 127.0.0.1)."""
    return {**os.environ, "ARTILLERY_DISABLE_TELEMETRY": "true"}


def write_tokens(path: Path, user_ids: Sequence[int], ttl: int) -> None:
    """The CSV payload: ``userId,token`` with a header, one row per VU."""
    settings = Settings.model_validate(
        {
            "jwt_secret": common.JWT_SECRET,
            "encryption_key": common.ENCRYPTION_KEY,
            "data_dir": "/nonexistent",
        }
    )
    rows = [f"{uid},{mint_token(settings, uid, ttl)}" for uid in user_ids]
    path.write_text("userId,token\n" + "\n".join(rows) + "\n")


def cli_token(env: dict[str, str], cwd: Path, user_id: int) -> str:
    """``treevu token --user ID`` (checks that the user exists and is active)."""
    argv = [str(common.BIN / "treevu"), "token", "--user", str(user_id), "--ttl", "86400"]
    done = subprocess.run(argv, env=env, cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def active_connections(base_url: str) -> int | None:
    """The server's ``treevu_ws_active_connections`` gauge, or None when unreadable."""
    try:
        body = httpx.get(base_url + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    for line in body.splitlines():
        if line.startswith("treevu_ws_active_connections "):
            return int(float(line.split()[1]))
    return None


def report_figures(report: dict[str, Any]) -> dict[str, Any]:
    """Counters and the main summaries of an Artillery JSON report (``--output``)."""
    aggregate = report.get("aggregate", {})
    summaries = aggregate.get("summaries", {})
    keep = ("min", "median", "p95", "p99", "max", "count")
    return {
        "counters": aggregate.get("counters", {}),
        "summaries": {
            name: {k: summaries[name][k] for k in keep if k in summaries[name]}
            for name in SUMMARIES
            if name in summaries
        },
    }


@dataclass
class ArtilleryRun:
    """One ``artillery`` command: its exit code, wall time, report and console output."""

    argv: list[str]
    exit_code: int = -1
    seconds: float = 0.0
    report: dict[str, Any] = field(default_factory=dict)
    log: Path | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "command": " ".join(self.argv),
            "exitCode": self.exit_code,
            "seconds": round(self.seconds, 1),
            **report_figures(self.report),
        }


def artillery(
    argv: list[str], workdir: Path, name: str
) -> tuple[ArtilleryRun, subprocess.Popen[bytes]]:
    """Start ``artillery ARGV --output workdir/NAME.json`` (console to ``workdir/NAME.log``)."""
    report = workdir / f"{name}.json"
    log = workdir / f"{name}.log"
    full = [str(ARTILLERY_BIN), *argv, "--output", str(report)]
    run = ArtilleryRun(full, log=log)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            full, cwd=ARTILLERY_DIR, env=artillery_env(), stdout=out, stderr=subprocess.STDOUT
        )
    return run, proc


def finish(
    run: ArtilleryRun, proc: subprocess.Popen[bytes], started: float, timeout: float
) -> None:
    try:
        run.exit_code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        run.exit_code = proc.wait()
    run.seconds = time.monotonic() - started
    report = Path(run.argv[-1])
    if report.exists():
        run.report = json.loads(report.read_text())


def run_scenario(
    port: int,
    tokens: Path,
    workdir: Path,
    name: str,
    *,
    users: int,
    ramp: float,
    notifications: int,
    hold: float,
    ws_path: str,
) -> tuple[ArtilleryRun, subprocess.Popen[bytes]]:
    variables = {"wsPath": ws_path, "notifications": notifications, "holdSeconds": hold}
    phases = {"config": {"phases": [{"name": "connect", "duration": ramp, "arrivalCount": users}]}}
    argv = [
        "run",
        str(SCENARIO),
        "--target",
        f"ws://127.0.0.1:{port}",
        "--payload",
        str(tokens),
        "--variables",
        json.dumps(variables),
        "--overrides",
        json.dumps(phases),
    ]
    return artillery(argv, workdir, name)


def produce(
    base_url: str,
    admin: str,
    user_ids: Sequence[int],
    *,
    rounds: int,
    interval: float,
    wait_until: float,
    artillery_proc: subprocess.Popen[bytes],
    out: dict[str, Any],
) -> None:
    """Wait until every VU is connected (or the deadline), then broadcast ``rounds`` times."""
    peak = 0
    started = time.monotonic()
    while time.monotonic() < wait_until and artillery_proc.poll() is None:
        live = active_connections(base_url) or 0
        peak = max(peak, live)
        if live >= len(user_ids):
            break
        time.sleep(0.5)
    out["connectedAtFirstBroadcast"] = active_connections(base_url)
    out["secondsToAllConnected"] = round(time.monotonic() - started, 1)
    if artillery_proc.poll() is not None:
        out["created"] = 0
        out["peakConnections"] = peak
        return
    created = 0
    first = time.monotonic()
    for n in range(rounds):
        created += common.broadcast(
            base_url,
            admin,
            user_ids,
            title=f"Artillery round {n + 1}",
            message="load scenario",
            data={"sentAt": time.time(), "round": n + 1},
        )
        peak = max(peak, active_connections(base_url) or 0)
        time.sleep(max(0.0, first + (n + 1) * interval - time.monotonic()))
    out["created"] = created
    out["broadcastSeconds"] = round(time.monotonic() - first, 1)
    while artillery_proc.poll() is None:
        peak = max(peak, active_connections(base_url) or 0)
        time.sleep(0.5)
    out["peakConnections"] = peak


def store_check(database_url: str, first_id: int) -> dict[str, Any]:
    """Notifications after ``first_id`` by status, and the ``notification.delivered`` audits."""
    engine = create_engine(common.sync_url(database_url))
    try:
        with engine.connect() as conn:
            by_status = {
                str(status): int(n)
                for status, n in conn.execute(
                    text(
                        "SELECT status, count(*) FROM notification_queue WHERE id > :first "
                        "GROUP BY status"
                    ),
                    {"first": first_id},
                )
            }
            audits = conn.scalar(
                text("SELECT count(*) FROM audit_log WHERE action = 'notification.delivered'")
            )
    finally:
        engine.dispose()
    return {"byStatus": by_status, "auditDelivered": int(audits or 0)}


def max_notification_id(database_url: str) -> int:
    engine = create_engine(common.sync_url(database_url))
    try:
        with engine.connect() as conn:
            return int(conn.scalar(text("SELECT max(id) FROM notification_queue")) or 0)
    finally:
        engine.dispose()


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    if not ARTILLERY_BIN.exists():
        raise SystemExit(f"{ARTILLERY_BIN} is missing: run `cd bench/artillery && npm ci` first")
    env = common.prepare_database(workdir, args.users + 1)
    user_ids = list(range(2, args.users + 2))
    tokens = workdir / "tokens.csv"
    write_tokens(tokens, user_ids, ttl=24 * 3600)
    admin = cli_token(env, workdir, 1)
    port = common.free_port()
    base_url = f"http://127.0.0.1:{port}"
    argv = [str(common.BIN / "treevu"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    result: dict[str, Any] = {"users": args.users, "port": port}
    server = common.ServerProcess(argv, env, port, workdir / "server.log")
    with server:
        if not args.no_controls:
            controls: dict[str, Any] = {}
            started = time.monotonic()
            wrong, proc = run_scenario(
                port,
                tokens,
                workdir,
                "control-wrong-path",
                users=CONTROL_VUS,
                ramp=1,
                notifications=1,
                hold=10,
                ws_path="/wrong",
            )
            finish(wrong, proc, started, timeout=120)
            controls["wrongPath"] = wrong.summary()
            started = time.monotonic()
            target = f"ws://127.0.0.1:{port}/ws"
            quick_argv = ["quick", "--count", str(CONTROL_VUS), "--num", "1", target]
            quick, proc = artillery(quick_argv, workdir, "control-quick")
            finish(quick, proc, started, timeout=120)
            controls["quick"] = quick.summary()
            result["controls"] = controls
            print_control("scenario, wsPath=/wrong", controls["wrongPath"])
            print_control("artillery quick …/ws", controls["quick"])
        first_id = max_notification_id(env["TREEVU_DATABASE_URL"])
        production: dict[str, Any] = {}
        started = time.monotonic()
        load, proc = run_scenario(
            port,
            tokens,
            workdir,
            "load",
            users=args.users,
            ramp=args.ramp,
            notifications=args.notifications,
            hold=args.hold,
            ws_path="/ws",
        )
        producer = threading.Thread(
            target=produce,
            args=(base_url, admin, user_ids),
            kwargs={
                "rounds": args.notifications,
                "interval": args.interval,
                "wait_until": started + args.ramp + 60,
                "artillery_proc": proc,
                "out": production,
            },
        )
        producer.start()
        finish(load, proc, started, timeout=args.ramp + args.hold + 120)
        producer.join()
    store = store_check(env["TREEVU_DATABASE_URL"], first_id)
    result["load"] = load.summary()
    result["production"] = production
    result["store"] = store
    result["expected"] = args.users * args.notifications
    return result


def errors_of(counters: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counters.items() if k.startswith("errors.")}


def print_control(title: str, run: dict[str, Any]) -> None:
    c = run["counters"]
    print(
        f"control {title}: exit {run['exitCode']}, vusers created {c.get('vusers.created', 0)}"
        f" failed {c.get('vusers.failed', 0)} completed {c.get('vusers.completed', 0)},"
        f" errors {errors_of(c)}"
    )


def print_summary(result: dict[str, Any]) -> None:
    load = result["load"]
    c = load["counters"]
    s = load["summaries"]
    by_status = result["store"]["byStatus"]

    def ms(name: str) -> str:
        if name not in s:
            return "n/a"
        v = s[name]
        return f"median {v['median']} p95 {v['p95']} p99 {v['p99']} max {v['max']}"

    lines = [
        f"load run: exit {load['exitCode']}, {load['seconds']} s",
        f"  vusers created {c.get('vusers.created', 0)}, completed {c.get('vusers.completed', 0)},"
        f" failed {c.get('vusers.failed', 0)}",
        f"  errors {errors_of(c)}",
        f"  welcomes {c.get('treevu.welcome', 0)}, notifications received and acked"
        f" {c.get('treevu.notifications', 0)} of {result['expected']},"
        f" duplicates {c.get('treevu.duplicates', 0)}",
        f"  session length ms: {ms('vusers.session_length')}",
        f"  auth → welcome ms: {ms('treevu.welcome_ms')}",
        f"  broadcast → received ms: {ms('treevu.latency_ms')}",
        f"  peak connections {result['production'].get('peakConnections')},"
        f" created {result['production'].get('created')}",
        f"  store: {by_status} (delivered = acked), audit notification.delivered"
        f" {result['store']['auditDelivered']}",
    ]
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000, help="VUs, one user each (≤ 2,000)")
    parser.add_argument("--notifications", type=int, default=10,
                        help="broadcast rounds; each VU waits for this many")  # fmt: skip
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between rounds")
    parser.add_argument("--ramp", type=float, default=10, help="seconds over which VUs arrive")
    parser.add_argument("--hold", type=float, default=120,
                        help="seconds a VU waits for its notifications before failing")  # fmt: skip
    parser.add_argument("--no-controls", action="store_true",
                        help="skip the /wrong and `artillery quick` controls")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here")
    args = parser.parse_args()
    if not 1 <= args.users <= 2000:
        parser.error("--users must be between 1 and 2,000 (a small, shared machine)")
    fds = common.raise_fd_limit()
    load_at_start = common.load_average()
    with tempfile.TemporaryDirectory(prefix="treevu-artillery-") as tmp:
        result = run(args, args.workdir or Path(tmp))
    print_summary(result)
    version = subprocess.run(
        [str(ARTILLERY_BIN), "version"], capture_output=True, text=True, env=artillery_env()
    ).stdout
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout
    artillery_version = [v.split()[-1] for v in version.splitlines() if v.startswith("Artillery:")]
    document = {
        **common.machine_facts(),
        "node": node.strip(),
        "artillery": artillery_version[0] if artillery_version else None,
        "fdLimit": fds,
        "command": " ".join(sys.argv),
        "loadAtStart": load_at_start,
        "loadAtEnd": common.load_average(),
        "code": common.git_state(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "result": result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
