"""The production instance (``deploy/dagster.yaml``) on PostgreSQL, configured by environment alone.

A fresh PostgreSQL database holds the Dagster instance and another one the demo source, the
ledger and the reports. The materialisation runs through ``dagster asset materialize`` in its own
process with nothing but environment variables (``DAGSTER_HOME`` with a copy of the deploy config,
``DAGSTER_PG_*``, ``PRECOMPUTE_*``), under the multiprocess executor allowed 4 steps at once and
the ``precompute_source`` pool limited to 1: its 4 scan steps must run one after the other.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import SMALL_SCALE, fresh_postgres_database, largest_scope, source_connection
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, EventLogEntry
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage
from ground_truth import comparable, unused_fields_truth

from precompute_assets.demo.source import generate_source
from precompute_assets.orchestration.assets import SOURCE_POOL
from precompute_assets.orchestration.resources import PrecomputeResource

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).parent / "dagster")
SHARDS = 4
# The multiprocess executor would run all 4 scan steps at once: only the pool keeps them apart.
EXECUTOR_CONFIG = '{"execution": {"config": {"multiprocess": {"max_concurrent": 4}}}}'
STEP_END = {DagsterEventType.STEP_SUCCESS.value, DagsterEventType.STEP_FAILURE.value}


@dataclass(frozen=True)
class Production:
    env: dict[str, str]
    instance_url: str
    data_url: str

    def dagster(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [DAGSTER, *args],
            cwd=PROJECT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    @contextmanager
    def instance(self) -> Iterator[DagsterInstance]:
        """The instance as the deployment's processes load it: from DAGSTER_HOME and the env."""
        with pytest.MonkeyPatch.context() as patch:
            for name, value in self.env.items():
                if name.startswith("DAGSTER_"):
                    patch.setenv(name, value)
            with DagsterInstance.get() as instance:
                yield instance


def production_env(home: Path, instance_url: str, data_url: str) -> dict[str, str]:
    """The whole configuration, as a deployment would set it: environment variables only."""
    dagster_db = sa.make_url(instance_url)
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PRECOMPUTE_", "DAGSTER_"))
    }
    return {
        **inherited,
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_USERNAME": dagster_db.username or "",
        "DAGSTER_PG_PASSWORD": dagster_db.password or "",
        "DAGSTER_PG_HOST": dagster_db.host or "",
        "DAGSTER_PG_PORT": str(dagster_db.port),
        "DAGSTER_PG_DB": dagster_db.database or "",
        "PRECOMPUTE_HOME": str(home / "precompute"),
        "PRECOMPUTE_SOURCE_URL": data_url,
        "PRECOMPUTE_STORE_URL": data_url,
        "PRECOMPUTE_BATCH_SIZE": "500",
        "PRECOMPUTE_MAX_SHARDS": str(SHARDS),
    }


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Production]:
    home = tmp_path_factory.mktemp("production_home")
    shutil.copy(PROJECT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    with ExitStack() as databases:
        instance_url = databases.enter_context(fresh_postgres_database())
        data_url = databases.enter_context(fresh_postgres_database())
        generate_source(data_url, SMALL_SCALE)
        yield Production(production_env(home, instance_url, data_url), instance_url, data_url)


@dataclass(frozen=True)
class Materialised:
    scope: str
    run_id: str
    events: list[EventLogEntry]


@pytest.fixture(scope="module")
def materialised(production: Production) -> Materialised:
    """One unused_fields report computed by a separate process on the production instance."""
    limited = production.dagster("instance", "concurrency", "set", SOURCE_POOL, "1")
    assert limited.returncode == 0, limited.stderr[-3000:]
    scope = largest_scope(PrecomputeResource(source_url=production.data_url))
    add = f"DagsterInstance.get().add_dynamic_partitions('unused_fields_scopes', [{scope!r}])"
    subprocess.run(
        [sys.executable, "-c", f"from dagster import DagsterInstance; {add}"],
        env=production.env,
        check=True,
        timeout=120,
    )
    result = production.dagster(
        "asset", "materialize", "-m", "precompute_assets.orchestration.definitions",
        "--select", "unused_fields_report", "--partition", scope,
        "--config-json", EXECUTOR_CONFIG,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    with production.instance() as instance:
        [run] = instance.get_runs()
        assert run.status == DagsterRunStatus.SUCCESS
        return Materialised(scope, run.run_id, list(instance.all_logs(run.run_id)))


def test_the_production_config_loads_on_postgresql_from_the_environment(production: Production):
    with production.instance() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        concurrency = instance.get_concurrency_config()
        assert concurrency.run_queue_config.max_concurrent_runs == 8
        assert concurrency.pool_config.default_pool_limit == 4
        assert instance.event_log_storage.supports_global_concurrency_limits
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert not instance.telemetry_enabled
    # The instance made its tables in the database that DAGSTER_PG_DB names.
    tables = sa.inspect(sa.create_engine(production.instance_url)).get_table_names()
    assert {"runs", "event_logs", "concurrency_limits"} <= set(tables)


def test_a_report_computed_by_environment_alone_lands_in_postgresql(
    production: Production, materialised: Materialised
):
    store = PrecomputeResource(store_url=production.data_url).store()
    report = store.read("unused_fields", materialised.scope)
    assert report is not None, f"no unused_fields report for {materialised.scope}"
    header, rows = report
    assert header.run_id == materialised.run_id
    assert header.shard_count == SHARDS
    with source_connection(production.data_url) as source:
        truth = unused_fields_truth(source, materialised.scope, header.summary["params"])
    pd.testing.assert_frame_equal(comparable(rows), truth)


def test_the_source_pool_lets_one_scan_step_run_at_a_time(materialised: Materialised):
    spans = scan_spans(materialised.events)
    assert len(spans) == SHARDS, spans
    ordered = sorted(spans.values())
    for (_, end), (start, _) in pairwise(ordered):
        assert end <= start, f"scan steps overlapped: {spans}"
    # Ready at once, the steps waited for the pool's one slot: Dagster said so in the run's log.
    blocked = {
        event.step_key
        for event in materialised.events
        if event.dagster_event is not None
        and event.dagster_event.message == f"Step blocked by limit for pool {SOURCE_POOL}"
    }
    assert len(blocked) >= SHARDS - 1, blocked


def scan_spans(events: list[EventLogEntry]) -> dict[str, tuple[float, float]]:
    """Per scan step: the timestamps of its start and of its end."""
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for event in events:
        if event.dagster_event is None or "_scan_shard[" not in (event.step_key or ""):
            continue
        kind = event.dagster_event.event_type_value
        if kind == DagsterEventType.STEP_START.value:
            starts[event.step_key] = event.timestamp
        elif kind in STEP_END:
            ends[event.step_key] = event.timestamp
    return {key: (starts[key], ends[key]) for key in starts}
