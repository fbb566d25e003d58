"""The demo source's tables: a Jira-like, multi-tenant configuration and its work items.

All ids are INTEGER and all times are INTEGER unix seconds (UTC), so the same SQL runs unchanged
on SQLite and PostgreSQL. Ids carry no sequences (``autoincrement=False``): the generator assigns
them, which keeps a dataset identical across backends and keeps each space's work items in one
contiguous id block, the key range the framework cuts into batches.

Secondary indexes are kept apart from the tables (``POST_LOAD_INDEXES``) because building an
index once over loaded rows is much faster than maintaining it row by row during a bulk load.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

metadata = sa.MetaData()


def _id(name: str = "id") -> sa.Column:
    """An application-assigned integer key (no SERIAL on PostgreSQL)."""
    return sa.Column(name, sa.Integer, primary_key=True, autoincrement=False)


def _int(name: str, *, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.Integer, nullable=nullable)


tenants = sa.Table("tenants", metadata, _id(), sa.Column("name", sa.Text))

spaces = sa.Table(
    "spaces",
    metadata,
    _id(),
    _int("tenant_id"),
    sa.Column("key", sa.Text, unique=True, nullable=False),
    sa.Column("name", sa.Text),
    _int("updated_at"),
)

fields = sa.Table(
    "fields",
    metadata,
    _id(),
    _int("tenant_id"),
    sa.Column("name", sa.Text),
    sa.Column(
        "origin",
        sa.Text,
        sa.CheckConstraint("origin IN ('admin','system','app')", name="ck_fields_origin"),
        nullable=False,
    ),
    _int("created_at"),
)

space_fields = sa.Table("space_fields", metadata, _id("space_id"), _id("field_id"))

screens = sa.Table("screens", metadata, _id(), _int("tenant_id"), sa.Column("name", sa.Text))

screen_fields = sa.Table("screen_fields", metadata, _id("screen_id"), _id("field_id"))

space_screens = sa.Table("space_screens", metadata, _id("space_id"), _id("screen_id"))

work_types = sa.Table("work_types", metadata, _id(), _int("tenant_id"), sa.Column("name", sa.Text))

space_work_types = sa.Table("space_work_types", metadata, _id("space_id"), _id("work_type_id"))

work_items = sa.Table(
    "work_items",
    metadata,
    _id(),
    _int("space_id", nullable=False),
    _int("work_type_id", nullable=False),
    _int("created_at"),
    _int("updated_at"),
)

# WITHOUT ROWID clusters the rows by (work_item_id, field_id), so a batch's key-range scan
# reads contiguous pages instead of hopping through a rowid table.
field_values = sa.Table(
    "field_values",
    metadata,
    _id("work_item_id"),
    _id("field_id"),
    _int("updated_at"),
    sqlite_with_rowid=False,
)

# One change version per space, moved by triggers on every table the tools read (changes.py):
# the source's clock at the space's last change. The key stays when the space is deleted, so
# the feed of changes (versions after a cursor) tells which scope went.
space_changes = sa.Table(
    "space_changes",
    metadata,
    _id("space_id"),
    sa.Column("space_key", sa.Text, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
)

# The source's change clock: one row, advanced by every tracked write, in commit order.
change_clock = sa.Table(
    "change_clock",
    metadata,
    _id(),
    sa.Column("version", sa.BigInteger, nullable=False),
)

source_meta = sa.Table(
    "source_meta",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text),
)

TABLES: tuple[sa.Table, ...] = tuple(metadata.sorted_tables)

# Everything but the work items, their values and the metadata: small, drawn before the items.
CONFIGURATION_TABLES: tuple[sa.Table, ...] = (
    tenants,
    spaces,
    fields,
    space_fields,
    screens,
    screen_fields,
    space_screens,
    work_types,
    space_work_types,
)

POST_LOAD_INDEXES: tuple[sa.Index, ...] = (
    # A scope's key range and its per-batch scans.
    sa.Index("ix_work_items_space_id", work_items.c.space_id, work_items.c.id),
    # Covers COUNT and MAX(updated_at) per space: the tools' watermark query reads only this.
    sa.Index("ix_work_items_space_updated", work_items.c.space_id, work_items.c.updated_at),
    # The feed of changes: the spaces whose version is above a cursor.
    sa.Index("ix_space_changes_version", space_changes.c.version),
)


def create_table_statements(dialect: Dialect) -> list[str]:
    """CREATE TABLE statements only; the secondary indexes come after the load."""
    return [str(sa.schema.CreateTable(table).compile(dialect=dialect)) for table in TABLES]


def create_index_statements(dialect: Dialect) -> list[str]:
    return [
        str(sa.schema.CreateIndex(index).compile(dialect=dialect)) for index in POST_LOAD_INDEXES
    ]


def drop_table_statements() -> list[str]:
    return [f"DROP TABLE IF EXISTS {table.name}" for table in reversed(TABLES)]
