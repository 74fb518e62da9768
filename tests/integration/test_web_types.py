"""The web app's API types are generated from the server's OpenAPI document
(openapi-typescript): this fails when either is stale. Regenerate with
``treevu openapi --out web/app/openapi.json && (cd web/app && npm run types)``."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tests.conftest import REQUIRE_SERVERS
from treevu.app import openapi_document
from treevu.config import Settings

WEB = Path(__file__).resolve().parents[2] / "web" / "app"
REGENERATE = "treevu openapi --out web/app/openapi.json && (cd web/app && npm run types)"


def test_the_committed_openapi_document_is_the_servers() -> None:
    settings = Settings(jwt_secret="-" * 32, encryption_key=Fernet.generate_key().decode())
    current = openapi_document(settings)
    committed = json.loads((WEB / "openapi.json").read_text(encoding="utf-8"))
    assert committed == json.loads(json.dumps(current)), f"stale: run {REGENERATE}"


def test_the_typescript_types_are_generated_from_it(tmp_path: Path) -> None:
    tool = WEB / "node_modules" / ".bin" / "openapi-typescript"
    if shutil.which("node") is None or not tool.exists():
        if REQUIRE_SERVERS:
            pytest.fail("node and web/app/node_modules are needed (make web)")
        pytest.skip("node or web/app/node_modules is missing")
    out = tmp_path / "api-types.ts"
    subprocess.run([str(tool), str(WEB / "openapi.json"), "-o", str(out)], check=True,
                   capture_output=True, cwd=WEB)  # fmt: skip
    generated = out.read_text(encoding="utf-8")
    committed = (WEB / "src" / "api-types.ts").read_text(encoding="utf-8")
    assert generated == committed, f"stale: run {REGENERATE}"


def test_api_reference_pages_load_their_assets_from_the_app(sqlite_database: Any) -> None:
    import httpx

    from tests.conftest import LiveServer

    with LiveServer(sqlite_database.settings()) as server:
        for page, assets in (
            ("/docs", ("/app/vendor/swagger-ui-bundle.js", "/app/vendor/swagger-ui.css")),
            ("/redoc", ("/app/vendor/redoc.standalone.js",)),
        ):
            html = httpx.get(server.url + page).text
            assert "cdn" not in html.lower() and "googleapis" not in html
            for asset in assets:
                assert asset in html
                assert httpx.get(server.url + asset).status_code == 200, "make web"
