"""The naive design a Dagster user would write: one mapped step per batch.

    python bench/naive.py '{"source_url": ..., "space_id": 1, "first_key": 1, ...}'

``plan_batches`` yields one ``DynamicOutput`` per batch of ``batch_size`` work-item ids,
``scan_batch`` runs on each the very SQL of the unused_fields tool's scan, and ``merge_batches``
collects and merges the contributions. The job keeps Dagster's default executor: multiprocess,
one spawned process per step, as many at once as there are CPUs. This is the design the
framework's shards replace (DESIGN.md section 4): every batch pays a step's full cost.

A full run would take minutes, so ``max_steps`` caps the batches; ``run.py`` times two caps and
extrapolates linearly to every batch. Run as a script, this module times one run in this fresh
process and prints one JSON line.

No ``from __future__ import annotations`` here: Dagster reads the ops' annotations (the
``Config`` class) at definition time and cannot resolve them from strings.
"""

import json
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from dagster import (
    Config,
    DynamicOut,
    DynamicOutput,
    execute_job,
    instance_for_test,
    job,
    op,
    reconstructable,
)

from precompute_assets.contract import Batch
from tool_plugins.unused_fields import UnusedFields

TOOL = UnusedFields()


class NaivePlan(Config):
    """Which space to scan, in which id range, cut how, and how many batches at most."""

    source_url: str
    scope: str
    space_id: int
    as_of: int
    since: int
    first_key: int
    last_key: int
    batch_size: int = 5_000
    max_steps: int = 0  # 0: every batch


@op(out=DynamicOut(dict))
def plan_batches(config: NaivePlan) -> Iterator[DynamicOutput[dict[str, Any]]]:
    """One output, hence one mapped step, per batch of ids."""
    starts = range(config.first_key, config.last_key + 1, config.batch_size)
    for index, first in enumerate(starts):
        if config.max_steps and index >= config.max_steps:
            return
        task = {
            "source_url": config.source_url,
            "batch": [
                config.scope,
                index,
                first,
                min(config.last_key, first + config.batch_size - 1),
            ],
            "params": {"space_id": config.space_id, "as_of": config.as_of, "since": config.since},
        }
        yield DynamicOutput(task, mapping_key=f"batch_{index}")


@op
def scan_batch(task: dict[str, Any]) -> dict[str, list[int]]:
    """The tool's per-batch SQL on one batch, in this step's own process."""
    engine = sa.create_engine(task["source_url"])
    try:
        with engine.connect() as source:
            return TOOL.scan(source, Batch(*task["batch"], task["params"]))
    finally:
        engine.dispose()


@op
def merge_batches(contributions: list[dict[str, list[int]]]) -> dict[str, list[int]]:
    return TOOL.merge([TOOL.empty(), *contributions])


@job
def naive_unused_fields() -> None:
    merge_batches(plan_batches().map(scan_batch).collect())


def main() -> None:
    plan = json.loads(sys.argv[1])
    tmp_dir = plan.pop("tmp_dir", None)
    warnings.simplefilter("ignore")
    with (
        tempfile.TemporaryDirectory(dir=tmp_dir) as home,
        instance_for_test(temp_dir=home) as instance,
    ):
        started = time.perf_counter()
        with execute_job(
            reconstructable(naive_unused_fields),
            instance=instance,
            run_config={
                "ops": {"plan_batches": {"config": plan}},
                "loggers": {"console": {"config": {"log_level": "WARNING"}}},
            },
        ) as result:
            seconds = time.perf_counter() - started
            merged = result.output_for_node("merge_batches") if result.success else {}
    config = NaivePlan(**plan)
    batches = len(range(config.first_key, config.last_key + 1, config.batch_size))
    steps = min(config.max_steps or batches, batches)
    print(
        json.dumps(
            {
                "success": result.success,
                "seconds": round(seconds, 4),
                "mapped_steps": steps,
                "batches": batches,
                "fields_seen": len(merged),
            }
        )
    )


if __name__ == "__main__":
    main()
