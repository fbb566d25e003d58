"""Alembic's environment: migrate the connection ``precompute_assets.core.schema`` hands over."""

from alembic import context

from precompute_assets.core.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
