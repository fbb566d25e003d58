"""Shared fixtures: a generated demo source, a fresh report store, a real Dagster instance."""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, RetryPolicy, instance_for_test

from precompute_assets.core.db import create_engine_for, sqlite_url
from precompute_assets.core.registry import load_tools
from precompute_assets.demo.source import DemoScale, generate_source
from precompute_assets.orchestration.definitions import build_definitions
from precompute_assets.orchestration.resources import PrecomputeResource

SMALL_SCALE = DemoScale(tenants=3, spaces=8, work_items=30_000, seed=11)
POSTGRES_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"

warnings.filterwarnings("ignore", category=DeprecationWarning)


def require_service(name: str, how_to_start: str) -> None:
    """Skip on a laptop without the service; fail where CI says services are mandatory."""
    message = f"{name} is not reachable: {how_to_start}"
    if os.environ.get("PRECOMPUTE_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def source_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = sqlite_url(tmp_path_factory.mktemp("source") / "source.db")
    generate_source(url, SMALL_SCALE)
    return url


@pytest.fixture
def store_url(tmp_path) -> str:
    return sqlite_url(tmp_path / "reports.db")


@pytest.fixture
def precompute(source_url: str, store_url: str) -> PrecomputeResource:
    return PrecomputeResource(
        source_url=source_url, store_url=store_url, batch_size=1_000, max_shards=3
    )


@pytest.fixture(scope="session")
def tools():
    return load_tools(autoload=False)


@pytest.fixture
def defs(tools, precompute):
    return build_definitions(tools, precompute, RetryPolicy(max_retries=2))


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as dagster_instance:
        yield dagster_instance


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped on exit with its connections."""
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError:
        require_service("PostgreSQL at 127.0.0.1:5432", "start PostgreSQL with trust auth")
    name = f"precompute_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def own_source(tmp_path) -> PrecomputeResource:
    """A source of the test's own, which it may edit, and an empty store."""
    url = sqlite_url(tmp_path / "own_source.db")
    generate_source(url, SMALL_SCALE)
    return PrecomputeResource(
        source_url=url, store_url=sqlite_url(tmp_path / "own_reports.db"), batch_size=1_000
    )


def largest_scope(precompute: PrecomputeResource) -> str:
    """The scope with the most work items: the one with the most batches."""
    with precompute.source_engine().connect() as source:
        return source.exec_driver_sql(
            "SELECT s.key FROM spaces s JOIN work_items w ON w.space_id = s.id"
            " GROUP BY s.key ORDER BY COUNT(*) DESC LIMIT 1"
        ).scalar()


def run_partition(defs, tool_name: str, scope: str, instance: DagsterInstance, **kwargs):
    """Materialise one scope through the tool's partitioned job (its asset check included)."""
    instance.add_dynamic_partitions(f"{tool_name}_scopes", [scope])
    job = defs.resolve_job_def(f"{tool_name}_job")
    return job.execute_in_process(partition_key=scope, instance=instance, **kwargs)


def source_connection(url: str):
    return create_engine_for(url, must_exist=True).connect()


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``pytest -n N --dist loadgroup`` a module's tests stay on one worker, so that its
    shared servers start once; modules that share an outside resource name a group of their
    own."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (``item.rep_call``): fixtures that keep artefacts of
    a failed test (the browser tests' screenshots) look at it."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
