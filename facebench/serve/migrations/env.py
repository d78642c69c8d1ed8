"""Alembic environment: runs the migrations online against ``sqlalchemy.url`` of the config."""

from __future__ import annotations

from alembic import context

from facebench.serve.db import Base, make_engine

config = context.config
engine = make_engine(config.get_main_option("sqlalchemy.url"))
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
