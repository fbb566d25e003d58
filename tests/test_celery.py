"""A report job spread over two celery workers, against RabbitMQ and PostgreSQL on loopback.

Two ``celery -A dagster_celery.app worker`` processes (one task at a time each) start in folders
of their own; the Dagster instance, the source, the ledger, the reports and the step outputs are
all in PostgreSQL, and compute logs are off, so steps share no process and no disk. The run is
launched with the framework's executor set to ``celery`` and must give the same report as the
in-process run of the same scope, with its scan steps in the workers' processes.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import SMALL_SCALE, fresh_postgres_database, largest_scope, require_service
from conftest import source_connection as connect_source
from dagster import DagsterEventType, DagsterInstance, execute_job, instance_for_test
from ground_truth import comparable, unused_fields_truth
from processes import (
    Server,
    celery_worker_command,
    server_group,
    wait_for_celery_workers,
)

from precompute_assets.core.db import sqlite_url
from precompute_assets.demo.source import generate_source
from precompute_assets.orchestration.resources import PrecomputeResource
from precompute_assets.orchestration.runs import report_job

# Celery workers of both modules take steps from the one broker queue: never at once.
pytestmark = [pytest.mark.slow, pytest.mark.servers, pytest.mark.xdist_group("celery_broker")]

TOOL = "unused_fields"
WORKERS = 2
SHARDS = 4
BATCH_SIZE = 1_000
RUN_TIMEOUT_S = 180
CELERY_RUN_CONFIG = {"execution": {"config": {"celery": {}}}}  # dagster-celery's broker: RabbitMQ


def _rabbitmq_reachable() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def celery_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    if not _rabbitmq_reachable():
        require_service("RabbitMQ at 127.0.0.1:5672", "start rabbitmq-server (guest/guest)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRECOMPUTE_", "DAGSTER_"))}
    with ExitStack() as stack:
        workers = []
        for number in range(WORKERS):
            folder = tmp_path_factory.mktemp(f"celery_worker_{number}")
            command = celery_worker_command(f"precompute-test-{os.getpid()}-{number}")
            workers.append(
                stack.enter_context(
                    server_group(
                        f"worker-{number}", command, {**env, "HOME": str(folder)}, folder, folder
                    )
                )
            )
        wait_for_celery_workers(workers)
        yield workers


def _postgres_instance(url: str) -> dict:
    database = sa.make_url(url)
    return {
        "storage": {
            "postgres": {
                "postgres_db": {
                    "username": database.username,
                    "password": database.password or "",
                    "hostname": database.host,
                    "db_name": database.database,
                    "port": database.port,
                    "scheme": "postgresql+psycopg2",
                }
            }
        },
        "compute_logs": {
            "module": "dagster._core.storage.noop_compute_log_manager",
            "class": "NoOpComputeLogManager",
        },
    }


def _execute(instance: DagsterInstance, scope: str, run_config: dict, **precompute: object):
    """``execute_job`` with a deadline: a run whose steps no worker takes must fail, not hang."""
    outcome: dict[str, object] = {}

    def run() -> None:
        outcome["result"] = execute_job(
            report_job(TOOL, **precompute),
            instance=instance,
            run_config=run_config,
            tags={"dagster/partition": scope},
        )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(RUN_TIMEOUT_S)
    if "result" not in outcome:
        pytest.fail(f"the celery run did not end within {RUN_TIMEOUT_S} s")
    return outcome["result"]


def test_a_job_on_two_celery_workers_gives_the_in_process_report(celery_workers, tmp_path):
    with ExitStack() as stack:
        instance_url = stack.enter_context(fresh_postgres_database())
        data_url = stack.enter_context(fresh_postgres_database())
        generate_source(data_url, SMALL_SCALE)
        scope = largest_scope(PrecomputeResource(source_url=data_url))
        settings = {"source_url": data_url, "batch_size": BATCH_SIZE, "max_shards": SHARDS}

        home = tmp_path / "dagster_home"
        home.mkdir()
        overrides = _postgres_instance(instance_url)
        instance = stack.enter_context(instance_for_test(overrides=overrides, temp_dir=str(home)))
        instance.add_dynamic_partitions(f"{TOOL}_scopes", [scope])

        in_process = _execute(
            instance,
            scope,
            {"execution": {"config": {"in_process": {}}}},
            store_url=sqlite_url(tmp_path / "in_process.db"),
            **settings,
        )
        assert in_process.success
        celery = _execute(instance, scope, CELERY_RUN_CONFIG, store_url=data_url, **settings)
        assert celery.success

        reference = PrecomputeResource(store_url=sqlite_url(tmp_path / "in_process.db"))
        header, rows = PrecomputeResource(store_url=data_url).store().read(TOOL, scope)
        _, expected = reference.store().read(TOOL, scope)
        pd.testing.assert_frame_equal(rows, expected)
        with connect_source(data_url) as source:
            truth = unused_fields_truth(source, scope, header.summary["params"])
        pd.testing.assert_frame_equal(comparable(rows), truth)
        assert header.shard_count == SHARDS

        # Every scan step ran in a worker's process, and both workers took some.
        starts = instance.all_logs(celery.run_id, of_type=DagsterEventType.STEP_START)
        scan_pids = {e.dagster_event.pid for e in starts if "scan_shard" in e.step_key}
        assert os.getpid() not in scan_pids
        assert len(scan_pids) == WORKERS, scan_pids
        assert not any(path.is_file() for path in home.rglob("*") if "storage" in path.parts), (
            "step outputs must not go through the run's local disk"
        )
