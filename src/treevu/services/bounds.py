"""The range every id and count from a client is held to before it reaches the database.

``Integer`` columns are 32-bit on PostgreSQL and MariaDB (SQLite's driver refuses anything past
64 bits), so a larger value must be refused as bad input rather than overflow in the driver.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

MAX_INT = 2**31 - 1

#: A row id as a client may send it.
RowId = Annotated[int, Field(ge=1, le=MAX_INT)]
