"""One table of every performance target: the measured figure, the peer or floor measured in the
same run, their ratio, and met or not — from the results files the benchmarks wrote.

``make bench`` runs it last; it rewrites the part of ``docs/benchmarks.md`` between the
``targets:begin`` and ``targets:end`` markers, prints the table, and writes
``bench/results/targets.json``. A results file that is missing (its benchmark was not run, or
failed) shows as "not measured" on its row. Never fails on a figure.

    .venv/bin/python bench/targets.py                 # after the benchmarks
    .venv/bin/python bench/targets.py --check         # print only, leave the docs alone
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

RESULTS: Final = Path(__file__).parent / "results"
DOC: Final = Path(__file__).parent.parent / "docs" / "benchmarks.md"
BEGIN: Final = "<!-- targets:begin (bench/targets.py writes this table) -->"
END: Final = "<!-- targets:end -->"

console = Console(width=200)


@dataclass(frozen=True)
class Figure:
    measured: str
    peer: str
    ratio: float | None
    met: bool | None
    source: str


@dataclass(frozen=True)
class Row:
    target: str
    files: tuple[str, ...]
    read: Callable[..., Figure]


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    if not path.is_file():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def _throughput(acks: dict[str, Any]) -> Figure:
    s = acks["summary"]
    acked, plain = s["sqlite/throughput"], s["sqlite/throughput-noack"]
    return Figure(
        f"{acked['deliveredPerSecond']:,.0f}/s ({acked['serverCpuUsPerNotification']:.0f} µs "
        "server CPU each)",
        f"clients not acking, same server and run: {plain['deliveredPerSecond']:,.0f}/s "
        f"({plain['serverCpuUsPerNotification']:.0f} µs)",
        _ratio(acked["deliveredPerSecond"], plain["deliveredPerSecond"]),
        acked["deliveredPerSecond"] >= 20_000,
        "ws_throughput_with_acks.json (SQLite)",
    )


def _latency(acks: dict[str, Any]) -> Figure:
    s = acks["summary"]
    acked, plain = s["sqlite/latency"], s["sqlite/latency-noack"]
    return Figure(
        f"p99 {acked['p99FromRequestMs']:,.0f} ms, delivering {acked['deliveredPerSecond']:,.0f}/s",
        f"clients not acking: p99 {plain['p99FromRequestMs']:,.0f} ms at "
        f"{plain['deliveredPerSecond']:,.0f}/s",
        _ratio(acked["p99FromRequestMs"], plain["p99FromRequestMs"]),
        acked["p99FromRequestMs"] <= 50 and acked["deliveredPerSecond"] >= 4_750,
        "ws_throughput_with_acks.json (SQLite)",
    )


def _by_stack(memory: dict[str, Any], stack: str) -> dict[str, Any]:
    return next(r for r in memory["results"] if r["stack"] == stack and r["compression"])


def _memory(memory: dict[str, Any]) -> Figure:
    ours, bare = _by_stack(memory, "treevu-ws"), _by_stack(memory, "bare")
    mb, bare_mb = ours["rssMbAt10k"]["afterMessage"], bare["rssMbAt10k"]["afterMessage"]
    return Figure(
        f"`--role ws`: {mb:.0f} MB ({ours['kbPerConnection']['afterMessage']:.1f} KB/conn + "
        f"{ours['rssKb']['baseline'] / 1024:.0f} MB base)",
        f"bare websockets + JWT, deflate tuned alike: {bare_mb:.0f} MB "
        f"({bare['kbPerConnection']['afterMessage']:.1f} KB/conn + "
        f"{bare['rssKb']['baseline'] / 1024:.0f} MB base)",
        _ratio(mb, bare_mb),
        mb <= 250,
        "ws_memory.json",
    )


def _scale(scale: dict[str, Any], memory: dict[str, Any]) -> Figure:
    r = scale["result"]
    total = r["rss"]["afterMessage"]["totalMb"]
    bare = _by_stack(memory, "bare")
    n = r["welcomed"]
    bare_mb = (bare["rssKb"]["baseline"] / 1024) * r["workers"] + bare["kbPerConnection"][
        "afterMessage"
    ] * n / 1024
    role = r.get("role", "all")
    return Figure(
        f"{n:,} sockets, {r['workers']} `--role {role}` workers: {total:,.0f} MB in all "
        f"({r['kbPerConnection']:.1f} KB/conn)",
        f"bare websockets per connection and base (ws_memory, same make bench) × {r['workers']}"
        f" processes: {bare_mb:,.0f} MB",
        _ratio(total, bare_mb),
        total <= 1024 and n >= 50_000,
        "ws_scale.json",
    )


def _million_sqlite(seg: dict[str, Any]) -> dict[str, Any]:
    case: dict[str, Any] = next(
        c for c in seg["cases"] if c["backend"] == "sqlite" and c["users"] == 1_000_000
    )
    return case


def _placement(seg: dict[str, Any]) -> Figure:
    case = _million_sqlite(seg)
    first, floor = case["recompute"]["first"]["seconds"], case["floor"]["seconds"]
    return Figure(
        f"{first:.2f} s",
        f"floor (read + score + bare insert of the same rows, no index): {floor:.2f} s",
        _ratio(first, floor),
        first <= 5,
        "segmentation.json (SQLite, 1M)",
    )


def _server_placement(seg: dict[str, Any], backend: str, source: str) -> Figure:
    """First placement on a server beside its floor: 1M people, or the largest size run."""
    cases = [c for c in seg["cases"] if c["backend"] == backend and c["status"] == "ok"]
    case = max(cases, key=lambda c: c["users"])
    first, floor = case["recompute"]["first"]["seconds"], case["floor"]["seconds"]
    users = case["users"]
    ratio = _ratio(first, floor)
    return Figure(
        f"{first:.1f} s for {users:,} people",
        f"floor (read + score + bare insert of the same rows, no index): {floor:.1f} s",
        ratio,
        ratio is not None and ratio <= 1.5 and users >= 1_000_000,
        f"{source} ({backend}, {users:,})",
    )


#: The admin statistics (cached); the paged lists are read per page by design.
STATISTICS: Final = ("segment_distribution", "risk_distribution", "segment_stats")


def _admin_after_write(seg: dict[str, Any]) -> Figure:
    case = _million_sqlite(seg)
    after = case["after_write"]
    here = max(after["in_process"]["queries"][q]["p99_ms"] for q in STATISTICS)
    elsewhere = max(after["elsewhere"]["queries"][q]["p99_ms"] for q in STATISTICS)
    cached = max(case["queries"][q]["cached"]["p99_ms"] for q in STATISTICS)
    return Figure(
        f"worst p99 {here:.1f} ms after a recompute in the process, {elsewhere:.1f} ms after "
        "one in another process",
        f"the same queries warm: worst p99 {cached:.1f} ms",
        _ratio(max(here, elsewhere), cached),
        max(here, elsewhere) <= 10,
        "segmentation.json (SQLite, 1M)",
    )


def _storm(storm: dict[str, Any]) -> Figure:
    r = storm["result"]
    back, first = r["killToAllBackSeconds"], r["connect"]["seconds"]
    return Figure(
        f"{r['back']:,} of {r['clients']:,} back {back:.1f} s after kill -9 (load "
        f"{r['loadAtKill'].split()[0]} at the kill)",
        f"the same clients' first connect, same run: {first:.1f} s",
        _ratio(back, first),
        back <= 15 and r["back"] == r["clients"],
        "ws_storm.json",
    )


def _storm_admin(storm: dict[str, Any], source: str) -> Figure:
    """Admin GETs from the kill until everyone is back, on a new connection each and on one
    kept-alive connection, beside the same probes idle before the kill. A probe refused while
    no server listened is counted apart; one that got no answer within 10 s counts as failed
    (neither is in the percentiles). From the kill rather than from the restart's readiness:
    in one process the bench's own readiness check can wait in the listen queue until everyone
    is back, leaving no probe after it."""
    r = storm["result"]
    during, idle = r["adminDuringStorm"], r["adminIdle"]
    worst = max(during[k]["p99Ms"] for k in ("new", "kept"))
    failed = sum(during[k]["failed"] for k in ("new", "kept"))

    def kind(k: str, label: str) -> str:
        d = during[k]
        return f"{d['p50Ms']:,.0f} / {d['p99Ms']:,.0f} ms {label} ({d['failed']:,} failed)"

    return Figure(
        f"p50 / p99 {kind('kept', 'kept alive')}, {kind('new', 'on new connections')}; "
        f"`{r['deployment']}`, load {r['loadAtKill'].split()[0]} at the kill",
        f"the same probes idle before the kill: p99 {idle['kept']['p99Ms']:,.0f} ms kept alive, "
        f"{idle['new']['p99Ms']:,.0f} ms new",
        _ratio(worst, max(idle[k]["p99Ms"] for k in ("new", "kept"))),
        worst <= 1000 and failed == 0,
        source,
    )


def _redis_outage(outages: dict[str, Any]) -> Figure:
    r = outages["results"]["redis"]
    return Figure(
        f"{r['errorsDuring']} errors of {r['requestsDuring']:,} answers while Redis was down; "
        f"{r['socketsClosed']} of {r['clients']:,} sockets closed",
        f"after its return: resubscribed in {r['returnToResubscribedSeconds']:.2f} s, first "
        f"delivery through Redis {r['returnToFirstBrokerDeliverySeconds']:.2f} s",
        None,
        r["errorsDuring"] == 0 and r["socketsClosed"] == 0 and r["notificationsLost"] == 0,
        "outages.json (SQLite + own Redis)",
    )


def _database_outage(outages: dict[str, Any]) -> Figure:
    rows = {k: r for k, r in outages["results"].items() if k != "redis"}
    worst = max(r["returnToFirstDeliverySeconds"] for r in rows.values())
    fine = all(
        r["socketsClosed"] == 0
        and r["notificationsLost"] == 0
        and all(k.startswith("503 +Retry-After") or k.startswith("2") for k in _codes(r))
        for r in rows.values()
    )
    return Figure(
        "; ".join(
            f"{k}: first delivery {r['returnToFirstDeliverySeconds']:.1f} s after its return, "
            f"{r['socketsClosed']} sockets closed"
            for k, r in rows.items()
        ),
        "; ".join(f"{k}: first 201 {r['returnToFirst201Seconds']:.1f} s" for k, r in rows.items()),
        None,
        worst <= 5 and fine,
        f"outages.json ({', '.join(rows)}: own servers)",
    )


def _codes(r: dict[str, Any]) -> set[str]:
    return {code for counts in r["answersDuring"].values() for code in counts}


def _campaign(campaigns: dict[str, Any]) -> Figure:
    r = next(x for x in campaigns["results"] if x["backend"] == "sqlite")
    done, peer = r["campaign"]["allDoneSeconds"], r["broadcast"]["allDoneSeconds"]
    return Figure(
        f"{r['targets']:,} targets stored and {r['connected']:,} connected reached in {done:.1f} s",
        f"the admin broadcast of the same message to the same people, same run: {peer:.1f} s",
        _ratio(done, peer),
        done <= 10,
        "campaigns.json (SQLite)",
    )


def _pages(web: dict[str, Any]) -> Figure:
    pages = web["pages"]
    worst = max(p["maxMs"] for p in pages.values())
    return Figure(
        ", ".join(f"{name} {p['medianMs']:.0f} ms" for name, p in pages.items())
        + f" (median; slowest run {worst:.0f} ms)",
        f"the app with no data, same run: {web['floorMs']:.0f} ms",
        _ratio(worst, web["floorMs"]),
        worst <= 1000,
        f"web_pages.json ({web['settings']['users']:,} people, SQLite)",
    )


def _handshake(hs: dict[str, Any]) -> Figure:
    s = hs["summary"]
    return Figure(
        f"{s['rateRatio']:.0%} of the bare rate",
        f"bare websockets + JWT, same run (CPU per handshake ×{s['cpuPerHandshakeRatio']:.2f})",
        s["rateRatio"],
        bool(s["targetMet"]),
        "ws_handshake.json",
    )


def _models(models: dict[str, Any]) -> Figure:
    runs = models["speed"]["runs"]
    steady = runs["steadyModels"]["seconds"] - runs["steadyPlain"]["seconds"]
    month = runs["monthModels"]["seconds"] - runs["monthPlain"]["seconds"]
    return Figure(
        f"+{steady:.1f} s steady, +{month:.1f} s the month's first night",
        f"the recompute without models, same run: {runs['steadyPlain']['seconds']:.1f} s "
        f"steady, {runs['monthPlain']['seconds']:.1f} s month",
        _ratio(runs["monthModels"]["seconds"], runs["monthPlain"]["seconds"]),
        steady <= 5 and month <= 5,
        "models.json (SQLite, 1M)",
    )


ROWS: Final = (
    Row(
        "≥ 20,000 persisted notifications/s end to end on one node, every client acking",
        ("ws_throughput_with_acks.json",),
        _throughput,
    ),  # fmt: skip
    Row(
        "delivery p99 ≤ 50 ms at 5,000/s, every client acking",
        ("ws_throughput_with_acks.json",),
        _latency,
    ),  # fmt: skip
    Row(
        "≤ 250 MB RSS for 10,000 sockets with deflate, one notification each",
        ("ws_memory.json",),
        _memory,
    ),  # fmt: skip
    Row(
        "50,000 sockets on this machine in ≤ 1 GB across processes",
        ("ws_scale.json", "ws_memory.json"),
        _scale,
    ),  # fmt: skip
    Row("1,000,000 people first placed on SQLite ≤ 5 s", ("segmentation.json",), _placement),
    *(
        Row(
            f"1,000,000 people first placed on {name} within 1.5× of the floor",
            (f"segmentation_{backend}_1m.json",),
            partial(_server_placement, backend=backend, source=f"segmentation_{backend}_1m.json"),
        )
        for backend, name in (("postgresql", "PostgreSQL"), ("mariadb", "MariaDB"))
    ),
    Row(
        "admin queries p99 ≤ 10 ms at 1M, right after a write",
        ("segmentation.json",),
        _admin_after_write,
    ),  # fmt: skip
    Row("reconnect storm: 10,000 clients back ≤ 15 s after kill -9", ("ws_storm.json",), _storm),
    *(
        Row(
            f"admin calls p99 ≤ 1 s during that storm ({how})",
            (name,),
            partial(_storm_admin, source=name),
        )
        for name, how in (
            ("ws_storm.json", "one process"),
            ("ws_storm_split.json", "the API on its own process"),
        )
    ),
    Row(
        "Redis down 10 s: nothing committed answers an error, sockets stay, nothing lost",
        ("outages.json",),
        _redis_outage,
    ),  # fmt: skip
    Row(
        "database down 10 s: 503 + Retry-After, sockets stay, delivery ≤ 5 s after its return",
        ("outages.json",),
        _database_outage,
    ),  # fmt: skip
    Row(
        "handshakes ≥ 50% of a bare websockets server's rate", ("ws_handshake.json",), _handshake
    ),  # fmt: skip
    Row(
        "recompute with the risk models ≤ 5 s more than without (1M, SQLite)",
        ("models.json",),
        _models,
    ),  # fmt: skip
    Row("a campaign to 100,000 targets done ≤ 10 s (SQLite)", ("campaigns.json",), _campaign),
    Row("each role's dashboard: time to content ≤ 1 s", ("web_pages.json",), _pages),
)


def evaluate() -> list[dict[str, Any]]:
    out = []
    for row in ROWS:
        loaded = [_load(f) for f in row.files]
        entry: dict[str, Any] = {"target": row.target}
        if any(x is None for x in loaded):
            missing = [f for f, x in zip(row.files, loaded, strict=True) if x is None]
            entry.update(measured="not measured", peer="", ratio=None, met=None,
                         source=f"missing {', '.join(missing)}")  # fmt: skip
        else:
            try:
                fig = row.read(*loaded)
            except (KeyError, StopIteration) as exc:
                entry.update(measured="not measured", peer="", ratio=None, met=None,
                             source=f"{row.files[0]} lacks {exc}")  # fmt: skip
            else:
                entry.update(measured=fig.measured, peer=fig.peer, ratio=fig.ratio, met=fig.met,
                             source=fig.source)  # fmt: skip
        out.append(entry)
    return out


def _status(met: bool | None) -> str:
    return "—" if met is None else ("met" if met else "**not met**")


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| target | measured | peer or floor, same run | ratio | | results file |",
        "|---|---|---|---:|---|---|",
    ]
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(
            f"| {r['target']} | {r['measured']} | {r['peer']} | {ratio} | {_status(r['met'])} "
            f"| `{r['source']}` |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="print only")
    args = parser.parse_args()
    rows = evaluate()
    table = Table(title="Performance targets")
    for col in ("target", "measured", "peer or floor", "ratio", "status"):
        table.add_column(col)
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        table.add_row(r["target"], r["measured"], r["peer"], ratio, _status(r["met"]))
    console.print(table)
    if args.check:
        return
    (RESULTS / "targets.json").write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
    doc = DOC.read_text()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{DOC} has no {BEGIN} … {END} markers")
    head, rest = doc.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(f"{head}{BEGIN}\n{markdown(rows)}\n{END}{tail}")
    console.print(f"wrote {DOC} and {RESULTS / 'targets.json'}")


if __name__ == "__main__":
    main()
