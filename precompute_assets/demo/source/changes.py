"""Change versions per space, kept by triggers: the demo source's watermark and change feed.

Every insert, update or delete of a row the tools read advances the source's change clock and
sets the version of each space the row belongs to to it, whoever writes (the framework, another
application, an edit by hand in SQL). A version only grows, so, unlike a latest-update time, one
future timestamp cannot freeze it and a deletion moves it; and every version is new, so a space
re-created under an old key never repeats a version a stored report holds.

The clock is one row that each writing transaction updates: writers take its lock in turn, so
versions are given in commit order, and the spaces changed since a reader's cursor are exactly
those with a version above it (``Spaces.changes``). A real source would read the same from its
change-data-capture position; here the price is that writers of tracked tables serialise.

SQLite runs the triggers once per row; PostgreSQL once per statement, over its transition
tables, so a bulk write bumps each space once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from precompute_assets.demo.source import schema

EVENTS = ("insert", "update", "delete")


@dataclass(frozen=True)
class Tracked:
    """A table the tools read, and how its rows ``r`` lead to the spaces they belong to."""

    table: sa.Table
    spaces: str  # SELECT <space id> AS space_id FROM {rows} [JOIN ...]


TRACKED: tuple[Tracked, ...] = (
    Tracked(schema.spaces, "SELECT r.id AS space_id FROM {rows}"),
    Tracked(schema.work_items, "SELECT r.space_id AS space_id FROM {rows}"),
    Tracked(
        schema.field_values,
        "SELECT w.space_id AS space_id FROM {rows} JOIN work_items w ON w.id = r.work_item_id",
    ),
    Tracked(schema.space_fields, "SELECT r.space_id AS space_id FROM {rows}"),
    Tracked(schema.space_screens, "SELECT r.space_id AS space_id FROM {rows}"),
    Tracked(schema.space_work_types, "SELECT r.space_id AS space_id FROM {rows}"),
    Tracked(
        schema.fields,
        "SELECT a.space_id AS space_id FROM {rows} JOIN space_fields a ON a.field_id = r.id",
    ),
    Tracked(
        schema.screen_fields,
        "SELECT a.space_id AS space_id FROM {rows}"
        " JOIN space_screens a ON a.screen_id = r.screen_id",
    ),
    Tracked(
        schema.work_types,
        "SELECT a.space_id AS space_id FROM {rows}"
        " JOIN space_work_types a ON a.work_type_id = r.id",
    ),
)

# Advance the clock (its row lock orders the writers), then stamp every space the rows belong
# to; a deleted space keeps its key.
_TICK = "UPDATE change_clock SET version = version + 1 WHERE id = 1"
_BUMP = (
    "INSERT INTO space_changes (space_id, space_key, version)"
    " SELECT DISTINCT s.space_id, COALESCE(sp.key, ''),"
    " (SELECT version FROM change_clock WHERE id = 1)"
    " FROM ({spaces}) AS s LEFT JOIN spaces sp ON sp.id = s.space_id"
    " WHERE s.space_id IS NOT NULL"
    " ON CONFLICT (space_id) DO UPDATE SET version = excluded.version, space_key = CASE"
    " WHEN excluded.space_key = '' THEN space_changes.space_key ELSE excluded.space_key END"
)


def initial_versions_statements(start: int) -> list[str]:
    """Every space at a version of its own from ``start`` (a time in microseconds, above any
    earlier source's), and the clock after them."""
    return [
        "INSERT INTO space_changes (space_id, space_key, version)"
        f" SELECT id, key, {int(start)} + id FROM spaces",
        "INSERT INTO change_clock (id, version)"
        f" SELECT 1, {int(start)} + COALESCE(MAX(id), 0) FROM spaces",
    ]


def trigger_statements(dialect_name: str) -> list[str]:
    """The statements that install change tracking on every tracked table."""
    if dialect_name == "sqlite":
        return [statement for tracked in TRACKED for statement in _sqlite_triggers(tracked)]
    if dialect_name == "postgresql":
        return [statement for tracked in TRACKED for statement in _postgres_triggers(tracked)]
    raise ValueError(f"change tracking supports SQLite and PostgreSQL, not {dialect_name}")


def _sqlite_triggers(tracked: Tracked) -> Iterator[str]:
    name = tracked.table.name
    columns = [column.name for column in tracked.table.columns]
    for event in EVENTS:
        images = {"insert": ["NEW"], "delete": ["OLD"], "update": ["OLD", "NEW"]}[event]
        bumps = " ".join(
            f"{_TICK}; "
            + _BUMP.format(spaces=tracked.spaces.format(rows=_sqlite_row(image, columns)))
            + ";"
            for image in images
        )
        yield (
            f"CREATE TRIGGER {name}_{event}_changes AFTER {event.upper()} ON {name}"
            f" BEGIN {bumps} END"
        )


def _sqlite_row(image: str, columns: list[str]) -> str:
    values = ", ".join(f"{image}.{column} AS {column}" for column in columns)
    return f"(SELECT {values}) AS r"


def _postgres_triggers(tracked: Tracked) -> Iterator[str]:
    name = tracked.table.name
    for event in EVENTS:
        function = f"{name}_{event}_changes"
        rows = {
            "insert": "new_rows r",
            "delete": "old_rows r",
            "update": "(SELECT * FROM old_rows UNION ALL SELECT * FROM new_rows) r",
        }[event]
        referencing = {
            "insert": "NEW TABLE AS new_rows",
            "delete": "OLD TABLE AS old_rows",
            "update": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        }[event]
        bump = _BUMP.format(spaces=tracked.spaces.format(rows=rows))
        yield (
            f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$ BEGIN {_TICK}; {bump}; RETURN NULL; END $$"
        )
        yield (
            f"CREATE TRIGGER {function} AFTER {event.upper()} ON {name}"
            f" REFERENCING {referencing} FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
        )
