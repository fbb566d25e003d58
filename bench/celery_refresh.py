"""One refresh of a 1M-work-item scope on PostgreSQL: in-process against two celery workers.

    python bench/celery_refresh.py --url postgresql+psycopg2://postgres@127.0.0.1:5432/bench

The source, ledger, reports and step outputs are in the bench's PostgreSQL schema for that scale
(built by ``bench/run.py`` if missing); the Dagster instance in a PostgreSQL database of its own,
with compute logs off. ``--workers`` celery workers (dagster-celery's default broker, RabbitMQ on
loopback) take one step each at a time. Each executor runs ``--repeats`` times, interleaved; the
clock is around ``execute_job``, the report's commit included. For each executor's best run the
event log tells how long some step was running, how long none was (hand-offs, step start-up),
and the scan steps' summed time. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import sqlalchemy as sa
from dagster import DagsterEventType, DagsterInstance, execute_job, instance_for_test
from processes import celery_worker_command, server_group, wait_for_celery_workers
from run import databases_for, ensure_source

from precompute_assets.core.settings import ExecutorSettings, Settings
from precompute_assets.orchestration.executors import execution_run_config
from precompute_assets.orchestration.runs import report_job

TOOL = "unused_fields"
SCOPE = "t1-s001"
INSTANCE_DB = "precompute_bench_instance"


def instance_overrides(server: sa.URL) -> dict:
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{INSTANCE_DB}" WITH (FORCE)')
        connection.exec_driver_sql(f'CREATE DATABASE "{INSTANCE_DB}"')
    admin.dispose()
    return {
        "storage": {
            "postgres": {
                "postgres_db": {
                    "username": server.username,
                    "password": server.password or "",
                    "hostname": server.host,
                    "db_name": INSTANCE_DB,
                    "port": server.port or 5432,
                    "scheme": "postgresql+psycopg2",
                }
            }
        },
        "compute_logs": {
            "module": "dagster._core.storage.noop_compute_log_manager",
            "class": "NoOpComputeLogManager",
        },
    }


def time_in_steps(instance: DagsterInstance, run_id: str) -> dict[str, float]:
    """Where a run's time goes: some step running, no step running, the scans' own time, and
    (celery) how long a submitted step took to start in a worker."""
    starts, ends, submits = {}, {}, {}
    for entry in instance.all_logs(run_id):
        kind = entry.dagster_event_type
        if kind == DagsterEventType.ENGINE_EVENT and entry.message.startswith("Submitting celery"):
            submits[entry.step_key] = entry.timestamp
        elif kind == DagsterEventType.STEP_START:
            starts[entry.step_key] = entry.timestamp
        elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            ends[entry.step_key] = entry.timestamp
        elif kind == DagsterEventType.RUN_START:
            run_start = entry.timestamp
        elif kind == DagsterEventType.RUN_SUCCESS:
            run_end = entry.timestamp
    busy, covered_to = 0.0, run_start
    for start, end in sorted((starts[key], ends[key]) for key in starts):
        busy += max(0.0, end - max(start, covered_to))
        covered_to = max(covered_to, end)
    scans = sum(ends[key] - starts[key] for key in starts if "scan_shard" in key)
    waits = [starts[key] - submits[key] for key in submits]
    return {
        "steps_running_s": round(busy, 3),
        "no_step_running_s": round(run_end - run_start - busy, 3),
        "scan_steps_sum_s": round(scans, 3),
        **({"submit_to_start_s": [round(min(waits), 3), round(max(waits), 3)]} if waits else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="a PostgreSQL URL")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    settings = Settings.from_env()
    databases = databases_for(args.url, Path(tempfile.gettempdir()) / "pc-bench", args.items)
    ensure_source(databases)
    job_args = {
        "source_url": databases.source_url,
        "store_url": databases.store_url,
        "batch_size": settings.batch_size,
        "max_shards": settings.max_shards,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRECOMPUTE_", "DAGSTER_"))}
    timings: dict[str, list[float]] = {"in_process": [], "celery": []}
    breakdown: dict[str, dict[str, float]] = {}
    with ExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        overrides = instance_overrides(sa.make_url(args.url))
        instance = stack.enter_context(instance_for_test(overrides=overrides, temp_dir=str(home)))
        instance.add_dynamic_partitions(f"{TOOL}_scopes", [SCOPE])
        workers = [
            stack.enter_context(
                server_group(f"worker-{n}", celery_worker_command(f"bench-{n}"), env, home, home)
            )
            for n in range(args.workers)
        ]
        wait_for_celery_workers(workers)
        for _ in range(args.repeats):
            for name in timings:
                started = time.perf_counter()
                result = execute_job(
                    report_job(TOOL, **job_args),
                    instance=instance,
                    run_config=execution_run_config(name, ExecutorSettings()),
                    tags={"dagster/partition": SCOPE},
                )
                elapsed = round(time.perf_counter() - started, 3)
                if not result.success:
                    raise SystemExit(f"the {name} run failed: {result.run_id}")
                if elapsed <= min(timings[name], default=elapsed):
                    breakdown[name] = time_in_steps(instance, result.run_id)
                timings[name].append(elapsed)
    print(
        json.dumps(
            {
                "command": " ".join(["python", "bench/celery_refresh.py", *sys.argv[1:]]),
                "items": args.items,
                "workers": args.workers,
                "batch_size": settings.batch_size,
                "max_shards": settings.max_shards,
                "runs_s": timings,
                "best_s": {name: min(runs) for name, runs in timings.items()},
                "best_run_time_in_steps": breakdown,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
