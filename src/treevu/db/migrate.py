"""Programmatic Alembic: ``treevu db upgrade``, and the start-up "at newest migration" check.

Alembic is imported only by what migrates: the start-up check reads the revision table and the
migration files' ``revision`` / ``down_revision`` lines itself (:func:`stored_revision`,
:func:`newest_revision`; a test holds them equal to Alembic's answers). Alembic, Mako and
Pygments cost a server process ~14 MB that a socket node has no other use for.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, inspect, pool, text

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
_REVISION_LINE = re.compile(
    r"""^(revision|down_revision)\s*(?::[^=]*)?=\s*(?:["'](\w+)["']|None)""", re.M
)


def newest_revision() -> str | None:
    """The head of the migrations: the one revision no other names as its ``down_revision``."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (MIGRATIONS / "versions").glob("*.py"):
        for name, value in _REVISION_LINE.findall(script.read_text(encoding="utf-8")):
            if value:
                (revisions if name == "revision" else parents).add(value)
    heads = sorted(revisions - parents)
    if len(heads) > 1:
        raise RuntimeError(f"the migrations have more than one head: {heads}")
    return heads[0] if heads else None


def stored_revision(sync_url: str) -> str | None:
    """The revision the database is at (None: never migrated)."""
    engine = create_engine(sync_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def alembic_config(sync_url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sync_url.replace("%", "%%"))
    return cfg


def upgrade(sync_url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(sync_url), revision)


def downgrade(sync_url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(sync_url), revision)


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(sync_url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(sync_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
