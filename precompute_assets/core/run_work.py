"""One run, many scopes: what a run's steps pass each other when it refreshes several scopes.

Dagster's fixed cost of a run (a process, the code location, its events) is seconds, while a
small scope computes in a fraction of one: so small scopes share runs. A run opens one job per
scope (``RunPlan``), spreads every job's shards over at most ``max_shards`` mapped steps
(``RunShard``), and finalises each scope on its own. A scope that fails is set aside with its
reason (``ScopeFailure``) while the others go on, so one scope's failure neither fails nor
delays the others' reports.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from precompute_assets.core.plan import JobPlan, ShardTask


@dataclass(frozen=True)
class ScopeFailure:
    """A scope of the run that could not be refreshed, in which phase, and why."""

    scope: str
    phase: str  # initialise, scan or finalise
    reason: str

    def describe(self) -> str:
        return f"{self.scope} ({self.phase}): {self.reason}"


@dataclass(frozen=True)
class RunPlan:
    """The jobs a run opened, one per scope, and the scopes it could not open.

    ``initialise_s`` is the time each scope's initialise took, for its report's compute time;
    ``evictions_before`` the cache tier's eviction count then (None without a cache tier);
    ``shards`` how many shards each scope's job was cut into.
    """

    plans: list[JobPlan]
    failures: list[ScopeFailure] = field(default_factory=list)
    initialise_s: dict[str, float] = field(default_factory=dict)
    evictions_before: int | None = None
    shards: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RunShard:
    """What one mapped scan step runs: shards of one or several scopes' jobs, in order."""

    index: int
    tasks: list[ShardTask]

    @property
    def mapping_key(self) -> str:
        return f"shard_{self.index}"


@dataclass(frozen=True)
class ShardOutcome:
    """What a mapped scan step did: batches scanned and skipped, shards lifted into partials,
    seconds spent per scope, and the scopes whose scan failed."""

    batches_scanned: int = 0
    batches_skipped: int = 0
    shards_lifted: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    failures: list[ScopeFailure] = field(default_factory=list)


def spread_shards(
    plans: Iterable[JobPlan], max_shards: int, evictions_before: int | None
) -> list[RunShard]:
    """Every job's batches, spread over at most ``max_shards`` steps so that each step has about
    as many to scan.

    A job larger than a step's share is cut into shards of about that share (a run of one scope
    gets exactly that scope's shards, one per step); a smaller one stays whole. Pieces go to the
    least loaded step, largest first.
    """
    plans = list(plans)
    total = sum(plan.batch_count for plan in plans)
    if total == 0:
        return []
    share = math.ceil(total / max_shards)
    pieces = [
        ShardTask(plan, shard, evictions_before)
        for plan in plans
        if plan.batch_count
        for shard in plan.shards(math.ceil(plan.batch_count / share))
    ]
    pieces.sort(key=lambda task: -len(task.shard.batch_indices))
    steps: list[list[ShardTask]] = [[] for _ in range(min(max_shards, len(pieces)))]
    loads = [0] * len(steps)
    for task in pieces:
        lightest = loads.index(min(loads))
        steps[lightest].append(task)
        loads[lightest] += len(task.shard.batch_indices)
    return [RunShard(index, tasks) for index, tasks in enumerate(steps)]


def shard_counts(shards: Iterable[RunShard]) -> dict[str, int]:
    """How many shards each scope's job was cut into, over every step of the run."""
    counts: dict[str, int] = {}
    for run_shard in shards:
        for task in run_shard.tasks:
            counts[task.plan.scope] = counts.get(task.plan.scope, 0) + 1
    return counts
