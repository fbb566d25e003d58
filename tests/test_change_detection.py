"""Staleness never lies: whatever another application writes, a changed report is seen changed.

Hypothesis applies random writes of every kind the tools read, in plain ``sqlite3`` as another
application (or an edit by hand) would, to a copy of a demo source after both tools' reports of
its largest space were computed. Whenever a recompute now would give a different report, the
reader must say the source changed (or, across a midnight, that the window moved).
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from precompute_assets.core.db import create_engine_for, sqlite_url
from precompute_assets.core.ledger import Ledger
from precompute_assets.core.phases import finalise_job, open_job, run_shard
from precompute_assets.core.reader import ReportReader
from precompute_assets.core.report_store import ReportStore
from precompute_assets.demo.source import REFERENCE_TIME, DemoScale, generate_source
from tool_plugins.unused_fields import UnusedFields
from tool_plugins.unused_work_types import UnusedWorkTypes

pytestmark = pytest.mark.slow

TOOLS = {tool.name: tool for tool in (UnusedFields(), UnusedWorkTypes())}
YEAR = 365 * 86_400
# Times a write may give: recent, older than any window, missing, in the far future.
TIMES = [REFERENCE_TIME - 10 * 86_400, REFERENCE_TIME - 3 * YEAR, None, 4_102_444_800]


@pytest.fixture(scope="module")
def base_source(tmp_path_factory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("change_source")
    url = sqlite_url(folder / "source.db")
    generate_source(url, DemoScale(tenants=1, spaces=3, work_items=2_000, seed=13))
    with sqlite3.connect(folder / "source.db") as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        scope = connection.execute(
            "SELECT s.key FROM spaces s JOIN work_items w ON w.space_id = s.id"
            " GROUP BY s.key ORDER BY COUNT(*) DESC LIMIT 1"
        ).fetchone()[0]
    return folder / "source.db", scope


def compute(source_url: str, store_url: str, tool_name: str, scope: str) -> pd.DataFrame:
    """The report as a run computes it, through the framework's phase functions."""
    tool = TOOLS[tool_name]
    source = create_engine_for(source_url, read_only=True)
    store_engine = create_engine_for(store_url)
    ledger, store = Ledger(store_engine), ReportStore(store_engine)
    plan = open_job(tool, scope, source, ledger, 300)
    for shard in plan.shards(2):
        run_shard(tool, plan, shard, source, ledger)
    report = finalise_job(tool, plan, source, ledger, store, shard_count=2)
    source.dispose()
    store_engine.dispose()
    return report.rows


def comparable(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.drop(columns=["detail"]).assign(
        detail=rows["detail"].map(lambda detail: sorted(detail.items()))
    )


# -- writes another application may make ------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """One write: its kind, a pick among candidate rows, and a time for rows that carry one."""

    kind: str
    pick: int
    time: int | None

    def apply(self, connection: sqlite3.Connection, space_id: int) -> None:
        WRITES[self.kind](connection, space_id, self)


def _one(connection: sqlite3.Connection, query: str, pick: int, *params) -> tuple | None:
    rows = connection.execute(query, params).fetchall()
    return rows[pick % len(rows)] if rows else None


def _value(connection, space_id, write):
    return _one(
        connection,
        "SELECT v.work_item_id, v.field_id FROM field_values v"
        " JOIN work_items w ON w.id = v.work_item_id WHERE w.space_id = ?"
        " ORDER BY v.work_item_id, v.field_id",
        write.pick,
        space_id,
    )


def _item(connection, space_id, write):
    return _one(
        connection, "SELECT id FROM work_items WHERE space_id = ? ORDER BY id", write.pick, space_id
    )


def add_value(connection, space_id, write):
    item = _item(connection, space_id, write)
    field = _one(connection, "SELECT id FROM fields ORDER BY id", write.pick // 7)
    if item and field:
        connection.execute(
            "INSERT OR IGNORE INTO field_values VALUES (?, ?, ?)", (item[0], field[0], write.time)
        )


def delete_value(connection, space_id, write):
    if value := _value(connection, space_id, write):
        connection.execute(
            "DELETE FROM field_values WHERE work_item_id = ? AND field_id = ?", value
        )


def retime_value(connection, space_id, write):
    if value := _value(connection, space_id, write):
        connection.execute(
            "UPDATE field_values SET updated_at = ? WHERE work_item_id = ? AND field_id = ?",
            (write.time, *value),
        )


def add_item(connection, space_id, write):
    work_type = _one(connection, "SELECT id FROM work_types ORDER BY id", write.pick)
    connection.execute(
        "INSERT INTO work_items SELECT MAX(id) + 1, ?, ?, ?, ? FROM work_items",
        (space_id, work_type[0], write.time, write.time),
    )


def delete_item(connection, space_id, write):
    if item := _item(connection, space_id, write):
        connection.execute("DELETE FROM work_items WHERE id = ?", item)


def move_item(connection, space_id, write):
    if item := _item(connection, space_id, write):
        other = _one(connection, "SELECT id FROM spaces WHERE id != ?", write.pick, space_id)
        connection.execute("UPDATE work_items SET space_id = ? WHERE id = ?", (other[0], *item))


def retype_item(connection, space_id, write):
    item = _item(connection, space_id, write)
    work_type = _one(connection, "SELECT id FROM work_types ORDER BY id", write.pick // 3)
    if item and work_type:
        connection.execute(
            "UPDATE work_items SET work_type_id = ? WHERE id = ?", (work_type[0], *item)
        )


def recreate_item(connection, space_id, write):
    if item := _item(connection, space_id, write):
        connection.execute("UPDATE work_items SET created_at = ? WHERE id = ?", (write.time, *item))


def unlink_field(connection, space_id, write):
    link = _one(
        connection, "SELECT field_id FROM space_fields WHERE space_id = ?", write.pick, space_id
    )
    if link:
        connection.execute(
            "DELETE FROM space_fields WHERE space_id = ? AND field_id = ?", (space_id, *link)
        )


def link_field(connection, space_id, write):
    field = _one(
        connection,
        "SELECT id FROM fields WHERE id NOT IN (SELECT field_id FROM space_fields"
        " WHERE space_id = ?) ORDER BY id",
        write.pick,
        space_id,
    )
    if field:
        connection.execute("INSERT INTO space_fields VALUES (?, ?)", (space_id, *field))


def unlink_screen(connection, space_id, write):
    if screen := _one(
        connection, "SELECT screen_id FROM space_screens WHERE space_id = ?", write.pick, space_id
    ):
        connection.execute(
            "DELETE FROM space_screens WHERE space_id = ? AND screen_id = ?", (space_id, *screen)
        )


def show_field(connection, space_id, write):
    screen = _one(
        connection, "SELECT screen_id FROM space_screens WHERE space_id = ?", write.pick, space_id
    )
    field = _one(
        connection, "SELECT field_id FROM space_fields WHERE space_id = ?", write.pick, space_id
    )
    if screen and field:
        connection.execute("INSERT OR IGNORE INTO screen_fields VALUES (?, ?)", (*screen, *field))


def hide_field(connection, space_id, write):
    shown = _one(
        connection,
        "SELECT sf.screen_id, sf.field_id FROM screen_fields sf"
        " JOIN space_screens ss ON ss.screen_id = sf.screen_id WHERE ss.space_id = ?",
        write.pick,
        space_id,
    )
    if shown:
        connection.execute("DELETE FROM screen_fields WHERE screen_id = ? AND field_id = ?", shown)


def reorigin_field(connection, space_id, write):
    field = _one(
        connection, "SELECT field_id FROM space_fields WHERE space_id = ?", write.pick, space_id
    )
    if field:
        origin = ("admin", "system", "app")[write.pick % 3]
        connection.execute(
            "UPDATE fields SET origin = ?, name = name || '*' WHERE id = ?", (origin, *field)
        )


def rename_work_type(connection, space_id, write):
    if work_type := _one(
        connection,
        "SELECT work_type_id FROM space_work_types WHERE space_id = ?",
        write.pick,
        space_id,
    ):
        connection.execute("UPDATE work_types SET name = name || '*' WHERE id = ?", work_type)


def unlink_work_type(connection, space_id, write):
    if work_type := _one(
        connection,
        "SELECT work_type_id FROM space_work_types WHERE space_id = ?",
        write.pick,
        space_id,
    ):
        connection.execute(
            "DELETE FROM space_work_types WHERE space_id = ? AND work_type_id = ?",
            (space_id, *work_type),
        )


WRITES: dict[str, Callable[[sqlite3.Connection, int, Write], None]] = {
    function.__name__: function
    for function in (
        add_value,
        delete_value,
        retime_value,
        add_item,
        delete_item,
        move_item,
        retype_item,
        recreate_item,
        unlink_field,
        link_field,
        unlink_screen,
        show_field,
        hide_field,
        reorigin_field,
        rename_work_type,
        unlink_work_type,
    )
}

writes = st.lists(
    st.builds(
        Write,
        kind=st.sampled_from(sorted(WRITES)),
        pick=st.integers(0, 10_000),
        time=st.sampled_from(TIMES),
    ),
    max_size=4,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(writes=writes)
def test_whenever_a_recompute_would_differ_the_reader_says_so(base_source, writes):
    original, scope = base_source
    with tempfile.TemporaryDirectory(prefix="precompute-change-") as folder:
        source_path = Path(folder) / "source.db"
        shutil.copy(original, source_path)
        source_url, store_url = sqlite_url(source_path), sqlite_url(Path(folder) / "store.db")
        stored = {name: compute(source_url, store_url, name, scope) for name in TOOLS}

        with sqlite3.connect(source_path) as connection:
            space_id = connection.execute(
                "SELECT id FROM spaces WHERE key = ?", (scope,)
            ).fetchone()[0]
            for write in writes:
                write.apply(connection, space_id)

        reader = ReportReader(
            TOOLS,
            ReportStore(create_engine_for(store_url, read_only=True)),
            create_engine_for(source_url, read_only=True),
        )
        for name in TOOLS:
            staleness = reader.read(name, scope).staleness
            fresh = compute(source_url, sqlite_url(Path(folder) / f"fresh-{name}.db"), name, scope)
            if not comparable(fresh).equals(comparable(stored[name])):
                assert staleness.source_changed or staleness.window_moved, (name, writes)
            if not writes:
                assert not staleness.source_changed, "nothing written, nothing changed"


# The first or last work item of the space that has field values.
_VALUED_ITEM = (
    "SELECT {end}(v.work_item_id) FROM field_values v"
    " JOIN work_items w ON w.id = v.work_item_id WHERE w.space_id = :space"
)
# Each tracked table, written each way by hand: (what, SQL with :space for the space's id).
HAND_WRITES = [
    ("spaces update", "UPDATE spaces SET name = name || '*' WHERE id = :space"),
    (
        "work item insert",
        "INSERT INTO work_items"
        " SELECT MAX(id) + 1, :space, MIN(work_type_id), 0, 0 FROM work_items",
    ),
    ("work item update", "UPDATE work_items SET updated_at = 1 WHERE space_id = :space"),
    (
        "field value delete",
        f"DELETE FROM field_values WHERE work_item_id = ({_VALUED_ITEM.format(end='MIN')})",
    ),
    (
        "field value update",
        "UPDATE field_values SET updated_at = 2140000000"
        f" WHERE work_item_id = ({_VALUED_ITEM.format(end='MAX')})",
    ),
    (
        "space field delete",
        "DELETE FROM space_fields WHERE space_id = :space AND field_id ="
        " (SELECT MIN(field_id) FROM space_fields WHERE space_id = :space)",
    ),
    (
        "screen field insert",
        "INSERT INTO screen_fields SELECT MIN(ss.screen_id), MAX(f.field_id)"
        " FROM space_screens ss, space_fields f"
        " WHERE ss.space_id = :space AND f.space_id = :space",
    ),
    ("space screens delete", "DELETE FROM space_screens WHERE space_id = :space"),
    (
        "space work type delete",
        "DELETE FROM space_work_types WHERE space_id = :space AND work_type_id ="
        " (SELECT MIN(work_type_id) FROM space_work_types WHERE space_id = :space)",
    ),
    (
        "field update",
        "UPDATE fields SET origin = 'system' WHERE id ="
        " (SELECT MAX(field_id) FROM space_fields WHERE space_id = :space)",
    ),
    (
        "work type update",
        "UPDATE work_types SET name = name || '*' WHERE id ="
        " (SELECT MAX(work_type_id) FROM space_work_types WHERE space_id = :space)",
    ),
    ("work item delete", "DELETE FROM work_items WHERE space_id = :space"),
]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_every_kind_of_write_by_hand_moves_the_watermark_of_its_space_only(
    backend, tmp_path, request
):
    url = (
        sqlite_url(tmp_path / "s.db")
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    generate_source(url, DemoScale(tenants=1, spaces=3, work_items=600, seed=13))
    engine = create_engine_for(url)
    tool = UnusedFields()
    with engine.connect() as connection:
        scopes = list(tool.catalogue.scopes(connection))
        space, other = scopes[0], scopes[1]
        space_id = connection.exec_driver_sql(
            f"SELECT id FROM spaces WHERE key = '{space}'"
        ).scalar()
    for what, statement in HAND_WRITES:
        with engine.connect() as connection:
            before = tool.catalogue.watermark(connection, scopes)
        with engine.begin() as connection:
            assert connection.execute(sa.text(statement), {"space": space_id}).rowcount > 0, what
        with engine.connect() as connection:
            after = tool.catalogue.watermark(connection, scopes)
        assert int(after[space]) > int(before[space]), what
        assert after[other] == before[other], f"{what} moved another space's watermark"
    engine.dispose()
