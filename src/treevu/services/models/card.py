"""The model card that training writes (``docs/models/NAME.md``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from treevu.services.models.features import BASELINE, FEATURES
from treevu.services.models.registry import Trained
from treevu.services.models.training import CALIBRATION_BINS, MIN_GROUP

PURPOSE = {
    "crisis": "the probability that a person is in the crisis_intervention segment at next "
    "month's snapshot (within about 30 days)",
    "disengagement": "the probability that a person is disengaged at next month's snapshot "
    "(engagement score under 20, or gone) — within about 30 days",
}


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def render(trained: Trained, written_by: str = "`treevu models train`") -> str:
    m = trained.metrics
    model, rule = m["model"], m["baseline"]
    lines = [
        f"# Model card: {trained.name} (version {trained.version})",
        "",
        f"Written by {written_by} on {trained.trained_at:%Y-%m-%d %H:%M} UTC; the "
        "figures are those of this training run on the data it was given.",
        "",
        "## Intended use",
        "",
        f"Predicts {PURPOSE[trained.target]}. It ranks people so that counselors and program "
        "staff can offer help earlier, and it explains each score by its largest reasons. It "
        "is decision support: **a person decides** every action, and nothing is done to an "
        "employee because of a score alone. Not for hiring, pay, promotion, discipline or any "
        "decision about employment.",
        "",
        "**EU AI Act.** Systems used to monitor and evaluate people in work relationships are "
        "high-risk (Annex III, point 4). Deploying this in the EU needs the obligations of "
        "high-risk systems: risk management, data governance, logging, transparency to the "
        "people concerned, accuracy monitoring and human oversight — here, a human reviews "
        "every flag before anyone acts on it.",
        "",
        "## Data",
        "",
        f"Monthly profile snapshots (SPEC §10). Fitted on {len(m['trainMonths'])} months "
        f"({m['trainMonths'][0]} to {m['trainMonths'][-1]}), calibrated on "
        f"{', '.join(m['calibrationMonths'])}, tested on {', '.join(m['testMonths'])} — split "
        "by time, never shuffled across it. Each person present in a month is one example; "
        "the outcome is read from the next month.",
        "",
        f"Inputs: {', '.join(f'`{f}`' for f in FEATURES)} — all from the month of the "
        "prediction and the month before. **No protected attribute is an input**: department "
        "and age band are used only for the per-group checks below.",
        "",
        "## Method",
        "",
        "Logistic regression on standardised inputs (scikit-learn), calibrated with Platt "
        'scaling (`CalibratedClassifierCV(method="sigmoid")`) on the calibration months; the '
        "result is one logistic model stored as numbers (JSON: nothing executes when it is "
        "loaded). A person's reasons are `coef_i · (x_i − average_i)`, which add up exactly to "
        "their log-odds minus the average person's; the top three that raise the risk are "
        "stored with the score.",
        "",
        "## Metrics on the held-out months",
        "",
        f"Baseline, today's rule: {BASELINE[trained.target]} (its probability for each verdict "
        "is the rate seen in the training months).",
        "",
        "| | examples | positives | AUC | Brier score |",
        "|---|---|---|---|---|",
        f"| model | {model['n']:,} | {model['positives']:,} | {_fmt(model['auc'])} | "
        f"{_fmt(model['brier'])} |",
        f"| baseline rule | {rule['n']:,} | {rule['positives']:,} | {_fmt(rule['auc'])} | "
        f"{_fmt(rule['brier'])} |",
        "",
        "Calibration (ten bins of equal size, by predicted risk):",
        "",
        "| predicted | observed | examples |",
        "|---|---|---|",
        *(
            f"| {b['predicted']:.4f} | {b['observed']:.4f} | {b['n']:,} |"
            for b in model["calibration"]
        ),
        "",
        "## Per group",
        "",
    ]
    for name, group in m["groups"].items():
        lines += [
            f"**{name}** — gap between the best and worst AUC: {_fmt(group['aucGap'])}",
            "",
            "| group | examples | positives | AUC | Brier | baseline AUC | baseline Brier |",
            "|---|---|---|---|---|---|---|",
            *(
                f"| {r['group']} | {r['model']['n']:,} | {r['model']['positives']:,} | "
                f"{_fmt(r['model']['auc'])} | {_fmt(r['model']['brier'])} | "
                f"{_fmt(r['baseline']['auc'])} | {_fmt(r['baseline']['brier'])} |"
                for r in group["rows"]
            ),
            "",
            f"Calibration by {name} — predicted / observed in each tenth of the group's "
            f"examples, by predicted risk (groups under {MIN_GROUP} examples have none):",
            "",
            "| group | " + " | ".join(str(k) for k in range(1, CALIBRATION_BINS + 1)) + " |",
            "|---|" + "---|" * CALIBRATION_BINS,
            *(
                f"| {r['group']} | "
                + " | ".join(
                    f"{b['predicted']:.3f} / {b['observed']:.3f}" for b in r["model"]["calibration"]
                )
                + " |"
                for r in group["rows"]
                if r["model"]["calibration"]
            ),
            "",
        ]
    lines += [
        "## Limits",
        "",
        "- It knows only what the monthly snapshots show; a sudden change between snapshots "
        "(a lost job, an illness) is invisible until the next one.",
        '- "Within 30 days" is the next monthly snapshot; a prediction made late in a month '
        "looks less far ahead.",
        "- Trained on this organisation's history: a new policy, a new product or a change in "
        "who joins makes it stale; retrain monthly and compare with the baseline each time.",
        "- A synthetic history (`treevu seed --history-months`) tests the pipeline, not the "
        "real-world accuracy.",
        f"- Groups under {MIN_GROUP} examples get no AUC and no calibration table.",
        "- The change features are month to month in training; when a profile is scored during "
        "a month they cover the days since last month's snapshot (near zero on the 1st), so "
        "early in a month a trend weighs less than the model learned.",
        "- Risks are stored to two decimals; the calibration table shows where the predicted "
        "risk runs above what was observed (on the synthetic history, the riskiest tenth).",
        "",
    ]
    return "\n".join(lines)


def write(trained: Trained, directory: Path, written_by: str = "`treevu models train`") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{trained.name}.md"
    path.write_text(render(trained, written_by), encoding="utf-8")
    return path
