"""Batches and shards: how one job's entities are cut into work.

A *batch* is what a tool's ``scan`` receives and the unit of retry and checkpointing. Batches are
cut on the scope's actual keys when its catalogue gives them (``ScopeCatalogue.batch_starts``):
every ``batch_size``-th key starts a batch, so each holds ``batch_size`` entities whatever the
gaps between keys. Otherwise the key range is cut into even spans, which hold about
``batch_size`` only where keys are evenly spread. Either way the batches tile the extent's key
range, so how it is cut never changes the report.

A *shard* is one Dagster mapped step; it processes a contiguous range of batches in order. The
number of shards is capped by a setting (the parallelism available), never by the data size,
because every mapped step costs tens of milliseconds in-process and seconds in a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from numbers import Integral
from typing import TYPE_CHECKING

from precompute_assets.contract import Batch, Extent, ScopeCatalogue
from precompute_assets.core.errors import ToolContractError

if TYPE_CHECKING:
    from sqlalchemy import Connection


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
    # The first key of each batch, cut on the actual keys; None: the key range cut evenly.
    batch_starts: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.batch_starts is not None:  # a list, once the plan went through JSON
            object.__setattr__(self, "batch_starts", tuple(self.batch_starts))

    @property
    def keys_per_batch(self) -> int:
        """The span of keys of each batch of an even cut."""
        extent = self.extent
        if extent.entity_count <= 0:
            return 1
        span = extent.last_key - extent.first_key + 1
        return max(1, math.ceil(self.batch_size * span / extent.entity_count))

    @property
    def batch_count(self) -> int:
        if self.batch_starts is not None:
            return len(self.batch_starts)
        extent = self.extent
        if extent.entity_count <= 0:
            return 0
        span = extent.last_key - extent.first_key + 1
        return math.ceil(span / self.keys_per_batch)

    def batch(self, index: int) -> Batch:
        if not 0 <= index < self.batch_count:
            raise IndexError(f"batch {index} outside plan of {self.batch_count} batches")
        if self.batch_starts is not None:
            first = self.batch_starts[index]
            following = index + 1 < len(self.batch_starts)
            last = self.batch_starts[index + 1] - 1 if following else self.extent.last_key
        else:
            first = self.extent.first_key + index * self.keys_per_batch
            last = min(self.extent.last_key, first + self.keys_per_batch - 1)
        return Batch(self.scope, index, first, last, dict(self.extent.params))

    def shards(self, max_shards: int) -> list[Shard]:
        return plan_shards(self.batch_count, max_shards)


def cut_on_keys(
    catalogue: ScopeCatalogue, source: Connection, scope: str, extent: Extent, batch_size: int
) -> tuple[int, ...] | None:
    """The first key of each batch, from the catalogue's ``batch_starts``; None when the
    catalogue gives none (the key range is then cut evenly) or the scope has no entities."""
    if extent.entity_count <= 0:
        return None
    starts = catalogue.batch_starts(source, scope, extent, batch_size)
    if starts is None:
        return None
    return tile(extent, starts, type(catalogue).__name__)


def tile(
    extent: Extent, starts: Iterable[int], catalogue: str = "the catalogue"
) -> tuple[int, ...]:
    """Batch starts that tile the extent: ascending, distinct, the first at ``first_key``.

    Keys outside the extent are dropped: a key written after ``initialise`` read the range
    belongs to the next job.
    """
    keys = list(starts)
    wrong = next((k for k in keys if not isinstance(k, Integral) or isinstance(k, bool)), None)
    if wrong is not None:
        raise ToolContractError(
            f"{catalogue}.batch_starts gave {wrong!r}: batch starts must be integer keys"
        )
    inside = sorted({int(k) for k in keys if extent.first_key < k <= extent.last_key})
    return (extent.first_key, *inside)


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


def plan_fingerprint(
    extent: Extent, batch_size: int, batch_starts: tuple[int, ...] | None = None
) -> str:
    """Equal for two plans that would scan the same batches of the same source state."""
    identity = [extent.first_key, extent.last_key, extent.entity_count, extent.watermark]
    cut = None if batch_starts is None else list(batch_starts)
    payload = json.dumps([*identity, batch_size, cut])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]
