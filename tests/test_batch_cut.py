"""Batches cut on the actual keys hold the batch size of entities, whatever the gaps in the keys.

The source: a demo space whose upper half of work items (and their field values) moved 10^9 ids
up, so its keys are two clusters with a gap of a billion between them. Cut evenly, the key range
puts each cluster in one batch and leaves the batches between empty; cut on the keys, every
batch holds ``BATCH`` work items. The report is the same either way, and as before the move.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from precompute_assets.checker import assert_tool_obeys_contract
from precompute_assets.contract import Extent, ScopeCatalogue
from precompute_assets.core.db import create_engine_for, sqlite_url
from precompute_assets.core.errors import ToolContractError
from precompute_assets.core.ledger import Ledger
from precompute_assets.core.phases import finalise_job, open_job, run_shard
from precompute_assets.core.plan import JobPlan, tile
from precompute_assets.core.report_store import ReportStore
from precompute_assets.demo import Spaces
from precompute_assets.demo.source import DemoScale, generate_source
from tool_plugins.unused_fields import UnusedFields

GAP = 10**9
BATCH = 400
NOW = 1_750_000_000.0  # one reference time for every job, so reports compare equal


class SpacesWithoutStarts(Spaces):
    """The demo's catalogue as one that gives no batch starts (the contract's default)."""

    batch_starts = ScopeCatalogue.batch_starts


class EvenlyCutFields(UnusedFields):
    catalogue = SpacesWithoutStarts(counted="space_fields", limit=700)


def _report(tool: UnusedFields, source: sa.Engine, scope: str, store_url: str):
    """The plan and report of one job through the framework's phases, shard by shard."""
    store_engine = create_engine_for(store_url)
    ledger = Ledger(store_engine)
    plan = open_job(tool, scope, source, ledger, BATCH, now=NOW)
    shards = plan.shards(3)
    for shard in shards:
        run_shard(tool, plan, shard, source, ledger)
    report = finalise_job(tool, plan, source, ledger, ReportStore(store_engine), shard_count=3)
    store_engine.dispose()
    return plan, report.rows.sort_values("entity_id").reset_index(drop=True)


@pytest.fixture(scope="module")
def gapped(tmp_path_factory) -> dict[str, Any]:
    """The gapped source, its space, and that space's report from before the gap was made."""
    folder = tmp_path_factory.mktemp("gapped")
    url = sqlite_url(folder / "source.db")
    generate_source(url, DemoScale(tenants=1, spaces=2, work_items=5_000, seed=3))
    source = create_engine_for(url)
    with source.connect() as connection:
        space_id, scope = connection.exec_driver_sql(
            "SELECT s.id, s.key FROM spaces s JOIN work_items w ON w.space_id = s.id"
            " GROUP BY s.id ORDER BY COUNT(*) DESC LIMIT 1"
        ).one()
    _, before = _report(UnusedFields(), source, scope, sqlite_url(folder / "before.db"))
    with source.begin() as connection:
        median = connection.exec_driver_sql(
            "SELECT id FROM work_items WHERE space_id = ? ORDER BY id"
            " LIMIT 1 OFFSET (SELECT COUNT(*) / 2 FROM work_items WHERE space_id = ?)",
            (space_id, space_id),
        ).scalar()
        moved = (space_id, median)
        connection.exec_driver_sql(
            "UPDATE field_values SET work_item_id = work_item_id + ? WHERE work_item_id IN"
            " (SELECT id FROM work_items WHERE space_id = ? AND id >= ?)",
            (GAP, *moved),
        )
        connection.exec_driver_sql(
            "UPDATE work_items SET id = id + ? WHERE space_id = ? AND id >= ?", (GAP, *moved)
        )
    yield {"source": source, "scope": scope, "space_id": space_id, "before": before}
    source.dispose()


def _items_per_batch(source: sa.Engine, plan: JobPlan, space_id: int) -> list[int]:
    with source.connect() as connection:
        return [
            connection.exec_driver_sql(
                "SELECT COUNT(*) FROM work_items WHERE space_id = ? AND id BETWEEN ? AND ?",
                (space_id, batch.first_key, batch.last_key),
            ).scalar()
            for batch in map(plan.batch, range(plan.batch_count))
        ]


def test_every_batch_holds_the_batch_size_across_a_gap_of_a_billion(gapped, tmp_path):
    plan, rows = _report(
        UnusedFields(), gapped["source"], gapped["scope"], sqlite_url(tmp_path / "s.db")
    )

    extent = plan.extent
    assert extent.last_key - extent.first_key > GAP, "the space's keys span the gap"
    counts = _items_per_batch(gapped["source"], plan, gapped["space_id"])
    assert plan.batch_count == math.ceil(extent.entity_count / BATCH)
    assert counts[:-1] == [BATCH] * (plan.batch_count - 1)
    assert 0 < counts[-1] <= BATCH
    pd.testing.assert_frame_equal(rows, gapped["before"])


def test_a_catalogue_without_batch_starts_still_gets_the_even_cut(gapped, tmp_path):
    plan, rows = _report(
        EvenlyCutFields(), gapped["source"], gapped["scope"], sqlite_url(tmp_path / "s.db")
    )

    assert plan.batch_starts is None
    counts = _items_per_batch(gapped["source"], plan, gapped["space_id"])
    # What the cut on keys mends: each cluster lands whole in one batch, the rest are empty.
    assert counts[0] + counts[-1] == plan.extent.entity_count > 4 * BATCH
    assert not any(counts[1:-1])
    pd.testing.assert_frame_equal(rows, gapped["before"])


def test_the_contract_checker_recuts_the_gapped_space_both_ways(gapped):
    result = assert_tool_obeys_contract(
        UnusedFields(), gapped["source"], gapped["scope"], batch_size=BATCH
    )

    how = next(check.how for check in result.checks if check.property == "batch-agnostic")
    assert f"{BATCH:,} cut evenly over the key range" in how


@given(
    first=st.integers(-(10**12), 10**12),
    span=st.integers(1, 10**12),
    starts=st.lists(st.integers(-(10**13), 10**13), max_size=50),
)
def test_batch_starts_tile_the_extent_whatever_the_catalogue_gives(first, span, starts):
    extent = Extent(first, first + span - 1, 1, "w")
    plan = JobPlan("t", "s", 1, extent, 10, False, 0.0, batch_starts=tile(extent, starts))

    batches = [plan.batch(index) for index in range(plan.batch_count)]
    assert batches[0].first_key == extent.first_key
    assert batches[-1].last_key == extent.last_key
    for before, after in itertools.pairwise(batches):
        assert before.first_key <= before.last_key
        assert after.first_key == before.last_key + 1


def test_batch_starts_that_are_not_keys_are_refused_with_the_catalogue_named():
    with pytest.raises(ToolContractError, match=r"Spaces.batch_starts gave '7': .* integer keys"):
        tile(Extent(0, 99, 100, "w"), [0, "7"], "Spaces")
