"""Batches cover the key range exactly once; shards stay bounded by the setting."""

import itertools

from hypothesis import given
from hypothesis import strategies as st

from precompute_assets.contract import Extent
from precompute_assets.core.plan import JobPlan, plan_shards


def _plan(first: int, span: int, count: int, batch_size: int) -> JobPlan:
    extent = Extent(first, first + span - 1, count, "w")
    return JobPlan("tool", "scope", 1, extent, batch_size, resumed=False, started_at=0.0)


@given(
    first=st.integers(0, 10**6),
    span=st.integers(1, 200_000),
    density=st.floats(0.05, 1.0),
    batch_size=st.integers(100, 20_000),
)
def test_batches_tile_the_key_range(first, span, density, batch_size):
    count = max(1, int(span * density))
    plan = _plan(first, span, count, batch_size)
    batches = [plan.batch(index) for index in range(plan.batch_count)]
    assert batches[0].first_key == first
    assert batches[-1].last_key == first + span - 1
    for before, after in itertools.pairwise(batches):
        assert after.first_key == before.last_key + 1
    # About batch_size entities per batch when keys are evenly spread.
    assert plan.batch_count <= -(-count // batch_size) + 1


def test_empty_scope_has_no_batches():
    plan = JobPlan("tool", "scope", 1, Extent(0, -1, 0, "w"), 100, resumed=False, started_at=0)
    assert plan.batch_count == 0
    assert plan.shards(4) == []


@given(batches=st.integers(0, 5_000), max_shards=st.integers(1, 64))
def test_shards_are_contiguous_even_and_bounded(batches, max_shards):
    shards = plan_shards(batches, max_shards)
    assert len(shards) == min(batches, max_shards)
    covered = [index for shard in shards for index in shard.batch_indices]
    assert covered == list(range(batches))
    sizes = [len(shard.batch_indices) for shard in shards]
    assert not sizes or max(sizes) - min(sizes) <= 1
