"""The range every id and count from a client is held to before it reaches the database.

``Integer`` columns are 32-bit on PostgreSQL and MariaDB (SQLite's driver refuses anything past
64 bits), so a larger value must be refused as bad input rather than overflow in the driver.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field

from treevu.services.errors import bad_request

MAX_INT = 2**31 - 1
#: Counts of people under this are shown as ``"<5"`` (SPEC §5): team views and analytics.
MIN_CELL: Final = 5

#: A row id as a client may send it.
RowId = Annotated[int, Field(ge=1, le=MAX_INT)]


def check_idempotency_key(key: str | None) -> None:
    """An ``Idempotency-Key`` header is 1 to 255 characters (the column's width)."""
    if key is not None and not 1 <= len(key) <= 255:
        raise bad_request("Idempotency-Key", "must be 1 to 255 characters")
