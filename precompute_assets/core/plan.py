"""Batches and shards: how one job's key range is cut into work.

A *batch* is what a tool's ``scan`` receives and the unit of retry and checkpointing. A *shard*
is one Dagster mapped step; it processes a contiguous range of batches in order. The number of
shards is capped by a setting (the parallelism available), never by the data size, because
every mapped step costs tens of milliseconds in-process and seconds in a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

from precompute_assets.contract import Batch, Extent


@dataclass(frozen=True)
class JobPlan:
    """One attempt to produce one report for ``(tool, scope)``, as opened in the ledger."""

    tool: str
    scope: str
    generation: int
    extent: Extent
    batch_size: int
    resumed: bool
    started_at: float  # when this run opened or resumed the job, for its duration
    job_id: str = ""  # unique across stores, so a shared cache tier never mixes two jobs

    @property
    def keys_per_batch(self) -> int:
        extent = self.extent
        if extent.entity_count <= 0:
            return 1
        span = extent.last_key - extent.first_key + 1
        # Key ranges are cut evenly; with gaps in the keys a batch holds about batch_size.
        return max(1, math.ceil(self.batch_size * span / extent.entity_count))

    @property
    def batch_count(self) -> int:
        extent = self.extent
        if extent.entity_count <= 0:
            return 0
        span = extent.last_key - extent.first_key + 1
        return math.ceil(span / self.keys_per_batch)

    def batch(self, index: int) -> Batch:
        if not 0 <= index < self.batch_count:
            raise IndexError(f"batch {index} outside plan of {self.batch_count} batches")
        first = self.extent.first_key + index * self.keys_per_batch
        last = min(self.extent.last_key, first + self.keys_per_batch - 1)
        return Batch(self.scope, index, first, last, dict(self.extent.params))

    def shards(self, max_shards: int) -> list[Shard]:
        return plan_shards(self.batch_count, max_shards)


@dataclass(frozen=True)
class Shard:
    """Batches ``first_batch`` to ``last_batch`` inclusive, run in order by one mapped step."""

    index: int
    first_batch: int
    last_batch: int

    @property
    def mapping_key(self) -> str:
        return f"shard_{self.index}"

    @property
    def batch_indices(self) -> range:
        return range(self.first_batch, self.last_batch + 1)


@dataclass(frozen=True)
class ShardTask:
    """What one mapped scan step receives: its job, its shard, and the cache tier's eviction
    count when the job was planned (None without a cache tier)."""

    plan: JobPlan
    shard: Shard
    evictions_before: int | None


def plan_shards(batch_count: int, max_shards: int) -> list[Shard]:
    """Split ``batch_count`` batches into at most ``max_shards`` contiguous, even shards."""
    if max_shards < 1:
        raise ValueError(f"max_shards must be at least 1, got {max_shards}")
    count = min(batch_count, max_shards)
    shards = []
    start = 0
    for index in range(count):
        size = batch_count // count + (1 if index < batch_count % count else 0)
        shards.append(Shard(index, start, start + size - 1))
        start += size
    return shards


def plan_fingerprint(extent: Extent, batch_size: int) -> str:
    """Equal for two plans that would scan the same batches of the same source state."""
    identity = [extent.first_key, extent.last_key, extent.entity_count, extent.watermark]
    payload = json.dumps([*identity, batch_size])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]
