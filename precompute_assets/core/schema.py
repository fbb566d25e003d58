"""Every table of the store database (the batch ledger, the reports, step outputs) and its
schema version.

The schema is versioned with Alembic (``migrations/``): ``precompute migrate`` brings a store to
this release's revision. A writer's first use creates a new, empty store's schema; a writer or
reader on an older (or newer) revision stops with ``SchemaVersionError``, saying to migrate. A
reader never writes: on a store with no tables yet it finds no report.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from precompute_assets.core.db import safe_url, write_transaction
from precompute_assets.core.errors import SchemaVersionError

# The revision these tables are; the newest file in migrations/versions.
HEAD_REVISION = "0005"
VERSION_TABLE = "alembic_version"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"

metadata = sa.MetaData()
_current: weakref.WeakSet[Engine] = weakref.WeakSet()


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
    sa.Column("closed_at", sa.Float, index=True),
    # JSON list of each batch's first key, when cut on the actual keys; NULL: cut evenly.
    sa.Column("batch_starts", sa.Text),
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

# A shard's batches folded into one contribution (the combiner lifted, as Beam's workers do): it
# replaces the batch entries of batches first_batch..last_batch. A job's partials never overlap.
partials = sa.Table(
    "precompute_partials",
    metadata,
    sa.Column("tool", sa.String(100), primary_key=True),
    sa.Column("scope", sa.String(200), primary_key=True),
    sa.Column("generation", sa.Integer, primary_key=True),
    sa.Column("first_batch", sa.Integer, primary_key=True),
    sa.Column("last_batch", sa.Integer, nullable=False),
    sa.Column("contribution", sa.Text, nullable=False),
    sa.Column("lifted_at", sa.Float, nullable=False),
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
    sa.Column("tenant", sa.String(200)),
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

# What the sensors and readers know of each scope ------------------------------------------------

# Per (tool, scope): the source as last seen (tenant, utilisation, watermark, or gone), by a
# sensor's sync of the catalogue's changes or by the run that committed the scope's report;
# whether its partition was asked for; its last refresh request and its last recorded
# freshness. Sensors read and write these rows instead of asking the source and Dagster about
# the whole fleet on every tick; the report service lists and checks scopes here, so that it
# reads the store alone.
scope_states = sa.Table(
    "precompute_scope_states",
    metadata,
    sa.Column("tool", sa.String(100), primary_key=True),
    sa.Column("scope", sa.String(200), primary_key=True),
    sa.Column("tenant", sa.String(200)),
    sa.Column("utilisation", sa.Float),
    sa.Column("watermark", sa.Text),  # None once the scope is gone from the source
    sa.Column("seen_at", sa.Float, nullable=False),
    sa.Column("registered", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("requested_at", sa.Float),
    sa.Column("request_key", sa.Text),
    sa.Column("fresh_recorded", sa.Boolean),
)

# Per tool: where in the catalogue's feed of changes the sensors have read up to.
catalogue_cursors = sa.Table(
    "precompute_catalogue_cursors",
    metadata,
    sa.Column("tool", sa.String(100), primary_key=True),
    sa.Column("cursor", sa.Text),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# The report service's API keys, hashed: a key is shown once, when it is created.
api_keys = sa.Table(
    "precompute_api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("tenant", sa.String(200)),  # NULL: an operator's key, which sees every tenant
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
)

# One row per (tool, scope) once a refresh was asked for on demand: requesters lock it, so that
# every service worker and command asking at once finds the one run the first of them launched.
refresh_requests = sa.Table(
    "precompute_refresh_requests",
    metadata,
    sa.Column("tool", sa.String(100), primary_key=True),
    sa.Column("scope", sa.String(200), primary_key=True),
    sa.Column("run_id", sa.String(64)),
    sa.Column("requested_at", sa.Float),
)

# Remediation: plans, actions and their batches (the audit log), admin sessions ---------------

# One row per plan an admin reviewed, and what became of it: applying it, or undoing an applied
# one. Who (the key's id), when, which report generation it came from, its status and result.
# An apply is undone at most once (``undoes`` is unique).
actions = sa.Table(
    "precompute_actions",
    metadata,
    sa.Column("action_id", sa.String(32), primary_key=True),
    sa.Column("tool", sa.String(100), nullable=False),
    sa.Column("scope", sa.String(200), nullable=False),
    sa.Column("tenant", sa.String(200)),
    sa.Column("kind", sa.String(8), nullable=False),  # apply or undo
    sa.Column("undoes", sa.String(32), unique=True),  # an undo's apply
    sa.Column("generation", sa.Integer, nullable=False),  # of the report the plan came from
    sa.Column("watermark", sa.Text, nullable=False),  # that report's
    sa.Column("entities", sa.Text, nullable=False),  # JSON: [{"id": ..., "name": ...}]
    sa.Column("params", sa.Text, nullable=False),  # JSON: the report's job params
    sa.Column("key_id", sa.String(32), nullable=False),
    # planned, queued, running, done, refused or failed
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("message", sa.Text),
    sa.Column("run_id", sa.String(64)),
    sa.Column("refresh_run_id", sa.String(64)),
    sa.Column("applied_count", sa.Integer),
    sa.Column("skipped_count", sa.Integer),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("submitted_at", sa.Float),
    sa.Column("finished_at", sa.Float),
)

# Each batch of an action: its entities, then (prepared) those applied and skipped with what
# undo needs, written while the source's transaction is open, then done once it committed.
action_batches = sa.Table(
    "precompute_action_batches",
    metadata,
    sa.Column("action_id", sa.String(32), primary_key=True),
    sa.Column("batch", sa.Integer, primary_key=True),
    sa.Column("entities", sa.Text, nullable=False),  # JSON list of entity ids
    sa.Column("applied", sa.Text),  # JSON list, once prepared
    sa.Column("skipped", sa.Text),  # JSON list, once prepared
    sa.Column("undo", sa.Text),  # JSON, what the tool's apply returned
    sa.Column("prepared_at", sa.Float),
    sa.Column("done_at", sa.Float),
)

# Signed-in admin pages: the hash of each session's cookie, its key and its CSRF token.
admin_sessions = sa.Table(
    "precompute_admin_sessions",
    metadata,
    sa.Column("session_hash", sa.String(64), primary_key=True),
    sa.Column("key_id", sa.String(32), nullable=False),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
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


sa.Index("ix_precompute_report_headers_tool_tenant", headers.c.tool, headers.c.tenant)
sa.Index("ix_precompute_scope_states_tool_tenant", scope_states.c.tool, scope_states.c.tenant)
sa.Index("ix_precompute_actions_tenant_created", actions.c.tenant, actions.c.created_at)
sa.Index(
    "ix_precompute_actions_scope_created", actions.c.tool, actions.c.scope, actions.c.created_at
)


def create_store_schema(engine: Engine) -> None:
    """Make sure a writer may use the store: create a new store's schema, refuse an old one.

    Checked once per engine and process; safe when several processes start on a new store.
    """
    if engine in _current:
        return
    with write_transaction(engine) as connection:
        _serialise_migrations(connection)
        revision = schema_revision(connection)
        if revision is None and not _has_tables(connection):
            _upgrade(connection)
        elif revision != HEAD_REVISION:
            raise _version_error(engine, revision)
    _current.add(engine)


def check_store_schema(connection: Connection) -> bool:
    """For a reader: False for a store with no tables yet; SchemaVersionError for another
    revision than this release's; True otherwise."""
    revision = schema_revision(connection)
    if revision == HEAD_REVISION:
        return True
    if revision is None and not _has_tables(connection):
        return False
    raise _version_error(connection.engine, revision)


def migrate(engine: Engine) -> tuple[str | None, str]:
    """Bring the store to this release's schema; the revisions before and after.

    A store made before migrations existed (its tables, no version) is taken as revision 0001.
    """
    with write_transaction(engine) as connection:
        _serialise_migrations(connection)
        before = schema_revision(connection)
        if before is None and _has_tables(connection):
            before = "0001"
            _upgrade(connection, stamp="0001")
        if before != HEAD_REVISION:
            _upgrade(connection)
    _current.discard(engine)
    return before, HEAD_REVISION


def schema_revision(connection: Connection) -> str | None:
    """The store's Alembic revision, or None for a store without one."""
    if not sa.inspect(connection).has_table(VERSION_TABLE):
        return None
    return connection.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalar()


def _has_tables(connection: Connection) -> bool:
    return sa.inspect(connection).has_table(jobs.name)


def _upgrade(connection: Connection, stamp: str | None = None) -> None:
    """Alembic's upgrade to head (or its stamp), on this connection and its transaction."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    if stamp is None:
        command.upgrade(config, "head")
    else:
        command.stamp(config, stamp)


def _serialise_migrations(connection: Connection) -> None:
    # SQLite's write lock serialises the creators already; PostgreSQL's would race.
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('precompute_schema'))")


def _version_error(engine: Engine, revision: str | None) -> SchemaVersionError:
    found = (
        "no schema version (a store made before migrations)"
        if revision is None
        else (f"schema revision {revision}")
    )
    return SchemaVersionError(
        f"the store at {safe_url(engine.url)} has {found}; this release needs revision "
        f"{HEAD_REVISION}: run `precompute migrate`"
    )
