"""Print a pip constraints file pinning every runtime dependency of pyproject.toml (the base
list and the backend extras) to its lower bound: ``name==X`` for each ``name>=X``.

Used by ``make test-lowest``: the bounds a deployment can meet must really work. The ``dev``
extra (test and lint tools, never installed by users) resolves to current releases: its tools'
oldest releases do not install beside today's transitive releases (schemathesis 4.0 with
hypothesis 6.170), which says nothing about the product.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement


def main() -> int:
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for name, extra in project.get("optional-dependencies", {}).items():
        if name != "dev":
            requirements += extra
    pins: dict[str, str] = {}
    unbounded: list[str] = []
    for text in requirements:
        req = Requirement(text)
        lower = [s.version for s in req.specifier if s.operator == ">="]
        if not lower:
            unbounded.append(req.name)
            continue
        pins[req.name] = lower[0]
    if unbounded:
        print(f"no lower bound for: {', '.join(unbounded)}", file=sys.stderr)
        return 2
    for name, version in sorted(pins.items()):
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
