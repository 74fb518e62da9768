"""The wheel ships the built web app: `pip wheel` of this checkout (hatchling, the project's
build backend) holds treevu/webui/index.html and every file it loads, though git ignores them."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVERS
from treevu.app import WEB_DIST

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_the_built_web_app(tmp_path: Path) -> None:
    if not (WEB_DIST / "index.html").is_file():
        if REQUIRE_SERVERS:
            pytest.fail("the web app is not built (make web) and TREEVU_TEST_REQUIRE_SERVERS=1")
        pytest.skip("the web app is not built (make web)")
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet"]
    done = subprocess.run(
        [*pip, "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("treevu-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        index = archive.read("treevu/webui/index.html").decode()
    assert index == (WEB_DIST / "index.html").read_text()
    # The scripts and styles index.html loads (hashed names, under /app/) are there too.
    loaded = re.findall(r'(?:src|href)="/app/(assets/[^"]+)"', index)
    assert any(a.endswith(".js") for a in loaded) and any(a.endswith(".css") for a in loaded)
    assert {f"treevu/webui/{a}" for a in loaded} <= names
    built = {f"treevu/webui/{p.relative_to(WEB_DIST)}" for p in WEB_DIST.rglob("*") if p.is_file()}
    assert built <= names
    # The sources and Node's modules stay out.
    assert not [n for n in names if n.startswith("web/") or "node_modules" in n]
