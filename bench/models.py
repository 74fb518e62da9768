"""Risk models: how they do against today's rule, and what scoring them costs the recompute.

**Evaluation** (``--parts eval``). For each seed, a fresh SQLite database in a temporary
directory: ``write_population`` of ``--eval-users`` people, ``seed_history`` of ``--months``
months (what ``treevu seed --users N --seed S --history-months M`` does), then
``registry.train`` (what ``treevu models train`` does: fit, Platt-calibrate and evaluate both
models on the stored history, split by time). The first seed (1, the CLI's default) writes the
model cards with ``card.write`` (``--cards``: ``docs/models/`` on a full run). Per model: AUC and
Brier of the model beside the rule baseline measured on the same held-out examples, the
difference with a paired bootstrap 95% interval (test examples resampled, both scorers on the
same draw), the calibration table, and per department and age band the AUC and the gap
(max − min) beside the rule's. Over the seeds: the spread of every figure and whether the model
beat the rule on both AUC and Brier in each.

**Speed** (``--parts speed``). One SQLite database of ``--speed-users`` people with a
``--speed-months`` history (last month's snapshot exists, which the risk features read). Training
needs 7 months, so the models are trained on a small separate history (``--train-users`` people,
``--train-months`` months) and their rows of ``prediction_models`` (plain JSON) copied in. Every
timed recompute starts from a copy of a prepared file, and the runs with and without models are
interleaved, so each figure has its peer from the same minutes:

- *full rewrite*: (a) no model, every stored fingerprint cleared beforehand so that every
  profile is rewritten; against (b) the first recompute after models were stored (every
  fingerprint changes because the risks are in it);
- *steady*: (a') no model, nothing changed — tonight's recompute; against (c) the same with
  models (the steady nightly cost);
- *new month*: the first night of next month, nothing else changed, without and with models:
  the features compare with last month's snapshot, which has just become another month, so
  the risks of most people move (and a new model does the same after each training);
- *first placement*: no stored profile at all, without and with models (the case that already
  misses 5 s at 1M, ``docs/benchmarks.md``).

Wall and CPU seconds, the recompute's phases, and a separate pass that splits the ``score`` phase
into the snapshot read, the model arithmetic and the reason texts. Target: the nightly recompute
with models ≤ 5 s more than without, on SQLite at 1M users. Prints tables, writes
``bench/results/models.json``; never fails on a figure.

    .venv/bin/python bench/models.py --quick         # 3,000 people × 2 seeds; 50,000 for speed
    .venv/bin/python bench/models.py                 # 20,000 × 5 seeds; 1,000,000 for speed
    .venv/bin/python bench/models.py --parts speed --speed-users 200000 --repeat 5
    .venv/bin/python bench/models.py --parts speed --keep --now T   # keeps its databases in DIR
    .venv/bin/python bench/models.py --parts month --reuse DIR --now T --out F  # month night only
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table
from sklearn.metrics import roc_auc_score
from sqlalchemy import Engine, select

from treevu.app import make_engines
from treevu.config import Settings
from treevu.db import PredictionModel
from treevu.db.migrate import upgrade
from treevu.population import generate_population
from treevu.segmentation.engine import score
from treevu.segmentation.policy import default_policy
from treevu.services.analytics.store import load_cube
from treevu.services.models import card, registry
from treevu.services.models import training as T
from treevu.services.models.features import TARGETS, examples
from treevu.services.models.scoring import score_risks
from treevu.services.people.seed import seed_history, write_population
from treevu.services.segmentation.recompute import (
    RecomputeResult,
    plan_batches,
    read_batch,
    read_month_before,
    recompute,
    risk_features,
)
from ws_common import git_state

RESULTS: Final = Path(__file__).parent / "results" / "models.json"
CARDS: Final = Path(__file__).resolve().parents[1] / "docs" / "models"
#: The seed whose models get the committed cards (``treevu seed``'s default).
CARD_SEED: Final = 1
TARGET_EXTRA_S: Final = 5.0
TARGET_USERS: Final = 1_000_000
PHASES: Final = ("read", "score", "stage", "apply", "commit")
#: What ``timings`` leaves out: building the staged rows (the risk reason texts among them).
OTHER: Final = "other"
KINDS: Final = (
    "rewritePlain",
    "rewriteModels",
    "firstPlain",
    "firstModels",
    "steadyPlain",
    "steadyModels",
    "monthPlain",
    "monthModels",
)
PAIRS: Final = (
    ("rewrite", "rewritePlain", "rewriteModels"),
    ("steady", "steadyPlain", "steadyModels"),
    ("new month", "monthPlain", "monthModels"),
    ("first", "firstPlain", "firstModels"),
)

console = Console(width=160)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def r4(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


# -- databases ---------------------------------------------------------------------------------


def open_engine(path: Path) -> Engine:
    """The app's synchronous engine (its SQLite pragmas: WAL, synchronous=NORMAL) on ``path``."""
    async_engine, bulk = make_engines(Settings(database_url=f"sqlite+aiosqlite:///{path}"))
    async_engine.sync_engine.dispose()
    return bulk


def fresh_engine(path: Path) -> Engine:
    upgrade(Settings(database_url=f"sqlite+aiosqlite:///{path}").sync_database_url)
    return open_engine(path)


def copy_database(source: Path, target: Path) -> Path:
    """A copy of a closed database file (its WAL checkpointed by the last engine's dispose)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(source, target)
    return target


def sqlite_exec(path: Path, *statements: str) -> None:
    """Statements on a closed database file, outside any timing."""
    with sqlite3.connect(path) as conn:
        for sql in statements:
            conn.execute(sql)
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def seeded(
    path: Path, users: int, seed: int, months: int, now: datetime
) -> tuple[Engine, dict[str, float]]:
    """``treevu seed --users N --seed S --history-months M`` into a fresh file."""
    bulk = fresh_engine(path)
    start = time.perf_counter()
    population = generate_population(users, seed)
    write_population(bulk, population, now=now)
    written = time.perf_counter()
    seed_history(bulk, population, months, seed=seed, now=now)
    done = time.perf_counter()
    return bulk, {"population": round(written - start, 2), "history": round(done - written, 2)}


# -- evaluation --------------------------------------------------------------------------------


def _auc(y: npt.NDArray[np.int8], p: npt.NDArray[np.float64]) -> float:
    return float(roc_auc_score(y, p))


def _brier(y: npt.NDArray[np.int8], p: npt.NDArray[np.float64]) -> float:
    return float(np.mean((p - y) ** 2))


def paired_bootstrap(
    engine: Engine, trained: list[registry.Trained], resamples: int, seed: int
) -> dict[str, dict[str, Any]]:
    """Model − rule on the test examples, with the 95% percentile interval of ``resamples``
    paired resamples. The predictions are rebuilt as ``training.evaluate`` builds them, and
    checked against the stored metrics."""
    with engine.connect() as conn:
        cube = load_cube(conn)
    parts = T.split(len(cube.months))
    out: dict[str, dict[str, Any]] = {}
    for t in trained:
        train = examples(cube, t.target, parts.train)  # type: ignore[arg-type]
        test = examples(cube, t.target, parts.test)  # type: ignore[arg-type]
        y_tr, rule_tr = train.y[train.y >= 0], train.rule[train.y >= 0]
        keep = test.y >= 0
        y, x, rule = test.y[keep], test.x[keep], test.rule[keep]
        rates = [float(y_tr[rule_tr == v].mean()) if (rule_tr == v).any() else 0.0 for v in (0, 1)]
        p_rule = np.where(rule == 1, rates[1], rates[0])
        p = t.model.probability(x)
        stored = t.metrics
        same = (
            abs(_auc(y, p) - stored["model"]["auc"]) < 1e-4
            and abs(_auc(y, p_rule) - stored["baseline"]["auc"]) < 1e-4
        )
        rng = np.random.default_rng([seed, 11])
        d_auc, d_brier = [], []
        for _ in range(resamples):
            i = rng.integers(0, len(y), len(y))
            d_auc.append(_auc(y[i], p[i]) - _auc(y[i], p_rule[i]))
            d_brier.append(_brier(y[i], p[i]) - _brier(y[i], p_rule[i]))
        out[t.target] = {
            "matchesStoredMetrics": bool(same),
            "resamples": resamples,
            "aucDiff": r4(_auc(y, p) - _auc(y, p_rule)),
            "aucDiffCi95": [r4(np.percentile(d_auc, 2.5)), r4(np.percentile(d_auc, 97.5))],
            "brierDiff": round(_brier(y, p) - _brier(y, p_rule), 5),
            "brierDiffCi95": [
                round(float(np.percentile(d_brier, 2.5)), 5),
                round(float(np.percentile(d_brier, 97.5)), 5),
            ],
        }
    return out


def group_summary(group: dict[str, Any]) -> dict[str, Any]:
    """The model's and the rule's AUC per group, their gaps, and the groups the rule wins."""
    rows = group["rows"]
    model = [r["model"]["auc"] for r in rows if r["model"]["auc"] is not None]
    rule = [r["baseline"]["auc"] for r in rows if r["baseline"]["auc"] is not None]
    return {
        "aucGap": group["aucGap"],
        "ruleAucGap": r4(max(rule) - min(rule)) if len(rule) >= 2 else None,
        "aucMin": min(model) if model else None,
        "aucMax": max(model) if model else None,
        "groups": len(rows),
        "modelBeatsRuleAuc": sum(
            1
            for r in rows
            if r["model"]["auc"] is not None and r["model"]["auc"] > r["baseline"]["auc"]
        ),
        "modelBeatsRuleBrier": sum(1 for r in rows if r["model"]["brier"] < r["baseline"]["brier"]),
        "rows": [
            {
                "group": r["group"],
                "n": r["model"]["n"],
                "positives": r["model"]["positives"],
                "auc": r["model"]["auc"],
                "brier": r["model"]["brier"],
                "ruleAuc": r["baseline"]["auc"],
                "ruleBrier": r["baseline"]["brier"],
            }
            for r in rows
        ],
    }


def eval_seed(
    seed: int, args: argparse.Namespace, now: datetime, tmp: Path, cards: Path | None
) -> dict[str, Any]:
    path = tmp / f"eval-{seed}.db"
    started = time.perf_counter()
    bulk, setup = seeded(path, args.eval_users, seed, args.months, now)
    try:
        start = time.perf_counter()
        trained = registry.train(bulk, now)
        setup["train"] = round(time.perf_counter() - start, 2)
        written = (
            [str(card.write(t, cards, "`bench/models.py`")) for t in trained]
            if cards is not None
            else []
        )
        boot = paired_bootstrap(bulk, trained, args.resamples, seed)
    finally:
        bulk.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    models: dict[str, Any] = {}
    for t in trained:
        m, b = t.metrics["model"], t.metrics["baseline"]
        models[t.target] = {
            "name": t.name,
            "testMonths": t.metrics["testMonths"],
            "trainMonths": [t.metrics["trainMonths"][0], t.metrics["trainMonths"][-1]],
            "calibrationMonths": t.metrics["calibrationMonths"],
            "n": m["n"],
            "positives": m["positives"],
            "auc": m["auc"],
            "ruleAuc": b["auc"],
            "brier": m["brier"],
            "ruleBrier": b["brier"],
            "beatsRule": bool(m["auc"] > b["auc"] and m["brier"] < b["brier"]),
            **boot[t.target],
            "calibration": m["calibration"],
            "ruleCalibration": b["calibration"],
            "groups": {name: group_summary(g) for name, g in t.metrics["groups"].items()},
            "coef": dict(zip(t.model.features, (round(c, 4) for c in t.model.coef), strict=True)),
        }
    return {
        "seed": seed,
        "setupSeconds": setup,
        "seconds": round(time.perf_counter() - started, 1),
        "cards": written,
        "models": models,
    }


def spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"min": None, "median": None, "max": None, "sd": None}
    return {
        "min": round(min(values), 5),
        "median": round(float(np.median(values)), 5),
        "max": round(max(values), 5),
        "sd": round(float(np.std(values, ddof=1)), 5) if len(values) > 1 else None,
    }


def eval_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for target in TARGETS:
        rows = [r["models"][target] for r in runs]
        out[target] = {
            "seeds": len(rows),
            "beatsRuleEverySeed": all(r["beatsRule"] for r in rows),
            "seedsBeatingRule": sum(r["beatsRule"] for r in rows),
            "diffCiExcludesZeroEverySeed": all(
                r["aucDiffCi95"][0] > 0 and r["brierDiffCi95"][1] < 0 for r in rows
            ),
            **{
                key: spread([r[key] for r in rows])
                for key in ("auc", "ruleAuc", "aucDiff", "brier", "ruleBrier", "brierDiff")
            },
            **{
                f"{name}AucGap": spread(
                    [g for r in rows if (g := r["groups"][name]["aucGap"]) is not None]
                )
                for name in ("department", "ageBand")
            },
            **{
                f"{name}RuleAucGap": spread(
                    [g for r in rows if (g := r["groups"][name]["ruleAucGap"]) is not None]
                )
                for name in ("department", "ageBand")
            },
        }
    return out


def print_eval(runs: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    first = runs[0]
    for target in TARGETS:
        m = first["models"][target]
        table = Table(
            title=f"{m['name']}, seed {first['seed']}: test months {', '.join(m['testMonths'])} "
            f"({m['n']:,} examples, {m['positives']:,} positive)"
        )
        for col in ("", "AUC", "Brier"):
            table.add_column(col, justify="right" if col else "left")
        table.add_row("model", f"{m['auc']:.4f}", f"{m['brier']:.5f}")
        table.add_row("rule (peer)", f"{m['ruleAuc']:.4f}", f"{m['ruleBrier']:.5f}")
        lo, hi = m["aucDiffCi95"]
        blo, bhi = m["brierDiffCi95"]
        table.add_row(
            "model − rule [95% CI]",
            f"{m['aucDiff']:+.4f} [{lo:+.4f}, {hi:+.4f}]",
            f"{m['brierDiff']:+.5f} [{blo:+.5f}, {bhi:+.5f}]",
        )
        console.print(table)
        cal = Table(title="calibration (ten equal bins by predicted risk)")
        for col in ("predicted", "observed", "n"):
            cal.add_column(col, justify="right")
        for b in m["calibration"]:
            cal.add_row(f"{b['predicted']:.4f}", f"{b['observed']:.4f}", f"{b['n']:,}")
        console.print(cal)
        for name, g in m["groups"].items():
            gt = Table(
                title=f"per {name}: AUC gap {g['aucGap']} (rule's gap {g['ruleAucGap']}); "
                f"model beats the rule on AUC in {g['modelBeatsRuleAuc']}/{g['groups']}, "
                f"on Brier in {g['modelBeatsRuleBrier']}/{g['groups']}"
            )
            for col in ("group", "n", "positives", "AUC", "rule AUC", "Brier", "rule Brier"):
                gt.add_column(col, justify="left" if col == "group" else "right")
            for r in g["rows"]:
                gt.add_row(
                    r["group"], f"{r['n']:,}", f"{r['positives']:,}", str(r["auc"]),
                    str(r["ruleAuc"]), str(r["brier"]), str(r["ruleBrier"]),
                )  # fmt: skip
            console.print(gt)
    table = Table(title=f"over {len(runs)} seeds: min / median / max")
    table.add_column("model")
    for col in ("AUC", "rule AUC", "Δ AUC", "Brier", "rule Brier", "Δ Brier", "dept gap",
                "age gap", "beat rule on both"):  # fmt: skip
        table.add_column(col, justify="right")

    def mmm(s: dict[str, Any], digits: int = 4) -> str:
        if s["min"] is None:
            return "–"
        return f"{s['min']:.{digits}f} / {s['median']:.{digits}f} / {s['max']:.{digits}f}"

    for target in TARGETS:
        s = summary[target]
        table.add_row(
            target,
            mmm(s["auc"]), mmm(s["ruleAuc"]), mmm(s["aucDiff"]),
            mmm(s["brier"], 5), mmm(s["ruleBrier"], 5), mmm(s["brierDiff"], 5),
            mmm(s["departmentAucGap"]), mmm(s["ageBandAucGap"]),
            f"{s['seedsBeatingRule']}/{s['seeds']}",
        )  # fmt: skip
    console.print(table)


# -- speed -------------------------------------------------------------------------------------


def next_month_night(now: datetime) -> datetime:
    """03:00 UTC on the first day of the month after ``now``'s."""
    return datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, 3, tzinfo=UTC)


def timed_recompute(bulk: Engine, now: datetime) -> dict[str, Any]:
    gc.collect()
    before = load()
    cpu, start = time.process_time(), time.perf_counter()
    result: RecomputeResult = recompute(bulk, default_policy(), now=now)
    result.segment_changes  # noqa: B018 — the services publish these: part of the run
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    phases = {k: round(v, 3) for k, v in result.timings.items()}
    named = sum(result.timings.get(p, 0.0) for p in PHASES)
    phases[OTHER] = round(result.timings["total"] - named, 3)
    return {
        "seconds": round(wall, 3),
        "cpuSeconds": round(cpu, 3),
        "scored": result.scored,
        "written": result.written,
        "segmentChanges": len(result.segment_changes),
        "phases": phases,
        "load": [before[0], load()[0]],
    }


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return {**ordered[(len(ordered) - 1) // 2], "runs": [r["seconds"] for r in runs],
            "cpuRuns": [r["cpuSeconds"] for r in runs]}  # fmt: skip


def model_rows(path: Path, now: datetime) -> list[dict[str, Any]]:
    """The stored models of a database, as rows to insert elsewhere."""
    bulk = open_engine(path)
    try:
        with bulk.connect() as conn:
            rows = conn.execute(
                select(
                    PredictionModel.name,
                    PredictionModel.target,
                    PredictionModel.version,
                    PredictionModel.model,
                    PredictionModel.metrics,
                )
            ).all()
    finally:
        bulk.dispose()
    return [
        {"name": n, "target": t, "version": v, "trained_at": now, "model": m, "metrics": x}
        for n, t, v, m, x in rows
    ]


def store_models(path: Path, rows: list[dict[str, Any]]) -> None:
    bulk = open_engine(path)
    try:
        with bulk.begin() as conn:
            for row in rows:
                conn.execute(PredictionModel.__table__.insert().values(  # type: ignore[attr-defined]
                    name=row["name"], target=row["target"], version=row["version"],
                    trainedAt=row["trained_at"], model=row["model"], metrics=row["metrics"],
                ))  # fmt: skip
    finally:
        bulk.dispose()


def split_score_phase(path: Path, now: datetime) -> dict[str, float]:
    """The ``score`` phase of a recompute with models, taken apart (same functions, one pass
    over the batches, nothing written): what each added piece costs."""
    bulk = open_engine(path)
    policy = default_policy()
    out = dict.fromkeys(
        ("readBatch", "segmentation", "snapshotRead", "riskScoring", "reasons"), 0.0
    )
    clock = time.perf_counter
    try:
        with bulk.connect() as conn:
            models = registry.active(conn)
            cutoff = now - timedelta(days=180)
            batches, _ = plan_batches(conn, None)
            for batch in batches:
                t0 = clock()
                read = read_batch(conn, cutoff, batch)
                t1 = clock()
                profiles = score(read.inputs, policy)
                t2 = clock()
                before = read_month_before(conn, batch, read.user_id, now)
                t3 = clock()
                risks = score_risks(models, risk_features(profiles, before))
                t4 = clock()
                every = np.arange(len(read.user_id))
                for target in TARGETS:
                    risks.reasons(target, every)
                t5 = clock()
                for key, a, b in (("readBatch", t0, t1), ("segmentation", t1, t2),
                                  ("snapshotRead", t2, t3), ("riskScoring", t3, t4),
                                  ("reasons", t4, t5)):  # fmt: skip
                    out[key] += b - a
    finally:
        bulk.dispose()
    return {k: round(v, 3) for k, v in out.items()}


def speed(args: argparse.Namespace, now: datetime, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"users": args.speed_users, "months": args.speed_months,
                           "loadBefore": load()}  # fmt: skip
    # The big database: the company, a short history, today's profiles placed (no model yet).
    big = tmp / "big.db"
    bulk, setup = seeded(big, args.speed_users, args.seed, args.speed_months, now)
    console.print(f"seeded {args.speed_users:,} people × {args.speed_months} months: {setup}")
    start = time.perf_counter()
    try:
        registry.train(bulk, now)
        out["trainOnBig"] = "trained"
    except ValueError as exc:
        out["trainOnBig"] = f"ValueError: {exc}"
    setup["trainAttempt"] = round(time.perf_counter() - start, 2)
    bulk.dispose()
    console.print(f"training on the big database: {out['trainOnBig']}")
    # The models, trained on a small history of their own.
    small = tmp / "train.db"
    start = time.perf_counter()
    small_engine, _ = seeded(small, args.train_users, args.seed, args.train_months, now)
    trained = registry.train(small_engine, now)
    small_engine.dispose()
    rows = model_rows(small, now)
    setup["trainSmall"] = round(time.perf_counter() - start, 2)
    out["models"] = {
        t.target: {"auc": t.metrics["model"]["auc"], "ruleAuc": t.metrics["baseline"]["auc"]}
        for t in trained
    }
    # Templates, each a closed file: placed (as seeded), cleared fingerprints, no profiles.
    placed = big
    cleared = copy_database(placed, tmp / "cleared.db")
    sqlite_exec(cleared, "UPDATE employee_segments SET profileHash = 0")
    start = time.perf_counter()
    unplaced = copy_database(placed, tmp / "unplaced.db")
    sqlite_exec(
        unplaced,
        "DELETE FROM segment_history",
        "DELETE FROM outbox_events",
        "DELETE FROM employee_segments",
    )
    with sqlite3.connect(unplaced, isolation_level=None) as conn:
        conn.execute("VACUUM")
    conn.close()
    setup["templates"] = round(time.perf_counter() - start, 2)
    out["setupSeconds"] = setup
    live = tmp / "live.db"
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    later = next_month_night(now)
    out["nextMonthNight"] = later.isoformat()

    def run(
        kind: str, template: Path, with_models: bool, keep: Path | None = None, at: datetime = now
    ) -> None:
        target = copy_database(template, keep or live)
        if with_models:
            store_models(target, rows)
        engine = open_engine(target)
        try:
            runs[kind].append(timed_recompute(engine, at))
        finally:
            engine.dispose()
        r = runs[kind][-1]
        console.print(
            f"  {kind:14s} {r['seconds']:7.3f} s (CPU {r['cpuSeconds']:.3f}), "
            f"written {r['written']:,}, load {r['load']}"
        )

    scored_file = tmp / "scored.db"
    for k in range(args.repeat):
        run("rewritePlain", cleared, False)
        run("rewriteModels", placed, True, keep=scored_file if k == args.repeat - 1 else None)
        run("firstPlain", unplaced, False)
        run("firstModels", unplaced, True)
    # Steady: two live files side by side, one run of each in turn.
    plain_file = copy_database(placed, tmp / "plain.db")
    plain, scored = open_engine(plain_file), open_engine(scored_file)
    try:
        for _ in range(args.repeat):
            for kind, engine in (("steadyPlain", plain), ("steadyModels", scored)):
                runs[kind].append(timed_recompute(engine, now))
                r = runs[kind][-1]
                console.print(
                    f"  {kind:14s} {r['seconds']:7.3f} s (CPU {r['cpuSeconds']:.3f}), "
                    f"written {r['written']:,}, load {r['load']}"
                )
    finally:
        plain.dispose()
        scored.dispose()
    # The first night of next month, from the same files (the steady runs wrote nothing).
    for _ in range(args.repeat):
        run("monthPlain", plain_file, False, at=later)
        run("monthModels", scored_file, False, at=later)
    out["scorePhaseSplit"] = split_score_phase(scored_file, now)
    out["runs"] = {k: median_run(v) for k, v in runs.items()}
    out["extra"] = {
        pair: {
            "seconds": round(out["runs"][b]["seconds"] - out["runs"][a]["seconds"], 3),
            "cpuSeconds": round(out["runs"][b]["cpuSeconds"] - out["runs"][a]["cpuSeconds"], 3),
            "ratio": round(out["runs"][b]["seconds"] / out["runs"][a]["seconds"], 3),
            "phases": {
                p: round(out["runs"][b]["phases"][p] - out["runs"][a]["phases"][p], 3)
                for p in (*PHASES, OTHER)
            },
        }
        for pair, a, b in PAIRS
    }
    out["loadAfter"] = load()
    return out


def month_night(args: argparse.Namespace, now: datetime) -> dict[str, Any]:
    """Only the first night of next month, with and without models, interleaved, on the
    databases an earlier ``--parts speed --keep`` run left in ``--reuse``: ``big.db`` (placed,
    no model) and ``train.db`` (the trained models). ``--now`` must be that run's."""
    source: Path = args.reuse
    out: dict[str, Any] = {"reuse": str(source), "loadBefore": load()}
    rows = model_rows(source / "train.db", now)
    plain = copy_database(source / "big.db", source / "plain.db")
    scored = copy_database(source / "big.db", source / "scored.db")
    store_models(scored, rows)
    engine = open_engine(scored)
    try:
        out["firstScoring"] = timed_recompute(engine, now)  # stores every profile's risks
    finally:
        engine.dispose()
    later = next_month_night(now)
    runs: dict[str, list[dict[str, Any]]] = {"monthPlain": [], "monthModels": []}
    for _ in range(args.repeat):
        for kind, template in (("monthPlain", plain), ("monthModels", scored)):
            engine = open_engine(copy_database(template, source / "live.db"))
            try:
                runs[kind].append(timed_recompute(engine, later))
            finally:
                engine.dispose()
            r = runs[kind][-1]
            console.print(f"  {kind:12s} {r['seconds']:7.3f} s (CPU {r['cpuSeconds']:.3f}), "
                          f"written {r['written']:,}, load {r['load']}")  # fmt: skip
    out["runs"] = {k: median_run(v) for k, v in runs.items()}
    a, b = out["runs"]["monthPlain"], out["runs"]["monthModels"]
    out["extra"] = {"seconds": round(b["seconds"] - a["seconds"], 3),
                    "cpuSeconds": round(b["cpuSeconds"] - a["cpuSeconds"], 3)}  # fmt: skip
    out["loadAfter"] = load()
    console.print(f"new month's first night: extra with models {out['extra']}")
    return out


def print_speed(s: dict[str, Any]) -> None:
    table = Table(
        title=f"recompute on SQLite, {s['users']:,} people (median of "
        f"{len(s['runs']['steadyPlain']['runs'])}; load {s['loadBefore']} → {s['loadAfter']})"
    )
    for col in ("run", "written", "wall s", "CPU s", *PHASES, OTHER, "runs"):
        table.add_column(col, justify="left" if col in ("run", "runs") else "right")
    labels = {
        "rewritePlain": "(a) every row rewritten, no model",
        "rewriteModels": "(b) first scoring after training",
        "steadyPlain": "(a') steady, no model (today)",
        "steadyModels": "(c) steady, with models",
        "monthPlain": "new month's first night, no model",
        "monthModels": "new month's first night, with models",
        "firstPlain": "first placement, no model",
        "firstModels": "first placement, with models",
    }
    for kind, label in labels.items():
        r = s["runs"][kind]
        table.add_row(
            label, f"{r['written']:,}", f"{r['seconds']:.3f}", f"{r['cpuSeconds']:.3f}",
            *(f"{r['phases'].get(p, 0.0):.3f}" for p in (*PHASES, OTHER)),
            ", ".join(f"{x:.2f}" for x in r["runs"]),
        )  # fmt: skip
    console.print(table)
    table = Table(title=f"extra seconds with models (target ≤ {TARGET_EXTRA_S:g} s at 1M)")
    for col in ("pair", "extra wall s", "extra CPU s", "ratio", *PHASES, OTHER, "target"):
        table.add_column(col, justify="left" if col == "pair" else "right")
    for pair, e in s["extra"].items():
        met = "met" if e["seconds"] <= TARGET_EXTRA_S else "NOT met"
        table.add_row(
            pair, f"{e['seconds']:+.3f}", f"{e['cpuSeconds']:+.3f}", f"{e['ratio']:.2f}×",
            *(f"{e['phases'][p]:+.3f}" for p in (*PHASES, OTHER)),
            met if s["users"] >= TARGET_USERS else f"{met} (at {s['users']:,})",
        )  # fmt: skip
    console.print(table)
    console.print(f"score phase taken apart (seconds, one pass): {s['scorePhaseSplit']}")


# -- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to try it out")
    parser.add_argument("--parts", default="eval,speed", help="eval, speed, month (see --reuse)")
    parser.add_argument("--eval-users", type=int, help="people per evaluation seed (20,000)")
    parser.add_argument("--months", type=int, default=24, help="history months for evaluation")
    parser.add_argument("--seeds", type=int, help="evaluation seeds 1 … N (5; --quick 2)")
    parser.add_argument("--resamples", type=int, help="paired bootstrap resamples (500)")
    parser.add_argument("--cards", type=Path, help="where seed 1's model cards go "
                        "(docs/models/; --quick: nowhere)")  # fmt: skip
    parser.add_argument("--speed-users", type=int, help="people for the speed part (1,000,000)")
    parser.add_argument("--speed-months", type=int, default=2)
    parser.add_argument("--train-users", type=int, default=5_000)
    parser.add_argument("--train-months", type=int, default=12)
    parser.add_argument("--seed", type=int, default=CARD_SEED, help="seed of the speed part")
    parser.add_argument("--repeat", type=int, help="runs of each recompute kind (3; --quick 1)")
    parser.add_argument("--now", type=datetime.fromisoformat, help="today (default: now, UTC)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep the databases (to profile)")
    parser.add_argument("--reuse", type=Path, help="--parts month: the directory a --keep run "
                        "left (its big.db and train.db); give that run's --now")  # fmt: skip
    args = parser.parse_args()
    quick = args.quick
    args.eval_users = args.eval_users or (3_000 if quick else 20_000)
    args.seeds = args.seeds or (2 if quick else 5)
    args.resamples = args.resamples or (100 if quick else 500)
    args.speed_users = args.speed_users or (50_000 if quick else 1_000_000)
    args.repeat = args.repeat or (1 if quick else 3)
    if args.cards is None and not quick:
        args.cards = CARDS
    now = args.now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    parts = set(args.parts.split(","))
    document: dict[str, Any] = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "command": " ".join(sys.argv),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "now": now.isoformat(timespec="seconds"),
        "code": git_state(),
        "settings": {
            k: str(v) if isinstance(v, Path | datetime) else v for k, v in vars(args).items()
        },  # fmt: skip
        "loadBefore": load(),
    }
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="treevu-models-"))
    try:
        if "eval" in parts:
            runs = []
            for seed in range(1, args.seeds + 1):
                cards = args.cards if seed == CARD_SEED else None
                runs.append(eval_seed(seed, args, now, tmp, cards))
                r = runs[-1]
                console.print(
                    f"seed {seed}: "
                    + "; ".join(
                        f"{t} AUC {m['auc']} (rule {m['ruleAuc']}), Brier {m['brier']} "
                        f"(rule {m['ruleBrier']}){'' if m['beatsRule'] else ' — DOES NOT BEAT'}"
                        for t, m in r["models"].items()
                    )
                    + f" ({r['seconds']} s: {r['setupSeconds']})"
                )
            summary = eval_summary(runs)
            print_eval(runs, summary)
            document["eval"] = {"summary": summary, "seeds": runs}
        if "speed" in parts:
            document["speed"] = speed(args, now, tmp)
            print_speed(document["speed"])
        if "month" in parts:
            document["month"] = month_night(args, now)
    finally:
        if args.keep:
            console.print(f"databases kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    document["loadAfter"] = load()
    document["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2, default=str) + "\n")
    console.print(f"wrote {args.out} ({document['seconds']} s; load {document['loadBefore']} → "
                  f"{document['loadAfter']})")  # fmt: skip


if __name__ == "__main__":
    main()
