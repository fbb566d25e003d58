"""One timed materialisation of one scope through Dagster, in this (fresh) process.

    python bench/materialise.py '{"executor": "in_process", "source_url": ..., ...}'

``run.py`` starts one such process per measurement, as Dagster's run launcher gives every run a
process of its own: each run's peak memory (VmHWM) is then its own, and no run inherits warm
caches (imports done mid-run, connection pools, a running forkserver) from the one before.
The clock starts after the imports and the definitions are loaded and stops when
``execute_in_process`` or ``execute_job`` returns, so it covers the whole run: initialise, the
shards, finalise with the report's commit, and the asset check. Prints one JSON line.

Executor ``without_dagster`` runs the same three phases as plain functions (``job.py``), timing
each: the difference to ``in_process`` is what Dagster's orchestration costs.

The multiprocess executor rebuilds the job in every step process from a pointer to
``make_job`` below, called with the same keyword arguments; environment variables would not do
(a forkserver keeps the environment it started with, see ``tests/crash_tools.py``).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from dagster import (
    DagsterInstance,
    JobDefinition,
    build_reconstructable_job,
    execute_job,
    instance_for_test,
)

from precompute_assets.core.phases import finalise_job, open_job, run_shard
from precompute_assets.orchestration.assets import report_job_name, scopes_partitions
from precompute_assets.orchestration.definitions import build_definitions
from precompute_assets.orchestration.resources import PrecomputeResource
from precompute_assets.orchestration.runs import materialise_scope
from tool_plugins.unused_fields import UnusedFields

BENCH_DIR = Path(__file__).resolve().parent
# What every forkserver child would otherwise import for itself (as tests/test_crash_resume.py).
PRELOAD = [
    "precompute_assets.orchestration.definitions",
    "tool_plugins.unused_fields",
    "dagster._core.instance.factory",
    "dagster._core.storage.event_log",
    "dagster._core.storage.runs",
    "dagster._core.storage.schedules",
    "dagster._core.storage.local_compute_log_manager",
    "dagster._core.storage.fs_io_manager",
    "upath",
]


def make_job(*, source_url: str, store_url: str, batch_size: int, max_shards: int) -> JobDefinition:
    """The unused_fields job exactly as the framework builds it, on the bench's databases."""
    tool = UnusedFields()
    precompute = PrecomputeResource(
        source_url=source_url, store_url=store_url, batch_size=batch_size, max_shards=max_shards
    )
    return build_definitions({tool.name: tool}, precompute).resolve_job_def(report_job_name(tool))


def memory_kb(field: str) -> int:
    """A ``/proc/self/status`` figure in kB: VmHWM is the peak resident set, VmRSS the current."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


def run_in_process(spec: dict[str, Any], instance: DagsterInstance) -> tuple[bool, float, str]:
    tool = UnusedFields()
    job_args = _job_args(spec)
    precompute = PrecomputeResource(**job_args)
    defs = build_definitions({tool.name: tool}, precompute)
    defs.resolve_job_def(report_job_name(tool))  # resolve outside the clock
    started = time.perf_counter()
    result = materialise_scope(defs, tool, spec["scope"], instance)
    return result.success, time.perf_counter() - started, result.run_id


def run_multiprocess(spec: dict[str, Any], instance: DagsterInstance) -> tuple[bool, float, str]:
    job = build_reconstructable_job(
        "materialise",
        make_job.__name__,
        reconstructable_kwargs=_job_args(spec),
        reconstructor_working_directory=str(BENCH_DIR),
    )
    run_config = {
        "execution": {
            "config": {
                "multiprocess": {
                    "max_concurrent": spec["max_concurrent"],
                    "start_method": {"forkserver": {"preload_modules": PRELOAD}},
                }
            }
        },
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
    }
    started = time.perf_counter()
    result = execute_job(
        job, instance=instance, run_config=run_config, tags={"dagster/partition": spec["scope"]}
    )
    return result.success, time.perf_counter() - started, result.run_id


def run_without_dagster(spec: dict[str, Any]) -> dict[str, Any]:
    """Initialise, every shard in turn, finalise: the framework's work with no orchestrator."""
    tool = UnusedFields()
    precompute = PrecomputeResource(**_job_args(spec))
    source, ledger, store = precompute.source_engine(), precompute.ledger(), precompute.store()
    started = time.perf_counter()
    plan = open_job(tool, spec["scope"], source, ledger, spec["batch_size"])
    opened = time.perf_counter()
    shards = plan.shards(spec["max_shards"])
    threads = precompute.settings().scan_threads
    for shard in shards:
        run_shard(tool, plan, shard, source, ledger, threads)
    scanned = time.perf_counter()
    finalise_job(tool, plan, source, ledger, store, shard_count=len(shards))
    finished = time.perf_counter()
    return {
        "success": True,
        "seconds": round(finished - started, 4),
        "phases_s": {
            "initialise": round(opened - started, 4),
            "scan": round(scanned - opened, 4),
            "finalise_and_commit": round(finished - scanned, 4),
        },
    }


def _job_args(spec: dict[str, Any]) -> dict[str, Any]:
    names = ("source_url", "store_url", "batch_size", "max_shards")
    return {name: spec[name] for name in names}


def run_with_dagster(spec: dict[str, Any]) -> dict[str, Any]:
    runner = {"in_process": run_in_process, "multiprocess": run_multiprocess}[spec["executor"]]
    # A persistent on-disk instance, as a deployment has: the multiprocess executor needs one.
    # With ``instance_url``, its storage is in that PostgreSQL database, as in production
    # (deploy/dagster.yaml); otherwise SQLite files in the temporary folder.
    storage = spec.get("instance_url")
    overrides = {"storage": {"postgres": {"postgres_url": storage}}} if storage else None
    with (
        tempfile.TemporaryDirectory(dir=spec.get("tmp_dir")) as home,
        instance_for_test(temp_dir=home, overrides=overrides) as instance,
    ):
        instance.add_dynamic_partitions(scopes_partitions(UnusedFields()).name, [spec["scope"]])
        rss_before_kb = memory_kb("VmRSS")
        success, seconds, run_id = runner(spec, instance)
        # What the run wrote to the instance's event log: Dagster's fixed cost is per event.
        events = len(instance.all_logs(run_id))
    return {
        "success": success,
        "seconds": round(seconds, 4),
        "dagster_events": events,
        "peak_rss_kb": memory_kb("VmHWM"),
        "rss_before_run_kb": rss_before_kb,
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    warnings.simplefilter("ignore")
    if spec["executor"] == "without_dagster":
        print(json.dumps(run_without_dagster(spec)))
    else:
        print(json.dumps(run_with_dagster(spec)))


if __name__ == "__main__":
    main()
