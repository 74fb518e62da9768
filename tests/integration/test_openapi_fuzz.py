"""Fuzz every REST operation of ``/openapi.json`` on a live server: no input may cause a 5xx.

Schemathesis generates schema-conforming and schema-violating requests and sends them over
loopback to a seeded SQLite server, once with an admin token (every route reaches its service)
and once without one (every route must refuse cleanly). Only ``not_a_server_error`` is checked;
the response shapes are the transport tests' business. Seeded, deterministic and bounded, so
the whole fuzz takes seconds.

The document is built from ``create_app`` at import, so that pytest collects one test per
operation, and :func:`test_fuzzed_document_is_the_served_one` holds it to what the live server
serves. (``schemathesis.pytest.from_fixture``, which would load it from the server, reads
``Node._nodeid``, which pytest 9.2 no longer has.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig

from tests.conftest import Database, LiveServer, seed_and_score, token_for
from treevu.app import openapi_document
from treevu.db.migrate import upgrade

SEED = 20261101
MAX_EXAMPLES = 25
DOCUMENT: dict[str, Any] = openapi_document(
    Database("sqlite", "sqlite+aiosqlite:///:memory:").settings()
)
CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": SEED,
        "generation": {
            "mode": "all",  # schema-conforming and schema-violating requests
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",  # no example database left behind in the work tree
        },
    }
)
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)

Test = TypeVar("Test", bound=Callable[..., None])


def each_operation(test: Test) -> Test:
    """``schema.parametrize()``, typed: one test per operation of the document."""
    parametrized: Test = schema.parametrize()(test)
    return parametrized


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Database, LiveServer]]:
    """One seeded SQLite server for the whole module (the fuzz may change its data)."""
    path: Path = tmp_path_factory.mktemp("fuzz") / "treevu.db"
    db = Database("sqlite", f"sqlite+aiosqlite:///{path}")
    upgrade(db.settings().sync_database_url)
    seed_and_score(db)
    with LiveServer(db.settings()) as server:
        yield db, server


def test_fuzzed_document_is_the_served_one(fuzz_target: tuple[Database, LiveServer]) -> None:
    served = httpx.get(f"{fuzz_target[1].url}/openapi.json")
    assert served.status_code == 200
    assert served.json() == DOCUMENT
    assert len(list(schema.get_all_operations())) == sum(
        len(operations) for operations in DOCUMENT["paths"].values()
    )


@each_operation
def test_no_request_makes_a_server_error_for_an_admin(
    case: schemathesis.Case[Any], fuzz_target: tuple[Database, LiveServer]
) -> None:
    db, server = fuzz_target
    case.call_and_validate(
        base_url=server.url,
        headers={"Authorization": f"Bearer {token_for(db, 1)}"},
        checks=[not_a_server_error],
    )


@each_operation
def test_no_request_makes_a_server_error_without_a_token(
    case: schemathesis.Case[Any], fuzz_target: tuple[Database, LiveServer]
) -> None:
    case.call_and_validate(base_url=fuzz_target[1].url, checks=[not_a_server_error])
