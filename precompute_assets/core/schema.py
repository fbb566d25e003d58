"""Every table of the store database: the batch ledger, the reports, and step outputs.

Only writers create them (``create_store_schema``, on a run's first use of the store); readers
never write, so a reader works on a read-only file and never waits on a writer's lock.
"""

from __future__ import annotations

import weakref

import sqlalchemy as sa
from sqlalchemy import Engine

from precompute_assets.core.db import write_transaction

metadata = sa.MetaData()
_created: weakref.WeakSet[Engine] = weakref.WeakSet()

# The batch ledger ---------------------------------------------------------------------------

jobs = sa.Table(
    "precompute_jobs",
    metadata,
    sa.Column("tool", sa.String(100), primary_key=True),
    sa.Column("scope", sa.String(200), primary_key=True),
    sa.Column("generation", sa.Integer, primary_key=True),
    sa.Column("job_id", sa.String(32), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # open, closed or superseded
    sa.Column("extent", sa.Text, nullable=False),
    sa.Column("batch_size", sa.Integer, nullable=False),
    sa.Column("opened_at", sa.Float, nullable=False),
    sa.Column("closed_at", sa.Float),
)

batches = sa.Table(
    "precompute_batches",
    metadata,
    sa.Column("tool", sa.String(100), primary_key=True),
    sa.Column("scope", sa.String(200), primary_key=True),
    sa.Column("generation", sa.Integer, primary_key=True),
    sa.Column("batch", sa.Integer, primary_key=True),
    sa.Column("contribution", sa.Text, nullable=False),
    sa.Column("scanned_at", sa.Float, nullable=False),
)

# One row per (tool, scope) that always exists once a job was opened: opening a job locks it,
# so concurrent openers on PostgreSQL queue up instead of racing to the same generation.
scope_locks = sa.Table(
    "precompute_scope_locks",
    metadata,
    sa.Column("tool", sa.String(100), primary_key=True),
    sa.Column("scope", sa.String(200), primary_key=True),
)

# The reports --------------------------------------------------------------------------------

headers = sa.Table(
    "precompute_report_headers",
    metadata,
    sa.Column("tool", sa.String(100), primary_key=True),
    sa.Column("scope", sa.String(200), primary_key=True),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("computed_at", sa.Float, nullable=False),
    sa.Column("watermark", sa.Text, nullable=False),
    sa.Column("entity_count", sa.BigInteger, nullable=False),
    sa.Column("row_count", sa.Integer, nullable=False),
    sa.Column("unused_count", sa.Integer, nullable=False),
    sa.Column("batch_count", sa.Integer, nullable=False),
    sa.Column("shard_count", sa.Integer, nullable=False),
    sa.Column("duration_s", sa.Float, nullable=False),
    sa.Column("utilisation", sa.Float),
    sa.Column("run_id", sa.String(64)),
    sa.Column("summary", sa.Text, nullable=False),
)

rows_table = sa.Table(
    "precompute_report_rows",
    metadata,
    sa.Column("tool", sa.String(100), primary_key=True),
    sa.Column("scope", sa.String(200), primary_key=True),
    sa.Column("entity_type", sa.String(100), primary_key=True),
    sa.Column("entity_id", sa.String(200), primary_key=True),
    sa.Column("unused", sa.Boolean, nullable=False),
    sa.Column("usage_count", sa.BigInteger, nullable=False),
    sa.Column("last_used", sa.BigInteger),
    sa.Column("detail", sa.Text),
)

# What Dagster passes between steps ------------------------------------------------------------

step_outputs = sa.Table(
    "precompute_step_outputs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("step_key", sa.String(255), primary_key=True),
    sa.Column("output_name", sa.String(255), primary_key=True),
    # '' for an output that is not one of a dynamic output's mapped copies.
    sa.Column("mapping_key", sa.String(255), primary_key=True),
    sa.Column("payload", sa.Text, nullable=False),  # JSON: data, never code
    sa.Column("created_at", sa.Float, nullable=False, index=True),
)


def create_store_schema(engine: Engine) -> None:
    """Create the missing tables, once per engine and process; safe when several processes
    start on a new database at once."""
    if engine in _created:
        return
    try:
        # On SQLite the write lock serialises the creators; PostgreSQL lets one of them win.
        with write_transaction(engine) as connection:
            metadata.create_all(connection)
    except (sa.exc.ProgrammingError, sa.exc.IntegrityError, sa.exc.OperationalError) as error:
        if "already exists" not in str(error) and "duplicate key" not in str(error):
            raise
        metadata.create_all(engine)
    _created.add(engine)


def is_missing_table(error: sa.exc.DBAPIError) -> bool:
    """Whether ``error`` says a table does not exist (a store no writer has used yet)."""
    text = str(error.orig)
    return "no such table" in text or ("relation" in text and "does not exist" in text)
