"""A shard scans its batches on several source connections at once, as many as the setting says.

Observed on PostgreSQL during real runs: the server's ``pg_stat_activity`` shows the scans
running side by side, and the scans report the backends they ran on. Then what a failing thread
does to its batch, its shard and the next run.
"""

from __future__ import annotations

import threading

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import SMALL_SCALE, fresh_postgres_database, largest_scope, run_partition
from dagster import RetryPolicy

from precompute_assets.core.errors import ScanError
from precompute_assets.core.phases import open_job, run_shard
from precompute_assets.core.scanning import scan_batches, usable_threads
from precompute_assets.demo.source import generate_source
from precompute_assets.orchestration.assets import SOURCE_POOL
from precompute_assets.orchestration.definitions import build_definitions
from precompute_assets.orchestration.resources import PrecomputeResource
from tool_plugins.unused_fields import UnusedFields

PROBE = "/* scan probe */"
# Every session running a probe on this test's database now, but the one asking.
RUNNING_PROBES = sa.text(
    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
    " AND datname = current_database() AND pid <> pg_backend_pid() AND query LIKE :probe"
)
BATCHES = 6


class ProbingFields(UnusedFields):
    """unused_fields whose every scan also holds its connection busy a moment, and says which
    server backend it ran on."""

    name = "probing_fields"

    def __init__(self) -> None:
        self.backends: set[int] = set()

    def scan(self, source, batch):
        self.backends.add(source.exec_driver_sql("SELECT pg_backend_pid()").scalar())
        source.exec_driver_sql(f"SELECT pg_sleep(0.3) {PROBE}")
        return super().scan(source, batch)


@pytest.fixture(scope="module")
def postgres_source() -> str:
    with fresh_postgres_database() as url:
        generate_source(url, SMALL_SCALE)
        yield url


def _most_probes_at_once(url: str, done: threading.Event, seen: list[int]) -> None:
    # Autocommit: a transaction would see one snapshot of pg_stat_activity throughout.
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        while not done.is_set():
            seen.append(connection.execute(RUNNING_PROBES, {"probe": f"%{PROBE}%"}).scalar())
    engine.dispose()


def _run_observed(url: str, threads: int, instance) -> tuple[ProbingFields, int]:
    """A real run of one scope, one shard of ``BATCHES`` batches; the most scans the server
    ran at once meanwhile."""
    tool = ProbingFields()
    probe = PrecomputeResource(source_url=url, store_url=url)
    scope = largest_scope(probe)
    with probe.source_engine().connect() as source:
        entities = source.execute(
            sa.text(
                "SELECT count(*) FROM work_items w JOIN spaces s ON s.id = w.space_id"
                " WHERE s.key = :scope"
            ),
            {"scope": scope},
        ).scalar()
    precompute = PrecomputeResource(
        source_url=url,
        store_url=url,
        batch_size=-(-entities // BATCHES),
        scan_threads=threads,
    )
    done, seen = threading.Event(), []
    watcher = threading.Thread(target=_most_probes_at_once, args=(url, done, seen))
    watcher.start()
    try:
        result = run_partition(
            build_definitions({tool.name: tool}, precompute), tool.name, scope, instance
        )
    finally:
        done.set()
        watcher.join()
    assert result.success
    header = precompute.store().header(tool.name, scope)
    assert (header.batch_count, header.shard_count) == (BATCHES, 1)
    return tool, max(seen)


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_a_shard_scans_on_as_many_connections_at_once_as_the_setting(
    threads, postgres_source, instance
):
    tool, most_at_once = _run_observed(postgres_source, threads, instance)
    assert len(tool.backends) == threads
    assert most_at_once == threads


@pytest.mark.slow
def test_the_source_concurrency_pool_bounds_a_steps_threads(postgres_source, instance):
    instance.event_log_storage.set_concurrency_slots(SOURCE_POOL, 2)
    tool, most_at_once = _run_observed(postgres_source, 3, instance)
    assert len(tool.backends) == most_at_once == 2


def test_threads_are_bounded_by_the_source_engine_pool(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'pooled.db'}", pool_size=3)
    assert usable_threads(engine, 8) == 3
    assert usable_threads(engine, 2) == 2
    # One connection shared by every thread (an in-memory database): one thread.
    assert usable_threads(sa.create_engine("sqlite://"), 4) == 1


def test_a_failing_thread_stops_the_others_and_raises_its_error(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'any.db'}")
    started: list[int] = []
    proceed = threading.Event()

    def scan(connection, index):
        started.append(index)
        if index == 1:
            proceed.set()
            raise ValueError("batch 1 is broken")
        proceed.wait(timeout=30)  # batch 0 is in flight while batch 1 fails
        return index

    with pytest.raises(ValueError, match="batch 1 is broken"):
        list(scan_batches(engine, range(20), 2, scan))
    # Batch 0 finished; no thread took another batch after the failure.
    assert sorted(started) == [0, 1]


def test_a_batch_failing_on_one_thread_fails_the_shard_and_the_rerun_scans_the_rest(
    precompute, tools
):
    class FailingFields(UnusedFields):
        name = "failing_fields"
        broken: int | None = 3

        def scan(self, source, batch):
            if batch.index == self.broken:
                raise ValueError("a bug in the tool")
            return super().scan(source, batch)

    tool, clean = FailingFields(), tools["unused_fields"]
    source, ledger = precompute.source_engine(), precompute.ledger()
    scope = largest_scope(precompute)
    plan = open_job(tool, scope, source, ledger, 1_000)
    [shard] = plan.shards(1)
    with pytest.raises(ScanError, match=f"scope '{scope}', batch 3"):
        run_shard(tool, plan, shard, source, ledger, threads=2)
    held = ledger.recorded(plan, shard.batch_indices)
    assert 3 not in held and held

    tool.broken = None
    result = run_shard(tool, plan, shard, source, ledger, threads=2)
    assert (result.batches_scanned, result.batches_skipped) == (
        plan.batch_count - len(held),
        len(held),
    )
    assert result.lifted
    # The same fold as one thread in order, from scratch.
    other = open_job(clean, scope, source, ledger, 1_000)
    run_shard(clean, other, other.shards(1)[0], source, ledger, threads=1)
    with (
        ledger.contributions(plan, shard.batch_indices) as mine,
        ledger.contributions(other, shard.batch_indices) as theirs,
    ):
        assert [held.contribution for held in mine] == [held.contribution for held in theirs]


def test_rows_of_a_threaded_run_equal_a_serial_one(precompute, tools, instance):
    scope = largest_scope(precompute)
    reports = []
    for threads in (1, 3):
        settings = precompute.model_copy(update={"scan_threads": threads})
        defs = build_definitions(tools, settings, RetryPolicy(max_retries=0))
        assert run_partition(defs, "unused_fields", scope, instance).success
        reports.append(settings.store().read("unused_fields", scope)[1])
    pd.testing.assert_frame_equal(*reports)
