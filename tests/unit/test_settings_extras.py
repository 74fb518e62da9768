"""Database drivers and the Redis client are extras: a setting that needs a missing one is
refused naming the extra to install (the SQLite demo installs none of them)."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from treevu.config import Settings

_real = importlib.util.find_spec


def _without(*missing: str) -> Any:
    def find_spec(name: str, *args: Any) -> Any:
        return None if name in missing else _real(name, *args)

    return find_spec


@pytest.mark.parametrize(
    ("url", "missing", "extra"),
    [
        ("postgresql+asyncpg://u@h/db", "psycopg", "postgres"),
        ("postgres://u@h/db", "psycopg", "postgres"),
        ("postgresql+psycopg://u@h/db", "psycopg", "postgres"),
        ("mysql://u@h/db", "asyncmy", "mysql"),
    ],
)
def test_a_backend_without_its_driver_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, url: str, missing: str, extra: str
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", _without(missing))
    with pytest.raises(ValidationError) as refused:
        Settings(database_url=url)
    assert f"pip install 'treevu[{extra}]'" in str(refused.value) and missing in str(refused.value)


def test_sqlite_needs_no_extra_and_redis_names_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        importlib.util, "find_spec", _without("asyncmy", "psycopg", "pymysql", "redis")
    )
    assert Settings(database_url="sqlite+aiosqlite:///x.db").database_url.startswith("sqlite")
    with pytest.raises(ValidationError) as refused:
        Settings(redis_url="redis://127.0.0.1:6379/0")
    assert "pip install 'treevu[redis]'" in str(refused.value)


def test_postgresql_has_one_driver_for_the_loop_and_the_bulk_path() -> None:
    extras = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert [r.split(">")[0] for r in extras["postgres"]] == ["psycopg[binary]"]
    # SPEC §1's spelling keeps working, read as the one driver.
    settings = Settings(database_url="postgresql+asyncpg://u:pw@h:5433/db")
    assert settings.database_url == "postgresql+psycopg://u:pw@h:5433/db"
    assert settings.sync_database_url == settings.database_url


def test_a_server_process_tunes_its_collector() -> None:
    import gc

    from treevu.app import GC_YOUNG_THRESHOLD, tune_collector

    before = gc.get_threshold()
    try:
        tune_collector()
        young, middle, old = gc.get_threshold()
        assert young == GC_YOUNG_THRESHOLD > before[0]
        assert (middle, old) == before[1:]
        assert gc.get_freeze_count() > 0  # start-up objects are out of the generations
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
