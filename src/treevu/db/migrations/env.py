"""Alembic environment: runs migrations over the synchronous twin of the configured URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from treevu.db import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
if not url:
    raise RuntimeError("sqlalchemy.url is not set for the migrations")

connectable = config.attributes.get("connection")
if connectable is None:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
else:
    context.configure(connection=connectable, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
