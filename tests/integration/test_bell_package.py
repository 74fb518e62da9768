"""The bell is an npm package a customer can install: ``npm pack`` works and ships only the
built files and the README (the build is the package's own ``tsc``)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVERS

BELL = Path(__file__).resolve().parents[2] / "web" / "bell"


def _npm(*args: str) -> str:
    npm = shutil.which("npm")
    assert npm is not None
    done = subprocess.run([npm, *args], cwd=BELL, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"npm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_npm_pack_ships_the_built_element_the_react_wrapper_and_the_readme() -> None:
    if shutil.which("npm") is None:
        if REQUIRE_SERVERS:
            pytest.fail("npm is required when TREEVU_TEST_REQUIRE_SERVERS=1")
        pytest.skip("npm is not installed")
    _npm("ci", "--no-audit", "--no-fund", "--loglevel=error")
    _npm("run", "build")
    (packed,) = json.loads(_npm("pack", "--dry-run", "--json", "--loglevel=error"))
    files = {f["path"] for f in packed["files"]}
    assert packed["name"] == "@treevu/notification-bell"
    assert {"package.json", "README.md", "dist/index.js", "dist/index.d.ts",
            "dist/bell.js", "dist/react.js"} <= files  # fmt: skip
    assert not [f for f in files if f.startswith(("src/", "node_modules/", "scripts/"))]
