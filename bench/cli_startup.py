"""``treevu --help``, every subcommand's ``--help``, and real commands: wall time from exec to exit.

The commands are found by walking the Typer app (every group and leaf), so a new command is
measured without editing this file. Each runs ``--repeat`` times as a subprocess (the installed
``treevu`` script of this virtual environment, as a user types it); the median is reported
beside floors measured in the same run: the interpreter alone (``python -c pass``), the
interpreter importing Typer and rich (what any Typer CLI pays before its first line), and, for
the commands that open the database, the interpreter importing SQLAlchemy, opening the same
SQLite file and reading one user. The real commands run on a fresh SQLite database of
``--users`` people (``treevu db upgrade``, ``treevu seed``): ``profile`` (one line on stdin,
no database), ``token`` (reads one user, signs a JWT) and ``jobs list`` (opens the services).
Each figure is a median wall time with the median CPU time (user + system) of the process
beside it: on a loaded machine the first grows with the run queue, the second much less.
Target: ≤ 0.3 s for each ``--help``. Prints two tables, writes
``bench/results/cli_startup.json``; never fails on a figure.

    .venv/bin/python bench/cli_startup.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

import ws_common as common
from treevu.cli import app
from treevu.population import ADMIN_EMAIL
from treevu.segmentation.engine import INPUT_NAMES, OPTIONAL_INPUTS

RESULTS: Final = Path(__file__).parent / "results" / "cli_startup.json"
TARGET_S: Final = 0.3
TREEVU: Final = str(common.BIN / "treevu")
#: One employee's inputs (every value 1: the figures are timings, not profiles).
PROFILE_LINE: Final = json.dumps({name: 1 for name in INPUT_NAMES if name not in OPTIONAL_INPUTS})
#: Commands that do their work, with what they read on stdin.
REAL_COMMANDS: Final = (
    (("profile",), PROFILE_LINE + "\n"),
    (("token", "--email", ADMIN_EMAIL), ""),
    (("jobs", "list"), ""),
)
OPENS_DATABASE: Final = {"token", "jobs"}


def subcommands(command: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command of the app, groups before their commands, in the order they were added."""
    yield path
    if isinstance(command, TyperGroup):
        for name, sub in command.commands.items():
            yield from subcommands(sub, (*path, name))


def _medians(
    argv: list[str], repeat: int, *, env: dict[str, str], cwd: Path, stdin: str = ""
) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds (user + system) of the process: on a shared,
    loaded machine the wall time grows with the run queue, the CPU time much less."""
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=env, cwd=cwd, input=stdin,
                       text=True)  # fmt: skip
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def _figure(wall_cpu: tuple[float, float]) -> str:
    return f"{wall_cpu[0]:.3f} ({wall_cpu[1]:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--users", type=int, default=2000, help="people in the seeded database")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="treevu-cli-") as tmp:
        work = Path(tmp)
        env = {**common.prepare_database(work, args.users), "COLUMNS": "120"}

        def timed(argv: list[str], stdin: str = "") -> tuple[float, float]:
            return _medians(argv, args.repeat, env=env, cwd=work, stdin=stdin)

        database = env["TREEVU_DATABASE_URL"].split(":///", 1)[1]
        bare = timed([python, "-c", "pass"])
        typer_rich = timed([python, "-c", "import typer, rich.console"])
        read_one_user = (
            "import sqlalchemy as sa; "
            f"e = sa.create_engine('sqlite:///' + {database!r}); "
            "e.connect().execute(sa.text('SELECT * FROM users WHERE id = 1')).all()"
        )
        read_one = timed([python, "-c", read_one_user])
        helps = {
            " ".join(["treevu", *cmd, "--help"]): timed([TREEVU, *cmd, "--help"])
            for cmd in subcommands(typer.main.get_command(app))
        }
        real = {
            " ".join(["treevu", *cmd]): timed([TREEVU, *cmd], stdin) for cmd, stdin in REAL_COMMANDS
        }
        opens = {" ".join(["treevu", *cmd]) for cmd, _ in REAL_COMMANDS if cmd[0] in OPENS_DATABASE}
    table = Table(title="CLI --help: median wall seconds (CPU seconds); target ≤ 0.3 s")
    for col in ("command", "seconds", "python alone", "python + typer + rich", "target"):
        table.add_column(col, justify="right")
    for name, seconds in helps.items():
        table.add_row(name, _figure(seconds), _figure(bare), _figure(typer_rich),
                      "met" if seconds[0] <= TARGET_S else "NOT met")  # fmt: skip
    console = Console(width=140)
    console.print(table)
    table = Table(title=f"Real commands on a seeded SQLite of {args.users:,} people: median wall "
                  "seconds (CPU seconds)")  # fmt: skip
    for col in ("command", "seconds", "python alone", "python + SQLAlchemy: read one user"):
        table.add_column(col, justify="right")
    for name, seconds in real.items():
        table.add_row(name, _figure(seconds), _figure(bare),
                      _figure(read_one) if name in opens else "—")  # fmt: skip
    console.print(table)

    def both(wall_cpu: tuple[float, float]) -> dict[str, float]:
        return {"wall": round(wall_cpu[0], 4), "cpu": round(wall_cpu[1], 4)}

    out = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadAtEnd": common.load_average(),
        "code": common.git_state(),
        "repeat": args.repeat,
        "users": args.users,
        "seconds": "median wall time from exec to exit, and median CPU time (user + system)",
        "floors": {
            "pythonAlone": both(bare),
            "pythonTyperRich": both(typer_rich),
            "pythonSqlalchemyReadOneUser": both(read_one),
        },
        "commands": {name: both(s) for name, s in helps.items()},
        "realCommands": {name: both(s) for name, s in real.items()},
        "realCommandsOpeningTheDatabase": sorted(opens),
        "targetSeconds": TARGET_S,
        "targetMet": all(s[0] <= TARGET_S for s in helps.values()),
        "targetMetOnCpu": all(s[1] <= TARGET_S for s in helps.values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
