"""``treevu`` commands run in this process with Typer's ``CliRunner``, against a test database
(its settings passed as the ``TREEVU_*`` variables the command reads)."""

from __future__ import annotations

from typer.testing import CliRunner

from tests.conftest import Database
from treevu.cli import app


def treevu(db: Database, *args: str) -> str:
    """Run ``treevu ARGS`` on ``db``; fails the test unless it exits 0. Returns its output."""
    settings = db.settings()
    env = {
        "TREEVU_DATABASE_URL": db.url,
        "TREEVU_JWT_SECRET": settings.jwt_secret,
        "TREEVU_ENCRYPTION_KEY": settings.encryption_key,
        "COLUMNS": "200",  # rich wraps its messages at the terminal width
        "NO_COLOR": "1",
    }
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output
