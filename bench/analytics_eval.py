"""Analytics against known truth: the intervention-effect estimator and the campaign
experiments, over many synthetic histories (pure: no database, no server).

For each seed ``1 … N``: ``generate_population(users, seed)`` and ``generate_history`` (the
default policy, ``months`` months before ``today``), which know the true average effect of an
intervention on the FWI of the treated (``History.true_effect``). Then

- ``effect.estimate`` (propensity matching, bootstrap interval) on ``as_cube`` / ``treated_of``
  at ``horizon``: estimate, 95% interval, truth, whether the interval holds the truth, its
  width, treated / matched / distinct controls;
- the two seeded experiments as ``services.people.seed.write_history`` writes them (targets:
  the steady performers present ``months_ago`` months back; variants by ``variant_of`` with the
  campaign ids of a fresh database; conversions by ``campaign_outcomes`` from the same random
  stream), each through ``experiments.analyse`` with its default plan: once the planned size is
  reached, whether the test was significant (power for the true uplift, a false positive for
  the A/A) and whether the difference's interval holds the true uplift.

Prints a line per seed and a summary (coverage with a Clopper-Pearson 95% interval, bias,
width, power, A/A false positives), writes ``bench/results/analytics_eval.json``. Never fails
on a figure: a 95% interval should hold the truth in about 95% of the seeds. 50 seeds pin a
coverage down only to about ±6 points (seconds of work); ``--seeds 300`` (about a minute and a
half) to about ±3.

    .venv/bin/python bench/analytics_eval.py                      # 50 seeds of 5,000 users
    .venv/bin/python bench/analytics_eval.py --seeds 10 --users 2000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.stats import binomtest

from treevu.history import (
    TRUE_UPLIFT,
    History,
    as_cube,
    campaign_outcomes,
    generate_history,
    treated_of,
)
from treevu.population import Population, generate_population
from treevu.segmentation.policy import SEGMENTS, default_policy
from treevu.services.analytics.effect import estimate
from treevu.services.analytics.experiments import analyse
from treevu.services.campaigns.sending import variant_of
from treevu.services.people.seed import EXPERIMENTS
from ws_common import git_state

RESULTS: Final = Path(__file__).parent / "results" / "analytics_eval.json"
#: A fixed "today", so that a seed draws the same history whatever the day of the run.
TODAY: Final = date(2026, 1, 15)
STEADY: Final = SEGMENTS.index("steady_performers")
#: ``write_history`` inserts the experiments in this order into a fresh database: ids 1, 2, …
FIRST_CAMPAIGN_ID: Final = 1
LEVEL: Final = 0.95

console = Console(width=160)


# -- one seed ----------------------------------------------------------------------------------


def effect_run(population: Population, history: History, horizon: int) -> dict[str, Any]:
    """The estimator on this history beside the truth."""
    cube = as_cube(history, population.user_id)
    result = estimate(cube, treated_of(history, population.user_id), horizon)
    truth = history.true_effect.get(horizon)
    row: dict[str, Any] = {
        "truth": None if truth is None else round(truth, 4),
        "estimate": result["effect"],
        "ci95": result["ci95"],
        "covered": None,
        "width": None,
        "bias": None,
        "treated": result["treated"],
        "matched": result["matched"],
        "unmatched": result["unmatched"],
        "controls": result["controls"],
        "distinctControls": result.get("distinctControls"),
        "treatedMeanChange": result.get("treatedMeanChange"),
        "controlMeanChange": result.get("controlMeanChange"),
        "balanceAfter": (result.get("balance") or {}).get("after"),
        "warnings": result["warnings"],
    }
    if result["effect"] is not None and truth is not None:
        lo, hi = result["ci95"]
        row.update(
            covered=bool(lo <= truth <= hi),
            width=round(hi - lo, 4),
            bias=round(result["effect"] - truth, 4),
        )
    return row


def experiment_runs(population: Population, history: History, seed: int) -> list[dict[str, Any]]:
    """The seeded experiments of this history, analysed with the default plan."""
    uids = population.user_id[history.rows]
    past = len(history.months) - 1
    # The stream of ``write_history``: one draw per intervention's day, then per campaign its
    # conversions and their delays, so that these are the conversions a seed writes.
    rng = np.random.default_rng([seed, 7])
    for _ in range(int((history.treated_month >= 0).sum())):
        rng.integers(1, 28)
    runs = []
    campaign_id = FIRST_CAMPAIGN_ID
    for name, uplift, months_ago in EXPERIMENTS:
        if months_ago > past:
            continue
        t = past - months_ago
        here = history.present[:, t] & (history.profiles[t].segment == STEADY)
        targets = uids[here]
        variants = np.array([variant_of(campaign_id, int(u), 2) for u in targets], dtype=np.int64)
        converted = campaign_outcomes(rng, variants, uplift)
        rng.uniform(0.0, 5.0, int(converted.sum()))
        arms = [
            (f"variant {k}", int((variants == k).sum()), int(converted[variants == k].sum()))
            for k in (0, 1)
        ]
        result = analyse(arms)
        comparison = result["comparisons"][0]
        ci = comparison["ci95"]
        runs.append(
            {
                "name": name,
                "campaignId": campaign_id,
                "uplift": uplift,
                "month": t,
                "arms": [{"sent": n, "converted": c} for _, n, c in arms],
                "planned": result["plannedPerVariant"],
                "baselineRate": result["baselineRate"],
                "reached": result["reached"],
                "difference": comparison["difference"],
                "ci95": ci,
                "pValue": comparison["pValue"],
                "significant": comparison["significant"],
                "ciCovers": None if ci is None else bool(ci[0] <= uplift <= ci[1]),
            }
        )
        campaign_id += 1
    return runs


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    population = generate_population(args.users, seed)
    history = generate_history(population, default_policy(), args.months, seed, args.today)
    out = {
        "seed": seed,
        "effect": effect_run(population, history, args.horizon),
        "experiments": experiment_runs(population, history, seed),
    }
    out["seconds"] = round(time.perf_counter() - started, 2)
    return out


# -- summary -----------------------------------------------------------------------------------


def share(k: int, n: int) -> dict[str, Any]:
    """``k`` of ``n`` with its exact (Clopper-Pearson) 95% interval."""
    if n == 0:
        return {"k": 0, "n": 0, "share": None, "ci95": None}
    ci = binomtest(k, n).proportion_ci(confidence_level=LEVEL)
    return {"k": k, "n": n, "share": round(k / n, 4), "ci95": [round(ci.low, 4), round(ci.high, 4)]}


def mean(values: Sequence[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def sd(values: Sequence[float]) -> float | None:
    return round(float(np.std(values, ddof=1)), 4) if len(values) > 1 else None


def summarise_effect(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [r["effect"] for r in runs if r["effect"]["covered"] is not None]
    bias = [r["bias"] for r in rows]
    width = [r["width"] for r in rows]
    # The bootstrap's standard error implied by the width, against the spread of the errors
    # across seeds: a ratio above 1 means the interval is too narrow for the estimator.
    implied_se = [w / 3.92 for w in width]
    z = [b / s for b, s in zip(bias, implied_se, strict=True) if s > 0]
    matched = [r["matched"] for r in rows if isinstance(r["matched"], int)]
    distinct = [r["distinctControls"] for r in rows if isinstance(r["distinctControls"], int)]
    return {
        "seeds": len(runs),
        "estimated": len(rows),
        "coverage": share(sum(r["covered"] for r in rows), len(rows)),
        "meanTruth": mean([r["truth"] for r in rows]),
        "meanEstimate": mean([r["estimate"] for r in rows]),
        "meanBias": mean(bias),
        "sdBias": sd(bias),
        "rmse": round(float(np.sqrt(np.mean(np.square(bias)))), 4) if bias else None,
        "meanWidth": mean(width),
        "meanImpliedSe": mean(implied_se),
        "sdOverImpliedSe": None
        if not bias or sd(bias) is None
        else round(float(np.std(bias, ddof=1) / np.mean(implied_se)), 3),
        "zMean": mean(z),
        "zSd": sd(z),
        "meanTreated": mean([r["treated"] for r in rows if isinstance(r["treated"], int)]),
        "meanMatched": mean(matched),
        "meanDistinctControls": mean(distinct),
        "matchedPerDistinctControl": round(sum(matched) / sum(distinct), 3) if distinct else None,
    }


def summarise_experiments(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for name, uplift, _ in EXPERIMENTS:
        rows = [e for r in runs for e in r["experiments"] if e["name"] == name]
        reached = [e for e in rows if e["reached"]]
        smallest = [min(a["sent"] for a in e["arms"]) for e in rows]
        out.append(
            {
                "name": name,
                "uplift": uplift,
                "runs": len(rows),
                "notReached": share(len(rows) - len(reached), len(rows)),
                "significant": share(sum(bool(e["significant"]) for e in reached), len(reached)),
                "ciCoversUplift": share(sum(bool(e["ciCovers"]) for e in reached), len(reached)),
                "meanPlannedPerVariant": mean([e["planned"] for e in rows]),
                "meanSmallestVariant": mean([float(s) for s in smallest]),
                "meanDifference": mean(
                    [e["difference"] for e in rows if e["difference"] is not None]
                ),
            }
        )
    return out


# -- report ------------------------------------------------------------------------------------


def pct(s: dict[str, Any]) -> str:
    if s["share"] is None:
        return "–"
    lo, hi = s["ci95"]
    return f"{100 * s['share']:.1f}% ({s['k']}/{s['n']}; 95% CI {100 * lo:.1f}–{100 * hi:.1f}%)"


def print_seed(r: dict[str, Any]) -> None:
    e = r["effect"]
    if e["estimate"] is None:
        line = f"no estimate ({'; '.join(e['warnings'])})"
    else:
        mark = "in " if e["covered"] else "OUT"
        line = (
            f"{e['estimate']:6.3f} [{e['ci95'][0]:6.3f}, {e['ci95'][1]:6.3f}] truth "
            f"{e['truth']:6.3f} {mark}; matched {e['matched']}/{e['treated']}, "
            f"{e['distinctControls']} controls"
        )
    parts = []
    for x in r["experiments"]:
        n = min(a["sent"] for a in x["arms"])
        verdict = f"p={x['pValue']:.3f}{'*' if x['significant'] else ''}" if x["reached"] else "–"
        parts.append(f"{'A/B' if x['uplift'] else 'A/A'} {n}≥{x['planned']}? {verdict}")
    console.print(f"seed {r['seed']:3d}: {line} | {' | '.join(parts)} ({r['seconds']} s)")


def print_summary(effect: dict[str, Any], experiments: list[dict[str, Any]], horizon: int) -> None:
    table = Table(title=f"Intervention effect on FWI at {horizon} months, against the truth")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("note")
    rows = [
        ("seeds with an estimate", f"{effect['estimated']}/{effect['seeds']}", ""),
        ("coverage of the 95% interval", pct(effect["coverage"]), "target ≈ 95%"),
        ("mean truth / mean estimate", f"{effect['meanTruth']} / {effect['meanEstimate']}", ""),
        ("mean bias (estimate − truth)", str(effect["meanBias"]), f"SD {effect['sdBias']}"),
        ("RMSE", str(effect["rmse"]), ""),
        ("mean interval width", str(effect["meanWidth"]), f"≈ SE {effect['meanImpliedSe']}"),
        ("SD of errors / bootstrap SE", str(effect["sdOverImpliedSe"]), "≈ 1 if well calibrated"),
        ("z = bias / SE: mean, SD", f"{effect['zMean']}, {effect['zSd']}", "≈ 0, 1"),
        ("matched per distinct control", str(effect["matchedPerDistinctControl"]),
         f"mean matched {effect['meanMatched']}, controls {effect['meanDistinctControls']}"),
    ]  # fmt: skip
    for row in rows:
        table.add_row(*row)
    console.print(table)
    table = Table(title="Campaign experiments (default plan), decided only once reached")
    table.add_column("experiment")
    for col in ("uplift", "planned size not reached", "significant", "CI holds uplift"):
        table.add_column(col, justify="right")
    for x in experiments:
        label = "power" if x["uplift"] else "false positives"
        table.add_row(
            x["name"],
            f"{x['uplift']:g}",
            pct(x["notReached"]),
            f"{label} {pct(x['significant'])}",
            pct(x["ciCoversUplift"]),
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=50, help="seeds 1 … N")
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--months", type=int, default=12, help="months of history")
    parser.add_argument("--horizon", type=int, default=3, help="months after the intervention")
    parser.add_argument("--today", type=date.fromisoformat, default=TODAY)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = time.perf_counter()
    runs = []
    for seed in range(1, args.seeds + 1):
        runs.append(run_seed(seed, args))
        print_seed(runs[-1])
    effect = summarise_effect(runs)
    experiments = summarise_experiments(runs)
    print_summary(effect, experiments, args.horizon)
    seconds = round(time.perf_counter() - started, 1)
    console.print(f"{args.seeds} seeds in {seconds} s")
    document = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "command": " ".join(sys.argv),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": git_state(),
        "settings": {
            **{k: str(v) if isinstance(v, Path | date) else v for k, v in vars(args).items()},
            "policy": "default_policy()",
            "experiments": [{"name": n, "uplift": u, "monthsAgo": m} for n, u, m in EXPERIMENTS],
            "trueUplift": TRUE_UPLIFT,
            "analyse": "defaults (mde, alpha, power; baseline = pooled rate)",
        },
        "seconds": seconds,
        "summary": {"effect": effect, "experiments": experiments},
        "seeds": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
