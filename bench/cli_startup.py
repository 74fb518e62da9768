"""``treevu --help`` and every subcommand's ``--help``: wall time from exec to exit.

Each command runs ``--repeat`` times as a subprocess of this virtual environment's Python; the
median is reported beside two floors measured in the same run: the interpreter alone
(``python -c pass``) and the interpreter importing Typer and rich (what any Typer CLI pays).
Target: ≤ 0.3 s each. Prints a table, writes ``bench/results/cli_startup.json``; never fails
on a figure.

    .venv/bin/python bench/cli_startup.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

from rich.console import Console
from rich.table import Table

import ws_common as common

RESULTS: Final = Path(__file__).parent / "results" / "cli_startup.json"
TARGET_S: Final = 0.3
COMMANDS: Final = (
    (), ("demo",), ("serve",), ("seed",), ("profile",), ("token",), ("notify",), ("openapi",),
    ("db", "upgrade"), ("segment", "recompute"), ("import", "inputs"), ("jobs", "list"),
    ("jobs", "run"), ("keys", "rotate"),
)  # fmt: skip


def _median_seconds(argv: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env={**os.environ, "COLUMNS": "120"})
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    python = sys.executable
    bare = _median_seconds([python, "-c", "pass"], args.repeat)
    typer_rich = _median_seconds([python, "-c", "import typer, rich.console"], args.repeat)
    rows = {
        " ".join(["treevu", *cmd, "--help"]): _median_seconds(
            [python, "-m", "treevu", *cmd, "--help"], args.repeat
        )
        for cmd in COMMANDS
    }
    table = Table(title="CLI start-up (median wall time; target ≤ 0.3 s)")
    for col in ("command", "seconds", "python alone", "python + typer + rich", "target"):
        table.add_column(col, justify="right")
    for name, seconds in rows.items():
        table.add_row(name, f"{seconds:.3f}", f"{bare:.3f}", f"{typer_rich:.3f}",
                      "met" if seconds <= TARGET_S else "NOT met")  # fmt: skip
    Console(width=120).print(table)
    out = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadAtEnd": common.load_average(),
        "code": common.git_state(),
        "repeat": args.repeat,
        "floors": {"pythonAlone": round(bare, 4), "pythonTyperRich": round(typer_rich, 4)},
        "commands": {name: round(s, 4) for name, s in rows.items()},
        "targetSeconds": TARGET_S,
        "targetMet": all(s <= TARGET_S for s in rows.values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
